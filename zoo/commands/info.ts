import { Command } from 'commander';
import { modelConfig } from '../../src/models/model.js';
import { getModelEntry } from '../../src/models/registry.js';
import { ResNet } from '../../src/models/resnet.js';
import { countNetwork } from '../../src/models/count.js';
import { UserError } from '../../src/errors.js';
import { action, positiveInt, table } from '../run.js';

const CONVENTION =
  'FLOPs are multiply-adds of the convolution and fully-connected layers per image (as in the paper, ' +
  'Table 5); batch norm, ReLU, pooling, additions and biases are not counted. Parameters are the trainable ' +
  'ones (weights, biases, batch-norm gamma and beta), not the running statistics.';

function outputStride(v: string): 8 | 16 | 32 {
  if (v === '8' || v === '16' || v === '32') return Number(v) as 8 | 16 | 32;
  throw new UserError(`--output-stride must be 8, 16 or 32, got '${v}'`, { exitCode: 2 });
}

export function infoCommand(): Command {
  return new Command('info')
    .description('show parameters, FLOPs and stage outputs of an architecture')
    .argument('<name>', "model architecture (see 'zoo list')")
    .option('--image-size <n>', 'input height and width', positiveInt('--image-size'), 224)
    .option('--num-classes <n>', 'classifier outputs', positiveInt('--num-classes'))
    .option('--output-stride <n>', 'backbone output stride: 32, 16 or 8 (dilated stages)', outputStride)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
${CONVENTION}

Examples:
  zoo info resnet50d
  zoo info resnet50d --output-stride 8 --image-size 480 --json`,
    )
    .action(
      action((name: string, opts: { imageSize: number; numClasses?: number; outputStride?: 8 | 16 | 32; json?: boolean }) => {
        const entry = getModelEntry(name);
        const config = modelConfig(name, {
          ...(opts.numClasses ? { numClasses: opts.numClasses } : {}),
          ...(opts.outputStride ? { outputStride: opts.outputStride } : {}),
        });
        const counts = countNetwork(new ResNet(config), opts.imageSize);
        const info = {
          name,
          description: entry.description,
          config,
          imageSize: opts.imageSize,
          params: counts.params,
          buffers: counts.buffers,
          macs: counts.macs,
          gflops: Number((counts.macs / 1e9).toFixed(4)),
          flopsConvention: CONVENTION,
          stages: counts.stages,
        };
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
          return;
        }
        const lines = [
          `${name}: ${entry.description}`,
          `  block ${config.block}, layers [${config.layers}], stem ${config.stemType || '7x7'} (width ${config.stemWidth}), ` +
            `stride in ${config.strideIn}, avg-pool shortcut ${config.avgDown ? 'yes' : 'no'}, output stride ${config.outputStride ?? 32}`,
          `  parameters      ${counts.params.toLocaleString('en-US')} (${(counts.params / 1e6).toFixed(2)} M; plus ${counts.buffers.toLocaleString('en-US')} batch-norm statistics)`,
          `  FLOPs           ${(counts.macs / 1e9).toFixed(3)} G multiply-adds at ${opts.imageSize}x${opts.imageSize}`,
          `  classes         ${config.numClasses}`,
          '',
          table(
            counts.stages.map((s) => [s.name, s.module, String(s.channels), String(s.reduction), s.shape.join('x')]),
            ['stage', 'module', 'channels', 'reduction', 'output (HxWxC)'],
          ),
          '',
          CONVENTION,
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }),
    );
}
