/**
 * `npm run demo:det`: the paper's transfer result (Table 8) in miniature, on data the project makes.
 *
 *   1. zoo det generate  a VOC-layout set: embedded Fashion-MNIST items pasted at several scales on
 *                        textured backgrounds (JPEG + XML + split files), train items and test items apart;
 *   2. zoo train         a backbone pretrained on Fashion-MNIST classification (the embedded subset), added
 *                        to the local zoo;
 *   3. zoo det train     the same Faster R-CNN fine-tuned twice on the generated trainval split: from the
 *                        pretrained backbone, and from a randomly initialized one;
 *   4. zoo det eval      VOC07 mAP of both exported detectors on the test split, in ONNX Runtime;
 *   5. zoo det predict   a few test images drawn with their boxes.
 *
 * The detector is GluonCV's configuration with its sizes turned down to fit two cores: a tiny ResNet-D
 * (`resnet_test`: one bottleneck per stage, widths 8-64), images of 160-224 pixels at their own size, anchors
 * of 32-128 pixels, a 128-channel RPN, RoIAlign 7x7, 64 sampled regions per image, 100 test proposals; every
 * one of them is a `zoo det train` option.
 *
 *   node dist/scripts/demo-det.js [--out out/demo-det] [--epochs 6] [--pretrain-epochs 6] [--train 300] [--test 100]
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pretrainFashionBackbone, zooRunner } from './zoo_cli.js';

const zoo = zooRunner('demo:det');

function main(): void {
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: path.join('out', 'demo-det') },
      epochs: { type: 'string', default: '6' },
      'pretrain-epochs': { type: 'string', default: '6' },
      train: { type: 'string', default: '300' },
      test: { type: 'string', default: '100' },
      arch: { type: 'string', default: 'resnet_test' },
      name: { type: 'string', default: 'fashion-resnet-test' },
    },
  });
  const out = values.out!;
  const t0 = performance.now();
  mkdirSync(out, { recursive: true });
  const vocDir = path.join(out, 'voc');
  rmSync(vocDir, { recursive: true, force: true });
  zoo(['det', 'generate', vocDir, '--train', values.train!, '--test', values.test!, '--sides', '160,224', '--items', '48,112', '--max-objects', '3']);
  const data = path.join(vocDir, 'VOCdevkit');

  const pre = path.join(out, 'backbone');
  rmSync(pre, { recursive: true, force: true });
  const preSeconds = pretrainFashionBackbone(zoo, { arch: values.arch!, name: values.name!, epochs: values['pretrain-epochs']!, out: pre });

  const detOptions = [
    '--data', data,
    '--epochs', values.epochs!,
    '--batch-size', '4',
    '--micro-batch', '2',
    '--lr', '0.04',
    '--warmup', '0.5',
    '--min-size', '160',
    '--max-size', '224',
    '--rpn-channels', '128',
    '--anchor-scales', '2,4,8',
    '--roi-size', '7',
    '--rois-per-image', '64',
    '--test-proposals', '100',
  ];
  const runs: { label: string; backbone: string; dir: string; seconds: number; map07: number; map: number }[] = [];
  for (const [label, backbone] of [
    ['pretrained', values.name!],
    ['random', values.arch!],
  ] as const) {
    const dir = path.join(out, `det-${label}`);
    rmSync(dir, { recursive: true, force: true });
    const t = performance.now();
    zoo(['det', 'train', '--backbone', backbone, ...detOptions, '--out', dir]);
    const seconds = (performance.now() - t) / 1000;
    const j = JSON.parse(zoo(['det', 'eval', dir, '--data', data, '--json'], true)) as { map07: number; map: number };
    runs.push({ label, backbone, dir, seconds, map07: j.map07, map: j.map });
  }

  const year = path.join(vocDir, 'VOCdevkit', 'VOC2007');
  const tests = readFileSync(path.join(year, 'ImageSets', 'Main', 'test.txt'), 'utf8').split('\n').filter(Boolean).slice(0, 4);
  const drawn = path.join(out, 'drawn');
  zoo(['det', 'predict', runs[0]!.dir, ...tests.map((id) => path.join(year, 'JPEGImages', `${id}.jpg`)), '--threshold', '0.5', '--out', drawn], true);

  const min = (s: number) => `${(s / 60).toFixed(1)} min`;
  process.stdout.write('\ndemo:det: VOC07 mAP (11-point, IoU 0.5) on the generated test split, ONNX Runtime:\n');
  for (const r of runs) process.stdout.write(`  ${r.label.padEnd(10)} backbone ${r.backbone.padEnd(24)} mAP ${(100 * r.map07).toFixed(1)}% (area ${(100 * r.map).toFixed(1)}%), fine-tuning ${min(r.seconds)}\n`);
  process.stdout.write(
    `pretraining the backbone took ${min(preSeconds)}; everything ${min((performance.now() - t0) / 1000)}. ` +
      `Drawn test images: ${drawn}. Next: zoo det predict ${runs[0]!.dir} your.jpg\n`,
  );
}

main();
