/**
 * Image folder data sets in the ImageNet layout:
 *
 *   <root>/train/<class>/*.{jpg,jpeg,png,webp}
 *   <root>/val/<class>/*.{jpg,jpeg,png,webp}
 *
 * or class folders directly under <root> (a train/ folder that holds images and no folders is a class
 * folder, of a class named "train"), split into train and validation by a fraction, per class and
 * deterministically from a seed. Classes are sorted by name (code-unit order, like Python's `sorted` in
 * torchvision's ImageFolder), so label i means the same class on every machine; files likewise.
 *
 * Decoding uses sharp (libvips): EXIF orientation applied, alpha dropped, grayscale and CMYK converted to
 * sRGB, 16-bit reduced to 8-bit.
 *
 * Only regular files (or symbolic links to them) are taken as images: a FIFO, socket or device with an
 * image's name would block the reader forever or stream without end, so it is refused by name, both when
 * the folder is listed and when a file is opened.
 */
import { constants as fsConstants, existsSync, statSync, type Dirent, type Stats } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { Rng } from '../util/random.js';
import type { ImageDataset } from './dataset.js';
import type { Image } from './transforms.js';

/** File extensions taken as images (lower case; matching ignores case). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp'];

/** Options of `openImageFolder`. */
export interface ImageFolderOptions {
  /**
   * Fraction of each class's training images held out for validation. Required for a root that holds class
   * folders directly; with a train/ folder it replaces val/ (the split then comes from train/ only).
   */
  valFraction?: number;
  /** Seed of the validation split. Default 0. */
  seed?: number;
}

/** How the folder was laid out. */
export type FolderLayout = 'train-val' | 'classes';

/** The train and validation splits of an image folder, sharing one class list. */
export interface ImageFolder {
  root: string;
  layout: FolderLayout;
  classes: readonly string[];
  train: ImageDataset;
  val: ImageDataset;
}

