/**
 * Detection on the WebGPU backend (tfjs's WebGPU kernels on Dawn; Mesa's lavapipe where there is no
 * GPU): RoIAlign, which WebGPU runs composed from tfjs-core ops, against zoo's kernel on wasm (values
 * and gradients); one training step of a detector against the same step on wasm; and a short run on
 * WebGPU (training, validation, checkpoint), exported from its checkpoint on WebGPU (with the check
 * against ONNX Runtime) and evaluated. Skipped where no WebGPU adapter answers (helpers/webgpu.ts).
 *
 * Tensors cannot move off WebGPU in Node (that needs a synchronous read), so everything compared is
 * made on each backend from the same numbers and read back with `await data()`.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { webgpuProbe, webgpuTest } from './helpers/webgpu.js';
import { maxAbsDiff, setupBackend } from './helpers/backend.js';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { roiAlign, type RoiAlignOptions } from '../src/ops/roi_align.js';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/util/random.js';
import { generateVocSet } from '../src/detection/voc_generate.js';
import { readVoc, type VocDataset } from '../src/detection/voc.js';
import { loadDetectionBatch } from '../src/detection/transform.js';
import { createDetector } from '../src/detection/detector.js';
import { defaultFasterRcnnConfig } from '../src/detection/faster_rcnn.js';
import { checkDetFitsDevice, detTrainConfig, detectionStep } from '../src/detection/train.js';
import { maxBindingBytes } from '../src/backend/webgpu.js';
import type { VocImage } from '../src/detection/voc.js';
import { existsSync } from 'node:fs';
import { evaluateDetection, exportDetection, trainDetection } from '../src/api/detection.js';

const gpuTest = webgpuTest('detection on WebGPU');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-webgpu-det-'));
let root = '';
let train: VocDataset;

test.before(async () => {
  if (!webgpuProbe.available) return;
  await setupBackend('wasm');
  await initBackend({ backend: 'webgpu' });
  const set = await generateVocSet(path.join(tmp, 'voc'), { trainImages: 5, testImages: 2, minSide: 96, maxSide: 128, minItem: 28, maxItem: 48, maxObjects: 2, seed: 3 });
  root = set.root;
  train = await readVoc(root, { split: 'trainval' });
});

test.after.always(() => {
  releaseBackend();
  rmSync(tmp, { recursive: true, force: true });
});

/** Reads tensors back on whatever backend holds them. */
async function read(ts: tf.Tensor[]): Promise<Float32Array[]> {
  return (await Promise.all(ts.map((x) => x.data()))) as Float32Array[];
}

