/**
 * The command line as a user meets it: help, listing, info, export, and clear errors with exit codes
 * (2 for usage errors, 1 for bad input such as a missing file).
 */
import test from 'ava';
import { runZoo } from './helpers/cli.js';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'zoo-cli-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const zoo = (...args: string[]) => runZoo(args);

test('zoo --help lists the commands and the environment', async (t) => {
  const r = await zoo('--help');
  t.is(r.code, 0);
  for (const s of ['list', 'info', 'export', 'ZOO_BACKEND']) t.true(r.stdout.includes(s), s);
});

test('zoo list filters with globs; --json is machine readable', async (t) => {
  const r = await zoo('list', 'resnet50*');
  t.is(r.code, 0);
  t.is(r.stdout.trim().split('\n').length, 2 + 7);
  const j = JSON.parse((await zoo('list', '--json')).stdout) as { name: string; params: number }[];
  t.is(j.length, 33);
  t.is(j.find((m) => m.name === 'resnet50d')!.params, 25_576_264);
  const none = await zoo('list', 'vgg*');
  t.is(none.code, 1);
});

test('zoo info --json reports parameters, FLOPs and stages', async (t) => {
  const r = await zoo('info', 'resnet50d', '--json');
  t.is(r.code, 0);
  const info = JSON.parse(r.stdout) as { params: number; gmacs: number; stages: { name: string; channels: number; reduction: number }[] };
  t.is(info.params, 25_576_264);
  t.true(Math.abs(info.gmacs - 4.33) < 0.01);
  // zoo list reports the same figure under the same name.
  const listed = (JSON.parse((await zoo('list', 'resnet50d', '--json')).stdout) as { name: string; gmacs: number }[])[0]!;
  t.is(listed.gmacs.toFixed(4), info.gmacs.toFixed(4));
  t.deepEqual(info.stages.map((s) => [s.name, s.channels, s.reduction]), [
    ['C2', 256, 4],
    ['C3', 512, 8],
    ['C4', 1024, 16],
    ['C5', 2048, 32],
  ]);
  const os8 = JSON.parse((await zoo('info', 'resnet50d', '--output-stride', '8', '--json')).stdout) as typeof info;
  t.deepEqual(os8.stages.map((s) => s.reduction), [4, 8, 8, 8]);
});

test('an unknown model name exits 2 and suggests near matches', async (t) => {
  const r = await zoo('info', 'resnet50x');
  t.is(r.code, 2);
  t.regex(r.stderr, /unknown model 'resnet50x'.*Did you mean: .*resnet50d/);
  t.false(r.stderr.includes('    at '), 'no stack trace');
});

test('usage errors exit 2 with a pointer to --help', async (t) => {
  for (const args of [['export'], ['info', 'resnet50d', '--image-size', 'big'], ['info', 'resnet50d', '--output-stride', '4'], ['frobnicate'], ['--backend', 'gpu', 'export', 'resnet_test', '-o', join(dir, 'x.onnx')]]) {
    const r = await zoo(...args);
    t.is(r.code, 2, args.join(' '));
    t.true(r.stderr.length > 0);
    t.false(r.stderr.includes('    at '), 'no stack trace');
  }
});

test('zoo export writes a checked ONNX file; bad weight paths are named', async (t) => {
  const out = join(dir, 'tiny.onnx');
  const r = await zoo('export', 'resnet_test', '--image-size', '64', '-o', out);
  t.is(r.code, 0, r.stderr);
  t.true(existsSync(out));
  t.regex(r.stderr, /check \(ONNX Runtime cpu, 2 images\): max \|logit difference\| .*passed/);
  t.regex(r.stdout, /wrote .*tiny\.onnx/);

  // Re-export from the file just written (round trip through --weights).
  const again = await zoo('export', 'resnet_test', '--weights', out, '--image-size', '64', '-o', join(dir, 'again.onnx'));
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, /loaded \d+ tensors/);

  const missing = await zoo('export', 'resnet_test', '--weights', join(dir, 'nope.onnx'), '-o', join(dir, 'y.onnx'));
  t.is(missing.code, 1);
  t.regex(missing.stderr, /nope\.onnx': no such file or directory/);

  writeFileSync(join(dir, 'w.xyz'), 'xx');
  const unsupported = await zoo('export', 'resnet_test', '--weights', join(dir, 'w.xyz'), '-o', join(dir, 'y.onnx'));
  t.is(unsupported.code, 1);
  t.regex(unsupported.stderr, /w\.xyz: unknown weights format/);

  writeFileSync(join(dir, 'broken.pth'), 'xx');
  const broken = await zoo('export', 'resnet_test', '--weights', join(dir, 'broken.pth'), '-o', join(dir, 'y.onnx'));
  t.is(broken.code, 1);
  t.regex(broken.stderr, /broken\.pth: .*too short to be a ZIP archive/);

  const wrongArch = await zoo('export', 'resnet18', '--weights', out, '-o', join(dir, 'y.onnx'));
  t.is(wrongArch.code, 1);
  t.regex(wrongArch.stderr, /holds resnet_test weights; it does not match resnet18/);
  t.false(existsSync(join(dir, 'y.onnx')), 'nothing written on failure');
});
