/**
 * Downloads one file to a path, verified before it lands there.
 *
 * The bytes go to `<dest>.part` with a running sha256 and sha1; an interrupted transfer resumes with a
 * Range request (here or on a later call) and the partial bytes are hashed first, so the digests always
 * cover the whole file. Only a file whose size and checksum match is renamed onto `dest`, so a reader of
 * `dest` never sees a partial or corrupt file. `file://` URLs and local paths are copied the same way.
 *
 * One `.part` file has one writer: callers that may race (two processes pulling one model) hold a lock
 * around the call (see cache.ts).
 *
 * Two clocks bound a transfer: an idle timeout (no bytes for `timeoutMs`) and an overall deadline for
 * the whole file, retries included (`deadlineMs`, by default scaled to the expected size), so a server
 * that sends a byte now and then cannot hold a pull forever. Redirects from a public host are followed
 * only to https URLs on public addresses, checked on the address a name resolves to when connecting.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import { AddressRefusedError, classifyAddress, ipLiteral, isNonPublic, publicOnlyLookup, type LookupFunction } from './net.js';
import { hasScheme } from './settings.js';

/** Checksums a file is expected to have. A sha1 may be a prefix of 8 or more hex digits (GluonCV file names). */
export interface ExpectedDigests {
  sha256?: string;
  sha1?: string;
}

/** Progress of one transfer; `received` counts resumed bytes too. */
export interface DownloadProgress {
  received: number;
  total?: number;
}

/** Options of `download`. */
export interface DownloadOptions {
  /** Pinned checksums; when absent, the host-declared sha256 (if any) is checked instead. */
  expected?: ExpectedDigests;
  /** Expected size in bytes. */
  size?: number;
  /** Retries after the first attempt (default 4). */
  retries?: number;
  /** Idle timeout: the longest wait for the connection or the next bytes (default 30 s). */
  timeoutMs?: number;
  /** Base of the exponential backoff between attempts (default 500 ms). */
  backoffMs?: number;
  /** Overall deadline of the whole file, retries included (default `defaultDeadlineMs` of the expected size). */
  deadlineMs?: number;
  /** Name resolution and the redirect policy. */
  network?: NetworkOptions;
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
}

/** How a download resolves names and which redirects it follows. */
export interface NetworkOptions {
  /** Resolves host names before connecting (default `dns.lookup`); redirect targets' answers are checked. */
  lookup?: LookupFunction;
  /**
   * Whether redirects may go to http: URLs and to loopback, link-local, private or shared addresses.
   * Default: only when the source itself was reached on such an address (a mirror on the LAN).
   */
  allowPrivateRedirects?: boolean;
}

const MINUTE_MS = 60_000;

/**
 * The default overall deadline for one file: 10 minutes plus 10 s per MB (a floor of 100 kB/s), at
 * most 4 hours; 1 hour when the size is not known in advance nor announced by the server.
 */
export function defaultDeadlineMs(bytes: number | undefined): number {
  if (bytes === undefined) return 60 * MINUTE_MS;
  return Math.min(240 * MINUTE_MS, 10 * MINUTE_MS + (bytes / 1e6) * 10_000);
}

/** What was downloaded: the verified file at `path` and its digests. */
export interface DownloadResult {
  path: string;
  bytes: number;
  sha256: string;
  sha1: string;
  /** The sha256 the host declared (Hugging Face's X-Linked-Etag), when it declared one. */
  declaredSha256?: string;
  etag?: string;
}

/** A download that failed for a reason a user can act on; the message names the URL. */
export class DownloadError extends UserError {
  /** The source, with credentials removed. */
  readonly url: string;
  /** The HTTP status, when the failure was one. */
  readonly status: number | undefined;
  /** What went wrong, without the URL. */
  readonly reason: string;
  /** The source has no such file (HTTP 404 or 410, or a missing local file). */
  readonly notFound: boolean;
  /** 'checksum': the bytes arrived and are not the expected ones; 'transfer': they did not arrive. */
  readonly kind: 'transfer' | 'checksum';

