/**
 * The service under load, over real HTTP on 127.0.0.1: concurrent requests combined into one run with
 * each answer its own rows, 503 with Retry-After when the queue is full, 504 past the timeout, graceful
 * shutdown with requests in flight, and /metrics in Prometheus's text format (checked by a parser of the
 * format here and, where Debian's python3-prometheus-client is installed, by Prometheus's own parser).
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../src/serve/server.js';
import { decodeInferResponse, encodeInferRequest } from '../src/serve/protocol.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { Batcher } from '../src/serve/batcher.js';
import { Registry } from '../src/serve/metrics.js';
import { writeClassifier } from './helpers/serve_models.js';
import { maxAbsDiff, setupBackend } from './helpers/backend.js';
import { ZOO_CLI } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-serve-load-'));
let classifier: string;

function image(seed: number): Float32Array {
  const x = new Float32Array(3 * 32 * 32);
  for (let i = 0; i < x.length; i++) x[i] = Math.cos(i * 0.11 + seed * 1.7);
  return x;
}

async function infer(url: string, x: Float32Array, rows = 1) {
  const { body, headers } = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [rows, 3, 32, 32], data: x }]);
  const r = await fetch(`${url}/v2/models/classifier/infer`, { method: 'POST', body: new Uint8Array(body), headers });
  const bytes = Buffer.from(await r.arrayBuffer());
  return { status: r.status, headers: r.headers, bytes, logits: r.status === 200 ? (decodeInferResponse(bytes, r.headers.get('inference-header-content-length')).outputs.logits!.data as Float32Array) : undefined };
}

/** Samples of a metric family from text exposition (name, labels, value), checked line by line against the format. */
function parsePrometheus(text: string): { families: Map<string, string>; samples: { name: string; labels: Record<string, string>; value: number }[] } {
  const families = new Map<string, string>();
  const helped = new Set<string>();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a line feed');
  for (const line of text.slice(0, -1).split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      if (helped.has(m[1]!)) throw new Error(`HELP twice for ${m[1]}`);
      helped.add(m[1]!);
      continue;
    }
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      if (families.has(m[1]!)) throw new Error(`TYPE twice for ${m[1]}`);
      families.set(m[1]!, m[2]!);
      continue;
    }
    if (line.startsWith('#')) throw new Error(`a comment line that is neither HELP nor TYPE: ${line}`);
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
      let at = 0;
      while (at < m[3].length) {
        re.lastIndex = at;
        const l = re.exec(m[3]);
        if (!l) throw new Error(`bad labels in: ${line}`);
        labels[l[1]!] = l[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
        at = re.lastIndex;
      }
    }
    const value = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    if (Number.isNaN(value) && m[4] !== 'NaN') throw new Error(`bad value in: ${line}`);
    const family = [...families.keys()].find((f) => m![1] === f || (families.get(f) === 'histogram' && [`${f}_bucket`, `${f}_sum`, `${f}_count`].includes(m![1]!)));
    if (!family) throw new Error(`sample ${m[1]} before its TYPE line`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { families, samples };
}

test.before(async () => {
  await setupBackend();
  classifier = await writeClassifier(join(dir, 'classifier.onnx'));
});

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test.serial('concurrent requests are combined into one run, each answered with its own rows', async (t) => {
  const server = await startServer([classifier], { port: 0, device: 'cpu', log: false, maxBatch: 8, maxDelayMs: 2000 });
  try {
    const s = await createSession(classifier, { provider: 'cpu' });
    const inputs = [1, 2, 3, 4, 5, 6].map(image);
    const expected = await Promise.all(inputs.map(async (x) => (await runSession(s, { input: { type: 'float32', data: x, dims: [1, 3, 32, 32] } })).logits!.data as Float32Array));
    await s.session.release();
    // 6 requests of 1 row and one of 2 reach the model while it waits (2 s) for company: 8 rows, one run.
    const pair = new Float32Array([...image(7), ...image(8)]);
    const answers = await Promise.all([...inputs.map((x) => infer(server.url, x)), infer(server.url, pair, 2)]);
    for (const [i, a] of answers.slice(0, 6).entries()) {
      t.is(a.status, 200);
      t.true(maxAbsDiff(a.logits!, expected[i]!) < 1e-5, `request ${i}: ${maxAbsDiff(a.logits!, expected[i]!)}`);
    }
    t.is(answers[6]!.logits!.length, 8, 'the 2-row request gets its 2 rows');
    const metrics = parsePrometheus(await (await fetch(`${server.url}/metrics`)).text());
    const runs = metrics.samples.find((x) => x.name === 'zoo_batch_size_count' && x.labels.model === 'classifier')!.value;
    const rows = metrics.samples.find((x) => x.name === 'zoo_batch_size_sum' && x.labels.model === 'classifier')!.value;
    t.is(rows, 8, 'rows run (the warm-up run is not counted)');
    t.is(runs, 1, 'one run for 7 requests');
  } finally {
    await server.close();
  }
});

