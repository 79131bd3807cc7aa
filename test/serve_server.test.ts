/**
 * `zoo serve` over real HTTP on 127.0.0.1: the Open Inference Protocol's endpoints and JSON field names,
 * the binary tensor extension, the image task endpoint of each task against the library's own answers,
 * every kind of bad input answered 4xx with a message (and the service still up), micro-batching,
 * overload, timeouts, graceful shutdown, Prometheus metrics and the access log.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { scaleLabels } from '../src/serve/tasks.js';
import { startServer, type ZooServer } from '../src/serve/server.js';
import { decodeInferResponse, encodeInferRequest } from '../src/serve/protocol.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { pipeline } from '../src/api/pipelines.js';
import { CLASSIFIER_LABELS, DETECTOR_LABELS, SEGMENTER_LABELS, writeServeModels } from './helpers/serve_models.js';
import { maxAbsDiff } from './helpers/backend.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-serve-'));
let files: Awaited<ReturnType<typeof writeServeModels>>;
let server: ZooServer;
const logLines: string[] = [];
let png: Buffer;
let jpeg: Buffer;

/** A 40x30 test picture with structure (gradients and a square). */
async function picture(width = 40, height = 30): Promise<sharp.Sharp> {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      const inside = x > width / 4 && x < (3 * width) / 4 && y > height / 4 && y < (3 * height) / 4;
      px[o] = inside ? 230 : (x * 255) / width;
      px[o + 1] = inside ? 40 : (y * 255) / height;
      px[o + 2] = (x * y) % 255;
    }
  return sharp(px, { raw: { width, height, channels: 3 } });
}

function input32(seed: number): Float32Array {
  const x = new Float32Array(3 * 32 * 32);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37 + seed) * 1.5;
  return x;
}

async function post(path: string, body: Buffer | string, headers: Record<string, string> = {}, base = server.url) {
  const r = await fetch(`${base}${path}`, { method: 'POST', body: typeof body === 'string' ? body : new Uint8Array(body), headers });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
}

const json = (b: Buffer) => JSON.parse(b.toString('utf8')) as Record<string, any>;

test.before(async () => {
  files = await writeServeModels(dir);
  png = await (await picture()).png().toBuffer();
  jpeg = await (await picture()).jpeg().toBuffer();
  server = await startServer([files.classifier, `det=${files.detector}`, `seg=${files.segmenter}`], { port: 0, device: 'cpu', log: (l) => logLines.push(l), maxDelayMs: 2, maxImagePixels: 1_000_000, maxBodyBytes: 4 * 1024 * 1024 });
});

test.after.always(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('server and model metadata, health and readiness use the protocol\'s field names', async (t) => {
  const meta = (await (await fetch(`${server.url}/v2`)).json()) as Record<string, unknown>;
  t.is(meta.name, 'zoo');
  t.is(typeof meta.version, 'string');
  t.deepEqual(meta.extensions, ['binary_tensor_data']);
  for (const p of ['/v2/health/live', '/v2/health/ready', '/v2/models/classifier/ready', '/v2/models/det/versions/1/ready']) {
    t.is((await fetch(`${server.url}${p}`)).status, 200, p);
  }
  const m = (await (await fetch(`${server.url}/v2/models/classifier`)).json()) as Record<string, any>;
  t.deepEqual(Object.keys(m).sort(), ['inputs', 'name', 'outputs', 'platform', 'versions']);
  t.is(m.name, 'classifier');
  t.deepEqual(m.versions, ['1']);
  t.is(m.platform, 'onnxruntime_onnx');
  t.deepEqual(m.inputs, [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 32, 32] }]);
  t.deepEqual(m.outputs, [{ name: 'logits', datatype: 'FP32', shape: [-1, 4] }]);
  const det = (await (await fetch(`${server.url}/v2/models/det/versions/1`)).json()) as Record<string, any>;
  t.deepEqual(det.inputs, [{ name: 'input', datatype: 'FP32', shape: [-1, 3, -1, -1] }]);
  t.deepEqual(det.outputs.map((o: { name: string; datatype: string }) => `${o.name}:${o.datatype}`).sort(), ['detection_boxes:FP32', 'detection_classes:INT64', 'detection_scores:FP32', 'num_detections:INT64']);
  const list = (await (await fetch(`${server.url}/v1/models`)).json()) as { models: Record<string, any>[] };
  t.deepEqual(list.models.map((x) => [x.name, x.task]), [['classifier', 'image-classification'], ['det', 'object-detection'], ['seg', 'image-segmentation']]);
  t.deepEqual(list.models[0]!.labels, CLASSIFIER_LABELS);
  t.false('file' in list.models[0]!, 'file paths of the host are not shown to clients');
});

