/**
 * The local weight cache, laid out for a person to read:
 *
 *   <cache>/<model name>/<file>            verified files, only ever created by an atomic rename
 *   <cache>/<model name>/manifest.json     per file: source URL, where it came from, size, sha256, sha1,
 *                                          declared checksum, how it was verified, time
 *   <cache>/<model name>/.incoming/        downloads being verified, and partial downloads to resume
 *   <cache>/.locks/<model name>.lock       held while a process fills that model's directory
 *
 * `fetchFile` is the one way files enter the cache: it checks what is there, downloads under the model's
 * lock (so two processes pulling one model end with one good copy) and records the result. A file
 * enters only when something vouches for it: a checksum pinned by the caller (models.json), or the
 * sha256 its host declares; and only after the caller's own check (`verify`: parsing, converting) has
 * passed on the downloaded copy. A file nothing vouches for is refused, with its sha256, so it can be
 * pinned.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import {
  checksumProblems, download, DownloadError, redactUrl,
  type DownloadOptions, type DownloadProgress, type ExpectedDigests,
} from './download.js';
import { LockFileError, withLock, type LockHolder, type LockOptions } from './lock.js';
import { formatDuration } from '../util/format.js';
import { writeFileAtomic } from '../io/atomic.js';
import { hasScheme, hubSettings, mirrorSetting, resolveSourceCandidates, type HubSettings } from './settings.js';

/** File name of a model's manifest inside its directory. */
export const MANIFEST_FILE = 'manifest.json';

/** What the cache knows about one file of a model. */
export interface ManifestFile {
  /** The source as listed (credentials removed). */
  source: string;
  /** Where it was actually fetched from, when a mirror or a directory source changed it. */
  resolved?: string;
  size: number;
  sha256: string;
  sha1: string;
  /** The sha256 the host declared (Hugging Face's X-Linked-Etag), when it declared one. */
  declaredSha256?: string;
  etag?: string;
  /** What vouched for the file: a pinned checksum, or the sha256 the host declared (absent in older caches). */
  verified?: Verification;
  /** When the file was fetched, ISO 8601. */
  time: string;
}

/** How a file in the cache was verified. */
export type Verification = 'pinned' | 'declared';

/** `<cache>/<model name>/manifest.json`. `meta` is free for callers (conversion records, for example). */
export interface Manifest {
  name: string;
  files: Record<string, ManifestFile>;
  meta?: Record<string, unknown>;
}

/** One model directory of the cache. */
export interface CachedModel {
  name: string;
  /** Complete files, manifest and partial downloads excluded. */
  files: string[];
  /** Disk use of the whole model directory. */
  bytes: number;
  manifest: Manifest | undefined;
}

/** Options of `fetchFile`. */
export interface FetchFileOptions {
  /** Model name: the cache directory's name. */
  name: string;
  /** File name inside the model directory. */
  fileName: string;
  /** URLs, file:// URLs or local paths in priority order; a local directory means `<dir>/<fileName>`. */
  sources: string[];
  /** Pinned checksums; they win over the manifest when both exist. */
  expected?: ExpectedDigests;
  size?: number;
  /**
   * The caller's check of the file beyond its checksum (parse it, convert it, check a zip member),
   * run on a fresh download before it enters the cache and on a cached copy before it is handed out.
   * A `UserError` rejects the file: a fresh download is deleted and the next source tried; a cached
   * copy is deleted (with its manifest entry) and fetched again.
   */
  verify?: (file: string) => Promise<void>;
  /**
   * Set when `verify` checks a published checksum that `expected` cannot hold (GluonCV's SHA-1 of the
   * .params inside its zip, torchvision's sha256 prefix): the file then counts as pinned. Says what
   * pins it.
   */
  pinnedBy?: string;
  /** Download again even when the cache has a good copy; the old copy stays until the new one passes. */
  force?: boolean;
  /** The caller holds the model's lock (`withModelLock`), so `fetchFile` does not take it. */
  lockHeld?: boolean;
  onProgress?: (p: DownloadProgress) => void;
  /** Notes worth a line (a cached copy that failed its check and is fetched again). */
  log?: (line: string) => void;
  settings?: HubSettings;
  signal?: AbortSignal;
  /** Transfer tuning passed to `download`. */
  transfer?: Pick<DownloadOptions, 'retries' | 'timeoutMs' | 'backoffMs' | 'deadlineMs' | 'network'>;
  /** Lock tuning; `onWait` tells the user another process is fetching this model. */
  lock?: Pick<LockOptions, 'timeoutMs' | 'staleMs' | 'onWait' | 'reportMs'>;
}

