/**
 * Loading published weights into zoo's models: read a file in any supported format, map the source's
 * names and layouts onto the architecture, check every tensor, and only then change the model.
 *
 * Formats: safetensors (timm, and zoo's own checkpoints), GluonCV's zip with an MXNet `.params`
 * inside (or a bare `.params`), PyTorch `.pth` (zip + pickle, read by a restricted unpickler that
 * executes nothing), and ONNX (initializers of a zoo export).
 */
import { extname } from 'node:path';
import { open } from 'node:fs/promises';
import type { Model } from '../models/model.js';
import { UserError } from '../errors.js';
import { readSafetensors } from '../formats/safetensors.js';
import { readGluonZip, parseMxnetParams } from '../formats/mxnet.js';
import { readTorchCheckpoint } from '../formats/torch.js';
import { readFileBytes, toFloat32, type LoadedTensor, type TensorMap } from '../formats/types.js';
import { decodeModel, tensorValues, DataType } from '../onnx/proto.js';
import { float16ToFloat32 } from '../util/float16.js';
import { FOLDED_SUFFIX } from '../onnx/export.js';
import { ignorable, mapName, type Naming } from './naming.js';

export const WEIGHT_FORMATS = ['safetensors', 'gluon-zip', 'params', 'pth', 'onnx'] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

/** The format of a weights file, from its extension, then its first bytes. */
export async function detectFormat(path: string): Promise<WeightFormat> {
  const ext = extname(path).toLowerCase();
  if (ext === '.safetensors') return 'safetensors';
  if (ext === '.params') return 'params';
  if (ext === '.pth' || ext === '.pt' || ext === '.bin') return 'pth';
  if (ext === '.onnx') return 'onnx';
  const head = new Uint8Array(8);
  const fh = await open(path, 'r');
  try {
    await fh.read(head, 0, 8, 0);
  } finally {
    await fh.close();
  }
  if (head[0] === 0x50 && head[1] === 0x4b) {
    if (ext === '.zip') {
      // GluonCV zips hold one .params file; PyTorch's hold data.pkl. Tell them apart by content.
      const { openZip } = await import('../formats/zip.js');
      const zip = openZip(await readFileBytes(path), path);
      return zip.entries.some((e) => e.name.endsWith('data.pkl')) ? 'pth' : 'gluon-zip';
    }
    return 'pth';
  }
  throw new UserError(`${path}: unknown weights format (expected .safetensors, .params, a GluonCV .zip, .pth or .onnx)`);
}

/** ONNX initializers as tensors (zoo exports hold the parameters in PyTorch layout). */
async function readOnnxTensors(path: string): Promise<TensorMap> {
  const proto = decodeModel(await readFileBytes(path), path);
  return onnxTensors(proto, path);
}

export function onnxTensors(proto: ReturnType<typeof decodeModel>, label: string): TensorMap {
  const out: TensorMap = new Map();
  for (const t of proto.graph?.initializer ?? []) {
    const name = t.name ?? '';
    if (name.endsWith(FOLDED_SUFFIX)) {
      throw new UserError(`${label}: batch norm was folded into the convolutions at export; export again without --fold-bn to get a file that can be imported`);
    }
    if (t.dataType === DataType.FLOAT16) {
      throw new UserError(`${label}: an FP16 export does not hold the float32 parameters; import the FP32 export`);
    }
    out.set(name, { dtype: 'float32', shape: (t.dims ?? []).map(Number), data: tensorValues(t, float16ToFloat32) });
  }
  return out;
}

/** Reads all tensors of a weights file. */
export async function readTensors(path: string, format?: WeightFormat): Promise<{ tensors: TensorMap; format: WeightFormat; warnings: string[] }> {
  const f = format ?? (await detectFormat(path));
  switch (f) {
    case 'safetensors':
      return { tensors: (await readSafetensors(path)).tensors, format: f, warnings: [] };
    case 'gluon-zip': {
      const t = await readGluonZip(path);
      return { tensors: t, format: f, warnings: t.warnings };
    }
    case 'params': {
      const t = parseMxnetParams(await readFileBytes(path), path);
      return { tensors: t, format: f, warnings: t.warnings };
    }
    case 'pth': {
      const t = await readTorchCheckpoint(path);
      return { tensors: t, format: f, warnings: t.warnings };
    }
    case 'onnx':
      return { tensors: await readOnnxTensors(path), format: f, warnings: [] };
  }
}

