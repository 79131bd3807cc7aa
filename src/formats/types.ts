/**
 * What every weight-format reader returns, the one error they throw, and the small pieces they share:
 * exact half-precision decoding, a bounds-checked byte cursor and a guarded file read.
 *
 * The readers treat every file as hostile: each size or offset is checked against the bytes that are
 * really there before anything is allocated or sliced, and what a file makes them allocate in all is
 * charged to one budget per file (budget.ts), so a bad file ends in a FormatError that names the
 * file, never in a RangeError, a hang or an allocation sized by the file. Readers describe a file's
 * tensors first (TensorSource) and decode each on demand, so a loader can check names and shapes
 * before any data is touched.
 */
import { promises as fsp } from 'node:fs';
import { endianness } from 'node:os';
import { UserError } from '../errors.js';
import type { ByteBudget } from './budget.js';

/** Element types the readers understand, named as in PyTorch and NumPy. */
export type SourceDType =
  | 'float32'
  | 'float16'
  | 'bfloat16'
  | 'float64'
  | 'int64'
  | 'int32'
  | 'int16'
  | 'int8'
  | 'uint8'
  | 'bool';

/**
 * One tensor as read from a file. `dtype` is the type stored in the file; `data` is row-major and
 * contiguous. float16 and bfloat16 arrive widened to Float32Array (exactly: every half value is a
 * float32 value), float64 stays Float64Array, integers keep their width and bool is a Uint8Array of 0/1.
 * Tensors that view one storage of a `.pth` share its memory: treat `data` as read-only.
 */
export interface LoadedTensor {
  dtype: SourceDType;
  shape: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array | Int16Array | Int8Array | Uint8Array;
}

/** Tensors by name, in file order. */
export type TensorMap = Map<string, LoadedTensor>;

/** A TensorMap plus what the reader noticed without refusing the file (unnamed arrays, skipped values). */
export type WarnedTensorMap = TensorMap & { warnings: string[] };

/** A fresh, empty WarnedTensorMap. */
export function newWarnedTensorMap(): WarnedTensorMap {
  return Object.assign(new Map<string, LoadedTensor>(), { warnings: [] as string[] });
}

/**
 * A tensor a file declares, before any of its data is read: what a loader checks against the
 * architecture first. `read()` decodes the elements (row-major, contiguous, typed as in LoadedTensor),
 * charging what it allocates to the source's budget; the result may share memory with other tensors
 * viewing the same storage, so treat it as read-only.
 */
export interface TensorDescriptor {
  readonly name: string;
  readonly dtype: SourceDType;
  readonly shape: readonly number[];
  /** Bytes of the elements in the file's dtype (element count x DTYPE_SIZE). */
  readonly byteLength: number;
  read(): LoadedTensor['data'];
}

/** The tensors of one file as descriptors, in file order, with the budget their reads are charged to. */
export interface TensorSource {
  readonly label: string;
  readonly tensors: ReadonlyMap<string, TensorDescriptor>;
  /** What the reader noticed without refusing the file. */
  readonly warnings: readonly string[];
  readonly budget: ByteBudget;
}

/** Reads every tensor of `source` (each read charged to its budget). */
export function materializeAll(source: TensorSource): WarnedTensorMap {
  const out = newWarnedTensorMap();
  out.warnings.push(...source.warnings);
  for (const [name, d] of source.tensors) out.set(name, { dtype: d.dtype, shape: [...d.shape], data: d.read() });
  return out;
}

/** At most this many warnings are listed one by one; the rest are counted in a last line. */
const MAX_LISTED_WARNINGS = 20;

/** A warning list that stays short whatever a file repeats. */
export class Warnings {
  readonly items: string[] = [];
  private more = 0;

  add(text: string): void {
    if (this.items.length < MAX_LISTED_WARNINGS) this.items.push(text);
    else this.more++;
  }

  /** The warnings, with a count of those not listed. */
  list(): string[] {
    return this.more ? [...this.items, `... and ${this.more} more like these`] : [...this.items];
  }
}

/**
 * A weights file that is malformed, truncated, hostile or of an unsupported variant. The message always
 * starts with the file and says what is wrong, e.g.
 * `model.safetensors: tensor 'fc.weight' data_offsets [0, 4096000] run past the end of the data (4000000 bytes)`.
 */
export class FormatError extends UserError {
  /** The file (or label) the problem was found in. */
  readonly file: string;

  constructor(file: string, problem: string, options: { cause?: unknown } = {}) {
    super(`${file}: ${problem}`, options);
    this.name = 'FormatError';
    this.file = file;
  }
}

/** Bytes per element of each source dtype as stored. */
export const DTYPE_SIZE: Readonly<Record<SourceDType, number>> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

/** Bytes `count` elements of `dtype` take once decoded (float16 and bfloat16 widen to float32). */
export function decodedSize(dtype: SourceDType, count: number): number {
  return count * (dtype === 'float16' || dtype === 'bfloat16' ? 4 : DTYPE_SIZE[dtype]);
}

/**
 * The tensor's values as float32. float32 (and widened half) data is returned as is, not copied;
 * float64 and integers are converted (int64 beyond 2^24 loses precision, as any float32 would).
 * A bool tensor has no float meaning for weights and is refused.
 */
export function toFloat32(t: LoadedTensor, name = 'tensor'): Float32Array {
  if (t.dtype === 'bool') throw new UserError(`${name} is a bool tensor; it cannot be used as float32 weights`);
  const d = t.data;
  if (d instanceof Float32Array) return d;
  if (d instanceof BigInt64Array) {
    const out = new Float32Array(d.length);
    for (let i = 0; i < d.length; i++) out[i] = Number(d[i]!);
    return out;
  }
  return Float32Array.from(d);
}

