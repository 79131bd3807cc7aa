/**
 * `zoo pull`: fetch a published model's weights, convert them with zoo's own definitions, export to
 * ONNX, check the export against the tfjs model in ONNX Runtime, and record all of it in the cache.
 *
 * Layout: <cache>/<entry name>/ holds the downloaded file(s) as published, `model.onnx` (and
 * `model-fp16.onnx` on request) and `manifest.json` (hub/cache.ts) whose `meta.converted` records the
 * source, its checksums, the converted files' checksums and the check's figures. Sources are tried
 * in the entry's priority order; a source that fails (network, checksum, format) is reported and the
 * next one tried. Nothing is written to the cache that has not passed its checksum and its check.
 */
import { basename, join } from 'node:path';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { openZip } from '../formats/zip.js';
import { readFileBytes } from '../formats/types.js';
import { UserError } from '../errors.js';
import { createModel, type Model } from '../models/model.js';
import { readTensors, loadTensorsInto, type WeightFormat } from '../convert/convert.js';
import type { Naming } from '../convert/naming.js';
import { exportOnnx } from '../onnx/export.js';
import { checkExport, type CheckReport } from '../onnx/check.js';
import { writeFileAtomic } from '../io/atomic.js';
import { hubSettings, type HubSettings } from './settings.js';
import { checkCached, fetchFile, hashFile, modelDir, readManifest, withModelLock, writeManifest, type Manifest } from './cache.js';
import type { DownloadProgress } from './download.js';

/** The parts of a models.json entry the puller needs (hub/models_json.ts has the full type). */
export interface PullSource {
  format: WeightFormat | 'gluon-zip';
  naming: Naming;
  url: string;
  sha1?: string | null;
  sha256?: string | null;
  size?: number | null;
  /** For a GluonCV zip: the .params inside it, which GluonCV's SHA-1 is computed over. */
  member?: string | null;
  /** Leading hex digits of the file's sha256 (torchvision puts them in its file names). */
  sha256Prefix?: string | null;
}

export interface PullPreprocessing {
  inputSize?: number;
  resizeShorter: number;
  crop: number;
  interpolation: 'bilinear' | 'bicubic' | 'nearest';
  mean: number[];
  std: number[];
}

export interface PullEntry {
  name: string;
  arch: string;
  numClasses: number;
  categories?: string | null;
  sources: PullSource[];
  preprocessing: PullPreprocessing;
}

export interface PullOptions {
  /** Also write model-fp16.onnx. */
  fp16?: boolean;
  /** Convert again even if the cache has a converted model. */
  force?: boolean;
  settings?: HubSettings;
  /** Progress of each download, by label. */
  onProgress?: (label: string) => ((p: DownloadProgress) => void) | undefined;
  log?: (line: string) => void;
}

export interface ConvertedRecord {
  arch: string;
  source: { url: string; format: string; naming: string; file: string; sha256: string; sha1: string; bytes: number };
  onnx: { file: string; sha256: string; bytes: number };
  onnxFp16?: { file: string; sha256: string; bytes: number };
  check: Pick<CheckReport, 'maxAbsDiff' | 'maxAbsLogit' | 'top1Agreement' | 'provider'>;
  checkFp16?: Pick<CheckReport, 'maxAbsDiff' | 'maxAbsLogit' | 'top1Agreement' | 'decisiveAgreement' | 'provider'>;
  preprocessing: PullPreprocessing;
  categories: string | null;
  time: string;
}

export interface PullResult {
  name: string;
  dir: string;
  onnx: string;
  onnxFp16?: string;
  record: ConvertedRecord;
  /** Everything came from the cache. */
  fromCache: boolean;
}

function sourceFileName(url: string): string {
  const path = /^[a-z][a-z0-9+.-]*:/i.test(url) && !url.startsWith('file:') ? new URL(url).pathname : url;
  const name = basename(path);
  if (!name || name === '.' || name === '..') throw new UserError(`cannot derive a file name from source '${url}'`);
  return name;
}

function formatOf(s: PullSource): WeightFormat {
  return s.format;
}

