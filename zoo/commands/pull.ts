import { Command } from 'commander';
import { initBackend } from '../../src/backend/index.js';
import { resolveModel } from '../../src/hub/models_json.js';
import { pullModel } from '../../src/hub/pull.js';
import { progressPrinter } from '../../src/hub/cache.js';
import { hubSettings } from '../../src/hub/settings.js';
import { action } from '../run.js';

export function pullCommand(globals: () => { backend?: string }): Command {
  return new Command('pull')
    .description('download published weights, convert them to a zoo model, export to ONNX and check it')
    .argument('<name>', "a models.json name or alias, e.g. resnet50d-best (see 'zoo list --published')")
    .option('--fp16', 'also write an FP16 ONNX file')
    .option('--force', 'convert again even if the cache already has the model')
    .addHelpText(
      'after',
      `
Pulling needs access to the weight hosts (huggingface.co, GluonCV's S3 bucket, download.pytorch.org)
or a mirror. Files are verified against the checksums in models.json (or, when none is pinned, the
sha256 the host declares), converted with zoo's own definitions, exported to ONNX and checked in ONNX
Runtime before anything is recorded in the cache.

Environment:
  ZOO_CACHE            cache directory (default: $XDG_CACHE_HOME/zoo or ~/.cache/zoo)
  ZOO_OFFLINE=1        use only the cache; say what is missing
  HF_ENDPOINT          replaces https://huggingface.co
  MXNET_GLUON_REPO     replaces GluonCV's host (as GluonCV reads it)
  ZOO_MIRROR           a directory or base URL holding the files, or 'host=replacement;...' prefixes
  ZOO_MODELS_JSON      a models.json of your own, used instead of the built-in one

Examples:
  zoo pull resnet50d-best
  zoo predict resnet50d-best cat.jpg
  ZOO_MIRROR=/mnt/models zoo pull resnet152d-teacher`,
    )
    .action(
      action(async (name: string, opts: { fp16?: boolean; force?: boolean }) => {
        const entry = resolveModel(name);
        await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}) });
        const log = (s: string) => process.stderr.write(`${s}\n`);
        const printers: ReturnType<typeof progressPrinter>[] = [];
        const t0 = performance.now();
        const r = await pullModel(entry, {
          fp16: opts.fp16 ?? false,
          force: opts.force ?? false,
          settings: hubSettings(),
          log,
          onProgress: (label) => {
            const p = progressPrinter(`${entry.name}/${label}`);
            printers.push(p);
            return p;
          },
        });
        printers.forEach((p) => p.done());
        const c = r.record.check;
        process.stdout.write(
          `${r.fromCache ? 'already in the cache' : 'pulled'}: ${entry.name} (${entry.arch}) from ${r.record.source.url}\n` +
            `  ${r.onnx} (${(r.record.onnx.bytes / 1e6).toFixed(1)} MB)${r.onnxFp16 ? `\n  ${r.onnxFp16}` : ''}\n` +
            `  source sha256 ${r.record.source.sha256}\n` +
            `  ONNX Runtime check: max |logit difference| ${c.maxAbsDiff.toExponential(2)} (largest logit ${c.maxAbsLogit.toFixed(2)})` +
            `${r.fromCache ? '' : ` in ${((performance.now() - t0) / 1000).toFixed(1)} s`}\n`,
        );
      }),
    );
}