/** A file in the cache, verified. */
export interface FetchedFile {
  path: string;
  /** True when no transfer was needed. */
  fromCache: boolean;
  entry: ManifestFile;
  /** What vouches for it under the options of this call. */
  verified: Verification;
}

/** Why one source could not deliver a file. */
export interface SourceFailure {
  /** The source as listed (credentials removed). */
  source: string;
  /** Where it was looked for, when a mirror or a directory sent it elsewhere. */
  tried: string[];
  /** What went wrong, naming the file or URL where that helps. */
  reason: string;
  /** The source (every place tried) has no such file. */
  notFound: boolean;
  /** The bytes did not arrive from a remote place (HTTP errors, connection failures, timeouts). */
  network: boolean;
}

/** `fetchFile` found no usable copy at any source; `failures` has one item per source, in order. */
export class FetchError extends UserError {
  constructor(readonly what: string, readonly failures: SourceFailure[]) {
    super(failures.length === 0
      ? `no source is known for ${what}`
      : failures.length === 1
        ? describeFailure(failures[0]!)
        : `could not fetch ${what} from any of its ${failures.length} sources:\n${failures.map((f, i) => `  ${i + 1}. ${describeFailure(f)}`).join('\n')}`);
    this.name = 'FetchError';
  }
}

/** One line for a failed source: the source, where it was looked for if elsewhere, and why. */
export function describeFailure(f: SourceFailure): string {
  const elsewhere = f.tried.filter((t) => t !== f.source);
  return `${f.source}${elsewhere.length > 0 ? ` (via ${elsewhere.join(', then ')})` : ''}: ${f.reason}`;
}

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+@-]*$/;

function checkName(kind: string, name: string): void {
  if (!SAFE_NAME.test(name) || name.includes('..')) {
    throw new UserError(`invalid ${kind} '${name}': use letters, digits and . _ + @ - (not starting with . or -)`, { exitCode: 2 });
  }
}

/** What a system error code says about a place in the cache. */
const UNUSABLE: Record<string, string> = {
  ENOTDIR: 'a part of the path is a file, not a directory',
  EEXIST: 'a file is where a directory should be',
  EISDIR: 'a directory is where a file should be',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'the path is too long',
};

function within(p: string, dir: string): boolean {
  const rel = path.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * A system error at a place in (or above) the cache directory, as a UserError naming the place and
 * ZOO_CACHE: an unusable cache is the user's to fix, not a bug. Other errors come back unchanged.
 */
export function cacheError(err: unknown, settings: HubSettings): unknown {
  const e = err as { code?: unknown; path?: unknown };
  if (typeof e?.code !== 'string' || !(e.code in UNUSABLE)) return err;
  if (err instanceof UserError && !(err instanceof LockFileError)) return err;
  const where = typeof e.path === 'string' ? path.resolve(e.path) : settings.cacheDir;
  if (!within(where, settings.cacheDir) && !within(settings.cacheDir, where)) return err;
  return new UserError(
    `the cache directory ${settings.cacheDir} cannot be used: ${where}: ${UNUSABLE[e.code]} (${e.code}); ` +
      'fix it, or set ZOO_CACHE to a directory zoo can write to',
    { cause: err },
  );
}

/** Runs `fn`, reporting a system error in the cache as `cacheError` does. */
async function inCache<T>(settings: HubSettings, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw cacheError(err, settings);
  }
}

/** Directory of model `name` in the cache. */
export function modelDir(name: string, settings: HubSettings = hubSettings()): string {
  checkName('model name', name);
  return path.join(settings.cacheDir, name);
}

/** The lock file that guards model `name`'s directory; outside it, so removing the model keeps the lock. */
export function modelLockPath(name: string, settings: HubSettings = hubSettings()): string {
  checkName('model name', name);
  return path.join(settings.cacheDir, '.locks', `${name}.lock`);
}

