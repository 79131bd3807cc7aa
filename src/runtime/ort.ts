/**
 * ONNX Runtime for Node: the only module that imports onnxruntime-node.
 *
 * Execution providers: 'cpu', 'cuda', or 'auto': CUDA where it can start (cuda.ts checks the machine
 * first, then ONNX Runtime has the last word), else the CPU with a one-line note saying what CUDA lacks
 * and how to get it. The CPU binaries ship inside the npm package; the CUDA ones do not
 * (onnxruntime-node's install script fetches them from a host outside the npm registry, which zoo skips
 * through .npmrc; `zoo doctor --install-cuda` takes the same files from the npm registry).
 *
 * Session options live here only (`SessionOptions`): threads, graph optimization, memory arena, the
 * warm-up run. What onnxruntime-node 1.29 does with buffers (measured in test/runtime_device.test.ts):
 * inputs are read in place from the caller's typed arrays; every output is copied once into a fresh
 * ArrayBuffer by the binding, also when a preallocated output is given (ONNX Runtime then writes into the
 * caller's buffer first, and `runSession` hands that buffer back). It has no CUDA I/O binding: device
 * memory ('gpu-buffer' tensors, `preferredOutputLocation`) exists only for its WebGPU provider, so with
 * CUDA each run copies inputs to the device and outputs back. Its `run` also executes on the calling
 * thread, holding the event loop for the whole run: `thread: 'worker'` opens the session in a worker
 * thread instead (one copy of the inputs to it; outputs come back without a copy).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import os from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type * as OrtTypes from 'onnxruntime-node';
import { UserError } from '../errors.js';
import { CUDA_PROVIDER_LIBS, cudaReadiness, cudaReason, diagnoseCudaFailure, ortBinaryDir, type CudaProbe } from './cuda.js';

export { ortBinaryDir };

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
export type GraphOptimization = 'disabled' | 'basic' | 'extended' | 'all';

/** Whether the CUDA execution provider's libraries are installed beside ONNX Runtime. */
export function cudaProviderInstalled(): boolean {
  const dir = ortBinaryDir();
  return CUDA_PROVIDER_LIBS.every((f) => existsSync(join(dir, f)));
}

/** How a session is opened: every ONNX Runtime setting zoo uses, in one place. */
export interface SessionOptions {
  /** 'auto' (default): CUDA where it can start, else the CPU with `Session.note` saying why. */
  provider?: ProviderChoice;
  /** Threads inside one operator (default: all cores). */
  intraOpThreads?: number;
  /** Threads running independent operators at once (default: ONNX Runtime's); above 1 it runs the graph in parallel mode. */
  interOpThreads?: number;
  /** Graph optimization level (default 'all'). */
  graphOptimization?: GraphOptimization;
  /** CPU memory arena and memory-pattern planning (default true); off trades speed for a smaller resident set. */
  memoryArena?: boolean;
  /** Feeds run once before createSession returns: the first run allocates and tunes. Under 'auto' a CUDA warm-up that fails falls back to the CPU. */
  warmup?: Record<string, HostTensor>;
  /** The CUDA device ordinal (default 0). */
  deviceId?: number;
  /** Replaces the probes that decide whether CUDA can start (tests; cuda.ts). With thread 'worker' only its data fields travel. */
  cudaProbe?: CudaProbe;
  /**
   * 'main' (default): runs execute on this thread and hold its event loop until they finish (onnxruntime-node
   * 1.29 has no asynchronous run). 'worker': the session lives in a worker thread of its own and this
   * thread stays free during runs (a server keeps answering); inputs are copied to it once per run.
   */
  thread?: 'main' | 'worker';
  /**
   * Whether ONNX Runtime's pool threads spin waiting for work after a run (its default, true). Spinning
   * shaves the wake-up off back-to-back runs but burns the cores between them: a service, whose main thread
   * parses the next requests between runs, turns it off.
   */
  spinning?: boolean;
}

export interface Session {
  session: OrtTypes.InferenceSession;
  provider: 'cpu' | 'cuda';
  /** One line, under 'auto' on the CPU: what CUDA lacks and how to fix it, ending "; using the CPU". Callers choose whether to print it. */
  note?: string;
}

