/**
 * The trainer: mini-batch SGD on a registered architecture with the paper's tricks as switches.
 *
 * One update (an "iteration" of the paper) covers the effective batch `batchSize`, made of
 * `batchSize / microBatch` micro-batches whose gradients are summed and scaled by microBatch / batchSize
 * (gradient accumulation): the paper's batch of 1024 fits a small machine, and the learning rate follows
 * the effective batch. Batch norm takes its statistics per micro-batch, as it does per device in the
 * paper's multi-GPU training.
 *
 * A run directory holds:
 *   run.json                 the configuration (what --resume checks against)
 *   log.jsonl                one record per finished epoch (epoch, loss, lr, valTop1, valTop5, ...)
 *   checkpoint.safetensors   parameters, momentum and the run's position, rewritten atomically at the
 *                            end of every epoch, every `checkpointMinutes`, and when a run is stopped
 *   model.onnx               the final model, exported and checked in ONNX Runtime
 *
 * Resuming restores parameters, batch-norm statistics, momentum buffers and the position (epoch, update
 * within it, global update); the data order and augmentation are functions of (seed, epoch, sample) and
 * mixup's draws of (seed, update), so a resumed run computes exactly what the uninterrupted run would.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import path from 'node:path';
import { UserError } from '../errors.js';
import { createModel, type Model } from '../models/model.js';
import { getModelEntry } from '../models/registry.js';
import { createLoader, type Batch, type BatchLoader } from '../data/loader.js';
import { datasetSize } from '../data/dataset.js';
import { verifyDataset, type VerifyDepth } from '../data/verify.js';
import { defaultResize, trainTransform } from '../data/transforms.js';
import { exportOnnx } from '../onnx/export.js';
import { checkExport, type CheckReport } from '../onnx/check.js';
import { describeCheck } from '../onnx/pipeline.js';
import { ensureDir, writeFileAtomic } from '../io/atomic.js';
import { RUN_FILES, runPreprocessing } from './run_config.js';

export { RUN_FILES, runPreprocessing };
import { MAX_IMAGE_SIDE } from '../predict/preprocessing.js';
import { metadataProps } from '../onnx/metadata.js';
import { Rng } from '../util/random.js';
import { registerCoreGradients } from '../backend/gradients.js';
import { setMixedPrecision } from '../backend/index.js';
import { largestBatchThatFits } from '../backend/webgpu.js';
import { SGD } from './optim.js';
import { LrSchedule } from './schedule.js';
import { distillationLoss, mixup, sampleBeta, smoothTargets, softCrossEntropy } from './loss.js';
import type { CheckpointState } from './checkpoint.js';
import { TrainingError, checkInteger, diagnoseNonFinite, checkRunOptions, readEpochLog as readLog, runLoop, updatesIn, type LoopRecord, type LoopTask, type RunControlOptions, loopControl, openRunDir, recordDataLocation, runFiles } from './loop.js';
import { configDiffs, readRunConfig } from './run_config.js';
import { evaluateModel, type EvalResult } from './evaluate.js';
import type { Tricks, RecipeName } from './recipes.js';
import type { Teacher } from './teacher.js';
import type { TrainingData } from './data.js';

/** Everything that determines what a run computes (recorded in run.json; --resume must match it). */
export interface TrainConfig {
  arch: string;
  recipe: RecipeName;
  tricks: Tricks;
  epochs: number;
  /** Effective batch: images per update. */
  batchSize: number;
  /** Images per forward/backward pass; batchSize must be a multiple. */
  microBatch: number;
  imageSize: number;
  /** Learning rate for a batch of 256 (scaled by batch / 256 with linear scaling). */
  baseLr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  seed: number;
  /** Smallest area fraction of the random-resized crop (0.08 in the paper). */
  minCropArea: number;
  /** Weight of the hard-label term in distillation (undefined: the paper's plain sum). */
  hardWeight?: number;
  /**
   * The data and the teacher, as named by the user (their content is not hashed). `valSplit`,
   * `limitTrain` and `limitVal` are how the splits were made, recorded when given so that
   * `zoo train --out DIR --resume` can open the same data again.
   */
  data: { spec: string; train: number; val: number; classes: readonly string[]; valSplit?: number; limitTrain?: number; limitVal?: number };
  teacher?: string;
  /** Architecture of a teacher weights file (recorded when given, for the same reason). */
  teacherArch?: string;
}