/** Runs `fn` holding model `name`'s lock: for callers that add files or `meta` next to `fetchFile`. */
export function withModelLock<T>(
  name: string,
  fn: () => Promise<T> | T,
  settings: HubSettings = hubSettings(),
  options: LockOptions = {},
): Promise<T> {
  return withLock(modelLockPath(name, settings), fn, options).catch((err: unknown) => {
    throw err instanceof LockFileError ? cacheError(err, settings) : err;
  });
}

/** The manifest of model `name`, or undefined when there is none. Throws `UserError` for a corrupt one. */
export async function readManifest(name: string, settings: HubSettings = hubSettings()): Promise<Manifest | undefined> {
  const file = path.join(modelDir(name, settings), MANIFEST_FILE);
  let raw: string;
  try {
    raw = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw cacheError(err, settings);
  }
  try {
    const m = JSON.parse(raw) as Manifest;
    if (typeof m !== 'object' || m === null || typeof m.files !== 'object' || m.files === null) throw new Error('no files');
    return m;
  } catch (err) {
    throw new UserError(`corrupt cache manifest ${file}: ${(err as Error).message}; remove the model with 'zoo rm ${name}'`, { cause: err });
  }
}

/** Writes model `name`'s manifest atomically (temporary file, fsync, rename). Hold the model's lock. */
export async function writeManifest(name: string, manifest: Manifest, settings: HubSettings = hubSettings()): Promise<void> {
  await writeFileAtomic(path.join(modelDir(name, settings), MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
}

/** Directory of downloads being verified (and partial downloads) inside a model's directory. */
const INCOMING = '.incoming';

function isAuxiliary(file: string): boolean {
  return file === MANIFEST_FILE || file.endsWith('.part') || file.endsWith('.part.source') || file.endsWith('.tmp');
}

/** Removes `fileName` and its manifest entry from model `name` (a file that failed a check). Hold the lock. */
export async function forgetCachedFile(name: string, fileName: string, settings: HubSettings = hubSettings()): Promise<void> {
  checkName('file name', fileName);
  await fsp.rm(path.join(modelDir(name, settings), fileName), { force: true });
  const manifest = await readManifest(name, settings).catch(() => undefined);
  if (manifest && fileName in manifest.files) {
    const { [fileName]: _dropped, ...rest } = manifest.files;
    await writeManifest(name, { ...manifest, files: rest }, settings);
  }
}

/**
 * Removes model `name`'s directory when it holds nothing of value: no files, and a manifest (if any)
 * that records no file and no converted model. A failed pull leaves no empty entry behind. Hold the lock.
 */
export async function pruneModelDir(name: string, settings: HubSettings = hubSettings()): Promise<boolean> {
  const dir = modelDir(name, settings);
  const incoming = path.join(dir, INCOMING);
  if ((await fsp.readdir(incoming).catch(() => ['?'])).length === 0) await fsp.rmdir(incoming).catch(() => undefined);
  const entries = await fsp.readdir(dir).catch(() => undefined);
  if (entries === undefined) return false;
  if (entries.some((e) => e !== MANIFEST_FILE)) return false;
  if (entries.includes(MANIFEST_FILE)) {
    const manifest = await readManifest(name, settings).catch(() => undefined);
    if (!manifest) return false; // corrupt: leave it for the user to see
    if (Object.keys(manifest.files).length > 0 || Object.keys(manifest.meta ?? {}).length > 0) return false;
  }
  await fsp.rm(dir, { recursive: true, force: true });
  return true;
}

async function diskUse(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await diskUse(full);
    else if (entry.isFile()) total += (await fsp.stat(full)).size;
  }
  return total;
}

/** The models in the cache, sorted by name. A corrupt manifest shows as undefined rather than failing the listing. */
export async function listCached(settings: HubSettings = hubSettings()): Promise<CachedModel[]> {
  return inCache(settings, () => listCachedIn(settings));
}

async function listCachedIn(settings: HubSettings): Promise<CachedModel[]> {
  const entries = await fsp.readdir(settings.cacheDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  const models: CachedModel[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory() || !SAFE_NAME.test(entry.name)) continue;
    const dir = path.join(settings.cacheDir, entry.name);
    const inside = await fsp.readdir(dir, { withFileTypes: true });
    const files = inside.filter((f) => f.isFile() && !isAuxiliary(f.name)).map((f) => f.name).sort();
    const manifest = await readManifest(entry.name, settings).catch(() => undefined);
    models.push({ name: entry.name, files, bytes: await diskUse(dir), manifest });
  }
  return models.sort((a, b) => a.name.localeCompare(b.name));
}

/** Removes model `name` from the cache, waiting for a pull of it in progress; false when it was not there. */
export async function removeCached(name: string, settings: HubSettings = hubSettings(), lock: LockOptions = {}): Promise<boolean> {
  const dir = modelDir(name, settings);
  return withModelLock(name, () => inCache(settings, async () => {
    const existed = await fsp.stat(dir).then(() => true, () => false);
    await fsp.rm(dir, { recursive: true, force: true });
    return existed;
  }), settings, lock);
}

/** sha256, sha1 and size of a file, read as a stream. */
export async function hashFile(file: string): Promise<{ sha256: string; sha1: string; bytes: number }> {
  const sha256 = crypto.createHash('sha256');
  const sha1 = crypto.createHash('sha1');
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) {
    sha256.update(chunk as Buffer);
    sha1.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: sha256.digest('hex'), sha1: sha1.digest('hex'), bytes };
}

