/**
 * What travels with an exported segmenter (ONNX metadata_props), beside the keys every zoo model has
 * (zoo.arch, zoo.name, zoo.labels, zoo.training; see src/onnx/metadata.ts):
 *
 *   zoo.task                       'semantic-segmentation'
 *   zoo.segmentation_preprocessing JSON {mean, std}: (x / 255 - mean) / std per RGB channel, the image at
 *                                  its own size (the network takes any height and width)
 *   zoo.labels                     the class names; output channel k is class k, label value k + 1
 *
 * Read back values are checked (a file may be hostile) and a bad one is a UserError naming the key.
 */
import { UserError } from '../errors.js';
import { META, parseLabels, readOnnxMetadata } from '../onnx/metadata.js';

export const SEGMENTATION_META = {
  task: 'zoo.task',
  preprocessing: 'zoo.segmentation_preprocessing',
} as const;

export const SEGMENTATION_TASK = 'semantic-segmentation';

export interface SegmentationPreprocessing {
  mean: number[];
  std: number[];
}

export interface SegmentationMetadata extends SegmentationPreprocessing {
  arch?: string;
  name?: string;
  labels: string[];
  training?: string;
}

export function segmentationMetadata(m: SegmentationMetadata): Record<string, string> {
  return {
    [SEGMENTATION_META.task]: SEGMENTATION_TASK,
    ...(m.arch ? { [META.arch]: m.arch } : {}),
    ...(m.name ? { [META.name]: m.name } : {}),
    [META.labels]: JSON.stringify(m.labels),
    [SEGMENTATION_META.preprocessing]: JSON.stringify({ mean: m.mean, std: m.std }),
    ...(m.training ? { [META.training]: m.training } : {}),
  };
}

/** Whether metadata_props describe a zoo segmenter. */
export function isSegmenter(props: Record<string, string>): boolean {
  return props[SEGMENTATION_META.task] === SEGMENTATION_TASK;
}

function jsonProp(props: Record<string, string>, key: string, label: string): unknown {
  const raw = props[key];
  if (raw === undefined) throw new UserError(`${label}: metadata '${key}' is missing`);
  try {
    return JSON.parse(raw);
  } catch (e) {
    throw new UserError(`${label}: metadata '${key}' is not JSON (${(e as Error).message})`);
  }
}

/** A segmenter's metadata from metadata_props, checked; `label` names the file in errors. */
export function parseSegmentationMetadata(props: Record<string, string>, label: string): SegmentationMetadata {
  if (!isSegmenter(props)) {
    throw new UserError(`${label} is not a zoo segmenter (its metadata has no ${SEGMENTATION_META.task} = ${SEGMENTATION_TASK}); export one with zoo seg export`);
  }
  const o = jsonProp(props, SEGMENTATION_META.preprocessing, label) as Partial<SegmentationPreprocessing> | null;
  const triple = (v: unknown, positive: boolean) => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0));
  if (!o || typeof o !== 'object' || !triple(o.mean, false) || !triple(o.std, true)) {
    throw new UserError(`${label}: metadata '${SEGMENTATION_META.preprocessing}' must be {mean, std} (3 numbers each, std > 0)`);
  }
  return {
    mean: o.mean!,
    std: o.std!,
    labels: parseLabels(jsonProp(props, META.labels, label), label),
    ...(props[META.arch] ? { arch: props[META.arch] } : {}),
    ...(props[META.name] ? { name: props[META.name] } : {}),
    ...(props[META.training] ? { training: props[META.training] } : {}),
  };
}

/** The metadata of a segmenter's ONNX file. */
export async function readSegmentationMetadata(file: string): Promise<SegmentationMetadata> {
  return parseSegmentationMetadata(await readOnnxMetadata(file), file);
}
