/**
 * The detection sample transform: decoded image and VOC objects in, what the detector trains on out.
 *
 * 1. Resize, aspect ratio kept (GluonCV's `resize_short_within`, torchvision's `GeneralizedRCNNTransform`):
 *    scale = min(minSize / short side, maxSize / long side), each side becomes round(side x scale), so the
 *    short side is `minSize` (600) unless the long side would pass `maxSize` (1000), which it then equals.
 *    Resampling is transforms.ts's antialiased triangle filter, the classifiers' arithmetic.
 * 2. Optional horizontal flip, of the pixels and of the boxes.
 * 3. Normalization (x / 255 - mean) / std with a preprocessing's RGB mean and std on the 0..1 scale
 *    (default ImageNet's, as the classifiers use), NHWC float32.
 * 4. Boxes to the model's convention (detection contracts): continuous coordinates of the resized image,
 *    x1 = (xmin - 1) * sx, y1 = (ymin - 1) * sy, x2 = xmax * sx, y2 = ymax * sy, where sx = newWidth / width and
 *    sy = newHeight / height are the exact ratios of the sizes (they differ from the nominal scale by the
 *    rounding of the sides). A flip mirrors them exactly: x1' = newWidth - x2, x2' = newWidth - x1. Labels
 *    become 1..C (0 is the background). Difficult objects are left out unless `keepDifficult` is set (for
 *    evaluation), in which case `difficult` marks them.
 *
 * `collateDetection` stacks samples into one batch padded at the bottom and right (value 0, after
 * normalization) to the largest height and width; each sample keeps its own size. `flipDecision` draws the
 * flip from the loader's per-(seed, epoch, index) stream, so a resumed run flips exactly as the original.
 */
import { sampleSeed } from '../data/batch.js';
import { decodeImage } from '../data/image_folder.js';
import { flipHorizontal, normalize, resample, type AnyImage } from '../data/transforms.js';
import { UserError } from '../errors.js';
import { IMAGENET_PREPROCESSING, type Preprocessing } from '../predict/preprocessing.js';
import { Rng } from '../util/random.js';
import type { VocImage, VocObject } from './voc.js';

/** Short side after resizing (GluonCV's and torchvision's Faster R-CNN default). */
export const DEFAULT_MIN_SIZE = 600;
/** Longest side after resizing. */
export const DEFAULT_MAX_SIZE = 1000;

/** The resize rule. */
export interface ResizeOptions {
  /** Target of the shorter side. Default 600. */
  minSize?: number;
  /** Bound on the longer side. Default 1000. */
  maxSize?: number;
}

/** The size an image is resized to, with the nominal scale and the exact per-axis ratios. */
export interface ResizedShape {
  height: number;
  width: number;
  /** min(minSize / short, maxSize / long). */
  scale: number;
  /** height / original height. */
  scaleY: number;
  /** width / original width. */
  scaleX: number;
}

function checkSide(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 1) throw new UserError(`${what} must be a positive integer, got ${v}`, { exitCode: 2 });
}

/** The resize rule (module comment, step 1). */
export function resizedShape(height: number, width: number, options: ResizeOptions = {}): ResizedShape {
  const minSize = options.minSize ?? DEFAULT_MIN_SIZE;
  const maxSize = options.maxSize ?? DEFAULT_MAX_SIZE;
  checkSide(minSize, 'minSize');
  checkSide(maxSize, 'maxSize');
  if (maxSize < minSize) throw new UserError(`maxSize (${maxSize}) must be at least minSize (${minSize})`, { exitCode: 2 });
  checkSide(height, 'image height');
  checkSide(width, 'image width');
  const scale = Math.min(minSize / Math.min(height, width), maxSize / Math.max(height, width));
  const h = Math.max(1, Math.round(height * scale));
  const w = Math.max(1, Math.round(width * scale));
  return { height: h, width: w, scale, scaleY: h / height, scaleX: w / width };
}

/** Options of the sample transform. */
export interface DetectionTransformOptions extends ResizeOptions {
  /** Mean and std (RGB, 0..1 scale), e.g. the backbone's preprocessing. Default ImageNet's. */
  preprocessing?: Pick<Preprocessing, 'mean' | 'std'>;
  /** Keep difficult objects (marked in `difficult`), for evaluation. Default false (training targets). */
  keepDifficult?: boolean;
}

