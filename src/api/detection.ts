/**
 * Detection at the library's first level, what `zoo det` calls: fine-tune a Faster R-CNN on VOC-format
 * data from a zoo backbone, evaluate a detector (or another tool's result files) with the VOC metric,
 * export a run's detector, and detect objects in images with an exported one.
 *
 *   const run = await trainDetection({ backbone: 'fashion-resnet18d', data: 'voc/VOCdevkit', out: 'runs/det' });
 *   const { result } = await evaluateDetection({ model: 'runs/det', data: 'voc/VOCdevkit' });
 *   const found = await detect('runs/det/model.onnx', ['street.jpg']);
 */
import path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { initBackend, type BackendInfo } from '../backend/index.js';
import { RUN_FILES } from '../train/run_config.js';
import { loadCheckpointParams } from '../train/checkpoint.js';
import { createSession, type Session, type SessionOptions } from '../runtime/ort.js';
import { addToLocalZoo, checkOwnModelName, findLocalModel } from '../hub/local.js';
import { hashFile } from '../hub/cache.js';
import { IMAGENET_PREPROCESSING } from '../predict/preprocessing.js';
import { readFile } from 'node:fs/promises';
import { loadPublishedDetectors } from '../detection/weights.js';
import { checkDataLocation, decodeImageInput, defined, resolveHeadFile, resolveTransferBackbone, transferBackend } from './transfer.js';
import { createDetector } from '../detection/detector.js';
import { defaultFasterRcnnConfig } from '../detection/faster_rcnn.js';
import { listSplits, locateVoc, readVoc, type VocDataset, type VocImage } from '../detection/voc.js';
import { loadDetectionBatch, toDevkitBoxes, prepareDetectionSample } from '../detection/transform.js';
import { evaluateVoc, readVocDetections, writeVocDetections, type Detection, type VocEvalResult } from '../detection/voc_eval.js';
import { runDetectorSession, type DetectorCheckReport } from '../detection/export.js';
import type { ImageDetections } from '../detection/proposals.js';
import { readDetectionMetadata, type DetectionMetadata } from '../detection/metadata.js';
import {
  detTrainConfig,
  checkDetExportFitsDevice,
  exportDetectorRun,
  groundTruth,
  readDetRunConfig,
  trainDetector,
  vocIdsDigest,
  type DetEpochRecord,
  type DetTrainConfig,
  type DetTrainEvent,
} from '../detection/train.js';

export interface DetTrainRequest {
  /** A registered architecture (random initialization), a local zoo or published name, a weights file or a training run. */
  backbone?: string;
  /** Architecture of a weights file that does not record its own. */
  backboneArch?: string;
  /** A VOC devkit (the VOCdevkit directory or one VOC20xx directory in it). */
  data?: string;
  trainSplit?: string;
  valSplit?: string;
  /** Years of the devkit to read (default: every year that has the split). */
  years?: string[];
  /** Use the first n images of the training / validation split. */
  limitTrain?: number;
  limitVal?: number;
  out?: string;
  resume?: boolean;
  epochs?: number;
  batchSize?: number;
  microBatch?: number;
  lr?: number;
  momentum?: number;
  weightDecay?: number;
  warmup?: number;
  lrSteps?: number[];
  minSize?: number;
  maxSize?: number;
  flip?: number;
  seed?: number;
  /** Channels of the RPN's 3x3 conv (GluonCV: 1024). */
  rpnChannels?: number;
  /** RoIAlign output side (GluonCV: 14; the box head's stride halves it). */
  roiSize?: number;
  /** Anchor scales, multiples of the base size 16 (GluonCV: 2, 4, 8, 16, 32: 32 to 512 pixels). */
  anchorScales?: number[];
  /** Regions sampled per image for the box head's loss (GluonCV: 128). */
  roisPerImage?: number;
  /** Proposals kept after NMS at test time (GluonCV: 300). */
  testProposals?: number;
  checkpointMinutes?: number;
  export?: boolean;
  /** Add the exported detector to the local zoo under this name (replacing one with `force`). */
  addToZoo?: string;
  force?: boolean;
  backend?: string;
}

