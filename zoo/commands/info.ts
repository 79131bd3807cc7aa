import { Command } from 'commander';
import { modelConfig } from '../../src/models/model.js';
import { getModelEntry } from '../../src/models/registry.js';
import { ResNet } from '../../src/models/resnet.js';
import { countNetwork } from '../../src/models/count.js';
import { resolveModelRef, type ResolvedModel } from '../../src/hub/resolve.js';
import { labelNames } from '../../src/onnx/metadata.js';
import type { WeightSource } from '../../src/hub/models_json.js';
import { UserError } from '../../src/errors.js';
import { action, positiveInt, table } from '../run.js';

const CONVENTION =
  'GMACs are billions of multiply-adds of the convolution and fully-connected layers per image (the ' +
  "paper's FLOPs, Table 5); batch norm, ReLU, pooling, additions and biases are not counted. Parameters " +
  'are the trainable ones (weights, biases, batch-norm gamma and beta), not the running statistics.';

function outputStride(v: string): 8 | 16 | 32 {
  if (v === '8' || v === '16' || v === '32') return Number(v) as 8 | 16 | 32;
  throw new UserError(`--output-stride must be 8, 16 or 32, got '${v}'`, { exitCode: 2 });
}

/**
 * How a source's file is verified, in words: models.json pins, GluonCV's SHA-1 of the .params in its
 * zip, torchvision's sha256 prefix in the file name (which `zoo pull` checks, so the file counts as
 * pinned), or nothing published.
 */
export function checksumState(s: WeightSource): { pinned: boolean; text: string } {
  if (s.sha256) return { pinned: true, text: `sha256 ${s.sha256} (pinned)` };
  if (s.format === 'gluon-zip' && s.sha1) return { pinned: true, text: `SHA-1 ${s.sha1} of ${s.member} (GluonCV's, pinned)` };
  if (s.sha1) return { pinned: true, text: `sha1 ${s.sha1} (pinned)` };
  if (s.sha256Prefix) return { pinned: true, text: `sha256 starting ${s.sha256Prefix} (pinned by the file name's prefix, as torchvision publishes it; the first pull records the full sha256)` };
  return { pinned: false, text: "no checksum published or pinned: the first pull checks the host's declared sha256, if any, and prints what it recorded" };
}

function describeKind(m: ResolvedModel): string {
  switch (m.kind) {
    case 'arch':
      return 'architecture';
    case 'published':
      return m.local ? 'published model, pulled' : 'published model (not pulled)';
    case 'local':
      return 'model in the local zoo';
    case 'onnx':
      return 'ONNX file';
    case 'weights':
      return 'weights file';
    case 'run':
      return 'training run';
  }
}

