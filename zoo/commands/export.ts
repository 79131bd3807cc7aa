import { Command } from 'commander';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { runExport, describeCheck, UNTRAINED_RTOL } from '../../src/onnx/pipeline.js';
import { getModelEntry } from '../../src/models/registry.js';
import { action, positiveInt } from '../run.js';

interface ExportOpts {
  output: string;
  weights?: string;
  imageSize: number;
  dynamicSize?: boolean;
  fp16?: boolean;
  foldBn?: boolean;
  numClasses?: number;
  check: boolean;
  checkBatch: number;
  seed: number;
}

export function exportCommand(globals: () => { backend?: string }): Command {
  return new Command('export')
    .description('export a model to ONNX and check it in ONNX Runtime against the tfjs model')
    .argument('<name>', "model architecture (see 'zoo list')")
    .requiredOption('-o, --output <file>', 'where to write the .onnx file')
    .option('--weights <file>', 'weights to load first: .safetensors (timm or zoo), GluonCV .zip or .params, .pth, or an ONNX export of zoo; default: untrained')
    .option('--image-size <n>', 'input height and width recorded in the graph', positiveInt('--image-size'), 224)
    .option('--dynamic-size', 'leave input height and width symbolic')
    .option('--fp16', 'store and compute in float16 (input and output stay float32)')
    .option('--fold-bn', 'fold batch norm into the convolutions (default for --fp16)')
    .option('--no-fold-bn', 'keep batch norm as separate nodes')
    .option('--num-classes <n>', 'classifier outputs (default: the architecture\'s)', positiveInt('--num-classes'))
    .option('--no-check', 'skip the ONNX Runtime check')
    .option('--check-batch <n>', 'images in the check', positiveInt('--check-batch'), 2)
    .option('--seed <n>', 'seed of the untrained initialization', (v) => Number(v), 0)
    .addHelpText(
      'after',
      `
The graph takes 'input', float32 NCHW [batch, 3, H, W], normalized with the model's mean and std,
and returns 'logits' [batch, classes]; the batch axis is dynamic; opset 17. Before writing, the
file is run in ONNX Runtime and in tfjs on the same input: FP32 logits must agree within 1e-4
(an untrained network may add ${UNTRAINED_RTOL} x the largest logit: random deep networks amplify
float32 rounding), FP16 exports must agree on the top-1 class. Nothing is written if the check fails.

Examples:
  zoo export resnet50d -o resnet50d.onnx
  zoo export resnet50d --weights my-finetuned.onnx --fp16 -o resnet50d-fp16.onnx`,
    )
    .action(
      action(async (name: string, opts: ExportOpts) => {
        getModelEntry(name); // unknown names fail before the backend starts
        const info = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}) });
        const log = (s: string) => process.stderr.write(`${s}\n`);
        log(describeBackend(info));
        const t0 = performance.now();
        const r = await runExport({
          arch: name,
          output: opts.output,
          ...(opts.weights ? { weights: opts.weights } : {}),
          imageSize: opts.imageSize,
          dynamicSize: opts.dynamicSize ?? false,
          fp16: opts.fp16 ?? false,
          ...(opts.foldBn !== undefined ? { foldBatchNorm: opts.foldBn } : {}),
          ...(opts.numClasses ? { numClasses: opts.numClasses } : {}),
          check: opts.check,
          checkBatch: opts.checkBatch,
          seed: opts.seed,
          log,
        });
        if (r.check) log(`check (ONNX Runtime ${r.check.provider}, ${r.check.batch} images): ${describeCheck(r.check)}: passed`);
        else log('check skipped (--no-check)');
        process.stdout.write(
          `wrote ${r.output} (${(r.bytes / 1e6).toFixed(1)} MB, ${(r.params / 1e6).toFixed(2)} M parameters) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
        );
      }),
    );
}