  constructor(url: string, reason: string, options: { status?: number; cause?: unknown; notFound?: boolean; kind?: 'transfer' | 'checksum' } = {}) {
    super(`download failed: ${url}: ${reason}`, { cause: options.cause });
    this.name = 'DownloadError';
    this.url = url;
    this.status = options.status;
    this.reason = reason;
    this.notFound = options.notFound ?? (options.status === 404 || options.status === 410);
    this.kind = options.kind ?? 'transfer';
  }
}

const MAX_REDIRECTS = 5;
const MAX_RETRY_AFTER_MS = 30_000;
const MAX_BACKOFF_MS = 30_000;
const WRITE_BATCH = 1 << 20;
const USER_AGENT = 'zoo-hub/0.1 (node)';
const RETRYABLE_STATUS = new Set([408, 429]);
const RETRYABLE_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH',
  'ENETDOWN', 'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET',
]);
const SECRET_PARAM = /token|sig|signature|key|auth|credential|password|secret|policy/i;

/** A failed attempt: retryable ones are tried again after a backoff. */
class AttemptError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly extra: { status?: number; retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
  }
}

/** `url` without user name, password or signed query values, for messages and records. */
export function redactUrl(url: string): string {
  if (!hasScheme(url)) return url;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url.replace(/\/\/[^/@]*@/, '//');
  }
  u.username = '';
  u.password = '';
  for (const key of [...u.searchParams.keys()]) {
    if (SECRET_PARAM.test(key)) u.searchParams.set(key, 'REDACTED');
  }
  return u.href;
}

/** The sha256 carried by an ETag-like header value (quoted, maybe weak), or undefined. */
export function parseDeclaredSha256(value: string | string[] | undefined): string | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  const bare = v.trim().replace(/^W\//i, '').replace(/^"|"$/g, '');
  return /^[0-9a-f]{64}$/i.test(bare) ? bare.toLowerCase() : undefined;
}

/** Seconds or an HTTP date, as milliseconds from now; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const s = value.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

function normalizeExpected(expected: ExpectedDigests | undefined): ExpectedDigests {
  const out: ExpectedDigests = {};
  const sha256 = expected?.sha256?.trim().toLowerCase().replace(/^sha256:/, '');
  const sha1 = expected?.sha1?.trim().toLowerCase().replace(/^sha1:/, '');
  if (sha256) {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new UserError(`expected sha256 must be 64 hex digits, got '${sha256}'`, { exitCode: 2 });
    out.sha256 = sha256;
  }
  if (sha1) {
    if (!/^[0-9a-f]{8,40}$/.test(sha1)) throw new UserError(`expected sha1 must be 8 to 40 hex digits, got '${sha1}'`, { exitCode: 2 });
    out.sha1 = sha1;
  }
  return out;
}

/**
 * Every way `digests` fails to match `expected` (or the declared sha256 when nothing is pinned), as
 * messages that show both digests; empty when the file is good.
 */
export function checksumProblems(
  digests: { sha256: string; sha1: string },
  expected: ExpectedDigests | undefined,
  declaredSha256?: string,
): string[] {
  const want = normalizeExpected(expected);
  const problems: string[] = [];
  if (want.sha256 && want.sha256 !== digests.sha256) problems.push(`sha256 expected ${want.sha256}, got ${digests.sha256}`);
  if (want.sha1 && !digests.sha1.startsWith(want.sha1)) problems.push(`sha1 expected ${want.sha1}, got ${digests.sha1}`);
  if (!want.sha256 && !want.sha1 && declaredSha256 && declaredSha256 !== digests.sha256) {
    problems.push(`sha256 declared by the host ${declaredSha256}, got ${digests.sha256}`);
  }
  return problems;
}

/** The bytes of `<dest>.part` and the digests of exactly those bytes. */
interface PartFile {
  file: string;
  bytes: number;
  sha256: crypto.Hash;
  sha1: crypto.Hash;
  total: number | undefined;
  declaredSha256: string | undefined;
  etag: string | undefined;
  /** Bytes left by an earlier call, which may belong to another version of the file. */
  inherited: boolean;
}

function emptyPartFile(file: string): PartFile {
  return {
    file, bytes: 0, sha256: crypto.createHash('sha256'), sha1: crypto.createHash('sha1'),
    total: undefined, declaredSha256: undefined, etag: undefined, inherited: false,
  };
}

