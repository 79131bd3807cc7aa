/**
 * Image classification data sets as plain descriptions that can cross to worker threads: either pixels held
 * in memory (IDX data, in a SharedArrayBuffer that workers read without a copy) or a list of image files that
 * each worker decodes itself. Labels always live in the main thread.
 */
import { UserError } from '../errors.js';
import type { IdxSplit } from './idx.js';
import type { Image } from './transforms.js';

/** Same-size images in one byte array, N x H x W x C. */
export interface MemorySource {
  kind: 'memory';
  /** Backed by a SharedArrayBuffer so that worker threads share it. */
  pixels: Uint8Array;
  height: number;
  width: number;
  channels: 1 | 3;
}

/** Encoded image files (JPEG, PNG, WebP), decoded on demand. */
export interface FileSource {
  kind: 'files';
  files: readonly string[];
}

/** Where a data set's images come from. */
export type DatasetSource = MemorySource | FileSource;

/** An image classification data set: sample i has image `source[i]` and label `labels[i]`. */
export interface ImageDataset {
  name: string;
  classes: readonly string[];
  labels: Int32Array;
  source: DatasetSource;
}

/** Number of samples. */
export function datasetSize(dataset: ImageDataset): number {
  return dataset.labels.length;
}

function toShared(bytes: Uint8Array): Uint8Array {
  if (bytes.buffer instanceof SharedArrayBuffer) return bytes;
  const shared = new Uint8Array(new SharedArrayBuffer(bytes.length));
  shared.set(bytes);
  return shared;
}

/** Options of `inMemoryDataset`. */
export interface InMemoryDatasetOptions {
  name: string;
  classes: readonly string[];
  /** N x H x W x C bytes; copied into shared memory unless already there. */
  pixels: Uint8Array;
  labels: ArrayLike<number>;
  height: number;
  width: number;
  channels?: 1 | 3;
}

/** A data set over same-size images held in memory. */
export function inMemoryDataset(options: InMemoryDatasetOptions): ImageDataset {
  const channels = options.channels ?? 1;
  const n = options.labels.length;
  const per = options.height * options.width * channels;
  if (options.pixels.length !== n * per) {
    throw new UserError(`${options.name}: ${options.pixels.length} pixel bytes for ${n} images of ${options.height}x${options.width}x${channels}`);
  }
  const labels = Int32Array.from(options.labels);
  for (let i = 0; i < n; i++) {
    if (!(labels[i]! >= 0 && labels[i]! < options.classes.length)) {
      throw new UserError(`${options.name}: label ${labels[i]} of sample ${i} is out of range (${options.classes.length} classes)`);
    }
  }
  return {
    name: options.name,
    classes: options.classes,
    labels,
    source: { kind: 'memory', pixels: toShared(options.pixels), height: options.height, width: options.width, channels },
  };
}

/** A data set over one IDX split (grayscale images). */
export function idxDataset(split: IdxSplit, classes: readonly string[], name: string): ImageDataset {
  return inMemoryDataset({ name, classes, pixels: split.images, labels: split.labels, height: split.height, width: split.width, channels: 1 });
}

/** The samples `indices` of a data set, in that order (a copy of the pixels for in-memory sets). */
export function subsetDataset(dataset: ImageDataset, indices: ArrayLike<number>, name = `${dataset.name}[subset]`): ImageDataset {
  const n = datasetSize(dataset);
  const idx = Int32Array.from(indices);
  for (const i of idx) if (i < 0 || i >= n) throw new RangeError(`index ${i} outside ${dataset.name} (${n} samples)`);
  const labels = idx.map((i) => dataset.labels[i]!);
  const src = dataset.source;
  if (src.kind === 'files') return { name, classes: dataset.classes, labels, source: { kind: 'files', files: Array.from(idx, (i) => src.files[i]!) } };
  const per = src.height * src.width * src.channels;
  const pixels = new Uint8Array(new SharedArrayBuffer(idx.length * per));
  idx.forEach((i, j) => pixels.set(src.pixels.subarray(i * per, (i + 1) * per), j * per));
  return { name, classes: dataset.classes, labels, source: { ...src, pixels } };
}

/** A short description of where a sample comes from, for error messages. */
export function describeSample(source: DatasetSource, index: number): string {
  return source.kind === 'files' ? source.files[index]! : `in-memory sample ${index}`;
}

/** Sample `index` as decoded bytes in [0, 255] (a view for in-memory sets; files are decoded with sharp). */
export async function readSample(source: DatasetSource, index: number): Promise<Image<Uint8Array>> {
  if (source.kind === 'memory') {
    const per = source.height * source.width * source.channels;
    return { data: source.pixels.subarray(index * per, (index + 1) * per), height: source.height, width: source.width, channels: source.channels };
  }
  // Imported on demand so that in-memory workers never load sharp's native library.
  const { decodeImage } = await import('./image_folder.js');
  return decodeImage(source.files[index]!);
}
