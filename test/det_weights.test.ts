/**
 * Detector weights (src/detection/weights.ts): GluonCV's Faster R-CNN names mapped onto zoo's, files in
 * GluonCV's .params (bare and zipped) and zoo's safetensors loaded tensor for tensor, every kind of
 * mismatch refused with the detector left unchanged, GluonCV's anchors Constant checked, the published
 * faster_rcnn_resnet50_v1b_voc entry of models.json; and, where a Python with PyTorch and torchvision is
 * found, the loaded detector (tfjs and its ONNX export) against scripts/gluoncv_faster_rcnn.py, a
 * re-implementation of GluonCV's inference written from GluonCV's definition, on weights that script
 * makes in GluonCV's names: RPN outputs, anchors, proposals and detections.
 *
 * The full-width ResNet-50-B comparison takes about a minute: ZOO_TEST_SLOW=1.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setupBackend } from './helpers/backend.js';
import { makeZip } from './helpers/fixtures.js';
import { FixtureServer } from './helpers/http_server.js';
import { fileWriter, findTorchPython, paramsBytes, safetensorsBytes, torchLayout, zooTensors, type Tensors } from './helpers/head_weights.js';
import { UserError } from '../src/errors.js';
import { createModel } from '../src/models/model.js';
import { listModels } from '../src/models/registry.js';
import { defaultModelsJsonPath, modelNames, loadModelsJson } from '../src/hub/models_json.js';
import { createDetector, type Detector } from '../src/detection/detector.js';
import { defaultFasterRcnnConfig, type FasterRcnnConfig } from '../src/detection/faster_rcnn.js';
import { selectProposals, type ImageDetections } from '../src/detection/proposals.js';
import { exportDetector, runDetectorSession, smoothImages } from '../src/detection/export.js';
import { readHubSettings } from '../src/hub/settings.js';
import { readManifest } from '../src/hub/cache.js';
import { PullError } from '../src/hub/pull.js';
import { readOnnxMetadata } from '../src/onnx/metadata.js';
import { createSession } from '../src/runtime/ort.js';
import { VOC_CLASSES } from '../src/detection/voc.js';
import { AnchorGenerator } from '../src/detection/anchors.js';
import {
  GLUON_ANCHORS,
  createPublishedDetector,
  detectDetectorNaming,
  findPublishedDetector,
  gluonDetectorName,
  loadDetectorWeights,
  loadPublishedDetectors,
  publishedDetectorLabels,
  pullDetector,
  validateDetectorEntries,
  type PublishedDetector,
} from '../src/detection/weights.js';

const tmp = mkdtempSync(join(tmpdir(), 'zoo-det-weights-'));
test.before(async () => {
  await setupBackend();
});
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** The same tensors under GluonCV's names, renamed here by hand from GluonCV's module structure. */
function gluonTensors(det: Detector): Tensors {
  const out: Tensors = new Map();
  const heads: Record<string, string> = {
    'rpn.head.conv': 'rpn.conv1.0',
    'rpn.head.cls_logits': 'rpn.score',
    'rpn.head.bbox_pred': 'rpn.loc',
    'roi_heads.box_predictor.cls_score': 'class_predictor',
    'roi_heads.box_predictor.bbox_pred': 'box_predictor',
  };
  const bns = new Set([...det.params.specs.keys()].filter((k) => k.endsWith('.running_mean')).map((k) => k.slice(0, -'.running_mean'.length)));
  for (const [name, t] of zooTensors(det)) {
    const leafAt = name.lastIndexOf('.');
    let prefix = name.slice(0, leafAt);
    let leaf = name.slice(leafAt + 1);
    if (bns.has(prefix)) leaf = leaf === 'weight' ? 'gamma' : leaf === 'bias' ? 'beta' : leaf;
    if (heads[prefix]) prefix = heads[prefix]!;
    else {
      const [top, ...rest] = prefix.split('.');
      const container = { conv1: 'features.0', bn1: 'features.1', layer1: 'features.4', layer2: 'features.5', layer3: 'features.6', layer4: 'top_features.0' }[top!];
      prefix = [container, ...rest].join('.');
    }
    out.set(`${prefix}.${leaf}`, t);
  }
  return out;
}