/** State of one cached file: good (with its record), missing, or present but failing verification. */
export type CacheCheck =
  | { state: 'ok'; entry: ManifestFile }
  | { state: 'missing' }
  /** `unverifiable`: nothing to check it against (no pin, no manifest entry), which says nothing against the bytes. */
  | { state: 'bad'; reason: string; unverifiable?: boolean };

function hasPin(expected: ExpectedDigests | undefined): boolean {
  return Boolean(expected?.sha256 || expected?.sha1);
}

/**
 * Verifies `<cache>/<name>/<fileName>` against the pinned checksums, else against the manifest. A file
 * with neither to check against counts as bad (`unverifiable`): the cache only vouches for what it can
 * verify. With `pinnedBy` (the caller's own check holds the pin, see `FetchFileOptions.pinnedBy`) such
 * a file counts as present, for that check to judge.
 */
export async function checkCached(
  name: string,
  fileName: string,
  options: { expected?: ExpectedDigests; size?: number; settings?: HubSettings; pinnedBy?: string } = {},
): Promise<CacheCheck> {
  const settings = options.settings ?? hubSettings();
  checkName('file name', fileName);
  const file = path.join(modelDir(name, settings), fileName);
  const stat = await fsp.stat(file).catch(() => undefined);
  if (!stat?.isFile()) return { state: 'missing' };
  const recorded = (await readManifest(name, settings).catch(() => undefined))?.files[fileName];
  const size = options.size ?? recorded?.size;
  if (size !== undefined && stat.size !== size) return { state: 'bad', reason: `size ${stat.size} bytes, expected ${size}` };
  if (!hasPin(options.expected) && !recorded && options.pinnedBy === undefined) {
    return { state: 'bad', reason: 'no checksum is pinned for it and no pull recorded one', unverifiable: true };
  }
  const digests = await hashFile(file);
  const problems = hasPin(options.expected)
    ? checksumProblems(digests, options.expected)
    : recorded ? checksumProblems(digests, { sha256: recorded.sha256 }) : []; // else the caller's check holds the pin
  if (problems.length > 0) return { state: 'bad', reason: problems.join('; ') };
  const entry: ManifestFile = recorded && recorded.sha256 === digests.sha256
    ? recorded
    : { source: 'unknown', size: digests.bytes, sha256: digests.sha256, sha1: digests.sha1, time: stat.mtime.toISOString() };
  return { state: 'ok', entry };
}

/**
 * Where `source` may be fetched from, in order: mirrors applied (pure, `resolveSourceCandidates`), a
 * local directory turned into `<dir>/<fileName>`, and of a mirror directory's places the ones that
 * exist first.
 */
export async function resolveSource(source: string, fileName: string, settings: HubSettings): Promise<string[]> {
  const out: string[] = [];
  const missing: string[] = [];
  for (const resolved of resolveSourceCandidates(source, settings)) {
    const local = resolved.startsWith('file://') ? fileURLToPath(resolved) : hasScheme(resolved) ? undefined : path.resolve(resolved);
    if (local === undefined) {
      out.push(resolved);
      continue;
    }
    const stat = await fsp.stat(local).catch(() => undefined);
    if (stat?.isDirectory()) out.push(path.join(local, fileName));
    else if (stat) out.push(resolved);
    else missing.push(resolved);
  }
  return [...out, ...missing];
}

