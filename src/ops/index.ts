/**
 * The differentiable ops zoo's models are written with. They run zoo's kernels (src/backend/kernels)
 * where the active backend has them, and carry gradients that tfjs-core lacks or computes slowly:
 * convolution with dilation, ReLU from its output, and batch norm in closed form with the following
 * ReLU and residual add fused in.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-core';
import { ZOO_KERNELS, hasZooKernel } from '../backend/kernels/index.js';

export { roiAlign, type RoiAlignOptions } from './roi_align.js';
export { resizeBilinear, type ResizeOptions } from './resize.js';

/** Explicit padding [[top, bottom], [left, right]]. */
export type Padding2D = [[number, number], [number, number]];

export interface Conv2DOptions {
  strides?: number | [number, number];
  /** A number pads every side; 'same' pads as TensorFlow does (more at the end when odd). */
  pad?: number | Padding2D | 'same' | 'valid';
  dilations?: number | [number, number];
}

function pair(v: number | [number, number] | undefined, d: number): [number, number] {
  if (v === undefined) return [d, d];
  return typeof v === 'number' ? [v, v] : v;
}

function explicitPad(pad: Conv2DOptions['pad']): 'same' | 'valid' | [[0, 0], [number, number], [number, number], [0, 0]] {
  if (pad === undefined) return 'valid';
  if (pad === 'same' || pad === 'valid') return pad;
  if (typeof pad === 'number') return [[0, 0], [pad, pad], [pad, pad], [0, 0]];
  return [[0, 0], pad[0], pad[1], [0, 0]];
}

/** 2-D convolution, NHWC input and [kh, kw, in, out] filter, with gradients for any dilation. */
export function conv2d(x: Tensor4D, filter: Tensor4D, options: Conv2DOptions = {}): Tensor4D {
  const attrs = {
    strides: pair(options.strides, 1),
    pad: explicitPad(options.pad),
    dilations: pair(options.dilations, 1),
    dataFormat: 'NHWC',
    dimRoundingMode: undefined,
  };
  return tf.engine().runKernel(ZOO_KERNELS.conv2d, { x, filter }, attrs as unknown as NamedAttrMap) as Tensor4D;
}

tf.registerGradient({
  kernelName: ZOO_KERNELS.conv2d,
  inputsToSave: ['x', 'filter'],
  gradFunc: (dy, saved, attrs) => {
    const [x, filter] = saved as [Tensor4D, Tensor4D];
    return {
      x: () =>
        tf.engine().runKernel(ZOO_KERNELS.conv2dBackpropInput, { dy: dy as Tensor, filter }, {
          ...attrs,
          inputShape: x.shape,
        } as unknown as NamedAttrMap) as Tensor,
      filter: () =>
        tf.engine().runKernel(ZOO_KERNELS.conv2dBackpropFilter, { x, dy: dy as Tensor }, {
          ...attrs,
          filterShape: filter.shape,
        } as unknown as NamedAttrMap) as Tensor,
    };
  },
});

/** ReLU whose gradient is one fused pass over the saved output. */
export function relu<T extends Tensor>(x: T): T {
  return tf.engine().runKernel(ZOO_KERNELS.relu, { x }) as T;
}

tf.registerGradient({
  kernelName: ZOO_KERNELS.relu,
  outputsToSave: [true],
  gradFunc: (dy, saved) => {
    const [y] = saved as [Tensor];
    return { x: () => tf.engine().runKernel(ZOO_KERNELS.reluGrad, { dy: dy as Tensor, y }) as Tensor };
  },
});

export interface BatchNormTrainOptions {
  epsilon: number;
  /** Apply ReLU to the result. */
  relu?: boolean;
  /** Added before the ReLU (the shortcut of a residual block). */
  residual?: Tensor;
}

export interface BatchNormTrainResult<T extends Tensor> {
  y: T;
  /** Batch mean per channel (no gradient flows back through it). */
  mean: Tensor1D;
  /** 1 / sqrt(batch variance + epsilon) per channel (biased variance, as used for normalizing). */
  invstd: Tensor1D;
}

/**
 * Batch normalization with batch statistics over all axes but the last (channels), optionally
 * followed by a residual add and ReLU: y = relu?((x - mean) * invstd * gamma + beta + residual?).
 */
