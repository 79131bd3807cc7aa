/**
 * `zoo pull`: fetch a published model's weights, convert them with zoo's own definitions, export to
 * ONNX, check the export against the tfjs model in ONNX Runtime, and record all of it in the cache.
 *
 * Layout: <cache>/<entry name>/ holds the downloaded file(s) as published, `model.onnx` (and
 * `model-fp16.onnx` on request) and `manifest.json` (hub/cache.ts) whose `meta.converted` records the
 * source, its checksums, the converted files' checksums and the check's figures. Sources are tried
 * in the entry's priority order; a source that fails (network, checksum, format, conversion) is
 * reported and the next one tried. The conversion runs on the downloaded copy before it enters the
 * cache, so a file that downloads but does not convert (an HTML error page served with status 200)
 * never lands there, and a cached copy that no longer converts is removed and fetched again. The
 * whole pull holds the model's lock: two pulls of one model download and convert it once.
 */
import { basename, join } from 'node:path';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { openZip } from '../formats/zip.js';
import { readFileBytes } from '../formats/types.js';
import { UserError } from '../errors.js';
import { createModel, type Model } from '../models/model.js';
import { openTensors, loadTensorsInto, modelBudget, type WeightFormat } from '../convert/convert.js';
import { fileBudget } from '../formats/budget.js';
import { metadataProps } from '../onnx/metadata.js';
import type { Preprocessing } from '../predict/preprocessing.js';
import type { Naming } from '../convert/naming.js';
import { exportOnnx } from '../onnx/export.js';
import { checkExport, checkSummary, type CheckReport } from '../onnx/check.js';
import { writeFileAtomic } from '../io/atomic.js';
import { hubSettings, mirrorSetting, sourceHost, type HubSettings } from './settings.js';
import {
  cacheError, checkCached, describeFailure, FetchError, fetchFile, hashFile, KeepFileError, keepFile, modelDir, pruneModelDir, readManifest, withModelLock,
  writeManifest, type FetchedFile, type Manifest, type ManifestFile, type SourceFailure, type Verification,
} from './cache.js';
import { redactUrl, type DownloadOptions, type DownloadProgress } from './download.js';
import { describeLockHolder, formatWait } from './lock.js';

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

/** A published model's evaluation preprocessing (predict/preprocessing.ts). */
export type PullPreprocessing = Preprocessing;

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
  /** Download and convert again even if the cache has the model; what is there stays until the new copy passes. */
  force?: boolean;
  settings?: HubSettings;
  /** Progress of each download, by label. */
  onProgress?: (label: string) => ((p: DownloadProgress) => void) | undefined;
  /** Lines for a person: what is being done, failed sources, waits for a lock, unpinned checksums. */
  log?: (line: string) => void;
  /** Longest wait for another process's lock on the model (default 30 min). */
  lockTimeoutMs?: number;
  /** Overall deadline of each file's download (default: ZOO_DOWNLOAD_TIMEOUT, else scaled to the size). */
  downloadTimeoutMs?: number;
  /** Transfer tuning (retries, idle timeout, backoff, name resolution) passed to the downloader. */
  transfer?: Pick<DownloadOptions, 'retries' | 'timeoutMs' | 'backoffMs' | 'network'>;
  signal?: AbortSignal;
}

export interface ConvertedRecord {
  arch: string;
  source: {
    url: string; format: string; naming: string; file: string; sha256: string; sha1: string; bytes: number;
    /** Where the file was actually read from, when a mirror sent it elsewhere. */
    resolved?: string;
    /** What vouched for it: a checksum pinned in models.json, or the sha256 its host declared. */
    verified?: Verification;
  };
  onnx: { file: string; sha256: string; bytes: number };
  onnxFp16?: { file: string; sha256: string; bytes: number };
  check: Pick<CheckReport, 'maxAbsDiff' | 'maxAbsLogit' | 'top1Agreement' | 'provider'>;
  checkFp16?: Pick<CheckReport, 'maxAbsDiff' | 'maxAbsLogit' | 'top1Agreement' | 'decisiveAgreement' | 'provider'>;
  preprocessing: PullPreprocessing;
  categories: string | null;
  time: string;
  /**
   * 'object-detection' for a detector added by `zoo det train --add-to-zoo` (its detection
   * preprocessing travels in its ONNX metadata; `preprocessing` then records the short side); absent for
   * a classifier.
   */
  task?: 'object-detection';
}

