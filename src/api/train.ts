/**
 * `train(request, callbacks)`: the paper's training as `zoo train` runs it, for the library. The command
 * line is a thin layer over this: it maps its flags onto a TrainRequest and prints the events.
 *
 *   const run = await train(
 *     { arch: 'resnet18d', data: 'fashion', epochs: 10, batchSize: 128, imageSize: 32, out: 'runs/r18d' },
 *     { onEpoch: (r) => console.log(r.epoch, r.valTop1), signal: abort.signal },
 *   );
 *
 * Every field left out takes the recipe's value or zoo's default; with `resume`, it takes the run's
 * (run.json), and a field given must agree with the run. Bad input is a UserError before any work.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { initBackend, type BackendInfo } from '../backend/index.js';
import { checkWebGpuFits } from '../backend/webgpu.js';
import { countNetwork, largestTensorBytes } from '../models/count.js';
import { ResNet } from '../models/resnet.js';
import { UserError } from '../errors.js';
import { getModelEntry } from '../models/registry.js';
import type { Model } from '../models/model.js';
import { RECIPES, RECIPE_NAMES, fitRecipeWarmup, type RecipeName, type Tricks } from '../train/recipes.js';
import { openTrainingData, takesValSplit, type TrainingData } from '../train/data.js';
import {
  train as runTrainer,
  validateConfig,
  runPreprocessing,
  updatesPerEpoch,
  RUN_FILES,
  type EpochRecord,
  type TrainConfig,
  type TrainEvent,
} from '../train/trainer.js';
import { readRunConfig } from '../train/run_config.js';
import { loadTeacher, type Teacher } from '../train/teacher.js';
import { addToLocalZoo, checkOwnModelName, findLocalModel } from '../hub/local.js';
import { hashFile } from '../hub/cache.js';
import { datasetSize } from '../data/dataset.js';
import { checkSummary, type CheckReport } from '../onnx/check.js';

/** What to train and how; see the module comment for defaults. */
export interface TrainRequest {
  /** A registered architecture ('zoo list'); optional with `resume` (the run's). */
  arch?: string;
  /** 'fashion' (the embedded Fashion-MNIST subset, default), a directory of IDX files, or an image folder. */
  data?: string;
  /** Hold out this fraction of each class for validation (a folder of class folders). */
  valSplit?: number;
  limitTrain?: number;
  limitVal?: number;
  /** Named set of tricks (default 'best'). */
  recipe?: RecipeName;
  epochs?: number;
  /** Effective batch of one update (default: the recipe's). */
  batchSize?: number;
  /** Images per forward/backward pass (default: by image size). */
  microBatch?: number;
  /** Training crop (default 224; 32 for 28x28 IDX data). */
  imageSize?: number;
  /** Learning rate for a batch of 256 (default 0.1). */
  lr?: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  seed?: number;
  minCropArea?: number;
  /** The run directory (default runs/<arch>-<recipe>-<time>). */
  out?: string;
  /** Continue the run in `out`. */
  resume?: boolean;
  // Tricks: each overrides the recipe.
  linearScaling?: boolean;
  /** Warmup epochs, or false for none. A recipe's warmup too long for a short run is shortened; this one is not. */
  warmup?: number | false;
  zeroGamma?: boolean;
  biasDecay?: boolean;
  fp16?: boolean;
  cosine?: boolean;
  labelSmoothing?: number | false;
  mixup?: number | false;
  distill?: boolean;
  /** A local zoo name, an .onnx file, a run directory, or a weights file with `teacherArch`. */
  teacher?: string;
  teacherArch?: string;
  temperature?: number;
  hardWeight?: number;
  // The run itself (not recorded in run.json).
  workers?: number;
  /** Also checkpoint this often within an epoch (default 10; 0: only at epoch ends). */
  checkpointMinutes?: number;
  /** Export model.onnx at the end (default true). */
  export?: boolean;
  /** Add the exported model to the local zoo under this name. */
  addToZoo?: string;
  /** Replace a local zoo model of that name. */
  force?: boolean;
  /** Check the image files before the first epoch (default true). */
  checkData?: boolean;
  /** tfjs backend (default ZOO_BACKEND, else auto). */
  backend?: string;
}

