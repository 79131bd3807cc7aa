import test from 'ava';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { UserError } from '../src/errors.js';
import {
  checkCached, FetchError, fetchFile, KeepFileError, keepFile, listCached, modelDir, modelLockPath, progressPrinter, readManifest, removeCached,
  writeManifest, type ProgressStream,
} from '../src/hub/cache.js';
import { mirrorSetting, parseMirror, readHubSettings, resolveSourceCandidates, resolveSourceUrl, type HubSettings } from '../src/hub/settings.js';
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

test('ZOO_MIRROR as a directory or base URL is laid out per source: two hub repos never share a file', (t) => {
  const dir = readHubSettings({ ZOO_MIRROR: '/srv/weights' });
  const strong = 'https://huggingface.co/timm/resnet50d.ra2_in1k/resolve/main/model.safetensors';
  t.is(resolveSourceUrl(HF, dir), '/srv/weights/timm/resnet50d.gluon_in1k/resolve/main/model.safetensors');
  t.is(resolveSourceUrl(strong, dir), '/srv/weights/timm/resnet50d.ra2_in1k/resolve/main/model.safetensors');
  t.deepEqual(resolveSourceCandidates(GLUON, dir), ['/srv/weights/resnet50_v1d-117a384e.zip', '/srv/weights/gluon/models/resnet50_v1d-117a384e.zip']);
  t.deepEqual(resolveSourceCandidates('https://download.pytorch.org/models/resnet50-0676ba61.pth', dir), ['/srv/weights/resnet50-0676ba61.pth']);
  t.deepEqual(resolveSourceCandidates('https://example.org/a/b%20c.bin', dir), ['/srv/weights/example.org/a/b c.bin'], 'any other host: <host>/<path>');
  t.is(resolveSourceUrl(GLUON, readHubSettings({ ZOO_MIRROR: 'file:///srv/weights/' })), '/srv/weights/resnet50_v1d-117a384e.zip');
  t.is(resolveSourceUrl(HF, readHubSettings({ ZOO_MIRROR: 'http://lan/w/' })), 'http://lan/w/timm/resnet50d.gluon_in1k/resolve/main/model.safetensors');
  t.deepEqual(resolveSourceCandidates(GLUON, readHubSettings({ ZOO_MIRROR: 'http://lan/w' })), ['http://lan/w/resnet50_v1d-117a384e.zip', 'http://lan/w/gluon/models/resnet50_v1d-117a384e.zip']);
  t.is(resolveSourceUrl(HF, readHubSettings({ ZOO_MIRROR: '/srv/a=b' })), '/srv/a=b/timm/resnet50d.gluon_in1k/resolve/main/model.safetensors', "'=' in a path is not a map");
  t.throws(() => resolveSourceUrl('https://example.org/a/..%2F..%2Fetc/passwd', dir), { instanceOf: UserError, message: /would leave the mirror directory/ });
});

test('which setting sends a source elsewhere', (t) => {
  t.is(mirrorSetting(HF, readHubSettings({ ZOO_MIRROR: '/srv/w' })), 'ZOO_MIRROR');
  t.is(mirrorSetting(HF, readHubSettings({ HF_ENDPOINT: 'https://m.example' })), 'HF_ENDPOINT');
  t.is(mirrorSetting(GLUON, readHubSettings({ HF_ENDPOINT: 'https://m.example' })), undefined);
  t.is(mirrorSetting(GLUON, readHubSettings({ MXNET_GLUON_REPO: 'https://g.example/' })), 'MXNET_GLUON_REPO');
  t.is(mirrorSetting(GLUON, readHubSettings({ ZOO_MIRROR: 'https://huggingface.co=http://lan/hf' })), undefined, 'no prefix entry for it');
});

