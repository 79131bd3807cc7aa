/**
 * zoo train, eval and plot from the command line: bad input, a small run that ends in the local zoo,
 * Ctrl-C then --resume with only --out, --json with a recipe's warmup fitted to a short run, corrupt run
 * files, and image folders: split by --val-split, with a FIFO, with a corrupt validation image.
 */
import test from 'ava';
import { runZoo, ZOO_CLI } from './helpers/cli.js';
import { spawn, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';

const dir = mkdtempSync(join(tmpdir(), 'zoo-cli-train-'));
const env = { ...process.env, ZOO_BACKEND: 'wasm', ZOO_CACHE: join(dir, 'cache') };

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const zoo = (...args: string[]) => runZoo(args, { env, timeoutMs: 300_000 });

const SMALL = ['--data', 'fashion', '--limit-train', '200', '--limit-val', '100', '--image-size', '16', '--batch-size', '10', '--warmup', '1', '--no-fp16'];

test('zoo train rejects bad input before any work, with exit code 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['train', 'resnet_test', ...SMALL, '--warmup', '5', '--epochs', '2'], /--warmup 5 is longer than the run \(2 epochs\)/],
    [['train', ...SMALL], /zoo train needs an architecture .* or --out DIR --resume/],
    [['train', '--out', join(dir, 'no-such-run'), '--resume'], /--resume: .*no-such-run does not exist/],
    [['train', 'resnet_test', ...SMALL, '--batch-size', '20', '--micro-batch', '8'], /multiple of --micro-batch/],
    [['train', 'resnet_test', ...SMALL, '--resume'], /--resume needs --out/],
    [['train', 'resnet_test', ...SMALL, '--distill'], /--distill needs a teacher/],
    [['train', 'resnet_test', ...SMALL, '--recipe', 'fast'], /Allowed choices are baseline, efficient, best/],
    [['train', 'resnet_test', ...SMALL, '--data', join(dir, 'missing')], /no such directory/],
    [['train', 'resnet_test', ...SMALL, '--label-smoothing', '1.5'], /--label-smoothing must be in \[0, 1\)/],
    [['train', 'resnet_test', ...SMALL, '--batch-size', '1000'], /fewer than one batch/],
    [['train', 'resnet51', ...SMALL], /unknown model 'resnet51'/],
    [['train', 'resnet_test', ...SMALL, '--add-to-zoo', 'resnet50d-best'], /'resnet50d-best' is an alias of the published model resnet50d/],
    [['train', 'resnet_test', ...SMALL, '--add-to-zoo', 'resnet50d.gluon_in1k'], /'resnet50d.gluon_in1k' is a published model's name/],
    [['train', 'resnet_test', ...SMALL, '--recipe', 'efficient', '--epochs', '12', '--warmup', '5'], /--warmup 5 reaches past the first step decay \(epoch 3/],
    [['train', 'resnet_test', ...SMALL, '--val-split', '0'], /--val-split must be in \(0, 1\)/],
  ];
  for (const [args, msg] of cases) {
    const r = await zoo(...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, msg, args.join(' '));
  }
});

test.serial('a small run prints the recipe and progress, joins the local zoo, and eval, plot and predict use it', async (t) => {
  const out = join(dir, 'run');
  const r = await zoo('train', 'resnet_test', ...SMALL, '--epochs', '2', '--out', out, '--add-to-zoo', 'tiny-fashion');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /recipe best: linear scaling on, warmup 1 epoch, zero gamma on, no bias decay on, fp16 off, lr decay cosine, label smoothing 0\.1, mixup alpha 0\.2, distillation off/);
  t.regex(r.stderr, /distillation is off/);
  t.regex(r.stderr, /epoch 1\/2 update \d+\/20 loss [\d.]+ lr [\d.e-]+ [\d.]+ img\/s/);
  t.regex(r.stderr, /epoch 2\/2: loss [\d.]+, val top-1 [\d.]+%/);
  t.regex(r.stdout, /finished 2 epochs/);
  t.regex(r.stdout, /added tiny-fashion to the local zoo/);
  const log = readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { valTop1: number; lr: number });
  t.is(log.length, 2);

  const ev = await zoo('eval', 'tiny-fashion', '--data', 'fashion', '--limit', '100', '--json');
  t.is(ev.code, 0, ev.stderr);
  const e = JSON.parse(ev.stdout) as { top1: number; images: number; provider: string };
  t.is(e.images, 100);
  t.true(Math.abs(e.top1 - log[1]!.valTop1) <= 0.02, `ONNX Runtime top-1 ${e.top1} vs tfjs ${log[1]!.valTop1}`);

  const png = join(dir, 'curves.png');
  const p = await zoo('plot', out, '-o', png);
  t.is(p.code, 0, p.stderr);
  const meta = await sharp(png).metadata();
  t.true(meta.width! > 1000 && meta.height! > 300, `${meta.width}x${meta.height}`);
  t.regex((await zoo('plot', join(dir, 'nothing.jsonl'))).stderr, /no such log/);

  const img = join(dir, 'boot.png');
  await sharp({ create: { width: 28, height: 28, channels: 3, background: { r: 40, g: 40, b: 40 } } }).png().toFile(img);
  const pr = await zoo('predict', 'tiny-fashion', img, '--json');
  t.is(pr.code, 0, pr.stderr);
  const top = (JSON.parse(pr.stdout) as { results: { top: { label: string }[] }[] }).results[0]!.top;
  t.is(top.length, 5);
  t.true(['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'].includes(top[0]!.label), top[0]!.label);
});

