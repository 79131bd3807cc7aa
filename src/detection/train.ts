/**
 * Fine-tuning a detector: detection as a task of the shared run loop (src/train/loop.ts).
 *
 * The task supplies micro-batches of VOC images (resized, flipped by a per-(seed, epoch, image) draw,
 * padded to the batch's largest size), the loss of one (the four terms of losses.ts; proposals and
 * targets drawn from a per-(seed, epoch, image) stream, so a recomputed or resumed micro-batch samples
 * the same regions) and the VOC07 mAP of the validation split at each epoch's end. The loop owns the
 * rest: progress, log.jsonl, checkpoints, exact resume, Ctrl-C, accumulation.
 *
 * Defaults follow GluonCV's faster_rcnn_resnet50_v1b_voc (SPEC section 5): SGD momentum 0.9, batch norm
 * and the stem and stage 1 frozen, the learning rate divided by 10 at 70% of the run (GluonCV's 14 of
 * 20 epochs), a linear warmup, weight decay 5e-4, and 0.001 per image of the batch as the learning rate.
 * A run directory holds run.json, log.jsonl, checkpoint.safetensors and model.onnx, as a classification run's.
 */
import * as tf from '@tensorflow/tfjs-core';
import { readsSynchronously } from '../backend/index.js';
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.js';
import { ensureDir, writeFileAtomic } from '../io/atomic.js';
import { getModelEntry } from '../models/registry.js';
import type { Model } from '../models/model.js';
import { registerCoreGradients } from '../backend/gradients.js';
import { verifyImageFiles, type BadImage, type VerifyDepth } from '../data/verify.js';
import { decodeImage } from '../data/image_folder.js';
import { sampleSeed, epochOrder } from '../data/batch.js';
import { IMAGENET_PREPROCESSING } from '../predict/preprocessing.js';
import { Rng } from '../util/random.js';
import { SGD } from '../train/optim.js';
import { LrSchedule } from '../train/schedule.js';
import { checkInteger, checkRunOptions, diagnoseNonFinite, openRunDir, prefetchBatches, readTaskRunConfig, recordDataLocation, runFiles, runTaskLoop, taskConfigDiffs, updatesIn, type LoopEvent, type MicroStep, type TaskStartFields, type LoopRecord, type LoopTask, type RunControlOptions } from '../train/loop.js';
import { createDetector, concatRois, detectorTensorBytes, type Detector } from './detector.js';
import { defaultFasterRcnnConfig, type FasterRcnnConfig } from './faster_rcnn.js';
import { checkRoiAlignBackend } from '../ops/roi_align.js';
import { checkWebGpuFits, formatBytes, maxBindingBytes } from '../backend/webgpu.js';
import { rpnTargets, sampleRois } from './targets.js';
import { classColumns, roiLoss, rpnLoss, type RpnLossTargets } from './losses.js';
import { loadDetectionBatch, resizedShape, toDevkitBoxes, type DetectionBatch } from './transform.js';
import type { VocDataset, VocImage } from './voc.js';
import { evaluateVoc, type Detection, type VocEvalResult } from './voc_eval.js';
import { checkDetectorExport, describeDetectorCheck, exportDetector, type DetectorCheckReport } from './export.js';
import { detectionMetadata } from './metadata.js';

/** Everything that determines what a detection run computes (run.json; --resume must match it). */
export interface DetTrainConfig {
  task: 'detection';
  /** Backbone architecture (registry name). */
  arch: string;
  /** The backbone as the user named it (an architecture: random initialization). */
  backbone: string;
  /** Whether the backbone's weights were loaded (false: random initialization). */
  pretrained: boolean;
  classes: string[];
  /**
   * The data as read: its root, the split files of each year ('VOC2007/trainval', ...), the years asked
   * for, the image counts and a digest of each split's image ids (vocIdsDigest; runs of older versions
   * have none), so that a resume refuses a split whose contents have changed.
   */
  data: { spec: string; trainSplit: string; valSplit: string; years?: string[]; trainFiles?: string[]; valFiles?: string[]; train: number; val: number; trainIds?: string; valIds?: string };
  epochs: number;
  /** Images per update. */
  batchSize: number;
  /** Images per forward/backward pass. */
  microBatch: number;
  /** Peak learning rate. */
  lr: number;
  momentum: number;
  weightDecay: number;
  warmupEpochs: number;
  /** Fractions of the run at which the rate is divided by 10. */
  steps: number[];
  /** Resize: short side, long side at most. */
  minSize: number;
  maxSize: number;
  /** Probability of a horizontal flip. */
  flip: number;
  seed: number;
  /** Changes from the default detector configuration (defaultFasterRcnnConfig). */
  detector: Partial<Omit<FasterRcnnConfig, 'numClasses'>>;
}

