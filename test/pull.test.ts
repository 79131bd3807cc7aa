/**
 * `zoo pull` end to end against a local HTTP server: weights published as safetensors (timm names),
 * a GluonCV zip (resnetv1b and resnet v1 names) and a PyTorch .pth are downloaded, verified, converted,
 * exported and checked; the converted model's predictions match a forward pass written independently
 * (helpers/reference_resnet.ts) from the same tensors. Faults end in a clear error and leave no
 * converted model in the cache.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import crypto from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { FixtureServer } from './helpers/http_server.js';
import { makeZip, rawSafetensors } from './helpers/fixtures.js';
import { openZip } from '../src/formats/zip.js';
import { referenceLogits, type RefConfig } from './helpers/reference_resnet.js';
import { gluonV1Names, gluonV1bNames, gluonZip, safetensorsBytes, torchPth, torchStateDict } from './helpers/weights_fixtures.js';
import { createModel } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { pullModel, PullError, type PullEntry, type PullSource } from '../src/hub/pull.js';
import { readManifest, writeManifest } from '../src/hub/cache.js';
import { readHubSettings } from '../src/hub/settings.js';
import { createSession, runClassifier } from '../src/runtime/ort.js';
import { checkInput, toNCHW } from '../src/onnx/check.js';
import { UserError } from '../src/errors.js';

const root = mkdtempSync(join(tmpdir(), 'zoo-pull-'));
let server: FixtureServer;
const settings = (extra: Record<string, string> = {}) => readHubSettings({ ZOO_CACHE: join(root, 'cache'), ...extra }, root);

const D: RefConfig = { stem: 'deep', strideIn: '3x3', avgDown: true, layers: [1, 1, 1, 1] };
const A: RefConfig = { stem: 'plain', strideIn: '1x1', avgDown: false, layers: [1, 1, 1, 1] };
const sha1 = (b: Uint8Array) => crypto.createHash('sha1').update(b).digest('hex');
const sha256 = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');
const pre = { resizeShorter: 73, crop: 64, interpolation: 'bilinear' as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

function entry(name: string, arch: string, sources: PullSource[]): PullEntry {
  return { name, arch, numClasses: 10, categories: null, sources, preprocessing: pre };
}

const sd = new Map<string, ReturnType<typeof torchStateDict>>();

/** A GluonCV-style zip `<name>-<sha1[:8]>.zip` holding `<name>-<sha1[:8]>.params`, sha1 of the member. */
function gluonFixture(named: Parameters<typeof gluonZip>[0], name: string) {
  const params = openZip(gluonZip(named), 'fixture').read('model-0000.params');
  const memberSha1 = sha1(params);
  const member = `${name}-${memberSha1.slice(0, 8)}.params`;
  return { zip: makeZip([{ name: member, data: params, method: 8 }]), member, memberSha1 };
}

test.before(async () => {
  await setupBackend();
  server = await FixtureServer.start();
  for (const arch of ['resnet_test', 'resnet_test_a']) {
    const m = createModel(arch, { seed: 5 });
    await trainedLikeInit(m, { seed: 6 });
    sd.set(arch, torchStateDict(m));
    m.dispose();
  }
});

test.after.always(async () => {
  await server?.close();
  rmSync(root, { recursive: true, force: true });
});

/** Logits of the ONNX file the pull produced, against the reference on the original tensors. */
async function checkAgainstReference(t: { true(v: boolean, m?: string): void }, onnxPath: string, arch: string, cfg: RefConfig) {
  const x = checkInput(3, 64, 64, 3, 42);
  const want = referenceLogits(sd.get(arch)!, cfg, tf.tensor4d(x, [3, 64, 64, 3]));
  const expected = want.dataSync();
  want.dispose();
  const s = await createSession(onnxPath, { provider: 'cpu' });
  const got = await runClassifier(s, toNCHW(x, 3, 64, 64, 3), [3, 3, 64, 64]);
  await s.session.release();
  let d = 0;
  for (let i = 0; i < expected.length; i++) d = Math.max(d, Math.abs(expected[i]! - got[i]!));
  t.true(d <= 1e-4, `converted model vs independent reference: max |diff| ${d}`);
}

