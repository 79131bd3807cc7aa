/**
 * Writers for the weight formats the readers parse, written from the format descriptions (not from the
 * readers) so tests build their fixtures at run time: ZIP archives (stored and deflate, with the
 * layout PyTorch writes), MXNet NDArray lists, torch.save pickles, raw safetensors files.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

/** A fresh temporary directory, removed when the test ends if the test context is given. */
export function tempDir(t?: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zoo-'));
  t?.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** Little-endian bytes of numbers stored as float32. */
export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** Little-endian bytes of 16-bit patterns (float16 or bfloat16 bits). */
export function u16Bytes(bits: number[]): Uint8Array {
  return new Uint8Array(new Uint16Array(bits).buffer);
}

/** A byte writer for little-endian fields. */
class Bytes {
  private readonly parts: Uint8Array[] = [];
  length = 0;

  raw(b: Uint8Array | number[]): this {
    const u = b instanceof Uint8Array ? b : Uint8Array.from(b);
    this.parts.push(u);
    this.length += u.length;
    return this;
  }

  u8(v: number): this {
    return this.raw([v & 0xff]);
  }

  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v);
    return this.raw(b);
  }

  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return this.raw(b);
  }

  i32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return this.raw(b);
  }

  u64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return this.raw(b);
  }

  i64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(v));
    return this.raw(b);
  }

  bytes(): Uint8Array {
    return concat(this.parts);
  }
}

// ---------------------------------------------------------------------------------------------------
// CRC-32, bit by bit (deliberately not the table the reader uses)