/** Makes the hash state cover what is on disk, hashing an existing partial file as a stream. */
async function adoptPartFile(p: PartFile): Promise<void> {
  const size = (await fsp.stat(p.file).catch(() => undefined))?.size ?? 0;
  if (size === p.bytes) return;
  p.sha256 = crypto.createHash('sha256');
  p.sha1 = crypto.createHash('sha1');
  p.bytes = 0;
  if (size === 0) return;
  for await (const chunk of fs.createReadStream(p.file, { start: 0, end: size - 1, highWaterMark: WRITE_BATCH })) {
    p.sha256.update(chunk as Buffer);
    p.sha1.update(chunk as Buffer);
    p.bytes += (chunk as Buffer).length;
  }
}

async function restartPartFile(p: PartFile): Promise<void> {
  await fsp.rm(p.file, { force: true });
  Object.assign(p, emptyPartFile(p.file), { declaredSha256: p.declaredSha256, etag: undefined });
}

/**
 * Appends a byte stream to the partial file. The digests are updated only after the bytes are written,
 * so an interrupted stream leaves hashes that match the file exactly and the next attempt can resume.
 */
async function appendStream(p: PartFile, body: AsyncIterable<Buffer>, onProgress?: (p: DownloadProgress) => void): Promise<void> {
  const fh = await fsp.open(p.file, p.bytes > 0 ? 'a' : 'w');
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = async (): Promise<void> => {
    if (batchBytes === 0) return;
    const { bytesWritten } = await fh.writev(batch);
    if (bytesWritten !== batchBytes) throw new AttemptError(`short write to ${p.file} (disk full?)`, false);
    for (const b of batch) {
      p.sha256.update(b);
      p.sha1.update(b);
    }
    p.bytes += batchBytes;
    batch = [];
    batchBytes = 0;
    onProgress?.({ received: p.bytes, total: p.total });
  };
  try {
    try {
      for await (const chunk of body) {
        if (p.total !== undefined && p.bytes + batchBytes + chunk.length > p.total) {
          throw new AttemptError(`the source sent more than the ${p.total} bytes it announced`, false);
        }
        batch.push(chunk);
        batchBytes += chunk.length;
        if (batchBytes >= WRITE_BATCH) await flush();
      }
    } finally {
      // Keep what did arrive: the next attempt resumes after it.
      await flush();
    }
  } finally {
    await fh.close();
  }
}

interface AttemptContext {
  url: string;
  shown: string;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  timedOut: boolean;
  network: NetworkOptions;
  /** Redirects may lead anywhere http(s): decided from where the source itself was reached. */
  privateOk: boolean;
  /** The overall deadline: start time, allowance, whether it still scales with an announced size. */
  startedAt: number;
  deadlineMs: number;
  scaleWithTotal: boolean;
  deadlineHit: boolean;
  deadlineTimer: NodeJS.Timeout | undefined;
  req: http.ClientRequest | undefined;
}

function armDeadline(ctx: AttemptContext): void {
  clearTimeout(ctx.deadlineTimer);
  ctx.deadlineTimer = setTimeout(() => {
    ctx.deadlineHit = true;
    ctx.req?.destroy(new AttemptError('deadline', false));
  }, Math.max(0, ctx.startedAt + ctx.deadlineMs - Date.now()));
}

function deadlineError(ctx: AttemptContext, cause?: unknown): DownloadError {
  return new DownloadError(
    ctx.shown,
    `not finished within ${+(ctx.deadlineMs / 1000).toFixed(1)} s (the download deadline; set ZOO_DOWNLOAD_TIMEOUT=<seconds> to change it)`,
    { cause },
  );
}

/** A response and the address its connection was made to (undefined when it was never seen). */
interface Answer {
  res: http.IncomingMessage;
  address: string | undefined;
}

