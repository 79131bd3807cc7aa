import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { getModelEntry } from '../../src/models/registry.js';
import { RECIPES, RECIPE_NAMES, fitRecipeWarmup, type RecipeName, type Tricks } from '../../src/train/recipes.js';
import { openTrainingData } from '../../src/train/data.js';
import { train, validateConfig, runPreprocessing, updatesPerEpoch, RUN_FILES, type TrainConfig, type TrainEvent } from '../../src/train/trainer.js';
import { readRunConfig } from '../../src/train/run_config.js';
import { trainingPrinter, trainingJsonPrinter, writeJsonEvent, formatDuration } from '../../src/train/progress.js';
import { loadTeacher, type Teacher } from '../../src/train/teacher.js';
import { addToLocalZoo, checkOwnModelName, findLocalModel } from '../../src/hub/local.js';
import { hashFile } from '../../src/hub/cache.js';
import { datasetSize } from '../../src/data/dataset.js';
import { UserError } from '../../src/errors.js';
import { action, positiveInt } from '../run.js';

export interface TrainOpts {
  data: string;
  valSplit?: number;
  limitTrain?: number;
  limitVal?: number;
  recipe: string;
  epochs?: number;
  batchSize?: number;
  microBatch?: number;
  imageSize?: number;
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  seed: number;
  minCropArea: number;
  out?: string;
  resume?: boolean;
  linearScaling?: boolean;
  warmup?: number | boolean;
  zeroGamma?: boolean;
  biasDecay?: boolean;
  fp16?: boolean;
  cosine?: boolean;
  labelSmoothing?: number | boolean;
  mixup?: number | boolean;
  distill?: boolean;
  teacher?: string;
  teacherArch?: string;
  temperature?: number;
  hardWeight?: number;
  workers?: number;
  checkpointMinutes: number;
  export: boolean;
  addToZoo?: string;
  force?: boolean;
  checkData: boolean;
  json?: boolean;
}

export function number(name: string, check: (v: number) => boolean = Number.isFinite, what = 'a number'): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UserError(`${name} must be ${what}, got '${value}'`, { exitCode: 2 });
    return n;
  };
}

const nonNegative = (name: string) => number(name, (v) => v >= 0, 'a number >= 0');
const fraction = (name: string) => number(name, (v) => v >= 0 && v < 1, 'in [0, 1)');

/** The largest divisor of `batch` that is at most `cap`. */
export function defaultMicroBatch(batch: number, imageSize: number): number {
  // Activations grow with the pixel count; the wasm heap stops at 4 GiB (resnet50d at 224 fits 4-8).
  const cap = imageSize <= 64 ? 128 : imageSize <= 128 ? 32 : imageSize <= 160 ? 16 : 4;
  for (let m = Math.min(cap, batch); m >= 1; m--) if (batch % m === 0) return m;
  return 1;
}

