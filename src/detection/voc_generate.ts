/**
 * A small detection data set in the VOC devkit layout, made from the embedded Fashion-MNIST items, so that
 * the detection demo and the tests have real JPEG, XML and split files to read, and a backbone pretrained on
 * Fashion-MNIST has something to transfer to.
 *
 *   <dir>/VOCdevkit/VOC2007/JPEGImages/000001.jpg ...
 *   <dir>/VOCdevkit/VOC2007/Annotations/000001.xml ...
 *   <dir>/VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt
 *   <dir>/VOCdevkit/VOC2007/classes.txt          the 10 Fashion-MNIST class names
 *   <dir>/VOCdevkit/zoo-generated.json           the options and counts it was made with
 *
 * Each scene is 160-256 pixels a side (width and height drawn separately) on a textured background (linear
 * gradient, stripes, checkerboard or smooth value noise, with a few flat distractor shapes and pixel noise),
 * with 1-4 items pasted at sizes from 28 to 100 pixels (log-uniform), tinted, blended by their own intensity,
 * and placed so that two boxes share at most 10% of the smaller one. A box is tight around the pixels the item
 * painted (not its 28 x 28 square). Trainval scenes use items of the Fashion-MNIST training split, test scenes
 * items of its test split; every item is used once before any is used again.
 *
 * Deterministic for a seed: scene i of a split draws from its own stream, seeded by (seed, split, i), and the
 * items from a per-split deck, so a seed fixes every byte (for a given sharp/libjpeg build).
 * The set is written into a hidden directory beside the target and renamed into place when complete, so an
 * interrupted run never leaves something that looks like a finished set.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { sampleSeed } from '../data/batch.js';
import { loadEmbeddedFashion } from '../data/embedded.js';
import type { IdxSplit } from '../data/idx.js';
import { resample } from '../data/transforms.js';
import { UserError } from '../errors.js';
import { Rng } from '../util/random.js';
import { CLASS_LIST_FILE } from './voc.js';

/** What `ifExists` does when `<dir>/VOCdevkit` is already there. */
export type IfExists = 'error' | 'overwrite' | 'reuse';

/** Options of `generateVocSet`; the defaults make a set a 2-core machine trains on in minutes. */
export interface GenerateVocOptions {
  /** Default 0. */
  seed?: number;
  /** Scenes in trainval (Fashion-MNIST training items). Default 600. */
  trainImages?: number;
  /** Fraction of trainval listed in val.txt (the rest in train.txt). Default 0.2. */
  valFraction?: number;
  /** Scenes in test (Fashion-MNIST test items). Default 200. */
  testImages?: number;
  /** Range of a scene's width and height. Default 160 and 256. */
  minSide?: number;
  maxSide?: number;
  /** Range of a pasted item's side. Default 28 and 100. */
  minItem?: number;
  maxItem?: number;
  /** Items per scene: 1 to this. Default 4. */
  maxObjects?: number;
  /** JPEG quality. Default 90. */
  quality?: number;
  /**
   * When `<dir>/VOCdevkit` exists: 'error' (default); 'reuse' it if it was generated with the same options
   * (an error otherwise); 'overwrite' it if it was generated (a devkit not made here is never replaced).
   */
  ifExists?: IfExists;
}

type SetOptions = Required<Omit<GenerateVocOptions, 'ifExists'>>;

/** The defaults of `GenerateVocOptions`. */
export const DEFAULT_GENERATE_OPTIONS: Readonly<SetOptions> = Object.freeze({
  seed: 0,
  trainImages: 600,
  valFraction: 0.2,
  testImages: 200,
  minSide: 160,
  maxSide: 256,
  minItem: 28,
  maxItem: 100,
  maxObjects: 4,
  quality: 90,
});

/** Image counts of a generated set. */
export interface GeneratedCounts {
  train: number;
  val: number;
  trainval: number;
  test: number;
  /** Objects in trainval and in test. */
  trainvalObjects: number;
  testObjects: number;
}

