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
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import { findPackageDir } from '../util/package.js';
import type { ProviderChoice, SessionOptions } from '../runtime/ort.js';
import { HttpError, decodeBody, readBody, sendBytes, sendJson } from './http.js';
import { INFERENCE_HEADER, encodeInferResponse, parseInferRequest } from './protocol.js';
import { DEFAULT_MAX_ELEMENTS, ModelRunError, ServedModel, parseModelSpec, type ServedModelInfo } from './model.js';
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
  /** Segmenters run on images of at most this many pixels (over all the images of a run); larger ones are scaled down and their labels back up: 1 Mi (1024 x 1024). */
  segmentationPixels?: number;
  /** Elements of the dynamic dimensions of a model's inputs (rows included) one run holds at most, other models than segmenters: 16 Mi. */
  maxElements?: number;
  /** After close() turns readiness off, keep accepting and answering this long (load balancers notice readiness late): 0. */
  drainMs?: number;
  /** Idle keep-alive connections are closed after this long: 65 s (longer than common load balancers' 60 s). */
  keepAliveMs?: number;
  /** Sessions per model running batches side by side (Triton's instance count): 1. */
  instances?: number;
  /** ONNX Runtime's intra-op threads per session (default: the cores divided among the instances). */
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
  /** Requests waiting for a run, over every model. */
  readonly queued: number;
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
  segmentationPixels: 1024 * 1024,
  maxElements: DEFAULT_MAX_ELEMENTS,
  drainMs: 0,
  keepAliveMs: 65_000,
} as const;

