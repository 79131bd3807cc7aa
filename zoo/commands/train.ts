import { Command, Option } from 'commander';
import { describeBackend } from '../../src/backend/index.js';
import { RECIPES, RECIPE_NAMES } from '../../src/train/recipes.js';
import type { TrainEvent } from '../../src/train/trainer.js';
import { trainingPrinter, trainingJsonPrinter, writeJsonEvent, formatDuration } from '../../src/train/progress.js';
import { train, type TrainRequest } from '../../src/api/train.js';
import { UserError } from '../../src/errors.js';
import { action, number, positiveInt, withStopSignal } from '../run.js';

const nonNegative = (name: string) => number(name, (v) => v >= 0, 'a number >= 0');
const fraction = (name: string) => number(name, (v) => v >= 0 && v < 1, 'in [0, 1)');

/**
 * The library request of the options given on the command line (the flags are the request's fields):
 * commander fills in defaults, but a default must not count as given (with --resume, everything not
 * given comes from run.json; otherwise the library applies the same defaults).
 */
export function requestOf(arch: string | undefined, opts: Record<string, unknown>, cmd: Command, backend: string | undefined): TrainRequest {
  const r: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(opts)) {
    if (key === 'json' || cmd.getOptionValueSource(key) !== 'cli') continue;
    r[key] = value;
  }
  if (arch) r.arch = arch;
  if (backend) r.backend = backend;
  return r as TrainRequest;
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
    .option('--fp16', 'mixed precision: bf16 convolutions, float32 master weights, on the native kernels where the CPU has AMX or AVX512-BF16 (elsewhere a notice, then float32)')
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
--add-to-zoo and --no-check-data are not recorded and apply to the resumed part). Data that moved
resumes with --data at its new place (its image counts and classes must agree; run.json then records it).

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
      action(async (arch: string | undefined, opts: Record<string, unknown>, cmd: Command) => {
        const json = opts.json === true;
        try {
          await runTrain(requestOf(arch, opts, cmd, globals().backend), json);
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

async function runTrain(request: TrainRequest, json: boolean): Promise<void> {
  const human = trainingPrinter();
  let machine: ((e: TrainEvent) => void) | undefined;
  // With --json, stdout carries only JSON lines: the human summary goes to stderr.
  const say = json ? (s: string) => process.stderr.write(s) : (s: string) => process.stdout.write(s);
  // Ctrl-C: finish the update, checkpoint, stop (withStopSignal).
  await withStopSignal(async (signal) => {
    const r = await train(request, {
      signal,
      onBackend: (info, run) => {
        process.stderr.write(`${describeBackend(info)}\n`);
        if (json) machine = trainingJsonPrinter(process.stdout, { start: { backend: info.name, outDir: run.outDir } });
      },
      onEvent: (e) => {
        human(e);
        machine?.(e);
      },
    });
    if (!r.finished) {
      process.exitCode = 130;
      return;
    }
    const last = r.records.at(-1);
    say(`finished ${r.config.epochs} epochs in ${formatDuration(r.seconds)}${last ? `: val top-1 ${(100 * last.valTop1).toFixed(2)}%, top-5 ${(100 * last.valTop5).toFixed(2)}%` : ''} (${r.dir})\n`);
    if (json) {
      writeJsonEvent('finished', {
        epochs: r.config.epochs,
        seconds: r.seconds,
        ...(last ? { valTop1: last.valTop1, valTop5: last.valTop5, valLoss: last.valLoss, loss: last.loss } : {}),
        outDir: r.dir,
        checkpoint: r.checkpoint,
        ...(r.onnx ? { onnx: r.onnx } : {}),
      });
    }
    if (r.added) {
      say(`added ${r.added.name} to the local zoo: ${r.added.onnx}\n`);
      if (json) writeJsonEvent('added', { name: r.added.name, onnx: r.added.onnx });
    }
  });
}
