/**
 * PyTorch `.pth` checkpoints in the zip format (torch >= 1.6), read without executing anything.
 *
 * The archive holds `<prefix>/data.pkl`, a pickle of the state dict, and one entry per storage,
 * `<prefix>/data/<key>`, with the raw little-endian elements. The pickle is run by a restricted stack
 * machine that knows only the opcodes torch.save emits for a state dict. Globals resolve against an
 * allow-list to inert descriptors (OrderedDict, the tensor and parameter rebuild functions, typed storage
 * classes); any other global is refused by name before anything else happens, REDUCE only applies
 * those descriptors, and persistent ids only name storages in the archive. Stack, memo and the number of
 * values created are bounded, and charged to the file's budget, so a hostile pickle can neither execute
 * code nor exhaust memory.
 *
 * Tensors come out as descriptors first: no storage is touched until a tensor is read. Each storage
 * is then inflated (if deflated) and decoded once, however many tensors view it; a contiguous view is
 * a subarray of its decoded storage, a strided or broadcast one a gathered copy, and a tensor the
 * pickle names under several keys (memo references) is read once. Every allocation is charged to
 * the budget (budget.ts) before it is made.
 */
import { openZip, type ZipArchive, type ZipEntry } from './zip.js';
import {
  DTYPE_SIZE,
  FormatError,
  decodeElements,
  decodedSize,
  materializeAll,
  quoteName,
  readFileBytes,
  Warnings,
  type LoadedTensor,
  type SourceDType,
  type TensorDescriptor,
  type TensorSource,
  type WarnedTensorMap,
} from './types.js';
import { fileBudget, type ByteBudget } from './budget.js';

/** Options of the torch readers. */
export interface TorchReadOptions {
  /**
   * What reading may allocate (budget.ts). Default: 8 x the file's size plus 16 MiB. A `.pth` can
   * legitimately need more than its size (views sharing a storage, broadcast views, deflated entries),
   * so a caller that knows the architecture passes a budget from it (convert/convert.ts modelBudget).
   */
  budget?: ByteBudget;
}

/** Reads a torch.save checkpoint: a state dict, or one under 'state_dict' / 'model'. */
export async function readTorchCheckpoint(path: string, options: TorchReadOptions = {}): Promise<WarnedTensorMap> {
  return parseTorchCheckpoint(await readFileBytes(path, options.budget), path, options);
}

/** Largest data.pkl accepted: a state dict pickle is kilobytes to a few megabytes. */
const MAX_PICKLE_BYTES = 16 * 2 ** 20;
/** Bounds on the unpickler's state: far above any state dict, far below exhausting memory. */
const MAX_VALUES = 5_000_000;
const MAX_MEMO = 1_000_000;
/** Nominal bytes charged per value the unpickler creates and per memo entry (JS objects and slots). */
const VALUE_COST = 64;
const MAX_MARK_DEPTH = 10_000;
const MAX_NDIM = 64;
/** A stride-0 view may address fewer elements than it has; expanding beyond this many is refused. */
const MAX_BROADCAST_ELEMENTS = 2 ** 24;

/** Parses torch.save bytes held in memory; `label` names them in errors. */
export function parseTorchCheckpoint(bytes: Uint8Array, label: string, options: TorchReadOptions = {}): WarnedTensorMap {
  return materializeAll(openTorchCheckpoint(bytes, label, options.budget ?? fileBudget(label, bytes.length, 8)));
}

/**
 * Runs the checkpoint's pickle and describes its state dict's tensors without reading a storage;
 * each descriptor's `read()` materializes one tensor, charged to `budget`.
 */