function scaleOf(a: ArrayLike<number>): number {
  let m = 1;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

interface RoiCase {
  features: Float32Array;
  shape: [number, number, number, number];
  boxes: Float32Array;
  indices: Int32Array;
  dy: Float32Array;
}

/**
 * Random features and boxes (in input pixels) from well inside the map to partly and wholly outside
 * it, tiny ones, a reversed one (x2 < x1) and one many times the map; random output gradients.
 */
function roiCase(seed: number, shape: [number, number, number, number], o: RoiAlignOptions, count: number): RoiCase {
  const rng = new Rng(seed);
  const [N, H, W, C] = shape;
  const features = Float32Array.from({ length: N * H * W * C }, () => rng.normal());
  const iw = W / o.spatialScale;
  const ih = H / o.spatialScale;
  const list: number[] = [];
  for (let r = 0; r < count; r++) {
    const tiny = r % 4 === 3;
    const w = tiny ? rng.range(0.05, 0.8) / o.spatialScale : rng.range(0.3, 1.2) * iw;
    const h = tiny ? rng.range(0.05, 0.8) / o.spatialScale : rng.range(0.3, 1.2) * ih;
    const cx = rng.range(-0.3, 1.3) * iw;
    const cy = rng.range(-0.3, 1.3) * ih;
    list.push(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2);
  }
  list.push(0.6 * iw, 0.2 * ih, 0.4 * iw, 0.7 * ih, -2 * iw, -2 * ih, -1.5 * iw, -1.2 * ih, -3 * iw, -2 * ih, 4 * iw, 3 * ih);
  const R = list.length / 4;
  const indices = Int32Array.from({ length: R }, () => rng.int(N));
  const dy = Float32Array.from({ length: R * o.outputSize[0] * o.outputSize[1] * C }, () => rng.normal());
  return { features, shape, boxes: Float32Array.from(list), indices, dy };
}

/** RoIAlign's output and its gradient to the features (of sum(y * dy)) on `backend`. */
async function roiOnBackend(backend: string, c: RoiCase, o: RoiAlignOptions): Promise<{ y: Float32Array; dx: Float32Array }> {
  await tf.setBackend(backend);
  const R = c.indices.length;
  const [y, dx] = tf.tidy(() => {
    const f = tf.tensor4d(c.features, c.shape);
    const b = tf.tensor2d(c.boxes, [R, 4]);
    const i = tf.tensor1d(c.indices, 'int32');
    const dy = tf.tensor4d(c.dy, [R, o.outputSize[0], o.outputSize[1], c.shape[3]]);
    return [roiAlign(f, b, i, o), tf.grad((x: tf.Tensor) => tf.sum(tf.mul(roiAlign(x as tf.Tensor4D, b, i, o), dy)))(f)];
  });
  const [yv, dxv] = await read([y!, dx!]);
  tf.dispose([y!, dx!]);
  return { y: yv!, dx: dxv! };
}

const ROI_CONFIGS: RoiAlignOptions[] = [
  { outputSize: [3, 4], spatialScale: 0.5, samplingRatio: 2, aligned: true },
  { outputSize: [3, 4], spatialScale: 0.5, samplingRatio: 3, aligned: false },
  { outputSize: [7, 7], spatialScale: 1 / 16, samplingRatio: 2, aligned: true },
];

gpuTest('RoIAlign on WebGPU (composed from tfjs ops) matches the kernel on wasm: values and gradients, boxes partly and wholly outside', async (t) => {
  for (const o of ROI_CONFIGS) {
    const shape: [number, number, number, number] = o.spatialScale < 0.1 ? [2, 10, 13, 6] : [2, 7, 9, 5];
    const c = roiCase(21, shape, o, 12);
    const want = await roiOnBackend('wasm', c, o);
    const got = await roiOnBackend('webgpu', c, o);
    const label = `${o.aligned ? 'aligned' : 'legacy'}, ${o.outputSize.join('x')}, sampling ${o.samplingRatio}, scale ${o.spatialScale}`;
    // Float32 sums in another order than the kernel's float64 ones: a few units of the last place.
    t.true(maxAbsDiff(got.y, want.y) <= 1e-5 * scaleOf(want.y), `${label}: values, max |diff| ${maxAbsDiff(got.y, want.y)}`);
    t.true(maxAbsDiff(got.dx, want.dx) <= 1e-5 * scaleOf(want.dx), `${label}: gradient, max |diff| ${maxAbsDiff(got.dx, want.dx)}`);
  }
  // Adaptive sampling would need the boxes' sizes read back: refused, with the way out.
  await tf.setBackend('webgpu');
  const e = t.throws(() => tf.tidy(() => roiAlign(tf.zeros([1, 4, 4, 2]) as tf.Tensor4D, tf.zeros([1, 4]) as tf.Tensor2D, tf.zeros([1], 'int32') as tf.Tensor1D, { ...ROI_CONFIGS[0]!, samplingRatio: 0 })), {
    message: /samplingRatio 0 .*'webgpu'.*fixed samplingRatio/,
  });
  t.true(e instanceof UserError);
});

/** A small detector (every size is an option), as the detection run tests use. */
function smallDetector(classes: number) {
  const base = defaultFasterRcnnConfig(classes);
  return createDetector('resnet_test', classes, {
    seed: 0,
    config: { rpnChannels: 32, roiAlign: { ...base.roiAlign, outputSize: [7, 7] }, roiTargets: { ...base.roiTargets, batchSize: 16 }, rpnTest: { ...base.rpnTest, postNms: 50 } },
  });
}

/** Loss, terms and gradients of one training step on `backend`, the detector made there. */
async function stepOn(backend: string) {
  await tf.setBackend(backend);
  const det = smallDetector(train.classes.length);
  try {
    const batch = await loadDetectionBatch(train.images, [0, 1], { minSize: 96, maxSize: 128, seed: 0, epoch: 0, flipProbability: 0.5 });
    const vars = [...det.trainableVariables()];
    const r = await detectionStep(det, batch, new Rng(11), vars.map(([, v]) => v));
    const grads = new Map<string, Float32Array>();
    for (const [name, v] of vars) grads.set(name, (await r.grads[v.name]!.data()) as Float32Array);
    tf.dispose(Object.values(r.grads));
    return { loss: r.loss, terms: r.terms!, grads };
  } finally {
    det.dispose();
  }
}

gpuTest('one detector training step on WebGPU matches the step on wasm: loss, its terms and every gradient', async (t) => {
  const before = tf.memory().numTensors;
  const want = await stepOn('wasm');
  const got = await stepOn('webgpu');
  t.is(tf.memory().numTensors, before, 'tensors left behind');
  t.true(Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss), `loss ${got.loss} on WebGPU, ${want.loss} on wasm`);
  for (const [k, v] of Object.entries(want.terms)) t.true(Math.abs(got.terms[k]! - v) <= 1e-5 * Math.max(Math.abs(v), 1e-3), `${k}: ${got.terms[k]} vs ${v}`);
  t.deepEqual([...got.grads.keys()], [...want.grads.keys()]);
  let worst = { name: '', rel: 0 };
  for (const [name, w] of want.grads) {
    // Relative to the tensor's largest gradient: float32 rounding of two kernel sets, through the network.
    const rel = maxAbsDiff(got.grads.get(name)!, w) / Math.max(...w.map(Math.abs), 1e-12);
    if (rel > worst.rel) worst = { name, rel };
  }
  t.true(worst.rel <= 1e-4, `largest relative gradient difference ${worst.rel} (${worst.name})`);
  t.log(`loss ${want.loss}; largest relative gradient difference ${worst.rel.toExponential(2)} (${worst.name})`);
});

