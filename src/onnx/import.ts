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
import { decodeModel, type OnnxNs } from './proto.js';
import { loadTensorsInto, onnxTensors, type ConversionReport } from '../convert/convert.js';

export type ImportReport = ConversionReport;

/** Copies the initializers of an ONNX model into `model`'s parameters. Nothing changes on a mismatch. */
export function importOnnxInto(model: Model, proto: OnnxNs.ModelProto, label: string): ImportReport {
  return loadTensorsInto(model, onnxTensors(proto, label), 'zoo', label);
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

export { decodeModel };
