/**
 * Loading published weights into zoo's models: read a file in any supported format, map the source's
 * names and layouts onto the architecture, check every tensor, and only then change the model.
 *
 * Formats: safetensors (timm, and zoo's own checkpoints), GluonCV's zip with an MXNet `.params`
 * inside (or a bare `.params`), PyTorch `.pth` (zip + pickle, read by a restricted unpickler that
 * executes nothing), and ONNX (initializers of a zoo export).
 *
 * Memory: a file is opened as tensor descriptors (name, dtype, shape, a way to read the data);
 * loadTensorsInto checks every name and shape against the architecture before it reads any tensor,
 * and everything reading and converting allocates is charged to one budget per file (formats/budget.ts),
 * `modelBudget` when the architecture is known.
 */
import { extname } from 'node:path';
import type { Model } from '../models/model.js';
import { UserError } from '../errors.js';
import { openSafetensors } from '../formats/safetensors.js';
import { openGluonZip, openMxnetParams } from '../formats/mxnet.js';
import { openTorchCheckpoint } from '../formats/torch.js';
import { openZip } from '../formats/zip.js';
import { BUDGET_SLACK_BYTES, ByteBudget, fileBudget, unlimitedBudget } from '../formats/budget.js';
import {
  DTYPE_SIZE,
  materializeAll,
  quoteName,
  readFileBytes,
  toFloat32,
  type TensorDescriptor,
  type TensorMap,
  type TensorSource,
} from '../formats/types.js';
import { decodeModel, tensorValues, DataType, onnx, type OnnxNs } from '../onnx/proto.js';
import { float16ToFloat32 } from '../util/float16.js';
import { FOLDED_SUFFIX } from '../onnx/export.js';
import { ignorable, mapName, type Naming } from './naming.js';

export const WEIGHT_FORMATS = ['safetensors', 'gluon-zip', 'params', 'pth', 'onnx'] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

/** The format of a weights file from its name and first bytes (a `.zip` is told apart by its entries). */
function formatOf(path: string, bytes: Uint8Array): WeightFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.safetensors') return 'safetensors';
  if (ext === '.params') return 'params';
  if (ext === '.pth' || ext === '.pt' || ext === '.bin') return 'pth';
  if (ext === '.onnx') return 'onnx';
  if (bytes[0] === 0x50 && bytes[1] === 0x4b) {
    if (ext === '.zip') {
      // GluonCV zips hold one .params file; PyTorch's hold data.pkl. Tell them apart by content.
      const zip = openZip(bytes, path);
      return zip.entries.some((e) => e.name.endsWith('data.pkl')) ? 'pth' : 'gluon-zip';
    }
    return 'pth';
  }
  throw new UserError(`${path}: unknown weights format (expected .safetensors, .params, a GluonCV .zip, .pth or .onnx)`);
}

/** The format of a weights file, from its extension, then its first bytes. */
export async function detectFormat(path: string): Promise<WeightFormat> {
  return formatOf(path, await readFileBytes(path));
}

/**
 * Default budget factors (x the file's size, plus 16 MiB) when no budget is given. `.params` and ONNX
 * cannot decode to more than twice their size; `.pth` and zips can (shared and broadcast views,
 * deflate), and 8 x is a generous guess for them. safetensors computes its own (safetensors.ts).
 */
const DEFAULT_BUDGET_FACTOR: Readonly<Record<Exclude<WeightFormat, 'safetensors'>, number>> = { params: 2, onnx: 2, 'gluon-zip': 8, pth: 8 };

/** How many times the architecture's float32 parameter bytes a file may make the loader allocate. */
export const MODEL_BUDGET_FACTOR = 4;

/**
 * The memory budget for loading a file into `model`: MODEL_BUDGET_FACTOR (4) x the float32 bytes of
 * all its parameters and buffers, plus 16 MiB (BUDGET_SLACK_BYTES) for tiny models. A valid file of
 * any supported format needs at most about 3 x: the inflated entry (zips), the decoded tensors and
 * their copies in zoo's layout. The file itself must also fit the budget (it is refused before it is
 * read otherwise), so a load holds at most the file plus the budget, whatever the file says.
 */
export function modelBudget(model: Model, label: string): ByteBudget {
  let bytes = 0;
  for (const spec of model.params.specs.values()) bytes += 4 * spec.shape.reduce((a, b) => a * b, 1);
  return new ByteBudget(
    label,
    MODEL_BUDGET_FACTOR * bytes + BUDGET_SLACK_BYTES,
    `${MODEL_BUDGET_FACTOR} x the ${bytes} float32 bytes of ${model.arch}'s parameters and buffers + 16 MiB`,
  );
}

