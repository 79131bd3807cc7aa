/**
 * Every kernel zoo adds to or replaces in the wasm backend, against the cpu backend's own kernels on
 * small random cases (strides, paddings, kernel sizes, dilations). Where the cpu backend has no
 * reference (dilated convolution gradients; the average-pool divisor, which tfjs-core computes wrongly
 * at padded edges), a direct loop implementation written here is the reference.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setupBackend, readOutputs, assertClose, type ConvCase as ConvCaseOf } from './helpers/backend.js';
import { registerZooKernels, ZOO_KERNELS } from '../src/backend/kernels/index.js';
import { batchNormTrainComposed } from '../src/ops/index.js';
import { setConvStrategy, type ConvStrategy } from '../src/backend/kernels/conv_gemm.js';
import { Rng } from '../src/util/random.js';

const rng = new Rng(42);
function rand(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
}

test.before(async () => {
  await setupBackend('wasm');
  registerZooKernels('cpu');
});

/** Runs fn with `backend` active; the result is read back as plain arrays. */
async function on(backend: 'cpu' | 'wasm', fn: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  return readOutputs(fn, backend);
}

const close = assertClose;

type Pad = number | [[number, number], [number, number]];
type ConvCase = ConvCaseOf<Pad>;

const convCases: ConvCase[] = [
  // small maps with many channels: where products beat the native convolution
  { n: 2, h: 2, w: 2, ci: 48, co: 40, k: 3, s: 1, pad: 1, d: 1 },
  { n: 3, h: 1, w: 1, ci: 64, co: 32, k: 3, s: 1, pad: 1, d: 1 },
  { n: 2, h: 3, w: 3, ci: 40, co: 72, k: 1, s: 2, pad: 0, d: 1 },
  { n: 2, h: 7, w: 7, ci: 3, co: 4, k: 3, s: 1, pad: 1, d: 1 },
  { n: 2, h: 8, w: 8, ci: 3, co: 5, k: 3, s: 2, pad: 1, d: 1 },
  { n: 1, h: 9, w: 9, ci: 4, co: 3, k: 3, s: 2, pad: 1, d: 1 },
  { n: 2, h: 6, w: 5, ci: 3, co: 2, k: 1, s: 1, pad: 0, d: 1 },
  { n: 2, h: 6, w: 6, ci: 6, co: 2, k: 1, s: 1, pad: 0, d: 1 },
  { n: 2, h: 7, w: 7, ci: 4, co: 6, k: 1, s: 2, pad: 0, d: 1 },
  { n: 2, h: 9, w: 9, ci: 3, co: 4, k: 7, s: 2, pad: 3, d: 1 },
  { n: 1, h: 8, w: 8, ci: 2, co: 2, k: 3, s: 1, pad: [[0, 1], [1, 0]], d: 1 },
  { n: 1, h: 8, w: 8, ci: 2, co: 3, k: 2, s: 2, pad: 0, d: 1 },
  { n: 1, h: 10, w: 11, ci: 2, co: 2, k: 3, s: 3, pad: 0, d: 1 },
  { n: 2, h: 5, w: 5, ci: 3, co: 4, k: 5, s: 2, pad: 2, d: 1 },
  { n: 1, h: 10, w: 10, ci: 2, co: 3, k: 3, s: 1, pad: 2, d: 2 },
  { n: 1, h: 11, w: 11, ci: 3, co: 2, k: 3, s: 1, pad: 4, d: 4 },
  { n: 2, h: 9, w: 9, ci: 2, co: 2, k: 3, s: 1, pad: 1, d: 2 },
];

function explicitPad(p: Pad): [[0, 0], [number, number], [number, number], [0, 0]] {
  return typeof p === 'number' ? [[0, 0], [p, p], [p, p], [0, 0]] : [[0, 0], p[0], p[1], [0, 0]];
}

function outSize(size: number, k: number, s: number, before: number, after: number, d: number): number {
  return Math.floor((size + before + after - d * (k - 1) - 1) / s) + 1;
}