const formats: [string, string, RefConfig, () => { path: string; bytes: Uint8Array; source: Omit<PullSource, 'url'> }][] = [
  ['safetensors, timm names', 'resnet_test', D, () => {
    const bytes = safetensorsBytes(sd.get('resnet_test')!, { 'layer1.0.bn1.num_batches_tracked': { shape: [], data: new Float32Array([1]) } });
    return { path: '/timm/model.safetensors', bytes, source: { format: 'safetensors', naming: 'timm', sha256: sha256(bytes) } };
  }],
  ['GluonCV zip, resnetv1b names (SHA-1 of the .params member, as GluonCV publishes it)', 'resnet_test', D, () => {
    const { zip, member, memberSha1 } = gluonFixture(gluonV1bNames(sd.get('resnet_test')!), 'test_v1d');
    return { path: `/gluon/models/${member.replace('.params', '.zip')}`, bytes: zip, source: { format: 'gluon-zip', naming: 'gluon-v1b', sha1: memberSha1, member } };
  }],
  ['GluonCV zip, resnet v1 names with conv biases (ResNet A)', 'resnet_test_a', A, () => {
    const { zip, member, memberSha1 } = gluonFixture(gluonV1Names(sd.get('resnet_test_a')!), 'test_v1');
    return { path: `/gluon/models/${member.replace('.params', '.zip')}`, bytes: zip, source: { format: 'gluon-zip', naming: 'gluon-v1', sha1: memberSha1.slice(0, 8), member } };
  }],
  ['PyTorch .pth, torchvision names (ResNet A; the sha256 prefix in the file name, as torchvision publishes it)', 'resnet_test_a', A, () => {
    const bytes = torchPth(sd.get('resnet_test_a')!);
    const prefix = sha256(bytes).slice(0, 8);
    return { path: `/tv/test-a-${prefix}.pth`, bytes, source: { format: 'pth', naming: 'torchvision', sha256Prefix: prefix } };
  }],
];

for (const [label, arch, cfg, make] of formats) {
  test.serial(`pull converts ${label}; predictions match an independent forward pass`, async (t) => {
    const f = make();
    server.route(f.path, { data: Buffer.from(f.bytes) });
    const name = `fixture-${label.replace(/[^a-z0-9]+/gi, '-')}`;
    const e = entry(name, arch, [{ ...f.source, url: server.url(f.path) }]);
    const r = await pullModel(e, { settings: settings(), fp16: true });
    t.false(r.fromCache);
    t.true(existsSync(r.onnx) && existsSync(r.onnxFp16!));
    t.true(r.record.check.maxAbsDiff <= 1e-4);
    t.is(r.record.source.sha256, sha256(f.bytes));
    await checkAgainstReference(t, r.onnx, arch, cfg);
    // A second pull is served from the cache: no new request.
    const before = server.log.length;
    const again = await pullModel(e, { settings: settings(), fp16: true });
    t.true(again.fromCache);
    t.is(server.log.length, before);
    // Offline, the cached model is still there.
    t.true((await pullModel(e, { settings: settings({ ZOO_OFFLINE: '1' }) })).fromCache);
  });
}

/** The model's cache directory holds no converted model (and no partial download under its name). */
function noConvertedModel(t: { false(v: boolean, m?: string): void }, name: string) {
  const dir = join(root, 'cache', name);
  t.false(existsSync(join(dir, 'model.onnx')), 'no model.onnx after a failure');
  if (existsSync(dir)) t.false(readdirSync(dir).some((f) => f.endsWith('.onnx')), 'no ONNX file at all');
}