/** A weights file opened as descriptors. */
export interface WeightSource extends TensorSource {
  readonly format: WeightFormat;
  /** safetensors `__metadata__` (empty for the other formats). */
  readonly metadata: Record<string, string>;
}

/** Options for opening or reading a weights file. */
export interface ReadTensorsOptions {
  /** Default: from the file name and contents. */
  format?: WeightFormat;
  /** What the file may make us allocate; default: a multiple of its size (DEFAULT_BUDGET_FACTOR). */
  budget?: ByteBudget;
}

/**
 * Opens a weights file: checks its structure and describes its tensors without reading any. The
 * file must fit `options.budget` (checked before it is read); every later read is charged to it.
 */
export async function openTensors(path: string, options: ReadTensorsOptions = {}): Promise<WeightSource> {
  if (options.format !== undefined && !(WEIGHT_FORMATS as readonly string[]).includes(options.format)) {
    throw new UserError(`${path}: unknown weights format '${String(options.format)}' (one of ${WEIGHT_FORMATS.join(', ')})`, { exitCode: 2 });
  }
  const bytes = await readFileBytes(path, options.budget);
  const format = options.format ?? formatOf(path, bytes);
  if (format === 'safetensors') return { ...openSafetensors(bytes, path, options.budget), format };
  const budget = options.budget ?? fileBudget(path, bytes.length, DEFAULT_BUDGET_FACTOR[format]);
  switch (format) {
    case 'gluon-zip':
      return { ...openGluonZip(bytes, path, budget), format, metadata: {} };
    case 'params':
      return { ...openMxnetParams(bytes, path, budget), format, metadata: {} };
    case 'pth':
      return { ...openTorchCheckpoint(bytes, path, budget), format, metadata: {} };
    case 'onnx':
      return { ...onnxSource(decodeModel(bytes, path), path, budget), format, metadata: {} };
  }
}

/**
 * Reads all tensors of a weights file, within `options.budget` (default as for openTensors). Takes the
 * options in second place (`readTensors(file, { budget })`), or a format there and the options third.
 */
export async function readTensors(
  path: string,
  formatOrOptions?: WeightFormat | ReadTensorsOptions,
  options: ReadTensorsOptions = {},
): Promise<{ tensors: TensorMap; format: WeightFormat; warnings: string[] }> {
  const given = typeof formatOrOptions === 'object' && formatOrOptions !== null ? formatOrOptions : { ...options, ...(formatOrOptions !== undefined ? { format: formatOrOptions } : {}) };
  const source = await openTensors(path, given);
  const tensors = materializeAll(source);
  return { tensors, format: source.format, warnings: tensors.warnings };
}

// ---------------------------------------------------------------------------------------------------
// ONNX initializers

const PARAMETER_NAME = /\.(weight|bias|running_mean|running_var|num_batches_tracked)$/;

function isIntegerType(type: number | null | undefined): boolean {
  return type === DataType.INT64 || type === DataType.INT32 || type === DataType.INT8 || type === DataType.UINT8 || type === DataType.BOOL;
}

/** ONNX initializers as descriptors; zoo exports hold the parameters in PyTorch layout. */
export function onnxSource(proto: OnnxNs.ModelProto, label: string, budget: ByteBudget): TensorSource {
  const tensors = new Map<string, TensorDescriptor>();
  // An FP16 export is also folded by default: say what is really missing, the float32 parameters.
  if ((proto.graph?.initializer ?? []).some((t) => t.dataType === DataType.FLOAT16)) {
    throw new UserError(`${label}: an FP16 export does not hold the float32 parameters; import the FP32 export`);
  }
  for (const t of proto.graph?.initializer ?? []) {
    const name = t.name ?? '';
    if (name.endsWith(FOLDED_SUFFIX)) {
      throw new UserError(`${label}: batch norm was folded into the convolutions at export; export again without --fold-bn to get a file that can be imported`);
    }
    if (t.dataType === DataType.FLOAT16) {
      throw new UserError(`${label}: an FP16 export does not hold the float32 parameters; import the FP32 export`);
    }
    // Integer constants of the graph (a segmenter's label offset, shapes) are not parameters; an integer
    // tensor under a parameter's name is still refused below.
    if (isIntegerType(t.dataType) && !PARAMETER_NAME.test(name)) continue;
    if (tensors.has(name)) throw new UserError(`${label}: initializer ${quoteName(name)} appears twice`);
    const shape = initializerShape(t, label);
    const count = shape.reduce((a, b) => a * b, 1);
    tensors.set(name, {
      name,
      dtype: 'float32',
      shape,
      byteLength: count * 4,
      read: () => {
        budget.charge(count * 4, `decoding initializer ${quoteName(name)}`);
        return tensorValues(t, float16ToFloat32, label);
      },
    });
  }
  return { label, tensors, warnings: [], budget };
}

