/**
 * Pooling gradients (NHWC), in JavaScript for backends whose memory it can reach.
 *
 * Max pooling: the gradient goes to the first maximum of each window in row-major order (as PyTorch
 * and tfjs's cpu backend do; tfjs-backend-wasm 4.22 picks the last one, and runs a scalar loop).
 *
 * Average pooling: the forward pass of tfjs (TensorFlow 'SAME' padding) divides each window by the
 * number of positions inside the input, but tfjs-core 4.22's AvgPoolGrad divides by the full window
 * size, so the gradient is wrong wherever a window hangs over the edge. ZooAvgPoolGrad uses the
 * forward pass's divisor. Backends without direct memory access get the same result from the core
 * kernel by scaling dy by window / count first.
 */
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import * as tf from '@tensorflow/tfjs-core';
import { KernelContext } from './context.js';

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };

export interface PoolAttrs {
  filterSize: number | [number, number];
  strides: number | [number, number];
  pad: 'valid' | 'same' | number;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

export function poolInfo(xShape: number[], a: PoolAttrs) {
  return tf.backend_util.computePool2DInfo(
    xShape as [number, number, number, number],
    a.filterSize,
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
  );
}

export function maxPoolGradKernel(args: KernelArgs, backendName: string): TensorInfo {
  const attrs = args.attrs as unknown as PoolAttrs;
  const xI = args.inputs.x!;
  const dyI = args.inputs.dy!;
  const info = poolInfo(xI.shape as number[], attrs);
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const dxI = ctx.empty(xI.shape as number[]);
    const x = ctx.f32(xI);
    const dy = ctx.f32(dyI);
    const dx = ctx.f32(dxI);
    dx.fill(0);
    const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = info;
    const { strideHeight: sh, strideWidth: sw, filterHeight: fh, filterWidth: fw } = info;
    const pt = info.padInfo.top;
    const pl = info.padInfo.left;
    const best = new Float32Array(C);
    const where = new Int32Array(C);
    for (let n = 0; n < N; n++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          best.fill(-Infinity);
          where.fill(-1);
          const h0 = oh * sh - pt;
          const w0 = ow * sw - pl;
          for (let i = Math.max(0, h0); i < Math.min(H, h0 + fh); i++)
            for (let j = Math.max(0, w0); j < Math.min(W, w0 + fw); j++) {
              const base = ((n * H + i) * W + j) * C;
              for (let c = 0; c < C; c++) {
                const v = x[base + c]!;
                if (v > best[c]! || where[c] === -1) {
                  best[c] = v;
                  where[c] = base + c;
                }
              }
            }
          const o = ((n * OH + oh) * OW + ow) * C;
          for (let c = 0; c < C; c++) if (where[c]! >= 0) dx[where[c]!] += dy[o + c]!;
        }
    return ctx.keep(dxI);
  } finally {
    ctx.dispose();
  }
}

/** Number of input positions inside each output window (the forward pass's divisor). */
function windowCounts(info: tf.backend_util.Conv2DInfo): Float32Array {
  const { inHeight: H, inWidth: W, outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw, filterHeight: fh, filterWidth: fw } = info;
  const counts = new Float32Array(OH * OW);
  for (let oh = 0; oh < OH; oh++) {
    const h0 = oh * sh - info.padInfo.top;
    const nh = Math.min(H, h0 + fh) - Math.max(0, h0);
    for (let ow = 0; ow < OW; ow++) {
      const w0 = ow * sw - info.padInfo.left;
      const nw = Math.min(W, w0 + fw) - Math.max(0, w0);
      counts[oh * OW + ow] = Math.max(nh, 0) * Math.max(nw, 0);
    }
  }
  return counts;
}

export function avgPoolGradKernel(args: KernelArgs, backendName: string): TensorInfo {
  const attrs = args.attrs as unknown as PoolAttrs;
  const xI = args.inputs.x!;
  const dyI = args.inputs.dy!;
  const info = poolInfo(xI.shape as number[], attrs);
  const counts = windowCounts(info);
  const ctx = new KernelContext(args.backend, backendName);
  try {
    if (!ctx.hasDirectMemory) {
      // Scale dy by window / count, then let the core kernel divide by the window.
      const scale = new Float32Array(counts.length);
      const area = info.filterHeight * info.filterWidth;
      for (let i = 0; i < counts.length; i++) scale[i] = counts[i]! > 0 ? area / counts[i]! : 0;
      const s = ctx.fromValues([1, info.outHeight, info.outWidth, 1], scale);
      const scaled = ctx.run('Multiply', { a: dyI, b: s });
      return ctx.keep(ctx.run('AvgPoolGrad', { dy: scaled, input: xI }, args.attrs));
    }
    const dxI = ctx.empty(xI.shape as number[]);
    const dy = ctx.f32(dyI);
    const dx = ctx.f32(dxI);
    dx.fill(0);
    const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = info;
    const { strideHeight: sh, strideWidth: sw, filterHeight: fh, filterWidth: fw } = info;
    for (let n = 0; n < N; n++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          const cnt = counts[oh * OW + ow]!;
          if (cnt === 0) continue;
          const inv = 1 / cnt;
          const o = ((n * OH + oh) * OW + ow) * C;
          const h0 = oh * sh - info.padInfo.top;
          const w0 = ow * sw - info.padInfo.left;
          for (let i = Math.max(0, h0); i < Math.min(H, h0 + fh); i++)
            for (let j = Math.max(0, w0); j < Math.min(W, w0 + fw); j++) {
              const base = ((n * H + i) * W + j) * C;
              for (let c = 0; c < C; c++) dx[base + c] += dy[o + c]! * inv;
            }
        }
    return ctx.keep(dxI);
  } finally {
    ctx.dispose();
  }
}

/** Identity that shares the data (as the cpu backend does) instead of copying it (wasm's kernel). */
export function identitySharingKernel(args: KernelArgs): TensorInfo {
  const x = args.inputs.x!;
  (args.backend as unknown as { incRef(id: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}
