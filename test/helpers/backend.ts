/**
 * Backend setup for tests. ZOO_TEST_BACKEND picks the backend (default: wasm, threaded).
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, registerCoreGradients, type BackendInfo } from '../../src/backend/index.js';
import type { ResNetConfig } from '../../src/models/resnet.js';

export async function setupBackend(name = process.env.ZOO_TEST_BACKEND ?? 'wasm'): Promise<BackendInfo> {
  await registerCoreGradients();
  return initBackend({ backend: name });
}

/** Runs `fn` and checks that it leaves no tensor behind. */
export function countLeaks<T>(fn: () => T): { result: T; leaked: number } {
  const before = tf.memory().numTensors;
  const result = fn();
  const after = tf.memory().numTensors;
  const kept = result instanceof tf.Tensor ? 1 : Array.isArray(result) ? result.filter((r) => r instanceof tf.Tensor).length : 0;
  return { result, leaked: after - before - kept };
}

/** Max |a - b| over two arrays of the same length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN-safe: a NaN difference becomes the max
  }
  return m;
}

/** Runs fn in a tidy scope and reads its outputs back as plain arrays; throws if it leaks tensors. */
export function readOutputs(fn: () => tf.Tensor | tf.Tensor[], what: string): Float32Array[] {
  const before = tf.memory().numTensors;
  const out = tf.tidy(() => {
    const r = fn();
    return Array.isArray(r) ? r : [r];
  });
  const values = out.map((t) => t.dataSync().slice() as Float32Array);
  tf.dispose(out);
  if (tf.memory().numTensors !== before) throw new Error(`${what}: ${tf.memory().numTensors - before} tensors leaked`);
  return values;
}

type Asserts = { is(a: unknown, b: unknown, m?: string): void; true(v: boolean, m?: string): void };

/** Elementwise |got - want| <= tol * max(1, max |want|). */
export function assertClose(t: Asserts, got: Float32Array, want: Float32Array, what: string, tol = 2e-5): void {
  t.is(got.length, want.length, `${what}: length`);
  let scale = 1;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  const d = maxAbsDiff(got, want);
  t.true(d <= tol * scale, `${what}: max |diff| ${d} (scale ${scale})`);
}

/** One convolution of the kernel tests: NHWC input n x h x w x ci, k x k filter to co, stride, padding, dilation. */
export interface ConvCase<P = number | 'same' | 'valid' | [[number, number], [number, number]]> {
  n: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  k: number;
  s: number;
  pad: P;
  d: number;
}

/** A tiny ResNet-D bottleneck network (one block per stage, widths 8-16), with `c` changed. */
export const tinyResNet = (c: Partial<ResNetConfig> = {}): ResNetConfig => ({
  block: 'bottleneck',
  layers: [1, 1, 1, 1],
  widths: [8, 16, 16, 16],
  stemType: 'deep',
  stemWidth: 8,
  strideIn: '3x3',
  avgDown: true,
  numClasses: 10,
  ...c,
});
