/**
 * Segmentation at the library's first level, what `zoo seg` calls: fine-tune an FCN on ADE20K-format
 * data from a zoo backbone, evaluate a segmenter (or another tool's prediction PNGs) with the ADE20K
 * benchmark's metrics, export a run's segmenter, import a torchvision or GluonCV FCN, and segment images
 * with an exported one.
 *
 *   const run = await trainSegmentation({ backbone: 'fashion-resnet18d', data: 'ade/ADEChallengeData2016', out: 'runs/seg' });
 *   const { result } = await evaluateSegmentation({ model: 'runs/seg', data: 'ade/ADEChallengeData2016' });
 *   const [mask] = await segment('runs/seg/model.onnx', ['street.jpg']);
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { initBackend, type BackendInfo } from '../backend/index.js';
import { getModelEntry } from '../models/registry.js';
import { RUN_FILES } from '../train/run_config.js';
import { loadCheckpointParams } from '../train/checkpoint.js';
import { createSession, type HostTensor, type Session, type SessionOptions } from '../runtime/ort.js';
import { ensureDir, writeFileAtomic } from '../io/atomic.js';
import { readAde, type AdeSplit, type SegDataset } from '../segmentation/ade.js';
import { loadSegBatch, segEvalSample } from '../segmentation/transform.js';
import { evaluatePredictionDir, SegMetric, type SegEvalResult } from '../segmentation/metrics.js';
import { palette, writeOverlay } from '../segmentation/overlay.js';
import { writeLabelPng } from '../segmentation/png.js';
import { checkSegmenterExport, describeSegCheck, exportSegmenter, runSegmenterSession, type SegCheckReport } from '../segmentation/export.js';
import { parseSegmentationMetadata, readSegmentationMetadata, segmentationMetadata, type SegmentationMetadata } from '../segmentation/metadata.js';
import { readOnnxMetadata } from '../onnx/metadata.js';
import { createSegmenter } from '../segmentation/segmenter.js';
import { inspectSegmenterFile, loadPublishedSegmenters, loadSegmenterWeights, defaultAlignCorners, type SegmenterNaming } from '../segmentation/weights.js';
import {
  exportSegmenterRun,
  readSegRunConfig,
  sampleIdsDigest,
  segCheckSizes,
  segmenterFor,
  segTrainConfig,
  trainSegmenter,
  SEG_PREPROCESSING,
  type SegEpochRecord,
  type SegTrainConfig,
  type SegTrainEvent,
} from '../segmentation/train.js';
import { checkDataLocation, decodeImageInput, defined, resolveHeadFile, resolveTransferBackbone, transferBackend } from './transfer.js';

export interface SegTrainRequest {
  /** A registered architecture (random initialization), a local zoo or published name, a weights file or a training run. */
  backbone?: string;
  /** Architecture of a weights file that does not record its own. */
  backboneArch?: string;
  /** An ADE20K-layout directory (ADEChallengeData2016, a folder holding it, or any images/ + annotations/ pair). */
  data?: string;
  /** Use the first n samples of the training / validation split. */
  limitTrain?: number;
  limitVal?: number;
  out?: string;
  resume?: boolean;
  epochs?: number;
  batchSize?: number;
  microBatch?: number;
  lr?: number;
  headLrScale?: number;
  momentum?: number;
  weightDecay?: number;
  warmup?: number;
  power?: number;
  baseSize?: number;
  cropSize?: number;
  scale?: [number, number];
  flip?: boolean;
  bn?: 'train' | 'frozen';
  outputStride?: 8 | 16;
  /** Train the auxiliary head on C4 (default true). */
  aux?: boolean;
  auxWeight?: number;
  seed?: number;
  checkpointMinutes?: number;
  export?: boolean;
  /** Decode and check every annotation (and read every image's header) before training (default true). */
  checkData?: boolean;
  backend?: string;
}

export interface SegTrainCallbacks {
  onEvent?: (e: SegTrainEvent) => void;
  onBackend?: (info: BackendInfo) => void;
  signal?: AbortSignal;
}

export interface SegTrainOutcome {
  dir: string;
  finished: boolean;
  config: SegTrainConfig;
  records: SegEpochRecord[];
  checkpoint: string;
  onnx?: string;
  check?: SegCheckReport;
  seconds: number;
}

function takeFirst(d: SegDataset, n: number | undefined): SegDataset {
  return n === undefined ? d : { ...d, samples: d.samples.slice(0, n) };
}

