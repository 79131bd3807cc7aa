/**
 * The embedded default data set: a class-balanced subset of Fashion-MNIST (Zalando Research, MIT license)
 * shipped with the package as gzipped IDX files under data/fashion-mnist-subset/ (its README gives the counts
 * and the command that regenerates it from Debian's dataset-fashion-mnist).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import { findPackageDir } from '../util/package.js';
import { idxDataset, type ImageDataset } from './dataset.js';
import { FASHION_MNIST_CLASSES, loadFashionMnist, type FashionMnist } from './idx.js';

/** Path of the embedded subset relative to the package root. */
export const EMBEDDED_FASHION_DIR = path.join('data', 'fashion-mnist-subset');

export { findPackageDir };

/**
 * Directory of the embedded subset. This file runs from dist/src/data/ (or another build directory, or
 * node_modules/zoo/dist/src/data/ when installed), so walk up to the package root.
 */
export function embeddedFashionDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dir = findPackageDir(here, EMBEDDED_FASHION_DIR);
  if (!dir) throw new UserError(`the embedded Fashion-MNIST subset (${EMBEDDED_FASHION_DIR}) was not found above ${here}; is the package complete?`);
  return dir;
}

/** The embedded Fashion-MNIST subset as raw IDX splits (28 x 28 grayscale, labels 0-9). */
export function loadEmbeddedFashion(): Promise<FashionMnist> {
  return loadFashionMnist(embeddedFashionDir(), FASHION_MNIST_CLASSES);
}

/** The embedded subset as loader-ready data sets. */
export async function embeddedFashionDatasets(): Promise<{ train: ImageDataset; test: ImageDataset }> {
  const data = await loadEmbeddedFashion();
  return {
    train: idxDataset(data.train, data.classes, 'fashion-mnist-subset:train'),
    test: idxDataset(data.test, data.classes, 'fashion-mnist-subset:test'),
  };
}
