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
  timeoutMs: number;
}

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

/** The image's size from its header, refused before decoding when it is not an image or has too many pixels. */
async function probe(bytes: Buffer, maxPixels: number): Promise<{ width: number; height: number }> {
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw badRequest(`the body is not an image zoo can read (JPEG, PNG, WebP, GIF, AVIF, TIFF): ${(e as Error).message.split('\n')[0]}`);
  }
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  if (!width || !height) throw badRequest('the image has no size');
  if (width * height > maxPixels) {
    throw new HttpError(413, `the image is ${width}x${height} = ${width * height} pixels, more than the ${maxPixels} accepted (--max-pixels)`);
  }
  return { width, height };
}

/** Decoded RGB pixels, with truncated or corrupt data refused (400). */
async function decodeRgb(bytes: Buffer, maxPixels: number): Promise<{ data: Uint8Array; width: number; height: number; channels: 3 }> {
  try {
    const { data, info } = await sharp(bytes, { failOn: 'error', limitInputPixels: maxPixels }).rotate().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: 3 };
  } catch (e) {
    throw badRequest(`the image cannot be decoded (truncated or corrupt): ${(e as Error).message.split('\n')[0]}`);
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
    const out = await model.infer({ [input]: { type: 'float32', data: x, dims: [1, 3, crop, crop] } }, limits.timeoutMs);
    const logits = out[model.info.outputs[0]!.name]!.data as Float32Array;
    const classes = logits.length;
    return { json: { model: name, task: parts.task, width: size.width, height: size.height, predictions: softmaxTop(logits, 0, Math.min(k, classes), classes, c.labels).map((p) => ({ label: p.label, index: p.index, probability: p.probability })) } };
  }
  const px = await decodeRgb(bytes, limits.maxImagePixels);
  if (parts.task === 'object-detection') {
    const threshold = floatParam(query, 'threshold', 0.5, 0, 1);
    const d = parts.detector;
    const s = prepareDetectionSample(px, { id: 'request', year: '', width: px.width, height: px.height, objects: [] }, { minSize: d.meta.minSize, maxSize: d.meta.maxSize, preprocessing: d.meta });
    const out = await model.infer({ [input]: { type: 'float32', data: toNCHW(s.image, 1, s.height, s.width, 3), dims: [1, 3, s.height, s.width] } }, limits.timeoutMs);
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
  const unlabeled = { width: px.width, height: px.height, data: new Uint8Array(px.width * px.height) };
  const t = segEvalSample(px, unlabeled, { mean: seg.meta.mean, std: seg.meta.std });
  const out = await model.infer({ [input]: { type: 'float32', data: toNCHW(t.image, 1, t.height, t.width, 3), dims: [1, 3, t.height, t.width] } }, limits.timeoutMs);
  const labels = segmenterLabels(seg, out, t.height, t.width);
  const png = encodeGrayPng(labels, t.width, t.height, labels instanceof Uint16Array ? 16 : 8);
  if (format === 'png') return { bytes: png, contentType: 'image/png', headers: { 'X-Zoo-Classes': String(seg.meta.labels.length) } };
  const areas: Record<string, number> = {};
  for (let i = 0; i < labels.length; i++) {
    const label = seg.meta.labels[labels[i]! - 1] ?? String(labels[i]);
    areas[label] = (areas[label] ?? 0) + 1;
  }
  return { json: { model: name, task: parts.task, width: t.width, height: t.height, classes: seg.meta.labels, areas, labels_png: png.toString('base64') } };
}
