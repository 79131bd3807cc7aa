/**
 * RoIAlign (ops/roi_align.ts, kernels in backend/kernels/roi_align.ts) on the wasm and cpu backends:
 * values against a direct per-sample bilinear computation written here from the ONNX RoiAlign-16
 * definition, gradients against that computation's adjoint and against finite differences, values
 * against ONNX Runtime's RoiAlign in both coordinate modes, values and gradients against torchvision's
 * roi_align (where a Python with torchvision is found; skipped otherwise), input checks, and leaks.
 * The form composed from tfjs-core ops (what backends without the kernel run, such as WebGPU: see
 * webgpu_det.test.ts) against the kernel, in one piece and in groups of boxes, on a backend without it.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { spawnSync } from 'node:child_process';
import { setupBackend, countLeaks, maxAbsDiff } from './helpers/backend.js';
import { registerZooKernels } from '../src/backend/kernels/index.js';
import { roiAlign, type RoiAlignOptions } from '../src/ops/index.js';
import { checkRoiAlignBackend, roiAlignComposed, type RoiAlignComposedLimits } from '../src/ops/roi_align.js';
import { UserError } from '../src/errors.js';
import { DataType, IR_VERSION, OPSET, node, onnx, valueInfo } from '../src/onnx/proto.js';
import { createSession, ort } from '../src/runtime/ort.js';
import { Rng } from '../src/util/random.js';

type Shape4 = [number, number, number, number];
const BACKENDS = ['wasm', 'cpu'] as const;

test.before(async () => {
  await setupBackend('wasm');
  registerZooKernels('cpu');
});

interface Case {
  features: Float32Array;
  shape: Shape4;
  boxes: Float32Array;
  indices: Int32Array;
}

/**
 * Random features and boxes on a map of `shape`, given in input pixels (1 / scale per feature pixel):
 * boxes anywhere from well inside to partly or wholly outside, large and tiny, a degenerate one
 * (x2 < x1), the whole image, one many times larger than it, and one box twice (its gradient adds up).
 */
function randomCase(seed: number, shape: Shape4, scale: number, count: number): Case {
  const rng = new Rng(seed);
  const [N, H, W, C] = shape;
  const features = new Float32Array(N * H * W * C);
  for (let i = 0; i < features.length; i++) features[i] = rng.normal();
  const iw = W / scale;
  const ih = H / scale;
  const list: number[][] = [];
  for (let r = 0; r < count; r++) {
    const tiny = r % 5 === 4;
    const w = tiny ? rng.range(0.05, 0.8) / scale : rng.range(0.3, 1.2) * iw;
    const h = tiny ? rng.range(0.05, 0.8) / scale : rng.range(0.3, 1.2) * ih;
    const cx = rng.range(-0.3, 1.3) * iw;
    const cy = rng.range(-0.3, 1.3) * ih;
    list.push([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]);
  }
  list.push([0, 0, iw, ih]);
  list.push([0.6 * iw, 0.2 * ih, 0.4 * iw, 0.7 * ih]); // x2 < x1
  list.push([-2 * iw, -2 * ih, -1.5 * iw, -1.2 * ih]); // wholly outside
  list.push([-3 * iw, -2 * ih, 4 * iw, 3 * ih]); // many times the map: most samples outside
  list.push(list[0]!.slice());
  const boxes = Float32Array.from(list.flat());
  const indices = Int32Array.from(list, () => rng.int(N));
  return { features, shape, boxes, indices };
}

/**
 * RoIAlign written out per sample from the ONNX RoiAlign-16 reference (in float64): every sample of
 * every bin as a list of (feature element offset without the channel, weight / samples). Forward and
 * adjoint are the two ways of reading this list.
 */
