import { Command } from 'commander';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { createModel } from '../../src/models/model.js';
import { getModelEntry } from '../../src/models/registry.js';
import { loadWeights } from '../../src/io/weights.js';
import { NAMINGS, type Naming } from '../../src/convert/naming.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { checkExport } from '../../src/onnx/check.js';
import { describeCheck } from '../../src/onnx/pipeline.js';
import { writeFileAtomic } from '../../src/io/atomic.js';
import { addToLocalZoo, checkOwnModelName } from '../../src/hub/local.js';
import { hashFile } from '../../src/hub/cache.js';
import { DEFAULT_PREPROCESSING } from '../../src/predict/predict.js';
import { UserError } from '../../src/errors.js';
import { action, positiveInt } from '../run.js';

interface ImportOpts {
  arch: string;
  output?: string;
  name?: string;
  naming?: string;
  numClasses?: number;
  imageSize: number;
  fp16?: boolean;
  force?: boolean;
}

export function importCommand(globals: () => { backend?: string }): Command {
  return new Command('import')
    .description('convert a local weights file (timm, torchvision, GluonCV or zoo) to a checked ONNX model')
    .argument('<file>', '.safetensors, GluonCV .zip or .params, .pth, or an ONNX export of zoo')
    .requiredOption('--arch <name>', "the architecture the weights are for (see 'zoo list')")
    .option('-o, --output <file>', 'write the ONNX file here')
    .option('--name <name>', 'add the model to the local zoo under this name')
    .option('--naming <naming>', `how the file names its tensors: ${NAMINGS.join(', ')} (default: detected)`)
    .option('--num-classes <n>', "classifier outputs (default: the architecture's)", positiveInt('--num-classes'))
    .option('--image-size <n>', 'input size recorded in the graph', positiveInt('--image-size'), 224)
    .option('--fp16', 'export in float16 (input and output stay float32)')
    .option('--force', 'replace a model of the same name in the local zoo')
    .addHelpText(
      'after',
      `
The file is mapped onto zoo's definition of --arch; a missing, unexpected or mis-shaped tensor stops
the import with a list of them (nothing is written). The export is checked in ONNX Runtime.

Examples:
  zoo import my-finetuned.safetensors --arch resnet50d --num-classes 20 -o finetuned.onnx
  zoo import resnet50_v1d-117a384e.params --arch resnet50d --name my-r50d`,
    )
    .action(
      action(async (file: string, opts: ImportOpts) => {
        getModelEntry(opts.arch);
        if (!opts.output && !opts.name) throw new UserError('give -o FILE, --name NAME, or both', { exitCode: 2 });
        if (opts.name) checkOwnModelName(opts.name);
        if (opts.naming && !(NAMINGS as readonly string[]).includes(opts.naming)) {
          throw new UserError(`--naming must be one of ${NAMINGS.join(', ')}, got '${opts.naming}'`, { exitCode: 2 });
        }
        const info = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}) });
        process.stderr.write(`${describeBackend(info)}\n`);
        const model = createModel(opts.arch, { ...(opts.numClasses ? { numClasses: opts.numClasses } : {}) });
        try {
          const r = await loadWeights(model, file, { ...(opts.naming ? { naming: opts.naming as Naming } : {}) });
          for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
          process.stderr.write(`loaded ${r.loaded} tensors (${r.format}, ${r.naming} names)${r.folded.length ? `, folded ${r.folded.length} conv biases into batch norm` : ''}\n`);
          const pre = { ...DEFAULT_PREPROCESSING, inputSize: opts.imageSize, crop: opts.imageSize, resizeShorter: Math.round(opts.imageSize / 0.875) };
          const metadata = { 'zoo.preprocessing': JSON.stringify(pre), ...(model.numClasses === 1000 ? { 'zoo.categories': 'imagenet-1k' } : {}) };
          const bytes = exportOnnx(model, { imageSize: opts.imageSize, fp16: opts.fp16 ?? false, metadata });
          const check = await checkExport(model, bytes, { imageSize: opts.imageSize, fp16: opts.fp16 ?? false });
          if (!check.passed) throw new UserError(`the export does not reproduce the tfjs model: ${describeCheck(check)}`);
          process.stderr.write(`check (ONNX Runtime ${check.provider}): ${describeCheck(check)}: passed\n`);
          if (opts.output) {
            await writeFileAtomic(opts.output, bytes);
            process.stdout.write(`wrote ${opts.output} (${(bytes.length / 1e6).toFixed(1)} MB)\n`);
          }
          if (opts.name) {
            const src = await hashFile(file);
            const added = await addToLocalZoo({
              name: opts.name,
              arch: opts.arch,
              onnxBytes: bytes,
              preprocessing: pre,
              categories: model.numClasses === 1000 ? 'imagenet-1k' : null,
              source: { url: file, format: r.format, naming: r.naming, file, ...src },
              check: { maxAbsDiff: check.maxAbsDiff, maxAbsLogit: check.maxAbsLogit, top1Agreement: check.top1Agreement, provider: check.provider },
              force: opts.force ?? false,
            });
            process.stdout.write(`added ${added.name} to the local zoo: ${added.onnx}\n`);
          }
        } finally {
          model.dispose();
        }
      }),
    );
}
