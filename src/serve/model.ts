/**
 * A model as `zoo serve` holds it: one ONNX Runtime session, what it is (its task from its metadata and
 * graph), its inputs and outputs in the protocol's terms, and the batcher every request to it goes through.
 *
 * A model argument is `name=ref` or `ref`; ref is anything the resolver runs (a local zoo name, a
 * published name, pulled on first use, an .onnx file, a training run directory of any task). A file is
 * served under its base name without `.onnx`, a name under itself.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { createSession, runSession, type HostTensor, type ProviderChoice, type Session, type SessionOptions } from '../runtime/ort.js';
import { graphIO, type TensorInfo } from '../runtime/graph_io.js';
import { resolveLoading } from '../api/pretrained.js';
import { looksLikePath, type ResolvedModel } from '../hub/resolve.js';
import { readOnnxMetadata } from '../onnx/metadata.js';
import { ImageClassifier } from '../predict/classifier.js';
import { openDetector, resolveDetectorFile, type DetectorSession } from '../api/detection.js';
import { openSegmenter, resolveSegmenterFile, type SegmenterSession } from '../api/segmentation.js';
import { isDetector } from '../detection/metadata.js';
import { isSegmenter } from '../segmentation/metadata.js';
import { RUN_FILES } from '../train/run_config.js';
import { Batcher, type Feeds, type Outputs } from './batcher.js';
import { datatypeOf, metaShape, type TensorMeta } from './protocol.js';

export const SERVE_TASKS = ['image-classification', 'object-detection', 'image-segmentation', 'tensor'] as const;
export type ServeTask = (typeof SERVE_TASKS)[number];

/** What clients may know of a served model (GET /v1/models). */
export interface ServedModelInfo {
  name: string;
  task: ServeTask;
  /** The ONNX file it runs. */
  file: string;
  provider: 'cpu' | 'cuda';
  precision: 'fp32' | 'fp16';
  labels?: string[];
  inputs: TensorMeta[];
  outputs: TensorMeta[];
  /** Rows combined into one run at most (1: the model has no dynamic batch dimension). */
  maxBatch: number;
}

export interface ModelSpec {
  name: string;
  ref: string;
}

/** Model names are URL path segments and directory names (Triton's repository): letters, digits, '.', '_', '-'. */
export function checkServeName(name: string, arg: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name) || name.includes('..')) {
    throw new UserError(`'${arg}': the model name '${name}' must be letters, digits, '.', '_' or '-' (name it with name=${arg.includes('=') ? '...' : arg})`, { exitCode: 2 });
  }
}

/** `name=ref` or `ref` (a file: its base name without .onnx; a run directory: its base name; else the name). */
export function parseModelSpec(arg: string): ModelSpec {
  const eq = arg.indexOf('=');
  let name: string;
  let ref: string;
  if (eq > 0 && !existsSync(arg)) {
    name = arg.slice(0, eq);
    ref = arg.slice(eq + 1);
    if (!ref) throw new UserError(`'${arg}': nothing after '=' (give name=file.onnx)`, { exitCode: 2 });
  } else {
    ref = arg;
    name = looksLikePath(arg) || existsSync(arg) ? path.basename(path.resolve(arg)).replace(/\.onnx$/i, '') : arg;
  }
  checkServeName(name, arg);
  return { name, ref };
}

export interface OpenModelOptions {
  device?: ProviderChoice;
  precision?: 'auto' | 'fp32' | 'fp16';
  session?: Omit<SessionOptions, 'provider' | 'warmup'>;
  maxBatch: number;
  maxDelayMs: number;
  maxQueue: number;
  warmup?: boolean;
  onNote?: (line: string) => void;
  onRun?: (model: string, rows: number, requests: number, seconds: number) => void;
}

/** The parts a task needs to answer `:predict` (one of them, after the task). */
export type TaskParts =
  | { task: 'image-classification'; classifier: ImageClassifier }
  | { task: 'object-detection'; detector: DetectorSession }
  | { task: 'image-segmentation'; segmenter: SegmenterSession }
  | { task: 'tensor' };

