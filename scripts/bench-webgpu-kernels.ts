/**
 * Fused WebGPU kernels for the training step, as an experiment of the WebGPU benchmark
 * (scripts/bench-webgpu.ts): WGSL programs run through tfjs-backend-webgpu's own program runner,
 * registered for 'webgpu' under the names zoo's training code already looks for.
 *
 * On WebGPU zoo composes these steps from tfjs-core ops (src/backend/kernels/index.ts registers the
 * fused batch-norm and SGD kernels for wasm and cpu only), and tfjs derives the batch-norm gradient op
 * by op. A ResNet-50-D training step then dispatches about 5,000 programs, most of them small
 * element-wise passes, each costing JavaScript time (a bind group, uniforms, a dispatch) and a pass
 * over memory. Fused here:
 *
 *   ZooSgd                 2 programs per parameter (new velocity, new parameter) instead of about 8
 *                          ops and 4 scalar uploads
 *   ZooReluGrad            1 program (dy where y > 0) instead of Step and Multiply
 *   ZooBatchNormTrain      5 programs (partial sums, mean, partial squared deviations, invstd, the
 *                          normalize + affine + residual + ReLU pass) instead of about 12 ops forward
 *   ZooBatchNormTrainGrad  5 or 6 programs (partial sums of g and g * (x - mean), their totals, dx,
 *                          dgamma, dbeta, dresidual) instead of about 25 ops backward
 *
 * Sums are two-level: G groups of rows per channel (adjacent invocations read adjacent channels), then
 * the G partial sums per channel; the variance is computed around the mean (two passes), as tfjs's
 * moments does. The formulas are those of src/backend/kernels/batchnorm_math.ts.
 *
 * `installFusedKernels()` registers them (keeping what was registered before) and returns the function
 * that restores it, so the benchmark can alternate the two in one process; `checkFusedKernels()`
 * compares them with the composed path on small random tensors before anything is timed.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { ZOO_KERNELS } from '../src/backend/kernels/index.js';
import { convGeometry, type ConvGradAttrs } from '../src/backend/kernels/conv_backprop.js';
import { KernelContext } from '../src/backend/kernels/context.js';
import { maxBindingBytes } from '../src/backend/webgpu.js';
import { batchNormTrain, batchNormTrainComposed } from '../src/ops/index.js';

/** The part of tfjs-backend-webgpu's program interface (WebGPUProgram) these programs use. */
interface Program {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  size: boolean;
  uniforms?: string;
  getUserCode(): string;
}

type Uniform = { type: 'float32' | 'int32'; data: number[] };

interface WebGpuBackendLike extends KernelBackend {
  runWebGPUProgram(program: Program, inputs: TensorInfo[], dtype: 'float32', uniforms?: Uniform[]): TensorInfo;
}

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };

const WORKGROUP = 64;

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * A flat program over `invocations` threads (default: one per output element) whose WGSL body sees
 * `index`; tfjs declares the inputs as `array<f32>` named after `inputs`, the output as `result`.
 */
function program(key: string, inputs: string[], outputShape: number[], body: string, o: { uniforms?: string; invocations?: number } = {}): Program {
  const n = o.invocations ?? sizeOf(outputShape);
  // tfjs names a program by its class in profiles (tf.time's program list): name it by its family.
  const family = PROGRAM_CLASSES[key.split('_')[1]!] ?? PROGRAM_CLASSES.other!;
  const p: Program = {
    variableNames: inputs,
    outputShape,
    shaderKey: key,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [Math.ceil(n / WORKGROUP), 1, 1],
    workgroupSize: [WORKGROUP, 1, 1],
    size: true,
    ...(o.uniforms ? { uniforms: o.uniforms } : {}),
    getUserCode: () => `fn main(index : i32) {\n${body}\n}`,
  };
  return Object.assign(new family(), p);
}

/** Empty classes whose names tfjs reports for these programs. */
const PROGRAM_CLASSES: Record<string, new () => object> = {
  sgd: class ZooSgdProgram {},
  relu: class ZooReluGradProgram {},
  bn: class ZooBatchNormProgram {},
  im2col: class ZooIm2colProgram {},
  other: class ZooProgram {},
};

const f32 = (v: number): Uniform => ({ type: 'float32', data: [v] });
const i32 = (v: number): Uniform => ({ type: 'int32', data: [v] });

