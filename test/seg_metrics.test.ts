/**
 * The ADE20K benchmark's pixel accuracy and mean IoU against hand-computed cases (ignored pixels,
 * classes absent from an image or from the split, classes predicted but never labeled, accumulation
 * over the split rather than per image), a directory of prediction PNGs (and its errors), the report's
 * two forms, the palette, colourized labels and overlays; and, where python3 with numpy is installed,
 * GluonCV's formulas in numpy on random data.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { UserError } from '../src/errors.js';
import type { SegDataset } from '../src/segmentation/ade.js';
import { writeLabelPng } from '../src/segmentation/png.js';
import {
  SegMetric,
  colorize,
  evaluatePredictionDir,
  formatSegResult,
  palette,
  segResultJson,
  writeOverlay,
  type SegEvalResult,
} from '../src/segmentation/metrics.js';
import { Rng } from '../src/util/random.js';
import { tempDir } from './helpers/fixtures.js';

const evaluate = (classes: readonly string[], pairs: [pred: number[], labels: number[]][]): SegEvalResult => {
  const m = new SegMetric(classes.length);
  for (const [p, l] of pairs) m.add(Uint8Array.from(p), Uint8Array.from(l));
  return m.result(classes);
};

const AB = ['a', 'b'] as const;

test('a perfect prediction: pixAcc 1, every IoU 1, mIoU 1, whatever is predicted on unlabeled pixels', (t) => {
  const r = evaluate(['a', 'b', 'c'], [[[1, 2, 2, 3, 3, 1], [1, 2, 2, 3, 0, 0]]]);
  t.is(r.pixAcc, 1);
  t.is(r.mIoU, 1);
  t.is(r.labeledPixels, 4);
  t.deepEqual(r.classes.a, { iou: 1, pixels: 1, predicted: 1, intersection: 1, union: 1 });
  t.deepEqual(r.classes.b, { iou: 1, pixels: 2, predicted: 2, intersection: 2, union: 2 });
  t.deepEqual(r.classes.c, { iou: 1, pixels: 1, predicted: 1, intersection: 1, union: 1 });
});

test('all wrong: pixAcc 0, every IoU 0, mIoU 0', (t) => {
  const r = evaluate(AB, [[[2, 2, 1, 1], [1, 1, 2, 2]]]);
  t.is(r.pixAcc, 0);
  t.is(r.mIoU, 0);
  // a: labeled 2, predicted 2 (the b pixels), none shared: union 4.
  t.deepEqual(r.classes.a, { iou: 0, pixels: 2, predicted: 2, intersection: 0, union: 4 });
  t.deepEqual(r.classes.b, { iou: 0, pixels: 2, predicted: 2, intersection: 0, union: 4 });
});

test('unlabeled pixels (0) never count, even where a class is predicted on them', (t) => {
  // b is predicted on the two unlabeled pixels only: it adds to no union, so b has union 0 (null).
  const r = evaluate(AB, [[[2, 2, 1, 1], [0, 0, 1, 1]]]);
  t.is(r.labeledPixels, 2);
  t.is(r.pixAcc, 1);
  t.deepEqual(r.classes.a, { iou: 1, pixels: 2, predicted: 2, intersection: 2, union: 2 });
  t.deepEqual(r.classes.b, { iou: null, pixels: 0, predicted: 0, intersection: 0, union: 0 });
  t.is(r.mIoU, 1);
  // An image with no labeled pixel changes nothing.
  const m = new SegMetric(2);
  m.add(Uint8Array.from([2, 2, 1, 1]), Uint8Array.from([0, 0, 1, 1]));
  m.add(Uint8Array.from([1, 2, 1, 2]), Uint8Array.from([0, 0, 0, 0]));
  t.deepEqual(m.result(AB), r);
});

test('a labeled pixel predicted 0 (no class) is wrong and widens only its label class union', (t) => {
  const r = evaluate(AB, [[[0, 1, 2], [1, 1, 2]]]);
  t.is(r.pixAcc, 2 / 3);
  t.deepEqual(r.classes.a, { iou: 1 / 2, pixels: 2, predicted: 1, intersection: 1, union: 2 });
  t.deepEqual(r.classes.b, { iou: 1, pixels: 1, predicted: 1, intersection: 1, union: 1 });
  t.is(r.mIoU, (1 / 2 + 1) / 2);
});

test('IoU is accumulated over the split, not averaged over images: a class absent from one image', (t) => {
  // Image A (only a labeled): a labeled 4, predicted 3, shared 3 (union 4); b predicted once (union 1).
  // Image B (b labeled 3, a once): a labeled 1, predicted 0 (union 1); b labeled 3, predicted 4, shared 3 (union 4).
  // Split: a 3 / (5 + 3 - 3) = 3/5, b 3 / (3 + 5 - 3) = 3/5, mIoU 3/5, pixAcc 6/8.
  const A: [number[], number[]] = [[1, 1, 1, 2], [1, 1, 1, 1]];
  const B: [number[], number[]] = [[2, 2, 2, 2], [2, 2, 2, 1]];
  const r = evaluate(AB, [A, B]);
  t.deepEqual(r.classes.a, { iou: 3 / 5, pixels: 5, predicted: 3, intersection: 3, union: 5 });
  t.deepEqual(r.classes.b, { iou: 3 / 5, pixels: 3, predicted: 5, intersection: 3, union: 5 });
  t.is(r.mIoU, 3 / 5);
  t.is(r.pixAcc, 6 / 8);
  // Per image the means are 3/8 (A: 3/4 and 0) and 3/8 (B: 0 and 3/4): their average, 3/8, is not the split's.
  const perImage = [evaluate(AB, [A]), evaluate(AB, [B])].map((x) => x.mIoU);
  t.deepEqual(perImage, [3 / 8, 3 / 8]);
  t.not((perImage[0]! + perImage[1]!) / 2, r.mIoU);
});

test('a class absent from the whole split has iou null and is left out of the mean', (t) => {
  const r = evaluate(['a', 'b', 'c'], [[[1, 1, 2, 1], [1, 1, 2, 2]]]);
  t.deepEqual(r.classes.c, { iou: null, pixels: 0, predicted: 0, intersection: 0, union: 0 });
  // a: 2 / (2 + 3 - 2) = 2/3; b: 1 / (2 + 1 - 1) = 1/2; the mean of those two only.
  t.is(r.classes.a!.iou, 2 / 3);
  t.is(r.classes.b!.iou, 1 / 2);
  t.is(r.mIoU, (2 / 3 + 1 / 2) / 2);
  t.is(r.pixAcc, 3 / 4);
});

test('a class predicted but never labeled has union > 0 and IoU 0, and counts in the mean', (t) => {
  const r = evaluate(AB, [[[1, 1, 2, 2], [1, 1, 1, 1]]]);
  t.deepEqual(r.classes.a, { iou: 1 / 2, pixels: 4, predicted: 2, intersection: 2, union: 4 });
  t.deepEqual(r.classes.b, { iou: 0, pixels: 0, predicted: 2, intersection: 0, union: 2 });
  t.is(r.mIoU, 1 / 4);
  t.is(r.pixAcc, 1 / 2);
});

test('typed arrays of any integer kind and [N, H, W] batches give the same counts as image by image', (t) => {
  const m1 = new SegMetric(300);
  const m2 = new SegMetric(300);
  const p = [1, 299, 300, 0, 5, 5];
  const l = [1, 300, 300, 7, 0, 5];
  m1.add(Uint16Array.from(p.slice(0, 3)), Uint16Array.from(l.slice(0, 3)));
  m1.add(Int32Array.from(p.slice(3)), Float32Array.from(l.slice(3)));
  m2.add(p, l);
  const names = Array.from({ length: 300 }, (_, i) => `c${i}`);
  t.deepEqual(m1.result(names), m2.result(names));
  t.is(m2.result(names).pixAcc, 3 / 5);
});

test('bad values are UserErrors naming the pixel, and leave the counts as they were', (t) => {
  const m = new SegMetric(2);
  m.add(Uint8Array.from([1, 2]), Uint8Array.from([1, 2]));
  const before = m.result(AB);
  // A prediction above K is refused on an unlabeled pixel too: the file is malformed either way.
  let e = t.throws(() => m.add(Uint8Array.from([1, 1, 3]), Uint8Array.from([1, 1, 0]), { width: 2, predictions: 'p.png' }), { instanceOf: UserError });
  t.regex(e!.message, /^p\.png: value 3 at pixel \(0, 1\) is not a class value \(0\.\.2\)/);
  e = t.throws(() => m.add([1, 1], [1, 9], { labels: 'ann.png' }), { instanceOf: UserError });
  t.regex(e!.message, /ann\.png: value 9 at pixel 1 /);
  t.throws(() => m.add([1.5], [1]), { instanceOf: UserError, message: /value 1\.5/ });
  t.throws(() => m.add([-1], [1]), { instanceOf: UserError, message: /value -1/ });
  t.throws(() => m.add([NaN], [1]), { instanceOf: UserError, message: /value NaN/ });
  t.throws(() => m.add([1, 1], [1]), { instanceOf: UserError, message: /2 pixels/ });
  t.deepEqual(m.result(AB), before);
  t.throws(() => m.result(['a']), { instanceOf: UserError, message: /1 names.*2 classes/ });
  t.throws(() => m.result(['a', 'a']), { instanceOf: UserError, message: /twice/ });
  t.throws(() => new SegMetric(0), { instanceOf: UserError });
});

test('nothing added: pixAcc and mIoU are NaN, null in the JSON form; reset forgets', (t) => {
  const m = new SegMetric(2);
  const empty = m.result(AB);
  t.true(Number.isNaN(empty.pixAcc) && Number.isNaN(empty.mIoU));
  t.deepEqual(segResultJson(empty), { pixAcc: null, mIoU: null, classes: { a: { iou: null }, b: { iou: null } } });
  m.add([1, 2], [1, 1]);
  m.reset();
  t.deepEqual(m.result(AB), empty);
});

test('the JSON form has exactly pixAcc, mIoU and per class iou; the table lists classes in order with pixels and IoU in percent', (t) => {
  const r = evaluate(['wall', 'T-shirt/top', 'sky'], [[[1, 1, 2, 1], [1, 1, 2, 2]]]);
  const json = segResultJson(r);
  t.deepEqual(json, { pixAcc: 3 / 4, mIoU: (2 / 3 + 1 / 2) / 2, classes: { wall: { iou: 2 / 3 }, 'T-shirt/top': { iou: 1 / 2 }, sky: { iou: null } } });
  t.deepEqual(Object.keys(JSON.parse(JSON.stringify(json)) as object), ['pixAcc', 'mIoU', 'classes']);
  const lines = formatSegResult(r).trimEnd().split('\n');
  t.is(lines.length, 1 + 3 + 2);
  t.regex(lines[0]!, /^class\s+pixels\s+IoU$/);
  t.regex(lines[1]!, /^wall\s+2\s+66\.67$/);
  t.regex(lines[2]!, /^T-shirt\/top\s+2\s+50\.00$/);
  t.regex(lines[3]!, /^sky\s+0\s+-$/);
  t.regex(lines[4]!, /^mIoU \(2 of 3 classes\)\s+58\.33$/);
  t.regex(lines[5]!, /^pixAcc \(labeled pixels\)\s+4\s+75\.00$/);
  // Columns line up.
  t.true(lines.every((l) => l.length === lines[0]!.length));
});

// ---- a directory of prediction PNGs ----

async function writeGray(file: string, values: number[], width: number, height: number): Promise<void> {
  await sharp(Buffer.from(Uint8Array.from(values)), { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toFile(file);
}

interface Fixture {
  data: SegDataset;
  predDir: string;
}

/** Two validation images (2x2 and 3x1) with annotations, and a predictions directory for them. */
async function fixture(t: { teardown(fn: () => void): void }): Promise<Fixture> {
  const root = tempDir(t);
  const ann = join(root, 'annotations', 'validation');
  const img = join(root, 'images', 'validation');
  const predDir = join(root, 'pred');
  for (const d of [ann, img, predDir]) mkdirSync(d, { recursive: true });
  await writeGray(join(ann, 'x1.png'), [1, 1, 1, 1], 2, 2);
  await writeGray(join(ann, 'x2.png'), [2, 2, 2], 3, 1);
  await writeGray(join(predDir, 'x1.png'), [1, 1, 1, 2], 2, 2);
  await writeGray(join(predDir, 'x2.png'), [2, 2, 2], 3, 1);
  const samples = ['x1', 'x2'].map((id) => ({ id, image: join(img, `${id}.jpg`), annotation: join(ann, `${id}.png`) }));
  return { data: { root, split: 'validation', classes: ['a', 'b'], samples }, predDir };
}

