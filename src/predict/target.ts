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
