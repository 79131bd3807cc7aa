import { Command } from 'commander';
import { ImageClassifier, expandImages } from '../../src/predict/classifier.js';
import { resolveModelRef } from '../../src/hub/resolve.js';
import { action, positiveInt } from '../run.js';

export function predictCommand(): Command {
  return new Command('predict')
    .description('classify images with a pulled, imported or trained model (ONNX Runtime)')
    .argument('<model>', 'a local zoo name, a published name or alias after zoo pull, an .onnx file, or a training run directory')
    .argument('<images...>', 'image files (JPEG, PNG, WebP, GIF, AVIF, TIFF) or folders of them')
    .option('--top <k>', 'classes to show per image', positiveInt('--top'), 5)
    .option('--batch-size <n>', 'images per ONNX Runtime call', positiveInt('--batch-size'), 8)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Images are preprocessed as the model was evaluated: the shorter side resized (with the model's
interpolation), a center crop, and its mean and standard deviation. Every model zoo writes carries
that and its class names in its metadata (also a run directory's model, and a published one); a
file without them gets ImageNet's defaults at the graph's input size, with a note saying so.
An image that cannot be read is reported and the others are still classified (exit code 1).

Examples:
  zoo pull resnet50d-best && zoo predict resnet50d-best photo.jpg
  zoo predict runs/fashion photos/ --json
  zoo predict model.onnx a.png b.png --top 3`,
    )
    .action(
      action(async (ref: string, args: string[], opts: { top: number; batchSize: number; json?: boolean }) => {
        const model = await resolveModelRef(ref, { purpose: 'run', command: 'zoo predict' });
        const images = await expandImages(args);
        const notes = [...model.notes];
        const classifier = await ImageClassifier.open(model, { notes });
        try {
          for (const n of notes) process.stderr.write(`note: ${n}\n`);
          const results = await classifier.classify(images, { topk: opts.top, batchSize: opts.batchSize });
          const failed = results.filter((r) => r.error);
          if (opts.json) {
            process.stdout.write(`${JSON.stringify({ model: model.label, provider: classifier.provider, preprocessing: classifier.preprocessing, results }, null, 2)}\n`);
          } else {
            for (const r of results) {
              if (r.error) {
                process.stderr.write(`zoo: error: ${r.error}\n`);
                continue;
              }
              process.stdout.write(`${r.image}\n`);
              for (const p of r.top!) process.stdout.write(`  ${(p.probability * 100).toFixed(1).padStart(5)}%  ${p.label} (${p.index})\n`);
            }
          }
          if (failed.length) {
            process.stderr.write(`zoo: ${failed.length} of ${results.length} images could not be read\n`);
            process.exitCode = 1;
          }
        } finally {
          await classifier.dispose();
        }
      }),
    );
}
