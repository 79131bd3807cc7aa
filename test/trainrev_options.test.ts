/**
 * zoo train's options against the data and run.json: integers too large to record exactly are refused at
 * the start (not at --resume), a batch larger than the training split is named as such even when the
 * recipe's warmup is on, a --val-split that leaves no validation image says why, and the --json start
 * event names the run directory zoo chose; data that moved resumes with --data; --val-split is refused
 * where the data has its own validation split.
 */
import test from 'ava';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { planTraining } from '../src/api/train.js';
import { UserError } from '../src/errors.js';
import { encodeIdx } from '../src/data/idx.js';
import { openTrainingData } from '../src/train/data.js';
import { runZoo } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-trainrev-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const SMALL = { arch: 'resnet_test', data: 'fashion', limitTrain: 200, limitVal: 100, imageSize: 16, batchSize: 10, fp16: false } as const;

test('integers past 2^53, which run.json cannot hold exactly, are refused before the run starts', async (t) => {
  const cases: [Record<string, number>, RegExp][] = [
    [{ limitVal: 1e20 }, /^--limit-val 100000000000000000000 is past the integers zoo records exactly/],
    [{ limitTrain: 2 ** 60 }, /^--limit-train \d+ is past the integers zoo records exactly/],
    [{ seed: 1e30 }, /^--seed 1e\+30 is past the integers zoo records exactly/],
    [{ epochs: 1e20, warmup: 1 }, /^--epochs 100000000000000000000 is past the integers zoo records exactly/],
  ];
  for (const [fields, message] of cases) {
    const err = await t.throwsAsync(planTraining({ ...SMALL, ...fields }), { instanceOf: UserError }, JSON.stringify(fields));
    t.regex(err!.message, message);
    t.is((err as UserError).exitCode, 2);
  }
  // The largest exact integer is still taken.
  const plan = await planTraining({ ...SMALL, limitVal: Number.MAX_SAFE_INTEGER, epochs: 1, warmup: false });
  t.is(plan.config.data.limitVal, Number.MAX_SAFE_INTEGER);
});

test("a batch larger than the training split is named, not the recipe's warmup", async (t) => {
  // The recipe's 5-epoch warmup is fitted to a run only when one batch fits: the batch is what is wrong.
  const err = await t.throwsAsync(planTraining({ ...SMALL, epochs: 1, batchSize: 1000 }), { instanceOf: UserError });
  t.regex(err!.message, /^the training split has 200 images, fewer than one batch of 1000; lower --batch-size$/);
});

test('--val-split over classes of one image each says why validation is empty', async (t) => {
  const root = join(dir, 'single');
  for (const c of ['a', 'b']) {
    mkdirSync(join(root, c), { recursive: true });
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).png().toFile(join(root, c, 'x.png'));
  }
  const err = await t.throwsAsync(planTraining({ ...SMALL, data: root, limitTrain: undefined as never, limitVal: undefined as never, batchSize: 1, valSplit: 0.5, epochs: 1 }), {
    instanceOf: UserError,
  });
  t.regex(err!.message, /^--val-split 0\.5 left no validation images: every class has a single image/);
  t.is((err as UserError).exitCode, 2);
});

test('--json: the start event names the run directory zoo chose when --out is not given', async (t) => {
  const cwd = join(dir, 'cwd');
  mkdirSync(cwd);
  const args = ['train', 'resnet_test', '--data', 'fashion', '--limit-train', '20', '--limit-val', '10', '--image-size', '16', '--batch-size', '10', '--no-fp16'];
  const r = await runZoo([...args, '--epochs', '1', '--warmup', '0', '--no-export', '--json'], { cwd, env: { ...process.env, ZOO_BACKEND: 'wasm', ZOO_CACHE: join(dir, 'cache') }, timeoutMs: 300_000 });
  t.is(r.code, 0, r.stderr);
  const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const runs = readdirSync(join(cwd, 'runs'));
  t.is(runs.length, 1);
  const outDir = join('runs', runs[0]!);
  t.like(events.find((e) => e.event === 'start'), { event: 'start', outDir });
  t.like(events.at(-1), { event: 'finished', outDir });
});

