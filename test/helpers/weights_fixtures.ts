/**
 * Published-format weight files made from a zoo model, for conversion and pull tests: a PyTorch-layout
 * state dict (timm names), and from it safetensors, a GluonCV zip (resnetv1b or resnet v1 names, with
 * the v1 bottleneck's conv biases) and a PyTorch .pth. Layout changes are written here with plain
 * loops, independently of src/convert.
 *
 * Also the hostile `.pth` files of the memory tests: broadcast views, one tensor under many keys,
 * deflated storages that inflate to gigabytes, all a few kilobytes to a few megabytes.
 */
import * as zlib from 'node:zlib';
import type { Model } from '../../src/models/model.js';
import { serializeSafetensors } from '../../src/formats/safetensors.js';
import { concat, crc32Bitwise, makeMxnetParams, makeZip, MX, makeTorchCheckpoint, PickleWriter, torchStateDictPickle } from './fixtures.js';
import type { RefTensor } from './reference_resnet.js';

/** zoo parameters in PyTorch layout under timm names. */
export function torchStateDict(model: Model): Map<string, RefTensor> {
  const out = new Map<string, RefTensor>();
  for (const [name, spec] of model.params.specs) {
    const v = model.params.get(name).dataSync() as Float32Array;
    if (spec.shape.length === 4) {
      const [kh, kw, ci, co] = spec.shape as [number, number, number, number];
      const o = new Float32Array(v.length);
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++)
          for (let c = 0; c < ci; c++) for (let k = 0; k < co; k++) o[((k * ci + c) * kh + i) * kw + j] = v[((i * kw + j) * ci + c) * co + k]!;
      out.set(name, { shape: [co, ci, kh, kw], data: o });
    } else if (spec.shape.length === 2) {
      const [inF, outF] = spec.shape as [number, number];
      const o = new Float32Array(v.length);
      for (let i = 0; i < inF; i++) for (let k = 0; k < outF; k++) o[k * inF + i] = v[i * outF + k]!;
      out.set(name, { shape: [outF, inF], data: o });
    } else out.set(name, { shape: [...spec.shape], data: v.slice() });
  }
  return out;
}

export function safetensorsBytes(sd: Map<string, RefTensor>, extra: Record<string, RefTensor> = {}): Uint8Array {
  const m = new Map<string, { dtype: 'float32'; shape: number[]; data: Float32Array }>();
  for (const [k, t] of sd) m.set(k, { dtype: 'float32', shape: t.shape, data: t.data });
  for (const [k, t] of Object.entries(extra)) m.set(k, { dtype: 'float32', shape: t.shape, data: t.data });
  return concat(serializeSafetensors(m));
}

const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** GluonCV resnetv1b names: batch-norm gamma / beta. */
export function gluonV1bNames(sd: Map<string, RefTensor>): Map<string, RefTensor> {
  const out = new Map<string, RefTensor>();
  const bnPrefixes = new Set([...sd.keys()].filter((k) => k.endsWith('.running_mean')).map((k) => k.slice(0, -'.running_mean'.length)));
  for (const [k, t] of sd) {
    const m = /^(.*)\.(weight|bias)$/.exec(k);
    if (m && bnPrefixes.has(m[1]!)) out.set(`${m[1]}.${m[2] === 'weight' ? 'gamma' : 'beta'}`, t);
    else out.set(k, t);
  }
  return out;
}

/**
 * GluonCV resnet (v1) names for a bottleneck ResNet (A). The v1 bottleneck's 1x1 convolutions have
 * biases: random ones are added here, and each following batch norm's running mean is raised by the
 * same amount, so the network computes exactly what `sd` does.
 */
