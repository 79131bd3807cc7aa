/**
 * Pipelines: a task and a model in, a function from inputs to answers out, as transformers.js'
 * `pipeline(task, model)`. The model is anything the resolver takes that runs (a published name,
 * pulled on first use; a local zoo name; an .onnx file; a run directory); it runs in ONNX Runtime
 * with its own preprocessing and class names, as `zoo predict` runs it.
 *
 *   const classify = await pipeline('image-classification', 'resnet50d-best');
 *   const [top] = await classify('cat.jpg');            // [{ label, probability, index }, ...]
 *   await classify.dispose();
 *
 * Tasks: 'image-classification', 'object-detection' (boxes in each image's pixels) and
 * 'image-segmentation' (a label per pixel at each image's own size).
 */
import { detect, openDetector, type ImageDetection } from './detection.js';
import { openSegmenter, segment, type ImageSegmentation } from './segmentation.js';
import { UserError } from '../errors.js';
import { ImageClassifier, type Classification, type ImageInput, type ImageResult } from '../predict/classifier.js';
import type { Preprocessing } from '../predict/preprocessing.js';
import type { ProviderChoice } from '../runtime/ort.js';
import { checkModelRef, resolveLoading, type LoadOptions } from './pretrained.js';

export const PIPELINE_TASKS = ['image-classification', 'object-detection', 'image-segmentation'] as const;
export type PipelineTask = (typeof PIPELINE_TASKS)[number];

export interface PipelineOptions extends LoadOptions {
  /** Where ONNX Runtime runs: 'auto' (CUDA when it can start, else the CPU, saying why through onNote), 'cpu' or 'cuda'. */
  device?: ProviderChoice;
  /** Receives a line for each assumption made about the model (missing preprocessing, say). */
  onNote?: (note: string) => void;
}

export interface ClassifyCallOptions {
  /** Classes per image (default 5). */
  topk?: number;
  /** Images per ONNX Runtime call (default 8). */
  batchSize?: number;
}

/** `pipeline('image-classification', ...)`: classifies one image or a list of them. */
export interface ImageClassificationPipeline {
  /** One image: its top classes. A list: the top classes of each. An unreadable image throws (see `classifyEach`). */
  (image: ImageInput, options?: ClassifyCallOptions): Promise<Classification[]>;
  (images: readonly ImageInput[], options?: ClassifyCallOptions): Promise<Classification[][]>;
  /** Every image's answer or error, without throwing for unreadable ones. */
  classifyEach(images: readonly ImageInput[], options?: ClassifyCallOptions): Promise<ImageResult[]>;
  readonly task: 'image-classification';
  /** The model as resolved (its name, or the file). */
  readonly model: string;
  readonly labels: readonly string[] | undefined;
  readonly preprocessing: Preprocessing;
  /** Where it runs: 'cpu' or 'cuda'. */
  readonly device: 'cpu' | 'cuda';
  /** Releases the ONNX Runtime session. */
  dispose(): Promise<void>;
}

async function imageClassification(model: string, options: PipelineOptions): Promise<ImageClassificationPipeline> {
  const resolved = await resolveLoading(model, 'run', options, "pipeline('image-classification')");
  const notes = [...resolved.notes];
  const classifier = await ImageClassifier.open(resolved, { ...(options.device ? { provider: options.device } : {}), notes });
  if (classifier.session.note) notes.push(classifier.session.note);
  try {
    for (const n of notes) options.onNote?.(n);
  } catch (e) {
    await classifier.dispose();
    throw e;
  }
  const each = (images: readonly ImageInput[], o: ClassifyCallOptions = {}) => classifier.classify(images, o);
  const call = async (input: ImageInput | readonly ImageInput[], o: ClassifyCallOptions = {}) => {
    const list = Array.isArray(input) ? (input as readonly ImageInput[]) : [input as ImageInput];
    const results = await each(list, o);
    const failed = results.find((r) => r.error);
    if (failed) throw new UserError(failed.error!);
    const tops = results.map((r) => r.top!);
    return Array.isArray(input) ? tops : tops[0]!;
  };
  return Object.assign(call, {
    classifyEach: each,
    task: 'image-classification' as const,
    model: resolved.label,
    labels: classifier.labels,
    preprocessing: classifier.preprocessing,
    device: classifier.provider,
    dispose: () => classifier.dispose(),
  }) as ImageClassificationPipeline;
}

