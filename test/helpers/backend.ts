/**
 * Backend setup for tests. ZOO_TEST_BACKEND picks the backend (default: wasm, threaded).
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, registerCoreGradients, type BackendInfo } from '../../src/backend/index.js';

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
