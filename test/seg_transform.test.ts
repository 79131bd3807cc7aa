import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { decodeImage } from '../src/data/image_folder.js';
import { resample } from '../src/data/transforms.js';
import { flipDecision } from '../src/detection/transform.js';
import { UserError } from '../src/errors.js';
import { readAde } from '../src/segmentation/ade.js';
import { encodeGrayPng, readLabelPng, type LabelImage } from '../src/segmentation/png.js';
import { loadSegBatch, segEvalSample, segTrainGeometry, segTrainSample, type SegPixels } from '../src/segmentation/transform.js';

const MEAN = [0.5, 0.25, 0.75];
const STD = [0.25, 0.5, 0.125];
const NORM = { mean: MEAN, std: STD };

/** The byte value a normalized channel value came from. */
function unnormalize(v: number, c: number): number {
  return (v * STD[c]! + MEAN[c]!) * 255;
}

/** A hand image: pixel (x, y) is (10 x + y, 100 + y, 7), its label 1 + (x + 2 y) % 9. */
function handImage(width: number, height: number): { pixels: SegPixels; label: LabelImage } {
  const data = new Uint8Array(width * height * 3);
  const labels = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      data.set([10 * x + y, 100 + y, 7], (y * width + x) * 3);
      labels[y * width + x] = 1 + ((x + 2 * y) % 9);
    }
  }
  return { pixels: { data, width, height, channels: 3 }, label: { width, height, data: labels } };
}

function close(a: number, b: number, tol = 1e-3): boolean {
  return Math.abs(a - b) <= tol;
}

test('segTrainGeometry: a pure function of (seed, epoch, index); the flip is flipDecision; flip off changes nothing else', (t) => {
  const opts = { baseSize: 520, cropSize: 480 };
  const a = segTrainGeometry(300, 400, 7, 2, 11, opts);
  t.deepEqual(segTrainGeometry(300, 400, 7, 2, 11, opts), a);
  const others = [segTrainGeometry(300, 400, 7, 2, 12, opts), segTrainGeometry(300, 400, 7, 3, 11, opts), segTrainGeometry(300, 400, 8, 2, 11, opts)];
  for (const o of others) t.notDeepEqual(o, a);
  let flips = 0;
  for (let i = 0; i < 400; i++) {
    const g = segTrainGeometry(300, 400, 5, 1, i, opts);
    t.is(g.flipped, flipDecision(5, 1, i));
    if (g.flipped) flips++;
    const off = segTrainGeometry(300, 400, 5, 1, i, { ...opts, flip: false });
    t.false(off.flipped);
    t.deepEqual({ ...off, flipped: g.flipped }, g);
  }
  t.true(flips > 160 && flips < 240, `${flips} flips of 400`);
});

test('segTrainGeometry: the long side is an integer in [0.5, 2.0] x base, the aspect kept, the crop inside the padded image', (t) => {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < 3000; i++) {
    const portrait = i % 2 === 0;
    const [h, w] = portrait ? [375, 250] : [250, 375];
    const g = segTrainGeometry(h, w, 1, 0, i, {});
    t.true(Number.isInteger(g.longSide) && g.longSide >= 260 && g.longSide <= 1040, `${g.longSide}`);
    lo = Math.min(lo, g.longSide);
    hi = Math.max(hi, g.longSide);
    const [long, short] = portrait ? [g.resizedHeight, g.resizedWidth] : [g.resizedWidth, g.resizedHeight];
    t.is(long, g.longSide);
    t.is(short, Math.floor((250 * g.longSide) / 375 + 0.5));
    t.is(g.cropSize, 480);
    t.true(g.cropX >= 0 && g.cropX <= Math.max(g.resizedWidth, 480) - 480);
    t.true(g.cropY >= 0 && g.cropY <= Math.max(g.resizedHeight, 480) - 480);
  }
  t.true(lo < 270 && hi > 1030, `long sides ${lo}..${hi}`);
  // Another range and base.
  for (let i = 0; i < 200; i++) {
    const g = segTrainGeometry(10, 20, 3, 0, i, { baseSize: 100, scale: [1, 1.5], cropSize: 8 });
    t.true(g.longSide >= 100 && g.longSide <= 150);
  }
  t.throws(() => segTrainGeometry(10, 20, 3, 0, 0, { scale: [2, 1] }), { instanceOf: UserError, message: /scale must be two numbers 0 < low <= high/ });
  t.throws(() => segTrainGeometry(10, 20, 3, 0, 0, { cropSize: 0 }), { instanceOf: UserError, message: /cropSize must be a positive integer/ });
});

