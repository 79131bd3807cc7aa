/**
 * Kernels of the wasm backend that run in zoo's native addon (./addon.ts) when it is loaded:
 *   ZooConv2D, Conv2D, FusedConv2D (bias and ReLU)    oneDNN convolution forward
 *   ZooConv2DBackpropInput, Conv2DBackpropInput       oneDNN backward data
 *   ZooConv2DBackpropFilter, Conv2DBackpropFilter     oneDNN backward weights
 *   BatchMatMul                                       oneDNN matmul (transposes as strides)
 *   ZooBatchNormTrain / Grad, ZooReluGrad, ZooSgd     fused C++ passes (batchnorm_math.ts's formulas)
 *   ZooMaxPoolGrad, ZooAvgPoolGrad                    C++ loops (pool.ts's tie and divisor rules)
 * Each reads and writes the tensors where they are, in the wasm heap; outputs are allocated by the
 * wasm backend as usual. A kernel returns undefined for a case it does not take (another dtype or data
 * format, an activation other than ReLU), and the wasm kernel runs instead.
 *
 * Under mixed precision (setNativeConvPrecision('bf16'), only where the CPU computes bf16 natively)
 * the convolutions read bf16 copies of their operands and accumulate and write in float32; batch norm,
 * the loss and the update stay in float32.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from '../kernels/context.js';
import { convGeometry, type ConvGeometry, type ConvGradAttrs } from '../kernels/conv_backprop.js';
import type { BatchNormAttrs } from '../kernels/batchnorm.js';
import type { SgdAttrs } from '../kernels/sgd.js';
import { poolInfo, type PoolAttrs } from '../kernels/pool.js';
import type { NativeAddon } from './addon.js';

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };
export type NativeImpl = (args: KernelArgs, backendName: string) => TensorInfo | TensorInfo[] | undefined;

interface WasmMemoryOwner {
  wasm: { wasmMemory: WebAssembly.Memory };
}

let addon: NativeAddon | undefined;
let enabled = false;
let convBf16 = false;
let heapBuffer: ArrayBufferLike | undefined;

/** Makes the kernels below use `a` (undefined: off). */
export function useNativeAddon(a: NativeAddon | undefined): void {
  addon = a;
  enabled = a !== undefined;
  heapBuffer = undefined;
}

/** Turns the native kernels off and on again in this process (the wasm kernels run while off). */
export function setNativeKernelsEnabled(on: boolean): void {
  enabled = on && addon !== undefined;
}

/** Whether the native kernels run now. */
export function nativeKernelsEnabled(): boolean {
  return enabled;
}

/** Convolutions in bf16 with float32 accumulation ('bf16') or in float32 ('fp32', the default). */
export function setNativeConvPrecision(p: 'bf16' | 'fp32'): void {
  convBf16 = p === 'bf16';
}

/** The addon, with its view of the heap current (call after the outputs are allocated). */
function ready(ctx: KernelContext): NativeAddon {
  const memory = (ctx.backend as unknown as WasmMemoryOwner).wasm.wasmMemory;
  // A grown shared memory hands out a new buffer object: the addon then takes its new length.
  const buffer = memory.buffer;
  if (buffer !== heapBuffer) {
    addon!.setHeap(new Uint8Array(buffer));
    heapBuffer = buffer;
  }
  return addon!;
}

/** Wraps a native kernel so the fallback runs when the native kernels are off or decline the case. */
export function preferNative<R extends TensorInfo | TensorInfo[]>(
  native: NativeImpl,
  fallback: (args: KernelArgs, backendName: string) => R,
): (args: KernelArgs, backendName: string) => R {
  return (args, backendName) => {
    if (enabled && backendName === 'wasm') {
      const r = native(args, backendName);
      if (r !== undefined) return r as R;
    }
    return fallback(args, backendName);
  };
}

const geometry = new Int32Array(17);
function packGeometry(g: ConvGeometry): Int32Array {
  geometry.set([g.batch, g.inH, g.inW, g.inC, g.outH, g.outW, g.outC, g.kH, g.kW, g.strideH, g.strideW, g.dilH, g.dilW, g.padTop, g.padBottom, g.padLeft, g.padRight]);
  return geometry;
}

/** float32 and not empty (an empty tensor has no address to hand over). */
function float32(...ts: (TensorInfo | undefined)[]): boolean {
  return ts.every((t) => t === undefined || (t.dtype === 'float32' && sizeOf(t.shape) > 0));
}

function nhwc(attrs: ConvGradAttrs): boolean {
  return !attrs.dataFormat || attrs.dataFormat === 'NHWC';
}

/**
 * Whether oneDNN takes this geometry as tfjs computed it: the output size follows from the padding
 * exactly (tfjs's dimRoundingMode can round otherwise), and the operands have the shapes it implies.
 */
