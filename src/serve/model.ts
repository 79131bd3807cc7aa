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
import { cudaReason, diagnoseCudaFailure } from '../runtime/cuda.js';
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
import { HttpError } from './http.js';
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

/** Rows and dynamic elements a model takes per run, and how messages name the option that sets each. */
export interface RunLimits {
  /** Rows of one request at most; undefined where the first dimension is not a batch the server may combine. */
  maxRows?: number;
  /** Elements of the inputs' dynamic dimensions (after the batch) times rows, per run at most. */
  maxElements: number;
  /** The option that sets maxElements ('--seg-pixels' or '--max-elements'). */
  elementsOption: string;
}

/** Elements per run at most of the dynamic dimensions of a model's inputs when nothing else says (16 Mi). */
export const DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024;

/**
 * What a request costs beyond its rows: for each input, rows times the product of its dynamic dimensions
 * after the first (the sizes a client chooses: a segmenter's height x width); the largest over the inputs.
 * Fixed dimensions are the model's own and do not grow with requests.
 */
export function dynamicElements(feeds: Record<string, { dims: readonly number[] }>, inputs: readonly TensorMeta[], batched: boolean): number {
  let most = 0;
  for (const meta of inputs) {
    const t = feeds[meta.name];
    if (!t) continue;
    let n = 1;
    meta.shape.forEach((d, i) => {
      if (d === -1 && (i > 0 || !batched)) n *= t.dims[i] ?? 1;
    });
    most = Math.max(most, (batched ? (t.dims[0] ?? 1) : 1) * n);
  }
  return most;
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
  /** Pixels (height x width, over all the images of a run) a segmenter runs on at most: 1 Mi. */
  segmentationPixels?: number;
  /** Elements of the inputs' dynamic dimensions a run of any other model holds at most (DEFAULT_MAX_ELEMENTS). */
  maxElements?: number;
  onNote?: (line: string) => void;
  onRun?: (model: string, rows: number, requests: number, seconds: number) => void;
  /** Opens a model's session and task parts (default `openParts`); tests put sessions in that fail as a GPU's would. */
  openParts?: PartsOpener;
}

/** Opens `file` of a model on `device`: its first session and the parts of its task. */
export type PartsOpener = (found: ServableModel, file: string, device: ProviderChoice, options: OpenModelOptions) => Promise<{ session: Session; parts: TaskParts }>;

/** The parts a task needs to answer `:predict` (one of them, after the task). */
export type TaskParts =
  | { task: 'image-classification'; classifier: ImageClassifier }
  | { task: 'object-detection'; detector: DetectorSession }
  | { task: 'image-segmentation'; segmenter: SegmenterSession }
  | { task: 'tensor' };