/** Default learning rate per image of the batch (GluonCV's VOC training: 0.001 for one image per GPU). */
export const LR_PER_IMAGE = 0.001;

/** The configuration of a run from what the user gave, with GluonCV's defaults for the rest. */
export function detTrainConfig(c: Partial<DetTrainConfig> & Pick<DetTrainConfig, 'arch' | 'backbone' | 'classes' | 'data'>): DetTrainConfig {
  const batchSize = c.batchSize ?? 4;
  return {
    task: 'detection',
    pretrained: false,
    epochs: 12,
    batchSize,
    microBatch: Math.min(c.microBatch ?? 2, batchSize),
    lr: LR_PER_IMAGE * batchSize,
    momentum: 0.9,
    weightDecay: 5e-4,
    warmupEpochs: 0.5,
    steps: [0.7],
    minSize: 600,
    maxSize: 1000,
    flip: 0.5,
    seed: 0,
    detector: {},
    ...c,
  };
}

/** One record of a detection run's log.jsonl. */
export interface DetEpochRecord extends LoopRecord {
  /** VOC07 11-point mAP and area-under-curve mAP of the validation split. */
  valMap07: number;
  valMap: number;
}

export type DetTrainEvent =
  | ({ type: 'start'; config: DetTrainConfig } & TaskStartFields)
  | { type: 'validating'; epoch: number; done: number; total: number }
  | { type: 'checking'; split: 'train' | 'val'; depth: VerifyDepth; done: number; total: number }
  | { type: 'exported'; path: string; bytes: number; check: DetectorCheckReport }
  | LoopEvent<DetEpochRecord>;

export interface DetTrainOptions extends RunControlOptions {
  config: DetTrainConfig;
  data: { train: VocDataset; val: VocDataset };
  /** A classifier whose backbone the detector starts from (config.pretrained must say so). */
  backbone?: Model;
  onEvent?: (e: DetTrainEvent) => void;
}

export interface DetTrainResult {
  finished: boolean;
  records: DetEpochRecord[];
  globalUpdate: number;
  checkpoint: string;
  onnx?: string;
  check?: DetectorCheckReport;
  /** The trained detector; the caller disposes it. */
  detector: Detector;
}

/** Checks a configuration before any work starts. */
export function validateDetConfig(c: DetTrainConfig): void {
  getModelEntry(c.arch);
  checkRunOptions(c);
  checkInteger(c.minSize, '--min-size', 32);
  checkInteger(c.maxSize, '--max-size', 32);
  if (c.maxSize < c.minSize) throw new UserError(`--max-size ${c.maxSize} is below --min-size ${c.minSize}`, { exitCode: 2 });
  if (!(c.warmupEpochs >= 0 && c.warmupEpochs <= c.epochs)) throw new UserError(`--warmup must be between 0 and the run's ${c.epochs} epochs, got ${c.warmupEpochs}`, { exitCode: 2 });
  if (!c.steps.every((s) => s > 0 && s < 1)) throw new UserError(`--lr-steps must be fractions of the run in (0, 1), got ${c.steps.join(',')}`, { exitCode: 2 });
  const firstStep = Math.min(...c.steps) * c.epochs;
  if (c.warmupEpochs > firstStep) {
    throw new UserError(`--warmup ${c.warmupEpochs} reaches past the first --lr-steps decay (epoch ${firstStep}): the rate would fall tenfold the moment warmup ends; give a shorter --warmup`, { exitCode: 2 });
  }
  if (!(c.flip >= 0 && c.flip <= 1)) throw new UserError(`--flip must be a probability in [0, 1], got ${c.flip}`, { exitCode: 2 });
  if (c.classes.length < 1) throw new UserError('the data set has no classes', { exitCode: 2 });
  if (c.data.val < 1) throw new UserError(`the validation split '${c.data.valSplit}' is empty`, { exitCode: 2 });
  if (c.data.train < c.batchSize) throw new UserError(`the training split has ${c.data.train} images, fewer than one batch of ${c.batchSize}; lower --batch-size`, { exitCode: 2 });
}

