/**
 * Reading an ONNX file's initializers back into the matching tfjs model.
 *
 * Initializers are looked up by the model's parameter names (what export.ts writes, timm's names),
 * converted back from OIHW / [out, in] to tfjs layouts, and checked for shape. The round trip
 * tfjs -> ONNX (FP32, batch norm not folded) -> tfjs is exact. Folded exports and FP16 exports do not
 * hold the original parameters and are refused with a clear message.
 */
import { readFile } from 'node:fs/promises';
import type { Model } from '../models/model.js';
import { UserError } from '../errors.js';
import { onnx, tensorValues, DataType, type OnnxNs } from './proto.js';
import { float16ToFloat32 } from '../util/float16.js';
import { FOLDED_SUFFIX } from './export.js';

function fromOIHW(w: Float32Array, kh: number, kw: number, ci: number, co: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let o = 0; o < co; o++)
    for (let c = 0; c < ci; c++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++) out[((i * kw + j) * ci + c) * co + o] = w[((o * ci + c) * kh + i) * kw + j]!;
  return out;
}

export function decodeModel(bytes: Uint8Array, label: string): OnnxNs.ModelProto {
  try {
    return onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new UserError(`${label}: not a readable ONNX model (${(e as Error).message})`);
  }
}

export interface ImportReport {
  loaded: number;
  missing: string[];
  unexpected: string[];
  mismatched: string[];
}

/** Copies the initializers of an ONNX model into `model`'s parameters. Nothing changes on a mismatch. */
export function importOnnxInto(model: Model, proto: OnnxNs.ModelProto, label: string): ImportReport {
  const inits = new Map<string, OnnxNs.ITensorProto>();
  for (const t of proto.graph?.initializer ?? []) inits.set(t.name ?? '', t);
  if ([...inits.keys()].some((n) => n.endsWith(FOLDED_SUFFIX))) {
    throw new UserError(`${label}: batch norm was folded into the convolutions at export; export again without --fold-bn to get a file that can be imported`);
  }
  if ([...inits.values()].some((t) => t.dataType === DataType.FLOAT16)) {
    throw new UserError(`${label}: an FP16 export does not hold the float32 parameters; import the FP32 export`);
  }
  const staged = new Map<string, Float32Array>();
  const report: ImportReport = { loaded: 0, missing: [], unexpected: [], mismatched: [] };
  for (const [name, spec] of model.params.specs) {
    const t = inits.get(name);
    inits.delete(name);
    if (!t) {
      report.missing.push(name);
      continue;
    }
    const dims = (t.dims ?? []).map(Number);
    const v = tensorValues(t, float16ToFloat32);
    let value: Float32Array;
    if (spec.shape.length === 4) {
      const [kh, kw, ci, co] = spec.shape as [number, number, number, number];
      if (dims.join() !== [co, ci, kh, kw].join()) {
        report.mismatched.push(`${name}: file [${dims}] vs model OIHW [${[co, ci, kh, kw]}]`);
        continue;
      }
      value = fromOIHW(v, kh, kw, ci, co);
    } else if (spec.shape.length === 2) {
      const [inF, outF] = spec.shape as [number, number];
      if (dims.join() !== [outF, inF].join()) {
        report.mismatched.push(`${name}: file [${dims}] vs model [${[outF, inF]}]`);
        continue;
      }
      value = new Float32Array(v.length);
      for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) value[i * outF + o] = v[o * inF + i]!;
    } else {
      if (dims.join() !== spec.shape.join()) {
        report.mismatched.push(`${name}: file [${dims}] vs model [${spec.shape}]`);
        continue;
      }
      value = v;
    }
    staged.set(name, value);
  }
  report.unexpected = [...inits.keys()];
  if (report.missing.length || report.mismatched.length) {
    const parts = [];
    if (report.missing.length) parts.push(`missing ${report.missing.length} (${report.missing.slice(0, 5).join(', ')}${report.missing.length > 5 ? ', ...' : ''})`);
    if (report.mismatched.length) parts.push(`mis-shaped ${report.mismatched.length} (${report.mismatched.slice(0, 3).join('; ')})`);
    throw new UserError(`${label} does not match ${model.arch}: ${parts.join(', ')}; no parameter was changed`);
  }
  for (const [name, value] of staged) model.params.setValues(name, value);
  report.loaded = staged.size;
  return report;
}

/** Reads an ONNX file and loads its initializers into `model`. */
export async function importOnnxFile(model: Model, path: string): Promise<ImportReport> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new UserError(`cannot read '${path}': ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  return importOnnxInto(model, decodeModel(bytes, path), path);
}