export function gluonV1Names(sd: Map<string, RefTensor>, seed = 1): Map<string, RefTensor> {
  const out = new Map<string, RefTensor>();
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.2;
  const bn = (dst: string, src: string) => {
    out.set(`${dst}.gamma`, sd.get(`${src}.weight`)!);
    out.set(`${dst}.beta`, sd.get(`${src}.bias`)!);
    out.set(`${dst}.running_mean`, sd.get(`${src}.running_mean`)!);
    out.set(`${dst}.running_var`, sd.get(`${src}.running_var`)!);
  };
  out.set('features.0.weight', sd.get('conv1.weight')!);
  bn('features.1', 'bn1');
  for (const k of sd.keys()) {
    const m = /^layer(\d)\.(\d+)\.conv(\d)\.weight$/.exec(k);
    if (!m) continue;
    const base = `features.${Number(m[1]) + 3}.${m[2]}`;
    const idx = Number(m[3]);
    const src = `layer${m[1]}.${m[2]}`;
    out.set(`${base}.body.${[0, 3, 6][idx - 1]}.weight`, sd.get(k)!);
    bn(`${base}.body.${[1, 4, 7][idx - 1]}`, `${src}.bn${idx}`);
    if (idx !== 2) {
      const mean = sd.get(`${src}.bn${idx}.running_mean`)!;
      const bias = Float32Array.from(mean.data, () => rnd());
      out.set(`${base}.body.${[0, 3, 6][idx - 1]}.bias`, { shape: [bias.length], data: bias });
      out.set(`${base}.body.${[1, 4, 7][idx - 1]}.running_mean`, { shape: mean.shape, data: mean.data.map((v, i) => v + bias[i]!) });
    }
    if (sd.has(`${src}.downsample.0.weight`) && idx === 1) {
      out.set(`${base}.downsample.0.weight`, sd.get(`${src}.downsample.0.weight`)!);
      bn(`${base}.downsample.1`, `${src}.downsample.1`);
    }
  }
  out.set('output.weight', sd.get('fc.weight')!);
  out.set('output.bias', sd.get('fc.bias')!);
  return out;
}

/** A GluonCV-style zip holding one MXNet .params file. */
export function gluonZip(named: Map<string, RefTensor>, fileName = 'model-0000.params'): Uint8Array {
  const params = makeMxnetParams([...named].map(([name, t]) => ({ name, typeFlag: MX.float32, shape: t.shape, data: f32(t.data) })));
  return makeZip([{ name: fileName, data: params, method: 8 }]);
}

/** A PyTorch zip checkpoint (torch.save of a state dict). */
export function torchPth(sd: Map<string, RefTensor>): Uint8Array {
  const tensors = [...sd].map(([name, t], i) => ({
    name,
    storage: { key: String(i), type: 'FloatStorage', numel: t.data.length, data: f32(t.data) },
    size: t.shape,
  }));
  return makeTorchCheckpoint(torchStateDictPickle(tensors), tensors.map((x) => x.storage), { prefix: 'archive' });
}

// ---------------------------------------------------------------------------------------------------
// Hostile checkpoints

/** One view in a hand-written state dict pickle. */
export interface PickledView {
  key: string;
  storage: { key: string; type: string; numel: number };
  offset?: number;
  size: number[];
  stride: number[];
}

/** Appends `_rebuild_tensor_v2(persid storage, offset, size, stride, False, OrderedDict())` to `p`. */
function pickleView(p: PickleWriter, v: PickledView): void {
  p.global('torch._utils', '_rebuild_tensor_v2').mark();
  p.mark().str('storage').global('torch', v.storage.type).str(v.storage.key).str('cpu').int(v.storage.numel).op(0x74).op(0x51);
  p.int(v.offset ?? 0);
  p.mark();
  for (const d of v.size) p.int(d);
  p.op(0x74).mark();
  for (const d of v.stride) p.int(d);
  p.op(0x74).op(0x89);
  p.global('collections', 'OrderedDict').op(0x29).op(0x52);
  p.op(0x74).op(0x52);
}

/**
 * A state dict pickle: OrderedDict(), then MARK key value ... SETITEMS. A value is a view, or a
 * memo reference to the view of an earlier key (`{ key, sameAs }`: LONG_BINGET of what LONG_BINPUT stored).
 */
export function stateDictPickle(items: (PickledView | { key: string; sameAs: string })[]): Uint8Array {
  const p = new PickleWriter().proto(2);
  p.global('collections', 'OrderedDict').op(0x29).op(0x52).mark();
  const memo = new Map<string, number>();
  const u32 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];
  for (const it of items) {
    p.str(it.key, false);
    if ('sameAs' in it) {
      p.op(0x6a).raw(u32(memo.get(it.sameAs)!));
    } else {
      pickleView(p, it);
      // Memo slots far above the writer's own, so they cannot collide.
      const slot = 100_000 + memo.size;
      memo.set(it.key, slot);
      p.op(0x72).raw(u32(slot));
    }
  }
  return p.op(0x75).op(0x2e).bytes();
}