test('segTrainSample at scale 1: the crop is an exact window of the image, labels move with their pixels, flips mirror both', (t) => {
  const { pixels, label } = handImage(12, 9);
  // baseSize = the long side and scale [1, 1]: the resize keeps the size, so the result is a pure crop.
  const opts = { ...NORM, baseSize: 12, scale: [1, 1] as [number, number], cropSize: 5 };
  let sawFlip = false;
  let sawPlain = false;
  for (let index = 0; index < 24; index++) {
    const g = segTrainGeometry(9, 12, 3, 0, index, opts);
    t.deepEqual([g.resizedHeight, g.resizedWidth], [9, 12]);
    const s = segTrainSample(pixels, label, 3, 0, index, opts);
    t.deepEqual([s.height, s.width, s.image.length, s.labels.length], [5, 5, 75, 25]);
    t.true(s.labels instanceof Uint8Array);
    if (g.flipped) sawFlip = true;
    else sawPlain = true;
    for (let y = 0; y < 5; y++) {
      for (let x = 0; x < 5; x++) {
        const sx = g.flipped ? 11 - (g.cropX + x) : g.cropX + x;
        const sy = g.cropY + y;
        const o = (y * 5 + x) * 3;
        for (let c = 0; c < 3; c++) t.true(close(unnormalize(s.image[o + c]!, c), pixels.data[(sy * 12 + sx) * 3 + c]!), `pixel ${x},${y}`);
        t.is(s.labels[y * 5 + x], label.data[sy * 12 + sx]);
      }
    }
  }
  t.true(sawFlip && sawPlain);
});

test('segTrainSample: padding to the crop is 0 in the image and in the labels; the crop starts at 0 on a padded side', (t) => {
  const { pixels, label } = handImage(6, 4);
  const opts = { ...NORM, baseSize: 6, scale: [1, 1] as [number, number], cropSize: 8, flip: false };
  const s = segTrainSample(pixels, label, 0, 0, 0, opts);
  const g = segTrainGeometry(4, 6, 0, 0, 0, opts);
  t.deepEqual([g.cropX, g.cropY], [0, 0]);
  for (let y = 0; y < 8; y++) {
    for (let x = 0; x < 8; x++) {
      const inside = x < 6 && y < 4;
      const o = (y * 8 + x) * 3;
      if (inside) {
        t.is(s.labels[y * 8 + x], label.data[y * 6 + x]);
        t.true(close(unnormalize(s.image[o]!, 0), pixels.data[(y * 6 + x) * 3]!));
      } else {
        t.is(s.labels[y * 8 + x], 0);
        t.deepEqual(Array.from(s.image.subarray(o, o + 3)), [0, 0, 0]);
      }
    }
  }
  // A wide image: only the short side is padded, the crop slides along the long one.
  const wide = handImage(20, 3);
  for (let i = 0; i < 10; i++) {
    const gw = segTrainGeometry(3, 20, 1, 0, i, { baseSize: 20, scale: [1, 1], cropSize: 6, flip: false });
    const sw = segTrainSample(wide.pixels, wide.label, 1, 0, i, { ...NORM, baseSize: 20, scale: [1, 1], cropSize: 6, flip: false });
    t.is(gw.cropY, 0);
    for (let x = 0; x < 6; x++) {
      t.is(sw.labels[x], wide.label.data[gw.cropX + x]);
      t.is(sw.labels[3 * 6 + x], 0);
    }
  }
});

