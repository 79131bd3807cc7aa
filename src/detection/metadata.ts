/**
 * What travels with an exported detector (ONNX metadata_props), beside the keys every zoo model has
 * (zoo.arch, zoo.name, zoo.labels, zoo.training; see src/onnx/metadata.ts):
 *
 *   zoo.task                   'object-detection'
 *   zoo.detection_preprocessing JSON {minSize, maxSize, mean, std}: resize the short side to minSize with
 *                              the long side at most maxSize, then (x / 255 - mean) / std per RGB channel
 *
 * Read back values are checked (a file may be hostile) and a bad one is a UserError naming the key.
 */
import { UserError } from '../errors.js';
import { META, parseLabels, readOnnxMetadata } from '../onnx/metadata.js';

export const DETECTION_META = {
  task: 'zoo.task',
  preprocessing: 'zoo.detection_preprocessing',
} as const;

export const DETECTION_TASK = 'object-detection';

export interface DetectionPreprocessing {
  minSize: number;
  maxSize: number;
  mean: number[];
  std: number[];
}

export interface DetectionMetadata extends DetectionPreprocessing {
  arch?: string;
  name?: string;
  labels: string[];
  training?: string;
}

/** Largest resize side accepted from a file. */
const MAX_SIDE = 8192;

export function detectionMetadata(m: DetectionMetadata): Record<string, string> {
  return {
    [DETECTION_META.task]: DETECTION_TASK,
    ...(m.arch ? { [META.arch]: m.arch } : {}),
    ...(m.name ? { [META.name]: m.name } : {}),
    [META.labels]: JSON.stringify(m.labels),
    [DETECTION_META.preprocessing]: JSON.stringify({ minSize: m.minSize, maxSize: m.maxSize, mean: m.mean, std: m.std }),
    ...(m.training ? { [META.training]: m.training } : {}),
  };
}

/** Whether metadata_props describe a zoo detector. */
export function isDetector(props: Record<string, string>): boolean {
  return props[DETECTION_META.task] === DETECTION_TASK;
}

/** A detector's metadata from metadata_props, checked; `label` names the file in errors. */
export function parseDetectionMetadata(props: Record<string, string>, label: string): DetectionMetadata {
  if (!isDetector(props)) throw new UserError(`${label} is not a zoo detector (its metadata has no ${DETECTION_META.task} = ${DETECTION_TASK}); export one with zoo det export`);
  const raw = props[DETECTION_META.preprocessing];
  if (raw === undefined) throw new UserError(`${label}: metadata '${DETECTION_META.preprocessing}' is missing`);
  let p: unknown;
  try {
    p = JSON.parse(raw);
  } catch (e) {
    throw new UserError(`${label}: metadata '${DETECTION_META.preprocessing}' is not JSON (${(e as Error).message})`);
  }
  const o = p as Partial<DetectionPreprocessing> | null;
  const side = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_SIDE;
  const triple = (v: unknown, positive: boolean) => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0));
  if (!o || typeof o !== 'object' || !side(o.minSize) || !side(o.maxSize) || o.maxSize! < o.minSize! || !triple(o.mean, false) || !triple(o.std, true)) {
    throw new UserError(`${label}: metadata '${DETECTION_META.preprocessing}' must be {minSize, maxSize (sides 1..${MAX_SIDE}, max >= min), mean, std (3 numbers each, std > 0)}`);
  }
  const labelsRaw = props[META.labels];
  if (labelsRaw === undefined) throw new UserError(`${label}: metadata '${META.labels}' (the class names) is missing`);
  let labels: unknown;
  try {
    labels = JSON.parse(labelsRaw);
  } catch (e) {
    throw new UserError(`${label}: metadata '${META.labels}' is not JSON (${(e as Error).message})`);
  }
  return {
    minSize: o.minSize!,
    maxSize: o.maxSize!,
    mean: o.mean!,
    std: o.std!,
    labels: parseLabels(labels, label),
    ...(props[META.arch] ? { arch: props[META.arch] } : {}),
    ...(props[META.name] ? { name: props[META.name] } : {}),
    ...(props[META.training] ? { training: props[META.training] } : {}),
  };
}

/** The metadata of a detector's ONNX file. */
export async function readDetectionMetadata(file: string): Promise<DetectionMetadata> {
  return parseDetectionMetadata(await readOnnxMetadata(file), file);
}
