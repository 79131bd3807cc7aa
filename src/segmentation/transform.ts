/**
 * The segmentation sample transforms: decoded image and label map in, what the FCN trains or is evaluated on
 * out. Plain typed arrays, no tfjs.
 *
 * Training (`segTrainSample`, GluonCV's `_sync_transform` for ADE20K without its Gaussian blur):
 * 1. Horizontal flip with probability 0.5, of the pixels and of the labels together.
 * 2. Random scale: the long side becomes an integer drawn uniformly from [floor(0.5 base), floor(2.0 base)]
 *    (base 520), the short side round(short x long' / long) (halves up), the aspect kept. The image is
 *    resampled with transforms.ts's antialiased triangle filter (PIL's bilinear), the labels by nearest
 *    neighbour (source pixel floor((x + 0.5) x source / target), as PIL's nearest), so no value is invented.
 * 3. Padding at the bottom and right up to the crop size where a side is shorter: image 0 after normalization,
 *    labels 0 (unlabeled, so the loss ignores the padding).
 * 4. A random crop of cropSize x cropSize (480): the top-left corner uniform over the padded image.
 * Only the crop is resampled (the filter reads the source window that the crop of the resized image covers),
 * which is the same arithmetic as resizing the whole image first, without the memory of a 1040-pixel image.
 *
 * Every random decision comes from one stream, `Rng(sampleSeed(seed, epoch, index))` (data/batch.ts), drawn in
 * a fixed order: the flip (its first draw, so it equals detection's `flipDecision`), the long side, the
 * crop's x, the crop's y. The draws are made whether or not flipping is enabled, so a resumed run repeats a
 * sample's transform exactly.
 *
 * Evaluation (`segEvalSample`): the full image, normalized, labels as they are. `loadSegBatch` pads an eval
 * batch's samples to the largest height and width in it (image 0, labels 0).
 *
 * Normalization is (x / 255 - mean) / std per RGB channel with the backbone's mean and std on the 0..1 scale,
 * NHWC float32, as for the classifiers and detectors.
 */
import { sampleSeed } from '../data/batch.js';
import { decodeImage } from '../data/image_folder.js';
import { resample, type Image } from '../data/transforms.js';
import { UserError } from '../errors.js';
import { Rng } from '../util/random.js';
import { checkLabels, type SegDataset } from './ade.js';
import { readLabelPng, type LabelImage } from './png.js';

/** GluonCV's ADE20K training sizes. */
export const DEFAULT_BASE_SIZE = 520;
export const DEFAULT_CROP_SIZE = 480;
export const DEFAULT_SCALE: readonly [number, number] = [0.5, 2.0];

/** Options of the transforms. */
export interface SegTransformOptions {
  /** RGB mean and std on the 0..1 scale (the backbone's preprocessing). */
  mean: number[];
  std: number[];
  /** The long side's random range is scale x baseSize. Default 520. */
  baseSize?: number;
  /** Side of the square training crop. Default 480. */
  cropSize?: number;
  /** Range of the long side as multiples of baseSize. Default [0.5, 2.0]. */
  scale?: [number, number];
  /** Random horizontal flips (p 0.5) in training. Default true. */
  flip?: boolean;
}

/** One transformed sample. */
export interface SegSampleTensor {
  /** [height, width, 3] normalized. */
  image: Float32Array;
  /** [height, width] label values (0 = unlabeled, also the padding). */
  labels: Uint8Array | Uint16Array;
  height: number;
  width: number;
}

/** Decoded RGB pixels, HWC 0..255. */
export interface SegPixels {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3;
}

/** The geometry a training sample's draws decide (module comment). */
export interface SegTrainGeometry {
  flipped: boolean;
  /** The drawn long side and the resized size. */
  longSide: number;
  resizedHeight: number;
  resizedWidth: number;
  /** Top-left corner of the crop in the padded, resized image. */
  cropX: number;
  cropY: number;
  cropSize: number;
}

function usage(message: string): UserError {
  return new UserError(message, { exitCode: 2 });
}

function resolved(options: SegTransformOptions): { base: number; crop: number; scale: readonly [number, number]; flip: boolean } {
  const base = options.baseSize ?? DEFAULT_BASE_SIZE;
  const crop = options.cropSize ?? DEFAULT_CROP_SIZE;
  const scale = options.scale ?? DEFAULT_SCALE;
  if (!Number.isInteger(base) || base < 1) throw usage(`baseSize must be a positive integer, got ${base}`);
  if (!Number.isInteger(crop) || crop < 1) throw usage(`cropSize must be a positive integer, got ${crop}`);
  if (!(scale.length === 2 && scale[0] > 0 && scale[1] >= scale[0] && Number.isFinite(scale[1]))) throw usage(`scale must be two numbers 0 < low <= high, got ${scale.join(', ')}`);
  if (Math.floor(scale[0] * base) < 1) throw usage(`scale ${scale[0]} of baseSize ${base} leaves no pixels`);
  checkNormalization(options);
  return { base, crop, scale, flip: options.flip ?? true };
}

