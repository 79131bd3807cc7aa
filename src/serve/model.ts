/**
 * A model as `zoo serve` holds it: its ONNX Runtime sessions (instances; one by default), what it is (its task from its metadata and
 * graph), its inputs and outputs in the protocol's terms, and the batcher every request to it goes through.
 *
 * A model argument is `name=ref` or `ref`; ref is anything the resolver runs (a local zoo name, a
 * published name, pulled on first use, an .onnx file, a training run directory of any task). A file is
 * served under its base name without `.onnx`, a name under itself.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.js';
import { allocTensor, createSession, runSession, type ProviderChoice, type Session, type SessionOptions } from '../runtime/ort.js';
import { graphIO, type TensorInfo } from '../runtime/graph_io.js';
import { resolveLoading } from '../api/pretrained.js';
import { looksLikePath, type ResolvedModel } from '../hub/resolve.js';
import { findLocalModel } from '../hub/local.js';
import { hubSettings, type HubSettings } from '../hub/settings.js';
import { labelNames, readMetadata, readOnnxMetadata } from '../onnx/metadata.js';
import { loadPublishedDetectors } from '../detection/weights.js';
import { loadPublishedSegmenters } from '../segmentation/weights.js';
import { ImageClassifier } from '../predict/classifier.js';
import { openDetector, resolveDetectorFile, type DetectorSession } from '../api/detection.js';
import { openSegmenter, resolveSegmenterFile, type SegmenterSession } from '../api/segmentation.js';
import { isDetector, parseDetectionMetadata } from '../detection/metadata.js';
import { isSegmenter, parseSegmentationMetadata } from '../segmentation/metadata.js';
import { RUN_FILES } from '../train/run_config.js';
import { Batcher, type Feeds, type Outputs } from './batcher.js';
import { DATATYPES, datatypeOf, metaShape, type TensorMeta } from './protocol.js';

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
  /** Rows combined into one run at most (1: requests run alone, the graph's outputs do not follow a batch dimension). */
  maxBatch: number;
  /** Sessions running batches side by side. */
  instances: number;
}

/** Model names are URL path segments of zoo serve and directories of a Triton repository: letters, digits, '.', '_', '-'. */
export function checkServeName(name: string, arg: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name) || name.includes('..')) {
    const hint = arg.includes('=') ? '' : ` (name it: <name>=${arg})`;
    throw new UserError(`'${arg}': '${name}' cannot be a model name (a URL path segment of zoo serve, a directory of a Triton repository): letters, digits, '.', '_' or '-', starting with a letter or digit, at most 128, no '..'${hint}`, { exitCode: 2 });
  }
}

export interface ModelSpec {
  /** The model's name in the repository. */
  name: string;
  /** What the resolver is given. */
  ref: string;
}

/**
 * `name=ref` or `ref`, named as `zoo serve` and `zoo export --triton` name it: a file by its base name without `.onnx`, a run
 * directory by its base name, anything else by itself. Pure but for the existence probe (a file whose
 * name holds '=' is taken whole).
 */
export function parseModelSpec(arg: string, exists: (p: string) => boolean = existsSync): ModelSpec {
  const eq = arg.indexOf('=');
  let spec: ModelSpec;
  if (eq > 0 && !exists(arg)) {
    spec = { name: arg.slice(0, eq), ref: arg.slice(eq + 1) };
    if (!spec.ref) throw new UserError(`'${arg}': nothing after '=' (give <name>=<model>)`, { exitCode: 2 });
  } else {
    const asPath = looksLikePath(arg) || exists(arg);
    spec = { name: asPath ? path.basename(path.resolve(expandHome(arg))).replace(/\.onnx$/i, '') : arg, ref: arg };
  }
  checkServeName(spec.name, arg);
  return spec;
}

function expandHome(ref: string): string {
  return ref === '~' || ref.startsWith('~/') ? path.join(os.homedir(), ref.slice(1)) : ref;
}

/** A model's ONNX file and what it is. */
export interface ServableModel {
  file: string;
  task: ServeTask;
  /** Class names, in output index order. */
  labels?: string[];
  notes: string[];
  /** The classifier resolver's answer, for classifiers (preprocessing, labels, the local zoo record). */
  resolved?: ResolvedModel;
  /** The FP16 variant of a local zoo model, where it has one. */
  fp16?: string;
}

/** The 'task' a run directory's run.json records (detection and segmentation runs record one). */
function runTask(dir: string): unknown {
  try {
    return (JSON.parse(readFileSync(path.join(dir, RUN_FILES.config), 'utf8')) as { task?: unknown } | null)?.task;
  } catch {
    return undefined; // the resolver names what is wrong with it
  }
}

