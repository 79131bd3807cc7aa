/**
 * Segmentation on the WebGPU backend (Mesa's lavapipe in CI, a GPU where there is one) against the wasm
 * backend: a tiny FCN's logits, one training step's loss and gradients (through the half-pixel bilinear
 * upsampling, whose gradient on WebGPU is composed from matrix products), and a short `zoo seg train`,
 * its export and evaluation through the library API, whose loss, metrics and trained parameters match
 * the same run on wasm; crops or validation images too large for the device are refused before a run.
 *
 * Everything on wasm runs first (test.before): tensors cannot move off WebGPU without a read, so each
 * backend builds its own segmenter from the same seed, and the process switches backend only once.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { webgpuProbe, webgpuTest } from './helpers/webgpu.js';
import { initBackend, registerCoreGradients, releaseBackend } from '../src/backend/index.js';
import { createSegmenter, segmenterImageBytes } from '../src/segmentation/segmenter.js';
import { checkSegFitsDevice, segTrainConfig } from '../src/segmentation/train.js';
import { defaultFcnConfig } from '../src/segmentation/fcn.js';
import { maxBindingBytes } from '../src/backend/webgpu.js';
import { UserError } from '../src/errors.js';
import { segmentationLoss } from '../src/segmentation/loss.js';
import { generateAdeSet } from '../src/segmentation/ade_generate.js';
import { readAde } from '../src/segmentation/ade.js';
import { evaluateSegmentation, exportSegmentation, segment, trainSegmentation, type SegTrainOutcome } from '../src/api/segmentation.js';
import { readSafetensors } from '../src/formats/safetensors.js';
import { smoothImages } from '../src/detection/export.js';
import { resizeBilinear } from '../src/ops/index.js';
import { Rng } from '../src/util/random.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-webgpu-seg-'));
process.env.ZOO_CACHE = path.join(tmp, 'cache');

// Odd sizes: C5 is 5x4, upsampled by non-integer factors (the half-pixel gradient's hard case).
const [N, H, W, K] = [2, 33, 29, 3];
const images = smoothImages(N, H, W, 7);
// Labels 0..K with unlabeled pixels (0) among them.
const labels = Uint8Array.from({ length: N * H * W }, (_, i) => (i * 7 + Math.floor(i / W)) % (K + 1));

/** Everything one step computes, read back. */
interface StepValues {
  evalLogits: Float32Array;
  trainLogits: Float32Array;
  loss: number;
  seg: number;
  aux: number;
  grads: Map<string, Float32Array>;
}

/** A fresh FCN from seed 1: eval-mode logits, then train-mode logits, loss and gradients with dropout seed 5. */
async function stepOn(): Promise<StepValues> {
  const seg = createSegmenter('resnet_test', K, { seed: 1 });
  const x = tf.tensor4d(images, [N, H, W, 3]) as Tensor4D;
  try {
    const evalOut = tf.tidy(() => seg.logits(x, 'eval').out);
    const trainable = [...seg.params.trainable()];
    const terms: tf.Tensor[] = [];
    const { value, grads } = tf.tidy(() =>
      tf.variableGrads(() => {
        const r = seg.logits(x, 'train', { aux: true, dropoutSeed: 5 });
        terms.push(tf.keep(r.out));
        const l = segmentationLoss(r.out, r.aux, labels, seg.config.auxWeight);
        terms.push(tf.keep(l.seg), tf.keep(l.aux!));
        return l.total;
      }, trainable.map(([, v]) => v)),
    );
    const [trainLogits, segLoss, auxLoss] = terms as [tf.Tensor, tf.Tensor, tf.Tensor];
    const read = async (t: tf.Tensor) => (await t.data()) as Float32Array;
    const out: StepValues = {
      evalLogits: await read(evalOut),
      trainLogits: await read(trainLogits),
      loss: (await read(value))[0]!,
      seg: (await read(segLoss))[0]!,
      aux: (await read(auxLoss))[0]!,
      grads: new Map(),
    };
    for (const [name, v] of trainable) out.grads.set(name, await read(grads[v.name]!));
    tf.dispose([evalOut, value, ...terms, ...Object.values(grads)]);
    return out;
  } finally {
    // With the segmenter go its parameters and the eval pass's folded batch-norm weights.
    seg.dispose();
    x.dispose();
  }
}

