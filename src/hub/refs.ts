/**
 * How a model reference reads before anything is looked up: as a path or as a name. Pure, shared by
 * the resolver (hub/resolve.ts) and by the checks on names a user gives their own models (hub/local.ts),
 * so that no model can be given a name the resolver would read as a path.
 */
import path from 'node:path';

/** File extensions of the weights formats zoo reads. */
export const WEIGHT_EXTENSIONS = ['.safetensors', '.pth', '.pt', '.bin', '.params', '.zip'];

/** Pure: does `ref` read as a path rather than a name? */
export function looksLikePath(ref: string): boolean {
  if (/^(?:hf[-_]hub:)?timm\//i.test(ref)) return false;
  if (ref.includes('/') || ref.includes('\\') || ref.startsWith('.') || ref.startsWith('~') || path.isAbsolute(ref)) return true;
  const ext = path.extname(ref).toLowerCase();
  return ext === '.onnx' || WEIGHT_EXTENSIONS.includes(ext);
}