/** A sample's targets and geometry: everything but the pixels. */
export interface DetectionTarget {
  id: string;
  /** The year directory of the image (VOC ids are unique within a year). */
  year: string;
  /** Size of the resized image (the model's input before padding). */
  height: number;
  width: number;
  /** Size of the original image. */
  originalHeight: number;
  originalWidth: number;
  /** Resized / original, per axis. */
  scaleY: number;
  scaleX: number;
  flipped: boolean;
  /** [n, 4] x1, y1, x2, y2 in the resized (and flipped) image's continuous coordinates. */
  boxes: Float32Array;
  /** [n] 1..C. */
  labels: Int32Array;
  /** [n] 1 for a difficult object (only with `keepDifficult`; all 0 otherwise). */
  difficult: Uint8Array;
}

/** A transformed sample: the target and the image, [height, width, 3] normalized float32. */
export interface DetectionSample extends DetectionTarget {
  image: Float32Array;
}

/** The geometry `toModelBoxes` and `toDevkitBoxes` need. */
export type BoxGeometry = Pick<DetectionTarget, 'scaleX' | 'scaleY' | 'width' | 'flipped'>;

/** The objects' devkit boxes in the model's convention (module comment, step 4), [n, 4]. */
export function toModelBoxes(objects: readonly Pick<VocObject, 'box'>[], g: BoxGeometry): Float32Array {
  const out = new Float32Array(objects.length * 4);
  objects.forEach((o, i) => {
    const [xmin, ymin, xmax, ymax] = o.box;
    let x1 = (xmin - 1) * g.scaleX;
    let x2 = xmax * g.scaleX;
    if (g.flipped) [x1, x2] = [g.width - x2, g.width - x1];
    out.set([x1, (ymin - 1) * g.scaleY, x2, ymax * g.scaleY], i * 4);
  });
  return out;
}

/**
 * The inverse of `toModelBoxes`: boxes in the model's input coordinates (e.g. detections) back to devkit
 * coordinates of the original image (xmin = x1 / sx + 1, xmax = x2 / sx), the flip undone. [n, 4].
 */
export function toDevkitBoxes(boxes: Float32Array, g: BoxGeometry): Float32Array {
  const out = new Float32Array(boxes.length);
  for (let i = 0; i + 3 < boxes.length; i += 4) {
    let x1 = boxes[i]!;
    let x2 = boxes[i + 2]!;
    if (g.flipped) [x1, x2] = [g.width - x2, g.width - x1];
    out[i] = x1 / g.scaleX + 1;
    out[i + 1] = boxes[i + 1]! / g.scaleY + 1;
    out[i + 2] = x2 / g.scaleX;
    out[i + 3] = boxes[i + 3]! / g.scaleY;
  }
  return out;
}

/** mean and std on the 0..255 scale of decoded pixels. */
function normalization(p: Pick<Preprocessing, 'mean' | 'std'>): { mean: number[]; std: number[] } {
  return { mean: p.mean.map((m) => m * 255), std: p.std.map((s) => s * 255) };
}

/**
 * Transforms decoded pixels (HWC, 0..255, 1 or 3 channels) of `image`. Pure; `loadDetectionSample` reads
 * the file. The pixels must have the size the annotation gives.
 */
export function prepareDetectionSample(
  pixels: AnyImage,
  image: Pick<VocImage, 'id' | 'year' | 'width' | 'height' | 'objects'> & { file?: string },
  options: DetectionTransformOptions & { flip?: boolean } = {},
): DetectionSample {
  if (pixels.height !== image.height || pixels.width !== image.width) {
    const where = image.file ?? `image '${image.id}'`;
    throw new UserError(`${where}: the image is ${pixels.width}x${pixels.height} but its annotation says ${image.width}x${image.height}`);
  }
  const shape = resizedShape(image.height, image.width, options);
  let resized = resample(pixels, { x: 0, y: 0, width: pixels.width, height: pixels.height }, shape.height, shape.width);
  if (resized.channels === 1) {
    const rgb = new Float32Array(resized.data.length * 3);
    for (let i = 0; i < resized.data.length; i++) rgb.fill(resized.data[i]!, 3 * i, 3 * i + 3);
    resized = { ...resized, data: rgb, channels: 3 };
  }
  const flipped = options.flip ?? false;
  if (flipped) flipHorizontal(resized, resized);
  const { mean, std } = normalization(options.preprocessing ?? IMAGENET_PREPROCESSING);
  const data = normalize(resized, mean, std);
  const kept = options.keepDifficult ? image.objects : image.objects.filter((o) => !o.difficult);
  const geometry = { scaleX: shape.scaleX, scaleY: shape.scaleY, width: shape.width, flipped };
  return {
    id: image.id,
    year: image.year,
    height: shape.height,
    width: shape.width,
    originalHeight: image.height,
    originalWidth: image.width,
    scaleY: shape.scaleY,
    scaleX: shape.scaleX,
    flipped,
    boxes: toModelBoxes(kept, geometry),
    labels: Int32Array.from(kept, (o) => o.label + 1),
    difficult: Uint8Array.from(kept, (o) => (o.difficult ? 1 : 0)),
    image: data,
  };
}