test('ZOO_DOWNLOAD_TIMEOUT is seconds; a bad value is a usage error naming it', (t) => {
  t.is(readHubSettings({ ZOO_DOWNLOAD_TIMEOUT: '90' }).downloadTimeoutMs, 90_000);
  t.is(readHubSettings({}).downloadTimeoutMs, undefined);
  const err = t.throws(() => readHubSettings({ ZOO_DOWNLOAD_TIMEOUT: 'soon' }), { instanceOf: UserError });
  t.is((err as UserError).exitCode, 2);
  t.regex(err!.message, /ZOO_DOWNLOAD_TIMEOUT .* 'soon'/);
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
  const b = await fetchFile({ name: 'fromurl', fileName: 'w.bin', sources: [pathToFileURL(path.join(dir, 'w.bin')).href], expected: { sha256: f.sha256 }, settings });
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
  server.route('/c/heal.bin', { data: f.data, headers: { 'x-linked-etag': `"${f.sha256}"` } });
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
  await fetchFile({ name: 'zeta', fileName: 'a.bin', sources: [dir], expected: { sha256: f.sha256 }, settings });
  await fetchFile({ name: 'alpha', fileName: 'a.bin', sources: [dir], expected: { sha256: f.sha256 }, settings });
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

// --- only what was verified ----------------------------------------------------------------

test('a cached file that disagrees with its pinned checksum is refused even when the manifest vouches for it', async (t) => {
  const settings = await freshSettings();
  const good = fixture(MB);
  server.route('/c/pinned.bin', { data: good.data });
  const opts = { name: 'pinwins', fileName: 'w.bin', sources: [server.url('/c/pinned.bin')], expected: { sha256: good.sha256 }, settings, transfer: quick };
  const first = await fetchFile(opts);
  // Another file in its place, and a manifest entry that matches it: only the pin can tell.
  const other = fixture(MB);
  await fsp.writeFile(first.path, other.data);
  const manifest = (await readManifest('pinwins', settings))!;
  manifest.files['w.bin'] = { ...manifest.files['w.bin']!, sha256: other.sha256, sha1: other.sha1, size: other.data.length };
  await writeManifest('pinwins', manifest, settings);
  const check = await checkCached('pinwins', 'w.bin', { expected: { sha256: good.sha256 }, settings });
  t.is(check.state, 'bad');
  t.regex((check as { reason: string }).reason, new RegExp(`sha256 expected ${good.sha256}, got ${other.sha256}`));
  t.is((await checkCached('pinwins', 'w.bin', { settings })).state, 'ok', 'without the pin the manifest is all there is');
  const again = await fetchFile(opts);
  t.false(again.fromCache);
  t.true((await fsp.readFile(again.path)).equals(good.data));
  t.is(server.requests('/c/pinned.bin').length, 2);
});

test('a file nothing vouches for (no pin, no declared sha256) is refused with its sha256, and leaves nothing behind', async (t) => {
  const settings = await freshSettings();
  const page = Buffer.from('<!doctype html><html><body>Sign in to continue</body></html>');
  server.route('/c/portal', { data: page });
  const err = await t.throwsAsync(fetchFile({ name: 'portal', fileName: 'model.safetensors', sources: [server.url('/c/portal')], settings, transfer: quick }), { instanceOf: FetchError });
  const sha = crypto.createHash('sha256').update(page).digest('hex');
  t.regex(err!.message, /refused: no checksum is pinned for it and the host declared none/);
  t.true(err!.message.includes(`Its sha256 is ${sha}`) && err!.message.includes(`pin "sha256": "${sha}"`));
  t.false(fs.existsSync(modelDir('portal', settings)), 'no model directory is left');
});

test('a mirror directory is laid out per source; its unpinned files are refused, its pinned ones used and named', async (t) => {
  const mirror = await fsp.mkdtemp(path.join(tmp, 'layout-'));
  const best = fixture(MB);
  const bestUrl = 'https://huggingface.co/timm/resnet50d.gluon_in1k/resolve/main/model.safetensors';
  const strongUrl = 'https://huggingface.co/timm/resnet50d.ra2_in1k/resolve/main/model.safetensors';
  const bestPath = path.join(mirror, 'timm/resnet50d.gluon_in1k/resolve/main/model.safetensors');
  await fsp.mkdir(path.dirname(bestPath), { recursive: true });
  await fsp.writeFile(bestPath, best.data);
  const settings = await freshSettings({ ZOO_MIRROR: mirror });
  // The other repo's identical file name does not make its file this one's.
  const missing = await t.throwsAsync(fetchFile({ name: 'strong', fileName: 'model.safetensors', sources: [strongUrl], settings }), { instanceOf: FetchError });
  t.is(missing!.message, `${strongUrl} (via ${path.join(mirror, 'timm/resnet50d.ra2_in1k/resolve/main/model.safetensors')}): no such file`);
  t.false(fs.existsSync(modelDir('strong', settings)));
  // Present but unpinned: refused, saying why and what to do.
  const refused = await t.throwsAsync(fetchFile({ name: 'best', fileName: 'model.safetensors', sources: [bestUrl], settings }), { instanceOf: FetchError });
  t.true(refused!.message.startsWith(`${bestUrl} (via ${bestPath}): refused: no checksum is pinned for it and a ZOO_MIRROR directory declares none`), refused!.message);
  t.true(refused!.message.includes(`Its sha256 is ${best.sha256}`));
  t.regex(refused!.message, /or fetch it from the host itself \(unset ZOO_MIRROR\)/);
  t.false(fs.existsSync(modelDir('best', settings)));
  // Pinned: used, and the manifest says where it really came from.
  const ok = await fetchFile({ name: 'best', fileName: 'model.safetensors', sources: [bestUrl], expected: { sha256: best.sha256 }, settings });
  t.like(ok.entry, { source: bestUrl, resolved: bestPath, sha256: best.sha256, verified: 'pinned' });
  t.is(ok.verified, 'pinned');
  // GluonCV's file names, also under gluon/models/.
  const zip = fixture(1000);
  await fsp.mkdir(path.join(mirror, 'gluon/models'), { recursive: true });
  await fsp.writeFile(path.join(mirror, 'gluon/models/resnet50_v1d-117a384e.zip'), zip.data);
  const g = await fetchFile({ name: 'g', fileName: 'resnet50_v1d-117a384e.zip', sources: [GLUON], expected: { sha256: zip.sha256 }, settings });
  t.is(g.entry.resolved, path.join(mirror, 'gluon/models/resnet50_v1d-117a384e.zip'));
});

test('a mirror URL is not trusted to vouch for its own bytes: a sha256 it declares is no pin, and its file is refused', async (t) => {
  const f = fixture(MB);
  const source = 'https://huggingface.co/timm/r/resolve/main/model.safetensors';
  server.route('/m/timm/r/resolve/main/model.safetensors', { data: f.data, headers: { 'x-linked-etag': `"${f.sha256}"`, etag: `"${f.sha256}"` } });
  const settings = await freshSettings({ ZOO_MIRROR: server.url('/m') });
  const err = await t.throwsAsync(fetchFile({ name: 'relay', fileName: 'model.safetensors', sources: [source], settings, transfer: quick }), { instanceOf: FetchError });
  t.regex(err!.message, /refused: no checksum is pinned for it and a mirror \(ZOO_MIRROR\) is not trusted to say which file it serves/);
  t.true(err!.message.includes(`pin "sha256": "${f.sha256}"`), err!.message);
  t.false(fs.existsSync(modelDir('relay', settings)), 'nothing enters the cache');
  // The same host's declaration is taken when zoo reaches the source itself (no mirror in between).
  const direct = await fetchFile({ name: 'relay', fileName: 'model.safetensors', sources: [server.url('/m/timm/r/resolve/main/model.safetensors')], settings: await freshSettings(), transfer: quick });
  t.is(direct.verified, 'declared');
  // A pinned file from the mirror is used, and recorded without the mirror's declaration.
  const pinned = await fetchFile({ name: 'relay', fileName: 'model.safetensors', sources: [source], expected: { sha256: f.sha256 }, settings, transfer: quick });
  t.like(pinned.entry, { resolved: server.url('/m/timm/r/resolve/main/model.safetensors'), verified: 'pinned' });
  t.is(pinned.entry.declaredSha256, undefined);
});

test('a cached copy a mirror delivered is not handed out unpinned on a declaration recorded with it', async (t) => {
  const f = fixture(1000);
  const source = 'https://huggingface.co/timm/old/resolve/main/model.safetensors';
  const settings = await freshSettings({ ZOO_MIRROR: server.url('/m') });
  const dir = modelDir('old', settings);
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(dir, 'model.safetensors'), f.data);
  // What an earlier version recorded for a mirror's relayed declaration.
  await writeManifest('old', { name: 'old', files: { 'model.safetensors': {
    source, resolved: server.url('/m/timm/old/resolve/main/model.safetensors'), size: f.data.length, sha256: f.sha256, sha1: f.sha1,
    declaredSha256: f.sha256, verified: 'declared', time: new Date().toISOString(),
  } } }, settings);
  const check = await t.throwsAsync(fetchFile({ name: 'old', fileName: 'model.safetensors', sources: [source], settings: readHubSettings({ ZOO_CACHE: settings.cacheDir, ZOO_OFFLINE: '1' }) }));
  t.regex(check!.message, /cannot be verified \(a mirror delivered it .* and no checksum is pinned for it\); it was left in place/);
});

test('the caller\'s check runs before a download enters the cache: a failing copy is deleted and the next source tried', async (t) => {
  const settings = await freshSettings();
  const bad = fixture(2000);
  const good = fixture(3000);
  server.route('/c/v-bad.bin', { data: bad.data, headers: { 'x-linked-etag': `"${bad.sha256}"` } });
  server.route('/c/v-good.bin', { data: good.data, headers: { 'x-linked-etag': `"${good.sha256}"` } });
  const checked: string[] = [];
  const verify = async (file: string) => {
    const bytes = await fsp.readFile(file);
    checked.push(path.relative(settings.cacheDir, file));
    if (!bytes.equals(good.data)) throw new UserError(`${file}: not a weights file`);
  };
  const r = await fetchFile({ name: 'checked', fileName: 'w.bin', sources: [server.url('/c/v-bad.bin'), server.url('/c/v-good.bin')], verify, settings, transfer: quick });
  t.false(r.fromCache);
  t.deepEqual(checked, [path.join('checked', '.incoming', 'w.bin'), path.join('checked', '.incoming', 'w.bin')], 'checked where it was downloaded, before it moved into place');
  t.deepEqual(Object.keys((await readManifest('checked', settings))!.files), ['w.bin']);
  t.is((await readManifest('checked', settings))!.files['w.bin']!.source, server.url('/c/v-good.bin'));
  t.deepEqual(await fsp.readdir(modelDir('checked', settings)), ['manifest.json', 'w.bin']);
  // A cached copy that no longer passes is removed with its entry and fetched again.
  checked.length = 0;
  let fail = true;
  const again = await fetchFile({
    name: 'checked', fileName: 'w.bin', sources: [server.url('/c/v-good.bin')], settings, transfer: quick,
    verify: async (file) => {
      checked.push(path.relative(settings.cacheDir, file));
      if (fail) {
        fail = false;
        throw new UserError('does not convert');
      }
    },
  });
  t.false(again.fromCache);
  t.deepEqual(checked, [path.join('checked', 'w.bin'), path.join('checked', '.incoming', 'w.bin')]);
  t.is(server.requests('/c/v-good.bin').length, 2);
});

test('force downloads again and keeps the good old copy until the new one passes', async (t) => {
  const settings = await freshSettings();
  const f = fixture(MB);
  server.route('/c/force.bin', { data: f.data, headers: { 'x-linked-etag': `"${f.sha256}"` } });
  const opts = { name: 'forced', fileName: 'w.bin', sources: [server.url('/c/force.bin')], settings, transfer: quick };
  await fetchFile(opts);
  const before = (await readManifest('forced', settings))!.files['w.bin']!;
  const again = await fetchFile({ ...opts, force: true });
  t.false(again.fromCache);
  t.is(server.requests('/c/force.bin').length, 2);
  // A forced download that fails (the server is down, then the new copy fails the check): the old copy stays.
  server.route('/c/force.bin', { data: f.data, faults: [{ kind: 'status', status: 503 }, { kind: 'status', status: 503 }] });
  await t.throwsAsync(fetchFile({ ...opts, force: true }), { instanceOf: FetchError, message: /HTTP 503/ });
  server.route('/c/force.bin', { data: f.data, headers: { 'x-linked-etag': `"${f.sha256}"` } });
  await t.throwsAsync(fetchFile({ ...opts, force: true, verify: async () => { throw new UserError('nope'); } }), { instanceOf: FetchError, message: /nope/ });
  t.true((await fsp.readFile(path.join(modelDir('forced', settings), 'w.bin'))).equals(f.data));
  t.is((await readManifest('forced', settings))!.files['w.bin']!.sha256, before.sha256);
  t.deepEqual(await fsp.readdir(modelDir('forced', settings)), ['manifest.json', 'w.bin']);
});

test('an entry an older cache recorded without any checksum (an HTML page, say) is not handed out but fetched again', async (t) => {
  const settings = await freshSettings();
  const f = fixture(MB);
  server.route('/c/old.bin', { data: f.data, headers: { 'x-linked-etag': `"${f.sha256}"` } });
  const page = Buffer.from('<html>error</html>');
  await fsp.mkdir(modelDir('legacy', settings), { recursive: true });
  await fsp.writeFile(path.join(modelDir('legacy', settings), 'w.bin'), page);
  const digest = (algo: string) => crypto.createHash(algo).update(page).digest('hex');
  await writeManifest('legacy', { name: 'legacy', files: { 'w.bin': { source: server.url('/c/old.bin'), size: page.length, sha256: digest('sha256'), sha1: digest('sha1'), time: new Date().toISOString() } } }, settings);
  const logs: string[] = [];
  const r = await fetchFile({ name: 'legacy', fileName: 'w.bin', sources: [server.url('/c/old.bin')], settings, transfer: quick, log: (l) => logs.push(l) });
  t.false(r.fromCache);
  t.true((await fsp.readFile(r.path)).equals(f.data));
  t.is(server.requests('/c/old.bin').length, 1);
  t.regex(logs.join('\n'), /cached copy was removed \(it was recorded without a pinned or host-declared checksum\)/);
});

test('offline, a file the user put where zoo said, pinned only by the caller\'s check, is verified and used, never deleted', async (t) => {
  const online = await freshSettings();
  const offline: HubSettings = { ...online, offline: true };
  const good = fixture(2000);
  const prefix = good.sha256.slice(0, 8);
  const fileName = `w-${prefix}.pth`;
  const dir = modelDir('placed', online);
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(dir, fileName), good.data);
  const prefixCheck = async (file: string) => {
    const got = crypto.createHash('sha256').update(await fsp.readFile(file)).digest('hex');
    if (!got.startsWith(prefix)) throw new UserError(`checksum mismatch: sha256 should start with ${prefix}, got ${got}`);
  };
  const opts = { name: 'placed', fileName, sources: [server.url(`/c/${fileName}`)], pinnedBy: `the sha256 prefix ${prefix} in its file name`, verify: prefixCheck, settings: offline };
  t.is((await checkCached('placed', fileName, { settings: offline, pinnedBy: opts.pinnedBy })).state, 'ok');
  const r = await fetchFile(opts);
  t.true(r.fromCache);
  t.is(r.verified, 'pinned');
  // A copy that fails the caller's check is reported as such, and left where it is.
  const wrong = fixture(2000);
  await fsp.writeFile(path.join(dir, fileName), wrong.data);
  const err = await t.throwsAsync(fetchFile(opts), { instanceOf: UserError });
  t.regex(err!.message, /placed\/w-[0-9a-f]{8}\.pth is in the cache but fails verification \(checksum mismatch: sha256 should start with/);
  t.regex(err!.message, /it was left in place/);
  t.regex(err!.message, /or put a copy there \(it is checked against the sha256 prefix [0-9a-f]{8} in its file name\)/);
  t.true((await fsp.readFile(path.join(dir, fileName))).equals(wrong.data), 'offline deletes nothing');
  t.is(server.requests(`/c/${fileName}`).length, 0);
});

test('offline, an unpinned file with no manifest entry cannot be verified: said so, and kept', async (t) => {
  const settings: HubSettings = { ...(await freshSettings()), offline: true };
  const f = fixture(1000);
  const dir = modelDir('unpinned', settings);
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(dir, 'model.safetensors'), f.data);
  const err = await t.throwsAsync(fetchFile({ name: 'unpinned', fileName: 'model.safetensors', sources: [HF], verify: async () => {}, settings }), { instanceOf: UserError });
  t.regex(err!.message, /unpinned\/model\.safetensors is in the cache but cannot be verified \(no checksum is pinned for it and no pull recorded one\); it was left in place/);
  t.regex(err!.message, /a copy put there cannot be verified offline, as models\.json pins no checksum for it: pull it online once, or pin its sha256/);
  t.false(/put a verified copy there/.test(err!.message));
  t.true(fs.existsSync(path.join(dir, 'model.safetensors')));
  // Without a verify callback (the quick path) the answer is the same.
  await t.throwsAsync(fetchFile({ name: 'unpinned', fileName: 'model.safetensors', sources: [HF], settings }), { message: /cannot be verified/ });
  t.true(fs.existsSync(path.join(dir, 'model.safetensors')));
});