/** `pipeline('object-detection', ...)`: the objects of images, boxes in each image's own pixels. */
export interface ObjectDetectionPipeline {
  (image: string | Uint8Array, options?: { threshold?: number }): Promise<ImageDetection[]>;
  (images: readonly (string | Uint8Array)[], options?: { threshold?: number }): Promise<ImageDetection[][]>;
  readonly task: 'object-detection';
  readonly model: string;
  readonly labels: readonly string[];
  readonly device: 'cpu' | 'cuda';
  dispose(): Promise<void>;
}

async function objectDetection(model: string, options: PipelineOptions): Promise<ObjectDetectionPipeline> {
  const d = await openDetector(model, { ...(options.device ? { device: options.device } : {}) });
  if (d.session.note) options.onNote?.(d.session.note);
  const call = async (input: string | Uint8Array | readonly (string | Uint8Array)[], o: { threshold?: number } = {}) => {
    const list = Array.isArray(input) ? [...(input as readonly (string | Uint8Array)[])] : [input as string | Uint8Array];
    const found = await detect(d, list, o);
    return Array.isArray(input) ? found : found[0]!;
  };
  return Object.assign(call, { task: 'object-detection' as const, model: d.file, labels: d.meta.labels, device: d.session.provider, dispose: () => d.close() }) as ObjectDetectionPipeline;
}

/** `pipeline('image-segmentation', ...)`: per-pixel classes of images at each image's own size. */
export interface ImageSegmentationPipeline {
  (image: string | Uint8Array): Promise<ImageSegmentation>;
  (images: readonly (string | Uint8Array)[]): Promise<ImageSegmentation[]>;
  readonly task: 'image-segmentation';
  readonly model: string;
  readonly labels: readonly string[];
  readonly device: 'cpu' | 'cuda';
  dispose(): Promise<void>;
}

async function imageSegmentation(model: string, options: PipelineOptions): Promise<ImageSegmentationPipeline> {
  const s = await openSegmenter(model, { ...(options.device ? { device: options.device } : {}) });
  if (s.session.note) options.onNote?.(s.session.note);
  const call = async (input: string | Uint8Array | readonly (string | Uint8Array)[]) => {
    const list = Array.isArray(input) ? [...(input as readonly (string | Uint8Array)[])] : [input as string | Uint8Array];
    const found = await segment(s, list);
    return Array.isArray(input) ? found : found[0]!;
  };
  return Object.assign(call, { task: 'image-segmentation' as const, model: s.file, labels: s.meta.labels, device: s.session.provider, dispose: () => s.close() }) as ImageSegmentationPipeline;
}

/** A pipeline for `task` over `model`; see the module comment. */
export async function pipeline(task: 'image-classification', model: string, options?: PipelineOptions): Promise<ImageClassificationPipeline>;
export async function pipeline(task: 'object-detection', model: string, options?: PipelineOptions): Promise<ObjectDetectionPipeline>;
export async function pipeline(task: 'image-segmentation', model: string, options?: PipelineOptions): Promise<ImageSegmentationPipeline>;
export async function pipeline(task: PipelineTask, model: string, options: PipelineOptions = {}): Promise<ImageClassificationPipeline | ObjectDetectionPipeline | ImageSegmentationPipeline> {
  if (PIPELINE_TASKS.includes(task)) checkModelRef(model, `pipeline('${task}')`);
  switch (task) {
    case 'image-classification':
      return imageClassification(model, options);
    case 'object-detection':
      return objectDetection(model, options);
    case 'image-segmentation':
      return imageSegmentation(model, options);
    default:
      throw new UserError(`unknown pipeline task '${String(task)}'; the tasks are ${PIPELINE_TASKS.join(', ')}`, { exitCode: 2 });
  }
}

/** One-shot classification: opens the model, classifies the images (each answer or error), closes it. */
export async function predict(model: string, images: readonly ImageInput[], options: PipelineOptions & ClassifyCallOptions = {}): Promise<ImageResult[]> {
  const p = await pipeline('image-classification', model, options);
  try {
    return await p.classifyEach(images, options);
  } finally {
    await p.dispose();
  }
}