/** Resize cases: up by non-integer factors, down in both axes, down in one and up in the other, one row. */
const RESIZE_CASES: { shape: [number, number, number, number]; to: [number, number] }[] = [
  { shape: [2, 5, 4, 3], to: [33, 29] },
  { shape: [1, 13, 9, 2], to: [4, 5] },
  { shape: [2, 9, 6, 1], to: [4, 11] },
  { shape: [1, 1, 3, 2], to: [5, 1] },
];

/** The gradient of sum(resize(x) * dy) for each case and mode, from fixed random x and dy. */
async function resizeGrads(): Promise<Float32Array[]> {
  const rng = new Rng(3);
  const out: Float32Array[] = [];
  for (const alignCorners of [false, true]) {
    for (const { shape, to } of RESIZE_CASES) {
      const randn = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
      const x = tf.tensor4d(randn(shape.reduce((a, b) => a * b)), shape);
      const dy = tf.tensor4d(randn(shape[0] * to[0] * to[1] * shape[3]), [shape[0], to[0], to[1], shape[3]]);
      const g = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(resizeBilinear(v as Tensor4D, to, { alignCorners }), dy)))(x);
      out.push((await g.data()) as Float32Array);
      tf.dispose([x, dy, g]);
    }
  }
  return out;
}

/** A short run: 4 training crops of 32x32 in 2 updates of 2, 2 validation images, export with its check. */
const RUN = { backbone: 'resnet_test', baseSize: 32, cropSize: 32, batchSize: 2, microBatch: 2, lr: 0.002, epochs: 1 } as const;
let root = '';
let wasmStep: StepValues | undefined;
let wasmResizeGrads: Float32Array[] = [];
let wasmRun: SegTrainOutcome | undefined;

test.before(async () => {
  if (!webgpuProbe.available) return;
  await registerCoreGradients();
  const set = await generateAdeSet(path.join(tmp, 'ade'), { trainImages: 4, valImages: 2, minSide: 32, maxSide: 40, minItem: 12, maxItem: 24, maxObjects: 2, seed: 5 });
  root = set.root;
  await initBackend({ backend: 'wasm' });
  wasmResizeGrads = await resizeGrads();
  wasmStep = await stepOn();
  wasmRun = await trainSegmentation({ ...RUN, data: root, out: path.join(tmp, 'wasm'), backend: 'wasm', export: false });
});

test.after.always(() => {
  releaseBackend();
  rmSync(tmp, { recursive: true, force: true });
});

/** max |a - b| / max(1, max |b|). */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  let scale = 1;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - b[i]!);
    if (!(e <= d)) d = Number.isNaN(e) ? Infinity : e;
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return d / scale;
}

/** max over elements of |a - b| / max |b| (the tensor's own scale, however small). */
function gradDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let scale = 0;
  for (const v of b) scale = Math.max(scale, Math.abs(v));
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - b[i]!);
    if (!(e <= d)) d = Number.isNaN(e) ? Infinity : e;
  }
  return scale === 0 ? d : d / scale;
}

webgpuTest('resize gradient on WebGPU')(
  "the gradient of bilinear resizing on WebGPU (composed from matrix products) matches zoo's kernel on wasm, half-pixel and aligned corners",
  async (t) => {
    const info = await initBackend({ backend: 'webgpu', purpose: 'training' });
    t.is(info.name, 'webgpu');
    const before = tf.memory().numTensors;
    const got = await resizeGrads();
    t.is(tf.memory().numTensors, before);
    got.forEach((g, i) => {
      const c = RESIZE_CASES[i % RESIZE_CASES.length]!;
      const d = relDiff(g, wasmResizeGrads[i]!);
      t.true(d < 1e-5, `alignCorners ${i >= RESIZE_CASES.length} [${c.shape}] -> ${c.to}: ${d}`);
    });
  },
);

