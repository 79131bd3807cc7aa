import test from 'ava';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { embeddedFashionDir, findPackageDir, loadEmbeddedFashion } from '../src/data/embedded.js';
import { encodeIdx, FASHION_MNIST_CLASSES, gunzipIdx, loadFashionMnist, parseIdx, readIdx, readIdxSplit } from '../src/data/idx.js';
import { UserError } from '../src/errors.js';

let dir = '';
test.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'zoo-idx-'));
});
test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

function header(type: number, dims: number[]): Uint8Array {
  const h = new Uint8Array(4 + 4 * dims.length);
  h[2] = type;
  h[3] = dims.length;
  dims.forEach((d, i) => new DataView(h.buffer).setUint32(4 + 4 * i, d, false));
  return h;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

async function write(name: string, bytes: Uint8Array): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, bytes);
  return file;
}

function userError(t: import('ava').ExecutionContext, fn: () => unknown, pattern: RegExp): void {
  const e = t.throws(fn, { instanceOf: UserError });
  t.regex(e!.message, pattern);
}

test('parses a valid file and round-trips encodeIdx', (t) => {
  const data = Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => i);
  const idx = parseIdx(encodeIdx([2, 3, 4], data), 'x.idx');
  t.deepEqual(idx.dims, [2, 3, 4]);
  t.deepEqual(Array.from(idx.data), Array.from(data));
});

test('reads plain and gzipped files alike, detecting gzip by its magic', async (t) => {
  const data = Uint8Array.from({ length: 50 }, (_, i) => i * 3);
  const raw = encodeIdx([5, 10], data);
  const plain = await readIdx(await write('plain-idx2-ubyte', raw));
  const gz = await readIdx(await write('gzipped-without-extension', zlib.gzipSync(raw)));
  t.deepEqual(plain.dims, [5, 10]);
  t.deepEqual(gz.dims, [5, 10]);
  t.deepEqual(Array.from(gz.data), Array.from(data));
});