/**
 * Decodes `image.file` (sharp) and transforms it. The EXIF orientation is ignored: VOC annotations are in
 * the stored pixels' coordinates (PIL and torchvision's VOC reader ignore the tag too), and the size the
 * annotation gives is the stored one.
 */
export async function loadDetectionSample(image: VocImage, options: DetectionTransformOptions & { flip?: boolean } = {}): Promise<DetectionSample> {
  return prepareDetectionSample(await decodeImage(image.file, { orientation: false }), image, options);
}

/**
 * Whether sample `index` is flipped in `epoch`: the first draw of the loader's per-sample stream
 * (`sampleSeed(seed, epoch, index)`, data/batch.ts) against `probability`. Other per-sample randomness
 * should come from a stream of its own, or from this one after the flip.
 */
export function flipDecision(seed: number, epoch: number, index: number, probability = 0.5): boolean {
  return new Rng(sampleSeed(seed, epoch, index)).uniform() < probability;
}

/** A padded batch: images [count, height, width, 3] and each sample's own target and size. */
export interface DetectionBatch {
  images: Float32Array;
  count: number;
  /** The padded size (largest height and width in the batch, rounded up to `sizeDivisor`). */
  height: number;
  width: number;
  targets: DetectionTarget[];
}

/**
 * Stacks samples, padding each at the bottom and right with 0 (after normalization) to the batch's largest
 * height and width, rounded up to a multiple of `sizeDivisor` (default 1: no rounding).
 */
export function collateDetection(samples: readonly DetectionSample[], options: { sizeDivisor?: number } = {}): DetectionBatch {
  if (samples.length === 0) throw new UserError('cannot collate an empty batch');
  const div = options.sizeDivisor ?? 1;
  checkSide(div, 'sizeDivisor');
  const up = (v: number) => Math.ceil(v / div) * div;
  const height = up(Math.max(...samples.map((s) => s.height)));
  const width = up(Math.max(...samples.map((s) => s.width)));
  const per = height * width * 3;
  const images = new Float32Array(samples.length * per);
  samples.forEach((s, n) => {
    const row = s.width * 3;
    for (let y = 0; y < s.height; y++) images.set(s.image.subarray(y * row, (y + 1) * row), n * per + y * width * 3);
  });
  const targets = samples.map(({ image: _image, ...t }) => t);
  return { images, count: samples.length, height, width, targets };
}

/** Options of `loadDetectionBatch`. */
export interface DetectionBatchOptions extends DetectionTransformOptions {
  /** Seed and epoch of the flips (see `flipDecision`). */
  seed?: number;
  epoch?: number;
  /** Probability of a horizontal flip; 0 (the default) for evaluation, 0.5 for training. */
  flipProbability?: number;
  sizeDivisor?: number;
}

/**
 * Reads, transforms and collates the samples `indices` of `images` (decoding runs in sharp's threads, all
 * of the batch at once). Sample i is flipped by `flipDecision(seed, epoch, i)`, whatever batch it is in.
 */
export async function loadDetectionBatch(images: readonly VocImage[], indices: ArrayLike<number>, options: DetectionBatchOptions = {}): Promise<DetectionBatch> {
  const p = options.flipProbability ?? 0;
  const seed = options.seed ?? 0;
  const epoch = options.epoch ?? 0;
  const samples = await Promise.all(
    Array.from(indices, async (i) => {
      const image = images[i];
      if (!image) throw new RangeError(`sample index ${i} is outside the data set (${images.length} images)`);
      return loadDetectionSample(image, { ...options, flip: p > 0 && flipDecision(seed, epoch, i, p) });
    }),
  );
  return collateDetection(samples, options);
}