/** CRC-32 as ZIP defines it. */
export function crc32Bitwise(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------------------
// ZIP

/** One entry to write. Fields past `data` bend the archive for fault tests. */
export interface ZipFixtureEntry {
  name: string;
  data: Uint8Array;
  /** 0 stored (default), 8 deflate, anything else to test refusal. */
  method?: number;
  /** CRC-32 to declare instead of the real one. */
  crc?: number;
  /** Uncompressed size to declare instead of the real one. */
  size?: number;
  /** General purpose flags (UTF-8 names are flagged by default). */
  flags?: number;
  /** Extra field in the local header (PyTorch pads with one to align data). */
  localExtra?: Uint8Array;
  /** Name in the local header, if it should differ. */
  localName?: string;
  /** Local header offset to declare in the central directory instead of the real one. */
  localHeaderOffset?: number;
}

/** Archive-wide options. */
export interface ZipFixtureOptions {
  /** Write a ZIP64 end record and locator before the classic end record, as PyTorch does. */
  zip64End?: boolean;
  /** Zero the local header's CRC and sizes, set flag bit 3 and append data descriptors (PyTorch, streaming writers). */
  dataDescriptors?: boolean;
  comment?: string;
  /** Override end-record fields. */
  eocd?: Partial<{ disk: number; cdDisk: number; countHere: number; count: number; cdSize: number; cdOffset: number }>;
}

/** A written archive and where its parts are. */
export interface ZipLayout {
  bytes: Uint8Array;
  localOffsets: number[];
  cdOffset: number;
  cdSize: number;
  eocdOffset: number;
}

/** Writes a ZIP archive following APPNOTE.TXT (4.3.7 local header, 4.3.12 central header, 4.3.16 end record). */
export function buildZip(entries: ZipFixtureEntry[], options: ZipFixtureOptions = {}): ZipLayout {
  const body = new Bytes();
  const central = new Bytes();
  const localOffsets: number[] = [];
  for (const e of entries) {
    const method = e.method ?? 0;
    const stored = method === 8 ? zlib.deflateRawSync(e.data) : e.data;
    const crc = e.crc ?? crc32Bitwise(e.data);
    const size = e.size ?? e.data.length;
    const flags = (e.flags ?? 0x800) | (options.dataDescriptors ? 0x8 : 0);
    const name = Buffer.from(e.name, 'utf8');
    const localName = Buffer.from(e.localName ?? e.name, 'utf8');
    const extra = e.localExtra ?? new Uint8Array(0);
    const offset = body.length;
    localOffsets.push(offset);
    const dd = options.dataDescriptors;
    body.u32(0x04034b50).u16(20).u16(flags).u16(method).u16(0).u16(0x21);
    body.u32(dd ? 0 : crc).u32(dd ? 0 : stored.length).u32(dd ? 0 : size);
    body.u16(localName.length).u16(extra.length).raw(localName).raw(extra).raw(stored);
    if (dd) body.u32(0x08074b50).u32(crc).u32(stored.length).u32(size);
    central.u32(0x02014b50).u16(0x031e).u16(20).u16(flags).u16(method).u16(0).u16(0x21);
    central.u32(crc).u32(stored.length).u32(size).u16(name.length).u16(0).u16(0).u16(0).u16(0).u32(0);
    central.u32(e.localHeaderOffset ?? offset).raw(name);
  }
  const cdOffset = body.length;
  const cdSize = central.length;
  const out = new Bytes().raw(body.bytes()).raw(central.bytes());
  if (options.zip64End) {
    const recordOffset = out.length;
    out.u32(0x06064b50).u64(44).u16(0x031e).u16(45).u32(0).u32(0);
    out.u64(entries.length).u64(entries.length).u64(cdSize).u64(cdOffset);
    out.u32(0x07064b50).u32(0).u64(recordOffset).u32(1);
  }
  const eocdOffset = out.length;
  const o = options.eocd ?? {};
  const comment = Buffer.from(options.comment ?? '', 'utf8');
  out.u32(0x06054b50).u16(o.disk ?? 0).u16(o.cdDisk ?? 0).u16(o.countHere ?? entries.length).u16(o.count ?? entries.length);
  out.u32(o.cdSize ?? cdSize).u32(o.cdOffset ?? cdOffset).u16(comment.length).raw(comment);
  return { bytes: out.bytes(), localOffsets, cdOffset, cdSize, eocdOffset };
}

/** Writes a ZIP archive and returns its bytes. */
export function makeZip(entries: ZipFixtureEntry[], options: ZipFixtureOptions = {}): Uint8Array {
  return buildZip(entries, options).bytes;
}

// ---------------------------------------------------------------------------------------------------
// MXNet NDArray list

/** mshadow type flags. */
export const MX = { float32: 0, float64: 1, float16: 2, uint8: 3, int32: 4, int8: 5, int64: 6, bool: 7, int16: 8, bfloat16: 12 } as const;

/** An array to write; `shape: null` writes an empty (none) array. */
export interface MxArrayFixture {
  name: string;
  typeFlag: number;
  shape: number[] | null;
  data: Uint8Array;
  /** V2 storage type (0 dense). */
  stype?: number;
}

/** Record versions: V2 (what MXNet 1.x writes), V1, legacy (u32 dims, no magic), V3 (NumPy shapes). */
export type MxFormat = 'v2' | 'v1' | 'legacy' | 'v3';

/** Writes an MXNet `.params` file as `NDArray::Save(fo, data, names)` does. */
export function makeMxnetParams(arrays: MxArrayFixture[], options: { format?: MxFormat; names?: boolean } = {}): Uint8Array {
  const format = options.format ?? 'v2';
  const b = new Bytes().u64(0x112).u64(0).u64(arrays.length);
  for (const a of arrays) writeNDArray(b, a, format);
  const names = options.names ?? true;
  b.u64(names ? arrays.length : 0);
  if (names) {
    for (const a of arrays) {
      const n = Buffer.from(a.name, 'utf8');
      b.u64(n.length).raw(n);
    }
  }
  return b.bytes();
}

function writeNDArray(b: Bytes, a: MxArrayFixture, format: MxFormat): void {
  if (format === 'v2' || format === 'v3') b.u32(format === 'v2' ? 0xf993fac9 : 0xf993faca).i32(a.stype ?? 0);
  if (format === 'v1') b.u32(0xf993fac8);
  if (a.shape === null) {
    if (format === 'v3') b.i32(-1);
    else b.u32(0);
    return;
  }
  if (format === 'legacy') {
    b.u32(a.shape.length);
    for (const d of a.shape) b.u32(d);
  } else {
    b.i32(a.shape.length);
    for (const d of a.shape) b.i64(d);
  }
  b.i32(1).i32(0).i32(a.typeFlag).raw(a.data);
}

// ---------------------------------------------------------------------------------------------------
// Pickle (protocol 2, as torch.save writes it)

/** Emits pickle opcodes one by one (pickletools' names), memoizing like Python's pickler. */
export class PickleWriter {
  private readonly b = new Bytes();
  private memoSize = 0;
  private readonly memo = new Map<string, number>();

  proto(v = 2): this {
    return this.op(0x80).byte(v);
  }

  op(code: number): this {
    this.b.u8(code);
    return this;
  }

  byte(v: number): this {
    this.b.u8(v);
    return this;
  }

  raw(bytes: Uint8Array | number[]): this {
    this.b.raw(bytes);
    return this;
  }

  /** BINPUT (or LONG_BINPUT) of the next memo index; `key` lets a later equal value be fetched with BINGET. */
  put(key?: string): this {
    const i = this.memoSize++;
    if (key !== undefined) this.memo.set(key, i);
    if (i < 256) return this.op(0x71).byte(i);
    this.op(0x72);
    this.b.u32(i);
    return this;
  }

  /** BINGET (or LONG_BINGET). */
  get(i: number): this {
    if (i < 256) return this.op(0x68).byte(i);
    this.op(0x6a);
    this.b.u32(i);
    return this;
  }

  /** GLOBAL 'module name', memoized: the second use is a BINGET, as in Python. */
  global(module: string, name: string): this {
    const key = `global:${module}.${name}`;
    const seen = this.memo.get(key);
    if (seen !== undefined) return this.get(seen);
    this.op(0x63).raw(Buffer.from(`${module}\n${name}\n`, 'latin1'));
    return this.put(key);
  }

  /** STACK_GLOBAL after two strings (protocol 4 style). */
  stackGlobal(module: string, name: string): this {
    return this.str(module, false).str(name, false).op(0x93);
  }

  /** BINUNICODE (memoized unless `memoize` is false). */
  str(s: string, memoize = true): this {
    const key = `str:${s}`;
    const seen = memoize ? this.memo.get(key) : undefined;
    if (seen !== undefined) return this.get(seen);
    const u = Buffer.from(s, 'utf8');
    this.op(0x58);
    this.b.u32(u.length);
    this.raw(u);
    return memoize ? this.put(key) : this;
  }

  /** The smallest int opcode Python would pick. */
  int(n: number | bigint): this {
    const v = BigInt(n);
    if (v >= 0n && v < 256n) return this.op(0x4b).byte(Number(v));
    if (v >= 0n && v < 65536n) {
      this.op(0x4d);
      this.b.u16(Number(v));
      return this;
    }
    if (v >= -(2n ** 31n) && v < 2n ** 31n) {
      this.op(0x4a);
      this.b.i32(Number(v));
      return this;
    }
    const bytes: number[] = [];
    let x = v;
    for (;;) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
      if ((x === 0n && (bytes[bytes.length - 1]! & 0x80) === 0) || (x === -1n && (bytes[bytes.length - 1]! & 0x80) !== 0)) break;
    }
    return this.op(0x8a).byte(bytes.length).raw(bytes);
  }

  mark(): this {
    return this.op(0x28);
  }

  bytes(): Uint8Array {
    return this.b.bytes();
  }
}