function samples(c: Case, o: RoiAlignOptions): { out: number; pixel: number; weight: number }[] {
  const [, H, W, C] = c.shape;
  const [PH, PW] = o.outputSize;
  const list: { out: number; pixel: number; weight: number }[] = [];
  const R = c.indices.length;
  for (let r = 0; r < R; r++) {
    const off = o.aligned ? 0.5 : 0;
    const x1 = c.boxes[4 * r]! * o.spatialScale - off;
    const y1 = c.boxes[4 * r + 1]! * o.spatialScale - off;
    const x2 = c.boxes[4 * r + 2]! * o.spatialScale - off;
    const y2 = c.boxes[4 * r + 3]! * o.spatialScale - off;
    let rw = x2 - x1;
    let rh = y2 - y1;
    if (!o.aligned) {
      rw = Math.max(rw, 1);
      rh = Math.max(rh, 1);
    }
    const bh = rh / PH;
    const bw = rw / PW;
    const gh = o.samplingRatio > 0 ? o.samplingRatio : Math.ceil(rh / PH);
    const gw = o.samplingRatio > 0 ? o.samplingRatio : Math.ceil(rw / PW);
    const n = Math.max(gh * gw, 1);
    for (let ph = 0; ph < PH; ph++) {
      for (let pw = 0; pw < PW; pw++) {
        const out = ((r * PH + ph) * PW + pw) * C;
        for (let iy = 0; iy < gh; iy++) {
          for (let ix = 0; ix < gw; ix++) {
            let y = y1 + ph * bh + ((iy + 0.5) * bh) / gh;
            let x = x1 + pw * bw + ((ix + 0.5) * bw) / gw;
            if (y < -1 || y > H || x < -1 || x > W) continue;
            y = Math.max(y, 0);
            x = Math.max(x, 0);
            let yl = Math.floor(y);
            let xl = Math.floor(x);
            let yh = yl + 1;
            let xh = xl + 1;
            if (yl >= H - 1) {
              yl = yh = H - 1;
              y = yl;
            }
            if (xl >= W - 1) {
              xl = xh = W - 1;
              x = xl;
            }
            const ly = y - yl;
            const lx = x - xl;
            const at = (yy: number, xx: number) => ((c.indices[r]! * H + yy) * W + xx) * C;
            list.push({ out, pixel: at(yl, xl), weight: ((1 - ly) * (1 - lx)) / n });
            list.push({ out, pixel: at(yl, xh), weight: ((1 - ly) * lx) / n });
            list.push({ out, pixel: at(yh, xl), weight: (ly * (1 - lx)) / n });
            list.push({ out, pixel: at(yh, xh), weight: (ly * lx) / n });
          }
        }
      }
    }
  }
  return list;
}

function directForward(c: Case, o: RoiAlignOptions): Float64Array {
  const C = c.shape[3];
  const y = new Float64Array(c.indices.length * o.outputSize[0] * o.outputSize[1] * C);
  for (const s of samples(c, o)) for (let k = 0; k < C; k++) y[s.out + k] += s.weight * c.features[s.pixel + k]!;
  return y;
}

function directAdjoint(c: Case, o: RoiAlignOptions, dy: Float32Array): Float64Array {
  const C = c.shape[3];
  const dx = new Float64Array(c.features.length);
  for (const s of samples(c, o)) for (let k = 0; k < C; k++) dx[s.pixel + k] += s.weight * dy[s.out + k]!;
  return dx;
}

function tensors(c: Case): { f: tf.Tensor4D; b: tf.Tensor2D; i: tf.Tensor1D } {
  return {
    f: tf.tensor4d(c.features, c.shape),
    b: tf.tensor2d(c.boxes, [c.indices.length, 4]),
    i: tf.tensor1d(c.indices, 'int32'),
  };
}

type RoiOp = (f: tf.Tensor4D, b: tf.Tensor2D, i: tf.Tensor1D, o: RoiAlignOptions) => tf.Tensor4D;

/** The composed form, in groups of boxes under `limits`. */
const composedOp =
  (limits: RoiAlignComposedLimits = {}): RoiOp =>
  (f, b, i, o) =>
    roiAlignComposed(f, b, i, o, limits);

