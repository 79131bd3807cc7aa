/**
 * The WebAssembly backend, multi-threaded under Node.
 *
 * tfjs-backend-wasm 4.22 never uses threads in Node: its WASM_HAS_MULTITHREAD_SUPPORT flag is hard-wired
 * to false there, forcing it fails because the pthread workers are started from blob: URLs that
 * worker_threads rejects, and the thread pool is capped at `emscripten_num_logical_cores() / 2` (one
 * thread on a 2-core machine). Here we instantiate the threaded SIMD build ourselves:
 * - the pthread workers start from a real file (wasm-worker.cjs beside this one);
 * - `emscripten_num_logical_cores` answers twice the wanted thread count, so the cap lets all through;
 * - the pool's workers are unref'd, so a script using the backend can exit without an explicit dispose.
 * The resulting module is handed to the package's own BackendWasm class, so every kernel that the
 * package registers for 'wasm' works unchanged. Pinned to tfjs-backend-wasm 4.22.0 (see package.json).
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';

const require = createRequire(import.meta.url);

/** The parts of the Emscripten module of tfjs-backend-wasm that this project touches. */
export interface WasmModule {
  cwrap(name: string, ret: string | null, args: string[]): (...a: number[]) => number;
  HEAPF32: Float32Array;
  HEAPU8: Uint8Array;
  wasmMemory: WebAssembly.Memory;
  _malloc(n: number): number;
  _free(p: number): void;
  PThread?: { runningWorkers: { unref(): void }[]; unusedWorkers: { unref(): void }[]; terminateAllThreads(): void };
  tfjs: {
    init(): void;
    initWithThreadsCount(n: number): void;
    getThreadsCount(): number;
    registerTensor(id: number, size: number, offset: number): void;
    disposeData(id: number): void;
    dispose(): void;
  };
}

interface WasmPackage {
  BackendWasm: new (module: WasmModule) => tf.KernelBackend;
  setThreadsCount(n: number): void;
  getThreadsCount(): number;
}

/** Loads tfjs-backend-wasm (which registers its kernels for 'wasm') and returns its exports. */
export function wasmPackage(): WasmPackage {
  return require('@tensorflow/tfjs-backend-wasm') as WasmPackage;
}

function addTfjsBindings(module: Omit<WasmModule, 'tfjs'>): WasmModule {
  const m = module as WasmModule;
  m.tfjs = {
    init: m.cwrap('init', null, []) as () => void,
    initWithThreadsCount: m.cwrap('init_with_threads_count', null, ['number']) as (n: number) => void,
    getThreadsCount: m.cwrap('get_threads_count', 'number', []),
    registerTensor: m.cwrap('register_tensor', null, ['number', 'number', 'number']) as WasmModule['tfjs']['registerTensor'],
    disposeData: m.cwrap('dispose_data', null, ['number']) as (id: number) => void,
    dispose: m.cwrap('dispose', null, []) as () => void,
  };
  return m;
}

type EmscriptenFactory = (config: Record<string, unknown>) => Promise<Omit<WasmModule, 'tfjs'>>;

/** Instantiates the threaded SIMD build of tfjs-backend-wasm with a pool of `threads` workers. */
export async function createThreadedWasmModule(threads: number): Promise<WasmModule> {
  const mainJs = require.resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.js');
  const wasmFile = mainJs.replace(/\.js$/, '.wasm');
  const workerFile = fileURLToPath(new URL('./wasm-worker.cjs', import.meta.url));
  const factory = require(mainJs) as EmscriptenFactory;
  // The Emscripten glue adds process listeners that rethrow any uncaught error from inside its own
  // code, so Node prints the whole minified file as the error location. Errors are ours to report.
  const before = {
    uncaughtException: process.listeners('uncaughtException'),
    unhandledRejection: process.listeners('unhandledRejection'),
  };
  const module = await factory({
    // Workers evaluate this file by path (the worker code's importScripts reads it with fs).
    mainScriptUrlOrBlob: mainJs,
    locateFile: (path: string, prefix: string) => {
      if (path.endsWith('.worker.js')) return workerFile;
      if (path.endsWith('.wasm')) return wasmFile;
      return prefix + path;
    },
    instantiateWasm: (
      imports: { env: Record<string, unknown> },
      receive: (instance: WebAssembly.Instance, module: WebAssembly.Module) => void,
    ) => {
      imports.env.emscripten_num_logical_cores = () => 2 * threads;
      WebAssembly.instantiate(readFileSync(wasmFile), imports as WebAssembly.Imports).then(
        (r) => receive(r.instance, r.module),
        (e: unknown) => {
          throw e;
        },
      );
      return {};
    },
  });
  for (const l of process.listeners('uncaughtException')) {
    if (!before.uncaughtException.includes(l)) process.removeListener('uncaughtException', l);
  }
  for (const l of process.listeners('unhandledRejection')) {
    if (!before.unhandledRejection.includes(l)) process.removeListener('unhandledRejection', l);
  }
  return addTfjsBindings(module);
}

/** Lets the process exit while the pool's workers wait for work. */
export function unrefWasmWorkers(module: WasmModule): void {
  for (const w of module.PThread?.runningWorkers ?? []) w.unref();
  for (const w of module.PThread?.unusedWorkers ?? []) w.unref();
}

/** True where this Node can run the threaded build: shared memory and wasm atomics. */
export function threadsAvailable(): boolean {
  try {
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return mem.buffer instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}
