/**
 * MXNet's NDArray list format: the `.params` files GluonCV publishes (inside a zip) with the paper's weights.
 *
 * Layout, little-endian, as MXNet's `NDArray::Save(dmlc::Stream*, data, names)` writes it
 * (src/ndarray/ndarray.cc, dmlc-core serializer):
 *
 *   u64 0x112 (kMXAPINDArrayListMagic), u64 reserved,
 *   u64 array count, then per array one NDArray record,
 *   u64 name count (0, or the array count), then per name u64 length + UTF-8 bytes.
 *
 * An NDArray record starts with a u32 magic:
 *   0xF993FAC9 (V2) or 0xF993FACA (V3, NumPy shape semantics): i32 storage type (0 = dense), then the shape;
 *   0xF993FAC8 (V1): the shape;
 *   anything else (legacy): that u32 is ndim and the dims follow as u32.
 * A V1/V2/V3 shape is a 4-byte ndim and ndim int64 dims. An array with ndim 0 (V3: ndim -1) is empty and
 * ends there; otherwise i32 dev_type, i32 dev_id, i32 mshadow type flag, and the raw elements follow.
 */
import { openZip } from './zip.js';
import {
  ByteReader,
  DTYPE_SIZE,
  byteSize,
  FormatError,
  decodeElements,
  decodedSize,
  materializeAll,
  quoteName,
  readFileBytes,
  Warnings,
  type SourceDType,
  type TensorDescriptor,
  type TensorSource,
  type WarnedTensorMap,
} from './types.js';
import { fileBudget, type ByteBudget } from './budget.js';

const LIST_MAGIC = 0x112;
const V1_MAGIC = 0xf993fac8;
const V2_MAGIC = 0xf993fac9;
const V3_MAGIC = 0xf993faca;
/** No real tensor has more dimensions; a larger ndim means a corrupt or hostile file. */
const MAX_NDIM = 32;

/** mshadow type flags (mshadow/base.h `TypeFlag`) that map onto a source dtype. */
const TYPE_FLAGS: ReadonlyMap<number, SourceDType> = new Map([
  [0, 'float32'],
  [1, 'float64'],
  [2, 'float16'],
  [3, 'uint8'],
  [4, 'int32'],
  [5, 'int8'],
  [6, 'int64'],
  [7, 'bool'],
  [8, 'int16'],
  [12, 'bfloat16'],
]);

interface NDArrayRecord {
  shape: number[];
  dtype: SourceDType;
  bytes: Uint8Array;
}

/** Options of the MXNet readers. */
export interface MxnetReadOptions {
  /**
   * What reading may allocate (budget.ts). Default for a bare `.params`: twice its size plus 16 MiB,
   * which no valid file reaches; for a GluonCV zip, whose entry is deflated: 8 x the zip's size plus 16 MiB.
   */
  budget?: ByteBudget;
}

/** Nominal bytes of the JS objects one record or name costs while the file is parsed. */
const RECORD_COST = 64;

/**
 * Parses an MXNet `.params` file. Names lose their `arg:`/`aux:` prefixes (older checkpoints carry them).
 * `warnings` says what was accepted but unusual: arrays saved without names (then named by index),
 * empty arrays (skipped), trailing bytes.
 */
export function parseMxnetParams(bytes: Uint8Array, label: string, options: MxnetReadOptions = {}): WarnedTensorMap {
  return materializeAll(openMxnetParams(bytes, label, options.budget ?? fileBudget(label, bytes.length, 2)));
}

/**
 * Checks the structure of a `.params` file and describes its arrays without decoding any; each
 * descriptor's `read()` decodes one array, charged to `budget`. The errors name `label`; the budget's
 * errors name the budget's own file (for a zip member, the zip).
 */
export function openMxnetParams(bytes: Uint8Array, label: string, budget: ByteBudget): TensorSource {
  const r = new ByteReader(bytes, label);
  const lo = r.u32('list magic');
  const hi = r.u32('list magic');
  if (lo !== LIST_MAGIC || hi !== 0) {
    const seen = ((BigInt(hi) << 32n) | BigInt(lo)).toString(16);
    throw r.fail(`not an MXNet NDArray file (magic 0x${seen}, expected 0x112)`);
  }
  r.take(8, 'reserved field'); // MXNet ignores it, whatever it holds
  const count = r.u64('array count');
  // The smallest record is a legacy empty array (4 bytes); refuse counts the file cannot hold before looping.
  if (count * 4 > r.remaining) throw r.fail(`truncated or corrupt: declares ${count} arrays but only ${r.remaining} bytes follow`);
  budget.charge(count * RECORD_COST, `the ${count} array records`);
  const arrays: (NDArrayRecord | undefined)[] = [];
  for (let i = 0; i < count; i++) arrays.push(readNDArray(r, i));
  const names = readNames(r, count);
  return assemble(r, arrays, names, budget);
}

