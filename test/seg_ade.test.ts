import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { UserError } from '../src/errors.js';
import { ADE20K_CLASSES, checkLabels, readAde, SEG_CLASS_LIST_FILE } from '../src/segmentation/ade.js';
import { encodeGrayPng, readLabelPng, writeLabelPng } from '../src/segmentation/png.js';

let tmp = '';
let counter = 0;

test.before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'zoo-ade-'));
});
test.after.always(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function freshDir(name: string): Promise<string> {
  const d = path.join(tmp, `${name}-${counter++}`);
  await mkdir(d, { recursive: true });
  return d;
}

async function userError(t: ExecutionContext, p: Promise<unknown>): Promise<string> {
  const e = await t.throwsAsync(p);
  t.true(e instanceof UserError, `${e?.name}: ${e?.message}`);
  t.false(/\n/.test(e!.message), 'one line');
  return e!.message;
}

async function writeJpeg(file: string, width: number, height: number): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await sharp({ create: { width, height, channels: 3, background: { r: 90, g: 120, b: 150 } } }).jpeg().toFile(file);
}

async function writeGray(file: string, values: ArrayLike<number>, width: number, height: number): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, encodeGrayPng(values, width, height, 8));
}

// A PNG of any bit depth and color type, for the formats zoo never writes (low bit depths, gray + alpha).
function crc32(bytes: Uint8Array): number {
  let c = -1;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return (c ^ -1) >>> 0;
}
function rawPng(width: number, height: number, bits: number, colorType: number, rows: number[][]): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, 'latin1');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
    return Buffer.concat([head, data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bits;
  ihdr[9] = colorType;
  const raw = Buffer.concat(rows.map((r) => Buffer.from([0, ...r])));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

interface SampleSpec {
  id: string;
  width?: number;
  height?: number;
  /** Annotation values (default: all 1). */
  labels?: number[];
  /** Annotation size when it differs from the image's. */
  annWidth?: number;
  annHeight?: number;
  noImage?: boolean;
  noAnnotation?: boolean;
}

/** Writes an ADE-layout split under `root`. */
async function writeSplit(root: string, split: string, samples: SampleSpec[]): Promise<void> {
  await mkdir(path.join(root, 'images', split), { recursive: true });
  await mkdir(path.join(root, 'annotations', split), { recursive: true });
  for (const s of samples) {
    const w = s.width ?? 6;
    const h = s.height ?? 4;
    if (!s.noImage) await writeJpeg(path.join(root, 'images', split, `${s.id}.jpg`), w, h);
    if (!s.noAnnotation) {
      const aw = s.annWidth ?? w;
      const ah = s.annHeight ?? h;
      await writeGray(path.join(root, 'annotations', split, `${s.id}.png`), s.labels ?? new Array(aw * ah).fill(1), aw, ah);
    }
  }
}

test('ADE20K_CLASSES: the 150 names of objectInfo150 in label order', (t) => {
  t.is(ADE20K_CLASSES.length, 150);
  t.is(new Set(ADE20K_CLASSES).size, 150);
  t.deepEqual(ADE20K_CLASSES.slice(0, 8), ['wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed']);
  t.is(ADE20K_CLASSES[12], 'person');
  t.is(ADE20K_CLASSES[44], 'chest of drawers');
  t.is(ADE20K_CLASSES[89], 'television receiver');
  t.deepEqual(ADE20K_CLASSES.slice(-3), ['glass', 'clock', 'flag']);
  t.true(ADE20K_CLASSES.every((c) => c === c.trim() && c !== ''));
  t.true(Object.isFrozen(ADE20K_CLASSES));
});

test('label PNGs: 8-bit and 16-bit round trips are exact; low bit depths give their stored values', async (t) => {
  const dir = await freshDir('png');
  const small = Array.from({ length: 12 }, (_, i) => (i * 23) % 256);
  await writeLabelPng(path.join(dir, 'a.png'), small, 4, 3);
  const a = await readLabelPng(path.join(dir, 'a.png'));
  t.deepEqual([a.width, a.height], [4, 3]);
  t.true(a.data instanceof Uint8Array);
  t.deepEqual(Array.from(a.data), small);
  const meta = await sharp(path.join(dir, 'a.png')).metadata();
  t.deepEqual([meta.channels, meta.bitsPerSample, meta.isPalette], [1, 8, false]);

  const wide = [0, 1, 255, 256, 300, 1000, 40000, 65535];
  await writeLabelPng(path.join(dir, 'b.png'), Uint16Array.from(wide), 2, 4);
  const b = await readLabelPng(path.join(dir, 'b.png'));
  t.true(b.data instanceof Uint16Array);
  t.deepEqual([b.width, b.height], [2, 4]);
  t.deepEqual(Array.from(b.data), wide);
  t.is((await sharp(path.join(dir, 'b.png')).metadata()).bitsPerSample, 16);

  // 2-bit grayscale, 4 pixels a row packed in one byte: values 0..3, not libvips's rescaled 0..255.
  await writeFile(path.join(dir, 'c.png'), rawPng(4, 2, 2, 0, [[0b00011011], [0b11100100]]));
  t.deepEqual(Array.from((await readLabelPng(path.join(dir, 'c.png'))).data), [0, 1, 2, 3, 3, 2, 1, 0]);

  t.regex(await userError(t, writeLabelPng(path.join(dir, 'd.png'), [1, 2, 70000], 3, 1)), /d\.png: label 70000 at pixel \(2, 0\)/);
  t.regex(await userError(t, writeLabelPng(path.join(dir, 'd.png'), [1, 2], 3, 1)), /d\.png: 2 labels for a 3x1 map/);
});

test('label PNGs: palette, RGB, gray+alpha, JPEG, empty, truncated and missing files are UserErrors naming the file', async (t) => {
  const dir = await freshDir('png-bad');
  const raw = Buffer.from(Array.from({ length: 12 }, (_, i) => i * 20));
  const f = (n: string) => path.join(dir, n);
  await sharp(raw, { raw: { width: 4, height: 3, channels: 1 } }).png({ palette: true }).toFile(f('palette.png'));
  t.regex(await userError(t, readLabelPng(f('palette.png'))), /palette\.png is a palette PNG: decoding gives its colors, not its indices/);
  await sharp(Buffer.alloc(36, 7), { raw: { width: 4, height: 3, channels: 3 } }).png().toFile(f('rgb.png'));
  t.regex(await userError(t, readLabelPng(f('rgb.png'))), /rgb\.png has RGB channels; a label map is a single-channel/);
  await sharp(Buffer.alloc(48, 7), { raw: { width: 4, height: 3, channels: 4 } }).png().toFile(f('rgba.png'));
  t.regex(await userError(t, readLabelPng(f('rgba.png'))), /rgba\.png has RGBA channels/);
  await writeFile(f('ga.png'), rawPng(2, 1, 8, 4, [[5, 255, 6, 255]]));
  t.regex(await userError(t, readLabelPng(f('ga.png'))), /ga\.png has gray and alpha channels/);
  await sharp(Buffer.alloc(36, 7), { raw: { width: 4, height: 3, channels: 3 } }).jpeg().toFile(f('jpeg.png'));
  t.regex(await userError(t, readLabelPng(f('jpeg.png'))), /jpeg\.png is not a PNG \(it is jpeg\)/);
  await writeFile(f('empty.png'), '');
  t.regex(await userError(t, readLabelPng(f('empty.png'))), /annotation .*empty\.png is an empty file/);
  const good = encodeGrayPng(new Array(400).fill(3), 20, 20, 8);
  await writeFile(f('cut.png'), good.subarray(0, good.length - 20));
  t.regex(await userError(t, readLabelPng(f('cut.png'))), /cannot decode annotation .*cut\.png/);
  await writeFile(f('junk.png'), 'not an image at all');
  t.regex(await userError(t, readLabelPng(f('junk.png'))), /cannot decode annotation .*junk\.png/);
  t.regex(await userError(t, readLabelPng(f('missing.png'))), /cannot open annotation .*missing\.png/);
  t.regex(await userError(t, readLabelPng(dir)), /is not a regular file/);
});

test('readAde: the layout itself or a folder holding ADEChallengeData2016, pairs sorted by stem, the class list', async (t) => {
  const outer = await freshDir('good');
  const root = path.join(outer, 'ADEChallengeData2016');
  await writeSplit(root, 'training', [{ id: 'ADE_train_00000002' }, { id: 'ADE_train_00000001', width: 8, height: 5 }, { id: 'ADE_train_00000010' }]);
  await writeSplit(root, 'validation', [{ id: 'ADE_val_00000001' }]);
  // Hidden files and other files beside the images are not samples.
  await writeFile(path.join(root, 'images', 'training', '.DS_Store'), 'x');
  await writeFile(path.join(root, 'images', 'training', 'README.txt'), 'x');
  await writeFile(path.join(root, 'annotations', 'training', '.hidden.png'), 'x');
  for (const r of [outer, root]) {
    const d = await readAde(r);
    t.is(d.root, root);
    t.is(d.split, 'training');
    t.is(d.classes, ADE20K_CLASSES);
    t.deepEqual(d.samples.map((s) => s.id), ['ADE_train_00000001', 'ADE_train_00000002', 'ADE_train_00000010']);
    t.is(d.samples[0]!.image, path.join(root, 'images', 'training', 'ADE_train_00000001.jpg'));
    t.is(d.samples[0]!.annotation, path.join(root, 'annotations', 'training', 'ADE_train_00000001.png'));
    t.is(d.samples[0]!.width, undefined);
  }
  const v = await readAde(outer, { split: 'validation', verify: true });
  t.deepEqual(v.samples.map((s) => [s.id, s.width, s.height]), [['ADE_val_00000001', 6, 4]]);
  const verified = await readAde(root, { verify: true });
  t.deepEqual(verified.samples.map((s) => [s.width, s.height]), [[8, 5], [6, 4], [6, 4]]);

  // A folder of one's own: any name, its own classes.txt (value i = line i), the option over it.
  const own = await freshDir('own');
  await writeSplit(own, 'training', [{ id: 'x', labels: new Array(24).fill(0).map((_, i) => i % 3) }]);
  await writeFile(path.join(own, SEG_CLASS_LIST_FILE), 'road\n  car  \n\nperson\n');
  t.deepEqual((await readAde(own, { verify: true })).classes, ['road', 'car', 'person']);
  t.deepEqual((await readAde(own, { classes: ['a', 'b'] })).classes, ['a', 'b']);
  // Value 2 with a class list of one is out of range, named with its file and pixel.
  const msg = await userError(t, readAde(own, { classes: ['a'], verify: true }));
  t.is(msg, `${path.join(own, 'annotations', 'training', 'x.png')}: value 2 at pixel (2, 0) is above the class count (1 classes: values 0 to 1)`);
});

test('readAde: missing folders, unpaired files, duplicate stems, non-PNG annotations and bad class lists name the file', async (t) => {
  const d = await freshDir('bad');
  t.regex(await userError(t, readAde(path.join(d, 'nope'))), /nope: no such directory \(expected images\/ and annotations\//);
  await writeFile(path.join(d, 'file'), 'x');
  t.regex(await userError(t, readAde(path.join(d, 'file'))), /file: not a directory/);
  t.regex(await userError(t, readAde(d)), /is not an ADE20K-layout folder: expected images\/ and annotations\/ in it.*or ADEChallengeData2016\//);

  const noAnn = path.join(d, 'no-ann');
  await writeJpeg(path.join(noAnn, 'images', 'training', 'a.jpg'), 4, 4);
  t.is(await userError(t, readAde(noAnn)), `${path.join(noAnn, 'annotations')} is missing (an ADE20K-layout folder holds images/<split> and annotations/<split>)`);
  await mkdir(path.join(noAnn, 'annotations', 'training'), { recursive: true });
  t.is(await userError(t, readAde(noAnn, { split: 'validation' })), `${path.join(noAnn, 'images', 'validation')} is missing; ${path.join(noAnn, 'images')} has training`);
  t.is(
    await userError(t, readAde(noAnn)),
    `${path.join(noAnn, 'annotations', 'training', 'a.png')} is missing (the annotation of ${path.join(noAnn, 'images', 'training', 'a.jpg')})`,
  );
  t.regex(await userError(t, readAde(noAnn, { split: 'test' as 'training' })), /'test' is not a split of the ADE20K layout \(training or validation\)/);

  const noImage = await freshDir('no-image');
  await writeSplit(noImage, 'training', [{ id: 'a' }, { id: 'b', noImage: true }]);
  t.is(await userError(t, readAde(noImage)), `${path.join(noImage, 'annotations', 'training', 'b.png')} has no image: ${path.join(noImage, 'images', 'training')} has no 'b' (.jpg, .jpeg, .png, .webp)`);

  const empty = await freshDir('empty');
  await writeSplit(empty, 'training', []);
  t.regex(await userError(t, readAde(empty)), /images\/training has no images/);

  const dup = await freshDir('dup');
  await writeSplit(dup, 'training', [{ id: 'a' }]);
  await writeGray(path.join(dup, 'images', 'training', 'a.png'), [0, 0, 0, 0], 2, 2);
  t.regex(await userError(t, readAde(dup)), /images\/training\/a\.png and .*images\/training\/a\.jpg share the stem 'a'/);

  const jpegAnn = await freshDir('jpeg-ann');
  await writeSplit(jpegAnn, 'training', [{ id: 'a', noAnnotation: true }]);
  await writeJpeg(path.join(jpegAnn, 'annotations', 'training', 'a.jpg'), 6, 4);
  t.is(await userError(t, readAde(jpegAnn)), `${path.join(jpegAnn, 'annotations', 'training', 'a.jpg')} is not a PNG; annotations are single-channel PNGs of label values`);

  const classes = await freshDir('classes');
  await writeSplit(classes, 'training', [{ id: 'a' }]);
  const list = path.join(classes, SEG_CLASS_LIST_FILE);
  await writeFile(list, '\n  \n');
  t.is(await userError(t, readAde(classes)), `${list}: the class list is empty`);
  await writeFile(list, 'road\ncar\nroad\n');
  t.is(await userError(t, readAde(classes)), `${list}: class 'road' is listed twice`);
  t.regex(await userError(t, readAde(classes, { classes: [] })), /the class list given: the class list is empty/);
});

test('readAde verify: values above the class count, a size unlike the image, a color annotation, an unreadable image', async (t) => {
  const d = await freshDir('verify');
  const ann = (id: string) => path.join(d, 'annotations', 'training', `${id}.png`);
  await writeSplit(d, 'training', [{ id: 'a' }, { id: 'b', labels: [...new Array(13).fill(3), 151, ...new Array(10).fill(0)] }]);
  t.deepEqual((await readAde(d)).samples.map((s) => s.id), ['a', 'b']);
  // Value 151 with ADE20K's 150 classes: the file, the value and the pixel (13 = x 1, y 2 in a 6-wide map).
  t.is(await userError(t, readAde(d, { verify: true })), `${ann('b')}: value 151 at pixel (1, 2) is above the class count (150 classes: values 0 to 150)`);
  t.deepEqual((await readAde(d, { verify: true, classes: Array.from({ length: 151 }, (_, i) => `c${i}`) })).samples.length, 2);

  const size = await freshDir('size');
  await writeSplit(size, 'training', [{ id: 'a', width: 6, height: 4, annWidth: 4, annHeight: 6 }]);
  t.is(await userError(t, readAde(size, { verify: true })), `${path.join(size, 'annotations', 'training', 'a.png')}: the annotation is 4x6 but its image is 6x4`);

  const rgb = await freshDir('rgb');
  await writeSplit(rgb, 'training', [{ id: 'a', noAnnotation: true }]);
  await sharp(Buffer.alloc(72, 1), { raw: { width: 6, height: 4, channels: 3 } }).png().toFile(path.join(rgb, 'annotations', 'training', 'a.png'));
  t.regex(await userError(t, readAde(rgb, { verify: true })), /annotations\/training\/a\.png has RGB channels/);

  const broken = await freshDir('broken');
  await writeSplit(broken, 'training', [{ id: 'a', noImage: true }]);
  await writeFile(path.join(broken, 'images', 'training', 'a.jpg'), 'not a jpeg');
  t.regex(await userError(t, readAde(broken, { verify: true })), /cannot read image .*images\/training\/a\.jpg/);
});

test('checkLabels: the first pixel above the count, the size against the image, 16-bit values', (t) => {
  const label = { width: 3, height: 2, data: Uint8Array.from([0, 1, 2, 2, 5, 4]) };
  t.notThrows(() => checkLabels(label, 5, 'x.png', { width: 3, height: 2 }));
  t.is(checkLabels(label, 5, 'x.png'), undefined);
  t.is(userErrorSync(t, () => checkLabels(label, 3, 'x.png')), 'x.png: value 5 at pixel (1, 1) is above the class count (3 classes: values 0 to 3)');
  t.is(userErrorSync(t, () => checkLabels(label, 5, 'x.png', { width: 2, height: 3 })), 'x.png: the annotation is 3x2 but its image is 2x3');
  const wide = { width: 2, height: 1, data: Uint16Array.from([300, 301]) };
  t.notThrows(() => checkLabels(wide, 301, 'w.png'));
  t.regex(userErrorSync(t, () => checkLabels(wide, 300, 'w.png')), /value 301 at pixel \(1, 0\)/);
});

function userErrorSync(t: ExecutionContext, f: () => unknown): string {
  const e = t.throws(f);
  t.true(e instanceof UserError);
  return e!.message;
}
