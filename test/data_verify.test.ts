/**
 * The check of an image-file data set before a long job: what the header check finds and what only a
 * full decode finds, the error that names the files, and in-memory sets that have nothing to check.
 */
import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { verifyDataset, verifyImageFiles } from '../src/data/verify.js';
import { inMemoryDataset, type ImageDataset } from '../src/data/dataset.js';
import { UserError } from '../src/errors.js';

let root = '';
const files: Record<'good' | 'truncated' | 'junk' | 'empty', string> = { good: '', truncated: '', junk: '', empty: '' };

test.before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'zoo-verify-'));
  await mkdir(root, { recursive: true });
  const px = Buffer.alloc(48 * 40 * 3, 0).map((_, i) => (i * 7) % 256);
  const jpeg = await sharp(px, { raw: { width: 48, height: 40, channels: 3 } }).jpeg().toBuffer();
  files.good = path.join(root, 'good.jpg');
  files.truncated = path.join(root, 'truncated.jpg');
  files.junk = path.join(root, 'junk.jpg');
  files.empty = path.join(root, 'empty.jpg');
  await writeFile(files.good, jpeg);
  // Cut after the header: the format and size still read, the pixels do not.
  await writeFile(files.truncated, jpeg.subarray(0, Math.floor(jpeg.length * 0.6)));
  await writeFile(files.junk, 'an HTML page saved with a .jpg name');
  await writeFile(files.empty, '');
});
test.after.always(async () => {
  await rm(root, { recursive: true, force: true });
});

const dataset = (list: string[]): ImageDataset => ({ name: 'set', classes: ['a', 'b'], labels: Int32Array.from(list, (_, i) => i % 2), source: { kind: 'files', files: list } });

test('the header check finds non-images and empty files cheaply; only a full decode finds a truncated JPEG', async (t) => {
  const all = [files.good, files.truncated, files.junk, files.empty];
  const header = await verifyImageFiles(all, { depth: 'header' });
  t.deepEqual(header.map((b) => b.file), [files.junk, files.empty]);
  const decode = await verifyImageFiles(all, { depth: 'decode' });
  t.deepEqual(decode.map((b) => b.file), [files.truncated, files.junk, files.empty]);
  for (const b of decode) {
    t.true(b.message.includes(b.file), b.message);
    t.false(b.message.includes('\n'), 'one line');
  }
  t.deepEqual(await verifyImageFiles([files.good], { depth: 'decode' }), []);
});

test('a bad split is one UserError naming the first bad files and counting them; it stops after maxBad', async (t) => {
  const list = [files.good, files.truncated, files.good, files.junk];
  const e = await t.throwsAsync(verifyDataset(dataset(list), 'validation', { depth: 'decode' }), { instanceOf: UserError });
  t.regex(e!.message, /^2 of 4 validation images cannot be decoded: cannot decode image .*truncated\.jpg: .*; cannot decode image .*junk\.jpg: .*Replace or remove them/);
  t.false(e!.message.includes('\n'));
  const many = Array.from({ length: 50 }, () => files.junk);
  const progress: number[] = [];
  const m = await t.throwsAsync(verifyDataset(dataset(many), 'training', { depth: 'header', maxBad: 5, onProgress: (done) => progress.push(done) }), { instanceOf: UserError });
  t.regex(m!.message, /^at least 5 of 50 training images cannot be read: .*; and 2 more/);
  t.true(Math.max(...progress) < 50, 'stopped early');
  await t.notThrowsAsync(verifyDataset(dataset([files.good, files.good]), 'validation', { depth: 'decode' }));
});

test('in-memory data sets have nothing to check', async (t) => {
  const mem = inMemoryDataset({ name: 'mem', classes: ['a', 'b'], pixels: new Uint8Array(2 * 4 * 4), labels: [0, 1], height: 4, width: 4 });
  let called = 0;
  await verifyDataset(mem, 'training', { depth: 'decode', onProgress: () => called++ });
  t.is(called, 0);
});