/** One record of log.jsonl. */
export interface EpochRecord extends LoopRecord {
  valTop1: number;
  valTop5: number;
  valLoss: number;
}

export type TrainEvent =
  | { type: 'start'; config: TrainConfig; params: number; itersPerEpoch: number; totalUpdates: number; peakLr: number; warmupUpdates: number; resumed?: CheckpointState }
  | { type: 'notice'; message: string }
  | { type: 'progress'; epoch: number; epochs: number; update: number; itersPerEpoch: number; batchSize: number; loss: number; lr: number; imagesPerSecond: number; terms?: Record<string, number> }
  | { type: 'validating'; epoch: number; done: number; total: number }
  /** The image files of a split are being checked before the first epoch (src/data/verify.ts). */
  | { type: 'checking'; split: 'train' | 'val'; depth: VerifyDepth; done: number; total: number }
  | { type: 'epoch'; record: EpochRecord; epochs: number }
  | { type: 'checkpoint'; path: string; globalUpdate: number }
  | { type: 'stopped'; reason: string; checkpoint: string }
  | { type: 'exported'; path: string; bytes: number; check: CheckReport };

export interface TrainOptions extends RunControlOptions {
  config: TrainConfig;
  data: TrainingData;
  teacher?: Teacher;
  /** Loader worker threads (default: cores - 1). */
  workers?: number;
  onEvent?: (e: TrainEvent) => void;
}

export interface TrainResult {
  /** All epochs ran (false when stopped early). */
  finished: boolean;
  records: EpochRecord[];
  globalUpdate: number;
  onnx?: string;
  onnxBytes?: Uint8Array;
  check?: CheckReport;
  checkpoint: string;
  /** The trained model; the caller disposes it. */
  model?: Model;
}


export { TrainingError };

/** Checks a configuration before any work starts. */
export function validateConfig(c: TrainConfig): void {
  getModelEntry(c.arch);
  // Integers past 2^53 pass Number.isInteger but lose their value in run.json, which --resume then refuses.
  const safe: [number | undefined, string][] = [
    [c.epochs, '--epochs'],
    [c.batchSize, '--batch-size'],
    [c.microBatch, '--micro-batch'],
    [c.imageSize, '--image-size'],
    [c.seed, '--seed'],
    [c.data.limitTrain, '--limit-train'],
    [c.data.limitVal, '--limit-val'],
  ];
  for (const [v, flag] of safe) {
    if (v !== undefined && Number.isInteger(v) && !Number.isSafeInteger(v)) {
      throw new UserError(`${flag} ${v} is past the integers zoo records exactly (up to ${Number.MAX_SAFE_INTEGER})`, { exitCode: 2 });
    }
  }
  checkRunOptions({ ...c, lr: c.baseLr });
  // The data's limits come before the options checked against them (a recipe's warmup is fitted to the run only when one batch fits).
  if (c.data.val < 1) {
    throw new UserError(
      c.data.valSplit !== undefined && c.data.valSplit > 0
        ? `--val-split ${c.data.valSplit} left no validation images: every class has a single image, and a class needs two to give one to validation`
        : 'the validation split is empty: give a data set with val/ images or --val-split',
      { exitCode: 2 },
    );
  }
  if (c.data.train < c.batchSize) {
    throw new UserError(`the training split has ${c.data.train} images, fewer than one batch of ${c.batchSize}; lower --batch-size`, { exitCode: 2 });
  }
  checkInteger(c.imageSize, '--image-size', 8);
  if (defaultResize(c.imageSize) > MAX_IMAGE_SIDE) {
    throw new UserError(`--image-size ${c.imageSize} needs a validation resize of ${defaultResize(c.imageSize)}; zoo takes sides up to ${MAX_IMAGE_SIDE}`, { exitCode: 2 });
  }
  if (!(c.minCropArea > 0 && c.minCropArea <= 1)) throw new UserError(`--min-crop-area must be in (0, 1], got ${c.minCropArea}`, { exitCode: 2 });
  const t = c.tricks;
  if (!(t.labelSmoothing >= 0 && t.labelSmoothing < 1)) throw new UserError(`--label-smoothing must be in [0, 1), got ${t.labelSmoothing}`, { exitCode: 2 });
  if (!(t.mixup >= 0)) throw new UserError(`--mixup alpha must be >= 0, got ${t.mixup}`, { exitCode: 2 });
  if (!(t.warmupEpochs >= 0)) throw new UserError(`--warmup must be >= 0 epochs, got ${t.warmupEpochs}`, { exitCode: 2 });
  if (t.warmupEpochs > c.epochs) throw new UserError(`--warmup ${t.warmupEpochs} is longer than the run (${c.epochs} epochs): give a shorter --warmup or --no-warmup`, { exitCode: 2 });
  if (!t.cosine && t.warmupEpochs > 0.25 * c.epochs) {
    throw new UserError(
      `--warmup ${t.warmupEpochs} reaches past the first step decay (epoch ${0.25 * c.epochs}, a quarter of ${c.epochs} epochs): ` +
        'the learning rate would fall tenfold the moment warmup ends. Use --cosine, a shorter --warmup or more --epochs',
      { exitCode: 2 },
    );
  }
  if (t.distill && !(t.temperature > 0)) throw new UserError(`--temperature must be positive, got ${t.temperature}`, { exitCode: 2 });
  if (c.hardWeight !== undefined && !(c.hardWeight >= 0 && c.hardWeight <= 1)) {
    throw new UserError(`--hard-weight must be in [0, 1], got ${c.hardWeight}`, { exitCode: 2 });
  }
}

