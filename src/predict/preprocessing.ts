/**
 * A model's evaluation preprocessing: resize the shorter side to `resizeShorter` (with `interpolation`),
 * center-crop `crop` x `crop`, scale to [0, 1], subtract `mean` and divide by `std` (RGB), NCHW float32.
 *
 * It travels with every model: in models.json, in the ONNX file's metadata (`zoo.preprocessing`), in
 * the local zoo's manifest and in a training run's configuration. Values read from files are checked
 * here before use: a file may be hostile, and a crop of 60000 must not become a 43 GB allocation.
 */
import { UserError } from '../errors.js';

export const INTERPOLATIONS = ['bilinear', 'bicubic', 'nearest'] as const;
export type Interpolation = (typeof INTERPOLATIONS)[number];

export interface Preprocessing {
  /** Network input side (equal to the crop). */
  inputSize?: number;
  resizeShorter: number;
  crop: number;
  interpolation: Interpolation;
  /** RGB, on the 0..1 scale. */
  mean: number[];
  std: number[];
}

/** Largest crop or resize side accepted from a file: far above any classifier's input, far below a runaway allocation. */
export const MAX_IMAGE_SIDE = 4096;

/** timm's and torchvision's ImageNet evaluation defaults (resize 256, crop 224, bilinear). */
export const IMAGENET_PREPROCESSING: Preprocessing = {
  inputSize: 224,
  resizeShorter: 256,
  crop: 224,
  interpolation: 'bilinear',
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
};

/**
 * `base` at another input size: the crop becomes `size` and the resize keeps the crop fraction
 * (224 of 256 gives 320 of 366), mean, std and interpolation stay.
 */
export function preprocessingForSize(size: number, base: Preprocessing = IMAGENET_PREPROCESSING): Preprocessing {
  if (base.crop === size && (base.inputSize ?? base.crop) === size) return base;
  const resizeShorter = Math.round((size * base.resizeShorter) / base.crop);
  // What zoo writes it must be able to read back (parsePreprocessing's bounds).
  if (!Number.isInteger(size) || size < 1 || resizeShorter > MAX_IMAGE_SIDE) {
    throw new UserError(`an image size of ${size} needs a resize of ${resizeShorter}; zoo takes sides from 1 to ${MAX_IMAGE_SIDE}`, { exitCode: 2 });
  }
  return { ...base, inputSize: size, crop: size, resizeShorter };
}

type Problem = (field: string, message: string) => void;

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isSide(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= MAX_IMAGE_SIDE;
}

/** Checks the crop fields of `c` (also models.json's test-time sizes); each problem goes to `p`. */
export function checkCropFields(p: Problem, c: Record<string, unknown>, where: string, required: readonly string[] = ['resizeShorter', 'crop']): void {
  for (const k of ['inputSize', 'resizeShorter', 'crop']) {
    if (c[k] === undefined && !required.includes(k)) continue;
    if (!isSide(c[k])) p(`${where}.${k}`, `expected a positive integer up to ${MAX_IMAGE_SIDE}, got ${show(c[k])}`);
  }
  if (isSide(c.crop) && isSide(c.resizeShorter) && c.crop > c.resizeShorter) {
    p(`${where}.crop`, `crop ${c.crop} is larger than the resized shorter side ${c.resizeShorter}`);
  }
  if (isSide(c.crop) && isSide(c.inputSize) && c.crop !== c.inputSize) {
    p(`${where}.inputSize`, `input size ${c.inputSize} differs from the crop ${c.crop}`);
  }
}

/** Every problem of a preprocessing object, reported through `p`; `required` lists the crop fields that must be present. */
export function checkPreprocessingFields(p: Problem, pre: unknown, where = 'preprocessing', required?: readonly string[]): pre is Preprocessing {
  if (typeof pre !== 'object' || pre === null || Array.isArray(pre)) {
    p(where, `expected an object, got ${show(pre)}`);
    return false;
  }
  const o = pre as Record<string, unknown>;
  let ok = true;
  const q: Problem = (f, m) => {
    ok = false;
    p(f, m);
  };
  checkCropFields(q, o, where, required);
  if (!INTERPOLATIONS.includes(o.interpolation as Interpolation)) {
    q(`${where}.interpolation`, `expected one of ${INTERPOLATIONS.join(', ')}, got ${show(o.interpolation)}`);
  }
  for (const k of ['mean', 'std'] as const) {
    const v = o[k];
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
      q(`${where}.${k}`, `expected 3 finite numbers (RGB, on the 0..1 scale), got ${show(v)}`);
    } else if (k === 'std' && v.some((x) => x <= 0)) {
      q(`${where}.std`, 'every std must be positive');
    }
  }
  return ok;
}

/**
 * The preprocessing in `value` (parsed JSON), with only the known fields kept; a UserError naming
 * `label` lists every problem. `label` says where it came from, e.g. "m.onnx metadata 'zoo.preprocessing'".
 */
export function parsePreprocessing(value: unknown, label: string): Preprocessing {
  const problems: string[] = [];
  if (!checkPreprocessingFields((f, m) => problems.push(`${f}: ${m}`), value)) {
    throw new UserError(`${label} is not a valid preprocessing: ${problems.join('; ')}`);
  }
  const v = value as Preprocessing;
  return {
    ...(v.inputSize !== undefined ? { inputSize: v.inputSize } : {}),
    resizeShorter: v.resizeShorter,
    crop: v.crop,
    interpolation: v.interpolation,
    mean: [...v.mean],
    std: [...v.std],
  };
}