/**
 * The two splits of an ADE-layout directory; with `verify` every annotation is decoded and checked
 * against its image's header (values, size, channels) before any work starts, so a bad file stops the run
 * now, by name, not after an epoch.
 */
async function readSplits(data: string, r: { limitTrain?: number; limitVal?: number; verify: boolean }): Promise<{ train: SegDataset; val: SegDataset }> {
  const train = takeFirst(await readAde(data, { split: 'training', verify: r.verify }), r.limitTrain);
  const val = takeFirst(await readAde(data, { split: 'validation', verify: r.verify }), r.limitVal);
  if (train.classes.join('\n') !== val.classes.join('\n')) throw new UserError(`the training and validation splits of ${data} have different class lists`);
  return { train, val };
}

/** Fine-tunes a segmenter (see src/segmentation/train.ts). */
export async function trainSegmentation(request: SegTrainRequest, callbacks: SegTrainCallbacks = {}): Promise<SegTrainOutcome> {
  let r = request;
  let saved: SegTrainConfig | undefined;
  if (r.resume) {
    if (!r.out) throw new UserError('--resume needs --out, the run directory to continue', { exitCode: 2 });
    saved = await readSegRunConfig(path.join(r.out, RUN_FILES.config));
    r = { ...requestOf(saved), ...defined(r as Record<string, unknown>) };
    checkDataLocation(saved.data.spec, request.data);
  }
  if (!r.backbone) throw new UserError('give --backbone: an architecture (e.g. resnet50d), a local zoo name, a weights file or a training run', { exitCode: 2 });
  if (!r.data) throw new UserError('give --data: an ADE20K-layout directory (ADEChallengeData2016, or any folder with images/ and annotations/)', { exitCode: 2 });
  const { train, val } = await readSplits(r.data, { ...r, verify: r.checkData ?? true });

  const info = await initBackend({ ...transferBackend(r.backend), purpose: 'training' });
  callbacks.onBackend?.(info);
  const bb = await resolveTransferBackbone(r.backbone, { ...(r.backboneArch ? { arch: r.backboneArch } : {}), ...(saved ? { resumedArch: saved.arch, resumedPretrained: saved.pretrained } : {}) });
  const out = r.out ?? path.join('runs', `seg-${bb.arch}-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`);
  let segmenter;
  try {
    const config = segTrainConfig({
      arch: bb.arch,
      backbone: r.backbone,
      pretrained: bb.pretrained,
      classes: [...train.classes],
      data: { spec: path.resolve(r.data), train: train.samples.length, val: val.samples.length, trainIds: sampleIdsDigest(train), valIds: sampleIdsDigest(val) },
      ...defined({
        epochs: r.epochs,
        batchSize: r.batchSize,
        microBatch: r.microBatch,
        lr: r.lr,
        headLrScale: r.headLrScale,
        momentum: r.momentum,
        weightDecay: r.weightDecay,
        warmupEpochs: r.warmup,
        power: r.power,
        baseSize: r.baseSize,
        cropSize: r.cropSize,
        scale: r.scale,
        flip: r.flip,
        bn: r.bn,
        seed: r.seed,
      }),
      fcn: defined({ outputStride: r.outputStride, aux: r.aux, auxWeight: r.auxWeight }),
    });
    const t0 = performance.now();
    const result = await trainSegmenter({
      config,
      data: { train, val },
      outDir: out,
      ...(r.resume ? { resume: true } : {}),
      ...(bb.model ? { backbone: bb.model } : {}),
      ...(r.checkpointMinutes !== undefined ? { checkpointMinutes: r.checkpointMinutes } : {}),
      ...(callbacks.signal ? { signal: callbacks.signal } : {}),
      export: r.export ?? true,
      ...(callbacks.onEvent ? { onEvent: callbacks.onEvent } : {}),
    });
    segmenter = result.segmenter;
    return {
      dir: out,
      finished: result.finished,
      config,
      records: result.records,
      checkpoint: result.checkpoint,
      ...(result.onnx ? { onnx: result.onnx } : {}),
      ...(result.check ? { check: result.check } : {}),
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    segmenter?.dispose();
    bb.model?.dispose();
  }
}

/** The request that reproduces a run's configuration (what --resume starts from). */
function requestOf(c: SegTrainConfig): SegTrainRequest {
  return {
    backbone: c.backbone,
    data: c.data.spec,
    limitTrain: c.data.train,
    limitVal: c.data.val,
    epochs: c.epochs,
    batchSize: c.batchSize,
    microBatch: c.microBatch,
    lr: c.lr,
    headLrScale: c.headLrScale,
    momentum: c.momentum,
    weightDecay: c.weightDecay,
    warmup: c.warmupEpochs,
    power: c.power,
    baseSize: c.baseSize,
    cropSize: c.cropSize,
    scale: c.scale,
    flip: c.flip,
    bn: c.bn,
    seed: c.seed,
    ...defined({ outputStride: c.fcn.outputStride, aux: c.fcn.aux, auxWeight: c.fcn.auxWeight }),
  };
}

/** The ONNX file of a segmenter given as a run directory, an .onnx file or a pulled published name. */
export function resolveSegmenterFile(ref: string): Promise<string> {
  return resolveHeadFile(ref, { what: 'segmenter', command: 'seg', runs: 'segmentation', published: loadPublishedSegmenters() });
}

/** An exported segmenter opened in ONNX Runtime, with its metadata. */
export interface SegmenterSession {
  file: string;
  meta: SegmentationMetadata;
  session: Session;
  close(): Promise<void>;
}

export async function openSegmenter(ref: string, options: { device?: 'cpu' | 'cuda' | 'auto'; session?: Omit<SessionOptions, 'provider'> } = {}): Promise<SegmenterSession> {
  const file = await resolveSegmenterFile(ref);
  const meta = await readSegmentationMetadata(file);
  const session = await createSession(file, { ...options.session, provider: options.device ?? 'cpu' });
  return { file, meta, session, close: () => session.session.release() };
}

/** Labels [H * W] (label encoding: class index + 1) of one normalized NHWC image by an exported segmenter. */
async function labelsOf(s: SegmenterSession, image: Float32Array, height: number, width: number): Promise<Uint8Array | Uint16Array> {
  return segmenterLabels(s, await runSegmenterSession(s.session, image, [1, height, width, 3]), height, width);
}

/**
 * Labels [H * W] (class index + 1) of one image from a segmenter's outputs: its `labels` output where the
 * export has one, else the argmax of its logits [1, K, H, W] (views of a batch's rows qualify).
 */
export function segmenterLabels(s: Pick<SegmenterSession, 'file' | 'meta'>, r: Record<string, HostTensor>, height: number, width: number): Uint8Array | Uint16Array {
  const K = s.meta.labels.length;
  const P = height * width;
  const out = K < 255 ? new Uint8Array(P) : new Uint16Array(P);
  if (r.labels) {
    const l = r.labels.data as BigInt64Array;
    for (let p = 0; p < P; p++) out[p] = Number(l[p]);
    return out;
  }
  const logits = r.logits!.data as Float32Array;
  if (logits.length !== K * P) throw new UserError(`${s.file} gives ${logits.length / P} channels per pixel, its metadata names ${K} classes`);
  for (let p = 0; p < P; p++) {
    let best = 0;
    for (let k = 1; k < K; k++) if (logits[k * P + p]! > logits[best * P + p]!) best = k;
    out[p] = best + 1;
  }
  return out;
}

export interface SegEvalRequest {
  /** A segmenter (run directory, .onnx, pulled published name); or give `predictions`. */
  model?: string;
  /** A directory of prediction PNGs (same names and encoding as the annotations) to evaluate instead of a model. */
  predictions?: string;
  data: string;
  split?: AdeSplit;
  limit?: number;
  /** Also write the model's predictions as label PNGs into this directory. */
  writePredictions?: string;
  onProgress?: (done: number, total: number) => void;
}

export interface SegEvalOutcome {
  result: SegEvalResult;
  images: number;
  seconds: number;
  /** Files of a predictions directory that were not used. */
  note?: string;
}

/** Pixel accuracy and mIoU of a segmenter or of prediction PNGs on a split. */
export async function evaluateSegmentation(r: SegEvalRequest): Promise<SegEvalOutcome> {
  if (!r.model === !r.predictions) throw new UserError('give a model to evaluate or --predictions DIR (one of them)', { exitCode: 2 });
  const t0 = performance.now();
  const data = takeFirst(await readAde(r.data, { split: r.split ?? 'validation', requireImages: !r.predictions }), r.limit);
  if (r.predictions) {
    const res = await evaluatePredictionDir(r.predictions, data);
    return { result: res, images: data.samples.length, seconds: (performance.now() - t0) / 1000, ...(res.note ? { note: res.note } : {}) };
  }
  const s = await openSegmenter(r.model!);
  try {
    if (s.meta.labels.join('\n') !== data.classes.join('\n')) {
      throw new UserError(`${s.file} segments ${s.meta.labels.length} classes (${s.meta.labels.slice(0, 4).join(', ')}...), the data has ${data.classes.length} (${data.classes.slice(0, 4).join(', ')}...): not the same class list`);
    }
    if (r.writePredictions) await ensureDir(r.writePredictions, '--write-predictions');
    const metric = new SegMetric(data.classes.length);
    for (let i = 0; i < data.samples.length; i++) {
      const b = await loadSegBatch(data, [i], { mean: s.meta.mean, std: s.meta.std, train: false, seed: 0, epoch: 0 });
      const labels = await labelsOf(s, b.images, b.height, b.width);
      const sample = data.samples[i]!;
      metric.add(labels, b.labels, { width: b.width, predictions: `the prediction of ${sample.image}`, labels: sample.annotation });
      if (r.writePredictions) await writeLabelPng(path.join(r.writePredictions, `${sample.id}.png`), labels, b.width, b.height);
      r.onProgress?.(i + 1, data.samples.length);
    }
    return { result: metric.result(data.classes), images: data.samples.length, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await s.close();
  }
}

/**
 * Exports a segmenter as one checked ONNX graph: a run directory's checkpoint, or an exported segmenter
 * (.onnx or a pulled published name) again, with other outputs (`argmax`, `aux` where it has the head).
 */
export async function exportSegmentation(
  ref: string,
  out: string,
  options: { argmax?: boolean; aux?: boolean; backend?: string } = {},
): Promise<{ file: string; bytes: number; check: SegCheckReport }> {
  const outputs = defined({ argmax: options.argmax, aux: options.aux });
  const runConfig = path.join(ref, RUN_FILES.config);
  if (existsSync(ref) && statSync(ref).isDirectory() && existsSync(runConfig)) {
    const config = await readSegRunConfig(runConfig);
    await initBackend({ ...transferBackend(options.backend), gradients: false });
    if (options.aux && config.fcn.aux === false) throw new UserError(`${ref} was trained without the auxiliary head: --aux has nothing to export`, { exitCode: 2 });
    const seg = segmenterFor(config);
    try {
      await loadCheckpointParams(path.join(ref, RUN_FILES.checkpoint), seg);
      const { bytes, check } = await exportSegmenterRun(seg, config, out, { ...outputs, name: path.basename(path.resolve(ref)) });
      return { file: out, bytes: bytes.length, check };
    } finally {
      seg.dispose();
    }
  }
  // An exported segmenter: its initializers are the parameters under zoo's names.
  const file = await resolveSegmenterFile(ref);
  const props = await readOnnxMetadata(file);
  const meta = parseSegmentationMetadata(props, file);
  if (!meta.arch) throw new UserError(`${file} does not record its architecture (metadata zoo.arch): export it from its run directory instead`);
  const found = await inspectSegmenterFile(file, { naming: 'zoo', format: 'onnx' });
  if (options.aux && !found.aux) throw new UserError(`${file} holds no auxiliary head: --aux has nothing to export`, { exitCode: 2 });
  await initBackend({ ...transferBackend(options.backend), gradients: false });
  const stride = Number(props.output_stride ?? 8);
  const seg = createSegmenter(meta.arch, found.numClasses, {
    config: { aux: found.aux, outputStride: stride === 16 ? 16 : 8, alignCorners: props.upsampling === 'bilinear align_corners' },
  });
  try {
    await loadSegmenterWeights(seg, file, { naming: 'zoo', format: 'onnx' });
    const bytes = await exportSegmenter(seg, { metadata: segmentationMetadata(meta), ...outputs });
    const check = await checkSegmenterExport(seg, bytes, { sizes: segCheckSizes(224) });
    if (!check.passed) throw new UserError(`the re-exported segmenter does not reproduce ${file} (${describeSegCheck(check)}); nothing was written to ${out}`);
    await writeFileAtomic(out, bytes);
    return { file: out, bytes: bytes.length, check };
  } finally {
    seg.dispose();
  }
}

export interface SegImportRequest {
  /** A whole FCN state dict: torchvision's (.pth or safetensors) or GluonCV's (.params). */
  file: string;
  /** The backbone architecture the weights are for (torchvision's fcn_resnet50: resnet50b). */
  backbone: string;
  /** Classes of the file's classifier (checked against the file). */
  numClasses?: number;
  /** Class names for the metadata (default class_1..class_N). */
  labels?: string[];
  out: string;
  outputStride?: 8 | 16;
  naming?: SegmenterNaming | 'auto';
  /** Upsampling mode; default that of the weights' origin (torchvision: half-pixel, GluonCV: aligned corners). */
  alignCorners?: boolean;
  argmax?: boolean;
  mean?: number[];
  std?: number[];
  backend?: string;
}

/** Converts a whole FCN state dict with zoo's definitions, checks the export against tfjs, writes it. */
export async function importSegmentation(r: SegImportRequest): Promise<{ file: string; bytes: number; check: SegCheckReport; naming: SegmenterNaming; warnings: string[] }> {
  getModelEntry(r.backbone);
  const found = await inspectSegmenterFile(r.file, { naming: r.naming ?? 'auto' });
  if (r.numClasses !== undefined && r.numClasses !== found.numClasses) {
    throw new UserError(`${r.file} classifies ${found.numClasses} classes, not the ${r.numClasses} of --num-classes`, { exitCode: 2 });
  }
  const labels = r.labels ?? Array.from({ length: found.numClasses }, (_, i) => `class_${i + 1}`);
  if (labels.length !== found.numClasses) throw new UserError(`${labels.length} class names given for the ${found.numClasses} classes of ${r.file}`, { exitCode: 2 });
  await initBackend({ ...transferBackend(r.backend), gradients: false });
  const seg = createSegmenter(r.backbone, found.numClasses, {
    config: { aux: found.aux, alignCorners: r.alignCorners ?? defaultAlignCorners(found.naming), ...(r.outputStride ? { outputStride: r.outputStride } : {}) },
  });
  try {
    const loaded = await loadSegmenterWeights(seg, r.file, { naming: found.naming });
    const metadata = segmentationMetadata({
      arch: r.backbone,
      name: path.basename(r.out).replace(/\.onnx$/, ''),
      labels,
      mean: r.mean ?? SEG_PREPROCESSING.mean,
      std: r.std ?? SEG_PREPROCESSING.std,
      training: JSON.stringify({ imported: path.resolve(r.file), naming: found.naming }),
    });
    const bytes = await exportSegmenter(seg, { metadata, ...(r.argmax ? { argmax: true } : {}) });
    const check = await checkSegmenterExport(seg, bytes, { sizes: segCheckSizes(224) });
    if (!check.passed) throw new UserError(`the exported segmenter does not reproduce the imported one (${describeSegCheck(check)}); nothing was written to ${r.out}`);
    await writeFileAtomic(r.out, bytes);
    return { file: r.out, bytes: bytes.length, check, naming: loaded.naming, warnings: loaded.warnings };
  } finally {
    seg.dispose();
  }
}

export interface ImageSegmentation {
  /** [height * width] label values: class index + 1 (0 is never predicted). */
  labels: Uint8Array | Uint16Array;
  width: number;
  height: number;
  /** Class names (label value v is classes[v - 1]). */
  classes: string[];
  /** Pixels per class name, for the classes present. */
  areas: Record<string, number>;
}

/** Per-pixel classes of images (files or bytes) by an exported segmenter, at each image's own size. */
export async function segment(model: string | SegmenterSession, images: (string | Uint8Array)[]): Promise<ImageSegmentation[]> {
  const s = typeof model === 'string' ? await openSegmenter(model) : model;
  try {
    const out: ImageSegmentation[] = [];
    for (const img of images) {
      const px = await decodeImageInput(img);
      const blank = { width: px.width, height: px.height, data: new Uint8Array(px.width * px.height) };
      const t = segEvalSample(px, blank, { mean: s.meta.mean, std: s.meta.std });
      const labels = await labelsOf(s, t.image, t.height, t.width);
      const areas: Record<string, number> = {};
      for (let i = 0; i < labels.length; i++) {
        const name = s.meta.labels[labels[i]! - 1] ?? String(labels[i]);
        areas[name] = (areas[name] ?? 0) + 1;
      }
      out.push({ labels, width: px.width, height: px.height, classes: s.meta.labels, areas });
    }
    return out;
  } finally {
    if (typeof model === 'string') await s.close();
  }
}

/** Writes a segmentation as a label PNG (the annotations' encoding) and a colorized overlay PNG on its image. */
export async function writeSegmentation(image: string | Uint8Array, seg: ImageSegmentation, files: { labels: string; overlay: string }, options: { alpha?: number } = {}): Promise<void> {
  await writeLabelPng(files.labels, seg.labels, seg.width, seg.height);
  const px = await decodeImageInput(image);
  await writeOverlay(files.overlay, { data: px.data, width: px.width, height: px.height }, seg.labels, seg.width, seg.height, palette(seg.classes.length), options.alpha ?? 0.5);
}
