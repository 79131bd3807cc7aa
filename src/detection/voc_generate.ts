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
 * Scenes are data/scenes.ts's: 160-256 pixels a side on a textured background, 1-4 Fashion-MNIST items of
 * 28 to 100 pixels, placed so that two boxes share at most 10% of the smaller one. A box is tight around the
 * pixels the item painted (not its 28 x 28 square). Trainval scenes use items of the Fashion-MNIST training
 * split, test scenes items of its test split; every item is used once before any is used again.
 *
 * Deterministic for a seed: scene i of a split draws from its own stream, seeded by (seed, split, i), and the
 * items from a per-split deck, so a seed fixes every byte (for a given sharp/libjpeg build).
 * The set is published as data/generated_set.ts says: complete or not at all, reused or replaced only when
 * made here.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { sampleSeed } from '../data/batch.js';
import { loadEmbeddedFashion } from '../data/embedded.js';
import { publishGeneratedSet, WriteQueue, type IfExists } from '../data/generated_set.js';
import type { IdxSplit } from '../data/idx.js';
import { ItemDeck, renderScene, type Scene } from '../data/scenes.js';
import { UserError } from '../errors.js';
import { Rng } from '../util/random.js';
import { CLASS_LIST_FILE } from './voc.js';

export { BACKGROUNDS, ItemDeck, renderScene } from '../data/scenes.js';
export type { Background, Scene, SceneObject, SceneOptions } from '../data/scenes.js';
export type { IfExists };

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
const YEAR = 'VOC2007';

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

function sameOptions(a: SetOptions, b: SetOptions): boolean {
  return (Object.keys(DEFAULT_GENERATE_OPTIONS) as (keyof SetOptions)[]).every((k) => a[k] === b[k]);
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
  const queue = new WriteQueue();
  for (let i = 0; i < count && queue.ok; i++) {
    const id = pad(firstId + i);
    const scene: Scene = renderScene(sceneRng(o.seed, which, i), split, deck, o);
    ids.push(id);
    objects += scene.objects.length;
    await queue.add(async () => {
      const jpeg = await sharp(Buffer.from(scene.pixels.buffer, scene.pixels.byteOffset, scene.pixels.length), {
        raw: { width: scene.width, height: scene.height, channels: 3 },
      })
        .jpeg({ quality: o.quality })
        .toBuffer();
      await writeFile(path.join(yearDir, 'JPEGImages', `${id}.jpg`), jpeg);
      await writeFile(path.join(yearDir, 'Annotations', `${id}.xml`), sceneXml(id, scene, classes));
    });
  }
  await queue.drain();
  return { ids, objects };
}

/**
 * Writes a VOC-layout set under `dir` (module comment). Returns where it is and what it holds; with
 * `ifExists: 'reuse'` an existing set made with the same options is returned as is.
 */
export async function generateVocSet(dir: string, options: GenerateVocOptions = {}): Promise<GeneratedVocSet> {
  const o = resolveOptions(options);
  const fashion = await loadEmbeddedFashion();
  const classes = fashion.classes;
  const set = await publishGeneratedSet({
    dir,
    name: 'VOCdevkit',
    version: GENERATOR_VERSION,
    options: o,
    sameOptions,
    ifExists: options.ifExists ?? 'error',
    write: async (tmp): Promise<GeneratedCounts> => {
      const tmpYear = path.join(tmp, YEAR);
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
      return {
        train: splits.train!.length,
        val: splits.val!.length,
        trainval: trainval.ids.length,
        test: test.ids.length,
        trainvalObjects: trainval.objects,
        testObjects: test.objects,
      };
    },
  });
  return { root: set.root, yearDir: path.join(set.root, YEAR), classes, counts: set.counts, options: o, reused: set.reused };
}
