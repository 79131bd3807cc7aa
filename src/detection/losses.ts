/**
 * Faster R-CNN's four loss terms, over dense masks built from the sampled targets (targets.ts), so
 * that no gather needs a gradient:
 *
 *   rpn_cls   binary cross-entropy of the objectness logits over the sampled anchors, mean over them
 *   rpn_box   smooth L1 (beta 1/9, GluonCV) of the positive anchors' deltas, summed, / sampled anchors
 *   rcnn_cls  softmax cross-entropy over the sampled regions (0 = background), mean
 *   rcnn_box  smooth L1 (beta 1) of the positive regions' deltas of their own class, summed, / regions
 *
 * the normalization of GluonCV and torchvision.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Scalar, Tensor, Tensor2D } from '@tensorflow/tfjs-core';

/**
 * Elementwise smooth L1: 0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere; written as
 * 0.5 m^2 / beta + (|d| - m) with m = min(|d|, beta), which is the same and differentiable without a mask.
 */
export function smoothL1(d: Tensor, beta: number): Tensor {
  const a = tf.abs(d);
  if (beta === 0) return a;
  const m = tf.minimum(a, beta);
  return tf.add(tf.mul(tf.square(m), 0.5 / beta), tf.sub(a, m));
}

/** Binary cross-entropy with logits, elementwise, in the stable form max(x, 0) - x y + log(1 + e^-|x|). */
export function bceWithLogits(x: Tensor, y: Tensor): Tensor {
  return tf.add(tf.sub(tf.relu(x), tf.mul(x, y)), tf.log1p(tf.exp(tf.neg(tf.abs(x)))));
}

export interface RpnLossTargets {
  /** [M] 1 positive, 0 negative (M = images x anchors). */
  labels: Float32Array;
  /** [M] 1 where the anchor was sampled. */
  sampled: Float32Array;
  /** [M, 4] deltas of positives; [M, 4] 1 where positive. */
  deltas: Float32Array;
  positive4: Float32Array;
  /** Sampled anchors (the normalizer). */
  count: number;
}

/** RPN terms from logits [M] and deltas [M, 4]. */
export function rpnLoss(logits: Tensor, deltas: Tensor, t: RpnLossTargets, beta: number): { cls: Scalar; box: Scalar } {
  const M = t.labels.length;
  const norm = Math.max(t.count, 1);
  const cls = tf.div(tf.sum(tf.mul(bceWithLogits(tf.reshape(logits, [M]), tf.tensor1d(t.labels)), tf.tensor1d(t.sampled))), norm) as Scalar;
  const box = tf.div(tf.sum(tf.mul(smoothL1(tf.sub(tf.reshape(deltas, [M, 4]), tf.tensor2d(t.deltas, [M, 4])), beta), tf.tensor2d(t.positive4, [M, 4]))), norm) as Scalar;
  return { cls, box };
}

export interface RoiLossTargets {
  /** [S] 0 = background, 1..C. */
  labels: Int32Array;
  /** [S, 4C]: each positive region's deltas in its class's four columns, zeros elsewhere; and the mask. */
  deltas: Float32Array;
  mask: Float32Array;
}

/** Box-head terms from class logits [S, C+1] and deltas [S, 4C]. */
export function roiLoss(classLogits: Tensor2D, deltas: Tensor2D, t: RoiLossTargets, beta: number): { cls: Scalar; box: Scalar } {
  const [S, K] = classLogits.shape;
  const onehot = tf.oneHot(tf.tensor1d(t.labels, 'int32'), K);
  const cls = tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(classLogits), onehot), 1))) as Scalar;
  const W = deltas.shape[1];
  const box = tf.div(tf.sum(tf.mul(smoothL1(tf.sub(deltas, tf.tensor2d(t.deltas, [S, W])), beta), tf.tensor2d(t.mask, [S, W]))), Math.max(S, 1)) as Scalar;
  return { cls, box };
}

/** Places each region's target deltas [S, 4] in the columns of its class: [S, 4C] deltas and mask. */
export function classColumns(labels: Int32Array, deltas: Float32Array, numClasses: number): { deltas: Float32Array; mask: Float32Array } {
  const S = labels.length;
  const W = 4 * numClasses;
  const d = new Float32Array(S * W);
  const m = new Float32Array(S * W);
  for (let s = 0; s < S; s++) {
    const c = labels[s]!;
    if (c <= 0) continue;
    for (let k = 0; k < 4; k++) {
      d[s * W + 4 * (c - 1) + k] = deltas[4 * s + k]!;
      m[s * W + 4 * (c - 1) + k] = 1;
    }
  }
  return { deltas: d, mask: m };
}
