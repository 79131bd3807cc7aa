/**
 * Segmenter weights (src/segmentation/weights.ts): torchvision's and GluonCV's FCN names mapped onto zoo's,
 * files in safetensors, torch.save's .pth and GluonCV's .params (bare and zipped) loaded tensor for tensor,
 * every kind of mismatch refused with the segmenter left unchanged, the auxiliary head present, absent or
 * skipped; the published FCNs of models.json; zoo pull of a segmenter from a 127.0.0.1 mirror; and, where
 * a Python with PyTorch and torchvision is found, the import of a torchvision fcn_resnet50 state dict
 * (scripts/torchvision_fcn.py) against torchvision's own output, in tfjs and in the ONNX export, and the
 * same for GluonCV's names and upsampling.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setupBackend } from './helpers/backend.js';
import { makeTorchCheckpoint, makeZip, torchStateDictPickle, type TorchStorageFixture } from './helpers/fixtures.js';
import { FixtureServer } from './helpers/http_server.js';
import { fileWriter, findTorchPython, paramsBytes, safetensorsBytes, zooTensors, type Tensors } from './helpers/head_weights.js';
import { UserError } from '../src/errors.js';
import { listModels } from '../src/models/registry.js';
import { defaultModelsJsonPath, loadModelsJson, modelNames, readCategoryFile } from '../src/hub/models_json.js';
import { readHubSettings } from '../src/hub/settings.js';
import { readManifest } from '../src/hub/cache.js';
import { PullError } from '../src/hub/pull.js';
import { readOnnxMetadata } from '../src/onnx/metadata.js';
import { createSession } from '../src/runtime/ort.js';
import { ADE20K_CLASSES } from '../src/segmentation/ade.js';
import { createSegmenter, type Segmenter } from '../src/segmentation/segmenter.js';
import { exportSegmenter, runSegmenterSession } from '../src/segmentation/export.js';
import {
  createPublishedSegmenter,
  detectSegmenterNaming,
  gluonSegmenterName,
  inspectSegmenterFile,
  loadPublishedSegmenters,
  loadSegmenterWeights,
  publishedSegmenterLabels,
  pullSegmenter,
  torchvisionSegmenterName,
  validateSegmenterEntries,
  type PublishedSegmenter,
} from '../src/segmentation/weights.js';
import { getModelEntry } from '../src/models/registry.js';

const tmp = mkdtempSync(join(tmpdir(), 'zoo-seg-weights-'));
test.before(async () => {
  await setupBackend();
});
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** torchvision's state dict of the same network: `backbone.` before the ResNet's names, a batch counter per BN. */
function torchvisionTensors(seg: Segmenter): Tensors {
  const out: Tensors = new Map();
  for (const [name, t] of zooTensors(seg)) {
    const full = name.startsWith('classifier.') || name.startsWith('aux_classifier.') ? name : `backbone.${name}`;
    out.set(full, t);
    if (full.endsWith('.running_var')) out.set(full.replace(/running_var$/, 'num_batches_tracked'), { shape: [], data: new Float32Array([7]) });
  }
  return out;
}

/** GluonCV's names, renamed by hand from fcn.py / segbase.py: head.block, auxlayer.block, BN gamma and beta. */
function gluonTensors(seg: Segmenter): Tensors {
  const out: Tensors = new Map();
  const bns = new Set([...seg.params.specs.keys()].filter((k) => k.endsWith('.running_mean')).map((k) => k.slice(0, -'.running_mean'.length)));
  for (const [name, t] of zooTensors(seg)) {
    const at = name.lastIndexOf('.');
    const prefix = name.slice(0, at);
    let leaf = name.slice(at + 1);
    if (bns.has(prefix)) leaf = leaf === 'weight' ? 'gamma' : leaf === 'bias' ? 'beta' : leaf;
    const p = prefix.replace(/^classifier\./, 'head.block.').replace(/^aux_classifier\./, 'auxlayer.block.');
    out.set(`${p}.${leaf}`, t);
  }
  return out;
}