const isDirectory = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

/**
 * The ONNX file a model argument runs, found the way the commands that run models find it: a run
 * directory of any task, a published detector or segmenter (pulled), a detector in the local zoo, or
 * anything the classifier resolver runs (a local zoo name, a pulled published name, an .onnx file).
 * Its task and class names come from the file's metadata (zoo.task), for classifiers from the resolver.
 */
export async function resolveServableModel(ref: string, options: { settings?: HubSettings; command?: string } = {}): Promise<ServableModel> {
  const settings = options.settings ?? hubSettings();
  const command = options.command ?? 'zoo serve';
  const local = expandHome(ref);
  let file: string | undefined;
  let resolved: ResolvedModel | undefined;
  if (isDirectory(local) && existsSync(path.join(local, RUN_FILES.config))) {
    const task = runTask(local);
    if (task === 'detection') file = await resolveDetectorFile(local);
    else if (task === 'segmentation') file = await resolveSegmenterFile(local);
  } else if (!looksLikePath(ref) && !existsSync(local)) {
    const named = (list: readonly { name: string; aliases: readonly string[] }[]) => list.some((e) => e.name === ref || e.aliases.includes(ref));
    if (named(loadPublishedDetectors())) file = await resolveDetectorFile(ref);
    else if (named(loadPublishedSegmenters())) file = await resolveSegmenterFile(ref);
    else {
      const own = await findLocalModel(ref, settings);
      if (own?.record.task === 'object-detection') file = own.onnx;
    }
  }
  if (!file) {
    // A published classifier not in the cache yet is pulled, as pipeline() pulls it.
    resolved = await resolveLoading(ref, 'run', { settings }, command);
    file = resolved.onnx!;
  }
  const props = await readOnnxMetadata(file);
  if (isDetector(props)) return { file, task: 'object-detection', labels: parseDetectionMetadata(props, file).labels, notes: [] };
  if (isSegmenter(props)) return { file, task: 'image-segmentation', labels: parseSegmentationMetadata(props, file).labels, notes: [] };
  const meta = resolved?.meta ?? readMetadata(props, file);
  const labels = labelNames(meta);
  const task: ServeTask = labels || meta.preprocessing || meta.arch ? 'image-classification' : 'tensor';
  const record = resolved?.local?.record.onnxFp16;
  const fp16 = record && resolved?.local ? path.join(resolved.local.dir, record.file) : undefined;
  return { file, task, ...(labels ? { labels } : {}), notes: resolved?.notes ?? [], ...(resolved ? { resolved } : {}), ...(fp16 && existsSync(fp16) ? { fp16 } : {}) };
}

export interface OpenModelOptions {
  device?: ProviderChoice;
  settings?: HubSettings;
  precision?: 'auto' | 'fp32' | 'fp16';
  session?: Omit<SessionOptions, 'provider' | 'warmup'>;
  /** Sessions of the model that run batches side by side (default 1). */
  instances?: number;
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
    /** The first instance's session (the one the task's parts hold). */
    readonly session: Session,
    readonly parts: TaskParts,
    options: OpenModelOptions,
    /** Every instance's session, the first included. */
    readonly sessions: readonly Session[] = [session],
  ) {
    this.batcher = new Batcher((feeds, instance, owned) => runSession(this.sessions[instance]!, feeds, { transferInputs: owned }), {
      instances: sessions.length,
      name: info.name,
      maxBatch: info.maxBatch,
      combine: info.maxBatch > 1,
      maxDelayMs: options.maxDelayMs,
      maxQueue: options.maxQueue,
      onRun: (rows, requests, seconds) => options.onRun?.(info.name, rows, requests, seconds),
    });
  }

  /** Runs feeds (rows along dimension 0) through the batcher; `signal` withdraws a request still waiting. */
  infer(feeds: Feeds, timeoutMs: number, signal?: AbortSignal): Promise<Outputs> {
    return this.batcher.submit(feeds, timeoutMs, signal);
  }

  async close(): Promise<void> {
    for (const s of this.sessions) await s.session.release();
  }

  static async open(spec: ModelSpec, options: OpenModelOptions): Promise<ServedModel> {
    const found = await resolveServableModel(spec.ref, { ...(options.settings ? { settings: options.settings } : {}) });
    const device = options.device ?? 'auto';
    const half = found.fp16;
    if (options.precision === 'fp16' && !half) throw noFp16Variant(spec.ref, '--precision fp16');
    let opened = await openParts(found, found.file, device, options);
    let precision: 'fp32' | 'fp16' = 'fp32';
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
    const sessions: Session[] = [session];
    try {
      if (session.note) options.onNote?.(`${spec.name}: ${session.note}`);
      const io = graphIO(session);
      const inputs = io.inputs.map((t) => tensorMeta(t, spec.name));
      const outputs = io.outputs.map((t) => tensorMeta(t, spec.name));
      const maxBatch = combinable(io) ? options.maxBatch : 1;
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
        instances: options.instances ?? 1,
      };
      const instances = options.instances ?? 1;
      for (let i = 1; i < instances; i++) sessions.push(await createSession(info.file, { ...options.session, provider: session.provider }));
      const model = new ServedModel(info, session, parts, options, sessions);
      if (options.warmup ?? true) await model.warmup();
      return model;
    } catch (e) {
      for (const s of sessions) await s.session.release();
      throw e;
    }
  }

  /** One run at the shape requests will have (the first run allocates and plans; keep it off the first request). */
  private async warmup(): Promise<void> {
    const feeds: Feeds = {};
    for (const t of this.info.inputs) {
      const dims = t.shape.map((d, i) => (d > 0 ? d : i === 0 ? 1 : this.warmupSide()));
      feeds[t.name] = allocTensor(DATATYPES[t.datatype]!.type, dims);
    }
    for (const s of this.sessions) await runSession(s, feeds);
  }

  private warmupSide(): number {
    const p = this.parts;
    if (p.task === 'object-detection') return p.detector.meta.minSize;
    if (p.task === 'image-classification') return p.classifier.preprocessing.crop;
    return 224;
  }
}

