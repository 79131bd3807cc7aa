/**
 * RoIAlign over NHWC feature maps, as ONNX RoiAlign-16 (mode "avg") and torchvision's roi_align
 * compute it, with the gradient to the features. It runs zoo's kernel (backend/kernels/roi_align.ts),
 * which needs direct access to tensor memory: the wasm or cpu backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { ZOO_KERNELS, hasZooKernel } from '../backend/kernels/index.js';
import type { RoiAlignGradAttrs } from '../backend/kernels/roi_align.js';
import { UserError } from '../errors.js';

export interface RoiAlignOptions {
  /** Bins per box, [height, width] (14 x 14 before the C4 head). */
  outputSize: [number, number];
  /** Feature pixels per input pixel (1/16 for a stride-16 trunk). */
  spatialScale: number;
  /** Samples per bin side; 0 adapts to the box: ceil(bin size in feature pixels). */
  samplingRatio: number;
  /**
   * true: pixel centres at half-integers, boxes shifted by -0.5 and taken as they are (ONNX
   * coordinate_transformation_mode "half_pixel", torchvision aligned=True). false: the legacy
   * sampling, boxes unshifted and at least one feature pixel per side (ONNX "output_half_pixel",
   * MXNet/GluonCV ROIAlign, Detectron).
   */
  aligned: boolean;
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new Error(`roiAlign: ${message}`);
}

/**
 * Average-pooled bilinear crops of `features` ([N, H, W, C]), one per box, as [R, ph, pw, C].
 * `boxes` [R, 4] are x1, y1, x2, y2 in input pixels (multiplied by spatialScale), `boxIndices` [R]
 * (int32) the image of each box. The gradient flows to the features only.
 */
export function roiAlign(features: Tensor4D, boxes: Tensor2D, boxIndices: Tensor1D, options: RoiAlignOptions): Tensor4D {
  check(features.rank === 4, `features must be NHWC [N, H, W, C], got shape [${features.shape}]`);
  check(features.dtype === 'float32', `features must be float32, got ${features.dtype}`);
  const [N, H, W] = features.shape;
  check(N > 0 && H > 0 && W > 0, `features must have a non-empty batch, height and width, got shape [${features.shape}]`);
  check(boxes.rank === 2 && boxes.shape[1] === 4, `boxes must be [R, 4] (x1, y1, x2, y2), got shape [${boxes.shape}]`);
  check(boxes.dtype === 'float32', `boxes must be float32, got ${boxes.dtype}`);
  check(boxIndices.rank === 1, `boxIndices must be [R], got shape [${boxIndices.shape}]`);
  check(boxIndices.dtype === 'int32', `boxIndices must be int32, got ${boxIndices.dtype}`);
  check(
    boxIndices.shape[0] === boxes.shape[0],
    `boxIndices [${boxIndices.shape}] must have one entry per box of boxes [${boxes.shape}]`,
  );
  const [ph, pw] = options.outputSize;
  check(Number.isInteger(ph) && Number.isInteger(pw) && ph > 0 && pw > 0, `outputSize must be two positive integers, got [${options.outputSize}]`);
  check(Number.isFinite(options.spatialScale) && options.spatialScale > 0, `spatialScale must be a positive number, got ${options.spatialScale}`);
  check(Number.isInteger(options.samplingRatio) && options.samplingRatio >= 0, `samplingRatio must be an integer >= 0, got ${options.samplingRatio}`);
  if (!hasZooKernel(ZOO_KERNELS.roiAlign)) {
    throw new UserError(
      `RoIAlign needs the wasm or cpu backend, the active backend is '${tf.getBackend()}' (--backend wasm, or initBackend({ backend: 'wasm' }))`,
    );
  }
  const attrs: RoiAlignGradAttrs = {
    outputHeight: ph,
    outputWidth: pw,
    spatialScale: options.spatialScale,
    samplingRatio: options.samplingRatio,
    aligned: options.aligned,
    // The gradient needs only the shape of the features, not their values.
    featuresShape: [N, H, W, features.shape[3]],
  };
  return tf.engine().runKernel(ZOO_KERNELS.roiAlign, { features, boxes, boxIndices }, attrs as unknown as NamedAttrMap) as Tensor4D;
}

tf.registerGradient({
  kernelName: ZOO_KERNELS.roiAlign,
  inputsToSave: ['boxes', 'boxIndices'],
  gradFunc: (dy, saved, attrs) => {
    const [boxes, boxIndices] = saved as [Tensor2D, Tensor1D];
    return {
      features: () => tf.engine().runKernel(ZOO_KERNELS.roiAlignGrad, { dy: dy as Tensor, boxes, boxIndices }, attrs) as Tensor,
      // Boxes come from proposals or sampled targets: no gradient flows to them (as in torchvision).
      boxes: () => tf.zerosLike(boxes),
      boxIndices: () => tf.zeros(boxIndices.shape),
    };
  },
});
