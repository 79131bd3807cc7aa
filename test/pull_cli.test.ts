/**
 * `zoo pull` and `zoo rm` as a user runs them, with a models.json of the test's own (ZOO_MODELS_JSON)
 * whose https sources a prefix mirror (ZOO_MIRROR) maps to a local server: `--json` output, a failed
 * pull's report, `--lock-timeout`, and `zoo rm` of an alias whose cache holds only downloads.
 */
import test from 'ava';
import { runZoo, ZOO_CLI } from './helpers/cli.js';
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import crypto from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { FixtureServer } from './helpers/http_server.js';
import { safetensorsBytes, torchStateDict } from './helpers/weights_fixtures.js';
import { createModel } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { fixtureBase, pinnedSafetensors } from './helpers/models_json_fixture.js';
import { fetchFile } from '../src/hub/cache.js';
import { readHubSettings } from '../src/hub/settings.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-pull-cli-'));
const cache = join(dir, 'cache');
let server: FixtureServer;
let env: NodeJS.ProcessEnv;
let weights: Buffer;
const sha256 = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

const zoo = (...args: string[]) => runZoo(args, { env });

test.before(async () => {
  await setupBackend();
  server = await FixtureServer.start();
  const m = createModel('resnet_test', { seed: 11 });
  await trainedLikeInit(m);
  weights = Buffer.from(safetensorsBytes(torchStateDict(m)));
  m.dispose();
  server.route('/timm/fixture/model.safetensors', { data: weights });
  server.route('/timm/broken/model.safetensors', { data: Buffer.from('<html>not here</html>') });
  const base = fixtureBase(64);
  const models = [
    {
      ...base,
      name: 'resnet_test.fixture',
      aliases: ['fixture-best'],
      sources: [pinnedSafetensors('https://fixtures.invalid/timm/fixture/model.safetensors', weights)],
    },
    {
      ...base,
      name: 'resnet_test.broken',
      aliases: ['fixture-broken'],
      sources: [
        { format: 'safetensors', naming: 'timm', url: 'https://fixtures.invalid/timm/broken/model.safetensors', sha256: null, size: null, host: 'huggingface' },
        { format: 'pth', naming: 'torchvision', url: 'https://fixtures.invalid/tv/broken-00000000.pth', sha256Prefix: '00000000', size: null, host: 'torchvision' },
      ],
    },
  ];
  writeFileSync(join(dir, 'models.json'), JSON.stringify({ version: 1, categories: {}, models }));
  env = {
    ...process.env,
    ZOO_BACKEND: 'wasm',
    ZOO_CACHE: cache,
    ZOO_MODELS_JSON: join(dir, 'models.json'),
    ZOO_MIRROR: `https://fixtures.invalid=${server.url('')}`,
    ZOO_OFFLINE: '',
    HF_HUB_OFFLINE: '',
    HF_ENDPOINT: '',
    MXNET_GLUON_REPO: '',
  };
});