async function cachedResult(entry: PullEntry, options: PullOptions, settings: HubSettings): Promise<PullResult | undefined> {
  if (options.force) return undefined;
  const manifest = await readManifest(entry.name, settings);
  const record = manifest?.meta?.converted as ConvertedRecord | undefined;
  if (!record || record.arch !== entry.arch) return undefined;
  const dir = modelDir(entry.name, settings);
  const files = [record.onnx, ...(options.fp16 ? [record.onnxFp16] : [])];
  for (const f of files) {
    if (!f) return undefined;
    const path = join(dir, f.file);
    if (!existsSync(path)) return undefined;
    if ((await hashFile(path)).sha256 !== f.sha256) return undefined;
  }
  return {
    name: entry.name,
    dir,
    onnx: join(dir, record.onnx.file),
    ...(record.onnxFp16 ? { onnxFp16: join(dir, record.onnxFp16.file) } : {}),
    record,
    fromCache: true,
  };
}

/** Offline with no source in the cache: one error saying where any of them would go. */
async function offlineMissing(entry: PullEntry, settings: HubSettings): Promise<UserError | undefined> {
  const lines: string[] = [];
  for (const source of entry.sources) {
    const fileName = sourceFileName(source.url);
    if ((await checkCached(entry.name, fileName, { settings })).state === 'ok') return undefined;
    lines.push(`${join(modelDir(entry.name, settings), fileName)}  (from ${source.url})`);
  }
  return new UserError(
    `offline (ZOO_OFFLINE) and ${entry.name} is not in the cache; any one of these files would do:\n  ${lines.join('\n  ')}\n` +
      'unset ZOO_OFFLINE to download, or point ZOO_MIRROR at a directory holding one of these files.',
  );
}

/** Downloads (or finds) the first source that can be had and verified. */
async function fetchSource(entry: PullEntry, options: PullOptions, settings: HubSettings) {
  if (settings.offline) {
    const missing = await offlineMissing(entry, settings);
    if (missing) throw missing;
  }
  const failures: string[] = [];
  for (const source of entry.sources) {
    const fileName = sourceFileName(source.url);
    try {
      // GluonCV publishes the SHA-1 of the .params inside its zip: the zip itself is then checked by its
      // CRCs while downloading, and the member against the SHA-1 before conversion.
      const memberPin = source.member && source.sha1 ? source.sha1 : undefined;
      const expected = {
        ...(source.sha256 ? { sha256: source.sha256 } : {}),
        ...(source.sha1 && !memberPin ? { sha1: source.sha1 } : {}),
      };
      const fetched = await fetchFile({
        name: entry.name,
        fileName,
        sources: [source.url],
        expected,
        ...(source.size ? { size: source.size } : {}),
        ...(options.onProgress?.(fileName) ? { onProgress: options.onProgress(fileName)! } : {}),
        settings,
      });
      if (memberPin) await verifyMember(fetched.path, source.member!, memberPin);
      if (source.sha256Prefix && !source.sha256) {
        const got = (await hashFile(fetched.path)).sha256;
        if (!got.startsWith(source.sha256Prefix.toLowerCase())) {
          await rm(fetched.path, { force: true });
          throw new UserError(`${fetched.path}: checksum mismatch: sha256 should start with ${source.sha256Prefix}, got ${got}`);
        }
      }
      return { source, path: fetched.path, fileName, fromCache: fetched.fromCache };
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      failures.push(`${source.url}: ${e.message}`);
      options.log?.(`source failed, trying the next: ${e.message}`);
    }
  }
  throw new UserError(`could not fetch ${entry.name} from any source:\n  ${failures.join('\n  ')}`);
}

/** Checks the SHA-1 of a zip member; a mismatch removes the zip from the cache (a later pull fetches it again). */
async function verifyMember(zipPath: string, member: string, sha1: string): Promise<void> {
  const zip = openZip(await readFileBytes(zipPath), zipPath);
  if (!zip.has(member)) {
    await rm(zipPath, { force: true });
    throw new UserError(`${zipPath}: has no '${member}' (entries: ${zip.entries.map((e) => e.name).join(', ')})`);
  }
  const got = createHash('sha1').update(zip.read(member)).digest('hex');
  if (!got.startsWith(sha1.toLowerCase())) {
    await rm(zipPath, { force: true });
    throw new UserError(`${zipPath}: checksum mismatch for '${member}': expected sha1 ${sha1}, got ${got}`);
  }
}