/** The op's output on `backend`, read back. */
async function forward(backend: string, c: Case, o: RoiAlignOptions, op: RoiOp = roiAlign): Promise<Float32Array> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const { f, b, i } = tensors(c);
    return op(f, b, i, o).dataSync() as Float32Array;
  });
}

/** d/dfeatures of sum(roiAlign(features) * dy), through tf.grad, on `backend`. */
async function gradient(backend: string, c: Case, o: RoiAlignOptions, dy: Float32Array, op: RoiOp = roiAlign): Promise<Float32Array> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const { f, b, i } = tensors(c);
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(op(x as tf.Tensor4D, b, i, o), tf.tensor(dy, [c.indices.length, ...o.outputSize, c.shape[3]]))));
    return g(f).dataSync() as Float32Array;
  });
}

function scaleOf(a: ArrayLike<number>): number {
  let m = 1;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function randomDy(c: Case, o: RoiAlignOptions, seed: number): Float32Array {
  const rng = new Rng(seed);
  const dy = new Float32Array(c.indices.length * o.outputSize[0] * o.outputSize[1] * c.shape[3]);
  for (let k = 0; k < dy.length; k++) dy[k] = rng.normal();
  return dy;
}

const CONFIGS: RoiAlignOptions[] = [
  { outputSize: [3, 4], spatialScale: 0.5, samplingRatio: 2, aligned: true },
  { outputSize: [3, 4], spatialScale: 0.5, samplingRatio: 0, aligned: true },
  { outputSize: [3, 4], spatialScale: 0.5, samplingRatio: 2, aligned: false },
  { outputSize: [3, 4], spatialScale: 0.5, samplingRatio: 0, aligned: false },
  { outputSize: [2, 2], spatialScale: 0.25, samplingRatio: 3, aligned: true },
];
const name = (o: RoiAlignOptions) => `${o.aligned ? 'aligned' : 'legacy'}, sampling ${o.samplingRatio || 'adaptive'}, ${o.outputSize.join('x')}, scale ${o.spatialScale}`;

test.serial('hand case: one sample at the bin centre of a ramp, aligned and legacy coordinates', async (t) => {
  // f(y, x) = 10 y + x on a 4x4 map, one channel; the box [1, 1, 3, 3] as one bin sampled once.
  const c: Case = { features: Float32Array.from({ length: 16 }, (_, k) => 10 * Math.floor(k / 4) + (k % 4)), shape: [1, 4, 4, 1], boxes: Float32Array.from([1, 1, 3, 3]), indices: Int32Array.from([0]) };
  for (const backend of BACKENDS) {
    const aligned = await forward(backend, c, { outputSize: [1, 1], spatialScale: 1, samplingRatio: 1, aligned: true });
    const legacy = await forward(backend, c, { outputSize: [1, 1], spatialScale: 1, samplingRatio: 1, aligned: false });
    t.true(Math.abs(aligned[0]! - 16.5) < 1e-5, `${backend} aligned: centre (1.5, 1.5) reads 16.5, got ${aligned[0]}`);
    t.true(Math.abs(legacy[0]! - 22) < 1e-5, `${backend} legacy: centre (2, 2) reads 22, got ${legacy[0]}`);
    // Past the last row and column (but within a pixel of them) a sample reads the border pixel;
    // beyond that, nothing.
    const border = await forward(backend, { ...c, boxes: Float32Array.from([3.2, 3.3, 3.6, 3.5]) }, { outputSize: [1, 1], spatialScale: 1, samplingRatio: 1, aligned: false });
    t.true(Math.abs(border[0]! - 33) < 1e-5, `${backend}: clamped to pixel (3, 3), got ${border[0]}`);
    const outside = await forward(backend, { ...c, boxes: Float32Array.from([4.5, 4.5, 5.5, 5.5]) }, { outputSize: [1, 1], spatialScale: 1, samplingRatio: 1, aligned: false });
    t.is(outside[0], 0, `${backend}: a sample beyond y = H reads 0`);
  }
});

for (const o of CONFIGS) {
  test.serial(`values against the direct bilinear computation (${name(o)})`, async (t) => {
    const c = randomCase(7, [2, 7, 9, 5], o.spatialScale, 24);
    const want = directForward(c, o);
    for (const backend of BACKENDS) {
      const got = await forward(backend, c, o);
      t.is(got.length, want.length);
      const d = maxAbsDiff(got, want);
      t.true(d <= 1e-5 * scaleOf(want), `${backend}: max |diff| ${d}`);
    }
  });

  test.serial(`gradient against the adjoint of the direct computation (${name(o)})`, async (t) => {
    const c = randomCase(11, [2, 7, 9, 5], o.spatialScale, 24);
    const dy = randomDy(c, o, 3);
    const want = directAdjoint(c, o, dy);
    for (const backend of BACKENDS) {
      const got = await gradient(backend, c, o, dy);
      const d = maxAbsDiff(got, want);
      t.true(d <= 1e-5 * scaleOf(want), `${backend}: max |diff| ${d}`);
    }
  });
}

test.serial('gradient against finite differences of the op itself', async (t) => {
  for (const o of [CONFIGS[0]!, CONFIGS[3]!]) {
    const c = randomCase(5, [2, 6, 8, 3], o.spatialScale, 10);
    const dy = randomDy(c, o, 9);
    const loss = async (backend: string, features: Float32Array) => {
      const y = await forward(backend, { ...c, features }, o);
      let s = 0;
      for (let k = 0; k < y.length; k++) s += y[k]! * dy[k]!;
      return s;
    };
    for (const backend of BACKENDS) {
      const g = await gradient(backend, c, o, dy);
      // RoIAlign is linear in the features: central differences are exact up to float32 rounding.
      const eps = 0.25;
      const rng = new Rng(1);
      const picks = new Set<number>();
      for (let k = 0; k < g.length && picks.size < 12; k++) if (g[k] !== 0 && rng.uniform() < 0.3) picks.add(k);
      for (let k = 0; picks.size < 16; k++) picks.add(rng.int(g.length));
      for (const k of picks) {
        const plus = c.features.slice();
        const minus = c.features.slice();
        plus[k]! += eps;
        minus[k]! -= eps;
        const fd = ((await loss(backend, plus)) - (await loss(backend, minus))) / (2 * eps);
        t.true(Math.abs(fd - g[k]!) <= 1e-4 * Math.max(1, Math.abs(fd)), `${backend} ${name(o)} element ${k}: finite difference ${fd}, gradient ${g[k]}`);
      }
    }
  }
});

/** One RoiAlign-16 node (opset 17) with NCHW input, as the detector's ONNX export emits it. */
function roiAlignModel(o: RoiAlignOptions): Uint8Array {
  const model = {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    graph: {
      name: 'roi_align',
      node: [
        node('RoiAlign', ['x', 'rois', 'batch_indices'], ['y'], 'roi_align', {
          coordinate_transformation_mode: o.aligned ? 'half_pixel' : 'output_half_pixel',
          mode: 'avg',
          output_height: o.outputSize[0],
          output_width: o.outputSize[1],
          sampling_ratio: o.samplingRatio,
          spatial_scale: { float: o.spatialScale },
        }),
      ],
      input: [
        valueInfo('x', DataType.FLOAT, ['n', 'c', 'h', 'w']),
        valueInfo('rois', DataType.FLOAT, ['r', 4]),
        valueInfo('batch_indices', DataType.INT64, ['r']),
      ],
      output: [valueInfo('y', DataType.FLOAT, ['r', 'c', o.outputSize[0], o.outputSize[1]])],
    },
  };
  return onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
}

function nhwcToNchw(a: Float32Array, [N, H, W, C]: Shape4): Float32Array {
  const out = new Float32Array(a.length);
  for (let n = 0; n < N; n++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < C; c++) out[((n * C + c) * H + y) * W + x] = a[((n * H + y) * W + x) * C + c]!;
  return out;
}

function nchwToNhwc(a: Float32Array, [N, C, H, W]: Shape4): Float32Array {
  const out = new Float32Array(a.length);
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) out[((n * H + y) * W + x) * C + c] = a[((n * C + c) * H + y) * W + x]!;
  return out;
}

