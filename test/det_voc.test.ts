import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { decodeImage } from '../src/data/image_folder.js';
import { FASHION_MNIST_CLASSES } from '../src/data/idx.js';
import { loadEmbeddedFashion } from '../src/data/embedded.js';
import {
  collateDetection,
  flipDecision,
  loadDetectionBatch,
  loadDetectionSample,
  prepareDetectionSample,
  resizedShape,
  toDevkitBoxes,
  toModelBoxes,
  type DetectionSample,
} from '../src/detection/transform.js';
import { parseVocAnnotation, readVoc, VOC_CLASSES, type VocImage } from '../src/detection/voc.js';
import { generateVocSet, itemDeck, renderScene, sceneRng, DEFAULT_GENERATE_OPTIONS } from '../src/detection/voc_generate.js';
import { UserError } from '../src/errors.js';
import { IMAGENET_PREPROCESSING } from '../src/predict/preprocessing.js';
import type { Image } from '../src/data/transforms.js';

let tmp = '';

test.before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'zoo-voc-'));
});
test.after.always(async () => {
  await rm(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------
// Hand-written devkit files

interface ObjectSpec {
  name: string;
  box: [number, number, number, number] | Partial<Record<'xmin' | 'ymin' | 'xmax' | 'ymax', string | number>>;
  difficult?: number;
  truncated?: number;
}

function objectXml(o: ObjectSpec): string {
  const b = Array.isArray(o.box) ? { xmin: o.box[0], ymin: o.box[1], xmax: o.box[2], ymax: o.box[3] } : o.box;
  const fields = (['xmin', 'ymin', 'xmax', 'ymax'] as const).filter((k) => b[k] !== undefined).map((k) => `<${k}>${b[k]}</${k}>`);
  return [
    '  <object>',
    `    <name>${o.name}</name>`,
    '    <pose>Left</pose>',
    o.truncated !== undefined ? `    <truncated>${o.truncated}</truncated>` : '',
    o.difficult !== undefined ? `    <difficult>${o.difficult}</difficult>` : '',
    `    <bndbox>${fields.join('')}</bndbox>`,
    '  </object>',
  ].join('\n');
}

function annotationXml(width: number, height: number, objects: ObjectSpec[], filename = 'x.jpg'): string {
  return [
    '<?xml version="1.0"?>',
    '<annotation verified="yes">',
    '  <folder>VOC2007</folder>',
    `  <filename>${filename}</filename>`,
    '  <source><database>The VOC2007 Database</database></source>',
    `  <size><width>${width}</width><height>${height}</height><depth>3</depth></size>`,
    ...objects.map(objectXml),
    '</annotation>',
  ].join('\n');
}

async function writeJpeg(file: string, width: number, height: number, value = 128): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await sharp({ create: { width, height, channels: 3, background: { r: value, g: value, b: value } } }).jpeg().toFile(file);
}

interface ImageSpec {
  id: string;
  width: number;
  height: number;
  objects: ObjectSpec[];
  /** Raw annotation text instead of the generated one. */
  xml?: string;
  /** Write no JPEG. */
  noImage?: boolean;
}

/** Writes one year directory: annotations, JPEGs, split files, and a classes.txt if given. */
async function writeYear(dir: string, images: ImageSpec[], splits: Record<string, string[]>, classes?: string[]): Promise<void> {
  await mkdir(path.join(dir, 'Annotations'), { recursive: true });
  await mkdir(path.join(dir, 'ImageSets', 'Main'), { recursive: true });
  for (const im of images) {
    await writeFile(path.join(dir, 'Annotations', `${im.id}.xml`), im.xml ?? annotationXml(im.width, im.height, im.objects, `${im.id}.jpg`));
    if (!im.noImage) await writeJpeg(path.join(dir, 'JPEGImages', `${im.id}.jpg`), im.width, im.height);
  }
  for (const [name, ids] of Object.entries(splits)) await writeFile(path.join(dir, 'ImageSets', 'Main', `${name}.txt`), ids.map((i) => `${i}\n`).join(''));
  if (classes) await writeFile(path.join(dir, 'classes.txt'), classes.join('\n') + '\n');
}

async function freshDir(name: string): Promise<string> {
  const dir = path.join(tmp, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  return dir;
}

/** A devkit with VOC2007 (trainval, test, and per-class files) and VOC2012 (trainval only). */
async function unionDevkit(): Promise<string> {
  const devkit = path.join(await freshDir('union'), 'VOCdevkit');
  await writeYear(
    path.join(devkit, 'VOC2007'),
    [
      {
        id: '000005',
        width: 500,
        height: 375,
        objects: [
          { name: 'chair', box: [263, 211, 324, 339], difficult: 0, truncated: 0 },
          { name: 'chair', box: [165, 264, 253, 372], difficult: 1, truncated: 1 },
        ],
      },
      { id: '000007', width: 500, height: 333, objects: [{ name: 'car', box: [141, 50, 500, 330], difficult: 0, truncated: 1 }] },
      { id: '000009', width: 500, height: 375, objects: [{ name: 'horse', box: [69, 172, 270, 330] }] },
    ],
    { trainval: ['000005', '000007'], test: ['000009'], chair_trainval: ['000005  1', '000007 -1'] },
  );
  await writeYear(
    path.join(devkit, 'VOC2012'),
    [{ id: '2008_000008', width: 500, height: 442, objects: [{ name: 'person', box: [158.5, 44, 289, 167], truncated: 1 }] }],
    { trainval: ['2008_000008'], train: ['2008_000008'] },
  );
  return devkit;
}

async function userError(t: import('ava').ExecutionContext, p: Promise<unknown> | (() => unknown)): Promise<string> {
  const e = typeof p === 'function' ? t.throws(p as () => unknown, { instanceOf: UserError }) : await t.throwsAsync(p, { instanceOf: UserError });
  return e?.message ?? '';
}

test('readVoc: the 07+12 union of trainval, VOC2007 alone for test, years and every form of root', async (t) => {
  const devkit = await unionDevkit();
  const union = await readVoc(devkit);
  t.deepEqual(union.splits, ['VOC2007/trainval', 'VOC2012/trainval']);
  t.is(union.root, devkit);
  t.is(union.classes, VOC_CLASSES);
  t.deepEqual(
    union.images.map((i) => `${i.year}/${i.id}`),
    ['VOC2007/000005', 'VOC2007/000007', 'VOC2012/2008_000008'],
  );
  const [a, b, c] = union.images as [VocImage, VocImage, VocImage];
  t.deepEqual([a.width, a.height], [500, 375]);
  t.is(a.file, path.join(devkit, 'VOC2007', 'JPEGImages', '000005.jpg'));
  t.deepEqual(a.objects, [
    { label: VOC_CLASSES.indexOf('chair'), name: 'chair', box: [263, 211, 324, 339], difficult: false, truncated: false },
    { label: VOC_CLASSES.indexOf('chair'), name: 'chair', box: [165, 264, 253, 372], difficult: true, truncated: true },
  ]);
  t.deepEqual(b.objects, [{ label: 6, name: 'car', box: [141, 50, 500, 330], difficult: false, truncated: true }]);
  // No <difficult> tag (as in some VOC2012 files): not difficult. Fractional coordinates are kept.
  t.deepEqual(c.objects, [{ label: 14, name: 'person', box: [158.5, 44, 289, 167], difficult: false, truncated: true }]);

  const testSplit = await readVoc(devkit, { split: 'test' });
  t.deepEqual(testSplit.splits, ['VOC2007/test']);
  t.deepEqual(testSplit.images.map((i) => i.id), ['000009']);

  t.deepEqual((await readVoc(devkit, { years: ['2012'] })).splits, ['VOC2012/trainval']);
  t.deepEqual((await readVoc(devkit, { years: ['VOC2007', '2012'] })).images.length, 3);
  // A year directory, or the directory holding VOCdevkit/, as the root.
  const single = await readVoc(path.join(devkit, 'VOC2007'), { split: 'test' });
  t.is(single.root, devkit);
  t.deepEqual(single.splits, ['VOC2007/test']);
  t.deepEqual((await readVoc(path.dirname(devkit))).images.length, 3);
  // A per-class file is a split too (first word of each line).
  t.deepEqual((await readVoc(devkit, { split: 'chair_trainval' })).images.map((i) => i.id), ['000005', '000007']);

  t.is(await userError(t, readVoc(devkit, { years: ['2010'] })), `${devkit}: no year directory 'VOC2010'; there is VOC2007, VOC2012`);
  t.is(
    await userError(t, readVoc(devkit, { split: 'test', years: ['2007', '2012'] })),
    `${path.join(devkit, 'VOC2012', 'ImageSets', 'Main', 'test.txt')} is missing; ${path.join(devkit, 'VOC2012', 'ImageSets', 'Main')} has train, trainval`,
  );
  t.is(
    await userError(t, readVoc(devkit, { split: 'val' })),
    `${devkit}: no split 'val' (ImageSets/Main/val.txt); VOC2007 has test, trainval; VOC2012 has train, trainval`,
  );
  t.is(await userError(t, readVoc(path.join(tmp, 'nowhere'))), `${path.join(tmp, 'nowhere')}: no such directory (expected a VOC devkit)`);
  const empty = await freshDir('empty');
  t.regex(await userError(t, readVoc(empty)), /is not a VOC devkit: expected Annotations\/ and ImageSets\/ in it/);
});

test('parseVocAnnotation: a single <object> is a list of one, numbers are numbers, attributes and other fields ignored', (t) => {
  const xml = annotationXml(353, 500, [{ name: 'dog', box: [48, 240, 195, 371], difficult: 0 }]);
  const a = parseVocAnnotation(xml, 'a.xml');
  t.deepEqual(a, {
    filename: 'x.jpg',
    width: 353,
    height: 500,
    objects: [{ label: VOC_CLASSES.indexOf('dog'), name: 'dog', box: [48, 240, 195, 371], difficult: false, truncated: false }],
  });
  t.is(typeof a.objects[0]!.box[0], 'number');
  // No objects at all is an image without objects; spaces around values are trimmed.
  t.deepEqual(parseVocAnnotation('<annotation><size><width> 10 </width><height>\n20\n</height></size></annotation>', 'b.xml').objects, []);
  // A class name that looks like a number stays the name.
  t.is(parseVocAnnotation(annotationXml(10, 10, [{ name: '007', box: [1, 1, 5, 5] }]), 'c.xml', ['007']).objects[0]!.name, '007');
  // Entities are decoded.
  t.is(parseVocAnnotation(annotationXml(10, 10, [{ name: 'salt &amp; pepper', box: [1, 1, 5, 5] }]), 'd.xml', ['salt & pepper']).objects[0]!.label, 0);
});

test('class lists: classes.txt beside ImageSets, the option over it, an unknown name names file and class', async (t) => {
  const root = await freshDir('classes');
  const year = path.join(root, 'VOC2007');
  await writeYear(
    year,
    [
      { id: 'a', width: 40, height: 30, objects: [{ name: 'Trouser', box: [2, 2, 10, 20] }, { name: 'Ankle boot', box: [12, 3, 30, 20] }] },
      { id: 'b', width: 40, height: 30, objects: [{ name: 'Bag', box: [1, 1, 40, 30] }] },
    ],
    { trainval: ['a', 'b'], only_a: ['a'] },
    [...FASHION_MNIST_CLASSES],
  );
  const d = await readVoc(root);
  t.deepEqual(d.classes, FASHION_MNIST_CLASSES);
  t.deepEqual(d.images[0]!.objects.map((o) => [o.name, o.label]), [['Trouser', 1], ['Ankle boot', 9]]);
  // The option replaces the file's list.
  const o = await readVoc(root, { split: 'only_a', classes: ['Ankle boot', 'Trouser'] });
  t.deepEqual(o.images[0]!.objects.map((x) => x.label), [1, 0]);
  t.is(
    await userError(t, readVoc(root, { classes: ['Ankle boot', 'Trouser'] })),
    `${path.join(root, 'VOC2007', 'Annotations', 'b.xml')}: object 1 (Bag): class 'Bag' is not in the class list given: Ankle boot, Trouser`,
  );
  t.is(
    await userError(t, readVoc(root, { classes: VOC_CLASSES })),
    `${path.join(root, 'VOC2007', 'Annotations', 'a.xml')}: object 1 (Trouser): class 'Trouser' is not in the class list given: ${VOC_CLASSES.join(', ')}`,
  );
  t.regex(await userError(t, readVoc(root, { classes: ['Bag', 'Bag'] })), /class 'Bag' is listed twice/);
  // A misspelling is pointed at its near match, naming the classes.txt in use.
  await writeFile(path.join(year, 'Annotations', 'b.xml'), annotationXml(40, 30, [{ name: 'Bags', box: [1, 1, 40, 30] }]));
  t.is(
    await userError(t, readVoc(root)),
    `${path.join(root, 'VOC2007', 'Annotations', 'b.xml')}: object 1 (Bags): class 'Bags' is not in ${path.join(root, 'VOC2007', 'classes.txt')} (did you mean 'Bag'?): ${FASHION_MNIST_CLASSES.join(', ')}`,
  );
  // Years read together need one list.
  await writeYear(path.join(root, 'VOC2012'), [{ id: 'c', width: 40, height: 30, objects: [{ name: 'Bag', box: [1, 1, 4, 4] }] }], { only_a: ['c'] });
  t.regex(await userError(t, readVoc(root, { split: 'only_a' })), /VOC2012\/classes\.txt is missing; years read together need one class list/);
  await writeFile(path.join(root, 'VOC2012', 'classes.txt'), 'Bag\n');
  t.regex(await userError(t, readVoc(root, { split: 'only_a' })), /VOC2012\/classes\.txt differs from .*VOC2007\/classes\.txt/);
});

const LABEL = 'VOC2007/Annotations/000005.xml';

function chairs(second: ObjectSpec['box'], width = 500, height = 375): string {
  return annotationXml(width, height, [
    { name: 'chair', box: [263, 211, 324, 339] },
    { name: 'chair', box: second },
  ]);
}

test('malformed annotations: each is a UserError naming the file, the object and the field', (t) => {
  const cases: [string, string][] = [
    ['this is not XML', `${LABEL}: not valid XML (line 1: char 't' is not expected.)`],
    ['<annotation><size><width>5</width></size>', `${LABEL}: not valid XML (line 1: Unclosed tag 'annotation'.)`],
    ['<annotation><size><width>5</width></size></annotaton>', `${LABEL}: not valid XML (line 1: Expected closing tag 'annotation' (opened in line 1, col 1) instead of closing tag 'annotaton'.)`],
    ['', `${LABEL}: not valid XML (line 1: Start tag expected.)`],
    ['<voc><size/></voc>', `${LABEL}: no <annotation> element`],
    ['<annotation><filename>a.jpg</filename></annotation>', `${LABEL}: size is missing`],
    ['<annotation><size><height>5</height></size></annotation>', `${LABEL}: size.width is missing`],
    ['<annotation><size><width>5</width></size></annotation>', `${LABEL}: size.height is missing`],
    ['<annotation><size><width>five</width><height>5</height></size></annotation>', `${LABEL}: size.width is not a number: 'five'`],
    ['<annotation><size><width>0</width><height>5</height></size></annotation>', `${LABEL}: size.width must be a positive whole number, got 0`],
    ['<annotation><size><width>5</width><height>5.5</height></size></annotation>', `${LABEL}: size.height must be a positive whole number, got 5.5`],
    [
      annotationXml(500, 375, [{ name: 'chair', box: [1, 1, 2, 2] }]).replace('<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox>', ''),
      `${LABEL}: object 1 (chair): bndbox is missing`,
    ],
    [chairs({ xmin: 165, ymin: 264, ymax: 372 }), `${LABEL}: object 2 (chair): bndbox.xmax is missing`],
    [chairs({ xmin: 165, xmax: 253, ymax: 372 }), `${LABEL}: object 2 (chair): bndbox.ymin is missing`],
    [chairs({ xmin: 165, ymin: 264, xmax: '25x3', ymax: 372 }), `${LABEL}: object 2 (chair): bndbox.xmax is not a number: '25x3'`],
    [chairs({ xmin: '0x10', ymin: 264, xmax: 253, ymax: 372 }), `${LABEL}: object 2 (chair): bndbox.xmin is not a number: '0x10'`],
    [chairs([165, 264, 153, 372]), `${LABEL}: object 2 (chair): bndbox.xmax (153) is less than bndbox.xmin (165)`],
    [chairs([165, 372, 253, 264]), `${LABEL}: object 2 (chair): bndbox.ymax (264) is less than bndbox.ymin (372)`],
    [chairs([165, 264, 502, 372]), `${LABEL}: object 2 (chair): bndbox.xmax (502) is more than a pixel outside the image (width 500)`],
    [chairs([165, 264, 253, 377]), `${LABEL}: object 2 (chair): bndbox.ymax (377) is more than a pixel outside the image (height 375)`],
    [chairs([-1, 264, 253, 372]), `${LABEL}: object 2 (chair): bndbox.xmin (-1) is more than a pixel outside the image (width 500)`],
    [annotationXml(500, 375, [{ name: 'chair', box: [1, 1, 2, 2], difficult: 2 }]), `${LABEL}: object 1 (chair): difficult must be 0 or 1, got 2`],
    [annotationXml(500, 375, [{ name: 'chair', box: [1, 1, 2, 2], truncated: 'yes' as unknown as number }]), `${LABEL}: object 1 (chair): truncated is not a number: 'yes'`],
    ['<annotation><size><width>5</width><height>5</height></size><object><pose>x</pose></object></annotation>', `${LABEL}: object 1: name is missing`],
    ['<annotation><size><width>5</width><height>5</height></size><object/></annotation>', `${LABEL}: object 1: empty <object>`],
    [
      annotationXml(500, 375, [{ name: 'chair', box: [1, 1, 2, 2] }]).replace('</bndbox>', '</bndbox><bndbox><xmin>1</xmin></bndbox>'),
      `${LABEL}: object 1 (chair): bndbox appears 2 times`,
    ],
    [annotationXml(500, 375, [{ name: 'sofa-bed', box: [1, 1, 2, 2] }]), `${LABEL}: object 1 (sofa-bed): class 'sofa-bed' is not in the class list (did you mean 'sofa'?): ${VOC_CLASSES.join(', ')}`],
  ];
  for (const [xml, message] of cases) {
    const e = t.throws(() => parseVocAnnotation(xml, LABEL), { instanceOf: UserError }, message);
    t.is(e?.message, message);
  }
  // At the edge of the image and a pixel over it is accepted (tools that count from 0).
  t.notThrows(() => parseVocAnnotation(chairs([0, 0, 501, 376]), LABEL));
});

test('readVoc names the file for a missing image, a missing annotation, a malformed file and bad split lines', async (t) => {
  const root = await freshDir('broken');
  const year = path.join(root, 'VOCdevkit', 'VOC2007');
  const devkit = path.join(root, 'VOCdevkit');
  const ok = (id: string): ImageSpec => ({ id, width: 50, height: 40, objects: [{ name: 'cat', box: [2, 2, 20, 20] }] });
  await writeYear(
    year,
    [
      ok('000001'),
      { ...ok('000002'), noImage: true },
      { ...ok('000003'), xml: chairs({ xmin: 165, ymin: 264, ymax: 372 }) },
      { ...ok('000004'), xml: 'garbage' },
    ],
    { noimage: ['000001', '000002'], noann: ['000001', '000099'], bad: ['000001', '000003', '000004'], dup: ['000001', '000001'], escape: ['../x'] },
  );
  const ann = (id: string) => path.join(devkit, 'VOC2007', 'Annotations', `${id}.xml`);
  t.is(await userError(t, readVoc(root, { split: 'noimage' })), `${ann('000002')}: image ${path.join(devkit, 'VOC2007', 'JPEGImages', '000002.jpg')} is missing`);
  // Without images (evaluating result files of another tool) the same split reads.
  t.is((await readVoc(root, { split: 'noimage', requireImages: false })).images.length, 2);
  t.is(
    await userError(t, readVoc(root, { split: 'noann' })),
    `${ann('000099')}: annotation is missing (image '000099' is listed in ${path.join(devkit, 'VOC2007', 'ImageSets', 'Main', 'noann.txt')})`,
  );
  // The first bad file in split order is the one reported, however many are read at once.
  for (const concurrency of [0, 1, 8]) {
    t.is(await userError(t, readVoc(root, { split: 'bad', concurrency })), `${ann('000003')}: object 2 (chair): bndbox.xmax is missing`);
  }
  const splitLabel = (s: string) => path.join(devkit, 'VOC2007', 'ImageSets', 'Main', `${s}.txt`);
  t.is(await userError(t, readVoc(root, { split: 'dup' })), `${splitLabel('dup')}: image '000001' is listed twice (lines 1 and 2)`);
  t.is(await userError(t, readVoc(root, { split: 'escape' })), `${splitLabel('escape')}: line 1: '../x' is not an image id (ids name files in Annotations/)`);
  t.is(
    await userError(t, readVoc(root, { split: 'trainval' })),
    `${root}: no split 'trainval' (ImageSets/Main/trainval.txt); VOC2007 has bad, dup, escape, noann, noimage`,
  );
  // An image named by <filename> (annotation tools other than the devkit's) is found.
  await writeFile(path.join(year, 'Annotations', '000005.xml'), annotationXml(50, 40, [], 'photo.png'));
  await sharp({ create: { width: 50, height: 40, channels: 3, background: 'red' } }).png().toFile(path.join(year, 'JPEGImages', 'photo.png'));
  await writeFile(path.join(year, 'ImageSets', 'Main', 'png.txt'), '000005\n');
  t.is((await readVoc(root, { split: 'png' })).images[0]!.file, path.join(year, 'JPEGImages', 'photo.png'));
  await rm(path.join(year, 'JPEGImages', 'photo.png'));
  t.is(
    await userError(t, readVoc(root, { split: 'png' })),
    `${ann('000005')}: image ${path.join(devkit, 'VOC2007', 'JPEGImages', '000005.jpg')} is missing (nor ${path.join(devkit, 'VOC2007', 'JPEGImages', 'photo.png')}, its <filename>)`,
  );
});

// ---------------------------------------------------------------------------------------------------------
// The sample transform

test('resizedShape: short side to minSize, long side at most maxSize, aspect kept, portrait and landscape', (t) => {
  const shape = (h: number, w: number, o = {}) => {
    const s = resizedShape(h, w, o);
    return [s.height, s.width];
  };
  t.deepEqual(shape(375, 500), [600, 800]); // landscape VOC image: 1.6x
  t.deepEqual(shape(500, 375), [800, 600]); // portrait
  t.deepEqual(shape(500, 500), [600, 600]);
  t.deepEqual(shape(300, 700), [429, 1000]); // the long side reaches 1000 first: scale 1000 / 700
  t.deepEqual(shape(700, 300), [1000, 429]);
  t.deepEqual(shape(200, 1000), [200, 1000]); // scale min(3, 1) = 1
  t.deepEqual(shape(1200, 1600), [600, 800]); // shrinking
  t.deepEqual(shape(187, 217, { minSize: 300, maxSize: 500 }), [300, 348]);
  const s = resizedShape(333, 500);
  t.is(s.scale, Math.min(600 / 333, 1000 / 500));
  t.is(s.scaleY, 600 / 333);
  t.is(s.scaleX, 901 / 500);
  t.throws(() => resizedShape(10, 10, { minSize: 600, maxSize: 500 }), { instanceOf: UserError, message: 'maxSize (500) must be at least minSize (600)' });
  t.throws(() => resizedShape(10, 10, { minSize: 0 }), { instanceOf: UserError });
});

/** A gray image, 0..255, with a white rectangle over 0-based columns c0..c1 and rows r0..r1. */
function rectImage(width: number, height: number, [c0, r0, c1, r1]: number[]): Image<Uint8Array> {
  const data = new Uint8Array(width * height * 3).fill(40);
  for (let y = r0!; y <= r1!; y++) for (let x = c0!; x <= c1!; x++) data.fill(255, (y * width + x) * 3, (y * width + x) * 3 + 3);
  return { data, width, height, channels: 3 };
}

function pixel(s: DetectionSample, x: number, y: number): number {
  // Undo the normalization of the red channel.
  const { mean, std } = IMAGENET_PREPROCESSING;
  return (s.image[(y * s.width + x) * 3]! * std[0]! + mean[0]!) * 255;
}

test('the transform: boxes scaled to continuous coordinates, flips exact, labels 1..C, difficult left out', (t) => {
  // The object covers 0-based columns 5..14 and rows 3..9: devkit box [6, 4, 15, 10].
  const pixels = rectImage(40, 30, [5, 3, 14, 9]);
  const image = {
    id: 'r',
    year: 'VOC2007',
    width: 40,
    height: 30,
    objects: [
      { label: 0, name: 'a', box: [6, 4, 15, 10] as [number, number, number, number], difficult: false, truncated: false },
      { label: 2, name: 'c', box: [20, 20, 40, 30] as [number, number, number, number], difficult: true, truncated: false },
    ],
  };
  // At scale 1 the pixels are untouched: the box must cover exactly the white pixels, flipped or not.
  for (const flip of [false, true]) {
    const s = prepareDetectionSample(pixels, image, { minSize: 30, maxSize: 100, flip });
    t.deepEqual([s.height, s.width, s.scaleX, s.scaleY, s.flipped], [30, 40, 1, 1, flip]);
    const expected = flip ? [40 - 15, 3, 40 - 5, 10] : [5, 3, 15, 10];
    t.deepEqual(Array.from(s.boxes), expected);
    t.deepEqual(Array.from(s.labels), [1]);
    t.deepEqual(Array.from(s.difficult), [0]);
    const [x1, y1, x2, y2] = expected as [number, number, number, number];
    for (let y = 0; y < 30; y++) {
      for (let x = 0; x < 40; x++) {
        const inside = x >= x1 && x < x2 && y >= y1 && y < y2;
        if (Math.abs(pixel(s, x, y) - (inside ? 255 : 40)) > 1e-3) {
          t.fail(`flip ${flip}: pixel (${x}, ${y}) is ${pixel(s, x, y)}, expected ${inside ? 255 : 40}`);
          return;
        }
      }
    }
  }
  // Scale 2: x1 = (xmin - 1) * 2, x2 = xmax * 2; flipped about the resized width (80).
  const s2 = prepareDetectionSample(pixels, image, { minSize: 60, maxSize: 1000, flip: true, keepDifficult: true });
  t.deepEqual([s2.height, s2.width], [60, 80]);
  t.deepEqual(Array.from(s2.boxes), [80 - 30, 6, 80 - 10, 20, 80 - 80, 38, 80 - 38, 60]);
  t.deepEqual(Array.from(s2.labels), [1, 3]);
  t.deepEqual(Array.from(s2.difficult), [0, 1]);
  // The white region after resizing sits inside the flipped box (the filter blurs one pixel at the edges).
  t.true(pixel(s2, 51, 7) > 250 && pixel(s2, 68, 18) > 250);
  t.true(pixel(s2, 47, 12) < 45 && pixel(s2, 72, 12) < 45 && pixel(s2, 60, 3) < 45 && pixel(s2, 60, 22) < 45);
  // Back to the devkit: the inverse of the mapping, flip undone.
  t.deepEqual(Array.from(toDevkitBoxes(s2.boxes, s2)), [6, 4, 15, 10, 20, 20, 40, 30]);
  const g = { scaleX: 901 / 500, scaleY: 600 / 333, width: 901, flipped: true };
  const round = toDevkitBoxes(toModelBoxes([{ box: [48.5, 240, 195, 331] }], g), g);
  Array.from(round).forEach((v, i) => t.true(Math.abs(v - [48.5, 240, 195, 331][i]!) < 1e-4));
  // Normalization: ImageNet's mean and std by default, a preprocessing's when given.
  const s3 = prepareDetectionSample(pixels, image, { minSize: 30, preprocessing: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.25, 0.5] } });
  t.true(Math.abs(s3.image[0]! - (40 / 255 - 0.5) / 0.5) < 1e-6);
  t.true(Math.abs(s3.image[1]! - (40 / 255 - 0.5) / 0.25) < 1e-6);
  t.true(Math.abs(prepareDetectionSample(pixels, image, { minSize: 30 }).image[2]! - (40 / 255 - 0.406) / 0.225) < 1e-5);
  // The annotation's size must be the image's.
  t.throws(() => prepareDetectionSample(pixels, { ...image, width: 41, file: 'x.jpg' }), {
    instanceOf: UserError,
    message: 'x.jpg: the image is 40x30 but its annotation says 41x30',
  });
});

test('collateDetection pads at the bottom and right with 0 and keeps each image size', (t) => {
  const image = (w: number, h: number) => ({ id: `${w}`, year: 'VOC2007', width: w, height: h, objects: [] });
  const a = prepareDetectionSample(rectImage(20, 10, [0, 0, 19, 9]), image(20, 10), { minSize: 10, maxSize: 100 });
  const b = prepareDetectionSample(rectImage(12, 16, [0, 0, 11, 15]), image(12, 16), { minSize: 12, maxSize: 100 });
  const batch = collateDetection([a, b]);
  t.deepEqual([batch.count, batch.height, batch.width], [2, 16, 20]);
  t.deepEqual(batch.targets.map((x) => [x.height, x.width]), [[10, 20], [16, 12]]);
  t.false('image' in batch.targets[0]!);
  const at = (n: number, y: number, x: number) => batch.images[((n * 16 + y) * 20 + x) * 3]!;
  t.is(at(0, 9, 19), a.image[(9 * 20 + 19) * 3]!);
  t.is(at(0, 10, 0), 0);
  t.is(at(1, 15, 11), b.image[(15 * 12 + 11) * 3]!);
  t.is(at(1, 15, 12), 0);
  t.is(at(1, 0, 19), 0);
  t.not(at(1, 0, 0), 0);
  const d = collateDetection([a, b], { sizeDivisor: 32 });
  t.deepEqual([d.height, d.width], [32, 32]);
  t.throws(() => collateDetection([]), { instanceOf: UserError });
});

test('flipDecision is a function of (seed, epoch, index), about half true', (t) => {
  const draws = Array.from({ length: 2000 }, (_, i) => flipDecision(7, 3, i));
  t.deepEqual(draws, Array.from({ length: 2000 }, (_, i) => flipDecision(7, 3, i)));
  const share = draws.filter(Boolean).length / draws.length;
  t.true(share > 0.45 && share < 0.55, `${share}`);
  t.notDeepEqual(draws, Array.from({ length: 2000 }, (_, i) => flipDecision(7, 4, i)));
  t.notDeepEqual(draws, Array.from({ length: 2000 }, (_, i) => flipDecision(8, 3, i)));
  t.false(flipDecision(7, 3, 0, 0));
  t.true(flipDecision(7, 3, 0, 1));
});

// ---------------------------------------------------------------------------------------------------------
// The generator

const SMALL = { trainImages: 24, testImages: 8, seed: 3 };

async function filesUnder(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(path.relative(dir, p), await readFile(p));
    }
  };
  await walk(dir);
  return out;
}

