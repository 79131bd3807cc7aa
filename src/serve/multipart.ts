/**
 * multipart/form-data (RFC 7578) bodies, as browsers and `curl -F` send them: the parts with their
 * headers and bytes. Only what the task endpoint needs: the whole body is already in memory (its size is
 * limited before this runs), parts are returned as views into it.
 */
import { badRequest } from './http.js';

export interface FormPart {
  /** The form field's name (Content-Disposition name). */
  name?: string;
  filename?: string;
  contentType?: string;
  data: Buffer;
}

function dispositionParam(value: string, key: string): string | undefined {
  const m = new RegExp(`(?:^|;)\\s*${key}="((?:[^"\\\\]|\\\\.)*)"`, 'i').exec(value) ?? new RegExp(`(?:^|;)\\s*${key}=([^;\\s]*)`, 'i').exec(value);
  return m ? m[1]!.replace(/\\(.)/g, '$1') : undefined;
}

/** The parts of a multipart body with `boundary`; a 400 HttpError says what is malformed. */
export function parseMultipart(body: Buffer, boundary: string | undefined): FormPart[] {
  if (!boundary) throw badRequest('multipart/form-data without a boundary parameter in Content-Type');
  if (boundary.length > 200) throw badRequest('a multipart boundary longer than 200 characters');
  const delimiter = Buffer.from(`--${boundary}`);
  let at = body.indexOf(delimiter);
  if (at < 0) throw badRequest(`the multipart body does not contain its boundary '${boundary}'`);
  const parts: FormPart[] = [];
  for (;;) {
    at += delimiter.length;
    if (body[at] === 0x2d && body[at + 1] === 0x2d) return parts; // closing delimiter "--"
    if (body[at] === 0x0d && body[at + 1] === 0x0a) at += 2;
    else throw badRequest('a multipart delimiter is not followed by a line break');
    const headerEnd = body.indexOf('\r\n\r\n', at);
    if (headerEnd < 0) throw badRequest('a multipart part has no end of headers');
    const headers = new Map<string, string>();
    for (const line of body.subarray(at, headerEnd).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const start = headerEnd + 4;
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), start);
    if (next < 0) throw badRequest('the multipart body ends inside a part (no closing boundary)');
    const disposition = headers.get('content-disposition') ?? '';
    const name = dispositionParam(disposition, 'name');
    const filename = dispositionParam(disposition, 'filename');
    const contentType = headers.get('content-type');
    parts.push({ ...(name !== undefined ? { name } : {}), ...(filename !== undefined ? { filename } : {}), ...(contentType ? { contentType } : {}), data: body.subarray(start, next) });
    if (parts.length > 64) throw badRequest('more than 64 parts in a multipart body');
    at = next + 2;
  }
}
