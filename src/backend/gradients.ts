/**
 * Registers tfjs-core's gradient functions.
 *
 * tfjs-core's CommonJS bundle (what Node loads) registers no gradients; the umbrella package
 * @tensorflow/tfjs does, at the cost of webgl, layers, converter and data (about 270 MB). tfjs keeps its
 * engine and its kernel and gradient registries in process-wide globals, so loading tfjs-core's own
 * register_all_gradients ES module registers into the same engine. Its imports lack file extensions,
 * which a small resolution hook adds (tfjs_core_resolve.ts). Loading takes under a second, so it is
 * done on first need (training, gradient checks), not at startup.
 */
import { register } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';

let loading: Promise<void> | undefined;

export function registerCoreGradients(): Promise<void> {
  loading ??= (async () => {
    if (tf.getGradient('RealDiv')) return; // already registered (e.g. @tensorflow/tfjs is loaded)
    register('./tfjs_core_resolve.js', import.meta.url);
    await import('@tensorflow/tfjs-core/dist/register_all_gradients.js' as string);
  })();
  return loading;
}