/** What checks a copy of a file that a user puts in the cache, in words; undefined when nothing would. */
function pinDescription(opts: Pick<FetchFileOptions, 'expected' | 'pinnedBy'>): string | undefined {
  const e = opts.expected;
  if (e?.sha256) return `its pinned sha256 ${e.sha256}`;
  if (e?.sha1) return `its pinned sha1 ${e.sha1}`;
  return opts.pinnedBy;
}

function offlineError(opts: FetchFileOptions, file: string, check: CacheCheck, settings: HubSettings): UserError {
  const what = `${opts.name}/${opts.fileName}`;
  const pin = pinDescription(opts);
  const state = check.state === 'missing'
    ? 'is not in the cache'
    : check.state === 'bad' && check.unverifiable
      ? `is in the cache but cannot be verified (${check.reason}); it was left in place`
      : `is in the cache but fails verification (${check.state === 'bad' ? check.reason : 'unknown'}); it was left in place`;
  const put = pin
    ? `or put a copy there (it is checked against ${pin}).`
    : 'a copy put there cannot be verified offline, as models.json pins no checksum for it: pull it online once, or pin its sha256.';
  const from = opts.sources.map((s, i) => {
    const r = resolveSourceCandidates(s, settings).filter((c) => c !== s);
    return `  ${i + 1}. ${redactUrl(s)}${r.length === 0 ? '' : ` (via mirror: ${r.map(redactUrl).join(' or ')})`}`;
  });
  return new UserError(
    [
      `offline mode (ZOO_OFFLINE): ${what} ${state}`,
      `  expected at: ${file}`,
      from.length > 0 ? 'it would be fetched from:' : 'no source is known for it',
      ...from,
      `unset ZOO_OFFLINE (and HF_HUB_OFFLINE) to download it; ${put}`,
    ].join('\n'),
  );
}

async function recordFile(name: string, fileName: string, entry: ManifestFile, settings: HubSettings): Promise<void> {
  const current = await readManifest(name, settings).catch(() => undefined);
  const manifest: Manifest = current ?? { name, files: {} };
  manifest.files = { ...manifest.files, [fileName]: entry };
  await writeManifest(name, manifest, settings);
}

/** Drops a partial download that came from another source: resuming it would splice two files. */
async function claimPartial(file: string, source: string): Promise<void> {
  const marker = `${file}.part.source`;
  const previous = await fsp.readFile(marker, 'utf8').catch(() => undefined);
  if (previous !== source) {
    await fsp.rm(`${file}.part`, { force: true });
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(marker, source);
  }
}

async function removeStaged(staged: string, keepPartial: boolean): Promise<void> {
  await fsp.rm(staged, { force: true });
  if (keepPartial) return;
  await fsp.rm(`${staged}.part`, { force: true });
  await fsp.rm(`${staged}.part.source`, { force: true });
}

function isPinned(opts: FetchFileOptions): boolean {
  return hasPin(opts.expected) || opts.pinnedBy !== undefined;
}

/** Why a file nothing vouches for is refused, and how to pin it. */
function unverifiedReason(source: string, resolved: string, sha256: string, settings: HubSettings): string {
  const setting = mirrorSetting(source, settings);
  const remote = hasScheme(resolved) && !resolved.startsWith('file:');
  const declarer = setting
    ? remote ? `a mirror (${setting}) is not trusted to say which file it serves` : `a ${setting} directory declares none`
    : remote ? 'the host declared none' : 'a local file declares none';
  const what = setting ? `the file published at ${redactUrl(source)} and not another model's` : 'the file you expect';
  const fix = `pin "sha256": "${sha256}" for this source in models.json (or your ZOO_MODELS_JSON)` +
    (setting ? `, or fetch it from the host itself (unset ${setting})` : '');
  return `refused: no checksum is pinned for it and ${declarer}, so nothing shows it is ${what}. ` +
    `Its sha256 is ${sha256}; if it is the right file, ${fix}.`;
}