test('generateVocSet: a VOC-layout set the reader takes, disjoint splits, boxes inside the images', async (t) => {
  const dir = await freshDir('gen');
  const g = await generateVocSet(dir, SMALL);
  t.is(g.root, path.join(dir, 'VOCdevkit'));
  t.false(g.reused);
  t.deepEqual([g.counts.trainval, g.counts.train + g.counts.val, g.counts.val, g.counts.test], [24, 24, 5, 8]);
  const splits: Record<string, string[]> = {};
  for (const s of ['train', 'val', 'trainval', 'test']) {
    const d = await readVoc(dir, { split: s });
    t.deepEqual(d.classes, FASHION_MNIST_CLASSES);
    splits[s] = d.images.map((i) => i.id);
    for (const im of d.images) {
      t.true(im.width >= 160 && im.width <= 256 && im.height >= 160 && im.height <= 256);
      t.true(im.objects.length >= 1 && im.objects.length <= 4);
      const decoded = await decodeImage(im.file);
      t.deepEqual([decoded.width, decoded.height], [im.width, im.height]);
      for (const o of im.objects) {
        const [x0, y0, x1, y1] = o.box;
        t.true(x0 >= 1 && y0 >= 1 && x1 <= im.width && y1 <= im.height && x0 <= x1 && y0 <= y1, `${im.id} ${o.box}`);
        t.true(Number.isInteger(x0) && Number.isInteger(y1));
        t.false(o.difficult);
      }
    }
  }
  t.deepEqual([...splits.train!, ...splits.val!].sort(), splits.trainval);
  t.false(splits.train!.some((id) => splits.val!.includes(id)));
  t.false(splits.test!.some((id) => splits.trainval!.includes(id)));
  t.is(splits.test!.length, 8);
  t.deepEqual((await readFile(path.join(g.yearDir, 'classes.txt'), 'utf8')).trim().split('\n'), [...FASHION_MNIST_CLASSES]);
  // Every sample goes through the transform.
  const d = await readVoc(dir, { split: 'train' });
  const batch = await loadDetectionBatch(d.images, [0, 1, 2], { minSize: 300, maxSize: 500, flipProbability: 0.5, seed: 1 });
  t.is(batch.count, 3);
  for (const target of batch.targets) {
    t.true(target.height === 300 || target.width === 300 || target.height === 500 || target.width === 500);
    t.true(target.boxes.every((v, i) => v >= 0 && v <= (i % 2 === 0 ? target.width : target.height)));
  }
  const one = await loadDetectionSample(d.images[1]!, { minSize: 300, maxSize: 500, flip: flipDecision(1, 0, 1) });
  t.deepEqual(Array.from(one.boxes), Array.from(batch.targets[1]!.boxes));
});

