/**
 * Segmentation training end to end on a generated ADE-layout set: the loss ignores label 0 (unlabeled and
 * the padding of crops) in value and gradient; poly decay and the head's learning-rate multiplier; a short
 * run lowers the loss, logs pixAcc and mIoU each epoch, checkpoints and exports a checked graph, leaking
 * no tensors; an interrupted and resumed run ends exactly where an uninterrupted one does; `zoo seg eval`
 * (of a model and of prediction PNGs), `export`, `predict` and `generate` as a user runs them, and errors.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupBackend, maxAbsDiff } from './helpers/backend.js';
import { runZoo } from './helpers/cli.js';
import { generateAdeSet } from '../src/segmentation/ade_generate.js';
import { readAde } from '../src/segmentation/ade.js';
import { readLabelPng } from '../src/segmentation/png.js';
import { pixelCrossEntropy, segmentationLoss } from '../src/segmentation/loss.js';
import { readSegmentationMetadata } from '../src/segmentation/metadata.js';
import { evaluateSegmentation, segment, trainSegmentation } from '../src/api/segmentation.js';
import { pipeline } from '../src/index.js';
import { LrSchedule } from '../src/train/schedule.js';
import { SGD } from '../src/train/optim.js';
import { ParamStore } from '../src/models/params.js';
import { readSafetensors } from '../src/formats/safetensors.js';
import { registerCoreGradients } from '../src/backend/gradients.js';
import { Rng } from '../src/util/random.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-seg-'));
process.env.ZOO_CACHE = path.join(tmp, 'cache');
let root = '';

test.before(async () => {
  await setupBackend();
  await registerCoreGradients();
  const set = await generateAdeSet(path.join(tmp, 'ade'), { trainImages: 8, valImages: 4, minSide: 64, maxSide: 96, minItem: 24, maxItem: 48, maxObjects: 2, seed: 5 });
  root = set.root;
});

test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test.serial('pixel cross-entropy: the mean over labeled pixels only; unlabeled pixels move neither the loss nor the gradient', (t) => {
  const rng = new Rng(1);
  const [N, H, W, K] = [2, 3, 4, 5];
  const values = Float32Array.from({ length: N * H * W * K }, () => 3 * rng.normal());
  const labels = Uint8Array.from({ length: N * H * W }, (_, i) => (i % 3 === 0 ? 0 : 1 + (i % K)));
  // By hand, in float64
  let sum = 0;
  let count = 0;
  for (let p = 0; p < N * H * W; p++) {
    if (labels[p] === 0) continue;
    const row = values.subarray(p * K, (p + 1) * K);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    sum += lse - row[labels[p]! - 1]!;
    count++;
  }
  const before = tf.memory().numTensors;
  const x = tf.tensor4d(values, [N, H, W, K]);
  const loss = pixelCrossEntropy(x, labels);
  t.true(Math.abs(loss.dataSync()[0]! - sum / count) < 1e-5, `${loss.dataSync()[0]} vs ${sum / count}`);
  const g = tf.tidy(() => tf.grad((v: tf.Tensor) => pixelCrossEntropy(v as tf.Tensor4D, labels))(x).dataSync());
  for (let p = 0; p < N * H * W; p++) {
    const gp = g.subarray(p * K, (p + 1) * K);
    if (labels[p] === 0) t.true(gp.every((v) => v === 0), `pixel ${p} is unlabeled`);
    else t.true(Math.abs([...gp].reduce((a, v) => a + v, 0)) < 1e-6 && gp.some((v) => v !== 0));
  }
  // Changing the logits of unlabeled pixels changes nothing
  const changed = values.slice();
  for (let p = 0; p < N * H * W; p++) if (labels[p] === 0) for (let k = 0; k < K; k++) changed[p * K + k] = 100 * rng.normal();
  const x2 = tf.tensor4d(changed, [N, H, W, K]);
  const loss2 = pixelCrossEntropy(x2, labels);
  t.is(loss2.dataSync()[0], loss.dataSync()[0]);
  // No labeled pixel: loss 0
  const none = pixelCrossEntropy(x, new Uint8Array(N * H * W));
  t.true(none.dataSync()[0] === 0);
  // The auxiliary term is weighted
  const both = segmentationLoss(x, x2, labels, 0.5);
  t.true(Math.abs(both.total.dataSync()[0]! - 1.5 * loss.dataSync()[0]!) < 1e-5);
  t.throws(() => pixelCrossEntropy(x, Uint8Array.from(labels, (v) => (v === 1 ? K + 1 : v))), { message: /above the 5 classes/ });
  tf.dispose([x, x2, loss, loss2, none, both.seg, both.aux!, both.total]);
  t.is(tf.memory().numTensors, before);
});

test('poly decay: lr (1 - t/T)^0.9 after warmup, reaching 0 at the end', (t) => {
  const s = new LrSchedule({ baseLr: 0.01, batch: 16, linearScaling: false, itersPerEpoch: 10, epochs: 2, warmupEpochs: 0, decay: 'poly', power: 0.9 });
  t.is(s.at(0), 0.01);
  t.true(Math.abs(s.at(10) - 0.01 * Math.pow(0.5, 0.9)) < 1e-12);
  t.true(Math.abs(s.at(19) - 0.01 * Math.pow(1 / 20, 0.9)) < 1e-12);
  const w = new LrSchedule({ baseLr: 0.01, batch: 16, linearScaling: false, itersPerEpoch: 10, epochs: 2, warmupEpochs: 0.5, decay: 'poly' });
  t.true(Math.abs(w.at(4) - 0.01) < 1e-12);
  t.true(Math.abs(w.at(5) - 0.01) < 1e-12);
  t.true(w.at(6) < 0.01);
});

test.serial("SGD's learning-rate multipliers: a head parameter moves 10x as far as a backbone one for the same gradient", (t) => {
  const store = new ParamStore(
    [
      { name: 'backbone.w', shape: [3], role: 'weight', zero: true },
      { name: 'head.w', shape: [3], role: 'weight', zero: true },
    ],
    { seed: 0 },
  );
  for (const fused of [true, false]) {
    for (const n of ['backbone.w', 'head.w']) store.assign(n, tf.zeros([3]));
    const opt = new SGD(store, { momentum: 0, weightDecay: 0, fused, lrScale: new Map([['head.w', 10]]) });
    const g = tf.ones([3]);
    opt.step(new Map([['backbone.w', g], ['head.w', g]]), 0.1);
    t.true(maxAbsDiff(store.get('backbone.w').dataSync(), [-0.1, -0.1, -0.1]) < 1e-7, `fused ${fused}`);
    t.true(maxAbsDiff(store.get('head.w').dataSync(), [-1, -1, -1]) < 1e-6, `fused ${fused}`);
    g.dispose();
    opt.dispose();
  }
  store.dispose();
});

/** A small, fast configuration (every size is an option). */
const SMALL = { backbone: 'resnet_test', baseSize: 64, cropSize: 48, batchSize: 4, microBatch: 2, lr: 0.002 } as const;

