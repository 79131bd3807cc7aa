/**
 * zoo's native kernels: the one module that loads the oneDNN addon (native/zoo_dnnl.cc).
 *
 * The addon is built at install time by node-gyp where oneDNN's headers are present (native/
 * build.mjs; `apt-get install libdnnl-dev` on Debian and Ubuntu) and is optional: without it
 * zoo runs exactly as before, on the WebAssembly backend's own kernels. With it, the training path's
 * heavy kernels (convolutions and their gradients, batch norm, matrix products, the SGD update) run in
 * oneDNN and C++ directly on the tensors in the wasm heap, without copies.
 *
 * OpenMP (oneDNN's thread pool here) reads its settings once, when the library loads: the thread
 * count is set to zoo's, and idle threads are made to sleep at once (OMP_WAIT_POLICY=passive) rather
 * than spin for milliseconds after each call, which on a small machine slows whatever runs next.
 * A value the user set in the environment is kept.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** What the addon reports about the library it runs on. */
export interface NativeInfo {
  /** oneDNN's version at run time, e.g. "2.6.3". */
  version: string;
  /** The version of the headers it was built against. */
  builtWith: string;
  /** The instruction set oneDNN dispatches to ("avx2", "avx512_core", "avx512_core_amx", ...). */
  isa: string;
  /** Whether that ISA computes bf16 natively (AVX512-BF16 or AMX). */
  bf16: boolean;
  /** The threading runtime ("OpenMP"). */
  runtime: string;
  /** Threads oneDNN computes with. */
  threads: number;
  /** The oneDNN library file the addon loaded (from the process's memory map; Linux only). */
  library?: string;
}

/** The addon's functions (offsets are byte offsets into the wasm heap; 0 means none). */
export interface NativeAddon {
  setHeap(heap: Uint8Array): void;
  info(): NativeInfo;
  setThreads(n: number): void;
  conv(kind: 0 | 1 | 2, geometry: Int32Array, a: number, b: number, out: number, bf16: number, bias?: number, relu?: number): void;
  matmul(a: number, b: number, c: number, batch: number, M: number, K: number, N: number, transA: number, transB: number, batchA: number, batchB: number): void;
  bnTrain(x: number, y: number, residual: number, gamma: number, beta: number, mean: number, invstd: number, P: number, C: number, epsilon: number, relu: number): void;
  bnTrainGrad(dy: number, x: number, y: number, dres: number, gamma: number, mean: number, invstd: number, dx: number, dgamma: number, dbeta: number, P: number, C: number): void;
  reluGrad(dy: number, y: number, dx: number, n: number): void;
  maxPoolGrad(x: number, dy: number, dx: number, ...geometry: number[]): void;
  avgPoolGrad(dy: number, dx: number, ...geometry: number[]): void;
  sgd(w: number, g: number, v: number, wOut: number, vOut: number, n: number, lr: number, momentum: number, weightDecay: number, gradScale: number, nesterov: number): void;
}

/** Where the addon is built (node-gyp's output inside the package). */
export const ADDON_PATH = fileURLToPath(new URL('../../../../native/build/Release/zoo_dnnl.node', import.meta.url));

const packageRoot = fileURLToPath(new URL('../../../../', import.meta.url));

/**
 * The one command that builds the addon, for messages: in a checkout of zoo its build script, where zoo
 * is installed as a dependency a rebuild of the package.
 */
export const ENABLE_HINT = `apt-get install libdnnl-dev && ${
  existsSync(path.join(packageRoot, '.git')) || existsSync(path.join(packageRoot, 'src')) ? 'npm run build:native' : 'npm rebuild @zoo-ml/zoo'
}`;

/** The libdnnl file mapped into this process, where the platform says. */
function mappedLibrary(): string | undefined {
  try {
    const maps = readFileSync('/proc/self/maps', 'utf8');
    const m = /\s(\/\S*libdnnl[^\s/]*)$/m.exec(maps);
    return m?.[1];
  } catch {
    return undefined;
  }
}

export type NativeStatus =
  | { available: true; addon: NativeAddon; info: NativeInfo; path: string }
  | { available: false; reason: string; path: string };

let status: NativeStatus | undefined;
const setByZoo = new Set<string>();

/** `env` without the OpenMP settings loadNative() made (for child processes such as a PyTorch peer). */
export function nativeEnvironmentRemoved(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const k of setByZoo) delete out[k];
  return out;
}

/**
 * Loads the addon once (with OpenMP's settings for `threads`) and says whether it can be used. Never
 * throws: a missing or broken addon is a reason, and zoo runs without it.
 */
export function loadNative(threads: number): NativeStatus {
  if (status) return status;
  const path = process.env.ZOO_NATIVE_ADDON || ADDON_PATH;
  if (!existsSync(path)) {
    status = { available: false, path, reason: `zoo's native kernels are not built (${ENABLE_HINT})` };
    return status;
  }
  for (const [k, v] of [['OMP_WAIT_POLICY', 'passive'], ['OMP_NUM_THREADS', String(threads)]] as const) {
    if (process.env[k] === undefined) {
      process.env[k] = v;
      setByZoo.add(k);
    }
  }
  try {
    const addon = require(path) as NativeAddon;
    addon.setThreads(threads);
    const library = mappedLibrary();
    status = { available: true, addon, info: { ...addon.info(), ...(library ? { library } : {}) }, path };
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0];
    status = { available: false, path, reason: `zoo's native kernels failed to load (${msg}); rebuild them: ${ENABLE_HINT}` };
  }
  return status;
}

/** Whether the addon file exists (without loading it). */
export function nativeBuilt(): boolean {
  return existsSync(process.env.ZOO_NATIVE_ADDON || ADDON_PATH);
}