/** The usage error for a model without an FP16 variant, with the way to get one that fits what was given. */
export function noFp16Variant(ref: string, option: string): UserError {
  const how = looksLikePath(ref) || existsSync(ref)
    ? `a file is served as it is: give the FP16 export itself (zoo export ... --fp16 -o m16.onnx) without ${option}`
    : `pull it with 'zoo pull ${ref} --fp16'`;
  return new UserError(`${ref} has no FP16 variant (${option}); ${how}`, { exitCode: 2 });
}

/**
 * Whether requests may share a run: every input and every output starts with one and the same symbolic
 * dimension (zoo's exports name it 'batch'), so a combined run's outputs split back into each request's
 * rows. A graph whose outputs do not follow that dimension (a transpose, a shape, a count) runs each
 * request alone.
 */
export function combinable(io: { inputs: readonly TensorInfo[]; outputs: readonly TensorInfo[] }): boolean {
  const first = io.inputs[0]?.shape[0];
  return typeof first === 'string' && first !== '' && [...io.inputs, ...io.outputs].every((t) => t.shape[0] === first);
}

function tensorMeta(t: TensorInfo, model: string): TensorMeta {
  const datatype = datatypeOf(t.type);
  if (!datatype) throw new UserError(`${model}: its tensor '${t.name}' is ${t.type}, which zoo serve does not carry (FP32, FP16, INT64, INT32, INT8, UINT8, BOOL)`);
  return { name: t.name, datatype, shape: metaShape(t.shape) };
}

async function openParts(found: ServableModel, file: string, device: ProviderChoice, options: OpenModelOptions): Promise<{ session: Session; parts: TaskParts }> {
  const session = options.session ?? {};
  if (found.task === 'object-detection') {
    const detector = await openDetector(file, { device, session });
    return { session: detector.session, parts: { task: 'object-detection', detector } };
  }
  if (found.task === 'image-segmentation') {
    const segmenter = await openSegmenter(file, { device, session });
    return { session: segmenter.session, parts: { task: 'image-segmentation', segmenter } };
  }
  if (found.task === 'image-classification' && found.resolved) {
    const notes: string[] = [];
    try {
      const classifier = await ImageClassifier.open({ ...found.resolved, onnx: file }, { provider: device, session, notes });
      for (const n of [...found.notes, ...notes]) options.onNote?.(`${path.basename(file)}: ${n}`);
      return { session: classifier.session, parts: { task: 'image-classification', classifier } };
    } catch (e) {
      if (!(e instanceof UserError) || !/is not (an image classifier|a classifier)/.test(e.message)) throw e;
    }
  }
  // Any other ONNX graph: served on the protocol's tensor endpoints only.
  return { session: await createSession(file, { ...session, provider: device }), parts: { task: 'tensor' } };
}
