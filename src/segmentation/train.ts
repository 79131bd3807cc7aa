/**
 * Fine-tuning an FCN: segmentation as a task of the shared run loop (src/train/loop.ts).
 *
 * The task supplies micro-batches of training crops (transform.ts: GluonCV's random scale of the base
 * size, padded crop, flip, all drawn from (seed, epoch, sample)), the loss of one (loss.ts: pixel
 * cross-entropy over labeled pixels plus 0.5 x the auxiliary head's; dropout masks drawn from
 * (seed, epoch, micro-batch), so a recomputed or resumed micro-batch is the same) and pixel accuracy and
 * mIoU of the validation split, at full images, at each epoch's end. The loop owns the rest: progress,
 * log.jsonl, checkpoints, exact resume, Ctrl-C, accumulation.
 *
 * Defaults follow GluonCV's fcn_resnet50_ade (SPEC section 5): SGD momentum 0.9, weight decay 1e-4,
 * poly decay (power 0.9), the head's learning rate x10, 0.01 for a batch of 16 scaled linearly, batch
 * norm trained (GluonCV synchronizes it across GPUs; here it sees one micro-batch), base size 520,
 * crop 480. A run directory holds run.json, log.jsonl, checkpoint.safetensors and model.onnx, as a
 * classification run's.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { UserError } from '../errors.js';
import { ensureDir, writeFileAtomic } from '../io/atomic.js';
import { getModelEntry } from '../models/registry.js';
import type { Model } from '../models/model.js';
import type { RunMode } from '../models/tf_builder.js';
import { registerCoreGradients } from '../backend/gradients.js';
import { checkWebGpuFits } from '../backend/webgpu.js';
import { epochOrder, sampleSeed } from '../data/batch.js';
import { IMAGENET_PREPROCESSING } from '../predict/preprocessing.js';
import { SGD } from '../train/optim.js';
import { LrSchedule } from '../train/schedule.js';
import {
  checkInteger,
  checkRunOptions,
  diagnoseNonFinite,
  openRunDir,
  prefetchBatches,
  readTaskRunConfig,
  recordDataLocation,
  runFiles,
  runTaskLoop,
  taskConfigDiffs,
  updatesIn,
  type LoopEvent,
  type LoopRecord,
  type LoopTask,
  type RunControlOptions,
  type TaskStartFields,
} from '../train/loop.js';
import { defaultFcnConfig, type FcnConfig } from './fcn.js';
import { createSegmenter, segmenterImageBytes, type Segmenter } from './segmenter.js';
import { segmentationLoss } from './loss.js';
import { loadSegBatch, type SegBatch } from './transform.js';
import type { SegDataset } from './ade.js';
import { SegMetric, type SegEvalResult } from './metrics.js';
import { checkSegmenterExport, describeSegCheck, exportSegmenter, type SegCheckReport } from './export.js';
import { segmentationMetadata } from './metadata.js';

/** Everything that determines what a segmentation run computes (run.json; --resume must match it). */
export interface SegTrainConfig {
  task: 'segmentation';
  /** Backbone architecture (registry name). */
  arch: string;
  /** The backbone as the user named it (an architecture: random initialization). */
  backbone: string;
  /** Whether the backbone's weights were loaded (false: random initialization). */
  pretrained: boolean;
  classes: string[];
  /**
   * The data as read: its root, the sample counts of the two splits, and a digest of each split's sample
   * ids (sorted), so that a resume refuses a folder whose first n samples have changed.
   */
  data: { spec: string; train: number; val: number; trainIds?: string; valIds?: string };
  epochs: number;
  /** Crops per update. */
  batchSize: number;
  /** Crops per forward/backward pass. */
  microBatch: number;
  /** Peak learning rate of the backbone; the head gets headLrScale times it. */
  lr: number;
  headLrScale: number;
  momentum: number;
  weightDecay: number;
  warmupEpochs: number;
  /** Exponent of the poly decay. */
  power: number;
  /** Training crops: long side random in scale x baseSize, crop cropSize. */
  baseSize: number;
  cropSize: number;
  scale: [number, number];
  flip: boolean;
  /** Batch norm: 'train' (batch statistics, GluonCV's) or 'frozen' (the backbone's running statistics). */
  bn: 'train' | 'frozen';
  seed: number;
  /** Changes from the default FCN configuration (defaultFcnConfig). */
  fcn: Partial<Omit<FcnConfig, 'numClasses'>>;
}

/** GluonCV's ADE20K learning rate for a batch of 16. */
export const LR_PER_16 = 0.01;

