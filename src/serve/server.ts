/**
 * `zoo serve`: ONNX models behind the Open Inference Protocol's HTTP/REST API (KServe v2: health,
 * metadata, inference with JSON or binary tensors), a task endpoint for images, Prometheus metrics, an
 * access log and a playground page. Every model has one ONNX Runtime session and a batcher that combines
 * concurrent requests. Bad input is a 4xx JSON error `{"error": "..."}`; nothing a client sends can take
 * the process down. `close()` turns readiness off, stops accepting connections, finishes what is in
 * flight, then releases the sessions.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import { findPackageDir } from '../util/package.js';
import type { ProviderChoice, SessionOptions } from '../runtime/ort.js';
import { HttpError, readBody, sendBytes, sendJson } from './http.js';
import { INFERENCE_HEADER, encodeInferResponse, parseInferRequest } from './protocol.js';
import { ServedModel, parseModelSpec, type ServedModelInfo } from './model.js';
import { predictImage } from './tasks.js';
import { PROMETHEUS_CONTENT_TYPE, serveMetrics } from './metrics.js';
import { playgroundHtml } from './playground.js';

export interface ServeOptions {
  /** 8000; 0 picks a free port. */
  port?: number;
  /** '127.0.0.1'. */
  host?: string;
  device?: ProviderChoice;
  precision?: 'auto' | 'fp32' | 'fp16';
  /** Rows (images) combined into one ONNX Runtime run at most: 32. */
  maxBatch?: number;
  /** How long the first request of a batch waits for company while the model is idle: 5 ms. */
  maxDelayMs?: number;
  /** Requests waiting per model at most: 128; past it, 503 with Retry-After. */
  maxQueue?: number;
  /** A request that has not started running within this many ms is answered 504: 30000. */
  timeoutMs?: number;
  /** Request bodies larger than this are refused with 413: 64 MiB. */
  maxBodyBytes?: number;
  /** Images of more decoded pixels are refused with 413 before decoding: 40 M. */
  maxImagePixels?: number;
  /** ONNX Runtime's intra-op threads per session (default: all cores). */
  threads?: number;
  session?: Omit<SessionOptions, 'provider' | 'warmup' | 'intraOpThreads'>;
  /** One run per model at start (default true). */
  warmup?: boolean;
  /** Receives one JSON access-log line per request (default: stdout). `false`: no access log. */
  log?: ((line: string) => void) | false;
  /** Receives lines about the models (CUDA fallback, assumed preprocessing). */
  onNote?: (line: string) => void;
}

export interface ZooServer {
  url: string;
  port: number;
  host: string;
  models: ServedModelInfo[];
  /** False from the moment close() is called. */
  readonly ready: boolean;
  /** Requests being handled now. */
  readonly inFlight: number;
  /** Graceful stop: readiness off, no new connections, requests in flight finished, sessions released. */
  close(): Promise<void>;
}

export const SERVE_DEFAULTS = {
  port: 8000,
  host: '127.0.0.1',
  maxBatch: 32,
  maxDelayMs: 5,
  maxQueue: 128,
  timeoutMs: 30_000,
  maxBodyBytes: 64 * 1024 * 1024,
  maxImagePixels: 40_000_000,
} as const;

