/**
 * Choosing the compute backend.
 *
 * Order when nothing is asked for: @tensorflow/tfjs-node-gpu, then @tensorflow/tfjs-node (both optional:
 * their install step downloads libtensorflow, so they are not dependencies of zoo; a user installs them
 * beside it), then WebGPU on a GPU (./webgpu.ts: Dawn over Vulkan; never a CPU fallback adapter such as
 * lavapipe unless `webgpu` is asked for by name), then the WebAssembly backend (threaded SIMD, see
 * ./wasm.ts), then the pure JS cpu backend.
 * The WebAssembly backend runs its heavy kernels in zoo's native oneDNN addon when that is built
 * (./native/); `native` insists on it, `wasm` turns it off.
 * `--backend` on the command line or ZOO_BACKEND overrides the order.
 *
 * The cpu backend is far too slow to train on (250 s for one 3x3 filter gradient at batch 8 on 56x56x64),
 * so it is never chosen silently for training: it must be asked for by name.
 */
import * as tf from '@tensorflow/tfjs-core';
import { readdirSync } from 'node:fs';
import { UserError, nearMatches } from '../errors.js';
import { settings } from '../env.js';
import { createThreadedWasmModule, threadsAvailable, unrefWasmWorkers, wasmPackage, type WasmModule } from './wasm.js';
import { registerZooKernels } from './kernels/index.js';
import { registerCoreGradients } from './gradients.js';
import { startSimdPool } from './simd/pool.js';
import { loadNative, nativeBuilt, type NativeInfo } from './native/addon.js';
import { setNativeConvPrecision, useNativeAddon } from './native/kernels.js';
import { adapterName, formatBytes, releaseWebGpu, setupWebGpu, type WebGpuAdapterInfo } from './webgpu.js';

export const BACKEND_CHOICES = ['auto', 'tfjs-node-gpu', 'tfjs-node', 'webgpu', 'native', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendOptions {
  /** Which backend; default: ZOO_BACKEND, else 'auto'. */
  backend?: BackendChoice | string;
  /** Threads for the WebAssembly backend; default ZOO_THREADS, else all cores. */
  threads?: number;
  /** 'training' refuses to fall back to the cpu backend silently. */
  purpose?: 'inference' | 'training';
  /**
   * Register tfjs-core's gradient functions, so `tf.variableGrads` works on zoo's models in a training
   * loop of one's own (default true; about a second, once per process). Commands that only run
   * models forward pass false.
   */
  gradients?: boolean;
  /**
   * Backends 'auto' must not pick (for a job that has not been checked on them); 'native' here means
   * wasm without zoo's native kernels. A backend asked for by name is used regardless.
   */
  exclude?: readonly BackendChoice[];
}

export interface BackendInfo {
  /** What was asked for. */
  requested: BackendChoice;
  /** The package that provides the backend. */
  choice: Exclude<BackendChoice, 'auto'>;
  /** The tfjs backend name ('tensorflow', 'webgpu', 'wasm' or 'cpu'). */
  name: string;
  /** Human-readable details: threads, SIMD, why earlier choices were skipped. */
  detail: string;
  /** Threads the backend computes with. */
  threads: number;
  /** Whether float16 tensors are computed natively (mixed precision). */
  float16: boolean;
  /** Backends tried before this one under 'auto', and why each was skipped. */
  skipped: { choice: string; reason: string }[];
  /** zoo's native oneDNN kernels, when the WebAssembly backend runs on them. */
  native?: NativeInfo;
  /** Why the WebAssembly backend runs without them, and how to enable them (auto only). */
  nativeMissing?: string;
  /** The adapter, on the WebGPU backend. */
  webgpu?: WebGpuAdapterInfo;
}

let current: BackendInfo | undefined;
const NATIVE_OFF = "zoo's native kernels off (backend 'wasm' asked for; 'auto' or 'native' uses them)";
const NATIVE_EXCLUDED = "zoo's native kernels not used for this job under auto (--backend native uses them)";
let wasmModule: WasmModule | undefined;

function parseChoice(value: string): BackendChoice {
  if ((BACKEND_CHOICES as readonly string[]).includes(value)) return value as BackendChoice;
  const near = nearMatches(value, BACKEND_CHOICES);
  throw new UserError(
    `unknown backend '${value}'. Choose one of: ${BACKEND_CHOICES.join(', ')}` +
      (near.length ? ` (did you mean ${near.map((n) => `'${n}'`).join(' or ')}?)` : ''),
    { exitCode: 2 },
  );
}

async function tryTfjsNode(pkg: 'tfjs-node-gpu' | 'tfjs-node'): Promise<string> {
  const spec = `@tensorflow/${pkg}`;
  try {
    await import(spec);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new UserError(`${spec} is not installed (npm install ${spec}@${tf.version_core})`);
    }
    throw new UserError(`${spec} failed to load: ${(e as Error).message}`);
  }
  // tfjs-node registers 'tensorflow' in the tfjs-core it depends on; a different copy than ours would
  // leave our engine without it.
  if (!tf.findBackendFactory('tensorflow')) {
    throw new UserError(
      `${spec} loaded a different @tensorflow/tfjs-core than zoo uses (${tf.version_core}); ` +
        `install ${spec}@${tf.version_core}`,
    );
  }
  return 'tensorflow';
}

