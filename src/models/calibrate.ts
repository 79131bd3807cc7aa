/**
 * A randomly initialized network shaped like a trained one, for export checks and benchmarks.
 *
 * Straight after initialization (every batch norm at gamma 1, running statistics 0 / 1), a deep ResNet
 * amplifies float32 rounding: its residual stream grows block after block, and two correct float32
 * implementations (tfjs-wasm, tfjs-cpu, ONNX Runtime) differ by ~1e-4 on logits of magnitude 4. Trained
 * ResNets keep the residual branches small (their last batch-norm gammas are small; zero-gamma training
 * starts them at 0) and have calibrated statistics. This sets the last gamma of every residual block to
 * `lastGamma`, sets every running statistic from a seeded N(0, 1) batch, and scales the classifier so
 * the logits have a standard deviation of `logitStd`: every weight still matters, and the network's
 * numerical behaviour resembles a trained one.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import type { Model } from './model.js';
import { Rng } from '../util/random.js';

export interface TrainedLikeOptions {
  lastGamma?: number;
  logitStd?: number;
  seed?: number;
  batch?: number;
  imageSize?: number;
}

/** Names of the last batch norm of each residual block ('.bn3' for bottlenecks, '.bn2' for basic). */
export function lastBlockBatchNorms(model: Model): string[] {
  const last = model.config.block === 'bottleneck' ? 'bn3' : 'bn2';
  return model.params.names().filter((n) => new RegExp(`^layer\\d+\\.\\d+\\.${last}\\.weight$`).test(n));
}

export async function trainedLikeInit(model: Model, options: TrainedLikeOptions = {}): Promise<void> {
  const lastGamma = options.lastGamma ?? 0.25;
  for (const name of lastBlockBatchNorms(model)) {
    model.params.setValues(name, new Float32Array(model.params.get(name).size).fill(lastGamma));
  }
  const size = options.imageSize ?? 64;
  const batch = options.batch ?? 8;
  const c = model.config.inChannels ?? 3;
  const rng = new Rng(options.seed ?? 99);
  const data = new Float32Array(batch * size * size * c);
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  const x = tf.tensor(data, [batch, size, size, c]) as Tensor4D;
  try {
    model.calibrateBatchNorm(x);
    const logits = model.forward(x, { mode: 'eval' });
    const stdT = tf.tidy(() => tf.sqrt(tf.moments(logits).variance));
    logits.dispose();
    const std = (await stdT.data())[0]!;
    stdT.dispose();
    const scale = (options.logitStd ?? 3) / Math.max(std, 1e-6);
    for (const name of ['fc.weight', 'fc.bias']) {
      const v = (await model.params.get(name).data()) as Float32Array;
      model.params.setValues(name, v.map((e) => e * scale));
    }
  } finally {
    x.dispose();
  }
}
