import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { subsetDataset, type ImageDataset } from '../src/data/dataset.js';
import { embeddedFashionDatasets } from '../src/data/embedded.js';
import { openImageFolder } from '../src/data/image_folder.js';
import { createLoader, maxWorkers, type Batch, type LoaderOptions } from '../src/data/loader.js';
import { evalTransform, trainTransform } from '../src/data/transforms.js';
import { UserError } from '../src/errors.js';

let fashion: ImageDataset;
let tmp = '';

test.before(async () => {
  const { train } = await embeddedFashionDatasets();
  fashion = subsetDataset(train, Array.from({ length: 100 }, (_, i) => i * 7));
  tmp = await mkdtemp(path.join(os.tmpdir(), 'zoo-loader-'));
});
test.after.always(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function collect(options: Partial<LoaderOptions> & { epoch?: number }, startBatch?: number): Promise<Batch[]> {
  const loader = createLoader({ dataset: fashion, batchSize: 16, transform: trainTransform({ size: 32 }), seed: 7, ...options });
  const out: Batch[] = [];
  try {
    const it = startBatch === undefined ? loader : loader.epoch(options.epoch ?? 0, startBatch);
    for await (const b of it) out.push(b);
  } finally {
    await loader.close();
  }
  return out;
}

function same(a: Batch[], b: Batch[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => {
    const y = b[i]!;
    return x.batchIndex === y.batchIndex && Buffer.from(x.indices.buffer).equals(Buffer.from(y.indices.buffer)) && Buffer.from(x.images.buffer).equals(Buffer.from(y.images.buffer));
  });
}

test('order and pixels are identical with 0, 1 and 2 workers for a seed, and differ for another seed', async (t) => {
  const one = await collect({ workers: 1 });
  const two = await collect({ workers: 2, prefetch: 3 });
  const inline = await collect({ workers: 0 });
  t.is(one.length, 7);
  t.is(one[6]!.count, 4);
  t.true(same(one, two));
  t.true(same(one, inline));
  const other = await collect({ workers: 2, seed: 8 });
  t.notDeepEqual(Array.from(other[0]!.indices), Array.from(one[0]!.indices));
  t.false(same(one, other));
  const nextEpoch = await collect({ workers: 1, epoch: 1 });
  t.false(same(one, nextEpoch));
  // Every sample once per epoch, labels matching the data set.
  const seen = one.flatMap((b) => Array.from(b.indices)).sort((a, b) => a - b);
  t.deepEqual(seen, Array.from({ length: 100 }, (_, i) => i));
  for (const b of one) {
    t.is(b.images.length, b.count * 32 * 32 * 3);
    t.deepEqual(Array.from(b.labels), Array.from(b.indices, (i) => fashion.labels[i]!));
  }
});

test('starting at a batch gives the tail of the full epoch', async (t) => {
  const full = await collect({ workers: 1, epoch: 3 });
  const tail = await collect({ workers: 2, epoch: 3 }, 4);
  t.is(tail.length, 3);
  t.true(same(full.slice(4), tail));
});

test('drop-last and no shuffle', async (t) => {
  const batches = await collect({ workers: 1, dropLast: true, shuffle: false, transform: evalTransform({ size: 28, resize: 28 }) });
  t.is(batches.length, 6);
  t.true(batches.every((b) => b.count === 16));
  t.deepEqual(Array.from(batches[1]!.indices), Array.from({ length: 16 }, (_, i) => 16 + i));
});

test('close() terminates the workers; a closed loader yields nothing more', async (t) => {
  const loader = createLoader({ dataset: fashion, batchSize: 10, transform: trainTransform({ size: 32 }), workers: 2 });
  t.is(loader.activeWorkers, 2);
  const it = loader[Symbol.asyncIterator]();
  t.false((await it.next()).done);
  await loader.close();
  t.is(loader.activeWorkers, 0);
  await t.throwsAsync(it.next());
  await loader.close(); // idempotent
});

test('an error in a worker reaches the consumer naming the file, and stops the workers', async (t) => {
  const dir = path.join(tmp, 'broken');
  for (let i = 0; i < 6; i++) {
    await mkdir(path.join(dir, 'c'), { recursive: true });
    await sharp({ create: { width: 24, height: 20, channels: 3, background: { r: i * 40, g: 100, b: 50 } } }).jpeg().toFile(path.join(dir, 'c', `${i}.jpg`));
  }
  const bad = path.join(dir, 'c', '3.jpg');
  await writeFile(bad, 'garbage, not a jpeg');
  const folder = await openImageFolder(dir, { valFraction: 0 });
  t.is(folder.train.labels.length, 6);
  const loader = createLoader({ dataset: folder.train, batchSize: 2, transform: trainTransform({ size: 16 }), workers: 2, shuffle: false });
  const seen: number[] = [];
  const e = await t.throwsAsync(
    (async () => {
      for await (const b of loader) seen.push(...b.indices);
    })(),
    { instanceOf: UserError },
  );
  t.true(e!.message.includes(bad), e!.message);
  t.deepEqual(seen, [0, 1]);
  t.is(loader.activeWorkers, 0);
  await loader.close();
});

test('image folders load through the workers with the eval transform', async (t) => {
  const dir = path.join(tmp, 'folder');
  for (const cls of ['x', 'y']) {
    for (let i = 0; i < 3; i++) {
      await mkdir(path.join(dir, 'train', cls), { recursive: true });
      await mkdir(path.join(dir, 'val', cls), { recursive: true });
      const img = sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 10 * i, g: cls === 'x' ? 0 : 200, b: 90 } } });
      await img.clone().png().toFile(path.join(dir, 'train', cls, `${i}.png`));
      await img.clone().jpeg().toFile(path.join(dir, 'val', cls, `${i}.jpg`));
    }
  }
  const folder = await openImageFolder(dir);
  const loader = createLoader({ dataset: folder.val, batchSize: 4, transform: evalTransform({ size: 24 }), workers: 1, shuffle: false });
  const batches: Batch[] = [];
  for await (const b of loader) batches.push(b);
  await loader.close();
  t.deepEqual(batches.map((b) => b.count), [4, 2]);
  t.deepEqual(Array.from(batches[0]!.labels), [0, 0, 0, 1]);
  t.is(batches[0]!.images.length, 4 * 24 * 24 * 3);
});

test('a worker count past four per core (a mistyped --workers) is refused before any thread starts', (t) => {
  const e = t.throws(() => createLoader({ dataset: fashion, batchSize: 10, transform: trainTransform({ size: 32 }), workers: maxWorkers() + 1 }), { instanceOf: UserError });
  t.regex(e!.message, new RegExp(`workers: ${maxWorkers() + 1} loader threads on \\d+ cores .*at most ${maxWorkers()}`));
  t.is((e as UserError).exitCode, 2);
});