async function setupWasm(threads: number): Promise<{ detail: string; threads: number }> {
  const pkg = wasmPackage();
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  if (simd && threadsAvailable()) {
    pkg.setThreadsCount(threads);
    tf.removeBackend('wasm');
    tf.registerBackend(
      'wasm',
      async () => {
        wasmModule = await createThreadedWasmModule(threads);
        const backend = new pkg.BackendWasm(wasmModule);
        unrefWasmWorkers(wasmModule);
        return backend;
      },
      2,
    );
  }
  if (!(await tf.setBackend('wasm'))) throw new UserError('the WebAssembly backend failed to initialize');
  const actual = Math.max(pkg.getThreadsCount(), 1);
  let kernels = '';
  if (wasmModule && simd) {
    try {
      await startSimdPool(wasmModule.wasmMemory, actual);
    } catch (e) {
      kernels = `; zoo's SIMD kernels unavailable (${(e as Error).message}), JavaScript fallback`;
    }
  }
  return {
    threads: actual,
    detail: `${simd ? 'SIMD' : 'no SIMD'}, ${actual} thread${actual > 1 ? 's' : ''}${kernels}`,
  };
}

async function activate(
  choice: Exclude<BackendChoice, 'auto'>,
  threads: number,
  requested: BackendChoice,
  exclude: readonly BackendChoice[] = [],
): Promise<{ name: string; detail: string; threads: number; native?: NativeInfo; nativeMissing?: string; webgpu?: WebGpuAdapterInfo }> {
  switch (choice) {
    case 'webgpu': {
      if (requested === 'auto') {
        const why = noGpuDevice();
        if (why) throw new UserError(why);
      }
      const a = await setupWebGpu(requested === 'webgpu');
      const detail = `${adapterName(a)}, ${formatBytes(a.limits.maxStorageBufferBindingSize)} largest tensor` +
        (a.fallback ? '; a CPU fallback adapter: for checking, slower than the wasm backend' : '');
      return { name: 'webgpu', detail, threads, webgpu: a };
    }
    case 'tfjs-node-gpu':
    case 'tfjs-node': {
      const name = await tryTfjsNode(choice);
      if (!(await tf.setBackend(name))) throw new UserError(`${choice} failed to initialize`);
      return { name, detail: 'TensorFlow C library', threads };
    }
    case 'native':
    case 'wasm': {
      // Under auto, the native kernels are used where they load; `native` requires them, `wasm` skips them.
      const withNative = choice === 'native' || (requested === 'auto' && !exclude.includes('native'));
      const n = withNative ? loadNative(threads) : undefined;
      if (choice === 'native' && !n?.available) throw new UserError(n && !n.available ? n.reason : 'native kernels unavailable');
      const r = await setupWasm(threads);
      if (n?.available) {
        useNativeAddon(n.addon);
        const i = n.info;
        return { name: 'wasm', ...r, detail: `oneDNN ${i.version} kernels (${i.isa}), ${r.detail}`, native: i };
      }
      useNativeAddon(undefined);
      const off = !withNative && nativeBuilt() ? (requested === 'auto' ? NATIVE_EXCLUDED : NATIVE_OFF) : undefined;
      const why = n && !n.available ? n.reason : off;
      return { name: 'wasm', ...r, ...(why ? { nativeMissing: why } : {}) };
    }
    case 'cpu': {
      await import('@tensorflow/tfjs-backend-cpu');
      if (!(await tf.setBackend('cpu'))) throw new UserError('the cpu backend failed to initialize');
      return { name: 'cpu', detail: 'pure JavaScript, single thread', threads: 1 };
    }
  }
}

/**
 * Picks, initializes and activates the compute backend, registers zoo's kernels for it, and returns
 * what was chosen. Calling it again with the same request returns the active backend.
 */
