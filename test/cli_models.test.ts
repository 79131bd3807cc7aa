/**
 * Models through every command: one resolver (architectures, published, local and timm names, files,
 * run directories), preprocessing and labels that travel with every export and import, and bad input
 * that ends in a one-line error naming the file or value, never in "a bug in zoo" (exit 70).
 */
import test from 'ava';
import { runZoo, type CliRun } from './helpers/cli.js';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { setupBackend } from './helpers/backend.js';
import { makeRunDir, RUN_LABELS } from './helpers/run_fixture.js';
import { createModel } from '../src/models/model.js';
import { exportOnnx } from '../src/onnx/export.js';
import { readOnnxMetadata } from '../src/onnx/metadata.js';
import { IMAGENET_PREPROCESSING } from '../src/predict/preprocessing.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-cli-models-'));
const runDir = join(dir, 'runs', 'pets');
const img = join(dir, 'img.png');
const env = { ...process.env, ZOO_BACKEND: 'wasm', ZOO_CACHE: join(dir, 'cache') };

type Run = CliRun;

const zoo = (args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) => runZoo(args, { env: options.env ?? env, cwd: options.cwd ?? dir });

/** A user error: the given exit code, one message line naming what was wrong, no stack, no "bug in zoo". */
function userError(t: { is: (a: unknown, b: unknown, m?: string) => void; regex: (s: string, r: RegExp) => void; false: (v: boolean, m?: string) => void }, r: Run, code: number, message: RegExp): void {
  t.is(r.code, code, r.stderr);
  t.regex(r.stderr, message);
  t.false(r.stderr.includes('bug in zoo'), r.stderr);
  t.false(r.stderr.includes('    at '), 'no stack trace');
}