// ---------------------------------------------------------------------------------------------------
// Half precision


export { bfloat16ToFloat32, float16BitsToFloat32Bits, float16ToFloat32, float32ToFloat16Bits } from '../util/float16.js';
import { bfloat16ToFloat32, float16ToFloat32 } from '../util/float16.js';

// ---------------------------------------------------------------------------------------------------
// Decoding element data

const hostIsLittleEndian = endianness() === 'LE';

/**
 * Decodes little-endian elements of `dtype` from exactly `bytes` (the caller has checked the length).
 * The result never aliases the input, so a file buffer can be dropped afterwards and the typed
 * arrays are always aligned. It allocates decodedSize(dtype, count) bytes and nothing more that
 * outlives the call.
 */
export function decodeElements(bytes: Uint8Array, dtype: SourceDType): LoadedTensor['data'] {
  const size = DTYPE_SIZE[dtype];
  if ((dtype === 'float16' || dtype === 'bfloat16') && hostIsLittleEndian && bytes.byteOffset % 2 === 0) {
    // Widen straight from the file's bytes: no intermediate copy beside the float32 result.
    const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
    return dtype === 'float16' ? float16ToFloat32(bits) : bfloat16ToFloat32(bits);
  }
  const copy = new Uint8Array(bytes); // aligned private copy
  if (!hostIsLittleEndian && size > 1) swapBytes(copy, size);
  const buf = copy.buffer;
  const n = copy.length / size;
  switch (dtype) {
    case 'float32':
      return new Float32Array(buf, 0, n);
    case 'float16':
      return float16ToFloat32(new Uint16Array(buf, 0, n));
    case 'bfloat16':
      return bfloat16ToFloat32(new Uint16Array(buf, 0, n));
    case 'float64':
      return new Float64Array(buf, 0, n);
    case 'int64':
      return new BigInt64Array(buf, 0, n);
    case 'int32':
      return new Int32Array(buf, 0, n);
    case 'int16':
      return new Int16Array(buf, 0, n);
    case 'int8':
      return new Int8Array(buf, 0, n);
    case 'uint8':
      return copy;
    case 'bool':
      // Any nonzero byte is true; normalizing keeps the documented 0/1 whatever the file holds.
      for (let i = 0; i < copy.length; i++) copy[i] = copy[i] ? 1 : 0;
      return copy;
  }
}

function swapBytes(b: Uint8Array, size: number): void {
  for (let i = 0; i + size <= b.length; i += size) b.subarray(i, i + size).reverse();
}

// ---------------------------------------------------------------------------------------------------
// Reading

/** A cursor over untrusted bytes: every read is checked against what is left and names what it read. */
export class ByteReader {
  pos: number;
  private readonly view: DataView;

  constructor(
    readonly bytes: Uint8Array,
    readonly label: string,
    start = 0,
  ) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Bytes left after the cursor. */
  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  /** A FormatError for this file. */
  fail(problem: string): FormatError {
    return new FormatError(this.label, problem);
  }

  /** Throws unless `n` more bytes are there; `what` says what was being read. */
  need(n: number, what: string): void {
    if (!(n <= this.remaining)) {
      throw this.fail(`truncated: ${what} needs ${n} bytes at offset ${this.pos} but only ${this.remaining} remain`);
    }
  }

  /** Little-endian reads, u8 to i32; `what` names the field in the error if the bytes are not there. */
  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.pos++);
  }

  u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  i32(what: string): number {
    this.need(4, what);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** A u64 that must fit a JS number exactly; anything larger cannot be a real size or count here. */
  u64(what: string): number {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`${what} is ${v}, far beyond any real size`);
    return Number(v);
  }

  /** An i64 that must fit a JS number exactly. */
  i64(what: string): number {
    this.need(8, what);
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw this.fail(`${what} is ${v}, out of range`);
    }
    return Number(v);
  }

  /** The next `n` bytes as a view (no copy). */
  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

/** Largest file the readers load into memory (Node's Buffer limit is near 4 GiB; weights are far smaller). */
export const MAX_FILE_BYTES = 2 ** 31 - 1;

/**
 * Reads a whole file after checking it is a regular file of a loadable size, and no larger than
 * `budget` when one is given (see budget.ts).
 */
export async function readFileBytes(path: string, budget?: ByteBudget): Promise<Uint8Array> {
  let size: number;
  try {
    const st = await fsp.stat(path);
    if (!st.isFile()) throw new UserError(`${path}: not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (size > MAX_FILE_BYTES) throw new FormatError(path, `file is ${size} bytes, more than the ${MAX_FILE_BYTES}-byte limit for a weights file`);
  budget?.checkFile(size);
  try {
    return await fsp.readFile(path);
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Formats a name from a file for an error message: quoted, cut short, control characters escaped. */
export function quoteName(name: string, max = 120): string {
  const s = JSON.stringify(name.length > max ? `${name.slice(0, max)}...` : name);
  return `'${s.slice(1, -1)}'`;
}

/** Bytes a tensor of `shape` needs, or undefined when more than `limit` (checked step by step, so no product overflows). */
export function byteSize(shape: readonly number[], itemSize: number, limit: number): number | undefined {
  if (shape.includes(0)) return 0;
  let n = itemSize;
  for (const d of shape) {
    n *= d;
    if (n > limit) return undefined;
  }
  return n;
}