test('evaluatePredictionDir: reads <id>.png per sample and counts as SegMetric does, other files noted and ignored', async (t) => {
  const { data, predDir } = await fixture(t);
  writeFileSync(join(predDir, 'notes.txt'), 'x');
  await writeGray(join(predDir, 'x3.png'), [1], 1, 1);
  const r = await evaluatePredictionDir(predDir, data);
  // x1: a labeled 4, predicted 3; b predicted once. x2: b labeled 3, predicted 3.
  t.deepEqual(r.classes.a, { iou: 3 / 4, pixels: 4, predicted: 3, intersection: 3, union: 4 });
  t.deepEqual(r.classes.b, { iou: 3 / 4, pixels: 3, predicted: 4, intersection: 3, union: 4 });
  t.is(r.pixAcc, 6 / 7);
  t.deepEqual(r.ignored, ['notes.txt', 'x3.png']);
  t.regex(r.note!, /^2 entries in '.*pred' are not a prediction for the validation images and were ignored: notes\.txt, x3\.png$/);
  const m = new SegMetric(2);
  m.add([1, 1, 1, 2], [1, 1, 1, 1]);
  m.add([2, 2, 2], [2, 2, 2]);
  t.deepEqual({ ...r, ignored: undefined, note: undefined }, { ...m.result(['a', 'b']), ignored: undefined, note: undefined });
});