/** Optimizer updates in one epoch: whole effective batches of whole micro-batches. */
export function updatesPerEpoch(c: TrainConfig): number {
  return updatesIn(c.data.train, c.batchSize, c.microBatch);
}

/** The learning-rate schedule of a run. */
export function scheduleOf(c: TrainConfig): LrSchedule {
  return new LrSchedule({
    baseLr: c.baseLr,
    batch: c.batchSize,
    linearScaling: c.tricks.linearScaling,
    itersPerEpoch: updatesPerEpoch(c),
    epochs: c.epochs,
    warmupEpochs: c.tricks.warmupEpochs,
    decay: c.tricks.cosine ? 'cosine' : 'step',
  });
}


/** The stream of update `u`'s mixup draw: independent of how the run was split by stops and resumes. */
export function mixupRng(seed: number, update: number): Rng {
  return new Rng((Math.imul(seed ^ 0x6d697875, 0x9e3779b1) + Math.imul(update + 1, 0x85ebca6b)) >>> 0);
}

/** The records of a classification run's log.jsonl (see loop.ts). */
export function readEpochLog(file: string): EpochRecord[] {
  return readLog<EpochRecord>(file);
}

export async function train(options: TrainOptions): Promise<TrainResult & { model: Model }> {
  const c = options.config;
  validateConfig(c);
  const emit = options.onEvent ?? (() => {});
  const t = c.tricks;
  if (t.distill && !options.teacher) throw new UserError('distillation is on but no teacher was given (--teacher), or turn it off with --no-distill', { exitCode: 2 });
  const classes = c.data.classes.length;
  const accumulate = c.batchSize / c.microBatch;
  const out = options.outDir;
  const files = runFiles(out);
  await registerCoreGradients();
  const records = await openRunDir<EpochRecord>(out, {
    ...(options.resume ? { resume: true } : {}),
    diffs: () => configDiffs(readRunConfig(files.config), c),
    resumeCommand: `zoo train --out ${out} --resume`,
  });

  // A bad image stops the run now, by name, not at the end of the first epoch (src/data/verify.ts).
  if (options.checkData ?? true) {
    for (const [split, dataset, depth] of [['val', options.data.val, 'decode'], ['train', options.data.train, 'header']] as const) {
      await verifyDataset(dataset, split === 'val' ? 'validation' : 'training', {
        depth,
        onProgress: (done, total) => emit({ type: 'checking', split, depth, done, total }),
        // Ctrl-C during a long check: the run then stops before its first update, as anywhere else.
        ...(options.signal ? { signal: options.signal } : {}),
      });
    }
  }
  await ensureDir(out, 'the run directory');

  const model = createModel(c.arch, { numClasses: classes, zeroInitLastBn: t.zeroGamma, seed: c.seed });
  const opt = new SGD(model.params, { momentum: c.momentum, nesterov: c.nesterov, weightDecay: c.weightDecay, noBiasDecay: t.noBiasDecay });
  let precision: ReturnType<typeof setMixedPrecision> | undefined;
  try {
    precision = t.fp16 ? setMixedPrecision(true) : undefined;
    if (precision) {
      emit({
        type: 'notice',
        message: precision.bf16
          ? `fp16: mixed precision with bf16: ${precision.detail}`
          : `fp16: this run trains in float32: ${precision.reason}; the paper reports the same accuracy either way (Table 4). ` +
            'Pass --no-fp16 to hide this notice.',
      });
    }

    const itersPerEpoch = updatesPerEpoch(c);
    const schedule = scheduleOf(c);
    if (!options.resume) await writeFileAtomic(files.config, `${JSON.stringify(c, null, 2)}\n`);
    // Data that moved (given with --data on --resume): the next resume finds it without --data.
    else await recordDataLocation(files.config, c.data.spec);
    const trainSet = options.data.train;
    if (datasetSize(trainSet) !== c.data.train) throw new Error('training split size differs from the configuration');
    const varList = [...model.params.trainable()];
    const loop = await runLoop(classificationTask(model, options, varList), {
      model,
      optimizer: opt,
      trainable: varList,
      schedule,
      epochs: c.epochs,
      itersPerEpoch,
      accumulate,
      batchSize: c.batchSize,
      files,
      records,
      ...loopControl(options),
      resumeCommand: `zoo train --out ${out} --resume`,
      onStart: (state) =>
        emit({
          type: 'start',
          config: c,
          params: model.params.countTrainable(),
          itersPerEpoch,
          totalUpdates: schedule.total,
          peakLr: schedule.peak,
          warmupUpdates: schedule.warmup,
          ...(options.resume ? { resumed: state } : {}),
        }),
      onEvent: emit,
      record: (base, f) => ({ ...base, valTop1: f.valTop1!, valTop5: f.valTop5!, valLoss: f.valLoss! }) as EpochRecord,
    });
    const result: TrainResult & { model: Model } = { finished: loop.finished, records: loop.records, globalUpdate: loop.globalUpdate, checkpoint: files.checkpoint, model };
    if (loop.finished && (options.export ?? true)) {
      const exported = await exportRun(model, c, files.onnx);
      emit({ type: 'exported', path: files.onnx, bytes: exported.bytes.length, check: exported.check });
      result.onnx = files.onnx;
      result.onnxBytes = exported.bytes;
      result.check = exported.check;
    }
    return result;
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    opt.dispose();
    if (precision?.bf16) setMixedPrecision(false);
  }
}