test('segTrainSample at scale 2: labels by nearest neighbour (2 x 2 blocks), the image as the full resize then the crop', (t) => {
  const { pixels, label } = handImage(7, 5);
  // Long side 14 = 2 x 7: the resized image is 14 x 10.
  const opts = { ...NORM, baseSize: 7, scale: [2, 2] as [number, number], cropSize: 6 };
  for (let index = 0; index < 8; index++) {
    const g = segTrainGeometry(5, 7, 9, 4, index, opts);
    t.deepEqual([g.resizedHeight, g.resizedWidth], [10, 14]);
    const s = segTrainSample(pixels, label, 9, 4, index, opts);
    const src = g.flipped ? { ...pixels, data: mirror(pixels.data, 7, 5, 3) } : pixels;
    const full = resample(src, { x: 0, y: 0, width: 7, height: 5 }, 10, 14).data;
    for (let y = 0; y < 6; y++) {
      for (let x = 0; x < 6; x++) {
        const rx = g.cropX + x;
        const ry = g.cropY + y;
        const lx = g.flipped ? 6 - Math.floor(rx / 2) : Math.floor(rx / 2);
        t.is(s.labels[y * 6 + x], label.data[Math.floor(ry / 2) * 7 + lx]);
        for (let c = 0; c < 3; c++) t.true(close(unnormalize(s.image[(y * 6 + x) * 3 + c]!, c), full[(ry * 14 + rx) * 3 + c]!, 1e-3));
      }
    }
    // Labels never take values the map does not have.
    t.true(Array.from(s.labels).every((v) => v >= 1 && v <= 9));
  }
});

function mirror(data: Uint8Array, w: number, h: number, c: number): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) out[(y * w + (w - 1 - x)) * c + k] = data[(y * w + x) * c + k]!;
  return out;
}

test('segEvalSample: the full image normalized, the labels as they are; a size mismatch is a UserError', (t) => {
  const { pixels, label } = handImage(5, 3);
  const s = segEvalSample(pixels, label, NORM);
  t.deepEqual([s.height, s.width], [3, 5]);
  t.deepEqual(Array.from(s.labels), Array.from(label.data));
  for (let i = 0; i < 15; i++) for (let c = 0; c < 3; c++) t.true(close(s.image[i * 3 + c]!, (pixels.data[i * 3 + c]! / 255 - MEAN[c]!) / STD[c]!, 1e-5));
  const wide16 = { ...label, data: Uint16Array.from(label.data, (v) => v + 300) };
  t.true(segEvalSample(pixels, wide16, NORM).labels instanceof Uint16Array);
  t.throws(() => segEvalSample(pixels, { width: 3, height: 5, data: label.data }, NORM), { instanceOf: UserError, message: /the annotation is 3x5 but its image is 5x3/ });
  t.throws(() => segEvalSample(pixels, label, { mean: [0.5], std: STD }), { instanceOf: UserError, message: /mean must be three numbers/ });
});

