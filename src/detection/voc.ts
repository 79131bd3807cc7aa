/**
 * Pascal VOC detection data in the devkit layout:
 *
 *   VOCdevkit/VOC2007/Annotations/<id>.xml
 *   VOCdevkit/VOC2007/JPEGImages/<id>.jpg
 *   VOCdevkit/VOC2007/ImageSets/Main/<split>.txt      one image id a line
 *   VOCdevkit/VOC2007/classes.txt                      optional: the data's own class list, one a line
 *   VOCdevkit/VOC2012/...                              the same for every year present
 *
 * `readVoc` takes the VOCdevkit directory, one VOC20xx directory (or any directory laid out like one), or a
 * directory holding VOCdevkit/. A split is read from every year that has its file (trainval gives the 07+12
 * union when both years are there; test only VOC2007, whose test set is public), or from the years asked for.
 *
 * Boxes stay as the devkit writes them: 1-based pixel indices, xmax and ymax inclusive (a box covering only
 * pixel 1 is [1, 1, 1, 1]); transform.ts converts them to the model's continuous coordinates. Labels index
 * the class list (0..C-1, no background). Objects marked `difficult` are kept: the VOC metric ignores them,
 * training leaves them out.
 *
 * Annotations are parsed by fast-xml-parser after a well-formedness check, and every field the reader uses is
 * checked: a malformed file is a UserError naming the file, the object and the field
 * ("VOCdevkit/VOC2007/Annotations/000005.xml: object 2 (chair): bndbox.xmax is missing").
 */