test('generateVocSet: scenes come from their Fashion-MNIST split, boxes tight around the painted pixels', async (t) => {
  const dir = await freshDir('gen-tight');
  const g = await generateVocSet(dir, SMALL);
  const fashion = await loadEmbeddedFashion();
  // The trainval scenes re-render from the training items, the test scenes from the test items.
  for (const [split, images, first] of [['trainval', fashion.train, 1], ['test', fashion.test, 25]] as const) {
    const deck = itemDeck(SMALL.seed, split, images.count);
    const count = split === 'trainval' ? SMALL.trainImages : SMALL.testImages;
    for (let i = 0; i < count; i++) {
      const scene = renderScene(sceneRng(SMALL.seed, split, i), images, deck, { ...DEFAULT_GENERATE_OPTIONS });
      const id = String(first + i).padStart(6, '0');
      const ann = parseVocAnnotation(await readFile(path.join(g.yearDir, 'Annotations', `${id}.xml`), 'utf8'), id, FASHION_MNIST_CLASSES);
      t.deepEqual(ann.objects.map((o) => [o.label, ...o.box]), scene.objects.map((o) => [o.label, ...o.box]));
      t.deepEqual(scene.objects.map((o) => o.label), scene.objects.map((o) => images.labels[o.item]!));
      // The JPEG holds the rendered pixels (up to compression: pixel noise and stripes are hard on 4:2:0 JPEG).
      const jpeg = await decodeImage(path.join(g.yearDir, 'JPEGImages', `${id}.jpg`));
      let diff = 0;
      for (let k = 0; k < jpeg.data.length; k++) diff += Math.abs(jpeg.data[k]! - scene.pixels[k]!);
      t.true(diff / jpeg.data.length < 16, `${id}: mean difference ${diff / jpeg.data.length}`);
    }
  }
  // Tightness: the box is the extent of the item's painted pixels, and that is the extent of the item's own
  // non-zero pixels scaled to its size, not its square.
  const deck = itemDeck(11, 'trainval', fashion.train.count);
  let narrower = 0;
  for (let i = 0; i < 40; i++) {
    const scene = renderScene(sceneRng(11, 'trainval', i), fashion.train, deck, { ...DEFAULT_GENERATE_OPTIONS });
    const boxes = scene.objects.map((o) => o.box);
    for (const o of scene.objects) {
      let ext = [Infinity, Infinity, -Infinity, -Infinity];
      for (let y = 0; y < o.size; y++) {
        for (let x = 0; x < o.size; x++) {
          if (o.alpha[y * o.size + x]! > 0) ext = [Math.min(ext[0]!, x), Math.min(ext[1]!, y), Math.max(ext[2]!, x), Math.max(ext[3]!, y)];
        }
      }
      t.deepEqual(o.box, [o.x + ext[0]! + 1, o.y + ext[1]! + 1, o.x + ext[2]! + 1, o.y + ext[3]! + 1]);
      let src = [28, 28, -1, -1];
      const item = fashion.train.images.subarray(o.item * 784, (o.item + 1) * 784);
      for (let y = 0; y < 28; y++) {
        for (let x = 0; x < 28; x++) if (item[y * 28 + x]! > 12) src = [Math.min(src[0]!, x), Math.min(src[1]!, y), Math.max(src[2]!, x + 1), Math.max(src[3]!, y + 1)];
      }
      const f = o.size / 28;
      const want = [o.x + src[0]! * f + 1, o.y + src[1]! * f + 1, o.x + src[2]! * f, o.y + src[3]! * f];
      o.box.forEach((v, k) => t.true(Math.abs(v - want[k]!) <= f + 1.5, `box ${o.box} vs ${want}`));
      if (o.box[2] - o.box[0] + 1 < 0.8 * o.size) narrower++;
      t.true(o.box[0] >= 1 && o.box[2] <= scene.width && o.box[1] >= 1 && o.box[3] <= scene.height);
    }
    // Little overlap: any two boxes share at most 10% of the smaller.
    for (let a = 0; a < boxes.length; a++) {
      for (let b = a + 1; b < boxes.length; b++) {
        const [p, q] = [boxes[a]!, boxes[b]!];
        const iw = Math.max(0, Math.min(p[2], q[2]) - Math.max(p[0], q[0]) + 1);
        const ih = Math.max(0, Math.min(p[3], q[3]) - Math.max(p[1], q[1]) + 1);
        const area = (r: number[]) => (r[2]! - r[0]! + 1) * (r[3]! - r[1]! + 1);
        t.true(iw * ih <= 0.1 * Math.min(area(p), area(q)));
      }
    }
  }
  t.true(narrower > 10, `${narrower} boxes narrower than their square`);
});