test.serial('a short segmentation run lowers the loss, logs pixAcc and mIoU each epoch, checkpoints, exports a checked graph, and leaks nothing', async (t) => {
  const out = path.join(tmp, 'run');
  const events: string[] = [];
  const before = tf.memory().numTensors;
  const r = await trainSegmentation({ ...SMALL, data: root, out, epochs: 3 }, { onEvent: (e) => events.push(e.type) });
  t.is(tf.memory().numTensors, before, 'tensors left behind by a run (steps, validation, export check)');
  t.true(r.finished);
  t.is(r.records.length, 3);
  t.true(r.records.at(-1)!.loss < r.records[0]!.loss, `loss ${r.records[0]!.loss} -> ${r.records.at(-1)!.loss}`);
  for (const rec of r.records) {
    t.true(rec.valPixAcc >= 0 && rec.valPixAcc <= 1);
    t.true(rec.valMIoU >= 0 && rec.valMIoU <= 1);
    t.deepEqual(Object.keys(rec.terms ?? {}).sort(), ['aux', 'seg']);
  }
  const log = readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { epoch: number });
  t.deepEqual(log.map((l) => l.epoch), [1, 2, 3]);
  t.true(existsSync(path.join(out, 'checkpoint.safetensors')));
  t.true(r.check!.passed);
  t.is(r.check!.cases.length, 3);
  t.true(events.includes('exported') && events.includes('validating') && events.includes('start'));
  const meta = await readSegmentationMetadata(r.onnx!);
  t.deepEqual(meta.labels, [...(await readAde(root, { split: 'validation' })).classes]);
  // The exported graph in ONNX Runtime evaluates as the run's last validation did in tfjs.
  const ev = await evaluateSegmentation({ model: out, data: root });
  t.true(Math.abs(ev.result.mIoU - r.records.at(-1)!.valMIoU) < 1e-3, `ONNX ${ev.result.mIoU} vs tfjs ${r.records.at(-1)!.valMIoU}`);
  t.true(Math.abs(ev.result.pixAcc - r.records.at(-1)!.valPixAcc) < 1e-3);
});