import { readFile as readFileCallback, readFileSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { nearMatches, UserError } from '../errors.js';

/** The 20 Pascal VOC classes, in the devkit's order (VOCinit.m). */
export const VOC_CLASSES: readonly string[] = Object.freeze([
  'aeroplane',
  'bicycle',
  'bird',
  'boat',
  'bottle',
  'bus',
  'car',
  'cat',
  'chair',
  'cow',
  'diningtable',
  'dog',
  'horse',
  'motorbike',
  'person',
  'pottedplant',
  'sheep',
  'sofa',
  'train',
  'tvmonitor',
]);

/** Name of the optional class list beside ImageSets/ in a year directory. */
export const CLASS_LIST_FILE = 'classes.txt';

/** One annotated object. */
export interface VocObject {
  /** Index into the data set's class list (0..C-1). */
  label: number;
  name: string;
  /** xmin, ymin, xmax, ymax: devkit 1-based pixel coordinates as in the XML (xmax, ymax inclusive). */
  box: [number, number, number, number];
  difficult: boolean;
  truncated: boolean;
}

/** One image and its objects. */
export interface VocImage {
  /** The id in the split file (the file name without extension). */
  id: string;
  /** The year directory it came from (e.g. 'VOC2007'); ids are unique within a year. */
  year: string;
  /** Absolute path of the JPEG. */
  file: string;
  /** Absolute path of the annotation. */
  annotation: string;
  /** Image size from the annotation's <size>. */
  width: number;
  height: number;
  objects: VocObject[];
}

/** What `readVoc` read. */
export interface VocDataset {
  /** The devkit directory (absolute): the parent of the year directories. */
  root: string;
  /** The split files read, as '<year>/<split>' (e.g. ['VOC2007/trainval', 'VOC2012/trainval']). */
  splits: string[];
  classes: readonly string[];
  images: VocImage[];
}

/** Options of `readVoc`. */
export interface ReadVocOptions {
  /** The split file's name in ImageSets/Main, without '.txt'. Default 'trainval'. */
  split?: string;
  /**
   * Years to read, as '2007' or 'VOC2007' (the year directory's name). Default: every year directory that
   * has the split's file; asking for one without it is an error.
   */
  years?: readonly string[];
  /** The class list. Default: classes.txt beside ImageSets/ if there is one, else the 20 VOC classes. */
  classes?: readonly string[];
  /**
   * Check that every image file exists. Default true; false reads annotations and split files alone (to
   * evaluate result files of another tool without the images).
   */
  requireImages?: boolean;
  /**
   * Annotation files read at once through the thread pool, for network file systems where latency dominates.
   * Default 0: read one after another synchronously, the fastest on a local disk (parsing dominates).
   */
  concurrency?: number;
}

/** A year directory found under the devkit. */
export interface VocYear {
  /** Its name ('VOC2007'). */
  name: string;
  /** Absolute path. */
  dir: string;
  /** The path as the user would type it (the root they gave, joined with the rest), for messages. */
  label: string;
}

/** Where the devkit and its year directories are. */
export interface VocLayout {
  root: string;
  years: VocYear[];
}

/** The parsed content of one annotation file. */
export interface VocAnnotation {
  /** <filename>, when present. */
  filename: string | undefined;
  width: number;
  height: number;
  objects: VocObject[];
}

// ---------------------------------------------------------------------------------------------------------
// Layout

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The year directories under `dir`: subdirectories that hold Annotations/ or ImageSets/. */
async function yearDirs(dir: string, label: string): Promise<VocYear[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const years: VocYear[] = [];
  for (const e of entries.sort((a, b) => byCodeUnits(a.name, b.name))) {
    // Hidden directories are skipped: the generator builds a set in one before renaming it into place.
    if ((!e.isDirectory() && !e.isSymbolicLink()) || e.name.startsWith('.')) continue;
    const sub = path.join(dir, e.name);
    if ((await isDir(path.join(sub, 'Annotations'))) || (await isDir(path.join(sub, 'ImageSets')))) {
      years.push({ name: e.name, dir: sub, label: path.join(label, e.name) });
    }
  }
  return years;
}

/**
 * Finds the devkit under `root`: a year directory itself (Annotations/ inside), a devkit (year directories
 * inside), or a directory holding VOCdevkit/. A UserError says what was expected otherwise.
 */
export async function locateVoc(root: string): Promise<VocLayout> {
  const abs = path.resolve(root);
  if (!(await isDir(abs))) {
    throw new UserError(`${root}: ${(await stat(abs).then(() => true, () => false)) ? 'not a directory' : 'no such directory'} (expected a VOC devkit)`);
  }
  if ((await isDir(path.join(abs, 'Annotations'))) || (await isDir(path.join(abs, 'ImageSets')))) {
    return { root: path.dirname(abs), years: [{ name: path.basename(abs), dir: abs, label: root }] };
  }
  const years = await yearDirs(abs, root);
  if (years.length > 0) return { root: abs, years };
  const devkit = path.join(abs, 'VOCdevkit');
  if (await isDir(devkit)) {
    const inner = await yearDirs(devkit, path.join(root, 'VOCdevkit'));
    if (inner.length > 0) return { root: devkit, years: inner };
  }
  throw new UserError(
    `${root} is not a VOC devkit: expected Annotations/ and ImageSets/ in it, or year directories holding them (VOC2007/, VOC2012/), or VOCdevkit/`,
  );
}

/** A year as the user may write it ('2007', 'VOC2007', 'voc2007') matched against the year directories. */
function pickYears(layout: VocLayout, years: readonly string[], root: string): VocYear[] {
  const picked: VocYear[] = [];
  for (const y of years) {
    const want = /^\d{4}$/.test(y) ? `VOC${y}` : y;
    const found = layout.years.find((d) => d.name === want) ?? layout.years.find((d) => d.name.toLowerCase() === want.toLowerCase());
    if (!found) {
      throw new UserError(`${root}: no year directory '${want}'; there is ${layout.years.map((d) => d.name).join(', ')}`, { exitCode: 2 });
    }
    if (!picked.includes(found)) picked.push(found);
  }
  return picked;
}

/** The names of the image-set files in a year's ImageSets/Main (without '.txt'), leaving out the per-class ones. */
export async function listSplits(year: VocYear, classes: readonly string[] = VOC_CLASSES): Promise<string[]> {
  const entries = await readdir(path.join(year.dir, 'ImageSets', 'Main')).catch(() => [] as string[]);
  return entries
    .filter((f) => f.endsWith('.txt'))
    .map((f) => f.slice(0, -4))
    .filter((s) => !classes.some((c) => s.startsWith(`${c}_`)))
    .sort(byCodeUnits);
}

function splitFile(year: VocYear, split: string): string {
  return path.join(year.dir, 'ImageSets', 'Main', `${split}.txt`);
}

function describeSplits(names: string[]): string {
  return names.length > 0 ? names.join(', ') : 'no split files';
}

/** The years to read `split` from (module comment); a UserError listing the split files there are otherwise. */
async function yearsWithSplit(layout: VocLayout, split: string, years: readonly string[] | undefined, root: string): Promise<VocYear[]> {
  const candidates = years ? pickYears(layout, years, root) : layout.years;
  const have = await Promise.all(candidates.map((y) => isFile(splitFile(y, split))));
  const missing = candidates.filter((_, i) => !have[i]);
  if (years && missing.length > 0) {
    const y = missing[0]!;
    const label = path.join(y.label, 'ImageSets', 'Main', `${split}.txt`);
    throw new UserError(`${label} is missing; ${path.join(y.label, 'ImageSets', 'Main')} has ${describeSplits(await listSplits(y))}`, { exitCode: 2 });
  }
  const present = candidates.filter((_, i) => have[i]);
  if (present.length === 0) {
    const lists = await Promise.all(candidates.map(async (y) => `${y.name} has ${describeSplits(await listSplits(y))}`));
    throw new UserError(`${root}: no split '${split}' (ImageSets/Main/${split}.txt); ${lists.join('; ')}`, { exitCode: 2 });
  }
  return present;
}

// ---------------------------------------------------------------------------------------------------------
// Class lists and split files

/** Checks a class list: non-empty, no empty or duplicate names. `where` names its source in messages. */
export function checkClassList(classes: readonly string[], where: string): readonly string[] {
  if (classes.length === 0) throw new UserError(`${where}: the class list is empty`);
  const seen = new Set<string>();
  for (const c of classes) {
    if (typeof c !== 'string' || c.trim() === '') throw new UserError(`${where}: a class name is empty`);
    if (c !== c.trim()) throw new UserError(`${where}: class name '${c}' has leading or trailing spaces`);
    if (seen.has(c)) throw new UserError(`${where}: class '${c}' is listed twice`);
    seen.add(c);
  }
  return Object.freeze([...classes]);
}

/** Parses a classes.txt: one name a line, surrounding spaces and blank lines ignored. */
export function parseClassList(text: string, label: string): readonly string[] {
  const names = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return checkClassList(names, label);
}

/** The class list of the years read: the option, else their classes.txt (which must agree), else VOC's. */
async function resolveClasses(years: VocYear[], given: readonly string[] | undefined): Promise<{ classes: readonly string[]; source: string }> {
  if (given) return { classes: checkClassList(given, 'the class list given'), source: 'the class list given' };
  const lists: { label: string; classes: readonly string[] }[] = [];
  for (const y of years) {
    const file = path.join(y.dir, CLASS_LIST_FILE);
    const label = path.join(y.label, CLASS_LIST_FILE);
    const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw new UserError(`cannot read ${label}: ${e.message}`);
    });
    if (text !== undefined) lists.push({ label, classes: parseClassList(text, label) });
  }
  if (lists.length === 0) return { classes: VOC_CLASSES, source: 'the 20 VOC classes' };
  const first = lists[0]!;
  const withoutList = years.filter((y) => !lists.some((l) => l.label === path.join(y.label, CLASS_LIST_FILE)));
  if (withoutList.length > 0) {
    throw new UserError(`${first.label} gives a class list but ${path.join(withoutList[0]!.label, CLASS_LIST_FILE)} is missing; years read together need one class list`);
  }
  for (const l of lists.slice(1)) {
    if (l.classes.join('\n') !== first.classes.join('\n')) throw new UserError(`${l.label} differs from ${first.label}; years read together need one class list`);
  }
  return { classes: first.classes, source: first.label };
}