export class ServedModel {
  readonly batcher: Batcher;
  /** Rows and elements a request or a run may hold. */
  readonly limits: RunLimits;
  private constructor(
    readonly info: ServedModelInfo,
    /** The first instance's session (the one the task's parts hold). */
    readonly session: Session,
    readonly parts: TaskParts,
    options: OpenModelOptions,
    /** Every instance's session, the first included. */
    readonly sessions: readonly Session[] = [session],
    /** Whether requests may share a run (`combinable`). */
    readonly batched = info.maxBatch > 1,
  ) {
    const segmenter = info.task === 'image-segmentation';
    this.limits = {
      ...(batched ? { maxRows: info.maxBatch } : {}),
      maxElements: segmenter ? (options.segmentationPixels ?? 1024 * 1024) : (options.maxElements ?? DEFAULT_MAX_ELEMENTS),
      elementsOption: segmenter ? '--seg-pixels' : '--max-elements',
    };
    this.batcher = new Batcher(
      async (feeds, instance, owned) => {
        try {
          return await runSession(this.sessions[instance]!, feeds, { transferInputs: owned });
        } catch (e) {
          throw e instanceof UserError || e instanceof HttpError ? e : ModelRunError.from(e);
        }
      },
      {
        instances: sessions.length,
        name: info.name,
        maxBatch: info.maxBatch,
        combine: batched,
        maxDelayMs: options.maxDelayMs,
        maxQueue: options.maxQueue,
        maxElements: this.limits.maxElements,
        elements: (feeds) => dynamicElements(feeds, info.inputs, batched),
        onRun: (rows, requests, seconds) => options.onRun?.(info.name, rows, requests, seconds),
      },
    );
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
    const open = options.openParts ?? openParts;
    /** The first session on `dev`, of the precision that suits the provider it ended on. */
    const choose = async (dev: ProviderChoice): Promise<Opened> => {
      let opened = await open(found, found.file, dev, options);
      // FP16 pays on a GPU (tensor cores); on the CPU, ONNX Runtime computes float16 more slowly than float32.
      const wantHalf = half && (options.precision === 'fp16' || ((options.precision ?? 'auto') === 'auto' && opened.session.provider === 'cuda'));
      if (!wantHalf) return { ...opened, file: found.file, precision: 'fp32' };
      await opened.session.session.release();
      opened = await open(found, half, dev, options);
      if (opened.session.provider === 'cpu' && options.precision !== 'fp16') {
        await opened.session.session.release();
        return { ...(await open(found, found.file, dev, options)), file: found.file, precision: 'fp32' };
      }
      return { ...opened, file: half, precision: 'fp16' };
    };
    const warm = options.warmup ?? true;
    let chosen = await choose(device);
    let warmed = false;
    if (warm) ({ chosen, warmed } = await warmFirst(spec.name, chosen, choose, device, options));
    const { session, parts, precision } = chosen;
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
        file: chosen.file,
        provider: session.provider,
        precision,
        ...(labels ? { labels: [...labels] } : {}),
        inputs,
        outputs,
        maxBatch,
        instances: options.instances ?? 1,
      };
      const instances = options.instances ?? 1;
      // Further instances open on the provider the first one ran on.
      for (let i = 1; i < instances; i++) sessions.push(await createSession(info.file, { ...options.session, provider: session.provider }));
      const model = new ServedModel(info, session, parts, options, sessions, combinable(io));
      if (warmed) for (const s of sessions.slice(1)) await runSession(s, warmupFeeds(inputs, parts));
      return model;
    } catch (e) {
      for (const s of sessions) await s.session.release();
      throw e;
    }
  }
}

interface Opened {
  session: Session;
  parts: TaskParts;
  file: string;
  precision: 'fp32' | 'fp16';
}

/** The first line of an error's message. */
const firstLine = (e: unknown): string => ((e as Error)?.message ?? String(e)).split('\n')[0]!.trim();

/**
 * The first instance's warm-up run (the first run allocates and plans; keep it off the first request). On
 * CUDA a failed first run (cuDNN is loaded at the first convolution) is tried on the CPU: where the CPU
 * runs it, CUDA was at fault and `auto` goes on on the CPU, saying why (`cuda` refuses with the same
 * reason). A graph of no zoo task is warmed up at guessed sizes, which need not suit it: a warm-up that
 * fails there on every provider is skipped with a note.
 */
async function warmFirst(name: string, first: Opened, choose: (dev: ProviderChoice) => Promise<Opened>, device: ProviderChoice, options: OpenModelOptions): Promise<{ chosen: Opened; warmed: boolean }> {
  const tensor = first.parts.task === 'tensor';
  const feeds = (o: Opened) => warmupFeeds(graphIO(o.session).inputs.map((t) => tensorMeta(t, name)), o.parts);
  const skip = (e: unknown) => {
    options.onNote?.(`${name}: warm-up skipped: the graph does not run at the sizes guessed for its dynamic dimensions (${shapesText(feeds(first))}): ${cleanOrtMessage(firstLine(e))}`);
    return { chosen: first, warmed: false };
  };
  const failed = (e: unknown) => (e instanceof UserError ? new UserError(`${name}: warm-up run: ${e.message}`) : new UserError(`${name}: the warm-up run failed in ONNX Runtime: ${cleanOrtMessage(firstLine(e))}`));
  try {
    await runSession(first.session, feeds(first));
    return { chosen: first, warmed: true };
  } catch (e) {
    if (first.session.provider === 'cpu') {
      if (tensor) return skip(e);
      await first.session.session.release();
      throw failed(e);
    }
    let cpu: Opened | undefined;
    try {
      cpu = await choose('cpu');
      await runSession(cpu.session, feeds(cpu));
    } catch (e2) {
      if (cpu) await cpu.session.session.release();
      if (tensor) return skip(e2);
      await first.session.session.release();
      throw failed(e2);
    }
    await first.session.session.release();
    const reason = cudaReason(diagnoseCudaFailure((e as Error)?.message ?? String(e), options.session?.cudaProbe ?? {}));
    if (device === 'cuda') {
      await cpu.session.session.release();
      throw new UserError(`cannot run on CUDA: ${reason}`);
    }
    options.onNote?.(`${name}: CUDA not used: the first run on CUDA failed: ${reason}; using the CPU`);
    return { chosen: cpu, warmed: true };
  }
}

