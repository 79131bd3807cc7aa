/**
 * Loading weights into a model from a file in any supported format (see convert/convert.ts).
 */
import { existsSync, statSync } from 'node:fs';
import type { Model } from '../models/model.js';
import { UserError } from '../errors.js';
import type { ByteBudget } from '../formats/budget.js';
import { loadTensorsInto, modelBudget, openTensors, type ConversionReport, type WeightFormat } from '../convert/convert.js';
import { detectNaming, type Naming } from '../convert/naming.js';

export interface LoadedWeights extends ConversionReport {
  format: WeightFormat;
  naming: Naming;
  warnings: string[];
}

/** Options for loadWeights. */
export interface LoadWeightsOptions {
  /** Default: from the file name and contents. */
  format?: WeightFormat;
  /** Default: guessed from the tensor names. */
  naming?: Naming;
  /** What the file may make us allocate; default modelBudget(model, path), a few times the model's parameter bytes. */
  budget?: ByteBudget;
}

/**
 * Loads `path` into `model`; throws a UserError naming the file on any problem. Names and shapes are
 * checked against the model before any tensor is read, and the file and everything reading it
 * allocates must fit the budget, so a hostile file costs at most a few times the model's size.
 */
export async function loadWeights(model: Model, path: string, options: LoadWeightsOptions = {}): Promise<LoadedWeights> {
  if (!existsSync(path)) throw new UserError(`weights file '${path}' does not exist`);
  if (!statSync(path).isFile()) throw new UserError(`weights path '${path}' is not a file`);
  const source = await openTensors(path, {
    ...(options.format ? { format: options.format } : {}),
    budget: options.budget ?? modelBudget(model, path),
  });
  const naming = options.naming ?? (source.format === 'onnx' ? 'zoo' : detectNaming(source.tensors.keys()));
  if (!naming) throw new UserError(`${path}: cannot tell how its tensors are named; pass --naming (timm, torchvision, gluon-v1b, gluon-v1)`);
  const report = loadTensorsInto(model, source, naming, path);
  return { ...report, format: source.format, naming, warnings: [...source.warnings] };
}
