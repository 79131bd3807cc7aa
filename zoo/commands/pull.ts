import { Command } from 'commander';
import { initBackend } from '../../src/backend/index.js';
import { resolvePublished } from '../../src/hub/resolve.js';
import { pullModel, PullError, type PullResult } from '../../src/hub/pull.js';
import { progressPrinter } from '../../src/hub/cache.js';
import { hubSettings } from '../../src/hub/settings.js';
import { UserError } from '../../src/errors.js';
import { loadPublishedDetectors, pullDetector } from '../../src/detection/weights.js';
import { lookupPublishedSegmenter, pullSegmenter } from '../../src/segmentation/weights.js';
import { action, number } from '../run.js';

/** Parses a number of seconds (0 allowed) into milliseconds, naming the option when it is not one. */
/** A duration option in seconds (as milliseconds), parsed by the shared number parser. */
function secondsOption(name: string, allowZero: boolean): (value: string) => number {
  const parse = number(name, (n) => (allowZero ? n >= 0 : n > 0), `a number of seconds${allowZero ? '' : ' greater than 0'}`);
  return (value: string) => parse(value) * 1000;
}

type PullFlags = { fp16?: boolean; force?: boolean; json?: boolean; lockTimeout?: number; downloadTimeout?: number };

/**
 * Runs a pull with a progress line per download; a PullError, whose sources' errors were printed as
 * they happened, ends as its summary only.
 */
async function withProgress<T>(prefix: string, run: (onProgress: (label: string) => ReturnType<typeof progressPrinter>) => Promise<T>): Promise<T> {
  const printers: ReturnType<typeof progressPrinter>[] = [];
  try {
    return await run((label) => {
      const p = progressPrinter(`${prefix}/${label}`);
      printers.push(p);
      return p;
    });
  } catch (e) {
    if (e instanceof PullError) throw new UserError(e.summary, { cause: e });
    throw e;
  } finally {
    printers.forEach((p) => p.done());
  }
}

/** The options a detector's or segmenter's pull shares with a classifier's; --fp16 is the classifiers' only. */
function headOptions(name: string, what: string, opts: PullFlags) {
  if (opts.fp16) {
    throw new UserError(`--fp16 applies to classifiers; ${name} is a ${what}, pulled as FP32 only`, { exitCode: 2 });
  }
  return {
    force: opts.force ?? false,
    settings: hubSettings(),
    log: (s: string) => process.stderr.write(`${s}\n`),
    ...(opts.lockTimeout !== undefined ? { lockTimeoutMs: opts.lockTimeout } : {}),
    ...(opts.downloadTimeout !== undefined ? { downloadTimeoutMs: opts.downloadTimeout } : {}),
  };
}

/** The one JSON object of `zoo pull --json`. */
function jsonResult(r: PullResult) {
  return {
    name: r.name,
    arch: r.arch,
    fromCache: r.fromCache,
    onnx: r.onnx,
    ...(r.onnxFp16 ? { onnxFp16: r.onnxFp16 } : {}),
    files: r.files.map((f) => ({
      file: f.file, path: f.path, source: f.source, from: f.from, sha256: f.sha256, bytes: f.bytes, pinned: f.pinned, fromCache: f.fromCache,
    })),
    check: r.record.check,
    ...(r.record.checkFp16 ? { checkFp16: r.record.checkFp16 } : {}),
  };
}

function textResult(r: PullResult, seconds: number): string {
  const c = r.record.check;
  const files = r.files.map((f) => {
    const via = f.from === f.source ? '' : ` (for ${f.source})`;
    const pin = f.pinned ? 'pinned' : 'not pinned in models.json; matched the host-declared sha256';
    return `  from ${f.from}${via}\n  source sha256 ${f.sha256} (${pin})`;
  });
  return (
    `${r.fromCache ? 'already in the cache' : 'pulled'}: ${r.name} (${r.arch}) from ${r.record.source.url}\n` +
    `${files.join('\n')}\n` +
    `  ${r.onnx} (${(r.record.onnx.bytes / 1e6).toFixed(1)} MB)${r.onnxFp16 ? `\n  ${r.onnxFp16}` : ''}\n` +
    `  ONNX Runtime check: max |logit difference| ${c.maxAbsDiff.toExponential(2)} (largest logit ${c.maxAbsLogit.toFixed(2)})` +
    `${r.fromCache ? '' : ` in ${seconds.toFixed(1)} s`}\n`
  );
}

