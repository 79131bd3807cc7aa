/**
 * A cross-process lock on a file, for two `zoo pull`s of one model at once.
 *
 * The lock is a file created with O_EXCL (`wx`) holding the owner's pid, host name and start time.
 * Waiters poll. A lock is stale when its pid is gone on this host or its file has not been touched for
 * `staleMs`; the owner touches it periodically (a heartbeat), so a long download is never mistaken for
 * a crashed one. Breaking a stale lock happens under a second, short-lived `.break` lock and only if the
 * lock file is still the one judged stale, so two waiters cannot both break it and both enter.
 */
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { UserError } from '../errors.js';

/** What a lock file says about its owner. */
export interface LockHolder {
  pid: number;
  hostname: string;
  /** When the lock was taken, ISO 8601. */
  time: string;
  /** Identifies this acquisition, so an owner never removes a lock that was taken over. */
  token: string;
}

/** Options of `withLock`. */
export interface LockOptions {
  /** Longest wait for the lock before a `UserError` (default 30 min). */
  timeoutMs?: number;
  /** A lock whose file is older than this is stale (default 10 min; the owner refreshes it well within). */
  staleMs?: number;
  /** First polling interval; it grows to 1 s (default 50 ms). */
  pollMs?: number;
  /**
   * Called when the lock is found held and the caller starts waiting (`waitedMs` 0), then every
   * `reportMs` while it still waits, so a long wait is never silent.
   */
  onWait?: (holder: LockHolder | undefined, waitedMs: number) => void;
  /** Interval of the `onWait` reports after the first (default 15 s). */
  reportMs?: number;
  signal?: AbortSignal;
}

interface Observed {
  holder: LockHolder | undefined;
  raw: string;
  ino: number;
  mtimeMs: number;
}

const MAX_POLL_MS = 1000;
const DEFAULT_TIMEOUT_MS = 30 * 60_000;
const DEFAULT_STALE_MS = 10 * 60_000;
const DEFAULT_REPORT_MS = 15_000;
const MAX_HEARTBEAT_MS = 30_000;
/** A lock file with no readable owner yet is normal for a moment (created, not yet written). */
const UNREADABLE_GRACE_MS = 5000;
/** A `.break` file is held for microseconds; one this old was left by a crash. */
const BREAKER_STALE_MS = 10_000;

/** Whether process `pid` exists on this host (EPERM means it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Pure staleness rule, given what the lock file says, its age, and whether its pid lives. */
export function isStale(
  holder: LockHolder | undefined,
  ageMs: number,
  options: { staleMs: number; hostname: string; alive: (pid: number) => boolean },
): boolean {
  if (holder === undefined) return ageMs > Math.min(UNREADABLE_GRACE_MS, options.staleMs);
  if (ageMs > options.staleMs) return true;
  return holder.hostname === options.hostname && !options.alive(holder.pid);
}

function parseHolder(raw: string): LockHolder | undefined {
  try {
    const v = JSON.parse(raw) as Partial<LockHolder>;
    if (typeof v.pid === 'number' && typeof v.hostname === 'string' && typeof v.token === 'string') {
      return { pid: v.pid, hostname: v.hostname, time: String(v.time ?? ''), token: v.token };
    }
  } catch {
    // a lock being written, or garbage: judged by age
  }
  return undefined;
}