/** Runs programs in order, freeing the intermediates that are not returned. */
class Runner {
  private readonly temps: TensorInfo[] = [];
  constructor(private readonly backend: WebGpuBackendLike) {}

  run(p: Program, inputs: TensorInfo[], uniforms?: Uniform[]): TensorInfo {
    const out = this.backend.runWebGPUProgram(p, inputs, 'float32', uniforms);
    this.temps.push(out);
    return out;
  }

  /** Frees every intermediate but `keep`. */
  finish<T extends TensorInfo[]>(keep: T): T {
    for (const t of this.temps) if (!keep.includes(t)) this.backend.disposeData(t.dataId);
    return keep;
  }
}

// ---- SGD ------------------------------------------------------------------------------------------

const SGD_UNIFORMS = 'lr : f32, momentum : f32, wd : f32, scale : f32,';

function sgdKernel(args: KernelArgs): TensorInfo[] {
  const a = args.attrs as unknown as { lr: number; momentum: number; weightDecay: number; nesterov: boolean; gradScale: number };
  const { param, grad, velocity } = args.inputs as Record<string, TensorInfo>;
  const shape = param!.shape as number[];
  const u = [f32(a.lr), f32(a.momentum), f32(a.weightDecay), f32(a.gradScale)];
  const r = new Runner(args.backend as WebGpuBackendLike);
  const d = 'let d = G[index] * uniforms.scale + uniforms.wd * W[index];';
  const vNew = r.run(
    program('zoo_sgd_velocity', ['W', 'G', 'V'], shape, `if (index < uniforms.size) { ${d} result[index] = uniforms.momentum * V[index] + d; }`, { uniforms: SGD_UNIFORMS }),
    [param!, grad!, velocity!],
    u,
  );
  const step = a.nesterov ? 'd + uniforms.momentum * VN[index]' : 'VN[index]';
  const wNew = r.run(
    program(`zoo_sgd_param_${a.nesterov ? 'nesterov' : 'plain'}`, ['W', 'G', 'VN'], shape, `if (index < uniforms.size) { ${d} result[index] = W[index] - uniforms.lr * (${step}); }`, {
      uniforms: SGD_UNIFORMS,
    }),
    [param!, grad!, vNew],
    u,
  );
  return r.finish([wNew, vNew]);
}

// ---- ReLU gradient ---------------------------------------------------------------------------------

function reluGradProgram(shape: number[]): Program {
  return program('zoo_relu_grad', ['DY', 'Y'], shape, 'if (index < uniforms.size) { result[index] = select(0.0, DY[index], Y[index] > 0.0); }');
}

function reluGradKernel(args: KernelArgs): TensorInfo {
  const { dy, y } = args.inputs as Record<string, TensorInfo>;
  return (args.backend as WebGpuBackendLike).runWebGPUProgram(reluGradProgram(dy!.shape as number[]), [dy!, y!], 'float32');
}

// ---- Batch norm ------------------------------------------------------------------------------------

/** Rows per channel P, channels C, and the number of row groups G of the two-level sums. */
function bnLayout(shape: readonly number[]): { P: number; C: number; G: number } {
  const C = shape[shape.length - 1]!;
  const P = sizeOf(shape) / C;
  // About 32k invocations for the partial sums, at most one group per row.
  const G = Math.max(1, Math.min(P, Math.ceil(32768 / C)));
  return { P, C, G };
}

const BN_UNIFORMS = 'rows : i32, channels : i32, groups : i32, eps : f32,';

function bnUniforms(l: { P: number; C: number; G: number }, eps = 0): Uniform[] {
  return [i32(l.P), i32(l.C), i32(l.G), f32(eps)];
}

/** sum over the rows r = g, g + G, ... of `term` (WGSL, of `i` = r * C + c and `c`), per (g, c). */
function partialSum(key: string, inputs: string[], l: { C: number; G: number }, term: string): Program {
  return program(
    key,
    inputs,
    [l.G, l.C],
    `if (index < uniforms.size) {
      let g = index / uniforms.channels;
      let c = index - g * uniforms.channels;
      var s = 0.0;
      for (var r = g; r < uniforms.rows; r = r + uniforms.groups) { let i = r * uniforms.channels + c; s = s + ${term}; }
      result[index] = s;
    }`,
    { uniforms: BN_UNIFORMS },
  );
}

