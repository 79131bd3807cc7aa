/**
 * A model repository for NVIDIA Triton Inference Server, written from the models `zoo serve` runs, so
 * that a service can move to Triton (or KServe's Triton runtime) under the same model names, with the
 * same tensors and the same Open Inference Protocol requests.
 *
 *   <dir>/<name>/config.pbtxt    Triton's ModelConfig (model_config.proto, triton-inference-server/common) in protobuf text format
 *   <dir>/<name>/labels.txt      the class names, one a line, where the model has them
 *   <dir>/<name>/1/model.onnx    a copy of the model
 *
 * The configuration follows what Triton's core and its onnxruntime backend check when they load a model:
 *   - batching (max_batch_size > 0) needs every input and output to start with a dynamic dimension, and
 *     `dims` then leave that dimension out; a model whose first dimension is fixed anywhere gets
 *     max_batch_size 0, full dims and no dynamic batcher;
 *   - dynamic dimensions are -1, and an output's dims must be the model's exactly;
 *   - no dims may be empty: a tensor that is only its batch dimension ([batch], a detector's
 *     num_detections) is dims [1] with reshape { shape: [ ] }, a scalar of a model without batching dims [1];
 *   - the GPU execution accelerators the onnxruntime backend knows are "tensorrt" and "cuda" (the CUDA
 *     execution provider is its default on GPU instances; naming it is where its options go).
 * A classifier's output names labels.txt as its label_filename, which Triton's classification extension
 * reads (`"parameters": {"classification": k}` on a requested output returns "score:index:label").
 *
 * Everything is resolved and checked before anything is written; each model's directory is assembled
 * under a hidden name in the repository and renamed into place, so Triton never sees half a model.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { lstat, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../errors.js';
import { ensureDir, writeFileAtomic } from '../io/atomic.js';
import { createSession } from '../runtime/ort.js';
import { graphIO, type GraphIO, type TensorInfo } from '../runtime/graph_io.js';
import type { HubSettings } from '../hub/settings.js';
import { combinable, noFp16Variant, parseModelSpec, resolveServableModel, type ModelSpec, type ServeTask } from './model.js';

/** Where Triton places a model's instances: KIND_GPU, KIND_CPU, or KIND_AUTO (GPUs where there are any). */
export const TRITON_DEVICES = ['gpu', 'cpu', 'auto'] as const;
export type TritonDevice = (typeof TRITON_DEVICES)[number];

/** The GPU execution accelerators Triton's onnxruntime backend accepts. */
export const TRITON_ACCELERATORS = ['cuda', 'tensorrt'] as const;
export type TritonAccelerator = (typeof TRITON_ACCELERATORS)[number];

/** What a model is, as `zoo serve` names it. */
export type TritonTask = ServeTask;

/** Triton's DataType enum, for the element types ONNX Runtime models have. */
export type TritonDataType =
  | 'TYPE_BOOL'
  | 'TYPE_UINT8'
  | 'TYPE_UINT16'
  | 'TYPE_UINT32'
  | 'TYPE_UINT64'
  | 'TYPE_INT8'
  | 'TYPE_INT16'
  | 'TYPE_INT32'
  | 'TYPE_INT64'
  | 'TYPE_FP16'
  | 'TYPE_FP32'
  | 'TYPE_FP64'
  | 'TYPE_STRING';

/** ONNX Runtime's element types (as onnxruntime-node names them) and Triton's (the model configuration's datatype table). */
const DATA_TYPES: Record<string, TritonDataType> = {
  bool: 'TYPE_BOOL',
  uint8: 'TYPE_UINT8',
  uint16: 'TYPE_UINT16',
  uint32: 'TYPE_UINT32',
  uint64: 'TYPE_UINT64',
  int8: 'TYPE_INT8',
  int16: 'TYPE_INT16',
  int32: 'TYPE_INT32',
  int64: 'TYPE_INT64',
  float16: 'TYPE_FP16',
  float32: 'TYPE_FP32',
  float64: 'TYPE_FP64',
  string: 'TYPE_STRING',
};

const KINDS: Record<TritonDevice, TritonInstanceGroup['kind']> = { gpu: 'KIND_GPU', cpu: 'KIND_CPU', auto: 'KIND_AUTO' };

/** The label file beside config.pbtxt, and the version directory zoo writes. */
export const LABELS_FILE = 'labels.txt';
export const VERSION = '1';