test('evaluatePredictionDir: nothing ignored, no note', async (t) => {
  const { data, predDir } = await fixture(t);
  const r = await evaluatePredictionDir(predDir, data);
  t.deepEqual(r.ignored, []);
  t.is(r.note, undefined);
});

test('evaluatePredictionDir: a missing prediction is a UserError naming the file', async (t) => {
  const { data, predDir } = await fixture(t);
  await rm(join(predDir, 'x2.png'));
  const e = await t.throwsAsync(evaluatePredictionDir(predDir, data), { instanceOf: UserError });
  t.regex(e!.message, /no prediction '.*pred\/x2\.png' for image 'x2'/);
  await rm(join(predDir, 'x1.png'));
  const e2 = await t.throwsAsync(evaluatePredictionDir(predDir, data), { instanceOf: UserError });
  t.regex(e2!.message, /2 of the 2 predictions are missing from '.*pred', the first '.*x1\.png'/);
  await t.throwsAsync(evaluatePredictionDir(join(predDir, 'nope'), data), { instanceOf: UserError, message: /is not a directory/ });
});

test('evaluatePredictionDir: a prediction of another size is a UserError naming both files and sizes', async (t) => {
  const { data, predDir } = await fixture(t);
  await writeGray(join(predDir, 'x2.png'), [2, 2, 2], 1, 3);
  const e = await t.throwsAsync(evaluatePredictionDir(predDir, data), { instanceOf: UserError });
  t.regex(e!.message, /pred\/x2\.png: the prediction is 1x3, its annotation .*x2\.png is 3x1/);
});

