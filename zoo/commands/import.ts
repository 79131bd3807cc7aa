import { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { initBackend, describeBackend } from '../../src/backend/index.js';
import { NAMINGS, type Naming } from '../../src/convert/naming.js';
import { describeCheck, planImport, runImport } from '../../src/onnx/pipeline.js';
import { parseLabels } from '../../src/onnx/metadata.js';
import { looksLikePath } from '../../src/hub/resolve.js';
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
        if (opts.naming && !(NAMINGS as readonly string[]).includes(opts.naming)) {
          throw new UserError(`--naming must be one of ${NAMINGS.join(', ')}, got '${opts.naming}'`, { exitCode: 2 });
        }
        const log = (s: string) => process.stderr.write(`${s}\n`);
        const plan = await planImport(file, {
          ...(opts.arch ? { arch: opts.arch } : {}),
          ...(opts.output ? { output: opts.output } : {}),
          ...(opts.name ? { name: opts.name } : {}),
          ...(opts.naming ? { naming: opts.naming as Naming } : {}),
          ...(opts.numClasses ? { numClasses: opts.numClasses } : {}),
          ...(opts.labels ? { labels: readLabelsFile(opts.labels) } : {}),
          ...(opts.imageSize ? { imageSize: opts.imageSize } : {}),
          fp16: opts.fp16 ?? false,
          force: opts.force ?? false,
          followSymlinks: opts.followSymlinks ?? false,
          log,
        });
        const info = await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
        log(describeBackend(info));
        for (const n of plan.notes) log(`note: ${n}`);
        const r = await runImport(plan, { force: opts.force ?? false });
        log(`check (ONNX Runtime ${r.check!.provider}): ${describeCheck(r.check!)}: passed`);
        if (opts.json) {
          const w = r.weights!;
          process.stdout.write(
            `${JSON.stringify({ file, arch: plan.job.arch, format: w.format, naming: w.naming, loaded: w.loaded, output: r.output ?? null, name: r.added?.name ?? null, localOnnx: r.added?.onnx ?? null, preprocessing: plan.preprocessing, labels: plan.labels ?? null, check: r.check, notes: plan.notes }, null, 2)}\n`,
          );
          return;
        }
        if (r.output) process.stdout.write(`wrote ${r.output} (${(r.bytes / 1e6).toFixed(1)} MB)\n`);
        if (r.added) process.stdout.write(`added ${r.added.name} to the local zoo: ${r.added.onnx}\n`);
      }),
    );
}
