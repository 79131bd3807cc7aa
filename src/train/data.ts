/**
 * What `zoo train --data` and `zoo eval --data` accept, opened as train and validation splits:
 *
 * - `fashion`: the Fashion-MNIST subset shipped with the package (3000 train / 500 test images);
 * - a directory with the four IDX files of Fashion-MNIST or MNIST (`train-images-idx3-ubyte[.gz]`, ...),
 *   such as Debian's /usr/share/datasets/fashion-mnist; the test files are the validation split.
 *   Class names come from a `classes.txt` there (one per line), else Fashion-MNIST's when the path
 *   says "fashion", else the digits;
 * - an image folder: `train/<class>/*.jpg` with `val/<class>/*.jpg` (ImageNet layout), or class folders
 *   directly with a validation fraction.
 *
 * `limitTrain`/`limitVal` keep a class-balanced prefix of each split (the first images of each class in
 * the split's order), for quick runs on large sets.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { datasetSize, idxDataset, subsetDataset, type ImageDataset } from '../data/dataset.js';
import { embeddedFashionDatasets } from '../data/embedded.js';
import { FASHION_MNIST_CLASSES, loadFashionMnist } from '../data/idx.js';
import { openImageFolder } from '../data/image_folder.js';

export interface TrainingData {
  /** How the data was named on the command line (recorded in the run). */
  spec: string;
  kind: 'embedded' | 'idx' | 'folder';
  classes: readonly string[];
  train: ImageDataset;
  val: ImageDataset;
}

export interface OpenDataOptions {
  /** Validation fraction for a folder of class folders (or to split train/ instead of using val/). */
  valFraction?: number;
  /** Seed of that split. */
  seed?: number;
  limitTrain?: number;
  limitVal?: number;
}

const IDX_TRAIN = 'train-images-idx3-ubyte';

function hasIdx(dir: string): boolean {
  return existsSync(path.join(dir, IDX_TRAIN)) || existsSync(path.join(dir, `${IDX_TRAIN}.gz`));
}

function idxClasses(dir: string): readonly string[] {
  const file = path.join(dir, 'classes.txt');
  if (existsSync(file)) {
    const names = readFileSync(file, 'utf8').split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
    if (names.length < 2) throw new UserError(`${file} must list at least two class names, one per line`);
    return names;
  }
  if (/fashion/i.test(dir)) return FASHION_MNIST_CLASSES;
  return Array.from({ length: 10 }, (_, i) => String(i));
}

/** Whether `--data spec` is split by --val-split: an image folder, not the embedded set or IDX files (which have their own). */
export function takesValSplit(spec: string): boolean {
  return spec !== 'fashion' && !hasIdx(spec);
}

/** The first `perClass` samples of each class, in the split's order (a balanced, deterministic subset). */
export function balancedPrefix(dataset: ImageDataset, limit: number): ImageDataset {
  const n = datasetSize(dataset);
  if (!Number.isInteger(limit) || limit < 1) throw new UserError(`a split limit must be a positive integer, got ${limit}`);
  if (limit >= n) return dataset;
  const k = dataset.classes.length;
  const perClass = Math.floor(limit / k);
  if (perClass < 1) throw new UserError(`a limit of ${limit} images leaves none for some of the ${k} classes`);
  const taken = new Int32Array(k);
  const keep: number[] = [];
  for (let i = 0; i < n; i++) {
    const y = dataset.labels[i]!;
    if (taken[y]! < perClass) {
      taken[y]!++;
      keep.push(i);
    }
  }
  return subsetDataset(dataset, keep, `${dataset.name}[${keep.length}]`);
}

export async function openTrainingData(spec: string, options: OpenDataOptions = {}): Promise<TrainingData> {
  let data: TrainingData;
  const noSplit = (what: string) =>
    new UserError(`--val-split splits an image folder; ${what} has its own validation split: leave --val-split out (or --limit-val for fewer images)`, { exitCode: 2 });
  if (spec === 'fashion') {
    if (options.valFraction !== undefined) throw noSplit("the embedded Fashion-MNIST subset ('fashion')");
    const { train, test } = await embeddedFashionDatasets();
    data = { spec, kind: 'embedded', classes: train.classes, train, val: test };
  } else {
    if (!existsSync(spec)) {
      throw new UserError(`--data ${spec}: no such directory (give an image folder, a directory of IDX files, or 'fashion' for the embedded set)`, {
        exitCode: 2,
      });
    }
    if (hasIdx(spec)) {
      if (options.valFraction !== undefined) throw noSplit(`the IDX data in ${spec} (its t10k files)`);
      const classes = idxClasses(spec);
      const raw = await loadFashionMnist(spec, classes);
      data = { spec, kind: 'idx', classes, train: idxDataset(raw.train, classes, `${spec}:train`), val: idxDataset(raw.test, classes, `${spec}:test`) };
    } else {
      const folder = await openImageFolder(spec, {
        ...(options.valFraction !== undefined ? { valFraction: options.valFraction } : {}),
        seed: options.seed ?? 0,
      });
      data = { spec, kind: 'folder', classes: folder.classes, train: folder.train, val: folder.val };
    }
  }
  if (options.limitTrain !== undefined) data.train = balancedPrefix(data.train, options.limitTrain);
  if (options.limitVal !== undefined) data.val = balancedPrefix(data.val, options.limitVal);
  if (data.classes.length < 2) throw new UserError(`${spec}: a classifier needs at least two classes, found ${data.classes.length}`);
  return data;
}
