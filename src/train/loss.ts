/**
 * Targets and losses of the paper's tricks.
 *
 * Label smoothing (5.2): the target of class y becomes q_i = 1 - eps for i = y and eps / (K - 1)
 * otherwise (the paper's formula). GluonCV implements q_y = 1 - eps + eps / K instead; zoo follows the
 * paper, so a target puts exactly 1 - eps on the true class.
 *
 * Mixup (5.4): lambda ~ Beta(alpha, alpha); x = lambda x_i + (1 - lambda) x_j and the same for the
 * (smoothed) targets, with j the batch in reverse order (as GluonCV does).
 *
 * Knowledge distillation (5.3): loss = CE(p, softmax(z)) + T^2 CE(softmax(r / T), softmax(z / T))
 * for student logits z, teacher logits r, true (or smoothed, mixed) targets p and temperature T.
 * `hardWeight` w gives GluonCV's mixing w CE(p, softmax(z)) + (1 - w) T^2 CE(...); the paper's sum is
 * hardWeight undefined.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { Rng } from '../util/random.js';

/** Smoothed one-hot targets [N, K] (the paper's eps / (K - 1) off the true class). */
export function smoothTargets(labels: Int32Array, numClasses: number, eps: number): Float32Array {
  const off = numClasses > 1 ? eps / (numClasses - 1) : 0;
  const t = new Float32Array(labels.length * numClasses).fill(off);
  labels.forEach((y, i) => {
    if (y < 0 || y >= numClasses) throw new Error(`label ${y} out of range [0, ${numClasses})`);
    t[i * numClasses + y] = 1 - eps;
  });
  return t;
}

/** A Beta(alpha, alpha) draw via two Gamma draws (Marsaglia and Tsang). */
export function sampleBeta(rng: Rng, alpha: number): number {
  const a = sampleGamma(rng, alpha);
  const b = sampleGamma(rng, alpha);
  return a + b > 0 ? a / (a + b) : 0.5;
}

export function sampleGamma(rng: Rng, shape: number): number {
  if (shape < 1) {
    // Boost: Gamma(k) = Gamma(k + 1) * U^(1/k)
    const u = Math.max(rng.uniform(), 1e-300);
    return sampleGamma(rng, shape + 1) * u ** (1 / shape);
  }
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rng.uniform();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** Mixes a batch with its reverse in place: images (N * per floats) and targets (N x K). */
export function mixup(images: Float32Array, targets: Float32Array, n: number, lambda: number): void {
  const per = images.length / n;
  const k = targets.length / n;
  const mix = (a: Float32Array, width: number) => {
    const copy = a.slice();
    for (let i = 0; i < n; i++) {
      const j = n - 1 - i;
      for (let e = 0; e < width; e++) a[i * width + e] = lambda * copy[i * width + e]! + (1 - lambda) * copy[j * width + e]!;
    }
  };
  mix(images, per);
  mix(targets, k);
}

/** Mean over the batch of -sum_i q_i log softmax(z)_i. */
export function softCrossEntropy(logits: Tensor2D, targets: Tensor2D): tf.Scalar {
  return tf.tidy(() => tf.mean(tf.neg(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), 1))) as tf.Scalar);
}

/** The distillation loss above; `teacher` holds the teacher's logits r. */
export function distillationLoss(logits: Tensor2D, targets: Tensor2D, teacher: Tensor2D, temperature: number, hardWeight?: number): tf.Scalar {
  return tf.tidy(() => {
    const hard = softCrossEntropy(logits, targets);
    const soft = softCrossEntropy(tf.div(logits, temperature) as Tensor2D, tf.softmax(tf.div(teacher, temperature)) as Tensor2D);
    const t2 = temperature * temperature;
    if (hardWeight === undefined) return tf.add(hard, tf.mul(soft, t2)) as tf.Scalar;
    return tf.add(tf.mul(hard, hardWeight), tf.mul(soft, (1 - hardWeight) * t2)) as tf.Scalar;
  });
}

/** Top-1 and top-5 hits of logits [N, K] against labels. */
export function topkHits(logits: Float32Array, labels: Int32Array, numClasses: number): { top1: number; top5: number } {
  let top1 = 0;
  let top5 = 0;
  const n = labels.length;
  for (let i = 0; i < n; i++) {
    const o = i * numClasses;
    const y = labels[i]!;
    const v = logits[o + y]!;
    // A non-finite logit of the true class is a miss; a NaN rival counts as ranking above it.
    if (!Number.isFinite(v)) continue;
    let greater = 0;
    for (let c = 0; c < numClasses; c++) if (!(logits[o + c]! <= v) || (logits[o + c] === v && c < y)) greater++;
    if (greater === 0) top1++;
    if (greater < 5) top5++;
  }
  return { top1, top5 };
}