/** Progress of one update. */
export interface TrainProgress {
  epoch: number;
  epochs: number;
  update: number;
  updatesPerEpoch: number;
  loss: number;
  lr: number;
  imagesPerSecond: number;
}

export interface TrainCallbacks {
  /** Every event of the run (start, notices, progress, validation, epochs, checkpoints, export). */
  onEvent?: (e: TrainEvent) => void;
  /** After each epoch's validation. */
  onEpoch?: (record: EpochRecord, epochs: number) => void;
  /** After each update. */
  onProgress?: (p: TrainProgress) => void;
  /** The backend chosen, before the run starts, with the run directory (chosen by zoo when the request has no `out`). */
  onBackend?: (info: BackendInfo, run: { outDir: string }) => void;
  /** Stop after the update in progress, with a checkpoint (resume with `resume: true`). */
  signal?: AbortSignal;
}

export interface TrainOutcome {
  /** The run directory. */
  dir: string;
  /** All epochs ran (false: stopped by the signal). */
  finished: boolean;
  config: TrainConfig;
  records: EpochRecord[];
  checkpoint: string;
  onnx?: string;
  check?: CheckReport;
  /** The local zoo model, with `addToZoo`. */
  added?: { name: string; onnx: string };
  seconds: number;
}

const DEFAULTS = { data: 'fashion', recipe: 'best' as RecipeName, lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-4, seed: 0, minCropArea: 0.08, checkpointMinutes: 10 };

/** The largest divisor of `batch` that is at most what fits the image size in the WebAssembly heap. */
export function defaultMicroBatch(batch: number, imageSize: number): number {
  // Activations grow with the pixel count; the wasm heap stops at 4 GiB (resnet50d at 224 fits 4-8).
  const cap = imageSize <= 64 ? 128 : imageSize <= 128 ? 32 : imageSize <= 160 ? 16 : 4;
  for (let m = Math.min(cap, batch); m >= 1; m--) if (batch % m === 0) return m;
  return 1;
}

/** The recipe's switches with the request's overrides applied; notices say what was decided for the user. */
export function resolveTricks(recipe: RecipeName, o: TrainRequest): { tricks: Tricks; notices: string[] } {
  const t: Tricks = { ...RECIPES[recipe].tricks };
  const notices: string[] = [];
  if (o.linearScaling !== undefined) t.linearScaling = o.linearScaling;
  if (o.warmup === false) t.warmupEpochs = 0;
  else if (typeof o.warmup === 'number') t.warmupEpochs = o.warmup;
  if (o.zeroGamma !== undefined) t.zeroGamma = o.zeroGamma;
  if (o.biasDecay !== undefined) t.noBiasDecay = !o.biasDecay;
  if (o.fp16 !== undefined) t.fp16 = o.fp16;
  if (o.cosine !== undefined) t.cosine = o.cosine;
  if (o.labelSmoothing === false) t.labelSmoothing = 0;
  else if (typeof o.labelSmoothing === 'number') t.labelSmoothing = o.labelSmoothing;
  if (o.mixup === false) t.mixup = 0;
  else if (typeof o.mixup === 'number') t.mixup = o.mixup;
  if (o.temperature !== undefined) t.temperature = o.temperature;
  if (o.distill === true) {
    if (!o.teacher) throw new UserError('--distill needs a teacher: --teacher NAME|FILE.onnx|WEIGHTS (with --teacher-arch)', { exitCode: 2 });
    t.distill = true;
  } else if (o.distill === false) {
    t.distill = false;
  } else if (t.distill && !o.teacher) {
    t.distill = false;
    notices.push(`the ${recipe} recipe distills from a teacher, and none was given: distillation is off (give --teacher, e.g. a model trained with this command, or resnet152d-teacher for ImageNet classes)`);
  } else if (o.teacher) {
    t.distill = true;
  }
  return { tricks: t, notices };
}

