/**
 * Reading images the way a model was evaluated: resize the shorter side (the longer one in proportion,
 * rounded down as torchvision does) with the model's interpolation, center crop, scale to [0, 1],
 * subtract the mean and divide by the standard deviation, NCHW. Images are decoded by sharp (JPEG, PNG,
 * WebP, GIF, AVIF, TIFF), turned upright by their EXIF orientation as a viewer shows them (as training
 * data is read), converted to sRGB; an alpha channel is dropped.
 */
import { stat } from 'node:fs/promises';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { IMAGENET_PREPROCESSING, type Preprocessing } from './preprocessing.js';

export type { Preprocessing } from './preprocessing.js';

/** timm / torchvision ImageNet defaults, for ONNX files that do not record their own. */
export const DEFAULT_PREPROCESSING: Preprocessing = IMAGENET_PREPROCESSING;

const KERNELS = { bilinear: 'linear', bicubic: 'cubic', nearest: 'nearest' } as const;

/** Largest decoded image accepted (pixels): a decompression bomb is refused before it is decoded. */
export const MAX_INPUT_PIXELS = 100_000_000;

/** One image (a path or encoded bytes) as normalized CHW float32 [3, crop, crop]. */
export async function preprocessImage(source: string | Uint8Array, p: Preprocessing): Promise<Float32Array> {
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) {
    throw new UserError(`an image is a file path or the encoded bytes of one (a Uint8Array or Buffer), got ${source === null ? 'null' : typeof source}`);
  }
  const name = typeof source === 'string' ? source : 'image bytes';
  if (typeof source === 'string') {
    const st = await stat(source).catch(() => undefined);
    if (!st) throw new UserError(`image '${source}' does not exist`);
    // A FIFO or a device would block the decoder forever, a directory cannot be one.
    if (!st.isFile()) throw new UserError(`${source}: not a regular file`);
  }
  const input = typeof source === 'string' ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  const decoder = () => sharp(input, { failOn: 'error', limitInputPixels: MAX_INPUT_PIXELS });
  let meta: sharp.Metadata;
  try {
    meta = await decoder().metadata();
  } catch (e) {
    throw new UserError(`${name}: not a readable image (${(e as Error).message})`);
  }
  // Orientations 5 to 8 are a quarter turn: the upright image is the stored one transposed.
  const upright = (meta.orientation ?? 1) >= 5;
  const w = (upright ? meta.height : meta.width) ?? 0;
  const h = (upright ? meta.width : meta.height) ?? 0;
  if (!w || !h) throw new UserError(`${name}: image has no size`);
  if (w * h > MAX_INPUT_PIXELS) throw new UserError(`${name}: ${w}x${h} is more than the ${MAX_INPUT_PIXELS / 1e6} M pixels accepted`);
  const short = Math.min(w, h);
  const nw = w <= h ? p.resizeShorter : Math.floor((p.resizeShorter * w) / short);
  const nh = h < w ? p.resizeShorter : Math.floor((p.resizeShorter * h) / short);
  if (nw < p.crop || nh < p.crop) throw new UserError(`${name}: crop ${p.crop} is larger than the resized image ${nw}x${nh}`);
  const left = Math.round((nw - p.crop) / 2);
  const top = Math.round((nh - p.crop) / 2);
  let raw: Buffer;
  try {
    raw = await decoder()
      .rotate()
      .toColourspace('srgb')
      .removeAlpha()
      .resize(nw, nh, { kernel: KERNELS[p.interpolation], fit: 'fill' })
      .extract({ left, top, width: p.crop, height: p.crop })
      .raw()
      .toBuffer();
  } catch (e) {
    throw new UserError(`${name}: cannot decode (${(e as Error).message})`);
  }
  const n = p.crop * p.crop;
  if (raw.length !== n * 3) throw new UserError(`${name}: decoded to ${raw.length} bytes, expected ${n * 3} (RGB)`);
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) {
    const m = p.mean[c]!;
    const s = p.std[c]!;
    for (let i = 0; i < n; i++) out[c * n + i] = (raw[i * 3 + c]! / 255 - m) / s;
  }
  return out;
}