const ORT_CONFIGS: RoiAlignOptions[] = [
  ...CONFIGS,
  { outputSize: [14, 14], spatialScale: 1 / 16, samplingRatio: 2, aligned: true },
  { outputSize: [7, 7], spatialScale: 1 / 16, samplingRatio: 0, aligned: false },
];

test.serial('values against ONNX Runtime RoiAlign-16 (half_pixel and output_half_pixel)', async (t) => {
  for (const o of ORT_CONFIGS) {
    const shape: Shape4 = o.spatialScale < 0.1 ? [2, 12, 15, 6] : [2, 7, 9, 5];
    const c = randomCase(23, shape, o.spatialScale, 40);
    const s = await createSession(roiAlignModel(o), { provider: 'cpu', intraOpThreads: 1 });
    const [N, H, W, C] = shape;
    const R = c.indices.length;
    const T = ort().Tensor;
    const result = await s.session.run({
      x: new T('float32', nhwcToNchw(c.features, shape), [N, C, H, W]),
      rois: new T('float32', c.boxes, [R, 4]),
      batch_indices: new T('int64', BigInt64Array.from(c.indices, (v) => BigInt(v)), [R]),
    });
    await s.session.release();
    const want = nchwToNhwc(result.y!.data as Float32Array, [R, C, o.outputSize[0], o.outputSize[1]]);
    for (const backend of BACKENDS) {
      const got = await forward(backend, c, o);
      const d = maxAbsDiff(got, want);
      t.true(d <= 1e-5 * scaleOf(want), `${backend} ${name(o)}: max |diff| to ONNX Runtime ${d}`);
    }
  }
});