function zooVersion(): string {
  const file = findPackageDir(path.dirname(fileURLToPath(import.meta.url)), 'package.json');
  try {
    return (JSON.parse(readFileSync(file!, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function positiveInt(name: string, v: number | undefined, fallback: number, min = 1): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v < min) throw new UserError(`${name} must be an integer of at least ${min}, got ${v}`, { exitCode: 2 });
  return v;
}

/** Opens the models and starts listening; resolves once requests are answered. */
export async function startServer(modelArgs: readonly string[], options: ServeOptions = {}): Promise<ZooServer> {
  if (modelArgs.length === 0) throw new UserError('give at least one model to serve (a local zoo name, a pulled published name, an .onnx file or name=file.onnx)', { exitCode: 2 });
  const o = {
    port: positiveInt('--port', options.port, SERVE_DEFAULTS.port, 0),
    host: options.host ?? SERVE_DEFAULTS.host,
    maxBatch: positiveInt('--max-batch', options.maxBatch, SERVE_DEFAULTS.maxBatch),
    maxDelayMs: positiveInt('--max-delay-ms', options.maxDelayMs, SERVE_DEFAULTS.maxDelayMs, 0),
    maxQueue: positiveInt('--max-queue', options.maxQueue, SERVE_DEFAULTS.maxQueue),
    timeoutMs: positiveInt('--timeout', options.timeoutMs, SERVE_DEFAULTS.timeoutMs),
    maxBodyBytes: positiveInt('--max-body', options.maxBodyBytes, SERVE_DEFAULTS.maxBodyBytes),
    maxImagePixels: positiveInt('--max-pixels', options.maxImagePixels, SERVE_DEFAULTS.maxImagePixels),
  };
  if (o.port > 65535) throw new UserError(`--port must be at most 65535, got ${o.port}`, { exitCode: 2 });
  const specs = modelArgs.map((a) => parseModelSpec(a));
  const seen = new Map<string, string>();
  for (const [i, s] of specs.entries()) {
    const other = seen.get(s.name);
    if (other !== undefined) throw new UserError(`two models would be served as '${s.name}' (${other} and ${modelArgs[i]}); name one with name=file`, { exitCode: 2 });
    seen.set(s.name, modelArgs[i]!);
  }
  const metrics = serveMetrics();
  const models = new Map<string, ServedModel>();
  try {
    for (const spec of specs) {
      const m = await ServedModel.open(spec, {
        ...(options.device ? { device: options.device } : {}),
        ...(options.precision ? { precision: options.precision } : {}),
        // Sessions run in worker threads: a run holds its thread, and this one must keep answering (health, metrics, queueing).
        session: { thread: 'worker', ...options.session, ...(options.threads !== undefined ? { intraOpThreads: positiveInt('--threads', options.threads, 1) } : {}) },
        maxBatch: o.maxBatch,
        maxDelayMs: o.maxDelayMs,
        maxQueue: o.maxQueue,
        ...(options.warmup !== undefined ? { warmup: options.warmup } : {}),
        ...(options.onNote ? { onNote: options.onNote } : {}),
        onRun: (model, rows, _requests, seconds) => {
          metrics.batchSize.observe({ model }, rows);
          metrics.inference.observe({ model }, seconds);
        },
      });
      models.set(spec.name, m);
      metrics.queueDepth.track({ model: spec.name }, () => m.batcher.depth);
    }
  } catch (e) {
    for (const m of models.values()) await m.close();
    throw e;
  }
  const log = options.log === false ? undefined : (options.log ?? ((line: string) => process.stdout.write(`${line}\n`)));
  const version = zooVersion();
  let ready = true;
  let inFlight = 0;
  metrics.inFlight.track({}, () => inFlight);
  const idleWaiters: (() => void)[] = [];

  const handle = async (req: IncomingMessage, res: ServerResponse, note: { model?: string; endpoint: string; rows?: number }): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const parts = url.pathname.split('/').filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        throw new HttpError(400, `the path ${url.pathname.slice(0, 200)} is not valid percent-encoding`);
      }
    });
    const method = req.method ?? 'GET';
    const want = (...methods: string[]) => {
      if (!methods.includes(method)) throw new HttpError(405, `${method} is not allowed on ${url.pathname}; use ${methods.join(' or ')}`, { Allow: methods.join(', ') });
    };
    const model = (name: string): ServedModel => {
      note.model = models.has(name) ? name : undefined;
      const m = models.get(name);
      if (!m) throw new HttpError(404, `no model '${name.slice(0, 200)}' is served here; the models are ${[...models.keys()].join(', ')}`);
      return m;
    };
    const versioned = (rest: string[]): string[] => {
      // /versions/<v>/... : zoo serves version 1 of each model.
      if (rest[0] === 'versions') {
        if (rest[1] !== '1') throw new HttpError(404, `version '${(rest[1] ?? '').slice(0, 20)}' is not served; zoo serves version 1 of each model`);
        return rest.slice(2);
      }
      return rest;
    };

    if (parts.length === 0) {
      note.endpoint = 'playground';
      want('GET', 'HEAD');
      const html = playgroundHtml();
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(html), 'Cache-Control': 'no-cache' });
      res.end(method === 'HEAD' ? undefined : html);
      return;
    }
    if (parts[0] === 'metrics' && parts.length === 1) {
      note.endpoint = 'metrics';
      want('GET');
      const text = metrics.registry.render();
      res.writeHead(200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (parts[0] === 'v2') {
      if (parts.length === 1) {
        note.endpoint = 'server_metadata';
        want('GET');
        return sendJson(res, 200, { name: 'zoo', version, extensions: ['binary_tensor_data'] });
      }
      if (parts[1] === 'health' && parts.length === 3 && (parts[2] === 'live' || parts[2] === 'ready')) {
        note.endpoint = 'health';
        want('GET');
        if (parts[2] === 'live') return sendJson(res, 200, { live: true });
        return sendJson(res, ready ? 200 : 503, { ready });
      }
      if (parts[1] === 'models' && parts.length >= 3) {
        const rest = versioned(parts.slice(3));
        note.endpoint = rest.length === 0 ? 'model_metadata' : rest.length === 1 && (rest[0] === 'ready' || rest[0] === 'infer') ? (rest[0] === 'ready' ? 'model_ready' : 'infer') : 'other';
        const m = model(parts[2]!);
        if (rest.length === 0) {
          want('GET');
          return sendJson(res, 200, { name: m.info.name, versions: ['1'], platform: 'onnxruntime_onnx', inputs: m.info.inputs, outputs: m.info.outputs });
        }
        if (rest.length === 1 && rest[0] === 'ready') {
          want('GET');
          return sendJson(res, ready ? 200 : 503, { name: m.info.name, ready });
        }
        if (rest.length === 1 && rest[0] === 'infer') {
          want('POST');
          if (!ready) throw new HttpError(503, 'the server is shutting down', { 'Retry-After': '1', Connection: 'close' });
          const body = await readBody(req, o.maxBodyBytes);
          const header = req.headers[INFERENCE_HEADER];
          const request = parseInferRequest(body, Array.isArray(header) ? header[0] : header, m.info);
          note.rows = Object.values(request.inputs)[0]?.dims[0];
          const outputs = await m.infer(request.inputs, o.timeoutMs);
          const { header: json, binary } = encodeInferResponse({ name: m.info.name }, request, outputs);
          if (binary.length === 0) return sendBytes(res, 200, [json], { 'Content-Type': 'application/json' });
          return sendBytes(res, 200, [json, ...binary], { 'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': json.length });
        }
      }
    }
    if (parts[0] === 'v1' && parts[1] === 'models') {
      if (parts.length === 2) {
        note.endpoint = 'models';
        want('GET');
        return sendJson(res, 200, { models: [...models.values()].map((m) => publicInfo(m.info)) });
      }
      if (parts.length === 3) {
        const [name, verb] = splitVerb(parts[2]!);
        note.endpoint = verb === undefined ? 'models' : verb === 'predict' ? 'predict' : 'other';
        const m = model(name);
        if (verb === undefined) {
          want('GET');
          return sendJson(res, 200, publicInfo(m.info));
        }
        if (verb === 'predict') {
          want('POST');
          if (!ready) throw new HttpError(503, 'the server is shutting down', { 'Retry-After': '1', Connection: 'close' });
          const body = await readBody(req, o.maxBodyBytes);
          note.rows = 1;
          const answer = await predictImage(m, body, req.headers['content-type'], url.searchParams, { maxImagePixels: o.maxImagePixels, timeoutMs: o.timeoutMs });
          if ('json' in answer) return sendJson(res, 200, answer.json);
          return sendBytes(res, 200, [answer.bytes], { 'Content-Type': answer.contentType, ...answer.headers });
        }
        throw new HttpError(404, `unknown verb ':${verb.slice(0, 40)}'; the task endpoint is POST /v1/models/${name}:predict`);
      }
    }
    throw new HttpError(404, `no endpoint ${method} ${url.pathname.slice(0, 200)}; see GET / for the playground, /v2 for the Open Inference Protocol and /v1/models/<name>:predict for images`);
  };

  const server = http.createServer((req, res) => {
    const t0 = performance.now();
    inFlight++;
    const note: { model?: string; endpoint: string; rows?: number } = { endpoint: 'other' };
    let bytesIn = 0;
    req.on('data', (c: Buffer) => (bytesIn += c.length));
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      inFlight--;
      const seconds = (performance.now() - t0) / 1000;
      const labels = { model: note.model ?? '', endpoint: note.endpoint };
      const code = String(res.statusCode);
      metrics.requests.inc({ ...labels, code });
      if (res.statusCode >= 400) metrics.errors.inc({ ...labels, code });
      if (res.statusCode === 503 && note.model) metrics.rejected.inc({ model: note.model });
      metrics.latency.observe(labels, seconds);
      log?.(
        JSON.stringify({
          time: new Date().toISOString(),
          remote: req.socket.remoteAddress,
          method: req.method,
          path: (req.url ?? '').slice(0, 300),
          status: res.statusCode,
          ms: Math.round(seconds * 1e4) / 10,
          bytes_in: bytesIn,
          bytes_out: Number(res.getHeader('content-length') ?? 0),
          ...(note.model ? { model: note.model } : {}),
          endpoint: note.endpoint,
          ...(note.rows !== undefined ? { rows: note.rows } : {}),
          ...(res.statusCode >= 400 && errorText.has(res) ? { error: errorText.get(res) } : {}),
        }),
      );
      if (inFlight === 0) for (const w of idleWaiters.splice(0)) w();
    };
    res.on('finish', finish);
    res.on('close', finish);
    handle(req, res, note).catch((e: unknown) => {
      const err =
        e instanceof HttpError
          ? e
          : e instanceof UserError
            ? new HttpError(400, e.message)
            : new HttpError(500, `internal error in zoo serve: ${(e as Error)?.message ?? String(e)}`);
      if (!(e instanceof HttpError) && !(e instanceof UserError)) process.stderr.write(`zoo serve: ${(e as Error)?.stack ?? String(e)}\n`);
      errorText.set(res, err.message);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (req.readableEnded || req.destroyed) sendJson(res, err.status, { error: err.message }, err.headers);
      else {
        // Answer now; drop what the client still sends (a refused body is not read into memory).
        sendJson(res, err.status, { error: err.message }, { ...err.headers, Connection: 'close' });
        req.resume();
      }
    });
  });
  const errorText = new WeakMap<ServerResponse, string>();
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 30_000;
  server.requestTimeout = Math.max(60_000, o.timeoutMs * 2);
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"error":"malformed HTTP request"}');
    else socket.destroy();
    void err;
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? `port ${o.port} on ${o.host} is in use (choose another with --port)` : e.code === 'EACCES' ? `no permission to listen on port ${o.port}` : e.message;
      reject(new UserError(`zoo serve cannot listen: ${why}`));
    });
    server.listen(o.port, o.host, () => resolve());
  }).catch(async (e) => {
    for (const m of models.values()) await m.close();
    throw e;
  });
  const address = server.address() as AddressInfo;
  const hostForUrl = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${hostForUrl}:${address.port}`,
    port: address.port,
    host: address.address,
    models: [...models.values()].map((m) => m.info),
    get ready() {
      return ready;
    },
    get inFlight() {
      return inFlight;
    },
    close() {
      closing ??= (async () => {
        ready = false;
        const stopped = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        if (inFlight > 0) await new Promise<void>((r) => idleWaiters.push(r));
        for (const m of models.values()) await m.batcher.idle();
        server.closeAllConnections();
        await stopped;
        for (const m of models.values()) await m.close();
      })();
      return closing;
    },
  };
}

function splitVerb(segment: string): [string, string | undefined] {
  const at = segment.lastIndexOf(':');
  return at > 0 ? [segment.slice(0, at), segment.slice(at + 1)] : [segment, undefined];
}

function publicInfo(info: ServedModelInfo): Omit<ServedModelInfo, 'file'> {
  const { file: _file, ...rest } = info;
  return rest;
}