export function infoCommand(): Command {
  return new Command('info')
    .description('show parameters, GMACs and stage outputs of a model, and where a published one comes from')
    .argument('<model>', "an architecture ('zoo list'), a published name, alias or timm id, a local zoo name, an .onnx file or a run directory")
    .option('--image-size <n>', "input height and width (default: the model's own, else 224)", positiveInt('--image-size'))
    .option('--num-classes <n>', 'classifier outputs', positiveInt('--num-classes'))
    .option('--output-stride <n>', 'backbone output stride: 32, 16 or 8 (dilated stages)', outputStride)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
${CONVENTION}

Examples:
  zoo info resnet50d
  zoo info resnet50d-best               sources, checksums, metrics, preprocessing
  zoo info timm/resnet50.gluon_in1k     a timm id means what timm means (here ResNet-50-B)
  zoo info resnet50d --output-stride 8 --image-size 480 --json`,
    )
    .action(
      action(async (ref: string, opts: { imageSize?: number; numClasses?: number; outputStride?: 8 | 16 | 32; json?: boolean }) => {
        const m = await resolveModelRef(ref, { purpose: 'describe', command: 'zoo info' });
        if (!m.arch) throw new UserError(`${m.label} does not record its architecture; zoo info needs one (for a weights file: zoo info <arch>)`);
        const entry = getModelEntry(m.arch);
        const labels = labelNames(m.meta);
        const numClasses = opts.numClasses ?? labels?.length ?? m.entry?.numClasses;
        const config = modelConfig(m.arch, { ...(numClasses ? { numClasses } : {}), ...(opts.outputStride ? { outputStride: opts.outputStride } : {}) });
        const imageSize = opts.imageSize ?? m.meta.preprocessing?.crop ?? 224;
        const counts = countNetwork(new ResNet(config), imageSize);
        const sources = m.entry?.sources.map((s) => ({ url: s.url, format: s.format, naming: s.naming, host: s.host, ...checksumState(s) }));
        const info = {
          name: m.label,
          kind: m.kind,
          arch: m.arch,
          description: m.entry?.description ?? entry.description,
          config,
          imageSize,
          params: counts.params,
          buffers: counts.buffers,
          macs: counts.macs,
          gmacs: Number((counts.macs / 1e9).toFixed(4)),
          flopsConvention: CONVENTION,
          stages: counts.stages,
          ...(m.entry ? { aliases: m.entry.aliases, timm: m.entry.timm ?? null, sources, metrics: m.entry.metrics, license: m.entry.license, origin: m.entry.origin } : {}),
          ...(m.meta.preprocessing ? { preprocessing: m.meta.preprocessing, preprocessingFrom: m.preprocessingFrom } : {}),
          ...(labels ? { classes: labels.length, labels: m.meta.labels ?? null, categories: m.meta.categories ?? null } : {}),
          ...(m.onnx ? { onnx: m.onnx } : {}),
          notes: m.notes,
        };
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
          return;
        }
        const lines = [
          `${m.label} (${describeKind(m)}): ${info.description}`,
          ...m.notes.map((n) => `  note: ${n}`),
          `  architecture    ${m.arch}: block ${config.block}, layers [${config.layers}], stem ${config.stemType || '7x7'} (width ${config.stemWidth}), ` +
            `stride in ${config.strideIn}, avg-pool shortcut ${config.avgDown ? 'yes' : 'no'}, output stride ${config.outputStride ?? 32}`,
          `  parameters      ${counts.params.toLocaleString('en-US')} (${(counts.params / 1e6).toFixed(2)} M; plus ${counts.buffers.toLocaleString('en-US')} batch-norm statistics)`,
          `  GMACs           ${(counts.macs / 1e9).toFixed(3)} at ${imageSize}x${imageSize}`,
          `  classes         ${config.numClasses}${labels ? ` (${m.meta.categories ?? `${labels.slice(0, 4).join(', ')}${labels.length > 4 ? ', ...' : ''}`})` : ''}`,
        ];
        const pre = m.meta.preprocessing;
        if (pre) {
          lines.push(
            `  preprocessing   resize ${pre.resizeShorter} (${pre.interpolation}), crop ${pre.crop}, mean [${pre.mean.join(', ')}], std [${pre.std.join(', ')}]${m.preprocessingFrom === 'assumed' ? ' (assumed)' : ''}`,
          );
        }
        if (m.entry) {
          lines.push(`  aliases         ${m.entry.aliases.join(', ') || '-'}`, `  timm id         ${m.entry.timm ?? "none (timm has no copy of these weights)"}`);
          for (const x of m.entry.metrics) lines.push(`  top-1           ${x.top1}% on ${x.dataset} at ${x.inputSize} (${x.source})`);
          lines.push('  sources, in the order they are tried:');
          sources!.forEach((s, i) => lines.push(`    ${i + 1}. ${s.url}`, `       ${s.format}, ${s.naming} names; ${s.text}`));
          lines.push(`  license         ${m.entry.license}`);
          lines.push(m.local ? `  pulled          ${m.local.onnx}` : `  not pulled yet: zoo pull ${m.entry.aliases[0] ?? m.entry.name}`);
        } else if (m.onnx) lines.push(`  ONNX            ${m.onnx}`);
        lines.push(
          '',
          table(
            counts.stages.map((s) => [s.name, s.module, String(s.channels), String(s.reduction), s.shape.join('x')]),
            ['stage', 'module', 'channels', 'reduction', 'output (HxWxC)'],
          ),
          '',
          CONVENTION,
        );
        process.stdout.write(`${lines.join('\n')}\n`);
      }),
    );
}
