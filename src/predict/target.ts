/**
 * What `zoo predict` and `zoo eval` accept as a model: an .onnx file (its zoo metadata gives the
 * preprocessing and labels; other files get ImageNet's defaults) or a name in the local zoo.
 */
import { existsSync } from 'node:fs';
import { UserError } from '../errors.js';
import { findLocalModel, labelsOf } from '../hub/local.js';
import { loadCategories, modelNames } from '../hub/models_json.js';
import { DEFAULT_PREPROCESSING, readOnnxMetadata, type Preprocessing } from './predict.js';

export interface ModelTarget {
  onnx: string;
  pre: Preprocessing;
  labels?: string[];
  /** How to name it in messages. */
  label: string;
  /** The preprocessing came from the model (false: ImageNet defaults were assumed). */
  knownPreprocessing: boolean;
}

export async function resolveModelTarget(target: string): Promise<ModelTarget> {
  if (existsSync(target)) {
    const meta = await readOnnxMetadata(target);
    const pre = meta['zoo.preprocessing'] ? (JSON.parse(meta['zoo.preprocessing']) as Preprocessing) : DEFAULT_PREPROCESSING;
    const labels = meta['zoo.labels'] ? (JSON.parse(meta['zoo.labels']) as string[]) : meta['zoo.categories'] ? loadCategories(meta['zoo.categories']) : undefined;
    return { onnx: target, pre, ...(labels ? { labels } : {}), label: target, knownPreprocessing: !!meta['zoo.preprocessing'] };
  }
  const local = await findLocalModel(target);
  if (local) {
    const labels = labelsOf(local.record);
    return { onnx: local.onnx, pre: local.record.preprocessing, ...(labels ? { labels } : {}), label: local.name, knownPreprocessing: true };
  }
  if (modelNames().has(target)) throw new UserError(`'${target}' is not in the local cache yet; run 'zoo pull ${target}' first`);
  throw new UserError(`'${target}' is neither an ONNX file nor a model in the local zoo ('zoo list --local') or in models.json ('zoo list --published')`);
}

/**
 * Throws unless a data set's classes are a model's, in order. ImageNet folders named by WordNet id
 * (n01440764...) match the ImageNet categories by position: sorted ids are the class index order.
 */
export function checkClassOrder(modelLabels: readonly string[] | undefined, classes: readonly string[], model: string, data: string): void {
  if (!modelLabels) return;
  if (modelLabels.length !== classes.length) throw new UserError(`${model} has ${modelLabels.length} classes; ${data} has ${classes.length}`);
  if (classes.every((c) => /^n\d{8}$/.test(c))) return;
  const differ = modelLabels.findIndex((l, i) => l !== classes[i]);
  if (differ >= 0) {
    throw new UserError(`class ${differ} is '${modelLabels[differ]}' in ${model} but '${classes[differ]}' in ${data}: the data's classes must match the model's, in order`);
  }
}

