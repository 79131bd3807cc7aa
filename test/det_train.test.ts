/**
 * Detection runs end to end on a generated VOC-layout set: a short run lowers the loss, logs the VOC
 * mAP each epoch, checkpoints and exports a checked graph; an interrupted and resumed run ends exactly
 * where an uninterrupted one does; `zoo det eval`, `export`, `predict` and `generate` as a user runs
 * them, and their errors.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { runZoo } from './helpers/cli.js';
import { generateVocSet } from '../src/detection/voc_generate.js';
import { readVoc } from '../src/detection/voc.js';
import { trainDetection, evaluateDetection, detect } from '../src/api/detection.js';
import { readDetectionMetadata } from '../src/detection/metadata.js';
import { readSafetensors } from '../src/formats/safetensors.js';
import { vocResultFile } from '../src/detection/voc_eval.js';
import { loadDetectionBatch } from '../src/detection/transform.js';
import { createDetector } from '../src/detection/detector.js';
import { defaultFasterRcnnConfig } from '../src/detection/faster_rcnn.js';
import { detectionStep } from '../src/detection/train.js';
import { Rng } from '../src/util/random.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-det-'));
// The local zoo of these tests (--add-to-zoo) lives in the temporary directory.
process.env.ZOO_CACHE = path.join(tmp, 'cache');
let root = '';

test.before(async () => {
  await setupBackend();
  const set = await generateVocSet(path.join(tmp, 'voc'), { trainImages: 12, testImages: 6, minSide: 96, maxSide: 128, minItem: 28, maxItem: 48, maxObjects: 2, seed: 3 });
  root = set.root;
});

test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** A small, fast configuration (every part's size is an option). */
const SMALL = { backbone: 'resnet_test', minSize: 96, maxSize: 128, rpnChannels: 32, roiSize: 7, roisPerImage: 16, testProposals: 50, batchSize: 2, microBatch: 1, valSplit: 'test', lr: 0.01, warmup: 0.5 } as const;

test.serial('a short detection run lowers the loss, logs the VOC mAP each epoch, checkpoints, and exports a checked graph with its metadata', async (t) => {
  const out = path.join(tmp, 'run');
  const events: string[] = [];
  const before = tf.memory().numTensors;
  const r = await trainDetection({ ...SMALL, data: root, out, epochs: 3, addToZoo: 'test-detector' }, { onEvent: (e) => events.push(e.type) });
  t.deepEqual(r.added?.name, 'test-detector');
  t.is(tf.memory().numTensors, before, 'tensors left behind by a run (steps, validation, export check)');
  t.true(r.finished);
  t.is(r.records.length, 3);
  const first = r.records[0]!;
  const last = r.records.at(-1)!;
  t.true(last.loss < first.loss, `loss ${first.loss} -> ${last.loss}`);
  for (const rec of r.records) {
    t.true(rec.valMap07 >= 0 && rec.valMap07 <= 1);
    t.deepEqual(Object.keys(rec.terms ?? {}).sort(), ['rcnn_box', 'rcnn_cls', 'rpn_box', 'rpn_cls']);
  }
  const log = readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { epoch: number });
  t.deepEqual(log.map((l) => l.epoch), [1, 2, 3]);
  t.true(existsSync(path.join(out, 'checkpoint.safetensors')));
  t.true(r.check!.passed);
  t.true(events.includes('exported') && events.includes('validating') && events.includes('start'));
  const meta = await readDetectionMetadata(r.onnx!);
  t.deepEqual(meta.labels, (await readVoc(root, { split: 'test' })).classes);
  t.is(meta.minSize, 96);
  t.is(meta.maxSize, 128);
  // The exported graph evaluates as the run's last validation did (same images, ONNX Runtime instead of tfjs).
  const ev = await evaluateDetection({ model: out, data: root, split: 'test' });
  t.true(Math.abs(ev.result.map07 - last.valMap07) < 0.02, `ONNX ${ev.result.map07} vs tfjs ${last.valMap07}`);
});