export class ServedModel {
  readonly batcher: Batcher;
  private constructor(
    readonly info: ServedModelInfo,
    readonly session: Session,
    readonly parts: TaskParts,
    options: OpenModelOptions,
  ) {
    const preallocate = this.preallocatable();
    this.batcher = new Batcher((feeds) => this.runNow(feeds, preallocate), {
      name: info.name,
      maxBatch: info.maxBatch,
      maxDelayMs: options.maxDelayMs,
      maxQueue: options.maxQueue,
      onRun: (rows, requests, seconds) => options.onRun?.(info.name, rows, requests, seconds),
    });
  }

  /** Outputs whose every dimension but the batch is fixed: ONNX Runtime writes them into buffers given to it. */
  private preallocatable(): TensorMeta[] {
    return this.info.outputs.filter((o) => o.shape.length > 0 && o.shape[0] === -1 && o.shape.slice(1).every((d) => d > 0) && ALLOC[o.datatype]);
  }

  private async runNow(feeds: Feeds, preallocate: TensorMeta[]): Promise<Outputs> {
    const rows = Object.values(feeds)[0]?.dims[0] ?? 1;
    const outputs: Record<string, HostTensor> = {};
    for (const o of preallocate) {
      const dims = [rows, ...o.shape.slice(1)];
      const [type, Array_] = ALLOC[o.datatype]!;
      outputs[o.name] = { type, data: new Array_(dims.reduce((a, b) => a * b, 1)), dims };
    }
    return runSession(this.session, feeds, preallocate.length ? { outputs } : {});
  }

  /** Runs feeds (rows along dimension 0) through the batcher. */
  infer(feeds: Feeds, timeoutMs: number): Promise<Outputs> {
    return this.batcher.submit(feeds, timeoutMs);
  }

  async close(): Promise<void> {
    await this.session.session.release();
  }

  static async open(spec: ModelSpec, options: OpenModelOptions): Promise<ServedModel> {
    const found = await resolveServed(spec.ref);
    const device = options.device ?? 'auto';
    let opened = await openParts(found, found.file, device, options);
    let precision: 'fp32' | 'fp16' = 'fp32';
    const half = found.fp16;
    if (options.precision === 'fp16') {
      if (!half) throw new UserError(`${spec.ref} has no FP16 variant to serve (--precision fp16); pull it with 'zoo pull ${spec.ref} --fp16' or export one with 'zoo export --fp16'`, { exitCode: 2 });
    }
    // FP16 pays on a GPU (tensor cores); on the CPU, ONNX Runtime computes float16 more slowly than float32.
    const wantHalf = half && (options.precision === 'fp16' || ((options.precision ?? 'auto') === 'auto' && opened.session.provider === 'cuda'));
    if (wantHalf) {
      await opened.session.session.release();
      opened = await openParts(found, half, device, options);
      precision = 'fp16';
      if (opened.session.provider === 'cpu' && options.precision !== 'fp16') {
        await opened.session.session.release();
        opened = await openParts(found, found.file, device, options);
        precision = 'fp32';
      }
    }
    const { session, parts } = opened;
    try {
      if (session.note) options.onNote?.(`${spec.name}: ${session.note}`);
      const io = graphIO(session);
      const inputs = io.inputs.map((t) => tensorMeta(t, spec.name));
      const outputs = io.outputs.map((t) => tensorMeta(t, spec.name));
      const batched = inputs.length > 0 && inputs.every((t) => t.shape.length > 0 && t.shape[0] === -1);
      const fixed = inputs[0]?.shape[0];
      const maxBatch = batched ? options.maxBatch : fixed && fixed > 0 ? fixed : 1;
      const labels = parts.task === 'image-classification' ? parts.classifier.labels : parts.task === 'object-detection' ? parts.detector.meta.labels : parts.task === 'image-segmentation' ? parts.segmenter.meta.labels : undefined;
      const info: ServedModelInfo = {
        name: spec.name,
        task: parts.task,
        file: wantHalf && precision === 'fp16' ? half! : found.file,
        provider: session.provider,
        precision,
        ...(labels ? { labels: [...labels] } : {}),
        inputs,
        outputs,
        maxBatch,
      };
      const model = new ServedModel(info, session, parts, options);
      if (options.warmup ?? true) await model.warmup();
      return model;
    } catch (e) {
      await session.session.release();
      throw e;
    }
  }