/** The cached copy, if the cache may hand it out: bytes match the pin (or the manifest), and something vouched for it. */
async function usableCached(opts: FetchFileOptions, settings: HubSettings): Promise<CacheCheck> {
  const check = await checkCached(opts.name, opts.fileName, {
    expected: opts.expected, size: opts.size, settings, ...(opts.pinnedBy !== undefined ? { pinnedBy: opts.pinnedBy } : {}),
  });
  if (check.state !== 'ok' || isPinned(opts)) return check;
  // With nothing pinned, only a copy that matched the sha256 its host itself declared is vouched for.
  const e = check.entry;
  if (e.resolved !== undefined) {
    return { state: 'bad', reason: `a mirror delivered it (${e.resolved}) and no checksum is pinned for it`, unverifiable: true };
  }
  if (!e.declaredSha256 || e.declaredSha256 !== e.sha256) {
    return { state: 'bad', reason: 'it was recorded without a pinned or host-declared checksum', unverifiable: true };
  }
  return check;
}

/** Downloads from one source (trying each place a mirror may hold it), verifies, and moves the file into place. */
async function fetchOneSource(opts: FetchFileOptions, source: string, places: string[], file: string, settings: HubSettings): Promise<FetchedFile> {
  const staged = path.join(path.dirname(file), INCOMING, opts.fileName);
  const shown = places.map(redactUrl);
  for (const [i, resolved] of places.entries()) {
    await claimPartial(staged, resolved);
    let r;
    try {
      r = await download(resolved, staged, {
        ...opts.transfer, expected: opts.expected, size: opts.size, onProgress: opts.onProgress, signal: opts.signal,
      });
    } catch (err) {
      if (err instanceof DownloadError && err.notFound && i + 1 < places.length) continue;
      if (err instanceof DownloadError && err.notFound && places.length > 1) {
        const network = places.some((pl) => hasScheme(pl) && !pl.startsWith('file:'));
        throw new SourceError({ source: redactUrl(source), tried: shown, reason: 'not found at any of these places', notFound: true, network });
      }
      throw err;
    }
    await fsp.rm(`${staged}.part.source`, { force: true });
    const pinned = isPinned(opts);
    // A mirror is trusted to deliver bytes, not to say which file they are: a checksum it declares
    // only shows that it sent what it meant to send.
    const mirrored = resolved !== source && mirrorSetting(source, settings) !== undefined;
    const declared = mirrored ? undefined : r.declaredSha256;
    if (!pinned && !declared) {
      throw new SourceError({
        source: redactUrl(source), tried: [redactUrl(resolved)], reason: unverifiedReason(source, resolved, r.sha256, settings), notFound: false, network: false,
      });
    }
    await opts.verify?.(staged);
    await fsp.rename(staged, file);
    await fsp.rmdir(path.dirname(staged)).catch(() => undefined); // kept while it holds another partial download
    const entry: ManifestFile = { source: redactUrl(source), size: r.bytes, sha256: r.sha256, sha1: r.sha1, time: new Date().toISOString() };
    if (resolved !== source) entry.resolved = redactUrl(resolved);
    if (declared) entry.declaredSha256 = declared;
    if (r.etag) entry.etag = r.etag;
    entry.verified = pinned ? 'pinned' : 'declared';
    await recordFile(opts.name, opts.fileName, entry, settings);
    return { path: file, fromCache: false, entry, verified: entry.verified };
  }
  throw new SourceError({ source: redactUrl(source), tried: [], reason: 'no place to fetch it from', notFound: true, network: false });
}

/**
 * Thrown by a `verify` callback when the file itself is good (its checksum matched, it parsed) but what
 * is made from it failed (an export, a check in ONNX Runtime): a cached copy is kept rather than deleted
 * and downloaded again, since a new download would bring the same bytes.
 */
export class KeepFileError extends UserError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = 'KeepFileError';
  }
}

/**
 * For `.catch()` on the steps after a file has passed (checksums, names, shapes): a UserError there is
 * zoo's export or the runtime's, not the file's, so it becomes a KeepFileError and the file stays cached.
 */
export function keepFile(err: unknown): never {
  if (err instanceof UserError && !(err instanceof KeepFileError)) throw new KeepFileError(err.message, { cause: err });
  throw err;
}