/** The configuration of a run from what the user gave, with GluonCV's defaults for the rest. */
export function segTrainConfig(c: Partial<SegTrainConfig> & Pick<SegTrainConfig, 'arch' | 'backbone' | 'classes' | 'data'>): SegTrainConfig {
  const batchSize = c.batchSize ?? 8;
  return {
    task: 'segmentation',
    pretrained: false,
    epochs: 30,
    batchSize,
    microBatch: Math.min(c.microBatch ?? 4, batchSize),
    lr: (LR_PER_16 * batchSize) / 16,
    headLrScale: 10,
    momentum: 0.9,
    weightDecay: 1e-4,
    warmupEpochs: 0,
    power: 0.9,
    baseSize: 520,
    cropSize: 480,
    scale: [0.5, 2.0],
    flip: true,
    bn: 'train',
    seed: 0,
    fcn: {},
    ...c,
  };
}

/** One record of a segmentation run's log.jsonl. */
export interface SegEpochRecord extends LoopRecord {
  /** Pixel accuracy and mean IoU of the validation split. */
  valPixAcc: number;
  valMIoU: number;
}

export type SegTrainEvent =
  | ({ type: 'start'; config: SegTrainConfig } & TaskStartFields)
  | { type: 'validating'; epoch: number; done: number; total: number }
  | { type: 'exported'; path: string; bytes: number; check: SegCheckReport }
  | LoopEvent<SegEpochRecord>;

export interface SegTrainOptions extends RunControlOptions {
  config: SegTrainConfig;
  data: { train: SegDataset; val: SegDataset };
  /** A classifier whose backbone the segmenter starts from (config.pretrained must say so). */
  backbone?: Model;
  onEvent?: (e: SegTrainEvent) => void;
  /** Export model.onnx at the end (default true). */
  export?: boolean;
}

export interface SegTrainResult {
  finished: boolean;
  records: SegEpochRecord[];
  globalUpdate: number;
  checkpoint: string;
  onnx?: string;
  check?: SegCheckReport;
  /** The trained segmenter; the caller disposes it. */
  segmenter: Segmenter;
}

/** Checks a configuration before any work starts. */
export function validateSegConfig(c: SegTrainConfig): void {
  getModelEntry(c.arch);
  checkRunOptions(c);
  checkInteger(c.baseSize, '--base-size', 16);
  checkInteger(c.cropSize, '--crop-size', 16);
  const [lo, hi] = c.scale;
  if (!(lo > 0 && hi >= lo && Number.isFinite(hi))) throw new UserError(`--scale must be two numbers 0 < min <= max, got ${c.scale.join(',')}`, { exitCode: 2 });
  if (!(c.headLrScale > 0)) throw new UserError(`--head-lr-scale must be positive, got ${c.headLrScale}`, { exitCode: 2 });
  if (!(c.power > 0)) throw new UserError(`--power must be positive, got ${c.power}`, { exitCode: 2 });
  if (!(c.warmupEpochs >= 0 && c.warmupEpochs < c.epochs)) throw new UserError(`--warmup must be at least 0 and below the run's ${c.epochs} epochs, got ${c.warmupEpochs}`, { exitCode: 2 });
  if (c.bn !== 'train' && c.bn !== 'frozen') throw new UserError(`--bn must be 'train' or 'frozen', got '${c.bn}'`, { exitCode: 2 });
  if (c.bn === 'train' && c.microBatch < 2) throw new UserError('--bn train needs at least 2 crops per micro-batch (batch statistics of one crop are noise); use --micro-batch 2 or more, or --bn frozen', { exitCode: 2 });
  if (c.classes.length < 1) throw new UserError('the data set has no classes', { exitCode: 2 });
  if (c.data.val < 1) throw new UserError('the validation split is empty', { exitCode: 2 });
  if (c.data.train < c.batchSize) throw new UserError(`the training split has ${c.data.train} images, fewer than one batch of ${c.batchSize}; lower --batch-size`, { exitCode: 2 });
}

/**
 * On WebGPU (a no-op elsewhere), refuses before any work a micro-batch of training crops, or the largest
 * validation image (validation runs whole images one at a time; sizes known where readAde read them),
 * whose largest tensor the device cannot bind: it would fail on the device mid-run.
 */