/** One downloaded file of a pull, and where it really came from. */
export interface PulledFile {
  /** File name in the model's cache directory. */
  file: string;
  path: string;
  /** The source URL as models.json lists it. */
  source: string;
  /** Where the bytes were read from: the mirror path or URL, or the source itself. */
  from: string;
  sha256: string;
  bytes: number;
  /** models.json pins its checksum; false when only the host's declared sha256 vouched for it. */
  pinned: boolean;
  fromCache: boolean;
}

export interface PullResult {
  name: string;
  arch: string;
  dir: string;
  onnx: string;
  onnxFp16?: string;
  record: ConvertedRecord;
  files: PulledFile[];
  /** Everything came from the cache. */
  fromCache: boolean;
}

/** Every source of a model failed; `failures` has one item per source, in priority order. */
export class PullError extends UserError {
  /** The first line and the hints, without the failures: for a caller that showed each failure as it happened. */
  readonly summary: string;

  constructor(readonly model: string, readonly failures: SourceFailure[], readonly hints: string[]) {
    const n = failures.length;
    const head = `could not pull ${model}: ${n === 1 ? 'its only source failed' : `all ${n} of its sources failed`}`;
    const listed = failures.map((f, i) => `  ${i + 1}. ${describeFailure(f)}`);
    super([`${head}:`, ...listed, ...hints].join('\n'));
    this.name = 'PullError';
    this.summary = [`${head} (${n === 1 ? 'its error is' : 'each error is'} above)`, ...hints].join('\n');
  }
}

function sourceFileName(url: string): string {
  const path = /^[a-z][a-z0-9+.-]*:/i.test(url) && !url.startsWith('file:') ? new URL(url).pathname : url;
  const name = basename(path);
  if (!name || name === '.' || name === '..') throw new UserError(`cannot derive a file name from source '${url}'`);
  return name;
}

function pulledFile(dir: string, fileName: string, entry: ManifestFile | undefined, record: ConvertedRecord['source'], fromCache: boolean): PulledFile {
  return {
    file: fileName,
    path: join(dir, fileName),
    source: record.url,
    from: entry?.resolved ?? record.resolved ?? entry?.source ?? record.url,
    sha256: record.sha256,
    bytes: record.bytes,
    pinned: (entry?.verified ?? record.verified) === 'pinned',
    fromCache,
  };
}

/**
 * Whether a conversion record still is the entry's: the same architecture, made from one of the entry's
 * sources as models.json lists it now (format, naming), from a file that matches every checksum and
 * size the source pins. A record of an edited entry (another file, a new pin) is pulled again.
 */
export function recordMatchesEntry(record: ConvertedRecord, entry: PullEntry): boolean {
  if (record.arch !== entry.arch || typeof record.source?.sha256 !== 'string') return false;
  const s = record.source;
  return entry.sources.some((src) =>
    src.url === s.url && src.format === s.format && src.naming === s.naming &&
    (!src.sha256 || src.sha256.toLowerCase() === s.sha256) &&
    (!src.sha256Prefix || s.sha256.startsWith(src.sha256Prefix.toLowerCase())) &&
    // A GluonCV member's SHA-1 is of the .params inside the zip, which the record does not keep.
    (!src.sha1 || Boolean(src.member) || (typeof s.sha1 === 'string' && s.sha1.startsWith(src.sha1.toLowerCase()))) &&
    (!src.size || src.size === s.bytes));
}

async function cachedResult(entry: PullEntry, options: PullOptions, settings: HubSettings): Promise<PullResult | undefined> {
  if (options.force) return undefined;
  const manifest = await readManifest(entry.name, settings);
  const record = manifest?.meta?.converted as ConvertedRecord | undefined;
  if (!record || !recordMatchesEntry(record, entry)) return undefined;
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
    arch: entry.arch,
    dir,
    onnx: join(dir, record.onnx.file),
    ...(record.onnxFp16 ? { onnxFp16: join(dir, record.onnxFp16.file) } : {}),
    record,
    files: [pulledFile(dir, record.source.file, manifest?.files[record.source.file], record.source, true)],
    fromCache: true,
  };
}

/**
 * Offline with no usable source in the cache: one error saying, for each source, where its file would go
 * and what would check a copy put there. A file there that a pin can check (GluonCV's SHA-1, torchvision's
 * prefix) is left for the pull to verify and convert.
 */