export function batchNormTrain<T extends Tensor>(
  x: T,
  gamma: Tensor1D,
  beta: Tensor1D,
  options: BatchNormTrainOptions,
): BatchNormTrainResult<T> {
  const relu = options.relu ?? false;
  const hasResidual = options.residual !== undefined;
  if (hasZooKernel(ZOO_KERNELS.batchNormTrain)) {
    const inputs: Record<string, Tensor> = { x, gamma, beta };
    if (options.residual) inputs.residual = options.residual;
    const [y, mean, invstd] = tf.engine().runKernel(ZOO_KERNELS.batchNormTrain, inputs, {
      epsilon: options.epsilon,
      relu,
      hasResidual,
    }) as [T, Tensor1D, Tensor1D];
    return { y, mean, invstd };
  }
  return batchNormTrainComposed(x, gamma, beta, options);
}

/** The same computation from core ops (any backend); tfjs derives its gradient op by op. */
export function batchNormTrainComposed<T extends Tensor>(
  x: T,
  gamma: Tensor1D,
  beta: Tensor1D,
  options: BatchNormTrainOptions,
): BatchNormTrainResult<T> {
  const axes = x.shape.map((_, i) => i).slice(0, -1);
  const { mean, variance } = tf.moments(x, axes);
  const invstd = tf.rsqrt(tf.add(variance, options.epsilon)) as Tensor1D;
  let y: Tensor = tf.add(tf.mul(tf.mul(tf.sub(x, mean), invstd), gamma), beta);
  if (options.residual) y = tf.add(y, options.residual);
  if (options.relu) y = tf.relu(y);
  return { y: y as T, mean: mean as Tensor1D, invstd };
}

tf.registerGradient({
  kernelName: ZOO_KERNELS.batchNormTrain,
  inputsToSave: ['x', 'gamma'],
  outputsToSave: [true, true, true],
  gradFunc: (dys, saved, attrs) => {
    const [x, gamma, y, mean, invstd] = saved as Tensor[];
    const dy = Array.isArray(dys) ? dys[0]! : dys;
    const { relu, hasResidual } = attrs as unknown as { relu: boolean; hasResidual: boolean };
    const inputs: Record<string, Tensor> = { dy, x: x!, gamma: gamma!, mean: mean!, invstd: invstd! };
    if (relu) inputs.y = y!;
    const outs = tf.engine().runKernel(ZOO_KERNELS.batchNormTrainGrad, inputs, attrs) as Tensor[];
    const grads: Record<string, () => Tensor> = {
      x: () => outs[0]!,
      gamma: () => outs[1]!,
      beta: () => outs[2]!,
    };
    if (hasResidual) grads.residual = () => outs[3]!;
    return grads;
  },
});

/** Batch norm with fixed statistics (inference, or fine-tuning with frozen statistics). */
export function batchNormAffine<T extends Tensor>(
  x: T,
  scale: Tensor1D,
  shift: Tensor1D,
  options: { relu?: boolean; residual?: Tensor } = {},
): T {
  let y: Tensor = tf.add(tf.mul(x, scale), shift);
  if (options.residual) y = tf.add(y, options.residual);
  if (options.relu) y = relu(y);
  return y as T;
}

export interface Pool2DOptions {
  filterSize: number | [number, number];
  strides: number | [number, number];
  /** 'same' pads as TensorFlow (the divisor of average pooling counts only positions inside). */
  pad: 'valid' | 'same' | number;
}

/** Max pooling whose gradient goes to the first maximum of each window. */
export function maxPool(x: Tensor4D, options: Pool2DOptions): Tensor4D {
  return tf.engine().runKernel(ZOO_KERNELS.maxPool, { x }, { ...options, dimRoundingMode: undefined } as unknown as NamedAttrMap) as Tensor4D;
}

tf.registerGradient({
  kernelName: ZOO_KERNELS.maxPool,
  inputsToSave: ['x'],
  outputsToSave: [true],
  gradFunc: (dy, saved, attrs) => {
    const [x, y] = saved as [Tensor4D, Tensor4D];
    return { x: () => tf.engine().runKernel(ZOO_KERNELS.maxPoolGrad, { dy: dy as Tensor, x, y }, attrs) as Tensor };
  },
});

/** Average pooling whose gradient uses the same divisor as the forward pass. */
export function avgPool(x: Tensor4D, options: Pool2DOptions): Tensor4D {
  return tf.engine().runKernel(ZOO_KERNELS.avgPool, { x }, { ...options, dimRoundingMode: undefined } as unknown as NamedAttrMap) as Tensor4D;
}

tf.registerGradient({
  kernelName: ZOO_KERNELS.avgPool,
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved as [Tensor4D];
    return { x: () => tf.engine().runKernel(ZOO_KERNELS.avgPoolGrad, { dy: dy as Tensor, x }, attrs) as Tensor };
  },
});
