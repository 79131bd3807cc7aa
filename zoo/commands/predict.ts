import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { classifyImages, readOnnxMetadata, DEFAULT_PREPROCESSING, type Preprocessing } from '../../src/predict/predict.js';
import { findLocalModel, labelsOf } from '../../src/hub/local.js';
import { loadCategories, modelNames } from '../../src/hub/models_json.js';
import { UserError } from '../../src/errors.js';
import { action, positiveInt } from '../run.js';

async function resolveTarget(target: string): Promise<{ onnx: string; pre: Preprocessing; labels?: string[]; label: string }> {
  if (existsSync(target)) {
    const meta = await readOnnxMetadata(target);
    const pre = meta['zoo.preprocessing'] ? (JSON.parse(meta['zoo.preprocessing']) as Preprocessing) : DEFAULT_PREPROCESSING;
    const labels = meta['zoo.labels'] ? (JSON.parse(meta['zoo.labels']) as string[]) : meta['zoo.categories'] ? loadCategories(meta['zoo.categories']) : undefined;
    return { onnx: target, pre, ...(labels ? { labels } : {}), label: target };
  }
  const local = await findLocalModel(target);
  if (local) {
    const labels = labelsOf(local.record);
    return { onnx: local.onnx, pre: local.record.preprocessing, ...(labels ? { labels } : {}), label: local.name };
  }
  if (modelNames().has(target)) throw new UserError(`'${target}' is not in the local cache yet; run 'zoo pull ${target}' first`);
  throw new UserError(`'${target}' is neither an ONNX file nor a model in the local zoo ('zoo list --local') or in models.json ('zoo list --published')`);
}

export function predictCommand(): Command {
  return new Command('predict')
    .description('classify images with a pulled, imported or trained model (ONNX Runtime)')
    .argument('<model>', 'a model name or alias in the local zoo, or an .onnx file')
    .argument('<images...>', 'JPEG, PNG or WebP files')
    .option('--top <k>', 'classes to show per image', positiveInt('--top'), 5)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Images are preprocessed as the model was evaluated: the shorter side resized (with the model's
interpolation), a center crop, and its mean and standard deviation. An .onnx file exported by zoo
carries that in its metadata; other files get ImageNet's defaults (resize 256, crop 224, bilinear).

Examples:
  zoo pull resnet50d-best && zoo predict resnet50d-best photo.jpg
  zoo predict runs/fashion/model.onnx a.png b.png --json`,
    )
    .action(
      action(async (model: string, images: string[], opts: { top: number; json?: boolean }) => {
        const t = await resolveTarget(model);
        const results = await classifyImages(t.onnx, images, { topk: opts.top, preprocessing: t.pre, ...(t.labels ? { categories: t.labels } : {}) });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ model: t.label, results }, null, 2)}\n`);
          return;
        }
        for (const r of results) {
          process.stdout.write(`${r.image}\n`);
          for (const p of r.top) process.stdout.write(`  ${(p.probability * 100).toFixed(1).padStart(5)}%  ${p.label} (${p.index})\n`);
        }
      }),
    );
}