async function offlineMissing(entry: PullEntry, settings: HubSettings): Promise<UserError | undefined> {
  const lines: string[] = [];
  let usable = 0;
  for (const source of entry.sources) {
    const fileName = sourceFileName(source.url);
    const by = pinnedBy(source);
    const check = await checkCached(entry.name, fileName, { expected: pinOf(source), settings, ...(by ? { pinnedBy: by } : {}) });
    if (check.state === 'ok') return undefined;
    const where = `${join(modelDir(entry.name, settings), fileName)}  (from ${source.url})`;
    const pin = pinText(source);
    const here = check.state === 'bad' ? `: there, but ${check.unverifiable ? 'cannot be verified' : 'fails verification'} (${check.reason}); left in place` : '';
    if (pin) usable++;
    lines.push(`${where}${here}\n      ${pin ? `a copy put there is checked against ${pin}` : 'models.json pins no checksum for it: a copy put there cannot be verified offline (pull it online once, or pin its sha256)'}`);
  }
  const head = usable > 0
    ? `offline (ZOO_OFFLINE) and ${entry.name} is not in the cache; a copy of any one of the pinned files below would do:`
    : `offline (ZOO_OFFLINE) and ${entry.name} is not in the cache, and models.json pins none of its sources, so no copy put in the cache can be verified:`;
  return new UserError(
    `${head}\n  ${lines.join('\n  ')}\n` +
      'unset ZOO_OFFLINE to download, or pull it where the hosts can be reached and copy that cache directory (ZOO_CACHE) here.',
  );
}

/** What checks a source's file, in words; undefined when models.json pins nothing for it. */
function pinText(source: PullSource): string | undefined {
  if (source.sha256) return `its pinned sha256 ${source.sha256}`;
  if (source.sha1 && !source.member) return `its pinned sha1 ${source.sha1}`;
  return pinnedBy(source);
}

/**
 * The checksums models.json pins for the file itself. GluonCV publishes the SHA-1 of the .params
 * inside its zip instead: the zip is then checked by its CRCs while reading, and the member against
 * the SHA-1 (`memberPin`).
 */
function pinOf(source: PullSource): { sha256?: string; sha1?: string } {
  const memberPin = source.member && source.sha1;
  return {
    ...(source.sha256 ? { sha256: source.sha256 } : {}),
    ...(source.sha1 && !memberPin ? { sha1: source.sha1 } : {}),
  };
}

/** What pins a source beyond `pinOf`: GluonCV's member SHA-1, torchvision's sha256 prefix. */
function pinnedBy(source: PullSource): string | undefined {
  if (source.member && source.sha1) return `GluonCV's SHA-1 of ${source.member}`;
  if (source.sha256Prefix && !source.sha256) return `the sha256 prefix ${source.sha256Prefix} in its file name`;
  return undefined;
}

/** The published checksums `fetchFile` cannot check by itself. */
async function sourceChecks(source: PullSource, file: string): Promise<void> {
  if (source.member && source.sha1) await verifyMember(file, source.member, source.sha1);
  if (source.sha256Prefix && !source.sha256) {
    const got = (await hashFile(file)).sha256;
    if (!got.startsWith(source.sha256Prefix.toLowerCase())) {
      throw new UserError(`checksum mismatch: sha256 should start with ${source.sha256Prefix}, got ${got}`);
    }
  }
}

/** Checks the SHA-1 of a zip member. */
export async function verifyMember(zipPath: string, member: string, sha1: string): Promise<void> {
  const bytes = await readFileBytes(zipPath);
  const zip = openZip(bytes, zipPath, { budget: fileBudget(zipPath, bytes.length, 8) });
  if (!zip.has(member)) {
    throw new UserError(`${zipPath}: has no '${member}' (entries: ${zip.entries.map((e) => e.name).join(', ')})`);
  }
  const got = createHash('sha1').update(zip.read(member)).digest('hex');
  if (!got.startsWith(sha1.toLowerCase())) {
    throw new UserError(`${zipPath}: checksum mismatch for '${member}': expected sha1 ${sha1}, got ${got}`);
  }
}

/** The ONNX export(s) of one weights file and their checks, made before the file enters the cache. */
interface Converted {
  bytes: Uint8Array;
  check: CheckReport;
  half?: { bytes: Uint8Array; check: CheckReport };
}

