/**
 * What one batch of the loader is made of, computed the same way in a worker thread or in the caller's
 * thread: the epoch's sample order and each sample's random stream come from (seed, epoch, sample index)
 * alone, so the pixels do not depend on how many workers there are or which one made the batch.
 */
import { UserError } from '../errors.js';
import { Rng } from '../util/random.js';
import { readSample, type DatasetSource } from './dataset.js';
import type { Image, Transform } from './transforms.js';

// Domain tags keep the order stream and the per-sample streams apart even for equal inputs.
const ORDER_DOMAIN = 0x6f726472;
const SAMPLE_DOMAIN = 0x73616d70;

function mix32(h: number, v: number): number {
  h = Math.imul(h ^ (v >>> 0), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The seed of sample `index`'s augmentation stream in `epoch`. */
export function sampleSeed(seed: number, epoch: number, index: number): number {
  return mix32(mix32(mix32(SAMPLE_DOMAIN, seed), epoch), index);
}

/** The order in which an epoch visits the samples: a seeded permutation, or 0..n-1 without shuffling. */
export function epochOrder(n: number, options: { shuffle: boolean; seed: number; epoch: number }): Int32Array {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  if (options.shuffle) new Rng(mix32(mix32(ORDER_DOMAIN, options.seed), options.epoch)).shuffle(order);
  return order;
}

/** A batch to render: the samples, and for file data sets their paths (so workers need no file list). */
export interface BatchTask {
  indices: Int32Array;
  files?: string[];
  seed: number;
  epoch: number;
}

function reader(source: DatasetSource | undefined, task: BatchTask): (j: number) => Promise<Image<Uint8Array>> {
  if (task.files) {
    const files = task.files;
    // Imported on demand so that workers of in-memory data sets never load sharp's native library.
    return async (j) => (await import('./image_folder.js')).decodeImage(files[j]!);
  }
  if (!source) throw new Error('batch task without files needs an in-memory source');
  return (j) => readSample(source, task.indices[j]!);
}

/**
 * Decodes and transforms the samples of `task` into one N x size x size x 3 array. The next image is
 * decoded (by sharp, off the JavaScript thread) while the current one is transformed.
 */
export async function renderBatch(source: DatasetSource | undefined, transform: Transform, task: BatchTask): Promise<Float32Array<ArrayBuffer>> {
  const n = task.indices.length;
  const per = transform.size * transform.size * 3;
  const out = new Float32Array(n * per);
  const read = reader(source, task);
  let next: Promise<Image<Uint8Array>> | undefined = read(0);
  try {
    for (let j = 0; j < n; j++) {
      const img: Image<Uint8Array> = await next!;
      next = j + 1 < n ? read(j + 1) : undefined;
      const index = task.indices[j]!;
      transform.apply(img, new Rng(sampleSeed(task.seed, task.epoch, index)), out, j * per);
    }
  } catch (e) {
    next?.catch(() => undefined);
    if (e instanceof UserError) throw e;
    const where = task.files ? task.files.join(', ') : `samples ${task.indices.join(', ')}`;
    throw new Error(`preprocessing failed in a batch of ${where}: ${(e as Error).message}`, { cause: e });
  }
  return out;
}
