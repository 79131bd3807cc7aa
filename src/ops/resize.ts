/**
 * Bilinear resizing of NHWC tensors with PyTorch's and ONNX's sampling: half-pixel centres
 * (`interpolate(mode='bilinear', align_corners=False)`, ONNX Resize `half_pixel`) or aligned corners
 * (`align_corners=True`, MXNet's BilinearResize2D, ONNX `align_corners`).
 *
 * The forward pass is the backend's ResizeBilinear. Its gradient is zoo's kernel
 * (backend/kernels/resize.ts) on the backends whose memory JavaScript can reach: tfjs's uses the wrong
 * mapping for half-pixel centres (and tfjs-backend-cpu's returns a transposed shape for non-square
 * maps). Elsewhere tfjs's kernel serves aligned corners, and half-pixel centres have no gradient.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import { ZOO_KERNELS, hasZooKernel } from '../backend/kernels/index.js';
import type { ResizeGradAttrs } from '../backend/kernels/resize.js';
import { UserError } from '../errors.js';

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

tf.registerGradient({
  kernelName: ZOO_KERNELS.resizeBilinear,
  inputsToSave: ['images'],
  gradFunc: (dy, saved, attrs) => {
    const [images] = saved as [Tensor4D];
    const alignCorners = attrs.alignCorners as boolean;
    return {
      images: () => {
        if (!hasZooKernel(ZOO_KERNELS.resizeBilinearGrad)) {
          // tfjs's kernel is right for aligned corners (only half-pixel centres are wrong in it).
          if (alignCorners) return tf.engine().runKernel('ResizeBilinearGrad', { dy: dy as Tensor, images }, { alignCorners: true }) as Tensor;
          throw new UserError(
            `the gradient of half-pixel bilinear resizing needs the wasm or cpu backend, the active backend is '${tf.getBackend()}'`,
          );
        }
        const a: ResizeGradAttrs = { inShape: images.shape as [number, number, number, number], alignCorners };
        return tf.engine().runKernel(ZOO_KERNELS.resizeBilinearGrad, { dy: dy as Tensor }, a as unknown as NamedAttrMap) as Tensor;
      },
    };
  },
});