async function convert(entry: PullEntry, source: PullSource, file: string, fileName: string, options: PullOptions, log: (l: string) => void): Promise<Converted> {
  log(`converting ${fileName} (${source.format}, ${source.naming} names) to ${entry.arch}`);
  const model: Model = createModel(entry.arch, { numClasses: entry.numClasses });
  try {
    // Names and shapes are checked against the architecture before any tensor is decoded, within a
    // memory budget of a few times the model's own size.
    const tensors = await openTensors(file, { format: source.format, budget: modelBudget(model, file) });
    for (const w of tensors.warnings) log(`warning: ${w}`);
    const report = loadTensorsInto(model, tensors, source.naming, file);
    if (report.folded.length) log(`folded ${report.folded.length} convolution biases into batch-norm means`);
    const size = entry.preprocessing.crop;
    const metadata = metadataProps({
      arch: entry.arch,
      name: entry.name,
      preprocessing: entry.preprocessing,
      ...(entry.categories ? { categories: entry.categories } : {}),
    });
    // From here on the file has passed (checksums, names, shapes): a failure is zoo's export or the
    // runtime's, and the verified file stays in the cache.
    const bytes = await exportOnnx(model, { imageSize: size, metadata }).catch(keepFile);
    const check = await checkExport(model, bytes, { imageSize: size, batch: 2 }).catch(keepFile);
    if (!check.passed) {
      throw new KeepFileError(`the converted ${entry.name} does not reproduce in ONNX Runtime: max |logit difference| ${check.maxAbsDiff.toExponential(2)} > ${check.tolerance}`);
    }
    log(`checked in ONNX Runtime: max |logit difference| ${check.maxAbsDiff.toExponential(2)} (largest logit ${check.maxAbsLogit.toFixed(2)})`);
    const out: Converted = { bytes, check };
    if (options.fp16) {
      const half = await exportOnnx(model, { imageSize: size, metadata, fp16: true }).catch(keepFile);
      const c16 = await checkExport(model, half, { imageSize: size, batch: 8, fp16: true }).catch(keepFile);
      if (!c16.passed) throw new KeepFileError(`the FP16 export of ${entry.name} disagrees with FP32 on the top class`);
      out.half = { bytes: half, check: c16 };
    }
    return out;
  } finally {
    model.dispose();
  }
}

/** Writes the converted model next to its verified download and records it. Holds the model's lock. */
async function store(entry: PullEntry, source: PullSource, fetched: FetchedFile, fileName: string, converted: Converted, settings: HubSettings): Promise<PullResult> {
  const dir = modelDir(entry.name, settings);
  const onnxPath = join(dir, 'model.onnx');
  await writeFileAtomic(onnxPath, converted.bytes);
  const onnxHash = await hashFile(onnxPath);
  const e = fetched.entry;
  const record: ConvertedRecord = {
    arch: entry.arch,
    source: {
      url: source.url, format: source.format, naming: source.naming, file: fileName, sha256: e.sha256, sha1: e.sha1, bytes: e.size,
      ...(e.resolved ? { resolved: e.resolved } : {}),
      verified: fetched.verified,
    },
    onnx: { file: 'model.onnx', sha256: onnxHash.sha256, bytes: onnxHash.bytes },
    check: checkSummary(converted.check),
    preprocessing: entry.preprocessing,
    categories: entry.categories ?? null,
    time: new Date().toISOString(),
  };
  let onnxFp16: string | undefined;
  if (converted.half) {
    onnxFp16 = join(dir, 'model-fp16.onnx');
    await writeFileAtomic(onnxFp16, converted.half.bytes);
    const h16 = await hashFile(onnxFp16);
    record.onnxFp16 = { file: 'model-fp16.onnx', sha256: h16.sha256, bytes: h16.bytes };
    record.checkFp16 = { ...checkSummary(converted.half.check), decisiveAgreement: converted.half.check.decisiveAgreement };
  }
  const manifest: Manifest = (await readManifest(entry.name, settings)) ?? { name: entry.name, files: {} };
  manifest.meta = { ...(manifest.meta ?? {}), converted: record };
  await writeManifest(entry.name, manifest, settings);
  return {
    name: entry.name,
    arch: entry.arch,
    dir,
    onnx: onnxPath,
    ...(onnxFp16 ? { onnxFp16 } : {}),
    record,
    files: [pulledFile(dir, fileName, fetched.entry, record.source, fetched.fromCache)],
    fromCache: false,
  };
}

/**
 * What to try when no source could be used: where a host could not be reached, the mirror settings for
 * the hosts involved and the offline cache; offline, how to go online.
 */
export function pullHints(entry: { sources: readonly { url: string }[] }, settings: HubSettings, failures: SourceFailure[]): string[] {
  if (settings.offline) return ['unset ZOO_OFFLINE (and HF_HUB_OFFLINE) to download.'];
  if (!failures.some((f) => f.network)) return [];
  const hosts = new Set(entry.sources.map((s) => sourceHost(s.url)));
  const active = [...new Set(entry.sources.map((s) => mirrorSetting(s.url, settings)).filter((m) => m !== undefined))];
  const lines = ['If these hosts cannot be reached from this machine, fetch through a mirror:'];
  if (hosts.has('huggingface')) lines.push('  HF_ENDPOINT=https://<hub mirror>        instead of https://huggingface.co');
  if (hosts.has('gluoncv')) lines.push("  MXNET_GLUON_REPO=https://<mirror>/      instead of GluonCV's S3 bucket");
  lines.push(
    '  ZOO_MIRROR=<directory or URL>           the files laid out as the hosts serve them: <repo>/resolve/<revision>/<file>',
    '                                          for Hugging Face, the file name for GluonCV and torchvision (see zoo pull --help)',
    '  or pull where the hosts can be reached, copy that cache (ZOO_CACHE) here and set ZOO_OFFLINE=1.',
  );
  if (active.length > 0) lines.push(`(${active.join(' and ')} ${active.length > 1 ? 'are set here: check that they serve' : 'is set here: check that it serves'} these files)`);
  return lines;
}