export interface DetTrainCallbacks {
  onEvent?: (e: DetTrainEvent) => void;
  onBackend?: (info: BackendInfo) => void;
  signal?: AbortSignal;
}

export interface DetTrainOutcome {
  dir: string;
  finished: boolean;
  config: DetTrainConfig;
  records: DetEpochRecord[];
  checkpoint: string;
  onnx?: string;
  check?: DetectorCheckReport;
  /** The local zoo model, with `addToZoo`. */
  added?: { name: string; onnx: string };
  seconds: number;
}

function takeFirst(d: VocDataset, n: number | undefined): VocDataset {
  return n === undefined ? d : { ...d, images: d.images.slice(0, n) };
}

/** Fine-tunes a detector (see src/detection/train.ts). */
export async function trainDetection(request: DetTrainRequest, callbacks: DetTrainCallbacks = {}): Promise<DetTrainOutcome> {
  let r = request;
  let saved: DetTrainConfig | undefined;
  if (r.resume) {
    if (!r.out) throw new UserError('--resume needs --out, the run directory to continue', { exitCode: 2 });
    saved = await readDetRunConfig(path.join(r.out, RUN_FILES.config));
    r = { ...requestOf(saved), ...Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) };
    checkDataLocation(saved.data.spec, request.data);
  }
  if (r.addToZoo) {
    checkOwnModelName(r.addToZoo);
    if (r.export === false) throw new UserError('--add-to-zoo needs the export: drop --no-export', { exitCode: 2 });
    // Found now rather than after hours of training.
    if (!r.force && (await findLocalModel(r.addToZoo))) {
      throw new UserError(`the local zoo already has '${r.addToZoo}': choose another --add-to-zoo name, pass --force to replace it, or 'zoo rm ${r.addToZoo}'`, { exitCode: 2 });
    }
  }
  if (!r.backbone) throw new UserError('give --backbone: an architecture (e.g. resnet50d), a local zoo name, a weights file or a training run', { exitCode: 2 });
  if (!r.data) throw new UserError('give --data: a VOC devkit directory (VOCdevkit, or VOC2007 in it)', { exitCode: 2 });
  const trainSplit = r.trainSplit ?? 'trainval';
  const valSplit = r.valSplit ?? 'test';
  const years = r.years ? { years: r.years } : {};
  const train = takeFirst(await readVoc(r.data, { split: trainSplit, ...years }), r.limitTrain);
  // Validation reads the given years that have its split: VOC2012 has no public test split, so
  // --years 2007,2012 trains on the 07+12 trainval union and validates on VOC2007 test.
  const valYears = r.years ? await yearsWithSplit(r.data, r.years, valSplit) : undefined;
  const val = takeFirst(await readVoc(r.data, { split: valSplit, ...(valYears ? { years: valYears } : {}) }), r.limitVal);
  if (train.classes.join('\n') !== val.classes.join('\n')) throw new UserError(`the splits '${trainSplit}' and '${valSplit}' have different class lists`);

  const info = await initBackend({ ...transferBackend(r.backend), purpose: 'training' });
  callbacks.onBackend?.(info);
  const bb = await resolveTransferBackbone(r.backbone, { ...(r.backboneArch ? { arch: r.backboneArch } : {}), ...(saved ? { resumedArch: saved.arch, resumedPretrained: saved.pretrained } : {}) });
  const backboneModel = bb.model;
  const arch = bb.arch;
  const out = r.out ?? path.join('runs', `det-${arch}-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`);
  const config = detTrainConfig({
    arch,
    backbone: r.backbone,
    pretrained: bb.pretrained,
    classes: [...train.classes],
    data: {
      spec: path.resolve(r.data),
      trainSplit,
      valSplit,
      ...(r.years ? { years: [...r.years] } : {}),
      trainFiles: train.splits,
      valFiles: val.splits,
      train: train.images.length,
      val: val.images.length,
      trainIds: vocIdsDigest(train.images),
      valIds: vocIdsDigest(val.images),
    },
    ...defined({
      epochs: r.epochs,
      batchSize: r.batchSize,
      microBatch: r.microBatch,
      lr: r.lr,
      momentum: r.momentum,
      weightDecay: r.weightDecay,
      warmupEpochs: r.warmup,
      steps: r.lrSteps,
      minSize: r.minSize,
      maxSize: r.maxSize,
      flip: r.flip,
      seed: r.seed,
    }),
    detector: detectorOverrides(r),
  });
  const t0 = performance.now();
  let detector;
  try {
    const result = await trainDetector({
      config,
      data: { train, val },
      outDir: out,
      ...(r.resume ? { resume: true } : {}),
      ...(backboneModel ? { backbone: backboneModel } : {}),
      ...(r.checkpointMinutes !== undefined ? { checkpointMinutes: r.checkpointMinutes } : {}),
      ...(callbacks.signal ? { signal: callbacks.signal } : {}),
      export: r.export ?? true,
      ...(callbacks.onEvent ? { onEvent: callbacks.onEvent } : {}),
    });
    detector = result.detector;
    let added: { name: string; onnx: string } | undefined;
    if (result.finished && r.addToZoo && result.onnx && result.check) {
      const bytes = await readFile(result.onnx);
      const h = await hashFile(result.checkpoint);
      const worst = Math.max(...result.check.cases.map((c) => c.maxBoxDiff));
      const local = await addToLocalZoo({
        name: r.addToZoo,
        arch,
        task: 'object-detection',
        onnxBytes: bytes,
        // The detection preprocessing is in the file's metadata; this records its short side.
        preprocessing: { inputSize: config.minSize, resizeShorter: config.minSize, crop: config.minSize, interpolation: 'bilinear', mean: [...IMAGENET_PREPROCESSING.mean], std: [...IMAGENET_PREPROCESSING.std] },
        labels: [...config.classes],
        source: { url: path.resolve(out), format: 'zoo-detection-run', naming: 'zoo', file: path.resolve(result.checkpoint), ...h },
        check: { maxAbsDiff: worst, maxAbsLogit: 0, top1Agreement: 1, provider: 'cpu' },
        force: r.force ?? false,
      });
      added = { name: local.name, onnx: local.onnx };
    }
    return {
      ...(added ? { added } : {}),
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
    detector?.dispose();
    backboneModel?.dispose();
  }
}