test.serial('an interrupted and resumed segmentation run ends exactly where an uninterrupted run ends', async (t) => {
  const whole = path.join(tmp, 'whole');
  const parts = path.join(tmp, 'parts');
  const base = { ...SMALL, data: root, epochs: 2, export: false };
  await trainSegmentation({ ...base, out: whole });
  const stop = new AbortController();
  let updates = 0;
  const first = await trainSegmentation(
    { ...base, out: parts },
    {
      signal: stop.signal,
      onEvent: (e) => {
        if (e.type === 'progress' && ++updates === 1) stop.abort(); // mid-epoch 1 (2 updates per epoch)
      },
    },
  );
  t.false(first.finished);
  const resumed = await trainSegmentation({ out: parts, resume: true, export: false });
  t.true(resumed.finished);
  const a = await readSafetensors(path.join(whole, 'checkpoint.safetensors'));
  const b = await readSafetensors(path.join(parts, 'checkpoint.safetensors'));
  let worst = 0;
  for (const [name, ta] of a.tensors) {
    const va = ta.data as Float32Array;
    const vb = b.tensors.get(name)!.data as Float32Array;
    for (let i = 0; i < va.length; i++) worst = Math.max(worst, Math.abs(va[i]! - vb[i]!));
  }
  t.is(worst, 0, 'parameters, running statistics and momentum identical (crops, flips and dropout repeat)');
  const err = await t.throwsAsync(trainSegmentation({ out: parts, resume: true, epochs: 5 }));
  t.regex(err!.message, /epochs: 2 in the run, 5 given/);
});

