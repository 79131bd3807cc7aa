/**
 * A small scene-parsing data set in the ADE20K challenge layout, made from the embedded Fashion-MNIST items,
 * so that the segmentation demo and the tests have real JPEG and PNG files to read, and a backbone pretrained
 * on Fashion-MNIST has something to transfer to.
 *
 *   <dir>/ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...
 *   <dir>/ADEChallengeData2016/annotations/training/ADE_train_00000001.png ...
 *   <dir>/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...
 *   <dir>/ADEChallengeData2016/annotations/validation/ADE_val_00000001.png ...
 *   <dir>/ADEChallengeData2016/classes.txt          'background' and the 10 Fashion-MNIST class names
 *   <dir>/ADEChallengeData2016/zoo-generated.json   the options and counts it was made with
 *
 * The scenes are the detection generator's (data/scenes.ts), smaller by default: 96-160 pixels a side, 1-3
 * items of 32 to 80 pixels. Training scenes use items of the Fashion-MNIST training split, validation scenes
 * items of its test split. A pixel's label is what makes up most of its color (`sceneLabels`).
 *
 * The background is a class of its own by default ('background', label value 1; the items' classes are
 * values 2..11). ADE20K labels nearly every pixel (walls, floors and sky are classes, value 0 covers only
 * the few pixels nobody named), so its metrics measure where things are as well as what they are. With the
 * background unlabeled instead (`background: 'unlabeled'`: value 0, items 1..10) the loss and the metrics
 * would see only the items' pixels: a model could paint every pixel with some item's class and lose
 * nothing, and the task would shrink to classifying pixels already known to be items, which the Fashion-MNIST
 * classifier does before any fine-tuning. A background class keeps the task a segmentation.
 *
 * Deterministic for a seed: scene i of a split draws from its own stream, seeded by (seed, split, i), and the
 * items from a per-split deck, so a seed fixes every byte (for a given sharp/libjpeg build). The set is
 * published as data/generated_set.ts says: complete or not at all, reused or replaced only when made here.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { sampleSeed } from '../data/batch.js';
import { loadEmbeddedFashion } from '../data/embedded.js';
import { publishGeneratedSet, WriteQueue, type IfExists } from '../data/generated_set.js';
import type { IdxSplit } from '../data/idx.js';
import { ItemDeck, renderScene, sceneLabels, type Scene } from '../data/scenes.js';
import { UserError } from '../errors.js';
import { Rng } from '../util/random.js';
import { ADE_ROOT_NAME, SEG_CLASS_LIST_FILE, type AdeSplit } from './ade.js';
import { encodeGrayPng } from './png.js';

export type { IfExists };

/** How the background's pixels are labeled (module comment). */
export type GeneratedBackground = 'class' | 'unlabeled';

/** Options of `generateAdeSet`; the defaults make a set a 2-core machine fine-tunes on in minutes. */
export interface GenerateAdeOptions {
  /** Default 0. */
  seed?: number;
  /** Scenes in training (Fashion-MNIST training items). Default 300. */
  trainImages?: number;
  /** Scenes in validation (Fashion-MNIST test items). Default 100. */
  valImages?: number;
  /** Range of a scene's width and height. Default 96 and 160. */
  minSide?: number;
  maxSide?: number;
  /** Range of a pasted item's side. Default 32 and 80. */
  minItem?: number;
  maxItem?: number;
  /** Items per scene: 1 to this. Default 3. */
  maxObjects?: number;
  /** JPEG quality. Default 90. */
  quality?: number;
  /** 'class' (default): background is class 'background', value 1; 'unlabeled': value 0. */
  background?: GeneratedBackground;
  /**
   * When `<dir>/ADEChallengeData2016` exists: 'error' (default); 'reuse' it if it was generated with the same
   * options (an error otherwise); 'overwrite' it if it was generated (a folder not made here is never replaced).
   */
  ifExists?: IfExists;
}

