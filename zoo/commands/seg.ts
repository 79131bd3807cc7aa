import { Command } from 'commander';
import { ensureDir } from '../../src/io/atomic.js';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describeBackend } from '../../src/backend/index.js';
import { UserError } from '../../src/errors.js';
import { formatDuration } from '../../src/train/progress.js';
import { segmentationPrinter } from '../../src/segmentation/progress.js';
import { formatSegResult, segResultJson } from '../../src/segmentation/metrics.js';
import { generateAdeSet } from '../../src/segmentation/ade_generate.js';
import { parseClassList } from '../../src/detection/voc.js';
import {
  evaluateSegmentation,
  exportSegmentation,
  importSegmentation,
  openSegmenter,
  segment,
  trainSegmentation,
  writeSegmentation,
  type SegTrainRequest,
} from '../../src/api/segmentation.js';
import { action, given, list, number, positiveInt, withStopSignal } from '../run.js';

function pair(v: number[], name: string, example: string): [number, number] {
  if (v.length !== 2) throw new UserError(`${name} takes two numbers, min and max (e.g. ${example}), got ${v.join(',')}`, { exitCode: 2 });
  return v as [number, number];
}

const positive = (name: string) => number(name, (v) => v > 0, 'positive');

function trainCommand(globals: () => { backend?: string }): Command {
  return new Command('train')
    .description('fine-tune an FCN (dilated backbone, output stride 8) on ADE20K-format data from a zoo backbone')
    .option('--backbone <model>', 'a registered architecture (random initialization, e.g. resnet50d), a local zoo name (zoo pull, zoo train --add-to-zoo), a published name, a weights file or a training run')
    .option('--backbone-arch <arch>', 'architecture of a --backbone weights file that does not record it')
    .option('--data <dir>', 'ADEChallengeData2016 (or a folder holding it, or any images/ + annotations/ pair with training/ and validation/); see zoo seg generate')
    .option('--limit-train <n>', 'use the first n training images', positiveInt('--limit-train'))
    .option('--limit-val <n>', 'use the first n validation images', positiveInt('--limit-val'))
    .option('--epochs <n>', 'epochs (default 30; GluonCV trains ADE20K for 120)', positiveInt('--epochs'))
    .option('--batch-size <n>', 'crops per update (default 8)', positiveInt('--batch-size'))
    .option('--micro-batch <n>', 'crops per forward/backward pass; gradients accumulate over batch-size/micro-batch passes (default 4)', positiveInt('--micro-batch'))
    .option('--lr <x>', "peak learning rate of the backbone (default 0.01 x batch / 16, GluonCV's)", positive('--lr'))
    .option('--head-lr-scale <x>', "the heads' learning rate as a multiple of --lr (default 10)", positive('--head-lr-scale'))
    .option('--momentum <x>', 'SGD momentum (default 0.9)', number('--momentum', (v) => v >= 0 && v < 1, 'in [0, 1)'))
    .option('--weight-decay <x>', 'L2 weight decay (default 1e-4)', number('--weight-decay', (v) => v >= 0, 'a number >= 0'))
    .option('--warmup <epochs>', 'linear warmup in epochs (default 0)', number('--warmup', (v) => v >= 0, 'a number >= 0'))
    .option('--power <x>', 'exponent of the poly decay lr x (1 - t/T)^power (default 0.9)', positive('--power'))
    .option('--base-size <px>', "training crops: the long side is drawn from --scale x this (default 520)", positiveInt('--base-size'))
    .option('--crop-size <px>', 'side of the square training crops, padded where the image is smaller (default 480)', positiveInt('--crop-size'))
    .option('--scale <min,max>', 'range of the long side as multiples of --base-size (default 0.5,2)', list(positive('--scale')))
    .option('--no-flip', 'no random horizontal flips')
    .option('--bn <mode>', "batch norm: 'train' (batch statistics, GluonCV's; needs --micro-batch >= 2) or 'frozen' (the backbone's running statistics)")
    .option('--output-stride <n>', 'input / feature size: 8 (stages 3 and 4 dilated, the paper\'s) or 16 (stage 4 dilated, 4x fewer multiply-adds in them)', number('--output-stride', (v) => v === 8 || v === 16, '8 or 16'))
    .option('--no-aux', 'no auxiliary head on C4 (the loss is the main head\'s only)')
    .option('--aux-weight <x>', 'weight of the auxiliary loss (default 0.5)', number('--aux-weight', (v) => v >= 0, 'a number >= 0'))
    .option('--seed <n>', 'seed of initialization, data order, crops, flips and dropout', number('--seed', Number.isInteger, 'an integer'))
    .option('--out <dir>', 'run directory (default runs/seg-<arch>-<time>)')
    .option('--resume', 'continue the run in --out from its checkpoint, with the options in its run.json')
    .option('--checkpoint-minutes <n>', 'also checkpoint this often within an epoch (0: only at epoch ends)', number('--checkpoint-minutes', (v) => v >= 0, 'a number >= 0'))
    .option('--no-export', 'skip the ONNX export at the end')
    .addHelpText(
      'after',
      `
The segmenter is GluonCV's fcn_resnet50_ade on the backbone you give: stages 3 and 4 dilated (output
stride 8), a head on C5 (3x3 conv 512, BN, ReLU, dropout 0.1, 1x1 conv to the classes), an auxiliary head
on C4 (inner 256, loss weight 0.5, training only), logits upsampled bilinearly to the input size. The loss
is pixel cross-entropy over labeled pixels: label 0 (unlabeled) and the padding of a crop count nothing.
The backbone's classifier is dropped; its strides become dilations; the heads learn 10x faster.

Each epoch ends with pixel accuracy and mIoU of the validation split at full images; the run directory
gets run.json, log.jsonl, checkpoint.safetensors (every epoch, before its validation, every
--checkpoint-minutes and on Ctrl-C) and model.onnx, checked in ONNX Runtime against the tfjs segmenter on
three image sizes. Ctrl-C stops after the current update (during validation, after the image in
progress; the epoch's updates are kept and its validation runs again); 'zoo seg train --out DIR --resume'
continues exactly where it stopped. A run whose data has moved resumes with --data at its new place (the
samples must be the same).

Examples:
  zoo seg generate data/ade-fashion
  zoo seg train --backbone fashion-resnet18d --data data/ade-fashion --base-size 128 --crop-size 112 --out runs/seg
  zoo seg train --backbone resnet50d --data ~/ADEChallengeData2016 --batch-size 16 --micro-batch 4 --epochs 120
  zoo seg train --out runs/seg --resume`,
    )
    .action(
      action(async (opts: Record<string, unknown>, cmd: Command) => {
        const o = given(opts, cmd);
        const request: SegTrainRequest = {
          ...(o as SegTrainRequest),
          ...(Array.isArray(o.scale) ? { scale: pair(o.scale as number[], '--scale', '0.5,2') } : {}),
          ...(opts.flip === false ? { flip: false } : {}),
          ...(opts.aux === false ? { aux: false } : {}),
          ...(opts.export === false ? { export: false } : {}),
          ...(globals().backend ? { backend: globals().backend! } : {}),
        };
        if (o.bn !== undefined && o.bn !== 'train' && o.bn !== 'frozen') throw new UserError(`--bn must be 'train' or 'frozen', got '${String(o.bn)}'`, { exitCode: 2 });
        await withStopSignal(async (signal) => {
          const r = await trainSegmentation(request, {
            signal,
            onBackend: (info) => process.stderr.write(`${describeBackend(info)}\n`),
            onEvent: segmentationPrinter(),
          });
          if (!r.finished) {
            process.exitCode = 130;
            return;
          }
          const last = r.records.at(-1);
          process.stdout.write(
            `finished ${r.config.epochs} epochs in ${formatDuration(r.seconds)}${last ? `: val pixAcc ${(100 * last.valPixAcc).toFixed(2)}%, mIoU ${(100 * last.valMIoU).toFixed(2)}%` : ''} (${r.dir})\n`,
          );
        });
      }),
    );
}

