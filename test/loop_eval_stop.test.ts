/**
 * The run loop around an epoch's evaluation (zoo train's classification runs): the epoch's updates are
 * checkpointed before its validation, so a run killed during validation (a second Ctrl-C quits at once)
 * resumes by evaluating that epoch and ends exactly where an uninterrupted run ends; a stop requested
 * during validation stops the run as between updates.
 */
import test from 'ava';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { train, RUN_FILES, type TrainConfig, type EpochRecord } from '../src/train/trainer.js';
import { balancedPrefix, openTrainingData, type TrainingData } from '../src/train/data.js';
import { RECIPES } from '../src/train/recipes.js';
import { checkpointTensorsDiffering, readRunLog } from './helpers/run_compare.js';
import { readSafetensors } from '../src/formats/safetensors.js';
import { datasetSize } from '../src/data/dataset.js';

let data: TrainingData;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-loop-eval-'));

test.before(async () => {
  await setupBackend();
  const full = await openTrainingData('fashion');
  data = { ...full, train: balancedPrefix(full.train, 80), val: balancedPrefix(full.val, 60) };
});
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function config(): TrainConfig {
  return {
    arch: 'resnet_test',
    recipe: 'baseline',
    tricks: { ...RECIPES.baseline.tricks, warmupEpochs: 1, cosine: true },
    epochs: 2,
    batchSize: 10,
    microBatch: 10,
    imageSize: 16,
    baseLr: 0.1,
    momentum: 0.9,
    nesterov: true,
    weightDecay: 1e-4,
    seed: 1,
    minCropArea: 0.35,
    data: { spec: 'fashion[80/60]', train: datasetSize(data.train), val: datasetSize(data.val), classes: data.classes },
  };
}

const readLog = (dir: string) => readRunLog<EpochRecord>(dir);

test.serial('a run killed during validation keeps the epoch: the checkpoint holds its updates, a resume evaluates it first and ends as an uninterrupted run', async (t) => {
  const c = config();
  const whole = path.join(tmp, 'whole');
  const a = await train({ config: c, data, outDir: whole, workers: 1, export: false });
  a.model.dispose();

  // The directory as a kill during the first validation leaves it: copied at the first 'validating' event.
  const live = path.join(tmp, 'live');
  const killed = path.join(tmp, 'killed');
  let copied = false;
  const b = await train({
    config: c,
    data,
    outDir: live,
    workers: 1,
    export: false,
    onEvent: (e) => {
      if (e.type === 'validating' && !copied) {
        copied = true;
        cpSync(live, killed, { recursive: true });
      }
    },
  });
  b.model.dispose();
  t.true(copied);
  const mid = await readSafetensors(path.join(killed, RUN_FILES.checkpoint));
  t.like(JSON.parse(mid.metadata['zoo.checkpoint']!), { epoch: 0, updateInEpoch: 8, globalUpdate: 8, evaluating: true });
  t.deepEqual(readLog(killed), [], 'the epoch is not logged before its validation');

  const events: string[] = [];
  const resumed = await train({ config: c, data, outDir: killed, workers: 1, export: false, resume: true, onEvent: (e) => events.push(e.type) });
  resumed.model.dispose();
  t.true(resumed.finished);
  t.is(events.indexOf('progress') > events.indexOf('epoch'), true, 'the first epoch is evaluated (and logged) before any update');
  t.is(await checkpointTensorsDiffering(whole, killed), 0, 'tensors that differ from the uninterrupted run');
  const fields = (r: EpochRecord) => [r.epoch, r.loss, r.lr, r.updates, r.valTop1, r.valTop5, r.valLoss];
  t.deepEqual(readLog(killed).map(fields), readLog(whole).map(fields));
});

test.serial('a stop requested during validation stops the run with the epoch kept; the resumed run ends as an uninterrupted one', async (t) => {
  const c = config();
  const whole = path.join(tmp, 'whole');
  const out = path.join(tmp, 'stopped');
  const stop = new AbortController();
  const events: { type: string; reason?: string }[] = [];
  const first = await train({
    config: c,
    data,
    outDir: out,
    workers: 1,
    export: false,
    signal: stop.signal,
    onEvent: (e) => {
      events.push(e.type === 'stopped' ? { type: e.type, reason: e.reason } : { type: e.type });
      if (e.type === 'validating') stop.abort();
    },
  });
  first.model.dispose();
  t.false(first.finished);
  t.like(events.at(-1), { type: 'stopped', reason: 'interrupted' });
  t.is(events.filter((e) => e.type === 'validating').length, 1, 'the validation stops before its next batch (60 images, 2 batches)');
  const resumed = await train({ config: c, data, outDir: out, workers: 1, export: false, resume: true });
  resumed.model.dispose();
  t.true(resumed.finished);
  t.is(await checkpointTensorsDiffering(whole, out), 0);
  const fields = (r: EpochRecord) => [r.epoch, r.loss, r.lr, r.updates, r.valTop1, r.valTop5, r.valLoss];
  t.deepEqual(readLog(out).map(fields), readLog(whole).map(fields));
});
