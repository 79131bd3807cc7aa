/**
 * The README's first command (`npm run demo`): the whole product on the data the package ships.
 *
 *   1. zoo train    a ResNet-18-D with the paper's best recipe on the embedded Fashion-MNIST subset
 *                   (3000 training images, 32x32), a few minutes on two cores; the run exports
 *                   model.onnx and checks it in ONNX Runtime against the tfjs model;
 *   2. --add-to-zoo the result joins the local zoo as `fashion-resnet18d`;
 *   3. zoo eval     top-1/top-5 of the ONNX file on the 500 held-out test images, in ONNX Runtime;
 *   4. zoo predict  a few held-out images written as PNG files, classified by name from the local zoo;
 *                   the script prints how many it got right.
 *
 * Each step runs the `zoo` command line and prints it first, so the commands can be copied.
 * Distillation is left out (the best recipe's teacher would be an ImageNet model), and FP16 too
 * (tfjs has no float16 arithmetic): the recipe line printed by `zoo train` says so.
 *
 *   node dist/scripts/quickstart.js [--epochs 12] [--out out/quickstart] [--name fashion-resnet18d]
 */
import { mkdirSync, rmSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { loadEmbeddedFashion } from '../src/data/embedded.js';
import { FASHION_MNIST_CLASSES } from '../src/data/idx.js';
import { zooRunner } from './zoo_cli.js';

const zoo = zooRunner('quickstart');

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      epochs: { type: 'string', default: '12' },
      out: { type: 'string', default: path.join('out', 'quickstart') },
      name: { type: 'string', default: 'fashion-resnet18d' },
      images: { type: 'string', default: '20' },
    },
  });
  const out = values.out!;
  const run = path.join(out, 'run');
  const t0 = performance.now();
  // A fresh run each time: the quickstart is a demonstration, not a run to resume.
  rmSync(run, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });

  zoo([
    'train', 'resnet18d',
    '--data', 'fashion',
    '--recipe', 'best',
    '--epochs', values.epochs!,
    '--batch-size', '128',
    '--warmup', '1',
    '--image-size', '32',
    '--min-crop-area', '0.35',
    '--no-fp16',
    '--out', run,
    '--add-to-zoo', values.name!,
    '--force',
  ]);
  const trainSeconds = (performance.now() - t0) / 1000;

  const evalJson = JSON.parse(zoo(['eval', path.join(run, 'model.onnx'), '--data', 'fashion', '--json'], true)) as { top1: number; top5: number; images: number };
  process.stdout.write(`top-1 ${(100 * evalJson.top1).toFixed(2)}%, top-5 ${(100 * evalJson.top5).toFixed(2)}% on ${evalJson.images} held-out images\n`);

  // A few held-out test images as PNG files, two per class, as a user would have them.
  const data = await loadEmbeddedFashion();
  const per = Math.max(1, Math.floor(Number(values.images) / FASHION_MNIST_CLASSES.length));
  const dir = path.join(out, 'images');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const files: { file: string; label: string }[] = [];
  const taken = new Array<number>(FASHION_MNIST_CLASSES.length).fill(0);
  const { images, labels, height, width } = data.test;
  // Skip the first images of each class, so these are not the first rows of the validation log either.
  for (let i = labels.length - 1; i >= 0 && files.length < per * FASHION_MNIST_CLASSES.length; i--) {
    const y = labels[i]!;
    if (taken[y]! >= per) continue;
    taken[y]!++;
    const label = FASHION_MNIST_CLASSES[y]!;
    const file = path.join(dir, `${String(files.length).padStart(2, '0')}-${label.replace(/[^a-z0-9]+/gi, '_').toLowerCase()}.png`);
    await sharp(Buffer.from(images.subarray(i * height * width, (i + 1) * height * width)), { raw: { width, height, channels: 1 } }).png().toFile(file);
    files.push({ file, label });
  }

  const predicted = JSON.parse(zoo(['predict', values.name!, ...files.map((f) => f.file), '--top', '1', '--json'], true)) as {
    results: { image: string; top: { label: string; probability: number }[] }[];
  };
  let right = 0;
  for (const [k, r] of predicted.results.entries()) {
    const want = files[k]!.label;
    const got = r.top[0]!;
    if (got.label === want) right++;
    process.stdout.write(`  ${got.label === want ? 'ok   ' : 'wrong'} ${path.basename(r.image).padEnd(24)} ${got.label} (${(100 * got.probability).toFixed(0)}%)${got.label === want ? '' : `, is ${want}`}\n`);
  }
  zoo(['plot', run, '-o', path.join(out, 'curves.png')]);
  const log = readFileSync(path.join(run, 'log.jsonl'), 'utf8').trim().split('\n');
  const last = JSON.parse(log.at(-1)!) as { valTop1: number };
  process.stdout.write(
    `\nquickstart: ${right}/${files.length} held-out images right; ONNX top-1 ${(100 * evalJson.top1).toFixed(2)}% on ${evalJson.images} test images ` +
      `(tfjs ${(100 * last.valTop1).toFixed(2)}%); training and export took ${(trainSeconds / 60).toFixed(1)} min, everything ${((performance.now() - t0) / 60000).toFixed(1)} min.\n` +
      `Curves: ${path.join(out, 'curves.png')}. Next: zoo predict ${values.name} your.png, zoo list --local\n`,
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`quickstart failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