/** Per channel: `finish` (WGSL of the total `s`) of the sum over groups of PART [G, C]. */
function groupTotal(key: string, extra: string[], l: { C: number }, finish: string): Program {
  return program(
    key,
    ['PART', ...extra],
    [l.C],
    `if (index < uniforms.size) {
      var s = 0.0;
      for (var g = 0; g < uniforms.groups; g = g + 1) { s = s + PART[g * uniforms.channels + index]; }
      result[index] = ${finish};
    }`,
    { uniforms: BN_UNIFORMS },
  );
}

function batchNormTrainKernel(args: KernelArgs): TensorInfo[] {
  const { epsilon, relu, hasResidual } = args.attrs as unknown as { epsilon: number; relu: boolean; hasResidual: boolean };
  const { x, gamma, beta, residual } = args.inputs as Record<string, TensorInfo>;
  const shape = x!.shape as number[];
  const l = bnLayout(shape);
  const u = bnUniforms(l, epsilon);
  const r = new Runner(args.backend as WebGpuBackendLike);
  const sums = r.run(partialSum('zoo_bn_sum', ['X'], l, 'X[i]'), [x!], u);
  const mean = r.run(groupTotal('zoo_bn_mean', [], l, 's / f32(uniforms.rows)'), [sums], u);
  const sq = r.run(partialSum('zoo_bn_sqdev', ['X', 'MEAN'], l, '(X[i] - MEAN[c]) * (X[i] - MEAN[c])'), [x!, mean], u);
  const invstd = r.run(groupTotal('zoo_bn_invstd', [], l, 'inverseSqrt(s / f32(uniforms.rows) + uniforms.eps)'), [sq], u);
  const names = ['X', 'MEAN', 'INVSTD', 'GAMMA', 'BETA', ...(hasResidual ? ['RES'] : [])];
  let v = '(X[index] - MEAN[c]) * INVSTD[c] * GAMMA[c] + BETA[c]';
  if (hasResidual) v = `${v} + RES[index]`;
  const y = r.run(
    program(
      `zoo_bn_apply${relu ? '_relu' : ''}${hasResidual ? '_res' : ''}`,
      names,
      shape,
      `if (index < uniforms.size) { let c = index % uniforms.channels; let v = ${v}; result[index] = ${relu ? 'max(v, 0.0)' : 'v'}; }`,
      { uniforms: BN_UNIFORMS },
    ),
    [x!, mean, invstd, gamma!, beta!, ...(hasResidual ? [residual!] : [])],
    u,
  );
  return r.finish([y, mean, invstd]);
}

