import { Command } from 'commander';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { runExport, describeCheck, UNTRAINED_RTOL } from '../../src/onnx/pipeline.js';
import { preprocessingAt, resolveModelRef, type ResolvedModel } from '../../src/hub/resolve.js';
import { labelNames } from '../../src/onnx/metadata.js';
import { modelConfig } from '../../src/models/model.js';
import { UserError } from '../../src/errors.js';
import { action, positiveInt } from '../run.js';

interface ExportOpts {
  output?: string;
  weights?: string;
  imageSize?: number;
  dynamicSize?: boolean;
  fp16?: boolean;
  foldBn?: boolean;
  numClasses?: number;
  check: boolean;
  checkBatch: number;
  seed: number;
  followSymlinks?: boolean;
  json?: boolean;
}

/** The file name a model is exported to when -o is not given: `<name>[-fp16].onnx` in the current directory. */
export function defaultOutput(model: ResolvedModel, fp16: boolean): string {
  const base = model.kind === 'run' ? path.basename(path.resolve(model.runDir!)) : model.kind === 'onnx' || model.kind === 'weights' ? path.parse(model.label).name : model.label;
  return `${base}${fp16 ? '-fp16' : ''}.onnx`;
}

export function exportCommand(globals: () => { backend?: string }): Command {
  return new Command('export')
    .description('export a model to ONNX and check it in ONNX Runtime against the tfjs model')
    .argument('<model>', "an architecture ('zoo list'), a local zoo name, a published name after zoo pull, a run directory, or an .onnx export of zoo")
    .option('-o, --output <file>', 'where to write the .onnx file (default: <model>.onnx here, never replacing a file)')
    .option('--weights <model>', 'weights to load: a file (.safetensors, .pth, GluonCV .zip or .params, an .onnx export of zoo), a local zoo name, a pulled published name, or a run directory')
    .option('--image-size <n>', "input height and width recorded in the graph (default: the model's own, else 224)", positiveInt('--image-size'))
    .option('--dynamic-size', 'leave input height and width symbolic')
    .option('--fp16', 'store and compute in float16 (input and output stay float32)')
    .option('--fold-bn', 'fold batch norm into the convolutions (default for --fp16)')
    .option('--no-fold-bn', 'keep batch norm as separate nodes')
    .option('--num-classes <n>', "classifier outputs (default: the weights' classes, else the architecture's)", positiveInt('--num-classes'))
    .option('--no-check', 'skip the ONNX Runtime check')
    .option('--check-batch <n>', 'images in the check', positiveInt('--check-batch'), 2)
    .option('--seed <n>', 'seed of the untrained initialization', (v) => Number(v), 0)
    .option('--follow-symlinks', 'if the output is a symbolic link, replace the file it points to (default: refuse)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
The graph takes 'input', float32 NCHW [batch, 3, H, W], normalized with the model's mean and std,
and returns 'logits' [batch, classes]; the batch axis is dynamic; opset 17. The file's metadata
carries the architecture, the preprocessing and the class names of the source (a run's, a local or
published model's, another export's); an untrained architecture gets ImageNet's preprocessing at
--image-size, and the command says so. Before writing, the file is run in ONNX Runtime and in tfjs
on the same input: FP32 logits must agree within 1e-4 (an untrained network may add ${UNTRAINED_RTOL}
x the largest logit: random deep networks amplify float32 rounding), FP16 exports must agree on the
top-1 class. Nothing is written if the check fails.

Examples:
  zoo export resnet50d                              untrained, to resnet50d.onnx
  zoo export runs/r18d --fp16 -o r18d-fp16.onnx      a training run, with its labels
  zoo export resnet50d-best --image-size 320         a pulled model at another input size
  zoo export resnet50d --weights finetuned.safetensors --num-classes 20 -o finetuned.onnx`,
    )
    .action(
      action(async (ref: string, opts: ExportOpts) => {
        // Everything about the arguments is checked before the backend starts.
        const src = await resolveModelRef(ref, { purpose: 'build', command: 'zoo export' });
        const arch = src.arch!;
        let weights: ResolvedModel | undefined;
        if (opts.weights) {
          if (src.kind !== 'arch') throw new UserError(`--weights goes with an architecture; ${src.label} brings its own weights`, { exitCode: 2 });
          weights = await resolveModelRef(opts.weights, { purpose: 'weights', command: 'zoo export --weights' });
          if (weights.arch && weights.arch !== arch) {
            throw new UserError(`${weights.label} holds ${weights.arch} weights; it does not match ${arch} (export it as 'zoo export ${weights.ref}')`);
          }
        } else if (src.kind !== 'arch') {
          weights = await resolveModelRef(ref, { purpose: 'weights', command: 'zoo export' });
        }
        const from = weights ?? src;
        const notes = [...src.notes, ...(weights?.notes ?? [])];
        const labels = labelNames(from.meta);
        if (labels && opts.numClasses && opts.numClasses !== labels.length) {
          throw new UserError(`--num-classes ${opts.numClasses} differs from the ${labels.length} classes ${from.label} names`, { exitCode: 2 });
        }
        const numClasses = opts.numClasses ?? labels?.length;
        modelConfig(arch, { ...(numClasses ? { numClasses } : {}) }); // a classifier too large to build fails here
        const preprocessing = preprocessingAt(from, opts.imageSize, notes);
        const fp16 = opts.fp16 ?? false;
        const output = opts.output ?? defaultOutput(from, fp16);
        if (!opts.output && existsSync(output)) {
          throw new UserError(`${output} exists; give -o to choose where to write (an explicit -o replaces a file)`, { exitCode: 2 });
        }

        const info = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
        const log = (s: string) => process.stderr.write(`${s}\n`);
        log(describeBackend(info));
        for (const n of notes) log(`note: ${n}`);
        const t0 = performance.now();
        const r = await runExport({
          arch,
          output,
          ...(weights ? { weights: weights.weights! } : {}),
          meta: { ...from.meta, preprocessing, ...(labels ? { labels } : {}) },
          imageSize: preprocessing.crop,
          dynamicSize: opts.dynamicSize ?? false,
          fp16,
          ...(opts.foldBn !== undefined ? { foldBatchNorm: opts.foldBn } : {}),
          ...(numClasses ? { numClasses } : {}),
          check: opts.check,
          checkBatch: opts.checkBatch,
          seed: opts.seed,
          followSymlinks: opts.followSymlinks ?? false,
          log,
        });
        if (r.check) log(`check (ONNX Runtime ${r.check.provider}, ${r.check.batch} images): ${describeCheck(r.check)}: passed`);
        else log('check skipped (--no-check)');
        const seconds = (performance.now() - t0) / 1000;
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({ output: r.output, bytes: r.bytes, params: r.params, arch, untrained: r.untrained, fp16, preprocessing, labels: labels ?? null, check: r.check ?? null, seconds, notes }, null, 2)}\n`,
          );
          return;
        }
        process.stdout.write(`wrote ${r.output} (${(r.bytes / 1e6).toFixed(1)} MB, ${(r.params / 1e6).toFixed(2)} M parameters) in ${seconds.toFixed(1)} s\n`);
      }),
    );
}