/** GluonCV's anchors Constant for a generator: [1, 1, 128, 128, 4A]. */
function anchorsConstant(g: AnchorGenerator, size = 128) {
  return { shape: [1, 1, size, size, 4 * g.numAnchors], data: g.grid(size, size) };
}

const write = fileWriter(tmp);

const SMALL: Partial<FasterRcnnConfig> = { rpnChannels: 16 };

function snapshot(det: Detector): Map<string, Float32Array> {
  return det.params.toMap();
}

function sameParams(t: { true(v: boolean, m?: string): void }, det: Detector, want: Map<string, Float32Array>): void {
  const got = det.params.toMap();
  for (const [k, v] of want) {
    const g = got.get(k)!;
    t.true(g.length === v.length && g.every((x, i) => x === v[i]), k);
  }
}

test('GluonCV names map onto the detector\'s by name alone', (t) => {
  const cases: [string, string | undefined][] = [
    ['features.0.weight', 'conv1.weight'],
    ['features.0.3.weight', 'conv1.3.weight'],
    ['features.0.1.gamma', 'conv1.1.weight'],
    ['features.1.gamma', 'bn1.weight'],
    ['features.1.running_var', 'bn1.running_var'],
    ['features.4.0.conv1.weight', 'layer1.0.conv1.weight'],
    ['features.4.0.downsample.1.beta', 'layer1.0.downsample.1.bias'],
    ['features.6.5.bn3.running_mean', 'layer3.5.bn3.running_mean'],
    ['top_features.0.2.bn3.gamma', 'layer4.2.bn3.weight'],
    ['rpn.conv1.0.weight', 'rpn.head.conv.weight'],
    ['rpn.score.bias', 'rpn.head.cls_logits.bias'],
    ['rpn.loc.weight', 'rpn.head.bbox_pred.weight'],
    ['class_predictor.weight', 'roi_heads.box_predictor.cls_score.weight'],
    ['box_predictor.bias', 'roi_heads.box_predictor.bbox_pred.bias'],
    [GLUON_ANCHORS, GLUON_ANCHORS],
    ['features.2.weight', undefined],
    ['features.7.0.conv1.weight', undefined],
    ['top_features.1.0.conv1.weight', undefined],
    ['rpn.conv1.1.weight', undefined],
    ['fc.weight', undefined],
  ];
  for (const [from, to] of cases) t.is(gluonDetectorName(from), to, from);
  t.is(detectDetectorNaming(['features.0.weight']), 'gluoncv');
  t.is(detectDetectorNaming(['rpn.head.conv.weight']), 'zoo');
  t.is(detectDetectorNaming(['something']), undefined);
});

for (const arch of ['resnet_test', 'resnet_test_a'] as const) {
  test.serial(`${arch}: a GluonCV .params, its zip and zoo's safetensors load tensor for tensor, GluonCV's anchors checked`, async (t) => {
    const src = createDetector(arch, 3, { config: SMALL, seed: 1 });
    const want = snapshot(src);
    const gluon = gluonTensors(src);
    gluon.set(GLUON_ANCHORS, anchorsConstant(src.net.anchorGenerator));
    const params = paramsBytes(gluon);
    const files = [
      { file: write(params, '.params'), format: 'params', naming: 'gluoncv', anchors: 'checked' },
      { file: write(makeZip([{ name: 'faster_rcnn_test-0000.params', data: params, method: 8 }]), '.zip'), format: 'gluon-zip', naming: 'gluoncv', anchors: 'checked' },
      { file: write(safetensorsBytes(zooTensors(src)), '.safetensors'), format: 'safetensors', naming: 'zoo', anchors: 'absent' },
    ];
    for (const f of files) {
      const det = createDetector(arch, 3, { config: SMALL, seed: 2 });
      const r = await loadDetectorWeights(det, f.file);
      t.is(r.format as string, f.format);
      t.is(r.naming as string, f.naming);
      t.is(r.anchors as string, f.anchors);
      t.is(r.loaded, det.params.specs.size);
      sameParams(t, det, want);
      det.dispose();
    }
    src.dispose();
  });
}