/** One input or output (ModelInput / ModelOutput). */
export interface TritonTensor {
  name: string;
  dataType: TritonDataType;
  dims: number[];
  /** The shape the model itself has, where it differs from dims (ModelTensorReshape). */
  reshape?: number[];
  /** Outputs only: the label file of a classification output. */
  labelFilename?: string;
}

export interface TritonInstanceGroup {
  kind: 'KIND_GPU' | 'KIND_CPU' | 'KIND_AUTO';
  count: number;
}

export interface TritonAcceleratorConfig {
  name: TritonAccelerator;
  parameters?: Record<string, string>;
}

/** The part of Triton's ModelConfig that zoo writes, field for field. */
export interface TritonModelConfig {
  name: string;
  platform: 'onnxruntime_onnx';
  backend: 'onnxruntime';
  maxBatchSize: number;
  input: TritonTensor[];
  output: TritonTensor[];
  dynamicBatching?: { preferredBatchSize?: number[]; maxQueueDelayMicroseconds: number };
  instanceGroup: TritonInstanceGroup[];
  optimization?: { executionAccelerators: { gpuExecutionAccelerator: TritonAcceleratorConfig[] } };
}

export interface TritonOptions {
  /** Instance kind (default 'gpu'). */
  device?: TritonDevice;
  /** max_batch_size of a model that can batch (default 32, as zoo serve); 0 turns batching off. */
  maxBatch?: number;
  /** How long the dynamic batcher holds a request for company, in milliseconds (default 5, as zoo serve). */
  maxDelayMs?: number;
  /** The dynamic batcher's preferred batch sizes (default: none, Triton's default). */
  preferredBatch?: number[];
  /** Instances per GPU (or on the CPU); default 1. */
  instances?: number;
  /** A GPU execution accelerator to name (default: none; the CUDA execution provider runs GPU instances). */
  accelerator?: TritonAccelerator;
  /** TensorRT's precision_mode FP16 (with accelerator 'tensorrt'). */
  tensorrtFp16?: boolean;
}

type Settled = Required<Omit<TritonOptions, 'accelerator' | 'preferredBatch'>> & Pick<TritonOptions, 'accelerator' | 'preferredBatch'>;

const DEFAULTS = { device: 'gpu', maxBatch: 32, maxDelayMs: 5, instances: 1, tensorrtFp16: false } as const;
/** Largest max_batch_size and instance count accepted (max_batch_size and count are int32 in the schema). */
const MAX_BATCH = 1 << 20;
const MAX_INSTANCES = 1024;
/** max_queue_delay_microseconds is uint64; an hour is more than any batcher should wait. */
const MAX_DELAY_MS = 3_600_000;

/** The options with their defaults, checked (a UserError with exit code 2 names the option). */
export function settleTritonOptions(o: TritonOptions = {}): Settled {
  const usage = (m: string) => new UserError(m, { exitCode: 2 });
  const device = o.device ?? DEFAULTS.device;
  if (!TRITON_DEVICES.includes(device)) throw usage(`--triton-device must be one of ${TRITON_DEVICES.join(', ')}, got '${String(device)}'`);
  const maxBatch = o.maxBatch ?? DEFAULTS.maxBatch;
  if (!Number.isInteger(maxBatch) || maxBatch < 0 || maxBatch > MAX_BATCH) throw usage(`--max-batch must be an integer from 0 to ${MAX_BATCH}, got ${maxBatch}`);
  const maxDelayMs = o.maxDelayMs ?? DEFAULTS.maxDelayMs;
  if (!Number.isFinite(maxDelayMs) || maxDelayMs < 0 || maxDelayMs > MAX_DELAY_MS) throw usage(`--max-delay-ms must be from 0 to ${MAX_DELAY_MS}, got ${maxDelayMs}`);
  const instances = o.instances ?? DEFAULTS.instances;
  if (!Number.isInteger(instances) || instances < 1 || instances > MAX_INSTANCES) throw usage(`--instances must be an integer from 1 to ${MAX_INSTANCES}, got ${instances}`);
  if (o.preferredBatch) {
    if (o.preferredBatch.length === 0) throw usage('--preferred-batch needs at least one batch size');
    const bad = o.preferredBatch.find((b) => !Number.isInteger(b) || b < 1 || b > maxBatch);
    if (bad !== undefined) throw usage(`--preferred-batch: ${bad} is not a batch size from 1 to --max-batch (${maxBatch})`);
  }
  if (o.accelerator !== undefined && !TRITON_ACCELERATORS.includes(o.accelerator)) {
    throw usage(`--triton-accelerator must be one of ${TRITON_ACCELERATORS.join(', ')} (the GPU accelerators of Triton's onnxruntime backend), got '${String(o.accelerator)}'`);
  }
  if (o.accelerator && device === 'cpu') throw usage(`--triton-accelerator ${o.accelerator} is a GPU execution accelerator; it does nothing for --triton-device cpu`);
  const tensorrtFp16 = o.tensorrtFp16 ?? DEFAULTS.tensorrtFp16;
  if (tensorrtFp16 && o.accelerator !== 'tensorrt') throw usage('--triton-fp16 sets TensorRT\'s precision; it needs --triton-accelerator tensorrt');
  return { device, maxBatch, maxDelayMs, instances, tensorrtFp16, ...(o.accelerator ? { accelerator: o.accelerator } : {}), ...(o.preferredBatch ? { preferredBatch: [...o.preferredBatch] } : {}) };
}

