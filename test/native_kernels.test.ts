/**
 * zoo's native kernels (oneDNN addon, src/backend/native/) against the wasm backend's own kernels and
 * the cpu backend's on random cases: convolutions forward and both gradients (strides, asymmetric
 * padding, dilation, 1x1 products, taps that only meet padding), FusedConv2D with bias and ReLU, batch
 * norm in training mode with the fused ReLU and residual, the ReLU gradient, pooling gradients with
 * ties, BatchMatMul with transposes and broadcasting, and the SGD update; then a whole ResNet training
 * step, tensor leaks, and the addon's refusal of offsets outside the heap.
 *
 * Skips (saying why) where the addon is not built: `apt-get install libdnnl-dev && npm run build:native`.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend, registerCoreGradients, activeBackend, describeBackend, setMixedPrecision } from '../src/backend/index.js';
import { registerZooKernels, ZOO_KERNELS } from '../src/backend/kernels/index.js';
import { loadNative, nativeBuilt } from '../src/backend/native/addon.js';
import { nativeKernelsEnabled, setNativeKernelsEnabled, useNativeAddon } from '../src/backend/native/kernels.js';
import { createModel } from '../src/models/model.js';
import { batchNormTrain } from '../src/ops/index.js';
import { readOutputs, assertClose, type ConvCase } from './helpers/backend.js';
import { Rng } from '../src/util/random.js';

const built = nativeBuilt();
const maybe = built ? test.serial : test.skip;
if (!built) test('native kernels not built here (apt-get install libdnnl-dev && npm run build:native): skipped', (t) => t.pass());

const rng = new Rng(7);
function rand(n: number, scale = 1, offset = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + scale * rng.normal();
  return a;
}

test.before(async () => {
  if (!built) return;
  await registerCoreGradients();
  const info = await initBackend({ backend: 'native' });
  if (!info.native) throw new Error('native backend without native kernels');
  registerZooKernels('cpu');
});

type Where = 'native' | 'wasm' | 'cpu';

/** Runs fn on the native kernels, the wasm kernels or the cpu backend; checks for leaked tensors. */
async function on(where: Where, fn: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(where === 'cpu' ? 'cpu' : 'wasm');
  setNativeKernelsEnabled(where === 'native');
  try {
    return readOutputs(fn, where);
  } finally {
    setNativeKernelsEnabled(true);
    await tf.setBackend('wasm');
  }
}

type T = Parameters<typeof assertClose>[0];
const close = assertClose;

/** Compares native against wasm and cpu for each output. */
async function agree(t: T, what: string, fn: () => tf.Tensor | tf.Tensor[], tol = 2e-5, against: Where[] = ['wasm', 'cpu']): Promise<void> {
  const got = await on('native', fn);
  for (const ref of against) {
    const want = await on(ref, fn);
    t.is(got.length, want.length, `${what}: outputs`);
    got.forEach((g, i) => close(t, g, want[i]!, `${what} output ${i} vs ${ref}`, tol));
  }
}


const convCases: ConvCase[] = [
  { n: 2, h: 9, w: 9, ci: 8, co: 16, k: 3, s: 1, pad: 1, d: 1 },
  { n: 2, h: 8, w: 8, ci: 5, co: 7, k: 3, s: 2, pad: 1, d: 1 },
  { n: 2, h: 8, w: 8, ci: 5, co: 7, k: 3, s: 2, pad: 'same', d: 1 }, // tfjs's bottom-heavy 'same'
  { n: 3, h: 6, w: 5, ci: 12, co: 20, k: 1, s: 1, pad: 0, d: 1 }, // a matrix product
  { n: 2, h: 7, w: 7, ci: 6, co: 4, k: 1, s: 2, pad: 0, d: 1 },
  { n: 2, h: 9, w: 9, ci: 3, co: 8, k: 7, s: 2, pad: 3, d: 1 },
  { n: 1, h: 8, w: 8, ci: 4, co: 3, k: 3, s: 1, pad: [[0, 1], [1, 0]], d: 1 },
  { n: 1, h: 8, w: 8, ci: 2, co: 3, k: 2, s: 2, pad: 0, d: 1 },
  { n: 1, h: 10, w: 10, ci: 4, co: 3, k: 3, s: 1, pad: 2, d: 2 }, // dilated (FCN stages)
  { n: 1, h: 11, w: 11, ci: 3, co: 2, k: 3, s: 1, pad: 4, d: 4 },
  { n: 4, h: 1, w: 1, ci: 32, co: 16, k: 3, s: 1, pad: 1, d: 1 }, // only the centre tap meets the input
  { n: 4, h: 2, w: 2, ci: 16, co: 8, k: 3, s: 2, pad: 1, d: 1 }, // two taps per axis
  { n: 2, h: 3, w: 2, ci: 6, co: 5, k: 5, s: 1, pad: 2, d: 1 },
];