export function openTorchCheckpoint(bytes: Uint8Array, label: string, budget: ByteBudget): TensorSource {
  if (bytes[0] === 0x80) {
    throw new FormatError(label, 'legacy (pre-1.6, non-zip) torch checkpoint format is not supported; re-save it with torch >= 1.6');
  }
  const zip = openZip(bytes, label, { budget });
  const prefix = findPrefix(zip);
  checkByteOrder(zip, prefix);
  const pklName = `${prefix}/data.pkl`;
  const pklEntry = zip.entries.find((e) => e.name === pklName)!;
  if (pklEntry.size > MAX_PICKLE_BYTES) {
    throw new FormatError(label, `${pklName} is ${pklEntry.size} bytes, more than the ${MAX_PICKLE_BYTES}-byte limit for a state dict pickle`);
  }
  const storages = new StorageResolver(zip, prefix, budget);
  const root = new Unpickler(zip.read(pklName), `${label}:${pklName}`, storages, budget).load();
  return collectTensors(root, label, storages, budget);
}

/** The archive's folder: PyTorch puts every record under one top-level directory. */
function findPrefix(zip: ZipArchive): string {
  const pkls = zip.entries.map((e) => /^([^/]+)\/data\.pkl$/.exec(e.name)?.[1]).filter((p): p is string => p !== undefined);
  if (pkls.length !== 1) {
    const what = pkls.length === 0 ? 'no <prefix>/data.pkl entry' : `${pkls.length} data.pkl entries`;
    throw new FormatError(zip.label, `not a torch.save checkpoint: ${what}`);
  }
  return pkls[0]!;
}

function checkByteOrder(zip: ZipArchive, prefix: string): void {
  const name = `${prefix}/byteorder`;
  const entry = zip.entries.find((e) => e.name === name);
  if (!entry) return; // written only by newer torch; older files are little-endian
  if (entry.size > 16) throw new FormatError(zip.label, `${name} is ${entry.size} bytes; it should hold 'little' or 'big'`);
  const order = new TextDecoder().decode(zip.read(name)).trim();
  if (order !== 'little') throw new FormatError(zip.label, `storages are ${quoteName(order)}-endian; only little-endian checkpoints are supported`);
}

// ---------------------------------------------------------------------------------------------------
// Values the unpickler builds

type DictKey = string | number | bigint | boolean | null;

type PValue = DictKey | Uint8Array | PValue[] | PTuple | PDict | PGlobal | PStorage | PTensor;

class PTuple {
  constructor(readonly items: PValue[]) {}
}

class PDict {
  readonly map = new Map<DictKey, PValue>();
}

type GlobalKind = 'OrderedDict' | 'rebuild_tensor_v2' | 'rebuild_parameter' | 'storage';

/** An allow-listed global: a description of what it is, never a function to call. */
class PGlobal {
  constructor(
    readonly qualified: string,
    readonly kind: GlobalKind,
    readonly dtype?: SourceDType,
  ) {}
}

class PStorage {
  constructor(
    readonly key: string,
    readonly dtype: SourceDType,
    readonly numel: number,
  ) {}
}

class PTensor {
  constructor(
    readonly storage: PStorage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

const STORAGE_TYPES: Readonly<Record<string, SourceDType>> = {
  FloatStorage: 'float32',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  DoubleStorage: 'float64',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

/** The allow-list. Everything else, torch.storage._load_from_bytes included, is refused. */
function resolveGlobal(module: string, name: string): PGlobal | undefined {
  const q = `${module}.${name}`;
  if (q === 'collections.OrderedDict') return new PGlobal(q, 'OrderedDict');
  if (q === 'torch._utils._rebuild_tensor_v2') return new PGlobal(q, 'rebuild_tensor_v2');
  if (q === 'torch._utils._rebuild_parameter') return new PGlobal(q, 'rebuild_parameter');
  if (module === 'torch' && Object.hasOwn(STORAGE_TYPES, name)) return new PGlobal(q, 'storage', STORAGE_TYPES[name]);
  return undefined;
}

function describe(v: PValue): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PTuple) return 'tuple';
  if (v instanceof PDict) return 'dict';
  if (v instanceof PGlobal) return `'${v.qualified}'`;
  if (v instanceof PStorage) return 'storage';
  if (v instanceof PTensor) return 'tensor';
  return typeof v === 'bigint' ? 'int' : typeof v;
}

/** Looks storages up in the archive and decodes each once, however many tensors view it. */
class StorageResolver {
  private readonly decoded = new Map<string, LoadedTensor['data']>();
  private readonly declared = new Map<string, PStorage>();
  private readonly byName: Map<string, ZipEntry>;