/** The detector configuration's changes from GluonCV's defaults that a request asks for. */
function detectorOverrides(r: DetTrainRequest): DetTrainConfig['detector'] {
  const base = defaultFasterRcnnConfig(1);
  return {
    ...(r.rpnChannels !== undefined ? { rpnChannels: r.rpnChannels } : {}),
    ...(r.anchorScales !== undefined ? { anchors: { ...base.anchors, scales: [...r.anchorScales] } } : {}),
    ...(r.roiSize !== undefined ? { roiAlign: { ...base.roiAlign, outputSize: [r.roiSize, r.roiSize] as [number, number] } } : {}),
    ...(r.roisPerImage !== undefined ? { roiTargets: { ...base.roiTargets, batchSize: r.roisPerImage } } : {}),
    ...(r.testProposals !== undefined ? { rpnTest: { ...base.rpnTest, postNms: r.testProposals } } : {}),
  };
}

/** The request that reproduces a run's configuration (what --resume starts from). */
function requestOf(c: DetTrainConfig): DetTrainRequest {
  return {
    backbone: c.backbone,
    data: c.data.spec,
    trainSplit: c.data.trainSplit,
    valSplit: c.data.valSplit,
    ...(c.data.years ? { years: c.data.years } : {}),
    limitTrain: c.data.train,
    limitVal: c.data.val,
    epochs: c.epochs,
    batchSize: c.batchSize,
    microBatch: c.microBatch,
    lr: c.lr,
    momentum: c.momentum,
    weightDecay: c.weightDecay,
    warmup: c.warmupEpochs,
    lrSteps: c.steps,
    minSize: c.minSize,
    maxSize: c.maxSize,
    flip: c.flip,
    seed: c.seed,
    ...(c.detector.rpnChannels !== undefined ? { rpnChannels: c.detector.rpnChannels } : {}),
    ...(c.detector.roiAlign ? { roiSize: c.detector.roiAlign.outputSize[0] } : {}),
    ...(c.detector.anchors ? { anchorScales: c.detector.anchors.scales } : {}),
    ...(c.detector.roiTargets ? { roisPerImage: c.detector.roiTargets.batchSize } : {}),
    ...(c.detector.rpnTest ? { testProposals: c.detector.rpnTest.postNms } : {}),
  };
}

