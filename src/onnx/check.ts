/**
 * Checking an export numerically: the same input through the tfjs model and through ONNX Runtime.
 *
 * Targets: FP32 logits within 1e-4 (max absolute difference) on an input that gives logits of
 * ordinary magnitude; FP16 exports must agree on the top-1 class. On random inputs some images have
 * nearly tied top classes, which float16 rounding may legitimately swap; FP16 agreement is therefore
 * required on every "decisive" image (top-1 margin in FP32 larger than twice the observed difference),
 * and the difference itself must stay under 5% of the largest logit so a broken export cannot pass by
 * making every image ambiguous.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import type { Model } from '../models/model.js';
import { Rng } from '../util/random.js';
import { createSession, runClassifier, type ProviderChoice } from '../runtime/ort.js';

export interface CheckReport {
  provider: 'cpu' | 'cuda';
  batch: number;
  imageSize: [number, number];
  maxAbsDiff: number;
  /** max |logit| of the tfjs output, to judge the scale of the difference. */
  maxAbsLogit: number;
  /** Fraction of images whose arg-max agrees. */
  top1Agreement: number;
  /** Images whose FP32 top-1 margin exceeds twice maxAbsDiff: rounding of that size cannot flip them. */
  decisive: number;
  /** Agreement over the decisive images (FP16 must reach 1). */
  decisiveAgreement: number;
  /** The allowed max |difference|: atol + rtol * maxAbsLogit. */
  tolerance: number;
  /** maxAbsDiff <= tolerance (FP32) or full top-1 agreement (FP16). */
  passed: boolean;
}

export interface CheckOptions {
  batch?: number;
  imageSize?: number | [number, number];
  seed?: number;
  fp16?: boolean;
  /** Absolute tolerance on FP32 logits (default 1e-4). */
  atol?: number;
  /** Added tolerance relative to the largest logit (default 0). */
  rtol?: number;
  provider?: ProviderChoice;
}

/** The figures of a check that records keep (the local zoo's manifests, pulls, runs). */
export function checkSummary(c: CheckReport): Pick<CheckReport, 'maxAbsDiff' | 'maxAbsLogit' | 'top1Agreement' | 'provider'> {
  return { maxAbsDiff: c.maxAbsDiff, maxAbsLogit: c.maxAbsLogit, top1Agreement: c.top1Agreement, provider: c.provider };
}

/** NHWC -> NCHW. */
export function toNCHW(x: Float32Array, n: number, h: number, w: number, c: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < n; b++)
    for (let i = 0; i < h; i++)
      for (let j = 0; j < w; j++) {
        const s = ((b * h + i) * w + j) * c;
        for (let k = 0; k < c; k++) out[((b * c + k) * h + i) * w + j] = x[s + k]!;
      }
  return out;
}

function argmax(v: Float32Array, offset: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (v[offset + i]! > v[offset + best]!) best = i;
  return best;
}

function top1Margin(v: Float32Array, offset: number, n: number): number {
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = v[offset + i]!;
    if (x > a) {
      b = a;
      a = x;
    } else if (x > b) b = x;
  }
  return a - b;
}

/** Standard-normal images: the distribution of normalized real images, per channel. */
export function checkInput(batch: number, h: number, w: number, c: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(batch * h * w * c);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  return x;
}

/** Runs `onnxBytes` in ONNX Runtime and `model` in tfjs on the same input and compares the logits. */
export async function checkExport(model: Model, onnxBytes: Uint8Array, options: CheckOptions = {}): Promise<CheckReport> {
  const batch = options.batch ?? 2;
  const [h, w] = typeof options.imageSize === 'number' ? [options.imageSize, options.imageSize] : (options.imageSize ?? [224, 224]);
  const c = model.config.inChannels ?? 3;
  const xNHWC = checkInput(batch, h, w, c, options.seed ?? 1234);
  const ref = tf.tidy(() => model.forward(tf.tensor(xNHWC, [batch, h, w, c]) as Tensor4D, { mode: 'eval' }));
  const expected = (await ref.data()) as Float32Array;
  ref.dispose();
  const s = await createSession(onnxBytes, { provider: options.provider ?? 'cpu' });
  let got: Float32Array;
  try {
    got = await runClassifier(s, toNCHW(xNHWC, batch, h, w, c), [batch, c, h, w]);
  } finally {
    await s.session.release();
  }
  const k = model.numClasses;
  let maxAbsDiff = 0;
  let maxAbsLogit = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(expected[i]! - got[i]!);
    if (!(d <= maxAbsDiff)) maxAbsDiff = d;
    maxAbsLogit = Math.max(maxAbsLogit, Math.abs(expected[i]!));
  }
  let agree = 0;
  let decisive = 0;
  let decisiveAgree = 0;
  for (let b = 0; b < batch; b++) {
    const same = argmax(expected, b * k, k) === argmax(got, b * k, k);
    if (same) agree++;
    if (top1Margin(expected, b * k, k) > 2 * maxAbsDiff) {
      decisive++;
      if (same) decisiveAgree++;
    }
  }
  const tolerance = options.fp16 ? Infinity : (options.atol ?? 1e-4) + (options.rtol ?? 0) * maxAbsLogit;
  const top1Agreement = agree / batch;
  return {
    provider: s.provider,
    batch,
    imageSize: [h, w],
    maxAbsDiff,
    maxAbsLogit,
    top1Agreement,
    decisive,
    decisiveAgreement: decisive ? decisiveAgree / decisive : 1,
    tolerance,
    passed: options.fp16 ? decisiveAgree === decisive && maxAbsDiff <= 0.05 * maxAbsLogit : maxAbsDiff <= tolerance,
  };
}
