import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { decodeImage } from '../src/data/image_folder.js';
import { FASHION_MNIST_CLASSES } from '../src/data/idx.js';
import { loadEmbeddedFashion } from '../src/data/embedded.js';
import { sceneLabels, type SceneObject } from '../src/data/scenes.js';
import { UserError } from '../src/errors.js';
import { readAde } from '../src/segmentation/ade.js';
import {
  adeItemDeck,
  adeSceneId,
  adeSceneLabels,
  adeSceneRng,
  DEFAULT_ADE_GENERATE_OPTIONS,
  generateAdeSet,
} from '../src/segmentation/ade_generate.js';
import { readLabelPng } from '../src/segmentation/png.js';
import { renderScene } from '../src/data/scenes.js';

const SMALL = { seed: 2, trainImages: 10, valImages: 4 };

let tmp = '';
let counter = 0;
test.before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'zoo-segen-'));
});
test.after.always(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function freshDir(name: string): Promise<string> {
  const d = path.join(tmp, `${name}-${counter++}`);
  await mkdir(d, { recursive: true });
  return d;
}

async function userError(t: ExecutionContext, p: Promise<unknown>): Promise<string> {
  const e = await t.throwsAsync(p);
  t.true(e instanceof UserError, e?.message);
  return e!.message;
}

async function filesUnder(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(path.relative(dir, p), await readFile(p));
    }
  };
  await walk(dir);
  return out;
}

test('sceneLabels: each pixel goes to the largest share of its color, in paint order', (t) => {
  // Two 2x2 items on a 4x2 scene, overlapping in column 1. Item A (painted first) at x 0..1, item B at x 1..2.
  const obj = (label: number, x: number, alpha: number[]): SceneObject => ({ label, item: 0, box: [0, 0, 0, 0], x, y: 0, size: 2, alpha: Float32Array.from(alpha) });
  const a = obj(0, 0, [1, 0.9, 0.3, 0.6]);
  const b = obj(1, 1, [0.4, 0, 0.7, 0.5]);
  const labels = sceneLabels({ width: 4, height: 2, objects: [a, b] }, (o) => 10 + o.label, 1);
  // Row 0: x0 A alone (1); x1 A 0.9 then B 0.4: A keeps 0.54 > 0.4; x2 B weight 0 (untouched); x3 nothing.
  // Row 1: x0 A 0.3 < background 0.7; x1 A 0.6, then B 0.7 > 0.18; x2 B 0.5 = background 0.5: a tie keeps the background.
  t.deepEqual(Array.from(labels), [10, 10, 1, 1, 1, 11, 1, 1]);
});

test('generateAdeSet: an ADE-layout set readAde takes, masks that are the items, training and validation from their splits', async (t) => {
  const dir = await freshDir('gen');
  const g = await generateAdeSet(dir, SMALL);
  t.is(g.root, path.join(dir, 'ADEChallengeData2016'));
  t.false(g.reused);
  t.deepEqual(g.classes, ['background', ...FASHION_MNIST_CLASSES]);
  t.deepEqual((await readFile(path.join(g.root, 'classes.txt'), 'utf8')).trim().split('\n'), ['background', ...FASHION_MNIST_CLASSES]);
  const fashion = await loadEmbeddedFashion();
  for (const [split, items, count] of [['training', fashion.train, 10], ['validation', fashion.test, 4]] as const) {
    const data = await readAde(dir, { split, verify: true });
    t.is(data.root, g.root);
    t.deepEqual(data.classes, g.classes);
    t.deepEqual(data.samples.map((s) => s.id), Array.from({ length: count }, (_, i) => adeSceneId(split, i)));
    const deck = adeItemDeck(SMALL.seed, split, items.count);
    const pixels = new Array<number>(12).fill(0);
    for (const [i, s] of data.samples.entries()) {
      t.true(s.width! >= 96 && s.width! <= 160 && s.height! >= 96 && s.height! <= 160, `${s.id} ${s.width}x${s.height}`);
      const scene = renderScene(adeSceneRng(SMALL.seed, split, i), items, deck, { ...DEFAULT_ADE_GENERATE_OPTIONS });
      t.deepEqual([scene.width, scene.height], [s.width, s.height]);
      const mask = await readLabelPng(s.annotation);
      // The annotation is the scene's label map, exactly.
      t.deepEqual(Array.from(mask.data), Array.from(adeSceneLabels(scene, 'class')));
      t.true(scene.objects.length >= 1 && scene.objects.length <= 3);
      for (const o of scene.objects) {
        // Its class from its own split, value class + 2; the pixels where it is opaque (and nothing is over it) carry it.
        t.is(o.label, items.labels[o.item]);
        t.true(o.size >= 32 && o.size <= 80);
        let own = 0;
        for (let y = 0; y < o.size; y++) {
          for (let x = 0; x < o.size; x++) {
            const covered = scene.objects.slice(scene.objects.indexOf(o) + 1).some((p) => x + o.x >= p.x && x + o.x < p.x + p.size && y + o.y >= p.y && y + o.y < p.y + p.size);
            if (o.alpha[y * o.size + x]! === 1 && !covered) {
              t.is(mask.data[(o.y + y) * scene.width + o.x + x], o.label + 2);
              own++;
            }
          }
        }
        t.true(own > 0);
      }
      // Outside every item's square, background.
      for (let y = 0; y < scene.height; y++) {
        for (let x = 0; x < scene.width; x++) {
          const inItem = scene.objects.some((o) => x >= o.x && x < o.x + o.size && y >= o.y && y < o.y + o.size);
          if (!inItem && mask.data[y * scene.width + x] !== 1) t.fail(`${s.id}: pixel ${x},${y} is ${mask.data[y * scene.width + x]}`);
        }
      }
      for (const v of mask.data) pixels[v]!++;
      // The JPEG holds the rendered pixels (up to compression).
      const jpeg = await decodeImage(s.image);
      let diff = 0;
      for (let k = 0; k < jpeg.data.length; k++) diff += Math.abs(jpeg.data[k]! - scene.pixels[k]!);
      t.true(diff / jpeg.data.length < 16, `${s.id}: mean difference ${diff / jpeg.data.length}`);
    }
    t.deepEqual(split === 'training' ? g.counts.trainingPixels : g.counts.validationPixels, pixels);
    t.is(pixels[0], 0);
  }
  t.is(g.counts.training, 10);
  t.is(g.counts.validation, 4);
});

