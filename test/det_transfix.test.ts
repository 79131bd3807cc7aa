/**
 * Detection runs and tools at their edges: a stop during validation keeps the epoch and resumes exactly;
 * EXIF-oriented photos in `zoo det predict` and in training data; --add-to-zoo refused before training;
 * a moved data directory resumes, a changed split does not; the exported file's name; predictions of
 * images sharing a stem; a segmentation run given as a backbone.
 */
import test from 'ava';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { setupBackend } from './helpers/backend.js';
import { runZoo } from './helpers/cli.js';
import { generateVocSet } from '../src/detection/voc_generate.js';
import { readVoc } from '../src/detection/voc.js';
import { drawDetections, exportDetection, trainDetection } from '../src/api/detection.js';
import { readDetectionMetadata } from '../src/detection/metadata.js';
import { checkpointTensorsDiffering, checkStopDuringValidation, readRunLog } from './helpers/run_compare.js';
import { addToLocalZoo } from '../src/hub/local.js';
import { UserError } from '../src/errors.js';
import type { DetEpochRecord } from '../src/detection/train.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-det-fix-'));
process.env.ZOO_CACHE = path.join(tmp, 'cache');
let root = '';

test.before(async () => {
  await setupBackend();
  const set = await generateVocSet(path.join(tmp, 'voc'), { trainImages: 8, testImages: 4, minSide: 96, maxSide: 128, minItem: 28, maxItem: 48, maxObjects: 2, seed: 3 });
  root = set.root;
});
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const SMALL = { backbone: 'resnet_test', minSize: 96, maxSize: 128, rpnChannels: 16, roiSize: 7, roisPerImage: 16, testProposals: 30, batchSize: 2, microBatch: 1, valSplit: 'test', lr: 0.01, warmup: 0.5 } as const;

const readLog = (dir: string) => readRunLog<DetEpochRecord>(dir);
const fields = (r: DetEpochRecord) => [r.epoch, r.loss, r.lr, r.updates, r.terms, r.valMap07, r.valMap];

let whole = '';
async function wholeRun(): Promise<string> {
  if (!whole) {
    whole = path.join(tmp, 'whole');
    await trainDetection({ ...SMALL, data: root, epochs: 2, export: false, out: whole });
  }
  return whole;
}

test.serial('a stop during validation stops within it, keeps the epoch, and the resumed run ends exactly as an uninterrupted one', async (t) => {
  const ref = await wholeRun();
  const out = path.join(tmp, 'stop-in-val');
  await checkStopDuringValidation(t, {
    run: (callbacks) => trainDetection({ ...SMALL, data: root, epochs: 2, export: false, out }, callbacks),
    resume: () => trainDetection({ out, resume: true, export: false }),
    out,
    ref,
    updates: 4,
    logFields: (dir) => readLog(dir).map(fields),
  });
});

/** Stops a run after `updates` updates (a Ctrl-C between updates). */
async function stoppedRun(out: string, data: string, updates: number): Promise<void> {
  const stop = new AbortController();
  let n = 0;
  const r = await trainDetection(
    { ...SMALL, data, epochs: 2, export: false, out },
    { signal: stop.signal, onEvent: (e) => void (e.type === 'progress' && ++n === updates && stop.abort()) },
  );
  if (r.finished) throw new Error('the run was to stop');
}