/** Node's timers hold at most 2^31 - 1 ms (a longer one fires at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function zooVersion(): string {
  const file = findPackageDir(path.dirname(fileURLToPath(import.meta.url)), 'package.json');
  try {
    return (JSON.parse(readFileSync(file!, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function positiveInt(name: string, v: number | undefined, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new UserError(`${name} must be an integer ${range}, got ${v}`, { exitCode: 2 });
  }
  return v;
}

/** Opens the models and starts listening; resolves once requests are answered. */
export async function startServer(modelArgs: readonly string[], options: ServeOptions = {}): Promise<ZooServer> {
  if (modelArgs.length === 0) throw new UserError('give at least one model to serve (a local zoo name, a pulled published name, an .onnx file or name=file.onnx)', { exitCode: 2 });
  const o = {
    port: positiveInt('--port', options.port, SERVE_DEFAULTS.port, 0),
    host: options.host ?? SERVE_DEFAULTS.host,
    maxBatch: positiveInt('--max-batch', options.maxBatch, SERVE_DEFAULTS.maxBatch),
    maxDelayMs: positiveInt('--max-delay-ms', options.maxDelayMs, SERVE_DEFAULTS.maxDelayMs, 0, 60_000),
    maxQueue: positiveInt('--max-queue', options.maxQueue, SERVE_DEFAULTS.maxQueue),
    timeoutMs: positiveInt('--timeout', options.timeoutMs, SERVE_DEFAULTS.timeoutMs, 1, MAX_TIMER_MS),
    maxBodyBytes: positiveInt('--max-body', options.maxBodyBytes, SERVE_DEFAULTS.maxBodyBytes, 1, 2 ** 31),
    maxImagePixels: positiveInt('--max-pixels', options.maxImagePixels, SERVE_DEFAULTS.maxImagePixels),
    segmentationPixels: positiveInt('--seg-pixels', options.segmentationPixels, SERVE_DEFAULTS.segmentationPixels, 1024),
    maxElements: positiveInt('--max-elements', options.maxElements, SERVE_DEFAULTS.maxElements),
    drainMs: positiveInt('--drain-ms', options.drainMs, SERVE_DEFAULTS.drainMs, 0, MAX_TIMER_MS),
    keepAliveMs: positiveInt('--keep-alive-ms', options.keepAliveMs, SERVE_DEFAULTS.keepAliveMs, 1, MAX_TIMER_MS),
  };
  if (o.port > 65535) throw new UserError(`--port must be at most 65535, got ${o.port}`, { exitCode: 2 });
  const instances = positiveInt('--instances', options.instances, 1, 1, 64);
  const threads = options.threads !== undefined ? positiveInt('--threads', options.threads, 1) : Math.max(1, Math.floor(os.availableParallelism() / instances));
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
        // Sessions run in worker threads (a run holds its thread, and this one must keep answering: health,
        // metrics, queueing), and their pool threads do not spin between runs (that would starve this thread).
        session: { thread: 'worker', spinning: false, ...options.session, intraOpThreads: threads },
        instances,
        maxBatch: o.maxBatch,
        maxDelayMs: o.maxDelayMs,
        maxQueue: o.maxQueue,
        segmentationPixels: o.segmentationPixels,
        maxElements: o.maxElements,
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
  /** Requests are still answered: true until the drain after close() ends (readiness turns false before). */
  let accepting = true;
  let inFlight = 0;
  metrics.inFlight.track({}, () => inFlight);
  metrics.cpu.track({}, () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  });
  const idleWaiters: (() => void)[] = [];
  /** Responses not yet finished (close() makes those still to send their headers close their connection). */
  const active = new Set<ServerResponse>();

  /**
   * Admits a request to `m` before its body is read: refused at once when the model's queue (requests
   * waiting and bodies being read) is full or the server has stopped answering. The returned function
   * gives the place back; call it before the request is submitted, or when it fails.
   */
  const admit = (m: ServedModel): (() => void) => {
    if (!accepting) throw new HttpError(503, 'the server is shutting down', { 'Retry-After': '1' });
    return m.batcher.reserve();
  };
  const body = async (req: IncomingMessage): Promise<Buffer> => {
    const raw = await readBody(req, o.maxBodyBytes);
    const encoding = req.headers['content-encoding'];
    return decodeBody(raw, Array.isArray(encoding) ? encoding[0] : encoding, o.maxBodyBytes);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, note: RequestNote): Promise<void> => {
    const url = requestTarget(req.url ?? '/');
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
      return sendBytes(res, 200, [Buffer.from(playgroundHtml())], { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache' }, { head: method === 'HEAD' });
    }
    if (parts[0] === 'metrics' && parts.length === 1) {
      note.endpoint = 'metrics';
      want('GET');
      return sendBytes(res, 200, [Buffer.from(metrics.registry.render())], { 'Content-Type': PROMETHEUS_CONTENT_TYPE });
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
          const release = admit(m);
          let request: ReturnType<typeof parseInferRequest>;
          try {
            const data = await body(req);
            const header = req.headers[INFERENCE_HEADER];
            request = parseInferRequest(data, Array.isArray(header) ? header[0] : header, {
              ...m.info,
              ...(m.limits.maxRows !== undefined ? { maxBatch: m.limits.maxRows } : { maxBatch: undefined }),
              elementLimits: { maxElements: m.limits.maxElements, option: m.limits.elementsOption },
            });
          } finally {
            release();
          }
          note.rows = Object.values(request.inputs)[0]?.dims[0];
          let outputs: Awaited<ReturnType<ServedModel['infer']>>;
          try {
            outputs = await m.infer(request.inputs, o.timeoutMs, note.signal);
          } catch (e) {
            // The client's tensors are what the graph failed on: the answer says so, in one line.
            if (e instanceof ModelRunError) {
              throw e.memory
                ? new HttpError(413, `${m.info.name} could not get the memory to run this request: ${e.message}`)
                : new HttpError(400, `${m.info.name} cannot run on these inputs: ${e.message}`);
            }
            throw e;
          }
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
          const release = admit(m);
          let answer: Awaited<ReturnType<typeof predictImage>>;
          try {
            const data = await body(req);
            note.rows = 1;
            answer = await predictImage(m, data, req.headers['content-type'], url.searchParams, {
              maxImagePixels: o.maxImagePixels,
              segmentationPixels: o.segmentationPixels,
              timeoutMs: o.timeoutMs,
              signal: note.signal,
              beforeInfer: release,
            });
          } finally {
            release();
          }
          if ('json' in answer) return sendJson(res, 200, answer.json);
          return sendBytes(res, 200, [answer.bytes], { 'Content-Type': answer.contentType, ...answer.headers });
        }
        throw new HttpError(404, `unknown verb ':${verb.slice(0, 40)}'; the task endpoint is POST /v1/models/${name}:predict`);
      }
    }
    throw new HttpError(404, `no endpoint ${method} ${url.pathname.slice(0, 200)}; see GET / for the playground, /v2 for the Open Inference Protocol and /v1/models/<name>:predict for images`);
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const t0 = performance.now();
    inFlight++;
    const aborted = new AbortController();
    const note: RequestNote = { endpoint: 'other', signal: aborted.signal };
    const remote = req.socket.remoteAddress;
    // Once stopping, every answer closes its connection: the client's next request goes elsewhere
    // instead of meeting a reset.
    if (!ready) res.setHeader('Connection', 'close');
    active.add(res);
    let bytesIn = 0;
    req.on('data', (c: Buffer) => (bytesIn += c.length));
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      inFlight--;
      active.delete(res);
      // A client that went away before its answer was sent: nginx's 499, counted apart from answers.
      const gone = !res.writableFinished;
      if (gone) aborted.abort();
      const status = gone ? 499 : res.statusCode;
      const seconds = (performance.now() - t0) / 1000;
      const labels = { model: note.model ?? '', endpoint: note.endpoint };
      const code = String(status);
      metrics.requests.inc({ ...labels, code });
      if (status >= 400) metrics.errors.inc({ ...labels, code });
      if (note.overloaded && note.model) metrics.rejected.inc({ model: note.model });
      metrics.latency.observe(labels, seconds);
      log?.(
        JSON.stringify({
          time: new Date().toISOString(),
          remote,
          method: req.method,
          path: (req.url ?? '').slice(0, 300),
          status,
          ms: Math.round(seconds * 1e4) / 10,
          bytes_in: bytesIn,
          bytes_out: gone ? 0 : Number(res.getHeader('content-length') ?? 0),
          ...(note.model ? { model: note.model } : {}),
          endpoint: note.endpoint,
          ...(note.rows !== undefined ? { rows: note.rows } : {}),
          ...(gone ? { error: 'the client closed the connection before the answer was sent' } : status >= 400 && errorText.has(res) ? { error: errorText.get(res) } : {}),
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
      if (err.reason === 'overloaded') note.overloaded = true;
      errorText.set(res, err.message);
      if (res.destroyed || res.writableEnded) return;
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
  };
  const server = http.createServer(onRequest);
  // Expect: 100-continue: a body over the limit is refused before the client sends it.
  server.on('checkContinue', (req, res) => {
    if (Number(req.headers['content-length'] ?? 0) <= o.maxBodyBytes) res.writeContinue();
    onRequest(req, res);
  });
  const errorText = new WeakMap<ServerResponse, string>();
  server.keepAliveTimeout = o.keepAliveMs;
  server.headersTimeout = Math.min(MAX_TIMER_MS, o.keepAliveMs + 1_000);
  server.requestTimeout = Math.min(MAX_TIMER_MS, Math.max(120_000, o.timeoutMs * 2));
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const [status, text] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout'] : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large'] : [400, 'Bad Request'];
    const body = JSON.stringify({ error: status === 400 ? 'malformed HTTP request' : text.toLowerCase() });
    if (socket.writable) socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    else socket.destroy();
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
    get queued() {
      let n = 0;
      for (const m of models.values()) n += m.batcher.depth;
      return n;
    },
    close() {
      closing ??= (async () => {
        ready = false;
        for (const r of active) if (!r.headersSent) r.setHeader('Connection', 'close');
        // Readiness is off; keep accepting and answering while load balancers take notice.
        if (o.drainMs > 0) await new Promise((r) => setTimeout(r, o.drainMs));
        accepting = false;
        for (const m of models.values()) m.batcher.flush();
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

interface RequestNote {
  model?: string;
  endpoint: string;
  rows?: number;
  /** Aborted when the client goes away before its answer. */
  signal: AbortSignal;
  /** Refused for a full queue. */
  overloaded?: boolean;
}

/**
 * The path and query of a request target, read from the target itself: origin form ('/v2/...?q'), where a
 * leading '//' is part of the path and never a host, or absolute form ('http://host/v2/...').
 */
export function requestTarget(target: string): { pathname: string; searchParams: URLSearchParams } {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) {
    try {
      const u = new URL(target);
      return { pathname: u.pathname, searchParams: u.searchParams };
    } catch {
      throw new HttpError(400, `the request target ${target.slice(0, 100)} is not a valid URL`);
    }
  }
  if (!target.startsWith('/')) throw new HttpError(400, `the request target ${target.slice(0, 100)} is not a path`);
  const q = target.indexOf('?');
  const hash = target.indexOf('#');
  const end = hash >= 0 && (q < 0 || hash < q) ? hash : q >= 0 ? q : target.length;
  const search = q >= 0 ? target.slice(q + 1, hash > q ? hash : undefined) : '';
  const pathname = target.slice(0, end);
  // What RFC 3986 allows in a path: unreserved characters, percent-escapes, sub-delimiters, ':', '@', '/'.
  if (!/^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/.test(pathname)) throw new HttpError(400, `the request target ${target.slice(0, 100)} is not a valid path`);
  return { pathname, searchParams: new URLSearchParams(search) };
}

function splitVerb(segment: string): [string, string | undefined] {
  const at = segment.lastIndexOf(':');
  return at > 0 ? [segment.slice(0, at), segment.slice(at + 1)] : [segment, undefined];
}

function publicInfo(info: ServedModelInfo): Omit<ServedModelInfo, 'file'> {
  const { file: _file, ...rest } = info;
  return rest;
}