/** The years among `years` whose devkit directory has the split (all of them when none has it: readVoc then says so). */
async function yearsWithSplit(root: string, years: readonly string[], split: string): Promise<string[]> {
  const layout = await locateVoc(root);
  const have: string[] = [];
  for (const y of years) {
    const want = /^\d{4}$/.test(y) ? `VOC${y}` : y;
    const dir = layout.years.find((d) => d.name.toLowerCase() === want.toLowerCase());
    if (dir && (await listSplits(dir)).includes(split)) have.push(y);
  }
  return have.length ? have : [...years];
}

/** The ONNX file of a detector given as a run directory, an .onnx file or a local zoo name. */
export function resolveDetectorFile(ref: string): Promise<string> {
  return resolveHeadFile(ref, {
    what: 'detector',
    command: 'det',
    runs: 'detection',
    published: loadPublishedDetectors(),
    local: async (name) => (await findLocalModel(name))?.onnx,
  });
}

/** An exported detector opened in ONNX Runtime, with its metadata. */
export interface DetectorSession {
  file: string;
  meta: DetectionMetadata;
  session: Session;
  maxDetections: number;
  close(): Promise<void>;
}

export async function openDetector(ref: string, options: { device?: 'cpu' | 'cuda' | 'auto'; session?: Omit<SessionOptions, 'provider'> } = {}): Promise<DetectorSession> {
  const file = await resolveDetectorFile(ref);
  const meta = await readDetectionMetadata(file);
  const session = await createSession(file, { ...options.session, provider: options.device ?? 'cpu' });
  const dims = session.session.outputMetadata?.find?.((m: { name: string }) => m.name === 'detection_scores') as { shape?: (number | string)[] } | undefined;
  const D = typeof dims?.shape?.[1] === 'number' ? (dims.shape[1] as number) : 100;
  return { file, meta, session, maxDetections: D, close: () => session.session.release() };
}

/** Detections of the images of a VOC split in devkit coordinates, by an exported detector. */
export async function detectSplit(d: DetectorSession, images: readonly VocImage[], onProgress?: (done: number, total: number) => void): Promise<Detection[]> {
  const out: Detection[] = [];
  for (let i = 0; i < images.length; i++) {
    const b = await loadDetectionBatch(images, [i], { minSize: d.meta.minSize, maxSize: d.meta.maxSize, preprocessing: d.meta });
    const [found] = await runDetectorSession(d.session, b.images, [1, b.height, b.width, 3], d.maxDetections);
    const t = b.targets[0]!;
    const devkit = toDevkitBoxes(found!.boxes, t);
    const im = images[i]!;
    for (let k = 0; k < found!.scores.length; k++) {
      out.push({ imageId: `${im.year}/${im.id}`, label: found!.classes[k]!, score: found!.scores[k]!, box: [devkit[4 * k]!, devkit[4 * k + 1]!, devkit[4 * k + 2]!, devkit[4 * k + 3]!] });
    }
    onProgress?.(i + 1, images.length);
  }
  return out;
}

