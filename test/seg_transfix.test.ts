/**
 * Segmentation runs at their edges: a stop during validation keeps the epoch and resumes exactly; a
 * moved data directory resumes, a changed split does not; a detection run given as a backbone.
 */
import test from 'ava';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { generateAdeSet } from '../src/segmentation/ade_generate.js';
import { trainSegmentation } from '../src/api/segmentation.js';
import { checkpointTensorsDiffering, checkStopDuringValidation, readRunLog } from './helpers/run_compare.js';
import { registerCoreGradients } from '../src/backend/gradients.js';
import { UserError } from '../src/errors.js';
import type { SegEpochRecord } from '../src/segmentation/train.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-seg-fix-'));
process.env.ZOO_CACHE = path.join(tmp, 'cache');
let root = '';

test.before(async () => {
  await setupBackend();
  await registerCoreGradients();
  const set = await generateAdeSet(path.join(tmp, 'ade'), { trainImages: 8, valImages: 4, minSide: 64, maxSide: 96, minItem: 24, maxItem: 48, maxObjects: 2, seed: 5 });
  root = set.root;
});
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const SMALL = { backbone: 'resnet_test', baseSize: 64, cropSize: 48, batchSize: 4, microBatch: 2, lr: 0.002 } as const;

const readLog = (dir: string) => readRunLog<SegEpochRecord>(dir);
const fields = (r: SegEpochRecord) => [r.epoch, r.loss, r.lr, r.updates, r.terms, r.valPixAcc, r.valMIoU];

let whole = '';
async function wholeRun(): Promise<string> {
  if (!whole) {
    whole = path.join(tmp, 'whole');
    await trainSegmentation({ ...SMALL, data: root, epochs: 2, export: false, out: whole });
  }
  return whole;
}

test.serial('a stop during validation stops within it, keeps the epoch, and the resumed run ends exactly as an uninterrupted one', async (t) => {
  const ref = await wholeRun();
  const out = path.join(tmp, 'stop-in-val');
  await checkStopDuringValidation(t, {
    run: (callbacks) => trainSegmentation({ ...SMALL, data: root, epochs: 2, export: false, out }, callbacks),
    resume: () => trainSegmentation({ out, resume: true, export: false }),
    out,
    ref,
    updates: 2,
    logFields: (dir) => readLog(dir).map(fields),
  });
});

test.serial('a run whose data directory moved resumes with --data at the new place; a split with other samples is refused', async (t) => {
  const ref = await wholeRun();
  const before = path.join(tmp, 'ade-here');
  const after = path.join(tmp, 'ade-there');
  cpSync(root, before, { recursive: true });
  const out = path.join(tmp, 'moved');
  const stop = new AbortController();
  const first = await trainSegmentation({ ...SMALL, data: before, epochs: 2, export: false, out }, { signal: stop.signal, onEvent: (e) => void (e.type === 'progress' && stop.abort()) });
  t.false(first.finished);

  // As many training samples, one of them another: refused by the ids' digest.
  const changed = path.join(tmp, 'ade-changed');
  cpSync(before, changed, { recursive: true });
  const first1 = readdirSync(path.join(changed, 'images', 'training')).sort()[0]!;
  const id = first1.replace(/\.[^.]+$/, '');
  renameSync(path.join(changed, 'images', 'training', first1), path.join(changed, 'images', 'training', `zz_${first1}`));
  renameSync(path.join(changed, 'annotations', 'training', `${id}.png`), path.join(changed, 'annotations', 'training', `zz_${id}.png`));
  const refused = await t.throwsAsync(trainSegmentation({ out, resume: true, export: false, data: changed }), { instanceOf: UserError });
  t.regex(refused!.message, /data\.trainIds: "[0-9a-f]{16}" in the run, "[0-9a-f]{16}" given/);
  t.notRegex(refused!.message, /spec/);

  renameSync(before, after);
  const gone = await t.throwsAsync(trainSegmentation({ out, resume: true, export: false }), { instanceOf: UserError });
  t.regex(gone!.message, /the run's data .*ade-here does not exist: if it has moved, give its new location with --data/);
  const resumed = await trainSegmentation({ out, resume: true, export: false, data: after });
  t.true(resumed.finished);
  t.is((JSON.parse(readFileSync(path.join(out, 'run.json'), 'utf8')) as { data: { spec: string } }).data.spec, path.resolve(after));
  t.is(await checkpointTensorsDiffering(ref, out), 0, 'the same data at another place trains the same run');
  t.deepEqual(readLog(out).map(fields), readLog(ref).map(fields));
});

test.serial('a detection or segmentation run given as --backbone is named as what it is', async (t) => {
  for (const task of ['detection', 'segmentation']) {
    const dir = path.join(tmp, `${task}-run`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'run.json'), JSON.stringify({ task, arch: 'resnet_test', backbone: 'resnet_test', classes: ['a', 'b'] }));
    const err = await t.throwsAsync(trainSegmentation({ ...SMALL, backbone: dir, data: root, epochs: 1, out: path.join(tmp, `on-${task}`) }), { instanceOf: UserError });
    t.regex(err!.message, new RegExp(`${task}-run is a ${task} run \\(.*run\\.json says task '${task}'\\), not a classifier: --backbone takes a classification run`));
    t.notRegex(err!.message, /restore it/);
  }
});