/** What `generateVocSet` made (or found, with 'reuse'). */
export interface GeneratedVocSet {
  /** The devkit directory, `<dir>/VOCdevkit`: what `readVoc` takes. */
  root: string;
  /** The year directory, `<dir>/VOCdevkit/VOC2007`. */
  yearDir: string;
  classes: readonly string[];
  counts: GeneratedCounts;
  options: SetOptions;
  /** True when an existing set was reused. */
  reused: boolean;
}

/** Bumped whenever the same options would render different files. */
const GENERATOR_VERSION = 1;
const MANIFEST = 'zoo-generated.json';
const YEAR = 'VOC2007';

// ---------------------------------------------------------------------------------------------------------
// Scenes

/** Background textures. */
export const BACKGROUNDS = ['gradient', 'stripes', 'checker', 'noise'] as const;
export type Background = (typeof BACKGROUNDS)[number];

/** One pasted item. */
export interface SceneObject {
  /** Fashion-MNIST label (0..9). */
  label: number;
  /** The item's index in its Fashion-MNIST split. */
  item: number;
  /** Devkit box (1-based, inclusive) around the painted pixels. */
  box: [number, number, number, number];
  /** Where the item's square was pasted (0-based pixels) and its side. */
  x: number;
  y: number;
  size: number;
  /** Blend weight of each pixel of the square, [size * size]: the box is the extent of its non-zero values. */
  alpha: Float32Array;
}

/** A rendered scene: RGB pixels (HWC) and its objects. */
export interface Scene {
  width: number;
  height: number;
  pixels: Uint8Array;
  background: Background;
  objects: SceneObject[];
}

/** Item intensities (0..255) below this are background; from it up to FULL the item blends in. */
const ALPHA_FLOOR = 12;
const ALPHA_FULL = 48;
/** Largest share of the smaller of two boxes they may have in common. */
const MAX_OVERLAP = 0.1;
const PLACEMENT_TRIES = 30;

type Rgb = [number, number, number];

function randomColor(rng: Rng): Rgb {
  return [rng.range(10, 220), rng.range(10, 220), rng.range(10, 220)];
}

/** Fills `px` (HWC float, 0..255) with one of the textures. */
function paintBackground(px: Float32Array, w: number, h: number, rng: Rng): Background {
  const kind = BACKGROUNDS[rng.int(BACKGROUNDS.length)]!;
  const c0 = randomColor(rng);
  const c1 = randomColor(rng);
  const put = (i: number, t: number) => {
    px[i] = c0[0] + t * (c1[0] - c0[0]);
    px[i + 1] = c0[1] + t * (c1[1] - c0[1]);
    px[i + 2] = c0[2] + t * (c1[2] - c0[2]);
  };
  const angle = rng.range(0, 2 * Math.PI);
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  if (kind === 'gradient') {
    const span = Math.abs(cos) * w + Math.abs(sin) * h;
    const lo = Math.min(0, cos * w) + Math.min(0, sin * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) put((y * w + x) * 3, (x * cos + y * sin - lo) / span);
  } else if (kind === 'stripes') {
    const period = rng.range(6, 28);
    const hard = rng.uniform() < 0.5;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const s = 0.5 + 0.5 * Math.sin((2 * Math.PI * (x * cos + y * sin)) / period);
        put((y * w + x) * 3, hard ? (s > 0.5 ? 1 : 0) : s);
      }
    }
  } else if (kind === 'checker') {
    const cell = 6 + rng.int(27);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) put((y * w + x) * 3, (Math.floor(x / cell) + Math.floor(y / cell)) & 1);
  } else {
    // Value noise: random colors on a coarse grid, interpolated bilinearly.
    const cell = rng.range(10, 40);
    const gw = Math.ceil(w / cell) + 2;
    const gh = Math.ceil(h / cell) + 2;
    const grid = Float32Array.from({ length: gw * gh * 3 }, () => rng.range(10, 230));
    for (let y = 0; y < h; y++) {
      const gy = y / cell;
      const y0 = Math.floor(gy);
      const fy = gy - y0;
      for (let x = 0; x < w; x++) {
        const gx = x / cell;
        const x0 = Math.floor(gx);
        const fx = gx - x0;
        const a = (y0 * gw + x0) * 3;
        const b = a + 3;
        const c = a + gw * 3;
        const d = c + 3;
        const o = (y * w + x) * 3;
        for (let ch = 0; ch < 3; ch++) {
          const top = grid[a + ch]! + fx * (grid[b + ch]! - grid[a + ch]!);
          const bottom = grid[c + ch]! + fx * (grid[d + ch]! - grid[c + ch]!);
          px[o + ch] = top + fy * (bottom - top);
        }
      }
    }
  }
  return kind;
}

