/**
 * `zoo pull` and `zoo rm` as a user runs them, with a models.json of the test's own (ZOO_MODELS_JSON)
 * whose https sources a prefix mirror (ZOO_MIRROR) maps to a local server: `--json` output, a failed
 * pull's report, `--lock-timeout`, and `zoo rm` of an alias whose cache holds only downloads.
 */
import test from 'ava';
import { runZoo } from './helpers/cli.js';
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
    'refused: no checksum is pinned for it and the ZOO_MIRROR mirror declared none',
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
