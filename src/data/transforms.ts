/**
 * The paper's preprocessing (He et al., "Bag of Tricks", section 2.1) on HWC images with values in [0, 255].
 *
 * Training, in this order (the paper's order, and GluonCV's `train_imagenet.py` Compose order):
 *   1. random-resized crop: area fraction ~ U[0.08, 1], aspect ratio (w/h) log-uniform in [3/4, 4/3], sides
 *      rounded, up to 10 tries, else the largest centered box with the ratio clamped to the range
 *      (torchvision's `RandomResizedCrop.get_params`; MXNet's `image.random_size_crop` draws the same way and
 *      differs only in its fallback); the crop is resized to `size` x `size`;
 *   2. horizontal flip with p = 0.5;
 *   3. color jitter: hue, saturation and brightness, each with a factor ~ U[0.6, 1.4], applied in a random
 *      order per image (MXNet's `image.random_color_jitter`, which GluonCV's `RandomColorJitter` calls);
 *   4. PCA lighting noise, alpha ~ N(0, 0.1) per eigenvector (AlexNet's ImageNet eigenvalues, 0-255 scale);
 *   5. normalization: subtract (123.68, 116.779, 103.939), divide by (58.393, 57.12, 57.375).
 * Validation: resize the shorter side to `resize` (256) keeping the aspect ratio, center crop `size` (224),
 * normalize.
 *
 * Resampling is done here on float data (not by sharp) so that in-memory data sets (IDX) and decoded files go
 * through the same arithmetic: separable triangle-filter ("bilinear") interpolation with half-pixel centers,
 * widened by the downscale factor when shrinking (antialiased, as PIL and torchvision's `antialias=True` do;
 * plain bilinear when enlarging). Training crops first and then resizes (the filter sees only the crop);
 * validation resizes the whole image and then crops (the filter may read just outside the crop window).
 *
 * Color operations (MXNet's `image_random-inl.h` formulas):
 *   brightness f:  x' = f x
 *   saturation f:  x' = g + f (x - g), g = 0.299 R + 0.587 G + 0.114 B per pixel
 *   hue f:         rotate the hue angle by (f - 1) x 360 degrees, keeping each pixel's max and min (so HSV value
 *                  and saturation and HLS lightness and saturation are unchanged); this is MXNet's
 *                  `random_hue(min 1-h, max 1+h)` (gluon `RandomHue`), which adds f x 360 degrees in HLS, and
 *                  the same distribution as its `random_color_jitter(hue=h)`. With h = 0.4 that is a rotation of
 *                  up to +-144 degrees. (The older `mx.image.HueJitterAug` turns +-h x 180 degrees in YIQ.)
 *   contrast f:    x' = m + f (x - m), m the image's mean gray (off by default: not in the paper, but it is
 *                  what GluonCV's script jitters instead of hue; {hue: 0, contrast: 0.4} reproduces GluonCV).
 * Each color step and the lighting step clamp to [0, 255], as MXNet's operators do on the uint8 images GluonCV
 * feeds them; values are not rounded to integers.
 *
 * Grayscale images (Fashion-MNIST) are replicated to 3 channels after resizing. Color jitter then acts on equal
 * channels: hue and saturation leave a gray pixel unchanged and brightness scales it; PCA lighting adds a
 * different offset to each channel, so a gray image picks up a slight color cast, as a gray photograph in
 * ImageNet would.
 */
import { UserError } from '../errors.js';
import type { Rng } from '../util/random.js';

/** An image stored HWC (row-major, channels interleaved). */
export interface Image<T extends Float32Array | Uint8Array = Float32Array> {
  data: T;
  height: number;
  width: number;
  channels: number;
}

/** Any image a transform accepts: decoded bytes or float pixels. */
export type AnyImage = Image<Float32Array> | Image<Uint8Array>;

/** An axis-aligned box in pixels: top-left corner and size. */
export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** Channel means of ImageNet, 0-255 scale (paper section 2.1). */
export const IMAGENET_MEAN: readonly [number, number, number] = [123.68, 116.779, 103.939];
/** Channel standard deviations of ImageNet, 0-255 scale (paper section 2.1). */
export const IMAGENET_STD: readonly [number, number, number] = [58.393, 57.12, 57.375];

