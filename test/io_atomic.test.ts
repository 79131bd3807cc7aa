/**
 * Atomic writes refuse what is not ours to replace: device nodes, FIFOs, directories and (unless asked)
 * symbolic links; they keep an existing file's permissions and leave no temporary file behind.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../src/io/atomic.js';
import { UserError } from '../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-atomic-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('writes a new file and replaces a regular one, keeping its mode', async (t) => {
  const f = join(dir, 'a', 'new.bin');
  await writeFileAtomic(f, new Uint8Array([1, 2, 3]));
  t.deepEqual([...readFileSync(f)], [1, 2, 3]);
  chmodSync(f, 0o600);
  await writeFileAtomic(f, 'text');
  t.is(readFileSync(f, 'utf8'), 'text');
  t.is(statSync(f).mode & 0o777, 0o600);
  await writeFileAtomic(f, [new Uint8Array([7]), new Uint8Array([8, 9])]);
  t.deepEqual([...readFileSync(f)], [7, 8, 9]);
  t.deepEqual(readdirSync(join(dir, 'a')), ['new.bin'], 'no temporary file is left');
});

test('a symbolic link is refused unless followSymlinks is given; then the link stays and its target changes', async (t) => {
  const real = join(dir, 'real.txt');
  writeFileSync(real, 'old');
  const link = join(dir, 'link.txt');
  symlinkSync(real, link);
  const e = await t.throwsAsync(writeFileAtomic(link, 'new'), { instanceOf: UserError });
  t.regex(e!.message, /symbolic link/);
  t.is(readFileSync(real, 'utf8'), 'old');
  await writeFileAtomic(link, 'new', { followSymlinks: true });
  t.true(lstatSync(link).isSymbolicLink());
  t.is(readFileSync(real, 'utf8'), 'new');
  // A dangling link, followed, creates the file it names.
  const dangling = join(dir, 'dangling.txt');
  symlinkSync(join(dir, 'made-by-link.txt'), dangling);
  await writeFileAtomic(dangling, 'x', { followSymlinks: true });
  t.is(readFileSync(join(dir, 'made-by-link.txt'), 'utf8'), 'x');
});

test('device nodes, FIFOs and directories are refused and left as they are', async (t) => {
  const e = await t.throwsAsync(writeFileAtomic('/dev/null', 'x'), { instanceOf: UserError });
  t.regex(e!.message, /\/dev\/null' is a device/);
  t.true(statSync('/dev/null').isCharacterDevice());
  const d = join(dir, 'adir');
  mkdirSync(d);
  await t.throwsAsync(writeFileAtomic(d, 'x'), { message: /is a directory/ });
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  await t.throwsAsync(writeFileAtomic(fifo, 'x'), { message: /is a FIFO/ });
  t.true(lstatSync(fifo).isFIFO());
  // A link to a device is refused even when links are followed.
  const toDev = join(dir, 'to-null');
  symlinkSync('/dev/null', toDev);
  await t.throwsAsync(writeFileAtomic(toDev, 'x', { followSymlinks: true }), { message: /is a device/ });
});
