/**
 * The model resolver: every kind of reference (architecture, timm id, published name, local zoo name,
 * ONNX file, weights file, run directory) finds what it means, carries its metadata, and a reference
 * that cannot serve a command's purpose is refused with a message that says what the command takes.
 * Hostile ONNX metadata is refused naming the file and the key.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { makeRunDir, RUN_LABELS } from './helpers/run_fixture.js';
import { looksLikePath, preprocessingAt, resolveModelRef } from '../src/hub/resolve.js';
import { readHubSettings } from '../src/hub/settings.js';
import { addToLocalZoo } from '../src/hub/local.js';
import { createModel } from '../src/models/model.js';
import { exportOnnx } from '../src/onnx/export.js';
import { IMAGENET_PREPROCESSING } from '../src/predict/preprocessing.js';
import { readOnnxMetadata } from '../src/onnx/metadata.js';
import { UserError } from '../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-resolve-'));
const settings = readHubSettings({ ZOO_CACHE: join(dir, 'cache') }, dir);
const runDir = join(dir, 'run');
let plainOnnx: Uint8Array;

test.before(async () => {
  await setupBackend();
  await makeRunDir(runDir);
  const m = createModel('resnet_test');
  plainOnnx = await exportOnnx(m, { imageSize: 32 });
  m.dispose();
  await addToLocalZoo({
    name: 'my-model',
    arch: 'resnet_test',
    onnxBytes: plainOnnx,
    preprocessing: { ...IMAGENET_PREPROCESSING, inputSize: 32, crop: 32, resizeShorter: 37 },
    labels: Array.from({ length: 10 }, (_, i) => `c${i}`),
    source: { url: 'test', format: 'onnx', naming: 'zoo', file: 'test', sha256: '0', sha1: '0', bytes: 0 },
    check: { maxAbsDiff: 0, maxAbsLogit: 1, top1Agreement: 1, provider: 'cpu' },
    settings,
  });
});
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const resolve = (ref: string, purpose: 'run' | 'weights' | 'describe' | 'build') => resolveModelRef(ref, { purpose, command: 'zoo test', settings });

test('paths are told from names by their form', (t) => {
  for (const p of ['./x', 'a/b', '/abs', '~/m.onnx', 'm.onnx', 'w.safetensors', 'w.pth', 'g.params', 'g.zip']) t.true(looksLikePath(p), p);
  for (const n of ['resnet50d', 'resnet50d-best', 'resnet50d.gluon_in1k', 'timm/resnet50.gluon_in1k', 'hf-hub:timm/resnet50d.gluon_in1k', 'my-model']) t.false(looksLikePath(n), n);
});

test('architectures, timm architectures and published names', async (t) => {
  const a = await resolve('resnet50d', 'build');
  t.is(a.kind, 'arch');
  t.is(a.preprocessingFrom, 'assumed');
  const timmArch = await resolve('timm/resnet50', 'build');
  t.is(timmArch.arch, 'resnet50b', "timm's resnet50 is ResNet-B");
  t.regex(timmArch.notes[0]!, /zoo's resnet50b/);
  const p = await resolve('resnet50.gluon_in1k', 'describe');
  t.is(p.kind, 'published');
  t.is(p.entry!.name, 'resnet50b.gluon_in1k');
  t.is(p.arch, 'resnet50b');
  t.regex(p.notes[0]!, /timm's id of resnet50b\.gluon_in1k/);
  t.is(p.meta.categories, 'imagenet-1k');
  t.is(p.meta.preprocessing!.interpolation, 'bicubic');
  t.is((await resolve('resnet50-a', 'describe')).arch, 'resnet50', "zoo's alias for the ResNet-A weights");
});

test('a published model that is not pulled, or an architecture, cannot run; the message says what to do', async (t) => {
  const e = await t.throwsAsync(resolve('resnet50d-best', 'run'), { instanceOf: UserError });
  t.regex(e!.message, /not in the local cache yet; run 'zoo pull resnet50d-best' first/);
  const a = await t.throwsAsync(resolve('resnet50d', 'run'), { instanceOf: UserError });
  t.regex(a!.message, /'resnet50d' is an architecture, without trained weights; zoo test takes a trained model/);
  const w = await t.throwsAsync(resolve('resnet50d', 'weights'), { instanceOf: UserError });
  t.regex(w!.message, /without weights; zoo test takes weights/);
  const u = await t.throwsAsync(resolve('resnet50q', 'describe'), { instanceOf: UserError });
  t.is(u!.exitCode, 2);
  t.regex(u!.message, /unknown model 'resnet50q'\. Did you mean: .*resnet50/);
});

test('a local zoo model runs with its own preprocessing and labels', async (t) => {
  const r = await resolve('my-model', 'run');
  t.is(r.kind, 'local');
  t.is(r.arch, 'resnet_test');
  t.true(r.onnx!.endsWith('model.onnx'));
  t.is(r.meta.preprocessing!.crop, 32);
  t.is(r.meta.labels![3], 'c3');
  t.is(r.preprocessingFrom, 'model');
});

test('a run directory, its checkpoint and its export all carry the run\'s labels and preprocessing', async (t) => {
  const r = await resolve(runDir, 'run');
  t.is(r.kind, 'run');
  t.is(r.arch, 'resnet_test');
  t.deepEqual(r.meta.labels, RUN_LABELS);
  t.is(r.meta.preprocessing!.crop, 32);
  t.true(r.weights!.endsWith('checkpoint.safetensors'));
  const ckpt = await resolve(join(runDir, 'checkpoint.safetensors'), 'weights');
  t.is(ckpt.kind, 'weights');
  t.deepEqual(ckpt.meta.labels, RUN_LABELS);
  t.is(ckpt.arch, 'resnet_test');
  const onnx = await resolve(join(runDir, 'model.onnx'), 'run');
  t.is(onnx.kind, 'onnx');
  t.deepEqual(onnx.meta.labels, RUN_LABELS);
  t.is(onnx.meta.arch, 'resnet_test');
  t.is((await readOnnxMetadata(join(runDir, 'model.onnx')))['zoo.arch'], 'resnet_test', "the run's export records its architecture itself");
  // The checkpoint is weights: it must not run as the run's ONNX export under the checkpoint's name.
  t.is(ckpt.onnx, undefined);
  await t.throwsAsync(resolve(join(runDir, 'checkpoint.safetensors'), 'run'), { instanceOf: UserError, message: /is a weights file, not an ONNX model/ });
});

test('a run without its ONNX export (stopped, or trained with --no-export) says how to get one', async (t) => {
  const unexported = join(dir, 'run-no-export');
  await makeRunDir(unexported);
  rmSync(join(unexported, 'model.onnx'));
  const e = await t.throwsAsync(resolve(unexported, 'run'), { instanceOf: UserError });
  t.regex(e!.message, /has no model\.onnx, which zoo test needs: .*unless --no-export.*'zoo train --out .*run-no-export --resume' finishes it or, for a finished run, exports it/);
});

test('a damaged local zoo manifest is a user error naming it, and cannot point outside the cache', async (t) => {
  for (const [name, converted, message] of [
    ['no-onnx', { arch: 'resnet_test' }, /'onnx\.file' undefined is not a file name/],
    ['escape', { arch: 'resnet_test', onnx: { file: '../../etc/passwd.onnx' } }, /'onnx\.file' "\.\.\/\.\.\/etc\/passwd\.onnx" is not a file name/],
    ['bad-arch', { arch: 'nope', onnx: { file: 'model.onnx' } }, /'arch' "nope" is no architecture zoo builds/],
  ] as const) {
    mkdirSync(join(dir, 'cache', name), { recursive: true });
    writeFileSync(join(dir, 'cache', name, 'manifest.json'), JSON.stringify({ name, files: {}, meta: { converted } }));
    const e = await t.throwsAsync(resolve(name, 'run'), { instanceOf: UserError });
    t.regex(e!.message, /manifest\.json: /);
    t.regex(e!.message, message);
    t.regex(e!.message, new RegExp(`zoo rm ${name}`));
  }
});

test('directories that are not runs, FIFOs and missing files are refused with their name', async (t) => {
  const plain = join(dir, 'plain-dir');
  mkdirSync(plain);
  await t.throwsAsync(resolve(plain, 'run'), { instanceOf: UserError, message: /plain-dir' is a directory but not a training run/ });
  const fifo = join(dir, 'pipe.onnx');
  execFileSync('mkfifo', [fifo]);
  await t.throwsAsync(resolve(fifo, 'run'), { instanceOf: UserError, message: /pipe\.onnx' is not a regular file/ });
  await t.throwsAsync(resolve(join(dir, 'nope.onnx'), 'run'), { instanceOf: UserError, message: /nope\.onnx': no such file or directory/ });
  writeFileSync(join(dir, 'broken-run.json'), '{');
  const brokenRun = join(dir, 'broken-run');
  mkdirSync(brokenRun);
  writeFileSync(join(brokenRun, 'run.json'), '{"arch": 3');
  await t.throwsAsync(resolve(brokenRun, 'run'), { instanceOf: UserError, message: /run\.json: not JSON/ });
});

/** An ONNX file of resnet_test whose metadata says `props`. */
async function onnxWith(name: string, props: Record<string, string>): Promise<string> {
  const m = createModel('resnet_test');
  try {
    const file = join(dir, name);
    writeFileSync(file, await exportOnnx(m, { imageSize: 32, metadata: props }));
    return file;
  } finally {
    m.dispose();
  }
}