function batchNormTrainGradKernel(args: KernelArgs): TensorInfo[] {
  const { relu, hasResidual } = args.attrs as unknown as { relu: boolean; hasResidual: boolean };
  const { dy, x, y, gamma, mean, invstd } = args.inputs as Record<string, TensorInfo>;
  const shape = dy!.shape as number[];
  const l = bnLayout(shape);
  const u = bnUniforms(l);
  const r = new Runner(args.backend as WebGpuBackendLike);
  // g: the gradient reaching the affine output (masked by the fused ReLU).
  const g = relu ? 'select(0.0, DY[i], Y[i] > 0.0)' : 'DY[i]';
  const gIn = relu ? ['DY', 'Y'] : ['DY'];
  const gArgs = relu ? [dy!, y!] : [dy!];
  // Partial sums [G, 2, C]: sum(g) and sum(g * (x - mean)) of each row group, in one pass.
  const part = r.run(
    program(
      `zoo_bn_grad_sums${relu ? '_relu' : ''}`,
      [...gIn, 'X', 'MEAN'],
      [l.G, 2, l.C],
      `if (index < uniforms.groups * uniforms.channels) {
        let grp = index / uniforms.channels;
        let c = index - grp * uniforms.channels;
        var s1 = 0.0;
        var s2 = 0.0;
        for (var r = grp; r < uniforms.rows; r = r + uniforms.groups) {
          let i = r * uniforms.channels + c;
          let gv = ${g};
          s1 = s1 + gv;
          s2 = s2 + gv * (X[i] - MEAN[c]);
        }
        result[(grp * 2) * uniforms.channels + c] = s1;
        result[(grp * 2 + 1) * uniforms.channels + c] = s2;
      }`,
      { uniforms: BN_UNIFORMS, invocations: l.G * l.C },
    ),
    [...gArgs, x!, mean!],
    u,
  );
  // Totals [2, C]: sum(g) (= dbeta) and sum(g * (x - mean)).
  const tot = r.run(
    program(
      'zoo_bn_grad_totals',
      ['PART'],
      [2, l.C],
      `if (index < uniforms.size) {
        let k = index / uniforms.channels;
        let c = index - k * uniforms.channels;
        var s = 0.0;
        for (var grp = 0; grp < uniforms.groups; grp = grp + 1) { s = s + PART[(grp * 2 + k) * uniforms.channels + c]; }
        result[index] = s;
      }`,
      { uniforms: BN_UNIFORMS },
    ),
    [part],
    u,
  );
  // dx = gamma * invstd * (g - sum(g) / P - (x - mean) * invstd^2 * sum(g * (x - mean)) / P)
  const dx = r.run(
    program(
      `zoo_bn_grad_dx${relu ? '_relu' : ''}`,
      [...gIn, 'X', 'MEAN', 'INVSTD', 'GAMMA', 'TOT'],
      shape,
      `if (index < uniforms.size) {
        let i = index;
        let c = index % uniforms.channels;
        let n = f32(uniforms.rows);
        let is = INVSTD[c];
        let gv = ${g};
        result[index] = GAMMA[c] * is * (gv - TOT[c] / n - (X[i] - MEAN[c]) * is * is * TOT[uniforms.channels + c] / n);
      }`,
      { uniforms: BN_UNIFORMS },
    ),
    [...gArgs, x!, mean!, invstd!, gamma!, tot],
    u,
  );
  const dgamma = r.run(
    program('zoo_bn_grad_dgamma', ['TOT', 'INVSTD'], [l.C], 'if (index < uniforms.size) { result[index] = TOT[uniforms.channels + index] * INVSTD[index]; }', { uniforms: BN_UNIFORMS }),
    [tot, invstd!],
    u,
  );
  const dbeta = r.run(program('zoo_bn_grad_dbeta', ['TOT'], [l.C], 'if (index < uniforms.size) { result[index] = TOT[index]; }', { uniforms: BN_UNIFORMS }), [tot], u);
  const outs = [dx, dgamma, dbeta];
  if (hasResidual) {
    outs.push(relu ? r.run(reluGradProgram(shape), [dy!, y!]) : r.run(program('zoo_copy', ['A'], shape, 'if (index < uniforms.size) { result[index] = A[index]; }'), [dy!]));
  }
  return r.finish(outs);
}

// ---- Convolution filter gradient as one matrix product ---------------------------------------------

/**
 * dW [kH, kW, inC, outC] = patches^T dy, with patches [M, kH * kW * inC] (M = N * outH * outW) gathered by
 * one program (im2col) and one BatchMatMul. zoo's composed gradient (conv_backprop.ts) runs it as a
 * convolution whose batch is inC and whose output is only kH x kW: on tfjs's tiled convolution that
 * uses 9 of every 32 rows of each tile. Patches larger than `maxPatchBytes` (and 1x1 filters, which
 * are one matrix product already) keep the kernel registered before.
 */
function filterGradIm2colKernel(fallback: tf.KernelFunc, maxPatchBytes: () => number) {
  return (args: KernelArgs): TensorInfo => {
    const attrs = args.attrs as unknown as ConvGradAttrs;
    const { x, dy } = args.inputs as Record<string, TensorInfo>;
    const g = convGeometry(x!.shape, attrs.filterShape!, attrs.strides, attrs.pad, attrs.dilations ?? 1, attrs.dimRoundingMode);
    const M = g.batch * g.outH * g.outW;
    const K = g.kH * g.kW * g.inC;
    if ((g.kH === 1 && g.kW === 1) || M * K * 4 > maxPatchBytes()) return fallback(args as unknown as Parameters<tf.KernelFunc>[0]) as TensorInfo;
    const backend = args.backend as WebGpuBackendLike;
    const ctx = new KernelContext(args.backend, 'webgpu');
    const patches = backend.runWebGPUProgram(
      program(
        'zoo_im2col',
        ['X'],
        [1, M, K],
        `if (index < uniforms.size) {
          let m = index / uniforms.k;
          let k = index - m * uniforms.k;
          let tap = k / uniforms.inC;
          let c = k - tap * uniforms.inC;
          let ki = tap / uniforms.kW;
          let kj = tap - ki * uniforms.kW;
          let hw = uniforms.outH * uniforms.outW;
          let n = m / hw;
          let rem = m - n * hw;
          let oy = rem / uniforms.outW;
          let ox = rem - oy * uniforms.outW;
          let iy = oy * uniforms.strideH + ki * uniforms.dilH - uniforms.padT;
          let ix = ox * uniforms.strideW + kj * uniforms.dilW - uniforms.padL;
          var v = 0.0;
          if (iy >= 0 && iy < uniforms.inH && ix >= 0 && ix < uniforms.inW) { v = X[((n * uniforms.inH + iy) * uniforms.inW + ix) * uniforms.inC + c]; }
          result[index] = v;
        }`,
        { uniforms: 'k : i32, inH : i32, inW : i32, inC : i32, outH : i32, outW : i32, kW : i32, strideH : i32, strideW : i32, dilH : i32, dilW : i32, padT : i32, padL : i32,' },
      ),
      [x!],
      'float32',
      [K, g.inH, g.inW, g.inC, g.outH, g.outW, g.kW, g.strideH, g.strideW, g.dilH, g.dilW, g.padTop, g.padLeft].map(i32),
    );
    try {
      const dy3 = ctx.reshape(dy!, [1, M, g.outC]);
      const dw = ctx.run('BatchMatMul', { a: patches, b: dy3 }, { transposeA: true, transposeB: false });
      return ctx.keep(ctx.reshape(dw, [g.kH, g.kW, g.inC, g.outC]));
    } finally {
      ctx.dispose();
      backend.disposeData(patches.dataId);
    }
  };
}