const GRAPH_OPTIMIZATIONS: readonly GraphOptimization[] = ['disabled', 'basic', 'extended', 'all'];

function checkCount(name: string, v: number | undefined, min: number): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new UserError(`${name} must be a whole number >= ${min}, not ${v}`, { exitCode: 2 });
}

/** The ONNX Runtime session options `options` mean (without execution providers). */
export function ortSessionOptions(options: SessionOptions = {}): OrtTypes.InferenceSession.SessionOptions {
  checkCount('intraOpThreads', options.intraOpThreads, 1);
  checkCount('interOpThreads', options.interOpThreads, 1);
  checkCount('deviceId', options.deviceId, 0);
  const level = options.graphOptimization ?? 'all';
  if (!GRAPH_OPTIMIZATIONS.includes(level)) throw new UserError(`graphOptimization must be one of ${GRAPH_OPTIMIZATIONS.join(', ')}, not '${String(level)}'`, { exitCode: 2 });
  const arena = options.memoryArena ?? true;
  return {
    graphOptimizationLevel: level,
    intraOpNumThreads: options.intraOpThreads ?? os.availableParallelism(),
    ...(options.interOpThreads !== undefined ? { interOpNumThreads: options.interOpThreads, executionMode: options.interOpThreads > 1 ? 'parallel' : 'sequential' } : {}),
    enableCpuMemArena: arena,
    enableMemPattern: arena,
    // Session configuration entries (onnxruntime_session_options_config_keys.h), which onnxruntime-node reads from `extra`.
    ...(options.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
  };
}

/** Opens a model (path or bytes) on the provider asked for (default 'auto'), runs the warm-up if given. */
export async function createSession(model: string | Uint8Array, options: SessionOptions = {}): Promise<Session> {
  const provider = options.provider ?? 'auto';
  if (!['auto', 'cpu', 'cuda'].includes(provider)) throw new UserError(`device must be auto, cpu or cuda, not '${String(provider)}'`, { exitCode: 2 });
  const thread = options.thread ?? 'main';
  if (thread !== 'main' && thread !== 'worker') throw new UserError(`thread must be main or worker, not '${String(thread)}'`, { exitCode: 2 });
  const base = ortSessionOptions(options);
  if (thread === 'worker') return openInWorker(model, options);
  const open = (eps: OrtTypes.InferenceSession.SessionOptions['executionProviders']) => {
    const o = { ...base, executionProviders: eps };
    return typeof model === 'string' ? ort().InferenceSession.create(model, o) : ort().InferenceSession.create(model, o);
  };
  let note: string | undefined;
  if (provider !== 'cpu') {
    const r = cudaReadiness(options.cudaProbe);
    let reason = r.ready ? undefined : cudaReason(r);
    if (!reason) {
      let session: OrtTypes.InferenceSession | undefined;
      try {
        session = await open([{ name: 'cuda', deviceId: options.deviceId ?? 0 }, 'cpu']);
        if (options.warmup) await runSession({ session, provider: 'cuda' }, options.warmup);
        return { session, provider: 'cuda' };
      } catch (e) {
        if (session) await session.release();
        if (e instanceof UserError) throw new UserError(`warm-up run: ${e.message}`);
        reason = cudaReason(diagnoseCudaFailure((e as Error).message ?? String(e), options.cudaProbe ?? {}));
      }
    }
    if (provider === 'cuda') throw new UserError(`cannot run on CUDA: ${reason}`);
    note = `CUDA not used: ${reason}; using the CPU`;
  }
  let session: OrtTypes.InferenceSession;
  try {
    session = await open(['cpu']);
  } catch (e) {
    const what = typeof model === 'string' ? model : 'the model';
    throw new UserError(`ONNX Runtime could not load ${what}: ${(e as Error).message.split('\n')[0]}`);
  }
  const s: Session = { session, provider: 'cpu', ...(note ? { note } : {}) };
  if (options.warmup) {
    try {
      await runSession(s, options.warmup);
    } catch (e) {
      await session.release();
      if (e instanceof UserError) throw new UserError(`warm-up run: ${e.message}`);
      throw new UserError(`the warm-up run failed in ONNX Runtime: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  return s;
}

/** Runs a single-input, single-output classifier: NCHW float32 in, [N, classes] float32 out. */
export async function runClassifier(s: Session, input: Float32Array, dims: [number, number, number, number]): Promise<Float32Array> {
  const name = s.session.inputNames[0]!;
  const out = s.session.outputNames[0]!;
  const feeds = { [name]: new (ort().Tensor)('float32', input, dims) };
  const result = await s.session.run(feeds);
  return result[out]!.data as Float32Array;
}

/** Element types a `HostTensor` carries (the server maps KServe's FP32, FP16, INT64, INT32, UINT8, INT8, BOOL onto them). */
export type HostTensorType = 'float32' | 'float16' | 'int64' | 'int32' | 'uint8' | 'int8' | 'bool';

/**
 * A tensor handed to or returned by `runSession`, row-major. float16 data is the IEEE half bits in a
 * Uint16Array; bool is one byte per element (0 or 1) in a Uint8Array; int64 stays BigInt64Array.
 */
export interface HostTensor {
  type: HostTensorType;
  data: Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array | Int8Array;
  dims: number[];
}

/** The typed array each element type is carried in. */
export const HOST_ARRAY: Record<HostTensorType, new (n: number) => HostTensor['data']> = {
  float32: Float32Array,
  float16: Uint16Array,
  int64: BigInt64Array,
  int32: Int32Array,
  uint8: Uint8Array,
  int8: Int8Array,
  bool: Uint8Array,
};

/** A zeroed tensor of `type` and `dims`, e.g. a preallocated output. */
export function allocTensor(type: HostTensorType, dims: number[]): HostTensor {
  return { type, data: new HOST_ARRAY[type](dims.reduce((a, b) => a * b, 1)), dims: [...dims] };
}

function shown(shape: readonly (number | string)[]): string {
  return `[${shape.join(', ')}]`;
}

/** Checks a tensor's own consistency (type name, array, element count) and wraps it for ONNX Runtime. */
function toOrt(role: string, name: string, t: HostTensor): OrtTypes.Tensor {
  const want = HOST_ARRAY[t.type];
  if (!want) throw new UserError(`${role} '${name}' has element type '${String(t.type)}'; zoo runs ${Object.keys(HOST_ARRAY).join(', ')}`);
  if (!(t.data instanceof want)) throw new UserError(`${role} '${name}' is ${t.type} but its data is a ${t.data?.constructor?.name ?? typeof t.data}, not a ${want.name}`);
  if (!Array.isArray(t.dims) || !t.dims.every((d) => Number.isInteger(d) && d >= 0)) throw new UserError(`${role} '${name}' has shape ${JSON.stringify(t.dims)}: dimensions must be whole numbers >= 0`);
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw new UserError(`${role} '${name}' has shape ${shown(t.dims)} (${n} elements) but ${t.data.length} values`);
  return new (ort().Tensor)(t.type, t.data as never, t.dims);
}

/** Whether `dims` fits the declared `shape` (symbolic dimensions take anything). */
function fits(dims: readonly number[], shape: readonly (number | string)[]): boolean {
  return dims.length === shape.length && shape.every((d, i) => typeof d !== 'number' || d === dims[i]);
}

type ValueMeta = { name: string; isTensor: boolean; type?: string; shape?: readonly (number | string)[] };

function checkAgainst(role: 'input' | 'output', meta: readonly ValueMeta[], name: string, t: HostTensor): void {
  const m = meta.find((v) => v.name === name);
  if (!m) throw new UserError(`the model has no ${role} '${name}' (its ${role}s: ${meta.map((v) => v.name).join(', ')})`);
  if (m.isTensor && m.type && m.type !== t.type) throw new UserError(`${role} '${name}' is ${t.type}; the model's is ${m.type}`);
  if (m.isTensor && m.shape && !fits(t.dims, m.shape)) throw new UserError(`${role} '${name}' has shape ${shown(t.dims)}; the model's is ${shown(m.shape)}`);
}

/** Float16Array (where the platform has it) back to the Uint16Array bits HostTensor carries, without copying. */
function hostData(type: string, data: unknown): HostTensor['data'] {
  if (type === 'float16' && !(data instanceof Uint16Array)) {
    const d = data as { buffer: ArrayBuffer; byteOffset: number; length: number };
    return new Uint16Array(d.buffer, d.byteOffset, d.length);
  }
  return data as HostTensor['data'];
}

export interface RunOptions {
  /**
   * Preallocated outputs by name, each of the exact shape the run produces: ONNX Runtime writes into their
   * data and `runSession` returns these very objects. Outputs not named here are allocated as usual.
   */
  outputs?: Record<string, HostTensor>;
  /**
   * For a session in a worker thread: hand the inputs' buffers to the worker instead of copying them (those
   * whose typed array covers its whole ArrayBuffer; they are detached here afterwards). For buffers the
   * caller made for this run alone, such as a batch assembled from several requests.
   */
  transferInputs?: boolean;
}

/**
 * Runs a session on named inputs; returns every output by name. Inputs are checked against the model's
 * names, element types and fixed dimensions first (a mismatch is a UserError naming the input).
 */
export async function runSession(s: Session, feeds: Record<string, HostTensor>, options: RunOptions = {}): Promise<Record<string, HostTensor>> {
  const inputs: Record<string, OrtTypes.Tensor> = {};
  const meta = s.session.inputMetadata as readonly ValueMeta[];
  for (const [name, t] of Object.entries(feeds)) {
    checkAgainst('input', meta, name, t);
    inputs[name] = toOrt('input', name, t);
  }
  const absent = s.session.inputNames.filter((n) => !(n in feeds));
  if (absent.length) throw new UserError(`the model's input${absent.length > 1 ? 's' : ''} ${absent.map((n) => `'${n}'`).join(', ')} ${absent.length > 1 ? 'are' : 'is'} not given`);
  const given = options.outputs ?? {};
  let result: OrtTypes.InferenceSession.OnnxValueMapType;
  if (Object.keys(given).length) {
    const outMeta = s.session.outputMetadata as readonly ValueMeta[];
    const fetches: Record<string, OrtTypes.Tensor | null> = Object.fromEntries(s.session.outputNames.map((n) => [n, null]));
    for (const [name, t] of Object.entries(given)) {
      checkAgainst('output', outMeta, name, t);
      fetches[name] = toOrt('output', name, t);
    }
    result = await s.session.run(inputs, fetches);
  } else if (options.transferInputs && (s.session as unknown) instanceof WorkerSession) {
    result = await (s.session as unknown as WorkerSession).run(inputs, undefined, true);
  } else {
    result = await s.session.run(inputs);
  }
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(result)) {
    out[name] = given[name] ?? { type: t.type as HostTensorType, data: hostData(t.type, t.data), dims: [...t.dims] };
  }
  return out;
}

// --- sessions in a worker thread -----------------------------------------------------------------------

const WORKER_MARK = 'zoo-ort-session-worker';

interface WireTensor {
  type: string;
  data: ArrayBufferView & { length: number };
  dims: number[];
}
interface WireError {
  message: string;
  user: boolean;
  exitCode: number;
}
type ToWorker = { op: 'run'; id: number; feeds: Record<string, WireTensor>; fetches?: Record<string, WireTensor | null> } | { op: 'release'; id: number };
type Opened = { provider: 'cpu' | 'cuda'; note?: string; inputNames: string[]; outputNames: string[]; inputMetadata: unknown[]; outputMetadata: unknown[] };
type FromWorker =
  | ({ op: 'open'; ok: true } & Opened)
  | { op: 'open'; ok: false; error: WireError }
  | { op: 'run'; id: number; ok: true; outputs: Record<string, WireTensor> }
  | { op: 'run'; id: number; ok: false; error: WireError }
  | { op: 'release'; id: number };

const wire = (t: { type: string; data: unknown; dims: readonly number[] }): WireTensor => ({ type: t.type, data: t.data as WireTensor['data'], dims: [...t.dims] });
const wireError = (e: unknown): WireError => ({ message: (e as Error)?.message ?? String(e), user: e instanceof UserError, exitCode: e instanceof UserError ? e.exitCode : 70 });
const unwire = (e: WireError): Error => (e.user ? new UserError(e.message, { exitCode: e.exitCode }) : new Error(e.message));

/** The data-only part of a probe: functions cannot be sent to a worker. */
function probeData(p: CudaProbe | undefined): CudaProbe | undefined {
  if (!p) return undefined;
  return Object.fromEntries(Object.entries(p).filter(([, v]) => typeof v !== 'function')) as CudaProbe;
}

/**
 * Stands in for the InferenceSession of a session opened in a worker thread: the same names and metadata,
 * `run` and `release`. The worker is referenced (keeps the process alive) only while it has work.
 */
class WorkerSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly unknown[];
  readonly outputMetadata: readonly unknown[];
  private next = 1;
  private readonly pending = new Map<number, { resolve: (m: FromWorker) => void; reject: (e: Error) => void }>();
  private stopped: Error | undefined;

  constructor(private readonly worker: Worker, opened: Opened) {
    this.inputNames = opened.inputNames;
    this.outputNames = opened.outputNames;
    this.inputMetadata = opened.inputMetadata;
    this.outputMetadata = opened.outputMetadata;
    worker.on('message', (m: FromWorker) => {
      if (m.op === 'open') return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (!this.pending.size) worker.unref();
      p.resolve(m);
    });
    const stop = (e: Error) => {
      this.stopped ??= e;
      for (const p of this.pending.values()) p.reject(this.stopped);
      this.pending.clear();
    };
    worker.on('error', (e) => stop(new Error(`the ONNX Runtime worker thread failed: ${e.message}`)));
    worker.on('exit', (code) => stop(new Error(`the ONNX Runtime worker thread has exited (code ${code})`)));
    worker.unref();
  }

  private ask(m: ToWorker, transfer: ArrayBuffer[] = []): Promise<FromWorker> {
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => {
      this.pending.set(m.id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage(m, transfer);
    });
  }

  async run(feeds: Record<string, OrtTypes.Tensor>, fetches?: Record<string, OrtTypes.Tensor | null>, transferInputs = false): Promise<Record<string, OrtTypes.Tensor>> {
    const wf: Record<string, WireTensor> = {};
    for (const [k, t] of Object.entries(feeds)) wf[k] = wire(t);
    const wo = fetches ? Object.fromEntries(Object.entries(fetches).map(([k, t]) => [k, t ? wire(t) : null])) : undefined;
    // Buffers a typed array covers whole can move to the worker; any other is cloned (it may hold more).
    const moved = new Set<ArrayBuffer>();
    if (transferInputs) {
      for (const t of Object.values(wf)) {
        const d = t.data;
        if (d.buffer instanceof ArrayBuffer && d.byteOffset === 0 && d.byteLength === d.buffer.byteLength) moved.add(d.buffer);
      }
    }
    const r = await this.ask({ op: 'run', id: this.next++, feeds: wf, ...(wo ? { fetches: wo } : {}) }, [...moved]);
    if (r.op !== 'run') throw new Error(`the ONNX Runtime worker answered '${r.op}' to a run`);
    if (!r.ok) throw unwire(r.error);
    const T = ort().Tensor;
    const out: Record<string, OrtTypes.Tensor> = {};
    for (const [k, t] of Object.entries(r.outputs)) {
      const given = fetches?.[k];
      // A preallocated output: the worker wrote into its copy; the caller's buffer gets the values.
      if (given) (given.data as unknown as { set(a: ArrayLike<unknown>): void }).set(t.data as unknown as ArrayLike<unknown>);
      out[k] = given ?? new T(t.type as never, t.data as never, t.dims);
    }
    return out;
  }

  async release(): Promise<void> {
    if (!this.stopped) await this.ask({ op: 'release', id: this.next++ }).catch(() => undefined);
    await this.worker.terminate();
  }
}

async function openInWorker(model: string | Uint8Array, options: SessionOptions): Promise<Session> {
  disableOrtTelemetry(); // in this process's environment, which ONNX Runtime reads whichever thread starts it first
  const { thread: _thread, cudaProbe, ...rest } = options;
  const probe = probeData(cudaProbe);
  const worker = new Worker(new URL(import.meta.url), { workerData: { mark: WORKER_MARK, model, options: { ...rest, ...(probe ? { cudaProbe: probe } : {}) } } });
  const opened = await new Promise<Opened>((resolve, reject) => {
    const fail = (e: Error) => reject(e);
    worker.once('error', fail);
    worker.once('exit', (code) => reject(new Error(`the ONNX Runtime worker thread exited (code ${code}) before opening the model`)));
    worker.once('message', (m: FromWorker) => {
      worker.off('error', fail);
      worker.removeAllListeners('exit');
      if (m.op === 'open' && m.ok) resolve(m);
      else if (m.op === 'open') reject(unwire(m.error));
      else reject(new Error(`the ONNX Runtime worker answered '${m.op}' before opening the model`));
    });
  }).catch(async (e: Error) => {
    await worker.terminate();
    throw e;
  });
  const session = new WorkerSession(worker, opened) as unknown as OrtTypes.InferenceSession;
  return { session, provider: opened.provider, ...(opened.note ? { note: opened.note } : {}) };
}

/** The worker's side: opens the session as the main thread would, then answers runs one at a time. */
async function serveWorker(port: NonNullable<typeof parentPort>, data: { model: string | Uint8Array; options: SessionOptions }): Promise<void> {
  let s: Session;
  try {
    s = await createSession(data.model, data.options);
  } catch (e) {
    port.postMessage({ op: 'open', ok: false, error: wireError(e) } satisfies FromWorker);
    return;
  }
  const meta = (m: readonly unknown[]) => m.map((v) => ({ ...(v as object) }));
  port.postMessage({
    op: 'open',
    ok: true,
    provider: s.provider,
    ...(s.note ? { note: s.note } : {}),
    inputNames: [...s.session.inputNames],
    outputNames: [...s.session.outputNames],
    inputMetadata: meta(s.session.inputMetadata),
    outputMetadata: meta(s.session.outputMetadata),
  } satisfies FromWorker);
  port.on('message', async (m: ToWorker) => {
    if (m.op === 'release') {
      await s.session.release();
      port.postMessage({ op: 'release', id: m.id } satisfies FromWorker);
      port.close();
      return;
    }
    try {
      const T = ort().Tensor;
      const tensor = (t: WireTensor) => new T(t.type as never, t.data as never, t.dims);
      const feeds = Object.fromEntries(Object.entries(m.feeds).map(([k, t]) => [k, tensor(t)]));
      const fetches = m.fetches ? Object.fromEntries(Object.entries(m.fetches).map(([k, t]) => [k, t ? tensor(t) : null])) : undefined;
      const r = fetches ? await s.session.run(feeds, fetches) : await s.session.run(feeds);
      const outputs: Record<string, WireTensor> = {};
      for (const [k, t] of Object.entries(r)) outputs[k] = wire(t);
      const reply = { op: 'run', id: m.id, ok: true, outputs } satisfies FromWorker;
      // The binding gives each output an ArrayBuffer of its own: hand it over rather than copy it.
      const buffers = [...new Set(Object.values(outputs).map((t) => t.data.buffer as ArrayBuffer))];
      try {
        port.postMessage(reply, buffers);
      } catch {
        port.postMessage(reply);
      }
    } catch (e) {
      port.postMessage({ op: 'run', id: m.id, ok: false, error: wireError(e) } satisfies FromWorker);
    }
  });
}

if (!isMainThread && parentPort && (workerData as { mark?: string } | null)?.mark === WORKER_MARK) {
  void serveWorker(parentPort, workerData as { model: string | Uint8Array; options: SessionOptions });
}