export function detUpdatesPerEpoch(c: DetTrainConfig): number {
  return updatesIn(c.data.train, c.batchSize, c.microBatch);
}

export function detSchedule(c: DetTrainConfig): LrSchedule {
  return new LrSchedule({
    baseLr: c.lr,
    batch: c.batchSize,
    linearScaling: false,
    itersPerEpoch: detUpdatesPerEpoch(c),
    epochs: c.epochs,
    warmupEpochs: c.warmupEpochs,
    decay: 'step',
    steps: c.steps,
  });
}

/** A digest of the ids ('VOC2007/000005') of a split's images, in their order, for run.json. */
export function vocIdsDigest(images: readonly VocImage[]): string {
  return createHash('sha256').update(images.map((im) => `${im.year}/${im.id}`).join('\n')).digest('hex').slice(0, 16);
}

/** The run's configuration as recorded in its run.json. */
export function readDetRunConfig(file: string): Promise<DetTrainConfig> {
  return readTaskRunConfig<DetTrainConfig>(file, 'detection');
}

/** Ground truth of VOC images in the evaluator's form (difficult objects kept). */
export function groundTruth(images: readonly VocImage[]) {
  return images.map((im) => ({ id: `${im.year}/${im.id}`, objects: im.objects.map((o) => ({ label: o.label, box: o.box, difficult: o.difficult })) }));
}

/**
 * Runs the tfjs detector over images and evaluates with the VOC metric. When `signal` aborts, stops
 * before the next batch by throwing its reason (signal.throwIfAborted()).
 */
export async function evaluateDetector(
  det: Detector,
  images: readonly VocImage[],
  classes: readonly string[],
  options: {
    minSize: number;
    maxSize: number;
    batchSize?: number;
    preprocessing?: { mean: number[]; std: number[] };
    onProgress?: (done: number, total: number) => void;
    signal?: AbortSignal;
  },
): Promise<{ result: VocEvalResult; detections: Detection[]; seconds: number }> {
  const t0 = performance.now();
  const detections: Detection[] = [];
  const bs = options.batchSize ?? 1;
  for (let at = 0; at < images.length; at += bs) {
    // Let a signal handler run: the awaits below may resolve without reaching the event loop.
    if (options.signal) await new Promise((resolve) => setImmediate(resolve));
    options.signal?.throwIfAborted();
    const idx = Array.from({ length: Math.min(bs, images.length - at) }, (_, k) => at + k);
    const batch = await loadDetectionBatch(images, idx, { minSize: options.minSize, maxSize: options.maxSize, ...(options.preprocessing ? { preprocessing: options.preprocessing } : {}) });
    const x = tf.tensor4d(batch.images, [batch.count, batch.height, batch.width, 3]) as Tensor4D;
    let found;
    try {
      found = await det.detect(x);
    } finally {
      x.dispose();
    }
    found.forEach((d, k) => {
      const t = batch.targets[k]!;
      const im = images[idx[k]!]!;
      const devkit = toDevkitBoxes(d.boxes, t);
      for (let i = 0; i < d.scores.length; i++) {
        detections.push({ imageId: `${im.year}/${im.id}`, label: d.classes[i]!, score: d.scores[i]!, box: [devkit[4 * i]!, devkit[4 * i + 1]!, devkit[4 * i + 2]!, devkit[4 * i + 3]!] });
      }
    });
    options.onProgress?.(at + idx.length, images.length);
  }
  const result = evaluateVoc(groundTruth(images), detections, classes);
  return { result, detections, seconds: (performance.now() - t0) / 1000 };
}