  constructor(
    private readonly zip: ZipArchive,
    private readonly prefix: string,
    private readonly budget: ByteBudget,
  ) {
    this.byName = new Map(zip.entries.map((e) => [e.name, e]));
  }

  entryName(key: string): string {
    return `${this.prefix}/data/${key}`;
  }

  /** Checks the storage exists and is big enough, when the pickle first names it. */
  check(s: PStorage, fail: (p: string) => FormatError): void {
    const first = this.declared.get(s.key);
    if (first && (first.dtype !== s.dtype || first.numel !== s.numel)) {
      throw fail(`storage ${quoteName(s.key)} is named both as ${first.numel} ${first.dtype} and as ${s.numel} ${s.dtype} elements`);
    }
    this.declared.set(s.key, s);
    const name = this.entryName(s.key);
    const entry = this.byName.get(name);
    if (!entry) throw fail(`storage ${quoteName(s.key)} (${name}) is missing from the archive`);
    const need = s.numel * DTYPE_SIZE[s.dtype];
    if (entry.size < need) throw fail(`storage ${quoteName(s.key)} declares ${s.numel} ${s.dtype} elements (${need} bytes) but ${name} holds ${entry.size}`);
  }

  /** The decoded storage: inflated (charged, then released) and decoded (charged) the first time. */
  data(s: PStorage): LoadedTensor['data'] {
    let d = this.decoded.get(s.key);
    if (!d) {
      const name = this.entryName(s.key);
      const entry = this.byName.get(name)!;
      const raw = this.zip.read(name);
      this.budget.charge(decodedSize(s.dtype, s.numel), `decoding storage ${quoteName(s.key)} (${name})`);
      d = decodeElements(raw.subarray(0, s.numel * DTYPE_SIZE[s.dtype]), s.dtype);
      if (entry.method !== 0) this.budget.release(entry.size);
      this.decoded.set(s.key, d);
    }
    return d;
  }
}

// ---------------------------------------------------------------------------------------------------
// The restricted unpickler

const OP = {
  PROTO: 0x80,
  FRAME: 0x95,
  STOP: 0x2e,
  MARK: 0x28,
  EMPTY_DICT: 0x7d,
  EMPTY_LIST: 0x5d,
  EMPTY_TUPLE: 0x29,
  TUPLE: 0x74,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  DICT: 0x64,
  SETITEM: 0x73,
  SETITEMS: 0x75,
  APPEND: 0x61,
  APPENDS: 0x65,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  MEMOIZE: 0x94,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  LONG1: 0x8a,
  BINFLOAT: 0x47,
  NONE: 0x4e,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE: 0x58,
  BINUNICODE8: 0x8d,
  SHORT_BINBYTES: 0x43,
  BINBYTES: 0x42,
  GLOBAL: 0x63,
  STACK_GLOBAL: 0x93,
  REDUCE: 0x52,
  BUILD: 0x62,
  NEWOBJ: 0x81,
  BINPERSID: 0x51,
} as const;

class Unpickler {
  private pos = 0;
  private opStart = 0;
  private stack: PValue[] = [];
  private readonly metastack: PValue[][] = [];
  private readonly memo = new Map<number, PValue>();
  private created = 0;
  private readonly view: DataView;
  private readonly utf8 = new TextDecoder('utf-8');

