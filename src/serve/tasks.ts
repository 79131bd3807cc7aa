/**
 * The task endpoint, `POST /v1/models/<name>:predict`: an image in (raw body or multipart/form-data), the
 * model's own preprocessing applied, and the task's answer out: top-k labels for a classifier, boxes with
 * labels and scores for a detector, a label PNG (or JSON with it) for a segmenter. The tensors go through
 * the model's batcher like protocol requests, so concurrent images share runs.
 */
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { preprocessImage } from '../predict/predict.js';
import { softmaxTop } from '../predict/classifier.js';
import { imageDetections } from '../api/detection.js';
import { decodeImageInput } from '../api/transfer.js';
import { segmenterLabels } from '../api/segmentation.js';
import { prepareDetectionSample } from '../detection/transform.js';
import { unpadDetections } from '../detection/export.js';
import { segEvalSample } from '../segmentation/transform.js';
import { encodeGrayPng } from '../segmentation/png.js';
import { toNCHW } from '../onnx/check.js';
import { HttpError, badRequest, mediaParameter, mediaType } from './http.js';
import { parseMultipart } from './multipart.js';
import type { ServedModel } from './model.js';

export interface TaskLimits {
  maxImagePixels: number;
  /** Segmenters run on images of at most this many pixels (larger ones are scaled down, the labels scaled back up). */
  segmentationPixels: number;
  timeoutMs: number;
  /** Aborted when the client goes away: a request still waiting is withdrawn. */
  signal?: AbortSignal;
  /** Called once the image is decoded, just before the model is asked (the request leaves the admission count for the queue). */
  beforeInfer?: () => void;
}

/** The formats the endpoint decodes (sharp's names); SVG and the rest of what sharp reads are refused. */
const IMAGE_FORMATS = ['jpeg', 'png', 'webp', 'gif', 'heif', 'tiff'];

/** A task answer: JSON, or bytes with their content type. */
export type TaskAnswer = { json: Record<string, unknown> } | { bytes: Buffer; contentType: string; headers?: Record<string, string> };

const RAW_IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/avif', 'image/tiff', 'application/octet-stream'];

/** The image bytes of a request: the body, or the file part of a multipart form. */
export function imageFromBody(body: Buffer, contentType: string | undefined): Buffer {
  const type = mediaType(contentType);
  let bytes = body;
  if (type === 'multipart/form-data') {
    const parts = parseMultipart(body, mediaParameter(contentType, 'boundary'));
    const part = parts.find((p) => p.name === 'image') ?? parts.find((p) => p.name === 'file') ?? parts.find((p) => p.filename !== undefined) ?? parts[0];
    if (!part) throw badRequest('the multipart form has no parts; send the image as a part named "image"');
    bytes = part.data;
  } else if (type && !RAW_IMAGE_TYPES.includes(type)) {
    throw new HttpError(415, `Content-Type ${type} is not an image: send the image as the body (image/jpeg, image/png, image/webp) or as multipart/form-data`);
  }
  if (bytes.length === 0) throw badRequest('the request carries no image (an empty body or part)');
  return bytes;
}

/**
 * The image's size from its header (as displayed: EXIF rotations of 90 degrees swap it), refused before
 * decoding when it is not an image of the accepted formats or has too many pixels.
 */
async function probe(bytes: Buffer, maxPixels: number): Promise<{ width: number; height: number }> {
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw badRequest(`the body is not an image zoo can read (JPEG, PNG, WebP, GIF, AVIF, TIFF): ${(e as Error).message.split('\n')[0]}`);
  }
  if (!meta.format || !IMAGE_FORMATS.includes(meta.format)) {
    throw new HttpError(415, `the image is ${meta.format ?? 'of an unknown format'}; the endpoint takes JPEG, PNG, WebP, GIF, AVIF or TIFF`);
  }
  const swap = (meta.orientation ?? 1) >= 5;
  const width = (swap ? meta.height : meta.width) ?? 0;
  const height = (swap ? meta.width : meta.height) ?? 0;
  if (!width || !height) throw badRequest('the image has no size');
  if (width * height > maxPixels) {
    throw new HttpError(413, `the image is ${width}x${height} = ${width * height} pixels, more than the ${maxPixels} accepted (--max-pixels)`);
  }
  return { width, height };
}

/** Decoded RGB pixels (resized to `size` when given), with truncated or corrupt data refused (400). */
async function decodeRgb(bytes: Buffer, maxPixels: number, size?: { width: number; height: number }): Promise<{ data: Uint8Array; width: number; height: number; channels: 3 }> {
  try {
    return await decodeImageInput(bytes, { strict: true, maxPixels, ...(size ? { size } : {}) });
  } catch (e) {
    if (e instanceof UserError) throw badRequest(`the image cannot be decoded (truncated or corrupt): ${e.message.replace(/^the image bytes cannot be decoded \((.*)\)$/s, '$1').split('\n')[0]}`);
    throw e;
  }
}

function intParam(q: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const v = q.get(name);
  if (v === null) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw badRequest(`'${name}' must be an integer from ${min} to ${max}, got '${v.slice(0, 20)}'`);
  return n;
}

function floatParam(q: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const v = q.get(name);
  if (v === null) return fallback;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw badRequest(`'${name}' must be a number from ${min} to ${max}, got '${v.slice(0, 20)}'`);
  return n;
}

/** `model.infer`, after telling `limits.beforeInfer`. */
function inferAfter(model: ServedModel, limits: TaskLimits, ...args: Parameters<ServedModel['infer']>): ReturnType<ServedModel['infer']> {
  limits.beforeInfer?.();
  return model.infer(...args);
}