/**
 * An initializer's shape, after the checks that need no data: it is stored in the file, its dims are
 * sizes, and its data (raw or typed) has the size dims and type need. tensorValues checks the same.
 */
function initializerShape(t: OnnxNs.ITensorProto, label: string): number[] {
  const what = `${label}: initializer ${quoteName(t.name ?? '')}`;
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (t.externalData?.length ?? 0) > 0) {
    const location = t.externalData?.find((e) => e.key === 'location')?.value;
    throw new UserError(
      `${what} keeps its data in an external file${location ? ` (${quoteName(location)})` : ''}; only ONNX files with their weights inside can be read`,
    );
  }
  if (t.dataType !== DataType.FLOAT) {
    throw new UserError(`${what} has data type ${String(t.dataType)}; only float32 initializers hold the parameters of a zoo export`);
  }
  const shape = (t.dims ?? []).map(Number);
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0 || (n *= d) > 2 ** 32) {
      throw new UserError(`${what} has dims [${(t.dims ?? []).map(String).join(', ')}], which are not the sizes of a tensor in a file`);
    }
  }
  const raw = t.rawData?.length ?? 0;
  const have = raw ? raw : 4 * (t.floatData?.length ?? 0);
  if (have !== 4 * n) {
    throw new UserError(`${what} has ${raw ? `${raw} bytes of raw data` : `${t.floatData?.length ?? 0} float values`} but dims [${shape.join(', ')}] need ${n} float32 values`);
  }
  return shape;
}

/** ONNX initializers as tensors (zoo exports hold the parameters in PyTorch layout). */
export function onnxTensors(proto: OnnxNs.ModelProto, label: string): TensorMap {
  // The initializers' data is inside the decoded file and checked against it: no budget needed.
  return materializeAll(onnxSource(proto, label, unlimitedBudget(label)));
}

// ---------------------------------------------------------------------------------------------------
// Loading into a model

export interface ConversionReport {
  loaded: number;
  missing: string[];
  unexpected: string[];
  mismatched: string[];
  /** Conv biases folded into the following batch norm (gluon-v1). */
  folded: string[];
}

/** Why a source tensor of `src` shape cannot fill a parameter of zoo `shape`, or undefined if it can. */
export function layoutProblem(src: readonly number[], shape: number[], name: string): string | undefined {
  if (shape.length === 4) {
    const [kh, kw, ci, co] = shape as [number, number, number, number];
    return src.join() === [co, ci, kh, kw].join() ? undefined : `${name}: source [${src}], expected OIHW [${[co, ci, kh, kw]}]`;
  }
  if (shape.length === 2) {
    const [inF, outF] = shape as [number, number];
    return src.join() === [outF, inF].join() ? undefined : `${name}: source [${src}], expected [out, in] = [${[outF, inF]}]`;
  }
  const n = shape.reduce((a, b) => a * b, 1);
  if (src.reduce((a, b) => a * b, 1) !== n || (src.length > 1 && src.join() !== shape.join())) return `${name}: source [${src}], expected [${shape}]`;
  return undefined;
}

/** Source values (checked by layoutProblem) in zoo's layout for a parameter of `shape`; may return `v` itself. */
export function toZooLayout(v: Float32Array, shape: number[], budget: ByteBudget, name: string): Float32Array {
  if (shape.length !== 4 && shape.length !== 2) return v;
  budget.charge(v.length * 4, `converting ${quoteName(name)} to zoo's layout`);
  const out = new Float32Array(v.length);
  if (shape.length === 4) {
    const [kh, kw, ci, co] = shape as [number, number, number, number];
    for (let o = 0; o < co; o++)
      for (let c = 0; c < ci; c++)
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) out[((i * kw + j) * ci + c) * co + o] = v[((o * ci + c) * kh + i) * kw + j]!;
    return out;
  }
  const [inF, outF] = shape as [number, number];
  for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) out[i * outF + o] = v[o * inF + i]!;
  return out;
}

/** A descriptor's values as float32, the conversion (if any) charged to the budget. */
export function readFloat32(d: TensorDescriptor, budget: ByteBudget): Float32Array {
  const data = d.read();
  if (data instanceof Float32Array) return data;
  budget.charge(data.length * 4, `converting ${quoteName(d.name)} from ${d.dtype} to float32`);
  return toFloat32({ dtype: d.dtype, shape: [...d.shape], data }, d.name);
}

