/**
 * Kernels for batch normalization in training mode (see batchnorm_math.ts for the formulas) and the
 * fused ReLU gradient, for backends whose tensor memory JavaScript can reach (wasm, cpu).
 *
 * ZooBatchNormTrain      inputs x [.., C], gamma [C], beta [C], residual? (shape of x)
 *                        attrs epsilon, relu, hasResidual
 *                        outputs y, mean [C], invstd [C]
 * ZooBatchNormTrainGrad  inputs dy, x, y (when relu), gamma, mean, invstd
 *                        outputs dx, dgamma, dbeta, and dresidual when hasResidual
 * ZooReluGrad            inputs dy, y; output dy where y > 0, else 0
 *
 * On the wasm backend with zoo's SIMD pool (simd/), the passes over the data run as SIMD kernels on
 * every thread; elsewhere (the cpu backend) the JavaScript functions of batchnorm_math.ts run.
 */
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from './context.js';
import { bnApply, bnGradApply, bnGradCoefficients, bnGradReduce, bnMoments, bnStats, reluGrad } from './batchnorm_math.js';
import { parallelFor } from './parallel.js';

export interface BatchNormAttrs {
  epsilon: number;
  relu: boolean;
  hasResidual: boolean;
}

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };

/** Sums of per-part f64 rows [parts, C] into one row. */
function sumParts(ctx: KernelContext, scratch: TensorInfo, parts: number, C: number): Float64Array {
  const rows = new Float64Array(ctx.f32(scratch).buffer, ctx.address(scratch), parts * C);
  const out = new Float64Array(C);
  for (let p = 0; p < parts; p++) for (let c = 0; c < C; c++) out[c] += rows[p * C + c]!;
  return out;
}

/** The forward pass with zoo's SIMD kernels on the wasm heap. */
function batchNormTrainSimd(ctx: KernelContext, args: KernelArgs, a: BatchNormAttrs): TensorInfo[] {
  const simd = ctx.simd!;
  const xi = args.inputs.x!;
  const C = xi.shape[xi.shape.length - 1]!;
  const P = sizeOf(xi.shape) / C;
  const grain = Math.max(1, Math.ceil(32768 / C));
  const parts = simd.partsFor(P, grain);
  const yi = ctx.empty(xi.shape as number[]);
  const meanI = ctx.empty([C]);
  const invstdI = ctx.empty([C]);
  const coefI = ctx.empty([2 * C]); // scale, shift
  const sums = ctx.empty([2 * parts * C]);
  const sqs = ctx.empty([2 * parts * C]);
  simd.run('bn_stats', P, [ctx.address(xi), C, ctx.address(sums), ctx.address(sqs), C * 8], { align: 1, parts });
  const s = sumParts(ctx, sums, parts, C);
  const q = sumParts(ctx, sqs, parts, C);
  const mean = ctx.f32(meanI);
  const invstd = ctx.f32(invstdI);
  bnMoments(s, q, P, a.epsilon, mean, invstd);
  const gamma = ctx.f32(args.inputs.gamma!);
  const beta = ctx.f32(args.inputs.beta!);
  const coef = ctx.f32(coefI);
  for (let c = 0; c < C; c++) {
    coef[c] = gamma[c]! * invstd[c]!;
    coef[C + c] = beta[c]! - mean[c]! * coef[c]!;
  }
  const name = `bn_apply${a.relu ? '_relu' : ''}${a.hasResidual ? '_res' : ''}` as const;
  const res = a.hasResidual ? ctx.address(args.inputs.residual!) : 0;
  const coefAddr = ctx.address(coefI);
  simd.run(name, P, [ctx.address(xi), ctx.address(yi), res, coefAddr, coefAddr + 4 * C, C], { align: 1, grain });
  return [ctx.keep(yi), ctx.keep(meanI), ctx.keep(invstdI)];
}

/** The backward pass with zoo's SIMD kernels on the wasm heap. */
function batchNormTrainGradSimd(ctx: KernelContext, args: KernelArgs, a: BatchNormAttrs): TensorInfo[] {
  const simd = ctx.simd!;
  const dyI = args.inputs.dy!;
  const C = dyI.shape[dyI.shape.length - 1]!;
  const P = sizeOf(dyI.shape) / C;
  const grain = Math.max(1, Math.ceil(32768 / C));
  const parts = simd.partsFor(P, grain);
  const dxI = ctx.empty(dyI.shape as number[]);
  const dgammaI = ctx.empty([C]);
  const dbetaI = ctx.empty([C]);
  const dresI = a.hasResidual ? ctx.empty(dyI.shape as number[]) : null;
  const coefI = ctx.empty([3 * C]); // a, b, k
  const sgI = ctx.empty([2 * parts * C]);
  const sgxI = ctx.empty([2 * parts * C]);
  const y = a.relu ? ctx.address(args.inputs.y!) : 0;
  const mean = ctx.address(args.inputs.mean!);
  const reduce = `bn_grad_reduce${a.relu ? '_relu' : ''}${a.hasResidual ? '_res' : ''}` as const;
  simd.run(reduce, P, [ctx.address(dyI), ctx.address(args.inputs.x!), y, dresI ? ctx.address(dresI) : 0, mean, C, ctx.address(sgI), ctx.address(sgxI), C * 8], {
    align: 1,
    parts,
  });
  const sg = sumParts(ctx, sgI, parts, C);
  const sgx = sumParts(ctx, sgxI, parts, C);
  const coef = ctx.f32(coefI);
  const out = { a: coef.subarray(0, C), b: coef.subarray(C, 2 * C), k: coef.subarray(2 * C), dgamma: ctx.f32(dgammaI), dbeta: ctx.f32(dbetaI) };
  bnGradCoefficients(sg, sgx, P, ctx.f32(args.inputs.gamma!), ctx.f32(args.inputs.invstd!), out);
  const base = ctx.address(coefI);
  simd.run(a.relu ? 'bn_grad_apply_relu' : 'bn_grad_apply', P, [ctx.address(dyI), ctx.address(args.inputs.x!), y, ctx.address(dxI), mean, base, base + 4 * C, base + 8 * C, C], {
    align: 1,
    grain,
  });
  const outs = [ctx.keep(dxI), ctx.keep(dgammaI), ctx.keep(dbetaI)];
  if (dresI) outs.push(ctx.keep(dresI));
  return outs;
}