/** torch.save's zip of a state dict (float32, int64 batch counters), one storage per tensor. */
function pthBytes(t: Tensors): Uint8Array {
  const storages: TorchStorageFixture[] = [];
  const tensors = [...t].map(([name, v], i) => {
    const counter = name.endsWith('num_batches_tracked');
    const data = counter ? new Uint8Array(new BigInt64Array([BigInt(v.data[0]!)]).buffer) : new Uint8Array(v.data.buffer.slice(v.data.byteOffset, v.data.byteOffset + v.data.byteLength));
    const storage = { key: String(i), type: counter ? 'LongStorage' : 'FloatStorage', numel: counter ? 1 : v.data.length, data };
    storages.push(storage);
    return { name, storage, size: v.shape };
  });
  return makeTorchCheckpoint(torchStateDictPickle(tensors, { metadata: true }), storages);
}

const write = fileWriter(tmp);

function sameParams(t: { true(v: boolean, m?: string): void }, seg: Segmenter, want: Map<string, Float32Array>): void {
  const got = seg.params.toMap();
  let worst = '';
  for (const [k, v] of want) if (!got.get(k) || got.get(k)!.some((x, i) => x !== v[i])) worst ||= k;
  t.true(worst === '', `parameter ${worst} differs`);
}

// ---------------------------------------------------------------------------------------------------
// Names

test('torchvision names: backbone. stripped onto the ResNet, the heads as they are', (t) => {
  const c = getModelEntry('resnet50b').config;
  t.is(torchvisionSegmenterName('backbone.layer3.5.conv2.weight', c), 'layer3.5.conv2.weight');
  t.is(torchvisionSegmenterName('backbone.bn1.running_var', c), 'bn1.running_var');
  t.is(torchvisionSegmenterName('classifier.4.bias', c), 'classifier.4.bias');
  t.is(torchvisionSegmenterName('aux_classifier.1.weight', c), 'aux_classifier.1.weight');
  t.is(torchvisionSegmenterName('layer1.0.conv1.weight', c), undefined);
  t.is(torchvisionSegmenterName('head.block.0.weight', c), undefined);
});

test("GluonCV names: head.block / auxlayer.block onto the heads, the base network's own, gamma and beta", (t) => {
  const c = getModelEntry('resnet50s').config;
  t.is(gluonSegmenterName('head.block.0.weight', c), 'classifier.0.weight');
  t.is(gluonSegmenterName('head.block.1.gamma', c), 'classifier.1.weight');
  t.is(gluonSegmenterName('auxlayer.block.1.beta', c), 'aux_classifier.1.bias');
  t.is(gluonSegmenterName('auxlayer.block.4.bias', c), 'aux_classifier.4.bias');
  t.is(gluonSegmenterName('conv1.4.running_mean', c), 'conv1.4.running_mean');
  t.is(gluonSegmenterName('layer4.2.bn3.gamma', c), 'layer4.2.bn3.weight');
  t.is(gluonSegmenterName('layer1.0.downsample.1.beta', c), 'layer1.0.downsample.1.bias');
  t.is(gluonSegmenterName('fc.weight', c), undefined);
  t.is(gluonSegmenterName('backbone.conv1.weight', c), undefined);
  t.is(detectSegmenterNaming(['backbone.conv1.weight', 'classifier.0.weight']), 'torchvision');
  t.is(detectSegmenterNaming(['conv1.0.weight', 'head.block.0.weight']), 'gluoncv');
  t.is(detectSegmenterNaming(['conv1.weight', 'classifier.0.weight']), 'zoo');
  t.is(detectSegmenterNaming(['foo']), undefined);
});

// ---------------------------------------------------------------------------------------------------
// Loading

