/**
 * `zoo serve` where a model, a client or a GPU does the unexpected: a CUDA session whose first run fails
 * (injected: the machine has no GPU), graphs the warm-up guess does not suit, ONNX Runtime refusing a
 * client's tensors, requests during the drain, limits on what one request and one combined run may hold,
 * JSON that is too deep or too large, INT64 out of range, odd request targets, bodies being read counted
 * against the queue, the batching rule shared with Triton, and `zoo doctor`'s install-only options.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../src/serve/server.js';
import { ServedModel, combinable, openParts, type PartsOpener } from '../src/serve/model.js';
import { Batcher } from '../src/serve/batcher.js';
import { canBatch, settleTritonOptions, tritonConfig } from '../src/serve/triton.js';
import { HttpError } from '../src/serve/http.js';
import { decodeInferResponse, encodeInferRequest, encodeInferResponse, parseInferRequest } from '../src/serve/protocol.js';
import { graphIO } from '../src/runtime/graph_io.js';
import { createSession } from '../src/runtime/ort.js';
import { UserError } from '../src/errors.js';
import { setupBackend } from './helpers/backend.js';
import { runZoo } from './helpers/cli.js';
import { writeClassifier, writeSegmenter } from './helpers/serve_models.js';
import { addGraph, identityGraph, int64Graph, regroupGraph, reshapeGraph } from './helpers/serve_graphs.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-serve-hard-'));
const files = {} as { classifier: string; segmenter: string; identity: string; reshape: string; add: string; int64: string; regroup: string };

test.before(async () => {
  await setupBackend();
  files.classifier = await writeClassifier(join(dir, 'classifier.onnx'));
  files.segmenter = await writeSegmenter(join(dir, 'segmenter.onnx'));
  files.identity = identityGraph(join(dir, 'identity.onnx'));
  files.reshape = reshapeGraph(join(dir, 'reshape.onnx'));
  files.add = addGraph(join(dir, 'add.onnx'));
  files.int64 = int64Graph(join(dir, 'int64.onnx'));
  files.regroup = regroupGraph(join(dir, 'regroup.onnx'));
});

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const json = async (r: Response) => (await r.json()) as Record<string, any>;

function postJson(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
}

const MODEL_OPTIONS = { maxBatch: 8, maxDelayMs: 1, maxQueue: 16 };

/** What ONNX Runtime says when cuDNN is missing at the first convolution. */
const CUDNN_MISSING = "Non-zero status code returned while running Conv node. Name:'conv' Status Message: Failed to load library libcudnn.so.9: libcudnn.so.9: cannot open shared object file: No such file or directory";

/**
 * An opener whose sessions on 'auto' or 'cuda' say they run on CUDA and fail every run as a GPU without
 * cuDNN does; on 'cpu' it opens as zoo does.
 */