/** A storage in a torch checkpoint. */
export interface TorchStorageFixture {
  key: string;
  /** torch storage class name, e.g. 'FloatStorage'. */
  type: string;
  numel: number;
  data: Uint8Array;
}

/** A tensor in a torch state dict: a view on a storage. */
export interface TorchTensorFixture {
  name: string;
  storage: TorchStorageFixture;
  offset?: number;
  size: number[];
  /** Row-major contiguous when omitted. */
  stride?: number[];
  /** Wrap as nn.Parameter (torch._utils._rebuild_parameter). */
  parameter?: boolean;
}

function contiguousStride(size: number[]): number[] {
  const s = new Array<number>(size.length);
  let acc = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= size[d]!;
  }
  return s;
}

/** Options for torchStateDictPickle. */
export interface TorchPickleOptions {
  /** Nest the state dict in a plain dict under this key, beside an 'epoch' int (a training checkpoint). */
  wrap?: 'state_dict' | 'model';
  /** Add the `_metadata` instance state that nn.Module.state_dict() attaches (written with BUILD). */
  metadata?: boolean;
  /** Extra non-tensor entries in the state dict. */
  extras?: [string, number][];
}

/**
 * The data.pkl torch.save (protocol 2) writes for an OrderedDict state dict, opcode for opcode as
 * pickletools shows it for torch 1.13: GLOBAL collections.OrderedDict, EMPTY_TUPLE, REDUCE, then
 * MARK (key, _rebuild_tensor_v2((persid storage), offset, size, stride, False, OrderedDict()))... SETITEMS,
 * then the `_metadata` state and BUILD.
 */