test.serial('Ctrl-C stops after the current update with a checkpoint, and --resume finishes the run', async (t) => {
  const out = join(dir, 'interrupted');
  const args = [ZOO_CLI, 'train', 'resnet_test', ...SMALL, '--epochs', '2', '--recipe', 'baseline', '--warmup', '0', '--out', out];
  const first = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, args, { env });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!sent && /epoch 1\/2 update \d+\/20/.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.on('close', (code) => resolve({ code, stderr }));
  });
  t.is(first.code, 130, first.stderr);
  t.regex(first.stderr, /interrupted: the checkpoint .* --resume/);
  t.true(existsSync(join(out, 'checkpoint.safetensors')));
  t.false(existsSync(join(out, 'model.onnx')));
  t.regex(first.stderr, /continue with: zoo train --out .*interrupted --resume/);
  // Options given again must agree with run.json, and the message names each one that does not.
  const changed = await zoo('train', '--out', out, '--resume', '--seed', '5', '--epochs', '3');
  t.is(changed.code, 2, changed.stderr);
  t.regex(changed.stderr, /--epochs: 2 in the run, 3 now; --seed: 0 in the run, 5 now/);
  const otherArch = await zoo('train', 'resnet18d', '--out', out, '--resume');
  t.is(otherArch.code, 2, otherArch.stderr);
  t.regex(otherArch.stderr, /architecture: "resnet_test" in the run, "resnet18d" now/);
  // Only --out: everything else comes from run.json (including --limit-train and --limit-val); options that agree may be given.
  const again = await zoo('train', '--out', out, '--resume', '--recipe', 'baseline', '--epochs', '2');
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, /resuming at epoch 1, update \d+ of 20/);
  t.regex(again.stderr, /200 train \/ 100 val images/);
  t.is(readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').length, 2);
  t.true(existsSync(join(out, 'model.onnx')));
});

test.serial("--json: one JSON object per line on stdout; a recipe's warmup longer than the run is shortened with a note", async (t) => {
  const out = join(dir, 'json-run');
  // The best recipe's 5 warmup epochs in a 3-epoch run: shortened, not refused.
  const args = ['train', 'resnet_test', '--data', 'fashion', '--limit-train', '200', '--limit-val', '100', '--image-size', '16', '--batch-size', '10', '--no-fp16', '--epochs', '3'];
  const r = await zoo(...args, '--out', out, '--no-export', '--json');
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const events = lines.map((l) => JSON.parse(l) as { event: string } & Record<string, unknown>);
  t.deepEqual(
    events.map((e) => e.event).filter((e) => e !== 'notice'),
    ['start', 'epoch', 'checkpoint', 'epoch', 'checkpoint', 'epoch', 'checkpoint', 'finished'],
  );
  const notes = events.filter((e) => e.event === 'notice').map((e) => e.message as string);
  t.true(
    notes.some((n) => /the best recipe's 5-epoch warmup is longer than this 3-epoch run: shortened to a tenth of the run, 0\.3 epochs \(6 updates\)/.test(n)),
    notes.join('\n'),
  );
  const start = events.find((e) => e.event === 'start') as unknown as { config: { tricks: { warmupEpochs: number }; epochs: number }; warmupUpdates: number; updatesPerEpoch: number; backend: string; outDir: string };
  t.like(start, { warmupUpdates: 6, updatesPerEpoch: 20, backend: 'wasm', outDir: out });
  t.is(start.config.tricks.warmupEpochs, 0.3);
  const epochs = events.filter((e) => e.event === 'epoch') as unknown as { epoch: number; epochs: number; loss: number; valTop1: number; lr: number }[];
  t.deepEqual(epochs.map((e) => [e.epoch, e.epochs]), [[1, 3], [2, 3], [3, 3]]);
  for (const e of epochs) t.true(Number.isFinite(e.loss) && e.valTop1 >= 0 && e.valTop1 <= 1 && e.lr > 0);
  const log = readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number; valTop1: number });
  t.deepEqual(epochs.map((e) => [e.loss, e.valTop1]), log.map((e) => [e.loss, e.valTop1]));
  t.like(events.at(-1), { event: 'finished', epochs: 3, valTop1: log[2]!.valTop1, outDir: out });
  t.like(events.find((e) => e.event === 'checkpoint'), { update: 20, path: join(out, 'checkpoint.safetensors') });
  // The human progress stays on stderr.
  t.regex(r.stderr, /epoch 3\/3: loss [\d.]+, val top-1/);
  t.regex(r.stderr, /note: the best recipe's 5-epoch warmup/);
  // A warmup asked for explicitly is still refused (with an error event on stdout).
  const refused = await zoo(...args, '--warmup', '5', '--json');
  t.is(refused.code, 2);
  t.like(JSON.parse(refused.stdout.trim().split('\n').at(-1)!), { event: 'error', exitCode: 2 });
  t.regex(refused.stderr, /--warmup 5 is longer than the run/);

  // A corrupt run.json is a one-line user error naming it, not an internal error.
  const broken = join(dir, 'json-run-broken');
  cpSync(out, broken, { recursive: true });
  writeFileSync(join(broken, 'run.json'), '{"arch": "resnet_test", "epochs": ');
  const bad = await zoo('train', '--out', broken, '--resume');
  t.is(bad.code, 1, bad.stderr);
  t.regex(bad.stderr, /^zoo: error: .*json-run-broken\/run\.json: not JSON \(.*\); restore it or start a new run in another --out\n$/);
  writeFileSync(join(broken, 'run.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')), epochs: -3 }));
  const negative = await zoo('train', '--out', broken, '--resume');
  t.is(negative.code, 1, negative.stderr);
  t.regex(negative.stderr, /json-run-broken\/run\.json: --epochs must be an integer >= 1, got -3/);
});