function requestOnce(url: string, headers: Record<string, string>, ctx: AttemptContext, checkAddress: boolean): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const client = url.startsWith('https:') ? https : http;
    // A fresh connection per request (agent: false): a pooled socket would skip the address check.
    const lookup = checkAddress ? publicOnlyLookup(ctx.network.lookup) : ctx.network.lookup;
    // The peer's address is noted when the connection is made: a server that resets the connection
    // right after its answer leaves the response's socket without one.
    let address: string | undefined;
    const req = client.get(url, { headers, signal: ctx.signal, agent: false, ...(lookup ? { lookup } : {}) }, (res) => {
      resolve({ res, address: address ?? res.socket?.remoteAddress });
    });
    req.on('socket', (socket) => {
      if (socket.remoteAddress) address = socket.remoteAddress;
      else socket.once('connect', () => { address = socket.remoteAddress ?? address; });
    });
    ctx.req = req;
    req.setTimeout(ctx.timeoutMs, () => {
      // After a long synchronous stretch the event loop runs timers before it reads sockets: look again
      // once pending reads are done, and only give up if nothing arrived (a read re-arms the timer).
      const seen = req.socket?.bytesRead ?? 0;
      setImmediate(() => {
        if ((req.socket?.bytesRead ?? 0) !== seen || req.destroyed) return;
        ctx.timedOut = true;
        req.destroy(new AttemptError(`no data for ${ctx.timeoutMs / 1000} s (idle timeout)`, true));
      });
    });
    req.on('error', reject);
  });
}

function isRedirect(status: number | undefined): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/**
 * Where a redirect from a public host may not go: anything but https, and IP literals that are not
 * public (names are checked when they resolve, in the connection's lookup).
 */
function redirectRefusal(next: URL): string | undefined {
  if (next.protocol !== 'https:') return 'only https redirects are followed from a public host';
  const literal = ipLiteral(next.hostname);
  if (literal !== undefined && isNonPublic(literal)) {
    return `${literal} is a ${classifyAddress(literal)} address, and a redirect from a public host may not lead there`;
  }
  return undefined;
}

/**
 * Whether a source reached on `address` is inside the machine's own network (loopback, private, link-local
 * or shared), so that its redirects may stay there. An address not seen, or not an IP address, counts as
 * public: the policy fails closed.
 */
export function reachedInside(address: string | undefined): boolean {
  if (address === undefined) return false;
  const c = classifyAddress(address);
  return c !== 'public' && c !== 'invalid';
}

/** Sends the request and follows redirects, noting the checksum a host declares on any hop. */
async function openResponse(headers: Record<string, string>, p: PartFile, ctx: AttemptContext): Promise<http.IncomingMessage> {
  let current = ctx.url;
  let linked: string | undefined;
  let etag: string | undefined;
  for (let hop = 0; ; hop++) {
    const { res, address } = await requestOnce(current, headers, ctx, hop > 0 && !ctx.privateOk);
    if (hop === 0) {
      // A source reached on a loopback or private address (a LAN mirror, a test server) may redirect
      // within that network; one reached on a public address, or on one never seen, may not.
      ctx.privateOk = ctx.network.allowPrivateRedirects ?? reachedInside(address);
    }
    // The hub puts the LFS sha256 on its own 302 (X-Linked-Etag), which outranks any later hop's ETag
    // (a CDN's ETag is usually an MD5 or something opaque, and then ignored as not 64 hex digits).
    linked ??= parseDeclaredSha256(res.headers['x-linked-etag']);
    etag = parseDeclaredSha256(res.headers.etag) ?? etag;
    p.declaredSha256 = linked ?? etag ?? p.declaredSha256;
    if (!isRedirect(res.statusCode) || !res.headers.location) return res;
    res.resume();
    if (hop >= MAX_REDIRECTS) throw new AttemptError(`more than ${MAX_REDIRECTS} redirects`, false);
    const next = new URL(res.headers.location, current);
    if (next.protocol !== 'http:' && next.protocol !== 'https:') {
      throw new AttemptError(`redirect to an unsupported URL ${redactUrl(next.href)}`, false);
    }
    if (current.startsWith('https:') && next.protocol === 'http:') {
      throw new AttemptError(`refusing a redirect from https to http (${redactUrl(next.href)})`, false);
    }
    const refusal = ctx.privateOk ? undefined : redirectRefusal(next);
    if (refusal) throw new AttemptError(`refusing a redirect to ${redactUrl(next.href)}: ${refusal}`, false);
    current = next.href;
  }
}