/**
 * Registers the im2col filter gradient for 'webgpu' (patches up to `maxPatchBytes`, default the
 * device's binding limit) and returns the function that puts back the kernel registered before.
 */
export function installIm2colFilterGrad(maxPatchBytes?: number): () => void {
  const name = ZOO_KERNELS.conv2dBackpropFilter;
  const before = tf.getKernel(name, 'webgpu');
  if (!before) throw new Error(`${name} is not registered for webgpu`);
  tf.unregisterKernel(name, 'webgpu');
  const limit = () => maxPatchBytes ?? maxBindingBytes() ?? 128 * 2 ** 20;
  tf.registerKernel({ kernelName: name, backendName: 'webgpu', kernelFunc: filterGradIm2colKernel(before.kernelFunc, limit) as unknown as tf.KernelFunc });
  return () => {
    tf.unregisterKernel(name, 'webgpu');
    tf.registerKernel(before);
  };
}

// ---- Registration ----------------------------------------------------------------------------------

const FUSED: [string, (args: KernelArgs) => TensorInfo | TensorInfo[]][] = [
  [ZOO_KERNELS.sgd, sgdKernel],
  [ZOO_KERNELS.reluGrad, reluGradKernel],
  [ZOO_KERNELS.batchNormTrain, batchNormTrainKernel],
  [ZOO_KERNELS.batchNormTrainGrad, batchNormTrainGradKernel],
];

/** What the fused kernels replace: the names and how many programs each step dispatches. */
export const FUSED_KERNEL_NAMES = FUSED.map(([n]) => n);

/**
 * Registers the fused kernels for 'webgpu' and returns the function that puts back what was
 * registered before (zoo's composed kernels, or nothing, so that zoo composes from core ops).
 */
export function installFusedKernels(): () => void {
  const before = FUSED.map(([name]) => [name, tf.getKernel(name, 'webgpu')] as const);
  for (const [name, impl] of FUSED) {
    if (tf.getKernel(name, 'webgpu')) tf.unregisterKernel(name, 'webgpu');
    tf.registerKernel({ kernelName: name, backendName: 'webgpu', kernelFunc: impl as unknown as tf.KernelFunc });
  }
  return () => {
    for (const [name, kernel] of before) {
      if (tf.getKernel(name, 'webgpu')) tf.unregisterKernel(name, 'webgpu');
      if (kernel) tf.registerKernel(kernel);
    }
  };
}

/** Largest |a - b| / max(1, |b|) over two tensors' values. */
async function maxRelDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const [va, vb] = await Promise.all([a.data(), b.data()]);
  let m = 0;
  for (let i = 0; i < va.length; i++) m = Math.max(m, Math.abs(va[i]! - vb[i]!) / Math.max(1, Math.abs(vb[i]!)));
  return m;
}

/**
 * The kernels here against zoo's on small random tensors: batch norm forward and every gradient (with
 * and without ReLU and residual), the ReLU gradient, one SGD update, and the filter gradient at
 * strides 1 and 2 and dilation 2. Returns the largest relative difference seen; leaves the kernels as
 * it found them.
 */