/** AlexNet's PCA of ImageNet RGB pixels, 0-255 scale: eigenvalues (MXNet `image_random-inl.h`). */
export const PCA_EIGVAL: readonly [number, number, number] = [55.46, 4.794, 1.148];
/**
 * The matching eigenvectors, one per column: row c holds channel c (R, G, B) of the three eigenvectors, so the
 * offset of channel c is sum_j EIGVEC[c][j] * EIGVAL[j] * alpha_j (MXNet's `AdjustLightingImpl`).
 */
export const PCA_EIGVEC: readonly (readonly [number, number, number])[] = [
  [-0.5675, 0.7192, 0.4009],
  [-0.5808, -0.0045, -0.814],
  [-0.5836, -0.6948, 0.4203],
];

/** Luma weights (ITU-R BT.601) that MXNet and torchvision use for "gray". */
const LUMA = [0.299, 0.587, 0.114] as const;

// ---------------------------------------------------------------------------------------------------------
// Geometry

/** Options of the random-resized crop (torchvision names). */
export interface ResizedCropOptions {
  /** Range of the crop's area as a fraction of the image's. Default [0.08, 1]. */
  scale?: readonly [number, number];
  /** Range of the crop's aspect ratio width / height, sampled log-uniformly. Default [3/4, 4/3]. */
  ratio?: readonly [number, number];
  /** Tries before falling back to a center crop. Default 10. */
  attempts?: number;
}

/**
 * Samples the crop box of a random-resized crop (torchvision `RandomResizedCrop.get_params`): up to
 * `attempts` draws of area and log-aspect; the first box that fits is placed uniformly; if none fits, the
 * largest centered box whose aspect ratio is clamped to `ratio`.
 */
export function sampleResizedCropRect(rng: Rng, height: number, width: number, options: ResizedCropOptions = {}): Rect {
  const [smin, smax] = options.scale ?? [0.08, 1];
  const [rmin, rmax] = options.ratio ?? [3 / 4, 4 / 3];
  const attempts = options.attempts ?? 10;
  const area = height * width;
  const logMin = Math.log(rmin);
  const logMax = Math.log(rmax);
  for (let i = 0; i < attempts; i++) {
    const target = area * rng.range(smin, smax);
    const aspect = Math.exp(rng.range(logMin, logMax));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const y = rng.int(height - h + 1);
      const x = rng.int(width - w + 1);
      return { x, y, width: w, height: h };
    }
  }
  return centerRatioRect(height, width, rmin, rmax);
}

/** The fallback of `sampleResizedCropRect`: the whole image, narrowed to the allowed aspect range. */
function centerRatioRect(height: number, width: number, rmin: number, rmax: number): Rect {
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < rmin) h = Math.round(w / rmin);
  else if (inRatio > rmax) w = Math.round(h * rmax);
  return { x: Math.floor((width - w) / 2), y: Math.floor((height - h) / 2), width: w, height: h };
}

/**
 * The validation geometry: the image's shorter side is resized to `resize` (the longer one to
 * floor(long * resize / short)), then a centered `size` x `size` window is cut (offsets rounded, as in
 * predict/predict.ts). Returns that window mapped back
 * to source pixels (fractional), which `resample` reads with the whole image as bounds, so the result equals
 * resize-then-crop.
 */
export function evalCropRect(height: number, width: number, size: number, resize: number): Rect {
  if (resize < size) throw new UserError(`resize (${resize}) must be at least the crop size (${size})`);
  const short = Math.min(height, width);
  const newH = height <= width ? resize : Math.floor((height * resize) / short);
  const newW = height <= width ? Math.floor((width * resize) / short) : resize;
  const sy = height / newH;
  const sx = width / newW;
  // Rounded as torchvision's CenterCrop rounds, so that zoo eval cuts the window zoo predict cuts.
  const top = Math.round((newH - size) / 2);
  const left = Math.round((newW - size) / 2);
  return { x: left * sx, y: top * sy, width: size * sx, height: size * sy };
}

/** The default validation resize for a crop size: crop / 0.875 (256 for 224), rounded. */
export function defaultResize(size: number): number {
  return Math.round(size / 0.875);
}