/** A few flat rectangles and ellipses: edges and blobs that are not objects. */
function paintDistractors(px: Float32Array, w: number, h: number, rng: Rng): void {
  const n = rng.int(4);
  for (let k = 0; k < n; k++) {
    const color = randomColor(rng);
    const bw = 8 + rng.int(50);
    const bh = 8 + rng.int(50);
    const x0 = rng.int(w) - (bw >> 1);
    const y0 = rng.int(h) - (bh >> 1);
    const ellipse = rng.uniform() < 0.5;
    for (let y = Math.max(0, y0); y < Math.min(h, y0 + bh); y++) {
      for (let x = Math.max(0, x0); x < Math.min(w, x0 + bw); x++) {
        if (ellipse) {
          const u = (x - x0 + 0.5) / bw - 0.5;
          const v = (y - y0 + 0.5) / bh - 0.5;
          if (u * u + v * v > 0.25) continue;
        }
        px.set(color, (y * w + x) * 3);
      }
    }
  }
}

/**
 * The scene as bytes: every value plus uniform noise of width `amplitude` (sensor noise over background and
 * items alike), rounded and clamped. The noise comes from an inline xorshift32 stream seeded by `seed`: a
 * method call per value on `Rng` took most of a scene's time.
 */
function toBytesWithNoise(px: Float32Array, amplitude: number, seed: number): Uint8Array {
  const out = new Uint8Array(px.length);
  let x = seed | 1;
  const k = amplitude / 4294967296;
  const offset = 0.5 - amplitude / 2;
  for (let i = 0; i < px.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const v = px[i]! + (x >>> 0) * k + offset;
    out[i] = v <= 0 ? 0 : v >= 255 ? 255 : v | 0;
  }
  return out;
}

/** The item resized to `size`, as blend weights, and the extent of its non-zero weights (or undefined). */
function itemAlpha(split: IdxSplit, item: number, size: number): { alpha: Float32Array; values: Float32Array; extent?: [number, number, number, number] } {
  const n = split.height * split.width;
  const src = { data: split.images.subarray(item * n, (item + 1) * n), height: split.height, width: split.width, channels: 1 };
  const values = resample(src, { x: 0, y: 0, width: split.width, height: split.height }, size, size).data;
  const alpha = new Float32Array(size * size);
  let x0 = size;
  let y0 = size;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const v = values[y * size + x]!;
      if (v < ALPHA_FLOOR) continue;
      alpha[y * size + x] = Math.min(1, v / ALPHA_FULL);
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  return { alpha, values, ...(x1 >= 0 ? { extent: [x0, y0, x1, y1] as [number, number, number, number] } : {}) };
}

function overlapsTooMuch(a: readonly number[], b: readonly number[]): boolean {
  const iw = Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!) + 1;
  const ih = Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!) + 1;
  if (iw <= 0 || ih <= 0) return false;
  const area = (r: readonly number[]) => (r[2]! - r[0]! + 1) * (r[3]! - r[1]! + 1);
  return iw * ih > MAX_OVERLAP * Math.min(area(a), area(b));
}

/** A per-split deck of item indices: a seeded shuffle, reshuffled when used up. */
export class ItemDeck {
  private order: Int32Array;
  private pos = 0;

  constructor(
    readonly count: number,
    private readonly rng: Rng,
  ) {
    this.order = Int32Array.from({ length: count }, (_, i) => i);
    rng.shuffle(this.order);
  }

  next(): number {
    if (this.pos === this.count) {
      this.rng.shuffle(this.order);
      this.pos = 0;
    }
    return this.order[this.pos++]!;
  }
}

/** Scene geometry options (a subset of `GenerateVocOptions`). */
export type SceneOptions = Pick<SetOptions, 'minSide' | 'maxSide' | 'minItem' | 'maxItem' | 'maxObjects'>;