/** A TensorMap seen as a source: its data is already in memory, conversions are charged to `budget`. */
function mapSource(tensors: TensorMap, label: string, budget: ByteBudget): TensorSource {
  const out = new Map<string, TensorDescriptor>();
  for (const [name, t] of tensors) {
    out.set(name, { name, dtype: t.dtype, shape: t.shape, byteLength: t.data.length * DTYPE_SIZE[t.dtype], read: () => t.data });
  }
  return { label, tensors: out, warnings: [], budget };
}

function isSource(x: TensorMap | TensorSource): x is TensorSource {
  return !(x instanceof Map);
}

/**
 * Loads `tensors` (named by `naming`) into `model`. Every parameter and running statistic must be
 * present with the right shape and no tensor may be left over; otherwise a UserError lists what is
 * missing, unexpected or mis-shaped and the model is left unchanged.
 *
 * Given a TensorSource (openTensors), all of that is decided from the descriptors, before any tensor
 * is read; then only the tensors the model takes are read, each read and conversion charged to the
 * source's budget. A TensorMap (already in memory) is checked the same way.
 */
export function loadTensorsInto(model: Model, tensors: TensorMap | TensorSource, naming: Naming, label: string): ConversionReport {
  const source = isSource(tensors) ? tensors : mapSource(tensors, label, modelBudget(model, label));
  const budget = source.budget;
  const specs = model.params.specs;
  const take = new Map<string, TensorDescriptor>();
  const folds = new Map<string, TensorDescriptor>();
  const report: ConversionReport = { loaded: 0, missing: [], unexpected: [], mismatched: [], folded: [] };
  for (const [src, d] of source.tensors) {
    if (ignorable(src)) continue;
    const mapped = mapName(src, naming, model.config);
    if (!mapped) {
      report.unexpected.push(src);
      continue;
    }
    if (d.dtype === 'bool') {
      report.mismatched.push(`${src}: a bool tensor, not weights`);
      continue;
    }
    if (mapped.foldBiasInto) {
      const bn = mapped.foldBiasInto;
      const mean = specs.get(`${bn}.running_mean`);
      if (!mean || layoutProblem(d.shape, mean.shape, src) || d.shape.length !== 1) {
        report.mismatched.push(`${bn}: conv bias ${src} of shape [${d.shape}] has no matching running mean`);
      } else if (folds.has(bn)) {
        report.mismatched.push(`${bn}: conv bias given twice`);
      } else {
        folds.set(bn, d);
        report.folded.push(src);
      }
      continue;
    }
    const spec = specs.get(mapped.name);
    if (!spec) {
      report.unexpected.push(src === mapped.name ? src : `${src} (as ${mapped.name})`);
      continue;
    }
    if (take.has(mapped.name)) {
      report.mismatched.push(`${mapped.name}: given twice`);
      continue;
    }
    const problem = layoutProblem(d.shape, spec.shape, src);
    if (problem) report.mismatched.push(problem);
    else take.set(mapped.name, d);
  }
  for (const name of specs.keys()) if (!take.has(name)) report.missing.push(name);
  if (report.missing.length || report.unexpected.length || report.mismatched.length) {
    const list = (what: string, xs: string[]) => (xs.length ? [`${what} ${xs.length}: ${xs.slice(0, 6).join(', ')}${xs.length > 6 ? ', ...' : ''}`] : []);
    throw new UserError(
      `${label} does not match ${model.arch} (${naming} names): ${[...list('missing', report.missing), ...list('unexpected', report.unexpected), ...list('mis-shaped', report.mismatched)].join('; ')}. No parameter was changed.`,
    );
  }
  // Every name and shape fits: read what the model takes, nothing else.
  const staged = new Map<string, Float32Array>();
  for (const [name, d] of take) staged.set(name, toZooLayout(readFloat32(d, budget), specs.get(name)!.shape, budget, d.name));
  for (const [bn, d] of folds) {
    // A fresh array: the staged mean may share memory with other tensors of the file.
    const mean = staged.get(`${bn}.running_mean`)!;
    const bias = readFloat32(d, budget);
    budget.charge(mean.length * 4, `folding ${quoteName(d.name)} into ${bn}.running_mean`);
    staged.set(`${bn}.running_mean`, mean.map((m, i) => m - bias[i]!));
  }
  for (const [name, v] of staged) model.params.setValues(name, v);
  report.loaded = staged.size;
  return report;
}
