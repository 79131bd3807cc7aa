import { Command } from 'commander';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { planExport, runExport, describeCheck, UNTRAINED_RTOL } from '../../src/onnx/pipeline.js';
import { UserError } from '../../src/errors.js';
import { TRITON_ACCELERATORS, TRITON_DEVICES, writeTritonRepository, type TritonAccelerator, type TritonDevice, type TritonRepositoryResult } from '../../src/serve/triton.js';
import { action, list, number, positiveInt } from '../run.js';

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
  triton?: string;
  tritonDevice?: TritonDevice;
  maxBatch?: number;
  maxDelayMs?: number;
  preferredBatch?: number[];
  instances?: number;
  tritonAccelerator?: TritonAccelerator;
  tritonFp16?: boolean;
  force?: boolean;
}

/** Options of the ONNX export (a model built in tfjs) and of the Triton repository (ONNX files copied); each refused with the other. */
const ONNX_ONLY = ['output', 'weights', 'imageSize', 'dynamicSize', 'fp16', 'foldBn', 'numClasses', 'check', 'checkBatch', 'seed', 'followSymlinks'];
const TRITON_ONLY = ['tritonDevice', 'maxBatch', 'maxDelayMs', 'preferredBatch', 'instances', 'tritonAccelerator', 'tritonFp16', 'force'];

function flag(cmd: Command, key: string): string {
  return cmd.options.find((x) => x.attributeName() === key)?.long ?? key;
}

function oneOf<T extends string>(name: string, choices: readonly T[]): (value: string) => T {
  return (value: string) => {
    if (!choices.includes(value as T)) throw new UserError(`${name} must be one of ${choices.join(', ')}, got '${value}'`, { exitCode: 2 });
    return value as T;
  };
}

function describeTriton(r: TritonRepositoryResult): string {
  return r.models
    .map((m) => {
      const batching = m.maxBatchSize > 0 ? `max_batch_size ${m.maxBatchSize}, dynamic batching` : 'max_batch_size 0 (no batching)';
      return `wrote ${m.dir} (${m.task}; ${batching}; ${(m.bytes / 1e6).toFixed(1)} MB${m.labels ? '; labels.txt' : ''}${m.replaced ? '; replaced the model that was there' : ''})`;
    })
    .join('\n');
}