test.serial('a training step that reads the RPN outputs asynchronously (as on WebGPU) gives the loss and gradients of the synchronous step bit for bit', async (t) => {
  const voc = await readVoc(root, { split: 'trainval' });
  const base = defaultFasterRcnnConfig(voc.classes.length);
  const det = createDetector('resnet_test', voc.classes.length, { seed: 2, config: { rpnChannels: 32, roiAlign: { ...base.roiAlign, outputSize: [7, 7] }, roiTargets: { ...base.roiTargets, batchSize: 16 } } });
  try {
    const batch = await loadDetectionBatch(voc.images, [3, 5], { minSize: 96, maxSize: 128, seed: 1, epoch: 0, flipProbability: 0.5 });
    const vars = [...det.trainableVariables().values()];
    const before = tf.memory().numTensors;
    const run = async (reads: 'sync' | 'async') => {
      const r = await detectionStep(det, batch, new Rng(9), vars, { reads });
      const grads = await Promise.all(vars.map((v) => r.grads[v.name]!.data()));
      tf.dispose(Object.values(r.grads));
      return { loss: r.loss, terms: r.terms, grads };
    };
    const sync = await run('sync');
    const early = await run('async');
    t.is(tf.memory().numTensors, before, 'tensors left behind');
    t.is(early.loss, sync.loss);
    t.deepEqual(early.terms, sync.terms);
    vars.forEach((v, k) => t.deepEqual(early.grads[k], sync.grads[k], v.name));
    t.true(sync.terms!.rcnn_box! > 0 && sync.terms!.rpn_box! > 0, 'positive anchors and regions were sampled');
  } finally {
    det.dispose();
  }
});

test.serial('an interrupted and resumed detection run ends exactly where an uninterrupted run ends', async (t) => {
  const whole = path.join(tmp, 'whole');
  const parts = path.join(tmp, 'parts');
  const base = { ...SMALL, data: root, epochs: 2, export: false };
  await trainDetection({ ...base, out: whole });
  const stop = new AbortController();
  let updates = 0;
  const first = await trainDetection(
    { ...base, out: parts },
    {
      signal: stop.signal,
      onEvent: (e) => {
        if (e.type === 'progress' && ++updates === 5) stop.abort(); // mid-epoch 1 (6 updates per epoch)
      },
    },
  );
  t.false(first.finished);
  const resumed = await trainDetection({ out: parts, resume: true, export: false });
  t.true(resumed.finished);
  const a = await readSafetensors(path.join(whole, 'checkpoint.safetensors'));
  const b = await readSafetensors(path.join(parts, 'checkpoint.safetensors'));
  let worst = 0;
  for (const [name, ta] of a.tensors) {
    const tb = b.tensors.get(name)!;
    const va = ta.data as Float32Array;
    const vb = tb.data as Float32Array;
    for (let i = 0; i < va.length; i++) worst = Math.max(worst, Math.abs(va[i]! - vb[i]!));
  }
  t.is(worst, 0, 'parameters and momentum identical');
  const la = readFileSync(path.join(whole, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number; valMap07: number }));
  const lb = readFileSync(path.join(parts, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number; valMap07: number }));
  t.deepEqual(lb.map((r) => r.valMap07), la.map((r) => r.valMap07));
  // Other options on resume are refused, naming them.
  const err = await t.throwsAsync(trainDetection({ out: parts, resume: true, epochs: 5 }));
  t.regex(err!.message, /epochs: 2 in the run, 5 given/);
});

test.serial('zoo det eval --detections: the ground truth as result files scores 1, shifted boxes less, JSON as documented', async (t) => {
  const voc = await readVoc(root, { split: 'test' });
  const dir = path.join(tmp, 'results');
  mkdirSync(dir, { recursive: true });
  const write = (shift: number) => {
    voc.classes.forEach((c, k) => {
      const lines = voc.images.flatMap((im) => im.objects.filter((o) => o.label === k).map((o) => `${im.id} 0.9 ${o.box[0] + shift} ${o.box[1]} ${o.box[2] + shift} ${o.box[3]}`));
      writeFileSync(vocResultFile(dir, c), lines.join('\n') + (lines.length ? '\n' : ''));
    });
  };
  write(0);
  const r = await runZoo(['det', 'eval', '--detections', dir, '--data', root, '--json']);
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { map07: number; map: number; classes: Record<string, { ap07: number | null; ap: number | null }> };
  t.is(j.map07, 1);
  t.is(j.map, 1);
  t.deepEqual(Object.keys(j.classes), [...voc.classes]);
  write(1000);
  const off = await evaluateDetection({ detections: dir, data: root });
  t.is(off.result.map07, 0);
  const table = await runZoo(['det', 'eval', '--detections', dir, '--data', root]);
  t.is(table.code, 0);
  t.regex(table.stdout, /mean/i);
});

