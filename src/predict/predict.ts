/**
 * `zoo predict`: classify images with an ONNX model in ONNX Runtime.
 *
 * Preprocessing is the model's evaluation transform: resize the shorter side (the longer one in
 * proportion, rounded down as torchvision does) with the entry's interpolation, center crop, scale to
 * [0, 1], subtract the mean and divide by the standard deviation, NCHW. Images are decoded by sharp
 * (JPEG, PNG, WebP, and more), converted to sRGB; an alpha channel is dropped.
 */
import { open, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { createSession, runClassifier, type ProviderChoice } from '../runtime/ort.js';
import type { PullPreprocessing } from '../hub/pull.js';

export type Preprocessing = PullPreprocessing;

/** timm / torchvision ImageNet defaults, for ONNX files that do not record their own. */
export const DEFAULT_PREPROCESSING: Preprocessing = {
  inputSize: 224,
  resizeShorter: 256,
  crop: 224,
  interpolation: 'bilinear',
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
};

const KERNELS = { bilinear: 'linear', bicubic: 'cubic', nearest: 'nearest' } as const;

/** One image as normalized CHW float32 [3, crop, crop]. */
export async function preprocessImage(path: string, p: Preprocessing): Promise<Float32Array> {
  let meta: sharp.Metadata;
  try {
    meta = await sharp(path, { failOn: 'error' }).metadata();
  } catch (e) {
    throw new UserError(`${path}: not a readable image (${(e as Error).message})`);
  }
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!w || !h) throw new UserError(`${path}: image has no size`);
  const short = Math.min(w, h);
  const nw = w <= h ? p.resizeShorter : Math.floor((p.resizeShorter * w) / short);
  const nh = h < w ? p.resizeShorter : Math.floor((p.resizeShorter * h) / short);
  if (nw < p.crop || nh < p.crop) throw new UserError(`crop ${p.crop} is larger than the resized image ${nw}x${nh}`);
  const left = Math.round((nw - p.crop) / 2);
  const top = Math.round((nh - p.crop) / 2);
  let raw: Buffer;
  try {
    raw = await sharp(path, { failOn: 'error' })
      .toColourspace('srgb')
      .removeAlpha()
      .resize(nw, nh, { kernel: KERNELS[p.interpolation], fit: 'fill' })
      .extract({ left, top, width: p.crop, height: p.crop })
      .raw()
      .toBuffer();
  } catch (e) {
    throw new UserError(`${path}: cannot decode (${(e as Error).message})`);
  }
  const n = p.crop * p.crop;
  if (raw.length !== n * 3) throw new UserError(`${path}: decoded to ${raw.length} bytes, expected ${n * 3} (RGB)`);
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) {
    const m = p.mean[c]!;
    const s = p.std[c]!;
    for (let i = 0; i < n; i++) out[c * n + i] = (raw[i * 3 + c]! / 255 - m) / s;
  }
  return out;
}

/**
 * ONNX metadata_props without decoding the (large) graph: a scan of the ModelProto's top-level
 * fields, skipping all but field 14 (metadata_props: StringStringEntryProto { key = 1, value = 2 }).
 */
export async function readOnnxMetadata(path: string): Promise<Record<string, string>> {
  const bytes = await readFile(path);
  const out: Record<string, string> = {};
  let pos = 0;
  const varint = (): number => {
    let result = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (pos >= bytes.length) throw new UserError(`${path}: truncated ONNX file`);
      const b = bytes[pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return result;
      shift += 7;
    }
    throw new UserError(`${path}: malformed ONNX file (varint)`);
  };
  const utf8 = new TextDecoder();
  while (pos < bytes.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint();
      if (pos + len > bytes.length) throw new UserError(`${path}: truncated ONNX file`);
      if (field === 14) {
        const end = pos + len;
        let k = '';
        let v = '';
        while (pos < end) {
          const kk = varint();
          const l = varint();
          const s = utf8.decode(bytes.subarray(pos, pos + l));
          pos += l;
          if (kk >> 3 === 1) k = s;
          else if (kk >> 3 === 2) v = s;
        }
        out[k] = v;
      } else pos += len;
    } else throw new UserError(`${path}: not an ONNX model (unexpected wire type ${wire})`);
  }
  return out;
}

export interface Prediction {
  index: number;
  label: string;
  probability: number;
}

export interface PredictOptions {
  topk?: number;
  preprocessing?: Preprocessing;
  categories?: string[];
  provider?: ProviderChoice;
  batchSize?: number;
}

function softmaxTop(logits: Float32Array, offset: number, k: number, n: number, labels: string[] | undefined): Prediction[] {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  const p = new Float64Array(n);
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[offset + i]! - max);
  const order = [...Array(n).keys()].sort((a, b) => p[b]! - p[a]!).slice(0, k);
  return order.map((i) => ({ index: i, label: labels?.[i] ?? String(i), probability: p[i]! / sum }));
}

/** Runs an ONNX classifier on images; top-k classes with probabilities per image. */
export async function classifyImages(onnxPath: string, images: string[], options: PredictOptions = {}): Promise<{ image: string; top: Prediction[] }[]> {
  for (const img of images) if (!existsSync(img)) throw new UserError(`image '${img}' does not exist`);
  const pre = options.preprocessing ?? DEFAULT_PREPROCESSING;
  const session = await createSession(onnxPath, { provider: options.provider ?? 'auto' });
  try {
    const results: { image: string; top: Prediction[] }[] = [];
    const bs = options.batchSize ?? 8;
    const n = pre.crop * pre.crop * 3;
    for (let i = 0; i < images.length; i += bs) {
      const chunk = images.slice(i, i + bs);
      const input = new Float32Array(chunk.length * n);
      for (let j = 0; j < chunk.length; j++) input.set(await preprocessImage(chunk[j]!, pre), j * n);
      const logits = await runClassifier(session, input, [chunk.length, 3, pre.crop, pre.crop]);
      const classes = logits.length / chunk.length;
      chunk.forEach((image, j) => results.push({ image, top: softmaxTop(logits, j * classes, options.topk ?? 5, classes, options.categories) }));
    }
    return results;
  } finally {
    await session.session.release();
  }
}

/** True if the file starts like a protobuf ModelProto (ir_version, field 1, varint). */
export async function looksLikeOnnx(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = new Uint8Array(1);
    await fh.read(b, 0, 1, 0);
    return b[0] === 0x08;
  } finally {
    await fh.close();
  }
}