export function exportCommand(globals: () => { backend?: string }): Command {
  return new Command('export')
    .description('export a model to ONNX and check it in ONNX Runtime against the tfjs model, or put ONNX models in a Triton model repository (--triton)')
    .argument('<model...>', "an architecture ('zoo list'), a local zoo name, a published name after zoo pull, a run directory, or an .onnx export of zoo; with --triton, one or more trained models, each [<name>=]<model>")
    .option('-o, --output <file>', 'where to write the .onnx file (default: <model>.onnx here, never replacing a file)')
    .option('--weights <model>', 'weights to load: a file (.safetensors, .pth, GluonCV .zip or .params, an .onnx export of zoo), a local zoo name, a pulled published name, or a run directory')
    .option('--image-size <n>', "input height and width recorded in the graph (default: the model's own, else 224)", positiveInt('--image-size'))
    .option('--dynamic-size', 'leave input height and width symbolic')
    .option('--fp16', 'store and compute in float16 (input and output stay float32); with --triton, the models\' FP16 variants (zoo pull --fp16)')
    .option('--fold-bn', 'fold batch norm into the convolutions (default for --fp16)')
    .option('--no-fold-bn', 'keep batch norm as separate nodes')
    .option('--num-classes <n>', "classifier outputs (default: the weights' classes, else the architecture's)", positiveInt('--num-classes'))
    .option('--no-check', 'skip the ONNX Runtime check')
    .option('--check-batch <n>', 'images in the check', positiveInt('--check-batch'), 2)
    .option('--seed <n>', 'seed of the untrained initialization', number('--seed', Number.isInteger, 'an integer'), 0)
    .option('--follow-symlinks', 'if the output is a symbolic link, replace the file it points to (default: refuse)')
    .option('--json', 'print the result as JSON')
    .option('--triton <dir>', 'write a model repository for NVIDIA Triton Inference Server in <dir> instead: <dir>/<name>/config.pbtxt and <dir>/<name>/1/model.onnx for each model')
    .option('--triton-device <kind>', `with --triton: where Triton runs the instances: ${TRITON_DEVICES.join(', ')} (KIND_GPU, KIND_CPU, KIND_AUTO; default gpu)`, oneOf('--triton-device', TRITON_DEVICES))
    .option('--max-batch <n>', 'with --triton: max_batch_size of models with a dynamic batch dimension (default 32; 0: no batching)', number('--max-batch', (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer'))
    .option('--max-delay-ms <ms>', "with --triton: how long the dynamic batcher waits to fill a batch, in ms (default 5, as zoo serve)", number('--max-delay-ms', (n) => n >= 0, 'a number of milliseconds >= 0'))
    .option('--preferred-batch <list>', "with --triton: the dynamic batcher's preferred batch sizes, e.g. 8,16", list(positiveInt('--preferred-batch')))
    .option('--instances <n>', 'with --triton: instances per GPU (or on the CPU; default 1)', positiveInt('--instances'))
    .option('--triton-accelerator <name>', `with --triton: a GPU execution accelerator of the onnxruntime backend: ${TRITON_ACCELERATORS.join(', ')}`, oneOf('--triton-accelerator', TRITON_ACCELERATORS))
    .option('--triton-fp16', "with --triton-accelerator tensorrt: TensorRT's precision_mode FP16")
    .option('--force', 'with --triton: replace models of the same name in the repository')
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
  zoo export resnet50d --weights finetuned.safetensors --num-classes 20 -o finetuned.onnx

Triton (--triton DIR): each model is a local zoo name, a published name after zoo pull, an .onnx file
or a run directory (classifier, detector or segmenter), named as zoo serve names it (a file by its base
name without .onnx) or by <name>=<model>. Its inputs and outputs, data types and dims come from the
graph (-1 for dynamic sizes); a model whose first dimension is a dynamic batch gets max_batch_size and
the dynamic batcher, any other max_batch_size 0 and full dims. A classifier's class names go to
labels.txt, its output's label_filename. A model already in DIR is kept unless --force.
  zoo export --triton models fashion-r18d det=runs/det/model.onnx
  zoo export --triton models my-r50d --max-batch 64 --triton-accelerator tensorrt --triton-fp16
  docker run --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/models:/models \\
    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models`,
    )
    .action(
      action(async (refs: string[], opts: ExportOpts, cmd: Command) => {
        const fromCli = (k: string) => cmd.getOptionValueSource(k) === 'cli';
        if (opts.triton !== undefined) {
          // --fp16 with --triton: the models' FP16 variants go in the repository.
          const wrong = ONNX_ONLY.filter((k) => k !== 'fp16').filter(fromCli);
          if (wrong.length) throw new UserError(`${wrong.map((k) => flag(cmd, k)).join(', ')}: not options of --triton (it copies trained ONNX models; export one first, then put it in the repository)`, { exitCode: 2 });
          const r = await writeTritonRepository(opts.triton, refs, {
            ...(opts.tritonDevice ? { device: opts.tritonDevice } : {}),
            ...(opts.maxBatch !== undefined ? { maxBatch: opts.maxBatch } : {}),
            ...(opts.maxDelayMs !== undefined ? { maxDelayMs: opts.maxDelayMs } : {}),
            ...(opts.preferredBatch ? { preferredBatch: opts.preferredBatch } : {}),
            ...(opts.instances !== undefined ? { instances: opts.instances } : {}),
            ...(opts.tritonAccelerator ? { accelerator: opts.tritonAccelerator } : {}),
            tensorrtFp16: opts.tritonFp16 ?? false,
            force: opts.force ?? false,
            ...(opts.fp16 ? { precision: 'fp16' as const } : {}),
            command: 'zoo export --triton',
          });
          for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
          if (opts.json) {
            process.stdout.write(`${JSON.stringify({ repository: r.dir, models: r.models, notes: r.notes }, null, 2)}\n`);
            return;
          }
          process.stdout.write(`${describeTriton(r)}\n`);
          return;
        }
        const wrong = TRITON_ONLY.filter(fromCli);
        if (wrong.length) throw new UserError(`${wrong.map((k) => flag(cmd, k)).join(', ')}: options of --triton DIR (a Triton model repository)`, { exitCode: 2 });
        if (refs.length !== 1) throw new UserError(`zoo export takes one model (several only with --triton DIR), got ${refs.length}: ${refs.join(' ')}`, { exitCode: 2 });
        const ref = refs[0]!;
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