function label(c: ConvCase): string {
  return `${c.n}x${c.h}x${c.w}x${c.ci}->${c.co} k${c.k} s${c.s} pad ${JSON.stringify(c.pad)} d${c.d}`;
}

for (const c of convCases) {
  maybe(`convolution forward, input and filter gradients: ${label(c)}`, async (t) => {
    const x = rand(c.n * c.h * c.w * c.ci);
    const w = rand(c.k * c.k * c.ci * c.co, 0.3);
    const pad = Array.isArray(c.pad) ? [[0, 0], c.pad[0], c.pad[1], [0, 0]] : c.pad;
    const attrs = { strides: [c.s, c.s], pad, dilations: [c.d, c.d], dataFormat: 'NHWC' };
    const forward = () => tf.engine().runKernel(ZOO_KERNELS.conv2d, { x: tf.tensor4d(x, [c.n, c.h, c.w, c.ci]), filter: tf.tensor4d(w, [c.k, c.k, c.ci, c.co]) }, attrs as never) as tf.Tensor;
    const info = tf.backend_util.computeConv2DInfo([c.n, c.h, c.w, c.ci], [c.k, c.k, c.ci, c.co], c.s, c.d, pad as never);
    const shape = [c.n, info.outHeight, info.outWidth, c.co];
    const dy = rand(shape.reduce((a, b) => a * b, 1));
    const grads = () => {
      const e = tf.engine();
      const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
      const wt = tf.tensor4d(w, [c.k, c.k, c.ci, c.co]);
      const dyt = tf.tensor4d(dy, shape as [number, number, number, number]);
      return [
        e.runKernel(ZOO_KERNELS.conv2dBackpropFilter, { x: xt, dy: dyt }, { ...attrs, filterShape: wt.shape } as never) as tf.Tensor,
        e.runKernel(ZOO_KERNELS.conv2dBackpropInput, { dy: dyt, filter: wt }, { ...attrs, inputShape: xt.shape } as never) as tf.Tensor,
      ];
    };
    // The wasm kernels do not take stride and dilation together; every case here has one of them at 1.
    await agree(t, 'forward', forward);
    await agree(t, 'gradients', grads);
  });
}

maybe('the core Conv2D, Conv2DBackpropInput/Filter and FusedConv2D (bias, ReLU) run natively and agree', async (t) => {
  const x = rand(2 * 10 * 10 * 6);
  const w = rand(3 * 3 * 6 * 9, 0.3);
  const b = rand(9);
  const xt = () => tf.tensor4d(x, [2, 10, 10, 6]);
  const wt = () => tf.tensor4d(w, [3, 3, 6, 9]);
  await agree(t, 'tf.conv2d', () => tf.conv2d(xt(), wt(), 2, 'same'));
  for (const activation of ['linear', 'relu'] as const) {
    await agree(t, `fused ${activation}`, () => tf.fused.conv2d({ x: xt(), filter: wt(), strides: 1, pad: 1, bias: tf.tensor1d(b), activation }));
  }
  await agree(t, 'tf.conv2d gradients', () => tf.grads((a: tf.Tensor, f: tf.Tensor) => tf.sum(tf.square(tf.conv2d(a as tf.Tensor4D, f as tf.Tensor4D, 1, 'same'))))([xt(), wt()]), 5e-5);
  // A case the native kernel declines (an activation it does not fuse) still runs, on the wasm kernel.
  await agree(t, 'fused elu (declined)', () => tf.fused.conv2d({ x: xt(), filter: wt(), strides: 1, pad: 1, bias: tf.tensor1d(b), activation: 'elu' }), 2e-5, ['wasm']);
});