test('JSON inference gives the logits ONNX Runtime gives, with the id echoed', async (t) => {
  const s = await createSession(files.classifier, { provider: 'cpu' });
  const x = new Float32Array([...input32(1), ...input32(2)]);
  const direct = (await runSession(s, { input: { type: 'float32', data: x, dims: [2, 3, 32, 32] } })).logits!.data as Float32Array;
  await s.session.release();
  const body = JSON.stringify({ id: 'req-7', inputs: [{ name: 'input', shape: [2, 3, 32, 32], datatype: 'FP32', data: Array.from(x) }] });
  const r = await post('/v2/models/classifier/infer', body, { 'Content-Type': 'application/json' });
  t.is(r.status, 200, r.body.toString());
  const out = json(r.body);
  t.is(out.model_name, 'classifier');
  t.is(out.model_version, '1');
  t.is(out.id, 'req-7');
  t.is(out.outputs.length, 1);
  const o = out.outputs[0];
  t.deepEqual([o.name, o.datatype, o.shape], ['logits', 'FP32', [2, 4]]);
  t.true(maxAbsDiff(o.data, direct) < 1e-5, `max |served - direct| = ${maxAbsDiff(o.data, direct)}`);
  // Nested arrays are the same tensor as flat ones.
  const nested: number[][][][] = [[[...Array(32)].map((_, y) => Array.from(x.subarray(y * 32, y * 32 + 32)))]];
  nested[0]!.push([...Array(32)].map((_, y) => Array.from(x.subarray(1024 + y * 32, 1024 + y * 32 + 32))));
  nested[0]!.push([...Array(32)].map((_, y) => Array.from(x.subarray(2048 + y * 32, 2048 + y * 32 + 32))));
  const r2 = await post('/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: nested }] }));
  t.is(r2.status, 200, r2.body.toString());
  t.true(maxAbsDiff(json(r2.body).outputs[0].data, direct.subarray(0, 4)) < 1e-5);
});

test('the binary tensor extension: binary inputs and outputs agree with JSON', async (t) => {
  const x = new Float32Array([...input32(3), ...input32(4), ...input32(5)]);
  const { body, headers } = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [3, 3, 32, 32], data: x }], { binary: true, binaryOutput: true });
  const r = await post('/v2/models/classifier/infer', body, headers);
  t.is(r.status, 200, r.body.toString());
  t.is(r.headers.get('content-type'), 'application/octet-stream');
  const hl = r.headers.get('inference-header-content-length');
  t.truthy(hl);
  const head = JSON.parse(r.body.subarray(0, Number(hl)).toString());
  t.deepEqual(head.outputs[0].parameters, { binary_data_size: 3 * 4 * 4 });
  t.false('data' in head.outputs[0]);
  t.is(r.body.length, Number(hl) + 48);
  const bin = decodeInferResponse(r.body, hl).outputs.logits!.data as Float32Array;
  const j = await post('/v2/models/classifier/infer', encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [3, 3, 32, 32], data: x }], { binary: false }).body, { 'Content-Type': 'application/json' });
  t.is(j.status, 200);
  t.deepEqual(Array.from(bin), json(j.body).outputs[0].data);
  // Binary input, JSON output (outputs named with binary_data false).
  const mixed = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [3, 3, 32, 32], data: x }], { binary: true, binaryOutput: false, outputs: ['logits'] });
  const m = await post('/v2/models/classifier/infer', mixed.body, mixed.headers);
  t.is(m.status, 200, m.body.toString());
  t.is(m.headers.get('content-type'), 'application/json');
  t.deepEqual(json(m.body).outputs[0].data, Array.from(bin));
});

test('the task endpoint classifies an image as the pipeline does, raw or multipart', async (t) => {
  const classify = await pipeline('image-classification', files.classifier, { device: 'cpu' });
  const expected = await classify(png, { topk: 3 });
  await classify.dispose();
  const r = await post('/v1/models/classifier:predict?topk=3', png, { 'Content-Type': 'image/png' });
  t.is(r.status, 200, r.body.toString());
  const a = json(r.body);
  t.is(a.task, 'image-classification');
  t.is(a.model, 'classifier');
  t.deepEqual(a.predictions.map((p: { label: string }) => p.label), expected.map((p) => p.label));
  for (const [i, p] of a.predictions.entries()) t.true(Math.abs(p.probability - expected[i]!.probability) < 1e-6);
  const form = new FormData();
  form.append('note', 'ignored');
  form.append('image', new Blob([new Uint8Array(png)], { type: 'image/png' }), 'cat.png');
  const mp = await fetch(`${server.url}/v1/models/classifier:predict?topk=3`, { method: 'POST', body: form });
  t.is(mp.status, 200);
  t.deepEqual(((await mp.json()) as Record<string, any>).predictions, a.predictions);
  const webp = await (await picture()).webp({ lossless: true }).toBuffer();
  const w = await post('/v1/models/classifier:predict', webp, { 'Content-Type': 'image/webp' });
  t.is(w.status, 200);
  t.is(json(w.body).predictions.length, 4, 'topk defaults to 5, capped at the 4 classes');
});

