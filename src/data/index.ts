/**
 * The data pipeline: IDX (Fashion-MNIST) and image folder data sets, the paper's augmentations, and a batch
 * loader that runs them in worker threads.
 */
export { createLoader, defaultWorkers, batchCount } from './loader.js';
export type { Batch, BatchLoader, LoaderOptions } from './loader.js';
export { datasetSize, idxDataset, inMemoryDataset, subsetDataset, readSample } from './dataset.js';
export type { DatasetSource, FileSource, ImageDataset, InMemoryDatasetOptions, MemorySource } from './dataset.js';
export { epochOrder, sampleSeed } from './batch.js';
export { embeddedFashionDatasets, embeddedFashionDir, loadEmbeddedFashion, EMBEDDED_FASHION_DIR } from './embedded.js';
export { FASHION_MNIST_CLASSES, encodeIdx, loadFashionMnist, parseIdx, readIdx, readIdxSplit } from './idx.js';
export type { FashionMnist, IdxArray, IdxSplit } from './idx.js';
export { configureSharp, decodeImage, IMAGE_EXTENSIONS, openImageFolder, splitByFraction } from './image_folder.js';
export type { FolderLayout, ImageFolder, ImageFolderOptions } from './image_folder.js';
export {
  buildTransform,
  defaultResize,
  evalTransform,
  trainTransform,
  IMAGENET_MEAN,
  IMAGENET_STD,
  PCA_EIGVAL,
  PCA_EIGVEC,
} from './transforms.js';
export type { EvalTransformOptions, Image, TrainTransformOptions, Transform, TransformSpec } from './transforms.js';