function checkNormalization(options: Pick<SegTransformOptions, 'mean' | 'std'>): void {
  const ok = (v: unknown, positive: boolean) => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0));
  if (!ok(options.mean, false)) throw usage(`mean must be three numbers (RGB, 0..1 scale), got ${JSON.stringify(options.mean)}`);
  if (!ok(options.std, true)) throw usage(`std must be three positive numbers (RGB, 0..1 scale), got ${JSON.stringify(options.std)}`);
}

function checkPair(pixels: SegPixels, label: LabelImage): void {
  if (pixels.channels !== 3 || pixels.data.length !== pixels.width * pixels.height * 3) {
    throw new Error(`segmentation pixels must be HWC RGB bytes, got ${pixels.channels} channels and ${pixels.data.length} values for ${pixels.width}x${pixels.height}`);
  }
  if (label.data.length !== label.width * label.height) throw new Error(`label map of ${label.data.length} values for ${label.width}x${label.height}`);
  if (pixels.width !== label.width || pixels.height !== label.height) {
    throw new UserError(`the annotation is ${label.width}x${label.height} but its image is ${pixels.width}x${pixels.height}`);
  }
}

/**
 * The draws of sample `index` in `epoch` (module comment) for an image of `height` x `width`. Pure: the
 * same arguments give the same geometry.
 */
export function segTrainGeometry(height: number, width: number, seed: number, epoch: number, index: number, options: Omit<SegTransformOptions, 'mean' | 'std'>): SegTrainGeometry {
  const { base, crop, scale, flip } = resolved({ mean: [0, 0, 0], std: [1, 1, 1], ...options });
  const rng = new Rng(sampleSeed(seed, epoch, index));
  const flipped = rng.uniform() < 0.5 && flip;
  const lo = Math.floor(scale[0] * base);
  const hi = Math.floor(scale[1] * base);
  const longSide = lo + rng.int(hi - lo + 1);
  let resizedHeight: number;
  let resizedWidth: number;
  if (height > width) {
    resizedHeight = longSide;
    resizedWidth = Math.max(1, Math.floor((width * longSide) / height + 0.5));
  } else {
    resizedWidth = longSide;
    resizedHeight = Math.max(1, Math.floor((height * longSide) / width + 0.5));
  }
  const cropX = rng.int(Math.max(resizedWidth, crop) - crop + 1);
  const cropY = rng.int(Math.max(resizedHeight, crop) - crop + 1);
  return { flipped, longSide, resizedHeight, resizedWidth, cropX, cropY, cropSize: crop };
}

function flippedPixels(p: SegPixels): SegPixels {
  const out = new Uint8Array(p.data.length);
  const row = p.width * 3;
  for (let y = 0; y < p.height; y++) {
    for (let x = 0; x < p.width; x++) {
      const s = y * row + x * 3;
      const d = y * row + (p.width - 1 - x) * 3;
      out[d] = p.data[s]!;
      out[d + 1] = p.data[s + 1]!;
      out[d + 2] = p.data[s + 2]!;
    }
  }
  return { ...p, data: out };
}

function flippedLabels(l: LabelImage): LabelImage {
  const out = l.data instanceof Uint16Array ? new Uint16Array(l.data.length) : new Uint8Array(l.data.length);
  for (let y = 0; y < l.height; y++) {
    const o = y * l.width;
    for (let x = 0; x < l.width; x++) out[o + l.width - 1 - x] = l.data[o + x]!;
  }
  return { ...l, data: out };
}

/** Writes normalized RGB values of `src` (HWC, `w` x `h`) into `out` ([outW, 3] rows) at the top left. */
function normalizeInto(src: ArrayLike<number>, w: number, h: number, out: Float32Array, outW: number, mean: number[], std: number[]): void {
  const m = mean.map((v) => v * 255);
  const inv = std.map((v) => 1 / (v * 255));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = (y * w + x) * 3;
      const d = (y * outW + x) * 3;
      out[d] = (src[s]! - m[0]!) * inv[0]!;
      out[d + 1] = (src[s + 1]! - m[1]!) * inv[1]!;
      out[d + 2] = (src[s + 2]! - m[2]!) * inv[2]!;
    }
  }
}

function labelArray(like: LabelImage['data'], length: number): Uint8Array | Uint16Array {
  return like instanceof Uint16Array ? new Uint16Array(length) : new Uint8Array(length);
}

/**
 * The training transform (module comment) of one sample: flip, random scale, pad, random crop, all decided
 * by (seed, epoch, index). `pixels` and `label` must have the same size.
 */