/** A Python with torchvision: ZOO_PYTHON, else python3 on the PATH, else Debian's (python3-torchvision). */
const python = [process.env.ZOO_PYTHON, 'python3', '/usr/bin/python3'].find(
  (p) => p && spawnSync(p, ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0,
);

// Reads a JSON list of {features (NCHW), shape, boxes, indices, dy (NCHW), options} and prints, for
// each, torchvision's roi_align output and its gradient to the features (both NCHW, flat).
const TORCH_SCRIPT = `
import json, sys, torch
from torchvision.ops import roi_align
out = []
for a in json.load(sys.stdin):
    o = a['options']
    x = torch.tensor(a['features'], dtype=torch.float32).reshape(a['shape']).requires_grad_(True)
    b = torch.tensor(a['boxes'], dtype=torch.float32).reshape(-1, 4)
    i = torch.tensor(a['indices'], dtype=torch.float32).reshape(-1, 1)
    y = roi_align(x, torch.cat([i, b], 1), output_size=o['outputSize'], spatial_scale=o['spatialScale'],
                  sampling_ratio=o['samplingRatio'], aligned=o['aligned'])
    y.backward(torch.tensor(a['dy'], dtype=torch.float32).reshape(y.shape))
    out.append({'y': y.detach().flatten().tolist(), 'dx': x.grad.flatten().tolist()})
print(json.dumps(out))
`;

(python ? test.serial : test.serial.skip)('values and gradients against torchvision.ops.roi_align', async (t) => {
  const cases = CONFIGS.map((o) => {
    const c = randomCase(31, [2, 7, 9, 5], o.spatialScale, 24);
    return { o, c, dy: randomDy(c, o, 4) };
  });
  const input = JSON.stringify(
    cases.map(({ o, c, dy }) => {
      const [N, H, W, C] = c.shape;
      return {
        features: Array.from(nhwcToNchw(c.features, c.shape)),
        shape: [N, C, H, W],
        boxes: Array.from(c.boxes),
        indices: Array.from(c.indices),
        dy: Array.from(nhwcToNchw(dy, [c.indices.length, ...o.outputSize, C])),
        options: o,
      };
    }),
  );
  const run = spawnSync(python!, ['-c', TORCH_SCRIPT], { input, encoding: 'utf8', maxBuffer: 1 << 26 });
  t.is(run.status, 0, run.stderr);
  const refs = JSON.parse(run.stdout) as { y: number[]; dx: number[] }[];
  for (const [k, { o, c, dy }] of cases.entries()) {
    const [N, H, W, C] = c.shape;
    const wantY = nchwToNhwc(Float32Array.from(refs[k]!.y), [c.indices.length, C, ...o.outputSize]);
    const wantDx = nchwToNhwc(Float32Array.from(refs[k]!.dx), [N, C, H, W]);
    for (const backend of BACKENDS) {
      const dY = maxAbsDiff(await forward(backend, c, o), wantY);
      t.true(dY <= 1e-5 * scaleOf(wantY), `${backend} ${name(o)}: values, max |diff| ${dY}`);
      const dX = maxAbsDiff(await gradient(backend, c, o, dy), wantDx);
      t.true(dX <= 1e-5 * scaleOf(wantDx), `${backend} ${name(o)}: gradient, max |diff| ${dX}`);
    }
  }
});

test.serial('no boxes: an empty output and a zero gradient', async (t) => {
  const o = CONFIGS[0]!;
  const c: Case = { ...randomCase(3, [1, 4, 5, 3], 0.5, 0), boxes: new Float32Array(0), indices: new Int32Array(0) };
  for (const backend of BACKENDS) {
    await tf.setBackend(backend);
    tf.tidy(() => {
      const f = tf.tensor4d(c.features, c.shape);
      const b = tf.tensor2d(c.boxes, [0, 4]);
      const i = tf.tensor1d(c.indices, 'int32');
      t.deepEqual(roiAlign(f, b, i, o).shape, [0, 3, 4, 3]);
      const g = tf.grad((x: tf.Tensor) => tf.sum(roiAlign(x as tf.Tensor4D, b, i, o)))(f);
      t.deepEqual(g.shape, c.shape);
      t.true(g.dataSync().every((v) => v === 0), backend);
    });
  }
});

test.serial('bad inputs are errors that name the shapes', async (t) => {
  await tf.setBackend('wasm');
  const o = CONFIGS[0]!;
  tf.tidy(() => {
    const f = tf.zeros([2, 4, 5, 3]) as tf.Tensor4D;
    const b = tf.zeros([3, 4]) as tf.Tensor2D;
    const i = tf.zeros([3], 'int32') as tf.Tensor1D;
    t.throws(() => roiAlign(tf.zeros([4, 5, 3]) as unknown as tf.Tensor4D, b, i, o), { message: /features must be NHWC.*\[4,5,3\]/ });
    t.throws(() => roiAlign(f, tf.zeros([3, 5]) as tf.Tensor2D, i, o), { message: /boxes must be \[R, 4\].*\[3,5\]/ });
    t.throws(() => roiAlign(f, b, tf.zeros([3]) as tf.Tensor1D, o), { message: /boxIndices must be int32, got float32/ });
    t.throws(() => roiAlign(f, b, tf.zeros([2], 'int32') as tf.Tensor1D, o), { message: /boxIndices \[2\] must have one entry per box of boxes \[3,4\]/ });
    t.throws(() => roiAlign(f, b, tf.tensor1d([0, 2, 1], 'int32'), o), { message: /box index 2 of box 1 is outside the batch of 2/ });
    t.throws(() => roiAlign(f, b, tf.tensor1d([0, -1, 1], 'int32'), o), { message: /box index -1 of box 1/ });
    t.throws(() => roiAlign(f, b, i, { ...o, outputSize: [0, 2] }), { message: /outputSize/ });
    t.throws(() => roiAlign(f, b, i, { ...o, samplingRatio: 1.5 }), { message: /samplingRatio/ });
    t.throws(() => roiAlign(f, b, i, { ...o, spatialScale: 0 }), { message: /spatialScale/ });
  });
});

test.serial('a backend without the kernel runs the composed RoIAlign; adaptive sampling there is a UserError naming the backend', async (t) => {
  const name = 'zoo-test-no-direct-memory';
  // The cpu backend's own kernels under another name, then zoo's as for a backend without direct memory.
  tf.registerBackend(name, () => new MathBackendCPU());
  for (const k of tf.getKernelsForBackend('cpu')) {
    if (!k.kernelName.startsWith('Zoo') && !tf.getKernel(k.kernelName, name)) tf.registerKernel({ ...k, backendName: name });
  }
  registerZooKernels(name);
  t.false(tf.getKernel('ZooRoiAlign', name) !== undefined, 'no RoIAlign kernel');
  try {
    const o = CONFIGS[0]!;
    const c = randomCase(17, [2, 7, 9, 5], o.spatialScale, 12);
    const dy = randomDy(c, o, 2);
    const want = await forward('cpu', c, o);
    const wantG = await gradient('cpu', c, o, dy);
    const got = await forward(name, c, o);
    const gotG = await gradient(name, c, o, dy);
    t.true(maxAbsDiff(got, want) <= 1e-5 * scaleOf(want), `values: max |diff| ${maxAbsDiff(got, want)}`);
    t.true(maxAbsDiff(gotG, wantG) <= 1e-5 * scaleOf(wantG), `gradient: max |diff| ${maxAbsDiff(gotG, wantG)}`);
    const f = tf.zeros([1, 4, 4, 2]) as tf.Tensor4D;
    const b = tf.zeros([1, 4]) as tf.Tensor2D;
    const i = tf.zeros([1], 'int32') as tf.Tensor1D;
    const e = t.throws(() => roiAlign(f, b, i, CONFIGS[1]!), { message: /samplingRatio 0 .*needs the wasm or cpu backend.*'zoo-test-no-direct-memory'.*fixed samplingRatio/ });
    t.true(e instanceof UserError);
    t.throws(() => checkRoiAlignBackend({ samplingRatio: 0 }), { instanceOf: UserError });
    t.notThrows(() => checkRoiAlignBackend({ samplingRatio: 2 }));
    tf.dispose([f, b, i]);
  } finally {
    await tf.setBackend('wasm');
    tf.removeBackend(name);
  }
  t.notThrows(() => checkRoiAlignBackend({ samplingRatio: 0 }), 'wasm has the kernel');
});

/** Fixed-sampling configurations (the composed form's), the detector's 14x14 at 1/16 among them. */
const FIXED: RoiAlignOptions[] = [
  ...CONFIGS.filter((o) => o.samplingRatio > 0),
  { outputSize: [14, 14], spatialScale: 1 / 16, samplingRatio: 2, aligned: true },
  { outputSize: [7, 7], spatialScale: 1 / 16, samplingRatio: 1, aligned: false },
];

test.serial('composed RoIAlign against the kernel: values and gradients, boxes inside, across and outside the map', async (t) => {
  for (const o of FIXED) {
    const shape: Shape4 = o.spatialScale < 0.1 ? [2, 12, 15, 6] : [2, 7, 9, 5];
    const c = randomCase(41, shape, o.spatialScale, 12);
    const dy = randomDy(c, o, 6);
    for (const backend of BACKENDS) {
      const want = await forward(backend, c, o);
      const got = await forward(backend, c, o, composedOp());
      t.true(maxAbsDiff(got, want) <= 1e-5 * scaleOf(want), `${backend} ${name(o)}: values, max |diff| ${maxAbsDiff(got, want)}`);
      const wantG = await gradient(backend, c, o, dy);
      const gotG = await gradient(backend, c, o, dy, composedOp());
      t.true(maxAbsDiff(gotG, wantG) <= 1e-5 * scaleOf(wantG), `${backend} ${name(o)}: gradient, max |diff| ${maxAbsDiff(gotG, wantG)}`);
    }
  }
});

test.serial('composed RoIAlign in groups of boxes (under a memory limit) computes what it computes in one piece', async (t) => {
  const o = CONFIGS[2]!;
  const c = randomCase(43, [2, 7, 9, 5], o.spatialScale, 13);
  const dy = randomDy(c, o, 8);
  const whole = await forward('wasm', c, o, composedOp());
  const wholeG = await gradient('wasm', c, o, dy, composedOp());
  // One box per group (any limit below one box's rows), and groups of 5 of the 18 boxes.
  for (const maxBytes of [1, 5 * 4 * o.outputSize[0] * 9 * 5]) {
    const y = await forward('wasm', c, o, composedOp({ maxBytes }));
    t.true(maxAbsDiff(y, whole) <= 1e-6 * scaleOf(whole), `values, limit ${maxBytes}: max |diff| ${maxAbsDiff(y, whole)}`);
    const g = await gradient('wasm', c, o, dy, composedOp({ maxBytes }));
    t.true(maxAbsDiff(g, wholeG) <= 1e-6 * scaleOf(wholeG), `gradient, limit ${maxBytes}: max |diff| ${maxAbsDiff(g, wholeG)}`);
  }
});

test.serial('composed RoIAlign: no boxes give an empty output and a zero gradient; no tensor leaks', async (t) => {
  const o = CONFIGS[0]!;
  await tf.setBackend('wasm');
  tf.tidy(() => {
    const f = tf.randomNormal([1, 4, 5, 3]) as tf.Tensor4D;
    const b = tf.zeros([0, 4]) as tf.Tensor2D;
    const i = tf.zeros([0], 'int32') as tf.Tensor1D;
    t.deepEqual(roiAlignComposed(f, b, i, o).shape, [0, 3, 4, 3]);
    const g = tf.grad((x: tf.Tensor) => tf.sum(roiAlignComposed(x as tf.Tensor4D, b, i, o)))(f);
    t.deepEqual(g.shape, [1, 4, 5, 3]);
    t.true(g.dataSync().every((v) => v === 0));
  });
  const c = randomCase(13, [2, 7, 9, 5], o.spatialScale, 12);
  const { f, b, i } = tensors(c);
  t.is(countLeaks(() => roiAlignComposed(f, b, i, o, { maxBytes: 1 }).dispose()).leaked, 0, 'forward');
  const v = tf.variable(f);
  const before = tf.memory().numTensors;
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(roiAlignComposed(v as unknown as tf.Tensor4D, b, i, o, { maxBytes: 1 }))), [v]);
  t.deepEqual(grads[v.name]!.shape, c.shape);
  tf.dispose([value, ...Object.values(grads)]);
  t.is(tf.memory().numTensors, before, 'variableGrads');
  tf.dispose([f, b, i, v]);
});

test.serial('no tensor leaks: forward, and a variableGrads pass', async (t) => {
  const o = CONFIGS[1]!;
  const c = randomCase(13, [2, 7, 9, 5], o.spatialScale, 12);
  for (const backend of BACKENDS) {
    await tf.setBackend(backend);
    const { f, b, i } = tensors(c);
    const forwardPass = countLeaks(() => {
      const y = roiAlign(f, b, i, o);
      y.dispose();
    });
    t.is(forwardPass.leaked, 0, `${backend}: forward`);
    const v = tf.variable(f);
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(roiAlign(v as unknown as tf.Tensor4D, b, i, o))), [v]);
    t.deepEqual(grads[v.name]!.shape, c.shape);
    tf.dispose([value, ...Object.values(grads)]);
    t.is(tf.memory().numTensors, before, `${backend}: variableGrads`);
    tf.dispose([f, b, i, v]);
  }
});