/** Per-output-pixel taps of a 1-D triangle filter: first source index, tap count, normalized weights. */
interface Taps {
  start: Int32Array;
  count: Int32Array;
  weights: Float32Array;
  maxTaps: number;
}

/**
 * Filter taps for `out` samples of the source interval [origin, origin + length), reading only source
 * indices in [lo, hi). The triangle is widened by the downscale factor so shrinking averages (antialiasing).
 */
function computeTaps(origin: number, length: number, out: number, lo: number, hi: number): Taps {
  const scale = length / out;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const maxTaps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(out);
  const count = new Int32Array(out);
  const weights = new Float32Array(out * maxTaps);
  for (let i = 0; i < out; i++) {
    const center = origin + (i + 0.5) * scale;
    const first = Math.max(lo, Math.floor(center - support + 0.5));
    const last = Math.min(hi, Math.floor(center + support + 0.5));
    let sum = 0;
    let n = 0;
    for (let j = first; j < last && n < maxTaps; j++, n++) {
      const w = Math.max(0, 1 - Math.abs((j + 0.5 - center) / filterScale));
      weights[i * maxTaps + n] = w;
      sum += w;
    }
    if (sum === 0) {
      // The window lies entirely between sample centers of a clamped edge: take the nearest pixel.
      n = 1;
      weights[i * maxTaps] = 1;
      sum = 1;
    }
    for (let k = 0; k < n; k++) weights[i * maxTaps + k]! /= sum;
    start[i] = first;
    count[i] = n;
  }
  return { start, count, weights, maxTaps };
}

/**
 * Resamples the window `rect` of `src` (fractional source pixels) to `outHeight` x `outWidth`, reading only
 * pixels inside `bounds` (default: the image). Separable: rows first, then columns.
 */
export function resample(src: AnyImage, rect: Rect, outHeight: number, outWidth: number, bounds?: Rect): Image {
  return resampleWith(new Scratch(), src, rect, outHeight, outWidth, bounds);
}

/**
 * Reusable work arrays. A pipeline keeps one so that a 224 x 224 image does not allocate (and zero) a
 * megabyte of temporaries each time; the arrays a pipeline step returns are valid until its next call.
 */
class Scratch {
  private readonly arrays = new Map<string, Float32Array>();

  get(name: string, length: number): Float32Array {
    let a = this.arrays.get(name);
    if (!a || a.length < length) {
      a = new Float32Array(length);
      this.arrays.set(name, a);
    }
    return a.length === length ? a : a.subarray(0, length);
  }
}

function resampleWith(scratch: Scratch, src: AnyImage, rect: Rect, outHeight: number, outWidth: number, bounds?: Rect): Image {
  const b = bounds ?? { x: 0, y: 0, width: src.width, height: src.height };
  const c = src.channels;
  const tx = computeTaps(rect.x, rect.width, outWidth, b.x, b.x + b.width);
  const ty = computeTaps(rect.y, rect.height, outHeight, b.y, b.y + b.height);
  const rowLo = ty.start[0]!;
  const rowHi = ty.start[outHeight - 1]! + ty.count[outHeight - 1]!;
  const tmp = horizontalPass(src.data, src.width * c, c, rowLo, rowHi, tx, scratch.get('rows', (rowHi - rowLo) * outWidth * c));
  const out = verticalPass(tmp, outWidth * c, rowLo, ty, scratch.get('resampled', outHeight * outWidth * c));
  return { data: out, height: outHeight, width: outWidth, channels: c };
}

/** Filters the source rows [rowLo, rowHi) horizontally: one output row per source row. */
function horizontalPass(
  s: ArrayLike<number>,
  rowStride: number,
  c: number,
  rowLo: number,
  rowHi: number,
  tx: Taps,
  tmp: Float32Array,
): Float32Array {
  const { start, count, weights, maxTaps } = tx;
  const outWidth = start.length;
  let t = 0;
  for (let r = rowLo; r < rowHi; r++) {
    const base = r * rowStride;
    for (let x = 0; x < outWidth; x++) {
      const n = count[x]!;
      const wo = x * maxTaps;
      let p = base + start[x]! * c;
      if (c === 3) {
        // The common case, unrolled over channels.
        let a0 = 0;
        let a1 = 0;
        let a2 = 0;
        for (let k = 0; k < n; k++, p += 3) {
          const w = weights[wo + k]!;
          a0 += w * s[p]!;
          a1 += w * s[p + 1]!;
          a2 += w * s[p + 2]!;
        }
        tmp[t++] = a0;
        tmp[t++] = a1;
        tmp[t++] = a2;
      } else {
        for (let ch = 0; ch < c; ch++) {
          let acc = 0;
          for (let k = 0; k < n; k++) acc += weights[wo + k]! * s[p + k * c + ch]!;
          tmp[t++] = acc;
        }
      }
    }
  }
  return tmp;
}