test.after.always(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface PullJson {
  name: string;
  arch: string;
  fromCache: boolean;
  onnx: string;
  files: { file: string; path: string; source: string; from: string; sha256: string; bytes: number; pinned: boolean; fromCache: boolean }[];
  check: { maxAbsDiff: number; maxAbsLogit: number };
}

test.serial('pull --json prints one JSON object on stdout; progress and notes stay on stderr', async (t) => {
  const r = await zoo('pull', 'fixture-best', '--json');
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as PullJson;
  t.like(out, { name: 'resnet_test.fixture', arch: 'resnet_test', fromCache: false });
  t.true(existsSync(out.onnx));
  t.is(out.files.length, 1);
  t.like(out.files[0], {
    file: 'model.safetensors',
    source: 'https://fixtures.invalid/timm/fixture/model.safetensors',
    from: server.url('/timm/fixture/model.safetensors'),
    sha256: sha256(weights),
    bytes: weights.length,
    pinned: true,
    fromCache: false,
  });
  t.true(out.check.maxAbsDiff <= 1e-4);
  t.regex(r.stderr, /converting model\.safetensors/);
  const again = JSON.parse((await zoo('pull', 'resnet_test.fixture', '--json')).stdout) as PullJson;
  t.true(again.fromCache);
  t.true(again.files[0]!.fromCache);
  const text = await zoo('pull', 'fixture-best');
  t.regex(text.stdout, new RegExp(`from ${server.url('/timm/fixture/model.safetensors').replace(/[.]/g, '\\.')} \\(for https://fixtures\\.invalid/timm/fixture/model\\.safetensors\\)`));
  t.regex(text.stdout, /source sha256 [0-9a-f]{64} \(pinned\)/);
});

test.serial('a failed pull prints each source error once, hints at the mirror settings, and leaves no cache entry', async (t) => {
  const r = await zoo('pull', 'fixture-broken');
  t.is(r.code, 1);
  t.is(r.stdout, '');
  const reasons = [
    'refused: no checksum is pinned for it and a mirror (ZOO_MIRROR) is not trusted to say which file it serves',
    'HTTP 404 Not Found',
  ];
  for (const reason of reasons) t.is(r.stderr.split(reason).length - 1, 1, `${reason} in:\n${r.stderr}`);
  t.regex(r.stderr, /zoo: error: could not pull resnet_test\.broken: all 2 of its sources failed \(each error is above\)/);
  t.regex(r.stderr, /ZOO_MIRROR=<directory or URL>/);
  t.regex(r.stderr, /set ZOO_OFFLINE=1/);
  t.false(existsSync(join(cache, 'resnet_test.broken')));
});

test.serial('--lock-timeout: a pull waiting on another host\'s lock says whose it is and stops when told', async (t) => {
  mkdirSync(join(cache, '.locks'), { recursive: true });
  const lock = join(cache, '.locks', 'resnet_test.broken.lock');
  writeFileSync(lock, JSON.stringify({ pid: 31337, hostname: 'gpu-node-3', time: new Date().toISOString(), token: 'theirs' }));
  const r = await zoo('pull', 'fixture-broken', '--lock-timeout', '0.5');
  rmSync(lock);
  t.is(r.code, 1);
  t.regex(r.stderr, /resnet_test\.broken is locked by pid 31337 on another host, 'gpu-node-3'.*waiting up to 0\.5 s/);
  t.regex(r.stderr, /timed out after 0\.5 s waiting for the lock/);
  const bad = await zoo('pull', 'fixture-best', '--download-timeout', 'soon');
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--download-timeout must be a number of seconds greater than 0, got 'soon'/);
});

test.serial('zoo rm takes an alias, also when the cache holds only downloads of the model', async (t) => {
  t.is((await zoo('rm', 'fixture-best')).code, 0);
  // Only a download, no converted model (as a pull interrupted before converting leaves it).
  await fetchFile({
    name: 'resnet_test.fixture',
    fileName: 'model.safetensors',
    sources: [server.url('/timm/fixture/model.safetensors')],
    expected: { sha256: sha256(weights) },
    settings: readHubSettings({ ZOO_CACHE: cache }),
  });
  t.true(existsSync(join(cache, 'resnet_test.fixture', 'model.safetensors')));
  const r = await zoo('rm', 'fixture-best');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'removed resnet_test.fixture\n');
  t.false(existsSync(join(cache, 'resnet_test.fixture')));
  const gone = await zoo('rm', 'fixture-best');
  t.is(gone.code, 1);
  t.regex(gone.stderr, /'fixture-best' is not in the cache/);
});

/** A port on 127.0.0.1 that refuses connections (a mirror that is down). */
async function deadPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** The package's own models.json (its detectors and segmenters), their hosts sent to a mirror that is down. */
async function packageEnv(): Promise<NodeJS.ProcessEnv> {
  const port = await deadPort();
  return {
    ...env,
    ZOO_MODELS_JSON: '',
    ZOO_MIRROR: `https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com=http://127.0.0.1:${port}/gluon; https://download.pytorch.org=http://127.0.0.1:${port}/tv`,
  };
}

