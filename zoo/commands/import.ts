import { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { createModel, modelConfig } from '../../src/models/model.js';
import { getModelEntry } from '../../src/models/registry.js';
import { loadWeights } from '../../src/io/weights.js';
import { NAMINGS, type Naming } from '../../src/convert/naming.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { checkExport } from '../../src/onnx/check.js';
import { describeCheck } from '../../src/onnx/pipeline.js';
import { labelNames, metadataProps, parseLabels, type ModelMetadata } from '../../src/onnx/metadata.js';
import { writeFileAtomic } from '../../src/io/atomic.js';
import { addToLocalZoo, checkOwnModelName } from '../../src/hub/local.js';
import { hashFile } from '../../src/hub/cache.js';
import { looksLikePath, preprocessingAt, resolveModelRef } from '../../src/hub/resolve.js';
import { UserError } from '../../src/errors.js';
import { action, positiveInt } from '../run.js';

interface ImportOpts {
  arch?: string;
  output?: string;
  name?: string;
  naming?: string;
  numClasses?: number;
  imageSize?: number;
  labels?: string;
  fp16?: boolean;
  force?: boolean;
  followSymlinks?: boolean;
  json?: boolean;
}

/** Class names from a file: a JSON array of strings, or one name per line. */
export function readLabelsFile(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`--labels ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`, { exitCode: 2 });
  }
  const trimmed = text.trim();
  let value: unknown;
  if (trimmed.startsWith('[')) {
    try {
      value = JSON.parse(trimmed);
    } catch (e) {
      throw new UserError(`--labels ${file}: not a JSON array (${(e as Error).message})`, { exitCode: 2 });
    }
  } else value = trimmed.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  return parseLabels(value, `--labels ${file}`);
}