/**
 * The request of a resumed run: every field the request leaves out is taken from the run's run.json, so
 * `{ out, resume: true }` alone continues it; the fields given stay, and the trainer then reports each
 * one that disagrees with the run.
 */
export function resumeRequest(saved: TrainConfig, request: TrainRequest): TrainRequest {
  const o: TrainRequest = { ...request };
  const take = <K extends keyof TrainRequest>(key: K, value: TrainRequest[K] | undefined) => {
    if (o[key] === undefined && value !== undefined) o[key] = value;
  };
  const t = saved.tricks;
  take('arch', saved.arch);
  take('data', saved.data.spec);
  take('valSplit', saved.data.valSplit);
  take('limitTrain', saved.data.limitTrain);
  take('limitVal', saved.data.limitVal);
  take('recipe', saved.recipe);
  take('epochs', saved.epochs);
  take('batchSize', saved.batchSize);
  take('microBatch', saved.microBatch);
  take('imageSize', saved.imageSize);
  take('lr', saved.baseLr);
  take('momentum', saved.momentum);
  take('nesterov', saved.nesterov);
  take('weightDecay', saved.weightDecay);
  take('seed', saved.seed);
  take('minCropArea', saved.minCropArea);
  take('hardWeight', saved.hardWeight);
  take('teacher', saved.teacher);
  take('teacherArch', saved.teacherArch);
  take('linearScaling', t.linearScaling);
  take('warmup', t.warmupEpochs);
  take('zeroGamma', t.zeroGamma);
  take('biasDecay', !t.noBiasDecay);
  take('fp16', t.fp16);
  take('cosine', t.cosine);
  take('labelSmoothing', t.labelSmoothing);
  take('mixup', t.mixup);
  take('temperature', t.temperature);
  // A teacher given now turns distillation on (and disagrees with a run without one) unless distill says otherwise.
  if (request.teacher === undefined) take('distill', t.distill);
  return o;
}

function timestamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** A run planned from a request: everything is checked, nothing has started. */
export interface TrainPlan {
  config: TrainConfig;
  data: TrainingData;
  outDir: string;
  request: TrainRequest;
  /** What was decided for the user (a recipe's warmup shortened, distillation off for want of a teacher). */
  notices: string[];
}