export function batchNormTrainKernel(args: KernelArgs, backendName: string): TensorInfo[] {
  const { epsilon, relu, hasResidual } = args.attrs as unknown as BatchNormAttrs;
  const ctx = new KernelContext(args.backend, backendName);
  try {
    if (ctx.simd) return batchNormTrainSimd(ctx, args, { epsilon, relu, hasResidual });
    const xi = args.inputs.x!;
    const C = xi.shape[xi.shape.length - 1]!;
    const P = sizeOf(xi.shape) / C;
    const yi = ctx.empty(xi.shape as number[]);
    const meanI = ctx.empty([C]);
    const invstdI = ctx.empty([C]);
    const x = ctx.f32(xi);
    const s = new Float64Array(C);
    const q = new Float64Array(C);
    bnStats(x, C, 0, P, s, q);
    const mean = ctx.f32(meanI);
    const invstd = ctx.f32(invstdI);
    bnMoments(s, q, P, epsilon, mean, invstd);
    const gamma = ctx.f32(args.inputs.gamma!);
    const beta = ctx.f32(args.inputs.beta!);
    const scale = new Float32Array(C);
    const shift = new Float32Array(C);
    for (let c = 0; c < C; c++) {
      scale[c] = gamma[c]! * invstd[c]!;
      shift[c] = beta[c]! - mean[c]! * scale[c]!;
    }
    const residual = hasResidual ? ctx.f32(args.inputs.residual!) : null;
    const y = ctx.f32(yi);
    parallelFor(P, (p0, p1) => bnApply(x, y, C, p0, p1, scale, shift, residual, relu));
    return [ctx.keep(yi), ctx.keep(meanI), ctx.keep(invstdI)];
  } finally {
    ctx.dispose();
  }
}

export function batchNormTrainGradKernel(args: KernelArgs, backendName: string): TensorInfo[] {
  const { epsilon, relu, hasResidual } = args.attrs as unknown as BatchNormAttrs;
  const ctx = new KernelContext(args.backend, backendName);
  try {
    if (ctx.simd) return batchNormTrainGradSimd(ctx, args, { epsilon, relu, hasResidual });
    const dyI = args.inputs.dy!;
    const C = dyI.shape[dyI.shape.length - 1]!;
    const P = sizeOf(dyI.shape) / C;
    // Allocate every output before taking views: an allocation may grow (and, without threads, detach)
    // the heap.
    const dxI = ctx.empty(dyI.shape as number[]);
    const dgammaI = ctx.empty([C]);
    const dbetaI = ctx.empty([C]);
    const dresI = hasResidual ? ctx.empty(dyI.shape as number[]) : null;
    const dy = ctx.f32(dyI);
    const x = ctx.f32(args.inputs.x!);
    const y = relu ? ctx.f32(args.inputs.y!) : null;
    const gamma = ctx.f32(args.inputs.gamma!);
    const mean = ctx.f32(args.inputs.mean!);
    const invstd = ctx.f32(args.inputs.invstd!);
    const dres = dresI ? ctx.f32(dresI) : null;
    const sg = new Float64Array(C);
    const sgx = new Float64Array(C);
    bnGradReduce(dy, x, y, C, 0, P, mean, sg, sgx, dres);
    const coef = {
      a: new Float32Array(C),
      b: new Float32Array(C),
      k: new Float32Array(C),
      dgamma: ctx.f32(dgammaI),
      dbeta: ctx.f32(dbetaI),
    };
    bnGradCoefficients(sg, sgx, P, gamma, invstd, coef);
    const dx = ctx.f32(dxI);
    parallelFor(P, (p0, p1) => bnGradApply(dy, x, y, dx, C, p0, p1, mean, coef.a, coef.b, coef.k));
    const outs = [ctx.keep(dxI), ctx.keep(dgammaI), ctx.keep(dbetaI)];
    if (dresI) outs.push(ctx.keep(dresI));
    return outs;
  } finally {
    ctx.dispose();
  }
}

export function reluGradKernel(args: KernelArgs, backendName: string): TensorInfo {
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const dyI = args.inputs.dy!;
    const yI = args.inputs.y!;
    const out = ctx.empty(dyI.shape as number[]);
    if (ctx.simd) {
      ctx.simd.run('relu_grad', sizeOf(dyI.shape), [ctx.address(dyI), ctx.address(yI), ctx.address(out)]);
      return ctx.keep(out);
    }
    const dy = ctx.f32(dyI);
    const y = ctx.f32(yI);
    const dx = ctx.f32(out);
    parallelFor(dy.length, (i0, i1) => reluGrad(dy, y, dx, i0, i1));
    return ctx.keep(out);
  } finally {
    ctx.dispose();
  }
}
