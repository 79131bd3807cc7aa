import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseTorchCheckpoint, readTorchCheckpoint } from '../src/formats/torch.js';
import { FormatError } from '../src/formats/types.js';
import { ELEMENT_SIZE, oracleElements, tensorDifference, type ExpectedTensor } from './helpers/weights_fixtures.js';
import {
  PickleWriter,
  f32Bytes,
  makeTorchCheckpoint,
  makeZip,
  tempDir,
  torchStateDictPickle,
  u16Bytes,
  type TorchStorageFixture,
  type TorchTensorFixture,
} from './helpers/fixtures.js';

const LABEL = 'resnet50-0676ba61.pth';

function refuses(t: ExecutionContext, bytes: Uint8Array, fragment: string): FormatError {
  const err = t.throws(() => parseTorchCheckpoint(bytes, LABEL), { instanceOf: FormatError }) as FormatError;
  t.true(err.message.startsWith(`${LABEL}`), err.message);
  t.true(err.message.includes(fragment), err.message);
  return err;
}

const weights: TorchStorageFixture = { key: '0', type: 'FloatStorage', numel: 6, data: f32Bytes([0, 1, 2, 3, 4, 5]) };
const half: TorchStorageFixture = { key: '1', type: 'HalfStorage', numel: 4, data: u16Bytes([0x3c00, 0x0001, 0x7c00, 0xc000]) };
const bf16: TorchStorageFixture = { key: '2', type: 'BFloat16Storage', numel: 2, data: u16Bytes([0x3f80, 0x0001]) };
const count: TorchStorageFixture = { key: '3', type: 'LongStorage', numel: 1, data: new Uint8Array(new BigInt64Array([123456789012n]).buffer) };
const storages = [weights, half, bf16, count];

function stateDict(): TorchTensorFixture[] {
  return [
    { name: 'conv1.weight', storage: weights, size: [2, 3] },
    { name: 'fc.weight_t', storage: weights, size: [3, 2], stride: [1, 3] }, // transposed view of the same storage
    { name: 'tail', storage: weights, offset: 4, size: [2] },
    { name: 'bn1.weight', storage: half, size: [4], parameter: true },
    { name: 'bf', storage: bf16, size: [2] },
    { name: 'bn1.num_batches_tracked', storage: count, size: [] },
  ];
}

function checkpoint(tensors = stateDict(), options: Parameters<typeof torchStateDictPickle>[1] = { metadata: true }): Uint8Array {
  return makeTorchCheckpoint(torchStateDictPickle(tensors, options), storages);
}

test('a torch.save state dict reads with every view, dtype and the _metadata state', async (t) => {
  const file = path.join(tempDir(t), LABEL);
  fs.writeFileSync(file, checkpoint());
  const sd = await readTorchCheckpoint(file);
  t.deepEqual(sd.warnings, []);
  t.deepEqual([...sd.keys()], stateDict().map((x) => x.name));
  const w = sd.get('conv1.weight')!;
  t.is(w.dtype, 'float32');
  t.deepEqual(w.shape, [2, 3]);
  t.deepEqual(Array.from(w.data as Float32Array), [0, 1, 2, 3, 4, 5]);
  t.deepEqual(sd.get('fc.weight_t')!.shape, [3, 2]);
  t.deepEqual(Array.from(sd.get('fc.weight_t')!.data as Float32Array), [0, 3, 1, 4, 2, 5], 'non-contiguous strides are gathered');
  t.deepEqual(Array.from(sd.get('tail')!.data as Float32Array), [4, 5]);
  t.is(sd.get('tail')!.data.buffer, w.data.buffer, 'contiguous views of one storage share its decoded data');
  const h = sd.get('bn1.weight')!;
  t.is(h.dtype, 'float16');
  t.deepEqual(Array.from(h.data as Float32Array), [1, 2 ** -24, Infinity, -2]);
  t.deepEqual(Array.from(sd.get('bf')!.data as Float32Array), [1, new Float32Array(new Uint32Array([0x10000]).buffer)[0]!]);
  const n = sd.get('bn1.num_batches_tracked')!;
  t.is(n.dtype, 'int64');
  t.deepEqual(n.shape, []);
  t.deepEqual(Array.from(n.data as BigInt64Array), [123456789012n]);
});

