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

export function batchNormTrainKernel(args: KernelArgs, backendName: string): TensorInfo[] {
  const { epsilon, relu, hasResidual } = args.attrs as unknown as BatchNormAttrs;
  const ctx = new KernelContext(args.backend, backendName);
  try {
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
  const { relu, hasResidual } = args.attrs as unknown as BatchNormAttrs;
  const ctx = new KernelContext(args.backend, backendName);
  try {
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
    const dy = ctx.f32(dyI);
    const y = ctx.f32(yI);
    const dx = ctx.f32(out);
    parallelFor(dy.length, (i0, i1) => reluGrad(dy, y, dx, i0, i1));
    return ctx.keep(out);
  } finally {
    ctx.dispose();
  }
}