test('evaluatePredictionDir: a value above the class count is a UserError naming the file and pixel', async (t) => {
  const { data, predDir } = await fixture(t);
  await writeGray(join(predDir, 'x1.png'), [1, 1, 1, 3], 2, 2);
  const e = await t.throwsAsync(evaluatePredictionDir(predDir, data), { instanceOf: UserError });
  t.regex(e!.message, /pred\/x1\.png: value 3 at pixel \(1, 1\) is not a class value \(0\.\.2\)/);
});

test('evaluatePredictionDir: an annotation value above the class count is a UserError naming the annotation', async (t) => {
  const { data, predDir } = await fixture(t);
  await writeGray(data.samples[1]!.annotation, [2, 5, 2], 3, 1);
  const e = await t.throwsAsync(evaluatePredictionDir(predDir, data), { instanceOf: UserError });
  t.regex(e!.message, /annotations\/validation\/x2\.png: value 5 at pixel \(1, 0\) is not a label value \(0\.\.2\)/);
});

test('evaluatePredictionDir: 16-bit PNGs of more than 255 classes', async (t) => {
  const root = tempDir(t);
  const ann = join(root, 'annotations', 'validation');
  const predDir = join(root, 'pred');
  const classes = Array.from({ length: 300 }, (_, i) => `c${i + 1}`);
  await writeLabelPng(join(ann, 'a.png'), [0, 1, 299, 300], 2, 2);
  await writeLabelPng(join(predDir, 'a.png'), [300, 1, 300, 300], 2, 2);
  const data: SegDataset = { root, split: 'validation', classes, samples: [{ id: 'a', image: join(root, 'a.jpg'), annotation: join(ann, 'a.png') }] };
  const r = await evaluatePredictionDir(predDir, data);
  t.is(r.pixAcc, 2 / 3);
  t.deepEqual(r.classes.c300, { iou: 1 / 2, pixels: 1, predicted: 2, intersection: 1, union: 2 });
  t.deepEqual(r.classes.c299, { iou: 0, pixels: 1, predicted: 0, intersection: 0, union: 1 });
  t.is(r.mIoU, (1 + 0 + 1 / 2) / 3);
});