test.serial('a full queue answers 503 with Retry-After, a request waiting past --timeout 504; the model then serves again', async (t) => {
  const server = await startServer([classifier], { port: 0, device: 'cpu', log: false, maxBatch: 64, maxDelayMs: 1500, maxQueue: 2 });
  try {
    const answers = await Promise.all([...Array(12).keys()].map((i) => infer(server.url, image(i))));
    const ok = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.status === 503);
    t.is(ok.length, 2, 'the two requests the queue holds are answered');
    t.is(refused.length, 10);
    for (const r of refused) {
      t.is(r.headers.get('retry-after'), '1');
      t.regex(JSON.parse(r.bytes.toString()).error, /overloaded: 2 requests are waiting \(--max-queue\)/);
    }
    const text = await (await fetch(`${server.url}/metrics`)).text();
    t.regex(text, /zoo_rejected_total\{model="classifier"\} 10\n/);
    t.regex(text, /zoo_requests_total\{code="503",endpoint="infer",model="classifier"\} 10\n/);
  } finally {
    await server.close();
  }
  const slow = await startServer([classifier], { port: 0, device: 'cpu', log: false, maxDelayMs: 1000, timeoutMs: 100 });
  try {
    const r = await infer(slow.url, image(1));
    t.is(r.status, 504);
    t.regex(JSON.parse(r.bytes.toString()).error, /did not start the request within 100 ms \(--timeout\)/);
    t.is((await fetch(`${slow.url}/v2/health/ready`)).status, 200);
  } finally {
    await slow.close();
  }
});

test.serial('close() turns readiness off, still answers during the drain, finishes the requests in flight with Connection: close, then stops', async (t) => {
  const server = await startServer([classifier], { port: 0, device: 'cpu', log: false, maxDelayMs: 3000, drainMs: 400 });
  const inFlight = [1, 2, 3].map((i) => infer(server.url, image(i)));
  // Wait until the three are queued (the model waits 3 s for company).
  for (let i = 0; i < 250 && server.queued < 3; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(server.inFlight, 3);
  const closing = server.close();
  t.false(server.ready);
  // During the drain the server still answers, requests included; only readiness fails.
  const ready = await fetch(`${server.url}/v2/health/ready`);
  t.is(ready.status, 503);
  t.is(ready.headers.get('connection'), 'close');
  const answers = await Promise.all([...inFlight, infer(server.url, image(9))]);
  t.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200], 'a request that arrives during the drain is answered');
  answers.pop();
  t.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
  for (const a of answers) t.is(a.headers.get('connection'), 'close', 'answers sent while stopping close their connection');
  await closing;
  await t.throwsAsync(fetch(`${server.url}/v2/health/live`), undefined, 'no longer listening');
});