/** Zeroed feeds at the shape requests will have: one row, dynamic sizes from the task (224 when none says). */
function warmupFeeds(inputs: readonly TensorMeta[], parts: TaskParts): Feeds {
  const side = parts.task === 'object-detection' ? parts.detector.meta.minSize : parts.task === 'image-classification' ? parts.classifier.preprocessing.crop : 224;
  const feeds: Feeds = {};
  for (const t of inputs) {
    const dims = t.shape.map((d, i) => (d > 0 ? d : i === 0 ? 1 : side));
    feeds[t.name] = allocTensor(DATATYPES[t.datatype]!.type, dims);
  }
  return feeds;
}

function shapesText(feeds: Feeds): string {
  return Object.entries(feeds).map(([k, t]) => `${k} [${t.dims.join(', ')}]`).join(', ');
}

/**
 * ONNX Runtime's run error in one line without its source locations: "Non-zero status code returned while
 * running Reshape node. Name:'r' Status Message: /onnxruntime_src/...h:84 onnxruntime::...(...) cond was
 * false. The input tensor cannot be reshaped ..." becomes "Reshape node 'r': The input tensor cannot be
 * reshaped ...".
 */
export function cleanOrtMessage(message: string): string {
  let text = message.split('\n')[0]!.trim();
  let where = '';
  const m = /^Non-zero status code returned while running (\S+) node\. Name:'([^']*)' Status Message: (.*)$/.exec(text);
  if (m) {
    where = `${m[1]} node '${m[2]}': `;
    text = m[3]!;
  }
  // A source location (path:line) and the C++ function after it.
  text = text.replace(/^\S*\.(?:h|hpp|cc|cpp|cu|cuh):\d+\s+/, '');
  const assertion = / was false\. /.exec(text);
  if (assertion) text = text.slice(assertion.index + assertion[0].length);
  else text = text.replace(/^(?:[\w:~<>*&]+\s+)*[\w:~<>]+\([^()]*\)\s+/, '');
  text = text.replace(/\/onnxruntime_src\/\S+/g, '').trim();
  return `${where}${text}`.slice(0, 400);
}

/**
 * A run ONNX Runtime refused for the values it was given (a shape the graph cannot take, a broadcast that
 * does not fit, memory it could not get): its message is ONNX Runtime's, made one clean line.
 */
export class ModelRunError extends Error {
  constructor(
    message: string,
    /** The run could not get the memory it needed. */
    readonly memory: boolean,
  ) {
    super(message);
    this.name = 'ModelRunError';
  }

  static from(e: unknown): ModelRunError | Error {
    const text = (e as Error)?.message ?? String(e);
    if (!/^Non-zero status code returned while running|Failed to allocate memory|bad_alloc|out of memory/i.test(text)) return e instanceof Error ? e : new Error(text);
    return new ModelRunError(cleanOrtMessage(text), /Failed to allocate memory|bad_alloc|out of memory/i.test(text));
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

/** Opens a model's session and the parts of its task, as its task's own opener does. */
export async function openParts(found: ServableModel, file: string, device: ProviderChoice, options: OpenModelOptions): Promise<{ session: Session; parts: TaskParts }> {
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