function statusError(res: http.IncomingMessage): AttemptError {
  const status = res.statusCode ?? 0;
  const text = `HTTP ${status} ${res.statusMessage ?? ''}`.trim();
  res.resume();
  const retryAfterMs = parseRetryAfter(res.headers['retry-after']);
  if (status >= 500 || RETRYABLE_STATUS.has(status)) {
    if (retryAfterMs !== undefined && retryAfterMs > MAX_RETRY_AFTER_MS) {
      return new AttemptError(`${text} (the server asks to retry after ${Math.round(retryAfterMs / 1000)} s)`, false, { status });
    }
    return new AttemptError(text, true, { status, retryAfterMs });
  }
  return new AttemptError(text, false, { status });
}

/** Parses `bytes start-end/total` (total may be '*'). */
function parseContentRange(value: string | undefined): { start: number; total: number | undefined } | undefined {
  const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(value?.trim() ?? '');
  if (!m) return undefined;
  return { start: Number(m[1]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

function contentLength(res: http.IncomingMessage): number | undefined {
  const v = res.headers['content-length'];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/** Decides from the status line whether to append, start over, or stop: true when the file is complete. */
async function acceptResponse(res: http.IncomingMessage, p: PartFile): Promise<boolean> {
  const status = res.statusCode ?? 0;
  if (status === 206) {
    const range = parseContentRange(res.headers['content-range']);
    if (!range || range.start !== p.bytes) {
      res.destroy();
      await restartPartFile(p);
      throw new AttemptError(`the server answered a range request with another range (${res.headers['content-range'] ?? 'none'})`, true);
    }
    const length = contentLength(res);
    p.total = range.total ?? (length === undefined ? undefined : p.bytes + length);
    return false;
  }
  if (status === 200) {
    // A 200 to a range request is the whole file (no range support, or If-Range saw a new version).
    if (p.bytes > 0) await restartPartFile(p);
    p.total = contentLength(res);
    p.etag = typeof res.headers.etag === 'string' ? res.headers.etag : undefined;
    return false;
  }
  if (status === 416 && p.bytes > 0) {
    res.resume();
    const total = /\/(\d+)$/.exec(res.headers['content-range'] ?? '')?.[1];
    if (total !== undefined && Number(total) === p.bytes) {
      p.total = p.bytes;
      return true;
    }
    await restartPartFile(p);
    throw new AttemptError('the partial file is longer than the file on the server', true);
  }
  throw statusError(res);
}

async function attemptHttp(p: PartFile, options: DownloadOptions, ctx: AttemptContext): Promise<void> {
  const headers: Record<string, string> = { 'user-agent': USER_AGENT, 'accept-encoding': 'identity' };
  if (p.bytes > 0) {
    headers.range = `bytes=${p.bytes}-`;
    // Resume only the same version: a server that sees another ETag answers 200 with the whole file.
    if (p.etag && !p.etag.startsWith('W/')) headers['if-range'] = p.etag;
  }
  ctx.timedOut = false;
  if (ctx.deadlineHit) throw new AttemptError('deadline', false);
  const res = await openResponse(headers, p, ctx);
  if (await acceptResponse(res, p)) return;
  if (ctx.scaleWithTotal && p.total !== undefined) {
    // The deadline scales with the size the server announces when nothing said it in advance.
    ctx.scaleWithTotal = false;
    ctx.deadlineMs = defaultDeadlineMs(p.total);
    armDeadline(ctx);
  }
  if (options.size !== undefined && p.total !== undefined && p.total !== options.size) {
    res.destroy();
    await restartPartFile(p);
    throw new AttemptError(`size mismatch: expected ${options.size} bytes, the server has ${p.total}`, false);
  }
  await appendStream(p, res, options.onProgress);
  if (p.total !== undefined && p.bytes < p.total) {
    throw new AttemptError(`truncated body: ${p.bytes} of ${p.total} bytes`, true);
  }
}

/** Whether to try again after `err`, and after how long. */
function retryDelay(err: unknown, attempt: number, backoffMs: number): number | undefined {
  const code = (err as { code?: string }).code;
  const retryable = err instanceof AttemptError ? err.retryable
    : code !== undefined && (RETRYABLE_CODES.has(code) || code.startsWith('HPE_'));
  if (!retryable) return undefined;
  if (err instanceof AttemptError && err.extra.retryAfterMs !== undefined) return err.extra.retryAfterMs;
  const jitter = 0.5 + Math.random();
  return Math.min(MAX_BACKOFF_MS, backoffMs * 2 ** attempt * jitter);
}

function describe(err: unknown, idle?: { timeoutMs: number }): string {
  if (idle) return `no data for ${idle.timeoutMs / 1000} s (idle timeout)`;
  if (err instanceof AttemptError) return err.message;
  if (err instanceof AddressRefusedError) {
    return `refusing a redirect to ${err.host}: it resolves to ${err.address}, a ${err.addressClass} address, ` +
      'and a redirect from a public host may not lead there';
  }
  const e = err as { code?: string; message?: string };
  if (e.code === 'ECONNRESET' || e.message === 'aborted') return 'connection lost (ECONNRESET)';
  if (e.code === 'ECONNREFUSED') return 'connection refused (ECONNREFUSED)';
  if (e.code === 'ENOTFOUND') return 'host not found (ENOTFOUND)';
  return e.code ? `${e.message ?? 'error'} (${e.code})` : String(e.message ?? err);
}

/** The error an aborted download throws: the signal's reason when it is an Error, else an AbortError. */
function abortReason(signal: AbortSignal): Error {
  // The default reason is a DOMException, which error tooling does not treat as a native Error:
  // wrap it the way Node's own AbortError looks.
  if (signal.reason instanceof Error && !(signal.reason instanceof DOMException)) return signal.reason;
  return Object.assign(new Error('The download was aborted', { cause: signal.reason }), { name: 'AbortError', code: 'ABORT_ERR' });
}

/** Fetches over HTTP(S) into the partial file, with resume and retries. */
async function fetchHttp(p: PartFile, options: DownloadOptions, ctx: AttemptContext): Promise<void> {
  const retries = options.retries ?? 4;
  const backoffMs = options.backoffMs ?? 500;
  for (let attempt = 0; ; attempt++) {
    try {
      await attemptHttp(p, options, ctx);
      return;
    } catch (err) {
      if (ctx.signal?.aborted) throw abortReason(ctx.signal);
      if (ctx.deadlineHit) throw deadlineError(ctx, err);
      // A failure with neither our classification nor a system error code is a bug: let it surface.
      if (!(err instanceof AttemptError) && typeof (err as { code?: unknown }).code !== 'string' && !ctx.timedOut) throw err;
      const wait = retryDelay(ctx.timedOut ? new AttemptError('idle', true) : err, attempt, backoffMs);
      const status = err instanceof AttemptError ? err.extra.status : undefined;
      if (wait === undefined || attempt >= retries) {
        const suffix = wait === undefined || attempt === 0 ? '' : ` (gave up after ${attempt + 1} attempts)`;
        throw new DownloadError(ctx.shown, describe(err, ctx.timedOut ? ctx : undefined) + suffix, { status, cause: err });
      }
      const left = ctx.startedAt + ctx.deadlineMs - Date.now();
      if (left <= 0) throw deadlineError(ctx, err);
      await delay(Math.min(wait, left), undefined, { signal: ctx.signal }).catch(() => {
        throw abortReason(ctx.signal!);
      });
      if (ctx.deadlineHit) throw deadlineError(ctx, err);
      await adoptPartFile(p);
    }
  }
}

/** Copies a local file into the partial file (no resume: a local copy is cheap to redo). */
async function copyLocal(file: string, p: PartFile, options: DownloadOptions, shown: string): Promise<void> {
  const stat = await fsp.stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new DownloadError(shown, err.code === 'ENOENT' ? 'no such file' : `${err.message}`, { cause: err, notFound: err.code === 'ENOENT' });
  });
  if (!stat.isFile()) throw new DownloadError(shown, 'not a regular file');
  if (options.size !== undefined && stat.size !== options.size) {
    throw new DownloadError(shown, `size mismatch: expected ${options.size} bytes, the file has ${stat.size}`, { kind: 'checksum' });
  }
  await restartPartFile(p);
  p.total = stat.size;
  const stream = fs.createReadStream(file, { highWaterMark: WRITE_BATCH, signal: options.signal });
  try {
    await appendStream(p, stream, options.onProgress);
  } catch (err) {
    if (options.signal?.aborted) throw abortReason(options.signal);
    throw new DownloadError(shown, describe(err), { cause: err });
  }
}

/** Local path of a `file://` URL or a plain path; undefined for other URLs. */
function localSource(source: string): string | undefined {
  if (source.startsWith('file://')) return fileURLToPath(source);
  return hasScheme(source) ? undefined : path.resolve(source);
}

async function fsyncFile(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** Checks size and checksum of the partial file; deletes it and throws when they do not match. */
async function verifyPartial(p: PartFile, options: DownloadOptions, shown: string): Promise<{ sha256: string; sha1: string }> {
  const digests = { sha256: p.sha256.digest('hex'), sha1: p.sha1.digest('hex') };
  const problems: string[] = [];
  if (options.size !== undefined && p.bytes !== options.size) problems.push(`size expected ${options.size} bytes, got ${p.bytes}`);
  problems.push(...checksumProblems(digests, options.expected, p.declaredSha256));
  if (problems.length > 0) {
    await fsp.rm(p.file, { force: true });
    throw new DownloadError(shown, `checksum mismatch: ${problems.join('; ')}; the download was deleted`, { kind: 'checksum' });
  }
  return digests;
}

async function fetchInto(source: string, p: PartFile, options: DownloadOptions, shown: string): Promise<void> {
  const local = localSource(source);
  if (local !== undefined) return copyLocal(local, p, options, shown);
  if (!/^https?:\/\//i.test(source)) throw new DownloadError(shown, 'unsupported URL scheme (use http, https, file or a path)');
  const ctx: AttemptContext = {
    url: source, shown, timeoutMs: options.timeoutMs ?? 30_000, signal: options.signal, timedOut: false,
    network: options.network ?? {}, privateOk: false,
    startedAt: Date.now(),
    deadlineMs: options.deadlineMs ?? defaultDeadlineMs(options.size),
    scaleWithTotal: options.deadlineMs === undefined && options.size === undefined,
    deadlineHit: false, deadlineTimer: undefined, req: undefined,
  };
  armDeadline(ctx);
  try {
    await fetchHttp(p, options, ctx);
  } finally {
    clearTimeout(ctx.deadlineTimer);
  }
}

/**
 * Downloads `url` (http, https, file:// or a local path) to `destPath`, verified.
 * Throws `DownloadError` (a `UserError`) naming the URL for HTTP errors, exhausted retries and checksum
 * or size mismatches; nothing is left at `destPath` then. An aborted download keeps its `.part` file
 * for a later resume and throws an `AbortError` (or the signal's reason, when that is an Error).
 */
export async function download(url: string, destPath: string, options: DownloadOptions = {}): Promise<DownloadResult> {
  normalizeExpected(options.expected); // reject a malformed pin before any transfer
  const shown = redactUrl(url);
  await fsp.mkdir(path.dirname(destPath), { recursive: true });
  const p = emptyPartFile(`${destPath}.part`);
  if (localSource(url) === undefined) {
    await adoptPartFile(p);
    p.inherited = p.bytes > 0;
  }
  await fetchInto(url, p, options, shown);
  let digests: { sha256: string; sha1: string };
  try {
    digests = await verifyPartial(p, options, shown);
  } catch (err) {
    // Bytes left by an earlier call may be another version of the file: start over once before failing.
    if (!p.inherited) throw err;
    Object.assign(p, emptyPartFile(p.file));
    await fetchInto(url, p, options, shown);
    digests = await verifyPartial(p, options, shown);
  }
  await fsyncFile(p.file);
  await fsp.rename(p.file, destPath);
  const result: DownloadResult = { path: destPath, bytes: p.bytes, ...digests };
  if (p.declaredSha256) result.declaredSha256 = p.declaredSha256;
  if (p.etag) result.etag = p.etag;
  return result;
}