test.serial('an image folder of class folders trains with --val-split', async (t) => {
  const root = join(dir, 'folder');
  const colors = { red: { r: 220, g: 30, b: 30 }, blue: { r: 30, g: 30, b: 220 } };
  for (const [name, c] of Object.entries(colors)) {
    mkdirSync(join(root, name), { recursive: true });
    for (let i = 0; i < 12; i++) {
      const jitter = (v: number) => Math.max(0, Math.min(255, v + ((i * 37) % 40) - 20));
      await sharp({ create: { width: 24 + i, height: 20 + 2 * i, channels: 3, background: { r: jitter(c.r), g: jitter(c.g), b: jitter(c.b) } } })
        .jpeg()
        .toFile(join(root, name, `${i}.jpg`));
    }
  }
  const noSplit = await zoo('train', 'resnet_test', '--data', root, '--epochs', '1', '--no-warmup', '--batch-size', '4');
  t.is(noSplit.code, 1, noSplit.stderr);
  t.regex(noSplit.stderr, /give a validation fraction/);
  const out = join(dir, 'folder-run');
  const r = await zoo('train', 'resnet_test', '--data', root, '--val-split', '0.25', '--image-size', '16', '--epochs', '2', '--no-warmup', '--batch-size', '6', '--recipe', 'efficient', '--no-fp16', '--out', out, '--no-export');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /18 train \/ 6 val images, 2 classes/);
  t.false(existsSync(join(out, 'model.onnx')), '--no-export');
  const log = readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { valTop1: number });
  t.is(log.length, 2);
  // The model trained on Fashion-MNIST has other classes than this folder.
  const mismatch = await zoo('eval', 'tiny-fashion', '--data', root, '--val-split', '0.25');
  t.is(mismatch.code, 1);
  t.regex(mismatch.stderr, /tiny-fashion has 10 classes; .* has 2/);

  // --resume with only --out opens the same split again (the fraction is in run.json).
  const resumed = await zoo('train', '--out', out, '--resume', '--no-export');
  t.is(resumed.code, 0, resumed.stderr);
  t.regex(resumed.stderr, /18 train \/ 6 val images, 2 classes/);

  // A corrupt validation image is found before the first epoch, by name.
  const corrupt = join(dir, 'folder-corrupt');
  cpSync(root, corrupt, { recursive: true });
  writeFileSync(join(corrupt, 'red', '5.jpg'), '<html>this is not an image</html>');
  const early = await zoo('train', 'resnet_test', '--data', corrupt, '--val-split', '0.25', '--image-size', '16', '--epochs', '1', '--no-warmup', '--batch-size', '6', '--no-export', '--out', join(dir, 'folder-corrupt-run'));
  t.is(early.code, 1, early.stderr);
  t.regex(early.stderr, /zoo: error: 1 of \d+ (validation images cannot be decoded|training images cannot be read): cannot (decode|read) image .*red\/5\.jpg/);
  t.notRegex(early.stderr, /epoch 1\/1/);
  t.notRegex(early.stderr, /internal error/);

  // A FIFO named like an image is refused, not read (which would block forever).
  if (process.platform !== 'win32') {
    const fifoRoot = join(dir, 'folder-fifo');
    cpSync(root, fifoRoot, { recursive: true });
    execFileSync('mkfifo', [join(fifoRoot, 'blue', 'pipe.jpg')]);
    const fifo = await zoo('train', 'resnet_test', '--data', fifoRoot, '--val-split', '0.25', '--epochs', '1', '--no-warmup', '--batch-size', '6');
    t.is(fifo.code, 1, fifo.stderr);
    t.regex(fifo.stderr, /blue\/pipe\.jpg is a FIFO, not an image file/);
  }
});