test('the task endpoint detects objects as detect() does, boxes in the image\'s pixels', async (t) => {
  const detect = await pipeline('object-detection', files.detector, { device: 'cpu' });
  const expected = await detect(jpeg, { threshold: 0 });
  await detect.dispose();
  const r = await post('/v1/models/det:predict?threshold=0', jpeg, { 'Content-Type': 'image/jpeg' });
  t.is(r.status, 200, r.body.toString());
  const a = json(r.body);
  t.is(a.task, 'object-detection');
  t.deepEqual([a.width, a.height], [40, 30]);
  t.is(a.detections.length, expected.length);
  t.true(expected.length > 0, 'a random detector with threshold 0 still proposes boxes');
  for (const [i, d] of a.detections.entries()) {
    t.is(d.label, expected[i]!.label);
    t.true(DETECTOR_LABELS.includes(d.label));
    t.true(Math.abs(d.score - expected[i]!.score) < 1e-5);
    t.true(maxAbsDiff(d.box, expected[i]!.box) < 1e-3);
  }
  const high = json((await post('/v1/models/det:predict?threshold=1', jpeg, { 'Content-Type': 'image/jpeg' })).body);
  t.true(high.detections.every((d: { score: number }) => d.score >= 1));
});

test('the task endpoint segments an image: a label PNG by default, JSON with areas on request', async (t) => {
  const segment = await pipeline('image-segmentation', files.segmenter, { device: 'cpu' });
  const expected = await segment(png);
  await segment.dispose();
  const r = await post('/v1/models/seg:predict', png, { 'Content-Type': 'image/png' });
  t.is(r.status, 200, r.body.toString());
  t.is(r.headers.get('content-type'), 'image/png');
  const { data, info } = await sharp(r.body).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  t.deepEqual([info.width, info.height], [40, 30]);
  t.is((await sharp(r.body).metadata()).channels, 1, 'a grayscale PNG');
  t.deepEqual(Array.from(data), Array.from(expected.labels));
  const j = json((await post('/v1/models/seg:predict?format=json', png, { 'Content-Type': 'image/png' })).body);
  t.deepEqual(j.classes, SEGMENTER_LABELS);
  t.deepEqual(j.areas, expected.areas);
  t.deepEqual(Buffer.from(j.labels_png, 'base64'), r.body);
});

