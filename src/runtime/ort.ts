/**
 * ONNX Runtime for Node: the only module that imports onnxruntime-node.
 *
 * Execution providers: 'cuda' is used where its provider libraries are installed next to ONNX
 * Runtime's own (`zoo doctor --install-cuda`, README "GPU inference") and a GPU answers; otherwise 'cpu'.
 * The CPU binaries ship inside the npm package; the CUDA ones do not (onnxruntime-node's install
 * script fetches them from a host outside the npm registry, which zoo skips through .npmrc).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import os from 'node:os';
import type * as OrtTypes from 'onnxruntime-node';
import { UserError } from '../errors.js';

const require = createRequire(import.meta.url);
let ortModule: typeof OrtTypes | undefined;

/** The onnxruntime-node module, loaded on first use. */
export function ort(): typeof OrtTypes {
  if (!ortModule) {
    disableOrtTelemetry();
    ortModule = require('onnxruntime-node') as typeof OrtTypes;
  }
  return ortModule;
}

/**
 * Turns ONNX Runtime's telemetry off for this process (and the processes it starts) unless
 * ORT_DISABLE_TELEMETRY is already set. The official builds for Linux and macOS carry Microsoft's 1DS
 * telemetry SDK, on by default; on Linux the first session of a process creates or truncates
 * `$TMPDIR/mat-debug-<pid>.log` and `$TMPDIR/.ses` (following a symlink planted there) and keeps an
 * event database and a device id under `$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime/`.
 * ONNX Runtime reads the variable when it initializes, so this runs before the module is loaded.
 */
export function disableOrtTelemetry(env: NodeJS.ProcessEnv = process.env): void {
  if (!env.ORT_DISABLE_TELEMETRY) env.ORT_DISABLE_TELEMETRY = '1';
}

export type ProviderChoice = 'auto' | 'cpu' | 'cuda';

/** The directory holding libonnxruntime.so for this platform. */
export function ortBinaryDir(): string {
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}

/** Whether the CUDA execution provider's libraries are installed beside ONNX Runtime. */
export function cudaProviderInstalled(): boolean {
  const dir = ortBinaryDir();
  return ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'].every((f) => existsSync(join(dir, f)));
}

export interface SessionOptions {
  provider?: ProviderChoice;
  /** Threads inside one operator (default: all cores). */
  intraOpThreads?: number;
}

export interface Session {
  session: OrtTypes.InferenceSession;
  provider: 'cpu' | 'cuda';
  /** Why CUDA was not used, when it was asked for or auto-detected and fell back. */
  note?: string;
}

/** Opens a model (path or bytes) on the best available provider. */
export async function createSession(model: string | Uint8Array, options: SessionOptions = {}): Promise<Session> {
  const provider = options.provider ?? 'auto';
  const base: OrtTypes.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: options.intraOpThreads ?? os.availableParallelism(),
  };
  const open = (eps: string[]) =>
    typeof model === 'string'
      ? ort().InferenceSession.create(model, { ...base, executionProviders: eps })
      : ort().InferenceSession.create(model, { ...base, executionProviders: eps });
  let note: string | undefined;
  if (provider === 'cuda' || (provider === 'auto' && cudaProviderInstalled())) {
    if (!cudaProviderInstalled()) {
      throw new UserError(`the CUDA execution provider is not installed beside ONNX Runtime (${ortBinaryDir()}); run 'zoo doctor --install-cuda' to add it`);
    }
    try {
      return { session: await open(['cuda', 'cpu']), provider: 'cuda' };
    } catch (e) {
      if (provider === 'cuda') throw new UserError(`ONNX Runtime could not start the CUDA execution provider: ${(e as Error).message}`);
      note = `CUDA execution provider unavailable (${(e as Error).message.split('\n')[0]}); using CPU`;
    }
  }
  try {
    return { session: await open(['cpu']), provider: 'cpu', ...(note ? { note } : {}) };
  } catch (e) {
    const what = typeof model === 'string' ? model : 'the model';
    throw new UserError(`ONNX Runtime could not load ${what}: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** Runs a single-input, single-output classifier: NCHW float32 in, [N, classes] float32 out. */
export async function runClassifier(s: Session, input: Float32Array, dims: [number, number, number, number]): Promise<Float32Array> {
  const name = s.session.inputNames[0]!;
  const out = s.session.outputNames[0]!;
  const feeds = { [name]: new (ort().Tensor)('float32', input, dims) };
  const result = await s.session.run(feeds);
  return result[out]!.data as Float32Array;
}

/** A tensor handed to or returned by `runSession`. */
export interface HostTensor {
  type: 'float32' | 'int64' | 'int32';
  data: Float32Array | BigInt64Array | Int32Array;
  dims: number[];
}

/** Runs a session on named inputs; returns every output by name (int64 data stays BigInt64Array). */
export async function runSession(s: Session, feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
  const T = ort().Tensor;
  const inputs: Record<string, OrtTypes.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) inputs[name] = new T(t.type, t.data, t.dims);
  const result = await s.session.run(inputs);
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(result)) {
    out[name] = { type: t.type as HostTensor['type'], data: t.data as HostTensor['data'], dims: [...t.dims] };
  }
  return out;
}