// ---- palette, colorize, overlay ----

test('palette: entry 0 black, the VOC colour map (1 dark red, 2 dark green, ...), every entry distinct up to 65535 classes, deterministic', (t) => {
  const p = palette(65535);
  t.is(p.length, 3 * 65536);
  t.deepEqual([...p.subarray(0, 3 * 9)], [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128, 128, 128, 128, 64, 0, 0]);
  const seen = new Set<number>();
  for (let v = 0; v < 65536; v++) seen.add((p[3 * v]! << 16) | (p[3 * v + 1]! << 8) | p[3 * v + 2]!);
  t.is(seen.size, 65536);
  t.deepEqual(palette(150), p.subarray(0, 3 * 151));
  t.deepEqual(palette(150), palette(150));
  t.throws(() => palette(-1), { instanceOf: UserError });
});

test('colorize: each value its palette entry; a value without an entry is a UserError naming the pixel', (t) => {
  const pal = palette(2);
  t.deepEqual([...colorize([0, 1, 2, 1], 2, 2, pal)], [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 0, 0]);
  t.throws(() => colorize([0, 3], 2, 1, pal), { instanceOf: UserError, message: /value 3 at pixel \(1, 0\)/ });
  t.throws(() => colorize([0, 1, 2], 2, 2, pal), { instanceOf: UserError, message: /3 values, expected 2x2/ });
});

async function readPng(file: string): Promise<{ data: number[]; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  return { data: [...data], width: info.width, height: info.height, channels: info.channels };
}

test('writeOverlay: labeled pixels blended with their colour, unlabeled ones the image, exact on a tiny image', async (t) => {
  const dir = tempDir(t);
  const image = { data: Uint8Array.from([10, 20, 30, 100, 50, 200, 0, 255, 7, 255, 255, 255]), width: 2, height: 2 };
  const labels = Uint16Array.from([0, 1, 2, 3]);
  const out = join(dir, 'sub', 'overlay.png');
  await writeOverlay(out, image, labels, 2, 2, palette(3));
  // Colours: 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0); alpha 0.5: round((image + colour) / 2).
  t.deepEqual(await readPng(out), {
    width: 2,
    height: 2,
    channels: 3,
    data: [10, 20, 30, 114, 25, 100, 0, 192, 4, 192, 192, 128],
  });
  // From a file, alpha 0.25: round(0.75 * image + 0.25 * colour).
  const src = join(dir, 'image.png');
  await sharp(Buffer.from(image.data), { raw: { width: 2, height: 2, channels: 3 } }).png().toFile(src);
  await writeOverlay(out, src, labels, 2, 2, palette(3), 0.25);
  t.deepEqual((await readPng(out)).data, [10, 20, 30, 107, 38, 150, 0, 223, 5, 223, 223, 191]);
});

test('writeOverlay: labels of another size, an unreadable image and a bad opacity are UserErrors', async (t) => {
  const dir = tempDir(t);
  const image = { data: new Uint8Array(12), width: 2, height: 2 };
  await t.throwsAsync(writeOverlay(join(dir, 'o.png'), image, [0, 1, 0], 3, 1, palette(1)), { instanceOf: UserError, message: /2x2, its labels 3x1/ });
  writeFileSync(join(dir, 'bad.png'), 'not a png');
  await t.throwsAsync(writeOverlay(join(dir, 'o.png'), join(dir, 'bad.png'), [0, 1, 0, 0], 2, 2, palette(1)), { instanceOf: UserError, message: /bad\.png: not a readable image/ });
  await t.throwsAsync(writeOverlay(join(dir, 'o.png'), join(dir, 'none.png'), [0, 1, 0, 0], 2, 2, palette(1)), { instanceOf: UserError, message: /does not exist/ });
  await t.throwsAsync(writeOverlay(join(dir, 'o.png'), image, [0, 1, 0, 0], 2, 2, palette(1), 1.5), { instanceOf: UserError, message: /opacity 1\.5/ });
});