test("a checkpoint dict with 'state_dict' or 'model' is unwrapped; non-tensors become warnings", (t) => {
  for (const wrap of ['state_dict', 'model'] as const) {
    const sd = parseTorchCheckpoint(checkpoint(stateDict(), { wrap, metadata: true, extras: [['step', 2 ** 40]] }), LABEL);
    t.is(sd.size, stateDict().length);
    t.deepEqual(sd.warnings, ["skipped 'step': a number, not a tensor"]);
  }
  const one = parseTorchCheckpoint(checkpoint([{ name: 'only', storage: weights, size: [6] }], {}), LABEL);
  t.deepEqual([...one.keys()], ['only']);
});

test('arbitrary strides, size-1 dims, zero-size and broadcast views are gathered correctly', (t) => {
  const s: TorchStorageFixture = { key: '0', type: 'FloatStorage', numel: 24, data: f32Bytes(Array.from({ length: 24 }, (_, i) => i)) };
  const tensors: TorchTensorFixture[] = [
    { name: 'permuted', storage: s, size: [2, 3, 4], stride: [1, 8, 2] }, // max index 1 + 16 + 6 = 23
    { name: 'step', storage: s, offset: 1, size: [3], stride: [7] },
    { name: 'ones', storage: s, offset: 5, size: [1, 2, 1], stride: [99, 1, 42] },
    { name: 'empty', storage: s, size: [0, 5], stride: [5, 1] },
    { name: 'bcast', storage: s, offset: 2, size: [3, 2], stride: [0, 1] },
  ];
  const sd = parseTorchCheckpoint(makeTorchCheckpoint(torchStateDictPickle(tensors), [s]), LABEL);
  const expect: number[] = [];
  for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) expect.push(i + 8 * j + 2 * k);
  t.deepEqual(Array.from(sd.get('permuted')!.data as Float32Array), expect);
  t.deepEqual(Array.from(sd.get('step')!.data as Float32Array), [1, 8, 15]);
  t.deepEqual(Array.from(sd.get('ones')!.data as Float32Array), [5, 6]);
  t.deepEqual(sd.get('empty')!.shape, [0, 5]);
  t.is(sd.get('empty')!.data.length, 0);
  t.deepEqual(Array.from(sd.get('bcast')!.data as Float32Array), [2, 3, 2, 3, 2, 3]);
});

test('a disallowed global is refused by name, and nothing runs', (t) => {
  const marker = path.join(tempDir(t), 'pwned');
  const osSystem = new PickleWriter().proto(2).global('os', 'system').str(`touch ${marker}`).op(0x85).op(0x52).op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(osSystem, []), "refusing to load 'os.system'");
  const evalViaStack = new PickleWriter().proto(4).stackGlobal('builtins', 'eval').str('1+1').op(0x85).op(0x52).op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(evalViaStack, []), "refusing to load 'builtins.eval'");
  const fromBytes = new PickleWriter().proto(2).global('torch.storage', '_load_from_bytes').op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(fromBytes, []), "refusing to load 'torch.storage._load_from_bytes'");
  // Hidden inside an otherwise good state dict, as a nested value.
  const good = torchStateDictPickle([{ name: 'w', storage: weights, size: [6] }]);
  const sneaky = new PickleWriter()
    .raw(good.subarray(0, good.length - 1))
    .global('subprocess', 'Popen')
    .op(0x2e)
    .bytes();
  refuses(t, makeTorchCheckpoint(sneaky, [weights]), "refusing to load 'subprocess.Popen'");
  t.false(fs.existsSync(marker));
});

test('calls other than the allow-listed rebuilds are refused', (t) => {
  const callStorage = new PickleWriter().proto(2).global('torch', 'FloatStorage').op(0x29).op(0x52).op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(callStorage, []), "'torch.FloatStorage' cannot be called");
  const odArgs = new PickleWriter().proto(2).global('collections', 'OrderedDict').str('x').op(0x85).op(0x52).op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(odArgs, []), 'only supported with no arguments');
  const reduceString = new PickleWriter().proto(2).str('os.system').op(0x29).op(0x52).op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(reduceString, []), 'REDUCE of string is not supported');
  const build = new PickleWriter().proto(2).op(0x5d).op(0x7d).op(0x62).op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(build, []), 'BUILD of list with dict state is not supported');
  const opcode = new PickleWriter().proto(2).op(0x69).raw(Buffer.from('os\nsystem\n')).op(0x2e).bytes(); // INST
  refuses(t, makeTorchCheckpoint(opcode, []), 'unsupported pickle opcode 0x69');
  const persid = new PickleWriter().proto(2).str('storage').op(0x51).op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(persid, []), "persistent id string is not a ('storage', ...) tuple");
});