function readNDArray(r: ByteReader, index: number): NDArrayRecord | undefined {
  const what = `array ${index}`;
  const magic = r.u32(`${what} header`);
  let shape: number[] | undefined;
  if (magic === V2_MAGIC || magic === V3_MAGIC) {
    const stype = r.i32(`${what} storage type`);
    if (stype !== 0) throw r.fail(`${what} has sparse storage type ${stype}; only dense arrays are supported`);
    shape = readShape(r, what, magic === V3_MAGIC);
  } else if (magic === V1_MAGIC) {
    shape = readShape(r, what, false);
  } else {
    shape = readLegacyShape(r, what, magic);
  }
  if (!shape) return undefined;
  r.i32(`${what} device type`);
  r.i32(`${what} device id`);
  const flag = r.i32(`${what} type flag`);
  const dtype = TYPE_FLAGS.get(flag);
  if (!dtype) throw r.fail(`${what} has type flag ${flag}, which is not supported`);
  const nbytes = byteSize(shape, DTYPE_SIZE[dtype], r.remaining);
  if (nbytes === undefined) {
    throw r.fail(`truncated: ${what} of shape [${shape.join(', ')}] (${dtype}) needs more than the ${r.remaining} bytes that remain`);
  }
  return { shape, dtype, bytes: r.take(nbytes, `${what} data`) };
}

/** A V1/V2/V3 shape; undefined for an empty (none) array. */
function readShape(r: ByteReader, what: string, numpySemantics: boolean): number[] | undefined {
  const ndim = r.i32(`${what} ndim`);
  if (numpySemantics ? ndim === -1 : ndim === 0) return undefined;
  checkNdim(r, what, ndim, 8);
  const shape: number[] = [];
  for (let d = 0; d < ndim; d++) {
    const dim = r.i64(`${what} dimension ${d}`);
    if (dim < 0) throw r.fail(`${what} has negative dimension ${dim}`);
    shape.push(dim);
  }
  return shape;
}

function readLegacyShape(r: ByteReader, what: string, ndim: number): number[] | undefined {
  if (ndim === 0) return undefined;
  checkNdim(r, what, ndim, 4);
  const shape: number[] = [];
  for (let d = 0; d < ndim; d++) shape.push(r.u32(`${what} dimension ${d}`));
  return shape;
}

function checkNdim(r: ByteReader, what: string, ndim: number, dimBytes: number): void {
  if (ndim < 0 || ndim > MAX_NDIM) {
    throw r.fail(`${what} has ${ndim} dimensions (or an unknown record magic 0x${(ndim >>> 0).toString(16)}); not an NDArray record`);
  }
  r.need(ndim * dimBytes, `${what} shape`);
}

function readNames(r: ByteReader, count: number): string[] {
  const n = r.u64('name count');
  if (n !== 0 && n !== count) throw r.fail(`has ${count} arrays but ${n} names`);
  if (n * 8 > r.remaining) throw r.fail(`truncated or corrupt: declares ${n} names but only ${r.remaining} bytes follow`);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const len = r.u64(`length of name ${i}`);
    const raw = r.take(len, `name ${i}`);
    try {
      names.push(decoder.decode(raw));
    } catch {
      throw r.fail(`name ${i} is not valid UTF-8`);
    }
  }
  return names;
}

function assemble(r: ByteReader, arrays: (NDArrayRecord | undefined)[], names: string[], budget: ByteBudget): TensorSource {
  const warnings = new Warnings();
  const tensors = new Map<string, TensorDescriptor>();
  if (names.length === 0 && arrays.length > 0) warnings.add(`the ${arrays.length} arrays have no names; named by index ('0', '1', ...)`);
  arrays.forEach((a, i) => {
    const raw = names[i] ?? String(i);
    const name = raw.startsWith('arg:') || raw.startsWith('aux:') ? raw.slice(4) : raw;
    if (!a) {
      warnings.add(`array ${quoteName(name)} is empty (no shape); skipped`);
      return;
    }
    if (tensors.has(name)) throw r.fail(`name ${quoteName(name)} appears twice`);
    const count = a.shape.reduce((x, y) => x * y, 1);
    tensors.set(name, {
      name,
      dtype: a.dtype,
      shape: a.shape,
      byteLength: a.bytes.length,
      read: () => {
        budget.charge(decodedSize(a.dtype, count), `decoding array ${quoteName(name)}`);
        return decodeElements(a.bytes, a.dtype);
      },
    });
  });
  if (r.remaining > 0) warnings.add(`${r.remaining} bytes after the name list ignored`);
  return { label: r.label, tensors, warnings: warnings.list(), budget };
}

/**
 * Reads a GluonCV model zip (e.g. `resnet50_v1d-117a384e.zip`) and parses its one `.params` entry.
 * The zip's own label is used in errors, with the entry name where the problem is inside it.
 */
export async function readGluonZip(path: string, options: MxnetReadOptions = {}): Promise<WarnedTensorMap> {
  const bytes = await readFileBytes(path, options.budget);
  return materializeAll(openGluonZip(bytes, path, options.budget ?? fileBudget(path, bytes.length, 8)));
}

/** openMxnetParams for the one `.params` entry of GluonCV zip bytes; inflating it is charged to `budget`. */
export function openGluonZip(bytes: Uint8Array, path: string, budget: ByteBudget): TensorSource {
  const zip = openZip(bytes, path, { budget });
  const params = zip.entries.filter((e) => e.name.endsWith('.params'));
  if (params.length !== 1) {
    const listed = zip.entries.map((e) => quoteName(e.name)).join(', ') || 'none';
    throw new FormatError(path, `expected exactly one .params entry, found ${params.length} (entries: ${listed})`);
  }
  const entry = params[0]!;
  return openMxnetParams(zip.read(entry.name), `${path}:${entry.name}`, budget);
}