  /** One run at the shape requests will have (the first run allocates and plans; keep it off the first request). */
  private async warmup(): Promise<void> {
    const feeds: Feeds = {};
    for (const t of this.info.inputs) {
      const dims = t.shape.map((d, i) => (d > 0 ? d : i === 0 ? 1 : this.warmupSide()));
      const alloc = ALLOC[t.datatype];
      if (!alloc) return;
      feeds[t.name] = { type: alloc[0], data: new alloc[1](dims.reduce((a, b) => a * b, 1)), dims };
    }
    await this.runNow(feeds, this.preallocatable());
  }

  private warmupSide(): number {
    const p = this.parts;
    if (p.task === 'object-detection') return p.detector.meta.minSize;
    if (p.task === 'image-classification') return p.classifier.preprocessing.crop;
    return 224;
  }
}

const ALLOC: Record<string, [HostTensor['type'], new (n: number) => HostTensor['data']]> = {
  FP32: ['float32', Float32Array],
  FP16: ['float16', Uint16Array],
  INT64: ['int64', BigInt64Array],
  INT32: ['int32', Int32Array],
  UINT8: ['uint8', Uint8Array],
  INT8: ['int8', Int8Array],
  BOOL: ['bool', Uint8Array],
} as Record<string, [HostTensor['type'], new (n: number) => HostTensor['data']]>;

function tensorMeta(t: TensorInfo, model: string): TensorMeta {
  const datatype = datatypeOf(t.type);
  if (!datatype) throw new UserError(`${model}: its tensor '${t.name}' is ${t.type}, which zoo serve does not carry (FP32, FP16, INT64, INT32, INT8, UINT8, BOOL)`);
  return { name: t.name, datatype, shape: metaShape(t.shape) };
}

interface FoundModel {
  file: string;
  fp16?: string;
  task: 'classifier-or-tensor' | 'object-detection' | 'image-segmentation';
  resolved?: ResolvedModel;
}

/** The ONNX file of a model argument and what its metadata says it is. */
async function resolveServed(ref: string): Promise<FoundModel> {
  const runDir = existsSync(path.join(ref, RUN_FILES.config)) ? path.join(ref, RUN_FILES.onnx) : undefined;
  let file: string | undefined = runDir && existsSync(runDir) ? runDir : undefined;
  let resolved: ResolvedModel | undefined;
  let firstError: unknown;
  if (!file) {
    try {
      resolved = await resolveLoading(ref, 'run', {}, 'zoo serve');
      file = resolved.onnx!;
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      firstError = e;
    }
  }
  if (!file) {
    for (const head of [resolveDetectorFile, resolveSegmenterFile]) {
      try {
        file = await head(ref);
        break;
      } catch (e) {
        if (!(e instanceof UserError)) throw e;
      }
    }
  }
  if (!file) throw firstError;
  const props = await readOnnxMetadata(file);
  const task = isDetector(props) ? 'object-detection' : isSegmenter(props) ? 'image-segmentation' : 'classifier-or-tensor';
  const fp16 = resolved?.local?.record.onnxFp16 ? path.join(resolved.local.dir, resolved.local.record.onnxFp16.file) : undefined;
  return { file, task, ...(fp16 && existsSync(fp16) ? { fp16 } : {}), ...(resolved ? { resolved } : {}) };
}

async function openParts(found: FoundModel, file: string, device: ProviderChoice, options: OpenModelOptions): Promise<{ session: Session; parts: TaskParts }> {
  const session = options.session ?? {};
  if (found.task === 'object-detection') {
    const detector = await openDetector(file, { device, session });
    return { session: detector.session, parts: { task: 'object-detection', detector } };
  }
  if (found.task === 'image-segmentation') {
    const segmenter = await openSegmenter(file, { device, session });
    return { session: segmenter.session, parts: { task: 'image-segmentation', segmenter } };
  }
  if (found.resolved) {
    const notes: string[] = [];
    try {
      const classifier = await ImageClassifier.open({ ...found.resolved, onnx: file }, { provider: device, session, notes });
      for (const n of [...found.resolved.notes, ...notes]) options.onNote?.(`${path.basename(file)}: ${n}`);
      return { session: classifier.session, parts: { task: 'image-classification', classifier } };
    } catch (e) {
      if (!(e instanceof UserError) || !/is not (an image classifier|a classifier)/.test(e.message)) throw e;
    }
  }
  // Any other ONNX graph: served on the protocol's tensor endpoints only.
  return { session: await createSession(file, { ...session, provider: device }), parts: { task: 'tensor' } };
}