function evalCommand(): Command {
  return new Command('eval')
    .description('pixel accuracy and mIoU (the ADE20K benchmark\'s definitions) of a segmenter, or of prediction PNGs')
    .argument('[model]', 'a segmentation run directory, an exported .onnx file or a pulled published name')
    .requiredOption('--data <dir>', 'the ADE-layout data with the annotations')
    .option('--split <name>', "'training' or 'validation'", 'validation')
    .option('--limit <n>', 'evaluate the first n images of the split', positiveInt('--limit'))
    .option('--predictions <dir>', 'evaluate the label PNGs in DIR (the annotations\' names and encoding: 0 unlabeled, class k as k) instead of a model; no images needed')
    .option('--write-predictions <dir>', "also write the model's predictions as label PNGs into DIR")
    .option('--json', 'print {"pixAcc", "mIoU", "classes": {"<class>": {"iou"}}}')
    .addHelpText(
      'after',
      `
Only labeled pixels count (annotation value > 0); a prediction on an unlabeled pixel is ignored.
pixAcc = correct labeled pixels / labeled pixels. Per class, intersection and union are summed over the
whole split, then IoU = intersection / union; mIoU is their mean over the classes that occur (labeled or
predicted) in the split: the benchmark's mean whenever every class occurs, as in ADE20K's validation set.

Examples:
  zoo seg eval runs/seg --data data/ade-fashion
  zoo seg eval --predictions preds/ --data ~/ADEChallengeData2016 --json`,
    )
    .action(
      action(async (model: string | undefined, opts: Record<string, unknown>) => {
        const json = opts.json === true;
        if (opts.split !== 'training' && opts.split !== 'validation') throw new UserError(`--split must be 'training' or 'validation', got '${String(opts.split)}'`, { exitCode: 2 });
        const out = await evaluateSegmentation({
          ...(model ? { model } : {}),
          ...(typeof opts.predictions === 'string' ? { predictions: opts.predictions } : {}),
          data: opts.data as string,
          split: opts.split,
          ...(typeof opts.limit === 'number' ? { limit: opts.limit } : {}),
          ...(typeof opts.writePredictions === 'string' ? { writePredictions: opts.writePredictions } : {}),
          ...(!json && process.stderr.isTTY ? { onProgress: (d: number, t: number) => process.stderr.write(`\rsegmenting ${d}/${t}\x1b[K${d === t ? '\r\x1b[K' : ''}`) } : {}),
        });
        if (out.note) process.stderr.write(`${out.note}\n`);
        if (json) {
          process.stdout.write(`${JSON.stringify(segResultJson(out.result))}\n`);
          return;
        }
        process.stdout.write(`${formatSegResult(out.result)}\n`);
        process.stdout.write(`${out.images} images, ${formatDuration(out.seconds)}\n`);
        if (typeof opts.writePredictions === 'string') process.stdout.write(`wrote ${out.images} prediction PNGs to ${opts.writePredictions}\n`);
      }),
    );
}