async function observe(lockPath: string): Promise<Observed | undefined> {
  try {
    const [stat, raw] = await Promise.all([fsp.stat(lockPath), fsp.readFile(lockPath, 'utf8')]);
    return { holder: parseHolder(raw), raw, ino: stat.ino, mtimeMs: stat.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function tryCreate(file: string, content: string): Promise<boolean> {
  try {
    await fsp.writeFile(file, content, { flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/** Removes `lockPath` if it is still exactly the lock that was judged stale; false if someone else is at it. */
async function breakLock(lockPath: string, stale: Observed): Promise<boolean> {
  const breaker = `${lockPath}.break`;
  if (!(await tryCreate(breaker, String(process.pid)))) {
    const stat = await fsp.stat(breaker).catch(() => undefined);
    if (stat && Date.now() - stat.mtimeMs > BREAKER_STALE_MS) await fsp.rm(breaker, { force: true });
    return false;
  }
  try {
    const now = await observe(lockPath);
    if (now && now.ino === stale.ino && now.mtimeMs === stale.mtimeMs && now.raw === stale.raw) {
      await fsp.rm(lockPath, { force: true });
    }
    return true;
  } finally {
    await fsp.rm(breaker, { force: true });
  }
}

/** A duration for messages: 0.4 s, 42 s, 30 min. */
export function formatWait(ms: number): string {
  const s = ms / 1000;
  if (s < 10) return `${+s.toFixed(1)} s`;
  return s < 120 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`;
}

/**
 * Who holds a lock, for messages: `pid 123 on host 'a' (this host) since 2024-05-01T10:00:00Z, 3 min ago`.
 * A lock of another host can only be judged by its age, which the text says.
 */
export function describeLockHolder(
  holder: LockHolder | undefined,
  options: { hostname?: string; now?: number; staleMs?: number } = {},
): string {
  if (!holder) return 'a process that has not written its name into the lock yet';
  const here = options.hostname ?? os.hostname();
  const since = Date.parse(holder.time);
  const age = Number.isNaN(since) ? '' : `, ${formatWait((options.now ?? Date.now()) - since)} ago`;
  const where = holder.hostname === here
    ? `on this host (${holder.hostname})`
    : `on another host, '${holder.hostname}' (its lock counts as abandoned once untouched for ${formatWait(options.staleMs ?? DEFAULT_STALE_MS)})`;
  return `pid ${holder.pid} ${where} since ${holder.time || 'an unknown time'}${age}`;
}

/**
 * A lock file that cannot be made (its directory is a file, or not writable): the user's to fix. Keeps
 * the system error's `code` and `path`, so a caller can say which setting chose the place.
 */
export class LockFileError extends UserError {
  readonly code: string;
  readonly path: string;
  constructor(lockPath: string, err: NodeJS.ErrnoException) {
    super(`cannot create the lock file ${lockPath}: ${err.message}`, { cause: err });
    this.name = 'LockFileError';
    this.code = err.code ?? 'EIO';
    this.path = err.path ?? lockPath;
  }
}

/** Runs a step of making the lock, turning a system error into a LockFileError. */
async function lockStep<T>(lockPath: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (typeof (err as NodeJS.ErrnoException).code === 'string' && !(err instanceof UserError)) throw new LockFileError(lockPath, err as NodeJS.ErrnoException);
    throw err;
  }
}

function timeoutError(lockPath: string, timeoutMs: number, holder: LockHolder | undefined, staleMs: number): UserError {
  return new UserError(
    `timed out after ${formatWait(timeoutMs)} waiting for the lock ${lockPath}, held by ${describeLockHolder(holder, { staleMs })}; ` +
      'if no zoo process is running there, delete the lock file',
  );
}

async function acquire(lockPath: string, holder: LockHolder, options: LockOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  const reportMs = Math.max(1, options.reportMs ?? DEFAULT_REPORT_MS);
  const started = Date.now();
  const deadline = started + timeoutMs;
  const content = `${JSON.stringify(holder)}\n`;
  const hostname = os.hostname();
  let poll = options.pollMs ?? 50;
  let nextReport: number | undefined;
  await lockStep(lockPath, () => fsp.mkdir(path.dirname(lockPath), { recursive: true }));
  let last: Observed | undefined;
  for (;;) {
    options.signal?.throwIfAborted();
    if (Date.now() > deadline) throw timeoutError(lockPath, timeoutMs, last?.holder, staleMs);
    if (await lockStep(lockPath, () => tryCreate(lockPath, content))) return;
    const seen = await lockStep(lockPath, () => observe(lockPath));
    last = seen ?? last;
    const stale = seen !== undefined && isStale(seen.holder, Date.now() - seen.mtimeMs, { staleMs, hostname, alive: pidAlive });
    if (stale && (await breakLock(lockPath, seen))) continue;
    if (seen === undefined) continue; // released between our two looks: try again at once
    const now = Date.now();
    if (nextReport === undefined || now >= nextReport) {
      options.onWait?.(seen.holder, nextReport === undefined ? 0 : now - started);
      nextReport = (nextReport ?? now) + reportMs;
    }
    const left = deadline - now;
    if (left <= 0) throw timeoutError(lockPath, timeoutMs, seen.holder, staleMs);
    await delay(Math.min(poll, left, Math.max(1, nextReport - now)), undefined, { signal: options.signal });
    poll = Math.min(poll * 1.5, MAX_POLL_MS);
  }
}

async function release(lockPath: string, token: string): Promise<void> {
  const seen = await observe(lockPath).catch(() => undefined);
  // After a takeover (we were judged stale) the file belongs to someone else: leave it.
  if (seen?.holder?.token === token) await fsp.rm(lockPath, { force: true });
}

/**
 * Runs `fn` while holding the lock `lockPath`, waiting for it if another process (or another call in
 * this one) holds it. The lock is released when `fn` settles, also when it throws. Throws `UserError`
 * when the wait exceeds `timeoutMs`.
 */
export async function withLock<T>(lockPath: string, fn: () => Promise<T> | T, options: LockOptions = {}): Promise<T> {
  const holder: LockHolder = {
    pid: process.pid,
    hostname: os.hostname(),
    time: new Date().toISOString(),
    token: crypto.randomUUID(),
  };
  await acquire(lockPath, holder, options);
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  const heartbeat = setInterval(() => {
    const now = new Date();
    fsp.utimes(lockPath, now, now).catch(() => undefined);
  }, Math.max(10, Math.min(staleMs / 4, MAX_HEARTBEAT_MS)));
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    await release(lockPath, holder.token);
  }
}