/** Answers `:predict` for one image. */
export async function predictImage(model: ServedModel, body: Buffer, contentType: string | undefined, query: URLSearchParams, limits: TaskLimits): Promise<TaskAnswer> {
  const parts = model.parts;
  if (parts.task === 'tensor') {
    throw new HttpError(400, `${model.info.name} is not a zoo classifier, detector or segmenter (its metadata names no task): use POST /v2/models/${model.info.name}/infer with tensors`);
  }
  const bytes = imageFromBody(body, contentType);
  const size = await probe(bytes, limits.maxImagePixels);
  const input = model.info.inputs[0]!.name;
  const name = model.info.name;
  if (parts.task === 'image-classification') {
    const k = intParam(query, 'topk', 5, 1, 1000);
    const c = parts.classifier;
    let x: Float32Array;
    try {
      x = await preprocessImage(bytes, c.preprocessing);
    } catch (e) {
      if (e instanceof UserError) throw badRequest(e.message.replace(/^image bytes: /, 'the image: '));
      throw e;
    }
    const crop = c.preprocessing.crop;
    const out = await inferAfter(model, limits, { [input]: { type: 'float32', data: x, dims: [1, 3, crop, crop] } }, limits.timeoutMs, limits.signal);
    const logits = out[model.info.outputs[0]!.name]!.data as Float32Array;
    const classes = logits.length;
    return { json: { model: name, task: parts.task, width: size.width, height: size.height, predictions: softmaxTop(logits, 0, Math.min(k, classes), classes, c.labels).map((p) => ({ label: p.label, index: p.index, probability: p.probability })) } };
  }
  if (parts.task === 'object-detection') {
    const px = await decodeRgb(bytes, limits.maxImagePixels);
    const threshold = floatParam(query, 'threshold', 0.5, 0, 1);
    const d = parts.detector;
    const s = prepareDetectionSample(px, { id: 'request', year: '', width: px.width, height: px.height, objects: [] }, { minSize: d.meta.minSize, maxSize: d.meta.maxSize, preprocessing: d.meta });
    const out = await inferAfter(model, limits, { [input]: { type: 'float32', data: toNCHW(s.image, 1, s.height, s.width, 3), dims: [1, 3, s.height, s.width] } }, limits.timeoutMs, limits.signal);
    const [found] = unpadDetections(
      {
        num: out.num_detections!.data as BigInt64Array,
        boxes: out.detection_boxes!.data as Float32Array,
        scores: out.detection_scores!.data as Float32Array,
        classes: out.detection_classes!.data as BigInt64Array,
      },
      d.maxDetections,
    );
    const detections = imageDetections(found!, s, d.meta.labels, threshold).map((f) => ({ label: f.label, index: f.classIndex, score: f.score, box: f.box }));
    return { json: { model: name, task: parts.task, width: px.width, height: px.height, detections } };
  }
  const format = query.get('format') ?? 'png';
  if (format !== 'png' && format !== 'json') throw badRequest(`'format' must be png or json, got '${format.slice(0, 20)}'`);
  const seg = parts.segmenter;
  // A segmenter's memory grows with the image (logits of every class at every pixel): large images run
  // scaled down to the limit, and their labels are scaled back up to the image's size.
  const scale = Math.min(1, Math.sqrt(limits.segmentationPixels / (size.width * size.height)));
  const run = scale < 1 ? { width: Math.max(1, Math.floor(size.width * scale)), height: Math.max(1, Math.floor(size.height * scale)) } : undefined;
  const px = await decodeRgb(bytes, limits.maxImagePixels, run);
  const unlabeled = { width: px.width, height: px.height, data: new Uint8Array(px.width * px.height) };
  const t = segEvalSample(px, unlabeled, { mean: seg.meta.mean, std: seg.meta.std });
  const out = await inferAfter(model, limits, { [input]: { type: 'float32', data: toNCHW(t.image, 1, t.height, t.width, 3), dims: [1, 3, t.height, t.width] } }, limits.timeoutMs, limits.signal);
  let labels = segmenterLabels(seg, out, t.height, t.width);
  if (run) labels = scaleLabels(labels, t.width, t.height, size.width, size.height);
  const { width, height } = size;
  const png = encodeGrayPng(labels, width, height, labels instanceof Uint16Array ? 16 : 8);
  const headers: Record<string, string> = { 'X-Zoo-Classes': String(seg.meta.labels.length), ...(run ? { 'X-Zoo-Inferred-Size': `${t.width}x${t.height}` } : {}) };
  if (format === 'png') return { bytes: png, contentType: 'image/png', headers };
  const areas: Record<string, number> = Object.create(null) as Record<string, number>;
  for (let i = 0; i < labels.length; i++) {
    const label = seg.meta.labels[labels[i]! - 1] ?? String(labels[i]);
    areas[label] = (areas[label] ?? 0) + 1;
  }
  return {
    json: { model: name, task: parts.task, width, height, ...(run ? { inferred: { width: t.width, height: t.height } } : {}), classes: seg.meta.labels, areas, labels_png: png.toString('base64') },
  };
}

/** Labels of a w x h map at W x H, nearest neighbour (pixel centres). */
export function scaleLabels(labels: Uint8Array | Uint16Array, w: number, h: number, W: number, H: number): Uint8Array | Uint16Array {
  const out = labels instanceof Uint16Array ? new Uint16Array(W * H) : new Uint8Array(W * H);
  const cols = new Int32Array(W);
  for (let x = 0; x < W; x++) cols[x] = Math.min(w - 1, Math.floor(((x + 0.5) * w) / W));
  for (let y = 0; y < H; y++) {
    const row = Math.min(h - 1, Math.floor(((y + 0.5) * h) / H)) * w;
    for (let x = 0; x < W; x++) out[y * W + x] = labels[row + cols[x]!]!;
  }
  return out;
}