function convTakes(g: ConvGeometry, x: readonly number[] | undefined, filterIn: number | undefined, dy: readonly number[] | undefined): boolean {
  const out = (size: number, k: number, s: number, d: number, a: number, b: number) => Math.floor((size + a + b - ((k - 1) * d + 1)) / s) + 1;
  if (out(g.inH, g.kH, g.strideH, g.dilH, g.padTop, g.padBottom) !== g.outH) return false;
  if (out(g.inW, g.kW, g.strideW, g.dilW, g.padLeft, g.padRight) !== g.outW) return false;
  const same = (a: readonly number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
  if (x && !same(x, [g.batch, g.inH, g.inW, g.inC])) return false;
  if (filterIn !== undefined && filterIn !== g.inC) return false;
  if (dy && !same(dy, [g.batch, g.outH, g.outW, g.outC])) return false;
  return true;
}

function withContext<T>(args: KernelArgs, backendName: string, body: (ctx: KernelContext) => T): T {
  const ctx = new KernelContext(args.backend, backendName);
  try {
    return body(ctx);
  } finally {
    ctx.dispose();
  }
}

/** ZooConv2D, Conv2D and FusedConv2D (bias, ReLU). */
export const nativeConvForward: NativeImpl = (args, backendName) => {
  const attrs = args.attrs as unknown as ConvGradAttrs & { activation?: string };
  const { x, filter, bias, preluActivationWeights } = args.inputs;
  const activation = attrs.activation ?? 'linear';
  if (!nhwc(attrs) || !float32(x, filter, bias) || preluActivationWeights) return undefined;
  if (activation !== 'linear' && activation !== 'relu') return undefined;
  // A bias per output channel ([outC], or [1, .., outC]); other broadcasts are the wasm kernel's.
  if (bias && (bias.shape[bias.shape.length - 1] !== filter!.shape[3] || sizeOf(bias.shape) !== filter!.shape[3])) return undefined;
  const g = convGeometry(x!.shape, filter!.shape, attrs.strides, attrs.pad, attrs.dilations ?? 1, attrs.dimRoundingMode);
  if (!convTakes(g, x!.shape, filter!.shape[2], undefined)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const y = ctx.empty([g.batch, g.outH, g.outW, g.outC]);
    ready(ctx).conv(0, packGeometry(g), ctx.address(x!), ctx.address(filter!), ctx.address(y), +convBf16, bias ? ctx.address(bias) : 0, +(activation === 'relu'));
    return ctx.keep(y);
  });
};

/** ZooConv2DBackpropInput and Conv2DBackpropInput. */
export const nativeConvBackpropInput: NativeImpl = (args, backendName) => {
  const attrs = args.attrs as unknown as ConvGradAttrs;
  const { dy, filter } = args.inputs;
  if (!nhwc(attrs) || !float32(dy, filter)) return undefined;
  const g = convGeometry(attrs.inputShape!, filter!.shape, attrs.strides, attrs.pad, attrs.dilations ?? 1, attrs.dimRoundingMode);
  // A mismatch is reported by the wasm kernel, which checks the same.
  if (!convTakes(g, undefined, filter!.shape[2], dy!.shape)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const dx = ctx.empty([g.batch, g.inH, g.inW, g.inC]);
    ready(ctx).conv(1, packGeometry(g), ctx.address(dy!), ctx.address(filter!), ctx.address(dx), +convBf16);
    return ctx.keep(dx);
  });
};

/** ZooConv2DBackpropFilter and Conv2DBackpropFilter. */
export const nativeConvBackpropFilter: NativeImpl = (args, backendName) => {
  const attrs = args.attrs as unknown as ConvGradAttrs;
  const { x, dy } = args.inputs;
  if (!nhwc(attrs) || !float32(x, dy)) return undefined;
  const g = convGeometry(x!.shape, attrs.filterShape!, attrs.strides, attrs.pad, attrs.dilations ?? 1, attrs.dimRoundingMode);
  if (!convTakes(g, x!.shape, attrs.filterShape![2], dy!.shape)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const dw = ctx.empty([g.kH, g.kW, g.inC, g.outC]);
    ready(ctx).conv(2, packGeometry(g), ctx.address(x!), ctx.address(dy!), ctx.address(dw), +convBf16);
    return ctx.keep(dw);
  });
};

/** BatchMatMul with broadcasting over the batch, as tfjs defines it. */
export const nativeBatchMatMul: NativeImpl = (args, backendName) => {
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  const { a, b } = args.inputs;
  if (!float32(a, b)) return undefined;
  const ra = a!.shape.length;
  const rb = b!.shape.length;
  const M = transposeA ? a!.shape[ra - 1]! : a!.shape[ra - 2]!;
  const K = transposeA ? a!.shape[ra - 2]! : a!.shape[ra - 1]!;
  const Kb = transposeB ? b!.shape[rb - 1]! : b!.shape[rb - 2]!;
  const N = transposeB ? b!.shape[rb - 2]! : b!.shape[rb - 1]!;
  const outerA = a!.shape.slice(0, -2);
  const outerB = b!.shape.slice(0, -2);
  const batchA = sizeOf(outerA);
  const batchB = sizeOf(outerB);
  // A batch equal on both sides or 1 on one (the broadcast of the outer dimensions, as tfjs defines
  // it); the wasm kernel takes or reports the rest.
  const batch = Math.max(batchA, batchB);
  if (K !== Kb || M * N * K === 0 || (batchA !== batch && batchA !== 1) || (batchB !== batch && batchB !== 1)) return undefined;
  let outer: number[];
  try {
    outer = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB);
  } catch {
    return undefined;
  }
  if (sizeOf(outer) !== batch) return undefined;
  return withContext(args, backendName, (ctx) => {
    const c = ctx.empty([...outer, M, N]);
    ready(ctx).matmul(ctx.address(a!), ctx.address(b!), ctx.address(c), batch, M, K, N, +transposeA, +transposeB, batchA, batchB);
    return ctx.keep(c);
  });
};

