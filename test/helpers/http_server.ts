/**
 * A local HTTP server for download tests: serves fixture bytes on 127.0.0.1 (ephemeral port) with
 * Content-Length and Range, and injects faults one request at a time, logging every request so tests
 * can count retries and see Range headers. No network beyond the loopback.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A fault for one request; a route's faults are used up in order, then it serves normally. */
export type Fault =
  /** Answer with this status (and headers), no body to speak of. */
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  /** Announce the full length, send `at` bytes, then close the connection cleanly (FIN). */
  | { kind: 'truncate'; at: number }
  /** Announce the full length, send `at` bytes, then destroy the socket. */
  | { kind: 'drop'; at: number }
  /** Announce the full length, send `at` bytes, then send nothing more until the server closes. */
  | { kind: 'stall'; at: number }
  /** Announce the full length, then send one byte every `everyMs` (a server that never quite stalls). */
  | { kind: 'trickle'; everyMs: number }
  /** Answer 200 with the whole file even to a Range request. */
  | { kind: 'ignoreRange' }
  /** Wait for `until` before answering normally. */
  | { kind: 'hold'; until: Promise<unknown> };

/** What a path serves. */
export interface Route {
  data?: Buffer;
  /** Answer 302 to this path (relative to the server) instead of serving data. */
  redirect?: string;
  headers?: Record<string, string>;
  faults?: Fault[];
}

/** One request as the server saw it. */
export interface RequestLog {
  path: string;
  range: string | undefined;
  status: number;
  /** Body bytes written. */
  sent: number;
  /** The response finished normally. */
  complete: boolean;
}

/** Random fixture bytes and their digests. */
export function fixture(bytes: number): { data: Buffer; sha256: string; sha1: string } {
  const data = crypto.randomBytes(bytes);
  return {
    data,
    sha256: crypto.createHash('sha256').update(data).digest('hex'),
    sha1: crypto.createHash('sha1').update(data).digest('hex'),
  };
}

/** The fixture server. Start with `FixtureServer.start()`, always `close()` it. */
export class FixtureServer {
  readonly log: RequestLog[] = [];
  private readonly routes = new Map<string, Route>();

  private constructor(private readonly server: http.Server, readonly port: number) {
    server.on('request', (req, res) => {
      this.handle(req, res).catch(() => res.destroy());
    });
  }

  static async start(): Promise<FixtureServer> {
    const server = http.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return new FixtureServer(server, (server.address() as AddressInfo).port);
  }

  /** Full URL of `path` on this server. */
  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  route(path: string, route: Route): void {
    this.routes.set(path, { ...route, faults: [...(route.faults ?? [])] });
  }

  /** The requests made to `path`. */
  requests(path: string): RequestLog[] {
    return this.log.filter((r) => r.path === path);
  }

  /** Responses to `path` that sent the whole file from byte 0 and finished. */
  fullDownloads(path: string): number {
    const size = this.routes.get(path)?.data?.length;
    return this.requests(path).filter((r) => r.status === 200 && r.complete && r.sent === size).length;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const entry: RequestLog = { path, range: req.headers.range, status: 0, sent: 0, complete: false };
    this.log.push(entry);
    res.on('finish', () => {
      entry.complete = true;
    });
    const route = this.routes.get(path);
    const fault = route?.faults?.shift();
    if (fault?.kind === 'hold') await fault.until;
    if (!route) return this.reply(res, entry, 404);
    if (fault?.kind === 'status') return this.reply(res, entry, fault.status, fault.headers);
    if (route.redirect !== undefined) return this.reply(res, entry, 302, { ...route.headers, location: route.redirect });
    const data = route.data ?? Buffer.alloc(0);
    const range = fault?.kind === 'ignoreRange' ? undefined : parseRange(req.headers.range);
    if (range !== undefined && range >= data.length) {
      return this.reply(res, entry, 416, { 'content-range': `bytes */${data.length}` });
    }
    const start = range ?? 0;
    const body = data.subarray(start);
    const headers: Record<string, string> = { ...route.headers, 'content-length': String(body.length), 'accept-ranges': 'bytes' };
    if (range !== undefined) headers['content-range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
    entry.status = range !== undefined ? 206 : 200;
    res.writeHead(entry.status, headers);
    if (fault?.kind === 'trickle') {
      let at = 0;
      const timer = setInterval(() => {
        if (at >= body.length || res.destroyed) {
          clearInterval(timer);
          if (!res.destroyed) res.end();
          return;
        }
        res.write(body.subarray(at, at + 1));
        entry.sent = ++at;
      }, fault.everyMs);
      res.on('close', () => clearInterval(timer));
      return;
    }
    if (fault?.kind === 'truncate' || fault?.kind === 'drop' || fault?.kind === 'stall') {
      const part = body.subarray(0, Math.min(fault.at, body.length));
      entry.sent = part.length;
      res.write(part, () => {
        if (fault.kind === 'truncate') res.socket?.end();
        else if (fault.kind === 'drop') res.socket?.destroy();
        // stall: nothing more; close() ends the connection
      });
      return;
    }
    entry.sent = body.length;
    res.end(body);
  }

  private reply(res: http.ServerResponse, entry: RequestLog, status: number, headers: Record<string, string> = {}): void {
    entry.status = status;
    const body = Buffer.from(`${status} ${http.STATUS_CODES[status] ?? ''}\n`);
    res.writeHead(status, { ...headers, 'content-type': 'text/plain', 'content-length': String(body.length) });
    res.end(body);
  }
}

/** Start offset of `bytes=N-` (the only form the downloader sends). */
function parseRange(header: string | undefined): number | undefined {
  const m = /^bytes=(\d+)-$/.exec(header ?? '');
  return m ? Number(m[1]) : undefined;
}