test('a truncated or malformed pickle is a FormatError', (t) => {
  const pkl = torchStateDictPickle(stateDict(), { metadata: true });
  for (let cut = 0; cut < pkl.length; cut++) {
    const err = t.throws(() => parseTorchCheckpoint(makeTorchCheckpoint(pkl.subarray(0, cut), storages), LABEL), { instanceOf: FormatError }, `cut ${cut}`);
    if (!err || !err.message.startsWith(`${LABEL}:archive/data.pkl: `)) return t.fail(err?.message);
  }
  refuses(t, makeTorchCheckpoint(pkl.subarray(0, pkl.length - 1), storages), 'without a STOP opcode');
  refuses(t, makeTorchCheckpoint(new PickleWriter().proto(2).op(0x2e).bytes(), []), 'stack underflow');
  refuses(t, makeTorchCheckpoint(new PickleWriter().proto(2).get(7).op(0x2e).bytes(), []), 'memo entry 7 is read before it is written');
  refuses(t, makeTorchCheckpoint(new PickleWriter().proto(2).op(0x74).op(0x2e).bytes(), []), 'no MARK');
  refuses(t, makeTorchCheckpoint(new PickleWriter().proto(2).op(0x58).raw([0xff, 0xff, 0xff, 0x7f]).op(0x2e).bytes(), []), 'truncated');
  refuses(t, makeTorchCheckpoint(new PickleWriter().proto(2).op(0x5d).op(0x2e).bytes(), []), 'data.pkl holds a list, not a state dict');
  const deep = new PickleWriter().proto(2);
  for (let i = 0; i < 20_000; i++) deep.mark();
  refuses(t, makeTorchCheckpoint(deep.op(0x2e).bytes(), []), 'more than 10000 nested MARKs');
});

test('a storage reference to a missing entry, or past its storage, is refused', (t) => {
  const pkl = torchStateDictPickle([{ name: 'w', storage: weights, size: [6] }]);
  refuses(t, makeTorchCheckpoint(pkl, [weights], { omit: ['0'] }), "storage '0' (archive/data/0) is missing from the archive");
  const small = { ...weights, data: f32Bytes([1, 2]) };
  refuses(t, makeTorchCheckpoint(pkl, [small]), "storage '0' declares 6 float32 elements (24 bytes) but archive/data/0 holds 8");
  const cases: [TorchTensorFixture, string][] = [
    [{ name: 'a', storage: weights, size: [7] }, 'runs past its storage of 6 elements (offset 0, size [7], stride [1])'],
    [{ name: 'b', storage: weights, offset: 5, size: [2] }, 'runs past its storage'],
    [{ name: 'c', storage: weights, size: [2, 3], stride: [3, 2] }, 'runs past its storage'],
    [{ name: 'd', storage: weights, offset: 6, size: [] }, 'runs past its storage'],
    [{ name: 'e', storage: weights, size: [2 ** 40, 2 ** 40], stride: [0, 0] }, 'is a broadcast view of'],
    [{ name: 'f', storage: weights, offset: 9, size: [0] }, 'starts past the end of its storage'],
  ];
  const asHalf: TorchStorageFixture = { ...weights, type: 'HalfStorage', numel: 12 };
  const twoTypes = torchStateDictPickle([
    { name: 'w', storage: weights, size: [6] },
    { name: 'h', storage: asHalf, size: [12] },
  ]);
  refuses(t, makeTorchCheckpoint(twoTypes, [weights]), "storage '0' is named both as 6 float32 and as 12 float16 elements");
  for (const [tensor, fragment] of cases) refuses(t, makeTorchCheckpoint(torchStateDictPickle([tensor]), [weights]), fragment);
});

test('a state dict that repeats a key is refused (Python would keep the last value silently)', (t) => {
  const twice = torchStateDictPickle([
    { name: 'fc.weight', storage: weights, size: [6] },
    { name: 'fc.weight', storage: weights, size: [2], offset: 4 },
  ]);
  refuses(t, makeTorchCheckpoint(twice, [weights]), "dict key 'fc.weight' appears twice");
});