interface ClassFiles {
  name: string;
  dir: string;
  files: string[];
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isImageName(name: string): boolean {
  return !name.startsWith('.') && IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

/** What a file that is not a regular file is, for messages. */
function fileKind(s: Stats | Dirent): string {
  if (s.isFIFO()) return 'a FIFO';
  if (s.isSocket()) return 'a socket';
  if (s.isCharacterDevice() || s.isBlockDevice()) return 'a device';
  if (s.isDirectory()) return 'a directory';
  if (s.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

function notRegular(file: string, s: Stats | Dirent): UserError {
  return new UserError(`${file} is ${fileKind(s)}, not an image file: image folders take regular files (or links to them) only`);
}

/** The image files of a class folder (sorted); an image-named entry that is not a regular file is an error. */
async function scanImages(classDir: string): Promise<string[]> {
  const entries = (await readdir(classDir, { withFileTypes: true })).filter((e) => isImageName(e.name));
  const files: string[] = [];
  for (const e of entries) {
    const file = path.join(classDir, e.name);
    if (!e.isFile()) {
      // A link is followed (data sets are often trees of links); what it points to must be a regular file.
      const target = e.isSymbolicLink() ? await stat(file).catch(() => undefined) : undefined;
      if (e.isSymbolicLink() && !target) throw new UserError(`${file} is a broken symbolic link`);
      if (!target?.isFile()) throw notRegular(file, target ?? e);
    }
    files.push(file);
  }
  return files.sort(byCodeUnits);
}

/** The folder of resource forks that macOS's zip adds beside the zipped folders (its files are `._<name>`). */
const MACOS_ZIP_FOLDER = '__MACOSX';

/** The class folders of `dir` (sorted, hidden ones and `__MACOSX` skipped) with their image files (sorted). */
async function scanClasses(dir: string): Promise<ClassFiles[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries
    .filter((e) => !e.name.startsWith('.') && e.name !== MACOS_ZIP_FOLDER && (e.isDirectory() || (e.isSymbolicLink() && isDir(path.join(dir, e.name)))))
    .map((e) => e.name)
    .sort(byCodeUnits);
  const classes: ClassFiles[] = [];
  for (const name of names) {
    const classDir = path.join(dir, name);
    const files = await scanImages(classDir);
    if (files.length === 0) {
      throw new UserError(`class folder ${classDir} has no images (${IMAGE_EXTENSIONS.join(', ')})`);
    }
    classes.push({ name, dir: classDir, files });
  }
  return classes;
}

/**
 * Whether `dir` holds images and no folders: a class folder (a class named "train", as in a set of
 * vehicles), not the train/ split of the ImageNet layout.
 */
async function isClassFolder(dir: string): Promise<boolean> {
  const entries = (await readdir(dir, { withFileTypes: true })).filter((e) => !e.name.startsWith('.'));
  const folder = (e: Dirent) => e.isDirectory() || (e.isSymbolicLink() && isDir(path.join(dir, e.name)));
  return entries.some((e) => isImageName(e.name) && !folder(e)) && !entries.some(folder);
}

function requireClasses(classes: ClassFiles[], dir: string, root: string): void {
  if (classes.length === 0) {
    throw new UserError(
      `no class folders in ${dir}: expected ${path.join(root, 'train', '<class>', '*.jpg')} (and val/) or ${path.join(root, '<class>', '*.jpg')}`,
    );
  }
}

function dataset(name: string, classes: readonly string[], items: { file: string; label: number }[]): ImageDataset {
  return {
    name,
    classes,
    labels: Int32Array.from(items, (it) => it.label),
    source: { kind: 'files', files: items.map((it) => it.file) },
  };
}

/**
 * Splits each class's files into train and validation: a seeded shuffle per class, then the first
 * round(n * fraction) files (at least one when n >= 2, never all) go to validation. Both splits keep the
 * sorted file order.
 */
export function splitByFraction(
  classes: readonly { files: readonly string[] }[],
  fraction: number,
  seed: number,
): { train: { file: string; label: number }[]; val: { file: string; label: number }[] } {
  if (!(fraction >= 0 && fraction < 1)) throw new UserError(`validation fraction must be in [0, 1), got ${fraction}`);
  const train: { file: string; label: number }[] = [];
  const val: { file: string; label: number }[] = [];
  classes.forEach((c, label) => {
    const n = c.files.length;
    let nVal = Math.round(n * fraction);
    if (fraction > 0 && n >= 2) nVal = Math.min(n - 1, Math.max(1, nVal));
    if (n < 2) nVal = 0;
    const order = Int32Array.from({ length: n }, (_, i) => i);
    new Rng((seed ^ Math.imul(label + 1, 0x9e3779b1)) >>> 0).shuffle(order);
    const isVal = new Uint8Array(n);
    for (let i = 0; i < nVal; i++) isVal[order[i]!] = 1;
    c.files.forEach((file, i) => (isVal[i] ? val : train).push({ file, label }));
  });
  return { train, val };
}

/**
 * Opens an image folder (module comment for the layouts) and returns its train and validation splits.
 * Only lists files: images are decoded later, by the loader's workers.
 */
export async function openImageFolder(root: string, options: ImageFolderOptions = {}): Promise<ImageFolder> {
  if (!existsSync(root)) throw new UserError(`image folder ${root} does not exist`);
  if (!isDir(root)) throw new UserError(`image folder ${root} is not a directory`);
  const seed = options.seed ?? 0;
  const trainDir = path.join(root, 'train');
  const layout: FolderLayout = isDir(trainDir) && !(await isClassFolder(trainDir)) ? 'train-val' : 'classes';
  const base = layout === 'train-val' ? trainDir : root;
  const classes = await scanClasses(base);
  requireClasses(classes, base, root);
  const names = classes.map((c) => c.name);
  if (options.valFraction !== undefined || layout === 'classes') {
    if (options.valFraction === undefined) {
      throw new UserError(`${root} holds class folders directly, with no train/ and val/ folders: give a validation fraction to split it`);
    }
    const { train, val } = splitByFraction(classes, options.valFraction, seed);
    return { root, layout, classes: names, train: dataset(`${root}:train`, names, train), val: dataset(`${root}:val`, names, val) };
  }
  const train = classes.flatMap((c, label) => c.files.map((file) => ({ file, label })));
  return { root, layout, classes: names, train: dataset(`${root}:train`, names, train), val: await scanVal(root, names) };
}

/** The val/ split, labelled with the train/ class list. */
async function scanVal(root: string, names: readonly string[]): Promise<ImageDataset> {
  const valDir = path.join(root, 'val');
  if (!isDir(valDir)) {
    throw new UserError(`${root} has train/ but no val/ folder: add one, or give a validation fraction to split train/`);
  }
  const classes = await scanClasses(valDir);
  requireClasses(classes, valDir, root);
  const index = new Map(names.map((n, i) => [n, i]));
  const items = classes.flatMap((c) => {
    const label = index.get(c.name);
    if (label === undefined) throw new UserError(`validation class folder ${c.dir} has no counterpart in ${path.join(root, 'train')}`);
    return c.files.map((file) => ({ file, label }));
  });
  return dataset(`${root}:val`, names, items);
}

/**
 * Sets libvips's threads per image operation. The loader decodes one image per worker thread, so 1 is
 * right there: parallelism comes from the workers, and on a 2-core machine more threads only contend.
 */
export function configureSharp(options: { threads: number; cache?: boolean }): void {
  sharp.concurrency(options.threads);
  // Each file is decoded once per epoch: libvips's operation cache would only hold memory.
  if (!options.cache) sharp.cache(false);
}

/** One line of an error message (libvips's messages can span several). */
function oneLine(message: string): string {
  return message.replace(/\s+/g, ' ').trim();
}

/**
 * Opens `file` without blocking (a FIFO would block an ordinary open until a writer comes) and checks that
 * it is a regular file; `read` then gets its bytes. A UserError naming the file otherwise.
 */
async function openRegular(file: string): Promise<{ read(): Promise<Buffer>; close(): Promise<void> }> {
  let fh;
  try {
    // O_NONBLOCK does nothing to a regular file; Windows has no FIFOs to block on and no such flag.
    fh = await open(file, fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0));
  } catch (e) {
    throw new UserError(`cannot open image ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw notRegular(file, st);
    if (st.size === 0) throw new UserError(`image ${file} is an empty file`);
  } catch (e) {
    await fh.close();
    throw e;
  }
  const handle = fh;
  return { read: () => handle.readFile(), close: () => handle.close() };
}

/**
 * Decodes an image file to 8-bit sRGB, HWC, 3 channels; a corrupt or unreadable file is a UserError naming it.
 * The EXIF orientation is applied unless `orientation: false` (an image whose pixel labels are stored in
 * file order, as a segmentation annotation's are: PIL and the ADE20K devkit ignore the tag too).
 */
export async function decodeImage(file: string, options: { orientation?: boolean } = {}): Promise<Image<Uint8Array>> {
  const f = await openRegular(file);
  let bytes: Buffer;
  try {
    bytes = await f.read();
  } catch (e) {
    throw new UserError(`cannot read image ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  } finally {
    await f.close();
  }
  try {
    const decoder = sharp(bytes, { failOn: 'error' });
    const { data, info } = await (options.orientation === false ? decoder : decoder.rotate())
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), height: info.height, width: info.width, channels: 3 };
  } catch (e) {
    throw new UserError(`cannot decode image ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  }
}

/**
 * Checks an image file cheaply: a regular, non-empty file whose header sharp reads as an image (format and
 * size). It reads the first kilobytes, not the pixels: a file cut short after its header passes, and only
 * `decodeImage` finds it. A UserError naming the file otherwise.
 */
export async function probeImage(file: string): Promise<{ format: string; width: number; height: number }> {
  const f = await openRegular(file);
  await f.close();
  try {
    const m = await sharp(file).metadata();
    if (!m.width || !m.height) throw new Error('no image size in its header');
    return { format: m.format ?? 'unknown', width: m.width, height: m.height };
  } catch (e) {
    throw new UserError(`cannot read image ${file}: ${oneLine((e as Error).message)}`, { cause: e });
  }
}