/** Filters the horizontally filtered rows vertically; `rowLo` is the source row of tmp's first row. */
function verticalPass(tmp: Float32Array, rowLen: number, rowLo: number, ty: Taps, out: Float32Array): Float32Array {
  const { start, count, weights, maxTaps } = ty;
  const outHeight = start.length;
  out.fill(0);
  for (let y = 0; y < outHeight; y++) {
    const i0 = start[y]! - rowLo;
    const n = count[y]!;
    const o = y * rowLen;
    for (let k = 0; k < n; k++) {
      const w = weights[y * maxTaps + k]!;
      const t = (i0 + k) * rowLen;
      for (let i = 0; i < rowLen; i++) out[o + i]! += w * tmp[t + i]!;
    }
  }
  return out;
}

/** Crops `rect` (integer pixels) and resizes it to `outHeight` x `outWidth`, the filter seeing only the crop. */
export function resizedCrop(src: AnyImage, rect: Rect, outHeight: number, outWidth: number): Image {
  return resample(src, rect, outHeight, outWidth, rect);
}

/** Mirrors an image left to right; `out` may be `img` for in-place use. */
export function flipHorizontal(img: Image, out: Image = emptyLike(img)): Image {
  const { width: w, height: h, channels: c, data } = img;
  const o = out.data;
  for (let y = 0; y < h; y++) {
    const row = y * w * c;
    for (let x = 0; x < (w + 1) >> 1; x++) {
      const a = row + x * c;
      const b = row + (w - 1 - x) * c;
      for (let ch = 0; ch < c; ch++) {
        const t = data[a + ch]!;
        o[a + ch] = data[b + ch]!;
        o[b + ch] = t;
      }
    }
  }
  return out;
}

/** Flips with probability `p` (one uniform draw). */
export function randomFlip(img: Image, rng: Rng, p = 0.5): Image {
  return rng.uniform() < p ? flipHorizontal(img) : img;
}

/** Replicates a one-channel image to three channels; a three-channel image is returned as is. */
export function toRgb(img: Image, out?: Float32Array): Image {
  if (img.channels === 3) return img;
  if (img.channels !== 1) throw new RangeError(`expected 1 or 3 channels, got ${img.channels}`);
  const n = img.height * img.width;
  const rgb = out ?? new Float32Array(n * 3);
  const s = img.data;
  for (let i = 0, o = 0; i < n; i++, o += 3) {
    const v = s[i]!;
    rgb[o] = v;
    rgb[o + 1] = v;
    rgb[o + 2] = v;
  }
  return { data: rgb, height: img.height, width: img.width, channels: 3 };
}

// ---------------------------------------------------------------------------------------------------------
// Color

function emptyLike(img: Image): Image {
  return { data: new Float32Array(img.data.length), height: img.height, width: img.width, channels: img.channels };
}

