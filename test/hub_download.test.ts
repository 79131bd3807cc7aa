import test from 'ava';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { UserError } from '../src/errors.js';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { defaultDeadlineMs, download, DownloadError, parseDeclaredSha256, parseRetryAfter, reachedInside, redactUrl, type DownloadProgress } from '../src/hub/download.js';
import type { LookupFunction } from '../src/hub/net.js';
import { FixtureServer, fixture } from './helpers/http_server.js';

const MB = 1 << 20;
let server: FixtureServer;
let tmp: string;

test.before(async () => {
  server = await FixtureServer.start();
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'zoo-hub-download-'));
});

test.after.always(async () => {
  await server?.close();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

/** Fast retries so fault tests stay quick. */
const quick = { backoffMs: 5, timeoutMs: 5000 };

function dest(name: string): string {
  return path.join(tmp, name);
}

function exists(file: string): boolean {
  return fs.existsSync(file);
}

/** Start offset of a `bytes=N-` header. */
function rangeStart(header: string | undefined): number {
  const m = /^bytes=(\d+)-$/.exec(header ?? '');
  return m ? Number(m[1]) : -1;
}

test('downloads a file, verifies sha256 and sha1, reports progress', async (t) => {
  const f = fixture(3 * MB);
  server.route('/plain.bin', { data: f.data });
  const progress: DownloadProgress[] = [];
  const out = dest('plain.bin');
  const r = await download(server.url('/plain.bin'), out, {
    ...quick, expected: { sha256: f.sha256, sha1: f.sha1 }, size: f.data.length, onProgress: (p) => progress.push(p),
  });
  t.is(r.path, out);
  t.is(r.bytes, f.data.length);
  t.is(r.sha256, f.sha256);
  t.is(r.sha1, f.sha1);
  t.true((await fsp.readFile(out)).equals(f.data));
  t.false(exists(`${out}.part`));
  t.is(server.requests('/plain.bin').length, 1);
  t.deepEqual(progress.at(-1), { received: f.data.length, total: f.data.length });
});

test('a sha1 prefix as GluonCV publishes it is accepted', async (t) => {
  const f = fixture(100_000);
  server.route('/gluon.zip', { data: f.data });
  const r = await download(server.url('/gluon.zip'), dest('gluon.zip'), { ...quick, expected: { sha1: f.sha1.slice(0, 8) } });
  t.is(r.sha1, f.sha1);
});

test('a wrong checksum shows both digests and leaves neither the file nor a .part', async (t) => {
  const f = fixture(2 * MB);
  const wrong = fixture(10).sha256;
  server.route('/wrong.bin', { data: f.data });
  const out = dest('wrong.bin');
  const err = await t.throwsAsync(download(server.url('/wrong.bin'), out, { ...quick, expected: { sha256: wrong } }), { instanceOf: DownloadError });
  t.true(err!.message.includes(wrong));
  t.true(err!.message.includes(f.sha256));
  t.true(err!.message.includes(server.url('/wrong.bin')));
  t.false(exists(out));
  t.false(exists(`${out}.part`));
});

test('a size mismatch is an error and nothing lands at dest', async (t) => {
  const f = fixture(200_000);
  server.route('/size.bin', { data: f.data });
  const out = dest('size.bin');
  const err = await t.throwsAsync(download(server.url('/size.bin'), out, { ...quick, size: 12345 }));
  t.regex(err!.message, /size mismatch/);
  t.false(exists(out));
  t.false(exists(`${out}.part`));
});

test('retries HTTP 500 and 503 (Retry-After: 0) and then succeeds', async (t) => {
  const f = fixture(2 * MB);
  server.route('/flaky.bin', {
    data: f.data,
    faults: [
      { kind: 'status', status: 500 },
      { kind: 'status', status: 500 },
      { kind: 'status', status: 503, headers: { 'retry-after': '0' } },
    ],
  });
  const r = await download(server.url('/flaky.bin'), dest('flaky.bin'), { ...quick, retries: 4, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.deepEqual(server.requests('/flaky.bin').map((q) => q.status), [500, 500, 503, 200]);
});

test('gives up after the retries with an error naming the URL and the status', async (t) => {
  const f = fixture(1000);
  server.route('/down.bin', { data: f.data, faults: [1, 2, 3, 4].map(() => ({ kind: 'status', status: 502 }) as const) });
  const out = dest('down.bin');
  const err = await t.throwsAsync(download(server.url('/down.bin'), out, { ...quick, retries: 2 }), { instanceOf: DownloadError });
  t.is(err!.message, `download failed: ${server.url('/down.bin')}: HTTP 502 Bad Gateway (gave up after 3 attempts)`);
  t.is((err as DownloadError).status, 502);
  t.is(server.requests('/down.bin').length, 3);
  t.false(exists(out));
});

test('HTTP 404 is a clear error and is not retried', async (t) => {
  const url = server.url('/missing.bin');
  const err = await t.throwsAsync(download(url, dest('missing.bin'), quick), { instanceOf: UserError });
  t.is(err!.message, `download failed: ${url}: HTTP 404 Not Found`);
  t.is(server.requests('/missing.bin').length, 1);
});

test('a dropped connection is resumed with a Range request', async (t) => {
  const f = fixture(4 * MB);
  server.route('/drop.bin', { data: f.data, faults: [{ kind: 'drop', at: 2 * MB }] });
  const out = dest('drop.bin');
  const r = await download(server.url('/drop.bin'), out, { ...quick, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.true((await fsp.readFile(out)).equals(f.data));
  const [first, second] = server.requests('/drop.bin');
  t.is(first!.range, undefined);
  const start = rangeStart(second!.range);
  t.true(start > 0 && start <= 2 * MB, `resumed at ${start}`);
  t.is(second!.status, 206);
  t.is(second!.sent, f.data.length - start);
});

test('a truncated body (fewer bytes than Content-Length) is retried', async (t) => {
  const f = fixture(3 * MB);
  server.route('/trunc.bin', { data: f.data, faults: [{ kind: 'truncate', at: MB }] });
  const r = await download(server.url('/trunc.bin'), dest('trunc.bin'), { ...quick, expected: { sha1: f.sha1 } });
  t.is(r.sha1, f.sha1);
  const requests = server.requests('/trunc.bin');
  t.is(requests.length, 2);
  t.true(rangeStart(requests[1]!.range) > 0);
});

test('follows a redirect and verifies the sha256 the host declares in X-Linked-Etag', async (t) => {
  const f = fixture(2 * MB);
  server.route('/timm/m/resolve/main/model.safetensors', {
    redirect: '/cdn/blob1',
    headers: { 'x-linked-etag': `"${f.sha256}"`, etag: '"abc123"' },
  });
  server.route('/cdn/blob1', { data: f.data, headers: { etag: '"0123456789abcdef0123456789abcdef"' } });
  const r = await download(server.url('/timm/m/resolve/main/model.safetensors'), dest('model.safetensors'), quick);
  t.is(r.declaredSha256, f.sha256);
  t.is(r.sha256, f.sha256);
  t.is(server.requests('/cdn/blob1').length, 1);
});

test('a declared sha256 that does not match is a checksum error', async (t) => {
  const f = fixture(500_000);
  const lie = fixture(10).sha256;
  server.route('/lying', { redirect: '/cdn/blob2', headers: { 'x-linked-etag': `W/"${lie}"` } });
  server.route('/cdn/blob2', { data: f.data });
  const out = dest('lying.bin');
  const err = await t.throwsAsync(download(server.url('/lying'), out, quick));
  t.regex(err!.message, /declared by the host/);
  t.true(err!.message.includes(lie) && err!.message.includes(f.sha256));
  t.false(exists(out));
  t.false(exists(`${out}.part`));
});

test('too many redirects is an error', async (t) => {
  server.route('/loop', { redirect: '/loop' });
  const err = await t.throwsAsync(download(server.url('/loop'), dest('loop.bin'), quick));
  t.regex(err!.message, /more than 5 redirects/);
  t.is(server.requests('/loop').length, 6);
});

// Serial: the idle timeouts are short, and other tests hashing megabytes on the same event loop would
// delay the reads they measure.
test.serial('an idle connection times out with a clear error', async (t) => {
  const f = fixture(MB);
  server.route('/stall.bin', { data: f.data, faults: [{ kind: 'stall', at: 64 * 1024 }] });
  const url = server.url('/stall.bin');
  const err = await t.throwsAsync(download(url, dest('stall.bin'), { timeoutMs: 300, retries: 0 }), { instanceOf: DownloadError });
  t.is(err!.message, `download failed: ${url}: no data for 0.3 s (idle timeout)`);
});

test.serial('a stalled transfer is retried after the idle timeout and resumed', async (t) => {
  const f = fixture(2 * MB);
  server.route('/stall-once.bin', { data: f.data, faults: [{ kind: 'stall', at: 1.5 * MB }] });
  const r = await download(server.url('/stall-once.bin'), dest('stall-once.bin'), { timeoutMs: 300, retries: 1, backoffMs: 5, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.true(rangeStart(server.requests('/stall-once.bin')[1]!.range) > 0, JSON.stringify(server.requests('/stall-once.bin')));
});

test('resumes a partial file left by an earlier call, hashing its bytes first', async (t) => {
  const f = fixture(3 * MB);
  server.route('/resume.bin', { data: f.data });
  const out = dest('resume.bin');
  await fsp.writeFile(`${out}.part`, f.data.subarray(0, MB + 7));
  const r = await download(server.url('/resume.bin'), out, { ...quick, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.is(r.sha1, f.sha1);
  const [req] = server.requests('/resume.bin');
  t.is(req!.range, `bytes=${MB + 7}-`);
  t.is(req!.sent, f.data.length - MB - 7);
});

test('a server answering 200 to a Range request makes the download start over', async (t) => {
  const f = fixture(2 * MB);
  server.route('/norange.bin', { data: f.data, faults: [{ kind: 'ignoreRange' }] });
  const out = dest('norange.bin');
  await fsp.writeFile(`${out}.part`, Buffer.alloc(5000, 7));
  const r = await download(server.url('/norange.bin'), out, { ...quick, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  const [req] = server.requests('/norange.bin');
  t.is(req!.range, 'bytes=5000-');
  t.is(req!.status, 200);
});

test('a partial of another version fails verification once, then downloads afresh', async (t) => {
  const f = fixture(2 * MB);
  server.route('/changed.bin', { data: f.data });
  const out = dest('changed.bin');
  await fsp.writeFile(`${out}.part`, Buffer.alloc(MB, 1));
  const r = await download(server.url('/changed.bin'), out, { ...quick, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.deepEqual(server.requests('/changed.bin').map((q) => q.range), [`bytes=${MB}-`, undefined]);
});

test('an abort keeps the partial file and a later call resumes it', async (t) => {
  const f = fixture(3 * MB);
  server.route('/abort.bin', { data: f.data, faults: [{ kind: 'stall', at: 2 * MB }] });
  const out = dest('abort.bin');
  const controller = new AbortController();
  const pending = download(server.url('/abort.bin'), out, {
    ...quick,
    signal: controller.signal,
    onProgress: (p) => {
      if (p.received >= MB) controller.abort();
    },
  });
  const err = await t.throwsAsync(pending);
  t.is(err!.name, 'AbortError');
  const kept = (await fsp.stat(`${out}.part`)).size;
  t.true(kept >= MB);
  const r = await download(server.url('/abort.bin'), out, { ...quick, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.is(server.requests('/abort.bin')[1]!.range, `bytes=${kept}-`);
});

test('credentials never appear in errors', async (t) => {
  const url = `http://someone:s3cret@127.0.0.1:${server.port}/private.bin`;
  const err = await t.throwsAsync(download(url, dest('private.bin'), quick));
  t.false(err!.message.includes('s3cret'));
  t.true(err!.message.includes(`http://127.0.0.1:${server.port}/private.bin`));
  t.is(redactUrl('https://u:p@host/a?X-Amz-Signature=abc&v=1'), 'https://host/a?X-Amz-Signature=REDACTED&v=1');
});

test('file:// URLs and local paths are copied and verified', async (t) => {
  const f = fixture(MB + 3);
  const src = dest('local-src.bin');
  await fsp.writeFile(src, f.data);
  const a = await download(pathToFileURL(src).href, dest('local-a.bin'), { expected: { sha256: f.sha256 } });
  const b = await download(src, dest('local-b.bin'), { expected: { sha1: f.sha1 } });
  t.is(a.sha1, f.sha1);
  t.is(b.sha256, f.sha256);
  t.true((await fsp.readFile(dest('local-b.bin'))).equals(f.data));
  const bad = dest('local-bad.bin');
  const err = await t.throwsAsync(download(src, bad, { expected: { sha256: fixture(1).sha256 } }), { instanceOf: DownloadError });
  t.regex(err!.message, /checksum mismatch/);
  t.false(exists(bad) || exists(`${bad}.part`));
  const gone = await t.throwsAsync(download(dest('no-such-file'), dest('x.bin')));
  t.regex(gone!.message, /no-such-file: no such file/);
});

test('header parsing: declared sha256 and Retry-After', (t) => {
  const sha = 'A'.repeat(64);
  t.is(parseDeclaredSha256(`"${sha}"`), sha.toLowerCase());
  t.is(parseDeclaredSha256(`W/"${sha}"`), sha.toLowerCase());
  t.is(parseDeclaredSha256('"0123456789abcdef0123456789abcdef"'), undefined);
  t.is(parseDeclaredSha256(undefined), undefined);
  t.is(parseRetryAfter('3'), 3000);
  t.is(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
  t.is(parseRetryAfter('soon'), undefined);
});

test('a malformed pinned checksum is rejected before any transfer', async (t) => {
  await t.throwsAsync(download(server.url('/never'), dest('never.bin'), { expected: { sha256: 'abc' } }), { message: /64 hex digits/ });
  t.is(server.requests('/never').length, 0);
});

// --- the overall deadline -------------------------------------------------------------------

test('the default deadline scales with the size: 10 min + 10 s per MB, at most 4 h; 1 h when unknown', (t) => {
  t.is(defaultDeadlineMs(0), 600_000);
  t.is(defaultDeadlineMs(100e6), 600_000 + 1_000_000);
  t.is(defaultDeadlineMs(1e12), 4 * 3600_000);
  t.is(defaultDeadlineMs(undefined), 3600_000);
});

test.serial('a server sending a byte now and then cannot keep a download alive past its deadline', async (t) => {
  t.timeout(30_000);
  const f = fixture(MB);
  server.route('/trickle.bin', { data: f.data, faults: [{ kind: 'trickle', everyMs: 20 }] });
  const url = server.url('/trickle.bin');
  const out = dest('trickle.bin');
  // Each byte comes well within the idle timeout; only the deadline can end this.
  const err = await t.throwsAsync(download(url, out, { timeoutMs: 5000, retries: 3, backoffMs: 5, deadlineMs: 400 }), { instanceOf: DownloadError });
  t.is(err!.message, `download failed: ${url}: not finished within 0.4 s (the download deadline; set ZOO_DOWNLOAD_TIMEOUT=<seconds> to change it)`);
  t.is(server.requests('/trickle.bin').length, 1, 'the deadline is not retried');
  t.true(server.requests('/trickle.bin')[0]!.sent < f.data.length);
  t.false(exists(out));
});

// --- redirects from a public host -----------------------------------------------------------

/**
 * Made-up names for the redirect tests, all answered with 127.0.0.1: the source `public.example` is
 * treated as a public host (`allowPrivateRedirects: false`), and `internal.example` stands for a name
 * whose DNS answer points into the machine's own network.
 */
function testLookup(calls: string[]): LookupFunction {
  return ((host: string, options: LookupOptions, cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => {
    calls.push(host);
    if (host !== 'public.example' && host !== 'internal.example') {
      return cb(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }), '', 0);
    }
    if (options.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
    else cb(null, '127.0.0.1', 4);
  }) as LookupFunction;
}

test('a redirect from a public host to http, to a loopback, private or link-local address, or to a name resolving there is refused before connecting', async (t) => {
  const f = fixture(1000);
  server.route('/inside/secret', { data: f.data });
  const targets: [string, string, RegExp][] = [
    ['http', `http://127.0.0.1:${server.port}/inside/secret`, /only https redirects are followed from a public host/],
    ['loopback', `https://127.0.0.1:${server.port}/inside/secret`, /127\.0\.0\.1 is a loopback address/],
    ['mapped', `https://[::ffff:127.0.0.1]:${server.port}/inside/secret`, /::ffff:7f00:1 is a loopback address/],
    ['metadata', 'https://169.254.169.254/latest/meta-data/', /169\.254\.169\.254 is a link-local address/],
    ['private', 'https://10.0.0.8/x', /10\.0\.0\.8 is a private address/],
    ['cgnat', 'https://100.64.0.1/x', /100\.64\.0\.1 is a shared address/],
    ['unspecified', 'https://0.0.0.0/x', /0\.0\.0\.0 is a unspecified address/],
    ['dns', `https://internal.example:${server.port}/inside/secret`, /refusing a redirect to internal\.example: it resolves to 127\.0\.0\.1, a loopback address/],
  ];
  for (const [label, location, re] of targets) {
    server.route(`/pub/${label}`, { redirect: location });
    const calls: string[] = [];
    const err = await t.throwsAsync(download(`http://public.example:${server.port}/pub/${label}`, dest(`redirect-${label}.bin`), {
      ...quick, retries: 2, network: { lookup: testLookup(calls), allowPrivateRedirects: false },
    }), { instanceOf: DownloadError }, label);
    t.regex(err!.message, re, label);
    t.is(server.requests(`/pub/${label}`).length, 1, `${label}: not retried`);
    t.deepEqual(calls.filter((h) => h !== 'public.example'), label === 'dns' ? ['internal.example'] : [], `${label}: lookups`);
  }
  t.is(server.requests('/inside/secret').length, 0, 'no redirect reached the inside');
});

test('a source on a loopback or private address (a LAN mirror) may redirect within its network', async (t) => {
  const f = fixture(1000);
  server.route('/lan/file', { redirect: `http://127.0.0.1:${server.port}/lan/blob` });
  server.route('/lan/blob', { data: f.data });
  const r = await download(server.url('/lan/file'), dest('lan.bin'), { ...quick, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.is(server.requests('/lan/blob').length, 1);
});

test('the redirect policy fails closed: a source whose address was never seen counts as public', (t) => {
  for (const a of [undefined, '', 'not-an-address', '8.8.8.8', '2001:4860:4860::8888']) t.false(reachedInside(a), String(a));
  for (const a of ['127.0.0.1', '::1', '10.1.2.3', '192.168.0.7', '::ffff:172.16.0.1', '169.254.1.1', '100.64.0.9', 'fe80::1']) t.true(reachedInside(a), a);
});

test('a LAN source that resets the connection right after its redirect is still judged by the address it was reached on', async (t) => {
  const f = fixture(1000);
  server.route('/lan/after-reset', { data: f.data });
  // Answers 302 and resets at once: the response's socket then has no remote address any more.
  const lan = net.createServer((socket) => {
    socket.once('data', () => {
      socket.write(`HTTP/1.1 302 Found\r\nLocation: ${server.url('/lan/after-reset')}\r\nContent-Length: 0\r\n\r\n`);
      socket.resetAndDestroy();
    });
  });
  await new Promise<void>((resolve) => lan.listen(0, '127.0.0.1', resolve));
  t.teardown(() => lan.close());
  const port = (lan.address() as net.AddressInfo).port;
  const r = await download(`http://127.0.0.1:${port}/file`, dest('reset.bin'), { ...quick, retries: 0, expected: { sha256: f.sha256 } });
  t.is(r.sha256, f.sha256);
  t.is(server.requests('/lan/after-reset').length, 1);
});