maybe('batch norm in training mode, with ReLU and residual, forward and backward', async (t) => {
  for (const [shape, relu, residual] of [
    [[4, 6, 6, 24], true, true],
    [[3, 5, 5, 7], false, false],
    [[32, 1, 1, 48], true, false],
    [[2, 9, 9, 3], false, true],
  ] as [number[], boolean, boolean][]) {
    const n = shape.reduce((a, b) => a * b, 1);
    const C = shape[3]!;
    const x = rand(n, 2, 3); // a mean well away from 0, as conv outputs have
    const g = rand(C, 0.2, 1);
    const b = rand(C);
    const r = rand(n);
    const dy = rand(n);
    const what = `bn ${shape.join('x')} relu ${relu} residual ${residual}`;
    const f = (xv: tf.Tensor, gv: tf.Tensor, bv: tf.Tensor, rv: tf.Tensor) =>
      batchNormTrain(xv, gv as tf.Tensor1D, bv as tf.Tensor1D, { epsilon: 1e-5, relu, ...(residual ? { residual: rv } : {}) });
    await agree(t, `${what} forward`, () => {
      const o = f(tf.tensor(x, shape), tf.tensor1d(g), tf.tensor1d(b), tf.tensor(r, shape));
      return [o.y, o.mean, o.invstd];
    });
    await agree(t, `${what} backward`, () => {
      const rt = tf.tensor(r, shape);
      const args = [tf.tensor(x, shape), tf.tensor1d(g), tf.tensor1d(b), ...(residual ? [rt] : [])];
      return tf.grads((a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor, rr?: tf.Tensor) => tf.sum(tf.mul(f(a, gg, bb, rr ?? rt).y, tf.tensor(dy, shape))))(args);
    }, 5e-5);
  }
});

maybe('ReLU gradient and SGD (plain and Nesterov, weight decay, gradient scale)', async (t) => {
  const n = 70001;
  const dy = rand(n);
  const y = rand(n);
  await agree(t, 'relu grad', () => tf.engine().runKernel(ZOO_KERNELS.reluGrad, { dy: tf.tensor1d(dy), y: tf.tensor1d(y) }) as tf.Tensor);
  const w = rand(n);
  const g = rand(n);
  const v = rand(n, 0.1);
  for (const nesterov of [false, true]) {
    const a = { lr: 0.05, momentum: 0.9, weightDecay: 1e-4, nesterov, gradScale: 0.5 };
    await agree(t, `sgd nesterov ${nesterov}`, () => tf.engine().runKernel(ZOO_KERNELS.sgd, { param: tf.tensor1d(w), grad: tf.tensor1d(g), velocity: tf.tensor1d(v) }, a as never) as tf.Tensor[]);
  }
});

maybe('pooling gradients: first maximum on ties and NaN, average divisor at padded edges', async (t) => {
  for (const [shape, k, s, pad] of [
    [[2, 9, 9, 40], 3, 2, 1],
    [[2, 7, 7, 5], 3, 2, 'same'],
    [[3, 8, 8, 64], 2, 2, 'same'],
    [[1, 5, 5, 3], 3, 1, 0],
  ] as [number[], number, number, number | 'same'][]) {
    const n = shape.reduce((a, b) => a * b, 1);
    // Many ties, and a NaN now and then: the first position of a window wins ties and a NaN in the
    // first position keeps the gradient, as in the wasm kernel.
    const x = rand(n).map((v, i) => (i % 23 === 5 ? NaN : Math.round(v * 2)));
    const what = `${shape.join('x')} k${k} s${s} pad ${pad}`;
    const attrs = { filterSize: k, strides: s, pad };
    const info = tf.backend_util.computePool2DInfo(shape as [number, number, number, number], k, s, 1, pad);
    const yShape = [shape[0]!, info.outHeight, info.outWidth, shape[3]!];
    const dy = rand(yShape.reduce((a, b) => a * b, 1));
    await agree(t, `max pool grad ${what}`, () => {
      const xt = tf.tensor4d(x, shape as [number, number, number, number]);
      const y = tf.engine().runKernel(ZOO_KERNELS.maxPool, { x: xt }, attrs as never) as tf.Tensor;
      return tf.engine().runKernel(ZOO_KERNELS.maxPoolGrad, { dy: tf.tensor(dy, yShape), x: xt, y }, attrs as never) as tf.Tensor;
    });
    await agree(t, `avg pool grad ${what}`, () => {
      const xt = tf.tensor4d(x, shape as [number, number, number, number]);
      return tf.engine().runKernel(ZOO_KERNELS.avgPoolGrad, { dy: tf.tensor(dy, yShape), x: xt }, attrs as never) as tf.Tensor;
    });
  }
});