function cudaFailsAtFirstRun(message = CUDNN_MISSING): PartsOpener {
  return async (found, file, device, options) => {
    const opened = await openParts(found, file, 'cpu', options);
    if (device === 'cpu') return opened;
    const real = opened.session.session;
    const session = new Proxy(real, {
      get(target, key) {
        if (key === 'run') return () => Promise.reject(new Error(message));
        const v = Reflect.get(target, key, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    return { session: { session, provider: 'cuda' }, parts: opened.parts };
  };
}

// --- 1. --device auto: a CUDA warm-up that fails falls back to the CPU ---------------------------------

test('--device auto: a first run that fails on CUDA falls back to the CPU, says why, and every instance opens on the CPU', async (t) => {
  const notes: string[] = [];
  const m = await ServedModel.open({ name: 'cls', ref: files.classifier }, { ...MODEL_OPTIONS, device: 'auto', instances: 2, onNote: (l) => notes.push(l), openParts: cudaFailsAtFirstRun() });
  try {
    t.is(m.info.provider, 'cpu');
    t.deepEqual(m.sessions.map((s) => s.provider), ['cpu', 'cpu']);
    const cuda = notes.filter((n) => /CUDA/.test(n));
    t.is(cuda.length, 1, notes.join('\n'));
    t.regex(cuda[0]!, /^cls: CUDA not used: the first run on CUDA failed: ONNX Runtime could not load libcudnn\.so\.9 for the CUDA execution provider; install cuDNN 9 for CUDA 13.*; using the CPU$/);
    const out = await m.infer({ input: { type: 'float32', data: new Float32Array(3 * 32 * 32), dims: [1, 3, 32, 32] } }, 10_000);
    t.deepEqual(out.logits!.dims, [1, 4]);
  } finally {
    await m.close();
  }
});

test('--device cuda: a first run that fails on CUDA is a UserError with the same reason, not an internal error', async (t) => {
  const e = await t.throwsAsync(ServedModel.open({ name: 'cls', ref: files.classifier }, { ...MODEL_OPTIONS, device: 'cuda', openParts: cudaFailsAtFirstRun() }), { instanceOf: UserError });
  t.regex(e!.message, /^cannot run on CUDA: ONNX Runtime could not load libcudnn\.so\.9 for the CUDA execution provider/);
});

// --- 3. the warm-up of a graph of no zoo task ---------------------------------------------------------

test('a tensor graph that does not run at the guessed warm-up sizes is served, with a note, and answers requests it can run', async (t) => {
  const notes: string[] = [];
  const server = await startServer([files.reshape], { port: 0, device: 'cpu', log: false, onNote: (l) => notes.push(l) });
  try {
    t.true(notes.some((n) => /^reshape: warm-up skipped: .*x \[1, 224\].*Reshape node 'reshape'/.test(n)), notes.join('\n'));
    const r = await postJson(`${server.url}/v2/models/reshape/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 6], data: [1, 2, 3, 4, 5, 6] }] });
    t.is(r.status, 200);
    const body = await json(r);
    t.deepEqual(body.outputs[0].shape, [1, 2, 3]);
    t.deepEqual(body.outputs[0].data, [1, 2, 3, 4, 5, 6]);
  } finally {
    await server.close();
  }
});

test('a tensor graph whose guessed warm-up fails on CUDA and on the CPU alike stays on CUDA (the guess, not CUDA, was wrong)', async (t) => {
  const notes: string[] = [];
  // The Reshape fails at [1, 224] on the CPU too: the fault is the guess; the model is not moved off CUDA.
  const reshapeFails = "Non-zero status code returned while running Reshape node. Name:'reshape' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:84 f() x was false. The input tensor cannot be reshaped to the requested shape.";
  const m = await ServedModel.open({ name: 'r', ref: files.reshape }, { ...MODEL_OPTIONS, device: 'auto', onNote: (l) => notes.push(l), openParts: cudaFailsAtFirstRun(reshapeFails) });
  try {
    t.is(m.info.provider, 'cuda');
    t.false(notes.some((n) => /CUDA not used/.test(n)), notes.join('\n'));
    t.true(notes.some((n) => /^r: warm-up skipped/.test(n)), notes.join('\n'));
  } finally {
    await m.close();
  }
});

// --- 4. ONNX Runtime refusing the client's tensors ----------------------------------------------------

test('tensors the graph cannot run on answer 400 with ONNX Runtime\'s reason in one clean line; the service stays up', async (t) => {
  const server = await startServer([files.reshape, files.add], { port: 0, device: 'cpu', log: false, warmup: false });
  try {
    const bad = await postJson(`${server.url}/v2/models/reshape/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 5], data: [1, 2, 3, 4, 5] }] });
    t.is(bad.status, 400);
    const e = (await json(bad)).error as string;
    t.regex(e, /^reshape cannot run on these inputs: Reshape node 'reshape': The input tensor cannot be reshaped to the requested shape\. Input shape:\{1,5\}, requested shape:\{1,-1,3\}$/);
    const add = await postJson(`${server.url}/v2/models/add/infer`, { inputs: [{ name: 'a', datatype: 'FP32', shape: [1, 2], data: [1, 2] }, { name: 'c', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }] });
    t.is(add.status, 400);
    const e2 = (await json(add)).error as string;
    t.regex(e2, /^add cannot run on these inputs: Add node 'add': Attempting to broadcast an axis by a dimension other than 1\. 2 by 3$/);
    for (const m of [e, e2]) {
      t.false(/onnxruntime_src|\.h:\d|onnxruntime::|\n/.test(m), m);
    }
    const ok = await postJson(`${server.url}/v2/models/add/infer`, { inputs: [{ name: 'a', datatype: 'FP32', shape: [1, 2], data: [1, 2] }, { name: 'c', datatype: 'FP32', shape: [1, 2], data: [10, 20] }] });
    t.deepEqual((await json(ok)).outputs[0].data, [11, 22]);
  } finally {
    await server.close();
  }
});

// --- 2. the drain ------------------------------------------------------------------------------------