export const nativeBatchNormTrain: NativeImpl = (args, backendName) => {
  const { epsilon, relu, hasResidual } = args.attrs as unknown as BatchNormAttrs;
  const { x, gamma, beta, residual } = args.inputs;
  if (!float32(x, gamma, beta, residual)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const C = x!.shape[x!.shape.length - 1]!;
    const P = sizeOf(x!.shape) / C;
    const y = ctx.empty(x!.shape as number[]);
    const mean = ctx.empty([C]);
    const invstd = ctx.empty([C]);
    const res = hasResidual ? ctx.address(residual!) : 0;
    ready(ctx).bnTrain(ctx.address(x!), ctx.address(y), res, ctx.address(gamma!), ctx.address(beta!), ctx.address(mean), ctx.address(invstd), P, C, epsilon, +relu);
    return [ctx.keep(y), ctx.keep(mean), ctx.keep(invstd)];
  });
};

export const nativeBatchNormTrainGrad: NativeImpl = (args, backendName) => {
  const { relu, hasResidual } = args.attrs as unknown as BatchNormAttrs;
  const { dy, x, y, gamma, mean, invstd } = args.inputs;
  if (!float32(dy, x, y, gamma)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const C = dy!.shape[dy!.shape.length - 1]!;
    const P = sizeOf(dy!.shape) / C;
    const dx = ctx.empty(dy!.shape as number[]);
    const dgamma = ctx.empty([C]);
    const dbeta = ctx.empty([C]);
    const dres = hasResidual ? ctx.empty(dy!.shape as number[]) : undefined;
    ready(ctx).bnTrainGrad(
      ctx.address(dy!),
      ctx.address(x!),
      relu ? ctx.address(y!) : 0,
      dres ? ctx.address(dres) : 0,
      ctx.address(gamma!),
      ctx.address(mean!),
      ctx.address(invstd!),
      ctx.address(dx),
      ctx.address(dgamma),
      ctx.address(dbeta),
      P,
      C,
    );
    const outs = [ctx.keep(dx), ctx.keep(dgamma), ctx.keep(dbeta)];
    if (dres) outs.push(ctx.keep(dres));
    return outs;
  });
};

export const nativeReluGrad: NativeImpl = (args, backendName) => {
  const { dy, y } = args.inputs;
  if (!float32(dy, y)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const dx = ctx.empty(dy!.shape as number[]);
    ready(ctx).reluGrad(ctx.address(dy!), ctx.address(y!), ctx.address(dx), sizeOf(dy!.shape));
    return ctx.keep(dx);
  });
};

export const nativeSgd: NativeImpl = (args, backendName) => {
  const a = args.attrs as unknown as SgdAttrs;
  const { param, grad, velocity } = args.inputs;
  if (!float32(param, grad, velocity)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const w = ctx.empty(param!.shape as number[]);
    const v = ctx.empty(param!.shape as number[]);
    ready(ctx).sgd(ctx.address(param!), ctx.address(grad!), ctx.address(velocity!), ctx.address(w), ctx.address(v), sizeOf(param!.shape), a.lr, a.momentum, a.weightDecay, a.gradScale, +a.nesterov);
    return [ctx.keep(w), ctx.keep(v)];
  });
};

function poolGeometry(x: TensorInfo, attrs: PoolAttrs): number[] {
  const i = poolInfo(x.shape as number[], attrs);
  return [i.batchSize, i.inHeight, i.inWidth, i.inChannels, i.outHeight, i.outWidth, i.filterHeight, i.filterWidth, i.strideHeight, i.strideWidth, i.padInfo.top, i.padInfo.left];
}

export const nativeMaxPoolGrad: NativeImpl = (args, backendName) => {
  const { x, dy } = args.inputs;
  if (!float32(x, dy)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const geo = poolGeometry(x!, args.attrs as unknown as PoolAttrs);
    const dx = ctx.empty(x!.shape as number[]);
    ready(ctx).maxPoolGrad(ctx.address(x!), ctx.address(dy!), ctx.address(dx), ...geo);
    return ctx.keep(dx);
  });
};

export const nativeAvgPoolGrad: NativeImpl = (args, backendName) => {
  const { x, dy } = args.inputs;
  if (!float32(x, dy)) return undefined;
  return withContext(args, backendName, (ctx) => {
    const geo = poolGeometry(x!, args.attrs as unknown as PoolAttrs);
    const dx = ctx.empty(x!.shape as number[]);
    ready(ctx).avgPoolGrad(ctx.address(dy!), ctx.address(dx), ...geo);
    return ctx.keep(dx);
  });
};