/** Direct loops: gradients of y[n,o,p,co] = sum x[n, o*s+i*d-pt, p*s+j*d-pl, ci] w[i,j,ci,co]. */
function referenceGrads(c: ConvCase, x: Float32Array, w: Float32Array, dy: Float32Array) {
  const [[, ], [pt, pb], [pl, pr]] = explicitPad(c.pad);
  const oh = outSize(c.h, c.k, c.s, pt, pb, c.d);
  const ow = outSize(c.w, c.k, c.s, pl, pr, c.d);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  for (let n = 0; n < c.n; n++)
    for (let o = 0; o < oh; o++)
      for (let p = 0; p < ow; p++)
        for (let i = 0; i < c.k; i++)
          for (let j = 0; j < c.k; j++) {
            const hi = o * c.s + i * c.d - pt;
            const wi = p * c.s + j * c.d - pl;
            if (hi < 0 || hi >= c.h || wi < 0 || wi >= c.w) continue;
            for (let ci = 0; ci < c.ci; ci++)
              for (let co = 0; co < c.co; co++) {
                const g = dy[((n * oh + o) * ow + p) * c.co + co]!;
                const xi = ((n * c.h + hi) * c.w + wi) * c.ci + ci;
                const wi2 = ((i * c.k + j) * c.ci + ci) * c.co + co;
                dx[xi] += g * w[wi2]!;
                dw[wi2] += g * x[xi]!;
              }
          }
  return { dx: Float32Array.from(dx), dw: Float32Array.from(dw), oh, ow };
}

/** Direct loops: the forward convolution. */
function referenceForward(c: ConvCase, x: Float32Array, w: Float32Array): Float32Array {
  const [[, ], [pt, pb], [pl, pr]] = explicitPad(c.pad);
  const oh = outSize(c.h, c.k, c.s, pt, pb, c.d);
  const ow = outSize(c.w, c.k, c.s, pl, pr, c.d);
  const y = new Float64Array(c.n * oh * ow * c.co);
  for (let n = 0; n < c.n; n++)
    for (let o = 0; o < oh; o++)
      for (let p = 0; p < ow; p++)
        for (let i = 0; i < c.k; i++)
          for (let j = 0; j < c.k; j++) {
            const hi = o * c.s + i * c.d - pt;
            const wi = p * c.s + j * c.d - pl;
            if (hi < 0 || hi >= c.h || wi < 0 || wi >= c.w) continue;
            for (let ci = 0; ci < c.ci; ci++)
              for (let co = 0; co < c.co; co++)
                y[((n * oh + o) * ow + p) * c.co + co] += x[((n * c.h + hi) * c.w + wi) * c.ci + ci]! * w[((i * c.k + j) * c.ci + ci) * c.co + co]!;
          }
  return Float32Array.from(y);
}

// Each convolution path: the native XNNPACK convolution and the matrix-product formulations in both
// orientations (which operand XNNPACK packs), forced; 'auto' picks among them by cost.
const strategies: [string, ConvStrategy, 'auto' | 'standard' | 'swapped'][] = [
  ['auto', 'auto', 'auto'],
  ['native', 'native', 'auto'],
  ['products, standard orientation', 'gemm', 'standard'],
  ['products, swapped orientation', 'gemm', 'swapped'],
];

test.afterEach.always(() => setConvStrategy('auto'));

