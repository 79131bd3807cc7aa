import { Command } from 'commander';
import { checkClassOrder } from '../../src/predict/target.js';
import { resolveModelRef } from '../../src/hub/resolve.js';
import { ImageClassifier } from '../../src/predict/classifier.js';
import { balancedPrefix, openTrainingData } from '../../src/train/data.js';
import { evaluateOnnx } from '../../src/train/evaluate.js';
import { datasetSize } from '../../src/data/dataset.js';
import { UserError } from '../../src/errors.js';
import { action, number, positiveInt } from '../run.js';

interface EvalOpts {
  data: string;
  split: 'val' | 'train';
  valSplit?: number;
  seed: number;
  limit?: number;
  batchSize: number;
  json?: boolean;
}

export function evalCommand(): Command {
  return new Command('eval')
    .description('top-1 and top-5 accuracy of a model on a data set, run in ONNX Runtime')
    .argument('<model>', 'a local zoo name, a published name or alias after zoo pull, an .onnx file, or a training run directory')
    .requiredOption('--data <dir>', "an image folder (train/ and val/), a directory of IDX files, or 'fashion' (the embedded subset)")
    .option('--split <name>', 'which split: val (default) or train', (v) => {
      if (v !== 'val' && v !== 'train') throw new UserError(`--split must be val or train, got '${v}'`, { exitCode: 2 });
      return v;
    }, 'val')
    .option('--val-split <fraction>', 'for a folder of class folders: the validation fraction (as in training)', number('--val-split', (v) => v > 0 && v < 1, 'in (0, 1)'))
    .option('--seed <n>', "with --val-split: the seed given to 'zoo train', which picks the held-out images", number('--seed', Number.isInteger, 'an integer'), 0)
    .option('--limit <n>', 'evaluate a class-balanced subset of n images', positiveInt('--limit'))
    .option('--batch-size <n>', 'images per ONNX Runtime call', positiveInt('--batch-size'), 64)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Images go through the model's own evaluation preprocessing (shorter side resized, center crop, mean
and std, from its metadata or the local zoo) and the model runs in ONNX Runtime, as a service would
run it. The data's class folders must match the model's labels, in order. Resizing uses the training
pipeline's bilinear filter; 'zoo predict' follows the model's declared interpolation (bicubic for most
published ImageNet models), so accuracies of published models can differ slightly from their cards.
With --val-split, give the --seed the model was trained with, or the held-out images are not the same.

Examples:
  zoo eval fashion-r18d --data fashion
  zoo eval runs/r50/model.onnx --data ~/images --json`,
    )
    .action(
      action(async (model: string, opts: EvalOpts) => {
        const t = await resolveModelRef(model, { purpose: 'run', command: 'zoo eval' });
        const data = await openTrainingData(opts.data, { ...(opts.valSplit !== undefined ? { valFraction: opts.valSplit, seed: opts.seed } : {}) });
        let split = opts.split === 'train' ? data.train : data.val;
        if (opts.limit) split = balancedPrefix(split, opts.limit);
        const notes = [...t.notes];
        const classifier = await ImageClassifier.open(t, { notes });
        const session = classifier.session;
        try {
          for (const n of notes) process.stderr.write(`note: ${n}\n`);
          checkClassOrder(classifier.labels, data.classes, t.label, opts.data);
          const pre = classifier.preprocessing;
          const tty = process.stderr.isTTY;
          const r = await evaluateOnnx(session, split, {
            imageSize: pre.crop,
            resize: pre.resizeShorter,
            mean: pre.mean.map((v) => v * 255) as [number, number, number],
            std: pre.std.map((v) => v * 255) as [number, number, number],
            batchSize: opts.batchSize,
            onProgress: (done, total) => {
              if (tty) process.stderr.write(`\revaluating ${done}/${total}\x1b[K`);
            },
          });
          if (tty) process.stderr.write('\r\x1b[K');
          const out = {
            model: t.label,
            data: opts.data,
            split: opts.split,
            images: r.count,
            top1: r.top1,
            top5: r.top5,
            loss: r.loss,
            seconds: r.seconds,
            imagesPerSecond: r.count / r.seconds,
            provider: session.provider,
          };
          if (opts.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
          else {
            process.stdout.write(
              `${t.label} on ${opts.data} (${opts.split}, ${datasetSize(split)} images): top-1 ${(100 * r.top1).toFixed(2)}%, top-5 ${(100 * r.top5).toFixed(2)}%, ` +
                `loss ${r.loss.toFixed(4)} [${r.seconds.toFixed(1)} s, ${out.imagesPerSecond.toFixed(0)} img/s, ONNX Runtime ${session.provider}]\n`,
            );
          }
        } finally {
          await classifier.dispose();
        }
      }),
    );
}