/** Renders one scene (module comment): background, distractors, then the items from `deck`. */
export function renderScene(rng: Rng, split: IdxSplit, deck: ItemDeck, options: SceneOptions): Scene {
  const side = () => options.minSide + rng.int(options.maxSide - options.minSide + 1);
  const width = side();
  const height = side();
  const px = new Float32Array(width * height * 3);
  const background = paintBackground(px, width, height, rng);
  paintDistractors(px, width, height, rng);
  const noise = rng.range(4, 20);
  const noiseSeed = rng.nextU32();

  const wanted = 1 + rng.int(options.maxObjects);
  const logLo = Math.log(options.minItem);
  const logHi = Math.log(Math.min(options.maxItem, width, height));
  const objects: SceneObject[] = [];
  for (let k = 0; k < wanted; k++) {
    const item = deck.next();
    const size = Math.round(Math.exp(rng.range(logLo, logHi)));
    const { alpha, values, extent } = itemAlpha(split, item, size);
    if (!extent) continue;
    let placed: { x: number; y: number; box: [number, number, number, number] } | undefined;
    for (let t = 0; t < PLACEMENT_TRIES && !placed; t++) {
      const x = rng.int(width - size + 1);
      const y = rng.int(height - size + 1);
      const box: [number, number, number, number] = [x + extent[0] + 1, y + extent[1] + 1, x + extent[2] + 1, y + extent[3] + 1];
      if (!objects.some((o) => overlapsTooMuch(o.box, box))) placed = { x, y, box };
    }
    if (!placed) continue;
    const tint = [rng.range(0.55, 1), rng.range(0.55, 1), rng.range(0.55, 1)];
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const a = alpha[y * size + x]!;
        if (a === 0) continue;
        const o = ((placed.y + y) * width + placed.x + x) * 3;
        const v = values[y * size + x]!;
        for (let c = 0; c < 3; c++) px[o + c] = px[o + c]! * (1 - a) + v * tint[c]! * a;
      }
    }
    objects.push({ label: split.labels[item]!, item, box: placed.box, x: placed.x, y: placed.y, size, alpha });
  }
  return { width, height, pixels: toBytesWithNoise(px, noise, noiseSeed), background, objects };
}

// ---------------------------------------------------------------------------------------------------------
// Files

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** The devkit annotation of a scene. */
export function sceneXml(id: string, scene: Pick<Scene, 'width' | 'height' | 'objects'>, classes: readonly string[]): string {
  const objects = scene.objects.map((o) => {
    const [xmin, ymin, xmax, ymax] = o.box;
    return [
      '\t<object>',
      `\t\t<name>${escapeXml(classes[o.label]!)}</name>`,
      '\t\t<pose>Unspecified</pose>',
      '\t\t<truncated>0</truncated>',
      '\t\t<difficult>0</difficult>',
      `\t\t<bndbox><xmin>${xmin}</xmin><ymin>${ymin}</ymin><xmax>${xmax}</xmax><ymax>${ymax}</ymax></bndbox>`,
      '\t</object>',
    ].join('\n');
  });
  return [
    '<annotation>',
    `\t<folder>${YEAR}</folder>`,
    `\t<filename>${id}.jpg</filename>`,
    '\t<source><database>zoo: Fashion-MNIST items on generated backgrounds</database></source>',
    `\t<size><width>${scene.width}</width><height>${scene.height}</height><depth>3</depth></size>`,
    '\t<segmented>0</segmented>',
    ...objects,
    '</annotation>',
    '',
  ].join('\n');
}

function resolveOptions(options: GenerateVocOptions): SetOptions {
  const o: SetOptions = { ...DEFAULT_GENERATE_OPTIONS };
  for (const k of Object.keys(DEFAULT_GENERATE_OPTIONS) as (keyof SetOptions)[]) if (options[k] !== undefined) o[k] = options[k];
  const int = (k: keyof SetOptions, min: number, max = Infinity) => {
    const v = o[k];
    if (!Number.isInteger(v) || v < min || v > max) throw new UserError(`${k} must be an integer from ${min}${max < Infinity ? ` to ${max}` : ''}, got ${v}`, { exitCode: 2 });
  };
  int('seed', 0, 0xffffffff);
  int('trainImages', 1);
  int('testImages', 1);
  int('minSide', 32, 4096);
  int('maxSide', o.minSide, 4096);
  int('minItem', 8, o.minSide);
  int('maxItem', o.minItem);
  int('maxObjects', 1, 64);
  int('quality', 1, 100);
  if (!(o.valFraction >= 0 && o.valFraction < 1)) throw new UserError(`valFraction must be in [0, 1), got ${o.valFraction}`, { exitCode: 2 });
  return o;
}