// ---- GluonCV's formulas in numpy ----

const PYTHON_GLUONCV = String.raw`
import json, sys
import numpy as np
d = json.load(sys.stdin)
K = d['K']
total_correct = 0; total_label = 0; total_inter = 0; total_union = 0
for img in d['images']:
    predict = np.array(img['pred'], dtype='int64')
    target = np.array(img['label'], dtype='int64')
    # batch_pix_accuracy
    total_label += np.sum(target > 0)
    total_correct += np.sum((predict == target) * (target > 0))
    # batch_intersection_union
    predict = predict * (target > 0).astype(predict.dtype)
    intersection = predict * (predict == target)
    area_inter, _ = np.histogram(intersection, bins=K, range=(1, K))
    area_pred, _ = np.histogram(predict, bins=K, range=(1, K))
    area_lab, _ = np.histogram(target, bins=K, range=(1, K))
    total_inter = total_inter + area_inter
    total_union = total_union + area_pred + area_lab - area_inter
pixAcc = 1.0 * total_correct / (np.spacing(1) + total_label)
IoU = 1.0 * total_inter / (np.spacing(1) + total_union)
print(json.dumps({'pixAcc': float(pixAcc), 'inter': [int(v) for v in total_inter], 'union': [int(v) for v in total_union],
                  'iou': [float(v) for v in IoU], 'mIoU': float(IoU.mean())}))
`;

const hasNumpy = spawnSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;

(hasNumpy ? test : test.skip)('cross-check against GluonCV batch_pix_accuracy / batch_intersection_union in numpy on random data', (t) => {
  const rng = new Rng(20240611);
  for (let trial = 0; trial < 8; trial++) {
    const K = [1, 2, 5, 13, 150][trial % 5]!;
    // Skewed labels and mostly right predictions, so that some classes are rare or absent in some trials.
    const images = Array.from({ length: 1 + rng.int(4) }, () => {
      const n = 1 + rng.int(3000);
      const label: number[] = [];
      const pred: number[] = [];
      for (let i = 0; i < n; i++) {
        const l = rng.uniform() < 0.15 ? 0 : 1 + Math.floor(K * rng.uniform() ** 2);
        label.push(l);
        pred.push(rng.uniform() < 0.6 ? l : rng.int(K + 1));
      }
      return { pred, label };
    });
    const py = spawnSync('python3', ['-c', PYTHON_GLUONCV], { input: JSON.stringify({ K, images }), encoding: 'utf8' });
    t.is(py.status, 0, py.stderr);
    const e = JSON.parse(py.stdout) as { pixAcc: number; inter: number[]; union: number[]; iou: number[]; mIoU: number };
    const m = new SegMetric(K);
    for (const img of images) m.add(Uint8Array.from(img.pred), Uint8Array.from(img.label));
    const names = Array.from({ length: K }, (_, i) => `c${i}`);
    const r = m.result(names);
    t.true(Math.abs(r.pixAcc - e.pixAcc) <= 1e-12, `trial ${trial} pixAcc ${r.pixAcc} vs ${e.pixAcc}`);
    names.forEach((name, k) => {
      const c = r.classes[name]!;
      t.is(c.intersection, e.inter[k]!, `trial ${trial} ${name} intersection`);
      t.is(c.union, e.union[k]!, `trial ${trial} ${name} union`);
      // GluonCV's IoU of a class with union 0 is 0 / eps = 0; here it is null.
      if (c.union === 0) t.is(c.iou, null);
      else t.true(Math.abs(c.iou! - e.iou[k]!) <= 1e-12, `trial ${trial} ${name} IoU ${c.iou} vs ${e.iou[k]}`);
    });
    // The means agree whenever every class has a union (the benchmark counts the others as 0).
    if (names.every((name) => r.classes[name]!.union > 0)) t.true(Math.abs(r.mIoU - e.mIoU) <= 1e-12, `trial ${trial} mIoU ${r.mIoU} vs ${e.mIoU}`);
    else {
      const counted = names.filter((name) => r.classes[name]!.union > 0).length;
      t.true(Math.abs(r.mIoU * counted - e.mIoU * K) <= 1e-9, `trial ${trial}: the benchmark mean is ours scaled by ${counted}/${K}`);
    }
  }
});
