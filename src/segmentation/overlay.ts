/**
 * Pictures of label maps: a palette of distinct colours, label maps coloured with it, and overlays of
 * the colours on the image they label (what `zoo seg predict` writes beside each label PNG).
 *
 * The palette is the Pascal VOC devkit's colour map (also GluonCV's and torchvision's references' for
 * VOC): the bits of the value are dealt out to the three channels, from the most significant bit of
 * each channel down, so value 1 is dark red (128, 0, 0), 2 dark green, 3 olive, 4 navy, ... Value 0,
 * unlabeled, is black. Every value below 2^24 gets its own colour, so any class count zoo accepts
 * (up to 65535) has distinct colours, the same ones every run.
 */
import sharp from 'sharp';
import { stat } from 'node:fs/promises';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';

/** An RGB image, 8 bits per channel, row-major [H, W, 3]. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** The palette of K classes: [K + 1, 3] RGB, entry v for the label value v, entry 0 (unlabeled) black. */
export function palette(numClasses: number): Uint8Array {
  if (!Number.isInteger(numClasses) || numClasses < 0 || numClasses > 65535) {
    throw new UserError(`the number of classes ${numClasses} is not an integer in 0..65535`);
  }
  const out = new Uint8Array(3 * (numClasses + 1));
  for (let v = 0; v <= numClasses; v++) {
    let r = 0;
    let g = 0;
    let b = 0;
    // Bits 0, 1, 2 of v go to bit 7 of r, g, b; bits 3, 4, 5 to bit 6; and so on.
    for (let bits = v, shift = 7; bits > 0; bits >>= 3, shift--) {
      r |= (bits & 1) << shift;
      g |= ((bits >> 1) & 1) << shift;
      b |= ((bits >> 2) & 1) << shift;
    }
    out[3 * v] = r;
    out[3 * v + 1] = g;
    out[3 * v + 2] = b;
  }
  return out;
}

function checkSize(what: string, length: number, width: number, height: number, channels: number): void {
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) {
    throw new UserError(`${what}: the size ${width}x${height} is not two positive integers`);
  }
  if (length !== width * height * channels) {
    throw new UserError(`${what} has ${length} values, expected ${width}x${height}${channels > 1 ? `x${channels}` : ''} = ${width * height * channels}`);
  }
}

/**
 * The label map coloured with `palette` (from `palette(K)` or [K + 1, 3] of one's own): RGB [H, W, 3].
 * A value without an entry is a UserError naming the pixel.
 */
export function colorize(labels: ArrayLike<number>, width: number, height: number, palette: Uint8Array): Uint8Array {
  checkSize('the label map', labels.length, width, height, 1);
  if (palette.length === 0 || palette.length % 3 !== 0) throw new UserError(`the palette has ${palette.length} values, not a multiple of 3 (RGB)`);
  const entries = palette.length / 3;
  const out = new Uint8Array(3 * labels.length);
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i]!;
    if (v >= entries || v >>> 0 !== v) {
      const x = i % width;
      throw new UserError(`label value ${v} at pixel (${x}, ${(i - x) / width}) has no palette entry (0..${entries - 1})`);
    }
    out[3 * i] = palette[3 * v]!;
    out[3 * i + 1] = palette[3 * v + 1]!;
    out[3 * i + 2] = palette[3 * v + 2]!;
  }
  return out;
}

/** Decodes an image file to RGB (alpha dropped, colour converted to sRGB; EXIF orientation not applied). */
async function readRgb(file: string): Promise<RgbImage> {
  const st = await stat(file).catch(() => undefined);
  if (!st) throw new UserError(`image '${file}' does not exist`);
  if (!st.isFile()) throw new UserError(`${file}: not a regular file`);
  try {
    const { data, info } = await sharp(file, { failOn: 'error' }).toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (e) {
    throw new UserError(`${file}: not a readable image (${(e as Error).message})`);
  }
}

/**
 * Writes a PNG of `image` (a file, or RGB pixels) with the labels' colours blended over it:
 * out = round((1 - alpha) * image + alpha * colour) where the label is > 0; unlabeled pixels keep the
 * image's own. The labels must have the image's size. The file is replaced atomically.
 */
export async function writeOverlay(
  file: string,
  image: string | RgbImage,
  labels: ArrayLike<number>,
  width: number,
  height: number,
  palette: Uint8Array,
  alpha = 0.5,
): Promise<void> {
  if (!(typeof alpha === 'number' && alpha >= 0 && alpha <= 1)) throw new UserError(`the overlay opacity ${alpha} is not a number in [0, 1]`);
  const colours = colorize(labels, width, height, palette);
  const name = typeof image === 'string' ? image : 'the image';
  const img = typeof image === 'string' ? await readRgb(image) : image;
  checkSize(name, img.data.length, img.width, img.height, 3);
  if (img.width !== width || img.height !== height) {
    throw new UserError(`${name} is ${img.width}x${img.height}, its labels ${width}x${height}`);
  }
  const out = new Uint8Array(colours.length);
  const keep = 1 - alpha;
  for (let i = 0, j = 0; i < labels.length; i++, j += 3) {
    if (labels[i] === 0) {
      out[j] = img.data[j]!;
      out[j + 1] = img.data[j + 1]!;
      out[j + 2] = img.data[j + 2]!;
    } else {
      out[j] = Math.round(keep * img.data[j]! + alpha * colours[j]!);
      out[j + 1] = Math.round(keep * img.data[j + 1]! + alpha * colours[j + 1]!);
      out[j + 2] = Math.round(keep * img.data[j + 2]! + alpha * colours[j + 2]!);
    }
  }
  const png = await sharp(Buffer.from(out.buffer, out.byteOffset, out.length), { raw: { width, height, channels: 3 } }).png().toBuffer();
  await writeFileAtomic(file, png);
}