/** The inputs and outputs of an ONNX file, as ONNX Runtime (the engine of Triton's onnxruntime backend) reads them. */
export async function readGraphIO(file: string): Promise<GraphIO> {
  const s = await createSession(file, { provider: 'cpu', intraOpThreads: 1 });
  try {
    return graphIO(s);
  } finally {
    await s.session.release();
  }
}

/** -1 for a dynamic (symbolic or unknown) dimension; a dimension of size 0 is refused. */
function fullShape(t: TensorInfo, label: string): number[] {
  return t.shape.map((d) => {
    if (typeof d === 'string') return -1;
    if (d === 0) throw new UserError(`${label}: tensor '${t.name}' has a dimension of size 0 (${shapeText(t.shape)}); Triton takes sizes of at least 1, or -1`);
    return d > 0 ? d : -1;
  });
}

function shapeText(shape: readonly (number | string)[]): string {
  return `[${shape.join(', ')}]`;
}

function tensorConfig(t: TensorInfo, batched: boolean, label: string): TritonTensor {
  const dataType = DATA_TYPES[t.type];
  if (!dataType) {
    throw new UserError(`${label}: tensor '${t.name}' is ${t.type === 'non-tensor' ? 'not a tensor' : t.type}, which Triton's onnxruntime backend does not take (it takes ${Object.keys(DATA_TYPES).join(', ')})`);
  }
  const full = fullShape(t, label);
  const dims = batched ? full.slice(1) : full;
  // Triton allows no empty dims: [batch] alone is [batch, 1] to clients, reshaped to what the model has.
  if (dims.length === 0) return batched ? { name: t.name, dataType, dims: [1], reshape: [] } : { name: t.name, dataType, dims: [1] };
  return { name: t.name, dataType, dims };
}

/**
 * Whether Triton may batch the model: the rule `zoo serve` combines requests by (`combinable`), every input
 * and output starting with one and the same symbolic dimension, so that a batch's outputs split back into
 * each request's rows. Triton's dynamic batcher splits outputs along their first dimension whatever it is.
 */
export function canBatch(io: GraphIO): boolean {
  return combinable(io);
}

export interface TritonConfigPlan {
  config: TritonModelConfig;
  /** Whether labels.txt goes beside config.pbtxt. */
  labelsFile: boolean;
  notes: string[];
}

/**
 * The configuration of one model, from its graph's inputs and outputs. Pure. `label` names the model in
 * messages; `options` must be settled (settleTritonOptions).
 */
