/**
 * Throughput of the data loader (images/s, consumer idle, so this is what preprocessing can supply):
 *   (a) the embedded Fashion-MNIST subset at 32x32 with the full training augmentation;
 *   (b) a folder of generated JPEGs of about 224-320 pixels a side at 224x224 with the full training
 *       augmentation (decode included);
 * each with the work in the calling thread (0 workers, the per-image cost) and with 1 and 2 worker threads.
 *
 *   npm run build && node dist/scripts/bench-data.js [--images 400] [--epochs 2] [--json out.json]
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import type { ImageDataset } from '../src/data/dataset.js';
import { embeddedFashionDatasets } from '../src/data/embedded.js';
import { openImageFolder } from '../src/data/image_folder.js';
import { createLoader } from '../src/data/loader.js';
import { trainTransform } from '../src/data/transforms.js';
import { Rng } from '../src/util/random.js';

interface Result {
  case: string;
  workers: number;
  images: number;
  seconds: number;
  imagesPerSecond: number;
  /** CPU time of the whole process (all threads) per image: robust to other load on the machine. */
  cpuMsPerImage: number;
}

/** Writes `count` JPEGs (10 classes) with smooth gradients plus noise, so decoding does real work. */
async function makeJpegFolder(root: string, count: number): Promise<void> {
  const rng = new Rng(2024);
  for (let i = 0; i < count; i++) {
    const w = 224 + rng.int(97);
    const h = 224 + rng.int(97);
    const px = Buffer.alloc(w * h * 3);
    const [fr, fg, fb] = [rng.range(0.5, 3), rng.range(0.5, 3), rng.range(0.5, 3)];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = (y * w + x) * 3;
        px[o] = 127 + 100 * Math.sin((fr * x) / 40) + rng.range(-20, 20);
        px[o + 1] = 127 + 100 * Math.cos((fg * y) / 30) + rng.range(-20, 20);
        px[o + 2] = 127 + 100 * Math.sin((fb * (x + y)) / 50) + rng.range(-20, 20);
      }
    }
    const dir = path.join(root, `class${i % 10}`);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, `${i}.jpg`), await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer());
  }
}

async function measure(name: string, dataset: ImageDataset, size: number, batchSize: number, workers: number, epochs: number): Promise<Result> {
  const loader = createLoader({ dataset, batchSize, transform: trainTransform({ size }), workers, seed: 1 });
  // Warm-up (worker start-up and JIT are not throughput): the last two batches of epoch 0, run to the end so
  // that nothing is still in flight when the clock starts.
  for await (const _ of loader.epoch(0, Math.max(0, loader.batchesPerEpoch - 2)));
  let images = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  for (let e = 1; e <= epochs; e++) for await (const b of loader.epoch(e)) images += b.count;
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await loader.close();
  const cpuMsPerImage = (cpu.user + cpu.system) / 1000 / images;
  return { case: name, workers, images, seconds, imagesPerSecond: images / seconds, cpuMsPerImage };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      images: { type: 'string', default: '400' },
      epochs: { type: 'string', default: '2' },
      json: { type: 'string' },
    },
  });
  const epochs = Number(values.epochs);
  const results: Result[] = [];
  const { train } = await embeddedFashionDatasets();
  for (const workers of [0, 1, 2]) results.push(await measure('fashion-mnist 28->32, train aug', train, 32, 128, workers, epochs));

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'zoo-bench-data-'));
  try {
    await makeJpegFolder(tmp, Number(values.images));
    const folder = await openImageFolder(tmp, { valFraction: 0 });
    for (const workers of [0, 1, 2]) results.push(await measure('jpeg ~224-320px -> 224, train aug', folder.train, 224, 32, workers, epochs));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }

  console.log(`cores: ${os.availableParallelism()}, node ${process.version}, sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips})`);
  console.log(`load average (1 min) at the end: ${os.loadavg()[0]!.toFixed(2)}`);
  console.log('case                                 workers   images   seconds   images/s   CPU ms/image');
  for (const r of results) {
    console.log(`${r.case.padEnd(36)} ${String(r.workers).padStart(7)} ${String(r.images).padStart(8)} ${r.seconds.toFixed(2).padStart(9)} ${r.imagesPerSecond.toFixed(0).padStart(10)} ${r.cpuMsPerImage.toFixed(3).padStart(14)}`);
  }
  if (values.json) await writeFile(values.json, JSON.stringify({ cores: os.availableParallelism(), results }, null, 2));
}

await main();