for (const c of convCases) {
  const label = `conv ${c.k}x${c.k} stride ${c.s} pad ${JSON.stringify(c.pad)} dilation ${c.d} on ${c.n}x${c.h}x${c.w}x${c.ci} -> ${c.co}`;
  test.serial(`ZooConv2D forward (wasm), every strategy, matches direct loops: ${label}`, async (t) => {
    const pad = explicitPad(c.pad);
    const x = rand(c.n * c.h * c.w * c.ci);
    const w = rand(c.k * c.k * c.ci * c.co);
    const want = referenceForward(c, x, w);
    for (const [name, s, o] of strategies) {
      setConvStrategy(s, o);
      const [y] = await on('wasm', () =>
        tf.engine().runKernel(ZOO_KERNELS.conv2d, { x: tf.tensor4d(x, [c.n, c.h, c.w, c.ci]), filter: tf.tensor4d(w, [c.k, c.k, c.ci, c.co]) }, {
          strides: [c.s, c.s],
          pad,
          dilations: [c.d, c.d],
          dataFormat: 'NHWC',
        } as never) as tf.Tensor,
      );
      close(t, y!, want, `forward, ${name}`);
    }
  });

  test.serial(`Conv2DBackpropFilter and Conv2DBackpropInput (wasm), every strategy, match the reference: ${label}`, async (t) => {
    const pad = explicitPad(c.pad);
    const oh = outSize(c.h, c.k, c.s, pad[1][0], pad[1][1], c.d);
    const ow = outSize(c.w, c.k, c.s, pad[2][0], pad[2][1], c.d);
    const x = rand(c.n * c.h * c.w * c.ci);
    const w = rand(c.k * c.k * c.ci * c.co);
    const dy = rand(c.n * oh * ow * c.co);
    const attrs = { strides: [c.s, c.s], pad, dilations: [c.d, c.d] } as const;
    const run = () => {
      const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
      const wt = tf.tensor4d(w, [c.k, c.k, c.ci, c.co]);
      const dyt = tf.tensor4d(dy, [c.n, oh, ow, c.co]);
      const e = tf.engine();
      return [
        e.runKernel(ZOO_KERNELS.conv2dBackpropFilter, { x: xt, dy: dyt }, { ...attrs, filterShape: wt.shape } as never) as tf.Tensor,
        e.runKernel(ZOO_KERNELS.conv2dBackpropInput, { dy: dyt, filter: wt }, { ...attrs, inputShape: xt.shape } as never) as tf.Tensor,
      ];
    };
    const ref = referenceGrads(c, x, w, dy);
    for (const [name, s, o] of strategies) {
      setConvStrategy(s, o);
      const [dw, dx] = await on('wasm', run);
      close(t, dw!, ref.dw, `filter gradient vs direct loops, ${name}`);
      close(t, dx!, ref.dx, `input gradient vs direct loops, ${name}`);
    }
    setConvStrategy('auto');
    const [dwWasm, dxWasm] = await on('wasm', run);
    if (c.d === 1) {
      // The cpu backend's own kernels (tfjs-core's conv2d gradient has no dilation support).
      const [dwCpu, dxCpu] = await on('cpu', () => {
        const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
        const wt = tf.tensor4d(w, [c.k, c.k, c.ci, c.co]);
        const dyt = tf.tensor4d(dy, [c.n, oh, ow, c.co]);
        return [
          tf.engine().runKernel('Conv2DBackpropFilter', { x: xt, dy: dyt }, { strides: [c.s, c.s], pad, dataFormat: 'NHWC', filterShape: wt.shape } as never) as tf.Tensor,
          tf.engine().runKernel('Conv2DBackpropInput', { dy: dyt, filter: wt }, { strides: [c.s, c.s], pad, dataFormat: 'NHWC', inputShape: xt.shape } as never) as tf.Tensor,
        ];
      });
      close(t, dwWasm!, dwCpu!, 'filter gradient vs cpu kernel');
      close(t, dxWasm!, dxCpu!, 'input gradient vs cpu kernel');
      // The core kernel names on wasm (used by tf.conv2d's own gradient) give the same results.
      const [dwCore, dxCore] = await on('wasm', () => {
        const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
        const wt = tf.tensor4d(w, [c.k, c.k, c.ci, c.co]);
        const dyt = tf.tensor4d(dy, [c.n, oh, ow, c.co]);
        return [
          tf.engine().runKernel('Conv2DBackpropFilter', { x: xt, dy: dyt }, { strides: [c.s, c.s], pad, dataFormat: 'NHWC', filterShape: wt.shape } as never) as tf.Tensor,
          tf.engine().runKernel('Conv2DBackpropInput', { dy: dyt, filter: wt }, { strides: [c.s, c.s], pad, dataFormat: 'NHWC', inputShape: xt.shape } as never) as tf.Tensor,
        ];
      });
      close(t, dwCore!, dwCpu!, 'core-named filter gradient on wasm');
      close(t, dxCore!, dxCpu!, 'core-named input gradient on wasm');
    }
  });
}