webgpuTest('FCN on WebGPU')(
  "an FCN's logits, loss and every gradient of one training step on WebGPU match the wasm backend (relative 1e-4)",
  async (t) => {
    const info = await initBackend({ backend: 'webgpu', purpose: 'training' });
    t.is(info.name, 'webgpu');
    const before = tf.memory().numTensors;
    const got = await stepOn();
    t.is(tf.memory().numTensors, before, 'tensors left behind on WebGPU');
    const want = wasmStep!;
    t.true(relDiff(got.evalLogits, want.evalLogits) < 1e-4, `eval logits: ${relDiff(got.evalLogits, want.evalLogits)}`);
    t.true(relDiff(got.trainLogits, want.trainLogits) < 1e-4, `train logits: ${relDiff(got.trainLogits, want.trainLogits)}`);
    for (const k of ['loss', 'seg', 'aux'] as const) {
      t.true(Math.abs(got[k] - want[k]) < 1e-4 * Math.max(1, Math.abs(want[k])), `${k}: ${got[k]} vs ${want[k]}`);
    }
    t.is(got.grads.size, want.grads.size);
    let worst = { name: '', d: 0 };
    for (const [name, g] of want.grads) {
      const d = gradDiff(got.grads.get(name)!, g);
      if (!(d <= worst.d)) worst = { name, d };
      t.true(g.some((v) => v !== 0), `${name}: the wasm gradient is not all zero`);
    }
    t.true(worst.d < 1e-4, `largest gradient difference: ${worst.name} ${worst.d}`);
    t.log(`loss ${got.loss} vs ${want.loss}; largest gradient difference ${worst.d.toExponential(2)} (${worst.name}) relative to its tensor's largest value`);
  },
);

webgpuTest('seg train on WebGPU')(
  'seg train, export and evaluation on WebGPU through the library API: the loss, metrics and trained parameters of the wasm run, a checked export, nothing leaked',
  async (t) => {
    const out = path.join(tmp, 'webgpu');
    let backend = '';
    await initBackend({ backend: 'webgpu', purpose: 'training' });
    const before = tf.memory().numTensors;
    const r = await trainSegmentation({ ...RUN, data: root, out, backend: 'webgpu' }, { onBackend: (i) => (backend = i.name) });
    t.is(backend, 'webgpu');
    t.is(tf.memory().numTensors, before, 'tensors left behind by the run (steps, validation, export check)');
    const w = wasmRun!;
    t.true(r.finished && w.finished);
    t.true(r.check!.passed, JSON.stringify(r.check));
    const [a, b] = [r.records[0]!, w.records[0]!];
    t.true(Math.abs(a.loss - b.loss) < 1e-4 * Math.max(1, b.loss), `loss ${a.loss} vs ${b.loss}`);
    t.true(Math.abs(a.valPixAcc - b.valPixAcc) < 1e-3, `pixAcc ${a.valPixAcc} vs ${b.valPixAcc}`);
    t.true(Math.abs(a.valMIoU - b.valMIoU) < 1e-3, `mIoU ${a.valMIoU} vs ${b.valMIoU}`);
    // Parameters, running statistics and momentum after the updates.
    const ca = await readSafetensors(r.checkpoint);
    const cb = await readSafetensors(w.checkpoint);
    t.deepEqual([...ca.tensors.keys()].sort(), [...cb.tensors.keys()].sort());
    let worst = { name: '', d: 0 };
    for (const [name, tb] of cb.tensors) {
      const d = gradDiff(ca.tensors.get(name)!.data as Float32Array, tb.data as Float32Array);
      if (!(d <= worst.d)) worst = { name, d };
    }
    t.true(worst.d < 1e-4, `checkpoint: largest difference ${worst.name} ${worst.d}`);

    // Export of the run's checkpoint on WebGPU, checked in ONNX Runtime against the WebGPU segmenter.
    const file = path.join(tmp, 'webgpu.onnx');
    const ex = await exportSegmentation(out, file, { argmax: true, backend: 'webgpu' });
    t.true(ex.check.passed, JSON.stringify(ex.check));
    t.is(tf.memory().numTensors, before, 'tensors left behind by the export');
    // The exported graph scores as the run's validation on WebGPU did, and segments an image.
    const ev = await evaluateSegmentation({ model: file, data: root });
    t.true(Math.abs(ev.result.pixAcc - a.valPixAcc) < 1e-3, `ONNX ${ev.result.pixAcc} vs WebGPU ${a.valPixAcc}`);
    t.true(Math.abs(ev.result.mIoU - a.valMIoU) < 1e-3);
    const val = await readAde(root, { split: 'validation' });
    const [mask] = await segment(file, [val.samples[0]!.image]);
    t.is(mask!.labels.length, mask!.width * mask!.height);
    t.log(`loss ${a.loss} vs ${b.loss} on wasm; checkpoint differs by ${worst.d.toExponential(2)} at most (${worst.name}, relative to its tensor's largest value); train ${r.seconds.toFixed(1)} s`);
  },
);