test('legacy checkpoints, non-torch zips, TorchScript archives and big-endian storages are refused', (t) => {
  refuses(t, new PickleWriter().proto(2).int(0x1950a86a20f9469cfc6cn).bytes(), 'legacy (pre-1.6, non-zip) torch checkpoint');
  refuses(t, makeZip([{ name: 'readme.txt', data: new Uint8Array(1) }]), 'not a torch.save checkpoint: no <prefix>/data.pkl entry');
  const script = new PickleWriter().proto(2).global('__torch__.torchvision.models.resnet', 'ResNet').op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(script, []), "refusing to load '__torch__.torchvision.models.resnet.ResNet'");
  refuses(t, makeTorchCheckpoint(torchStateDictPickle(stateDict()), storages, { byteorder: 'big' }), "storages are 'big'-endian");
  t.is(parseTorchCheckpoint(makeTorchCheckpoint(torchStateDictPickle(stateDict()), storages, { byteorder: 'little' }), LABEL).size, 6);
});

// ---------------------------------------------------------------------------------------------------
// Byte flips: each one must be refused naming the file, or explained exactly

const DTYPES: Record<string, string> = { FloatStorage: 'float32', HalfStorage: 'float16', BFloat16Storage: 'bfloat16', LongStorage: 'int64' };

/** The tensors a state dict of these views gives, computed by hand; undefined when the file must be refused. */
function expectedTensors(views: (TorchTensorFixture & { numel?: number })[]): ExpectedTensor[] | undefined {
  const declared = new Map<string, number>();
  for (const v of views) {
    const numel = v.numel ?? v.storage.numel;
    const first = declared.get(v.storage.key);
    if (first !== undefined && first !== numel) return undefined; // one storage named with two sizes
    declared.set(v.storage.key, numel);
    if (v.storage.data.length < numel * ELEMENT_SIZE[DTYPES[v.storage.type]!]!) return undefined; // storage too short
  }
  if (new Set(views.map((v) => v.name)).size !== views.length) return undefined; // a key twice
  const out: ExpectedTensor[] = [];
  for (const v of views) {
    const numel = declared.get(v.storage.key)!;
    const dtype = DTYPES[v.storage.type]!;
    const stride = v.stride ?? v.size.map((_, d) => v.size.slice(d + 1).reduce((a, b) => a * b, 1));
    const offset = v.offset ?? 0;
    const count = v.size.reduce((a, b) => a * b, 1);
    if (count === 0) {
      if (offset > numel) return undefined;
    } else if (offset + v.size.reduce((acc, n, d) => acc + (n - 1) * stride[d]!, 0) >= numel) {
      return undefined; // runs past its storage
    }
    const all = oracleElements(v.storage.data, dtype);
    const values: (number | bigint)[] = [];
    const index = new Array<number>(v.size.length).fill(0);
    for (let i = 0; i < count; i++) {
      values.push(all[offset + index.reduce((acc, x, d) => acc + x * stride[d]!, 0)]!);
      for (let d = v.size.length - 1; d >= 0 && ++index[d]! === v.size[d]; d--) index[d] = 0;
    }
    out.push({ name: v.name, dtype, shape: v.size, values });
  }
  return out;
}

/** What a byte of the pickle is: an operand the result depends on, an ignored one, or structure. */
type PickleByte =
  | { kind: 'int'; tensor: number; field: 'offset' | 'numel' | 'size' | 'stride'; dim: number }
  | { kind: 'key'; tensor: number; start: number; length: number }
  | { kind: 'ignored' }
  | { kind: 'structure' };

/**
 * torchStateDictPickle(views, { metadata: true }) written again, recording what each byte is. The
 * test checks both write the same bytes.
 */