test('rejects a bad magic, naming the file', (t) => {
  userError(t, () => parseIdx(concat(Uint8Array.of(1, 0, 8, 1), header(8, [1]).subarray(4), Uint8Array.of(0)), 'bad.idx'), /bad\.idx: not an IDX file \(magic 01 00 08 01/);
  userError(t, () => parseIdx(Uint8Array.of(0, 0), 'short.idx'), /short\.idx: not an IDX file/);
});

test('rejects type codes other than unsigned byte', (t) => {
  userError(t, () => parseIdx(concat(header(0x0d, [2]), new Uint8Array(8)), 'f.idx'), /f\.idx: IDX type 0x0d \(float\) is not supported/);
  userError(t, () => parseIdx(concat(header(0x07, [2]), new Uint8Array(2)), 'u.idx'), /type 0x07 \(unknown\)/);
});

test('rejects ranks outside 1 to 4 and zero dimensions', (t) => {
  userError(t, () => parseIdx(Uint8Array.of(0, 0, 8, 0), 'r0.idx'), /0 dimensions/);
  userError(t, () => parseIdx(concat(header(8, [1, 1, 1, 1, 1]), new Uint8Array(1)), 'r5.idx'), /5 dimensions/);
  userError(t, () => parseIdx(concat(header(8, [3, 0]), new Uint8Array(0)), 'z.idx'), /dimension 1 is 0/);
});

test('rejects a dims product that does not match the data, short or long', (t) => {
  userError(t, () => parseIdx(concat(header(8, [4, 5]), new Uint8Array(19)), 'short.idx'), /short\.idx: IDX file truncated: dims 4 x 5 need 20 data bytes, the file has 19/);
  userError(t, () => parseIdx(concat(header(8, [4, 5]), new Uint8Array(21)), 'long.idx'), /long\.idx: IDX file has trailing bytes/);
});

test('rejects a truncated header', (t) => {
  userError(t, () => parseIdx(header(8, [4, 5]).subarray(0, 9), 'th.idx'), /truncated IDX header \(9 of 12 bytes\)/);
});

test('rejects a header announcing an absurd size before reading anything', (t) => {
  userError(t, () => parseIdx(header(8, [60000, 1000, 1000]), 'huge.idx'), /huge\.idx: IDX header announces more than/);
});

test('gunzip is bounded by the size the header announces (gzip bomb)', (t) => {
  // A 10-byte array followed by 64 MiB of zeros: about 64 KiB gzipped.
  const bomb = zlib.gzipSync(concat(header(8, [10]), new Uint8Array(64 * 2 ** 20)));
  t.true(bomb.length < 100_000);
  userError(t, () => gunzipIdx(bomb, 'bomb.gz'), /bomb\.gz: gzip data decompresses to more than the 18 bytes its IDX header announces/);
});

test('rejects a gzipped header that claims more than the compressed bytes can hold', (t) => {
  const liar = zlib.gzipSync(concat(header(8, [100_000_000]), new Uint8Array(10)));
  userError(t, () => gunzipIdx(liar, 'liar.gz'), /liar\.gz: IDX header announces 100000008 bytes, more than/);
});

test('rejects truncated and corrupt gzip data', async (t) => {
  const gz = zlib.gzipSync(encodeIdx([1000], Uint8Array.from({ length: 1000 }, (_, i) => (i * 7919) % 251)));
  userError(t, () => gunzipIdx(gz.subarray(0, gz.length - 40), 'cut.gz'), /cut\.gz: corrupt or truncated gzip data/);
  const broken = Uint8Array.from(gz);
  broken.fill(0xff, 12, 40);
  const e = await t.throwsAsync(readIdx(await write('broken.gz', broken)), { instanceOf: UserError });
  t.regex(e!.message, /broken\.gz: corrupt/);
});

test('a missing file is a UserError naming it', async (t) => {
  const e = await t.throwsAsync(readIdx(path.join(dir, 'nope')), { instanceOf: UserError });
  t.regex(e!.message, /cannot read IDX file .*nope/);
});

test('labels out of range and count mismatches are rejected against the images', async (t) => {
  const images = await write('img', encodeIdx([3, 2, 2], new Uint8Array(12)));
  const bad = await write('lab-bad', encodeIdx([3], Uint8Array.of(1, 10, 2)));
  const e = await t.throwsAsync(readIdxSplit(images, bad, 10), { instanceOf: UserError });
  t.regex(e!.message, /lab-bad: label 10 at index 1 is out of range \(10 classes\)/);
  const few = await write('lab-few', encodeIdx([2], Uint8Array.of(1, 2)));
  const e2 = await t.throwsAsync(readIdxSplit(images, few, 10), { instanceOf: UserError });
  t.regex(e2!.message, /2 labels for 3 images/);
  const ok = await readIdxSplit(images, await write('lab-ok', encodeIdx([3], Uint8Array.of(9, 0, 4))), 10);
  t.deepEqual([ok.count, ok.height, ok.width], [3, 2, 2]);
  t.deepEqual(Array.from(ok.labels), [9, 0, 4]);
});

test('the embedded subset loads, class-balanced, from the package directory', async (t) => {
  const data = await loadEmbeddedFashion();
  t.true(existsSync(path.join(embeddedFashionDir(), 'README.md')));
  t.deepEqual(data.classes, FASHION_MNIST_CLASSES);
  t.is(data.train.count, 3000);
  t.is(data.test.count, 500);
  t.deepEqual([data.train.height, data.train.width], [28, 28]);
  const counts = new Array(10).fill(0);
  for (const l of data.train.labels) counts[l]++;
  t.deepEqual(counts, new Array(10).fill(300));
});

test('findPackageDir walks up to the package root from any build directory', (t) => {
  const tree = new Set(['/p/package.json', '/p/data/x', '/p/node_modules/zoo/package.json', '/p/node_modules/zoo/data/x']);
  const exists = (p: string) => tree.has(p);
  t.is(findPackageDir('/p/dist/src/data', 'data/x', exists), '/p/data/x');
  t.is(findPackageDir('/p/.build-data/src/data', 'data/x', exists), '/p/data/x');
  t.is(findPackageDir('/p/node_modules/zoo/dist/src/data', 'data/x', exists), '/p/node_modules/zoo/data/x');
  t.is(findPackageDir('/q/dist', 'data/x', exists), undefined);
});

const DEBIAN = '/usr/share/datasets/fashion-mnist';
(existsSync(DEBIAN) ? test : test.skip)('reads the full Fashion-MNIST of the Debian package', async (t) => {
  const data = await loadFashionMnist(DEBIAN);
  t.is(data.train.count, 60000);
  t.is(data.test.count, 10000);
  t.is(data.train.images.length, 60000 * 28 * 28);
});
