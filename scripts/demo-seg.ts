/**
 * `npm run demo:seg`: the paper's second transfer result (Table 9, FCN) in miniature, on data the project
 * makes.
 *
 *   1. zoo seg generate  an ADE-layout set: embedded Fashion-MNIST items pasted on textured backgrounds,
 *                        their pixel masks as labels (background a class of its own), training items and
 *                        validation items apart;
 *   2. zoo train         a backbone pretrained on Fashion-MNIST classification (the embedded subset), added
 *                        to the local zoo (the same step as demo:det);
 *   3. zoo seg train     the same FCN fine-tuned twice on the generated training split: from the pretrained
 *                        backbone, and from a randomly initialized one;
 *   4. zoo seg eval      pixel accuracy and mIoU of both exported segmenters on the validation split, in
 *                        ONNX Runtime;
 *   5. zoo seg predict   a few validation images with their label PNGs and overlays.
 *
 * The FCN is GluonCV's configuration (output stride 8, auxiliary head, head lr x10, poly decay) on a tiny
 * ResNet-D (`resnet_test`: one bottleneck per stage, widths 8-64), with the crop sizes turned down to the
 * generated images (base 112, crops 96); every one of them is a `zoo seg train` option.
 *
 *   node dist/scripts/demo-seg.js [--out out/demo-seg] [--epochs 6] [--pretrain-epochs 6] [--train 300] [--val 100]
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pretrainFashionBackbone, zooRunner } from './zoo_cli.js';

const zoo = zooRunner('demo:seg');

function main(): void {
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: path.join('out', 'demo-seg') },
      epochs: { type: 'string', default: '6' },
      'pretrain-epochs': { type: 'string', default: '6' },
      train: { type: 'string', default: '300' },
      val: { type: 'string', default: '100' },
      arch: { type: 'string', default: 'resnet_test' },
      name: { type: 'string', default: 'fashion-resnet-test' },
    },
  });
  const out = values.out!;
  const t0 = performance.now();
  mkdirSync(out, { recursive: true });
  const data = path.join(out, 'ade');
  rmSync(data, { recursive: true, force: true });
  zoo(['seg', 'generate', data, '--train', values.train!, '--val', values.val!]);

  const pre = path.join(out, 'backbone');
  rmSync(pre, { recursive: true, force: true });
  const preSeconds = pretrainFashionBackbone(zoo, { arch: values.arch!, name: values.name!, epochs: values['pretrain-epochs']!, out: pre });

  const segOptions = ['--data', data, '--epochs', values.epochs!, '--batch-size', '8', '--micro-batch', '4', '--lr', '0.02', '--base-size', '112', '--crop-size', '96'];
  const runs: { label: string; backbone: string; dir: string; seconds: number; pixAcc: number; mIoU: number }[] = [];
  for (const [label, backbone] of [
    ['pretrained', values.name!],
    ['random', values.arch!],
  ] as const) {
    const dir = path.join(out, `seg-${label}`);
    rmSync(dir, { recursive: true, force: true });
    const t = performance.now();
    zoo(['seg', 'train', '--backbone', backbone, ...segOptions, '--out', dir]);
    const seconds = (performance.now() - t) / 1000;
    const j = JSON.parse(zoo(['seg', 'eval', dir, '--data', data, '--json'], true)) as { pixAcc: number; mIoU: number };
    runs.push({ label, backbone, dir, seconds, pixAcc: j.pixAcc, mIoU: j.mIoU });
  }

  const valDir = path.join(data, 'ADEChallengeData2016', 'images', 'validation');
  const images = readdirSync(valDir).sort().slice(0, 4).map((f) => path.join(valDir, f));
  const masks = path.join(out, 'masks');
  zoo(['seg', 'predict', runs[0]!.dir, ...images, '--out', masks], true);

  const min = (s: number) => `${(s / 60).toFixed(1)} min`;
  process.stdout.write('\ndemo:seg: on the generated validation split, ONNX Runtime (ADE20K benchmark definitions):\n');
  for (const r of runs) process.stdout.write(`  ${r.label.padEnd(10)} backbone ${r.backbone.padEnd(24)} mIoU ${(100 * r.mIoU).toFixed(1)}%, pixAcc ${(100 * r.pixAcc).toFixed(1)}%, fine-tuning ${min(r.seconds)}\n`);
  process.stdout.write(
    `pretraining the backbone took ${min(preSeconds)}; everything ${min((performance.now() - t0) / 1000)}. ` +
      `Label PNGs and overlays of validation images: ${masks}. Next: zoo seg predict ${runs[0]!.dir} your.jpg\n`,
  );
}

main();
