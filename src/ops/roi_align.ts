/**
 * RoIAlign over NHWC feature maps, as ONNX RoiAlign-16 (mode "avg") and torchvision's roi_align
 * compute it, with the gradient to the features.
 *
 * On the wasm and cpu backends it runs zoo's kernel (backend/kernels/roi_align.ts), which reads
 * tensor memory directly. Elsewhere (WebGPU) it is composed from tfjs-core ops with the same
 * sampling (roiAlignComposed): a bin's bilinear samples are separable, so the bins of one box are
 * W_y F W_x^T for two small weight matrices per box, made from the boxes as tensors. The composed
 * form needs a fixed number of samples per bin (samplingRatio > 0): the adaptive count depends on
 * each box's size, which would have to be read back from the device.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradSaveFunc, NamedAttrMap, Tensor, Tensor1D, Tensor2D, Tensor3D, Tensor4D } from '@tensorflow/tfjs-core';
import { ZOO_KERNELS, hasZooKernel } from '../backend/kernels/index.js';
import type { RoiAlignGradAttrs } from '../backend/kernels/roi_align.js';
import { maxBindingBytes, maxWorkgroupsPerDimension } from '../backend/webgpu.js';
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

function checkInputs(features: Tensor4D, boxes: Tensor2D, boxIndices: Tensor1D, options: RoiAlignOptions): void {
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
}

/**
 * Average-pooled bilinear crops of `features` ([N, H, W, C]), one per box, as [R, ph, pw, C].
 * `boxes` [R, 4] are x1, y1, x2, y2 in input pixels (multiplied by spatialScale), `boxIndices` [R]
 * (int32) the image of each box. The gradient flows to the features only.
 */
