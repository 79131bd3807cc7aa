import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { decodeImage, openImageFolder, probeImage, splitByFraction } from '../src/data/image_folder.js';
import { UserError } from '../src/errors.js';

let root = '';

type Format = 'png' | 'jpg' | 'webp' | 'gray.png' | 'rgba.png' | 'cmyk.jpg';

// Upper-case and .jpeg extensions must be recognized too.
const EXTENSION: Record<Format, string> = { png: 'png', jpg: 'jpg', webp: 'webp', 'gray.png': 'PNG', 'rgba.png': 'png', 'cmyk.jpg': 'jpeg' };

/** Writes a small image of a given format; `seed` varies the content. */
async function writeImage(file: string, format: Format, seed: number, width = 20, height = 14): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const channels = format === 'gray.png' ? 1 : format === 'rgba.png' ? 4 : 3;
  const px = Buffer.alloc(width * height * channels);
  for (let i = 0; i < px.length; i++) px[i] = (i * 13 + seed * 71) % 256;
  let img = sharp(px, { raw: { width, height, channels } });
  if (format === 'cmyk.jpg') img = img.toColourspace('cmyk');
  await (format.endsWith('jpg') ? img.jpeg() : format === 'webp' ? img.webp() : img.png()).toFile(file);
}

test.before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'zoo-folder-'));
});
test.after.always(async () => {
  await rm(root, { recursive: true, force: true });
});

test('ImageNet layout: sorted classes, labels from train/, every format decodes to RGB', async (t) => {
  const dir = path.join(root, 'imagenet');
  const formats: Format[] = ['png', 'jpg', 'webp', 'gray.png', 'rgba.png', 'cmyk.jpg'];
  for (const [split, n] of [['train', 3], ['val', 2]] as const) {
    for (const cls of ['dog', 'cat', 'Zebra']) {
      for (let i = 0; i < n; i++) {
        const format = formats[(i + cls.length) % formats.length]!;
        await writeImage(path.join(dir, split, cls, `${i}.${EXTENSION[format]}`), format, i);
      }
    }
  }
  // Noise that must be ignored: hidden folders, non-image files.
  await mkdir(path.join(dir, 'train', '.cache'), { recursive: true });
  await writeFile(path.join(dir, 'train', 'cat', 'notes.txt'), 'not an image');
  const folder = await openImageFolder(dir);
  t.is(folder.layout, 'train-val');
  t.deepEqual(folder.classes, ['Zebra', 'cat', 'dog']);
  t.is(folder.train.labels.length, 9);
  t.is(folder.val.labels.length, 6);
  t.deepEqual(Array.from(folder.train.labels), [0, 0, 0, 1, 1, 1, 2, 2, 2]);
  t.is(folder.train.source.kind, 'files');
  const files = folder.train.source.kind === 'files' ? folder.train.source.files : [];
  t.true(files.every((f) => f.startsWith(path.join(dir, 'train'))));

  for (const format of formats) {
    const file = path.join(root, 'formats', `${format.replace('.', '-')}.${EXTENSION[format]}`);
    await writeImage(file, format, 3, 20, 14);
    const img = await decodeImage(file);
    t.deepEqual([img.height, img.width, img.channels, img.data.length], [14, 20, 3, 20 * 14 * 3], format);
  }
});

test('class folders directly under the root: deterministic per-class split by seed', async (t) => {
  const dir = path.join(root, 'flat');
  for (const cls of ['a', 'b']) for (let i = 0; i < 10; i++) await writeImage(path.join(dir, cls, `${i}.png`), 'png', i, 4, 4);
  const e = await t.throwsAsync(openImageFolder(dir), { instanceOf: UserError });
  t.regex(e!.message, /holds class folders directly.*validation fraction/);
  const one = await openImageFolder(dir, { valFraction: 0.3, seed: 1 });
  const again = await openImageFolder(dir, { valFraction: 0.3, seed: 1 });
  const other = await openImageFolder(dir, { valFraction: 0.3, seed: 2 });
  t.is(one.layout, 'classes');
  const files = (f: typeof one, s: 'train' | 'val') => (f[s].source.kind === 'files' ? f[s].source.files : []);
  t.deepEqual(files(one, 'val'), files(again, 'val'));
  t.notDeepEqual(files(one, 'val'), files(other, 'val'));
  t.is(files(one, 'val').length, 6);
  t.deepEqual(Array.from(one.val.labels), [0, 0, 0, 1, 1, 1]);
  const all = new Set([...files(one, 'train'), ...files(one, 'val')]);
  t.is(all.size, 20);
  t.is(files(one, 'train').length, 14);
});

test('splitByFraction keeps at least one image on each side and rejects bad fractions', (t) => {
  const classes = [{ files: ['a1', 'a2'] }, { files: ['b1'] }, { files: ['c1', 'c2', 'c3'] }];
  const { train, val } = splitByFraction(classes, 0.01, 0);
  t.is(val.filter((v) => v.label === 0).length, 1);
  t.is(val.filter((v) => v.label === 1).length, 0);
  t.is(train.length + val.length, 6);
  t.throws(() => splitByFraction(classes, 1, 0), { instanceOf: UserError });
});

