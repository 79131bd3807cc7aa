/**
 * safetensors, the format timm publishes on the Hugging Face hub.
 *
 * Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON
 * `{"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}}`,
 * then the data buffer; offsets are relative to the start of the data buffer. The reader checks what the
 * reference implementation (huggingface/safetensors `tensor.rs`) checks: N at most 100 MB and inside
 * the file, byte sizes that match dtype and shape, and tensors that tile the data buffer exactly, with
 * no overlap, gap or trailing bytes.
 */
import { endianness } from 'node:os';
import {
  DTYPE_SIZE,
  byteSize,
  FormatError,
  decodeElements,
  decodedSize,
  float32ToFloat16Bits,
  materializeAll,
  quoteName,
  readFileBytes,
  type SourceDType,
  type TensorDescriptor,
  type TensorMap,
  type TensorSource,
} from './types.js';
import { BUDGET_SLACK_BYTES, ByteBudget } from './budget.js';
import { writeFileAtomic } from '../io/atomic.js';

/** The reference implementation's header limit: larger headers are refused before reading them. */
export const MAX_HEADER_BYTES = 100_000_000;

/** safetensors dtype names and the source dtype each decodes to (F8 and unsigned wide ints are not used by our sources). */
const DTYPES: Readonly<Record<string, SourceDType>> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  F64: 'float64',
  I64: 'int64',
  I32: 'int32',
  I16: 'int16',
  I8: 'int8',
  U8: 'uint8',
  BOOL: 'bool',
};

/** A parsed safetensors file. */
export interface SafetensorsContents {
  tensors: TensorMap;
  metadata: Record<string, string>;
}

/** An opened safetensors file: its tensors as descriptors, read on demand, and its metadata. */
export interface SafetensorsSource extends TensorSource {
  readonly metadata: Record<string, string>;
}

/** Options of the safetensors readers. */
export interface SafetensorsReadOptions {
  /**
   * What reading may allocate (budget.ts). Default: what a valid file needs at most, 24 x its header
   * (for what JSON.parse makes of it) plus 2 x its data (float16 widening to float32 is the most any
   * tensor grows) plus 16 MiB.
   */
  budget?: ByteBudget;
}

/** Reads a safetensors file; throws FormatError naming the file when anything is wrong with it. */
export async function readSafetensors(path: string, options: SafetensorsReadOptions = {}): Promise<SafetensorsContents> {
  return parseSafetensors(await readFileBytes(path, options.budget), path, options);
}

interface Entry {
  name: string;
  dtype: SourceDType;
  shape: number[];
  begin: number;
  end: number;
}

/** Parses safetensors bytes held in memory; `label` names them in errors. */
export function parseSafetensors(bytes: Uint8Array, label: string, options: SafetensorsReadOptions = {}): SafetensorsContents {
  const source = openSafetensors(bytes, label, options.budget);
  return { tensors: materializeAll(source), metadata: source.metadata };
}

/**
 * Checks the header of safetensors bytes and describes their tensors without decoding any; each
 * descriptor's `read()` decodes one tensor, charged to `budget` (default as for readSafetensors).
 */
export function openSafetensors(bytes: Uint8Array, label: string, budget?: ByteBudget): SafetensorsSource {
  const fail = (problem: string): FormatError => new FormatError(label, problem);
  if (bytes.length < 8) throw fail(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw fail(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLen = Number(n);
  if (8 + headerLen > bytes.length) {
    throw fail(`header length ${headerLen} runs past the end of the file (${bytes.length} bytes)`);
  }
  budget ??= defaultBudget(label, headerLen, bytes.length - 8 - headerLen);
  // JSON.parse builds objects several times the size of their text; the header is charged for them.
  budget.charge(headerLen * JSON_BYTES_FACTOR, `parsing the ${headerLen}-byte header`);
  const header = parseHeaderJson(bytes.subarray(8, 8 + headerLen), fail);
  const data = bytes.subarray(8 + headerLen);
  const { entries, metadata } = readHeader(header, data.length, fail);
  checkTiling(entries, data.length, fail); // sorts by offset: tensors come out in file order
  const tensors = new Map<string, TensorDescriptor>();
  for (const e of entries) {
    const count = e.shape.reduce((a, b) => a * b, 1);
    tensors.set(e.name, {
      name: e.name,
      dtype: e.dtype,
      shape: e.shape,
      byteLength: e.end - e.begin,
      read: () => {
        budget.charge(decodedSize(e.dtype, count), `decoding tensor ${quoteName(e.name)}`);
        return decodeElements(data.subarray(e.begin, e.end), e.dtype);
      },
    });
  }
  return { label, tensors, warnings: [], budget, metadata };
}

/** What any valid file needs at most: its header parsed, and every tensor decoded (at most 2 x its bytes). */
function defaultBudget(label: string, headerLen: number, dataLen: number): ByteBudget {
  return new ByteBudget(
    label,
    JSON_BYTES_FACTOR * headerLen + 2 * dataLen + BUDGET_SLACK_BYTES,
    `${JSON_BYTES_FACTOR} x the ${headerLen}-byte header + 2 x the ${dataLen} data bytes + 16 MiB`,
  );
}

/**
 * Bytes charged per header byte for what JSON.parse makes of it: measured in V8, about 3 for a header
 * of real entries and at most about 21 for the worst text (a long list of empty objects).
 */
const JSON_BYTES_FACTOR = 24;

function parseHeaderJson(raw: Uint8Array, fail: (p: string) => FormatError): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw fail('header is not a JSON object');
  }
  const dup = duplicateKey(text);
  if (dup) throw fail(`key ${quoteName(dup.key)} appears twice in ${dup.where}; a header names each tensor and field once`);
  return json as Record<string, unknown>;
}