export function pullCommand(globals: () => { backend?: string }): Command {
  return new Command('pull')
    .description('download published weights, convert them to a zoo model, export to ONNX and check it')
    .argument('<name>', "a models.json name, alias or timm id, e.g. resnet50d-best (see 'zoo list --published')")
    .option('--fp16', 'also write an FP16 ONNX file (classifiers)')
    .option('--force', 'download and convert again even if the cache has the model (the old copy stays until the new one passes)')
    .option('--json', 'print one JSON object on stdout (progress and notes stay on stderr)')
    .option('--lock-timeout <seconds>', 'longest wait for another pull of the same model (default 1800)', secondsOption('--lock-timeout', true))
    .option('--download-timeout <seconds>', 'longest time one file may take to download, retries included (default: ZOO_DOWNLOAD_TIMEOUT, else 600 + 10 per MB)', secondsOption('--download-timeout', false))
    .addHelpText(
      'after',
      `
Pulling needs access to the weight hosts (huggingface.co, GluonCV's S3 bucket, download.pytorch.org)
or a mirror. A file enters the cache only when its checksum matches the one pinned in models.json or,
where none is pinned, the sha256 the host declares (the first pull then prints it, to be pinned); it
is then converted with zoo's own definitions, exported to ONNX and checked in ONNX Runtime. A file
that fails any of this is deleted and the entry's next source is tried.

Environment:
  ZOO_CACHE              cache directory (default: $XDG_CACHE_HOME/zoo or ~/.cache/zoo)
  ZOO_OFFLINE=1          use only the cache; say what is missing
  HF_ENDPOINT            replaces https://huggingface.co
  MXNET_GLUON_REPO       replaces GluonCV's host (as GluonCV reads it)
  ZOO_MIRROR             'https://host/prefix=replacement;...' prefixes, or a directory or base URL
                         laid out as the hosts serve the files:
                           <mirror>/<repo>/resolve/<revision>/<file>  Hugging Face, e.g.
                             <mirror>/timm/resnet50d.gluon_in1k/resolve/main/model.safetensors
                           <mirror>/<file> or <mirror>/gluon/models/<file>  GluonCV, e.g.
                             <mirror>/resnet50_v1d-117a384e.zip
                           <mirror>/<file>  torchvision, e.g. <mirror>/resnet50-0676ba61.pth
                           <mirror>/<host>/<path>  any other URL
                         A mirror's file is used only if models.json pins its checksum: a mirror is
                         trusted to deliver bytes, not to say which file they are.
  ZOO_DOWNLOAD_TIMEOUT   seconds one file's download may take in all (default 600 + 10 per MB of the
                         file, at most 4 h), besides the 30 s idle timeout
  ZOO_MODELS_JSON        a models.json of your own, used instead of the built-in one

Examples:
  zoo pull resnet50d-best
  zoo predict resnet50d-best cat.jpg
  ZOO_MIRROR=/mnt/models zoo pull resnet152d-teacher
  zoo pull resnet50d-best --json | jq .files`,
    )
    .action(
      action(async (name: string, opts: PullFlags) => {
        const detector = loadPublishedDetectors().find((e) => e.name === name || e.aliases.includes(name));
        if (detector) {
          const options = headOptions(detector.name, 'detector (Faster R-CNN)', opts);
          await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
          const r = await withProgress(detector.name, () => pullDetector(detector, options));
          process.stdout.write(
            opts.json
              ? `${JSON.stringify({ name: r.name, arch: r.record.arch, task: r.record.task, fromCache: r.fromCache, onnx: r.onnx, weights: r.weights, check: r.record.check }, null, 2)}\n`
              : `${r.fromCache ? 'already in the cache' : 'pulled'}: ${r.name} (Faster R-CNN on ${r.record.arch}) from ${r.record.source.url}\n  ${r.onnx}\n  ONNX Runtime check: ${r.record.check.cases.join(', ')} detections matched\n`,
          );
          return;
        }
        const segmenter = lookupPublishedSegmenter(name);
        if (segmenter) {
          const options = headOptions(segmenter.name, 'segmenter (FCN)', opts);
          await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
          const r = await withProgress(segmenter.name, () => pullSegmenter(segmenter, options));
          process.stdout.write(
            opts.json
              ? `${JSON.stringify({ name: r.name, arch: r.record.arch, task: r.record.task, fromCache: r.fromCache, onnx: r.onnx, weights: r.weights, check: r.record.check }, null, 2)}\n`
              : `${r.fromCache ? 'already in the cache' : 'pulled'}: ${r.name} (FCN on ${r.record.arch}) from ${r.record.source.url}\n  ${r.onnx}\n  ONNX Runtime check: ${r.record.check.summary}\n`,
          );
          return;
        }
        const { entry, notes } = await resolvePublished(name, { command: 'zoo pull' });
        for (const n of notes) process.stderr.write(`note: ${n}\n`);
        await initBackend({ ...(globals().backend ? { backend: globals().backend } : {}), gradients: false });
        const log = (s: string) => process.stderr.write(`${s}\n`);
        const t0 = performance.now();
        // Each source's error is printed as it happens: a failed pull says it once, then what to try.
        const r: PullResult = await withProgress(entry.name, (onProgress) => pullModel(entry, {
          fp16: opts.fp16 ?? false,
          force: opts.force ?? false,
          settings: hubSettings(),
          log,
          ...(opts.lockTimeout !== undefined ? { lockTimeoutMs: opts.lockTimeout } : {}),
          ...(opts.downloadTimeout !== undefined ? { downloadTimeoutMs: opts.downloadTimeout } : {}),
          onProgress,
        }));
        const seconds = (performance.now() - t0) / 1000;
        process.stdout.write(opts.json ? `${JSON.stringify(jsonResult(r), null, 2)}\n` : textResult(r, seconds));
      }),
    );
}