function exportCommand(globals: () => { backend?: string }): Command {
  return new Command('export')
    .description("export a segmentation run's checkpoint (or an exported segmenter, again) as one ONNX graph (images in, logits at input size out), checked in ONNX Runtime")
    .argument('<model>', 'a segmentation run directory (run.json and checkpoint.safetensors), an exported .onnx file or a pulled published name')
    .requiredOption('-o, --output <file>', 'the .onnx file to write')
    .option('--argmax', 'also output "labels" int64 [N, H, W] (argmax + 1: the annotations\' encoding)')
    .option('--aux', "also output the auxiliary head's \"aux_logits\" (left out by default: training only)")
    .addHelpText(
      'after',
      `
The graph (opset 17) takes "input" float32 [N, 3, H, W] (normalized as the metadata says; any batch,
height and width) and gives "logits" float32 [N, classes, H, W] at the input's resolution (the bilinear
upsampling is in the graph). It is checked against the tfjs segmenter on three sizes before it is written.

Examples:
  zoo seg export runs/seg -o fcn.onnx
  zoo seg export fcn_resnet50 -o fcn-labels.onnx --argmax   # a pulled published FCN with the labels output`,
    )
    .action(
      action(async (model: string, opts: { output: string; argmax?: boolean; aux?: boolean }) => {
        const r = await exportSegmentation(model, opts.output, {
          ...(opts.argmax ? { argmax: true } : {}),
          ...(opts.aux ? { aux: true } : {}),
          ...(globals().backend ? { backend: globals().backend! } : {}),
        });
        const worst = Math.max(...r.check.cases.map((c) => c.maxAbsDiff / Math.max(1, c.maxAbsLogit)));
        process.stdout.write(`wrote ${r.file} (${(r.bytes / 1e6).toFixed(1)} MB): matches the tfjs segmenter on ${r.check.cases.length} image sizes (logits within ${worst.toExponential(1)} of their scale)\n`);
      }),
    );
}