/**
 * The first key that repeats within one object of `text`, which JSON.parse has accepted (it keeps the
 * last value of a repeated key, silently). One linear pass over the text with a set per open object.
 */
export function duplicateKey(text: string): { key: string; where: string } | undefined {
  const objects: { keys: Set<string>; name: string }[] = [];
  // What the innermost open container is, and the key of the value being read in an object.
  const containers: ('object' | 'array')[] = [];
  let expectKey = false;
  let lastKey = '';
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      while (j < text.length && text.charCodeAt(j) !== 0x22) {
        if (text.charCodeAt(j) === 0x5c /* \ */) {
          escaped = true;
          j++;
        }
        j++;
      }
      const token = text.slice(i, j + 1);
      i = j + 1;
      if (containers[containers.length - 1] === 'object' && expectKey) {
        const key = escaped ? (JSON.parse(token) as string) : token.slice(1, -1);
        const top = objects[objects.length - 1]!;
        if (top.keys.has(key)) return { key, where: top.name };
        top.keys.add(key);
        lastKey = key;
        expectKey = false;
      }
      continue;
    }
    if (c === 0x7b /* { */) {
      const name = objects.length === 0 ? 'the header' : objects.length === 1 ? `the entry ${quoteName(lastKey)}` : `an object inside ${objects[1]!.name}`;
      objects.push({ keys: new Set(), name });
      containers.push('object');
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      containers.push('array');
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      if (containers.pop() === 'object') objects.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = containers[containers.length - 1] === 'object';
    }
    i++;
  }
  return undefined;
}

function readHeader(
  header: Record<string, unknown>,
  dataLength: number,
  fail: (p: string) => FormatError,
): { entries: Entry[]; metadata: Record<string, string> } {
  const entries: Entry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') metadata = readMetadata(value, fail);
    else entries.push(readEntry(name, value, dataLength, fail));
  }
  return { entries, metadata };
}