/** Classification as a task of the run loop: the loader's batches, (soft) cross-entropy, top-1/top-5. */
function classificationTask(model: Model, options: TrainOptions, varList: [string, tf.Variable][]): LoopTask<Batch> {
  const c = options.config;
  const t = c.tricks;
  const emit = options.onEvent ?? (() => {});
  const classes = c.data.classes.length;
  const size = c.imageSize;
  const loader: BatchLoader = createLoader({
    dataset: options.data.train,
    batchSize: c.microBatch,
    transform: trainTransform({ size: c.imageSize, scale: [c.minCropArea, 1] }),
    shuffle: true,
    seed: c.seed,
    dropLast: true,
    ...(options.workers !== undefined ? { workers: options.workers } : {}),
  });
  // A micro-batch's inputs, mixed and with the teacher's logits, made once (a recomputation reuses them).
  const prepared = new WeakMap<Batch, { images: Float32Array; targets: Float32Array; teacherLogits: Float32Array | undefined }>();
  const prepare = async (batch: Batch, update: number) => {
    const hit = prepared.get(batch);
    if (hit) return hit;
    const n = batch.count;
    const images = batch.images;
    const targets = smoothTargets(batch.labels, classes, t.labelSmoothing);
    if (t.mixup > 0) mixup(images, targets, n, sampleBeta(mixupRng(c.seed, update), t.mixup));
    const teacherLogits = t.distill ? await options.teacher!.logits(images, n, size) : undefined;
    if (teacherLogits && teacherLogits.length !== n * classes) {
      throw new UserError(`the teacher gives ${teacherLogits.length / n} outputs per image; the student has ${classes} classes`);
    }
    const p = { images, targets, teacherLogits };
    prepared.set(batch, p);
    return p;
  };
  return {
    batches: (epoch, skip) => loader.epoch(epoch, skip),
    count: (batch) => batch.count,
    step: async (batch, update) => {
      const { images, targets, teacherLogits } = await prepare(batch, update);
      const n = batch.count;
      const { value, grads } = tf.tidy(() => {
        const x = tf.tensor4d(images, [n, size, size, 3]);
        const y = tf.tensor2d(targets, [n, classes]);
        const r = teacherLogits ? tf.tensor2d(teacherLogits, [n, classes]) : undefined;
        return tf.variableGrads(() => {
          const z = model.forward(x, { mode: 'train' });
          return r ? distillationLoss(z, y, r, t.temperature, c.hardWeight) : softCrossEntropy(z, y as Tensor2D);
        }, varList.map(([, v]) => v));
      });
      const loss = (await value.data())[0]!;
      value.dispose();
      return { loss, grads };
    },
    diagnose: (batch) => diagnose(model, batch.images, prepared.get(batch)?.teacherLogits),
    evaluate: async (epoch, signal) => {
      const val: EvalResult = await evaluateModel(model, options.data.val, {
        ...(signal ? { signal } : {}),
        imageSize: size,
        // Forward only, so larger than the micro-batch where the device binds it (WebGPU's per-tensor limit).
        batchSize: Math.max(c.microBatch, Math.min(32, largestBatchThatFits(model.largestTensorBytes(size)))),
        ...(options.workers !== undefined ? { workers: options.workers } : {}),
        onProgress: (done, total) => emit({ type: 'validating', epoch, done, total }),
      });
      return { fields: { valTop1: val.top1, valTop5: val.top5, valLoss: val.loss }, seconds: val.seconds };
    },
    close: () => loader.close(),
  };
}

