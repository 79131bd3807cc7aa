/**
 * zoo train's options against the data and run.json: integers too large to record exactly are refused at
 * the start (not at --resume), a batch larger than the training split is named as such even when the
 * recipe's warmup is on, a --val-split that leaves no validation image says why, and the --json start
 * event names the run directory zoo chose.
 */
import test from 'ava';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { planTraining } from '../src/api/train.js';
import { UserError } from '../src/errors.js';
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