function clamp255(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function requireRgb(img: Image, what: string): void {
  if (img.channels !== 3) throw new RangeError(`${what} needs a 3-channel image, got ${img.channels}`);
}

/** x' = f x, clamped to [0, 255]. `out` may be `img`. */
export function adjustBrightness(img: Image, f: number, out: Image = emptyLike(img)): Image {
  const s = img.data;
  const o = out.data;
  for (let i = 0; i < s.length; i++) o[i] = clamp255(s[i]! * f);
  return out;
}

/** Blends each pixel with its gray value: x' = g + f (x - g), clamped. `out` may be `img`. */
export function adjustSaturation(img: Image, f: number, out: Image = emptyLike(img)): Image {
  requireRgb(img, 'saturation');
  const s = img.data;
  const o = out.data;
  for (let i = 0; i < s.length; i += 3) {
    const r = s[i]!;
    const g = s[i + 1]!;
    const b = s[i + 2]!;
    const gray = (1 - f) * (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b);
    o[i] = clamp255(gray + f * r);
    o[i + 1] = clamp255(gray + f * g);
    o[i + 2] = clamp255(gray + f * b);
  }
  return out;
}

/** Blends the image with its mean gray: x' = m + f (x - m), clamped. `out` may be `img`. */
export function adjustContrast(img: Image, f: number, out: Image = emptyLike(img)): Image {
  requireRgb(img, 'contrast');
  const s = img.data;
  let sum = 0;
  for (let i = 0; i < s.length; i += 3) sum += LUMA[0] * s[i]! + LUMA[1] * s[i + 1]! + LUMA[2] * s[i + 2]!;
  const beta = ((1 - f) * sum) / (s.length / 3);
  const o = out.data;
  for (let i = 0; i < s.length; i++) o[i] = clamp255(beta + f * s[i]!);
  return out;
}

/**
 * Rotates every pixel's hue by (f - 1) turns, keeping its max and min channel (MXNet's hue factor: it adds
 * f x 360 degrees). `out` may be `img`.
 */
export function adjustHue(img: Image, f: number, out: Image = emptyLike(img)): Image {
  requireRgb(img, 'hue');
  const s = img.data;
  const o = out.data;
  const shift = (((f - 1) * 6) % 6 + 6) % 6; // in sextants
  if (shift === 0) {
    o.set(s);
    return out;
  }
  for (let i = 0; i < s.length; i += 3) {
    const r = s[i]!;
    const g = s[i + 1]!;
    const b = s[i + 2]!;
    const max = r > g ? (r > b ? r : b) : g > b ? g : b;
    const min = r < g ? (r < b ? r : b) : g < b ? g : b;
    const chroma = max - min;
    if (chroma <= 1e-6) {
      o[i] = r;
      o[i + 1] = g;
      o[i + 2] = b;
      continue;
    }
    // Hue in sextants, in [-1, 5), plus a shift in [0, 6), brought into [0, 6) without a (slow) float modulo.
    let h = (max === r ? (g - b) / chroma : max === g ? (b - r) / chroma + 2 : (r - g) / chroma + 4) + shift;
    if (h < 0) h += 6;
    else if (h >= 6) h -= 6;
    writeHue(o, i, h, min, chroma);
  }
  return out;
}

/** Writes the RGB pixel of hue `h` (sextants, [0, 6)), minimum `min` and chroma `chroma`. */
function writeHue(o: Float32Array, i: number, h: number, min: number, chroma: number): void {
  const sector = Math.min(5, Math.floor(h));
  // Distance of h from the nearest odd sextant boundary gives the middle channel.
  const x = chroma * (1 - Math.abs(h - sector + (sector & 1) - 1));
  const hi = min + chroma;
  const mid = min + x;
  switch (sector) {
    case 0: o[i] = hi; o[i + 1] = mid; o[i + 2] = min; break;
    case 1: o[i] = mid; o[i + 1] = hi; o[i + 2] = min; break;
    case 2: o[i] = min; o[i + 1] = hi; o[i + 2] = mid; break;
    case 3: o[i] = min; o[i + 1] = mid; o[i + 2] = hi; break;
    case 4: o[i] = mid; o[i + 1] = min; o[i + 2] = hi; break;
    default: o[i] = hi; o[i + 1] = min; o[i + 2] = mid; break;
  }
}

/** Jitter amplitudes: each factor is drawn from [1 - a, 1 + a] (0 disables the operation). */
export interface ColorJitterOptions {
  brightness?: number;
  contrast?: number;
  saturation?: number;
  hue?: number;
}

/** The color operations, in the index order MXNet's `random_color_jitter` shuffles. */
export const JITTER_OPS = ['brightness', 'contrast', 'saturation', 'hue'] as const;
/** One of the color jitter operations. */
export type JitterOp = (typeof JITTER_OPS)[number];

/** A drawn color jitter: the operations to apply, in order, with their factors. */
export interface ColorJitterParams {
  steps: { op: JitterOp; factor: number }[];
}

/** The paper's amplitudes: hue, saturation and brightness in [0.6, 1.4]; no contrast. */
export const PAPER_JITTER: Required<ColorJitterOptions> = { brightness: 0.4, contrast: 0, saturation: 0.4, hue: 0.4 };

/** Draws a color jitter: a random order of the four operations, then a factor for each enabled one. */
export function sampleColorJitter(rng: Rng, options: ColorJitterOptions = PAPER_JITTER): ColorJitterParams {
  const order = [0, 1, 2, 3];
  rng.shuffle(order);
  const steps: ColorJitterParams['steps'] = [];
  for (const k of order) {
    const op = JITTER_OPS[k]!;
    const a = options[op] ?? 0;
    if (a > 0) steps.push({ op, factor: rng.range(Math.max(0, 1 - a), 1 + a) });
  }
  return { steps };
}

const JITTER_FNS: Record<JitterOp, (img: Image, f: number, out?: Image) => Image> = {
  brightness: adjustBrightness,
  contrast: adjustContrast,
  saturation: adjustSaturation,
  hue: adjustHue,
};

/** Applies a drawn color jitter. `out` may be `img`. */
export function applyColorJitter(img: Image, params: ColorJitterParams, out: Image = emptyLike(img)): Image {
  let cur = img;
  for (const { op, factor } of params.steps) {
    JITTER_FNS[op](cur, factor, out);
    cur = out;
  }
  if (cur !== out) out.data.set(cur.data);
  return out;
}

/** Draws and applies a color jitter. */
export function colorJitter(img: Image, rng: Rng, options: ColorJitterOptions = PAPER_JITTER): Image {
  return applyColorJitter(img, sampleColorJitter(rng, options));
}

/** Draws the three PCA lighting coefficients, each ~ N(0, std). */
export function sampleLightingAlpha(rng: Rng, std = 0.1): [number, number, number] {
  return [rng.normal() * std, rng.normal() * std, rng.normal() * std];
}

/** The per-channel offset of PCA lighting: EIGVEC (EIGVAL * alpha). */
export function lightingOffset(alpha: readonly [number, number, number]): [number, number, number] {
  const v = PCA_EIGVAL.map((e, j) => e * alpha[j]!);
  return PCA_EIGVEC.map((row) => row[0] * v[0]! + row[1] * v[1]! + row[2] * v[2]!) as [number, number, number];
}

/** Adds the PCA lighting offset of `alpha` to every pixel, clamped. `out` may be `img`. */
export function applyLighting(img: Image, alpha: readonly [number, number, number], out: Image = emptyLike(img)): Image {
  requireRgb(img, 'PCA lighting');
  const [dr, dg, db] = lightingOffset(alpha);
  const s = img.data;
  const o = out.data;
  for (let i = 0; i < s.length; i += 3) {
    o[i] = clamp255(s[i]! + dr);
    o[i + 1] = clamp255(s[i + 1]! + dg);
    o[i + 2] = clamp255(s[i + 2]! + db);
  }
  return out;
}

/** Draws and applies PCA lighting noise (AlexNet). */
export function pcaLighting(img: Image, rng: Rng, std = 0.1): Image {
  return applyLighting(img, sampleLightingAlpha(rng, std));
}

/** (x - mean) / std per channel, written to `out` at `offset` (a fresh array by default). */
export function normalize(
  img: Image,
  mean: readonly number[] = IMAGENET_MEAN,
  std: readonly number[] = IMAGENET_STD,
  out: Float32Array = new Float32Array(img.data.length),
  offset = 0,
): Float32Array {
  requireRgb(img, 'normalize');
  const s = img.data;
  const [m0, m1, m2] = mean as [number, number, number];
  const i0 = 1 / std[0]!;
  const i1 = 1 / std[1]!;
  const i2 = 1 / std[2]!;
  for (let i = 0; i < s.length; i += 3) {
    out[offset + i] = (s[i]! - m0) * i0;
    out[offset + i + 1] = (s[i + 1]! - m1) * i1;
    out[offset + i + 2] = (s[i + 2]! - m2) * i2;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Pipelines

/** Options of the training pipeline; every default is the paper's. */
export interface TrainTransformOptions extends ColorJitterOptions {
  /** Output side in pixels (224 in the paper). */
  size: number;
  /** Crop area fraction range. Default [0.08, 1]. */
  scale?: readonly [number, number];
  /** Crop aspect ratio range. Default [3/4, 4/3]. */
  ratio?: readonly [number, number];
  /** Probability of a horizontal flip. Default 0.5. */
  flip?: number;
  /** Standard deviation of the PCA lighting coefficients; 0 disables. Default 0.1. */
  lighting?: number;
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
}

/** Options of the validation pipeline. */
export interface EvalTransformOptions {
  /** Crop side in pixels (224). */
  size: number;
  /** Shorter side before the center crop. Default round(size / 0.875): 256 for 224, 37 for 32. */
  resize?: number;
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
}

/** A pipeline description that can cross to a worker thread (plain data, no closures). */
export type TransformSpec = ({ kind: 'train' } & TrainTransformOptions) | ({ kind: 'eval' } & EvalTransformOptions);

/** A preprocessing pipeline: image in [0, 255] (any size, 1 or 3 channels) to a normalized size x size x 3 array. */
export interface Transform {
  readonly spec: TransformSpec;
  /** Output height and width. */
  readonly size: number;
  /** Runs the pipeline, writing HWC floats to `out` at `offset` (a fresh array by default). */
  apply(img: AnyImage, rng: Rng, out?: Float32Array, offset?: number): Float32Array;
}

function checkSize(size: number, what: string): void {
  if (!Number.isInteger(size) || size < 1) throw new UserError(`${what} must be a positive integer, got ${size}`);
}

/** The paper's training pipeline (module comment): crop-resize, flip, color jitter, PCA lighting, normalize. */
export function trainTransform(options: TrainTransformOptions): Transform {
  checkSize(options.size, 'size');
  const spec: TransformSpec = { kind: 'train', ...options };
  const { size } = options;
  const crop: ResizedCropOptions = { scale: options.scale ?? [0.08, 1], ratio: options.ratio ?? [3 / 4, 4 / 3] };
  const jitter: ColorJitterOptions = {
    brightness: options.brightness ?? PAPER_JITTER.brightness,
    contrast: options.contrast ?? PAPER_JITTER.contrast,
    saturation: options.saturation ?? PAPER_JITTER.saturation,
    hue: options.hue ?? PAPER_JITTER.hue,
  };
  const flipP = options.flip ?? 0.5;
  const lightingStd = options.lighting ?? 0.1;
  const scratch = new Scratch();
  return {
    spec,
    size,
    apply(img, rng, out, offset = 0) {
      const rect = sampleResizedCropRect(rng, img.height, img.width, crop);
      let x = resampleWith(scratch, img, rect, size, size, rect);
      if (rng.uniform() < flipP) flipHorizontal(x, x);
      x = toRgb(x, scratch.get('rgb', size * size * 3));
      applyColorJitter(x, sampleColorJitter(rng, jitter), x);
      if (lightingStd > 0) applyLighting(x, sampleLightingAlpha(rng, lightingStd), x);
      return normalize(x, options.mean, options.std, out ?? new Float32Array(size * size * 3), offset);
    },
  };
}

/** The paper's validation pipeline: shorter side to `resize`, center crop `size`, normalize. Draws nothing. */
export function evalTransform(options: EvalTransformOptions): Transform {
  checkSize(options.size, 'size');
  const resize = options.resize ?? defaultResize(options.size);
  checkSize(resize, 'resize');
  if (resize < options.size) throw new UserError(`resize (${resize}) must be at least the crop size (${options.size})`);
  const spec: TransformSpec = { kind: 'eval', ...options, resize };
  const { size } = options;
  const scratch = new Scratch();
  return {
    spec,
    size,
    apply(img, _rng, out, offset = 0) {
      const rect = evalCropRect(img.height, img.width, size, resize);
      const x = toRgb(resampleWith(scratch, img, rect, size, size), scratch.get('rgb', size * size * 3));
      return normalize(x, options.mean, options.std, out ?? new Float32Array(size * size * 3), offset);
    },
  };
}

/** Rebuilds a pipeline from its description (what a worker receives). */
export function buildTransform(spec: TransformSpec): Transform {
  const { kind, ...options } = spec;
  return kind === 'train' ? trainTransform(options as TrainTransformOptions) : evalTransform(options as EvalTransformOptions);
}