test('during --drain-ms readiness fails but inference requests are still answered', async (t) => {
  const server = await startServer([files.identity], { port: 0, device: 'cpu', log: false, drainMs: 4000 });
  const closed = server.close();
  try {
    const ready = await fetch(`${server.url}/v2/health/ready`);
    t.is(ready.status, 503);
    const modelReady = await fetch(`${server.url}/v2/models/identity/ready`);
    t.is(modelReady.status, 503);
    const r = await postJson(`${server.url}/v2/models/identity/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 2], data: [3, 4] }] });
    t.is(r.status, 200, JSON.stringify(await r.clone().json()));
    t.deepEqual((await json(r)).outputs[0].data, [3, 4]);
    t.is(r.headers.get('connection'), 'close', 'answers during the drain close their connections');
  } finally {
    await closed;
  }
});

// --- 5. limits on dynamic sizes and on combined runs -------------------------------------------------

test('/v2 tensors of a segmenter are held to --seg-pixels, and of other models to --max-elements (413, before running)', async (t) => {
  const server = await startServer([`seg=${files.segmenter}`, files.identity], { port: 0, device: 'cpu', log: false, segmentationPixels: 1024, maxElements: 100, warmup: false });
  try {
    const image = (h: number, w: number) => encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [1, 3, h, w], data: new Float32Array(3 * h * w) }]);
    const big = image(40, 40);
    const r = await fetch(`${server.url}/v2/models/seg/infer`, { method: 'POST', body: new Uint8Array(big.body), headers: big.headers });
    t.is(r.status, 413);
    t.regex((await json(r)).error, /shape \[1, 3, 40, 40\] has 1600 pixels, more than the 1024 the model runs at once \(--seg-pixels\)/);
    const small = image(32, 32);
    const ok = await fetch(`${server.url}/v2/models/seg/infer`, { method: 'POST', body: new Uint8Array(small.body), headers: small.headers });
    t.is(ok.status, 200);
    const rows = (n: number, k: number) => postJson(`${server.url}/v2/models/identity/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape: [n, k], data: Array(n * k).fill(1) }] });
    t.is((await rows(2, 50)).status, 200);
    const over = await rows(3, 50);
    t.is(over.status, 413);
    t.regex((await json(over)).error, /has 150 elements in its dynamic dimensions, more than the 100 .*\(--max-elements\)/);
  } finally {
    await server.close();
  }
});

test('a combined run holds at most maxElements elements, not only maxBatch rows', async (t) => {
  const runs: number[] = [];
  const b = new Batcher(
    async (feeds) => {
      runs.push(feeds.x!.dims[0]!);
      return { y: feeds.x! };
    },
    { name: 'm', maxBatch: 32, maxDelayMs: 20, maxQueue: 32, maxElements: 10, elements: (f) => f.x!.dims[0]! * 4 },
  );
  const f = () => ({ x: { type: 'float32' as const, data: new Float32Array(4), dims: [1, 4] } });
  await Promise.all([1, 2, 3, 4, 5].map(() => b.submit(f(), 5000)));
  t.deepEqual(runs, [2, 2, 1], 'two rows of 4 elements each fit in 10; five requests run in three runs');
});

// --- 6. large JSON outputs -------------------------------------------------------------------------

test('outputs too large for JSON answer 400 asking for binary data; binary outputs of the same size are answered', async (t) => {
  const server = await startServer([files.identity], { port: 0, device: 'cpu', log: false, warmup: false });
  try {
    const n = (1 << 20) + 1;
    const asJson = encodeInferRequest([{ name: 'x', datatype: 'FP32', shape: [1, n], data: new Float32Array(n) }], { binary: true, binaryOutput: false });
    const r = await fetch(`${server.url}/v2/models/identity/infer`, { method: 'POST', body: new Uint8Array(asJson.body), headers: asJson.headers });
    t.is(r.status, 400);
    t.regex((await json(r)).error, /hold 1048577 elements, more than the 1048576 an answer carries as JSON; ask for binary data/);
    const asBinary = encodeInferRequest([{ name: 'x', datatype: 'FP32', shape: [1, n], data: new Float32Array(n) }]);
    const ok = await fetch(`${server.url}/v2/models/identity/infer`, { method: 'POST', body: new Uint8Array(asBinary.body), headers: asBinary.headers });
    t.is(ok.status, 200);
    const out = decodeInferResponse(Buffer.from(await ok.arrayBuffer()), ok.headers.get('inference-header-content-length'));
    t.is(out.outputs.y!.data.length, n);
  } finally {
    await server.close();
  }
});

test('encodeInferResponse refuses JSON outputs over the limit as a 400, before building them', (t) => {
  const big = { type: 'float32' as const, data: new Float32Array((1 << 20) + 1), dims: [1, (1 << 20) + 1] };
  const e = t.throws(() => encodeInferResponse({ name: 'm' }, { outputs: [{ name: 'y', binary: false }] }, { y: big }), { instanceOf: HttpError });
  t.is(e!.status, 400);
  t.notThrows(() => encodeInferResponse({ name: 'm' }, { outputs: [{ name: 'y', binary: true }] }, { y: big }));
});