function summary(c: CheckReport) {
  return { maxAbsDiff: c.maxAbsDiff, maxAbsLogit: c.maxAbsLogit, top1Agreement: c.top1Agreement, provider: c.provider };
}

/** Pulls `entry`: download, verify, convert, export, check, cache. */
export async function pullModel(entry: PullEntry, options: PullOptions = {}): Promise<PullResult> {
  const settings = options.settings ?? hubSettings();
  const log = options.log ?? (() => {});
  const cached = await cachedResult(entry, options, settings);
  if (cached) return cached;
  const fetched = await fetchSource(entry, options, settings);
  return withModelLock(
    entry.name,
    async () => {
      // Another process may have converted it while this one waited.
      const again = await cachedResult(entry, options, settings);
      if (again) return again;
      const dir = modelDir(entry.name, settings);
      log(`converting ${fetched.fileName} (${fetched.source.format}, ${fetched.source.naming} names) to ${entry.arch}`);
      const model: Model = createModel(entry.arch, { numClasses: entry.numClasses });
      try {
        const { tensors, warnings } = await readTensors(fetched.path, formatOf(fetched.source));
        for (const w of warnings) log(`warning: ${w}`);
        const report = loadTensorsInto(model, tensors, fetched.source.naming, fetched.path);
        if (report.folded.length) log(`folded ${report.folded.length} convolution biases into batch-norm means`);
        const size = entry.preprocessing.crop;
        const metadata = {
          'zoo.name': entry.name,
          'zoo.preprocessing': JSON.stringify(entry.preprocessing),
          ...(entry.categories ? { 'zoo.categories': entry.categories } : {}),
        };
        const bytes = exportOnnx(model, { imageSize: size, metadata });
        const check = await checkExport(model, bytes, { imageSize: size, batch: 2 });
        if (!check.passed) {
          throw new UserError(`the converted ${entry.name} does not reproduce in ONNX Runtime: max |logit difference| ${check.maxAbsDiff.toExponential(2)} > ${check.tolerance}`);
        }
        log(`checked in ONNX Runtime: max |logit difference| ${check.maxAbsDiff.toExponential(2)} (largest logit ${check.maxAbsLogit.toFixed(2)})`);
        const onnxPath = join(dir, 'model.onnx');
        await writeFileAtomic(onnxPath, bytes);
        const src = await hashFile(fetched.path);
        const onnxHash = await hashFile(onnxPath);
        const record: ConvertedRecord = {
          arch: entry.arch,
          source: { url: fetched.source.url, format: fetched.source.format, naming: fetched.source.naming, file: fetched.fileName, ...src },
          onnx: { file: 'model.onnx', sha256: onnxHash.sha256, bytes: onnxHash.bytes },
          check: summary(check),
          preprocessing: entry.preprocessing,
          categories: entry.categories ?? null,
          time: new Date().toISOString(),
        };
        if (options.fp16) {
          const half = exportOnnx(model, { imageSize: size, metadata, fp16: true });
          const c16 = await checkExport(model, half, { imageSize: size, batch: 8, fp16: true });
          if (!c16.passed) throw new UserError(`the FP16 export of ${entry.name} disagrees with FP32 on the top class`);
          const p16 = join(dir, 'model-fp16.onnx');
          await writeFileAtomic(p16, half);
          const h16 = await hashFile(p16);
          record.onnxFp16 = { file: 'model-fp16.onnx', sha256: h16.sha256, bytes: h16.bytes };
          record.checkFp16 = { ...summary(c16), decisiveAgreement: c16.decisiveAgreement };
        }
        const manifest: Manifest = (await readManifest(entry.name, settings)) ?? { name: entry.name, files: {} };
        manifest.meta = { ...(manifest.meta ?? {}), converted: record };
        await writeManifest(entry.name, manifest, settings);
        return { name: entry.name, dir, onnx: onnxPath, ...(record.onnxFp16 ? { onnxFp16: join(dir, 'model-fp16.onnx') } : {}), record, fromCache: false };
      } finally {
        model.dispose();
      }
    },
    settings,
  );
}
