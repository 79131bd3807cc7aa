/**
 * The export job behind `zoo export`: build, load weights, export, check in ONNX Runtime, write.
 */
import type { Model } from '../models/model.js';
import { createModel, type CreateModelOptions } from '../models/model.js';
import { loadWeights } from '../io/weights.js';
import { writeFileAtomic } from '../io/atomic.js';
import { UserError } from '../errors.js';
import { exportOnnx, type ExportOptions } from './export.js';
import { checkExport, type CheckReport } from './check.js';
import { metadataProps, type ModelMetadata } from './metadata.js';

export interface ExportJob extends ExportOptions, CreateModelOptions {
  arch: string;
  /** A weights file to load first (any format convert/convert.ts reads); default: untrained. */
  weights?: string;
  /** What travels with the model into the file's metadata: preprocessing, class names, name. */
  meta?: ModelMetadata;
  output: string;
  /** Write through a symbolic link at `output` (else refused). */
  followSymlinks?: boolean;
  /** Run the model in tfjs and ONNX Runtime on the same input (default true). */
  check?: boolean;
  checkBatch?: number;
  log?: (line: string) => void;
}

export interface ExportResult {
  output: string;
  bytes: number;
  params: number;
  check?: CheckReport;
  /** The weights were freshly initialized (no weights file). */
  untrained: boolean;
}

/** Untrained random networks amplify float32 rounding (see models/calibrate.ts); allowed on top of 1e-4. */
export const UNTRAINED_RTOL = 5e-5;

export async function runExport(job: ExportJob): Promise<ExportResult> {
  const log = job.log ?? (() => {});
  const model: Model = createModel(job.arch, job);
  try {
    const untrained = job.weights === undefined;
    if (job.weights) {
      const r = await loadWeights(model, job.weights);
      log(`loaded ${r.loaded} tensors from ${job.weights} (${r.format})`);
    } else {
      log(`no --weights given: exporting the untrained network (seed ${job.seed ?? 0})`);
    }
    const size = job.imageSize ?? job.meta?.preprocessing?.crop ?? 224;
    const metadata = { ...metadataProps({ ...job.meta, arch: job.arch }), ...job.metadata };
    const bytes = exportOnnx(model, { ...job, imageSize: size, metadata });
    let check: CheckReport | undefined;
    if (job.check ?? true) {
      check = await checkExport(model, bytes, {
        imageSize: size,
        batch: job.checkBatch ?? 2,
        fp16: job.fp16 ?? false,
        rtol: untrained ? UNTRAINED_RTOL : 0,
      });
      if (!check.passed) {
        throw new UserError(
          `the ONNX file does not reproduce the tfjs model: ${describeCheck(check)}; nothing was written to '${job.output}'`,
        );
      }
    }
    await writeFileAtomic(job.output, bytes, { followSymlinks: job.followSymlinks ?? false });
    return { output: job.output, bytes: bytes.length, params: model.params.countTrainable(), untrained, ...(check ? { check } : {}) };
  } finally {
    model.dispose();
  }
}

export function describeCheck(c: CheckReport): string {
  const fp16 = !Number.isFinite(c.tolerance);
  const diff = `max |logit difference| ${c.maxAbsDiff.toExponential(2)} (largest logit ${c.maxAbsLogit.toFixed(2)})`;
  if (fp16) return `${diff}, top-1 agreement ${c.decisive ? `${(c.decisiveAgreement * 100).toFixed(0)}% of ${c.decisive} decisive images` : 'n/a'} (${(c.top1Agreement * 100).toFixed(0)}% of all ${c.batch})`;
  return `${diff}, limit ${c.tolerance.toExponential(2)}, top-1 agreement ${(c.top1Agreement * 100).toFixed(0)}%`;
}