test.serial('a client that goes away while its request waits is withdrawn: logged as 499, never run', async (t) => {
  const lines: string[] = [];
  const server = await startServer([classifier], { port: 0, device: 'cpu', log: (l) => lines.push(l), maxDelayMs: 1500 });
  try {
    const { body, headers } = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: image(1) }]);
    const sock = connect(server.port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(`POST /v2/models/classifier/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
    sock.write(body);
    for (let i = 0; i < 200 && server.queued < 1; i++) await new Promise((r) => setTimeout(r, 10));
    t.is(server.queued, 1);
    sock.destroy();
    for (let i = 0; i < 200 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    t.is(server.queued, 0, 'taken out of the queue');
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    t.is(line.status, 499);
    t.regex(line.error as string, /closed the connection/);
    await new Promise((r) => setTimeout(r, 1700));
    const text = await (await fetch(`${server.url}/metrics`)).text();
    t.regex(text, /zoo_requests_total\{code="499",endpoint="infer",model="classifier"\} 1\n/);
    t.notRegex(text, /zoo_batch_size_count\{model="classifier"\} [1-9]/, 'the withdrawn request never ran');
  } finally {
    await server.close();
  }
});

test.serial('metrics are Prometheus text: requests, errors, latency histogram, batch sizes, queue depth', async (t) => {
  const server = await startServer([classifier], { port: 0, device: 'cpu', log: false, maxDelayMs: 1 });
  try {
    await infer(server.url, image(1));
    await fetch(`${server.url}/v2/models/classifier/infer`, { method: 'POST', body: '{' });
    await fetch(`${server.url}/v2/models/zzz/infer`, { method: 'POST', body: '{}' });
    const r = await fetch(`${server.url}/metrics`);
    t.is(r.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const text = await r.text();
    const { families, samples } = parsePrometheus(text);
    t.is(families.get('zoo_requests_total'), 'counter');
    t.is(families.get('zoo_request_duration_seconds'), 'histogram');
    t.is(families.get('zoo_batch_size'), 'histogram');
    t.is(families.get('zoo_queue_depth'), 'gauge');
    const get = (name: string, labels: Record<string, string>) => samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    t.is(get('zoo_requests_total', { model: 'classifier', endpoint: 'infer', code: '200' }), 1);
    t.is(get('zoo_request_errors_total', { model: 'classifier', endpoint: 'infer', code: '400' }), 1);
    t.is(get('zoo_request_errors_total', { model: '', endpoint: 'infer', code: '404' }), 1, 'an unknown model is not a label value of its own');
    t.is(get('zoo_queue_depth', { model: 'classifier' }), 0);
    // Buckets are cumulative and end at +Inf = count.
    const buckets = samples.filter((s) => s.name === 'zoo_request_duration_seconds_bucket' && s.labels.model === 'classifier' && s.labels.endpoint === 'infer');
    for (let i = 1; i < buckets.length; i++) t.true(buckets[i]!.value >= buckets[i - 1]!.value);
    t.is(buckets.at(-1)!.labels.le, '+Inf');
    t.is(buckets.at(-1)!.value, get('zoo_request_duration_seconds_count', { model: 'classifier', endpoint: 'infer' })!);
    const python = ['/usr/bin/python3', 'python3'].find((p) => {
      try {
        execFileSync(p, ['-c', 'import prometheus_client'], { stdio: 'ignore' });
        return true;
      } catch {
        return false;
      }
    });
    if (!python) {
      t.log('python3-prometheus-client is not installed: the cross-check with Prometheus\'s own parser is skipped');
      return;
    }
    const script = 'import sys\nfrom prometheus_client.parser import text_string_to_metric_families as f\nfor fam in f(sys.stdin.read()):\n    for s in fam.samples:\n        print(fam.type, s.name, sorted(s.labels.items()), s.value)\n';
    const out = execFileSync(python, ['-c', script], { input: text, encoding: 'utf8' });
    t.is(out.trim().split('\n').length, samples.length, 'Prometheus reads every sample');
    t.regex(out, /counter zoo_requests_total \[\('code', '200'\), \('endpoint', 'infer'\), \('model', 'classifier'\)\] 1\.0/);
  } finally {
    await server.close();
  }
});

test('label values are escaped as the format says', (t) => {
  const reg = new Registry();
  reg.counter('x_total', 'help with a \\ backslash\nand a line').inc({ path: 'a"b\\c\nd' });
  const text = reg.render();
  t.true(text.includes('# HELP x_total help with a \\\\ backslash\\nand a line\n'));
  t.true(text.includes('x_total{path="a\\"b\\\\c\\nd"} 1\n'));
  t.is(parsePrometheus(text).samples[0]!.labels.path, 'a"b\\c\nd');
});

test('a combined run that fails, or whose outputs do not have its rows, is run again request by request', async (t) => {
  const runs: number[] = [];
  const b = new Batcher(
    async (feeds) => {
      const x = feeds.x!.data as Float32Array;
      runs.push(feeds.x!.dims[0]!);
      if (x.includes(-1)) throw new Error('bad value');
      // A "transpose": [rows, 2] in, [2, rows] out.
      const rows = feeds.x!.dims[0]!;
      const out = new Float32Array(2 * rows);
      for (let r = 0; r < rows; r++) for (let c = 0; c < 2; c++) out[c * rows + r] = x[r * 2 + c]!;
      return { y: { type: 'float32', data: out, dims: [2, rows] } };
    },
    { name: 'm', maxBatch: 4, maxDelayMs: 50, maxQueue: 10 },
  );
  const f = (a: number, c: number) => ({ x: { type: 'float32' as const, data: Float32Array.from([a, c]), dims: [1, 2] } });
  const [p, q, r] = await Promise.allSettled([b.submit(f(1, 2), 1000), b.submit(f(-1, 0), 1000), b.submit(f(5, 6), 1000)]);
  t.deepEqual(runs, [3, 1, 1, 1], 'one combined run, then each alone');
  t.is(p.status, 'fulfilled');
  t.deepEqual(Array.from((p as PromiseFulfilledResult<Record<string, { data: Float32Array }>>).value.y!.data), [1, 2]);
  t.is(q.status, 'rejected', 'the bad request fails alone');
  t.deepEqual(Array.from((r as PromiseFulfilledResult<Record<string, { data: Float32Array }>>).value.y!.data), [5, 6]);
});

test('with two instances the batcher runs two batches at once, each on its own instance', async (t) => {
  const running: number[] = [];
  let peak = 0;
  const seen = new Set<number>();
  const b = new Batcher(
    async (feeds, instance) => {
      running.push(instance);
      peak = Math.max(peak, running.length);
      seen.add(instance);
      await new Promise((r) => setTimeout(r, 100));
      running.splice(running.indexOf(instance), 1);
      return { y: feeds.x! };
    },
    { name: 'm', maxBatch: 2, maxDelayMs: 0, maxQueue: 10, instances: 2 },
  );
  const f = (v: number) => ({ x: { type: 'float32' as const, data: Float32Array.from([v]), dims: [1, 1] } });
  const out = await Promise.all([1, 2, 3, 4].map((v) => b.submit(f(v), 5000)));
  t.deepEqual(out.map((o) => (o.y!.data as Float32Array)[0]), [1, 2, 3, 4]);
  t.is(peak, 2, 'two runs at a time, never more');
  t.deepEqual([...seen].sort(), [0, 1]);
  await b.idle();
});

test.serial('zoo serve --instances 2: two sessions of the model answer alike', async (t) => {
  const server = await startServer([classifier], { port: 0, device: 'cpu', log: false, instances: 2, maxBatch: 1 });
  try {
    t.is(server.models[0]!.instances, 2);
    const s = await createSession(classifier, { provider: 'cpu' });
    const x = image(3);
    const expected = (await runSession(s, { input: { type: 'float32', data: x, dims: [1, 3, 32, 32] } })).logits!.data as Float32Array;
    await s.session.release();
    const answers = await Promise.all([...Array(6)].map(() => infer(server.url, x)));
    for (const a of answers) t.true(maxAbsDiff(a.logits!, expected) < 1e-5);
  } finally {
    await server.close();
  }
});

test('the batcher combines only requests of the same shape, and a failed run fails only its requests', async (t) => {
  const runs: number[][] = [];
  const b = new Batcher(
    async (feeds) => {
      const x = feeds.x!;
      runs.push([...x.dims]);
      if ((x.data as Float32Array)[0] === -1) throw new Error('boom');
      return { y: { type: 'float32', data: (x.data as Float32Array).map((v) => v * 2), dims: x.dims } };
    },
    { name: 'm', maxBatch: 4, maxDelayMs: 50, maxQueue: 10 },
  );
  const f = (v: number, w = 2) => ({ x: { type: 'float32' as const, data: new Float32Array(w).fill(v), dims: [1, w] } });
  const [a, c, d] = await Promise.all([b.submit(f(1), 1000), b.submit(f(2, 3), 1000), b.submit(f(3), 1000)]);
  t.deepEqual(Array.from(a.y!.data as Float32Array), [2, 2]);
  t.deepEqual(Array.from(c.y!.data as Float32Array), [4, 4, 4]);
  t.deepEqual(Array.from(d.y!.data as Float32Array), [6, 6]);
  t.deepEqual(runs, [[2, 2], [1, 3]], 'the two [1, 2] requests share a run; the [1, 3] one runs alone');
  const bad = b.submit(f(-1), 1000);
  const good = b.submit(f(5, 3), 1000);
  await t.throwsAsync(bad, { message: 'boom' });
  t.deepEqual(Array.from((await good).y!.data as Float32Array), [10, 10, 10]);
  await b.idle();
  t.is(b.depth, 0);
});

test.serial('zoo serve: SIGTERM finishes the request in flight, then exits 0', async (t) => {
  if (!existsSync(ZOO_CLI)) return t.fail(`${ZOO_CLI} is not built`);
  const child = spawn(process.execPath, [ZOO_CLI, 'serve', `clf=${classifier}`, '--port', '0', '--device', 'cpu', '--max-delay-ms', '1500'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (c) => (stdout += c));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (c) => {
      stderr += c;
      const m = /listening on (http:\/\/\S+) /.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`zoo serve exited ${code}: ${stderr}`)));
  });
  t.regex(stderr, /serving clf: image-classification, cpu fp32, batches up to 32/);
  const { body, headers } = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: image(1) }]);
  const pending = fetch(`${url}/v2/models/clf/infer`, { method: 'POST', body: new Uint8Array(body), headers });
  // Signal once the request waits in the queue (the model waits 1.5 s for company).
  for (let i = 0; i < 200; i++) {
    const m = await (await fetch(`${url}/metrics`)).text();
    if (/zoo_queue_depth\{model="clf"\} 1\n/.test(m)) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  const answer = await pending;
  t.is(answer.status, 200, 'the request in flight is answered');
  t.is(await exited, 0);
  t.regex(stderr, /SIGTERM: finishing 1 request\(s\) in flight/);
  t.regex(stderr, /stopped/);
  const log = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.true(log.some((l) => l.path === '/v2/models/clf/infer' && l.status === 200));
});
