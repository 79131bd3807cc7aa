import { Command } from 'commander';
import { classifyImages } from '../../src/predict/predict.js';
import { resolveModelTarget } from '../../src/predict/target.js';
import { action, positiveInt } from '../run.js';

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
        const t = await resolveModelTarget(model);
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