test('bad input is a 4xx JSON error that says what was wrong, and the service stays up', async (t) => {
  const big = await (await picture(1200, 1000)).png({ compressionLevel: 9 }).toBuffer();
  const truncated = png.subarray(0, Math.floor(png.length * 0.6));
  const truncatedJpeg = jpeg.subarray(0, Math.floor(jpeg.length * 0.5));
  const x = input32(1);
  const cases: [string, string, Buffer | string, Record<string, string>, number, RegExp][] = [
    ['not an image', '/v1/models/classifier:predict', Buffer.from('hello, not pixels'), { 'Content-Type': 'application/octet-stream' }, 400, /not an image zoo can read/],
    ['truncated PNG', '/v1/models/seg:predict', truncated, { 'Content-Type': 'image/png' }, 400, /truncated|corrupt|cannot/],
    ['truncated JPEG', '/v1/models/classifier:predict', truncatedJpeg, { 'Content-Type': 'image/jpeg' }, 400, /truncated|corrupt|cannot|not a readable/],
    ['too many pixels', '/v1/models/classifier:predict', big, { 'Content-Type': 'image/png' }, 413, /1200x1000 = 1200000 pixels, more than the 1000000/],
    ['empty body', '/v1/models/classifier:predict', Buffer.alloc(0), { 'Content-Type': 'image/png' }, 400, /no image/],
    ['not an image type', '/v1/models/classifier:predict', '{"a":1}', { 'Content-Type': 'application/json' }, 415, /not an image/],
    ['unknown model (task)', '/v1/models/nope:predict', png, { 'Content-Type': 'image/png' }, 404, /no model 'nope'.*classifier, det, seg/],
    ['unknown model (infer)', '/v2/models/nope/infer', '{}', {}, 404, /no model 'nope'/],
    ['unknown version', '/v2/models/classifier/versions/2/infer', '{}', {}, 404, /version '2' is not served/],
    ['bad topk', '/v1/models/classifier:predict?topk=zero', png, { 'Content-Type': 'image/png' }, 400, /'topk' must be an integer/],
    ['bad threshold', '/v1/models/det:predict?threshold=2', png, { 'Content-Type': 'image/png' }, 400, /'threshold' must be a number from 0 to 1/],
    ['bad multipart', '/v1/models/classifier:predict', 'garbage', { 'Content-Type': 'multipart/form-data; boundary=xyz' }, 400, /does not contain its boundary/],
    ['not JSON', '/v2/models/classifier/infer', '{"inputs": [', { 'Content-Type': 'application/json' }, 400, /not JSON/],
    ['no inputs', '/v2/models/classifier/infer', '{"inputs": []}', {}, 400, /no 'inputs'/],
    ['wrong input name', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'x', shape: [1, 3, 32, 32], datatype: 'FP32', data: Array.from(x) }] }), {}, 400, /has no input 'x'; its inputs are input/],
    ['wrong shape', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 16, 16], datatype: 'FP32', data: Array.from(x.subarray(0, 768)) }] }), {}, 400, /does not fit the model's \[-1, 3, 32, 32\] \(dimension 2 must be 32\)/],
    ['wrong rank', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [3, 32, 32], datatype: 'FP32', data: Array.from(x) }] }), {}, 400, /3 dimensions; the model takes \[-1, 3, 32, 32\]/],
    ['wrong datatype', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'INT64', data: Array.from(x, Math.round) }] }), {}, 400, /is INT64; classifier takes FP32/],
    ['too few values', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: [1, 2, 3] }] }), {}, 400, /3 values for a shape of 3072 elements/],
    ['a shape smaller than the model\'s', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 1, 1], datatype: 'FP32', data: [1, 2, 3] }] }), {}, 400, /dimension 2 must be 32/],
    ['too many values', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: Array(4000).fill(0) }] }), {}, 400, /more than 3072 values for a shape of 3072 elements/],
    ['an SVG', '/v1/models/classifier:predict', '<svg xmlns="http://www.w3.org/2000/svg" width="900" height="900"><rect width="900" height="900"/></svg>', { 'Content-Type': 'application/octet-stream' }, 415, /the image is svg; the endpoint takes JPEG, PNG/],
    ['an unknown Content-Encoding', '/v2/models/classifier/infer', '{}', { 'Content-Encoding': 'br' }, 415, /Content-Encoding br is not supported/],
    ['bad gzip', '/v2/models/classifier/infer', 'not gzip', { 'Content-Encoding': 'gzip' }, 400, /not valid gzip data/],
    ['strings as data', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: Array(3072).fill('a') }] }), {}, 400, /FP32 data must be numbers \(element 0 is "a"\)/],
    ['batch over --max-batch', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [33, 3, 32, 32], datatype: 'FP32', data: Array(33 * 3072).fill(0) }] }), {}, 400, /a batch of 33 is more than the 32/],
    ['unknown output', '/v2/models/classifier/infer', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: Array.from(x) }], outputs: [{ name: 'probs' }] }), {}, 400, /has no output 'probs'/],
    ['tensor on an image endpoint', '/v2/models/classifier/infer', png, { 'Content-Type': 'image/png' }, 400, /not JSON/],
  ];
  for (const [what, path, body, headers, status, message] of cases) {
    const r = await post(path, body, headers);
    t.is(r.status, status, `${what}: ${r.body.toString().slice(0, 300)}`);
    t.regex(r.headers.get('content-type') ?? '', /application\/json/, what);
    t.regex(json(r.body).error, message, what);
  }
  // Binary data that does not match what the header says.
  const { body } = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: x }]);
  const short = await post('/v2/models/classifier/infer', body.subarray(0, body.length - 8), { 'Inference-Header-Content-Length': String(body.length - 3 * 32 * 32 * 4) });
  t.is(short.status, 400);
  t.regex(json(short.body).error, /ends 8 bytes before its binary data does/);
  const noHeader = await post('/v2/models/classifier/infer', body);
  t.is(noHeader.status, 400);
  t.regex(json(noHeader.body).error, /not JSON/);
  // A body over --max-body is refused by its Content-Length before it is read.
  const huge = await post('/v1/models/classifier:predict', Buffer.alloc(5 * 1024 * 1024), { 'Content-Type': 'image/png' });
  t.is(huge.status, 413);
  t.regex(json(huge.body).error, /more than the 4194304 accepted \(--max-body\)/);
  // A chunked body (no Content-Length) over the limit is cut off as it arrives.
  const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(`${server.url}/v1/models/classifier:predict`, { method: 'POST', headers: { 'Content-Type': 'image/png', 'Transfer-Encoding': 'chunked' } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
    });
    req.on('error', reject);
    const chunk = Buffer.alloc(1024 * 1024);
    let sent = 0;
    const pump = () => {
      while (sent < 6) {
        sent++;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  }).catch((e: Error) => ({ status: 0, body: e.message }));
  t.is(chunked.status, 413, chunked.body);
  t.regex(chunked.body, /more than the 4194304 bytes accepted/);
  // A request target that is no URL path, on a raw socket.
  const raw = await new Promise<string>((resolve) => {
    const sock = connect(server.port, '127.0.0.1', () => sock.end('GET //[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    let text = '';
    sock.on('data', (c) => (text += c));
    sock.on('close', () => resolve(text));
  });
  t.regex(raw, /^HTTP\/1\.1 400/);
  t.regex(raw, /not a valid path/);
  // Unknown routes and methods.
  const route = await fetch(`${server.url}/v3/anything`);
  t.is(route.status, 404);
  const method = await fetch(`${server.url}/v2/models/classifier/infer`);
  t.is(method.status, 405);
  t.is(method.headers.get('allow'), 'POST');
  t.is((await fetch(`${server.url}/v2/health/live`)).status, 200, 'still serving');
});