function spannedPickle(views: TorchTensorFixture[]): { bytes: Uint8Array; roles: PickleByte[] } {
  const p = new PickleWriter().proto(2);
  const roles: PickleByte[] = [];
  const pos = () => p.bytes().length;
  const mark = (from: number, role: PickleByte) => {
    for (let i = from; i < pos(); i++) roles[i] = role;
  };
  const int = (v: number, role: PickleByte) => {
    const at = pos();
    p.int(v);
    mark(at + 1, role); // the opcode stays structure
  };
  const seen = new Set<string>();
  const str = (v: string, role: (start: number, length: number) => PickleByte) => {
    const at = pos();
    p.str(v);
    if (!seen.has(v)) mark(at + 5, role(at + 5, Buffer.byteLength(v))); // BINUNICODE, u32 length, then the text
    seen.add(v);
    // the BINPUT after the text stays structure
    for (let i = at + 5 + Buffer.byteLength(v); i < pos(); i++) roles[i] = { kind: 'structure' };
  };
  const ignored = (): PickleByte => ({ kind: 'ignored' });
  p.global('collections', 'OrderedDict').op(0x29).op(0x52).put().mark();
  views.forEach((t, i) => {
    str(t.name, (start, length) => ({ kind: 'key', tensor: i, start, length }));
    if (t.parameter) p.global('torch._utils', '_rebuild_parameter').mark();
    p.global('torch._utils', '_rebuild_tensor_v2').mark();
    p.mark();
    p.str('storage').global('torch', t.storage.type).str(t.storage.key);
    str('cpu', ignored); // the location is not used
    int(t.storage.numel, { kind: 'int', tensor: i, field: 'numel', dim: 0 });
    p.op(0x74).put().op(0x51);
    int(t.offset ?? 0, { kind: 'int', tensor: i, field: 'offset', dim: 0 });
    const stride = t.stride ?? t.size.map((_, d) => t.size.slice(d + 1).reduce((a, b) => a * b, 1));
    for (const [field, v] of [['size', t.size], ['stride', stride]] as const) {
      if (v.length === 0) p.op(0x29);
      else if (v.length <= 3) {
        v.forEach((x, d) => int(x, { kind: 'int', tensor: i, field, dim: d }));
        p.op([0x85, 0x86, 0x87][v.length - 1]!).put();
      } else {
        p.mark();
        v.forEach((x, d) => int(x, { kind: 'int', tensor: i, field, dim: d }));
        p.op(0x74).put();
      }
    }
    p.op(0x89).global('collections', 'OrderedDict').op(0x29).op(0x52).put();
    p.op(0x74).put().op(0x52).put();
    if (t.parameter) p.op(0x89).global('collections', 'OrderedDict').op(0x29).op(0x52).put().op(0x74).put().op(0x52).put();
  });
  p.op(0x75);
  // The `_metadata` state: BUILD ignores it, so its strings and numbers do not matter.
  p.op(0x7d).put();
  str('_metadata', ignored);
  p.global('collections', 'OrderedDict').op(0x29).op(0x52).put();
  str('', ignored);
  p.op(0x7d).put();
  str('version', ignored);
  int(1, ignored());
  p.op(0x73).op(0x73).op(0x73).op(0x62).op(0x2e);
  const bytes = p.bytes();
  for (let i = 0; i < bytes.length; i++) roles[i] ??= { kind: 'structure' };
  return { bytes, roles };
}

/**
 * What reading the checkpoint must give when pickle byte `pos` is `bad[pos]`: these tensors, 'error',
 * or for a byte of the pickle's structure (an opcode, a length, a memo index) 'regrouped': refused, or
 * read as a state dict every tensor of which is one the file holds, under whatever key (a string
 * length that swallows the next entry, for one, pairs a longer key with the following tensor).
 */
function pickleExpectation(views: TorchTensorFixture[], role: PickleByte, bad: Uint8Array, pos: number): ExpectedTensor[] | 'error' | 'regrouped' {
  const original = expectedTensors(views)!;
  switch (role.kind) {
    case 'structure':
      return 'regrouped';
    case 'ignored':
      return original;
    case 'key': {
      const name = new TextDecoder().decode(bad.subarray(role.start, role.start + role.length)); // the unpickler's decoding
      return expectedTensors(views.map((v, i) => (i === role.tensor ? { ...v, name } : v))) ?? 'error';
    }
    case 'int': {
      const value = bad[pos]!; // every operand here is a BININT1
      const changed = views.map((v, i) => {
        if (i !== role.tensor) return v;
        const stride = v.stride ?? v.size.map((_, d) => v.size.slice(d + 1).reduce((a, b) => a * b, 1));
        if (role.field === 'offset') return { ...v, offset: value };
        if (role.field === 'numel') return { ...v, numel: value };
        if (role.field === 'size') return { ...v, size: v.size.map((x, d) => (d === role.dim ? value : x)), stride };
        return { ...v, stride: stride.map((x, d) => (d === role.dim ? value : x)) };
      });
      return expectedTensors(changed) ?? 'error';
    }
  }
}