test.serial('a file that does not fit is refused with what is wrong, and the detector is left unchanged', async (t) => {
  const src = createDetector('resnet_test', 3, { config: SMALL, seed: 1 });
  const base = () => {
    const g = gluonTensors(src);
    g.set(GLUON_ANCHORS, anchorsConstant(src.net.anchorGenerator));
    return g;
  };
  const det = createDetector('resnet_test', 3, { config: SMALL, seed: 2 });
  const before = snapshot(det);
  const other = createDetector('resnet_test', 4, { config: SMALL, seed: 1 });
  const cases: [string, Tensors, RegExp][] = [
    ['a missing tensor', (() => { const g = base(); g.delete('rpn.score.bias'); return g; })(), /missing 1: rpn\.head\.cls_logits\.bias/],
    ['an extra tensor', (() => { const g = base(); g.set('rpn.extra.weight', { shape: [2], data: new Float32Array(2) }); return g; })(), /unexpected 1: rpn\.extra\.weight/],
    ['a tensor GluonCV names but the detector lacks', (() => { const g = base(); g.set('features.4.1.conv1.weight', { shape: [8, 32, 1, 1], data: new Float32Array(256) }); return g; })(), /unexpected 1: features\.4\.1\.conv1\.weight \(as layer1\.1\.conv1\.weight\)/],
    ['another number of classes', (() => { const g = gluonTensors(other); g.set(GLUON_ANCHORS, anchorsConstant(src.net.anchorGenerator)); return g; })(), /: mis-shaped 4: class_predictor\.weight: source \[5,256\].*the file's class predictor has 4 classes and background, this detector 3/],
    ['a transposed weight', (() => { const g = base(); const w = g.get('class_predictor.weight')!; g.set('class_predictor.weight', { shape: [w.shape[1]!, w.shape[0]!], data: w.data }); return g; })(), /mis-shaped 1: class_predictor\.weight: source \[256,4\], expected \[out, in\] = \[4,256\]\. No parameter/],
    ['anchors of other scales', (() => { const g = base(); g.set(GLUON_ANCHORS, anchorsConstant(new AnchorGenerator({ scales: [2, 4, 8, 16, 24] }))); return g; })(), /rpn\.anchor_generator\.anchors: the file's anchors differ from this detector's by up to .* scales \[2, 4, 8, 16, 32\]/],
    ['anchors of another count', (() => { const g = base(); g.set(GLUON_ANCHORS, anchorsConstant(new AnchorGenerator({ ratios: [1] }))); return g; })(), /anchors: source \[1, 1, 128, 128, 20\], expected \[1, 1, height, width, 60\]/],
  ];
  for (const [what, tensors, expected] of cases) {
    const err = await t.throwsAsync(loadDetectorWeights(det, write(paramsBytes(tensors), '.params')), { instanceOf: UserError }, what);
    t.regex(err!.message, expected, what);
    t.regex(err!.message, /No parameter was changed\.$/, what);
  }
  // A classifier's weights: said so, with the way to use them.
  const clf = createModel('resnet_test');
  const ct: Tensors = new Map();
  for (const [name, spec] of clf.params.specs) ct.set(name, torchLayout(clf.params.get(name).dataSync() as Float32Array, spec.shape));
  clf.dispose();
  const err = await t.throwsAsync(loadDetectorWeights(det, write(safetensorsBytes(ct), '.safetensors')), { instanceOf: UserError });
  t.regex(err!.message, /missing \d+: rpn\.head\.conv\.weight.*unexpected 2: fc\.(bias, fc\.weight|weight, fc\.bias).*a classifier's weights/);
  sameParams(t, det, before);
  for (const d of [src, det, other]) d.dispose();
});

test.serial('bad files, namings and formats are UserErrors naming the file', async (t) => {
  const det = createDetector('resnet_test', 3, { config: SMALL });
  await t.throwsAsync(loadDetectorWeights(det, join(tmp, 'nope.params')), { instanceOf: UserError, message: /does not exist/ });
  await t.throwsAsync(loadDetectorWeights(det, tmp), { instanceOf: UserError, message: /is not a file/ });
  const odd = write(paramsBytes(new Map([['mystery', { shape: [1], data: new Float32Array(1) }]])), '.params');
  await t.throwsAsync(loadDetectorWeights(det, odd), { instanceOf: UserError, message: /cannot tell how its tensors are named \('mystery'\); pass naming/ });
  await t.throwsAsync(loadDetectorWeights(det, odd, { naming: 'keras' as never }), { instanceOf: UserError, message: /unknown detector weights naming 'keras'/ });
  await t.throwsAsync(loadDetectorWeights(det, write(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), '.params')), { instanceOf: UserError, message: /not an MXNet NDArray file/ });
  const onnx = write(await exportDetector(det), '.onnx');
  await t.throwsAsync(loadDetectorWeights(det, onnx), { instanceOf: UserError, message: /an ONNX export is a graph/ });
  det.dispose();
});

// ---------------------------------------------------------------------------------------------------
// models.json

const modelsJson = defaultModelsJsonPath();
const raw = JSON.parse(readFileSync(modelsJson, 'utf8')) as { detectors: PublishedDetector[] };

test('models.json publishes GluonCV\'s faster_rcnn_resnet50_v1b_voc as its model store names it', (t) => {
  const e = findPublishedDetector('faster_rcnn_resnet50_v1b_voc');
  t.is(e.name, 'faster_rcnn_resnet50b.gluon_voc');
  t.is(findPublishedDetector('faster_rcnn_resnet50b.gluon_voc'), e);
  t.is(e.arch, 'resnet50b');
  t.is(e.task, 'object-detection');
  const s = e.sources[0]!;
  t.is(s.url, 'https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/faster_rcnn_resnet50_v1b_voc-447328d8.zip');
  t.is(s.member, 'faster_rcnn_resnet50_v1b_voc-447328d8.params');
  t.is(s.sha1, '447328d89d70ae1e2ca49226b8d834e5a5456df3');
  t.is(s.naming, 'gluoncv');
  t.deepEqual(publishedDetectorLabels(e), [...VOC_CLASSES]);
  t.is(e.metrics[0]!.map07, 78.3);
  t.false(e.config.roiAlign.aligned, "GluonCV's MXNet ROIAlign is the legacy mode");
  t.deepEqual(e.config.boxWeights, [10, 10, 5, 5]);
  t.deepEqual(e.preprocessing, { minSize: 600, maxSize: 1000, interpolation: 'bilinear', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  const err = t.throws(() => findPublishedDetector('faster_rcnn_resnet50_v1b_vco'), { instanceOf: UserError });
  t.is(err!.exitCode, 2);
  t.regex(err!.message, /Did you mean: faster_rcnn_resnet50_v1b_voc/);
});

test.serial('the entry\'s parameter count and GMACs are the detector\'s, recomputed', (t) => {
  for (const e of loadPublishedDetectors()) {
    const det = createPublishedDetector(e);
    const c = det.counts(e.gmacsAt.height, e.gmacsAt.width, e.gmacsAt.regions);
    t.is(c.params, e.numParams, e.name);
    t.true(Math.abs(c.macs / 1e9 - e.gmacs) <= 0.01, `${e.name}: ${c.macs / 1e9} GMACs`);
    t.is(det.config.roiAlign.aligned, e.config.roiAlign.aligned);
    det.dispose();
  }
});

test('the detectors section validator catches broken copies', (t) => {
  const options = { archNames: listModels(), taken: new Set(modelNames(loadModelsJson()).keys()), baseDir: dirname(modelsJson) };
  t.deepEqual(validateDetectorEntries(raw, options), []);
  const breakers: [RegExp, (e: PublishedDetector & Record<string, unknown>) => void][] = [
    [/sources\[0\]\.member: 'faster_rcnn_resnet50_v1b_voc-447328d9\.params' does not match the zip/, (e) => (e.sources[0]!.member = 'faster_rcnn_resnet50_v1b_voc-447328d9.params')],
    [/does not end in the SHA-1's first 8 digits/, (e) => (e.sources[0]!.sha1 = 'f'.repeat(40))],
    [/sha1: a gluon-zip source needs/, (e) => (e.sources[0]!.sha1 = null)],
    [/labels: data\/imagenet_classes\.json has 1000 names but the entry has 20 classes/, (e) => (e.labels = 'data/imagenet_classes.json')],
    [/aliases\[0\]: 'resnet50d-best' is already a classification model's name/, (e) => (e.aliases = ['resnet50d-best'])],
    [/arch: expected a registered architecture/, (e) => (e.arch = 'resnet50x')],
    [/name: the arch part 'resnet50b' differs from arch 'resnet50d'/, (e) => (e.arch = 'resnet50d')],
    [/config\.roiAlign: expected/, (e) => ((e.config.roiAlign as unknown as Record<string, unknown>).aligned = 'no')],
    [/metrics\[0\]\.map07: expected a percentage/, (e) => (e.metrics[0]!.map07 = 783)],
    [/preprocessing: expected/, (e) => (e.preprocessing.maxSize = 500)],
    [/sources\[0\]\.url: expected an https URL/, (e) => (e.sources[0]!.url = 'http://example.com/x.zip')],
  ];
  for (const [expected, breakIt] of breakers) {
    const doc = structuredClone(raw);
    breakIt(doc.detectors[0] as PublishedDetector & Record<string, unknown>);
    const problems = validateDetectorEntries(doc, options);
    t.true(problems.some((p) => expected.test(p)), problems.join('\n') || '(no problems reported)');
  }
});

// ---------------------------------------------------------------------------------------------------
// Pulling

const sha1Of = (b: Uint8Array) => crypto.createHash('sha1').update(b).digest('hex');
const S3 = 'https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/';

/** A published entry for a resnet_test detector, its source a GluonCV zip on GluonCV's host (served through MXNET_GLUON_REPO). */
function fixtureEntry(name: string, zipName: string, sha1: string, member: string): PublishedDetector {
  const c = defaultFasterRcnnConfig(3, SMALL);
  return {
    name,
    aliases: [],
    task: 'object-detection',
    detector: 'faster_rcnn_c4',
    arch: 'resnet_test',
    description: 'test fixture',
    numClasses: 3,
    labels: 'unused',
    sources: [{ format: 'gluon-zip', naming: 'gluoncv', url: `${S3}${zipName}`, sha1, member, size: null, host: 'gluoncv' }],
    config: { anchors: c.anchors, rpnChannels: c.rpnChannels, rpnTest: c.rpnTest, roiAlign: { ...c.roiAlign, aligned: false }, boxWeights: c.boxWeights, detections: c.detections },
    preprocessing: { minSize: 96, maxSize: 160, interpolation: 'bilinear', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    numParams: 1,
    gmacs: 1,
    gmacsAt: { height: 96, width: 128, regions: 300 },
    metrics: [],
    recipe: 'test',
    license: 'test',
    origin: 'test',
  };
}

/** GluonCV's zip of a detector's weights: {name}-{sha1[:8]}.zip holding {name}-{sha1[:8]}.params. */
function gluonZipOf(det: Detector, base: string) {
  const g = gluonTensors(det);
  g.set(GLUON_ANCHORS, anchorsConstant(det.net.anchorGenerator));
  const params = paramsBytes(g);
  const sha1 = sha1Of(params);
  const member = `${base}-${sha1.slice(0, 8)}.params`;
  return { zip: makeZip([{ name: member, data: params, method: 8 }]), zipName: member.replace(/\.params$/, '.zip'), member, sha1 };
}

test.serial('pullDetector: a GluonCV zip through a 127.0.0.1 mirror, its SHA-1 checked, converted, exported and checked; then from the cache', async (t) => {
  const server = await FixtureServer.start();
  try {
    const settings = readHubSettings({ ZOO_CACHE: join(tmp, 'cache'), MXNET_GLUON_REPO: server.url('/') }, tmp);
    const src = createDetector('resnet_test', 3, { config: { ...SMALL, roiAlign: { outputSize: [14, 14], spatialScale: 1 / 16, samplingRatio: 2, aligned: false } }, seed: 4 });
    const f = gluonZipOf(src, 'faster_rcnn_test_voc');
    server.route(`/gluon/models/${f.zipName}`, { data: Buffer.from(f.zip) });
    const entry = fixtureEntry('faster_rcnn_resnet_test.fixture_voc', f.zipName, f.sha1, f.member);
    const logs: string[] = [];
    const check = { sizes: [[96, 128]] as [number, number][], batches: [1, 2] };
    const r = await pullDetector(entry, { settings, labels: ['a', 'b', 'c'], check, log: (l) => logs.push(l) });
    t.false(r.fromCache);
    t.is(r.record.source.verified, 'pinned');
    t.is(r.record.source.sha256, crypto.createHash('sha256').update(f.zip).digest('hex'));
    t.deepEqual(r.record.labels, ['a', 'b', 'c']);
    t.is(r.record.check.cases.length, 2);
    for (const c of r.record.check.cases) t.regex(c, /^[12]x96x128: (\d+)\/\1$/);
    t.true(logs.some((l) => l.includes("the file's anchors match the detector's")), logs.join('\n'));
    const meta = await readOnnxMetadata(r.onnx);
    t.is(meta['zoo.task'], 'object-detection');
    t.is(meta['zoo.labels'], JSON.stringify(['a', 'b', 'c']));
    t.is((await readManifest(entry.name, settings))?.meta?.converted, undefined, 'not a classifier for the classification commands');

    // The pulled graph detects what the detector the weights came from detects.
    const x = smoothImages(2, 112, 144, 5);
    const xt = tf.tensor4d(x, [2, 112, 144, 3]);
    const want = await src.detect(xt);
    xt.dispose();
    const session = await createSession(r.onnx, { provider: 'cpu' });
    const got = await runDetectorSession(session, x, [2, 112, 144, 3], src.config.detections.maxDetections);
    await session.session.release();
    for (const n of [0, 1]) {
      t.is(got[n]!.scores.length, want[n]!.scores.length);
      t.is(matchBoxes(got[n]!.boxes, want[n]!.boxes, 1e-3 * 144, got[n]!.classes, want[n]!.classes).matched, want[n]!.scores.length);
    }

    const again = await pullDetector(entry, { settings, labels: ['a', 'b', 'c'], check });
    t.true(again.fromCache);
    t.is(again.record.onnx.sha256, r.record.onnx.sha256);
    t.is(server.fullDownloads(`/gluon/models/${f.zipName}`), 1);

    // A wrong SHA-1, and a file that is no detector of this shape: refused, nothing converted is left.
    const bad = fixtureEntry('faster_rcnn_resnet_test.badsha', f.zipName, 'f'.repeat(40), f.member);
    const e1 = await t.throwsAsync(pullDetector(bad, { settings, labels: ['a', 'b', 'c'], check }), { instanceOf: PullError });
    t.regex(e1!.message, /checksum mismatch for 'faster_rcnn_test_voc-[0-9a-f]{8}\.params': expected sha1 f{40}/);
    const other = createDetector('resnet_test', 4, { config: SMALL, seed: 4 });
    const g = gluonZipOf(other, 'faster_rcnn_four');
    other.dispose();
    server.route(`/gluon/models/${g.zipName}`, { data: Buffer.from(g.zip) });
    const four = fixtureEntry('faster_rcnn_resnet_test.four', g.zipName, g.sha1, g.member);
    const e2 = await t.throwsAsync(pullDetector(four, { settings, labels: ['a', 'b', 'c'], check }), { instanceOf: PullError });
    t.regex(e2!.message, /the file's class predictor has 4 classes and background, this detector 3/);
    for (const name of [bad.name, four.name]) t.false(existsSync(join(tmp, 'cache', name, 'model.onnx')), name);
    src.dispose();
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------------
// Against the independent reference

const python = findTorchPython();
const SCRIPT = fileURLToPath(new URL('../../scripts/gluoncv_faster_rcnn.py', import.meta.url));

interface RefDetections {
  classes: number[];
  scores: number[];
  boxes: number[];
}
interface RefImage {
  feature: [number, number];
  anchors: number[];
  rpn_logits: number[];
  rpn_deltas: number[];
  proposals_gluoncv: { boxes: number[]; scores: number[]; padding: number };
  proposals_zoo: { boxes: number[]; logits: number[] };
  detections_gluoncv: RefDetections;
  detections_zoo: RefDetections;
}

interface Network {
  arch: string;
  args: string[];
  classes: number;
  config: Partial<FasterRcnnConfig>;
}

/** Pairs each of `got` with an unused box of `want` (same class where given) within `tol`; the number paired and the worst difference. */
function matchBoxes(got: Float32Array | number[], want: Float32Array | number[], tol: number, gotClass?: ArrayLike<number>, wantClass?: ArrayLike<number>) {
  const n = got.length / 4;
  const m = want.length / 4;
  const used = new Uint8Array(m);
  let matched = 0;
  let worst = 0;
  for (let i = 0; i < n; i++) {
    let best = -1;
    let bestD = Infinity;
    for (let j = 0; j < m; j++) {
      if (used[j] || (gotClass && wantClass && gotClass[i] !== wantClass[j])) continue;
      let d = 0;
      for (let k = 0; k < 4; k++) d = Math.max(d, Math.abs(got[4 * i + k]! - want[4 * j + k]!));
      if (d < bestD) {
        bestD = d;
        best = j;
      }
    }
    if (best >= 0 && bestD <= tol) {
      used[best] = 1;
      matched++;
      worst = Math.max(worst, bestD);
    }
  }
  return { matched, worst };
}

function maxRel(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let scale = 1;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  let d = 0;
  for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i]! - want[i]!));
  return d / scale;
}

/** GluonCV's detections without the padding rows' empty boxes (at most 1e-3 px across after clipping). */
function realDetections(d: RefDetections): RefDetections {
  const keep = d.scores.map((_, i) => i).filter((i) => d.boxes[4 * i + 2]! - d.boxes[4 * i]! > 1e-3 && d.boxes[4 * i + 3]! - d.boxes[4 * i + 1]! > 1e-3);
  return { classes: keep.map((i) => d.classes[i]!), scores: keep.map((i) => d.scores[i]!), boxes: keep.flatMap((i) => d.boxes.slice(4 * i, 4 * i + 4)) };
}

async function compareWithReference(t: import('ava').ExecutionContext, net: Network, height: number, width: number, tol: { rel: number; box: number; score: number }) {
  const dir = mkdtempSync(join(tmp, `${net.arch}-`));
  const run = spawnSync(python!, [SCRIPT, 'make', '--out', dir, '--height', String(height), '--width', String(width), '--batch', '2', '--seed', '3', '--classes', String(net.classes), ...net.args], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  t.is(run.status, 0, run.stderr);
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { shape: number[]; images: RefImage[] };
  const det = createDetector(net.arch, net.classes, { config: net.config, seed: 9 });
  const loaded = await loadDetectorWeights(det, join(dir, 'weights.params'));
  t.is(loaded.naming, 'gluoncv');
  t.is(loaded.anchors, 'checked');
  t.is(loaded.loaded, det.params.specs.size);

  const [N, C, H, W] = ref.shape as [number, number, number, number];
  const nchw = new Float32Array(readFileSync(join(dir, 'input.bin')).buffer.slice(0));
  const nhwc = new Float32Array(nchw.length);
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) nhwc[((n * H + y) * W + x) * C + c] = nchw[((n * C + c) * H + y) * W + x]!;
  const x = tf.tensor4d(nhwc, [N, H, W, C]);
  const side = Math.max(H, W);
  const figures: string[] = [];

  const o = det.rpn(x, 'eval');
  const [logits, deltas] = [o.logits.dataSync() as Float32Array, o.deltas.dataSync() as Float32Array];
  const anchors = det.anchors(o.features);
  tf.dispose([o.features, o.logits, o.deltas]);
  const A = anchors.length / 4;
  let gluonMatched = 0;
  let gluonTotal = 0;
  for (const [n, r] of ref.images.entries()) {
    t.is(A, r.rpn_logits.length, 'anchors per image');
    t.true(maxRel(anchors, r.anchors) === 0, "anchors: GluonCV's generator, sliced to the feature map");
    const dl = maxRel(logits.subarray(n * A, (n + 1) * A), r.rpn_logits);
    const dd = maxRel(deltas.subarray(4 * n * A, 4 * (n + 1) * A), r.rpn_deltas);
    t.true(dl <= tol.rel && dd <= tol.rel, `image ${n}: RPN logits ${dl}, deltas ${dd} (relative to the largest)`);
    figures.push(`image ${n}: RPN logits ${dl.toExponential(1)}, deltas ${dd.toExponential(1)}`);

    const p = selectProposals(logits.subarray(n * A, (n + 1) * A), deltas.subarray(4 * n * A, 4 * (n + 1) * A), anchors, { height: H, width: W }, det.config.rpnTest);
    const pz = matchBoxes(p.boxes, r.proposals_zoo.boxes, tol.box * side);
    t.is(p.scores.length, r.proposals_zoo.logits.length, `image ${n}: proposals`);
    t.is(pz.matched, p.scores.length, `image ${n}: proposals matched`);
    // At this size the pre-NMS top-k holds every anchor and no delta reaches the clamp: GluonCV's own order of steps selects the same proposals.
    t.is(r.proposals_gluoncv.padding, 0);
    t.is(matchBoxes(p.boxes, r.proposals_gluoncv.boxes, tol.box * side).matched, r.proposals_gluoncv.scores.length, `image ${n}: GluonCV's proposals`);
    figures.push(`${p.scores.length} proposals, worst box ${pz.worst.toExponential(1)} px`);

    const g = realDetections(r.detections_gluoncv);
    gluonTotal += g.scores.length;
    gluonMatched += matchBoxes(g.boxes, r.detections_zoo.boxes, tol.box * side, g.classes, r.detections_zoo.classes).matched;
  }

  const check = (label: string, dets: ImageDetections[]) => {
    for (const [n, r] of ref.images.entries()) {
      const d = dets[n]!;
      const want = r.detections_zoo;
      t.is(d.scores.length, want.scores.length, `${label} image ${n}: detections`);
      const m = matchBoxes(d.boxes, want.boxes, tol.box * side, d.classes, want.classes);
      t.is(m.matched, want.scores.length, `${label} image ${n}: detections matched (class and box)`);
      const ds = maxRel(d.scores, want.scores);
      t.true(ds <= tol.score, `${label} image ${n}: scores ${ds}`);
      figures.push(`${label} image ${n}: ${m.matched}/${want.scores.length} detections, worst box ${m.worst.toExponential(1)} px, score ${ds.toExponential(1)}`);
    }
  };
  check('tfjs', await det.detect(x));
  const session = await createSession(await exportDetector(det), { provider: 'cpu' });
  try {
    check('onnx', await runDetectorSession(session, nhwc, [N, H, W, C], det.config.detections.maxDetections));
  } finally {
    await session.session.release();
  }
  figures.push(`GluonCV's own selection: ${gluonMatched}/${gluonTotal} of its detections are zoo's`);
  t.log(figures.join('; '));
  x.dispose();
  det.dispose();
  return { gluonMatched, gluonTotal };
}

const LEGACY_ROI = { outputSize: [14, 14] as [number, number], spatialScale: 1 / 16, samplingRatio: 2, aligned: false };

(python ? test.serial : test.serial.skip)('resnet_test (v1d layout): the loaded detector and its ONNX export against the GluonCV reference', async (t) => {
  const net: Network = {
    arch: 'resnet_test',
    classes: 3,
    args: ['--layers', '1,1,1,1', '--widths', '8,16,32,64', '--stem', 'deep', '--stem-width', '8', '--avg-down', '1', '--rpn-channels', '64', '--rpn-post-nms', '30', '--max-detections', '100'],
    config: { rpnChannels: 64, roiAlign: LEGACY_ROI, rpnTest: { preNms: 6000, postNms: 30, nmsThreshold: 0.7, minSize: 16 } },
  };
  const r = await compareWithReference(t, net, 160, 224, { rel: 1e-4, box: 1e-4, score: 1e-4 });
  t.true(r.gluonMatched >= 0.9 * r.gluonTotal, `${r.gluonMatched}/${r.gluonTotal}`);
});

(python && process.env.ZOO_TEST_SLOW === '1' ? test.serial : test.serial.skip)('resnet50b at full width (faster_rcnn_resnet50_v1b_voc\'s network) against the GluonCV reference', async (t) => {
  const net: Network = {
    arch: 'resnet50b',
    classes: 20,
    args: ['--rpn-post-nms', '8', '--max-detections', '1000'],
    config: { roiAlign: LEGACY_ROI, rpnTest: { preNms: 6000, postNms: 8, nmsThreshold: 0.7, minSize: 16 }, detections: { scoreThreshold: 0.01, nmsThreshold: 0.3, maxDetections: 1000 } },
  };
  await compareWithReference(t, net, 160, 224, { rel: 1e-3, box: 1e-3, score: 1e-3 });
});