function readMetadata(value: unknown, fail: (p: string) => FormatError): Record<string, string> {
  const out: Record<string, string> = {};
  if (value === null) return out;
  if (typeof value !== 'object' || Array.isArray(value)) throw fail('__metadata__ is not an object of strings');
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') throw fail(`__metadata__ value for ${quoteName(k)} is not a string`);
    // defineProperty: a key named "__proto__" must stay a plain entry, not replace the prototype.
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function readEntry(name: string, value: unknown, dataLength: number, fail: (p: string) => FormatError): Entry {
  const what = `tensor ${quoteName(name)}`;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw fail(`${what} is not an object`);
  const info = value as Record<string, unknown>;
  const dtypeName = info['dtype'];
  if (typeof dtypeName !== 'string' || !Object.hasOwn(DTYPES, dtypeName)) {
    throw fail(`${what} has unknown or unsupported dtype ${JSON.stringify(dtypeName)} (supported: ${Object.keys(DTYPES).join(', ')})`);
  }
  const dtype = DTYPES[dtypeName]!;
  const shape = info['shape'];
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw fail(`${what} shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  const offsets = info['data_offsets'];
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)
  ) {
    throw fail(`${what} data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw fail(`${what} data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataLength) {
    throw fail(`${what} data_offsets [${begin}, ${end}] run past the end of the data (${dataLength} bytes)`);
  }
  const need = byteSize(shape as number[], DTYPE_SIZE[dtype], dataLength);
  if (need !== end - begin) {
    const needText = need === undefined ? `more than the whole data buffer (${dataLength} bytes)` : `${need}`;
    throw fail(
      `${what} has ${end - begin} bytes at data_offsets [${begin}, ${end}] but dtype ${dtypeName} and shape [${(shape as number[]).join(', ')}] need ${needText}`,
    );
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

/** Sorts entries by offset and checks they cover the data buffer exactly once, as the reference does. */
function checkTiling(entries: Entry[], dataLength: number, fail: (p: string) => FormatError): void {
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let prev: Entry | undefined;
  for (const e of entries) {
    if (e.begin < at) {
      throw fail(`tensors ${quoteName(prev!.name)} [${prev!.begin}, ${prev!.end}] and ${quoteName(e.name)} [${e.begin}, ${e.end}] overlap`);
    }
    if (e.begin > at) throw fail(`bytes [${at}, ${e.begin}) of the data buffer belong to no tensor`);
    at = e.end;
    prev = e;
  }
  if (at !== dataLength) throw fail(`data buffer has ${dataLength - at} bytes after the last tensor`);
}

// ---------------------------------------------------------------------------------------------------
// Writing

/** A tensor to write. float16 data is either float32 values (rounded to nearest even) or raw float16 bits. */
export interface SafetensorsInput {
  dtype: 'float32' | 'float16';
  shape: number[];
  data: Float32Array | Uint16Array;
}

const WRITE_DTYPE = { float32: 'F32', float16: 'F16' } as const;

/**
 * Writes tensors as a safetensors file the reference library reads: entries ordered as its serializer
 * orders them (wider dtype first, then by name, which keeps every tensor aligned), header padded with
 * spaces to a multiple of 8 bytes. The file appears atomically (io/atomic.ts).
 */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, SafetensorsInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

/**
 * The chunks of a safetensors file for `tensors`: length, header, then each tensor's bytes. Exposed for
 * in-memory use; writeSafetensors writes exactly these.
 */
export function serializeSafetensors(
  tensors: Map<string, SafetensorsInput>,
  metadata?: Record<string, string>,
): Uint8Array[] {
  const items = [...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: tensorBytes(name, t) }));
  const utf8 = new TextEncoder();
  items.sort((a, b) => DTYPE_SIZE[b.dtype] - DTYPE_SIZE[a.dtype] || Buffer.compare(utf8.encode(a.name), utf8.encode(b.name)));
  // Built by hand rather than JSON.stringify(object): JS objects list integer-like keys first.
  const fields: string[] = [];
  if (metadata) {
    const pairs = Object.entries(metadata).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(String(v))}`);
    fields.push(`"__metadata__":{${pairs.join(',')}}`);
  }
  let offset = 0;
  for (const it of items) {
    const end = offset + it.bytes.length;
    fields.push(`${JSON.stringify(it.name)}:{"dtype":"${WRITE_DTYPE[it.dtype]}","shape":[${it.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = utf8.encode(`{${fields.join(',')}}`);
  const padded = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  padded.set(json);
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded.length), true);
  return [head, padded, ...items.map((it) => it.bytes)];
}

/** Little-endian bytes of one tensor, after checking it is what it claims (a mismatch is a bug in the caller). */
function tensorBytes(name: string, t: SafetensorsInput): Uint8Array {
  if (name === '__metadata__') throw new Error(`safetensors: '__metadata__' cannot name a tensor`);
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new Error(`safetensors: tensor '${name}' has shape [${t.shape}]`);
  const count = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== count) {
    throw new Error(`safetensors: tensor '${name}' has ${t.data.length} values for shape [${t.shape.join(', ')}]`);
  }
  let typed: Float32Array | Uint16Array;
  if (t.dtype === 'float32') {
    if (!(t.data instanceof Float32Array)) throw new Error(`safetensors: float32 tensor '${name}' needs a Float32Array`);
    typed = t.data;
  } else {
    typed = t.data instanceof Uint16Array ? t.data : float32ToFloat16Bits(t.data);
  }
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  if (endianness() === 'LE') return bytes;
  const copy = new Uint8Array(bytes);
  const size = typed.BYTES_PER_ELEMENT;
  for (let i = 0; i < copy.length; i += size) copy.subarray(i, i + size).reverse();
  return copy;
}