/** The ids of a split file: the first word of every non-blank line (per-class files add a flag after it). */
export function parseSplitFile(text: string, label: string): string[] {
  const ids: string[] = [];
  const lineOf = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const id = lines[i]!.trim().split(/\s+/)[0]!;
    if (id === '') continue;
    if (/[\\/]/.test(id) || id === '.' || id === '..') throw new UserError(`${label}: line ${i + 1}: '${id}' is not an image id (ids name files in Annotations/)`);
    const prev = lineOf.get(id);
    if (prev !== undefined) throw new UserError(`${label}: image '${id}' is listed twice (lines ${prev} and ${i + 1})`);
    lineOf.set(id, i + 1);
    ids.push(id);
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------------------
// Annotations

const parser = new XMLParser({
  ignoreAttributes: true,
  // Numbers are parsed below, strictly, so that "12px" or "0x10" is an error and a class named "007" stays text.
  parseTagValue: false,
  trimValues: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  // No path strings for callbacks (they cost a third of the parse); a single <object> is wrapped below.
  jPath: false,
});

const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

type Node = Record<string, unknown>;

function isNode(v: unknown): v is Node {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

/** Reads field `key` of `node` as text; `where` is its path for messages ("bndbox.xmax"). */
function text(node: Node, key: string, where: string, fail: (msg: string) => never, optional: true): string | undefined;
function text(node: Node, key: string, where: string, fail: (msg: string) => never, optional?: false): string;
function text(node: Node, key: string, where: string, fail: (msg: string) => never, optional = false): string | undefined {
  const v = node[key];
  if (v === undefined || v === '') {
    if (optional) return undefined;
    return fail(`${where} is missing`);
  }
  if (Array.isArray(v)) return fail(`${where} appears ${v.length} times`);
  if (typeof v !== 'string') return fail(`${where} should be a value, not an element with children`);
  return v;
}

function number(node: Node, key: string, where: string, fail: (msg: string) => never): number;
function number(node: Node, key: string, where: string, fail: (msg: string) => never, optional: true): number | undefined;
function number(node: Node, key: string, where: string, fail: (msg: string) => never, optional = false): number | undefined {
  const s = optional ? text(node, key, where, fail, true) : text(node, key, where, fail);
  if (s === undefined) return undefined;
  const v = Number(s);
  if (!NUMBER.test(s) || !Number.isFinite(v)) return fail(`${where} is not a number: '${show(s)}'`);
  return v;
}

function child(node: Node, key: string, where: string, fail: (msg: string) => never): Node {
  const v = node[key];
  if (v === undefined || v === '') return fail(`${where} is missing`);
  if (Array.isArray(v)) return fail(`${where} appears ${v.length} times`);
  if (!isNode(v)) return fail(`${where} should hold ${where === 'size' ? '<width> and <height>' : 'fields'}, got '${show(v)}'`);
  return v;
}

function flag(node: Node, key: string, fail: (msg: string) => never): boolean {
  const v = number(node, key, key, fail, true);
  if (v === undefined) return false;
  if (v !== 0 && v !== 1) return fail(`${key} must be 0 or 1, got ${v}`);
  return v === 1;
}

/** Everything about one class list the annotation parser needs. */
interface ClassIndex {
  classes: readonly string[];
  index: Map<string, number>;
  source: string;
}

function classIndex(classes: readonly string[], source: string): ClassIndex {
  return { classes, index: new Map(classes.map((c, i) => [c, i])), source };
}

function unknownClass(name: string, ci: ClassIndex): string {
  const near = nearMatches(name, ci.classes, 3);
  const hint = near.length > 0 ? ` (did you mean ${near.map((n) => `'${n}'`).join(', ')}?)` : '';
  const list = ci.classes.length <= 20 ? `: ${ci.classes.join(', ')}` : '';
  return `class '${name}' is not in ${ci.source}${hint}${list}`;
}

/**
 * Parses one annotation (XML text). `label` names the file in messages. Checks (module comment): well-formed
 * XML, an <annotation> root, <size> with positive whole <width> and <height>, and for each object a known
 * <name>, a <bndbox> of four numbers with xmin <= xmax and ymin <= ymax, at most a pixel outside the image.
 */
export function parseVocAnnotation(xml: string, label: string, classes: readonly string[] = VOC_CLASSES, source = 'the class list'): VocAnnotation {
  return parseWith(xml, label, classIndex(classes, source));
}

function parseWith(xml: string, label: string, ci: ClassIndex): VocAnnotation {
  const fail = (msg: string): never => {
    throw new UserError(`${label}: ${msg}`);
  };
  const valid = XMLValidator.validate(xml);
  if (valid !== true) fail(`not valid XML (line ${valid.err.line}: ${valid.err.msg})`);
  let doc: unknown;
  try {
    doc = parser.parse(xml);
  } catch (e) {
    fail(`not valid XML (${(e as Error).message})`);
  }
  const root = isNode(doc) ? doc.annotation : undefined;
  if (!isNode(root)) return fail('no <annotation> element');
  const size = child(root, 'size', 'size', fail);
  const width = number(size, 'width', 'size.width', fail);
  const height = number(size, 'height', 'size.height', fail);
  for (const [k, v] of [['width', width], ['height', height]] as const) {
    if (!Number.isInteger(v) || v <= 0) fail(`size.${k} must be a positive whole number, got ${v}`);
  }
  const filename = text(root, 'filename', 'filename', fail, true);
  const raw = root.object === undefined ? [] : Array.isArray(root.object) ? root.object : [root.object];
  const objects = raw.map((o, i) => parseObject(o, i + 1, width, height, ci, label));
  return { filename, width, height, objects };
}

function parseObject(o: unknown, k: number, width: number, height: number, ci: ClassIndex, label: string): VocObject {
  let prefix = `object ${k}`;
  const fail = (msg: string): never => {
    throw new UserError(`${label}: ${prefix}: ${msg}`);
  };
  if (!isNode(o)) return fail(o === '' ? 'empty <object>' : `expected fields, got '${show(o)}'`);
  const name = text(o, 'name', 'name', fail);
  prefix = `object ${k} (${name})`;
  const labelIndex = ci.index.get(name);
  if (labelIndex === undefined) fail(unknownClass(name, ci));
  const bndbox = child(o, 'bndbox', 'bndbox', fail);
  const xmin = number(bndbox, 'xmin', 'bndbox.xmin', fail);
  const ymin = number(bndbox, 'ymin', 'bndbox.ymin', fail);
  const xmax = number(bndbox, 'xmax', 'bndbox.xmax', fail);
  const ymax = number(bndbox, 'ymax', 'bndbox.ymax', fail);
  if (xmax < xmin) fail(`bndbox.xmax (${xmax}) is less than bndbox.xmin (${xmin})`);
  if (ymax < ymin) fail(`bndbox.ymax (${ymax}) is less than bndbox.ymin (${ymin})`);
  // Devkit pixels run from 1 to width; a pixel of slack either side for annotation tools that count from 0.
  const outside = (field: string, v: number, side: string, extent: number) =>
    fail(`bndbox.${field} (${v}) is more than a pixel outside the image (${side} ${extent})`);
  if (xmin < 0) outside('xmin', xmin, 'width', width);
  if (ymin < 0) outside('ymin', ymin, 'height', height);
  if (xmax > width + 1) outside('xmax', xmax, 'width', width);
  if (ymax > height + 1) outside('ymax', ymax, 'height', height);
  return { label: labelIndex!, name, box: [xmin, ymin, xmax, ymax], difficult: flag(o, 'difficult', fail), truncated: flag(o, 'truncated', fail) };
}

// ---------------------------------------------------------------------------------------------------------
// Reading a split

/**
 * Runs `fn` over `items` with at most `limit` calls in flight. After a failure no new call starts; the error
 * thrown is that of the first failing item in `items`' order (every earlier item has been started by then),
 * so the message does not depend on timing.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const errors = new Map<number, unknown>();
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (e) {
        failed = true;
        errors.set(i, e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (errors.size > 0) throw errors.get(Math.min(...errors.keys()));
  return out;
}

interface Job {
  year: VocYear;
  id: string;
  splitLabel: string;
}

/**
 * Reads a small file whole. With `parallel` through libuv's thread pool (the callback API: one read where
 * fs/promises makes several); otherwise synchronously, which for 1-2 KB annotations on a local disk is about
 * four times faster (the cost of a pooled read is mostly its round trips, not the disk).
 */
function readText(file: string, parallel: boolean): Promise<string> {
  if (!parallel) {
    try {
      return Promise.resolve(readFileSync(file, 'utf8'));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }
  return new Promise((resolve, reject) => readFileCallback(file, 'utf8', (e, data) => (e ? reject(e) : resolve(data))));
}

/** The file names in a year's JPEGImages/ (one directory listing instead of a stat per image). */
async function imageNames(year: VocYear): Promise<Set<string>> {
  return new Set(await readdir(path.join(year.dir, 'JPEGImages')).catch(() => [] as string[]));
}

async function readImage(job: Job, ci: ClassIndex, images: Set<string> | undefined, parallel: boolean): Promise<VocImage> {
  const { year, id } = job;
  const annotation = path.join(year.dir, 'Annotations', `${id}.xml`);
  const label = path.join(year.label, 'Annotations', `${id}.xml`);
  const xml = await readText(annotation, parallel).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new UserError(`${label}: annotation is missing (image '${id}' is listed in ${job.splitLabel})`);
    throw new UserError(`${label}: cannot read it: ${e.message}`);
  });
  const ann = parseWith(xml, label, ci);
  let name = `${id}.jpg`;
  if (images && !images.has(name)) {
    // Annotation tools other than the devkit's write the image's own name into <filename>.
    const alt = ann.filename !== undefined && ann.filename !== name && !/[\\/]/.test(ann.filename) ? ann.filename : undefined;
    if (alt !== undefined && images.has(alt)) name = alt;
    else {
      const also = alt !== undefined ? ` (nor ${path.join(year.label, 'JPEGImages', alt)}, its <filename>)` : '';
      throw new UserError(`${label}: image ${path.join(year.label, 'JPEGImages', name)} is missing${also}`);
    }
  }
  const file = path.join(year.dir, 'JPEGImages', name);
  return { id, year: year.name, file, annotation, width: ann.width, height: ann.height, objects: ann.objects };
}

/**
 * Reads a split of a VOC devkit (module comment for the layouts and the checks). Images come in split-file
 * order, year by year (years sorted by name).
 */
export async function readVoc(root: string, options: ReadVocOptions = {}): Promise<VocDataset> {
  const split = options.split ?? 'trainval';
  if (split === '' || /[\\/]/.test(split)) throw new UserError(`'${split}' is not a split name (a file name in ImageSets/Main, without .txt)`, { exitCode: 2 });
  const layout = await locateVoc(root);
  const years = await yearsWithSplit(layout, split, options.years, root);
  const { classes, source } = await resolveClasses(years, options.classes);
  const ci = classIndex(classes, source);
  const jobs: Job[] = [];
  for (const year of years) {
    const splitLabel = path.join(year.label, 'ImageSets', 'Main', `${split}.txt`);
    const txt = await readFile(splitFile(year, split), 'utf8').catch((e: Error) => {
      throw new UserError(`cannot read ${splitLabel}: ${e.message}`);
    });
    for (const id of parseSplitFile(txt, splitLabel)) jobs.push({ year, id, splitLabel });
  }
  const requireImages = options.requireImages ?? true;
  const names = new Map(await Promise.all(years.map(async (y) => [y, requireImages ? await imageNames(y) : undefined] as const)));
  const concurrency = options.concurrency ?? 0;
  if (!Number.isInteger(concurrency) || concurrency < 0) throw new UserError(`concurrency must be a whole number >= 0, got ${concurrency}`, { exitCode: 2 });
  const images = await mapLimit(jobs, Math.max(1, concurrency), (job) => readImage(job, ci, names.get(job.year), concurrency > 0));
  return { root: layout.root, splits: years.map((y) => `${y.name}/${split}`), classes, images };
}