/** The two halves of a generated set: trainval (Fashion-MNIST training items) and test (its test items). */
export type GeneratedSplit = 'trainval' | 'test';

// Stream tags: scene streams are (seed, split, index); the decks and the val split use indices no scene reaches.
const SPLIT_TAG: Record<GeneratedSplit, number> = { trainval: 0, test: 1 };
const DECK_INDEX = 0x7fffffff;
const VAL_INDEX = 0x7ffffffe;

/** The random stream of scene `index` of `split`. */
export function sceneRng(seed: number, split: GeneratedSplit, index: number): Rng {
  return new Rng(sampleSeed(seed, SPLIT_TAG[split], index));
}

/** The item deck of `split`, over its `count` Fashion-MNIST items. */
export function itemDeck(seed: number, split: GeneratedSplit, count: number): ItemDeck {
  return new ItemDeck(count, new Rng(sampleSeed(seed, SPLIT_TAG[split], DECK_INDEX)));
}

function pad(i: number): string {
  return String(i).padStart(6, '0');
}

interface Manifest {
  generator: string;
  version: number;
  options: SetOptions;
  counts: GeneratedCounts;
}

async function readManifest(root: string): Promise<Manifest | undefined> {
  const text = await readFile(path.join(root, MANIFEST), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const m = JSON.parse(text) as Manifest;
    return m && m.generator === 'zoo' && typeof m.options === 'object' && typeof m.counts === 'object' ? m : undefined;
  } catch {
    return undefined;
  }
}

function sameOptions(a: SetOptions, b: SetOptions): boolean {
  return (Object.keys(DEFAULT_GENERATE_OPTIONS) as (keyof SetOptions)[]).every((k) => a[k] === b[k]);
}