export function checkSegFitsDevice(c: SegTrainConfig, val: SegDataset): void {
  const fcn = defaultFcnConfig(c.classes.length, c.fcn);
  const s = c.cropSize;
  const at = (size: number) => segmenterImageBytes(c.arch, fcn, size, size, { aux: fcn.aux && fcn.auxWeight > 0 });
  checkWebGpuFits({ what: `FCN training on ${c.arch} at ${s}x${s} crops`, batch: c.microBatch, perImageBytes: at(s), perImageBytesAt: at, size: s, sizeOption: '--crop-size' });
  let largest: { image: string; width: number; height: number } | undefined;
  for (const v of val.samples) {
    if (v.width && v.height && (!largest || v.width * v.height > largest.width * largest.height)) largest = { image: v.image, width: v.width, height: v.height };
  }
  if (!largest) return;
  checkWebGpuFits({
    what: `validation of ${largest.image} at its ${largest.width}x${largest.height}`,
    batch: 1,
    perImageBytes: segmenterImageBytes(c.arch, fcn, largest.height, largest.width),
    advice: `train with --output-stride 16 (a quarter of the stage 4 activations), on the wasm backend (--backend wasm), or on smaller validation images`,
  });
}

export function segUpdatesPerEpoch(c: SegTrainConfig): number {
  return updatesIn(c.data.train, c.batchSize, c.microBatch);
}

export function segSchedule(c: SegTrainConfig): LrSchedule {
  return new LrSchedule({
    baseLr: c.lr,
    batch: c.batchSize,
    linearScaling: false,
    itersPerEpoch: segUpdatesPerEpoch(c),
    epochs: c.epochs,
    warmupEpochs: c.warmupEpochs,
    decay: 'poly',
    power: c.power,
  });
}

/** A digest of a split's sample ids (in their order), for run.json. */
export function sampleIdsDigest(data: SegDataset): string {
  return createHash('sha256').update(data.samples.map((s) => s.id).join('\n')).digest('hex').slice(0, 16);
}

/** The run's configuration as recorded in its run.json, its fields checked. */
export async function readSegRunConfig(file: string): Promise<SegTrainConfig> {
  const c = await readTaskRunConfig<SegTrainConfig>(file, 'segmentation');
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  const d = c.data as Partial<SegTrainConfig['data']> | undefined;
  const problem =
    !d || typeof d !== 'object' || typeof d.spec !== 'string' || !num(d.train) || !num(d.val)
      ? "'data' ({spec, train, val})"
      : !c.fcn || typeof c.fcn !== 'object'
        ? "'fcn' (an object)"
        : (['epochs', 'batchSize', 'microBatch', 'lr', 'headLrScale', 'momentum', 'weightDecay', 'warmupEpochs', 'power', 'baseSize', 'cropSize', 'seed'] as const).find((k) => !num(c[k]));
  if (problem) throw new UserError(`${file}: ${problem} is missing or malformed; restore the file or start a new run`);
  return c;
}

/** The segmenter a configuration describes (fresh parameters). */
export function segmenterFor(c: SegTrainConfig): Segmenter {
  return createSegmenter(c.arch, c.classes.length, { config: c.fcn, seed: c.seed });
}

/** The normalization of a run's inputs (the backbones' ImageNet statistics). */
export const SEG_PREPROCESSING = { mean: IMAGENET_PREPROCESSING.mean, std: IMAGENET_PREPROCESSING.std };

/**
 * Runs the tfjs segmenter over a split, one full image at a time, and accumulates the benchmark's
 * metrics (metrics.ts). `onImage` sees each image's predicted labels (to write prediction PNGs). When
 * `signal` aborts, stops before the next image by throwing its reason (signal.throwIfAborted()).
 */
export async function evaluateSegmenter(
  seg: Segmenter,
  data: SegDataset,
  options: {
    preprocessing?: { mean: number[]; std: number[] };
    onProgress?: (done: number, total: number) => void;
    onImage?: (index: number, labels: Uint8Array | Uint16Array, height: number, width: number) => Promise<void> | void;
    signal?: AbortSignal;
  } = {},
): Promise<{ result: SegEvalResult; seconds: number }> {
  const t0 = performance.now();
  const metric = new SegMetric(data.classes.length);
  const pre = options.preprocessing ?? SEG_PREPROCESSING;
  const n = data.samples.length;
  let ahead = n > 0 ? loadSegBatch(data, [0], { ...pre, train: false, seed: 0, epoch: 0 }) : undefined;
  ahead?.catch(() => {}); // surfaced when awaited; a stopped evaluation never awaits it
  for (let i = 0; i < n; i++) {
    // Let a signal handler run: the awaits below may resolve without reaching the event loop.
    if (options.signal) await new Promise((resolve) => setImmediate(resolve));
    options.signal?.throwIfAborted();
    const b = await ahead!;
    ahead = i + 1 < n ? loadSegBatch(data, [i + 1], { ...pre, train: false, seed: 0, epoch: 0 }) : undefined;
    ahead?.catch(() => {});
    const x = tf.tensor4d(b.images, [1, b.height, b.width, 3]) as Tensor4D;
    let labels: Uint8Array | Uint16Array;
    try {
      labels = await seg.predict(x);
    } finally {
      x.dispose();
    }
    const sample = data.samples[i]!;
    metric.add(labels, b.labels, { width: b.width, predictions: `the prediction of ${sample.image}`, labels: sample.annotation });
    await options.onImage?.(i, labels, b.height, b.width);
    options.onProgress?.(i + 1, n);
  }
  return { result: metric.result(data.classes), seconds: (performance.now() - t0) / 1000 };
}