test.serial('a wrong pinned checksum fails with both digests and leaves nothing converted', async (t) => {
  const bytes = safetensorsBytes(sd.get('resnet_test')!);
  server.route('/bad/model.safetensors', { data: Buffer.from(bytes) });
  const e = entry('bad-sha', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/bad/model.safetensors'), sha256: '0'.repeat(64) }]);
  const err = await t.throwsAsync(pullModel(e, { settings: settings() }), { instanceOf: UserError });
  t.regex(err!.message, /checksum/i);
  t.true(err!.message.includes(sha256(bytes)));
  noConvertedModel(t, 'bad-sha');
});

test.serial('a GluonCV member with the wrong SHA-1 fails, the zip leaves the cache, nothing is converted', async (t) => {
  const { zip, member } = gluonFixture(gluonV1bNames(sd.get('resnet_test')!), 'badmember');
  server.route('/gluon/models/badmember.zip', { data: Buffer.from(zip) });
  const e = entry('bad-member', 'resnet_test', [{ format: 'gluon-zip', naming: 'gluon-v1b', url: server.url('/gluon/models/badmember.zip'), sha1: 'f'.repeat(40), member }]);
  const err = await t.throwsAsync(pullModel(e, { settings: settings() }), { instanceOf: UserError });
  t.regex(err!.message, /checksum mismatch for 'badmember-[0-9a-f]{8}\.params': expected sha1 f{40}/);
  t.false(existsSync(join(root, 'cache', 'bad-member', 'badmember.zip')));
  noConvertedModel(t, 'bad-member');
});

test.serial('server errors are retried, a dropped connection resumes, and the model converts', async (t) => {
  const bytes = safetensorsBytes(sd.get('resnet_test')!);
  server.route('/flaky/model.safetensors', { data: Buffer.from(bytes), faults: [{ kind: 'status', status: 503 }, { kind: 'drop', at: Math.floor(bytes.length / 2) }] });
  const e = entry('flaky', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/flaky/model.safetensors'), sha256: sha256(bytes) }]);
  const r = await pullModel(e, { settings: readHubSettings({ ZOO_CACHE: join(root, 'cache') }, root) });
  t.false(r.fromCache);
  const reqs = server.log.filter((l) => l.path === '/flaky/model.safetensors');
  t.true(reqs.length >= 3, `${reqs.length} requests`);
  t.true(reqs.some((l) => l.range?.startsWith('bytes=') && !l.range.startsWith('bytes=0-')), 'a Range request resumed the download');
  await checkAgainstReference(t, r.onnx, 'resnet_test', D);
});

test.serial('a truncated .params inside the zip, a zip entry with ../ and safetensors offsets past the end: clear errors, nothing converted', async (t) => {
  const params = gluonZip(gluonV1bNames(sd.get('resnet_test')!));
  const { openZip } = await import('../src/formats/zip.js');
  const inner = openZip(params, 'fixture').read('model-0000.params');
  const cases: [string, Uint8Array, PullSource['format'], RegExp][] = [
    ['truncated-params', makeZip([{ name: 'model-0000.params', data: inner.subarray(0, Math.floor(inner.length * 0.6)) }]), 'gluon-zip', /\.zip.*(short|truncated|end of|past)/i],
    ['zip-slip', makeZip([{ name: '../evil.params', data: inner }]), 'gluon-zip', /\.\.\/evil\.params/],
    ['bad-offsets', rawSafetensors({ 'fc.weight': { dtype: 'F32', shape: [10, 256], data_offsets: [0, 10240] } }, new Uint8Array(100)), 'safetensors', /past the end|data_offsets/],
  ];
  for (const [name, bytes, format, re] of cases) {
    const file = format === 'safetensors' ? 'model.safetensors' : 'test_v1d-00000000.zip';
    server.route(`/${name}/${file}`, { data: Buffer.from(bytes) });
    const e = entry(name, 'resnet_test', [{ format, naming: format === 'safetensors' ? 'timm' : 'gluon-v1b', url: server.url(`/${name}/${file}`), sha256: sha256(bytes) }]);
    const err = await t.throwsAsync(pullModel(e, { settings: settings() }), { instanceOf: UserError }, name);
    t.regex(err!.message, re, name);
    noConvertedModel(t, name);
  }
});

test.serial('weights of another architecture: a report of missing and mis-shaped tensors, nothing converted', async (t) => {
  const bytes = safetensorsBytes(sd.get('resnet_test_a')!);
  server.route('/wrong/model.safetensors', { data: Buffer.from(bytes) });
  const e = entry('wrong-arch', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/wrong/model.safetensors'), sha256: sha256(bytes) }]);
  const err = await t.throwsAsync(pullModel(e, { settings: settings() }), { instanceOf: UserError });
  t.regex(err!.message, /does not match resnet_test \(timm names\): missing \d+: .*unexpected \d+: .*No parameter was changed/);
  noConvertedModel(t, 'wrong-arch');
});

test.serial('sources are tried in priority order: a 404 falls over to the next source', async (t) => {
  const { zip, member, memberSha1 } = gluonFixture(gluonV1bNames(sd.get('resnet_test')!), 'second');
  server.route('/second/second.zip', { data: Buffer.from(zip) });
  const e = entry('fallback', 'resnet_test', [
    { format: 'safetensors', naming: 'timm', url: server.url('/missing/model.safetensors') },
    { format: 'gluon-zip', naming: 'gluon-v1b', url: server.url('/second/second.zip'), sha1: memberSha1, member },
  ]);
  const logs: string[] = [];
  const r = await pullModel(e, { settings: settings(), log: (l) => logs.push(l) });
  t.is(r.record.source.format, 'gluon-zip');
  t.true(logs.some((l) => /404/.test(l)), 'the failed source is reported');
  await checkAgainstReference(t, r.onnx, 'resnet_test', D);
});

test.serial('two concurrent pulls of one model both end with one good copy, downloaded once', async (t) => {
  const bytes = safetensorsBytes(sd.get('resnet_test')!);
  server.route('/both/model.safetensors', { data: Buffer.from(bytes) });
  const e = entry('concurrent', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/both/model.safetensors'), sha256: sha256(bytes) }]);
  const [a, b] = await Promise.all([pullModel(e, { settings: settings() }), pullModel(e, { settings: settings() })]);
  t.is(a.onnx, b.onnx);
  t.is(a.record.onnx.sha256, b.record.onnx.sha256);
  t.is(server.log.filter((l) => l.path === '/both/model.safetensors' && l.complete).length, 1);
  await checkAgainstReference(t, a.onnx, 'resnet_test', D);
});

test.serial('offline, a model not in the cache fails and says what is missing', async (t) => {
  const e = entry('never-pulled', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/never/model.safetensors') }]);
  const before = server.log.length;
  const err = await t.throwsAsync(pullModel(e, { settings: settings({ ZOO_OFFLINE: '1' }) }), { instanceOf: UserError });
  t.regex(err!.message, /offline/i);
  t.regex(err!.message, /never\/model\.safetensors/);
  t.is(server.log.length, before, 'no request offline');
});

// --- the cache keeps only what it verified ---------------------------------------------------

const html = Buffer.from('<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in to continue.</body></html>\n');
const goodSafetensors = () => Buffer.from(safetensorsBytes(sd.get('resnet_test')!));

/** Every file under the model's cache directory, relative to it. */
function cacheFiles(name: string): string[] {
  const dir = join(root, 'cache', name);
  return existsSync(dir) ? (readdirSync(dir, { recursive: true }) as string[]).sort() : [];
}

test.serial('a 200 HTML page from a source without a pin is refused, the next source is used, and the page is not kept', async (t) => {
  const good = goodSafetensors();
  server.route('/portal/model.safetensors', { data: html });
  server.route('/good1/model.safetensors', { data: good });
  const e = entry('html-unpinned', 'resnet_test', [
    { format: 'safetensors', naming: 'timm', url: server.url('/portal/model.safetensors') },
    { format: 'safetensors', naming: 'timm', url: server.url('/good1/model.safetensors'), sha256: sha256(good) },
  ]);
  const logs: string[] = [];
  const r = await pullModel(e, { settings: settings(), log: (l) => logs.push(l) });
  t.is(r.record.source.url, server.url('/good1/model.safetensors'));
  t.regex(logs.join('\n'), /source 1 of 2 failed: .*\/portal\/model\.safetensors: refused: no checksum is pinned for it and the host declared none.*\ntrying source 2 of 2: /);
  t.deepEqual(Object.keys((await readManifest('html-unpinned', settings()))!.files), ['model.safetensors']);
  t.is((await readManifest('html-unpinned', settings()))!.files['model.safetensors']!.sha256, sha256(good));
});

test.serial('a download its host vouches for that does not parse is removed with its manifest entry, and the next source is tried', async (t) => {
  const good = goodSafetensors();
  server.route('/declared-html/model.safetensors', { data: html, headers: { 'x-linked-etag': `"${sha256(html)}"` } });
  server.route('/good2/model.safetensors', { data: good });
  const e = entry('html-declared', 'resnet_test', [
    { format: 'safetensors', naming: 'timm', url: server.url('/declared-html/model.safetensors') },
    { format: 'safetensors', naming: 'timm', url: server.url('/good2/model.safetensors'), sha256: sha256(good) },
  ]);
  const logs: string[] = [];
  const r = await pullModel(e, { settings: settings(), log: (l) => logs.push(l) });
  t.is(r.record.source.url, server.url('/good2/model.safetensors'));
  t.regex(logs.join('\n'), /source 1 of 2 failed: .*declared-html\/model\.safetensors: .*safetensors/i);
  const manifest = (await readManifest('html-declared', settings()))!;
  t.is(manifest.files['model.safetensors']!.source, server.url('/good2/model.safetensors'));
  t.is(manifest.files['model.safetensors']!.sha256, sha256(good));
  t.false(cacheFiles('html-declared').includes('.incoming'), JSON.stringify(cacheFiles('html-declared')));
});

test.serial('a cached download that does not convert (as an older zoo left it) is removed and fetched again, also with --force', async (t) => {
  const good = goodSafetensors();
  server.route('/stale/model.safetensors', { data: good, headers: { 'x-linked-etag': `"${sha256(good)}"` } });
  const e = entry('stale-html', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/stale/model.safetensors') }]);
  const s = settings();
  // What an older zoo recorded: the HTML page, "verified" against nothing.
  mkdirSync(join(root, 'cache', 'stale-html'), { recursive: true });
  writeFileSync(join(root, 'cache', 'stale-html', 'model.safetensors'), html);
  await writeManifest('stale-html', {
    name: 'stale-html',
    files: { 'model.safetensors': { source: server.url('/stale/model.safetensors'), size: html.length, sha256: sha256(html), sha1: sha1(html), time: new Date().toISOString() } },
  }, s);
  for (const force of [false, true]) {
    if (force) {
      writeFileSync(join(root, 'cache', 'stale-html', 'model.safetensors'), html);
      const m = (await readManifest('stale-html', s))!;
      m.files['model.safetensors'] = { ...m.files['model.safetensors']!, size: html.length, sha256: sha256(html), sha1: sha1(html), declaredSha256: sha256(html) };
      await writeManifest('stale-html', m, s);
    }
    const before = server.fullDownloads('/stale/model.safetensors');
    const r = await pullModel(e, { settings: s, force });
    t.false(r.fromCache);
    t.is(server.fullDownloads('/stale/model.safetensors'), before + 1, `force=${force}: the server was asked again`);
    t.is(r.record.source.sha256, sha256(good));
  }
});

test.serial('--force downloads and converts again; a forced pull that fails leaves the good model in place', async (t) => {
  const good = goodSafetensors();
  server.route('/forced/model.safetensors', { data: good });
  const e = entry('forced-pull', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/forced/model.safetensors'), sha256: sha256(good) }]);
  const first = await pullModel(e, { settings: settings() });
  t.true((await pullModel(e, { settings: settings() })).fromCache);
  const again = await pullModel(e, { settings: settings(), force: true });
  t.false(again.fromCache);
  t.is(server.fullDownloads('/forced/model.safetensors'), 2);
  server.route('/forced/model.safetensors', { data: html });
  const err = await t.throwsAsync(pullModel(e, { settings: settings(), force: true }), { instanceOf: UserError });
  t.regex(err!.message, /checksum mismatch/);
  t.is(sha256(readFileSync(join(first.dir, 'model.safetensors'))), sha256(good), 'the good download stays');
  const kept = await pullModel(e, { settings: settings() });
  t.true(kept.fromCache, 'the converted model stays too');
  t.is(kept.record.onnx.sha256, again.record.onnx.sha256);
});

test.serial('a failed pull leaves no entry behind and reports each source once, with the mirror settings to try', async (t) => {
  const hf = 'https://huggingface.co/timm/nothing.here/resolve/main/model.safetensors';
  const gluon = 'https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/nothing-00000000.zip';
  server.route('/hf/timm/nothing.here/resolve/main/model.safetensors', { data: html });
  server.route('/mx/gluon/models/nothing-00000000.zip', { data: html, faults: [0, 1, 2].map(() => ({ kind: 'status', status: 503 }) as const) });
  const e = entry('all-fail', 'resnet_test', [
    { format: 'safetensors', naming: 'timm', url: hf },
    { format: 'gluon-zip', naming: 'gluon-v1b', url: gluon, sha1: 'f'.repeat(40), member: 'nothing-00000000.params' },
  ]);
  const logs: string[] = [];
  const s = settings({ HF_ENDPOINT: server.url('/hf'), MXNET_GLUON_REPO: server.url('/mx') });
  const err = await t.throwsAsync(pullModel(e, { settings: s, log: (l) => logs.push(l), transfer: { retries: 2, backoffMs: 5 } }), { instanceOf: PullError });
  t.false(existsSync(join(root, 'cache', 'all-fail')), 'no model directory is left');
  const pe = err as PullError;
  t.is(pe.failures.length, 2);
  t.regex(pe.message, /^could not pull all-fail: all 2 of its sources failed:\n  1\. https:\/\/huggingface\.co\/timm\/nothing\.here\/.*\(via http:\/\/127\.0\.0\.1:\d+\/hf\/timm\/nothing\.here\/resolve\/main\/model\.safetensors\): refused: no checksum is pinned for it and a mirror \(HF_ENDPOINT\) is not trusted to say which file it serves/);
  t.regex(pe.message, /\n  2\. https:\/\/apache-mxnet\.s3-accelerate\.dualstack\.amazonaws\.com\/gluon\/models\/nothing-00000000\.zip \(via http:\/\/127\.0\.0\.1:\d+\/mx\/gluon\/models\/nothing-00000000\.zip\): HTTP 503 Service Unavailable \(gave up after 3 attempts\)/);
  for (const hint of ['HF_ENDPOINT=', 'MXNET_GLUON_REPO=', 'ZOO_MIRROR=', 'ZOO_OFFLINE=1', '(HF_ENDPOINT and MXNET_GLUON_REPO are set here']) t.true(pe.message.includes(hint), hint);
  // Each failure once in what the user sees: the lines as it happened, then the summary.
  const shown = [...logs, pe.summary].join('\n');
  for (const f of pe.failures) t.is(shown.split(f.reason).length - 1, 1, f.reason);
  t.false(pe.summary.includes('HTTP 503'));
  t.true(pe.summary.includes('ZOO_MIRROR='));
});

test.serial('a source without a pinned checksum: the first pull prints the sha256 it recorded, and says it was not pinned', async (t) => {
  const good = goodSafetensors();
  server.route('/unpinned/model.safetensors', { data: good, headers: { 'x-linked-etag': `"${sha256(good)}"` } });
  const e = entry('unpinned', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/unpinned/model.safetensors') }]);
  const logs: string[] = [];
  const r = await pullModel(e, { settings: settings(), log: (l) => logs.push(l) });
  t.true(logs.some((l) => l.includes(`models.json pins no checksum for ${server.url('/unpinned/model.safetensors')}`) && l.includes(`"sha256": "${sha256(good)}"`)), logs.join('\n'));
  t.like(r.files[0], { pinned: false, sha256: sha256(good), fromCache: false, from: server.url('/unpinned/model.safetensors') });
  const quiet: string[] = [];
  const again = await pullModel(e, { settings: settings(), log: (l) => quiet.push(l) });
  t.true(again.fromCache);
  t.like(again.files[0], { pinned: false, fromCache: true });
  t.false(quiet.some((l) => l.includes('pins no checksum')));
});

test.serial("ZOO_MIRROR: resnet50d-strong's pull never takes resnet50d-best's file; the result names where the file came from", async (t) => {
  const mirror = join(root, 'mirror');
  const best = goodSafetensors();
  const bestUrl = 'https://huggingface.co/timm/fixture_best/resolve/main/model.safetensors';
  const strongUrl = 'https://huggingface.co/timm/fixture_strong/resolve/main/model.safetensors';
  const bestPath = join(mirror, 'timm/fixture_best/resolve/main/model.safetensors');
  mkdirSync(join(mirror, 'timm/fixture_best/resolve/main'), { recursive: true });
  writeFileSync(bestPath, best);
  const s = settings({ ZOO_MIRROR: mirror });
  const strong = entry('mirror-strong', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: strongUrl }]);
  const err = await t.throwsAsync(pullModel(strong, { settings: s }), { instanceOf: PullError });
  t.regex(err!.message, /fixture_strong\/resolve\/main\/model\.safetensors\): no such file/);
  t.false(existsSync(join(root, 'cache', 'mirror-strong')));
  // The same file copied to strong's place, unpinned: refused.
  mkdirSync(join(mirror, 'timm/fixture_strong/resolve/main'), { recursive: true });
  writeFileSync(join(mirror, 'timm/fixture_strong/resolve/main/model.safetensors'), best);
  const refused = await t.throwsAsync(pullModel(strong, { settings: s }), { instanceOf: PullError });
  t.regex(refused!.message, /refused: no checksum is pinned for it and a ZOO_MIRROR directory declares none/);
  const bestEntry = entry('mirror-best', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: bestUrl, sha256: sha256(best) }]);
  const r = await pullModel(bestEntry, { settings: s });
  t.deepEqual(r.files.map((f) => [f.source, f.from, f.pinned]), [[bestUrl, bestPath, true]]);
  t.is(r.record.source.resolved, bestPath);
  t.is((await pullModel(bestEntry, { settings: s })).files[0]!.from, bestPath, 'also when served from the cache');
});

test.serial('a pull waiting on a lock held by another host says whose it is, and gives up after lockTimeoutMs', async (t) => {
  const e = entry('locked-elsewhere', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/never/model.safetensors') }]);
  const lock = join(root, 'cache', '.locks', 'locked-elsewhere.lock');
  mkdirSync(join(root, 'cache', '.locks'), { recursive: true });
  writeFileSync(lock, JSON.stringify({ pid: 31337, hostname: 'gpu-node-3', time: new Date().toISOString(), token: 'theirs' }));
  const logs: string[] = [];
  const err = await t.throwsAsync(pullModel(e, { settings: settings(), log: (l) => logs.push(l), lockTimeoutMs: 400 }), { instanceOf: UserError });
  t.regex(logs[0]!, /^locked-elsewhere is locked by pid 31337 on another host, 'gpu-node-3' .* since .*; waiting up to 0.4 s for it \(--lock-timeout <seconds> to change\)$/);
  t.regex(err!.message, /timed out after 0.4 s waiting for the lock .*locked-elsewhere\.lock, held by pid 31337 on another host, 'gpu-node-3'/);
  t.is(server.requests('/never/model.safetensors').length, 0);
  rmSync(lock);
});

test.serial('downloadTimeoutMs bounds a download that trickles in', async (t) => {
  t.timeout(30_000);
  const good = goodSafetensors();
  server.route('/slow/model.safetensors', { data: good, faults: [{ kind: 'trickle', everyMs: 20 }] });
  const e = entry('slow', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/slow/model.safetensors'), sha256: sha256(good) }]);
  const err = await t.throwsAsync(pullModel(e, { settings: settings(), downloadTimeoutMs: 300 }), { instanceOf: PullError });
  t.regex(err!.message, /not finished within 0\.3 s \(the download deadline; set ZOO_DOWNLOAD_TIMEOUT=<seconds> to change it\)/);
  t.false(existsSync(join(root, 'cache', 'slow')));
});

test.serial('offline, a torchvision .pth the user put where zoo said (no manifest entry) is checked by its file name\'s prefix, converted, and never deleted', async (t) => {
  const bytes = torchPth(sd.get('resnet_test_a')!);
  const prefix = sha256(bytes).slice(0, 8);
  const fileName = `placed-a-${prefix}.pth`;
  const e = entry('placed-pth', 'resnet_test_a', [
    { format: 'safetensors', naming: 'timm', url: server.url('/placed/model.safetensors') },
    { format: 'pth', naming: 'torchvision', url: server.url(`/placed/${fileName}`), sha256Prefix: prefix },
  ]);
  const dir = join(root, 'cache', 'placed-pth');
  mkdirSync(dir, { recursive: true });
  const offline = settings({ ZOO_OFFLINE: '1' });
  // A copy that is not the published file: refused, and left where the user put it.
  writeFileSync(join(dir, fileName), Buffer.concat([Buffer.from(bytes), Buffer.from([0])]));
  const bad = await t.throwsAsync(pullModel(e, { settings: offline }), { instanceOf: UserError });
  t.regex(bad!.message, /fails verification \(checksum mismatch: sha256 should start with/);
  t.true(existsSync(join(dir, fileName)), 'offline deletes nothing');
  // The published file: verified by its prefix and converted, all offline.
  writeFileSync(join(dir, fileName), bytes);
  const before = server.log.length;
  const r = await pullModel(e, { settings: offline });
  t.false(r.fromCache);
  t.is(r.record.source.sha256, sha256(bytes));
  t.is(r.record.source.verified, 'pinned');
  t.is(server.log.length, before, 'no request offline');
  await checkAgainstReference(t, r.onnx, 'resnet_test_a', A);
});

test.serial('offline, the message says which files a copy would do for: a pinned source\'s, not an unpinned one\'s', async (t) => {
  const e = entry('offline-kinds', 'resnet_test', [
    { format: 'safetensors', naming: 'timm', url: server.url('/kinds/model.safetensors') },
    { format: 'pth', naming: 'torchvision', url: server.url('/kinds/w-0123abcd.pth'), sha256Prefix: '0123abcd' },
  ]);
  const err = await t.throwsAsync(pullModel(e, { settings: settings({ ZOO_OFFLINE: '1' }) }), { instanceOf: UserError });
  t.regex(err!.message, /^offline \(ZOO_OFFLINE\) and offline-kinds is not in the cache; a copy of any one of the pinned files below would do:/);
  t.regex(err!.message, /model\.safetensors {2}\(from .*\)\n {6}models\.json pins no checksum for it: a copy put there cannot be verified offline/);
  t.regex(err!.message, /w-0123abcd\.pth {2}\(from .*\)\n {6}a copy put there is checked against the sha256 prefix 0123abcd in its file name/);
  const unpinned = entry('offline-unpinned', 'resnet_test', [{ format: 'safetensors', naming: 'timm', url: server.url('/kinds/model.safetensors') }]);
  const none = await t.throwsAsync(pullModel(unpinned, { settings: settings({ ZOO_OFFLINE: '1' }) }), { instanceOf: UserError });
  t.regex(none!.message, /models\.json pins none of its sources, so no copy put in the cache can be verified/);
  t.false(/would do/.test(none!.message));
});

test.serial('a model in the cache is pulled again when models.json no longer lists its source or pins another file', async (t) => {
  const a = goodSafetensors();
  const b = Buffer.from(safetensorsBytes(sd.get('resnet_test')!, { 'layer1.0.bn1.num_batches_tracked': { shape: [], data: new Float32Array([1]) } }));
  server.route('/edited/model.safetensors', { data: a });
  const source = { format: 'safetensors' as const, naming: 'timm' as const, url: server.url('/edited/model.safetensors') };
  const first = await pullModel(entry('edited', 'resnet_test', [{ ...source, sha256: sha256(a) }]), { settings: settings() });
  t.is(first.record.source.sha256, sha256(a));
  // The host now has another file, and models.json pins that one: the cached model is not it.
  server.route('/edited/model.safetensors', { data: b });
  const repinned = await pullModel(entry('edited', 'resnet_test', [{ ...source, sha256: sha256(b) }]), { settings: settings() });
  t.false(repinned.fromCache);
  t.is(repinned.record.source.sha256, sha256(b));
  t.true((await pullModel(entry('edited', 'resnet_test', [{ ...source, sha256: sha256(b) }]), { settings: settings() })).fromCache);
  // The entry's source moved: the record of the old one does not stand for it.
  server.route('/moved/model.safetensors', { data: b });
  const moved = await pullModel(entry('edited', 'resnet_test', [{ ...source, url: server.url('/moved/model.safetensors'), sha256: sha256(b) }]), { settings: settings() });
  t.false(moved.fromCache);
  t.is(moved.record.source.url, server.url('/moved/model.safetensors'));
  t.is(server.requests('/moved/model.safetensors').length, 0, 'the file it pins is already in the cache: converted again, not downloaded');
});