test.serial('every naming and format loads tensor for tensor: torchvision .pth and safetensors, GluonCV .params and zip, zoo safetensors', async (t) => {
  const src = createSegmenter('resnet_test', 3, { seed: 4 });
  const want = src.params.toMap();
  const files: [string, string, string][] = [
    [write(pthBytes(torchvisionTensors(src)), '.pth'), 'torchvision', 'pth'],
    [write(safetensorsBytes(torchvisionTensors(src)), '.safetensors'), 'torchvision', 'safetensors'],
    [write(paramsBytes(gluonTensors(src)), '.params'), 'gluoncv', 'params'],
    [write(makeZip([{ name: 'fcn_test-00000000.params', data: paramsBytes(gluonTensors(src)), method: 8 }]), '.zip'), 'gluoncv', 'gluon-zip'],
    [write(safetensorsBytes(zooTensors(src)), '.safetensors'), 'zoo', 'safetensors'],
  ];
  for (const [file, naming, format] of files) {
    const seg = createSegmenter('resnet_test', 3, { seed: 9 });
    const r = await loadSegmenterWeights(seg, file);
    t.is(r.naming as string, naming);
    t.is(r.format as string, format);
    t.is(r.loaded, seg.params.specs.size);
    t.is(r.aux, 'loaded');
    sameParams(t, seg, want);
    seg.dispose();
  }
  src.dispose();
});

test.serial('the auxiliary head: a file without it loads into a segmenter without it; a file with it into one without it, skipped', async (t) => {
  const src = createSegmenter('resnet_test', 3, { seed: 4 });
  const all = torchvisionTensors(src);
  const noAux: Tensors = new Map([...all].filter(([k]) => !k.startsWith('aux_classifier.')));
  const bare = createSegmenter('resnet_test', 3, { seed: 9, config: { aux: false } });
  const r1 = await loadSegmenterWeights(bare, write(safetensorsBytes(noAux), '.safetensors'));
  t.is(r1.aux, 'absent');
  t.deepEqual(r1.warnings, []);
  const r2 = await loadSegmenterWeights(bare, write(safetensorsBytes(all), '.safetensors'));
  t.is(r2.aux, 'skipped');
  t.true(r2.warnings.some((w) => /auxiliary head .* was not loaded/.test(w)), r2.warnings.join('; '));
  const want = src.params.toMap();
  for (const [k, v] of bare.params.toMap()) t.deepEqual(v, want.get(k), k);
  bare.dispose();
  // A segmenter with the head refuses a file without it, and says what to do.
  const withAux = createSegmenter('resnet_test', 3, { seed: 9 });
  const e = await t.throwsAsync(loadSegmenterWeights(withAux, write(safetensorsBytes(noAux), '.safetensors')), { instanceOf: UserError });
  t.regex(e!.message, /missing 7: aux_classifier\.0\.weight/);
  t.regex(e!.message, /the file has no auxiliary head: create the segmenter without one \(aux: false\)/);
  withAux.dispose();
  src.dispose();
});