interface SegMicroBatch extends SegBatch {
  epoch: number;
  /** Position of the micro-batch in its epoch (its dropout stream). */
  index: number;
}

/** Fine-tunes a segmenter (module comment). */
export async function trainSegmenter(options: SegTrainOptions): Promise<SegTrainResult> {
  const c = options.config;
  validateSegConfig(c);
  checkSegFitsDevice(c, options.data.val);
  const emit = options.onEvent ?? (() => {});
  const out = options.outDir;
  const files = runFiles(out);
  if (options.data.train.samples.length !== c.data.train || options.data.val.samples.length !== c.data.val) {
    throw new Error('the data does not match the configuration (train/val sample counts)');
  }
  if (!options.resume && c.pretrained !== !!options.backbone) throw new Error('config.pretrained must say whether a backbone is given');
  await registerCoreGradients();
  const resumeCommand = `zoo seg train --out ${out} --resume`;
  const records = await openRunDir<SegEpochRecord>(out, {
    ...(options.resume ? { resume: true } : {}),
    diffs: async () => taskConfigDiffs(await readSegRunConfig(files.config), c),
    resumeCommand,
  });
  if (options.resume) await recordDataLocation(files.config, c.data.spec);
  await ensureDir(out, 'the run directory');

  const seg = segmenterFor(c);
  // A resumed run's backbone is in its checkpoint.
  if (options.backbone && !options.resume) seg.loadBackbone(options.backbone);
  // Without its loss (--no-aux, --aux-weight 0) the auxiliary head gets no gradient and is not trained.
  const auxNames = new Set(seg.net.auxHead && seg.config.auxWeight > 0 ? [] : (seg.net.auxHead?.params.map((p) => p.name) ?? []));
  const trainable = [...seg.params.trainable()].filter(([name]) => !auxNames.has(name));
  const head = seg.headParams();
  const opt = new SGD(seg.params, {
    momentum: c.momentum,
    nesterov: false,
    weightDecay: c.weightDecay,
    lrScale: new Map([...head].map((name) => [name, c.headLrScale])),
  });
  try {
    const itersPerEpoch = segUpdatesPerEpoch(c);
    const schedule = segSchedule(c);
    if (!options.resume) await writeFileAtomic(files.config, `${JSON.stringify(c, null, 2)}\n`);
    const loop = await runTaskLoop({
      task: segmentationTask(seg, options, trainable, emit),
      config: c,
      model: seg,
      optimizer: opt,
      trainable,
      schedule,
      itersPerEpoch,
      files,
      records,
      control: options,
      resumeCommand,
      onStart: (fields) => emit({ type: 'start', config: c, ...fields }),
      onEvent: emit,
      record: (base, f) => ({ ...base, valPixAcc: f.valPixAcc!, valMIoU: f.valMIoU! }),
    });
    const result: SegTrainResult = { finished: loop.finished, records: loop.records, globalUpdate: loop.globalUpdate, checkpoint: files.checkpoint, segmenter: seg };
    if (loop.finished && (options.export ?? true)) {
      const exported = await exportSegmenterRun(seg, c, files.onnx);
      emit({ type: 'exported', path: files.onnx, bytes: exported.bytes.length, check: exported.check });
      result.onnx = files.onnx;
      result.check = exported.check;
    }
    return result;
  } catch (e) {
    seg.dispose();
    throw e;
  } finally {
    opt.dispose();
  }
}