test.serial('zoo det export, predict and generate as a user runs them; bad input is a one-line error', async (t) => {
  const run = path.join(tmp, 'run');
  const file = path.join(tmp, 'det.onnx');
  const ex = await runZoo(['det', 'export', run, '-o', file], { timeoutMs: 300_000 });
  t.is(ex.code, 0, ex.stderr);
  t.regex(ex.stdout, /matches the tfjs detector on 6 image and batch sizes/);
  const voc = await readVoc(root, { split: 'test' });
  const drawn = path.join(tmp, 'drawn');
  const p = await runZoo(['det', 'predict', file, voc.images[0]!.file, voc.images[1]!.file, '--threshold', '0', '--out', drawn]);
  t.is(p.code, 0, p.stderr);
  const j = JSON.parse(p.stdout) as { results: { image: string; detections: { label: string; score: number; box: number[] }[]; drawn: string }[] };
  t.is(j.results.length, 2);
  for (const res of j.results) {
    t.true(existsSync(res.drawn));
    for (const d of res.detections) t.true(voc.classes.includes(d.label));
  }
  // Library and command line agree.
  const lib = await detect(file, [voc.images[0]!.file], { threshold: 0 });
  t.is(lib[0]!.length, j.results[0]!.detections.length);

  const noData = await runZoo(['det', 'train', '--backbone', 'resnet_test', '--data', path.join(tmp, 'nowhere'), '--out', path.join(tmp, 'x')]);
  t.not(noData.code, 0);
  t.false(noData.stderr.includes('internal error'), noData.stderr);
  t.is(noData.stderr.trim().split('\n').length, 1, noData.stderr);
  const badArch = await runZoo(['det', 'train', '--backbone', 'resnet_nonexistent', '--data', root, '--out', path.join(tmp, 'y')]);
  t.not(badArch.code, 0);
  t.false(badArch.stderr.includes('internal error'), badArch.stderr);
  const notDet = await runZoo(['det', 'predict', path.join(tmp, 'nowhere.onnx'), voc.images[0]!.file]);
  t.not(notDet.code, 0);
  t.false(notDet.stderr.includes('internal error'), notDet.stderr);
  const env = { ...process.env, ZOO_BACKEND: 'wasm' };
  const byName = await runZoo(['det', 'predict', 'test-detector', voc.images[0]!.file, '--no-draw'], { env });
  t.is(byName.code, 0, byName.stderr);
  const nameAsClassifier = await runZoo(['predict', 'test-detector', voc.images[0]!.file], { env });
  t.not(nameAsClassifier.code, 0);
  t.regex(nameAsClassifier.stderr, /is a detector .*zoo det predict/);
  const asClassifier = await runZoo(['predict', run, voc.images[0]!.file]);
  t.not(asClassifier.code, 0);
  t.regex(asClassifier.stderr, /is a detection run .*zoo det predict/);
  const gen = await runZoo(['det', 'generate', path.join(tmp, 'gen'), '--train', '4', '--test', '2']);
  t.is(gen.code, 0, gen.stderr);
  t.regex(gen.stdout, /4 trainval .* 2 test/);
  const help = await runZoo(['det', 'train', '--help']);
  t.regex(help.stdout, /GluonCV's faster_rcnn_resnet50_v1b_voc/);
});

test.serial('a bad image stops a detection run before its first update, naming the file', async (t) => {
  const set = await generateVocSet(path.join(tmp, 'bad'), { trainImages: 4, testImages: 2, minSide: 96, maxSide: 128, minItem: 28, maxItem: 48, maxObjects: 2, seed: 4 });
  const test = await readVoc(set.root, { split: 'test' });
  writeFileSync(test.images[1]!.file, Buffer.from('not a jpeg'));
  const events: string[] = [];
  const err = await t.throwsAsync(trainDetection({ ...SMALL, data: set.root, out: path.join(tmp, 'bad-run'), epochs: 1 }, { onEvent: (e) => events.push(e.type) }));
  t.true(err!.message.includes(path.basename(test.images[1]!.file)), err!.message);
  t.false(events.includes('progress'), 'no update ran');
  t.false(existsSync(path.join(tmp, 'bad-run', 'checkpoint.safetensors')));
});

test.serial('--years 2007,2012 trains on the trainval union and validates on the years that have the test split', async (t) => {
  const dir = path.join(tmp, 'union');
  const set = await generateVocSet(dir, { trainImages: 4, testImages: 2, minSide: 96, maxSide: 128, minItem: 28, maxItem: 48, maxObjects: 2, seed: 5 });
  cpSync(set.yearDir, path.join(set.root, 'VOC2012'), { recursive: true });
  rmSync(path.join(set.root, 'VOC2012', 'ImageSets', 'Main', 'test.txt'));
  const r = await trainDetection({ ...SMALL, data: set.root, years: ['2007', '2012'], out: path.join(tmp, 'union-run'), epochs: 1, export: false });
  t.true(r.finished);
  t.is(r.config.data.train, 8, 'trainval of both years');
  t.is(r.config.data.val, 2, 'test of VOC2007 only');
  t.deepEqual(r.config.data.valFiles, ['VOC2007/test']);
});