test('generateVocSet: deterministic for a seed, atomic, and careful with what is already there', async (t) => {
  const a = await freshDir('det-a');
  const b = await freshDir('det-b');
  await generateVocSet(a, SMALL);
  await generateVocSet(b, SMALL);
  const fa = await filesUnder(path.join(a, 'VOCdevkit'));
  const fb = await filesUnder(path.join(b, 'VOCdevkit'));
  t.deepEqual([...fa.keys()].sort(), [...fb.keys()].sort());
  t.is(fa.size, 32 * 2 + 4 + 1 + 1);
  for (const [k, v] of fa) t.true(v.equals(fb.get(k)!), k);

  const c = await freshDir('det-c');
  await generateVocSet(c, { ...SMALL, seed: 4 });
  const fc = await filesUnder(path.join(c, 'VOCdevkit'));
  t.false(fc.get(path.join('VOC2007', 'Annotations', '000001.xml'))!.equals(fa.get(path.join('VOC2007', 'Annotations', '000001.xml'))!));

  // An existing set: an error by default, reused with the same options, replaced on request.
  t.regex(await userError(t, generateVocSet(a, SMALL)), /VOCdevkit already exists/);
  t.true((await generateVocSet(a, { ...SMALL, ifExists: 'reuse' })).reused);
  t.regex(await userError(t, generateVocSet(a, { ...SMALL, seed: 9, ifExists: 'reuse' })), /was generated with other options/);
  const over = await generateVocSet(a, { ...SMALL, trainImages: 10, ifExists: 'overwrite' });
  t.is(over.counts.trainval, 10);
  t.is((await readVoc(a, { split: 'trainval' })).images.length, 10);
  t.deepEqual((await readdir(a)).sort(), ['VOCdevkit']);
  // A devkit not made by the generator is never reused or replaced.
  const real = await unionDevkit();
  t.regex(await userError(t, generateVocSet(path.dirname(real), { ...SMALL, ifExists: 'overwrite' })), /was not made by zoo's generator; refusing to replace it/);
  t.truthy(await stat(path.join(real, 'VOC2012')));

  // What an interrupted run leaves (a hidden partial directory of a process that is gone) is not a set to the
  // reader, and the next run clears it.
  const d = await freshDir('det-d');
  const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
  const partial = path.join(d, `.VOCdevkit-partial-${gone}-00ff00ff`);
  await writeYear(path.join(partial, 'VOC2007'), [{ id: '1', width: 10, height: 10, objects: [] }], { trainval: ['1'] });
  t.regex(await userError(t, readVoc(d)), /is not a VOC devkit/);
  await generateVocSet(d, SMALL);
  t.deepEqual(await readdir(d), ['VOCdevkit']);
  t.regex(await userError(t, generateVocSet(d, { ...SMALL, minItem: 2 })), /minItem must be an integer from 8/);
});
