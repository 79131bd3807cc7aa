import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { UserError } from '../src/errors.js';
import { isStale, withLock, type LockHolder } from '../src/hub/lock.js';

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