// --- 7. deep JSON is refused before it is parsed ----------------------------------------------------

const IDENTITY_META = { name: 'identity', inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, -1] }] };

test('JSON nested deeper than 32 brackets is refused by a scan of the bytes, before parsing; brackets inside strings do not count', (t) => {
  const deep = Buffer.from(`${'['.repeat(100_000)}${']'.repeat(100_000)}`);
  const e = t.throws(() => parseInferRequest(deep, undefined, IDENTITY_META), { instanceOf: HttpError });
  t.is(e!.status, 400);
  t.is(e!.message, 'the inference request is nested more than 32 levels deep');
  const nested = (levels: number) => `${'['.repeat(levels)}1${']'.repeat(levels)}`;
  const e2 = t.throws(() => parseInferRequest(Buffer.from(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":${nested(40)}}]}`), undefined, IDENTITY_META), { instanceOf: HttpError });
  t.is(e2!.message, 'the inference request is nested more than 32 levels deep');
  const quoted = `{"id":"${'[{'.repeat(50)}\\"${'['.repeat(50)}","inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[[1]]}]}`;
  const r = parseInferRequest(Buffer.from(quoted), undefined, IDENTITY_META);
  t.deepEqual(Array.from(r.inputs.x!.data as Float32Array), [1]);
});

// --- 9. INT64 out of range -------------------------------------------------------------------------

test('INT64 JSON values of 2^63 or more (or below -2^63) are refused, not wrapped', (t) => {
  const meta = { name: 'int64', inputs: [{ name: 'x', datatype: 'INT64', shape: [-1, 2] }], outputs: [{ name: 'y', datatype: 'INT64', shape: [-1, 2] }] };
  const body = (a: string) => Buffer.from(`{"inputs":[{"name":"x","datatype":"INT64","shape":[1,2],"data":[${a},0]}]}`);
  for (const v of ['9223372036854775808', '1e19', '-9223372036854777856']) {
    const e = t.throws(() => parseInferRequest(body(v), undefined, meta), { instanceOf: HttpError }, v);
    t.is(e!.status, 400);
    t.regex(e!.message, /out of range for INT64/);
  }
  const least = parseInferRequest(body('-9223372036854775808'), undefined, meta);
  t.is((least.inputs.x!.data as BigInt64Array)[0], -(2n ** 63n));
});

test('INT64 over the protocol: a value of 2^63 answers 400', async (t) => {
  const server = await startServer([files.int64], { port: 0, device: 'cpu', log: false, warmup: false });
  try {
    const r = await postJson(`${server.url}/v2/models/int64/infer`, '{"inputs":[{"name":"x","datatype":"INT64","shape":[1,2],"data":[9223372036854775808,1]}]}');
    t.is(r.status, 400);
    t.regex((await json(r)).error, /out of range for INT64/);
  } finally {
    await server.close();
  }
});

// --- 10. request targets ---------------------------------------------------------------------------

function rawGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('a request path starting with // is a path, never a host; queries are still read', async (t) => {
  const server = await startServer([files.identity], { port: 0, device: 'cpu', log: false, warmup: false });
  try {
    const live = await rawGet(server.port, '//v2/health/live');
    t.is(live.status, 200, live.body);
    const meta = await rawGet(server.port, '//v2/models/identity?x=1');
    t.is(meta.status, 200, meta.body);
    t.is(JSON.parse(meta.body).name, 'identity');
    const other = await rawGet(server.port, '//evil.example/v2');
    t.is(other.status, 404, other.body);
    t.regex(JSON.parse(other.body).error, /no endpoint GET \/\/evil\.example\/v2/);
    const absolute = await rawGet(server.port, `http://127.0.0.1:${server.port}/v2/health/live`);
    t.is(absolute.status, 200, absolute.body);
  } finally {
    await server.close();
  }
});

// --- 11. --max-batch 1 -------------------------------------------------------------------------------

test('--max-batch 1 still limits a request to one row for a model that batches; a graph that does not batch takes any rows', async (t) => {
  const transposeLike = files.regroup; // its output does not follow the batch: not combinable, rows are not limited
  const server = await startServer([files.identity, transposeLike], { port: 0, device: 'cpu', log: false, maxBatch: 1, warmup: false });
  try {
    const send = (model: string, shape: number[]) =>
      postJson(`${server.url}/v2/models/${model}/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape, data: Array(shape[0]! * shape[1]!).fill(1) }] });
    const r = await send('identity', [3, 2]);
    t.is(r.status, 400);
    t.regex((await json(r)).error, /a batch of 3 is more than the 1 the model runs at once \(--max-batch\)/);
    t.is((await send('identity', [1, 2])).status, 200);
    t.is((await send('regroup', [3, 4])).status, 200);
  } finally {
    await server.close();
  }
});

test('the batcher refuses a request of more rows than maxBatch also when maxBatch is 1', async (t) => {
  const b = new Batcher(async (feeds) => feeds, { name: 'm', maxBatch: 1, maxDelayMs: 0, maxQueue: 4 });
  const e = await t.throwsAsync(b.submit({ x: { type: 'float32', data: new Float32Array(4), dims: [2, 2] } }, 1000), { instanceOf: HttpError });
  t.is(e!.status, 400);
  const alone = new Batcher(async (feeds) => feeds, { name: 'm', maxBatch: 1, maxDelayMs: 0, maxQueue: 4, combine: false });
  await t.notThrowsAsync(alone.submit({ x: { type: 'float32', data: new Float32Array(4), dims: [2, 2] } }, 1000));
});

// --- 12. bodies being read count against --max-queue ----------------------------------------------

test('requests whose bodies are being read count against --max-queue: past it the answer is 503 before reading', async (t) => {
  const server = await startServer([files.identity], { port: 0, device: 'cpu', log: false, maxQueue: 1, warmup: false });
  const socket = connect(server.port, '127.0.0.1');
  try {
    // A slow upload: the headers and part of the body, then nothing. 100 Continue says it has been admitted.
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.on('data', (d: Buffer) => {
        if (d.toString('latin1').startsWith('HTTP/1.1 100')) resolve();
      });
      socket.write(`POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n`);
    });
    socket.write('{"inputs": [');
    const second = await postJson(`${server.url}/v2/models/identity/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }] });
    t.is(second.status, 503);
    t.is(second.headers.get('retry-after'), '1');
    t.regex((await json(second)).error, /identity is overloaded: 0 requests are waiting and 1 being read \(--max-queue\)/);
    socket.destroy();
    // Once the slow upload is gone its place is free again.
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = (await postJson(`${server.url}/v2/models/identity/infer`, { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }] })).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    t.is(status, 200);
  } finally {
    socket.destroy();
    await server.close();
  }
});