/** Where a non-finite loss came from, as far as can be told cheaply. */
async function diagnose(model: Model, images: Float32Array, teacherLogits: Float32Array | undefined): Promise<string> {
  if (teacherLogits && teacherLogits.some((v) => !Number.isFinite(v))) return "the teacher's logits are not finite";
  return diagnoseNonFinite(images, model.params);
}

/** Exports a trained model with its labels and preprocessing, checks it in ONNX Runtime, writes it. */
export async function exportRun(model: Model, c: TrainConfig, file: string): Promise<{ bytes: Uint8Array; check: CheckReport }> {
  const metadata = metadataProps({
    arch: c.arch,
    name: path.basename(path.dirname(path.resolve(file))),
    preprocessing: runPreprocessing(c.imageSize),
    labels: [...c.data.classes],
    training: JSON.stringify({ recipe: c.recipe, tricks: c.tricks, epochs: c.epochs, batchSize: c.batchSize, data: c.data.spec }),
  });
  const bytes = await exportOnnx(model, { imageSize: c.imageSize, metadata });
  // Four images, or what the device binds (WebGPU's per-tensor limit).
  const check = await checkExport(model, bytes, { imageSize: c.imageSize, batch: Math.min(4, largestBatchThatFits(model.largestTensorBytes(c.imageSize))) });
  if (!check.passed) throw new UserError(`the exported model does not reproduce the trained one (${describeCheck(check)}); the checkpoint is kept, nothing was written to ${file}`);
  await writeFileAtomic(file, bytes);
  return { bytes, check };
}