export interface DetEvalRequest {
  /** A detector (run directory, .onnx, local zoo name); or give `detections`. */
  model?: string;
  /** A directory of the devkit's result files (comp4_det_test_<class>.txt) to evaluate instead of a model. */
  detections?: string;
  data: string;
  split?: string;
  years?: string[];
  limit?: number;
  /** Also write the model's detections as devkit result files into this directory. */
  writeDetections?: string;
  onProgress?: (done: number, total: number) => void;
}

export interface DetEvalOutcome {
  result: VocEvalResult;
  images: number;
  detections: number;
  seconds: number;
  /** Result files written (writeDetections). */
  written?: string[];
  /** Class files missing from a `detections` directory. */
  missing?: string[];
}

/** VOC07 11-point and area AP of a detector or of result files on a split. */
export async function evaluateDetection(r: DetEvalRequest): Promise<DetEvalOutcome> {
  if (!r.model === !r.detections) throw new UserError('give a model to evaluate or --detections DIR (one of them)', { exitCode: 2 });
  const t0 = performance.now();
  const split = r.split ?? 'test';
  const voc = takeFirst(await readVoc(r.data, { split, requireImages: !r.detections, ...(r.years ? { years: r.years } : {}) }), r.limit);
  if (r.detections) {
    // Result files name images by their id alone; a devkit of one year has unique ids.
    const years = new Set(voc.images.map((im) => im.year));
    if (years.size > 1) throw new UserError(`result files name images by id only; evaluate one year at a time (--years), not ${[...years].join(' and ')}`, { exitCode: 2 });
    // With --limit, lines for the images past it are left out rather than refused.
    const files = await readVocDetections(r.detections, voc.classes, { imageIds: voc.images.map((im) => im.id), ...(r.limit !== undefined ? { allowUnknownImages: true } : {}) });
    const year = voc.images[0]?.year ?? '';
    const dets = files.detections.map((d) => ({ ...d, imageId: `${year}/${d.imageId}` }));
    const result = evaluateVoc(groundTruth(voc.images), dets, voc.classes);
    return { result, images: voc.images.length, detections: dets.length, seconds: (performance.now() - t0) / 1000, missing: files.missing };
  }
  const d = await openDetector(r.model!);
  try {
    if (d.meta.labels.join('\n') !== voc.classes.join('\n')) {
      throw new UserError(`${d.file} detects ${d.meta.labels.length} classes (${d.meta.labels.slice(0, 4).join(', ')}...), the data has ${voc.classes.length} (${voc.classes.slice(0, 4).join(', ')}...): not the same class list`);
    }
    const dets = await detectSplit(d, voc.images, r.onProgress);
    const result = evaluateVoc(groundTruth(voc.images), dets, voc.classes);
    let written: string[] | undefined;
    if (r.writeDetections) {
      written = await writeVocDetections(r.writeDetections, dets.map((x) => ({ ...x, imageId: x.imageId.split('/').pop()! })), voc.classes);
    }
    return { result, images: voc.images.length, detections: dets.length, seconds: (performance.now() - t0) / 1000, ...(written ? { written } : {}) };
  } finally {
    await d.close();
  }
}

/** Exports a detection run's checkpoint as one checked ONNX graph. */
export async function exportDetection(runDir: string, out: string, options: { backend?: string } = {}): Promise<{ file: string; bytes: number; check: DetectorCheckReport }> {
  const config = await readDetRunConfig(path.join(runDir, RUN_FILES.config));
  await initBackend({ ...transferBackend(options.backend), gradients: false });
  checkDetExportFitsDevice(config);
  const det = createDetector(config.arch, config.classes.length, { config: config.detector, seed: config.seed });
  try {
    await loadCheckpointParams(path.join(runDir, RUN_FILES.checkpoint), det);
    // The run's name, wherever the file goes.
    const { bytes, check } = await exportDetectorRun(det, config, out, { name: path.basename(path.resolve(runDir)) });
    return { file: out, bytes: bytes.length, check };
  } finally {
    det.dispose();
  }
}