export interface ConversionReport {
  loaded: number;
  missing: string[];
  unexpected: string[];
  mismatched: string[];
  /** Conv biases folded into the following batch norm (gluon-v1). */
  folded: string[];
}

/** A source tensor in zoo's layout for a parameter of `shape`, or a description of the mismatch. */
function toZooLayout(t: LoadedTensor, shape: number[], name: string): Float32Array | string {
  const v = toFloat32(t, name);
  const src = t.shape;
  if (shape.length === 4) {
    const [kh, kw, ci, co] = shape as [number, number, number, number];
    if (src.join() !== [co, ci, kh, kw].join()) return `${name}: source [${src}], expected OIHW [${[co, ci, kh, kw]}]`;
    const out = new Float32Array(v.length);
    for (let o = 0; o < co; o++)
      for (let c = 0; c < ci; c++)
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) out[((i * kw + j) * ci + c) * co + o] = v[((o * ci + c) * kh + i) * kw + j]!;
    return out;
  }
  if (shape.length === 2) {
    const [inF, outF] = shape as [number, number];
    if (src.join() !== [outF, inF].join()) return `${name}: source [${src}], expected [out, in] = [${[outF, inF]}]`;
    const out = new Float32Array(v.length);
    for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) out[i * outF + o] = v[o * inF + i]!;
    return out;
  }
  const n = shape.reduce((a, b) => a * b, 1);
  if (src.reduce((a, b) => a * b, 1) !== n || (src.length > 1 && src.join() !== shape.join())) return `${name}: source [${src}], expected [${shape}]`;
  return v;
}

/**
 * Loads `tensors` (named by `naming`) into `model`. Every parameter and running statistic must be
 * present with the right shape and no tensor may be left over; otherwise a UserError lists what is
 * missing, unexpected or mis-shaped and the model is left unchanged.
 */
export function loadTensorsInto(model: Model, tensors: TensorMap, naming: Naming, label: string): ConversionReport {
  const specs = model.params.specs;
  const staged = new Map<string, Float32Array>();
  const folds = new Map<string, Float32Array>();
  const report: ConversionReport = { loaded: 0, missing: [], unexpected: [], mismatched: [], folded: [] };
  for (const [src, t] of tensors) {
    if (ignorable(src)) continue;
    const mapped = mapName(src, naming, model.config);
    if (!mapped) {
      report.unexpected.push(src);
      continue;
    }
    if (mapped.foldBiasInto) {
      folds.set(mapped.foldBiasInto, toFloat32(t, src));
      report.folded.push(src);
      continue;
    }
    const spec = specs.get(mapped.name);
    if (!spec) {
      report.unexpected.push(src === mapped.name ? src : `${src} (as ${mapped.name})`);
      continue;
    }
    if (staged.has(mapped.name)) {
      report.mismatched.push(`${mapped.name}: given twice`);
      continue;
    }
    const v = toZooLayout(t, spec.shape, src);
    if (typeof v === 'string') report.mismatched.push(v);
    else staged.set(mapped.name, v);
  }
  for (const name of specs.keys()) if (!staged.has(name)) report.missing.push(name);
  for (const [bn, bias] of folds) {
    const mean = staged.get(`${bn}.running_mean`);
    if (!mean || mean.length !== bias.length) {
      report.mismatched.push(`${bn}: conv bias of ${bias.length} values has no matching running mean`);
      continue;
    }
    for (let i = 0; i < mean.length; i++) mean[i] = mean[i]! - bias[i]!;
  }
  if (report.missing.length || report.unexpected.length || report.mismatched.length) {
    const list = (what: string, xs: string[]) => (xs.length ? [`${what} ${xs.length}: ${xs.slice(0, 6).join(', ')}${xs.length > 6 ? ', ...' : ''}`] : []);
    throw new UserError(
      `${label} does not match ${model.arch} (${naming} names): ${[...list('missing', report.missing), ...list('unexpected', report.unexpected), ...list('mis-shaped', report.mismatched)].join('; ')}. No parameter was changed.`,
    );
  }
  for (const [name, v] of staged) model.params.setValues(name, v);
  report.loaded = staged.size;
  return report;
}