interface DetBatch extends DetectionBatch {
  epoch: number;
  /** Position of the micro-batch in its epoch (the stream of its sampling). */
  index: number;
}

/** Fine-tunes a detector (module comment). */
export async function trainDetector(options: DetTrainOptions): Promise<DetTrainResult> {
  const c = options.config;
  validateDetConfig(c);
  // Adaptive RoIAlign sampling runs on wasm and cpu only, and WebGPU binds each tensor whole: say so before the run starts.
  checkRoiAlignBackend(defaultFasterRcnnConfig(c.classes.length, c.detector).roiAlign);
  checkDetFitsDevice(c, options.data.train.images, options.data.val.images, { export: options.export ?? true });
  const emit = options.onEvent ?? (() => {});
  const out = options.outDir;
  const files = runFiles(out);
  if (options.data.train.images.length !== c.data.train || options.data.val.images.length !== c.data.val) {
    throw new Error('the data does not match the configuration (train/val image counts)');
  }
  if (!options.resume && c.pretrained !== !!options.backbone) throw new Error('config.pretrained must say whether a backbone is given');
  await registerCoreGradients();
  const records = await openRunDir<DetEpochRecord>(out, {
    ...(options.resume ? { resume: true } : {}),
    diffs: async () => taskConfigDiffs(await readDetRunConfig(files.config), c),
    resumeCommand: `zoo det train --out ${out} --resume`,
  });
  if (options.resume) await recordDataLocation(files.config, c.data.spec);
  // A bad image stops the run now, by name, not at the end of the first epoch.
  if (options.checkData ?? true) {
    for (const [split, images, depth] of [['val', options.data.val.images, 'decode'], ['train', options.data.train.images, 'header']] as const) {
      const bad = await checkDetectionImages(images, depth, {
        onProgress: (done, total) => emit({ type: 'checking', split, depth, done, total }),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      if (bad.length) {
        throw new UserError(`${bad.length} ${split === 'val' ? 'validation' : 'training'} image(s) cannot be used: ${bad.slice(0, 3).map((b) => b.message).join('; ')}. Replace or remove them and start again`);
      }
    }
  }
  await ensureDir(out, 'the run directory');

  const det = createDetector(c.arch, c.classes.length, { config: c.detector, seed: c.seed });
  // A resumed run's backbone is in its checkpoint.
  if (options.backbone && !options.resume) det.loadBackbone(options.backbone);
  const trainable = [...det.trainableVariables()];
  const opt = new SGD(det.params, { momentum: c.momentum, nesterov: false, weightDecay: c.weightDecay });
  try {
    const itersPerEpoch = detUpdatesPerEpoch(c);
    const schedule = detSchedule(c);
    if (!options.resume) await writeFileAtomic(files.config, `${JSON.stringify(c, null, 2)}\n`);
    const loop = await runTaskLoop({
      task: detectionTask(det, options, trainable, emit),
      config: c,
      model: det,
      optimizer: opt,
      trainable,
      schedule,
      itersPerEpoch,
      files,
      records,
      control: options,
      resumeCommand: `zoo det train --out ${out} --resume`,
      onStart: (fields) => emit({ type: 'start', config: c, ...fields }),
      onEvent: emit,
      record: (base, f) => ({ ...base, valMap07: f.valMap07!, valMap: f.valMap! }),
    });
    const result: DetTrainResult = { finished: loop.finished, records: loop.records, globalUpdate: loop.globalUpdate, checkpoint: files.checkpoint, detector: det };
    if (loop.finished && (options.export ?? true)) {
      const exported = await exportDetectorRun(det, c, files.onnx);
      emit({ type: 'exported', path: files.onnx, bytes: exported.bytes.length, check: exported.check });
      result.onnx = files.onnx;
      result.check = exported.check;
    }
    return result;
  } catch (e) {
    det.dispose();
    throw e;
  } finally {
    opt.dispose();
  }
}

/**
 * Checks the image files of a split against their annotations' sizes, as training reads them: the stored
 * size, the EXIF orientation ignored (loadDetectionSample). 'header' reads each file's header
 * (verifyImageFiles); 'decode' decodes every pixel, which finds truncated and corrupt files too.
 */
export async function checkDetectionImages(
  images: readonly VocImage[],
  depth: VerifyDepth,
  options: { onProgress?: (done: number, total: number) => void; signal?: AbortSignal; maxBad?: number } = {},
): Promise<BadImage[]> {
  const sizes = new Map(images.map((im) => [im.file, { width: im.width, height: im.height, source: `its annotation ${im.annotation}` }]));
  if (depth === 'header') {
    return verifyImageFiles([...sizes.keys()], {
      depth,
      expectedSize: (f) => sizes.get(f),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }
  // verifyImageFiles' decode applies the orientation; this one decodes as training does.
  const maxBad = options.maxBad ?? 20;
  const bad: BadImage[] = [];
  const files = [...sizes.keys()];
  let next = 0;
  let done = 0;
  const every = Math.max(1, Math.floor(files.length / 100));
  const worker = async () => {
    while (next < files.length && bad.length < maxBad && !options.signal?.aborted) {
      const file = files[next++]!;
      try {
        const got = await decodeImage(file, { orientation: false });
        const want = sizes.get(file)!;
        if (got.width !== want.width || got.height !== want.height) {
          throw new UserError(`${file}: the image is ${got.width}x${got.height} but ${want.source} says ${want.width}x${want.height}`);
        }
      } catch (e) {
        if (!(e instanceof UserError)) throw e;
        if (bad.length < maxBad) bad.push({ file, message: e.message });
      }
      done++;
      if (done % every === 0 || done === files.length) options.onProgress?.(done, files.length);
    }
  };
  options.onProgress?.(0, files.length);
  await Promise.all(Array.from({ length: Math.min(Math.max(4, 2 * os.availableParallelism()), Math.max(files.length, 1)) }, worker));
  const order = new Map(files.map((f, i) => [f, i]));
  return bad.sort((a, b) => order.get(a.file)! - order.get(b.file)!);
}

/**
 * Exports a trained detector with its labels and preprocessing, checks it in ONNX Runtime, writes it.
 * `name` is the run's (its directory's name; by default the directory `file` is written into).
 */
export async function exportDetectorRun(det: Detector, c: DetTrainConfig, file: string, options: { name?: string } = {}): Promise<{ bytes: Uint8Array; check: DetectorCheckReport }> {
  const metadata = detectionMetadata({
    arch: c.arch,
    name: options.name ?? path.basename(path.dirname(path.resolve(file))),
    labels: c.classes,
    minSize: c.minSize,
    maxSize: c.maxSize,
    mean: IMAGENET_PREPROCESSING.mean,
    std: IMAGENET_PREPROCESSING.std,
    training: JSON.stringify({ backbone: c.backbone, pretrained: c.pretrained, epochs: c.epochs, batchSize: c.batchSize, data: c.data.spec }),
  });
  const bytes = await exportDetector(det, { metadata });
  const check = await checkDetectorExport(det, bytes, { sizes: exportCheckSizes(c.minSize, c.maxSize) });
  if (!check.passed) throw new UserError(`the exported detector does not reproduce the trained one (${describeDetectorCheck(check)}); the checkpoint is kept, nothing was written to ${file}`);
  await writeFileAtomic(file, bytes);
  return { bytes, check };
}

/** The image sizes a run's export is checked at, [height, width], around the training size (batches 1 and 2). */
function exportCheckSizes(minSize: number, maxSize: number): [number, number][] {
  const side = (v: number) => Math.max(32, Math.round(v / 16) * 16);
  return [
    [side(minSize), side(minSize)],
    [side(minSize), side(Math.min(maxSize, minSize * 1.33))],
    [side(Math.min(maxSize, minSize * 1.25)), side(minSize * 0.9)],
  ];
}

/** Whether WebGPU is the active backend (its device's limits then apply). */
function onWebGpu(): boolean {
  return tf.getBackend() === 'webgpu' && maxBindingBytes() !== undefined;
}

/**
 * On WebGPU (a no-op elsewhere), refuses before any work a run whose largest tensor the device cannot
 * bind, which would fail on the device mid-run: a training micro-batch (padded to the largest resized
 * height and width of the training images) and its sampled regions, validation (one image at a time,
 * with the test-time proposals) and the export check (batch 2 at the sizes it checks). The message
 * names what fits: the micro-batch, --min-size, --rois-per-image or --test-proposals.
 */
export function checkDetFitsDevice(c: DetTrainConfig, train: readonly VocImage[], val: readonly VocImage[], options: { export?: boolean } = {}): void {
  if (!onWebGpu()) return;
  const config = defaultFasterRcnnConfig(c.classes.length, c.detector);
  // The largest input: for a micro-batch of one, the largest image; else the largest height and width.
  const largest = (images: readonly VocImage[], batch: number, minSize: number): [number, number] => {
    let h = 0;
    let w = 0;
    for (const im of images) {
      const r = resizedShape(im.height, im.width, { minSize, maxSize: Math.max(c.maxSize, minSize) });
      if (batch > 1) [h, w] = [Math.max(h, r.height), Math.max(w, r.width)];
      else if (r.height * r.width > h * w) [h, w] = [r.height, r.width];
    }
    return [h, w];
  };
  const trainAt = (minSize: number) => detectorTensorBytes(c.arch, config, ...largest(train, c.microBatch, minSize)).image;
  const [th, tw] = largest(train, c.microBatch, c.minSize);
  checkWebGpuFits({ what: `detector training on ${c.arch} at ${th}x${tw}`, batch: c.microBatch, perImageBytes: trainAt(c.minSize), perImageBytesAt: trainAt, size: c.minSize, sizeOption: '--min-size' });
  const region = detectorTensorBytes(c.arch, config, th, tw).region;
  checkRegionsFit(`detector training on ${c.arch}`, c.microBatch, config.roiTargets.batchSize, region, '--rois-per-image', true);
  const valAt = (minSize: number) => detectorTensorBytes(c.arch, config, ...largest(val, 1, minSize)).image;
  const [vh, vw] = largest(val, 1, c.minSize);
  checkWebGpuFits({ what: `validation on ${c.arch} at ${vh}x${vw}`, batch: 1, perImageBytes: valAt(c.minSize), perImageBytesAt: valAt, size: c.minSize, sizeOption: '--min-size' });
  checkRegionsFit(`validation on ${c.arch}`, 1, config.rpnTest.postNms, region, '--test-proposals', false);
  if (options.export ?? true) checkDetExportFitsDevice(c, { during: 'training' });
}

/** The regions' tensors ([batch x regions, ...]) against the device's binding limit. */
function checkRegionsFit(what: string, batch: number, regions: number, perRegion: number, option: string, batchHelps: boolean): void {
  const limit = maxBindingBytes()!;
  const need = batch * regions * perRegion;
  if (need <= limit) return;
  const fixes = [`${option} ${Math.floor(limit / (batch * perRegion))} or smaller`];
  const maxBatch = Math.floor(limit / (regions * perRegion));
  if (batchHelps && maxBatch >= 1) fixes.push(`--micro-batch ${maxBatch} or smaller`);
  fixes.push('a smaller --roi-size');
  throw new UserError(
    `${what} pools ${batch} x ${regions} regions, whose largest tensor needs ${formatBytes(need)}, and this WebGPU device binds at most ${formatBytes(limit)} per tensor: use ${fixes.join(', or ')}`,
  );
}

/**
 * The export check's part of checkDetFitsDevice (`zoo det export` runs it alone). Its sizes and batch
 * follow from the run's configuration, so the way out is another backend for the export.
 */
export function checkDetExportFitsDevice(c: DetTrainConfig, options: { during?: 'training' } = {}): void {
  if (!onWebGpu()) return;
  const limit = maxBindingBytes()!;
  const config = defaultFasterRcnnConfig(c.classes.length, c.detector);
  const [h, w] = exportCheckSizes(c.minSize, c.maxSize).reduce((a, b) => (b[0] * b[1] > a[0] * a[1] ? b : a));
  const bytes = detectorTensorBytes(c.arch, config, h, w);
  const need = 2 * Math.max(bytes.image, config.rpnTest.postNms * bytes.region);
  if (need <= limit) return;
  throw new UserError(
    `the export check runs the ${c.arch} detector at ${h}x${w}, batch 2, which needs a ${formatBytes(need)} tensor, and this WebGPU device binds at most ${formatBytes(limit)} per tensor: ` +
      (options.during === 'training' ? 'train with --no-export, then export the run with `zoo det export --backend wasm`' : 'export with --backend wasm (a checkpoint does not depend on the backend that trained it)'),
  );
}

/** Detection as a task of the run loop. */
function detectionTask(det: Detector, options: DetTrainOptions, trainable: [string, tf.Variable][], emit: (e: DetTrainEvent) => void): LoopTask<DetBatch> {
  const c = options.config;
  const images = options.data.train.images;
  const variables = trainable.map(([, v]) => v);
  const load = (epoch: number, order: Int32Array, index: number): Promise<DetBatch> =>
    loadDetectionBatch(images, order.subarray(index * c.microBatch, (index + 1) * c.microBatch), {
      minSize: c.minSize,
      maxSize: c.maxSize,
      seed: c.seed,
      epoch,
      flipProbability: c.flip,
    }).then((b) => ({ ...b, epoch, index }));

  return {
    batches(epoch, skip) {
      const order = epochOrder(images.length, { shuffle: true, seed: c.seed, epoch });
      return prefetchBatches(Math.floor(images.length / c.microBatch), skip, (index) => load(epoch, order, index));
    },
    count: (b) => b.count,
    step: (b) => detectionStep(det, b, new Rng(sampleSeed(c.seed ^ 0x5a3c, b.epoch, b.index)), variables),
    diagnose: (b) => diagnoseNonFinite(b.images, det.params),
    evaluate: async (epoch, signal) => {
      const r = await evaluateDetector(det, options.data.val.images, c.classes, {
        minSize: c.minSize,
        maxSize: c.maxSize,
        onProgress: (done, total) => emit({ type: 'validating', epoch, done, total }),
        ...(signal ? { signal } : {}),
      });
      return { fields: { valMap07: r.result.map07, valMap: r.result.map }, seconds: r.seconds };
    },
  };
}

/** How a training step gets the RPN's outputs to build its targets from. */
export type StepReads = 'sync' | 'async';

/** The targets of one micro-batch, built in JavaScript from the RPN's output values. */
interface StepTargets {
  rpn: RpnLossTargets;
  rois: Float32Array;
  batchIndices: Int32Array;
  labels: Int32Array;
  /** The regions' target deltas in their classes' columns, and the mask. */
  columns: { deltas: Float32Array; mask: Float32Array };
}

/**
 * The sampled anchors of the RPN's loss and, from the proposals, the sampled regions of the box
 * head's, image by image; `rng` is drawn in that order (anchors, then regions, per image).
 */
function stepTargets(det: Detector, b: DetectionBatch, anchors: Float32Array, lv: Float32Array, dv: Float32Array, rng: Rng): StepTargets {
  const cfg = det.config;
  const A = anchors.length / 4;
  const rpn: RpnLossTargets = { labels: new Float32Array(b.count * A), sampled: new Float32Array(b.count * A), deltas: new Float32Array(b.count * A * 4), positive4: new Float32Array(b.count * A * 4), count: 0 };
  const roisPer: Float32Array[] = [];
  const roiLabels: number[] = [];
  const roiDeltas: number[] = [];
  b.targets.forEach((t, n) => {
    const image = { height: t.height, width: t.width };
    const rt = rpnTargets(anchors, t.boxes, image, rng, cfg.rpnTargets);
    for (let a = 0; a < A; a++) {
      const l = rt.labels[a]!;
      if (l < 0) continue;
      rpn.sampled[n * A + a] = 1;
      rpn.count++;
      if (l === 1) {
        rpn.labels[n * A + a] = 1;
        for (let k = 0; k < 4; k++) {
          rpn.deltas[(n * A + a) * 4 + k] = rt.deltas[4 * a + k]!;
          rpn.positive4[(n * A + a) * 4 + k] = 1;
        }
      }
    }
    const props = det.proposals(lv.subarray(n * A, (n + 1) * A), dv.subarray(4 * n * A, 4 * (n + 1) * A), anchors, 1, image, true)[0]!;
    const rs = sampleRois(props, t.boxes, t.labels, rng, cfg.roiTargets);
    roisPer.push(rs.rois);
    roiLabels.push(...rs.labels);
    roiDeltas.push(...rs.deltas);
  });
  const { rois, batchIndices } = concatRois(roisPer);
  const labels = Int32Array.from(roiLabels);
  return { rpn, rois, batchIndices, labels, columns: classColumns(labels, Float32Array.from(roiDeltas), det.numClasses) };
}

/**
 * Loss and gradients (with respect to `variables`) of one micro-batch, with its four terms.
 *
 * The proposals and targets are computed in JavaScript from the values of the RPN's outputs and take
 * no gradient. With `reads: 'sync'` (the default where the backend reads synchronously: wasm, cpu,
 * tfjs-node) they are read in the middle of the gradient pass. With 'async' (the default elsewhere:
 * WebGPU) the trunk and RPN head first run forward without gradients, their outputs are read with
 * `await`, the targets are built, and the gradient pass then computes the same outputs again (the
 * same kernels on the same inputs) with the targets fixed: the same loss and gradients, for one more
 * forward pass of the trunk and RPN head.
 */
export async function detectionStep(det: Detector, b: DetectionBatch, rng: Rng, variables: tf.Variable[], options: { reads?: StepReads } = {}): Promise<MicroStep> {
  const reads = options.reads ?? (readsSynchronously() ? 'sync' : 'async');
  const x = tf.tensor4d(b.images, [b.count, b.height, b.width, 3]) as Tensor4D;
  try {
    let early: StepTargets | undefined;
    if (reads === 'async') {
      let anchors: Float32Array = new Float32Array(0);
      const [lt, dt] = tf.tidy(() => {
        const r = det.rpn(x, 'frozen');
        anchors = det.anchors(r.features);
        return [r.logits, r.deltas];
      });
      try {
        const [lv, dv] = (await Promise.all([lt!.data(), dt!.data()])) as [Float32Array, Float32Array];
        early = stepTargets(det, b, anchors, lv, dv, rng);
      } finally {
        tf.dispose([lt!, dt!]);
      }
    }
    const cfg = det.config;
    const terms: Record<string, Tensor> = {};
    const { value, grads } = tf.tidy(() =>
      tf.variableGrads(() => {
        const r = det.rpn(x, 'frozen');
        const t = early ?? stepTargets(det, b, det.anchors(r.features), r.logits.dataSync() as Float32Array, r.deltas.dataSync() as Float32Array, rng);
        const rpnL = rpnLoss(r.logits, r.deltas, t.rpn, cfg.rpnTargets.boxBeta);
        const S = t.labels.length;
        const [cls, box] = det.heads(r.features, tf.tensor2d(t.rois, [S, 4]) as Tensor2D, tf.tensor1d(t.batchIndices, 'int32') as Tensor1D, 'frozen');
        const roiL = roiLoss(cls, box, { labels: t.labels, ...t.columns }, cfg.roiTargets.boxBeta);
        terms.rpn_cls = tf.keep(rpnL.cls);
        terms.rpn_box = tf.keep(rpnL.box);
        terms.rcnn_cls = tf.keep(roiL.cls);
        terms.rcnn_box = tf.keep(roiL.box);
        return tf.addN([rpnL.cls, rpnL.box, roiL.cls, roiL.box]) as tf.Scalar;
      }, variables),
    );
    const names = Object.keys(terms);
    const values = await Promise.all([value, ...names.map((k) => terms[k]!)].map((t) => t.data()));
    tf.dispose([value, ...Object.values(terms)]);
    return { loss: values[0]![0]!, grads, terms: Object.fromEntries(names.map((k, i) => [k, values[i + 1]![0]!])) };
  } finally {
    x.dispose();
  }
}