test('loadSegBatch: training samples drawn by their data set index, eval batches padded to the largest, annotations checked', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'zoo-seg-batch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sizes: [number, number][] = [[20, 14], [16, 22], [12, 12]];
  await mkdir(path.join(dir, 'images', 'training'), { recursive: true });
  await mkdir(path.join(dir, 'annotations', 'training'), { recursive: true });
  for (const [i, [w, h]] of sizes.entries()) {
    const { pixels, label } = handImage(w, h);
    await sharp(Buffer.from(pixels.data), { raw: { width: w, height: h, channels: 3 } }).png().toFile(path.join(dir, 'images', 'training', `s${i}.png`));
    await writeFile(path.join(dir, 'annotations', 'training', `s${i}.png`), encodeGrayPng(label.data, w, h, 8));
  }
  await writeFile(path.join(dir, 'classes.txt'), Array.from({ length: 9 }, (_, i) => `c${i}`).join('\n'));
  const data = await readAde(dir);
  const opts = { ...NORM, baseSize: 24, cropSize: 16, seed: 4, epoch: 2 };
  const batch = await loadSegBatch(data, [2, 0], { ...opts, train: true });
  t.deepEqual([batch.n, batch.height, batch.width, batch.images.length, batch.labels.length], [2, 16, 16, 2 * 16 * 16 * 3, 2 * 16 * 16]);
  for (const [slot, index] of [2, 0].entries()) {
    const px = await decodeImage(data.samples[index]!.image);
    const lab = await readLabelPng(data.samples[index]!.annotation);
    const one = segTrainSample({ ...px, channels: 3 }, lab, 4, 2, index, opts);
    t.deepEqual(Array.from(batch.labels.subarray(slot * 256, (slot + 1) * 256)), Array.from(one.labels));
    t.deepEqual(Array.from(batch.images.subarray(slot * 768, (slot + 1) * 768)), Array.from(one.image));
  }
  // The same sample in another batch, position or call: the same pixels.
  const again = await loadSegBatch(data, [0], { ...opts, train: true });
  t.deepEqual(Array.from(again.labels), Array.from(batch.labels.subarray(256)));

  const evalBatch = await loadSegBatch(data, [0, 1, 2], { ...opts, train: false });
  t.deepEqual([evalBatch.n, evalBatch.height, evalBatch.width], [3, 22, 20]);
  for (const [n, [w, h]] of sizes.entries()) {
    const { label } = handImage(w, h);
    for (let y = 0; y < 22; y++) {
      for (let x = 0; x < 20; x++) {
        const v = evalBatch.labels[(n * 22 + y) * 20 + x];
        if (x < w && y < h) t.is(v, label.data[y * w + x]);
        else {
          t.is(v, 0);
          const o = ((n * 22 + y) * 20 + x) * 3;
          t.deepEqual(Array.from(evalBatch.images.subarray(o, o + 3)), [0, 0, 0]);
        }
      }
    }
  }

  // An annotation with a value above the class count, or of another size, is named when it is loaded.
  await writeFile(path.join(dir, 'annotations', 'training', 's1.png'), encodeGrayPng(new Array(16 * 22).fill(10), 16, 22, 8));
  await t.throwsAsync(loadSegBatch(data, [1], { ...opts, train: true }), { instanceOf: UserError, message: /s1\.png: value 10 at pixel \(0, 0\) is above the class count \(9 classes/ });
  await writeFile(path.join(dir, 'annotations', 'training', 's1.png'), encodeGrayPng(new Array(16 * 21).fill(1), 16, 21, 8));
  await t.throwsAsync(loadSegBatch(data, [1], { ...opts, train: false }), { instanceOf: UserError, message: /s1\.png: the annotation is 16x21 but its image is 16x22/ });
});

test('loadSegBatch reads images in file order, as their annotations are stored: an EXIF orientation tag does not rotate the image away from its labels', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'zoo-seg-exif-'));
  try {
    for (const split of ['training', 'validation']) {
      await mkdir(path.join(dir, 'images', split), { recursive: true });
      await mkdir(path.join(dir, 'annotations', split), { recursive: true });
    }
    // Left half black, right half white; the annotation marks the right half as class 2.
    const [w, h] = [8, 4];
    const rgb = new Uint8Array(w * h * 3);
    const lab = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (x >= w / 2) (rgb.fill(255, (y * w + x) * 3, (y * w + x) * 3 + 3), (lab[y * w + x] = 2));
    for (const split of ['training', 'validation']) {
      // Orientation 3 is a 180-degree rotation: an orientation-applying decoder would swap the halves.
      await sharp(Buffer.from(rgb), { raw: { width: w, height: h, channels: 3 } }).withMetadata({ orientation: 3 }).png().toFile(path.join(dir, 'images', split, 'a.png'));
      await writeFile(path.join(dir, 'annotations', split, 'a.png'), encodeGrayPng(lab, w, h, 8));
    }
    await writeFile(path.join(dir, 'classes.txt'), 'one\ntwo\n');
    const data = await readAde(dir, { split: 'validation', verify: true });
    const b = await loadSegBatch(data, [0], { ...NORM, train: false, seed: 0, epoch: 0 });
    t.true(close(unnormalize(b.images[0]!, 0), 0, 1), 'top-left stays black');
    t.true(close(unnormalize(b.images[(w - 1) * 3]!, 0), 255, 1), 'top-right stays white');
    t.is(b.labels[w - 1], 2);
    // The image as a user views it (predict) is rotated: decodeImage applies the tag by default.
    const viewed = await decodeImage(data.samples[0]!.image);
    t.is(viewed.data[0], 255);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