test.serial('zoo seg eval, export, predict and generate as a user runs them; prediction PNGs evaluate as the model; bad input is a one-line error', async (t) => {
  const run = path.join(tmp, 'run');
  const preds = path.join(tmp, 'preds');
  const ev = await runZoo(['seg', 'eval', run, '--data', root, '--json', '--write-predictions', preds]);
  t.is(ev.code, 0, ev.stderr);
  const j = JSON.parse(ev.stdout) as { pixAcc: number; mIoU: number; classes: Record<string, { iou: number | null }> };
  const classes = (await readAde(root, { split: 'validation' })).classes;
  t.deepEqual(Object.keys(j.classes), [...classes]);
  const fromPngs = await runZoo(['seg', 'eval', '--predictions', preds, '--data', root, '--json']);
  t.is(fromPngs.code, 0, fromPngs.stderr);
  t.deepEqual(JSON.parse(fromPngs.stdout), j, 'the written predictions score exactly what the model scored');
  // The annotations themselves as predictions: a perfect score
  const gt = path.join(root, 'annotations', 'validation');
  const perfect = JSON.parse((await runZoo(['seg', 'eval', '--predictions', gt, '--data', root, '--json'])).stdout) as { pixAcc: number; mIoU: number };
  t.is(perfect.pixAcc, 1);
  t.is(perfect.mIoU, 1);

  const file = path.join(tmp, 'seg.onnx');
  const ex = await runZoo(['seg', 'export', run, '-o', file, '--argmax'], { timeoutMs: 300_000 });
  t.is(ex.code, 0, ex.stderr);
  t.regex(ex.stdout, /matches the tfjs segmenter on 3 image sizes/);
  const val = await readAde(root, { split: 'validation' });
  const masks = path.join(tmp, 'masks');
  const p = await runZoo(['seg', 'predict', file, val.samples[0]!.image, val.samples[1]!.image, '--out', masks]);
  t.is(p.code, 0, p.stderr);
  const pj = JSON.parse(p.stdout) as { results: { image: string; width: number; height: number; labels: string; overlay: string; classes: { label: string; fraction: number }[] }[] };
  t.is(pj.results.length, 2);
  for (const res of pj.results) {
    t.true(existsSync(res.overlay));
    const l = await readLabelPng(res.labels);
    t.deepEqual([l.width, l.height], [res.width, res.height]);
    t.true(Math.abs(res.classes.reduce((a, c) => a + c.fraction, 0) - 1) < 1e-3);
  }
  // Library and command line agree, and both agree with the written prediction PNG of the same image.
  const [lib] = await segment(file, [val.samples[0]!.image]);
  t.deepEqual([...(await readLabelPng(pj.results[0]!.labels)).data], [...lib!.labels]);
  t.deepEqual([...(await readLabelPng(path.join(preds, `${val.samples[0]!.id}.png`))).data], [...lib!.labels]);
  const seg = await pipeline('image-segmentation', file);
  const viaPipeline = await seg(readFileSync(val.samples[0]!.image));
  t.deepEqual([...viaPipeline.labels], [...lib!.labels], 'the pipeline on image bytes segments as segment() on the file');
  t.deepEqual(seg.labels, [...classes]);
  await seg.dispose();

  const noData = await runZoo(['seg', 'train', '--backbone', 'resnet_test', '--data', path.join(tmp, 'nowhere'), '--out', path.join(tmp, 'x')]);
  t.not(noData.code, 0);
  t.false(noData.stderr.includes('internal error'), noData.stderr);
  t.is(noData.stderr.trim().split('\n').length, 1, noData.stderr);
  const badBn = await runZoo(['seg', 'train', '--backbone', 'resnet_test', '--data', root, '--bn', 'sometimes', '--out', path.join(tmp, 'y')]);
  t.is(badBn.code, 2, badBn.stderr);
  t.regex(badBn.stderr, /--bn must be 'train' or 'frozen'/);
  const oneCrop = await runZoo(['seg', 'train', '--backbone', 'resnet_test', '--data', root, '--micro-batch', '1', '--batch-size', '2', '--out', path.join(tmp, 'z')]);
  t.is(oneCrop.code, 2, oneCrop.stderr);
  t.regex(oneCrop.stderr, /--bn frozen/);
  const notSeg = await runZoo(['seg', 'predict', path.join(tmp, 'nowhere.onnx'), val.samples[0]!.image]);
  t.not(notSeg.code, 0);
  t.false(notSeg.stderr.includes('internal error'), notSeg.stderr);
  const both = await runZoo(['seg', 'eval', run, '--predictions', preds, '--data', root]);
  t.is(both.code, 2, both.stderr);
  const gen = await runZoo(['seg', 'generate', path.join(tmp, 'gen'), '--train', '4', '--val', '2']);
  t.is(gen.code, 0, gen.stderr);
  t.regex(gen.stdout, /4 training .* 2 validation/);
  const help = await runZoo(['seg', 'train', '--help']);
  t.regex(help.stdout, /GluonCV's fcn_resnet50_ade/);

  // An exported segmenter re-exports (here with the labels output) and segments as before.
  const again = path.join(tmp, 'again.onnx');
  const re = await runZoo(['seg', 'export', path.join(run, 'model.onnx'), '-o', again, '--argmax'], { timeoutMs: 300_000 });
  t.is(re.code, 0, re.stderr);
  const [reLabels] = await segment(again, [val.samples[0]!.image]);
  t.deepEqual([...reLabels!.labels], [...lib!.labels]);
  // --predictions needs no images: a copy of the data with only the annotations and the class list.
  const annOnly = path.join(tmp, 'ann-only');
  cpSync(path.join(root, 'annotations'), path.join(annOnly, 'annotations'), { recursive: true });
  cpSync(path.join(root, 'classes.txt'), path.join(annOnly, 'classes.txt'));
  const noImages = await runZoo(['seg', 'eval', '--predictions', preds, '--data', annOnly, '--json']);
  t.is(noImages.code, 0, noImages.stderr);
  t.deepEqual(JSON.parse(noImages.stdout), j);
  // Two images that would write the same files, and an output path that is a file: user errors.
  const twin = path.join(tmp, 'twin');
  mkdirSync(twin, { recursive: true });
  cpSync(val.samples[0]!.image, path.join(twin, path.basename(val.samples[0]!.image)));
  const twice = await runZoo(['seg', 'predict', file, val.samples[0]!.image, path.join(twin, path.basename(val.samples[0]!.image))]);
  t.is(twice.code, 2, twice.stderr);
  t.regex(twice.stderr, /would both write/);
  const inTheWay = await runZoo(['seg', 'predict', file, val.samples[0]!.image, '--out', path.join(tmp, 'seg.onnx')]);
  t.is(inTheWay.code, 1, inTheWay.stderr);
  t.regex(inTheWay.stderr, /--out .* cannot be made a directory: a file is in the way/);
});

test.serial('--aux-weight 0 trains without the auxiliary head; a malformed run.json is refused by name on --resume', async (t) => {
  const out = path.join(tmp, 'noaux');
  const r = await trainSegmentation({ ...SMALL, data: root, out, epochs: 1, auxWeight: 0, export: false });
  t.true(r.finished);
  t.deepEqual(Object.keys(r.records[0]!.terms ?? {}), ['seg']);
  const cfg = JSON.parse(readFileSync(path.join(out, 'run.json'), 'utf8')) as Record<string, unknown>;
  delete cfg.fcn;
  writeFileSync(path.join(out, 'run.json'), JSON.stringify(cfg));
  const err = await t.throwsAsync(trainSegmentation({ out, resume: true }));
  t.regex(err!.message, /run\.json: 'fcn' \(an object\) is missing or malformed/);
});