export async function checkKernels(): Promise<{ maxRelDiff: number; cases: number }> {
  const x = tf.randomNormal([2, 5, 7, 24], 0.5, 2, 'float32', 11) as tf.Tensor4D;
  const gamma = tf.randomUniform([24], 0.5, 1.5, 'float32', 12) as tf.Tensor1D;
  const beta = tf.randomNormal([24], 0, 1, 'float32', 13) as tf.Tensor1D;
  const res = tf.randomNormal([2, 5, 7, 24], 0, 1, 'float32', 14) as tf.Tensor4D;
  const w = tf.randomNormal([2, 5, 7, 24], 0, 1, 'float32', 15) as tf.Tensor4D;
  let worst = 0;
  let cases = 0;
  const compare = async (a: tf.Tensor[], b: tf.Tensor[]) => {
    for (let i = 0; i < a.length; i++) {
      worst = Math.max(worst, await maxRelDiff(a[i]!, b[i]!));
      cases++;
    }
    tf.dispose([...a, ...b]);
  };
  try {
    for (const [relu, withRes] of [
      [false, false],
      [true, false],
      [true, true],
    ] as const) {
      const bn = (fused: boolean, xs: tf.Tensor[]) => {
        const opts = { epsilon: 1e-5, relu, ...(withRes ? { residual: xs[3]! } : {}) };
        return (fused ? batchNormTrain : batchNormTrainComposed)(xs[0]!, xs[1] as tf.Tensor1D, xs[2] as tf.Tensor1D, opts);
      };
      const run = (fused: boolean) =>
        tf.tidy(() => {
          const inputs = withRes ? [x, gamma, beta, res] : [x, gamma, beta];
          const grads = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(bn(fused, xs).y, w)))(inputs);
          const fwd = bn(fused, inputs);
          return [fwd.y, fwd.mean, fwd.invstd, ...grads];
        });
      const composed = run(false);
      const restore = installFusedKernels();
      try {
        await compare(run(true), composed);
      } finally {
        restore();
      }
    }
    // ReLU gradient and SGD, against their formulas in core ops.
    const restore = installFusedKernels();
    try {
      const relu = tf.engine().runKernel(ZOO_KERNELS.reluGrad, { dy: w, y: x }) as tf.Tensor;
      const attrs = { lr: 0.1, momentum: 0.9, weightDecay: 1e-4, nesterov: true, gradScale: 0.5 };
      const [w2, v2] = tf.engine().runKernel(ZOO_KERNELS.sgd, { param: x, grad: w, velocity: res }, attrs as unknown as NamedAttrMap) as tf.Tensor[];
      const refs = tf.tidy(() => {
        const d = tf.add(tf.mul(w, 0.5), tf.mul(x, 1e-4));
        const vRef = tf.add(tf.mul(res, 0.9), d);
        return [tf.mul(w, tf.step(x)), tf.sub(x, tf.mul(tf.add(d, tf.mul(vRef, 0.9)), 0.1)), vRef];
      });
      await compare([relu, w2!, v2!], refs);
    } finally {
      restore();
    }
    // The filter gradient: 3x3 stride 1 'same', 3x3 stride 2 pad 1, 3x3 dilation 2 pad 2.
    for (const [stride, pad, dil] of [
      [1, 'same', 1],
      [2, 1, 1],
      [1, 2, 2],
    ] as const) {
      const filterShape: [number, number, number, number] = [3, 3, 24, 16];
      const dy = tf.tidy(() => tf.randomNormal(tf.conv2d(x, tf.zeros(filterShape) as tf.Tensor4D, stride, pad, 'NHWC', dil).shape, 0, 1, 'float32', 16));
      const attrs = { strides: [stride, stride], pad, dilations: [dil, dil], filterShape } as unknown as NamedAttrMap;
      const ref = tf.engine().runKernel(ZOO_KERNELS.conv2dBackpropFilter, { x, dy }, attrs) as tf.Tensor;
      const undo = installIm2colFilterGrad();
      try {
        await compare([tf.engine().runKernel(ZOO_KERNELS.conv2dBackpropFilter, { x, dy }, attrs) as tf.Tensor], [ref]);
      } finally {
        undo();
        dy.dispose();
      }
    }
  } finally {
    tf.dispose([x, gamma, beta, res, w]);
  }
  return { maxRelDiff: worst, cases };
}