test('clear errors: missing root, no classes, empty class folder, missing val/', async (t) => {
  const missing = await t.throwsAsync(openImageFolder(path.join(root, 'does-not-exist')), { instanceOf: UserError });
  t.regex(missing!.message, /does-not-exist does not exist/);
  const emptyRoot = path.join(root, 'empty');
  await mkdir(emptyRoot, { recursive: true });
  const none = await t.throwsAsync(openImageFolder(emptyRoot, { valFraction: 0.1 }), { instanceOf: UserError });
  t.regex(none!.message, /no class folders in .*empty/);
  const withEmpty = path.join(root, 'with-empty');
  await writeImage(path.join(withEmpty, 'train', 'full', '0.png'), 'png', 0);
  await mkdir(path.join(withEmpty, 'train', 'hollow'), { recursive: true });
  await writeFile(path.join(withEmpty, 'train', 'hollow', 'readme.md'), '');
  const empty = await t.throwsAsync(openImageFolder(withEmpty), { instanceOf: UserError });
  t.regex(empty!.message, /class folder .*hollow has no images/);
  const noVal = path.join(root, 'no-val');
  await writeImage(path.join(noVal, 'train', 'c', '0.png'), 'png', 0);
  const nv = await t.throwsAsync(openImageFolder(noVal), { instanceOf: UserError });
  t.regex(nv!.message, /no val\/ folder/);
  await writeImage(path.join(noVal, 'val', 'other', '0.png'), 'png', 0);
  const unknown = await t.throwsAsync(openImageFolder(noVal), { instanceOf: UserError });
  t.regex(unknown!.message, /val.*other has no counterpart/);
});

test('a corrupt or truncated image is a UserError naming the file', async (t) => {
  const good = path.join(root, 'corrupt', 'good.jpg');
  await writeImage(good, 'jpg', 1, 64, 64);
  const bytes = await sharp(good).jpeg().toBuffer();
  const truncated = path.join(root, 'corrupt', 'truncated.jpg');
  await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
  const junk = path.join(root, 'corrupt', 'junk.png');
  await writeFile(junk, 'definitely not a png');
  for (const file of [truncated, junk]) {
    const e = await t.throwsAsync(decodeImage(file), { instanceOf: UserError });
    t.true(e!.message.includes(file), e!.message);
  }
});

test('a FIFO, socket or device with an image name is refused by name, never read (it would block forever)', async (t) => {
  if (process.platform === 'win32') return t.pass('no FIFOs on Windows');
  const dir = path.join(root, 'fifo');
  await writeImage(path.join(dir, 'train', 'a', '0.png'), 'png', 0);
  await writeImage(path.join(dir, 'val', 'a', '0.png'), 'png', 1);
  const fifo = path.join(dir, 'train', 'a', 'pipe.jpg');
  execFileSync('mkfifo', [fifo]);
  // Listing the folder names it.
  const listed = await t.throwsAsync(openImageFolder(dir), { instanceOf: UserError });
  t.regex(listed!.message, /pipe\.jpg is a FIFO, not an image file/);
  // Opening it directly (a list of files made elsewhere) returns at once with the same error.
  for (const read of [decodeImage, probeImage]) {
    const e = await t.throwsAsync(read(fifo), { instanceOf: UserError });
    t.regex(e!.message, /pipe\.jpg is a FIFO, not an image file/);
  }
  const devNull = await t.throwsAsync(decodeImage('/dev/null'), { instanceOf: UserError });
  t.regex(devNull!.message, /\/dev\/null is a device/);
  const dirNamedJpg = path.join(root, 'fifo-dir', 'train', 'a', 'x.jpg');
  await mkdir(dirNamedJpg, { recursive: true });
  await writeImage(path.join(root, 'fifo-dir', 'train', 'a', '0.png'), 'png', 0);
  await t.throwsAsync(openImageFolder(path.join(root, 'fifo-dir')), { instanceOf: UserError, message: /x\.jpg is a directory/ });
});

test('links to images are followed; a broken link is an error naming it; an empty file is refused', async (t) => {
  if (process.platform === 'win32') return t.pass('symbolic links need privileges on Windows');
  const dir = path.join(root, 'links');
  const real = path.join(root, 'link-target.png');
  await writeImage(real, 'png', 3);
  await mkdir(path.join(dir, 'a'), { recursive: true });
  await symlink(real, path.join(dir, 'a', 'linked.png'));
  await writeImage(path.join(dir, 'a', '1.png'), 'png', 4);
  await writeImage(path.join(dir, 'b', '0.png'), 'png', 5);
  await writeImage(path.join(dir, 'b', '1.png'), 'png', 6);
  const f = await openImageFolder(dir, { valFraction: 0.5 });
  t.is(f.train.labels.length + f.val.labels.length, 4);
  const linked = [...(f.train.source as { files: readonly string[] }).files, ...(f.val.source as { files: readonly string[] }).files].find((x) => x.endsWith('linked.png'))!;
  t.is((await decodeImage(linked)).width, 20);
  await symlink(path.join(root, 'nowhere.png'), path.join(dir, 'b', 'broken.png'));
  await t.throwsAsync(openImageFolder(dir, { valFraction: 0.5 }), { instanceOf: UserError, message: /broken\.png is a broken symbolic link/ });
  const empty = path.join(root, 'empty.jpg');
  await writeFile(empty, '');
  await t.throwsAsync(decodeImage(empty), { instanceOf: UserError, message: /empty\.jpg is an empty file/ });
});