export function torchStateDictPickle(tensors: TorchTensorFixture[], options: TorchPickleOptions = {}): Uint8Array {
  const p = new PickleWriter().proto(2);
  if (options.wrap) p.op(0x7d).put().mark().str('epoch').int(3).str(options.wrap);
  p.global('collections', 'OrderedDict').op(0x29).op(0x52).put();
  const items = tensors.length + (options.extras?.length ?? 0);
  if (items > 1) p.mark();
  for (const t of tensors) {
    p.str(t.name);
    if (t.parameter) p.global('torch._utils', '_rebuild_parameter').mark();
    p.global('torch._utils', '_rebuild_tensor_v2').mark();
    writeStorageRef(p, t.storage);
    p.int(t.offset ?? 0);
    writeIntTuple(p, t.size);
    writeIntTuple(p, t.stride ?? contiguousStride(t.size));
    p.op(0x89); // requires_grad False
    p.global('collections', 'OrderedDict').op(0x29).op(0x52).put(); // backward_hooks
    p.op(0x74).put().op(0x52).put();
    if (t.parameter) p.op(0x89).global('collections', 'OrderedDict').op(0x29).op(0x52).put().op(0x74).put().op(0x52).put();
  }
  for (const [k, v] of options.extras ?? []) p.str(k).int(v);
  if (items > 1) p.op(0x75);
  else if (items === 1) p.op(0x73);
  if (options.metadata) {
    p.op(0x7d).put().str('_metadata').global('collections', 'OrderedDict').op(0x29).op(0x52).put();
    p.str('').op(0x7d).put().str('version').int(1).op(0x73).op(0x73).op(0x73).op(0x62);
  }
  if (options.wrap) p.op(0x75);
  return p.op(0x2e).bytes();
}

/** ('storage', torch.<Type>, key, 'cpu', numel) then BINPERSID: written again for every view, as pickle does for persistent ids. */
function writeStorageRef(p: PickleWriter, s: TorchStorageFixture): void {
  p.mark().str('storage').global('torch', s.type).str(s.key).str('cpu').int(s.numel).op(0x74).put().op(0x51);
}

function writeIntTuple(p: PickleWriter, v: number[]): void {
  if (v.length === 0) p.op(0x29);
  else if (v.length <= 3) {
    for (const x of v) p.int(x);
    p.op([0x85, 0x86, 0x87][v.length - 1]!).put();
  } else {
    p.mark();
    for (const x of v) p.int(x);
    p.op(0x74).put();
  }
}

/** Options for makeTorchCheckpoint. */
export interface TorchCheckpointOptions {
  /** The archive folder (torch uses the file's base name). */
  prefix?: string;
  /** Storages to leave out of the archive (to test a dangling reference). */
  omit?: string[];
  /** Add `<prefix>/byteorder` with this content, as torch >= 2.1 does. */
  byteorder?: string;
}

/**
 * A torch.save zip: `<prefix>/data.pkl`, `<prefix>/data/<key>` per storage, `<prefix>/version`, all
 * stored, data aligned to 64 bytes with an 'FB' extra field, data descriptors and a ZIP64 end record,
 * as PyTorch's writer (caffe2/serialize/inline_container.cc over miniz) lays them out.
 */
export function makeTorchCheckpoint(pickle: Uint8Array, storages: TorchStorageFixture[], options: TorchCheckpointOptions = {}): Uint8Array {
  const prefix = options.prefix ?? 'archive';
  const files: { name: string; data: Uint8Array }[] = [{ name: `${prefix}/data.pkl`, data: pickle }];
  if (options.byteorder !== undefined) files.push({ name: `${prefix}/byteorder`, data: Buffer.from(options.byteorder) });
  for (const s of storages) if (!options.omit?.includes(s.key)) files.push({ name: `${prefix}/data/${s.key}`, data: s.data });
  files.push({ name: `${prefix}/version`, data: Buffer.from('3\n') });
  const entries: ZipFixtureEntry[] = [];
  let at = 0;
  for (const f of files) {
    const start = at + 30 + Buffer.byteLength(f.name) + 4;
    const pad = (64 - (start % 64)) % 64;
    const extra = new Bytes().raw(Buffer.from('FB')).u16(pad).raw(new Uint8Array(pad).fill(0x5a)).bytes();
    entries.push({ name: f.name, data: f.data, localExtra: extra });
    at = start + pad + f.data.length + 16; // + data descriptor
  }
  return makeZip(entries, { zip64End: true, dataDescriptors: true });
}

// ---------------------------------------------------------------------------------------------------
// safetensors, raw

/** A safetensors file from a header given as text or object, padded like the reference writer. */
export function rawSafetensors(header: string | object, data: Uint8Array, options: { declaredLength?: number | bigint } = {}): Uint8Array {
  let json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  return new Bytes()
    .u64(options.declaredLength ?? json.length)
    .raw(json)
    .raw(data)
    .bytes();
}