test.before(async () => {
  await setupBackend();
  await makeRunDir(runDir);
  const px = Buffer.alloc(80 * 60 * 3);
  for (let k = 0; k < px.length; k++) px[k] = (k * 31) % 251;
  await sharp(px, { raw: { width: 80, height: 60, channels: 3 } }).toFile(img);
});
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('an export at --image-size 320 carries its preprocessing: predict runs it at 320', async (t) => {
  const m = join(dir, 'm320.onnx');
  const e = await zoo(['export', 'resnet_test', '--image-size', '320', '-o', m]);
  t.is(e.code, 0, e.stderr);
  t.regex(e.stderr, /records no preprocessing: recording ImageNet's defaults at 320x320/);
  const meta = await readOnnxMetadata(m);
  t.is(JSON.parse(meta['zoo.preprocessing']!).crop, 320);
  const p = await zoo(['predict', m, img, '--json']);
  t.is(p.code, 0, p.stderr);
  const out = JSON.parse(p.stdout) as { preprocessing: { crop: number }; results: { top: unknown[] }[] };
  t.is(out.preprocessing.crop, 320);
  t.is(out.results[0]!.top.length, 5);
});

test('an ONNX file without preprocessing runs at its graph\'s input size, saying so', async (t) => {
  const m = createModel('resnet_test');
  const file = join(dir, 'bare96.onnx');
  writeFileSync(file, await exportOnnx(m, { imageSize: 96 }));
  m.dispose();
  const p = await zoo(['predict', file, img, '--json']);
  t.is(p.code, 0, p.stderr);
  t.regex(p.stderr, /records no preprocessing: using ImageNet's at the graph's 96x96 input/);
  t.is((JSON.parse(p.stdout) as { preprocessing: { crop: number } }).preprocessing.crop, 96);
});

test('re-exporting a run\'s model (FP16) and importing its checkpoint keep its labels and preprocessing', async (t) => {
  const fp16 = join(dir, 'pets-fp16.onnx');
  const e = await zoo(['export', 'resnet_test', '--weights', join(runDir, 'model.onnx'), '--fp16', '-o', fp16]);
  t.is(e.code, 0, e.stderr);
  const fromRun = join(dir, 'pets-run.onnx');
  t.is((await zoo(['export', runDir, '-o', fromRun])).code, 0);
  const imported = join(dir, 'pets-imported.onnx');
  const i = await zoo(['import', join(runDir, 'checkpoint.safetensors'), '-o', imported]);
  t.is(i.code, 0, i.stderr);
  for (const f of [fp16, fromRun, imported]) {
    const meta = await readOnnxMetadata(f);
    t.deepEqual(JSON.parse(meta['zoo.labels']!), RUN_LABELS, f);
    t.is(JSON.parse(meta['zoo.preprocessing']!).crop, 32, f);
    t.is(meta['zoo.arch'], 'resnet_test');
    const p = JSON.parse((await zoo(['predict', f, img, '--json', '--top', '3'])).stdout) as { results: { top: { label: string }[] }[] };
    t.deepEqual(p.results[0]!.top.map((x) => x.label).sort(), [...RUN_LABELS].sort(), f);
  }
  // The run directory itself runs, and names its classes.
  const byRun = JSON.parse((await zoo(['predict', runDir, img, '--json'])).stdout) as { model: string; results: { top: { label: string }[] }[] };
  t.true(RUN_LABELS.includes(byRun.results[0]!.top[0]!.label));
});

test('every command takes every kind of model it can use, and says what it takes otherwise', async (t) => {
  t.is((await zoo(['info', 'resnet50d-best'])).code, 0);
  const timm = await zoo(['info', 'timm/resnet50.gluon_in1k', '--json']);
  t.is((JSON.parse(timm.stdout) as { arch: string }).arch, 'resnet50b');
  t.is((await zoo(['info', runDir])).code, 0);
  // A local zoo model: import one, then export it by name and use it as --weights.
  t.is((await zoo(['import', join(runDir, 'checkpoint.safetensors'), '--name', 'pets'])).code, 0);
  const local = await zoo(['export', 'pets', '-o', join(dir, 'pets-local.onnx')]);
  t.is(local.code, 0, local.stderr);
  t.is((await zoo(['export', 'resnet_test', '--weights', 'pets', '-o', join(dir, 'pets-weights.onnx')])).code, 0);
  for (const f of ['pets-local.onnx', 'pets-weights.onnx']) t.deepEqual(JSON.parse((await readOnnxMetadata(join(dir, f)))['zoo.labels']!), RUN_LABELS, f);
  userError(t, await zoo(['predict', 'resnet50d', img]), 2, /'resnet50d' is an architecture, without trained weights; zoo predict takes a trained model/);
  userError(t, await zoo(['predict', 'resnet50d-best', img]), 1, /not in the local cache yet; run 'zoo pull resnet50d-best' first/);
  userError(t, await zoo(['export', 'resnet_test', '--weights', 'resnet50d']), 2, /is an architecture, without weights/);
  userError(t, await zoo(['info', 'no-such-model']), 2, /unknown model 'no-such-model'/);
  // zoo pull goes through the same resolver: an architecture is refused with its published weights,
  // and a timm id is pulled as timm means it, saying so.
  userError(t, await zoo(['pull', 'resnet50d']), 2, /'resnet50d' is an architecture; zoo pull takes a published name, alias or timm id .*Published weights of resnet50d: resnet50d-best, resnet50d-strong/);
  const timmPull = await zoo(['pull', 'resnet50.gluon_in1k'], { env: { ...env, ZOO_OFFLINE: '1' } });
  t.regex(timmPull.stderr, /note: 'resnet50\.gluon_in1k' is timm's id of resnet50b\.gluon_in1k/);
  t.regex(timmPull.stderr, /offline \(ZOO_OFFLINE\) and resnet50b\.gluon_in1k is not in the cache/);
});

test('without -o, export writes <model>.onnx here and never replaces a file', async (t) => {
  const cwd = join(dir, 'defaults');
  mkdirSync(cwd);
  const first = await zoo(['export', 'resnet_test', '--image-size', '32'], { cwd });
  t.is(first.code, 0, first.stderr);
  t.true(existsSync(join(cwd, 'resnet_test.onnx')));
  userError(t, await zoo(['export', 'resnet_test', '--image-size', '32'], { cwd }), 2, /resnet_test\.onnx exists; give -o/);
  t.is((await zoo(['export', 'resnet_test', '--fp16', '--image-size', '32'], { cwd })).code, 0);
  t.true(existsSync(join(cwd, 'resnet_test-fp16.onnx')));
});

/** An ONNX file whose zoo metadata is `props`. */
async function hostileOnnx(name: string, props: Record<string, string>): Promise<string> {
  const m = createModel('resnet_test');
  const file = join(dir, name);
  writeFileSync(file, await exportOnnx(m, { imageSize: 32, metadata: props }));
  m.dispose();
  return file;
}

test('hostile or broken input is a one-line user error, never an internal error', async (t) => {
  const pre = { ...IMAGENET_PREPROCESSING, inputSize: 32, crop: 32, resizeShorter: 37 };
  const cases: [string, Record<string, string>, RegExp][] = [
    ['nonjson.onnx', { 'zoo.preprocessing': 'not json' }, /nonjson\.onnx: metadata 'zoo\.preprocessing' is not JSON/],
    ['nomean.onnx', { 'zoo.preprocessing': JSON.stringify({ ...pre, mean: undefined }) }, /nomean\.onnx: metadata 'zoo\.preprocessing' is not a valid preprocessing: preprocessing\.mean/],
    ['crop60000.onnx', { 'zoo.preprocessing': JSON.stringify({ ...pre, crop: 60000 }) }, /crop60000\.onnx: .*crop: expected a positive integer up to 4096, got 60000/],
    ['proto.onnx', { 'zoo.categories': '__proto__' }, /proto\.onnx: unknown label set '__proto__'/],
  ];
  for (const [name, props, message] of cases) userError(t, await zoo(['predict', await hostileOnnx(name, props), img]), 1, message);
  userError(t, await zoo(['predict', dir, img]), 1, /is a directory but not a training run/);
  userError(t, await zoo(['export', 'resnet_test', '--num-classes', '100000000', '-o', join(dir, 'huge.onnx')]), 2, /100000000 classes would need a 256 x 100000000 classifier .*at most \d+ classes/);
  userError(t, await zoo(['export', 'resnet_test', '-o', join(dir, 'threads.onnx')], { env: { ...env, ZOO_THREADS: 'abc' } }), 2, /ZOO_THREADS must be a positive integer, got 'abc'/);
  userError(t, await zoo(['export', 'resnet_test', '--image-size', '32', '-o', '/dev/null']), 2, /'\/dev\/null' is a device, not a regular file; refusing to replace it/);
  // What zoo would write it must be able to read back: a resize past 4096 is refused before any work.
  userError(t, await zoo(['export', 'resnet_test', '--image-size', '4000', '--no-check', '-o', join(dir, 'big.onnx')]), 2, /an image size of 4000 needs a resize of 4571; zoo takes sides from 1 to 4096/);
  userError(t, await zoo(['export', 'resnet_test', '--seed', 'abc', '-o', join(dir, 'seed.onnx')]), 2, /--seed must be an integer, got 'abc'/);
  t.false(existsSync(join(dir, 'big.onnx')) || existsSync(join(dir, 'seed.onnx')));
});

test('predict takes folders, and an unreadable or non-regular image is reported without stopping the others', async (t) => {
  const folder = join(dir, 'photos');
  mkdirSync(join(folder, 'sub'), { recursive: true });
  await sharp(img).toFile(join(folder, 'a.jpg'));
  await sharp(img).toFile(join(folder, 'sub', 'b.webp'));
  writeFileSync(join(folder, 'broken.png'), 'not an image');
  writeFileSync(join(folder, 'notes.txt'), 'ignored: not an image extension');
  const fifo = join(dir, 'pipe.jpg');
  execFileSync('mkfifo', [fifo]);
  const r = await zoo(['predict', runDir, folder, fifo, '--json']);
  t.is(r.code, 1, 'some images failed');
  const out = JSON.parse(r.stdout) as { results: { image: string; top?: unknown[]; error?: string }[] };
  t.deepEqual(out.results.map((x) => x.image.slice(dir.length + 1)), ['photos/a.jpg', 'photos/broken.png', 'photos/sub/b.webp', 'pipe.jpg']);
  t.is(out.results.filter((x) => x.top).length, 2);
  t.regex(out.results[1]!.error!, /broken\.png: not a readable image/);
  t.regex(out.results[3]!.error!, /pipe\.jpg: not a regular file/);
  t.regex(r.stderr, /2 of 4 images could not be read/);
});