/** A float32 storage of `numel` elements, all `value`. */
function floatStorage(key: string, numel: number, value = 0.5) {
  return { key, type: 'FloatStorage', numel, data: new Uint8Array(new Float32Array(numel).fill(value).buffer) };
}

/** `count` stride-0 views of `elements` elements each, over one one-element storage (a few KB). */
export function broadcastViewsPth(count: number, elements: number): Uint8Array {
  const s = floatStorage('0', 1);
  const views = Array.from({ length: count }, (_, i) => ({ key: `w${i}`, storage: s, size: [elements], stride: [0] }));
  return makeTorchCheckpoint(stateDictPickle(views), [s]);
}

/** One stride-0 view of `elements` elements over a one-element storage, memoized, under `keys` keys. */
export function memoizedTensorPth(keys: number, elements: number): Uint8Array {
  const s = floatStorage('0', 1);
  const items: Parameters<typeof stateDictPickle>[0] = [{ key: 'w0', storage: s, size: [elements], stride: [0] }];
  for (let i = 1; i < keys; i++) items.push({ key: `w${i}`, sameAs: 'w0' });
  return makeTorchCheckpoint(stateDictPickle(items), [s]);
}

/** CRC-32 of `mib` MiB of zero bytes, without allocating them. */
function crc32OfZeros(mib: number): number {
  const native = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
  const chunk = new Uint8Array(2 ** 20);
  if (native) {
    let c = 0;
    for (let i = 0; i < mib; i++) c = native(chunk, c);
    return c >>> 0;
  }
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let c = 0xffffffff;
  for (let i = 0; i < mib * 2 ** 20; i++) c = table[c & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A raw deflate stream of `mib` MiB of zero bytes (about 1 KB per MiB), built without touching them:
 * sync-flushed copies of one compressed MiB (each refers only to zeros), then an empty final block.
 */
export function deflatedZeros(mib: number): Uint8Array {
  const one = zlib.deflateRawSync(Buffer.alloc(2 ** 20), { level: 9, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  return concat([...Array.from({ length: mib }, () => one), zlib.deflateRawSync(Buffer.alloc(0))]);
}

/** A zip entry given already compressed. */
interface RawZipEntry {
  name: string;
  method: 0 | 8;
  stored: Uint8Array;
  size: number;
  crc: number;
}

/** A plain ZIP archive of entries whose compressed bytes, size and CRC are given (APPNOTE 4.3.7, 4.3.12, 4.3.16). */
function rawZip(entries: RawZipEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let at = 0;
  const le = (bytes: number, v: number) => {
    const b = Buffer.alloc(bytes);
    if (bytes === 2) b.writeUInt16LE(v);
    else b.writeUInt32LE(v >>> 0);
    return b;
  };
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const common = [le(2, 20), le(2, 0x800), le(2, e.method), le(2, 0), le(2, 0x21), le(4, e.crc), le(4, e.stored.length), le(4, e.size), le(2, name.length), le(2, 0)];
    const local = concat([le(4, 0x04034b50), ...common, name]);
    central.push(concat([le(4, 0x02014b50), le(2, 0x031e), ...common, le(2, 0), le(2, 0), le(2, 0), le(4, 0), le(4, at), name]));
    parts.push(local, e.stored);
    at += local.length + e.stored.length;
  }
  const cd = concat(central);
  const end = concat([le(4, 0x06054b50), le(2, 0), le(2, 0), le(2, entries.length), le(2, entries.length), le(4, cd.length), le(4, at), le(2, 0)]);
  return concat([...parts, cd, end]);
}

/**
 * A `.pth` whose `count` storages are deflated entries of `mib` MiB of zero bytes each (default 1 GiB
 * of float32 zeros, about 1 MB compressed). `names` and `sizes` name the tensors and give their shapes
 * (default `w0`, `w1`, ... each viewing its whole storage); a smaller size views the storage's start.
 * With `oneStorageFor` (names and shapes), those tensors all view the start of one storage instead.
 */
export function deflatedStoragesPth(
  count: number,
  options: { mib?: number; names?: string[]; sizes?: number[][]; oneStorageFor?: [string, number[]][] } = {},
): Uint8Array {
  const mib = options.mib ?? 1024;
  const numel = (mib * 2 ** 20) / 4;
  const strides = (size: number[]) => size.map((_, d) => size.slice(d + 1).reduce((a, b) => a * b, 1));
  const storage = (i: number) => ({ key: String(i), type: 'FloatStorage', numel });
  const views: PickledView[] = options.oneStorageFor
    ? options.oneStorageFor.map(([key, size]) => ({ key, storage: storage(0), size, stride: strides(size) }))
    : Array.from({ length: count }, (_, i) => {
        const size = options.sizes?.[i] ?? [numel];
        return { key: options.names?.[i] ?? `w${i}`, storage: storage(i), size, stride: strides(size) };
      });
  const pkl = stateDictPickle(views);
  const zeros = deflatedZeros(mib);
  const crc = crc32OfZeros(mib);
  const version = Buffer.from('3\n');
  return rawZip([
    { name: 'archive/data.pkl', method: 0, stored: pkl, size: pkl.length, crc: crc32Bitwise(pkl) },
    ...Array.from({ length: options.oneStorageFor ? 1 : count }, (_, i) => ({
      name: `archive/data/${i}`,
      method: 8 as const,
      stored: zeros,
      size: mib * 2 ** 20,
      crc,
    })),
    { name: 'archive/version', method: 0, stored: version, size: version.length, crc: crc32Bitwise(version) },
  ]);
}

// ---------------------------------------------------------------------------------------------------
// An oracle for fuzz tests: element values decoded from bytes by hand, and tensor comparison

/** Bytes per element, by dtype name. */
export const ELEMENT_SIZE: Readonly<Record<string, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Little-endian elements of `dtype` in `bytes`, decoded with DataView (bool: any nonzero byte is 1). */
export function oracleElements(bytes: Uint8Array, dtype: string): (number | bigint)[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = ELEMENT_SIZE[dtype]!;
  const out: (number | bigint)[] = [];
  for (let at = 0; at + size <= bytes.length; at += size) {
    switch (dtype) {
      case 'float32':
        out.push(dv.getFloat32(at, true));
        break;
      case 'float64':
        out.push(dv.getFloat64(at, true));
        break;
      case 'float16':
        out.push(halfValue(dv.getUint16(at, true)));
        break;
      case 'bfloat16': {
        const f = new DataView(new ArrayBuffer(4));
        f.setUint32(0, dv.getUint16(at, true) << 16);
        out.push(f.getFloat32(0));
        break;
      }
      case 'int64':
        out.push(dv.getBigInt64(at, true));
        break;
      case 'int32':
        out.push(dv.getInt32(at, true));
        break;
      case 'int16':
        out.push(dv.getInt16(at, true));
        break;
      case 'int8':
        out.push(dv.getInt8(at));
        break;
      case 'uint8':
        out.push(dv.getUint8(at));
        break;
      case 'bool':
        out.push(dv.getUint8(at) ? 1 : 0);
        break;
    }
  }
  return out;
}

/** A tensor as a fuzz test expects it. */
export interface ExpectedTensor {
  name: string;
  dtype: string;
  shape: number[];
  values: (number | bigint)[];
}

/** How `actual` (a reader's result) differs from `expected`, in order; undefined when it does not. */
export function tensorDifference(
  actual: ReadonlyMap<string, { dtype: string; shape: number[]; data: ArrayLike<number | bigint> }>,
  expected: ExpectedTensor[],
): string | undefined {
  const names = [...actual.keys()];
  if (names.join('\u0000') !== expected.map((e) => e.name).join('\u0000')) {
    return `names ${JSON.stringify(names)}, expected ${JSON.stringify(expected.map((e) => e.name))}`;
  }
  for (const e of expected) {
    const a = actual.get(e.name)!;
    if (a.dtype !== e.dtype) return `${e.name}: dtype ${a.dtype}, expected ${e.dtype}`;
    if (a.shape.join() !== e.shape.join()) return `${e.name}: shape [${a.shape}], expected [${e.shape}]`;
    if (a.data.length !== e.values.length) return `${e.name}: ${a.data.length} values, expected ${e.values.length}`;
    for (let i = 0; i < e.values.length; i++) {
      if (!Object.is(a.data[i], e.values[i])) return `${e.name}[${i}] is ${String(a.data[i])}, expected ${String(e.values[i])}`;
    }
  }
  return undefined;
}