function importCommand(globals: () => { backend?: string }): Command {
  return new Command('import')
    .description("convert a whole FCN state dict (torchvision's fcn_resnet50/101 naming, or GluonCV's) with zoo's definitions to one checked ONNX graph")
    .argument('<file>', '.pth (read by a restricted unpickler: tensors only, no code), .safetensors or GluonCV .params')
    .requiredOption('--backbone <arch>', "the backbone architecture of the weights (torchvision's fcn_resnet50: resnet50b; GluonCV's fcn_resnet50_ade: resnet50s)")
    .option('--num-classes <n>', "the classifier's classes (checked against the file)", positiveInt('--num-classes'))
    .option('--labels <file>', 'class names, one per line (default class_1..class_N)')
    .requiredOption('-o, --output <file>', 'the .onnx file to write')
    .option('--output-stride <n>', 'the dilation the weights were trained with (default 8)', number('--output-stride', (v) => v === 8 || v === 16, '8 or 16'))
    .option('--naming <naming>', "tensor names: 'torchvision', 'gluoncv' or 'zoo' (default: told from the names)")
    .option('--align-corners', 'upsample with aligned corners (GluonCV\'s; default: what the naming implies, half-pixel for torchvision)')
    .option('--argmax', 'also output "labels" int64 [N, H, W]')
    .addHelpText(
      'after',
      `
Examples:
  zoo seg import fcn_resnet50_coco-1167a1af.pth --backbone resnet50b --num-classes 21 -o fcn.onnx
  zoo seg import model.safetensors --backbone resnet101b --labels classes.txt -o fcn101.onnx --argmax`,
    )
    .action(
      action(async (file: string, opts: Record<string, unknown>) => {
        const labels = typeof opts.labels === 'string' ? [...parseClassList(await readFile(opts.labels, 'utf8'), opts.labels)] : undefined;
        const r = await importSegmentation({
          file,
          backbone: opts.backbone as string,
          out: opts.output as string,
          ...(typeof opts.numClasses === 'number' ? { numClasses: opts.numClasses } : {}),
          ...(labels ? { labels } : {}),
          ...(typeof opts.outputStride === 'number' ? { outputStride: opts.outputStride as 8 | 16 } : {}),
          ...(typeof opts.naming === 'string' ? { naming: opts.naming as 'torchvision' } : {}),
          ...(opts.alignCorners ? { alignCorners: true } : {}),
          ...(opts.argmax ? { argmax: true } : {}),
          ...(globals().backend ? { backend: globals().backend! } : {}),
        });
        for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
        const worst = Math.max(...r.check.cases.map((c) => c.maxAbsDiff / Math.max(1, c.maxAbsLogit)));
        process.stdout.write(`wrote ${r.file} (${(r.bytes / 1e6).toFixed(1)} MB) from ${r.naming} weights: matches the tfjs segmenter on ${r.check.cases.length} image sizes (logits within ${worst.toExponential(1)} of their scale)\n`);
      }),
    );
}