export async function initBackend(options: BackendOptions = {}): Promise<BackendInfo> {
  const requested = parseChoice(options.backend ?? settings().backend ?? 'auto');
  const purpose = options.purpose ?? 'inference';
  // zoo reports its backend itself; keep tfjs's "install tfjs-node" banner out of the output.
  tf.env().set('PROD', true);
  if (purpose === 'training' || (options.gradients ?? true)) await registerCoreGradients();
  const exclude = options.exclude ?? [];
  // A backend activated before is reactivated as it was (the wasm module, the WebGPU device are kept);
  // after releaseBackend() freed the GPU, 'auto' goes back to a wasm module still alive.
  const earlier =
    requested === 'wasm' || requested === 'native' ? activated.get('wasm') : requested === 'auto' ? (current ? undefined : activated.get('wasm')) : activated.get(requested);
  if (earlier && earlier !== current && tf.findBackend(earlier.name)) {
    if (!(await tf.setBackend(earlier.name))) throw new UserError(`the ${earlier.choice} backend failed to reactivate`);
    current = earlier;
  }
  if (current && requested === 'auto' && current.name === 'wasm') {
    // The same wasm module, with the native kernels on or off as this job's exclusions say.
    if (current.choice === 'native' && exclude.includes('native')) return remember(switchNative(current, 'wasm', NATIVE_EXCLUDED));
    if (current.nativeMissing === NATIVE_EXCLUDED && !exclude.includes('native') && loadNative(current.threads).available) {
      return remember(switchNative(current, 'native'));
    }
  }
  if (current && (requested === current.choice || (requested === 'auto' && !exclude.includes(current.choice)))) {
    if (purpose === 'training' && current.choice === 'cpu' && requested === 'auto') {
      throw cpuForTraining(current.detail);
    }
    return current;
  }
  if (current && current.name === 'wasm' && (requested === 'wasm' || requested === 'native')) {
    // Switching between wasm with and without the native kernels keeps the one wasm module.
    return remember(switchNative(current, requested));
  }
  const threads = options.threads ?? settings().threads;
  const order: Exclude<BackendChoice, 'auto'>[] =
    requested === 'auto' ? (['tfjs-node-gpu', 'tfjs-node', 'webgpu', 'wasm', 'cpu'] as const).filter((c) => !exclude.includes(c)) : [requested];
  const skipped: { choice: string; reason: string }[] = [];
  for (const choice of order) {
    if (requested === 'auto' && choice === 'cpu' && purpose === 'training') {
      throw cpuForTraining(skipped.map((k) => k.reason).join('; '));
    }
    try {
      const r = await activate(choice, threads, requested, exclude);
      registerZooKernels(r.name);
      current = {
        requested,
        choice: r.native ? 'native' : choice,
        name: r.name,
        threads: r.threads,
        detail: r.detail,
        skipped,
        // tfjs-core has no float16 dtype: no backend available in Node computes in half precision.
        float16: false,
        ...(r.native ? { native: r.native } : {}),
        ...(r.nativeMissing ? { nativeMissing: r.nativeMissing } : {}),
        ...(r.webgpu ? { webgpu: r.webgpu } : {}),
      };
      return remember(current);
    } catch (e) {
      if (requested !== 'auto') throw e;
      skipped.push({ choice, reason: e instanceof UserError ? e.message : `${choice}: ${(e as Error).message}` });
    }
  }
  throw new UserError(`no compute backend could be initialized: ${skipped.map((k) => k.reason).join('; ')}`);
}

/**
 * Why `auto` need not ask Dawn for an adapter: on Linux a GPU shows as a device node (/dev/dri/renderD*,
 * /dev/nvidia*, WSL's /dev/dxg); without one, only a CPU fallback adapter could answer, which auto
 * never takes, and loading Dawn would cost a tenth of a second and its driver warnings.
 */
function noGpuDevice(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  const has = (dir: string, prefix: string) => {
    try {
      return readdirSync(dir).some((f) => f.startsWith(prefix));
    } catch {
      return false;
    }
  };
  if (has('/dev/dri', 'renderD') || has('/dev', 'nvidia') || has('/dev', 'dxg')) return undefined;
  return 'no GPU (no /dev/dri/renderD*, /dev/nvidia* or /dev/dxg)';
}

/**
 * Releases what keeps the process alive or holds device memory: the WebGPU device (Node does not exit
 * while Dawn holds one). Afterwards initBackend() starts afresh.
 */
export function releaseBackend(): void {
  activated.delete('webgpu');
  if (current?.name === 'webgpu') current = undefined;
  releaseWebGpu();
}