export function tritonConfig(name: string, io: GraphIO, model: { task: TritonTask; labels?: string[]; label: string }, options: Settled): TritonConfigPlan {
  const notes: string[] = [];
  const batchable = canBatch(io);
  const batched = batchable && options.maxBatch > 0;
  if (!batchable) {
    const first = io.inputs[0]?.shape[0];
    const symbolic = typeof first === 'string' && first !== '';
    const odd = [...io.inputs, ...io.outputs].find((t) => !symbolic || t.shape[0] !== first);
    const why = !io.inputs.length
      ? 'the model has no inputs'
      : !symbolic
        ? `'${io.inputs[0]!.name}' ${shapeText(io.inputs[0]!.shape)} does not start with a dynamic batch dimension`
        : `'${odd!.name}' ${shapeText(odd!.shape)} does not start with the batch dimension '${first}' of '${io.inputs[0]!.name}'`;
    notes.push(`${name}: ${why}: max_batch_size 0 (no batching), dims are the full shapes`);
  }
  const input = io.inputs.map((t) => tensorConfig(t, batched, model.label));
  const output = io.outputs.map((t) => tensorConfig(t, batched, model.label));
  let labelsFile = false;
  if (model.labels) {
    const unsafe = model.labels.find((l) => /[\r\n]/.test(l));
    if (unsafe !== undefined) notes.push(`${name}: a class name holds a line break (${JSON.stringify(unsafe.slice(0, 40))}); no ${LABELS_FILE} (one name a line) is written`);
    else labelsFile = true;
  }
  if (labelsFile && model.task === 'image-classification') {
    const K = model.labels!.length;
    const scores = output.filter((o) => batched && o.dims.length === 1 && o.dims[0] === K && !o.reshape);
    const target = scores.find((o) => o.name === 'logits') ?? (scores.length === 1 ? scores[0] : undefined);
    if (target) target.labelFilename = LABELS_FILE;
    else notes.push(`${name}: no output is [batch, ${K}] scores for its ${K} classes; ${LABELS_FILE} is written but no output names it (Triton's classification extension needs one)`);
  }
  const config: TritonModelConfig = {
    name,
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    maxBatchSize: batched ? options.maxBatch : 0,
    input,
    output,
    ...(batched
      ? { dynamicBatching: { ...(options.preferredBatch ? { preferredBatchSize: [...options.preferredBatch] } : {}), maxQueueDelayMicroseconds: Math.round(options.maxDelayMs * 1000) } }
      : {}),
    instanceGroup: [{ kind: KINDS[options.device], count: options.instances }],
    ...(options.accelerator
      ? {
          optimization: {
            executionAccelerators: {
              gpuExecutionAccelerator: [{ name: options.accelerator, ...(options.tensorrtFp16 ? { parameters: { precision_mode: 'FP16' } } : {}) }],
            },
          },
        }
      : {}),
  };
  return { config, labelsFile, notes };
}

/** A string in protobuf text format: C escapes for quotes, backslashes and control characters. */
function quote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\${c.toString(8).padStart(3, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

const list = (v: readonly number[]) => (v.length ? `[ ${v.join(', ')} ]` : '[ ]');

function tensorText(t: TritonTensor, pad: string): string[] {
  return [
    `${pad}{`,
    `${pad}  name: ${quote(t.name)}`,
    `${pad}  data_type: ${t.dataType}`,
    `${pad}  dims: ${list(t.dims)}`,
    ...(t.reshape ? [`${pad}  reshape { shape: ${list(t.reshape)} }`] : []),
    ...(t.labelFilename !== undefined ? [`${pad}  label_filename: ${quote(t.labelFilename)}`] : []),
    `${pad}}`,
  ];
}

function block(field: string, items: string[][]): string[] {
  return [`${field} [`, ...items.flatMap((lines, i) => (i < items.length - 1 ? [...lines.slice(0, -1), `${lines[lines.length - 1]},`] : lines)), ']'];
}

/** config.pbtxt: the configuration in protobuf text format (ModelConfig's field names), with `comments` as '#' lines above it. Pure. */
export function renderTritonConfig(c: TritonModelConfig, comments: string[] = []): string {
  const lines = [
    ...comments.map((l) => `# ${l.replace(/[\r\n]+/g, ' ')}`),
    `name: ${quote(c.name)}`,
    `platform: ${quote(c.platform)}`,
    `backend: ${quote(c.backend)}`,
    `max_batch_size: ${c.maxBatchSize}`,
    ...block('input', c.input.map((t) => tensorText(t, '  '))),
    ...block('output', c.output.map((t) => tensorText(t, '  '))),
  ];
  if (c.dynamicBatching) {
    const d = c.dynamicBatching;
    lines.push('dynamic_batching {');
    if (d.preferredBatchSize) lines.push(`  preferred_batch_size: ${list(d.preferredBatchSize)}`);
    lines.push(`  max_queue_delay_microseconds: ${d.maxQueueDelayMicroseconds}`, '}');
  }
  lines.push(...block('instance_group', c.instanceGroup.map((g) => ['  {', `    kind: ${g.kind}`, `    count: ${g.count}`, '  }'])));
  if (c.optimization) {
    const accels = c.optimization.executionAccelerators.gpuExecutionAccelerator.map((a) => [
      '  {',
      `    name: ${quote(a.name)}`,
      ...Object.entries(a.parameters ?? {}).map(([k, v]) => `    parameters { key: ${quote(k)} value: ${quote(v)} }`),
      '  }',
    ]);
    lines.push('optimization {', '  execution_accelerators {', ...block('gpu_execution_accelerator', accels).map((l) => `    ${l}`), '  }', '}');
  }
  return `${lines.join('\n')}\n`;
}

/** One model of a repository to write, resolved and configured. */
export interface TritonModelPlan extends ModelSpec {
  file: string;
  task: TritonTask;
  labels?: string[];
  config: TritonModelConfig;
  labelsFile: boolean;
  /** The model's directory in the repository exists (replaced with `force`). */
  exists: boolean;
}

export interface TritonRepositoryOptions extends TritonOptions {
  /** Replace a model of the same name in the repository. */
  force?: boolean;
  settings?: HubSettings;
  /** The command, for messages. */
  command?: string;
  /** 'fp16': each model's FP16 variant (a local zoo model's, `zoo pull --fp16`) goes in the repository. */
  precision?: 'fp32' | 'fp16';
}

export interface TritonRepositoryPlan {
  dir: string;
  models: TritonModelPlan[];
  notes: string[];
}

async function entryKind(p: string): Promise<'none' | 'directory' | 'other'> {
  const st = await lstat(p).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw new UserError(`cannot look at ${p}: ${e.message}`);
  });
  return !st ? 'none' : st.isDirectory() ? 'directory' : 'other';
}

