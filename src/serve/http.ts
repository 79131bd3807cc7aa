/**
 * The HTTP plumbing of `zoo serve`: errors that carry their status, request bodies read with a limit,
 * JSON answers. Every bad request ends here as an HttpError with a one-line message; anything else that
 * escapes a handler is a bug in zoo and answers 500.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { gunzipSync, inflateSync } from 'node:zlib';

/** A request that cannot be served: its status, its one-line message and any extra headers. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
    /** Why, where metrics count it apart ('overloaded': a full queue). */
    readonly reason?: 'overloaded',
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export const badRequest = (message: string): HttpError => new HttpError(400, message);

/** The whole body of `req`, refused with 413 past `limit` bytes (before reading it, when Content-Length says so). */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume();
    return Promise.reject(new HttpError(413, `the request body is ${declared} bytes, more than the ${limit} accepted (--max-body)`, { Connection: 'close' }));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const fail = (e: HttpError) => {
      if (done) return;
      done = true;
      reject(e);
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        // Stop buffering; the rest is read and dropped so the answer can still be sent.
        chunks.length = 0;
        fail(new HttpError(413, `the request body is more than the ${limit} bytes accepted (--max-body)`, { Connection: 'close' }));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
    req.on('aborted', () => fail(new HttpError(400, 'the client closed the connection before the body was complete')));
    req.on('error', (e) => fail(new HttpError(400, `cannot read the request body (${e.message})`)));
  });
}

/** Sends `body` as JSON with `status`. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendBytes(res, status, [Buffer.from(JSON.stringify(body))], { 'Content-Type': 'application/json', ...headers });
}

/**
 * Sends raw bytes (one buffer or several, written without joining them). Headers are set on the response
 * (not only written), so the access log can read them back.
 */
export function sendBytes(res: ServerResponse, status: number, parts: readonly Uint8Array[], headers: Record<string, string | number>, options: { head?: boolean } = {}): void {
  const length = parts.reduce((s, p) => s + p.byteLength, 0);
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('Content-Length', length);
  if (options.head) {
    res.end();
    return;
  }
  for (const p of parts) res.write(p);
  res.end();
}

/**
 * The body as sent (Content-Encoding gzip or deflate undone, within `limit` bytes once decoded); other
 * encodings are refused with 415.
 */
export function decodeBody(body: Buffer, encoding: string | undefined, limit: number): Buffer {
  const e = (encoding ?? 'identity').trim().toLowerCase();
  if (e === 'identity' || e === '') return body;
  if (e !== 'gzip' && e !== 'deflate') throw new HttpError(415, `Content-Encoding ${e.slice(0, 40)} is not supported (gzip, deflate, or none)`);
  try {
    return e === 'gzip' ? gunzipSync(body, { maxOutputLength: limit }) : inflateSync(body, { maxOutputLength: limit });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') throw new HttpError(413, `the ${e} body decodes to more than the ${limit} bytes accepted (--max-body)`);
    throw badRequest(`the body is not valid ${e} data (${(err as Error).message})`);
  }
}

/** The media type of a Content-Type header, lower case, without parameters. */
export function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]!.trim().toLowerCase();
}

/** A parameter of a Content-Type header (`boundary`), unquoted. */
export function mediaParameter(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';').slice(1)) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim().toLowerCase() !== name) continue;
    const v = part.slice(eq + 1).trim();
    return v.startsWith('"') && v.endsWith('"') && v.length >= 2 ? v.slice(1, -1) : v;
  }
  return undefined;
}
