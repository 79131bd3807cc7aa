/**
 * Entry point of the pthread workers of the multi-threaded WebAssembly backend under Node.
 *
 * tfjs-backend-wasm ships its worker script as a string and hands it to `new Worker()` as a blob: URL,
 * which Node's worker_threads rejects. This file is a real path that worker_threads can load; it runs the
 * same worker code. The string stores "\n" escapes as real newlines (tfjs escapes them again before use
 * in the browser), hence the replace.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { wasmWorkerContents } = require('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.worker.js') as {
  wasmWorkerContents: string;
};
// The worker code expects CommonJS `require` and `__filename` as free names; give it both.
new Function('require', '__filename', wasmWorkerContents.replace(/\n/g, '\\n'))(require, __filename);