/**
 * Resolves every model, reads its graph and makes its configuration; refuses bad or clashing names and
 * models the repository already holds (without `force`) before anything is written.
 */
export async function planTritonRepository(dir: string, args: readonly string[], options: TritonRepositoryOptions = {}): Promise<TritonRepositoryPlan> {
  const settled = settleTritonOptions(options);
  if (dir.trim() === '') throw new UserError('--triton needs a directory for the repository', { exitCode: 2 });
  if (args.length === 0) throw new UserError('give at least one model to put in the repository', { exitCode: 2 });
  if ((await entryKind(dir)) === 'other') throw new UserError(`--triton ${dir} is not a directory`, { exitCode: 2 });
  const specs = args.map((a) => ({ ...parseModelSpec(a), arg: a }));
  const seen = new Map<string, { name: string; arg: string }>();
  for (const s of specs) {
    // Case-insensitive file systems (macOS, Windows) would make 'A' and 'a' one directory.
    const key = s.name.toLowerCase();
    const other = seen.get(key);
    if (other) {
      const why = other.name === s.name ? '' : ` (names differing only in case are one directory on some file systems)`;
      throw new UserError(`'${other.arg}' and '${s.arg}' would both be the model '${s.name}'${why}; name one of them with <name>=<model>`, { exitCode: 2 });
    }
    seen.set(key, s);
  }
  const notes: string[] = [];
  const models: TritonModelPlan[] = [];
  for (const s of specs) {
    const target = path.join(dir, s.name);
    const kind = await entryKind(target);
    if (kind !== 'none' && !options.force) {
      throw new UserError(`${target} exists: the repository already has a model '${s.name}' (pass --force to replace it)`);
    }
    const m = await resolveServableModel(s.ref, { ...(options.settings ? { settings: options.settings } : {}), command: options.command ?? 'zoo export --triton' });
    notes.push(...m.notes);
    let file = m.file;
    if (options.precision === 'fp16') {
      if (!m.fp16) throw noFp16Variant(s.ref, '--fp16');
      file = m.fp16;
    }
    const io = await readGraphIO(file);
    const c = tritonConfig(s.name, io, { task: m.task, ...(m.labels ? { labels: m.labels } : {}), label: file }, settled);
    notes.push(...c.notes);
    models.push({ name: s.name, ref: s.ref, file, task: m.task, ...(m.labels ? { labels: m.labels } : {}), config: c.config, labelsFile: c.labelsFile, exists: kind !== 'none' });
  }
  return { dir, models, notes };
}