/** The recipe's switches with the command line's overrides applied. */
export function resolveTricks(recipe: RecipeName, o: TrainOpts): { tricks: Tricks; notices: string[] } {
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
 * The options of a resumed run: every option the command line did not give is taken from the run's
 * run.json, so `zoo train --out DIR --resume` alone continues it; the options given stay, and the trainer
 * then reports each one that disagrees with the run.
 */
export function resumeOptions(saved: TrainConfig, opts: TrainOpts, given: (key: keyof TrainOpts) => boolean): TrainOpts {
  const o: TrainOpts = { ...opts };
  const take = <K extends keyof TrainOpts>(key: K, value: TrainOpts[K] | undefined) => {
    if (given(key)) return;
    if (value === undefined) delete o[key];
    else o[key] = value;
  };
  const t = saved.tricks;
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
  // A teacher given now turns distillation on (and disagrees with a run without one) unless --no-distill says otherwise.
  if (!given('teacher')) take('distill', t.distill);
  return o;
}

function timestamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export function trainCommand(globals: () => { backend?: string }): Command {
  return new Command('train')
    .description("train a registered architecture with the paper's recipes on an image folder or Fashion-MNIST")
    .argument('[arch]', "architecture (see 'zoo list'), e.g. resnet18d, resnet50d; with --resume, the run's (give it only to check)")
    .option('--data <dir>', "training data: an image folder (train/ and val/ class folders), a directory of MNIST-style IDX files, or 'fashion' (the embedded Fashion-MNIST subset)", 'fashion')
    .option('--val-split <fraction>', 'hold out this fraction of each class for validation (a folder of class folders)', number('--val-split', (v) => v > 0 && v < 1, 'in (0, 1)'))
    .option('--limit-train <n>', 'use a class-balanced subset of the training split', positiveInt('--limit-train'))
    .option('--limit-val <n>', 'use a class-balanced subset of the validation split', positiveInt('--limit-val'))
    .addOption(new Option('--recipe <name>', 'named set of tricks (printed at the start)').choices([...RECIPE_NAMES]).default('best'))
    .option('--epochs <n>', "epochs (default: the recipe's, 120 or 200)", positiveInt('--epochs'))
    .option('--batch-size <n>', "effective batch per update (default: the recipe's, 256 or 1024)", positiveInt('--batch-size'))
    .option('--micro-batch <n>', 'images per forward/backward pass; gradients of batch-size/micro-batch passes are accumulated (default: by image size)', positiveInt('--micro-batch'))
    .option('--image-size <n>', 'training and validation crop (default 224; 32 for 28x28 IDX data)', positiveInt('--image-size'))
    .option('--lr <x>', 'learning rate for a batch of 256 (scaled with --linear-scaling)', number('--lr', (v) => v > 0, 'positive'), 0.1)
    .option('--momentum <x>', 'SGD momentum', number('--momentum', (v) => v >= 0 && v < 1, 'in [0, 1)'), 0.9)
    .option('--no-nesterov', 'plain momentum instead of Nesterov (NAG)')
    .option('--weight-decay <x>', 'L2 weight decay', nonNegative('--weight-decay'), 1e-4)
    .option('--seed <n>', 'seed of initialization, data order, augmentation and mixup', number('--seed', Number.isInteger, 'an integer'), 0)
    .option('--min-crop-area <f>', 'smallest area of the random-resized crop (the paper: 0.08)', number('--min-crop-area', (v) => v > 0 && v <= 1, 'in (0, 1]'), 0.08)
    .option('--out <dir>', 'run directory (default runs/<arch>-<recipe>-<time>)')
    .option('--resume', "continue the run in --out from its checkpoint, with the options in its run.json (options given again must agree)")
    .optionsGroup('Tricks (each overrides the recipe):')
    .option('--linear-scaling', 'lr = lr x batch / 256')
    .option('--no-linear-scaling', 'keep lr whatever the batch')
    .option('--warmup <epochs>', 'linear warmup length in epochs (paper: 5)', nonNegative('--warmup'))
    .option('--no-warmup', 'no warmup')
    .option('--zero-gamma', 'start the last BN gamma of every block at 0')
    .option('--no-zero-gamma', 'BN gamma 1 everywhere')
    .option('--bias-decay', 'weight decay on every parameter')
    .option('--no-bias-decay', 'weight decay on conv and fc weights only')
    .option('--fp16', 'mixed precision where the backend computes in float16 (none of the tfjs backends does: a notice, then float32)')
    .option('--no-fp16', 'float32')
    .option('--cosine', 'cosine learning-rate decay')
    .option('--no-cosine', 'step decay: /10 at 1/4, 1/2 and 3/4 of the run')
    .option('--label-smoothing <eps>', 'label smoothing epsilon (paper: 0.1): the true class gets 1 - eps, every other eps / (K - 1)', fraction('--label-smoothing'))
    .option('--no-label-smoothing', 'hard labels')
    .option('--mixup <alpha>', 'mixup with Beta(alpha, alpha) (paper: 0.2)', nonNegative('--mixup'))
    .option('--no-mixup', 'no mixup')
    .option('--distill', 'knowledge distillation from --teacher')
    .option('--no-distill', 'no distillation')
    .option('--teacher <model>', 'teacher: a local zoo name, an .onnx file (ONNX Runtime), or a weights file with --teacher-arch (tfjs)')
    .option('--teacher-arch <arch>', 'architecture of a teacher weights file')
    .option('--temperature <T>', 'distillation temperature (paper: 20)', number('--temperature', (v) => v > 0, 'positive'))
    .option('--hard-weight <w>', "weight of the hard-label term, GluonCV's mixing (default: the paper's plain sum)", number('--hard-weight', (v) => v >= 0 && v <= 1, 'in [0, 1]'))
    .optionsGroup('Run:')
    .option('--workers <n>', 'data loader threads (default: cores - 1)', number('--workers', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0'))
    .option('--checkpoint-minutes <n>', 'also checkpoint this often within an epoch (0: only at epoch ends)', nonNegative('--checkpoint-minutes'), 10)
    .option('--no-export', 'skip the ONNX export at the end')
    .option('--add-to-zoo <name>', 'add the exported model to the local zoo under this name')
    .option('--force', 'replace a model of that name in the local zoo')
    .option('--no-check-data', 'skip the check of image files before the first epoch (every validation image decoded, every training image header read)')
    .option('--json', 'machine-readable output: one JSON object per line on stdout (see below); the human progress stays on stderr')
    .addHelpText(
      'after',
      `
Recipes (paper sections 2, 3 and 5):
  baseline   ${RECIPES.baseline.description}
  efficient  ${RECIPES.efficient.description}
  best       ${RECIPES.best.description}
Epochs and batch sizes are the paper's ImageNet values; on a small data set or machine give your own
(the learning rate follows the effective batch with linear scaling). --batch-size larger than what
fits in memory is fine: it is split into --micro-batch passes whose gradients add up.

The run directory gets run.json (the options), log.jsonl (one record per epoch: loss, lr, valTop1,
valTop5, ...), checkpoint.safetensors (rewritten atomically every epoch, every --checkpoint-minutes
and on Ctrl-C) and model.onnx at the end, checked in ONNX Runtime. Ctrl-C stops after the current
update; 'zoo train --out DIR --resume' continues exactly where it stopped, with the options in
run.json (options given again must agree with them; --workers, --checkpoint-minutes, --no-export,
--add-to-zoo and --no-check-data are not recorded and apply to the resumed part).

A recipe's 5-epoch warmup is meant for its long runs: where it would take more than a quarter of a
shorter run, it is shortened to a tenth of the run, with a note. A --warmup you give is not changed.

Before the first epoch, every validation image is decoded and every training image's header is read, so
a bad file stops the run at once, by name (--no-check-data skips this). A training image that cannot be
decoded later stops the run naming it, with the last checkpoint intact.

--json writes one object per line on stdout, keyed by "event":
  start       config, params, updatesPerEpoch, totalUpdates, peakLr, warmupUpdates, backend, outDir, resumed
  notice      message
  epoch       epoch, epochs, loss, lr, valTop1, valTop5, valLoss, updates, images, imagesPerSecond, dataWait, ...
  checkpoint  path, update
  stopped     reason, checkpoint (Ctrl-C; exit code 130)
  exported    path, bytes, check (maxAbsDiff, maxAbsLogit, top1Agreement, provider, passed, ...)
  finished    epochs, seconds, valTop1, valTop5, outDir, checkpoint, onnx
  added       name, onnx (--add-to-zoo)
  error       message, exitCode (then the usual message on stderr)

Examples:
  zoo train resnet18d --data fashion --epochs 10 --batch-size 128 --image-size 32 --min-crop-area 0.35
  zoo train resnet50d --data ~/images --recipe efficient --epochs 30 --batch-size 256 --micro-batch 8
  zoo train --out runs/r50 --resume
  zoo train resnet18d --data fashion --epochs 10 --batch-size 128 --json > events.jsonl
  zoo plot runs/r50/log.jsonl -o curves.png`,
    )
    .action(
      action(async (archArg: string | undefined, given: TrainOpts, cmd: Command) => {
        const json = given.json ?? false;
        try {
          await runTrain(archArg, given, cmd, globals, json);
        } catch (e) {
          if (json) {
            const err = e as Error;
            writeJsonEvent('error', { message: err?.message ?? String(e), exitCode: e instanceof UserError ? e.exitCode : 70 });
          }
          throw e;
        }
      }),
    );
}

async function runTrain(archArg: string | undefined, given: TrainOpts, cmd: Command, globals: () => { backend?: string }, json: boolean): Promise<void> {
  let opts = given;
  let saved: TrainConfig | undefined;
  if (opts.resume) {
    if (!opts.out) throw new UserError('--resume needs --out DIR, the run directory to continue', { exitCode: 2 });
    if (!existsSync(opts.out)) throw new UserError(`--resume: ${opts.out} does not exist (give --out the directory of the run to continue)`, { exitCode: 2 });
    const file = path.join(opts.out, RUN_FILES.config);
    saved = readRunConfig(file);
    try {
      validateConfig(saved);
    } catch (e) {
      if (e instanceof UserError) throw new UserError(`${file}: ${e.message}`, { cause: e });
      throw e;
    }
    opts = resumeOptions(saved, opts, (key) => cmd.getOptionValueSource(key) === 'cli');
  }
  // With --resume an architecture given disagrees or agrees with the run's like any option (the trainer says which).
  const arch = archArg ?? saved?.arch;
  if (!arch) {
    throw new UserError("zoo train needs an architecture (see 'zoo list'), e.g. 'zoo train resnet18d', or --out DIR --resume to continue a run", { exitCode: 2 });
  }
  getModelEntry(arch);
  const recipeName = opts.recipe as RecipeName;
  const recipe = RECIPES[recipeName];
  if (opts.addToZoo) {
    checkOwnModelName(opts.addToZoo);
    // Found now rather than after hours of training.
    if (!opts.force && (await findLocalModel(opts.addToZoo))) {
      throw new UserError(`the local zoo already has '${opts.addToZoo}': choose another --add-to-zoo name, pass --force to replace it, or 'zoo rm ${opts.addToZoo}'`, { exitCode: 2 });
    }
  }
  if (opts.teacherArch) getModelEntry(opts.teacherArch);
  const { tricks, notices } = resolveTricks(recipeName, opts);
  if (!opts.export && opts.addToZoo) throw new UserError('--add-to-zoo needs the export: drop --no-export', { exitCode: 2 });

  const data = await openTrainingData(opts.data, {
    ...(opts.valSplit !== undefined ? { valFraction: opts.valSplit } : {}),
    seed: opts.seed,
    ...(opts.limitTrain ? { limitTrain: opts.limitTrain } : {}),
    ...(opts.limitVal ? { limitVal: opts.limitVal } : {}),
  });
  const src = data.train.source;
  const small = src.kind === 'memory' && Math.max(src.height, src.width) <= 64;
  const imageSize = opts.imageSize ?? (small ? 32 : 224);
  const batchSize = opts.batchSize ?? recipe.batchSize;
  const config: TrainConfig = {
    arch,
    recipe: recipeName,
    tricks,
    epochs: opts.epochs ?? recipe.epochs,
    batchSize,
    microBatch: opts.microBatch ?? defaultMicroBatch(batchSize, imageSize),
    imageSize,
    baseLr: opts.lr,
    momentum: opts.momentum,
    nesterov: opts.nesterov,
    weightDecay: opts.weightDecay,
    seed: opts.seed,
    minCropArea: opts.minCropArea,
    ...(opts.hardWeight !== undefined ? { hardWeight: opts.hardWeight } : {}),
    data: {
      spec: opts.data,
      train: datasetSize(data.train),
      val: datasetSize(data.val),
      classes: data.classes,
      // How the splits were made, so that --resume alone opens the same data.
      ...(opts.valSplit !== undefined ? { valSplit: opts.valSplit } : {}),
      ...(opts.limitTrain ? { limitTrain: opts.limitTrain } : {}),
      ...(opts.limitVal ? { limitVal: opts.limitVal } : {}),
    },
    ...(tricks.distill && opts.teacher ? { teacher: opts.teacher } : {}),
    ...(tricks.distill && opts.teacher && opts.teacherArch ? { teacherArch: opts.teacherArch } : {}),
  };
  // The recipe's warmup, not one the user gave, is fitted to a short run (a --warmup too long is refused).
  if (opts.warmup === undefined && tricks.warmupEpochs > 0 && config.data.train >= config.batchSize) {
    const fit = fitRecipeWarmup({ recipe: recipeName, warmupEpochs: tricks.warmupEpochs, epochs: config.epochs, updatesPerEpoch: updatesPerEpoch(config), cosine: tricks.cosine });
    tricks.warmupEpochs = fit.warmupEpochs;
    if (fit.note) notices.push(fit.note);
  }
  validateConfig(config);
  const outDir = opts.out ?? path.join('runs', `${arch}-${recipeName}-${timestamp()}`);

  const info = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), purpose: 'training' });
  process.stderr.write(`${describeBackend(info)}\n`);
  const human = trainingPrinter();
  const machine = json ? trainingJsonPrinter(process.stdout, { start: { backend: info.name, outDir } }) : undefined;
  const printer = (e: TrainEvent) => {
    human(e);
    machine?.(e);
  };
  for (const n of notices) printer({ type: 'notice', message: n });
  const updates = updatesPerEpoch(config);
  if (updates < 20) {
    printer({
      type: 'notice',
      message: `batch ${config.batchSize} gives only ${updates} updates per epoch on ${config.data.train} images; a smaller --batch-size trains better on small data`,
    });
  }

  let teacher: Teacher | undefined;
  if (tricks.distill) {
    teacher = await loadTeacher(opts.teacher!, { ...(opts.teacherArch ? { arch: opts.teacherArch } : {}), numClasses: data.classes.length, classes: data.classes });
    printer({ type: 'notice', message: `teacher: ${teacher.describe}, temperature ${tricks.temperature}` });
  }

  // Ctrl-C: finish the update, checkpoint, stop. A second Ctrl-C quits at once (the last checkpoint stays intact).
  const stop = new AbortController();
  const onSigint = () => {
    if (stop.signal.aborted) process.exit(130);
    process.stderr.write('\nstopping after this update (Ctrl-C again to quit now)...\n');
    stop.abort();
  };
  process.on('SIGINT', onSigint);
  const t0 = performance.now();
  // With --json, stdout carries only JSON lines: the human summary goes to stderr.
  const say = json ? (s: string) => process.stderr.write(s) : (s: string) => process.stdout.write(s);
  try {
    const r = await train({
      config,
      data,
      outDir,
      resume: opts.resume ?? false,
      ...(teacher ? { teacher } : {}),
      ...(opts.workers !== undefined ? { workers: opts.workers } : {}),
      checkpointMinutes: opts.checkpointMinutes,
      signal: stop.signal,
      export: opts.export,
      checkData: opts.checkData,
      onEvent: printer,
    });
    try {
      if (!r.finished) {
        process.exitCode = 130;
        return;
      }
      const last = r.records.at(-1);
      const secs = (performance.now() - t0) / 1000;
      say(`finished ${config.epochs} epochs in ${formatDuration(secs)}${last ? `: val top-1 ${(100 * last.valTop1).toFixed(2)}%, top-5 ${(100 * last.valTop5).toFixed(2)}%` : ''} (${outDir})\n`);
      if (json) {
        writeJsonEvent('finished', {
          epochs: config.epochs,
          seconds: secs,
          ...(last ? { valTop1: last.valTop1, valTop5: last.valTop5, valLoss: last.valLoss, loss: last.loss } : {}),
          outDir,
          checkpoint: r.checkpoint,
          ...(r.onnx ? { onnx: r.onnx } : {}),
        });
      }
      if (opts.addToZoo && r.onnxBytes && r.check) {
        const h = await hashFile(r.checkpoint);
        const added = await addToLocalZoo({
          name: opts.addToZoo,
          arch,
          onnxBytes: r.onnxBytes,
          preprocessing: runPreprocessing(config.imageSize),
          labels: [...data.classes],
          source: { url: path.resolve(outDir), format: 'zoo-training-run', naming: 'zoo', file: path.resolve(r.checkpoint), ...h },
          check: { maxAbsDiff: r.check.maxAbsDiff, maxAbsLogit: r.check.maxAbsLogit, top1Agreement: r.check.top1Agreement, provider: r.check.provider },
          force: opts.force ?? false,
        });
        say(`added ${added.name} to the local zoo: ${added.onnx}\n`);
        if (json) writeJsonEvent('added', { name: added.name, onnx: added.onnx });
      }
    } finally {
      r.model.dispose();
    }
  } finally {
    process.off('SIGINT', onSigint);
    await teacher?.dispose();
  }
}