type SetOptions = Required<Omit<GenerateAdeOptions, 'ifExists'>>;

/** The defaults of `GenerateAdeOptions`. */
export const DEFAULT_ADE_GENERATE_OPTIONS: Readonly<SetOptions> = Object.freeze({
  seed: 0,
  trainImages: 300,
  valImages: 100,
  minSide: 96,
  maxSide: 160,
  minItem: 32,
  maxItem: 80,
  maxObjects: 3,
  quality: 90,
  background: 'class',
});

/** Image, object and labeled-pixel counts of a generated set. */
export interface GeneratedAdeCounts {
  training: number;
  validation: number;
  trainingObjects: number;
  validationObjects: number;
  /** Pixels of each label value (index = value, 0 = unlabeled) in training and in validation. */
  trainingPixels: number[];
  validationPixels: number[];
}

/** What `generateAdeSet` made (or found, with 'reuse'). */
export interface GeneratedAdeSet {
  /** `<dir>/ADEChallengeData2016`: what `readAde` takes (as does `<dir>`). */
  root: string;
  /** Class index i is label value i + 1. */
  classes: readonly string[];
  counts: GeneratedAdeCounts;
  options: SetOptions;
  reused: boolean;
}

/** Bumped whenever the same options would render different files. */
const GENERATOR_VERSION = 1;

/** The class name of the background with `background: 'class'`. */
export const BACKGROUND_CLASS = 'background';

function resolveOptions(options: GenerateAdeOptions): SetOptions {
  const o: SetOptions = { ...DEFAULT_ADE_GENERATE_OPTIONS };
  for (const k of Object.keys(DEFAULT_ADE_GENERATE_OPTIONS) as (keyof SetOptions)[]) if (options[k] !== undefined) (o as Record<string, unknown>)[k] = options[k];
  const int = (k: Exclude<keyof SetOptions, 'background'>, min: number, max = Infinity) => {
    const v = o[k];
    if (!Number.isInteger(v) || v < min || v > max) throw new UserError(`${k} must be an integer from ${min}${max < Infinity ? ` to ${max}` : ''}, got ${v}`, { exitCode: 2 });
  };
  int('seed', 0, 0xffffffff);
  int('trainImages', 1);
  int('valImages', 1);
  int('minSide', 16, 4096);
  int('maxSide', o.minSide, 4096);
  int('minItem', 8, o.minSide);
  int('maxItem', o.minItem);
  int('maxObjects', 1, 64);
  int('quality', 1, 100);
  if (o.background !== 'class' && o.background !== 'unlabeled') throw new UserError(`background must be 'class' or 'unlabeled', got '${o.background}'`, { exitCode: 2 });
  return o;
}

function sameOptions(a: SetOptions, b: SetOptions): boolean {
  return (Object.keys(DEFAULT_ADE_GENERATE_OPTIONS) as (keyof SetOptions)[]).every((k) => a[k] === b[k]);
}

// Stream tags, apart from the detection generator's (0 and 1) so the two sets do not repeat each other's scenes.
const SPLIT_TAG: Record<AdeSplit, number> = { training: 0x5e6000, validation: 0x5e6001 };
const DECK_INDEX = 0x7fffffff;

/** The random stream of scene `index` of `split`. */
export function adeSceneRng(seed: number, split: AdeSplit, index: number): Rng {
  return new Rng(sampleSeed(seed, SPLIT_TAG[split], index));
}

/** The item deck of `split`, over its `count` Fashion-MNIST items. */
export function adeItemDeck(seed: number, split: AdeSplit, count: number): ItemDeck {
  return new ItemDeck(count, new Rng(sampleSeed(seed, SPLIT_TAG[split], DECK_INDEX)));
}

/** The file stem of scene `index` (0-based) of `split`, as ADE20K names its files. */
export function adeSceneId(split: AdeSplit, index: number): string {
  return `ADE_${split === 'training' ? 'train' : 'val'}_${String(index + 1).padStart(8, '0')}`;
}