/** Copies `src` to `dest` atomically in 4 MiB chunks; its sha256 and size. */
async function copyModelFile(src: string, dest: string): Promise<{ sha256: string; bytes: number }> {
  let fd: number;
  try {
    fd = openSync(src, 'r');
  } catch (e) {
    throw new UserError(`cannot read ${src}: ${(e as Error).message}`);
  }
  const hash = createHash('sha256');
  let bytes = 0;
  function* chunks(): Generator<Uint8Array> {
    for (;;) {
      const buf = Buffer.allocUnsafe(4 << 20);
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        throw new UserError(`cannot read ${src}: ${(e as Error).message}`);
      }
      if (n === 0) return;
      const chunk = buf.subarray(0, n);
      hash.update(chunk);
      bytes += n;
      yield chunk;
    }
  }
  try {
    await writeFileAtomic(dest, chunks());
  } finally {
    closeSync(fd);
  }
  return { sha256: hash.digest('hex'), bytes };
}

async function renameOrFail(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOTEMPTY' || err.code === 'EEXIST') throw new UserError(`${to} appeared while the model was written; nothing of it was replaced (pass --force to replace it)`);
    throw new UserError(`cannot move ${from} to ${to}: ${err.message}`);
  }
}

export interface TritonModelWritten {
  name: string;
  ref: string;
  /** The ONNX file copied. */
  source: string;
  task: TritonTask;
  /** The model's directory, its configuration, its copy of the model and its label file. */
  dir: string;
  config: string;
  onnx: string;
  labels?: string;
  sha256: string;
  bytes: number;
  /** An existing model of that name was replaced (`force`). */
  replaced: boolean;
  maxBatchSize: number;
  inputs: TritonTensor[];
  outputs: TritonTensor[];
}

export interface TritonRepositoryResult {
  dir: string;
  models: TritonModelWritten[];
  notes: string[];
}

/** Writes one planned model: assembled under a hidden name beside its place, then renamed into it. */
async function writeModel(dir: string, m: TritonModelPlan, force: boolean): Promise<TritonModelWritten> {
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const target = path.join(dir, m.name);
  const staging = path.join(dir, `.${m.name}.zoo-new-${tag}`);
  let replaced = false;
  try {
    const copy = await copyModelFile(m.file, path.join(staging, VERSION, 'model.onnx'));
    const comments = [`Triton model configuration written by zoo export --triton: ${m.task}`, `${VERSION}/model.onnx sha256 ${copy.sha256}`];
    await writeFileAtomic(path.join(staging, 'config.pbtxt'), renderTritonConfig(m.config, comments));
    if (m.labelsFile) await writeFileAtomic(path.join(staging, LABELS_FILE), `${m.labels!.join('\n')}\n`);
    const kind = await entryKind(target);
    if (kind !== 'none' && !force) throw new UserError(`${target} exists: the repository already has a model '${m.name}' (pass --force to replace it)`);
    if (kind === 'none') await renameOrFail(staging, target);
    else {
      const old = path.join(dir, `.${m.name}.zoo-old-${tag}`);
      await renameOrFail(target, old);
      try {
        await renameOrFail(staging, target);
      } catch (e) {
        await rename(old, target).catch(() => undefined);
        throw e;
      }
      await rm(old, { recursive: true, force: true });
      replaced = true;
    }
    return {
      name: m.name,
      ref: m.ref,
      source: m.file,
      task: m.task,
      dir: target,
      config: path.join(target, 'config.pbtxt'),
      onnx: path.join(target, VERSION, 'model.onnx'),
      ...(m.labelsFile ? { labels: path.join(target, LABELS_FILE) } : {}),
      sha256: copy.sha256,
      bytes: copy.bytes,
      replaced,
      maxBatchSize: m.config.maxBatchSize,
      inputs: m.config.input,
      outputs: m.config.output,
    };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * Writes a Triton model repository at `dir` (created if missing) with one model per argument (`name=ref`
 * or `ref`, see parseModelSpec). Other models already in `dir` are left as they are.
 */
export async function writeTritonRepository(dir: string, args: readonly string[], options: TritonRepositoryOptions = {}): Promise<TritonRepositoryResult> {
  const plan = await planTritonRepository(dir, args, options);
  await ensureDir(dir, '--triton');
  const models: TritonModelWritten[] = [];
  for (const m of plan.models) models.push(await writeModel(dir, m, options.force ?? false));
  return { dir, models, notes: plan.notes };
}
