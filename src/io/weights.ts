/**
 * Loading weights into a model from a file, by format.
 */
import { extname } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import type { Model } from '../models/model.js';
import { UserError } from '../errors.js';
import { importOnnxFile } from '../onnx/import.js';

export const WEIGHT_FORMATS = ['.onnx'] as const;

/** Loads `path` into `model`; throws a UserError naming the file on any problem. */
export async function loadWeights(model: Model, path: string): Promise<{ loaded: number; format: string }> {
  if (!existsSync(path)) throw new UserError(`weights file '${path}' does not exist`);
  if (!statSync(path).isFile()) throw new UserError(`weights path '${path}' is not a file`);
  const ext = extname(path).toLowerCase();
  switch (ext) {
    case '.onnx': {
      const r = await importOnnxFile(model, path);
      return { loaded: r.loaded, format: 'onnx' };
    }
    default:
      throw new UserError(`unsupported weights format '${ext || path}'; supported: ${WEIGHT_FORMATS.join(', ')}`);
  }
}