export function segTrainSample(pixels: SegPixels, label: LabelImage, seed: number, epoch: number, index: number, options: SegTransformOptions): SegSampleTensor {
  resolved(options);
  checkPair(pixels, label);
  const g = segTrainGeometry(pixels.height, pixels.width, seed, epoch, index, options);
  const src = g.flipped ? flippedPixels(pixels) : pixels;
  const lab = g.flipped ? flippedLabels(label) : label;
  const { width: w, height: h } = pixels;
  const crop = g.cropSize;
  // The part of the crop that lies on the resized image; the rest is padding.
  const vw = Math.min(crop, g.resizedWidth - g.cropX);
  const vh = Math.min(crop, g.resizedHeight - g.cropY);
  const sx = w / g.resizedWidth;
  const sy = h / g.resizedHeight;
  const image = new Float32Array(crop * crop * 3);
  const window = resample(src as Image<Uint8Array>, { x: g.cropX * sx, y: g.cropY * sy, width: vw * sx, height: vh * sy }, vh, vw);
  normalizeInto(window.data, vw, vh, image, crop, options.mean, options.std);
  const labels = labelArray(label.data, crop * crop);
  const columns = new Int32Array(vw);
  for (let x = 0; x < vw; x++) columns[x] = Math.min(w - 1, Math.floor((g.cropX + x + 0.5) * sx));
  for (let y = 0; y < vh; y++) {
    const row = Math.min(h - 1, Math.floor((g.cropY + y + 0.5) * sy)) * w;
    for (let x = 0; x < vw; x++) labels[y * crop + x] = lab.data[row + columns[x]!]!;
  }
  return { image, labels, height: crop, width: crop };
}

/** The evaluation transform: the full image normalized, the labels copied. */
export function segEvalSample(pixels: SegPixels, label: LabelImage, options: SegTransformOptions): SegSampleTensor {
  checkNormalization(options);
  checkPair(pixels, label);
  const { width, height } = pixels;
  const image = new Float32Array(width * height * 3);
  normalizeInto(pixels.data, width, height, image, width, options.mean, options.std);
  const labels = labelArray(label.data, width * height);
  labels.set(label.data);
  return { image, labels, height, width };
}

/** A batch: images [n, height, width, 3] and labels [n, height, width]. */
export interface SegBatch {
  images: Float32Array;
  labels: Uint8Array | Uint16Array;
  n: number;
  height: number;
  width: number;
}

/** Stacks samples, each at the top left, padded to the largest height and width (image 0, labels 0). */
export function collateSeg(samples: readonly SegSampleTensor[], numClasses: number): SegBatch {
  if (samples.length === 0) throw new Error('cannot collate an empty segmentation batch');
  const height = Math.max(...samples.map((s) => s.height));
  const width = Math.max(...samples.map((s) => s.width));
  const images = new Float32Array(samples.length * height * width * 3);
  const labels = numClasses <= 255 ? new Uint8Array(samples.length * height * width) : new Uint16Array(samples.length * height * width);
  samples.forEach((s, n) => {
    for (let y = 0; y < s.height; y++) {
      images.set(s.image.subarray(y * s.width * 3, (y + 1) * s.width * 3), ((n * height + y) * width) * 3);
      labels.set(s.labels.subarray(y * s.width, (y + 1) * s.width), (n * height + y) * width);
    }
  });
  return { images, labels, n: samples.length, height, width };
}

/**
 * Reads and transforms the samples `indices` of `data`: the image decoded by sharp, the annotation read and
 * checked against the class count and the image's size (`checkLabels`), then the training transform (sample
 * i drawn from (seed, epoch, i), whatever batch it is in) or the evaluation one, and collated.
 */
export async function loadSegBatch(
  data: SegDataset,
  indices: ArrayLike<number>,
  options: SegTransformOptions & { train: boolean; seed: number; epoch: number },
): Promise<SegBatch> {
  if (options.train) resolved(options);
  else checkNormalization(options);
  const k = data.classes.length;
  const samples = await Promise.all(
    Array.from(indices, async (i) => {
      const sample = data.samples[i];
      if (!sample) throw new RangeError(`sample index ${i} is outside the data set (${data.samples.length} samples)`);
      const [pixels, label] = await Promise.all([decodeImage(sample.image, { orientation: false }), readLabelPng(sample.annotation)]);
      checkLabels(label, k, sample.annotation, pixels);
      const px: SegPixels = { data: pixels.data, width: pixels.width, height: pixels.height, channels: 3 };
      return options.train ? segTrainSample(px, label, options.seed, options.epoch, i, options) : segEvalSample(px, label, options);
    }),
  );
  return collateSeg(samples, k);
}
