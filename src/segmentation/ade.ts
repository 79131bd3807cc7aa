/**
 * Scene-parsing data in the ADE20K challenge layout (ADEChallengeData2016):
 *
 *   ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...
 *   ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...
 *   ADEChallengeData2016/annotations/training/ADE_train_00000001.png ...   one per image, same stem
 *   ADEChallengeData2016/annotations/validation/...
 *   ADEChallengeData2016/classes.txt            optional: the data's own class list, line i = label value i
 *
 * `readAde` takes ADEChallengeData2016 itself, a folder holding it, or any folder with images/<split> and
 * annotations/<split> (a data set of one's own in the same layout, with its own classes.txt). Annotations
 * are single-channel PNGs of label values (png.ts): 0 = unlabeled (ignored by the loss and the metrics),
 * v in 1..K = class index v - 1 of the class list; without a classes.txt the list is ADE20K's 150 classes.
 *
 * Images and annotations pair by file stem: an image without its annotation, or an annotation without its
 * image, is a UserError naming it, as is a missing folder, an annotation that is not a PNG, or a bad class
 * list. With `verify`, every annotation is decoded and checked (single channel, no value above the class
 * count, the size of its image's header), and every image's header read; without it the files are only
 * listed, and `checkLabels` is what the batch loader applies to each annotation it reads.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { IMAGE_EXTENSIONS, probeImage } from '../data/image_folder.js';
import { UserError } from '../errors.js';
import { checkClassList, mapLimit, parseClassList } from '../detection/voc.js';
import { readLabelPng, type LabelImage } from './png.js';

/**
 * The 150 classes of the ADE20K scene-parsing benchmark (objectInfo150.txt, the first name of each row), in
 * label order: 'wall' is value 1, 'flag' value 150.
 */
// prettier-ignore
export const ADE20K_CLASSES: readonly string[] = Object.freeze([
  'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet', 'sidewalk',
  'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water', 'painting', 'sofa',
  'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp',
  'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter', 'sand',
  'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs', 'runway', 'case', 'pool table',
  'pillow', 'screen door', 'stairway', 'river', 'bridge', 'bookcase', 'blind', 'coffee table', 'toilet', 'flower',
  'book', 'hill', 'bench', 'countertop', 'stove', 'palm', 'kitchen island', 'computer', 'swivel chair', 'boat',
  'bar', 'arcade machine', 'hovel', 'bus', 'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight',
  'booth', 'television receiver', 'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator',
  'ottoman', 'bottle', 'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer',
  'plaything', 'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle',
  'oven', 'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake',
  'dishwasher', 'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
  'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag',

]);

/** Name of the optional class list at the data root: one class name a line, line i = label value i. */
export const SEG_CLASS_LIST_FILE = 'classes.txt';

/** The folder of the challenge's release, looked for inside the folder given. */
export const ADE_ROOT_NAME = 'ADEChallengeData2016';

/** The splits of the layout. */
export const ADE_SPLITS = ['training', 'validation'] as const;
export type AdeSplit = (typeof ADE_SPLITS)[number];

/** The largest class count a label PNG can hold (16-bit values). */
export const MAX_SEG_CLASSES = 65535;

/** One image and its annotation. */
export interface SegSample {
  /** The file stem both share. */
  id: string;
  /** Paths of the image and of its annotation (absolute). */
  image: string;
  annotation: string;
  /** The image's size, when it was read (`verify`). */
  width?: number;
  height?: number;
}

/** What `readAde` read. */
export interface SegDataset {
  /** The data root (absolute): the folder holding images/ and annotations/. */
  root: string;
  split: AdeSplit;
  /** Class index i is label value i + 1. */
  classes: readonly string[];
  /** Sorted by id. */
  samples: SegSample[];
}