/** Sizes the export of a run is checked at: around the crop size (capped for speed), none a multiple of 8. */
export function segCheckSizes(cropSize: number): [number, number][] {
  const s = Math.min(cropSize, 224);
  const odd = (v: number) => Math.max(17, Math.round(v) | 1);
  return [
    [odd(s), odd(s)],
    [odd(s * 0.75), odd(s * 1.25)],
    [odd(s * 1.1), odd(s * 0.6)],
  ];
}

/**
 * Exports a trained segmenter with its labels and preprocessing, checks it in ONNX Runtime on three
 * sizes, writes it. `argmax` adds the labels output; `aux` the auxiliary head's logits.
 */
export async function exportSegmenterRun(
  seg: Segmenter,
  c: SegTrainConfig,
  file: string,
  options: { argmax?: boolean; aux?: boolean; name?: string } = {},
): Promise<{ bytes: Uint8Array; check: SegCheckReport }> {
  const metadata = segmentationMetadata({
    arch: c.arch,
    // The run's name: its directory's (the file's own when it is written into the run).
    name: options.name ?? path.basename(path.dirname(path.resolve(file))),
    labels: c.classes,
    ...SEG_PREPROCESSING,
    training: JSON.stringify({ backbone: c.backbone, pretrained: c.pretrained, epochs: c.epochs, batchSize: c.batchSize, cropSize: c.cropSize, data: c.data.spec }),
  });
  const bytes = await exportSegmenter(seg, { metadata, ...(options.argmax ? { argmax: true } : {}), ...(options.aux ? { aux: true } : {}) });
  const check = await checkSegmenterExport(seg, bytes, { sizes: segCheckSizes(c.cropSize) });
  if (!check.passed) throw new UserError(`the exported segmenter does not reproduce the trained one (${describeSegCheck(check)}); the checkpoint is kept, nothing was written to ${file}`);
  await writeFileAtomic(file, bytes);
  return { bytes, check };
}

/** Segmentation as a task of the run loop. */
function segmentationTask(seg: Segmenter, options: SegTrainOptions, trainable: [string, tf.Variable][], emit: (e: SegTrainEvent) => void): LoopTask<SegMicroBatch> {
  const c = options.config;
  const data = options.data.train;
  const mode: RunMode = c.bn === 'train' ? 'train' : 'frozen';
  const aux = seg.net.auxHead !== undefined && seg.config.auxWeight > 0;
  const transform = { ...SEG_PREPROCESSING, baseSize: c.baseSize, cropSize: c.cropSize, scale: c.scale, flip: c.flip, train: true, seed: c.seed };
  const load = (epoch: number, order: Int32Array, index: number): Promise<SegMicroBatch> =>
    loadSegBatch(data, order.subarray(index * c.microBatch, (index + 1) * c.microBatch), { ...transform, epoch }).then((b) => ({ ...b, epoch, index }));

  return {
    batches(epoch, skip) {
      const order = epochOrder(data.samples.length, { shuffle: true, seed: c.seed, epoch });
      return prefetchBatches(Math.floor(data.samples.length / c.microBatch), skip, (index) => load(epoch, order, index));
    },
    count: (b) => b.n,
    step: async (b) => {
      const terms: Record<string, Tensor> = {};
      const dropoutSeed = sampleSeed(c.seed ^ 0x64726f70, b.epoch, b.index);
      const { value, grads } = tf.tidy(() => {
        const x = tf.tensor4d(b.images, [b.n, b.height, b.width, 3]) as Tensor4D;
        return tf.variableGrads(() => {
          const r = seg.logits(x, mode, { aux, dropoutSeed });
          const l = segmentationLoss(r.out, r.aux, b.labels, seg.config.auxWeight);
          terms.seg = tf.keep(l.seg);
          if (l.aux) terms.aux = tf.keep(l.aux);
          return l.total;
        }, trainable.map(([, v]) => v));
      });
      const names = Object.keys(terms);
      const values = await Promise.all([value, ...names.map((k) => terms[k]!)].map((t) => t.data()));
      tf.dispose([value, ...Object.values(terms)]);
      return { loss: values[0]![0]!, grads, terms: Object.fromEntries(names.map((k, i) => [k, values[i + 1]![0]!])) };
    },
    diagnose: (b) => diagnoseNonFinite(b.images, seg.params),
    evaluate: async (epoch, signal) => {
      const r = await evaluateSegmenter(seg, options.data.val, { onProgress: (done, total) => emit({ type: 'validating', epoch, done, total }), ...(signal ? { signal } : {}) });
      return { fields: { valPixAcc: r.result.pixAcc, valMIoU: r.result.mIoU }, seconds: r.seconds };
    },
  };
}