/**
 * What each byte of the whole checkpoint file is, from the zip layout makeTorchCheckpoint writes:
 * 'error' where the reader checks it (CRC-covered data, sizes, offsets, names, signatures), 'ignored'
 * where nothing reads it (times, versions, the extra field's padding, data descriptors, the ZIP64 end
 * record, the unread `version` entry), or a rule for the bytes whose meaning depends on the value.
 */
function zipRoles(file: Uint8Array): ((b: number) => 'error' | 'ignored' | 'either')[] {
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const roles: ((b: number) => 'error' | 'ignored' | 'either')[] = [];
  const set = (from: number, to: number, rule: (b: number) => 'error' | 'ignored' | 'either') => {
    for (let i = from; i < to; i++) roles[i] = rule;
  };
  const error = () => 'error' as const;
  const ignored = () => 'ignored' as const;
  const flags = (b: number) => (b & 0x41 ? 'error' : 'ignored'); // encryption bits
  const eocd = file.length - 22;
  const cdOffset = dv.getUint32(eocd + 16, true);
  let at = 0;
  const unread = (name: string) => name.endsWith('/version');
  while (at < cdOffset) {
    const nameLen = dv.getUint16(at + 26, true);
    const extraLen = dv.getUint16(at + 28, true);
    const name = Buffer.from(file.subarray(at + 30, at + 30 + nameLen)).toString();
    set(at, at + 4, error); // signature
    set(at + 4, at + 6, ignored); // version needed
    roles[at + 6] = flags;
    set(at + 7, at + 30, ignored); // flags' high byte, method (the central directory's counts), time, date, CRC and sizes (0: data descriptor)
    set(at + 26, at + 28, error); // name length
    // A shorter extra field moves the data start: harmless only for the entry nothing reads.
    set(at + 28, at + 30, unread(name) ? () => 'either' : error);
    set(at + 30, at + 30 + nameLen, error); // name, compared with the central directory's
    set(at + 30 + nameLen, at + 30 + nameLen + extraLen, ignored); // 'FB' padding
    const dataStart = at + 30 + nameLen + extraLen;
    // The data's length is in the data descriptor after it (CRC, compressed size, size).
    let dataLen = 0;
    while (dv.getUint32(dataStart + dataLen, true) !== 0x08074b50 || dv.getUint32(dataStart + dataLen + 8, true) !== dataLen) dataLen++;
    set(dataStart, dataStart + dataLen, unread(name) ? ignored : error); // CRC-covered, if read
    set(dataStart + dataLen, dataStart + dataLen + 16, ignored); // data descriptor
    at = dataStart + dataLen + 16;
  }
  while (dv.getUint32(at, true) === 0x02014b50) {
    const nameLen = dv.getUint16(at + 28, true);
    const name = Buffer.from(file.subarray(at + 46, at + 46 + nameLen)).toString();
    set(at, at + 4, error);
    set(at + 4, at + 8, ignored); // versions
    roles[at + 8] = flags;
    roles[at + 9] = ignored; // UTF-8 flag: the names are ASCII
    // Method: an entry nothing reads may claim deflate; anything else unsupported is refused when the archive opens.
    roles[at + 10] = unread(name) ? (b) => (b === 8 ? 'ignored' : 'error') : error;
    roles[at + 11] = error;
    set(at + 12, at + 16, ignored); // time, date
    set(at + 16, at + 20, unread(name) ? ignored : error); // CRC: checked when the entry is read
    set(at + 20, at + 36, error); // sizes, name/extra/comment lengths, disk
    set(at + 36, at + 42, ignored); // attributes
    set(at + 42, at + 46 + nameLen, error); // local header offset, name
    at += 46 + nameLen;
  }
  set(at, at + 56, ignored); // ZIP64 end record: nothing in it is needed
  at += 56;
  set(at, at + 4, ignored); // ZIP64 locator signature: without it there is no locator to check
  set(at + 4, at + 8, error); // its disk number must be 0
  set(at + 8, at + 16, ignored); // offset of the ZIP64 end record
  roles[at + 16] = (b) => (b > 1 ? 'error' : 'ignored'); // number of disks: 0 or 1
  set(at + 17, at + 20, error);
  at += 20;
  set(at, at + 22, error); // end record
  return roles;
}