/** The lines a pull prints while it waits for another process's lock on model `name`. */
export function lockWaitLine(name: string, timeoutMs: number | undefined) {
  return (holder: Parameters<typeof describeLockHolder>[0], waitedMs: number): string => {
    const limit = formatWait(timeoutMs ?? 30 * 60_000);
    return waitedMs === 0
      ? `${name} is locked by ${describeLockHolder(holder)}; waiting up to ${limit} for it (--lock-timeout <seconds> to change)`
      : `still waiting for the lock on ${name}, held by ${describeLockHolder(holder)}: ${formatWait(waitedMs)} so far`;
  };
}

/** Pulls `entry`: download, verify, convert, export, check, cache. */
export async function pullModel(entry: PullEntry, options: PullOptions = {}): Promise<PullResult> {
  const settings = options.settings ?? hubSettings();
  return pullIn(entry, options, settings).catch((err: unknown) => {
    throw cacheError(err, settings);
  });
}

async function pullIn(entry: PullEntry, options: PullOptions, settings: HubSettings): Promise<PullResult> {
  const log = options.log ?? (() => {});
  const cached = await cachedResult(entry, options, settings);
  if (cached) return cached;
  if (settings.offline) {
    const missing = await offlineMissing(entry, settings);
    if (missing) throw missing;
  }
  const waitLine = lockWaitLine(entry.name, options.lockTimeoutMs);
  const deadlineMs = options.downloadTimeoutMs ?? settings.downloadTimeoutMs;
  return withModelLock(
    entry.name,
    async () => {
      // Another process may have pulled it while this one waited.
      const again = await cachedResult(entry, options, settings);
      if (again) return again;
      const failures: SourceFailure[] = [];
      const n = entry.sources.length;
      for (const [i, source] of entry.sources.entries()) {
        const fileName = sourceFileName(source.url);
        let converted: Converted | undefined;
        try {
          const by = pinnedBy(source);
          const onProgress = options.onProgress?.(fileName);
          const fetched = await fetchFile({
            name: entry.name,
            fileName,
            sources: [source.url],
            expected: pinOf(source),
            ...(by ? { pinnedBy: by } : {}),
            ...(source.size ? { size: source.size } : {}),
            verify: async (file) => {
              await sourceChecks(source, file);
              converted = await convert(entry, source, file, fileName, options, log);
            },
            force: options.force ?? false,
            lockHeld: true,
            ...(onProgress ? { onProgress } : {}),
            log,
            settings,
            ...(options.signal ? { signal: options.signal } : {}),
            transfer: { ...options.transfer, ...(deadlineMs !== undefined ? { deadlineMs } : {}) },
          });
          if (!fetched.fromCache && fetched.verified === 'declared') {
            log(
              `${entry.name}/${fileName}: models.json pins no checksum for ${source.url}; it matched the sha256 the host declares, ` +
                `recorded as ${fetched.entry.sha256}. Pin it in models.json with "sha256": "${fetched.entry.sha256}".`,
            );
          }
          return await store(entry, source, fetched, fileName, converted!, settings);
        } catch (e) {
          if (!(e instanceof UserError) || options.signal?.aborted) throw e;
          const failure = e instanceof FetchError && e.failures.length === 1
            ? e.failures[0]!
            : { source: redactUrl(source.url), tried: [], reason: e.message, notFound: false, network: false };
          failures.push(failure);
          log(`source ${i + 1} of ${n} failed: ${describeFailure(failure)}`);
          if (i + 1 < n) log(`trying source ${i + 2} of ${n}: ${redactUrl(entry.sources[i + 1]!.url)}`);
        }
      }
      await pruneModelDir(entry.name, settings);
      throw new PullError(entry.name, failures, pullHints(entry, settings, failures));
    },
    settings,
    {
      ...(options.lockTimeoutMs !== undefined ? { timeoutMs: options.lockTimeoutMs } : {}),
      onWait: (holder, waitedMs) => log(waitLine(holder, waitedMs)),
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
}
