/**
 * Label maps as PNG files: one channel, 8-bit (values up to 255) or 16-bit grayscale, each pixel's value its
 * label (0 = unlabeled, v = class index v - 1), as the ADE20K annotations are stored.
 *
 * Reading goes through sharp, kept in the file's own grayscale space (sharp's default output is sRGB, which
 * would triple the channel and rescale 16-bit values), with any embedded color profile ignored. A palette PNG (VOC's annotations) is refused: decoded,
 * it gives its colors, not its indices. Writing is our own small encoder (IHDR, one IDAT, IEND; no color
 * management chunks), so the bytes are exactly the values.
 */
import { open } from 'node:fs/promises';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';

/** A label map: [height * width] row-major values. */
export interface LabelImage {
  width: number;
  height: number;
  data: Uint8Array | Uint16Array;
}

function oneLine(message: string): string {
  return message.replace(/\s+/g, ' ').trim();
}

async function readBytes(file: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw new UserError(`cannot open annotation ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new UserError(`annotation ${file} is not a regular file`);
    if (st.size === 0) throw new UserError(`annotation ${file} is an empty file`);
    return await fh.readFile();
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`cannot read annotation ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  } finally {
    await fh.close();
  }
}

function describeChannels(channels: number, hasAlpha: boolean): string {
  if (channels === 2) return 'gray and alpha channels';
  if (channels === 3) return 'RGB channels';
  if (channels === 4) return hasAlpha ? 'RGBA channels' : '4 channels';
  return `${channels} channels`;
}

/**
 * Reads a single-channel PNG (8- or 16-bit grayscale; 1-, 2- and 4-bit grayscale give their raw values).
 * A UserError naming the file for anything else: another format, a palette, color or alpha channels, a file
 * that does not decode.
 */
export async function readLabelPng(file: string): Promise<LabelImage> {
  const bytes = await readBytes(file);
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes).metadata();
  } catch (e) {
    throw new UserError(`cannot decode annotation ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  }
  if (meta.format !== 'png') throw new UserError(`annotation ${file} is not a PNG (it is ${meta.format ?? 'of an unknown format'}); label maps are single-channel PNGs`);
  if (meta.isPalette) {
    throw new UserError(
      `annotation ${file} is a palette PNG: decoding gives its colors, not its indices; save the label values as an 8-bit grayscale PNG`,
    );
  }
  if (meta.channels !== 1) {
    throw new UserError(`annotation ${file} has ${describeChannels(meta.channels ?? 0, meta.hasAlpha ?? false)}; a label map is a single-channel (grayscale) PNG`);
  }
  const wide = meta.depth === 'ushort';
  let data: Buffer;
  let width: number;
  let height: number;
  try {
    // ignoreIcc: with an embedded profile, libvips converts 8-bit files through sRGB before 'b-w', which
    // changes the values; a label map's values are indices, not colors.
    const out = await sharp(bytes, { failOn: 'error', ignoreIcc: true })
      .toColourspace(wide ? 'grey16' : 'b-w')
      .raw({ depth: wide ? 'ushort' : 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (out.info.channels !== 1) throw new Error(`decoded to ${out.info.channels} channels`);
    data = out.data;
    width = out.info.width;
    height = out.info.height;
  } catch (e) {
    throw new UserError(`cannot decode annotation ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  }
  if (wide) {
    // Copied: the buffer's offset need not be 2-byte aligned.
    const values = new Uint16Array(width * height);
    for (let i = 0; i < values.length; i++) values[i] = data.readUInt16LE(2 * i);
    return { width, height, data: values };
  }
  const values = new Uint8Array(data.buffer, data.byteOffset, data.length);
  const bits = meta.bitsPerSample ?? 8;
  if (bits < 8) {
    // libvips scales low bit depths to 0..255; the label is the stored value.
    const step = 255 / (2 ** bits - 1);
    for (let i = 0; i < values.length; i++) values[i] = Math.round(values[i]! / step);
  }
  return { width, height, data: values };
}

const CRC_TABLE = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

function crc32(bytes: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

function pngChunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** The PNG bytes of a grayscale image of `bits` (8 or 16) per pixel; values are not checked. */
export function encodeGrayPng(values: ArrayLike<number>, width: number, height: number, bits: 8 | 16): Buffer {
  const bpp = bits / 8;
  const stride = 1 + width * bpp;
  const raw = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    // Filter type 0 (none) on every row: label maps are runs of equal values, which deflate takes as they are.
    const o = y * stride + 1;
    for (let x = 0; x < width; x++) {
      const v = values[y * width + x]!;
      if (bits === 8) raw[o + x] = v;
      else raw.writeUInt16BE(v, o + 2 * x);
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = bits;
  header[9] = 0; // grayscale; compression, filter and interlace methods 0
  return Buffer.concat([PNG_SIGNATURE, pngChunk('IHDR', header), pngChunk('IDAT', deflateSync(raw)), pngChunk('IEND', new Uint8Array(0))]);
}

/**
 * Writes labels ([height * width], whole numbers 0..65535) as a grayscale PNG, 8-bit when every value is at
 * most 255 and 16-bit otherwise, atomically (io/atomic.ts).
 */
export async function writeLabelPng(file: string, labels: ArrayLike<number>, width: number, height: number): Promise<void> {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new UserError(`${file}: a label map must be at least 1x1 pixels, got ${width}x${height}`);
  }
  if (labels.length !== width * height) throw new UserError(`${file}: ${labels.length} labels for a ${width}x${height} map (${width * height} pixels)`);
  let max = 0;
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i]!;
    if (!Number.isInteger(v) || v < 0 || v > 65535) {
      throw new UserError(`${file}: label ${v} at pixel (${i % width}, ${Math.floor(i / width)}) is not a whole number from 0 to 65535`);
    }
    if (v > max) max = v;
  }
  await writeFileAtomic(file, encodeGrayPng(labels, width, height, max <= 255 ? 8 : 16));
}