export interface ImageDetection {
  label: string;
  classIndex: number;
  score: number;
  /** x1, y1, x2, y2 in the original image's pixels (continuous coordinates). */
  box: [number, number, number, number];
}

/** One image's detections at or above `threshold`, boxes scaled back from the model's input to the image's pixels. */
export function imageDetections(found: ImageDetections, scale: { scaleX: number; scaleY: number }, labels: readonly string[], threshold: number): ImageDetection[] {
  const list: ImageDetection[] = [];
  for (let k = 0; k < found.scores.length; k++) {
    if (found.scores[k]! < threshold) continue;
    const b = found.boxes.subarray(4 * k, 4 * k + 4);
    const c = found.classes[k]!;
    list.push({ label: labels[c] ?? String(c), classIndex: c, score: found.scores[k]!, box: [b[0]! / scale.scaleX, b[1]! / scale.scaleY, b[2]! / scale.scaleX, b[3]! / scale.scaleY] });
  }
  return list;
}

/** Objects in images (files or bytes) by an exported detector, boxes in each image's own pixels. */
export async function detect(model: string | DetectorSession, images: (string | Uint8Array)[], options: { threshold?: number } = {}): Promise<ImageDetection[][]> {
  const d = typeof model === 'string' ? await openDetector(model) : model;
  const threshold = options.threshold ?? 0.5;
  try {
    const out: ImageDetection[][] = [];
    for (const img of images) {
      const label = typeof img === 'string' ? img : 'image bytes';
      const decoded = await decodeImageInput(img);
      const s = prepareDetectionSample(decoded, { id: label, year: '', width: decoded.width, height: decoded.height, objects: [] }, { minSize: d.meta.minSize, maxSize: d.meta.maxSize, preprocessing: d.meta });
      const [found] = await runDetectorSession(d.session, s.image, [1, s.height, s.width, 3], d.maxDetections);
      out.push(imageDetections(found!, s, d.meta.labels, threshold));
    }
    return out;
  } finally {
    if (typeof model === 'string') await d.close();
  }
}

const COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45', '#469990', '#9a6324'];

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** The image with its detections drawn (boxes and "label score"), as PNG bytes. */
export async function drawDetections(image: string | Uint8Array, found: readonly ImageDetection[]): Promise<Buffer> {
  // Drawn on the image as detect() saw it, EXIF orientation applied: metadata() gives the stored size,
  // which orientations 5 to 8 (a quarter turn) transpose.
  const base = sharp(typeof image === 'string' ? image : Buffer.from(image)).rotate();
  const { width, height } = await base.metadata().then((m) => {
    const [w, h] = [m.width ?? 0, m.height ?? 0];
    return (m.orientation ?? 1) >= 5 ? { width: h, height: w } : { width: w, height: h };
  });
  const stroke = Math.max(1, Math.round(Math.max(width, height) / 300));
  const font = Math.max(9, Math.round(Math.max(width, height) / 40));
  const shapes = found.map((f) => {
    const color = COLORS[f.classIndex % COLORS.length]!;
    const [x1, y1, x2, y2] = f.box;
    const text = `${escapeXml(f.label)} ${(100 * f.score).toFixed(0)}%`;
    const ty = y1 > font + 2 ? y1 - 3 : y1 + font;
    return (
      `<rect x="${x1.toFixed(1)}" y="${y1.toFixed(1)}" width="${(x2 - x1).toFixed(1)}" height="${(y2 - y1).toFixed(1)}" fill="none" stroke="${color}" stroke-width="${stroke}"/>` +
      `<text x="${(x1 + 2).toFixed(1)}" y="${ty.toFixed(1)}" font-family="sans-serif" font-size="${font}" fill="${color}" stroke="white" stroke-width="0.6" paint-order="stroke">${text}</text>`
    );
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${shapes.join('')}</svg>`;
  return base.composite([{ input: Buffer.from(svg), top: 0, left: 0 }]).png().toBuffer();
}
