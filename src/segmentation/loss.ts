/**
 * The FCN's training loss: per-pixel softmax cross-entropy over the labeled pixels, averaged over them
 * (PyTorch's `cross_entropy(ignore_index=...)`, GluonCV's MixSoftmaxCrossEntropyLoss), plus the
 * auxiliary head's with its weight (0.5). Label 0 (unlabeled, and the padding of a crop) adds nothing
 * to the loss or to its gradient.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Scalar, Tensor4D } from '@tensorflow/tfjs-core';

/**
 * Mean cross-entropy of logits [N, H, W, K] against labels [N * H * W] in the label encoding (0 ignored,
 * v = class v - 1). A batch without a labeled pixel has loss 0 (and no gradient).
 */
export function pixelCrossEntropy(logits: Tensor4D, labels: Uint8Array | Uint16Array | Int32Array): Scalar {
  const [N, H, W, K] = logits.shape;
  if (labels.length !== N * H * W) throw new Error(`labels hold ${labels.length} values for ${N}x${H}x${W} logits`);
  const index = new Int32Array(labels.length);
  const mask = new Float32Array(labels.length);
  let count = 0;
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i]!;
    if (v === 0) continue;
    if (v > K) throw new Error(`label ${v} at pixel ${i} is above the ${K} classes`);
    index[i] = v - 1;
    mask[i] = 1;
    count++;
  }
  return tf.tidy(() => {
    const logp = tf.logSoftmax(tf.reshape(logits, [-1, K]));
    const picked = tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d(index, 'int32'), K)), 1);
    return tf.div(tf.neg(tf.sum(tf.mul(picked, tf.tensor1d(mask)))), Math.max(count, 1)) as Scalar;
  });
}

export interface SegLossTerms {
  /** The main head's cross-entropy. */
  seg: Scalar;
  /** The auxiliary head's (unweighted), when it ran. */
  aux?: Scalar;
  /** seg + auxWeight * aux. */
  total: Scalar;
}

export function segmentationLoss(out: Tensor4D, aux: Tensor4D | undefined, labels: Uint8Array | Uint16Array | Int32Array, auxWeight: number): SegLossTerms {
  const seg = pixelCrossEntropy(out, labels);
  if (!aux) return { seg, total: seg };
  const a = pixelCrossEntropy(aux, labels);
  return { seg, aux: a, total: tf.tidy(() => tf.add(seg, tf.mul(a, auxWeight)) as Scalar) };
}