test('a cached copy whose checksum passed but whose conversion failed (KeepFileError) is kept, not downloaded again', async (t) => {
  const settings = await freshSettings();
  const f = fixture(2000);
  server.route('/c/keep.bin', { data: f.data });
  const opts = { name: 'keep', fileName: 'w.bin', sources: [server.url('/c/keep.bin')], expected: { sha256: f.sha256 }, settings, transfer: quick };
  await fetchFile({ ...opts, verify: async () => {} });
  const err = await t.throwsAsync(fetchFile({ ...opts, verify: async () => { throw new KeepFileError('the export does not reproduce in ONNX Runtime'); } }));
  t.true(err instanceof KeepFileError, String(err));
  t.true((await fsp.readFile(path.join(modelDir('keep', settings), 'w.bin'))).equals(f.data), 'the verified file stays');
  t.truthy((await readManifest('keep', settings))!.files['w.bin']);
  t.is(server.requests('/c/keep.bin').length, 1, 'not downloaded again');
  // A parse failure (any other UserError) still removes the copy and fetches it again.
  const again = await fetchFile({ ...opts, verify: (() => { let n = 0; return async () => { if (n++ === 0) throw new UserError('does not parse'); }; })() });
  t.false(again.fromCache);
  t.is(server.requests('/c/keep.bin').length, 2);
});