  constructor(
    private readonly bytes: Uint8Array,
    private readonly label: string,
    private readonly storages: StorageResolver,
    private readonly budget: ByteBudget,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private fail(problem: string): FormatError {
    return new FormatError(this.label, `${problem} (pickle offset ${this.opStart})`);
  }

  /** Runs the pickle to its STOP and returns the value it built. */
  load(): PValue {
    while (this.pos < this.bytes.length) {
      this.opStart = this.pos;
      const op = this.bytes[this.pos++]!;
      if (op === OP.STOP) return this.pop();
      this.step(op);
    }
    throw new FormatError(this.label, `truncated: the pickle ends at byte ${this.bytes.length} without a STOP opcode`);
  }

  private step(op: number): void {
    switch (op) {
      case OP.PROTO: {
        const v = this.u8();
        if (v > 5) throw this.fail(`pickle protocol ${v} is not supported`);
        return;
      }
      case OP.FRAME:
        this.take(8); // a frame length is only a read-ahead hint
        return;
      case OP.MARK:
        if (this.metastack.length >= MAX_MARK_DEPTH) throw this.fail(`more than ${MAX_MARK_DEPTH} nested MARKs`);
        this.metastack.push(this.stack);
        this.stack = [];
        return;
      case OP.EMPTY_DICT:
        return this.push(new PDict());
      case OP.EMPTY_LIST:
        return this.push([]);
      case OP.EMPTY_TUPLE:
        return this.push(new PTuple([]));
      case OP.TUPLE:
        return this.push(new PTuple(this.popMark()));
      case OP.TUPLE1:
        return this.push(new PTuple(this.popN(1)));
      case OP.TUPLE2:
        return this.push(new PTuple(this.popN(2)));
      case OP.TUPLE3:
        return this.push(new PTuple(this.popN(3)));
      case OP.DICT: {
        const d = new PDict();
        this.setItems(d, this.popMark());
        return this.push(d);
      }
      case OP.SETITEM: {
        const kv = this.popN(2);
        return this.setItems(this.dictOnTop(), kv);
      }
      case OP.SETITEMS: {
        const items = this.popMark();
        return this.setItems(this.dictOnTop(), items);
      }
      case OP.APPEND: {
        const v = this.pop();
        this.listOnTop().push(v);
        return;
      }
      case OP.APPENDS: {
        const items = this.popMark();
        const list = this.listOnTop();
        for (const v of items) list.push(v);
        return;
      }
      case OP.BINPUT:
        return this.put(this.u8());
      case OP.LONG_BINPUT:
        return this.put(this.u32());
      case OP.MEMOIZE:
        return this.put(this.memo.size);
      case OP.BINGET:
        return this.get(this.u8());
      case OP.LONG_BINGET:
        return this.get(this.u32());
      case OP.BININT:
        return this.push(this.i32());
      case OP.BININT1:
        return this.push(this.u8());
      case OP.BININT2:
        return this.push(this.u16());
      case OP.LONG1:
        return this.push(this.long(this.u8()));
      case OP.BINFLOAT: {
        const b = this.take(8);
        return this.push(new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false));
      }
      case OP.NONE:
        return this.push(null);
      case OP.NEWTRUE:
        return this.push(true);
      case OP.NEWFALSE:
        return this.push(false);
      case OP.SHORT_BINUNICODE:
        return this.push(this.text(this.take(this.u8())));
      case OP.BINUNICODE:
        return this.push(this.text(this.take(this.u32())));
      case OP.BINUNICODE8:
        return this.push(this.text(this.take(this.u64())));
      case OP.SHORT_BINBYTES:
        return this.push(this.take(this.u8()));
      case OP.BINBYTES:
        return this.push(this.take(this.u32()));
      case OP.GLOBAL: {
        const module = this.line('GLOBAL module');
        const name = this.line('GLOBAL name');
        return this.push(this.global(module, name));
      }
      case OP.STACK_GLOBAL: {
        const [module, name] = this.popN(2);
        if (typeof module !== 'string' || typeof name !== 'string') throw this.fail('STACK_GLOBAL needs two strings');
        return this.push(this.global(module, name));
      }
      case OP.REDUCE: {
        const [fn, args] = this.popN(2);
        return this.push(this.reduce(fn!, args!));
      }
      case OP.NEWOBJ: {
        const [cls, args] = this.popN(2);
        if (!(cls instanceof PGlobal) || cls.kind !== 'OrderedDict' || !(args instanceof PTuple) || args.items.length !== 0) {
          throw this.fail(`NEWOBJ of ${describe(cls!)} is not supported`);
        }
        return this.push(new PDict());
      }
      case OP.BUILD: {
        const state = this.pop();
        const obj = this.top();
        // A state dict's OrderedDict carries `_metadata` (module versions) as instance state: not needed.
        if (obj instanceof PDict && (state instanceof PDict || state === null)) return;
        throw this.fail(`BUILD of ${describe(obj)} with ${describe(state)} state is not supported`);
      }
      case OP.BINPERSID:
        return this.push(this.persistentLoad(this.pop()));
      default:
        throw this.fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}: only the opcodes of a state dict are read`);
    }
  }

  // --- stack

  private push(v: PValue): void {
    if (++this.created > MAX_VALUES) throw this.fail(`the pickle builds more than ${MAX_VALUES} values; refusing`);
    this.budget.charge(VALUE_COST, 'the values the pickle builds');
    this.stack.push(v);
  }

  /** A string operand; a JS string takes up to two bytes per UTF-8 byte. */
  private text(raw: Uint8Array): string {
    this.budget.charge(2 * raw.length, 'the strings the pickle builds');
    return this.utf8.decode(raw);
  }

  private pop(): PValue {
    if (this.stack.length === 0) throw this.fail('stack underflow (corrupt pickle)');
    return this.stack.pop()!;
  }

  private top(): PValue {
    if (this.stack.length === 0) throw this.fail('stack underflow (corrupt pickle)');
    return this.stack[this.stack.length - 1]!;
  }

  private popN(n: number): PValue[] {
    if (this.stack.length < n) throw this.fail('stack underflow (corrupt pickle)');
    return this.stack.splice(this.stack.length - n, n);
  }

  private popMark(): PValue[] {
    const items = this.stack;
    const prev = this.metastack.pop();
    if (!prev) throw this.fail('no MARK to pop to (corrupt pickle)');
    this.stack = prev;
    return items;
  }

  private dictOnTop(): PDict {
    const d = this.top();
    if (!(d instanceof PDict)) throw this.fail(`SETITEM on a ${describe(d)}, not a dict`);
    return d;
  }

  private listOnTop(): PValue[] {
    const l = this.top();
    if (!Array.isArray(l)) throw this.fail(`APPEND on a ${describe(l)}, not a list`);
    return l;
  }

  private setItems(d: PDict, items: PValue[]): void {
    if (items.length % 2 !== 0) throw this.fail('odd number of items for a dict');
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i]!;
      if (k !== null && typeof k === 'object') throw this.fail(`dict key of type ${describe(k)} is not supported`);
      // Python keeps the last value of a repeated key; a file that repeats one is refused instead.
      if (d.map.has(k)) throw this.fail(`dict key ${typeof k === 'string' ? quoteName(k) : String(k)} appears twice`);
      d.map.set(k, items[i + 1]!);
    }
  }

  private put(index: number): void {
    if (!this.memo.has(index)) {
      if (this.memo.size >= MAX_MEMO) throw this.fail(`memo holds more than ${MAX_MEMO} entries`);
      this.budget.charge(VALUE_COST, 'the pickle memo');
    }
    this.memo.set(index, this.top());
  }

  private get(index: number): void {
    if (!this.memo.has(index)) throw this.fail(`memo entry ${index} is read before it is written`);
    this.push(this.memo.get(index)!);
  }

  // --- semantics

  private global(module: string, name: string): PGlobal {
    const g = resolveGlobal(module, name);
    if (!g) {
      throw this.fail(`refusing to load '${module}.${name}': only tensors, storages and OrderedDicts of a state dict are allowed`);
    }
    return g;
  }

  private reduce(fn: PValue, args: PValue): PValue {
    if (!(fn instanceof PGlobal)) throw this.fail(`REDUCE of ${describe(fn)} is not supported`);
    if (!(args instanceof PTuple)) throw this.fail(`REDUCE of '${fn.qualified}' with ${describe(args)} arguments`);
    const a = args.items;
    switch (fn.kind) {
      case 'OrderedDict':
        if (a.length !== 0) throw this.fail("'collections.OrderedDict' is only supported with no arguments");
        return new PDict();
      case 'rebuild_tensor_v2':
        return this.rebuildTensor(a);
      case 'rebuild_parameter':
        if (!(a[0] instanceof PTensor)) throw this.fail(`'${fn.qualified}' needs a tensor, got ${describe(a[0] ?? null)}`);
        return a[0];
      case 'storage':
        throw this.fail(`'${fn.qualified}' cannot be called; storages come only from persistent ids`);
    }
  }

  /** ('storage', storage_type, key, location, numel): a reference to `<prefix>/data/<key>`. */
  private persistentLoad(pid: PValue): PStorage {
    const t = pid instanceof PTuple ? pid.items : undefined;
    if (!t || t.length !== 5 || t[0] !== 'storage') throw this.fail(`persistent id ${describe(pid)} is not a ('storage', ...) tuple`);
    const [, type, key, , numel] = t;
    if (!(type instanceof PGlobal) || type.kind !== 'storage') throw this.fail(`persistent id names storage type ${describe(type!)}`);
    if (typeof key !== 'string') throw this.fail('persistent id has a non-string storage key');
    if (!isCount(numel)) throw this.fail(`storage ${quoteName(key)} has element count ${String(numel)}`);
    const s = new PStorage(key, type.dtype!, numel);
    this.storages.check(s, (p) => this.fail(p));
    return s;
  }

  /** _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]). */
  private rebuildTensor(a: PValue[]): PTensor {
    const [storage, offset, size, stride] = a;
    if (a.length < 4 || !(storage instanceof PStorage)) throw this.fail('_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)');
    const shape = intTuple(size);
    const strides = intTuple(stride);
    if (!isCount(offset) || !shape || !strides || shape.length !== strides.length || shape.length > MAX_NDIM) {
      throw this.fail(`tensor on storage ${quoteName(storage.key)} has invalid offset, size or stride`);
    }
    const t = new PTensor(storage, offset, shape, strides);
    const problem = extentProblem(t);
    if (problem) throw this.fail(`tensor on storage ${quoteName(storage.key)} ${problem}`);
    return t;
  }

  // --- reading operands

  private truncated(n: number): FormatError {
    return this.fail(`truncated: opcode needs ${n} more bytes but the pickle ends at byte ${this.bytes.length}`);
  }

  private take(n: number): Uint8Array {
    if (n > this.bytes.length - this.pos) throw this.truncated(n);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  private u8(): number {
    return this.take(1)[0]!;
  }

  private u16(): number {
    this.take(2);
    return this.view.getUint16(this.pos - 2, true);
  }

  private u32(): number {
    this.take(4);
    return this.view.getUint32(this.pos - 4, true);
  }

  private i32(): number {
    this.take(4);
    return this.view.getInt32(this.pos - 4, true);
  }

  private u64(): number {
    this.take(8);
    const v = this.view.getBigUint64(this.pos - 8, true);
    if (v > BigInt(this.bytes.length - this.pos)) throw this.fail(`truncated: a length of ${v} runs past the end of the pickle`);
    return Number(v);
  }

  /** LONG1 operand: n bytes of little-endian two's complement. */
  private long(n: number): number | bigint {
    const b = this.take(n);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /** A newline-terminated ASCII operand of GLOBAL; names are short, so the search is bounded. */
  private line(what: string): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0 || end - this.pos > 1024) throw this.fail(`${what} is not a short newline-terminated line`);
    const s = new TextDecoder('latin1').decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
}

function isCount(v: PValue | undefined): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function intTuple(v: PValue | undefined): number[] | undefined {
  if (!(v instanceof PTuple) || !v.items.every(isCount)) return undefined;
  return v.items as number[];
}

/** Why the tensor cannot be read from its storage, or undefined when every element it addresses is inside. */
function extentProblem(t: PTensor): string | undefined {
  const describeView = `(offset ${t.offset}, size [${t.shape.join(', ')}], stride [${t.stride.join(', ')}])`;
  if (t.shape.includes(0)) return t.offset <= t.storage.numel ? undefined : `starts past the end of its storage ${describeView}`;
  let last = t.offset;
  let numel = 1;
  for (let d = 0; d < t.shape.length; d++) {
    last += (t.shape[d]! - 1) * t.stride[d]!;
    numel *= t.shape[d]!;
  }
  if (last >= t.storage.numel) return `runs past its storage of ${t.storage.numel} elements ${describeView}`;
  if (numel > t.storage.numel && numel > MAX_BROADCAST_ELEMENTS) {
    return `is a broadcast view of ${numel} elements over ${t.storage.numel}; refusing to expand it ${describeView}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------
// From the unpickled value to tensors

function collectTensors(root: PValue, label: string, storages: StorageResolver, budget: ByteBudget): TensorSource {
  const dict = chooseStateDict(root, label);
  const warnings = new Warnings();
  const tensors = new Map<string, TensorDescriptor>();
  // A tensor the pickle names under several keys (one object, memo references) is read once.
  const done = new Map<PTensor, TypedData>();
  for (const [key, value] of dict.map) {
    if (typeof key !== 'string') {
      warnings.add(`skipped a ${describe(key)} key: state dict keys are strings`);
    } else if (!(value instanceof PTensor)) {
      warnings.add(`skipped ${quoteName(key)}: a ${describe(value)}, not a tensor`);
    } else {
      const t = value;
      tensors.set(key, {
        name: key,
        dtype: t.storage.dtype,
        shape: t.shape,
        byteLength: numelOf(t.shape) * DTYPE_SIZE[t.storage.dtype],
        read: () => {
          let d = done.get(t);
          if (!d) {
            d = materialize(t, storages, budget);
            done.set(t, d);
          }
          return d;
        },
      });
    }
  }
  return { label, tensors, warnings: warnings.list(), budget };
}

function chooseStateDict(root: PValue, label: string): PDict {
  if (!(root instanceof PDict)) throw new FormatError(label, `data.pkl holds a ${describe(root)}, not a state dict`);
  for (const key of ['state_dict', 'model']) {
    const inner = root.map.get(key);
    if (inner instanceof PDict) return inner;
  }
  return root;
}

type TypedData = LoadedTensor['data'];
type AnyTyped = { length: number; [i: number]: number | bigint; subarray(a: number, b: number): TypedData };

function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The tensor's elements, row-major: a subarray of its decoded storage when the view is contiguous
 * (shared with every other view of it), else a gathered copy, charged to the budget first.
 */
function materialize(t: PTensor, storages: StorageResolver, budget: ByteBudget): TypedData {
  const src = storages.data(t.storage) as unknown as AnyTyped;
  const numel = numelOf(t.shape);
  if (isContiguous(t.shape, t.stride)) return src.subarray(t.offset, t.offset + numel);
  budget.charge(
    decodedSize(t.storage.dtype, numel),
    `gathering a ${numel}-element view (size [${t.shape.join(', ')}], stride [${t.stride.join(', ')}]) of storage ${quoteName(t.storage.key)}`,
  );
  const ctor = (src as unknown as { constructor: new (n: number) => AnyTyped }).constructor;
  const dst = new ctor(numel);
  const ndim = t.shape.length;
  const index = new Array<number>(ndim).fill(0);
  let at = t.offset;
  for (let i = 0; i < numel; i++) {
    dst[i] = src[at]!;
    // Odometer over the index, keeping the storage position in step.
    for (let d = ndim - 1; d >= 0; d--) {
      if (++index[d]! < t.shape[d]!) {
        at += t.stride[d]!;
        break;
      }
      at -= (t.shape[d]! - 1) * t.stride[d]!;
      index[d] = 0;
    }
  }
  return dst as unknown as TypedData;
}

/** Row-major contiguous; dimensions of size 1 may carry any stride. */
function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}
