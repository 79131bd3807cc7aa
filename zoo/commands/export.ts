import { Command } from 'commander';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { planExport, runExport, describeCheck, UNTRAINED_RTOL } from '../../src/onnx/pipeline.js';
import { action, number, positiveInt } from '../run.js';

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
    .option('--seed <n>', 'seed of the untrained initialization', number('--seed', Number.isInteger, 'an integer'), 0)
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
        const plan = await planExport(ref, {
          ...(opts.weights ? { weights: opts.weights } : {}),
          ...(opts.output ? { output: opts.output } : {}),
          ...(opts.imageSize ? { imageSize: opts.imageSize } : {}),
          ...(opts.numClasses ? { numClasses: opts.numClasses } : {}),
          dynamicSize: opts.dynamicSize ?? false,
          fp16: opts.fp16 ?? false,
          ...(opts.foldBn !== undefined ? { foldBatchNorm: opts.foldBn } : {}),
          check: opts.check,
          checkBatch: opts.checkBatch,
          seed: opts.seed,
          followSymlinks: opts.followSymlinks ?? false,
        });
        const info = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
        const log = (s: string) => process.stderr.write(`${s}\n`);
        log(describeBackend(info));
        for (const n of plan.notes) log(`note: ${n}`);
        const t0 = performance.now();
        const r = await runExport({ ...plan.job, log });
        if (r.check) log(`check (ONNX Runtime ${r.check.provider}, ${r.check.batch} images): ${describeCheck(r.check)}: passed`);
        else log('check skipped (--no-check)');
        const seconds = (performance.now() - t0) / 1000;
        if (opts.json) {
          const { onnxBytes: _bytes, weights: _weights, ...result } = r;
          process.stdout.write(
            `${JSON.stringify({ ...result, arch: plan.job.arch, fp16: plan.job.fp16 ?? false, preprocessing: plan.preprocessing, labels: plan.labels ?? null, check: r.check ?? null, seconds, notes: plan.notes }, null, 2)}\n`,
          );
          return;
        }
        process.stdout.write(`wrote ${r.output} (${(r.bytes / 1e6).toFixed(1)} MB, ${(r.params / 1e6).toFixed(2)} M parameters) in ${seconds.toFixed(1)} s\n`);
      }),
    );
}
