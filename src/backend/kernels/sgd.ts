/**
 * One fused pass of SGD with momentum (optionally Nesterov) and L2 weight decay, as PyTorch and MXNet
 * (NAG) define it:
 *   d = g + wd * w;  v = momentum * v + d;  w = w - lr * (nesterov ? d + momentum * v : v)
 * Inputs param, grad, velocity; outputs new param and new velocity (fresh tensors: parameters are
 * never written in place, since XNNPACK caches packed weights under a tensor's id).
 */
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from './context.js';
import { parallelFor } from './parallel.js';

export interface SgdAttrs {
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
  /** Multiply the gradient first (gradient accumulation: 1 / number of micro-batches; loss-scale undo). */
  gradScale: number;
}

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };

export function sgdStep(
  w: Float32Array,
  g: Float32Array,
  v: Float32Array,
  wOut: Float32Array,
  vOut: Float32Array,
  a: SgdAttrs,
  i0: number,
  i1: number,
): void {
  const { lr, momentum: m, weightDecay: wd, gradScale: s } = a;
  if (a.nesterov) {
    for (let i = i0; i < i1; i++) {
      const d = g[i]! * s + wd * w[i]!;
      const vn = m * v[i]! + d;
      vOut[i] = vn;
      wOut[i] = w[i]! - lr * (d + m * vn);
    }
  } else {
    for (let i = i0; i < i1; i++) {
      const d = g[i]! * s + wd * w[i]!;
      const vn = m * v[i]! + d;
      vOut[i] = vn;
      wOut[i] = w[i]! - lr * vn;
    }
  }
}

export function sgdKernel(args: KernelArgs, backendName: string): TensorInfo[] {
  const attrs = args.attrs as unknown as SgdAttrs;
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const p = args.inputs.param!;
    const wOutI = ctx.empty(p.shape as number[]);
    const vOutI = ctx.empty(p.shape as number[]);
    if (ctx.simd) {
      ctx.simd.run(attrs.nesterov ? 'sgd_nesterov' : 'sgd', sizeOf(p.shape), [
        ctx.address(p),
        ctx.address(args.inputs.grad!),
        ctx.address(args.inputs.velocity!),
        ctx.address(wOutI),
        ctx.address(vOutI),
        attrs.lr,
        attrs.momentum,
        attrs.weightDecay,
        attrs.gradScale,
      ]);
      return [ctx.keep(wOutI), ctx.keep(vOutI)];
    }
    const w = ctx.f32(p);
    const g = ctx.f32(args.inputs.grad!);
    const v = ctx.f32(args.inputs.velocity!);
    const wOut = ctx.f32(wOutI);
    const vOut = ctx.f32(vOutI);
    parallelFor(w.length, (i0, i1) => sgdStep(w, g, v, wOut, vOut, attrs, i0, i1));
    return [ctx.keep(wOutI), ctx.keep(vOutI)];
  } finally {
    ctx.dispose();
  }
}
