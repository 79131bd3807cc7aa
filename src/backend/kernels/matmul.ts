/**
 * BatchMatMul for the wasm backend. tfjs-backend-wasm 4.22 takes XNNPACK's fully-connected path only
 * without transposes and with a batch of one, and runs it without the thread pool; everything else
 * (including the transposed products in matMul's own gradient) falls to a scalar loop at about
 * 2 GFLOP/s. Here each product runs as a 1x1 convolution, XNNPACK's threaded GEMM, in the orientation
 * that packs the smaller operand (conv_gemm.ts), with transposes done by zoo's SIMD kernels.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from './context.js';
import { gemmNN, gemmNT, gemmTN } from './conv_gemm.js';

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
    const product = (ai: TensorInfo, bi: TensorInfo): TensorInfo => {
      // Orientation-aware products (conv_gemm.ts): XNNPACK packs whichever side is smaller.
      if (!transposeA && !transposeB) return gemmNN(ctx, ai, bi, M, K, N);
      if (transposeA && !transposeB) return gemmTN(ctx, ai, bi, K, M, N); // a stored [K, M]
      if (!transposeA && transposeB) return gemmNT(ctx, ai, bi, M, K, N); // b stored [N, K]
      return ctx.transpose(gemmNN(ctx, bi, ai, N, K, M), [1, 0]); // A^T B^T = (B A)^T
    };
    const a3 = ctx.reshape(a, [batchA, transposeA ? K : M, transposeA ? M : K]);
    const b3 = ctx.reshape(b, [batchB, transposeB ? N : K, transposeB ? K : N]);
    if (batch === 1) return ctx.keep(ctx.reshape(product(a3, b3), [...outOuter, M, N]));
    const out = ctx.empty([...outOuter, M, N]);
    for (let i = 0; i < batch; i++) {
      const ai = batchA === 1 ? a3 : ctx.slice(a3, [i, 0, 0], [1, a3.shape[1]!, a3.shape[2]!]);
      const bi = batchB === 1 ? b3 : ctx.slice(b3, [i, 0, 0], [1, b3.shape[1]!, b3.shape[2]!]);
      const r = product(ai, bi);
      ctx.f32(out).set(ctx.f32(r), i * M * N); // fresh views: the product may have grown the heap
      ctx.free(r);
      if (ai !== a3) ctx.free(ai);
      if (bi !== b3) ctx.free(bi);
    }
    return ctx.keep(out);
  } finally {
    ctx.dispose();
  }
}
