import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { UserError } from '../src/errors.js';
import {
  checkCached, fetchFile, listCached, modelDir, modelLockPath, progressPrinter, readManifest, removeCached,
  writeManifest, type ProgressStream,
} from '../src/hub/cache.js';
import { parseMirror, readHubSettings, resolveSourceUrl, type HubSettings } from '../src/hub/settings.js';
import { FixtureServer, fixture } from './helpers/http_server.js';

const MB = 1 << 20;
const GLUON = 'https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/resnet50_v1d-117a384e.zip';
const HF = 'https://huggingface.co/timm/resnet50d.gluon_in1k/resolve/main/model.safetensors';
const quick = { backoffMs: 5, timeoutMs: 5000, retries: 1 };

let server: FixtureServer;
let tmp: string;

test.before(async () => {
  server = await FixtureServer.start();
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'zoo-hub-cache-'));
});

test.after.always(async () => {
  await server?.close();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

/** Settings with a fresh cache directory of its own. */
async function freshSettings(env: Record<string, string> = {}): Promise<HubSettings> {
  const cache = await fsp.mkdtemp(path.join(tmp, 'cache-'));
  return readHubSettings({ ZOO_CACHE: cache, ...env });
}

// --- settings: pure resolution --------------------------------------------------------------

test('cache directory: ZOO_CACHE, else XDG_CACHE_HOME/zoo, else ~/.cache/zoo', (t) => {
  t.is(readHubSettings({ ZOO_CACHE: '/a/b', XDG_CACHE_HOME: '/x' }, '/home/u').cacheDir, '/a/b');
  t.is(readHubSettings({ XDG_CACHE_HOME: '/x' }, '/home/u').cacheDir, '/x/zoo');
  t.is(readHubSettings({ XDG_CACHE_HOME: 'relative' }, '/home/u').cacheDir, '/home/u/.cache/zoo');
  t.is(readHubSettings({}, '/home/u').cacheDir, '/home/u/.cache/zoo');
});

test('offline: ZOO_OFFLINE=1 or HF_HUB_OFFLINE=1', (t) => {
  t.true(readHubSettings({ ZOO_OFFLINE: '1' }).offline);
  t.true(readHubSettings({ HF_HUB_OFFLINE: '1' }).offline);
  t.true(readHubSettings({ ZOO_OFFLINE: 'true' }).offline);
  t.false(readHubSettings({ ZOO_OFFLINE: '0' }).offline);
  t.false(readHubSettings({}).offline);
});

test('HF_ENDPOINT replaces the hub host and keeps the path', (t) => {
  const s = readHubSettings({ HF_ENDPOINT: 'https://hf-mirror.example/' });
  t.is(resolveSourceUrl(HF, s), 'https://hf-mirror.example/timm/resnet50d.gluon_in1k/resolve/main/model.safetensors');
  t.is(resolveSourceUrl('https://huggingface.company/x', s), 'https://huggingface.company/x', 'only at a host boundary');
  t.is(resolveSourceUrl(GLUON, s), GLUON);
});

test('MXNET_GLUON_REPO replaces the S3 base as GluonCV does ({repo}gluon/models/{file})', (t) => {
  const withSlash = readHubSettings({ MXNET_GLUON_REPO: 'https://mirror.example/mx/' });
  const without = readHubSettings({ MXNET_GLUON_REPO: 'https://mirror.example/mx' });
  const want = 'https://mirror.example/mx/gluon/models/resnet50_v1d-117a384e.zip';
  t.is(resolveSourceUrl(GLUON, withSlash), want);
  t.is(resolveSourceUrl(GLUON, without), want);
  t.is(resolveSourceUrl(GLUON.replace('.dualstack', ''), without), want);
  t.is(resolveSourceUrl(HF, without), HF);
  t.is(resolveSourceUrl(GLUON, readHubSettings({ MXNET_GLUON_REPO: '/srv/mx' })), '/srv/mx/gluon/models/resnet50_v1d-117a384e.zip');
});

test('ZOO_MIRROR as a prefix map: longest prefix wins, rest of the path kept, local targets', (t) => {
  const s = readHubSettings({
    ZOO_MIRROR: 'https://huggingface.co=http://lan/hf; https://huggingface.co/timm/resnet50d.gluon_in1k=/srv/r50d\nhttps://download.pytorch.org/=file:///srv/pt',
    HF_ENDPOINT: 'https://ignored.example',
  });
  t.is(resolveSourceUrl('https://huggingface.co/timm/other/resolve/main/model.safetensors', s), 'http://lan/hf/timm/other/resolve/main/model.safetensors');
  t.is(resolveSourceUrl(HF, s), '/srv/r50d/resolve/main/model.safetensors');
  t.is(resolveSourceUrl('https://download.pytorch.org/models/resnet50-0676ba61.pth', s), '/srv/pt/models/resnet50-0676ba61.pth');
  t.is(resolveSourceUrl(GLUON, s), GLUON, 'no entry: unchanged');
});

test('ZOO_MIRROR as a flat directory or base URL: <base>/<file name>', (t) => {
  t.is(resolveSourceUrl(GLUON, readHubSettings({ ZOO_MIRROR: '/srv/weights' })), '/srv/weights/resnet50_v1d-117a384e.zip');
  t.is(resolveSourceUrl(GLUON, readHubSettings({ ZOO_MIRROR: 'file:///srv/weights/' })), '/srv/weights/resnet50_v1d-117a384e.zip');
  t.is(resolveSourceUrl(HF, readHubSettings({ ZOO_MIRROR: 'http://lan/w/' })), 'http://lan/w/model.safetensors');
  t.is(resolveSourceUrl(HF, readHubSettings({ ZOO_MIRROR: '/srv/a=b' })), '/srv/a=b/model.safetensors', "'=' in a path is not a map");
});

test('local sources and file:// URLs are not rewritten; a malformed map is a usage error', (t) => {
  const s = readHubSettings({ ZOO_MIRROR: '/srv/weights' });
  t.is(resolveSourceUrl('/data/x.zip', s), '/data/x.zip');
  t.is(resolveSourceUrl('file:///data/x.zip', s), 'file:///data/x.zip');
  const err = t.throws(() => parseMirror('https://a=http://b; nonsense'), { instanceOf: UserError });
  t.is((err as UserError).exitCode, 2);
});

// --- fetchFile ------------------------------------------------------------------------------

test('fetches into <cache>/<name>/<file>, records the manifest, then serves from the cache', async (t) => {
  const settings = await freshSettings();
  const f = fixture(2 * MB);
  server.route('/c/model.bin', { data: f.data, headers: { 'x-linked-etag': `"${f.sha256}"` } });
  const first = await fetchFile({ name: 'm1.tag', fileName: 'model.bin', sources: [server.url('/c/model.bin')], settings, transfer: quick });
  t.false(first.fromCache);
  t.is(first.path, path.join(settings.cacheDir, 'm1.tag', 'model.bin'));
  t.true((await fsp.readFile(first.path)).equals(f.data));
  const manifest = await readManifest('m1.tag', settings);
  const entry = manifest!.files['model.bin']!;
  t.like(entry, { source: server.url('/c/model.bin'), size: f.data.length, sha256: f.sha256, sha1: f.sha1, declaredSha256: f.sha256 });
  t.false(Number.isNaN(Date.parse(entry.time)));
  const again = await fetchFile({ name: 'm1.tag', fileName: 'model.bin', sources: [server.url('/c/model.bin')], settings });
  t.true(again.fromCache);
  t.is(again.entry.sha256, f.sha256);
  t.is(server.requests('/c/model.bin').length, 1);
  t.deepEqual(await fsp.readdir(modelDir('m1.tag', settings)), ['manifest.json', 'model.bin']);
  t.false(fs.existsSync(modelLockPath('m1.tag', settings)));
});

test('a failing source hands over to the next one, which is recorded', async (t) => {
  const settings = await freshSettings();
  const f = fixture(MB);
  server.route('/c/second.bin', { data: f.data });
  const r = await fetchFile({
    name: 'fallback', fileName: 'w.bin', sources: [server.url('/c/first-missing.bin'), server.url('/c/second.bin')],
    expected: { sha256: f.sha256 }, settings, transfer: quick,
  });
  t.is(r.entry.source, server.url('/c/second.bin'));
  t.is(server.requests('/c/first-missing.bin').length, 1);
});

test('when every source fails the error lists each failure and the cache stays empty', async (t) => {
  const settings = await freshSettings();
  const f = fixture(MB);
  server.route('/c/corrupt.bin', { data: f.data });
  const err = await t.throwsAsync(fetchFile({
    name: 'allbad', fileName: 'w.bin', sources: [server.url('/c/nope.bin'), server.url('/c/corrupt.bin')],
    expected: { sha256: fixture(8).sha256 }, settings, transfer: quick,
  }), { instanceOf: UserError });
  t.regex(err!.message, /could not fetch allbad\/w\.bin from any of its 2 source/);
  t.regex(err!.message, /HTTP 404 Not Found/);
  t.regex(err!.message, /checksum mismatch/);
  t.false(fs.existsSync(path.join(modelDir('allbad', settings), 'w.bin')));
});

test('a local directory source means <dir>/<file name>; file:// works too', async (t) => {
  const settings = await freshSettings();
  const f = fixture(MB);
  const dir = await fsp.mkdtemp(path.join(tmp, 'mirror-'));
  await fsp.writeFile(path.join(dir, 'w.bin'), f.data);
  const a = await fetchFile({ name: 'fromdir', fileName: 'w.bin', sources: [dir], expected: { sha1: f.sha1 }, settings });
  t.is(a.entry.resolved, path.join(dir, 'w.bin'));
  const b = await fetchFile({ name: 'fromurl', fileName: 'w.bin', sources: [pathToFileURL(path.join(dir, 'w.bin')).href], settings });
  t.is(b.entry.sha256, f.sha256);
});

test('mirror settings apply to fetchFile and the manifest records both URLs', async (t) => {
  const f = fixture(MB);
  server.route('/hf/timm/r/resolve/main/model.safetensors', { data: f.data });
  const settings = await freshSettings({ HF_ENDPOINT: server.url('/hf') });
  const source = 'https://huggingface.co/timm/r/resolve/main/model.safetensors';
  const r = await fetchFile({ name: 'r', fileName: 'model.safetensors', sources: [source], expected: { sha256: f.sha256 }, settings, transfer: quick });
  t.is(r.entry.source, source);
  t.is(r.entry.resolved, server.url('/hf/timm/r/resolve/main/model.safetensors'));
});

test('a corrupted cached file is detected and fetched again', async (t) => {
  const settings = await freshSettings();
  const f = fixture(MB);
  server.route('/c/heal.bin', { data: f.data });
  const opts = { name: 'heal', fileName: 'w.bin', sources: [server.url('/c/heal.bin')], settings, transfer: quick };
  const first = await fetchFile(opts);
  const damaged = Buffer.from(f.data);
  damaged[1000] ^= 0xff;
  await fsp.writeFile(first.path, damaged);
  t.is((await checkCached('heal', 'w.bin', { settings })).state, 'bad');
  const second = await fetchFile(opts);
  t.false(second.fromCache);
  t.true((await fsp.readFile(second.path)).equals(f.data));
  t.is(server.requests('/c/heal.bin').length, 2);
});

test('offline: a cache hit works without the network; a miss lists what is missing and where from', async (t) => {
  const online = await freshSettings();
  const f = fixture(MB);
  server.route('/c/off.bin', { data: f.data });
  await fetchFile({ name: 'off', fileName: 'w.bin', sources: [server.url('/c/off.bin')], expected: { sha256: f.sha256 }, settings: online, transfer: quick });
  const offline: HubSettings = { ...online, offline: true, hfEndpoint: 'https://hf-mirror.example' };
  const hit = await fetchFile({ name: 'off', fileName: 'w.bin', sources: [server.url('/c/off.bin')], expected: { sha256: f.sha256 }, settings: offline });
  t.true(hit.fromCache);
  const err = await t.throwsAsync(fetchFile({
    name: 'off', fileName: 'other.safetensors', sources: [server.url('/c/other.safetensors'), HF], settings: offline,
  }), { instanceOf: UserError });
  t.regex(err!.message, /offline mode/);
  t.regex(err!.message, /off\/other\.safetensors is not in the cache/);
  t.true(err!.message.includes(path.join(online.cacheDir, 'off', 'other.safetensors')));
  t.true(err!.message.includes(`1. ${server.url('/c/other.safetensors')}`));
  t.true(err!.message.includes(`2. ${HF} (via mirror: https://hf-mirror.example/timm/`));
  t.is(server.requests('/c/off.bin').length, 1);
  t.is(server.requests('/c/other.safetensors').length, 0);
});

test('listCached and removeCached', async (t) => {
  const settings = await freshSettings();
  t.deepEqual(await listCached(settings), []);
  const f = fixture(300_000);
  const dir = await fsp.mkdtemp(path.join(tmp, 'src-'));
  await fsp.writeFile(path.join(dir, 'a.bin'), f.data);
  await fetchFile({ name: 'zeta', fileName: 'a.bin', sources: [dir], settings });
  await fetchFile({ name: 'alpha', fileName: 'a.bin', sources: [dir], settings });
  await writeManifest('alpha', { ...(await readManifest('alpha', settings))!, meta: { converted: 'model.onnx' } }, settings);
  await fsp.writeFile(path.join(modelDir('alpha', settings), 'b.bin.part'), 'partial');
  const list = await listCached(settings);
  t.deepEqual(list.map((m) => m.name), ['alpha', 'zeta']);
  t.deepEqual(list[0]!.files, ['a.bin']);
  t.true(list[0]!.bytes > f.data.length);
  t.deepEqual(list[0]!.manifest!.meta, { converted: 'model.onnx' });
  t.true(await removeCached('alpha', settings));
  t.false(await removeCached('alpha', settings));
  t.deepEqual((await listCached(settings)).map((m) => m.name), ['zeta']);
  t.throws(() => modelDir('../escape', settings), { instanceOf: UserError });
});

// --- progress ---------------------------------------------------------------------------------

function sink(isTTY: boolean): ProgressStream & { text: string } {
  return { isTTY, columns: 100, text: '', write(s: string) { this.text += s; } };
}

test('progress without a TTY: a plain line every ~10%', (t) => {
  const out = sink(false);
  let now = 0;
  const p = progressPrinter('w.bin', out, () => now);
  for (let i = 0; i <= 100; i++) {
    now = i * 10;
    p({ received: i * 1_000_000, total: 100_000_000 });
  }
  p.done();
  const lines = out.text.trim().split('\n');
  t.is(lines.length, 11);
  t.is(lines.at(-1), 'w.bin: 100.0/100.0 MB (100%) 100.0 MB/s ETA 00:00');
  t.false(out.text.includes('\r'));
});

test('progress on a TTY: one redrawn line with bar, MB/s and ETA', (t) => {
  const out = sink(true);
  let now = 0;
  const p = progressPrinter('w.bin', out, () => now);
  p({ received: 0, total: 50_000_000 });
  now = 1000;
  p({ received: 10_000_000, total: 50_000_000 });
  now = 1010;
  p({ received: 11_000_000, total: 50_000_000 }); // within the redraw interval: skipped
  t.true(out.text.includes('\rw.bin ['));
  t.true(out.text.includes(' 20% 10.0/50.0 MB 10.0 MB/s ETA 00:04'));
  t.false(out.text.includes('11.0/50.0'));
  now = 5000;
  p({ received: 50_000_000, total: 50_000_000 });
  t.true(out.text.endsWith('\x1b[K\n'));
  t.is(out.text.split('\n').length, 2);
});

// --- two processes --------------------------------------------------------------------------

interface ChildResult { code: number | null; events: Record<string, unknown>[]; stderr: string }

function runChild(args: string[], env: NodeJS.ProcessEnv, onEvent: (e: Record<string, unknown>) => void): Promise<ChildResult> {
  const script = fileURLToPath(new URL('./helpers/fetch_child.js', import.meta.url));
  const child = spawn(process.execPath, [script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Record<string, unknown>[] = [];
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
    for (let nl = stdout.indexOf('\n'); nl >= 0; nl = stdout.indexOf('\n')) {
      const e = JSON.parse(stdout.slice(0, nl)) as Record<string, unknown>;
      stdout = stdout.slice(nl + 1);
      events.push(e);
      onEvent(e);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(killer);
      resolve({ code, events, stderr });
    });
  });
}

test('two processes pulling one model at once end with one good copy and one download', async (t) => {
  const settings = await freshSettings();
  const f = fixture(4 * MB);
  let release!: () => void;
  const released = new Promise<void>((resolve) => { release = resolve; });
  // Hold the first response until the other process reports that it waits on the lock
  // (or 10 s pass), so the two pulls really overlap.
  const fallback = setTimeout(() => release(), 10_000);
  server.route('/c/concurrent.bin', { data: f.data, faults: [{ kind: 'hold', until: released }] });
  const args = [server.url('/c/concurrent.bin'), 'duo', 'model.bin', f.sha256];
  const env = { ...process.env, ZOO_CACHE: settings.cacheDir, ZOO_OFFLINE: '', HF_HUB_OFFLINE: '', ZOO_MIRROR: '', HF_ENDPOINT: '' };
  const onEvent = (e: Record<string, unknown>) => {
    if (e.event === 'waiting') release();
  };
  const results = await Promise.all([runChild(args, env, onEvent), runChild(args, env, onEvent)]);
  clearTimeout(fallback);
  for (const r of results) t.is(r.code, 0, `${JSON.stringify(r.events)} ${r.stderr}`);
  const done = results.map((r) => r.events.find((e) => e.event === 'done')!);
  t.deepEqual(done.map((d) => d.sha256), [f.sha256, f.sha256]);
  t.deepEqual(done.map((d) => d.fromCache).sort(), [false, true]);
  t.true(results.some((r) => r.events.some((e) => e.event === 'waiting')), 'one process waited for the other');
  t.is(server.requests('/c/concurrent.bin').length, 1);
  t.is(server.fullDownloads('/c/concurrent.bin'), 1);
  t.true((await fsp.readFile(path.join(settings.cacheDir, 'duo', 'model.bin'))).equals(f.data));
  t.deepEqual(await fsp.readdir(path.join(settings.cacheDir, 'duo')), ['manifest.json', 'model.bin']);
  t.false(fs.existsSync(modelLockPath('duo', settings)));
});