/** The class list of a set generated with `background`. */
export function generatedClasses(fashionClasses: readonly string[], background: GeneratedBackground): readonly string[] {
  return Object.freeze(background === 'class' ? [BACKGROUND_CLASS, ...fashionClasses] : [...fashionClasses]);
}

/** A scene's label map as the generator writes it: background 1 or 0, item of Fashion-MNIST class c at c + 2 or c + 1. */
export function adeSceneLabels(scene: Pick<Scene, 'width' | 'height' | 'objects'>, background: GeneratedBackground): Uint8Array {
  const offset = background === 'class' ? 2 : 1;
  return sceneLabels(scene, (o) => o.label + offset, background === 'class' ? 1 : 0);
}

/** Renders and writes one split's scenes; returns their object count and pixels per label value. */
async function writeSplit(root: string, items: IdxSplit, split: AdeSplit, o: SetOptions, numValues: number): Promise<{ objects: number; pixels: number[] }> {
  const imageDir = path.join(root, 'images', split);
  const annDir = path.join(root, 'annotations', split);
  await mkdir(imageDir, { recursive: true });
  await mkdir(annDir, { recursive: true });
  const deck = adeItemDeck(o.seed, split, items.count);
  const count = split === 'training' ? o.trainImages : o.valImages;
  const pixels = new Array<number>(numValues).fill(0);
  let objects = 0;
  const queue = new WriteQueue();
  for (let i = 0; i < count && queue.ok; i++) {
    const id = adeSceneId(split, i);
    const scene = renderScene(adeSceneRng(o.seed, split, i), items, deck, o);
    const labels = adeSceneLabels(scene, o.background);
    objects += scene.objects.length;
    for (let k = 0; k < labels.length; k++) pixels[labels[k]!]!++;
    await queue.add(async () => {
      const jpeg = await sharp(Buffer.from(scene.pixels.buffer, scene.pixels.byteOffset, scene.pixels.length), {
        raw: { width: scene.width, height: scene.height, channels: 3 },
      })
        .jpeg({ quality: o.quality })
        .toBuffer();
      await writeFile(path.join(imageDir, `${id}.jpg`), jpeg);
      await writeFile(path.join(annDir, `${id}.png`), encodeGrayPng(labels, scene.width, scene.height, 8));
    });
  }
  await queue.drain();
  return { objects, pixels };
}

/**
 * Writes an ADE-layout set under `dir` (module comment). Returns where it is and what it holds; with
 * `ifExists: 'reuse'` an existing set made with the same options is returned as is.
 */
export async function generateAdeSet(dir: string, options: GenerateAdeOptions = {}): Promise<GeneratedAdeSet> {
  const o = resolveOptions(options);
  const fashion = await loadEmbeddedFashion();
  const classes = generatedClasses(fashion.classes, o.background);
  const set = await publishGeneratedSet({
    dir,
    name: ADE_ROOT_NAME,
    version: GENERATOR_VERSION,
    options: o,
    sameOptions,
    ifExists: options.ifExists ?? 'error',
    write: async (tmp): Promise<GeneratedAdeCounts> => {
      const training = await writeSplit(tmp, fashion.train, 'training', o, classes.length + 1);
      const validation = await writeSplit(tmp, fashion.test, 'validation', o, classes.length + 1);
      await writeFile(path.join(tmp, SEG_CLASS_LIST_FILE), classes.map((c) => `${c}\n`).join(''));
      return {
        training: o.trainImages,
        validation: o.valImages,
        trainingObjects: training.objects,
        validationObjects: validation.objects,
        trainingPixels: training.pixels,
        validationPixels: validation.pixels,
      };
    },
  });
  return { root: set.root, classes, counts: set.counts, options: o, reused: set.reused };
}
