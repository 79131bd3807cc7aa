/**
 * Reader for the IDX files of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/ describes the
 * format): a 4-byte magic `0x00 0x00 <type> <ndims>`, `ndims` big-endian uint32 sizes, then the values.
 * Only unsigned bytes (type 0x08) are accepted, which is all these data sets use. Files may be gzipped
 * (as Debian's `dataset-fashion-mnist` ships them); decompression is bounded by the size the header
 * implies, so a corrupt or hostile file cannot make the reader allocate more than it announced.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { UserError } from '../errors.js';

/** An IDX array: its dimensions and its values, row-major. */
export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** One split of an image classification set stored as IDX: images N x H x W (uint8) and labels. */
export interface IdxSplit {
  images: Uint8Array;
  labels: Int32Array;
  count: number;
  height: number;
  width: number;
}

/** Train and test splits of a Fashion-MNIST-style directory, with the class names. */
export interface FashionMnist {
  train: IdxSplit;
  test: IdxSplit;
  classes: readonly string[];
}

/** Fashion-MNIST's class names, in label order (Zalando Research's README). */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);

const TYPE_NAMES: Record<number, string> = {
  0x08: 'unsigned byte',
  0x09: 'signed byte',
  0x0b: 'short',
  0x0c: 'int',
  0x0d: 'float',
  0x0e: 'double',
};

/** Largest array the reader accepts (1 GiB): far above any IDX data set, far below what breaks Node. */
const MAX_BYTES = 2 ** 30;

/** Deflate cannot expand data by more than about 1032:1; a header claiming more is lying. */
const MAX_DEFLATE_RATIO = 1032;

function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

interface IdxHeader {
  dims: number[];
  headerBytes: number;
  dataBytes: number;
}

/** Parses and validates the header: magic, type, rank, sizes, and the data size they imply. */
function parseHeader(bytes: Uint8Array, label: string): IdxHeader {
  if (bytes.length < 4) throw new UserError(`${label}: not an IDX file (${bytes.length} bytes, shorter than the 4-byte magic)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    const hex = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new UserError(`${label}: not an IDX file (magic ${hex}, expected 00 00 08 <ndims>)`);
  }
  const type = bytes[2]!;
  if (type !== 0x08) {
    const name = TYPE_NAMES[type];
    throw new UserError(
      `${label}: IDX type 0x${type.toString(16).padStart(2, '0')} (${name ?? 'unknown'}) is not supported; only 0x08 (unsigned byte) is`,
    );
  }
  const ndims = bytes[3]!;
  if (ndims < 1 || ndims > 4) throw new UserError(`${label}: IDX file with ${ndims} dimensions; expected 1 to 4`);
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) throw new UserError(`${label}: truncated IDX header (${bytes.length} of ${headerBytes} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, headerBytes);
  const dims: number[] = [];
  let dataBytes = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    if (d === 0) throw new UserError(`${label}: IDX dimension ${i} is 0`);
    dims.push(d);
    dataBytes *= d;
    if (dataBytes > MAX_BYTES) {
      throw new UserError(`${label}: IDX header announces more than ${MAX_BYTES} bytes of data (dims so far ${dims.join(' x ')}); refusing to read it`);
    }
  }
  return { dims, headerBytes, dataBytes };
}

/**
 * Parses an IDX file held in memory (already decompressed). `label` names the file in error messages.
 * The returned data is a view into `bytes`.
 */
export function parseIdx(bytes: Uint8Array, label: string): IdxArray {
  const { dims, headerBytes, dataBytes } = parseHeader(bytes, label);
  const actual = bytes.length - headerBytes;
  if (actual !== dataBytes) {
    const what = actual < dataBytes ? 'truncated' : 'has trailing bytes';
    throw new UserError(`${label}: IDX file ${what}: dims ${dims.join(' x ')} need ${dataBytes} data bytes, the file has ${actual}`);
  }
  return { dims, data: bytes.subarray(headerBytes) };
}

/**
 * Decompresses just enough of a gzip stream to read the IDX header. Growing prefixes of the compressed
 * bytes keep the output small even for a gzip bomb: n compressed bytes inflate to at most ~1032 n.
 */
function peekGzipHeader(gz: Uint8Array, label: string): IdxHeader {
  for (let n = 64; ; n *= 4) {
    const prefix = gz.subarray(0, Math.min(n, gz.length));
    let out: Buffer;
    try {
      out = zlib.gunzipSync(prefix, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: prefix.length * MAX_DEFLATE_RATIO + 1024 });
    } catch (e) {
      throw new UserError(`${label}: corrupt gzip data (${(e as Error).message})`, { cause: e });
    }
    // 20 bytes hold the longest valid header (4 dimensions).
    if (out.length >= 20 || prefix.length === gz.length) return parseHeader(out, label);
  }
}

