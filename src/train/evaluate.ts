/**
 * Validation: top-1, top-5 and cross-entropy of a classifier over a data set, with the validation
 * pipeline (resize the shorter side, center crop, normalize) run by the loader's workers.
 *
 * Two runners: the tfjs model itself (every epoch of training) and an ONNX file in ONNX Runtime
 * (`zoo eval`), so a shipped file is measured exactly as a service will run it.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { createLoader } from '../data/loader.js';
import { datasetSize, type ImageDataset } from '../data/dataset.js';
import { evalTransform } from '../data/transforms.js';
import type { Model } from '../models/model.js';
import { toNCHW } from '../onnx/check.js';
import { runClassifier, type Session } from '../runtime/ort.js';
import { UserError } from '../errors.js';
import { topkHits } from './loss.js';

export interface EvalResult {
  top1: number;
  top5: number;
  /** Mean cross-entropy against the true labels. */
  loss: number;
  count: number;
  seconds: number;
}

export interface EvalOptions {
  imageSize: number;
  /** Shorter side before the center crop (default round(size / 0.875)). */
  resize?: number;
  /** Per-channel mean and std on the 0-255 scale (default ImageNet's). */
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
  batchSize?: number;
  workers?: number;
  /** Called after each batch with the images done so far. */
  onProgress?: (done: number, total: number) => void;
  /** Stop before the next batch when this aborts, by throwing its reason (signal.throwIfAborted()). */
  signal?: AbortSignal;
}

/** Mean cross-entropy of logits [n, k] against labels, in float64. */
function crossEntropySum(logits: Float32Array, labels: Int32Array, k: number): number {
  let sum = 0;
  for (let i = 0; i < labels.length; i++) {
    const o = i * k;
    let max = -Infinity;
    for (let c = 0; c < k; c++) max = Math.max(max, logits[o + c]!);
    let z = 0;
    for (let c = 0; c < k; c++) z += Math.exp(logits[o + c]! - max);
    sum += Math.log(z) + max - logits[o + labels[i]!]!;
  }
  return sum;
}

async function evaluateWith(
  dataset: ImageDataset,
  options: EvalOptions,
  classes: number,
  logitsOf: (images: Float32Array, n: number, size: number) => Promise<Float32Array>,
): Promise<EvalResult> {
  const t0 = performance.now();
  const total = datasetSize(dataset);
  // No accuracy of nothing (0 / 0): a split left empty, such as --val-split over classes of one image.
  if (total === 0) throw new UserError(`${dataset.name} has no images to evaluate`);
  const loader = createLoader({
    dataset,
    batchSize: options.batchSize ?? 100,
    transform: evalTransform({
      size: options.imageSize,
      ...(options.resize ? { resize: options.resize } : {}),
      ...(options.mean ? { mean: options.mean } : {}),
      ...(options.std ? { std: options.std } : {}),
    }),
    shuffle: false,
    ...(options.workers !== undefined ? { workers: options.workers } : {}),
  });
  let top1 = 0;
  let top5 = 0;
  let loss = 0;
  let count = 0;
  try {
    for await (const batch of loader) {
      // Let a signal handler run: the awaits of a batch may resolve without reaching the event loop.
      if (options.signal) await new Promise((resolve) => setImmediate(resolve));
      options.signal?.throwIfAborted();
      const logits = await logitsOf(batch.images, batch.count, batch.size);
      if (logits.length !== batch.count * classes) {
        throw new UserError(`the model gives ${logits.length / batch.count} outputs per image; the data set has ${classes} classes`);
      }
      const hits = topkHits(logits, batch.labels, classes);
      top1 += hits.top1;
      top5 += hits.top5;
      loss += crossEntropySum(logits, batch.labels, classes);
      count += batch.count;
      options.onProgress?.(count, total);
    }
  } finally {
    await loader.close();
  }
  return { top1: top1 / count, top5: top5 / count, loss: loss / count, count, seconds: (performance.now() - t0) / 1000 };
}

/** Evaluates a tfjs model in inference mode (running batch-norm statistics). */
export function evaluateModel(model: Model, dataset: ImageDataset, options: EvalOptions): Promise<EvalResult> {
  return evaluateWith(dataset, options, model.numClasses, async (images, n, size) => {
    const y = tf.tidy(() => model.forward(tf.tensor4d(images, [n, size, size, 3]), { mode: 'eval' }) as Tensor2D);
    try {
      return (await y.data()) as Float32Array;
    } finally {
      y.dispose();
    }
  });
}

/** Evaluates an ONNX classifier (input NCHW, output logits) in ONNX Runtime. */
export async function evaluateOnnx(session: Session, dataset: ImageDataset, options: EvalOptions): Promise<EvalResult> {
  return evaluateWith(dataset, options, dataset.classes.length, (images, n, size) =>
    runClassifier(session, toNCHW(images, n, size, size, 3), [n, 3, size, size]),
  );
}