export function importCommand(globals: () => { backend?: string }): Command {
  return new Command('import')
    .description('convert a local weights file (timm, torchvision, GluonCV or zoo) to a checked ONNX model')
    .argument('<file>', '.safetensors, GluonCV .zip or .params, .pth, an .onnx export of zoo, or a training run\'s checkpoint')
    .option('--arch <name>', "the architecture the weights are for (see 'zoo list'; default: what the file or its run records)")
    .option('-o, --output <file>', 'write the ONNX file here (default: <file name>.onnx here, unless --name is given)')
    .option('--name <name>', 'add the model to the local zoo under this name')
    .option('--naming <naming>', `how the file names its tensors: ${NAMINGS.join(', ')} (default: detected)`)
    .option('--num-classes <n>', "classifier outputs (default: the class names', else the architecture's)", positiveInt('--num-classes'))
    .option('--labels <file>', 'class names, one per line or a JSON array (default: what the file or its run records)')
    .option('--image-size <n>', "input size recorded in the graph (default: the file's own, else 224)", positiveInt('--image-size'))
    .option('--fp16', 'export in float16 (input and output stay float32)')
    .option('--force', 'replace a model of the same name in the local zoo')
    .option('--follow-symlinks', 'if the output is a symbolic link, replace the file it points to (default: refuse)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
The file is mapped onto zoo's definition of the architecture; a missing, unexpected or mis-shaped
tensor stops the import with a list of them (nothing is written). The export is checked in ONNX
Runtime. A training run's checkpoint (or a zoo export) brings its class names and preprocessing;
for other files give --labels, or the model records ImageNet's preprocessing and the command says so.

Examples:
  zoo import runs/r18d/checkpoint.safetensors --name fashion-r18d
  zoo import my-finetuned.safetensors --arch resnet50d --labels classes.txt -o finetuned.onnx
  zoo import resnet50_v1d-117a384e.params --arch resnet50d --name my-r50d`,
    )
    .action(
      action(async (file: string, opts: ImportOpts) => {
        if (!looksLikePath(file) && !existsSync(file)) throw new UserError(`'${file}': no such file (zoo import takes a weights file)`);
        const src = await resolveModelRef(file, { purpose: 'weights', command: 'zoo import' });
        if (src.kind === 'published' || src.kind === 'local') throw new UserError(`'${file}' is a model name; zoo import takes a file (zoo export converts models already in the zoo)`, { exitCode: 2 });
        const arch = opts.arch ?? src.arch;
        if (!arch) throw new UserError(`${file} does not record its architecture: give --arch (see 'zoo list')`, { exitCode: 2 });
        getModelEntry(arch);
        if (src.arch && opts.arch && src.arch !== opts.arch) throw new UserError(`${file} records ${src.arch} weights, not --arch ${opts.arch}`, { exitCode: 2 });
        if (opts.name) checkOwnModelName(opts.name);
        if (opts.naming && !(NAMINGS as readonly string[]).includes(opts.naming)) {
          throw new UserError(`--naming must be one of ${NAMINGS.join(', ')}, got '${opts.naming}'`, { exitCode: 2 });
        }
        const notes = [...src.notes];
        const labels = opts.labels ? readLabelsFile(opts.labels) : labelNames(src.meta);
        if (labels && opts.numClasses && labels.length !== opts.numClasses) {
          throw new UserError(`--num-classes ${opts.numClasses} differs from the ${labels.length} class names`, { exitCode: 2 });
        }
        const numClasses = opts.numClasses ?? labels?.length;
        modelConfig(arch, { ...(numClasses ? { numClasses } : {}) }); // a classifier too large to build fails here
        const imagenet = !labels && (numClasses ?? getModelEntry(arch).config.numClasses) === 1000;
        if (!labels) notes.push(imagenet ? `${file} names no classes: 1000 outputs, recorded as ImageNet's (imagenet-1k)` : `${file} names no classes (give --labels): predictions will show class indices`);
        const pre = preprocessingAt(src, opts.imageSize, notes);
        const output = opts.output ?? (opts.name ? undefined : `${path.parse(file).name}${opts.fp16 ? '-fp16' : ''}.onnx`);
        if (output && !opts.output && existsSync(output)) throw new UserError(`${output} exists; give -o to choose where to write`, { exitCode: 2 });

        const info = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
        process.stderr.write(`${describeBackend(info)}\n`);
        for (const n of notes) process.stderr.write(`note: ${n}\n`);
        const model = createModel(arch, { ...(numClasses ? { numClasses } : {}) });
        try {
          const r = await loadWeights(model, src.weights!, { ...(opts.naming ? { naming: opts.naming as Naming } : {}) });
          for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
          process.stderr.write(`loaded ${r.loaded} tensors (${r.format}, ${r.naming} names)${r.folded.length ? `, folded ${r.folded.length} conv biases into batch norm` : ''}\n`);
          const meta: ModelMetadata = { arch, ...(opts.name ? { name: opts.name } : {}), preprocessing: pre, ...(labels ? { labels } : imagenet ? { categories: 'imagenet-1k' } : {}) };
          const bytes = exportOnnx(model, { imageSize: pre.crop, fp16: opts.fp16 ?? false, metadata: metadataProps(meta) });
          const check = await checkExport(model, bytes, { imageSize: pre.crop, fp16: opts.fp16 ?? false });
          if (!check.passed) throw new UserError(`the export does not reproduce the tfjs model: ${describeCheck(check)}`);
          process.stderr.write(`check (ONNX Runtime ${check.provider}): ${describeCheck(check)}: passed\n`);
          if (output) {
            await writeFileAtomic(output, bytes, { followSymlinks: opts.followSymlinks ?? false });
            if (!opts.json) process.stdout.write(`wrote ${output} (${(bytes.length / 1e6).toFixed(1)} MB)\n`);
          }
          let added: string | undefined;
          if (opts.name) {
            const h = await hashFile(src.weights!);
            const local = await addToLocalZoo({
              name: opts.name,
              arch,
              onnxBytes: bytes,
              preprocessing: pre,
              categories: imagenet ? 'imagenet-1k' : null,
              ...(labels ? { labels } : {}),
              source: { url: path.resolve(src.weights!), format: r.format, naming: r.naming, file: path.resolve(src.weights!), ...h },
              check: { maxAbsDiff: check.maxAbsDiff, maxAbsLogit: check.maxAbsLogit, top1Agreement: check.top1Agreement, provider: check.provider },
              force: opts.force ?? false,
            });
            added = local.onnx;
            if (!opts.json) process.stdout.write(`added ${local.name} to the local zoo: ${local.onnx}\n`);
          }
          if (opts.json) {
            process.stdout.write(
              `${JSON.stringify({ file, arch, format: r.format, naming: r.naming, loaded: r.loaded, output: output ?? null, name: opts.name ?? null, localOnnx: added ?? null, preprocessing: pre, labels: labels ?? null, check, notes }, null, 2)}\n`,
            );
          }
        } finally {
          model.dispose();
        }
      }),
    );
}