test('every pickle byte flip is refused naming the file, or changes the state dict exactly as it explains', (t) => {
  const views = stateDict();
  const { bytes: pkl, roles } = spannedPickle(views);
  t.deepEqual(Array.from(pkl), Array.from(torchStateDictPickle(views, { metadata: true })), 'the fixture writer and the spanned one agree');
  const original = expectedTensors(views)!;
  t.is(tensorDifference(parseTorchCheckpoint(makeTorchCheckpoint(pkl, storages), LABEL), original), undefined);
  const counts = { refused: 0, explained: 0, regrouped: 0, unchanged: 0 };
  for (let pos = 0; pos < pkl.length; pos++) {
    for (const mask of [0x01, 0x04, 0x20, 0x80, 0xff]) {
      const bad = new Uint8Array(pkl);
      bad[pos] ^= mask;
      const want = pickleExpectation(views, roles[pos]!, bad, pos);
      let got: ReturnType<typeof parseTorchCheckpoint>;
      try {
        got = parseTorchCheckpoint(makeTorchCheckpoint(bad, storages), LABEL);
      } catch (e) {
        if (!(e instanceof FormatError) || !e.message.startsWith(`${LABEL}:archive/data.pkl: `)) return t.fail(`pickle byte ${pos} ^ ${mask}: ${(e as Error).stack}`);
        if (want !== 'error' && want !== 'regrouped') return t.fail(`pickle byte ${pos} ^ ${mask} (${roles[pos]!.kind}) should read, but: ${e.message}`);
        counts.refused++;
        continue;
      }
      if (want === 'error') return t.fail(`pickle byte ${pos} ^ ${mask} (${roles[pos]!.kind}) was accepted; it must be refused`);
      if (want === 'regrouped') {
        for (const [name, v] of got) {
          const same = original.filter((o) => tensorDifference(new Map([[o.name, v]]), [o]) === undefined);
          if (same.length === 0) return t.fail(`pickle byte ${pos} ^ ${mask} (structure) read, but ${JSON.stringify(name)} is no tensor of the file`);
        }
        if (tensorDifference(got, original) === undefined) counts.unchanged++;
        else counts.regrouped++;
        continue;
      }
      const diff = tensorDifference(got, want);
      if (diff) return t.fail(`pickle byte ${pos} ^ ${mask} (${roles[pos]!.kind}) read, but ${diff}`);
      if (tensorDifference(got, original) === undefined) counts.unchanged++;
      else counts.explained++;
    }
  }
  t.log(`${pkl.length} pickle bytes x 5 flips: ${counts.refused} refused, ${counts.explained} read as explained, ${counts.regrouped} regrouped, ${counts.unchanged} read unchanged`);
  t.true(counts.refused > 1000 && counts.explained > 100);
});

test('every byte flip in the file is refused naming it, or falls where the reader reads nothing', (t) => {
  const good = checkpoint();
  const roles = zipRoles(good);
  t.is(roles.length, good.length);
  const original = expectedTensors(stateDict())!;
  const counts = { refused: 0, unchanged: 0 };
  for (let pos = 0; pos < good.length; pos++) {
    for (const mask of [0x01, 0x08, 0x40, 0xff]) {
      const bad = new Uint8Array(good);
      bad[pos] ^= mask;
      const want = roles[pos]!(bad[pos]!);
      let got: ReturnType<typeof parseTorchCheckpoint>;
      try {
        got = parseTorchCheckpoint(bad, LABEL);
      } catch (e) {
        if (!(e instanceof FormatError) || !e.message.startsWith(`${LABEL}:`)) return t.fail(`byte ${pos} ^ ${mask}: ${(e as Error).stack}`);
        if (want === 'ignored') return t.fail(`byte ${pos} ^ ${mask} is not read, but: ${e.message}`);
        counts.refused++;
        continue;
      }
      if (want === 'error') return t.fail(`byte ${pos} ^ ${mask} was accepted; it must be refused`);
      const diff = tensorDifference(got, original);
      if (diff) return t.fail(`byte ${pos} ^ ${mask} read, but ${diff}`);
      counts.unchanged++;
    }
  }
  t.log(`${good.length} bytes x 4 flips: ${counts.refused} refused, ${counts.unchanged} read unchanged (bytes nothing reads)`);
  t.true(counts.refused > 2000 && counts.unchanged > 500);
});