webgpuTest('seg size check on WebGPU')(
  "on WebGPU, training crops or a validation image whose largest tensor the device cannot bind are refused before the run starts, naming the device's limit",
  async (t) => {
    await initBackend({ backend: 'webgpu', purpose: 'training' });
    const limit = maxBindingBytes()!;
    const classes = (await readAde(root, { split: 'validation' })).classes;
    const fcn = defaultFcnConfig(classes.length);
    const bytes = (h: number, w: number) => segmenterImageBytes('resnet_test', fcn, h, w, { aux: true });
    // The smallest crop size (a multiple of 16) at which two crops no longer bind, one still does.
    let crop = 16;
    while (2 * bytes(crop, crop) <= limit) crop += 16;
    t.true(bytes(crop, crop) <= limit, `one ${crop}x${crop} crop: ${bytes(crop, crop)} bytes`);
    const out = path.join(tmp, 'too-large');
    const err = await t.throwsAsync(trainSegmentation({ ...RUN, cropSize: crop, baseSize: crop, data: root, out, backend: 'webgpu' }), { instanceOf: UserError });
    t.regex(err!.message, new RegExp(`FCN training on resnet_test at ${crop}x${crop} crops needs a .* tensor at batch 2 .* binds at most .*: use --micro-batch 1 or smaller`));
    t.false(existsSync(out), 'nothing written');
    t.log(err!.message);
    // Validation: the largest image of the split, at its own size.
    const config = segTrainConfig({ arch: 'resnet_test', backbone: 'resnet_test', classes: [...classes], data: { spec: root, train: 4, val: 2 }, cropSize: 32, baseSize: 32, microBatch: 2, batchSize: 2 });
    let side = 64;
    while (segmenterImageBytes('resnet_test', fcn, side, side) <= limit) side *= 2;
    const sample = (id: string, width: number, height: number) => ({ id, image: `/data/${id}.jpg`, annotation: `/data/${id}.png`, width, height });
    const val = { root: '/data', split: 'validation' as const, classes, samples: [sample('small', 40, 30), sample('huge', side, side), sample('unread', 0, 0)] };
    t.throws(() => checkSegFitsDevice(config, val), { instanceOf: UserError, message: new RegExp(`validation of /data/huge.jpg at its ${side}x${side} needs a .* binds at most`) });
    t.notThrows(() => checkSegFitsDevice(config, { ...val, samples: [val.samples[0]!, val.samples[2]!] }));
  },
);