function predictCommand(): Command {
  return new Command('predict')
    .description('segment images with an exported segmenter: a label PNG and a colorized overlay per image, a JSON summary on stdout')
    .argument('<model>', 'a segmentation run directory, an exported .onnx file or a pulled published name')
    .argument('<images...>', 'JPEG, PNG or WebP files')
    .option('--out <dir>', 'where <name>.labels.png and <name>.overlay.png go', 'segmentations')
    .option('--alpha <x>', 'opacity of the colors over the image', number('--alpha', (v) => v >= 0 && v <= 1, 'in [0, 1]'), 0.5)
    .addHelpText('after', '\nThe label PNG has the annotations\' encoding (class k of the metadata\'s labels as value k, from 1).\n\nExample:\n  zoo seg predict runs/seg street.jpg --out masks/')
    .action(
      action(async (model: string, images: string[], opts: { out: string; alpha: number }) => {
        const stems = new Map<string, string>();
        for (const file of images) {
          const stem = path.basename(file).replace(/\.[^.]+$/, '');
          const other = stems.get(stem);
          if (other !== undefined) throw new UserError(`${other} and ${file} would both write ${stem}.labels.png in ${opts.out}: segment them in two runs with different --out`, { exitCode: 2 });
          stems.set(stem, file);
        }
        const s = await openSegmenter(model);
        try {
          await ensureDir(opts.out, '--out');
          const results = [];
          for (const file of images) {
            const [r] = await segment(s, [file]);
            const stem = path.basename(file).replace(/\.[^.]+$/, '');
            const files = { labels: path.join(opts.out, `${stem}.labels.png`), overlay: path.join(opts.out, `${stem}.overlay.png`) };
            await writeSegmentation(file, r!, files, { alpha: opts.alpha });
            const total = r!.width * r!.height;
            const areas = Object.entries(r!.areas)
              .sort((a, b) => b[1] - a[1])
              .map(([label, n]) => ({ label, fraction: +(n / total).toFixed(4) }));
            results.push({ image: file, width: r!.width, height: r!.height, classes: areas, ...files });
          }
          process.stdout.write(`${JSON.stringify({ model: s.file, results }, null, 2)}\n`);
        } finally {
          await s.close();
        }
      }),
    );
}

function generateCommand(): Command {
  return new Command('generate')
    .description('write an ADE-layout segmentation set made from the embedded Fashion-MNIST items on textured backgrounds, their pixel masks as labels')
    .argument('<dir>', 'where ADEChallengeData2016 goes')
    .option('--train <n>', 'training scenes (Fashion-MNIST training items)', positiveInt('--train'), 300)
    .option('--val <n>', 'validation scenes (Fashion-MNIST test items)', positiveInt('--val'), 100)
    .option('--sides <min,max>', "range of the images' width and height in pixels", list(positiveInt('--sides')), [96, 160])
    .option('--items <min,max>', "range of a pasted item's side in pixels", list(positiveInt('--items')), [32, 80])
    .option('--max-objects <n>', 'items per image: 1 to this', positiveInt('--max-objects'), 3)
    .option('--unlabeled-background', "label the background 0 (unlabeled) instead of the class 'background'")
    .option('--seed <n>', 'seed', number('--seed', Number.isInteger, 'an integer'), 0)
    .option('--force', 'replace a set generated before')
    .action(
      action(async (dir: string, opts: { train: number; val: number; sides: number[]; items: number[]; maxObjects: number; seed: number; force?: boolean; unlabeledBackground?: boolean }) => {
        const [minSide, maxSide] = pair(opts.sides, '--sides', '96,160');
        const [minItem, maxItem] = pair(opts.items, '--items', '32,80');
        const s = await generateAdeSet(dir, {
          trainImages: opts.train,
          valImages: opts.val,
          minSide,
          maxSide,
          minItem,
          maxItem,
          maxObjects: opts.maxObjects,
          seed: opts.seed,
          background: opts.unlabeledBackground ? 'unlabeled' : 'class',
          ifExists: opts.force ? 'overwrite' : 'error',
        });
        process.stdout.write(`wrote ${s.root}: ${s.counts.training} training (${s.counts.trainingObjects} objects), ${s.counts.validation} validation (${s.counts.validationObjects} objects) images, classes ${s.classes.join(', ')}\n`);
      }),
    );
}

export function segCommand(globals: () => { backend?: string }): Command {
  return new Command('seg')
    .description('semantic segmentation: FCN on a dilated zoo backbone (train, eval, export, import, predict, generate)')
    .addCommand(trainCommand(globals))
    .addCommand(evalCommand())
    .addCommand(exportCommand(globals))
    .addCommand(importCommand(globals))
    .addCommand(predictCommand())
    .addCommand(generateCommand());
}
