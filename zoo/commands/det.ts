import { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { ensureDir } from '../../src/io/atomic.js';
import path from 'node:path';
import { describeBackend } from '../../src/backend/index.js';
import { UserError } from '../../src/errors.js';
import { formatDuration } from '../../src/train/progress.js';
import { detectionPrinter } from '../../src/detection/progress.js';
import { formatVocResult, vocResultJson } from '../../src/detection/voc_eval.js';
import { generateVocSet } from '../../src/detection/voc_generate.js';
import { detect, drawDetections, evaluateDetection, exportDetection, openDetector, trainDetection, type DetTrainRequest } from '../../src/api/detection.js';
import { action, given, list, number, positiveInt, withStopSignal } from '../run.js';

const fraction = (name: string) => number(name, (v) => v > 0 && v < 1, 'in (0, 1)');

function trainCommand(globals: () => { backend?: string }): Command {
  return new Command('train')
    .description('fine-tune a Faster R-CNN (C4) on VOC-format data from a zoo backbone')
    .option('--backbone <model>', "a registered architecture (random initialization, e.g. resnet50d), a local zoo name (zoo pull, zoo train --add-to-zoo), a published name, a weights file or a training run")
    .option('--backbone-arch <arch>', 'architecture of a --backbone weights file that does not record it')
    .option('--data <dir>', 'a VOC devkit: VOCdevkit/ (VOC2007, VOC2012 or both) or one VOC20xx directory; see zoo det generate')
    .option('--train-split <name>', 'split file of ImageSets/Main for training (in every year that has it)', 'trainval')
    .option('--val-split <name>', 'split file for the validation at each epoch end', 'test')
    .option('--years <list>', 'years to read, e.g. 2007,2012 (default: every year that has the split)')
    .option('--limit-train <n>', 'use the first n images of the training split', positiveInt('--limit-train'))
    .option('--limit-val <n>', 'use the first n images of the validation split', positiveInt('--limit-val'))
    .option('--epochs <n>', 'epochs (default 12)', positiveInt('--epochs'))
    .option('--batch-size <n>', 'images per update (default 4)', positiveInt('--batch-size'))
    .option('--micro-batch <n>', 'images per forward/backward pass; gradients accumulate over batch-size/micro-batch passes (default 2)', positiveInt('--micro-batch'))
    .option('--lr <x>', 'peak learning rate (default 0.001 x batch size, GluonCV\'s VOC rate per image)', number('--lr', (v) => v > 0, 'positive'))
    .option('--momentum <x>', 'SGD momentum (default 0.9)', number('--momentum', (v) => v >= 0 && v < 1, 'in [0, 1)'))
    .option('--weight-decay <x>', 'L2 weight decay (default 5e-4, GluonCV\'s for VOC)', number('--weight-decay', (v) => v >= 0, 'a number >= 0'))
    .option('--warmup <epochs>', 'linear warmup in epochs (default 0.5)', number('--warmup', (v) => v >= 0, 'a number >= 0'))
    .option('--lr-steps <fractions>', 'fractions of the run where the rate is divided by 10 (default 0.7, GluonCV\'s 14 of 20 epochs)', list(fraction('--lr-steps')))
    .option('--min-size <px>', 'resize the short side to this (default 600)', positiveInt('--min-size'))
    .option('--max-size <px>', 'long side at most this (default 1000)', positiveInt('--max-size'))
    .option('--flip <p>', 'probability of a horizontal flip (default 0.5)', number('--flip', (v) => v >= 0 && v <= 1, 'in [0, 1]'))
    .option('--rpn-channels <n>', "channels of the RPN's 3x3 conv (default 1024, GluonCV's)", positiveInt('--rpn-channels'))
    .option('--anchor-scales <list>', 'anchor sizes as multiples of 16 pixels (default 2,4,8,16,32: 32 to 512 pixels; smaller for small objects)', list(number('--anchor-scales', (v) => v > 0, 'positive')))
    .option('--roi-size <n>', 'RoIAlign output side (default 14; the box head halves it)', positiveInt('--roi-size'))
    .option('--rois-per-image <n>', "regions sampled per image for the box head's loss (default 128)", positiveInt('--rois-per-image'))
    .option('--test-proposals <n>', 'proposals kept after NMS at test time (default 300)', positiveInt('--test-proposals'))
    .option('--seed <n>', 'seed of initialization, data order, flips and sampling', number('--seed', Number.isInteger, 'an integer'))
    .option('--out <dir>', 'run directory (default runs/det-<arch>-<time>)')
    .option('--resume', 'continue the run in --out from its checkpoint, with the options in its run.json')
    .option('--checkpoint-minutes <n>', 'also checkpoint this often within an epoch (0: only at epoch ends)', number('--checkpoint-minutes', (v) => v >= 0, 'a number >= 0'))
    .option('--no-export', 'skip the ONNX export at the end')
    .option('--add-to-zoo <name>', 'add the exported detector to the local zoo under this name (zoo det predict NAME)')
    .option('--force', 'replace a model of that name in the local zoo')
    .addHelpText(
      'after',
      `
The detector is GluonCV's faster_rcnn_resnet50_v1b_voc on the backbone you give: stem..stage 3 as the trunk
(stride 16), RPN (anchors base 16, scales 2..32, ratios 0.5/1/2; 12000/2000 proposals before/after NMS 0.7
in training, 6000/300 at test time), RoIAlign 14x14, stage 4 as the box head, 128 sampled regions per
image; stem, stage 1 and batch norm frozen. The backbone's classifier is dropped; the heads start from
N(0, 0.01) (box deltas N(0, 0.001)).

Each epoch ends with the VOC07 mAP of --val-split; the run directory gets run.json, log.jsonl,
checkpoint.safetensors (every epoch, before its validation, every --checkpoint-minutes and on Ctrl-C)
and model.onnx, checked in ONNX Runtime against the tfjs detector on three image sizes and batch 1 and 2.
Ctrl-C stops after the current update (during validation, after the image in progress; the epoch's
updates are kept and its validation runs again); 'zoo det train --out DIR --resume' continues exactly
where it stopped. A run whose data has moved resumes with --data at its new place (the images and split
files must be the same). Images are read as stored, the EXIF orientation ignored, as the annotations'
coordinates are; 'zoo det predict' applies it to photos.

Examples:
  zoo det generate data/voc-fashion
  zoo det train --backbone fashion-resnet18d --data data/voc-fashion/VOCdevkit --min-size 160 --max-size 256 --out runs/det
  zoo det train --backbone resnet50d --data ~/VOCdevkit --years 2007,2012 --epochs 20 --batch-size 8
  zoo det train --out runs/det --resume`,
    )
    .action(
      action(async (opts: Record<string, unknown>, cmd: Command) => {
        const o = given(opts, cmd);
        const request: DetTrainRequest = {
          ...(o as DetTrainRequest),
          ...(typeof opts.trainSplit === 'string' && !o.resume ? { trainSplit: opts.trainSplit } : {}),
          ...(typeof opts.valSplit === 'string' && !o.resume ? { valSplit: opts.valSplit } : {}),
          ...(typeof o.years === 'string' ? { years: o.years.split(',').map((y) => y.trim()) } : {}),
          ...(opts.export === false ? { export: false } : {}),
          ...(globals().backend ? { backend: globals().backend! } : {}),
        };
        await withStopSignal(async (signal) => {
          const r = await trainDetection(request, {
            signal,
            onBackend: (info) => process.stderr.write(`${describeBackend(info)}\n`),
            onEvent: detectionPrinter(),
          });
          if (!r.finished) {
            process.exitCode = 130;
            return;
          }
          const last = r.records.at(-1);
          process.stdout.write(
            `finished ${r.config.epochs} epochs in ${formatDuration(r.seconds)}${last ? `: val mAP (VOC07) ${(100 * last.valMap07).toFixed(2)}%, area mAP ${(100 * last.valMap).toFixed(2)}%` : ''} (${r.dir})\n`,
          );
          if (r.added) process.stdout.write(`added ${r.added.name} to the local zoo: ${r.added.onnx}\n`);
        });
      }),
    );
}

function evalCommand(): Command {
  return new Command('eval')
    .description('VOC07 11-point and area-under-curve AP at IoU 0.5 of a detector, or of devkit result files')
    .argument('[model]', 'a detection run directory, an exported .onnx file or a local zoo name')
    .requiredOption('--data <dir>', 'the VOC devkit with the ground truth (Annotations and ImageSets/Main/<split>.txt)')
    .option('--split <name>', 'split file of ImageSets/Main', 'test')
    .option('--years <list>', 'years to read (default: every year that has the split)')
    .option('--limit <n>', 'evaluate the first n images of the split', positiveInt('--limit'))
    .option('--detections <dir>', "evaluate the devkit's result files in DIR (comp4_det_test_<class>.txt: image id, score, x1 y1 x2 y2) instead of a model; no images needed")
    .option('--write-detections <dir>', "also write the model's detections as devkit result files into DIR")
    .option('--json', 'print {"map07", "map", "classes": {"<class>": {"ap07", "ap"}}}')
    .addHelpText(
      'after',
      `
The metric follows the VOC devkit (VOCevaldet.m): per class, detections by descending score, each matched
to the ground-truth box of its image with the highest IoU (+1 pixel convention) if it is at least 0.5;
difficult objects are neither true nor false positives; a second detection of a box is a false positive.
The mean is over the classes with ground truth in the split.

Examples:
  zoo det eval runs/det --data data/voc-fashion/VOCdevkit
  zoo det eval --detections results/ --data ~/VOCdevkit/VOC2007 --json`,
    )
    .action(
      action(async (model: string | undefined, opts: Record<string, unknown>) => {
        const json = opts.json === true;
        const out = await evaluateDetection({
          ...(model ? { model } : {}),
          ...(typeof opts.detections === 'string' ? { detections: opts.detections } : {}),
          data: opts.data as string,
          split: opts.split as string,
          ...(typeof opts.years === 'string' ? { years: opts.years.split(',').map((y) => y.trim()) } : {}),
          ...(typeof opts.limit === 'number' ? { limit: opts.limit } : {}),
          ...(typeof opts.writeDetections === 'string' ? { writeDetections: opts.writeDetections } : {}),
          ...(!json && process.stderr.isTTY ? { onProgress: (d: number, t: number) => process.stderr.write(`\rdetecting ${d}/${t}\x1b[K${d === t ? '\r\x1b[K' : ''}`) } : {}),
        });
        if (json) {
          process.stdout.write(`${JSON.stringify(vocResultJson(out.result))}\n`);
          return;
        }
        process.stdout.write(`${formatVocResult(out.result)}\n`);
        process.stdout.write(`${out.images} images, ${out.detections} detections, ${formatDuration(out.seconds)}\n`);
        if (out.missing?.length) process.stdout.write(`no result file for: ${out.missing.join(', ')} (no detections)\n`);
        if (out.written) process.stdout.write(`wrote ${out.written.length} result files to ${opts.writeDetections as string}\n`);
      }),
    );
}

function exportCommand(globals: () => { backend?: string }): Command {
  return new Command('export')
    .description("export a detection run's checkpoint as one ONNX graph (images in, padded detections out), checked in ONNX Runtime")
    .argument('<run>', 'a detection run directory (run.json and checkpoint.safetensors)')
    .requiredOption('-o, --output <file>', 'the .onnx file to write')
    .addHelpText(
      'after',
      `
The graph (opset 17) takes "input" float32 [N, 3, H, W] (normalized as the metadata says; any batch,
height and width) and gives num_detections int64 [N], detection_boxes float32 [N, 100, 4] (x1 y1 x2 y2 in
input pixels), detection_scores [N, 100] and detection_classes int64 [N, 100] (indices into the labels),
the layout of TensorRT's EfficientNMS and the TF Object Detection API. Anchors, decoding, NMS, RoiAlign
and TopK are in the graph. It is checked against the tfjs detector before it is written.`,
    )
    .action(
      action(async (run: string, opts: { output: string }) => {
        const r = await exportDetection(run, opts.output, { ...(globals().backend ? { backend: globals().backend! } : {}) });
        const worst = Math.max(...r.check.cases.map((c) => c.maxBoxDiff));
        process.stdout.write(`wrote ${r.file} (${(r.bytes / 1e6).toFixed(1)} MB): matches the tfjs detector on ${r.check.cases.length} image and batch sizes (box coordinates within ${worst.toExponential(1)} relative)\n`);
      }),
    );
}

/** The name of an image's drawn file, without '.det.png'. */
function drawnStem(file: string): string {
  return path.basename(file).replace(/\.[^.]+$/, '');
}

function predictCommand(): Command {
  return new Command('predict')
    .description('detect objects in images with an exported detector: JSON on stdout, and each image with its boxes drawn')
    .argument('<model>', 'a detection run directory, an exported .onnx file or a local zoo name')
    .argument('<images...>', 'JPEG, PNG or WebP files')
    .option('--threshold <p>', 'smallest score shown', number('--threshold', (v) => v >= 0 && v <= 1, 'in [0, 1]'), 0.5)
    .option('--out <dir>', 'where the drawn images go (<name>.det.png)', 'detections')
    .option('--no-draw', 'only the JSON')
    .addHelpText('after', '\nExample:\n  zoo det predict runs/det street.jpg --threshold 0.3 --out drawn/')
    .action(
      action(async (model: string, images: string[], opts: { threshold: number; out: string; draw: boolean }) => {
        if (opts.draw) {
          const stems = new Map<string, string>();
          for (const file of images) {
            const stem = drawnStem(file);
            const other = stems.get(stem);
            if (other !== undefined) throw new UserError(`${other} and ${file} would both write ${stem}.det.png in ${opts.out}: detect them in two runs with different --out, or pass --no-draw`, { exitCode: 2 });
            stems.set(stem, file);
          }
        }
        const d = await openDetector(model);
        try {
          const found = await detect(d, images, { threshold: opts.threshold });
          const results = [];
          if (opts.draw) await ensureDir(opts.out, '--out');
          for (const [i, file] of images.entries()) {
            let drawn: string | undefined;
            if (opts.draw) {
              drawn = path.join(opts.out, `${drawnStem(file)}.det.png`);
              writeFileSync(drawn, await drawDetections(file, found[i]!));
            }
            results.push({ image: file, detections: found[i]!.map((f) => ({ label: f.label, score: +f.score.toFixed(4), box: f.box.map((v) => +v.toFixed(1)) })), ...(drawn ? { drawn } : {}) });
          }
          process.stdout.write(`${JSON.stringify({ model: d.file, results }, null, 2)}\n`);
        } finally {
          await d.close();
        }
      }),
    );
}

function generateCommand(): Command {
  return new Command('generate')
    .description('write a VOC-layout detection set made from the embedded Fashion-MNIST items on textured backgrounds')
    .argument('<dir>', 'where VOCdevkit/VOC2007 goes')
    .option('--train <n>', 'trainval scenes (Fashion-MNIST training items)', positiveInt('--train'), 600)
    .option('--test <n>', 'test scenes (Fashion-MNIST test items)', positiveInt('--test'), 200)
    .option('--sides <min,max>', 'range of the images\' width and height in pixels', list(positiveInt('--sides')), [160, 256])
    .option('--items <min,max>', 'range of a pasted item\'s side in pixels', list(positiveInt('--items')), [28, 100])
    .option('--max-objects <n>', 'items per image: 1 to this', positiveInt('--max-objects'), 4)
    .option('--seed <n>', 'seed', number('--seed', Number.isInteger, 'an integer'), 0)
    .option('--force', 'replace a set generated before')
    .action(
      action(async (dir: string, opts: { train: number; test: number; sides: number[]; items: number[]; maxObjects: number; seed: number; force?: boolean }) => {
        const pair = (v: number[], name: string) => {
          if (v.length !== 2) throw new UserError(`${name} takes two numbers, min and max (e.g. 160,256), got ${v.join(',')}`, { exitCode: 2 });
          return v as [number, number];
        };
        const [minSide, maxSide] = pair(opts.sides, '--sides');
        const [minItem, maxItem] = pair(opts.items, '--items');
        const s = await generateVocSet(dir, {
          trainImages: opts.train,
          testImages: opts.test,
          minSide,
          maxSide,
          minItem,
          maxItem,
          maxObjects: opts.maxObjects,
          seed: opts.seed,
          ifExists: opts.force ? 'overwrite' : 'error',
        });
        process.stdout.write(`wrote ${s.root}: ${s.counts.trainval} trainval (${s.counts.trainvalObjects} objects), ${s.counts.test} test (${s.counts.testObjects} objects) images, classes ${s.classes.join(', ')}\n`);
      }),
    );
}

export function detCommand(globals: () => { backend?: string }): Command {
  const det = new Command('det')
    .description('object detection: Faster R-CNN on a zoo backbone (train, eval, export, predict, generate)')
    .addCommand(trainCommand(globals))
    .addCommand(evalCommand())
    .addCommand(exportCommand(globals))
    .addCommand(predictCommand())
    .addCommand(generateCommand());
  return det;
}