maybe('BatchMatMul: transposes, batches and broadcasting', async (t) => {
  for (const [sa, sb, ta, tb] of [
    [[16, 64], [64, 10], false, false],
    [[64, 16], [64, 10], true, false],
    [[16, 64], [10, 64], false, true],
    [[64, 16], [10, 64], true, true],
    [[3, 5, 7], [3, 7, 4], false, false],
    [[3, 7, 5], [1, 4, 7], true, true],
    [[1, 5, 7], [3, 7, 4], false, false],
  ] as [number[], number[], boolean, boolean][]) {
    const a = rand(sa.reduce((p, q) => p * q, 1));
    const b = rand(sb.reduce((p, q) => p * q, 1));
    await agree(t, `matmul ${sa} x ${sb} ${ta} ${tb}`, () => tf.matMul(tf.tensor(a, sa), tf.tensor(b, sb), ta, tb));
  }
});

maybe('a ResNet-18-D training step: same loss and gradients as the wasm kernels, no leaked tensors', async (t) => {
  const model = createModel('resnet18d', { numClasses: 10, seed: 3 });
  const x = tf.tensor4d(rand(4 * 32 * 32 * 3), [4, 32, 32, 3]);
  const labels = tf.oneHot(tf.tensor1d([1, 3, 5, 7], 'int32'), 10);
  const vars = [...model.params.trainable()];
  const step = (where: 'native' | 'wasm') => {
    setNativeKernelsEnabled(where === 'native');
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, model.forward(x, { mode: 'train' })) as tf.Scalar, vars.map(([, v]) => v));
    const out = { loss: value.dataSync()[0]!, grads: new Map(vars.map(([n, v]) => [n, grads[v.name]!.dataSync().slice() as Float32Array])) };
    tf.dispose([value, ...Object.values(grads)]);
    t.is(tf.memory().numTensors, before, `${where}: no tensor left behind`);
    return out;
  };
  try {
    const n = step('native');
    const w = step('wasm');
    t.true(Math.abs(n.loss - w.loss) <= 1e-5 * Math.abs(w.loss), `loss ${n.loss} vs ${w.loss}`);
    for (const [name, g] of w.grads) close(t, n.grads.get(name)!, g, name, 1e-3);
  } finally {
    setNativeKernelsEnabled(true);
    tf.dispose([x, labels]);
    model.dispose();
  }
});

maybe('the addon refuses offsets outside the heap instead of touching memory', (t) => {
  const status = loadNative(1);
  if (!status.available) return t.fail(status.reason);
  const heap = new Uint8Array(64);
  status.addon.setHeap(heap);
  try {
    t.throws(() => status.addon.reluGrad(16, 32, 48, 100), { message: /outside the heap/ });
    t.throws(() => status.addon.reluGrad(0, 32, 48, 4), { message: /outside the heap/ });
    t.throws(() => status.addon.setHeap({} as Uint8Array), { message: /typed array/ });
    t.throws(() => status.addon.conv(0, new Int32Array(3), 16, 16, 16, 0), { message: /geometry/ });
  } finally {
    // Hand the kernels the real heap again.
    useNativeAddon(status.addon);
  }
  // The kernels compute correctly afterwards.
  const r = tf.tidy(() => tf.engine().runKernel(ZOO_KERNELS.reluGrad, { dy: tf.tensor1d([1, 2, 3]), y: tf.tensor1d([1, -1, 0.5]) }) as tf.Tensor);
  t.deepEqual(Array.from(r.dataSync()), [1, 0, 3]);
  r.dispose();
});