test.serial('mismatches are refused by name and change nothing: missing, unexpected, mis-shaped, other classes, a classifier, another stem', async (t) => {
  const src = createSegmenter('resnet_test', 3, { seed: 4 });
  const good = torchvisionTensors(src);
  const seg = createSegmenter('resnet_test', 3, { seed: 9 });
  const before = seg.params.toMap();
  const cases: [string, (m: Tensors) => void, RegExp[]][] = [
    ['missing', (m) => m.delete('backbone.layer2.0.conv2.weight'), [/missing 1: layer2\.0\.conv2\.weight/]],
    ['unexpected', (m) => m.set('backbone.layer5.0.conv1.weight', { shape: [1], data: new Float32Array(1) }), [/unexpected 1: backbone\.layer5\.0\.conv1\.weight/]],
    ['mis-shaped', (m) => m.set('classifier.1.running_mean', { shape: [7], data: new Float32Array(7) }), [/mis-shaped 1: classifier\.1\.running_mean: source \[7\], expected \[\d+\]/]],
    ['classifier', (m) => m.set('fc.weight', { shape: [10, 64], data: new Float32Array(640) }), [/unexpected 1: fc\.weight/, /looks like a classifier's weights/]],
  ];
  for (const [what, breakIt, patterns] of cases) {
    const m = new Map(good);
    breakIt(m);
    const file = write(safetensorsBytes(m), '.safetensors');
    const e = await t.throwsAsync(loadSegmenterWeights(seg, file), { instanceOf: UserError }, what);
    t.true(e!.message.startsWith(file), what);
    for (const p of patterns) t.regex(e!.message, p, what);
    t.regex(e!.message, /No parameter was changed\.$/, what);
  }
  sameParams(t, seg, before);

  const four = createSegmenter('resnet_test', 4, { seed: 4 });
  const e4 = await t.throwsAsync(loadSegmenterWeights(seg, write(safetensorsBytes(torchvisionTensors(four)), '.safetensors')), { instanceOf: UserError });
  t.regex(e4!.message, /the file's classifier has 4 classes, this segmenter 3/);
  four.dispose();
  const plain = createSegmenter('resnet_test_a', 3, { seed: 4 });
  const ea = await t.throwsAsync(loadSegmenterWeights(seg, write(safetensorsBytes(torchvisionTensors(plain)), '.safetensors')), { instanceOf: UserError });
  t.regex(ea!.message, /the file's backbone has a 7x7 stem \(conv1\.weight\) but resnet_test a deep one/);
  plain.dispose();
  sameParams(t, seg, before);

  const e0 = await t.throwsAsync(loadSegmenterWeights(seg, write(safetensorsBytes(new Map([['foo', { shape: [1], data: new Float32Array(1) }]])), '.safetensors')), { instanceOf: UserError });
  t.regex(e0!.message, /cannot tell how its tensors are named/);
  await t.throwsAsync(loadSegmenterWeights(seg, join(tmp, 'absent.pth')), { instanceOf: UserError, message: /does not exist/ });
  await t.throwsAsync(loadSegmenterWeights(seg, write(safetensorsBytes(good), '.safetensors'), { naming: 'nope' as 'zoo' }), { instanceOf: UserError, message: /unknown segmenter weights naming 'nope'/ });
  seg.dispose();
  src.dispose();
});

test.serial('inspectSegmenterFile reads the class count, the auxiliary head and the naming from the names and shapes alone', async (t) => {
  const src = createSegmenter('resnet_test', 5, { seed: 1 });
  t.deepEqual(await inspectSegmenterFile(write(pthBytes(torchvisionTensors(src)), '.pth')), { naming: 'torchvision', numClasses: 5, aux: true, format: 'pth' });
  const g = new Map([...gluonTensors(src)].filter(([k]) => !k.startsWith('auxlayer.')));
  t.deepEqual(await inspectSegmenterFile(write(paramsBytes(g), '.params')), { naming: 'gluoncv', numClasses: 5, aux: false, format: 'params' });
  const noHead = new Map([...torchvisionTensors(src)].filter(([k]) => !k.startsWith('classifier.')));
  await t.throwsAsync(inspectSegmenterFile(write(safetensorsBytes(noHead), '.safetensors')), { instanceOf: UserError, message: /no FCN classifier \(classifier\.4\.weight/ });
  src.dispose();
});

// ---------------------------------------------------------------------------------------------------
// models.json

const modelsJson = defaultModelsJsonPath();
const raw = JSON.parse(readFileSync(modelsJson, 'utf8')) as { segmenters: PublishedSegmenter[] };

function takenNames(): Set<string> {
  const doc = loadModelsJson();
  const taken = new Set(modelNames(doc).keys());
  for (const d of (doc as unknown as { detectors?: { name: string; aliases: string[] }[] }).detectors ?? []) [d.name, ...d.aliases].forEach((n) => taken.add(n));
  return taken;
}

test('models.json: the four published FCNs, their sources, labels, upsampling and metrics', (t) => {
  const list = loadPublishedSegmenters();
  t.deepEqual(list.map((e) => e.name), ['fcn_resnet50b.tv_coco_voc', 'fcn_resnet101b.tv_coco_voc', 'fcn_resnet50s.gluon_ade', 'fcn_resnet101s.gluon_ade']);
  const byAlias = (a: string) => list.find((e) => e.aliases.includes(a))!;
  const tv = byAlias('fcn_resnet50');
  t.is(tv.sources[0]!.url, 'https://download.pytorch.org/models/fcn_resnet50_coco-1167a1af.pth');
  t.is(byAlias('fcn_resnet101').sources[0]!.url, 'https://download.pytorch.org/models/fcn_resnet101_coco-7ecb50ca.pth');
  t.deepEqual([tv.metrics[0]!.mIoU, tv.metrics[0]!.pixAcc], [60.5, 91.4]);
  t.deepEqual([byAlias('fcn_resnet101').metrics[0]!.mIoU, byAlias('fcn_resnet101').metrics[0]!.pixAcc], [63.7, 91.9]);
  t.false(tv.config.alignCorners);
  const labels = publishedSegmenterLabels(tv);
  t.is(labels.length, 21);
  t.is(labels[0], '__background__');
  t.is(labels[15], 'person');
  const ade = byAlias('fcn_resnet50_ade');
  t.true(ade.config.alignCorners, "MXNet's BilinearResize2D");
  t.is(ade.arch, 'resnet50s', "GluonCV's resnet50_v1s: deep stem 64-64-128");
  t.deepEqual([ade.metrics[0]!.pixAcc, ade.metrics[0]!.mIoU], [79.0, 39.5]);
  t.deepEqual([byAlias('fcn_resnet101_ade').metrics[0]!.pixAcc, byAlias('fcn_resnet101_ade').metrics[0]!.mIoU], [80.6, 41.6]);
  t.is(ade.sources[0]!.sha1, '3479525af7bdbf345e74e150aaae2e48174c0c5f');
  t.is(ade.sources[0]!.url, 'https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/fcn_resnet50_ade-3479525a.zip');
  t.is(byAlias('fcn_resnet101_ade').sources[0]!.member, 'fcn_resnet101_ade-d544440a.params');
  t.deepEqual(publishedSegmenterLabels(ade), [...ADE20K_CLASSES], "the ADE reader's class names");
});

test.serial('models.json: numParams (with the auxiliary head) and GMACs (without) recomputed from zoo\'s segmenters', (t) => {
  for (const e of loadPublishedSegmenters()) {
    const seg = createPublishedSegmenter(e);
    const withAux = seg.counts(e.gmacsAt.height, e.gmacsAt.width, { aux: true });
    const plain = seg.counts(e.gmacsAt.height, e.gmacsAt.width);
    t.is(withAux.params, e.numParams, e.name);
    t.true(Math.abs(plain.macs / 1e9 - e.gmacs) <= 0.01, `${e.name}: ${plain.macs / 1e9} GMACs`);
    t.is(seg.config.alignCorners, e.config.alignCorners);
    seg.dispose();
  }
});

test('the segmenters section validator catches broken copies', (t) => {
  const options = { archNames: listModels(), taken: takenNames(), baseDir: dirname(modelsJson) };
  t.deepEqual(validateSegmenterEntries(raw, options), []);
  const breakers: [number, RegExp, (e: PublishedSegmenter & Record<string, unknown>) => void][] = [
    [0, /config\.alignCorners: true but sources\[0\] is torchvision's, which upsamples with align_corners=False/, (e) => (e.config.alignCorners = true)],
    [2, /config\.alignCorners: false but sources\[0\] is gluoncv's/, (e) => (e.config.alignCorners = false)],
    [0, /sources\[0\]\.sha256Prefix: the file name 'fcn_resnet50_coco-1167a1af\.pth' does not carry it/, (e) => (e.sources[0]!.sha256Prefix = '1167a1aa')],
    [0, /sources\[0\]: pin the file/, (e) => delete e.sources[0]!.sha256Prefix],
    [0, /sources\[0\]\.naming: a pth file does not carry gluoncv names/, (e) => (e.sources[0]!.naming = 'gluoncv')],
    [2, /does not end in the SHA-1's first 8 digits/, (e) => (e.sources[0]!.sha1 = 'f'.repeat(40))],
    [2, /labels: data\/voc_seg_classes\.json has 21 names but the entry has 150 classes/, (e) => (e.labels = 'data/voc_seg_classes.json')],
    [0, /aliases\[0\]: 'resnet50d-best' is already the name of a classification model or detector/, (e) => (e.aliases = ['resnet50d-best'])],
    [0, /aliases\[0\]: 'faster_rcnn_resnet50_v1b_voc' is already the name/, (e) => (e.aliases = ['faster_rcnn_resnet50_v1b_voc'])],
    [1, /aliases\[0\]: 'fcn_resnet50' is already used by segmenters\[0\]/, (e) => (e.aliases = ['fcn_resnet50'])],
    [0, /name: the arch part 'resnet50b' differs from arch 'resnet50d'/, (e) => (e.arch = 'resnet50d')],
    [0, /config: expected \{outputStride: 8 or 16/, (e) => (e.config.outputStride = 4 as 8)],
    [0, /metrics\[0\]\.mIoU: expected a percentage/, (e) => (e.metrics[0]!.mIoU = 605)],
    [0, /metrics\[0\]\.source: say where the number comes from/, (e) => (e.metrics[0]!.source = '')],
    [0, /preprocessing: expected/, (e) => (e.preprocessing.resize = 'middle' as 'none')],
    [0, /task: expected 'semantic-segmentation'/, (e) => (e.task = 'object-detection' as 'semantic-segmentation')],
  ];
  for (const [i, expected, breakIt] of breakers) {
    const doc = structuredClone(raw);
    breakIt(doc.segmenters[i] as PublishedSegmenter & Record<string, unknown>);
    const problems = validateSegmenterEntries(doc, options);
    t.true(problems.some((p) => expected.test(p)), `${expected}: ${problems.join('\n') || '(no problems reported)'}`);
  }
  t.deepEqual(validateSegmenterEntries({ models: [] }, options), [], 'a models.json without segmenters');
});

test('the class list files: one name per channel, no repeats', (t) => {
  for (const f of ['data/voc_seg_classes.json', 'data/ade20k_classes.json']) {
    const names = readCategoryFile(join(dirname(modelsJson), f));
    t.true(Array.isArray(names), String(names));
    t.is(new Set(names as string[]).size, (names as string[]).length, f);
  }
});

// ---------------------------------------------------------------------------------------------------
// Pulling

const TV = 'https://download.pytorch.org/models/';

/** A published entry for a resnet_test FCN, its source a .pth on torchvision's host (served through ZOO_MIRROR). */
function fixtureEntry(name: string, file: string, prefix: string): PublishedSegmenter {
  return {
    name,
    aliases: [],
    task: 'semantic-segmentation',
    segmenter: 'fcn',
    arch: 'resnet_test',
    description: 'test fixture',
    numClasses: 3,
    labels: 'unused',
    sources: [{ format: 'pth', naming: 'torchvision', url: `${TV}${file}`, sha256: null, sha256Prefix: prefix, size: null, host: 'torchvision' }],
    config: { outputStride: 8, aux: true, alignCorners: false },
    preprocessing: { resize: 'shorter', size: 96, interpolation: 'bilinear', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    numParams: 1,
    gmacs: 1,
    gmacsAt: { height: 96, width: 96 },
    metrics: [],
    recipe: 'test',
    license: 'test',
    origin: 'test',
  };
}

test.serial("pullSegmenter: a torchvision .pth through a 127.0.0.1 mirror, pinned by its name's sha256 prefix, converted, exported and checked; then from the cache", async (t) => {
  const server = await FixtureServer.start();
  try {
    const settings = readHubSettings({ ZOO_CACHE: join(tmp, 'cache'), ZOO_MIRROR: server.url('/') }, tmp);
    const src = createSegmenter('resnet_test', 3, { seed: 4 });
    const pth = pthBytes(torchvisionTensors(src));
    const sha256 = crypto.createHash('sha256').update(pth).digest('hex');
    const file = `fcn_test_coco-${sha256.slice(0, 8)}.pth`;
    server.route(`/${file}`, { data: Buffer.from(pth) });
    const entry = fixtureEntry('fcn_resnet_test.fixture', file, sha256.slice(0, 8));
    const logs: string[] = [];
    const checkSizes: [number, number][] = [[41, 57]];
    const r = await pullSegmenter(entry, { settings, labels: ['a', 'b', 'c'], checkSizes, log: (l) => logs.push(l) });
    t.false(r.fromCache);
    t.is(r.record.source.verified, 'pinned');
    t.is(r.record.source.sha256, sha256);
    t.deepEqual(r.record.labels, ['a', 'b', 'c']);
    t.deepEqual(r.record.check.cases, ['1x41x57']);
    t.true(r.record.check.maxAbsDiff <= r.record.check.tolerance * Math.max(1, r.record.check.maxAbsLogit));
    t.true(logs.some((l) => l.includes('auxiliary head (training only) was not loaded')), logs.join('\n'));
    const meta = await readOnnxMetadata(r.onnx);
    t.is(meta['zoo.task'], 'semantic-segmentation');
    t.is(meta['zoo.labels'], JSON.stringify(['a', 'b', 'c']));
    t.is((await readManifest(entry.name, settings))?.meta?.converted, undefined, 'not a classifier for the classification commands');

    // The pulled graph computes what the segmenter the weights came from computes.
    const [N, H, W] = [1, 35, 49];
    const x = new Float32Array(N * H * W * 3).map((_, i) => Math.sin(i * 0.37));
    const want = tf.tidy(() => tf.transpose(src.logits(tf.tensor4d(x, [N, H, W, 3]) as Tensor4D, 'eval').out, [0, 3, 1, 2]).dataSync() as Float32Array);
    const session = await createSession(r.onnx, { provider: 'cpu' });
    const got = (await runSegmenterSession(session, x, [N, H, W, 3])).logits!.data as Float32Array;
    await session.session.release();
    t.true(relDiff(got, want) <= 1e-4);

    const again = await pullSegmenter(entry, { settings, labels: ['a', 'b', 'c'], checkSizes });
    t.true(again.fromCache);
    t.is(again.record.onnx.sha256, r.record.onnx.sha256);
    t.is(server.fullDownloads(`/${file}`), 1);

    // A file whose sha256 does not start with its name's prefix, and a file that is no FCN of this shape: refused, nothing left.
    const badFile = `fcn_test_bad-00000000.pth`;
    server.route(`/${badFile}`, { data: Buffer.from(pth) });
    const bad = fixtureEntry('fcn_resnet_test.badsha', badFile, '00000000');
    const e1 = await t.throwsAsync(pullSegmenter(bad, { settings, labels: ['a', 'b', 'c'], checkSizes }), { instanceOf: PullError });
    t.regex(e1!.message, /sha256 should start with 00000000/);
    const other = createSegmenter('resnet_test', 4, { seed: 4 });
    const pth4 = pthBytes(torchvisionTensors(other));
    other.dispose();
    const sha4 = crypto.createHash('sha256').update(pth4).digest('hex');
    const file4 = `fcn_test_four-${sha4.slice(0, 8)}.pth`;
    server.route(`/${file4}`, { data: Buffer.from(pth4) });
    const four = fixtureEntry('fcn_resnet_test.four', file4, sha4.slice(0, 8));
    const e2 = await t.throwsAsync(pullSegmenter(four, { settings, labels: ['a', 'b', 'c'], checkSizes }), { instanceOf: PullError });
    t.regex(e2!.message, /the file's classifier has 4 classes, this segmenter 3/);
    for (const name of [bad.name, four.name]) t.false(existsSync(join(tmp, 'cache', name, 'model.onnx')), name);
    src.dispose();
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------------
// Against torchvision

const python = findTorchPython();
const SCRIPT = fileURLToPath(new URL('../../scripts/torchvision_fcn.py', import.meta.url));

/** max |a - b| / max(1, max |b|): the tolerance is relative to the logits' scale. */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 1;
  let d = 0;
  for (let i = 0; i < b.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]!));
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
  }
  return a.length === b.length ? d / scale : Infinity;
}

interface RefCase {
  height: number;
  width: number;
  input: string;
  inputShape: number[];
  out: string;
  aux?: string;
}

function readF32(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
}

function toNHWC(nchw: Float32Array, [N, C, H, W]: number[]): Float32Array {
  const out = new Float32Array(nchw.length);
  for (let n = 0; n < N!; n++) for (let c = 0; c < C!; c++) for (let y = 0; y < H!; y++) for (let x = 0; x < W!; x++) out[((n * H! + y) * W! + x) * C! + c] = nchw[((n * C! + c) * H! + y) * W! + x]!;
  return out;
}

async function compareWithReference(t: import('ava').ExecutionContext, o: { arch: string; naming: 'torchvision' | 'gluoncv'; classes: number; sizes: string; tolerance: number }) {
  const dir = mkdtempSync(join(tmp, `${o.naming}-`));
  const run = spawnSync(python!, [SCRIPT, 'make', '--out', dir, '--arch', o.arch.replace(/[bs]$/, ''), '--classes', String(o.classes), '--seed', '3', '--sizes', o.sizes, '--batch', '2', '--naming', o.naming], { encoding: 'utf8' });
  t.is(run.status, 0, run.stderr);
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { cases: RefCase[]; alignCorners: boolean; weights: string };
  const info = await inspectSegmenterFile(join(dir, ref.weights));
  t.deepEqual([info.naming, info.numClasses, info.aux], [o.naming, o.classes, true]);
  const seg = createSegmenter(o.arch, o.classes, { config: { alignCorners: ref.alignCorners }, seed: 1 });
  const figures: string[] = [];
  let worst = 0;
  try {
    const loaded = await loadSegmenterWeights(seg, join(dir, ref.weights));
    t.is(loaded.naming, o.naming);
    t.is(loaded.loaded, seg.params.specs.size);
    const session = await createSession(await exportSegmenter(seg, { aux: true }), { provider: 'cpu' });
    try {
      // Eval mode caches batch norm folded into the convolutions on the first call: leaks are counted from the second size on.
      for (const [i, c] of ref.cases.entries()) {
        const [N, C, H, W] = c.inputShape as [number, number, number, number];
        const x = toNHWC(readF32(join(dir, c.input)), c.inputShape);
        const wantOut = readF32(join(dir, c.out));
        const wantAux = readF32(join(dir, c.aux!));
        const before = tf.memory().numTensors;
        const [out, aux] = tf.tidy(() => {
          const r = seg.logits(tf.tensor4d(x, [N, H, W, C]) as Tensor4D, 'eval', { aux: true });
          return [tf.transpose(r.out, [0, 3, 1, 2]).dataSync() as Float32Array, tf.transpose(r.aux!, [0, 3, 1, 2]).dataSync() as Float32Array];
        });
        if (i > 0) t.is(tf.memory().numTensors, before, 'no tensor leaked');
        const onnx = await runSegmenterSession(session, x, [N, H, W, C]);
        const [oOutV, oAuxV] = [onnx.logits!.data as Float32Array, onnx.aux_logits!.data as Float32Array];
        const [dOut, dAux, oOut, oAux] = [relDiff(out, wantOut), relDiff(aux, wantAux), relDiff(oOutV, wantOut), relDiff(oAuxV, wantAux)];
        worst = Math.max(worst, dOut, dAux, oOut, oAux);
        const agree = relDiff(oOutV, out);
        figures.push(`${N}x${H}x${W}: tfjs out ${dOut.toExponential(1)}, aux ${dAux.toExponential(1)}; onnx out ${oOut.toExponential(1)}, aux ${oAux.toExponential(1)}; onnx vs tfjs ${agree.toExponential(1)}`);
      }
    } finally {
      await session.session.release();
    }
  } finally {
    seg.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  t.log(`${o.arch} (${o.naming}), max |diff| / max(1, max |logit|): ${figures.join('; ')}`);
  t.true(worst <= o.tolerance, `worst ${worst} > ${o.tolerance}: ${figures.join('; ')}`);
}

(python ? test.serial : test.serial.skip)("resnet50b: a torchvision fcn_resnet50 state dict (.pth) reproduces torchvision's out and aux logits in tfjs and in the ONNX export", async (t) => {
  await compareWithReference(t, { arch: 'resnet50b', naming: 'torchvision', classes: 5, sizes: '67x91,96x96', tolerance: 1e-4 });
});

(python && process.env.ZOO_TEST_SLOW === '1' ? test.serial : test.serial.skip)("resnet50s: GluonCV's fcn_resnet50_ade names (.params) and align_corners=True upsampling reproduce the reference", async (t) => {
  await compareWithReference(t, { arch: 'resnet50s', naming: 'gluoncv', classes: 7, sizes: '67x91,96x96', tolerance: 1e-4 });
});