const good = JSON.stringify({ ...IMAGENET_PREPROCESSING, inputSize: 32, crop: 32, resizeShorter: 37 });
const hostile: [string, Record<string, string>, RegExp][] = [
  ['non-JSON preprocessing', { 'zoo.preprocessing': '{crop: 3' }, /metadata 'zoo\.preprocessing' is not JSON/],
  ['a missing mean', { 'zoo.preprocessing': JSON.stringify({ ...JSON.parse(good), mean: undefined }) }, /preprocessing\.mean: expected 3 finite numbers/],
  ['crop 60000', { 'zoo.preprocessing': JSON.stringify({ ...JSON.parse(good), crop: 60000, resizeShorter: 60000, inputSize: 60000 }) }, /crop: expected a positive integer up to 4096, got 60000/],
  ['a negative std', { 'zoo.preprocessing': JSON.stringify({ ...JSON.parse(good), std: [1, -1, 1] }) }, /every std must be positive/],
  ['categories "__proto__"', { 'zoo.categories': '__proto__' }, /unknown label set '__proto__'/],
  ['labels that are not a list', { 'zoo.labels': '{"0": "a"}' }, /class names must be a non-empty JSON array of strings/],
  ['a label that is not a string', { 'zoo.labels': '["a", 3]' }, /class name 1 is not a non-empty string/],
  ['an unknown architecture', { 'zoo.arch': 'resnet9000' }, /metadata 'zoo\.arch' names no architecture zoo builds \('resnet9000'\)/],
];

