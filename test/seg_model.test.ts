/**
 * The FCN's parts: bilinear resizing (ops/resize.ts) against a direct computation written here from
 * PyTorch's upsample_bilinear2d definition, its gradient against that computation's adjoint, the
 * gradient composed from matrix products (what backends without zoo's kernel use) against zoo's kernel,
 * ONNX Runtime's Resize against tfjs in both coordinate modes; the dilated backbone's strides and shapes at
 * odd sizes; counts; the exported graph against tfjs on three sizes (logits, argmax labels, the
 * auxiliary output); dropout's determinism by seed; and tensor leaks.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend, maxAbsDiff } from './helpers/backend.js';
import { resizeBilinear } from '../src/ops/index.js';
import { resizeBilinearGradComposed } from '../src/ops/resize.js';
import '@tensorflow/tfjs-backend-cpu';
import { ZOO_KERNELS, registerZooKernels } from '../src/backend/kernels/index.js';
import { createSegmenter } from '../src/segmentation/segmenter.js';
import { checkSegmenterExport, exportSegmenter, runSegmenterSession } from '../src/segmentation/export.js';
import { smoothImages } from '../src/detection/export.js';
import { OnnxBuilder, encodeModel } from '../src/onnx/export.js';
import { DataType, valueInfo } from '../src/onnx/proto.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { ShapeBuilder } from '../src/models/count.js';
import { Rng } from '../src/util/random.js';

test.before(async () => {
  await setupBackend();
  // The cpu backend too, with zoo's kernels, for the resize gradient on both backends that have it.
  registerZooKernels('cpu');
});

const randn = (n: number, rng: Rng) => Float32Array.from({ length: n }, () => rng.normal());

/** PyTorch's bilinear interpolation, written out per output pixel (float64). */
function referenceResize(x: Float32Array, [N, h, w, C]: number[], H: number, W: number, alignCorners: boolean): Float64Array {
  const out = new Float64Array(N * H * W * C);
  const src = (i: number, inSize: number, outSize: number) => {
    if (alignCorners) return outSize > 1 ? (i * (inSize - 1)) / (outSize - 1) : 0;
    return Math.max(0, ((i + 0.5) * inSize) / outSize - 0.5);
  };
  for (let n = 0; n < N!; n++)
    for (let oy = 0; oy < H; oy++) {
      const sy = src(oy, h!, H);
      const y0 = Math.min(Math.floor(sy), h! - 1);
      const y1 = Math.min(y0 + 1, h! - 1);
      const ly = sy - y0;
      for (let ox = 0; ox < W; ox++) {
        const sx = src(ox, w!, W);
        const x0 = Math.min(Math.floor(sx), w! - 1);
        const x1 = Math.min(x0 + 1, w! - 1);
        const lx = sx - x0;
        for (let c = 0; c < C!; c++) {
          const at = (y: number, xx: number) => x[((n * h! + y) * w! + xx) * C! + c]!;
          out[((n * H + oy) * W + ox) * C! + c] =
            (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
        }
      }
    }
  return out;
}

const RESIZE_CASES: { from: [number, number]; to: [number, number] }[] = [
  { from: [5, 7], to: [37, 53] }, // upsampling by non-integer factors (the FCN's case at odd input sizes)
  { from: [8, 8], to: [64, 64] },
  { from: [9, 6], to: [4, 11] }, // down in one axis, up in the other
  { from: [1, 3], to: [5, 2] }, // a single row
];

for (const alignCorners of [false, true]) {
  test.serial(`resize (alignCorners ${alignCorners}): values match PyTorch's definition, the gradient is its adjoint (wasm and cpu), no leaks`, async (t) => {
   for (const backend of ['wasm', 'cpu']) {
    await tf.setBackend(backend);
    t.is(tf.getBackend(), backend);
    const rng = new Rng(alignCorners ? 2 : 1);
    const before = tf.memory().numTensors;
    for (const { from, to } of RESIZE_CASES) {
      const shape = [2, from[0], from[1], 3];
      const xv = randn(shape.reduce((a, b) => a * b), rng);
      const x = tf.tensor4d(xv, shape as [number, number, number, number]);
      const y = resizeBilinear(x, to, { alignCorners });
      const want = referenceResize(xv, shape, to[0], to[1], alignCorners);
      t.deepEqual(y.shape, [2, to[0], to[1], 3]);
      t.true(maxAbsDiff(y.dataSync() as Float32Array, Float32Array.from(want)) < 1e-5, `${from} -> ${to} values`);
      // <dy, R x> = <R^T dy, x> for random dy: the gradient is the adjoint of the forward map.
      const dyv = randn(want.length, rng);
      const dy = tf.tensor4d(dyv, y.shape as [number, number, number, number]);
      const g = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(resizeBilinear(v as tf.Tensor4D, to, { alignCorners }), dy)))(x);
      const gv = g.dataSync();
      let lhs = 0;
      let rhs = 0;
      for (let i = 0; i < want.length; i++) lhs += dyv[i]! * want[i]!;
      for (let i = 0; i < xv.length; i++) rhs += gv[i]! * xv[i]!;
      t.true(Math.abs(lhs - rhs) <= 1e-4 * Math.max(1, Math.abs(lhs)), `${from} -> ${to} adjoint: ${lhs} vs ${rhs}`);
      // And per element: the gradient of one output pixel lands on the pixels it reads, with its weights.
      tf.dispose([x, y, dy, g]);
    }
    t.is(tf.memory().numTensors, before);
   }
   await tf.setBackend('wasm');
  });

  test.serial(`resize (alignCorners ${alignCorners}): ONNX Runtime's Resize agrees with tfjs at dynamic sizes`, async (t) => {
    const b = new OnnxBuilder(() => new Float32Array(0), { foldBatchNorm: false, fp16: false, epsilon: 1e-5 });
    const out = b.resize('x', 'like', { alignCorners });
    b.op('Identity', [out], 'y', {}, ['y']);
    const bytes = encodeModel({
      name: 'resize',
      builder: b,
      inputs: [valueInfo('x', DataType.FLOAT, ['n', 'c', 'h', 'w']), valueInfo('like', DataType.FLOAT, ['n', 1, 'H', 'W'])],
      outputs: [valueInfo('y', DataType.FLOAT, ['n', 'c', 'H', 'W'])],
      metadata: {},
    });
    const s = await createSession(bytes, { provider: 'cpu' });
    const rng = new Rng(5);
    try {
      for (const { from, to } of RESIZE_CASES) {
        const C = 3;
        const xv = randn(from[0] * from[1] * C, rng);
        const want = referenceResize(xv, [1, from[0], from[1], C], to[0], to[1], alignCorners);
        // NHWC -> NCHW for ONNX
        const nchw = new Float32Array(xv.length);
        for (let y = 0; y < from[0]; y++) for (let x = 0; x < from[1]; x++) for (let c = 0; c < C; c++) nchw[(c * from[0] + y) * from[1] + x] = xv[(y * from[1] + x) * C + c]!;
        const r = await runSession(s, {
          x: { type: 'float32', data: nchw, dims: [1, C, from[0], from[1]] },
          like: { type: 'float32', data: new Float32Array(to[0] * to[1]), dims: [1, 1, to[0], to[1]] },
        });
        const got = r.y!.data as Float32Array;
        t.deepEqual(r.y!.dims, [1, C, to[0], to[1]]);
        let worst = 0;
        for (let y = 0; y < to[0]; y++)
          for (let x = 0; x < to[1]; x++)
            for (let c = 0; c < C; c++) worst = Math.max(worst, Math.abs(got[(c * to[0] + y) * to[1] + x]! - want[(y * to[1] + x) * C + c]!));
        t.true(worst < 1e-5, `${from} -> ${to}: ${worst}`);
      }
    } finally {
      await s.session.release();
    }
  });
}