const matmulCases: { a: number[]; b: number[]; ta: boolean; tb: boolean }[] = [
  { a: [5, 7], b: [7, 3], ta: false, tb: false },
  { a: [7, 5], b: [7, 3], ta: true, tb: false },
  { a: [5, 7], b: [3, 7], ta: false, tb: true },
  { a: [7, 5], b: [3, 7], ta: true, tb: true },
  { a: [3, 4, 6], b: [3, 6, 2], ta: false, tb: false },
  { a: [3, 6, 4], b: [1, 2, 6], ta: true, tb: true },
  { a: [1, 4, 6], b: [2, 6, 5], ta: false, tb: false },
  { a: [2, 2, 3, 4], b: [2, 2, 4, 3], ta: false, tb: false },
];

for (const c of matmulCases) {
  test.serial(`BatchMatMul (wasm, replaced) matches cpu: [${c.a}]${c.ta ? 'ᵀ' : ''} x [${c.b}]${c.tb ? 'ᵀ' : ''}`, async (t) => {
    const a = rand(c.a.reduce((x, y) => x * y, 1));
    const b = rand(c.b.reduce((x, y) => x * y, 1));
    const run = () => tf.matMul(tf.tensor(a, c.a), tf.tensor(b, c.b), c.ta, c.tb);
    const [w] = await on('wasm', run);
    const [r] = await on('cpu', run);
    close(t, w!, r!, 'product');
  });
}

test.serial('ZooReluGrad (wasm and cpu) passes dy where y > 0', async (t) => {
  const y = rand(1000).map((v) => Math.max(v, 0));
  const dy = rand(1000);
  const want = dy.map((g, i) => (y[i]! > 0 ? g : 0));
  for (const b of ['wasm', 'cpu'] as const) {
    const [got] = await on(b, () => tf.engine().runKernel(ZOO_KERNELS.reluGrad, { dy: tf.tensor1d(dy), y: tf.tensor1d(y) }) as tf.Tensor);
    close(t, got!, want, b); // masked negatives may come out as -0
  }
});

const bnCases = [
  { shape: [2, 5, 5, 3], relu: false, residual: false },
  { shape: [2, 5, 5, 3], relu: true, residual: false },
  { shape: [4, 3, 3, 16], relu: true, residual: true },
  { shape: [3, 4, 2, 7], relu: false, residual: true },
];

for (const c of bnCases) {
  test.serial(`fused batch norm (wasm) matches the op-by-op composition on cpu: [${c.shape}] relu=${c.relu} residual=${c.residual}`, async (t) => {
    const n = c.shape.reduce((a, b) => a * b, 1);
    const C = c.shape[3]!;
    const x = rand(n).map((v) => v * 3 + 1);
    const gamma = rand(C).map((v) => 1 + 0.3 * v);
    const beta = rand(C);
    const res = rand(n);
    const dy = rand(n);
    const run = (fused: boolean) => () => {
      const xt = tf.tensor(x, c.shape);
      const g = tf.tensor1d(gamma);
      const bt = tf.tensor1d(beta);
      const rt = tf.tensor(res, c.shape);
      const f = (xv: tf.Tensor, gv: tf.Tensor, bv: tf.Tensor, rv: tf.Tensor) => {
        const opts = { epsilon: 1e-5, relu: c.relu, ...(c.residual ? { residual: rv } : {}) };
        if (fused) {
          const [y] = tf.engine().runKernel(ZOO_KERNELS.batchNormTrain, c.residual ? { x: xv, gamma: gv, beta: bv, residual: rv } : { x: xv, gamma: gv, beta: bv }, { epsilon: 1e-5, relu: c.relu, hasResidual: c.residual } as never) as tf.Tensor[];
          return y!;
        }
        return batchNormTrainComposed(xv, gv as tf.Tensor1D, bv as tf.Tensor1D, opts).y;
      };
      // The residual is an input only when the case uses it (gradients exist for used inputs only).
      const inputs = c.residual ? [xt, g, bt, rt] : [xt, g, bt];
      const { value, grads } = tf.valueAndGrads((...v: tf.Tensor[]) => f(v[0]!, v[1]!, v[2]!, v[3] ?? rt))(inputs, tf.tensor(dy, c.shape));
      return [value, ...grads];
    };
    const fused = await on('wasm', run(true));
    const ref = await on('cpu', run(false));
    const names = ['y', 'dx', 'dgamma', 'dbeta', 'dresidual'];
    fused.forEach((v, i) => {
      if (!c.residual && i === 4) return;
      close(t, v, ref[i]!, names[i]!);
    });
  });
}