/** Removes partial sets left by runs that were killed (their process is gone). */
async function removeStalePartials(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const m = /^\.VOCdevkit-(?:partial|old)-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    let alive = pid === process.pid;
    if (!alive) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (e) {
        alive = (e as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    if (!alive) await rm(path.join(dir, name), { recursive: true, force: true });
  }
}

/** Renders and writes one split's scenes into `yearDir`; returns their ids and object count. */
async function writeSplit(
  yearDir: string,
  split: IdxSplit,
  which: GeneratedSplit,
  count: number,
  firstId: number,
  o: SetOptions,
  classes: readonly string[],
): Promise<{ ids: string[]; objects: number }> {
  const deck = itemDeck(o.seed, which, split.count);
  const ids: string[] = [];
  let objects = 0;
  // Scenes are rendered in order (the deck is shared); encoding and writing overlap in sharp's threads.
  const pending = new Set<Promise<void>>();
  let failure: unknown;
  for (let i = 0; i < count; i++) {
    const id = pad(firstId + i);
    const scene = renderScene(sceneRng(o.seed, which, i), split, deck, o);
    ids.push(id);
    objects += scene.objects.length;
    const job = (async () => {
      const jpeg = await sharp(Buffer.from(scene.pixels.buffer, scene.pixels.byteOffset, scene.pixels.length), {
        raw: { width: scene.width, height: scene.height, channels: 3 },
      })
        .jpeg({ quality: o.quality })
        .toBuffer();
      await writeFile(path.join(yearDir, 'JPEGImages', `${id}.jpg`), jpeg);
      await writeFile(path.join(yearDir, 'Annotations', `${id}.xml`), sceneXml(id, scene, classes));
    })().catch((e) => {
      failure ??= e;
    });
    pending.add(job);
    void job.then(() => pending.delete(job));
    if (pending.size >= 8) await Promise.race(pending);
    if (failure) break;
  }
  await Promise.all(pending);
  if (failure) throw failure;
  return { ids, objects };
}

/**
 * Writes a VOC-layout set under `dir` (module comment). Returns where it is and what it holds; with
 * `ifExists: 'reuse'` an existing set made with the same options is returned as is.
 */
export async function generateVocSet(dir: string, options: GenerateVocOptions = {}): Promise<GeneratedVocSet> {
  const o = resolveOptions(options);
  const ifExists = options.ifExists ?? 'error';
  const abs = path.resolve(dir);
  const root = path.join(abs, 'VOCdevkit');
  const yearDir = path.join(root, YEAR);
  const fashion = await loadEmbeddedFashion();
  const classes = fashion.classes;
  const result = (counts: GeneratedCounts, reused: boolean): GeneratedVocSet => ({ root, yearDir, classes, counts, options: o, reused });

  const existing = await stat(root).then(
    () => true,
    () => false,
  );
  if (existing) {
    const manifest = await readManifest(root);
    const where = path.join(dir, 'VOCdevkit');
    if (ifExists === 'error') throw new UserError(`${where} already exists (reuse it, or overwrite it, or choose another directory)`, { exitCode: 2 });
    if (!manifest) throw new UserError(`${where} exists and was not made by zoo's generator; refusing to ${ifExists === 'reuse' ? 'reuse' : 'replace'} it`, { exitCode: 2 });
    if (ifExists === 'reuse') {
      if (manifest.version === GENERATOR_VERSION && sameOptions(manifest.options, o)) return result(manifest.counts, true);
      throw new UserError(`${where} was generated with other options (or by another version of the generator); overwrite it or choose another directory`, { exitCode: 2 });
    }
  }

  await mkdir(abs, { recursive: true }).catch((e: Error) => {
    throw new UserError(`cannot create ${dir}: ${e.message}`);
  });
  await removeStalePartials(abs);
  const tmp = path.join(abs, `.VOCdevkit-partial-${process.pid}-${randomBytes(4).toString('hex')}`);
  const tmpYear = path.join(tmp, YEAR);
  try {
    for (const sub of ['JPEGImages', 'Annotations', path.join('ImageSets', 'Main')]) await mkdir(path.join(tmpYear, sub), { recursive: true });
    const trainval = await writeSplit(tmpYear, fashion.train, 'trainval', o.trainImages, 1, o, classes);
    const test = await writeSplit(tmpYear, fashion.test, 'test', o.testImages, 1 + o.trainImages, o, classes);
    const order = Int32Array.from({ length: trainval.ids.length }, (_, i) => i);
    new Rng(sampleSeed(o.seed, SPLIT_TAG.trainval, VAL_INDEX)).shuffle(order);
    const valSet = new Set(Array.from(order.subarray(0, Math.round(o.valFraction * trainval.ids.length)), (i) => trainval.ids[i]!));
    const splits: Record<string, string[]> = {
      train: trainval.ids.filter((id) => !valSet.has(id)),
      val: trainval.ids.filter((id) => valSet.has(id)),
      trainval: trainval.ids,
      test: test.ids,
    };
    for (const [name, ids] of Object.entries(splits)) {
      await writeFile(path.join(tmpYear, 'ImageSets', 'Main', `${name}.txt`), ids.map((id) => `${id}\n`).join(''));
    }
    await writeFile(path.join(tmpYear, CLASS_LIST_FILE), classes.map((c) => `${c}\n`).join(''));
    const counts: GeneratedCounts = {
      train: splits.train!.length,
      val: splits.val!.length,
      trainval: trainval.ids.length,
      test: test.ids.length,
      trainvalObjects: trainval.objects,
      testObjects: test.objects,
    };
    const manifest: Manifest = { generator: 'zoo', version: GENERATOR_VERSION, options: o, counts };
    await writeFile(path.join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    if (existing) {
      const old = path.join(abs, `.VOCdevkit-old-${process.pid}-${randomBytes(4).toString('hex')}`);
      await rename(root, old);
      await rename(tmp, root);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, root);
    }
    return result(counts, false);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    if (e instanceof UserError) throw e;
    const err = e as NodeJS.ErrnoException;
    if (err.code) throw new UserError(`cannot write the generated set under ${dir}: ${err.message}`, { cause: e });
    throw e;
  }
}