/** Options of `readAde`. */
export interface ReadAdeOptions {
  /** Default 'training'. */
  split?: AdeSplit;
  /** The class list. Default: classes.txt at the data root if there is one, else ADE20K's 150 classes. */
  classes?: readonly string[];
  /** Decode every annotation and read every image header, checking them (module comment). Default false. */
  verify?: boolean;
  /** Files checked at once with `verify`. Default 4. */
  concurrency?: number;
  /**
   * false: the samples are the annotations, images/ need not exist (evaluating prediction PNGs, which
   * needs no image); a sample's `image` is then the path its image would have, with the annotation's stem.
   * Default true.
   */
  requireImages?: boolean;
}

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Where the data is: its absolute path, and the path as the user would type it, for messages. */
export interface AdeLayout {
  dir: string;
  label: string;
}

/**
 * Finds the data root under `root`: `root` itself when it holds images/ or annotations/, else
 * `root/ADEChallengeData2016`. A UserError says what was expected otherwise.
 */
export async function locateAde(root: string): Promise<AdeLayout> {
  const abs = path.resolve(root);
  const expected = `expected images/ and annotations/ in it (images/training/*.jpg, annotations/training/*.png), or ${ADE_ROOT_NAME}/`;
  if (!(await isDir(abs))) {
    const exists = await stat(abs).then(
      () => true,
      () => false,
    );
    throw new UserError(`${root}: ${exists ? 'not a directory' : 'no such directory'} (${expected})`);
  }
  const holds = async (d: string) => (await isDir(path.join(d, 'images'))) || (await isDir(path.join(d, 'annotations')));
  if (await holds(abs)) return { dir: abs, label: root };
  const inner = path.join(abs, ADE_ROOT_NAME);
  if (await holds(inner)) return { dir: inner, label: path.join(root, ADE_ROOT_NAME) };
  throw new UserError(`${root} is not an ADE20K-layout folder: ${expected}`);
}

async function splitFolder(layout: AdeLayout, kind: 'images' | 'annotations', split: AdeSplit): Promise<string> {
  const parent = path.join(layout.dir, kind);
  const parentLabel = path.join(layout.label, kind);
  if (!(await isDir(parent))) throw new UserError(`${parentLabel} is missing (an ADE20K-layout folder holds images/<split> and annotations/<split>)`);
  const dir = path.join(parent, split);
  if (!(await isDir(dir))) {
    const have = (await readdir(parent, { withFileTypes: true }).catch(() => []))
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => e.name)
      .sort(byCodeUnits);
    throw new UserError(`${path.join(parentLabel, split)} is missing; ${parentLabel} has ${have.length > 0 ? have.join(', ') : 'no split folders'}`);
  }
  return dir;
}

/** The regular, non-hidden files of a folder (links followed), sorted. */
async function filesOf(dir: string, label: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((e: Error) => {
    throw new UserError(`cannot list ${label}: ${e.message}`);
  });
  const names: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    if (e.isFile() || (e.isSymbolicLink() && (await stat(path.join(dir, e.name)).then((s) => s.isFile(), () => false)))) names.push(e.name);
  }
  return names.sort(byCodeUnits);
}

function stem(name: string): string {
  const ext = path.extname(name);
  return ext === '' ? name : name.slice(0, -ext.length);
}

/** The class list: the option, else classes.txt at the data root, else ADE20K's. */
async function resolveClasses(layout: AdeLayout, given: readonly string[] | undefined): Promise<readonly string[]> {
  let classes: readonly string[];
  let where: string;
  if (given) {
    where = 'the class list given';
    classes = checkClassList(given, where);
  } else {
    where = path.join(layout.label, SEG_CLASS_LIST_FILE);
    const text = await readFile(path.join(layout.dir, SEG_CLASS_LIST_FILE), 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw new UserError(`cannot read ${where}: ${e.message}`);
    });
    if (text === undefined) return ADE20K_CLASSES;
    classes = parseClassList(text, where);
  }
  if (classes.length > MAX_SEG_CLASSES) throw new UserError(`${where}: ${classes.length} classes; label PNGs hold at most ${MAX_SEG_CLASSES}`);
  return classes;
}

/**
 * Checks a decoded annotation: no value above `numClasses` (0 is unlabeled, 1..K the classes) and, when
 * `expected` is given, the image's size. A UserError naming `file`, the value and its first pixel otherwise.
 */