/** Gunzips an IDX file with the output bounded by the size its header announces. */
export function gunzipIdx(gz: Uint8Array, label: string): Uint8Array {
  const header = peekGzipHeader(gz, label);
  const expected = header.headerBytes + header.dataBytes;
  if (expected > gz.length * MAX_DEFLATE_RATIO + 1024) {
    throw new UserError(`${label}: IDX header announces ${expected} bytes, more than ${gz.length} gzipped bytes can hold (truncated file?)`);
  }
  let out: Buffer;
  try {
    out = zlib.gunzipSync(gz, { maxOutputLength: expected });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
      throw new UserError(`${label}: gzip data decompresses to more than the ${expected} bytes its IDX header announces`, { cause: e });
    }
    throw new UserError(`${label}: corrupt or truncated gzip data (${err.message})`, { cause: e });
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** Reads an IDX file, gzipped or not (detected from the gzip magic, not the name). */
export async function readIdx(file: string): Promise<IdxArray> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new UserError(`cannot read IDX file ${file}: ${(e as Error).message}`, { cause: e });
  }
  return parseIdx(isGzip(bytes) ? gunzipIdx(bytes, file) : bytes, file);
}

/** Throws unless every label is below `numClasses`. */
export function checkLabels(labels: ArrayLike<number>, numClasses: number, label: string): void {
  for (let i = 0; i < labels.length; i++) {
    if (!(labels[i]! < numClasses)) {
      throw new UserError(`${label}: label ${labels[i]} at index ${i} is out of range (${numClasses} classes)`);
    }
  }
}

/** Pairs an images file (N x H x W) with a labels file (N), validating shapes and label range. */
export async function readIdxSplit(imagesFile: string, labelsFile: string, numClasses: number): Promise<IdxSplit> {
  const [images, labels] = await Promise.all([readIdx(imagesFile), readIdx(labelsFile)]);
  if (images.dims.length !== 3) throw new UserError(`${imagesFile}: expected images N x H x W, got dims ${images.dims.join(' x ')}`);
  if (labels.dims.length !== 1) throw new UserError(`${labelsFile}: expected labels N, got dims ${labels.dims.join(' x ')}`);
  const [count, height, width] = images.dims as [number, number, number];
  if (labels.dims[0] !== count) {
    throw new UserError(`${labelsFile}: ${labels.dims[0]} labels for ${count} images in ${imagesFile}`);
  }
  checkLabels(labels.data, numClasses, labelsFile);
  return { images: images.data, labels: Int32Array.from(labels.data), count, height, width };
}

/** `dir/name`, or `dir/name.gz` when only the gzipped file exists. */
function idxPath(dir: string, name: string): string {
  const plain = path.join(dir, name);
  if (existsSync(plain)) return plain;
  const gz = `${plain}.gz`;
  if (existsSync(gz)) return gz;
  throw new UserError(`Fashion-MNIST file ${name}(.gz) not found in ${dir}`);
}

/**
 * Loads a Fashion-MNIST (or MNIST) directory with the four standard files
 * (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`,
 * each optionally `.gz`). Debian's `dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist.
 */
export async function loadFashionMnist(dir: string, classes: readonly string[] = FASHION_MNIST_CLASSES): Promise<FashionMnist> {
  if (!existsSync(dir)) throw new UserError(`Fashion-MNIST directory ${dir} does not exist`);
  const [train, test] = await Promise.all([
    readIdxSplit(idxPath(dir, 'train-images-idx3-ubyte'), idxPath(dir, 'train-labels-idx1-ubyte'), classes.length),
    readIdxSplit(idxPath(dir, 't10k-images-idx3-ubyte'), idxPath(dir, 't10k-labels-idx1-ubyte'), classes.length),
  ]);
  return { train, test, classes };
}

/** Encodes an unsigned-byte IDX file (the inverse of `parseIdx`), for writing subsets and fixtures. */
export function encodeIdx(dims: readonly number[], data: Uint8Array): Uint8Array {
  const header = 4 + 4 * dims.length;
  const out = new Uint8Array(header + data.length);
  const view = new DataView(out.buffer);
  out[2] = 0x08;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, header);
  return out;
}
