/**
 * Loading weights into a model from a file in any supported format (see convert/convert.ts).
 */
import { existsSync, statSync } from 'node:fs';
import type { Model } from '../models/model.js';
import { UserError } from '../errors.js';
import { loadTensorsInto, readTensors, type ConversionReport, type WeightFormat } from '../convert/convert.js';
import { detectNaming, type Naming } from '../convert/naming.js';

export interface LoadedWeights extends ConversionReport {
  format: WeightFormat;
  naming: Naming;
  warnings: string[];
}

/** Loads `path` into `model`; throws a UserError naming the file on any problem. */
export async function loadWeights(model: Model, path: string, options: { format?: WeightFormat; naming?: Naming } = {}): Promise<LoadedWeights> {
  if (!existsSync(path)) throw new UserError(`weights file '${path}' does not exist`);
  if (!statSync(path).isFile()) throw new UserError(`weights path '${path}' is not a file`);
  const { tensors, format, warnings } = await readTensors(path, options.format);
  const naming = options.naming ?? (format === 'onnx' ? 'zoo' : detectNaming(tensors.keys()));
  if (!naming) throw new UserError(`${path}: cannot tell how its tensors are named; pass --naming (timm, torchvision, gluon-v1b, gluon-v1)`);
  const report = loadTensorsInto(model, tensors, naming, path);
  return { ...report, format, naming, warnings };
}