/** A source's failure, already in its final form. */
class SourceError extends UserError {
  constructor(readonly failure: SourceFailure) {
    super(describeFailure(failure));
  }
}

function toFailure(source: string, places: string[], err: UserError): SourceFailure {
  if (err instanceof SourceError) return err.failure;
  const tried = places.map(redactUrl);
  if (err instanceof DownloadError) {
    // The error names the place it failed at; say it once, as the source or the place tried.
    const where = err.url === redactUrl(source) ? '' : `${err.url}: `;
    const network = err.kind === 'transfer' && hasScheme(err.url) && !err.url.startsWith('file:');
    return { source: redactUrl(source), tried, reason: `${tried.length > 1 ? where : ''}${err.reason}`, notFound: err.notFound, network };
  }
  return { source: redactUrl(source), tried, reason: err.message, notFound: false, network: false };
}

async function fetchFromSources(opts: FetchFileOptions, file: string, settings: HubSettings): Promise<FetchedFile> {
  const failures: SourceFailure[] = [];
  const staged = path.join(path.dirname(file), INCOMING, opts.fileName);
  for (const source of opts.sources) {
    const places = await resolveSource(source, opts.fileName, settings);
    try {
      return await fetchOneSource(opts, source, places, file, settings);
    } catch (err) {
      // An abort keeps the partial download for a later resume; any other failure leaves nothing.
      const aborted = opts.signal?.aborted ?? false;
      await removeStaged(staged, aborted);
      // An abort or a bug stops here; a failed source hands over to the next one.
      if (aborted || !(err instanceof UserError)) throw err;
      failures.push(toFailure(source, places, err));
    }
  }
  await pruneModelDir(opts.name, settings);
  throw new FetchError(`${opts.name}/${opts.fileName}`, failures);
}

async function fetchLocked(opts: FetchFileOptions, file: string, settings: HubSettings): Promise<FetchedFile> {
  if (!opts.force) {
    // Another process may have fetched it while this one waited for the lock.
    const check = await usableCached(opts, settings);
    let state: CacheCheck = check;
    if (check.state === 'ok') {
      try {
        await opts.verify?.(file);
        return { path: file, fromCache: true, entry: check.entry, verified: isPinned(opts) ? 'pinned' : 'declared' };
      } catch (err) {
        // The file passed and what was made of it failed: another download would bring the same bytes.
        if (err instanceof KeepFileError) throw err;
        if (!(err instanceof UserError)) throw err;
        state = { state: 'bad', reason: err.message };
      }
    }
    // Offline, nothing is deleted: the copy may be one the user put there, and nothing could replace it.
    if (settings.offline) throw offlineError(opts, file, state, settings);
    if (state.state === 'bad') {
      await forgetCachedFile(opts.name, opts.fileName, settings);
      opts.log?.(`${opts.name}/${opts.fileName}: the cached copy was removed (${state.reason}); fetching it again`);
    }
  } else if (settings.offline) {
    throw new UserError(`offline mode (ZOO_OFFLINE): cannot download ${opts.name}/${opts.fileName} again; unset ZOO_OFFLINE to force a download`);
  }
  return fetchFromSources(opts, file, settings);
}

/**
 * The verified file `<cache>/<name>/<fileName>`, fetched from the first source that delivers a good copy
 * unless the cache already has one (or `force` is set). In offline mode only the cache is used, and a
 * missing file is a `UserError` that lists where it would come from. A `FetchError` lists each source's
 * failure once.
 */
export async function fetchFile(opts: FetchFileOptions): Promise<FetchedFile> {
  const settings = opts.settings ?? hubSettings();
  return inCache(settings, () => fetchFileIn(opts, settings));
}

async function fetchFileIn(opts: FetchFileOptions, settings: HubSettings): Promise<FetchedFile> {
  checkName('file name', opts.fileName);
  const file = path.join(modelDir(opts.name, settings), opts.fileName);
  if (!opts.force && !opts.verify && !opts.lockHeld) {
    // The common case without waiting for the lock: a good copy is already there.
    const first = await usableCached(opts, settings);
    if (first.state === 'ok') return { path: file, fromCache: true, entry: first.entry, verified: isPinned(opts) ? 'pinned' : 'declared' };
    if (settings.offline && first.state === 'missing') throw offlineError(opts, file, first, settings);
  }
  if (opts.lockHeld) return fetchLocked(opts, file, settings);
  return withModelLock(opts.name, () => fetchLocked(opts, file, settings), settings, { ...opts.lock, signal: opts.signal });
}