export function roiAlign(features: Tensor4D, boxes: Tensor2D, boxIndices: Tensor1D, options: RoiAlignOptions): Tensor4D {
  checkInputs(features, boxes, boxIndices, options);
  if (!hasZooKernel(ZOO_KERNELS.roiAlign)) return composed(features, boxes, boxIndices, options, {});
  const [N, H, W] = features.shape;
  const [ph, pw] = options.outputSize;
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

/** Limits of the composed RoIAlign (tests set them to exercise the split). */
export interface RoiAlignComposedLimits {
  /**
   * Largest intermediate tensor in bytes ([boxes x ph, W x C], the bins' rows sampled across the
   * whole width): boxes are processed in groups that stay below it. Default: the WebGPU device's
   * storage-buffer binding limit when WebGPU is the active backend, else no limit.
   */
  maxBytes?: number;
}

/**
 * RoIAlign composed from tfjs-core ops (any backend), the same computation as the kernel that
 * `roiAlign` runs on wasm and cpu, for a fixed samplingRatio > 0.
 *
 * Along one axis, a bin's samples and their bilinear weights depend only on the box's extent on that
 * axis, and a sample reads nothing when its y or its x falls outside, so a bin is
 * sum over (y, x) of wy(y) wx(x) F[y, x]: the box's output is Wy F Wx^T with Wy [ph, H] and
 * Wx [pw, W] (each sample's two bilinear taps, summed per bin, divided by the samples per side). The
 * sample coordinates are computed in float32 step by step as the kernel computes them, so bins and
 * border decisions agree; the sums run in float32 (the kernel's in float64), which differs in the last
 * bits. Wy is spread over the batch ([R ph, N H], zero outside the box's image), so the rows of every
 * box come from one matrix product with the features as [N H, W C]; then each bin row is contracted
 * with its box's Wx. The gradient is the transposed products (no gradient to the boxes, as the kernel).
 *
 * A box index outside the batch reads zeros here (the kernel refuses it; checking would need a read).
 */
export function roiAlignComposed(features: Tensor4D, boxes: Tensor2D, boxIndices: Tensor1D, options: RoiAlignOptions, limits: RoiAlignComposedLimits = {}): Tensor4D {
  checkInputs(features, boxes, boxIndices, options);
  return composed(features, boxes, boxIndices, options, limits);
}

/**
 * Throws a UserError when RoIAlign with these options cannot run on the active backend: adaptive
 * sampling (samplingRatio 0) without zoo's kernel. Detection runs call it before they start.
 */
export function checkRoiAlignBackend(options: Pick<RoiAlignOptions, 'samplingRatio'>): void {
  if (options.samplingRatio === 0 && !hasZooKernel(ZOO_KERNELS.roiAlign)) throw adaptiveError();
}

function adaptiveError(): UserError {
  return new UserError(
    `RoIAlign with samplingRatio 0 (samples per bin from each box's size) needs the wasm or cpu backend, the active backend is '${tf.getBackend()}': ` +
      "give a fixed samplingRatio (zoo's detectors use 2, as GluonCV's), or use --backend wasm",
  );
}

function composed(features: Tensor4D, boxes: Tensor2D, boxIndices: Tensor1D, o: RoiAlignOptions, limits: RoiAlignComposedLimits): Tensor4D {
  // Without the kernel the number of samples per bin must be known without reading the boxes.
  if (o.samplingRatio === 0) throw adaptiveError();
  const [N, H, W, C] = features.shape;
  const R = boxes.shape[0];
  const [PH, PW] = o.outputSize;
  const maxBytes = limits.maxBytes ?? (tf.getBackend() === 'webgpu' ? maxBindingBytes() : undefined);
  // Boxes per group: the rows of a group's bins across the width, [group x PH, W x C], fit in maxBytes.
  // And a group's batched product (group x PH matrices) stays within one dispatch's workgroup count.
  const maxDispatch = tf.getBackend() === 'webgpu' ? maxWorkgroupsPerDimension() : undefined;
  const byBytes = maxBytes === undefined ? R : Math.max(1, Math.floor(maxBytes / (4 * PH * W * C)));
  const group = Math.min(byBytes, maxDispatch === undefined ? R : Math.max(1, Math.floor(maxDispatch / PH)));
  const f = tf.customGrad(((x: Tensor, b: Tensor, idx: Tensor, save: GradSaveFunc) => {
    const zeros = () => [tf.zerosLike(b), tf.zeros(idx.shape)];
    if (R === 0 || C === 0) return { value: tf.zeros([R, PH, PW, C]), gradFunc: () => [tf.zeros([N, H, W, C]), ...zeros()] };
    const [rows, cols] = tf.tidy(() => {
      const [x1, y1, x2, y2] = tf.split(b, 4, 1) as Tensor2D[];
      const wy = axisWeights(y1!, y2!, PH, H, o);
      const wx = axisWeights(x1!, x2!, PW, W, o);
      // rows [R PH, N H]: Wy of each box placed at its image's rows; cols [R PH, PW, W]: Wx once per bin row.
      const image = tf.cast(tf.equal(tf.expandDims(idx, 1), tf.range(0, N, 1, 'int32')), 'float32');
      const r = tf.reshape(tf.mul(tf.expandDims(wy, 2), tf.reshape(image, [R, 1, N, 1])), [R * PH, N * H]);
      const c = tf.reshape(tf.tile(tf.expandDims(wx, 1), [1, PH, 1, 1]), [R * PH, PW, W]);
      return [r, c];
    });
    save([rows, cols]);
    const value = tf.tidy(() => {
      const flat = tf.reshape(x, [N * H, W * C]);
      const parts: Tensor[] = [];
      for (let r0 = 0; r0 < R; r0 += group) {
        const n = Math.min(group, R - r0) * PH;
        const sampled = tf.matMul(tf.slice(rows, [r0 * PH, 0], [n, N * H]), flat);
        parts.push(tf.matMul(tf.slice(cols, [r0 * PH, 0, 0], [n, PW, W]), tf.reshape(sampled, [n, W, C])));
      }
      return tf.reshape(parts.length === 1 ? parts[0]! : tf.concat(parts, 0), [R, PH, PW, C]);
    });
    tf.dispose([rows, cols]);
    return {
      value,
      gradFunc: (dy: Tensor, saved: Tensor[]) =>
        tf.tidy(() => {
          const [sr, sc] = saved as [Tensor2D, Tensor3D];
          const g = tf.reshape(dy, [R * PH, PW, C]);
          let dx: Tensor | undefined;
          for (let r0 = 0; r0 < R; r0 += group) {
            const n = Math.min(group, R - r0) * PH;
            const dSampled = tf.matMul(tf.slice(sc, [r0 * PH, 0, 0], [n, PW, W]), tf.slice(g, [r0 * PH, 0, 0], [n, PW, C]), true, false);
            const part = tf.matMul(tf.slice(sr, [r0 * PH, 0], [n, N * H]), tf.reshape(dSampled, [n, W * C]), true, false);
            dx = dx ? tf.add(dx, part) : part;
          }
          return [tf.reshape(dx!, [N, H, W, C]), ...zeros()];
        }),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(features, boxes, boxIndices) as Tensor4D;
}

/**
 * The bins' weights along one axis of every box, [R, bins, size]: the bilinear weights of each bin's
 * samples on the pixels of an axis of length `size`, summed and divided by the samples per bin.
 * `lo` and `hi` [R, 1] are the box's ends in input pixels. Step by step as the kernel's axisSampling
 * and axisTaps, in float32: a sample at t < -1 or t > size reads nothing; t <= 0 reads pixel 0; at
 * or beyond size - 1 it reads pixel size - 1 alone.
 */
function axisWeights(lo: Tensor2D, hi: Tensor2D, bins: number, size: number, o: RoiAlignOptions): Tensor3D {
  const grid = o.samplingRatio;
  const offset = o.aligned ? 0.5 : 0;
  const scale = tf.scalar(o.spatialScale);
  const start = tf.sub(tf.mul(lo, scale), offset);
  let extent = tf.sub(tf.sub(tf.mul(hi, scale), offset), start);
  if (!o.aligned) extent = tf.maximum(extent, 1);
  const bin = tf.div(extent, bins);
  // [R, bins]: where each bin starts; [R, grid]: where its samples sit in it.
  const base = tf.add(start, tf.mul(bin, tf.range(0, bins, 1, 'float32')));
  const within = tf.div(tf.mul(bin, tf.tensor1d(Array.from({ length: grid }, (_, k) => k + 0.5))), grid);
  const t = tf.add(tf.expandDims(base, 2), tf.expandDims(within, 1));
  const reads = tf.cast(tf.logicalAnd(tf.greaterEqual(t, -1), tf.lessEqual(t, size)), 'float32');
  const tc = tf.maximum(t, 0);
  const floor = tf.floor(tc);
  const low = tf.minimum(floor, size - 1);
  const high = tf.minimum(tf.add(floor, 1), size - 1);
  // At the last pixel the sample is moved onto it: its whole weight is on `low`.
  const l = tf.mul(tf.sub(tc, low), tf.cast(tf.less(floor, size - 1), 'float32'));
  const h = tf.sub(1, l);
  const pixels = tf.range(0, size, 1, 'float32');
  const on = (index: Tensor, weight: Tensor) => tf.mul(tf.cast(tf.equal(tf.expandDims(index, 3), pixels), 'float32'), tf.expandDims(tf.mul(weight, reads), 3));
  return tf.div(tf.sum(tf.add(on(low, h), on(high, l)), 2), grid) as Tensor3D;
}
