/**
 * The library's first level, as a user's own code meets it: pipeline(), predict(), pull() with
 * progress, fromPretrained() (same weights, or a new classifier for one's own classes), and a training
 * loop of one's own over createModel / forward / tf.variableGrads / SGD from the package entry, in a
 * fresh process where nothing else registered tfjs-core's gradients.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { setupBackend, maxAbsDiff } from './helpers/backend.js';
import { FixtureServer } from './helpers/http_server.js';
import { safetensorsBytes, torchStateDict } from './helpers/weights_fixtures.js';
import { makeRunDir, RUN_LABELS } from './helpers/run_fixture.js';
import { fixtureBase, pinnedSafetensors } from './helpers/models_json_fixture.js';
import { createModel, fromPretrained, pipeline, predict, pull, readHubSettings, train, trainedLikeInit, UserError } from '../src/index.js';
import { ImageClassifier } from '../src/predict/classifier.js';
import { exportOnnx } from '../src/onnx/export.js';
import { loadTeacher } from '../src/train/teacher.js';
import { preprocessImage } from '../src/predict/predict.js';
import { resolveModelRef } from '../src/hub/resolve.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-api-'));
const runDir = join(dir, 'run');
const img = join(dir, 'img.png');
let server: FixtureServer;
let settings: ReturnType<typeof readHubSettings>;
const index = fileURLToPath(new URL('../src/index.js', import.meta.url));

test.before(async () => {
  await setupBackend();
  await makeRunDir(runDir);
  const px = Buffer.alloc(64 * 48 * 3);
  for (let k = 0; k < px.length; k++) px[k] = (k * 17) % 253;
  await sharp(px, { raw: { width: 64, height: 48, channels: 3 } }).toFile(img);

  // A published model of the test's own, served from 127.0.0.1 through a mirror.
  server = await FixtureServer.start();
  const m = createModel('resnet_test', { seed: 3 });
  await trainedLikeInit(m);
  const weights = safetensorsBytes(torchStateDict(m));
  m.dispose();
  server.route('/timm/apitest/model.safetensors', { data: Buffer.from(weights) });
  const entry = {
    ...fixtureBase(32),
    name: 'resnet_test.apitest',
    aliases: ['api-model'],
    sources: [pinnedSafetensors('https://fixtures.invalid/timm/apitest/model.safetensors', weights)],
  };
  writeFileSync(join(dir, 'models.json'), JSON.stringify({ version: 1, categories: {}, models: [entry] }));
  process.env.ZOO_MODELS_JSON = join(dir, 'models.json');
  settings = readHubSettings({ ZOO_CACHE: join(dir, 'cache'), ZOO_MIRROR: `https://fixtures.invalid=${server.url('')}` }, dir);
});

test.after.always(async () => {
  delete process.env.ZOO_MODELS_JSON;
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test.serial('pull() downloads with progress; pipeline() then classifies from the cache; predict() once', async (t) => {
  const seen: { file: string; received: number; total?: number }[] = [];
  const r = await pull('api-model', { settings, onProgress: (p) => seen.push(p) });
  t.false(r.fromCache);
  t.true(seen.length > 0);
  t.is(seen.at(-1)!.received, seen.at(-1)!.total ?? -1);
  t.is(seen[0]!.file, 'model.safetensors');
  t.true((await pull('api-model', { settings })).fromCache);

  const classify = await pipeline('image-classification', 'api-model', { settings });
  try {
    t.is(classify.task, 'image-classification');
    t.is(classify.model, 'resnet_test.apitest');
    t.is(classify.preprocessing.crop, 32);
    const top = await classify(img, { topk: 3 });
    t.is(top.length, 3);
    t.true(top[0]!.probability >= top[1]!.probability);
    const two = await classify([img, img]);
    t.is(two.length, 2);
    t.deepEqual(two[0]!.map((c) => c.index), two[1]!.map((c) => c.index));
    const bytes = await sharp(img).png().toBuffer();
    t.deepEqual((await classify(bytes))[0]!.index, two[0]![0]!.index, 'encoded bytes work as well as a path');
    await t.throwsAsync(classify(join(dir, 'missing.png')), { instanceOf: UserError, message: /does not exist/ });
    for (const bad of [{ batchSize: 0 }, { batchSize: Number.NaN }, { topk: -1 }]) {
      await t.throwsAsync(classify(img, bad), { instanceOf: UserError, message: /must be a positive integer/ }, JSON.stringify(bad));
    }
    const each = await classify.classifyEach([img, join(dir, 'missing.png')]);
    t.truthy(each[0]!.top);
    t.regex(each[1]!.error!, /missing\.png' does not exist/);
  } finally {
    await classify.dispose();
  }
  const once = await predict(runDir, [img], { topk: 2, settings });
  t.true(RUN_LABELS.includes(once[0]!.top![0]!.label));
});

test.serial('a published model that is not pulled is pulled by pipeline() unless pull: false', async (t) => {
  const fresh = readHubSettings({ ZOO_CACHE: join(dir, 'cache2'), ZOO_MIRROR: `https://fixtures.invalid=${server.url('')}` }, dir);
  await t.throwsAsync(pipeline('image-classification', 'api-model', { settings: fresh, pull: false }), { instanceOf: UserError, message: /not in the local cache yet/ });
  const p = await pipeline('image-classification', 'api-model', { settings: fresh });
  t.is((await p(img)).length, 5);
  await p.dispose();
  await t.throwsAsync(pipeline('depth-estimation' as 'image-classification', 'api-model', { settings }), { instanceOf: UserError, message: /unknown pipeline task 'depth-estimation'; the tasks are image-classification, object-detection/ });
  // A classifier given to the detection pipeline is refused by name.
  await t.throwsAsync(pipeline('object-detection', 'api-model', { settings }), { instanceOf: UserError, message: /'api-model' is not a detector/ });
});

test.serial('fromPretrained() gives the tfjs model of the weights, or a new classifier for other classes', async (t) => {
  const { model, meta, classifierLoaded } = await fromPretrained(runDir, { settings });
  try {
    t.true(classifierLoaded);
    t.deepEqual(meta.labels, RUN_LABELS);
    // The tfjs model computes what the run's ONNX file computes, within the export check's 1e-4.
    const resolved = await resolveModelRef(runDir, { purpose: 'run', settings });
    const clf = await ImageClassifier.open(resolved);
    const x = await preprocessImage(img, clf.preprocessing);
    const onnx = await clf.logits(x, 1);
    await clf.dispose();
    const c = clf.preprocessing.crop;
    const nhwc = new Float32Array(x.length);
    for (let ch = 0; ch < 3; ch++) for (let i = 0; i < c * c; i++) nhwc[i * 3 + ch] = x[ch * c * c + i]!;
    tf.tidy(() => model.forward(tf.zeros([1, c, c, 3]))); // the first pass caches the folded batch norm
    const before = tf.memory().numTensors;
    const y = tf.tidy(() => model.forward(tf.tensor4d(nhwc, [1, c, c, 3])));
    t.true(maxAbsDiff(y.dataSync(), onnx) < 1e-4);
    y.dispose();
    // The stage features are a fixed tuple: C2..C5 with the shapes featureInfo promises.
    const feats = tf.tidy(() => model.features(tf.zeros([1, 32, 32, 3])));
    t.deepEqual(feats.map((f) => f.shape[3]), model.featureInfo.map((f) => f.channels));
    tf.dispose(feats);
    t.is(tf.memory().numTensors, before, 'no tensor leaked');

    const fine = await fromPretrained(runDir, { numClasses: 7, settings });
    try {
      t.false(fine.classifierLoaded);
      t.is(fine.model.numClasses, 7);
      t.is(fine.meta.labels, undefined, "the run's class names do not describe the new classifier");
      t.deepEqual(fine.model.params.get('layer4.0.conv3.weight').dataSync(), model.params.get('layer4.0.conv3.weight').dataSync());
      t.deepEqual(fine.model.params.get('fc.weight').shape, [model.params.get('fc.weight').shape[0]!, 7]);
    } finally {
      fine.model.dispose();
    }
  } finally {
    model.dispose();
  }
  await t.throwsAsync(fromPretrained('resnet_test', { settings }), { instanceOf: UserError, message: /is an architecture, without weights/ });
  // A weights file that names no classes: its classifier's size is read from the file, then replaced.
  const plain = join(dir, 'plain.safetensors');
  const m = createModel('resnet_test', { numClasses: 4, seed: 2 });
  writeFileSync(plain, safetensorsBytes(torchStateDict(m)));
  m.dispose();
  const four = await fromPretrained(plain, { arch: 'resnet_test', settings });
  t.is(four.model.numClasses, 4);
  four.model.dispose();
  const six = await fromPretrained(plain, { arch: 'resnet_test', numClasses: 6, settings });
  t.false(six.classifierLoaded);
  t.is(six.model.numClasses, 6);
  six.model.dispose();
});

test.serial('a teacher that does not fit the student is refused when it is loaded, not mid-run', async (t) => {
  const m = createModel('resnet_test', { numClasses: 3 });
  const at224 = join(dir, 'teacher224.onnx');
  writeFileSync(at224, await exportOnnx(m, { imageSize: 224 }));
  m.dispose();
  await t.throwsAsync(loadTeacher(at224, { numClasses: 3, imageSize: 32 }), { instanceOf: UserError, message: /takes 224x224 images and the student trains at 32x32; export the teacher at the student's size/ });
  await t.throwsAsync(loadTeacher(at224, { numClasses: 10, imageSize: 224 }), { instanceOf: UserError, message: /outputs 3 classes; the student has 10/ });
  const ok = await loadTeacher(at224, { numClasses: 3, imageSize: 224 });
  await ok.dispose();
  t.pass();
});

test.serial('train() runs the paper\'s training with callbacks; a signal stops it with a checkpoint and resume: true finishes it', async (t) => {
  const out = join(dir, 'api-run');
  const request = { arch: 'resnet_test', data: 'fashion', recipe: 'baseline' as const, epochs: 2, batchSize: 16, imageSize: 16, limitTrain: 80, limitVal: 20, out, warmup: false as const };
  const stop = new AbortController();
  const progress: number[] = [];
  const first = await train(request, {
    signal: stop.signal,
    onProgress: (p) => {
      progress.push(p.update);
      if (p.epoch === 1 && p.update === 2) stop.abort();
    },
  });
  t.false(first.finished);
  t.deepEqual(progress.slice(0, 6), [1, 2, 3, 4, 5, 1], '5 updates per epoch of 80 images in batches of 16');
  const epochs: number[] = [];
  const rest = await train({ out, resume: true }, { onEpoch: (r) => epochs.push(r.epoch) });
  t.true(rest.finished);
  t.deepEqual(epochs, [2]);
  t.is(rest.config.arch, 'resnet_test', 'the architecture comes from run.json');
  t.is(rest.records.length, 2);
  t.truthy(rest.onnx);
  const p = await pipeline('image-classification', out);
  t.deepEqual(p.labels, rest.config.data.classes);
  await p.dispose();
  await t.throwsAsync(train({ out, resume: true, epochs: 3 }), { instanceOf: UserError, message: /--epochs: 2 in the run, 3 now/ });
  await t.throwsAsync(train({ data: 'fashion' }), { instanceOf: UserError, message: /needs an architecture/ });
});

/** Runs an ES module in a fresh Node process; resolves with its exit code and output. */
function runScript(source: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = join(dir, `script-${crypto.randomBytes(4).toString('hex')}.mjs`);
  writeFileSync(file, source);
  return new Promise((resolve) => {
    execFile(process.execPath, [file], { env: { ...process.env, ZOO_CACHE: join(dir, 'cache') }, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('a training loop of one\'s own over the public API works in a fresh process, and lowers the loss', async (t) => {
  const r = await runScript(`
    import { tf, initBackend, createModel, SGD } from ${JSON.stringify(index)};
    await initBackend({ backend: 'wasm' });
    const model = createModel('resnet_test', { numClasses: 3, seed: 1 });
    const opt = new SGD(model.params, { momentum: 0.9, weightDecay: 0 });
    const x = tf.randomNormal([6, 32, 32, 3], 0, 1, 'float32', 7);
    const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2], 'int32'), 3);
    const losses = [];
    for (let step = 0; step < 8; step++) {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.forward(x, { mode: 'train' })));
      losses.push((await value.data())[0]);
      value.dispose();
      opt.step(model.gradientsByName(grads), 0.05);
      tf.dispose(Object.values(grads));
    }
    console.log(JSON.stringify(losses));
  `);
  t.is(r.code, 0, r.stderr);
  const losses = JSON.parse(r.stdout.trim()) as number[];
  t.true(losses.every(Number.isFinite));
  t.true(losses.at(-1)! < losses[0]! * 0.9, `loss ${losses[0]} -> ${losses.at(-1)}`);
});

test('without a backend, createModel and a training pass say what to call first', async (t) => {
  const r = await runScript(`
    import { tf, createModel, initBackend } from ${JSON.stringify(index)};
    try { createModel('resnet_test'); } catch (e) { console.log(e.message); }
    await initBackend({ backend: 'cpu', gradients: false });
    const model = createModel('resnet_test');
    try { model.forward(tf.zeros([1, 16, 16, 3]), { mode: 'train' }); } catch (e) { console.log(e.message); }
  `);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /no tfjs backend is active: call `await initBackend\(\)`/);
  t.regex(r.stdout, /tfjs-core's gradient functions are not registered: call `await initBackend\(\)` \(or `await registerCoreGradients\(\)`\)/);
});
