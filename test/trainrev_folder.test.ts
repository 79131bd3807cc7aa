/**
 * Image folders as users have them: a class named "train" among class folders is a class, not the
 * ImageNet layout's train/ split; the __MACOSX folder a macOS zip leaves is no class.
 */
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { openImageFolder } from '../src/data/image_folder.js';
import { UserError } from '../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-trainrev-folder-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

async function image(file: string): Promise<void> {
  await sharp({ create: { width: 9, height: 7, channels: 3, background: '#405060' } }).png().toFile(file);
}

test('a class folder named train (images, no folders) is a class of a folder of class folders', async (t) => {
  const root = join(dir, 'vehicles');
  for (const c of ['bus', 'car', 'train']) {
    mkdirSync(join(root, c), { recursive: true });
    for (let i = 0; i < 3; i++) await image(join(root, c, `${i}.png`));
  }
  const f = await openImageFolder(root, { valFraction: 1 / 3 });
  t.is(f.layout, 'classes');
  t.deepEqual(f.classes, ['bus', 'car', 'train']);
  t.is(f.train.labels.length, 6);
  t.deepEqual(Array.from(f.val.labels), [0, 1, 2]);
  // Without a fraction it asks for one, as any folder of class folders does.
  await t.throwsAsync(openImageFolder(root), { instanceOf: UserError, message: /holds class folders directly/ });
});

test('train/ with class folders, and an empty train/, are still the ImageNet layout', async (t) => {
  const root = join(dir, 'imagenet');
  for (const split of ['train', 'val']) {
    for (const c of ['a', 'b']) {
      mkdirSync(join(root, split, c), { recursive: true });
      await image(join(root, split, c, 'x.png'));
    }
  }
  const f = await openImageFolder(root);
  t.is(f.layout, 'train-val');
  t.deepEqual(f.classes, ['a', 'b']);
  const empty = join(dir, 'empty');
  mkdirSync(join(empty, 'train'), { recursive: true });
  await t.throwsAsync(openImageFolder(empty), { instanceOf: UserError, message: /no class folders in .*empty\/train/ });
});

test("the __MACOSX folder beside a zip's class folders is no class", async (t) => {
  const root = join(dir, 'unzipped');
  for (const c of ['cat', 'dog']) {
    mkdirSync(join(root, c), { recursive: true });
    mkdirSync(join(root, '__MACOSX', c), { recursive: true });
    for (let i = 0; i < 2; i++) {
      await image(join(root, c, `${i}.png`));
      writeFileSync(join(root, '__MACOSX', c, `._${i}.png`), 'resource fork');
    }
  }
  const f = await openImageFolder(root, { valFraction: 0.5 });
  t.deepEqual(f.classes, ['cat', 'dog']);
  t.is(f.train.labels.length + f.val.labels.length, 4);
});