maybe("the backend line names the native kernels; 'wasm' turns them off and 'native' on again", async (t) => {
  t.regex(describeBackend(activeBackend()!), /^backend: native \(oneDNN \d+\.\d+\.\d+ kernels \(\w+\)/);
  const off = await initBackend({ backend: 'wasm' });
  try {
    t.false(nativeKernelsEnabled());
    t.is(off.choice, 'wasm');
    t.regex(describeBackend(off), /native kernels off/);
  } finally {
    const on = await initBackend({ backend: 'native' });
    t.true(nativeKernelsEnabled());
    t.is(on.choice, 'native');
  }
});

maybe('--fp16 says what it does: bf16 where the CPU computes it, else why float32', (t) => {
  const info = activeBackend()!.native!;
  const r = setMixedPrecision(true);
  try {
    if (info.bf16) {
      t.true(r.bf16);
      // bf16 operands keep 8 bits of mantissa: a 3x3x32 convolution agrees with float32 to about 1%.
      const x = tf.tensor4d(rand(2 * 8 * 8 * 32), [2, 8, 8, 32]);
      const w = tf.tensor4d(rand(3 * 3 * 32 * 16, 0.1), [3, 3, 32, 16]);
      const low = tf.conv2d(x, w, 1, 'same');
      setMixedPrecision(false);
      const full = tf.conv2d(x, w, 1, 'same');
      close(t, low.dataSync() as Float32Array, full.dataSync() as Float32Array, 'bf16 convolution', 2e-2);
      tf.dispose([x, w, low, full]);
    } else {
      t.false(r.bf16);
      if (!r.bf16) t.regex(r.reason, /neither AMX nor AVX512-BF16/);
    }
  } finally {
    setMixedPrecision(false);
  }
});

maybe('a NaN stays NaN through the fused ReLU and its gradient, as on the wasm kernels', async (t) => {
  const shape = [2, 3, 3, 4];
  const x = rand(72);
  x[5] = NaN; // channel 1's statistics become NaN
  const dy = rand(72);
  dy[10] = NaN;
  const nans = (a: Float32Array) => a.reduce((n, v) => n + (Number.isNaN(v) ? 1 : 0), 0);
  for (const where of ['native', 'wasm'] as const) {
    const [y] = await on(where, () => batchNormTrain(tf.tensor(x, shape), tf.ones([4]) as tf.Tensor1D, tf.zeros([4]) as tf.Tensor1D, { epsilon: 1e-5, relu: true }).y);
    t.is(nans(y!), 18, `${where}: every element of the NaN channel is NaN`);
    const [g] = await on(where, () => tf.engine().runKernel(ZOO_KERNELS.reluGrad, { dy: tf.tensor1d(dy), y: tf.tensor1d(new Float32Array(72).fill(1)) }) as tf.Tensor);
    t.is(nans(g!), 1, `${where}: the NaN gradient passes`);
  }
});

maybe('shapes the native kernels do not take run on the wasm kernels with the same result', async (t) => {
  // BatchMatMul broadcasting a batch of 1: the output keeps the broadcast rank.
  const a = rand(5 * 7);
  const b = rand(3 * 7 * 4);
  const [got] = await on('native', () => tf.matMul(tf.tensor(a, [1, 5, 7]), tf.tensor(b, [3, 7, 4])));
  const shape = tf.tidy(() => tf.matMul(tf.tensor(a, [1, 5, 7]), tf.tensor(b, [3, 7, 4])).shape);
  t.deepEqual(shape, [3, 5, 4]);
  const [want] = await on('wasm', () => tf.matMul(tf.tensor(a, [1, 5, 7]), tf.tensor(b, [3, 7, 4])));
  close(t, got!, want!, 'broadcast matmul');
  t.deepEqual(tf.tidy(() => tf.matMul(tf.tensor(a, [1, 5, 7]), tf.tensor(b.subarray(0, 28), [7, 4])).shape), [1, 5, 4]);
  // dimRoundingMode 'ceil' gives an output size the padding does not imply: declined, the wasm kernel runs.
  const x = rand(1 * 6 * 6 * 2);
  const w = rand(3 * 3 * 2 * 3);
  await agree(t, 'ceil rounding', () => tf.conv2d(tf.tensor4d(x, [1, 6, 6, 2]), tf.tensor4d(w, [3, 3, 2, 3]), 2, 0, 'NHWC', 1, 'ceil'), 2e-5, ['wasm']);
});
