/**
 * The zoo commands end to end (pull, list --published / --local, predict, import, rm) with a models.json
 * of the test's own (ZOO_MODELS_JSON) whose https sources a mirror (ZOO_MIRROR) maps to a local server.
 */
import test from 'ava';
import { runZoo } from './helpers/cli.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { setupBackend } from './helpers/backend.js';
import { FixtureServer } from './helpers/http_server.js';
import { safetensorsBytes, torchStateDict } from './helpers/weights_fixtures.js';
import { createModel } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { fixtureBase, pinnedSafetensors } from './helpers/models_json_fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-cli-zoo-'));
let server: FixtureServer;
let env: NodeJS.ProcessEnv;
const labels = ['tee', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'boot'];

const zoo = (...args: string[]) => runZoo(args, { env });

test.before(async () => {
  await setupBackend();
  server = await FixtureServer.start();
  const m = createModel('resnet_test', { seed: 9 });
  await trainedLikeInit(m);
  const weights = safetensorsBytes(torchStateDict(m));
  m.dispose();
  writeFileSync(join(dir, 'weights.safetensors'), weights);
  server.route('/timm/fixture/model.safetensors', { data: Buffer.from(weights) });
  writeFileSync(join(dir, 'labels.json'), JSON.stringify({ source: 'test', license: 'test', names: labels }));
  const entry = {
    ...fixtureBase(64),
    name: 'resnet_test.fixture',
    aliases: ['fixture-best'],
    categories: 'fixture-10',
    sources: [pinnedSafetensors('https://fixtures.invalid/timm/fixture/model.safetensors', weights)],
  };
  writeFileSync(join(dir, 'models.json'), JSON.stringify({ version: 1, categories: { 'fixture-10': 'labels.json' }, models: [entry] }));
  for (const [i, ext] of [[0, 'png'], [1, 'jpg'], [2, 'webp']] as const) {
    const px = Buffer.alloc(90 * 70 * 3);
    for (let k = 0; k < px.length; k++) px[k] = (k * (i + 3) * 37) % 251;
    await sharp(px, { raw: { width: 90, height: 70, channels: 3 } }).toFile(join(dir, `img${i}.${ext}`));
  }
  env = {
    ...process.env,
    ZOO_BACKEND: 'wasm',
    ZOO_CACHE: join(dir, 'cache'),
    ZOO_MODELS_JSON: join(dir, 'models.json'),
    ZOO_MIRROR: `https://fixtures.invalid=${server.url('')}`,
  };
});

test.after.always(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test.serial('pull by alias, then predict, list, import and rm', async (t) => {
  const images = [0, 1, 2].map((i) => join(dir, `img${i}.${['png', 'jpg', 'webp'][i]}`));

  const before = await zoo('predict', 'fixture-best', images[0]!);
  t.is(before.code, 1);
  t.regex(before.stderr, /not in the local cache yet; run 'zoo pull fixture-best' first/);

  const pulled = await zoo('pull', 'fixture-best');
  t.is(pulled.code, 0, pulled.stderr);
  t.regex(pulled.stdout, /pulled: resnet_test\.fixture \(resnet_test\) from https:\/\/fixtures\.invalid\//);
  t.regex(pulled.stdout, /ONNX Runtime check: max \|logit difference\| /);
  const again = await zoo('pull', 'resnet_test.fixture');
  t.regex(again.stdout, /already in the cache/);

  const published = await zoo('list', '--published');
  t.regex(published.stdout, /resnet_test\.fixture\s+resnet_test\s+-\s+hf\s+fixture-best/);
  const local = JSON.parse((await zoo('list', '--local', '--json')).stdout) as { name: string; converted: boolean }[];
  t.deepEqual(local.map((m) => [m.name, m.converted]), [['resnet_test.fixture', true]]);

  const pred = await zoo('predict', 'fixture-best', ...images, '--json', '--top', '3');
  t.is(pred.code, 0, pred.stderr);
  const out = JSON.parse(pred.stdout) as { model: string; results: { image: string; top: { label: string; probability: number; index: number }[] }[] };
  t.is(out.model, 'resnet_test.fixture');
  t.is(out.results.length, 3);
  for (const r of out.results) {
    t.is(r.top.length, 3);
    t.true(r.top.every((p) => labels[p.index] === p.label), 'category names from the entry');
    t.true(r.top[0]!.probability >= r.top[1]!.probability);
  }
  const text = await zoo('predict', 'fixture-best', images[0]!);
  t.regex(text.stdout, /img0\.png\n(\s+\d+\.\d%\s+\w+ \(\d\)\n){5}/);

  const bad = await zoo('predict', 'fixture-best', join(dir, 'nope.jpg'));
  t.is(bad.code, 1);
  t.regex(bad.stderr, /image '.*nope\.jpg' does not exist/);
  writeFileSync(join(dir, 'notimage.jpg'), 'plain text');
  const junk = await zoo('predict', 'fixture-best', join(dir, 'notimage.jpg'));
  t.is(junk.code, 1);
  t.regex(junk.stderr, /notimage\.jpg: not a readable image/);

  const imported = await zoo('import', join(dir, 'weights.safetensors'), '--arch', 'resnet_test', '--image-size', '64', '--name', 'mine', '-o', join(dir, 'mine.onnx'));
  t.is(imported.code, 0, imported.stderr);
  t.regex(imported.stderr, /loaded \d+ tensors \(safetensors, timm names\)/);
  t.regex(imported.stdout, /added mine to the local zoo/);
  const dup = await zoo('import', join(dir, 'weights.safetensors'), '--arch', 'resnet_test', '--name', 'mine');
  t.is(dup.code, 1);
  t.regex(dup.stderr, /already has 'mine' \(pass --force/);
  const byName = JSON.parse((await zoo('predict', 'mine', images[1]!, '--json')).stdout) as typeof out;
  const byFile = JSON.parse((await zoo('predict', join(dir, 'mine.onnx'), images[1]!, '--json')).stdout) as typeof out;
  t.deepEqual(byName.results[0]!.top.map((p) => p.index), byFile.results[0]!.top.map((p) => p.index), 'the file carries its preprocessing');
  const pulledTop = (JSON.parse((await zoo('predict', 'fixture-best', images[1]!, '--json')).stdout) as typeof out).results[0]!.top;
  t.deepEqual(byFile.results[0]!.top.map((p) => p.index), pulledTop.map((p) => p.index), 'imported and pulled weights agree');

  const wrongArch = await zoo('import', join(dir, 'weights.safetensors'), '--arch', 'resnet_test_a', '-o', join(dir, 'x.onnx'));
  t.is(wrongArch.code, 1);
  t.regex(wrongArch.stderr, /does not match resnet_test_a \(timm names\): missing/);

  t.is((await zoo('rm', 'fixture-best')).code, 0);
  t.is((await zoo('rm', 'mine')).code, 0);
  t.deepEqual(JSON.parse((await zoo('list', '--local', '--json')).stdout), []);
  const gone = await zoo('rm', 'mine');
  t.is(gone.code, 1);
  t.regex(gone.stderr, /not in the cache/);
});

test.serial('pull of an unknown name suggests near matches; offline without a cache says what is missing', async (t) => {
  const unknown = await zoo('pull', 'fixture-bets');
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /fixture-best/);
  const offline = await runZoo(['pull', 'fixture-best'], { env: { ...env, ZOO_OFFLINE: '1', ZOO_CACHE: join(dir, 'empty-cache') } });
  t.is(offline.code, 1);
  t.regex(offline.stderr, /offline \(ZOO_OFFLINE\) and resnet_test\.fixture is not in the cache/);
});