const poolCases = [
  { shape: [2, 7, 7, 3], k: 3, s: 2, pad: 1 as const },
  { shape: [1, 8, 8, 2], k: 2, s: 2, pad: 'valid' as const },
  { shape: [2, 5, 6, 3], k: 3, s: 1, pad: 'same' as const },
  { shape: [1, 7, 9, 2], k: 2, s: 2, pad: 'same' as const },
];

for (const c of poolCases) {
  test.serial(`max-pool gradient (wasm) matches cpu: [${c.shape}] k${c.k} s${c.s} pad ${c.pad}`, async (t) => {
    const shape = c.shape as [number, number, number, number];
    const x = rand(shape.reduce((a, b) => a * b, 1));
    const info = tf.backend_util.computePool2DInfo(shape, c.k, c.s, 1, c.pad);
    const outShape: [number, number, number, number] = [shape[0], info.outHeight, info.outWidth, shape[3]];
    const weights = rand(outShape.reduce((a, b) => a * b, 1));
    const attrs = { filterSize: c.k, strides: c.s, pad: c.pad, dimRoundingMode: undefined };
    const grad = (zoo: boolean) => () => {
      const xt = tf.tensor4d(x, shape);
      const pool = (v: tf.Tensor) =>
        zoo ? (tf.engine().runKernel(ZOO_KERNELS.maxPool, { x: v }, attrs as never) as tf.Tensor) : tf.maxPool(v as tf.Tensor4D, c.k, c.s, c.pad);
      return tf.grad((v: tf.Tensor) => tf.sum(tf.mul(pool(v), tf.tensor4d(weights, outShape))))(xt);
    };
    const [w] = await on('wasm', grad(true));
    const [r] = await on('cpu', grad(false));
    close(t, w!, r!, 'dx');
  });

  test.serial(`average-pool gradient (wasm and cpu) uses the forward divisor: [${c.shape}] k${c.k} s${c.s} pad ${c.pad}`, async (t) => {
    const [N, H, W, C] = c.shape as [number, number, number, number];
    const info = tf.backend_util.computePool2DInfo([N, H, W, C], c.k, c.s, 1, c.pad);
    const dy = rand(N * info.outHeight * info.outWidth * C);
    // Reference: each output spreads dy / (number of input positions in its window).
    const want = new Float64Array(N * H * W * C);
    for (let n = 0; n < N; n++)
      for (let oh = 0; oh < info.outHeight; oh++)
        for (let ow = 0; ow < info.outWidth; ow++) {
          const h0 = oh * c.s - info.padInfo.top;
          const w0 = ow * c.s - info.padInfo.left;
          const rows = [...Array(c.k).keys()].map((i) => h0 + i).filter((h) => h >= 0 && h < H);
          const cols = [...Array(c.k).keys()].map((j) => w0 + j).filter((w) => w >= 0 && w < W);
          const cnt = rows.length * cols.length;
          for (const h of rows)
            for (const w of cols)
              for (let ch = 0; ch < C; ch++) want[((n * H + h) * W + w) * C + ch] += dy[((n * info.outHeight + oh) * info.outWidth + ow) * C + ch]! / cnt;
        }
    const attrs = { filterSize: c.k, strides: c.s, pad: c.pad, dimRoundingMode: undefined };
    for (const b of ['wasm', 'cpu'] as const) {
      const [got] = await on(b, () =>
        tf.engine().runKernel(ZOO_KERNELS.avgPoolGrad, { dy: tf.tensor4d(dy, [N, info.outHeight, info.outWidth, C]), x: tf.zeros([N, H, W, C]) }, attrs as never) as tf.Tensor,
      );
      close(t, got!, Float32Array.from(want), `${b} dx`);
    }
  });
}