test('a run whose image folder moved resumes with --data at the new place, which run.json then records', async (t) => {
  const env = { ...process.env, ZOO_BACKEND: 'wasm', ZOO_CACHE: join(dir, 'cache') };
  const data = join(dir, 'photos');
  for (const [c, colour] of [['cat', '#c04020'], ['dog', '#2040c0']] as const) {
    mkdirSync(join(data, c), { recursive: true });
    for (let i = 0; i < 4; i++) await sharp({ create: { width: 12 + i, height: 10, channels: 3, background: colour } }).png().toFile(join(data, c, `${i}.png`));
  }
  const out = join(dir, 'moved-run');
  const args = ['--image-size', '16', '--batch-size', '2', '--no-fp16', '--warmup', '0', '--epochs', '1', '--no-export'];
  const first = await runZoo(['train', 'resnet_test', '--data', data, '--val-split', '0.25', ...args, '--out', out], { env, timeoutMs: 300_000 });
  t.is(first.code, 0, first.stderr);
  const moved = join(dir, 'photos-moved');
  renameSync(data, moved);
  const lost = await runZoo(['train', '--out', out, '--resume', '--no-export'], { env });
  t.is(lost.code, 2, lost.stderr);
  t.regex(lost.stderr, /--resume: the run's data .*photos does not exist: if it has moved, give its new location with --data/);
  const again = await runZoo(['train', '--out', out, '--resume', '--no-export', '--data', moved], { env, timeoutMs: 300_000 });
  t.is(again.code, 0, again.stderr);
  t.is(JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')).data.spec, moved);
  // Other data at the new place is still refused by its counts.
  rmSync(join(moved, 'dog', '3.png'));
  const other = await runZoo(['train', '--out', out, '--resume', '--no-export'], { env });
  t.is(other.code, 2, other.stderr);
  t.regex(other.stderr, /training images \(--data, --limit-train, --val-split\): 6 in the run, 5 now/);
});

test('--val-split on data with its own validation split (the embedded set, IDX files) is refused, not ignored', async (t) => {
  const embedded = await t.throwsAsync(planTraining({ ...SMALL, valSplit: 0.1, epochs: 1 }), { instanceOf: UserError });
  t.regex(embedded!.message, /^--val-split splits an image folder; the embedded Fashion-MNIST subset \('fashion'\) has its own validation split/);
  t.is((embedded as UserError).exitCode, 2);
  const idx = join(dir, 'idx');
  mkdirSync(idx);
  const images = encodeIdx([4, 8, 8], new Uint8Array(4 * 64).fill(9));
  const labels = encodeIdx([4], Uint8Array.from([0, 1, 0, 1]));
  for (const p of ['train', 't10k']) {
    writeFileSync(join(idx, `${p}-images-idx3-ubyte`), images);
    writeFileSync(join(idx, `${p}-labels-idx1-ubyte`), labels);
  }
  const err = await t.throwsAsync(openTrainingData(idx, { valFraction: 0.5 }), { instanceOf: UserError });
  t.regex(err!.message, /the IDX data in .*idx \(its t10k files\) has its own validation split/);
  t.is((await openTrainingData(idx)).val.labels.length, 4);
});

test('a run that recorded --val-split on the embedded set, where it had no effect, still resumes', async (t) => {
  const env = { ...process.env, ZOO_BACKEND: 'wasm', ZOO_CACHE: join(dir, 'cache') };
  const out = join(dir, 'old-val-split');
  const args = ['--data', 'fashion', '--limit-train', '20', '--limit-val', '10', '--image-size', '16', '--batch-size', '10', '--no-fp16', '--warmup', '0', '--epochs', '1', '--no-export'];
  const first = await runZoo(['train', 'resnet_test', ...args, '--out', out], { env, timeoutMs: 300_000 });
  t.is(first.code, 0, first.stderr);
  // What such a run wrote: the fraction beside the embedded set's own splits.
  const file = join(out, 'run.json');
  const c = JSON.parse(readFileSync(file, 'utf8'));
  writeFileSync(file, JSON.stringify({ ...c, data: { ...c.data, valSplit: 0.1 } }));
  const again = await runZoo(['train', '--out', out, '--resume', '--no-export'], { env, timeoutMs: 300_000 });
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /finished 1 epochs/);
});