test.serial('a detector or segmenter pull takes --download-timeout, ZOO_DOWNLOAD_TIMEOUT and --lock-timeout, refuses --fp16, and prints a dead mirror\'s error once', async (t) => {
  const penv = await packageEnv();
  const det = await runZoo(['pull', 'faster_rcnn_resnet50_v1b_voc', '--download-timeout', '1'], { env: penv, timeoutMs: 60_000 });
  t.is(det.code, 1, det.stderr);
  t.is(det.stderr.split('not finished within 1 s (the download deadline').length - 1, 1, det.stderr);
  t.regex(det.stderr, /zoo: error: could not pull faster_rcnn_resnet50b\.gluon_voc: its only source failed \(its error is above\)/);
  const seg = await runZoo(['pull', 'fcn_resnet50'], { env: { ...penv, ZOO_DOWNLOAD_TIMEOUT: '1' }, timeoutMs: 60_000 });
  t.is(seg.code, 1, seg.stderr);
  t.is(seg.stderr.split('not finished within 1 s (the download deadline').length - 1, 1, seg.stderr);
  const fp16 = await runZoo(['pull', 'faster_rcnn_resnet50_v1b_voc', '--fp16'], { env: penv, timeoutMs: 60_000 });
  t.is(fp16.code, 2);
  t.regex(fp16.stderr, /--fp16 applies to classifiers; faster_rcnn_resnet50b\.gluon_voc is a detector \(Faster R-CNN\), pulled as FP32 only/);
  mkdirSync(join(cache, '.locks'), { recursive: true });
  const lock = join(cache, '.locks', 'faster_rcnn_resnet50b.gluon_voc.lock');
  writeFileSync(lock, JSON.stringify({ pid: 31337, hostname: 'gpu-node-3', time: new Date().toISOString(), token: 'theirs' }));
  const locked = await runZoo(['pull', 'faster_rcnn_resnet50_v1b_voc', '--lock-timeout', '0.5'], { env: penv, timeoutMs: 60_000 });
  rmSync(lock);
  t.is(locked.code, 1, locked.stderr);
  t.regex(locked.stderr, /faster_rcnn_resnet50b\.gluon_voc is locked by pid 31337 on another host, 'gpu-node-3'.*waiting up to 0\.5 s/);
  t.regex(locked.stderr, /timed out after 0\.5 s waiting for the lock/);
});

test.serial('zoo pull of an unknown name says what pull takes and suggests close published names', async (t) => {
  const r = await zoo('pull', 'fixture-bset');
  t.is(r.code, 2);
  t.regex(r.stderr, /no published model 'fixture-bset' in models\.json\. Did you mean: fixture-best\b/);
  t.regex(r.stderr, /zoo pull takes a published name, alias or timm id \('zoo list --published'\)/);
  t.false(/architecture|\.onnx|run directory/.test(r.stderr), r.stderr);
});

test.serial('zoo rm takes the timm id forms zoo pull takes', async (t) => {
  const penv = await packageEnv();
  for (const [ref, name] of [['timm/resnet50d.gluon_in1k', 'resnet50d.gluon_in1k'], ['hf-hub:timm/resnet50.gluon_in1k', 'resnet50b.gluon_in1k']] as const) {
    mkdirSync(join(cache, name), { recursive: true });
    writeFileSync(join(cache, name, 'model.safetensors'), 'x');
    const r = await runZoo(['rm', ref], { env: penv });
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, `removed ${name}\n`);
    t.false(existsSync(join(cache, name)));
  }
});

test.serial('zoo rm waiting for a pull in progress says so, then removes the model once the lock is released', async (t) => {
  mkdirSync(join(cache, 'resnet_test.fixture'), { recursive: true });
  writeFileSync(join(cache, 'resnet_test.fixture', 'model.safetensors'), 'x');
  mkdirSync(join(cache, '.locks'), { recursive: true });
  const lock = join(cache, '.locks', 'resnet_test.fixture.lock');
  // Held by a live process on this host: this test's own.
  writeFileSync(lock, JSON.stringify({ pid: process.pid, hostname: os.hostname(), time: new Date().toISOString(), token: 'ours' }));
  const child = spawn(process.execPath, [ZOO_CLI, 'rm', 'fixture-best'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  const waiting = new Promise<void>((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/is locked by/.test(stderr)) resolve();
    });
  });
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 128)));
  // A bound on a silent wait, so that a failure ends the test instead of hanging it.
  let guard: NodeJS.Timeout | undefined;
  const silent = new Promise<string>((resolve) => { guard = setTimeout(() => resolve('silent'), 60_000); });
  const first = await Promise.race([waiting.then(() => 'waiting'), exited.then(() => 'exited'), silent]);
  clearTimeout(guard);
  if (first !== 'waiting') child.kill();
  t.is(first, 'waiting', stderr);
  t.regex(stderr, new RegExp(`resnet_test\\.fixture is locked by pid ${process.pid} on this host .*; waiting for it to finish before removing`));
  t.true(existsSync(join(cache, 'resnet_test.fixture')), 'nothing removed while the lock is held');
  rmSync(lock);
  t.is(await exited, 0, stderr);
  t.is(stdout, 'removed resnet_test.fixture\n');
  t.false(existsSync(join(cache, 'resnet_test.fixture')));
});