/** Stream a progress printer writes to: stderr, or anything with `write` (tests). */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** An `onProgress` callback that draws progress; call `done()` when the transfer ends. */
export interface ProgressPrinter {
  (p: DownloadProgress): void;
  done(): void;
}

const MB = 1e6;
const TTY_REDRAW_MS = 100;
const PLAIN_UNKNOWN_TOTAL_MS = 10_000;

function describeProgress(p: DownloadProgress, rate: number | undefined): { amount: string; speed: string; pct: number | undefined } {
  const pct = p.total ? Math.min(100, (100 * p.received) / p.total) : undefined;
  const amount = p.total === undefined
    ? `${(p.received / MB).toFixed(1)} MB`
    : `${(p.received / MB).toFixed(1)}/${(p.total / MB).toFixed(1)} MB`;
  const eta = rate && p.total !== undefined ? formatDuration((p.total - p.received) / rate) : '--:--';
  const speed = rate === undefined ? '-- MB/s' : `${(rate / MB).toFixed(1)} MB/s ETA ${eta}`;
  return { amount, speed, pct };
}

/**
 * Progress for one transfer: on a TTY a single redrawn line with a bar, bytes, total, MB/s and ETA;
 * otherwise a plain line every ~10% (every 10 s when the total is unknown), so logs stay short.
 * Speed counts only bytes moved by this transfer, not resumed ones.
 */
export function progressPrinter(
  label: string,
  stream: ProgressStream = process.stderr,
  clock: () => number = () => performance.now(),
): ProgressPrinter {
  let start: { t: number; bytes: number } | undefined;
  let latest: DownloadProgress | undefined;
  let lastDraw = -Infinity;
  let lastDecile = -1;
  let open = false;
  let finished = false;

  const rate = (now: number): number | undefined => {
    const seconds = (now - start!.t) / 1000;
    return seconds >= 0.05 ? (latest!.received - start!.bytes) / seconds : undefined;
  };
  const drawBar = (now: number): void => {
    const { amount, speed, pct } = describeProgress(latest!, rate(now));
    const text = `${pct === undefined ? '' : `${pct.toFixed(0).padStart(3)}% `}${amount} ${speed}`;
    const room = (stream.columns ?? 80) - label.length - text.length - 5;
    const width = Math.max(0, Math.min(30, room));
    const filled = pct === undefined ? 0 : Math.round((pct / 100) * width);
    const bar = width > 0 ? ` [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]` : '';
    stream.write(`\r${label}${bar} ${text}\x1b[K`);
    open = true;
  };
  const printLine = (now: number): void => {
    const { amount, speed, pct } = describeProgress(latest!, rate(now));
    stream.write(`${label}: ${amount}${pct === undefined ? '' : ` (${pct.toFixed(0)}%)`} ${speed}\n`);
  };
  const finish = (): void => {
    if (open) stream.write('\n');
    open = false;
    finished = true;
  };

  const onProgress = (p: DownloadProgress): void => {
    const now = clock();
    latest = p;
    start ??= { t: now, bytes: p.received };
    const complete = p.total !== undefined && p.received >= p.total;
    if (stream.isTTY) {
      if (complete || now - lastDraw >= TTY_REDRAW_MS) {
        drawBar(now);
        lastDraw = now;
      }
      if (complete) finish();
      return;
    }
    const decile = p.total ? Math.floor((10 * p.received) / p.total) : -1;
    const due = p.total ? decile > lastDecile : now - lastDraw >= PLAIN_UNKNOWN_TOTAL_MS;
    if (due) {
      printLine(now);
      lastDraw = now;
      lastDecile = decile;
    }
    if (complete) finished = true;
  };
  return Object.assign(onProgress, {
    done(): void {
      if (finished || latest === undefined) return;
      if (stream.isTTY) {
        drawBar(clock());
        finish();
      } else {
        printLine(clock());
        finished = true;
      }
    },
  });
}

/** Re-exported so callers of the cache need one import for the lock's waiting callback. */
export type { LockHolder };