export function checkLabels(label: LabelImage, numClasses: number, file: string, expected?: { width: number; height: number }): void {
  if (expected && (label.width !== expected.width || label.height !== expected.height)) {
    throw new UserError(`${file}: the annotation is ${label.width}x${label.height} but its image is ${expected.width}x${expected.height}`);
  }
  const data = label.data;
  for (let i = 0; i < data.length; i++) {
    if (data[i]! > numClasses) {
      const x = i % label.width;
      const y = Math.floor(i / label.width);
      throw new UserError(`${file}: value ${data[i]} at pixel (${x}, ${y}) is above the class count (${numClasses} classes: values 0 to ${numClasses})`);
    }
  }
}

/** Reads a split (module comment). Samples are sorted by id. */
export async function readAde(root: string, options: ReadAdeOptions = {}): Promise<SegDataset> {
  const split = options.split ?? 'training';
  if (!(ADE_SPLITS as readonly string[]).includes(split)) throw new UserError(`'${split}' is not a split of the ADE20K layout (${ADE_SPLITS.join(' or ')})`, { exitCode: 2 });
  const layout = await locateAde(root);
  if (options.requireImages === false) {
    const annDir = await splitFolder(layout, 'annotations', split);
    const classes = await resolveClasses(layout, options.classes);
    const annLabel = path.join(layout.label, 'annotations', split);
    const names = (await filesOf(annDir, annLabel)).filter((n) => path.extname(n).toLowerCase() === '.png');
    if (names.length === 0) throw new UserError(`${annLabel} has no annotations (*.png)`);
    const samples = names.map((n) => ({ id: stem(n), image: path.join(layout.dir, 'images', split, n), annotation: path.join(annDir, n) }));
    return { root: layout.dir, split, classes, samples };
  }
  const imageDir = await splitFolder(layout, 'images', split);
  const annDir = await splitFolder(layout, 'annotations', split);
  const imageLabel = path.join(layout.label, 'images', split);
  const annLabel = path.join(layout.label, 'annotations', split);
  const classes = await resolveClasses(layout, options.classes);

  const images = new Map<string, string>();
  for (const name of await filesOf(imageDir, imageLabel)) {
    if (!IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase())) continue;
    const id = stem(name);
    const other = images.get(id);
    if (other !== undefined) throw new UserError(`${path.join(imageLabel, name)} and ${path.join(imageLabel, other)} share the stem '${id}'; an image's stem names its annotation`);
    images.set(id, name);
  }
  if (images.size === 0) throw new UserError(`${imageLabel} has no images (${IMAGE_EXTENSIONS.join(', ')})`);
  const annotations = new Map<string, string>();
  for (const name of await filesOf(annDir, annLabel)) {
    if (path.extname(name).toLowerCase() !== '.png') {
      throw new UserError(`${path.join(annLabel, name)} is not a PNG; annotations are single-channel PNGs of label values`);
    }
    annotations.set(stem(name), name);
  }
  for (const [id, name] of annotations) {
    if (!images.has(id)) throw new UserError(`${path.join(annLabel, name)} has no image: ${imageLabel} has no '${id}' (${IMAGE_EXTENSIONS.join(', ')})`);
  }
  const ids = [...images.keys()].sort(byCodeUnits);
  const samples: SegSample[] = ids.map((id) => {
    const ann = annotations.get(id);
    if (ann === undefined) throw new UserError(`${path.join(annLabel, `${id}.png`)} is missing (the annotation of ${path.join(imageLabel, images.get(id)!)})`);
    return { id, image: path.join(imageDir, images.get(id)!), annotation: path.join(annDir, ann) };
  });

  if (options.verify) {
    const concurrency = options.concurrency ?? 4;
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new UserError(`concurrency must be a positive whole number, got ${concurrency}`, { exitCode: 2 });
    await mapLimit(samples, concurrency, async (s) => {
      const annFile = path.join(annLabel, path.basename(s.annotation));
      const [label, header] = await Promise.all([readLabelPng(annFile), probeImage(path.join(imageLabel, path.basename(s.image)))]);
      checkLabels(label, classes.length, annFile, header);
      s.width = header.width;
      s.height = header.height;
    });
  }
  return { root: layout.dir, split, classes, samples };
}