/** Backends activated in this process, by tfjs backend name (what reactivating one returns). */
const activated = new Map<string, BackendInfo>();

function remember(info: BackendInfo): BackendInfo {
  activated.set(info.name === 'wasm' ? 'wasm' : info.choice, info);
  return info;
}

function cpuForTraining(why: string): UserError {
  return new UserError(
    'refusing to train on the pure JavaScript cpu backend: it is hundreds of times slower than the ' +
      `WebAssembly backend${why ? ` (${why})` : ''}. Pass --backend cpu (or ZOO_BACKEND=cpu) to insist.`,
  );
}

export { registerCoreGradients };

/**
 * The paper's mixed precision (low-precision compute, float32 master weights), where this machine can
 * do it: with the native kernels on a CPU that computes bf16 (AMX or AVX512-BF16), convolutions read
 * their operands in bf16 and accumulate and write in float32; batch norm, the loss and the update stay
 * in float32. Elsewhere it says why training stays in float32. `on: false` turns it off again.
 */
export function setMixedPrecision(on: boolean): { bf16: true; detail: string } | { bf16: false; reason: string } {
  if (!on) {
    setNativeConvPrecision('fp32');
    return { bf16: false, reason: 'turned off' };
  }
  const native = current?.native;
  if (!native) {
    const why = current?.nativeMissing ?? `the ${current?.choice ?? 'active'} backend has no bf16 kernels`;
    return { bf16: false, reason: `bf16 needs zoo's native kernels: ${why}` };
  }
  if (!native.bf16) {
    return { bf16: false, reason: `this CPU has neither AMX nor AVX512-BF16 (oneDNN ${native.version} runs ${native.isa})` };
  }
  setNativeConvPrecision('bf16');
  return { bf16: true, detail: `convolutions in bf16 with float32 accumulation (oneDNN ${native.version}, ${native.isa}); float32 master weights, batch norm, loss and update` };
}

/** Backends whose tensors can be read synchronously here (dataSync); WebGPU in Node cannot. */
const SYNC_READS = new Set(['wasm', 'cpu', 'tensorflow']);

/** Whether the active tfjs backend reads tensors synchronously (a step may then read mid-graph). */
export function readsSynchronously(): boolean {
  return SYNC_READS.has(tf.getBackend());
}

/** The active backend, or undefined before initBackend(). */
export function activeBackend(): BackendInfo | undefined {
  return current;
}

/** The Emscripten module of the threaded WebAssembly backend, when that backend is active. */
export function activeWasmModule(): WasmModule | undefined {
  return current?.name === 'wasm' ? wasmModule : undefined;
}

function switchNative(from: BackendInfo, requested: 'wasm' | 'native', off = NATIVE_OFF): BackendInfo {
  const { native: _n, nativeMissing: _m, ...rest } = from;
  const base = from.native ? from.detail.replace(/^oneDNN [^,]*, /, '') : from.detail;
  if (requested === 'wasm') {
    useNativeAddon(undefined);
    current = { ...rest, requested, choice: 'wasm', detail: base, nativeMissing: off };
    return current;
  }
  const n = loadNative(from.threads);
  if (!n.available) throw new UserError(n.reason);
  useNativeAddon(n.addon);
  current = { ...rest, requested, choice: 'native', detail: `oneDNN ${n.info.version} kernels (${n.info.isa}), ${base}`, native: n.info };
  return current;
}

/** One line for logs: "backend: wasm (SIMD, 2 threads; tfjs-node-gpu, tfjs-node not installed)". */
export function describeBackend(info: BackendInfo): string {
  const missing = info.skipped.filter((k) => k.reason.includes('is not installed')).map((k) => k.choice);
  // WebGPU without a GPU is the ordinary case, not a failure.
  const absent = (k: { choice: string; reason: string }) => k.choice === 'webgpu' && /^(no GPU|no WebGPU adapter|only a CPU fallback)/.test(k.reason);
  const failed = info.skipped.filter((k) => !k.reason.includes('is not installed') && !absent(k));
  const notes = [
    ...(missing.length ? [`${missing.join(', ')} not installed`] : []),
    ...info.skipped.filter(absent).map((k) => `webgpu: ${k.reason.startsWith('no GPU (') ? 'no GPU' : k.reason.split(' (')[0]}`),
    ...failed.map((k) => `${k.choice} failed: ${k.reason}`),
    ...(info.nativeMissing ? [info.nativeMissing] : []),
  ];
  return `backend: ${info.choice} (${info.detail}${notes.length ? `; ${notes.join('; ')}` : ''})`;
}