test('keepFile turns a UserError of a later step into a KeepFileError and lets other errors through', async (t) => {
  const exportFailed = new UserError('the converted x does not reproduce in ONNX Runtime');
  const kept = await t.throwsAsync(Promise.reject(exportFailed).catch(keepFile));
  t.true(kept instanceof KeepFileError);
  t.is(kept!.message, exportFailed.message);
  t.is((kept as KeepFileError).cause, exportFailed);
  const already = new KeepFileError('kept');
  t.is(await t.throwsAsync(Promise.reject(already).catch(keepFile)), already);
  const bug = new TypeError('a bug');
  t.is(await t.throwsAsync(Promise.reject(bug).catch(keepFile)), bug, 'not a user error: passed on as it is');
});

test('an unusable cache directory (a file where it should be) is a UserError naming the place and ZOO_CACHE', async (t) => {
  const file = path.join(tmp, 'not-a-dir');
  await fsp.writeFile(file, 'x');
  const settings = readHubSettings({ ZOO_CACHE: file });
  const nested = readHubSettings({ ZOO_CACHE: path.join(file, 'cache') });
  const calls: [string, () => Promise<unknown>][] = [
    ['listCached', () => listCached(nested)],
    ['readManifest', () => readManifest('m', settings)],
    ['removeCached', () => removeCached('m', settings)],
    ['fetchFile', () => fetchFile({ name: 'm', fileName: 'w.bin', sources: [server.url('/c/none.bin')], expected: { sha256: 'a'.repeat(64) }, settings, transfer: quick })],
  ];
  for (const [label, call] of calls) {
    const err = await t.throwsAsync(call(), undefined, label);
    t.true(err instanceof UserError, `${label}: ${String(err)}`);
    t.regex(err!.message, /^the cache directory .* cannot be used: .*\(ENOTDIR\); fix it, or set ZOO_CACHE to a directory zoo can write to$/, label);
    t.true(err!.message.includes(file), label);
  }
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