/** Checks a request and turns it into a run's configuration (reading run.json when resuming). */
export async function planTraining(given: TrainRequest): Promise<TrainPlan> {
  let request = given;
  let saved: TrainConfig | undefined;
  if (request.recipe !== undefined && !RECIPE_NAMES.includes(request.recipe)) {
    throw new UserError(`unknown recipe '${String(request.recipe)}'; the recipes are ${RECIPE_NAMES.join(', ')}`, { exitCode: 2 });
  }
  if (request.resume) {
    if (!request.out) throw new UserError('--resume needs --out DIR, the run directory to continue', { exitCode: 2 });
    if (!existsSync(request.out)) throw new UserError(`--resume: ${request.out} does not exist (give --out the directory of the run to continue)`, { exitCode: 2 });
    const file = path.join(request.out, RUN_FILES.config);
    saved = readRunConfig(file);
    try {
      validateConfig(saved);
    } catch (e) {
      if (e instanceof UserError) throw new UserError(`${file}: ${e.message}`, { cause: e });
      throw e;
    }
    if (request.data === undefined && saved.data.spec !== DEFAULTS.data && !existsSync(saved.data.spec)) {
      throw new UserError(`--resume: the run's data ${saved.data.spec} does not exist: if it has moved, give its new location with --data`, { exitCode: 2 });
    }
    request = resumeRequest(saved, request);
  }
  const arch = request.arch;
  if (!arch) {
    throw new UserError("zoo train needs an architecture (see 'zoo list'), e.g. 'zoo train resnet18d', or --out DIR --resume to continue a run", { exitCode: 2 });
  }
  getModelEntry(arch);
  const recipeName = request.recipe ?? DEFAULTS.recipe;
  const recipe = RECIPES[recipeName];
  if (request.addToZoo) {
    checkOwnModelName(request.addToZoo);
    // Found now rather than after hours of training.
    if (!request.force && (await findLocalModel(request.addToZoo))) {
      throw new UserError(`the local zoo already has '${request.addToZoo}': choose another --add-to-zoo name, pass --force to replace it, or 'zoo rm ${request.addToZoo}'`, { exitCode: 2 });
    }
  }
  if (request.teacherArch) getModelEntry(request.teacherArch);
  const { tricks, notices } = resolveTricks(recipeName, request);
  if (request.export === false && request.addToZoo) throw new UserError('--add-to-zoo needs the export: drop --no-export', { exitCode: 2 });

  const dataSpec = request.data ?? DEFAULTS.data;
  const seed = request.seed ?? DEFAULTS.seed;
  // A run made before --val-split was refused on data with its own validation split recorded it there
  // without effect: its resume opens the data as that run did.
  const splitsData = request.valSplit !== undefined && (given.valSplit !== undefined || !saved || takesValSplit(dataSpec));
  const data = await openTrainingData(dataSpec, {
    ...(splitsData ? { valFraction: request.valSplit } : {}),
    seed,
    ...(request.limitTrain ? { limitTrain: request.limitTrain } : {}),
    ...(request.limitVal ? { limitVal: request.limitVal } : {}),
  });
  const src = data.train.source;
  const small = src.kind === 'memory' && Math.max(src.height, src.width) <= 64;
  const imageSize = request.imageSize ?? (small ? 32 : 224);
  const batchSize = request.batchSize ?? recipe.batchSize;
  const config: TrainConfig = {
    arch,
    recipe: recipeName,
    tricks,
    epochs: request.epochs ?? recipe.epochs,
    batchSize,
    microBatch: request.microBatch ?? defaultMicroBatch(batchSize, imageSize),
    imageSize,
    baseLr: request.lr ?? DEFAULTS.lr,
    momentum: request.momentum ?? DEFAULTS.momentum,
    nesterov: request.nesterov ?? DEFAULTS.nesterov,
    weightDecay: request.weightDecay ?? DEFAULTS.weightDecay,
    seed,
    minCropArea: request.minCropArea ?? DEFAULTS.minCropArea,
    ...(request.hardWeight !== undefined ? { hardWeight: request.hardWeight } : {}),
    data: {
      spec: dataSpec,
      train: datasetSize(data.train),
      val: datasetSize(data.val),
      classes: data.classes,
      // How the splits were made, so that --resume alone opens the same data.
      ...(request.valSplit !== undefined ? { valSplit: request.valSplit } : {}),
      ...(request.limitTrain ? { limitTrain: request.limitTrain } : {}),
      ...(request.limitVal ? { limitVal: request.limitVal } : {}),
    },
    ...(tricks.distill && request.teacher ? { teacher: request.teacher } : {}),
    ...(tricks.distill && request.teacher && request.teacherArch ? { teacherArch: request.teacherArch } : {}),
  };
  // The recipe's warmup, not one the user gave, is fitted to a short run (a warmup given too long is refused).
  if (given.warmup === undefined && !saved && tricks.warmupEpochs > 0 && config.data.train >= config.batchSize) {
    const fit = fitRecipeWarmup({ recipe: recipeName, warmupEpochs: tricks.warmupEpochs, epochs: config.epochs, updatesPerEpoch: updatesPerEpoch(config), cosine: tricks.cosine });
    tricks.warmupEpochs = fit.warmupEpochs;
    if (fit.note) notices.push(fit.note);
  }
  validateConfig(config);
  const updates = updatesPerEpoch(config);
  if (updates < 20) {
    notices.push(`batch ${config.batchSize} gives only ${updates} updates per epoch on ${config.data.train} images; a smaller --batch-size trains better on small data`);
  }
  const outDir = request.out ?? path.join('runs', `${arch}-${recipeName}-${timestamp()}`);
  return { config, data, outDir, request, notices };
}

