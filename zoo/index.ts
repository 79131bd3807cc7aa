#!/usr/bin/env node
/**
 * The zoo command line: one command per file in ./commands, each validating its options and calling
 * one function of the library (src/).
 */
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { BACKEND_CHOICES } from '../src/backend/index.js';
import { listCommand } from './commands/list.js';
import { infoCommand } from './commands/info.js';
import { exportCommand } from './commands/export.js';
import { pullCommand } from './commands/pull.js';
import { importCommand } from './commands/import.js';
import { predictCommand } from './commands/predict.js';
import { rmCommand } from './commands/rm.js';
import { trainCommand } from './commands/train.js';
import { evalCommand } from './commands/eval.js';
import { plotCommand } from './commands/plot.js';
import { doctorCommand } from './commands/doctor.js';
import { detCommand } from './commands/det.js';
import { segCommand } from './commands/seg.js';
import { serveCommand } from './commands/serve.js';
import { fail } from './run.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

// `zoo list | head` closes stdout early: not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const program = new Command('zoo')
  .description('ResNet model zoo: Bag-of-Tricks ResNets in TensorFlow.js, exported to ONNX and checked in ONNX Runtime')
  .version(pkg.version, '-V, --version')
  .option('--backend <name>', `compute backend: ${BACKEND_CHOICES.join(', ')} (env ZOO_BACKEND; default auto)`)
  .showHelpAfterError("(run 'zoo <command> --help' for usage)")
  .showSuggestionAfterError(true)
  .exitOverride((err: CommanderError) => {
    // Help and version exit 0; usage errors exit 2.
    process.exit(err.exitCode === 0 ? 0 : 2);
  })
  .addHelpText(
    'after',
    `
Environment:
  ZOO_BACKEND   auto | tfjs-node-gpu | tfjs-node | webgpu | native | wasm | cpu (webgpu: tfjs's WebGPU
                kernels on Dawn over Vulkan; auto takes it on a GPU, never on a CPU fallback adapter)
  ZOO_THREADS   threads of the WebAssembly backend (default: all cores)
  ZOO_CACHE     where pulled and trained models live (default: ~/.cache/zoo)
  ZOO_OFFLINE=1 use only the cache
  ZOO_DEBUG=1   print stack traces of internal errors

Start with:
  zoo list                       the architectures (--published: pretrained models, --local: the cache)
  zoo info resnet50d             parameters, FLOPs, stage outputs
  zoo pull resnet50d-best        the paper's ResNet-50-D weights, converted and checked
  zoo predict resnet50d-best cat.jpg
  zoo export resnet50d -o r.onnx export to ONNX, checked in ONNX Runtime
  zoo train resnet18d --data fashion --epochs 10 --batch-size 128 --out runs/r18d
                                 train with the paper's best recipe (--help: every trick)
  zoo eval runs/r18d/model.onnx --data fashion
  zoo plot runs/r18d             loss, accuracy and learning-rate curves (PNG)
  zoo serve resnet50d-best       an HTTP service (Open Inference Protocol, image endpoint, playground)
  zoo doctor                     backends, ONNX Runtime providers, GPU (--install-cuda for the GPU)`,
  );

const globals = () => program.opts<{ backend?: string }>();
for (const cmd of [listCommand(), infoCommand(), exportCommand(globals), pullCommand(globals), importCommand(globals), predictCommand(), rmCommand(), trainCommand(globals), evalCommand(), plotCommand(), doctorCommand(globals), detCommand(globals), segCommand(globals), serveCommand()]) {
  cmd.exitOverride((err: CommanderError) => process.exit(err.exitCode === 0 ? 0 : 2));
  cmd.showHelpAfterError(`(run 'zoo ${cmd.name()} --help' for usage)`);
  program.addCommand(cmd);
}

program.parseAsync(process.argv).catch(fail);
