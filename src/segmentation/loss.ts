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
 *
 * Written with its own gradient, (softmax - one-hot) / count on labeled pixels and 0 elsewhere, so that
 * the tape keeps only the logits: composed from core ops it would hold the log-softmax, a float32 one-hot
 * and their product, each as large as the logits (at 4 x 480 x 480 x 150, 550 MB apiece).
 */
export function pixelCrossEntropy(logits: Tensor4D, labels: Uint8Array | Uint16Array | Int32Array): Scalar {
  const [N, H, W, K] = logits.shape;
  if (labels.length !== N * H * W) throw new Error(`labels hold ${labels.length} values for ${N}x${H}x${W} logits`);
  let count = 0;
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i]!;
    if (v === 0) continue;
    if (v > K) throw new Error(`label ${v} at pixel ${i} is above the ${K} classes`);
    count++;
  }
  // Flat positions (pixel * K + class) of the labeled pixels' classes, and the labeled-pixel mask.
  const picked = new Int32Array(count);
  const mask = new Float32Array(labels.length);
  for (let i = 0, j = 0; i < labels.length; i++) {
    if (labels[i] === 0) continue;
    picked[j++] = i * K + labels[i]! - 1;
    mask[i] = 1;
  }
  const scale = 1 / Math.max(count, 1);
  const f = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x]);
    const value = tf.tidy(() => {
      if (count === 0) return tf.scalar(0);
      const logp = tf.reshape(tf.logSoftmax(tf.reshape(x, [-1, K])), [-1]);
      return tf.mul(tf.neg(tf.sum(tf.gather(logp, tf.tensor1d(picked, 'int32')))), scale);
    });
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const flat = tf.reshape(saved[0]!, [-1, K]);
          const onehot = tf.scatterND(tf.tensor2d(picked, [count, 1], 'int32'), tf.ones([count]), [N * H * W * K]);
          const d = tf.mul(tf.sub(tf.softmax(flat), tf.reshape(onehot, [-1, K])), tf.tensor2d(mask, [N * H * W, 1]));
          return tf.reshape(tf.mul(d, tf.mul(dy, scale)), [N, H, W, K]);
        }),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(logits) as Scalar;
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