/** Largest tensor of one image through `arch` at `size`: the biggest layer output, or the input. */
function perImageBytes(arch: string, numClasses: number, size: number): number {
  const config = getModelEntry(arch).config;
  const inChannels = config.inChannels ?? 3;
  return largestTensorBytes(countNetwork(new ResNet({ ...config, numClasses }), size, size, inChannels), size, size, inChannels);
}

/** On a GPU backend, refuses a micro-batch whose largest tensor the device cannot bind (training and the evaluation batch). */
function checkFitsDevice(arch: string, numClasses: number, size: number, microBatch: number): void {
  const at = (s: number) => perImageBytes(arch, numClasses, s);
  checkWebGpuFits({ what: `${arch} training at ${size}x${size}`, batch: microBatch, perImageBytes: at(size), perImageBytesAt: at, size });
}

/** Trains as planned by `planTraining(request)`; see the module comment. */
export async function train(request: TrainRequest, callbacks: TrainCallbacks = {}): Promise<TrainOutcome> {
  const plan = await planTraining(request);
  const { config, data, outDir } = plan;
  const r = plan.request;
  const info = await initBackend({ ...(r.backend ? { backend: r.backend } : {}), purpose: 'training' });
  callbacks.onBackend?.(info, { outDir });
  checkFitsDevice(config.arch, data.classes.length, config.imageSize, config.microBatch);
  const emit = (e: TrainEvent) => {
    callbacks.onEvent?.(e);
    if (e.type === 'epoch') callbacks.onEpoch?.(e.record, e.epochs);
    if (e.type === 'progress') {
      callbacks.onProgress?.({ epoch: e.epoch, epochs: e.epochs, update: e.update, updatesPerEpoch: e.itersPerEpoch, loss: e.loss, lr: e.lr, imagesPerSecond: e.imagesPerSecond });
    }
  };
  for (const message of plan.notices) emit({ type: 'notice', message });
  let teacher: Teacher | undefined;
  if (config.tricks.distill) {
    teacher = await loadTeacher(r.teacher!, { ...(r.teacherArch ? { arch: r.teacherArch } : {}), numClasses: data.classes.length, classes: data.classes, imageSize: config.imageSize });
    emit({ type: 'notice', message: `teacher: ${teacher.describe}, temperature ${config.tricks.temperature}` });
  }
  const t0 = performance.now();
  let model: Model | undefined;
  try {
    const result = await runTrainer({
      config,
      data,
      outDir,
      resume: r.resume ?? false,
      ...(teacher ? { teacher } : {}),
      ...(r.workers !== undefined ? { workers: r.workers } : {}),
      checkpointMinutes: r.checkpointMinutes ?? DEFAULTS.checkpointMinutes,
      ...(callbacks.signal ? { signal: callbacks.signal } : {}),
      export: r.export ?? true,
      checkData: r.checkData ?? true,
      onEvent: emit,
    });
    model = result.model;
    const outcome: TrainOutcome = {
      dir: outDir,
      finished: result.finished,
      config,
      records: result.records,
      checkpoint: result.checkpoint,
      ...(result.onnx ? { onnx: result.onnx } : {}),
      ...(result.check ? { check: result.check } : {}),
      seconds: (performance.now() - t0) / 1000,
    };
    if (result.finished && r.addToZoo && result.onnxBytes && result.check) {
      const h = await hashFile(result.checkpoint);
      const added = await addToLocalZoo({
        name: r.addToZoo,
        arch: config.arch,
        onnxBytes: result.onnxBytes,
        preprocessing: runPreprocessing(config.imageSize),
        labels: [...data.classes],
        source: { url: path.resolve(outDir), format: 'zoo-training-run', naming: 'zoo', file: path.resolve(result.checkpoint), ...h },
        check: checkSummary(result.check),
        force: r.force ?? false,
      });
      outcome.added = { name: added.name, onnx: added.onnx };
    }
    return outcome;
  } finally {
    model?.dispose();
    await teacher?.dispose();
  }
}