/** Random resize cases: odd and even sizes, down- and upsampling, single rows and columns. */
function gradCases(rng: Rng, count: number): { shape: [number, number, number, number]; to: [number, number] }[] {
  const side = () => 1 + Math.floor(rng.uniform() * 13);
  const cases: { shape: [number, number, number, number]; to: [number, number] }[] = [
    { shape: [2, 5, 7, 3], to: [37, 53] }, // the FCN's case: up by non-integer factors
    { shape: [1, 8, 8, 2], to: [64, 64] },
    { shape: [1, 13, 9, 2], to: [4, 5] }, // down in both axes
    { shape: [2, 9, 6, 1], to: [4, 11] }, // down in one axis, up in the other
    { shape: [1, 1, 3, 2], to: [5, 1] },
  ];
  for (let i = 0; i < count; i++) {
    const n = 1 + Math.floor(rng.uniform() * 2);
    const c = 1 + Math.floor(rng.uniform() * 4);
    cases.push({ shape: [n, side(), side(), c], to: [1 + Math.floor(rng.uniform() * 40), 1 + Math.floor(rng.uniform() * 40)] });
  }
  return cases;
}

test.serial('the resize gradient composed from matrix products (for backends without zoo\'s kernel) matches zoo\'s kernel on wasm and cpu, both modes, random sizes', async (t) => {
  const rng = new Rng(17);
  const cases = gradCases(rng, 12);
  for (const backend of ['wasm', 'cpu']) {
    await tf.setBackend(backend);
    const before = tf.memory().numTensors;
    for (const alignCorners of [false, true]) {
      for (const { shape, to } of cases) {
        const x = tf.tensor4d(randn(shape.reduce((a, b) => a * b), rng), shape);
        const dy = tf.tensor4d(randn(shape[0] * to[0] * to[1] * shape[3], rng), [shape[0], to[0], to[1], shape[3]]);
        const want = tf.engine().runKernel(ZOO_KERNELS.resizeBilinearGrad, { dy }, { inShape: shape, alignCorners } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const got = resizeBilinearGradComposed(dy, shape, alignCorners);
        t.deepEqual(got.shape, shape);
        const w = want.dataSync() as Float32Array;
        const d = maxAbsDiff(got.dataSync(), w);
        t.true(d <= 1e-5 * Math.max(1, ...w.map(Math.abs)), `${backend} alignCorners ${alignCorners} [${shape}] -> ${to}: max |diff| ${d}`);
        tf.dispose([x, dy, want, got]);
      }
    }
    t.is(tf.memory().numTensors, before, `${backend}: no leaks`);
  }
  await tf.setBackend('wasm');
});

test.serial('without zoo\'s resize-gradient kernel, tf.grad of half-pixel and aligned-corner resizing takes the composed gradient (cpu)', async (t) => {
  await tf.setBackend('cpu');
  const kernel = tf.getKernel(ZOO_KERNELS.resizeBilinearGrad, 'cpu')!;
  const rng = new Rng(23);
  const x = tf.tensor4d(randn(2 * 7 * 5 * 3, rng), [2, 7, 5, 3]);
  const dy = tf.tensor4d(randn(2 * 19 * 12 * 3, rng), [2, 19, 12, 3]);
  const grad = (alignCorners: boolean) =>
    tf.tidy(() => tf.grad((v: tf.Tensor) => tf.sum(tf.mul(resizeBilinear(v as tf.Tensor4D, [19, 12], { alignCorners }), dy)))(x).dataSync() as Float32Array);
  const withKernel = [grad(false), grad(true)];
  tf.unregisterKernel(ZOO_KERNELS.resizeBilinearGrad, 'cpu');
  try {
    for (const [i, alignCorners] of [false, true].entries()) {
      const composed = grad(alignCorners);
      t.true(maxAbsDiff(composed, withKernel[i]!) < 1e-5, `alignCorners ${alignCorners}`);
    }
  } finally {
    tf.registerKernel(kernel);
    tf.dispose([x, dy]);
    await tf.setBackend('wasm');
  }
});

test('dilation keeps the stride: output stride 8 and 16 at odd input sizes (shapes of C4/C5 and the logits at input size)', (t) => {
  for (const os of [8, 16] as const) {
    const seg = createSegmenter('resnet_test', 5, { config: { outputStride: os } });
    try {
      for (const [H, W] of [
        [97, 97],
        [64, 121],
        [33, 50],
      ] as [number, number][]) {
        const b = new ShapeBuilder();
        const feats = seg.backbone.stages(b, { shape: [H, W, 3] }, { from: 0, to: 4 });
        // The stem and stage 2 downsample with padding: ceil division at each stride-2 step.
        const down = (v: number, times: number) => {
          for (let i = 0; i < times; i++) v = Math.floor((v - 1) / 2) + 1;
          return v;
        };
        const c3 = [down(H, 3), down(W, 3)];
        t.deepEqual(feats[1]!.shape.slice(0, 2), c3, `C3 at ${H}x${W}`);
        t.deepEqual(feats[2]!.shape.slice(0, 2), os === 8 ? c3 : [down(H, 4), down(W, 4)], `C4 at ${H}x${W}, OS ${os}`);
        t.deepEqual(feats[3]!.shape.slice(0, 2), feats[2]!.shape.slice(0, 2), `C5 keeps C4's size at ${H}x${W}`);
        const r = seg.net.forward(new ShapeBuilder(), { shape: [H, W, 3] }, { aux: true });
        t.deepEqual(r.out.shape, [H, W, 5]);
        t.deepEqual(r.aux!.shape, [H, W, 5]);
      }
    } finally {
      seg.dispose();
    }
  }
  t.throws(() => createSegmenter('resnet_test', 5, { config: { outputStride: 32 as 8 } }), { message: /output ?stride/i });
  t.throws(() => createSegmenter('resnet_test', 0), { message: /numClasses/ });
});

test('counts: the FCN head adds exactly its convolutions to the dilated backbone; the aux head only when asked', (t) => {
  const seg = createSegmenter('resnet50b', 150);
  try {
    const H = 480;
    const plain = seg.counts(H, H);
    const withAux = seg.counts(H, H, { aux: true });
    const s = H / 8;
    const head = s * s * 512 * 9 * 2048 + s * s * 150 * 512;
    const aux = s * s * 256 * 9 * 1024 + s * s * 150 * 256;
    t.is(withAux.macs - plain.macs, aux);
    const backbone = new ShapeBuilder();
    seg.backbone.stages(backbone, { shape: [H, H, 3] }, { from: 0, to: 4 });
    t.is(plain.macs, backbone.layers.reduce((a, l) => a + l.macs, 0) + head);
    // torchvision's fcn_resnet50 without aux: 32.96M parameters for 21 classes; 150 classes add 129 x 512.
    const tv = createSegmenter('resnet50b', 21);
    try {
      t.is(tv.counts(H, H).params, 32_957_013);
    } finally {
      tv.dispose();
    }
  } finally {
    seg.dispose();
  }
});

test.serial('export: the ONNX graph reproduces tfjs on three sizes (logits, argmax labels, aux logits), batch 2', async (t) => {
  const seg = createSegmenter('resnet_test', 6, { seed: 3 });
  try {
    // Decisive predictions: scale the last convolution so that argmax is not decided by rounding.
    const w = seg.params.get('classifier.4.weight');
    w.assign(tf.mul(w, 20));
    const bytes = await exportSegmenter(seg, { argmax: true, aux: true });
    const report = await checkSegmenterExport(seg, bytes, { batch: 2 });
    t.true(report.passed, JSON.stringify(report.cases));
    t.is(report.cases.length, 3);
    for (const c of report.cases) t.true(c.labelAgreement > 0.999, `labels ${c.labelAgreement}`);
    const s = await createSession(bytes, { provider: 'cpu' });
    try {
      const [H, W] = [45, 71];
      const x = smoothImages(1, H, W, 4);
      const r = await runSegmenterSession(s, x, [1, H, W, 3]);
      t.deepEqual(r.logits!.dims, [1, 6, H, W]);
      t.deepEqual(r.labels!.dims, [1, H, W]);
      t.deepEqual(r.aux_logits!.dims, [1, 6, H, W]);
      const want = await seg.predict(tf.tensor4d(x, [1, H, W, 3]));
      const got = r.labels!.data as BigInt64Array;
      let agree = 0;
      for (let i = 0; i < want.length; i++) if (Number(got[i]) === want[i]) agree++;
      t.true(agree / want.length > 0.999, `labels agree on ${agree} of ${want.length}`);
      t.true(Math.min(...want) >= 1 && Math.max(...want) <= 6, 'labels are in the label encoding 1..K');
      // The aux head against tfjs
      const aux = tf.tidy(() => tf.transpose(seg.logits(tf.tensor4d(x, [1, H, W, 3]), 'eval', { aux: true }).aux!, [0, 3, 1, 2]).dataSync() as Float32Array);
      t.true(maxAbsDiff(aux, r.aux_logits!.data as Float32Array) < 1e-4 * Math.max(1, ...aux.map(Math.abs)));
    } finally {
      await s.session.release();
    }
    // Without the options: just logits
    const plain = await exportSegmenter(seg);
    const s2 = await createSession(plain, { provider: 'cpu' });
    t.deepEqual(s2.session.outputNames, ['logits']);
    await s2.session.release();
  } finally {
    seg.dispose();
  }
});

test.serial('dropout: on only with a seed, the same mask for the same seed, PyTorch scaling; train-mode logits leak nothing', (t) => {
  const seg = createSegmenter('resnet_test', 4, { seed: 1, config: { dropout: 0.5 } });
  try {
    const x = tf.tensor4d(smoothImages(1, 40, 40, 2), [1, 40, 40, 3]);
    const before = tf.memory().numTensors;
    const run = (seed?: number) => tf.tidy(() => seg.logits(x, 'frozen', seed === undefined ? {} : { dropoutSeed: seed }).out.dataSync() as Float32Array);
    const off = run();
    const a = run(7);
    const b = run(7);
    const c = run(8);
    t.deepEqual(a, b);
    t.true(maxAbsDiff(a, c) > 1e-3);
    t.true(maxAbsDiff(a, off) > 1e-3);
    t.deepEqual(run(), off);
    t.is(tf.memory().numTensors, before);
    x.dispose();
  } finally {
    seg.dispose();
  }
});

test.serial('segmenter: loadBackbone takes an undilated classifier of the same architecture and refuses another', async (t) => {
  const { createModel } = await import('../src/models/model.js');
  const cls = createModel('resnet_test', { numClasses: 10, seed: 9 });
  const seg = createSegmenter('resnet_test', 3);
  const other = createSegmenter('resnet18b', 3);
  try {
    const n = seg.loadBackbone(cls);
    t.is(n, seg.net.backboneParams().length);
    t.deepEqual(seg.params.get('layer4.0.conv1.weight').dataSync(), cls.params.get('layer4.0.conv1.weight').dataSync());
    t.throws(() => other.loadBackbone(cls), { message: /resnet_test/ });
    const x = tf.tensor4d(smoothImages(1, 33, 47, 1), [1, 33, 47, 3]);
    await seg.predict(x); // the first eval pass caches folded weights
    const before = tf.memory().numTensors;
    const p = await seg.predict(x);
    t.is(p.length, 33 * 47);
    t.is(tf.memory().numTensors, before, 'predict leaks nothing');
    x.dispose();
  } finally {
    cls.dispose();
    seg.dispose();
    other.dispose();
  }
});
