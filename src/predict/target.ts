/**
 * Checks that a data set's classes are a model's, for `zoo eval` and distillation teachers.
 */
import { UserError } from '../errors.js';

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
