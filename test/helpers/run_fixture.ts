/**
 * A training run directory as `zoo train` leaves it (run.json, checkpoint.safetensors, model.onnx),
 * made without training: a tiny network with trained-like weights, its labels and preprocessing.
 */
import { writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createModel } from '../../src/models/model.js';
import { trainedLikeInit } from '../../src/models/calibrate.js';
import { RECIPES } from '../../src/train/recipes.js';
import { RUN_FILES, exportRun, type TrainConfig } from '../../src/train/trainer.js';
import { saveCheckpoint } from '../../src/train/checkpoint.js';
import { SGD } from '../../src/train/optim.js';

export const RUN_LABELS = ['cat', 'dog', 'fox'];

/** Writes a finished run of resnet_test with 3 classes at `imageSize` into `dir`; returns its config. */
export async function makeRunDir(dir: string, imageSize = 32): Promise<TrainConfig> {
  await mkdir(dir, { recursive: true });
  const config: TrainConfig = {
    arch: 'resnet_test',
    recipe: 'baseline',
    tricks: { ...RECIPES.baseline.tricks },
    epochs: 1,
    batchSize: 4,
    microBatch: 4,
    imageSize,
    baseLr: 0.1,
    momentum: 0.9,
    nesterov: true,
    weightDecay: 1e-4,
    seed: 0,
    minCropArea: 0.08,
    data: { spec: 'fixture', train: 12, val: 6, classes: RUN_LABELS },
  };
  writeFileSync(path.join(dir, RUN_FILES.config), `${JSON.stringify(config, null, 2)}\n`);
  const model = createModel('resnet_test', { numClasses: RUN_LABELS.length, seed: 4 });
  const opt = new SGD(model.params);
  try {
    await trainedLikeInit(model);
    await saveCheckpoint(path.join(dir, RUN_FILES.checkpoint), model, opt, { epoch: 1, updateInEpoch: 0, globalUpdate: 3 });
    await exportRun(model, config, path.join(dir, RUN_FILES.onnx));
  } finally {
    opt.dispose();
    model.dispose();
  }
  return config;
}