test('Batcher.reserve holds a place in the queue until released, once', (t) => {
  const b = new Batcher(async (feeds) => feeds, { name: 'm', maxBatch: 4, maxDelayMs: 0, maxQueue: 2 });
  const r1 = b.reserve();
  const r2 = b.reserve();
  t.true(b.full);
  const e = t.throws(() => b.reserve(), { instanceOf: HttpError });
  t.is(e!.status, 503);
  r1();
  r1();
  t.false(b.full);
  r2();
  t.notThrows(() => b.reserve()());
});

// --- 8. the batching rule zoo serve and Triton share -----------------------------------------------

test('Triton batches exactly the graphs zoo serve combines: an output with a first dimension of its own is not batched', async (t) => {
  const s = await createSession(files.regroup, { provider: 'cpu' });
  const io = graphIO(s);
  await s.session.release();
  t.false(combinable(io));
  t.false(canBatch(io));
  const plan = tritonConfig('regroup', io, { task: 'tensor', label: 'regroup' }, settleTritonOptions({}));
  t.is(plan.config.maxBatchSize, 0);
  t.true(plan.notes.some((n) => /^regroup: 'y' \[rows, 2\] does not start with the batch dimension 'batch' of 'x'/.test(n)), plan.notes.join('\n'));
  const s2 = await createSession(files.identity, { provider: 'cpu' });
  const io2 = graphIO(s2);
  await s2.session.release();
  t.true(combinable(io2));
  t.true(canBatch(io2));
  // A dynamic first dimension that is not named (-1) is combined by neither.
  const unnamed = { inputs: [{ name: 'x', type: 'float32', shape: [-1, 4] }], outputs: [{ name: 'y', type: 'float32', shape: [-1, 4] }] };
  t.is(canBatch(unnamed), combinable(unnamed));
});

// --- 13. zoo doctor --------------------------------------------------------------------------------

test('zoo doctor --from or --target without --install-cuda is a usage error (exit 2)', async (t) => {
  for (const [args, re] of [
    [["doctor", "--from", "x.tgz"], /^zoo: error: --from goes with --install-cuda/m],
    [['doctor', '--target', dir], /--target goes with --install-cuda/],
    [['doctor', '--from', 'x.tgz', '--target', dir], /--from and --target go with --install-cuda/],
  ] as const) {
    const r = await runZoo(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re);
    t.is(r.stdout, '');
  }
});