test.serial('Identity on wasm shares data instead of copying it', async (t) => {
  await tf.setBackend('wasm');
  const x = tf.tensor1d([1, 2, 3]);
  const y = tf.clone(x);
  t.is(y.dataId, x.dataId);
  x.dispose();
  t.deepEqual(Array.from(y.dataSync()), [1, 2, 3]);
  y.dispose();
});

test.serial('SGD kernel (wasm SIMD, split over threads, and cpu) matches a hand computation of the NAG update', async (t) => {
  for (const n of [7, 70_001]) {
    const w = rand(n);
    const g = rand(n);
    const v = rand(n);
    for (const nesterov of [true, false]) {
      const a = { lr: 0.1, momentum: 0.9, weightDecay: 1e-4, nesterov, gradScale: 0.5 };
      // d = s*g + wd*w; v' = m*v + d; w' = w - lr * (nesterov ? d + m*v' : v')
      const wantV = new Float32Array(n);
      const wantW = new Float32Array(n);
      for (let k = 0; k < n; k++) {
        const d = 0.5 * g[k]! + 1e-4 * w[k]!;
        wantV[k] = 0.9 * v[k]! + d;
        wantW[k] = w[k]! - 0.1 * (nesterov ? d + 0.9 * wantV[k]! : wantV[k]!);
      }
      for (const b of ['wasm', 'cpu'] as const) {
        const [w2, v2] = await on(b, () => tf.engine().runKernel(ZOO_KERNELS.sgd, { param: tf.tensor1d(w), grad: tf.tensor1d(g), velocity: tf.tensor1d(v) }, a as never) as tf.Tensor[]);
        close(t, w2!, wantW, `${b} weights, n=${n}, nesterov=${nesterov}`);
        close(t, v2!, wantV, `${b} velocity, n=${n}, nesterov=${nesterov}`);
      }
    }
  }
});

test.serial('fused batch norm on a shape split over threads (wasm SIMD) matches cpu', async (t) => {
  const shape = [8, 16, 16, 36];
  const n = shape.reduce((a, b) => a * b, 1);
  const x = rand(n).map((v) => v * 2 + 3);
  const gamma = rand(36);
  const beta = rand(36);
  const res = rand(n);
  const dy = rand(n);
  const run = () => {
    const f = (xv: tf.Tensor, gv: tf.Tensor, bv: tf.Tensor, rv: tf.Tensor) =>
      (tf.engine().runKernel(ZOO_KERNELS.batchNormTrain, { x: xv, gamma: gv, beta: bv, residual: rv }, { epsilon: 1e-5, relu: true, hasResidual: true } as never) as tf.Tensor[])[0]!;
    const { value, grads } = tf.valueAndGrads(f)([tf.tensor(x, shape), tf.tensor1d(gamma), tf.tensor1d(beta), tf.tensor(res, shape)], tf.tensor(dy, shape));
    return [value, ...grads];
  };
  const w = await on('wasm', run);
  const c = await on('cpu', run);
  ['y', 'dx', 'dgamma', 'dbeta', 'dresidual'].forEach((name, i) => close(t, w[i]!, c[i]!, name));
});

test.serial('transposes on the wasm heap (SIMD 4x4 blocks, odd sizes, several parts) are exact', async (t) => {
  await tf.setBackend('wasm');
  const { KernelContext } = await import('../src/backend/kernels/context.js');
  for (const [shape, perm] of [
    [[5, 7], [1, 0]],
    [[1031, 67], [1, 0]],
    [[3, 9, 13], [0, 2, 1]],
    [[2, 5, 6, 3], [3, 1, 2, 0]],
    [[64, 2048], [1, 0]],
  ] as [number[], number[]][]) {
    const data = rand(shape.reduce((a, b) => a * b, 1));
    const x = tf.tensor(data, shape);
    const ctx = new KernelContext(tf.backend(), 'wasm');
    const out = ctx.transpose({ dataId: x.dataId, shape: x.shape, dtype: 'float32' }, perm);
    const got = ctx.f32(out).slice();
    ctx.dispose();
    const want = tf.tidy(() => tf.transpose(x, perm).dataSync());
    x.dispose();
    t.deepEqual(Array.from(got), Array.from(want), `[${shape}] by [${perm}]`);
  }
});
