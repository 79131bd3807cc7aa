/**
 * Bilinear resizing of NHWC tensors with PyTorch's and ONNX's sampling: half-pixel centres
 * (`interpolate(mode='bilinear', align_corners=False)`, ONNX Resize `half_pixel`) or aligned corners
 * (`align_corners=True`, MXNet's BilinearResize2D, ONNX `align_corners`).
 *
 * The forward pass is the backend's ResizeBilinear. Its gradient is zoo's kernel
 * (backend/kernels/resize.ts) on the backends whose memory JavaScript can reach: tfjs's uses the wrong
 * mapping for half-pixel centres (and tfjs-backend-cpu's returns a transposed shape for non-square
 * maps). Elsewhere (WebGPU) it is composed from two matrix products: bilinear resizing is separable,
 * Y[n, :, :, c] = Ry X[n, :, :, c] Rx^T with interpolation matrices Ry [H, h] and Rx [W, w] fixed by the
 * sizes, so dX = Ry^T dY Rx, the same taps and weights as zoo's kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import { ZOO_KERNELS, hasZooKernel } from '../backend/kernels/index.js';
import { resizeTaps, type ResizeGradAttrs } from '../backend/kernels/resize.js';

export interface ResizeOptions {
  /** true: corners of input and output coincide; false: half-pixel centres (torchvision's FCN). */
  alignCorners: boolean;
}

/** `x` [N, h, w, C] resized bilinearly to [N, height, width, C]. */
export function resizeBilinear(x: Tensor4D, size: [number, number], options: ResizeOptions): Tensor4D {
  if (x.rank !== 4) throw new Error(`resizeBilinear: x must be NHWC [N, H, W, C], got shape [${x.shape}]`);
  const [height, width] = size;
  if (!(Number.isInteger(height) && Number.isInteger(width) && height > 0 && width > 0)) {
    throw new Error(`resizeBilinear: size must be two positive integers, got [${size}]`);
  }
  if (x.shape[1] === height && x.shape[2] === width) return tf.clone(x);
  const attrs = { size: [height, width], alignCorners: options.alignCorners, halfPixelCenters: !options.alignCorners };
  return tf.engine().runKernel(ZOO_KERNELS.resizeBilinear, { images: x }, attrs as unknown as NamedAttrMap) as Tensor4D;
}

/**
 * The transposed interpolation matrix of one axis, [inSize, outSize] row-major: entry (a, i) is the weight
 * of input pixel a in output pixel i (each column holds the two taps of resizeTaps, summed where they meet).
 */
export function resizeMatrixT(inSize: number, outSize: number, alignCorners: boolean): Float32Array {
  const { lo, hi, t } = resizeTaps(inSize, outSize, alignCorners);
  const m = new Float32Array(inSize * outSize);
  for (let i = 0; i < outSize; i++) {
    m[lo[i]! * outSize + i] += 1 - t[i]!;
    m[hi[i]! * outSize + i] += t[i]!;
  }
  return m;
}

/**
 * The gradient of resizeBilinear composed from core ops, for any backend: dy [N, H, W, C] to
 * dx [N, h, w, C] = Ry^T dy Rx per image and channel, as two batched matrix products over reshapes (no
 * transposes): first along the height (Ry^T [h, H] against dy as [N, H, W * C]), then along the width
 * (Rx^T [w, W] against the result as [N * h, W, C]). The matrices are dense, so this does
 * N h H W C + N h w W C multiply-adds where the taps need 4 N H W C: cheap on a GPU, slow on a CPU,
 * where zoo's kernel serves.
 */
export function resizeBilinearGradComposed(dy: Tensor4D, inShape: [number, number, number, number], alignCorners: boolean): Tensor4D {
  const [N, H, W, C] = dy.shape;
  const [, h, w] = inShape;
  return tf.tidy(() => {
    const ryT = tf.tensor3d(resizeMatrixT(h, H, alignCorners), [1, h, H]);
    const rxT = tf.tensor3d(resizeMatrixT(w, W, alignCorners), [1, w, W]);
    const rows = tf.matMul(ryT, tf.reshape(dy, [N, H, W * C]));
    const dx = tf.matMul(rxT, tf.reshape(rows, [N * h, W, C]));
    return tf.reshape(dx, [N, h, w, C]);
  });
}

tf.registerGradient({
  kernelName: ZOO_KERNELS.resizeBilinear,
  inputsToSave: ['images'],
  gradFunc: (dy, saved, attrs) => {
    const [images] = saved as [Tensor4D];
    const inShape = images.shape as [number, number, number, number];
    const alignCorners = attrs.alignCorners as boolean;
    return {
      images: () => {
        if (!hasZooKernel(ZOO_KERNELS.resizeBilinearGrad)) return resizeBilinearGradComposed(dy as Tensor4D, inShape, alignCorners);
        const a: ResizeGradAttrs = { inShape, alignCorners };
        return tf.engine().runKernel(ZOO_KERNELS.resizeBilinearGrad, { dy: dy as Tensor }, a as unknown as NamedAttrMap) as Tensor;
      },
    };
  },
});