gpuTest('a short detection run on WebGPU (training, validation, checkpoint), its export from the checkpoint checked in ONNX Runtime, and its evaluation', async (t) => {
  await tf.setBackend('webgpu');
  const before = tf.memory().numTensors;
  const out = path.join(tmp, 'run');
  let backend = '';
  // The run's own export is exportDetectorRun, which `zoo det export` runs from the checkpoint below.
  const r = await trainDetection(
    { backbone: 'resnet_test', data: root, out, epochs: 1, batchSize: 2, microBatch: 1, minSize: 96, maxSize: 128, rpnChannels: 32, roiSize: 7, roisPerImage: 16, testProposals: 50, valSplit: 'test', lr: 0.01, warmup: 0.5, backend: 'webgpu', export: false },
    { onBackend: (info) => (backend = info.name) },
  );
  t.is(backend, 'webgpu');
  t.is(tf.getBackend(), 'webgpu');
  t.true(r.finished);
  t.is(r.records.length, 1);
  t.true(Number.isFinite(r.records[0]!.loss), `loss ${r.records[0]!.loss}`);
  t.is(tf.memory().numTensors, before, 'tensors left behind by the run');
  const exported = await exportDetection(out, path.join(tmp, 'det.onnx'), { backend: 'webgpu' });
  t.true(exported.check.passed, 'the export check (the tfjs detector on WebGPU against ONNX Runtime)');
  t.is(tf.getBackend(), 'webgpu');
  // The exported graph evaluates as the run's validation on WebGPU did (same images, ONNX Runtime).
  const ev = await evaluateDetection({ model: exported.file, data: root, split: 'test' });
  t.true(Math.abs(ev.result.map07 - r.records[0]!.valMap07) < 0.02, `ONNX ${ev.result.map07} vs WebGPU ${r.records[0]!.valMap07}`);
});

gpuTest("a detection run whose largest tensor the device cannot bind is refused before it starts, naming what fits", async (t) => {
  await tf.setBackend('webgpu');
  const limit = maxBindingBytes()!;
  // resnet_test's trunk holds about 16 bytes per input pixel at most (its stem), so two images of this
  // side are over the limit and one is under it.
  const side = Math.ceil(Math.sqrt((0.7 * limit) / 16) / 16) * 16;
  const c = detTrainConfig({ arch: 'resnet_test', backbone: 'resnet_test', classes: ['a'], data: { spec: 'x', trainSplit: 'trainval', valSplit: 'test', train: 2, val: 1 }, minSize: side, maxSize: side, batchSize: 2, microBatch: 2 });
  const images = [{ height: side, width: side }, { height: side, width: side }] as VocImage[];
  t.throws(() => checkDetFitsDevice(c, images, images.slice(0, 1), { export: false }), { instanceOf: UserError, message: /detector training on resnet_test at \d+x\d+ needs .* at batch 2.*--micro-batch 1 or smaller, or --min-size \d+ at this batch/ });
  t.notThrows(() => checkDetFitsDevice({ ...c, microBatch: 1, batchSize: 1 }, images, images.slice(0, 1), { export: false }));
  // Through a run: regions of a 7x7 RoIAlign on resnet_test's 128 channels, 0.7 of the limit per image.
  const out = path.join(tmp, 'too-large');
  const rois = Math.ceil((0.7 * limit) / (7 * 7 * 128 * 4));
  await t.throwsAsync(
    trainDetection({ backbone: 'resnet_test', data: root, out, epochs: 1, batchSize: 2, microBatch: 2, minSize: 96, maxSize: 128, rpnChannels: 32, roiSize: 7, roisPerImage: rois, testProposals: 50, valSplit: 'test', backend: 'webgpu' }),
    { instanceOf: UserError, message: /detector training on resnet_test pools 2 x \d+ regions.*--rois-per-image \d+ or smaller, or --micro-batch 1 or smaller/ },
  );
  t.false(existsSync(out), 'nothing written');
});