test('the access log has one JSON line per request, with status, time and model', async (t) => {
  await post('/v1/models/classifier:predict', png, { 'Content-Type': 'image/png' });
  await post('/v1/models/classifier:predict', 'text', { 'Content-Type': 'text/plain' });
  const lines = logLines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const hit = lines.find((l) => l.path === '/v1/models/classifier:predict' && l.status === 200);
  t.truthy(hit);
  t.is(hit!.model, 'classifier');
  t.is(hit!.endpoint, 'predict');
  t.is(hit!.method, 'POST');
  t.is(typeof hit!.ms, 'number');
  t.is(hit!.bytes_in, png.length);
  t.true((hit!.bytes_out as number) > 50, `bytes_out ${String(hit!.bytes_out)}`);
  t.true(!Number.isNaN(Date.parse(hit!.time as string)));
  t.true(lines.some((l) => (l.status as number) >= 400 && typeof l.error === 'string'), 'errors carry their message');
});

test('a gzip-encoded inference request is read as the plain one', async (t) => {
  const x = input32(6);
  const { body, headers } = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: x }], { binary: false });
  const plain = await post('/v2/models/classifier/infer', body, headers);
  const zipped = await post('/v2/models/classifier/infer', gzipSync(body), { ...headers, 'Content-Encoding': 'gzip' });
  t.is(zipped.status, 200, zipped.body.toString().slice(0, 200));
  t.deepEqual(json(zipped.body).outputs, json(plain.body).outputs);
});

test('a large image is segmented scaled down to --seg-pixels, its labels scaled back to its size', async (t) => {
  const small = await startServer([`seg=${files.segmenter}`], { port: 0, device: 'cpu', log: false, segmentationPixels: 1024 });
  try {
    const image = await (await picture(64, 48)).png().toBuffer();
    const r = await post('/v1/models/seg:predict', image, { 'Content-Type': 'image/png' }, small.url);
    t.is(r.status, 200, r.body.toString().slice(0, 200));
    t.is(r.headers.get('x-zoo-inferred-size'), '36x27');
    const { data, info } = await sharp(r.body).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    t.deepEqual([info.width, info.height], [64, 48]);
    const segment = await pipeline('image-segmentation', files.segmenter, { device: 'cpu' });
    const scaled = await sharp(image).resize(36, 27, { fit: 'fill', kernel: 'linear' }).png().toBuffer();
    const [expected] = await segment([scaled]);
    await segment.dispose();
    t.deepEqual(Array.from(data), Array.from(scaleLabels(expected!.labels, 36, 27, 64, 48)));
    const j = json((await post('/v1/models/seg:predict?format=json', image, { 'Content-Type': 'image/png' }, small.url)).body);
    t.deepEqual([j.width, j.height, j.inferred], [64, 48, { width: 36, height: 27 }]);
    t.is(Object.values(j.areas as Record<string, number>).reduce((a, b) => a + b, 0), 64 * 48);
  } finally {
    await small.close();
  }
});

test('the playground page is served at /', async (t) => {
  const r = await fetch(`${server.url}/`);
  t.is(r.status, 200);
  t.regex(r.headers.get('content-type')!, /text\/html/);
  t.regex(await r.text(), /<html/i);
});
