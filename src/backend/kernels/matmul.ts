/**
 * BatchMatMul for the wasm backend. tfjs-backend-wasm 4.22 takes XNNPACK's fully-connected path only
 * without transposes and with a batch of one, and runs it without the thread pool; everything else
 * (including the transposed products in matMul's own gradient) falls to a scalar loop at about
 * 2 GFLOP/s. Here transposes are materialized (cache-blocked, in JavaScript) and each product runs as a
 * 1x1 convolution, which is XNNPACK's threaded GEMM.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from './context.js';

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };

export function batchMatMulKernel(args: KernelArgs, backendName: string): TensorInfo {
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  const a = args.inputs.a!;
  const b = args.inputs.b!;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') throw new Error('BatchMatMul: float32 inputs expected');
  const ra = a.shape.length;
  const rb = b.shape.length;
  const M = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const K = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const Kb = transposeB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const N = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  if (K !== Kb) throw new Error(`BatchMatMul: inner dimensions ${K} and ${Kb} differ (${a.shape} x ${b.shape})`);
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = sizeOf(outerA);
  const batchB = sizeOf(outerB);
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) {
    throw new Error(`BatchMatMul: batch dimensions ${outerA} and ${outerB} do not broadcast`);
  }
  const batch = Math.max(batchA, batchB);
  const outOuter = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB);
  if (sizeOf(outOuter) !== batch) {
    throw new Error(`BatchMatMul: batch dimensions ${outerA} and ${outerB} broadcast in more than one direction`);
  }
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const a3 = ctx.reshape(a, [batchA, transposeA ? K : M, transposeA ? M : K]);
    const b3 = ctx.reshape(b, [batchB, transposeB ? N : K, transposeB ? K : N]);
    const aN = transposeA ? ctx.transpose(a3, [0, 2, 1]) : a3; // [batchA, M, K]
    const bN = transposeB ? ctx.transpose(b3, [0, 2, 1]) : b3; // [batchB, K, N]
    const gemm = (ai: TensorInfo, bi: TensorInfo) =>
      ctx.conv2d(ctx.reshape(ai, [1, 1, M, K]), ctx.alias(bi, [1, 1, K, N]), { strides: [1, 1], pad: 'valid', dilations: [1, 1] });
    if (batch === 1) return ctx.keep(ctx.reshape(gemm(aN, bN), [...outOuter, M, N]));
    const out = ctx.empty([...outOuter, M, N]);
    for (let i = 0; i < batch; i++) {
      const ai = batchA === 1 ? aN : ctx.slice(aN, [i, 0, 0], [1, M, K]);
      const bi = batchB === 1 ? bN : ctx.slice(bN, [i, 0, 0], [1, K, N]);
      const r = gemm(ai, bi);
      ctx.f32(out).set(ctx.f32(r), i * M * N); // fresh views: gemm() may have grown the heap
      ctx.free(r);
      if (ai !== aN) ctx.free(ai);
      if (bi !== bN) ctx.free(bi);
    }
    return ctx.keep(out);
  } finally {
    ctx.dispose();
  }
}
