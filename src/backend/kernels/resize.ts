/**
 * The gradient of bilinear resizing (half-pixel centres or aligned corners), for backends whose tensor
 * memory JavaScript can reach (wasm, cpu). tfjs's own ResizeBilinearGrad ignores `halfPixelCenters` (it
 * always back-projects with the legacy asymmetric mapping), so the gradient of PyTorch's
 * `interpolate(mode='bilinear', align_corners=False)` / ONNX Resize `half_pixel` needs this one.
 *
 * ZooResizeBilinearGrad  inputs dy [N, H, W, C]
 *                        attrs inShape [N, h, w, C], alignCorners
 *                        output dx [N, h, w, C]: each output pixel's gradient added to the four
 *                        input pixels it interpolated, with the same weights.
 *
 * Source coordinates follow PyTorch's upsample_bilinear2d and ONNX Resize (linear): with
 * half-pixel centres src = (dst + 0.5) * in / out - 0.5, clamped below at 0; with aligned corners
 * src = dst * (in - 1) / (out - 1). The lower tap is floor(src), the upper one the next pixel
 * (the last pixel at the border), weighted by src - floor(src).
 */
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from './context.js';

export interface ResizeGradAttrs {
  inShape: [number, number, number, number];
  alignCorners: boolean;
}

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };

/** Interpolation taps along one axis: for output i, pixels lo[i], hi[i] with weights 1 - t[i], t[i]. */
export interface ResizeTaps {
  lo: Int32Array;
  hi: Int32Array;
  t: Float32Array;
}

export function resizeTaps(inSize: number, outSize: number, alignCorners: boolean): ResizeTaps {
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const t = new Float32Array(outSize);
  const scale = alignCorners ? (outSize > 1 ? (inSize - 1) / (outSize - 1) : 0) : inSize / outSize;
  for (let i = 0; i < outSize; i++) {
    let src = alignCorners ? i * scale : (i + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    let l = Math.floor(src);
    if (l > inSize - 1) l = inSize - 1;
    lo[i] = l;
    hi[i] = l < inSize - 1 ? l + 1 : l;
    t[i] = l < inSize - 1 ? src - l : 0;
  }
  return { lo, hi, t };
}

export function resizeBilinearGradKernel(args: KernelArgs, backendName: string): TensorInfo {
  const { inShape, alignCorners } = args.attrs as unknown as ResizeGradAttrs;
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const dyI = args.inputs.dy!;
    const [N, H, W, C] = dyI.shape as [number, number, number, number];
    const [, h, w] = inShape;
    const dxI = ctx.empty([...inShape]);
    if (sizeOf(inShape) === 0) return ctx.keep(dxI);
    const dx = ctx.f32(dxI);
    dx.fill(0);
    if (sizeOf(dyI.shape) === 0) return ctx.keep(dxI);
    const dy = ctx.f32(dyI);
    const ty = resizeTaps(h, H, alignCorners);
    const tx = resizeTaps(w, W, alignCorners);
    for (let n = 0; n < N; n++) {
      const inBase = n * h * w * C;
      for (let oy = 0; oy < H; oy++) {
        const wy1 = ty.t[oy]!;
        const wy0 = 1 - wy1;
        const r0 = inBase + ty.lo[oy]! * w * C;
        const r1 = inBase + ty.hi[oy]! * w * C;
        let o = ((n * H + oy) * W) * C;
        for (let ox = 0; ox < W; ox++, o += C) {
          const wx1 = tx.t[ox]!;
          const wx0 = 1 - wx1;
          const a = r0 + tx.lo[ox]! * C;
          const b = r0 + tx.hi[ox]! * C;
          const c = r1 + tx.lo[ox]! * C;
          const d = r1 + tx.hi[ox]! * C;
          const w00 = wy0 * wx0;
          const w01 = wy0 * wx1;
          const w10 = wy1 * wx0;
          const w11 = wy1 * wx1;
          for (let k = 0; k < C; k++) {
            const g = dy[o + k]!;
            dx[a + k] += g * w00;
            dx[b + k] += g * w01;
            dx[c + k] += g * w10;
            dx[d + k] += g * w11;
          }
        }
      }
    }
    return ctx.keep(dxI);
  } finally {
    ctx.dispose();
  }
}