for (const [what, props, message] of hostile) {
  test(`ONNX metadata with ${what} is refused naming the file`, async (t) => {
    const file = await onnxWith(`${what.replace(/\W+/g, '_')}.onnx`, props);
    const e = await t.throwsAsync(resolve(file, 'run'), { instanceOf: UserError });
    t.true(e!.message.startsWith(file), e!.message);
    t.regex(e!.message, message);
  });
}

test('the preprocessing to record: a model\'s own adapted to a size, or ImageNet\'s with a note', async (t) => {
  const notes: string[] = [];
  const local = await resolve('my-model', 'weights');
  t.is(preprocessingAt(local, undefined, notes).crop, 32);
  t.is(notes.length, 0);
  const at64 = preprocessingAt(local, 64, notes);
  t.deepEqual([at64.crop, at64.resizeShorter, at64.inputSize], [64, 74, 64]);
  t.regex(notes[0]!, /evaluated at 32x32; at 64x64 the resize becomes 74/);
  const arch = await resolve('resnet_test', 'build');
  const assumed = preprocessingAt(arch, 320, notes);
  t.deepEqual([assumed.crop, assumed.resizeShorter], [320, 366]);
  t.regex(notes[1]!, /records no preprocessing: recording ImageNet's defaults at 320x320/);
});