test('generateAdeSet: deterministic for a seed, the unlabeled-background variant, and careful with what is already there', async (t) => {
  const a = await freshDir('a');
  const b = await freshDir('b');
  await generateAdeSet(a, SMALL);
  await generateAdeSet(b, SMALL);
  const fa = await filesUnder(path.join(a, 'ADEChallengeData2016'));
  const fb = await filesUnder(path.join(b, 'ADEChallengeData2016'));
  t.is(fa.size, 14 * 2 + 2);
  t.deepEqual([...fa.keys()].sort(), [...fb.keys()].sort());
  for (const [k, v] of fa) t.true(v.equals(fb.get(k)!), k);
  const c = await freshDir('c');
  await generateAdeSet(c, { ...SMALL, seed: 3 });
  const first = path.join('annotations', 'training', 'ADE_train_00000001.png');
  t.false((await filesUnder(path.join(c, 'ADEChallengeData2016'))).get(first)!.equals(fa.get(first)!));

  const u = await freshDir('unlabeled');
  const gu = await generateAdeSet(u, { ...SMALL, background: 'unlabeled' });
  t.deepEqual(gu.classes, [...FASHION_MNIST_CLASSES]);
  const du = await readAde(u, { verify: true });
  t.deepEqual(du.classes, [...FASHION_MNIST_CLASSES]);
  // The same scenes: every value one lower, background 1 becoming 0.
  const withClass = await readLabelPng(path.join(a, 'ADEChallengeData2016', first));
  const without = await readLabelPng(du.samples[0]!.annotation);
  t.deepEqual(Array.from(without.data), Array.from(withClass.data, (v) => v - 1));
  t.true(gu.counts.trainingPixels[0]! > 0);

  t.regex(await userError(t, generateAdeSet(a, SMALL)), /ADEChallengeData2016 already exists/);
  t.true((await generateAdeSet(a, { ...SMALL, ifExists: 'reuse' })).reused);
  t.regex(await userError(t, generateAdeSet(a, { ...SMALL, seed: 9, ifExists: 'reuse' })), /was generated with other options/);
  const over = await generateAdeSet(a, { ...SMALL, trainImages: 3, ifExists: 'overwrite' });
  t.is(over.counts.training, 3);
  t.is((await readAde(a)).samples.length, 3);
  t.deepEqual(await readdir(a), ['ADEChallengeData2016']);
  // A folder not made here is never replaced.
  const foreign = await freshDir('foreign');
  await mkdir(path.join(foreign, 'ADEChallengeData2016', 'images'), { recursive: true });
  t.regex(await userError(t, generateAdeSet(foreign, { ...SMALL, ifExists: 'overwrite' })), /was not made by zoo's generator; refusing to replace it/);
  t.regex(await userError(t, generateAdeSet(foreign, { ...SMALL, minItem: 200 })), /minItem must be an integer from 8 to 96/);
  t.regex(await userError(t, generateAdeSet(foreign, { ...SMALL, background: 'none' as 'class' })), /background must be 'class' or 'unlabeled'/);
});
