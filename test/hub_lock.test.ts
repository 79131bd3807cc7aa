import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { UserError } from '../src/errors.js';
import { describeLockHolder, isStale, withLock, type LockHolder } from '../src/hub/lock.js';

let tmp: string;

test.before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'zoo-hub-lock-'));
});

test.after.always(async () => {
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

function holder(pid: number, hostname = os.hostname()): LockHolder {
  return { pid, hostname, time: new Date().toISOString(), token: `t-${pid}` };
}

/** The pid of a process that has exited: spawned here and reaped. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

test('holders run one at a time and a waiter is told who holds the lock', async (t) => {
  const lock = path.join(tmp, 'serial.lock');
  let inside = 0;
  let maxInside = 0;
  const waits: (LockHolder | undefined)[] = [];
  const job = (ms: number) => withLock(lock, async () => {
    inside++;
    maxInside = Math.max(maxInside, inside);
    await delay(ms);
    inside--;
  }, { pollMs: 10, onWait: (h) => waits.push(h) });
  await Promise.all([job(150), job(10), job(10)]);
  t.is(maxInside, 1);
  t.true(waits.length >= 2);
  t.is(waits[0]!.pid, process.pid);
  t.false(fs.existsSync(lock));
});

test('the lock is released when the function throws', async (t) => {
  const lock = path.join(tmp, 'throws.lock');
  await t.throwsAsync(withLock(lock, () => {
    throw new Error('boom');
  }), { message: 'boom' });
  t.false(fs.existsSync(lock));
  t.is(await withLock(lock, () => 42, { timeoutMs: 200 }), 42);
});

test('the lock file records pid, host name and time', async (t) => {
  const lock = path.join(tmp, 'content.lock');
  const seen = await withLock(lock, async () => JSON.parse(await fsp.readFile(lock, 'utf8')) as LockHolder);
  t.is(seen.pid, process.pid);
  t.is(seen.hostname, os.hostname());
  t.false(Number.isNaN(Date.parse(seen.time)));
});

test('a lock left by a dead process on this host is taken over', async (t) => {
  const lock = path.join(tmp, 'dead.lock');
  await fsp.writeFile(lock, JSON.stringify(holder(await deadPid())));
  let waited = false;
  const started = Date.now();
  const r = await withLock(lock, () => 'ran', { timeoutMs: 2000, onWait: () => { waited = true; } });
  t.is(r, 'ran');
  t.false(waited);
  t.true(Date.now() - started < 1000);
  t.false(fs.existsSync(lock));
  t.false(fs.existsSync(`${lock}.break`));
});

test('a lock older than staleMs is taken over, even from another host', async (t) => {
  const lock = path.join(tmp, 'old.lock');
  await fsp.writeFile(lock, JSON.stringify(holder(1, 'some-other-host')));
  const old = new Date(Date.now() - 60_000);
  await fsp.utimes(lock, old, old);
  t.is(await withLock(lock, () => 'ran', { staleMs: 30_000, timeoutMs: 1000 }), 'ran');
});

test('a live holder makes the waiter time out with a clear error', async (t) => {
  const lock = path.join(tmp, 'live.lock');
  await fsp.writeFile(lock, JSON.stringify(holder(process.pid)));
  let ran = false;
  const err = await t.throwsAsync(withLock(lock, () => { ran = true; }, { timeoutMs: 300, pollMs: 20 }), { instanceOf: UserError });
  t.false(ran);
  t.true(err!.message.includes(`pid ${process.pid}`));
  t.true(err!.message.includes(lock));
  t.true(fs.existsSync(lock), 'someone else\'s lock is left alone');
});

test('staleness rule', (t) => {
  const opts = { staleMs: 1000, hostname: 'here', alive: (pid: number) => pid === 10 };
  t.false(isStale({ ...holder(10, 'here') }, 10, opts));
  t.true(isStale({ ...holder(11, 'here') }, 10, opts), 'dead pid on this host');
  t.false(isStale({ ...holder(11, 'there') }, 10, opts), 'cannot check a pid on another host');
  t.true(isStale({ ...holder(10, 'there') }, 5000, opts), 'too old');
  t.false(isStale(undefined, 10, opts), 'being written');
  t.true(isStale(undefined, 2000, opts), 'unreadable and old');
});

test('a wait on a live lock of another host is reported when it starts and again while it lasts, and the timeout says whose lock it is', async (t) => {
  const lock = path.join(tmp, 'foreign.lock');
  const since = new Date(Date.now() - 90_000).toISOString();
  await fsp.writeFile(lock, JSON.stringify({ ...holder(4242, 'build-box-7'), time: since }));
  const reports: { pid: number | undefined; waitedMs: number }[] = [];
  const err = await t.throwsAsync(withLock(lock, () => 'never', {
    timeoutMs: 600, pollMs: 10, reportMs: 100,
    onWait: (h, waitedMs) => reports.push({ pid: h?.pid, waitedMs }),
  }), { instanceOf: UserError });
  t.true(reports.length >= 3, `${reports.length} reports`);
  t.deepEqual(reports[0], { pid: 4242, waitedMs: 0 });
  for (let i = 1; i < reports.length; i++) {
    t.true(reports[i]!.waitedMs > reports[i - 1]!.waitedMs, 'the waited time grows');
    t.is(reports[i]!.pid, 4242);
  }
  t.regex(err!.message, new RegExp(`timed out after 0.6 s waiting for the lock .*foreign\\.lock, held by pid 4242 on another host, 'build-box-7'`));
  t.true(err!.message.includes(`since ${since}, 90 s ago`) || err!.message.includes(`since ${since}, 91 s ago`), err!.message);
  t.true(fs.existsSync(lock));
});

test('describeLockHolder: this host or another, since when and how long ago', (t) => {
  const h = { pid: 7, hostname: 'here', time: '2024-05-01T10:00:00.000Z', token: 'x' };
  const now = Date.parse('2024-05-01T10:05:00.000Z');
  t.is(describeLockHolder(h, { hostname: 'here', now }), 'pid 7 on this host (here) since 2024-05-01T10:00:00.000Z, 5 min ago');
  t.is(
    describeLockHolder({ ...h, hostname: 'there' }, { hostname: 'here', now, staleMs: 600_000 }),
    "pid 7 on another host, 'there' (its lock counts as abandoned once untouched for 10 min) since 2024-05-01T10:00:00.000Z, 5 min ago",
  );
  t.regex(describeLockHolder(undefined), /not written its name/);
});