test.serial('a run whose data directory moved resumes with --data at the new place; a changed split is refused; a run.json without id digests still resumes', async (t) => {
  const ref = await wholeRun();
  const before = path.join(tmp, 'voc-here');
  const after = path.join(tmp, 'voc-there');
  cpSync(path.dirname(root), before, { recursive: true });
  const data = path.join(before, path.basename(root));
  const out = path.join(tmp, 'moved');
  await stoppedRun(out, data, 2);
  const saved = JSON.parse(readFileSync(path.join(out, 'run.json'), 'utf8')) as { data: { spec: string; trainIds?: string; valIds?: string } };
  t.is(saved.data.spec, path.resolve(data));
  t.regex(saved.data.trainIds ?? '', /^[0-9a-f]{16}$/);
  t.regex(saved.data.valIds ?? '', /^[0-9a-f]{16}$/);

  // The same counts and split files, another image in the training split: refused by its digest.
  const changed = path.join(tmp, 'voc-changed');
  cpSync(before, changed, { recursive: true });
  const split = path.join(changed, path.basename(root), 'VOC2007', 'ImageSets', 'Main');
  const trainIds = readFileSync(path.join(split, 'trainval.txt'), 'utf8').trim().split('\n');
  const testIds = readFileSync(path.join(split, 'test.txt'), 'utf8').trim().split('\n');
  writeFileSync(path.join(split, 'trainval.txt'), [...trainIds.slice(0, -1), testIds[0]!].map((id) => `${id}\n`).join(''));
  const refused = await t.throwsAsync(trainDetection({ out, resume: true, export: false, data: path.join(changed, path.basename(root)) }), { instanceOf: UserError });
  t.regex(refused!.message, /data\.trainIds: "[0-9a-f]{16}" in the run, "[0-9a-f]{16}" given/);
  t.notRegex(refused!.message, /spec/);

  renameSync(before, after);
  const gone = await t.throwsAsync(trainDetection({ out, resume: true, export: false }), { instanceOf: UserError });
  t.regex(gone!.message, /the run's data .*voc-here.* does not exist: if it has moved, give its new location with --data/);

  // A run.json of an older version, without the digests, resumes (counts and split files compared).
  const { trainIds: _t, valIds: _v, ...oldData } = saved.data;
  writeFileSync(path.join(out, 'run.json'), `${JSON.stringify({ ...saved, data: oldData }, null, 2)}\n`);
  const moved = path.join(after, path.basename(root));
  const resumed = await trainDetection({ out, resume: true, export: false, data: moved });
  t.true(resumed.finished);
  t.is((JSON.parse(readFileSync(path.join(out, 'run.json'), 'utf8')) as { data: { spec: string } }).data.spec, path.resolve(moved), 'run.json records where the data is now');
  t.is(await checkpointTensorsDiffering(ref, out), 0, 'the same data at another place trains the same run');
  t.deepEqual(readLog(out).map(fields), readLog(ref).map(fields));
});

let exported = '';
async function exportedFile(): Promise<string> {
  if (!exported) {
    const file = path.join(tmp, 'exports', 'elsewhere', 'det.onnx');
    mkdirSync(path.dirname(file), { recursive: true });
    await exportDetection(await wholeRun(), file);
    exported = file;
  }
  return exported;
}

test.serial('zoo det export names the model after the run directory wherever the file goes', async (t) => {
  const file = await exportedFile();
  t.is((await readDetectionMetadata(file)).name, path.basename(await wholeRun()));
});

test.serial('zoo det predict draws a photo with EXIF orientation 6 as it detects it, rotated', async (t) => {
  const file = await exportedFile();
  // A photo stored 120x90 whose EXIF orientation 6 shows it 90x120.
  const photos = path.join(tmp, 'photos');
  mkdirSync(photos, { recursive: true });
  const pixels = Buffer.alloc(120 * 90 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7) % 251;
  const rotated = path.join(photos, 'rotated.jpg');
  writeFileSync(rotated, await sharp(pixels, { raw: { width: 120, height: 90, channels: 3 } }).withMetadata({ orientation: 6 }).jpeg().toBuffer());
  const drawn = await drawDetections(rotated, [{ label: 'x', classIndex: 0, score: 0.9, box: [5, 5, 60, 100] }]);
  t.like(await sharp(drawn).metadata(), { width: 90, height: 120 });
  const outDir = path.join(tmp, 'drawn');
  const r = await runZoo(['det', 'predict', file, rotated, '--threshold', '0', '--out', outDir]);
  t.is(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout) as { results: { drawn: string; detections: { box: number[] }[] }[] };
  t.like(await sharp(result.results[0]!.drawn).metadata(), { width: 90, height: 120 });
  for (const d of result.results[0]!.detections) t.true(d.box[2]! <= 90 && d.box[3]! <= 120, `box ${d.box} inside the 90x120 photo`);
});

test.serial('zoo det predict refuses two images whose drawn files would have one name', async (t) => {
  const file = await exportedFile();
  const photos = path.join(tmp, 'stems');
  mkdirSync(path.join(photos, 'a'), { recursive: true });
  mkdirSync(path.join(photos, 'b'), { recursive: true });
  const pixels = { raw: { width: 120, height: 90, channels: 3 } } as const;
  const rotated = path.join(photos, 'a', 'rotated.jpg');
  writeFileSync(rotated, await sharp(Buffer.alloc(120 * 90 * 3, 77), pixels).jpeg().toBuffer());
  const other = path.join(photos, 'b', 'rotated.png');
  writeFileSync(other, await sharp(Buffer.alloc(120 * 90 * 3, 140), pixels).png().toBuffer());
  const clash = path.join(tmp, 'drawn-clash');
  const c = await runZoo(['det', 'predict', file, rotated, other, '--out', clash]);
  t.is(c.code, 2, c.stderr);
  t.regex(c.stderr, /rotated\.jpg and .*rotated\.png would both write rotated\.det\.png/);
  t.false(existsSync(clash));
  const json = await runZoo(['det', 'predict', file, rotated, other, '--no-draw']);
  t.is(json.code, 0, json.stderr);
});

test.serial('training data with EXIF orientations 5 to 8: checked and decoded as stored, as the annotations are', async (t) => {
  const dir = path.join(tmp, 'voc-exif');
  cpSync(path.dirname(root), dir, { recursive: true });
  const data = path.join(dir, path.basename(root));
  const tagged: string[] = [];
  for (const split of ['trainval', 'test']) {
    const voc = await readVoc(data, { split });
    for (const [k, im] of voc.images.filter((i) => i.width !== i.height).slice(0, 2).entries()) {
      const bytes = await sharp(im.file).withMetadata({ orientation: [6, 8, 5, 7][k]! }).jpeg({ quality: 95 }).toBuffer();
      writeFileSync(im.file, bytes);
      tagged.push(im.file);
    }
  }
  t.is(tagged.length, 4, 'non-square images to tag in both splits');
  for (const f of tagged) t.true(((await sharp(f).metadata()).orientation ?? 1) >= 5);
  const r = await trainDetection({ ...SMALL, data, epochs: 1, export: false, out: path.join(tmp, 'exif-run') });
  t.true(r.finished);
  t.true(Number.isFinite(r.records[0]!.loss));
});

test.serial('--add-to-zoo: a name the local zoo has, or --no-export, is refused before any work', async (t) => {
  await addToLocalZoo({
    name: 'taken-detector',
    arch: 'resnet_test',
    task: 'object-detection',
    onnxBytes: Buffer.from('not used'),
    preprocessing: { inputSize: 96, resizeShorter: 96, crop: 96, interpolation: 'bilinear', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    labels: ['a'],
    source: { url: 'test', format: 'zoo-detection-run', naming: 'zoo', file: 'test', sha256: '0'.repeat(64), sha1: '0'.repeat(40), bytes: 8 },
    check: { maxAbsDiff: 0, maxAbsLogit: 0, top1Agreement: 1, provider: 'cpu' },
  });
  for (const [request, message] of [
    [{ addToZoo: 'taken-detector' }, /the local zoo already has 'taken-detector': choose another --add-to-zoo name, pass --force/],
    [{ addToZoo: 'fresh-detector', export: false }, /--add-to-zoo needs the export: drop --no-export/],
  ] as const) {
    const out = path.join(tmp, `add-${request.addToZoo}`);
    let started = false;
    const err = await t.throwsAsync(trainDetection({ ...SMALL, data: root, epochs: 1, out, ...request }, { onBackend: () => (started = true) }), { instanceOf: UserError });
    t.regex(err!.message, message);
    t.is((err as UserError).exitCode, 2);
    t.false(started, 'refused before the backend started');
    t.false(existsSync(out));
  }
});

test.serial('a segmentation or detection run given as --backbone is named as what it is', async (t) => {
  for (const task of ['segmentation', 'detection']) {
    const dir = path.join(tmp, `${task}-run`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'run.json'), JSON.stringify({ task, arch: 'resnet_test', backbone: 'resnet_test', classes: ['a', 'b'] }));
    const err = await t.throwsAsync(trainDetection({ ...SMALL, backbone: dir, data: root, epochs: 1, out: path.join(tmp, `on-${task}`) }), { instanceOf: UserError });
    t.regex(err!.message, new RegExp(`${task}-run is a ${task} run \\(.*run\\.json says task '${task}'\\), not a classifier: --backbone takes a classification run`));
    t.notRegex(err!.message, /restore it/);
  }
});
