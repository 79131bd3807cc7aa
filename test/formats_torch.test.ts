import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseTorchCheckpoint, readTorchCheckpoint } from '../src/formats/torch.js';
import { FormatError } from '../src/formats/types.js';
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

test('legacy checkpoints, non-torch zips, TorchScript archives and big-endian storages are refused', (t) => {
  refuses(t, new PickleWriter().proto(2).int(0x1950a86a20f9469cfc6cn).bytes(), 'legacy (pre-1.6, non-zip) torch checkpoint');
  refuses(t, makeZip([{ name: 'readme.txt', data: new Uint8Array(1) }]), 'not a torch.save checkpoint: no <prefix>/data.pkl entry');
  const script = new PickleWriter().proto(2).global('__torch__.torchvision.models.resnet', 'ResNet').op(0x2e).bytes();
  refuses(t, makeTorchCheckpoint(script, []), "refusing to load '__torch__.torchvision.models.resnet.ResNet'");
  refuses(t, makeTorchCheckpoint(torchStateDictPickle(stateDict()), storages, { byteorder: 'big' }), "storages are 'big'-endian");
  t.is(parseTorchCheckpoint(makeTorchCheckpoint(torchStateDictPickle(stateDict()), storages, { byteorder: 'little' }), LABEL).size, 6);
});

test('byte flips end in a FormatError or a valid result, never a crash', (t) => {
  const good = checkpoint();
  let seed = 5;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  // Flip bytes of the pickle itself (rebuilding the zip so the CRC matches), then anywhere in the file.
  const pkl = torchStateDictPickle(stateDict(), { metadata: true });
  for (let i = 0; i < 800; i++) {
    const bad = new Uint8Array(pkl);
    for (let k = 0; k <= rand(2); k++) bad[rand(bad.length)] = rand(256);
    const bytes = i % 4 === 3 ? flipped(good, rand) : makeTorchCheckpoint(bad, storages);
    try {
      parseTorchCheckpoint(bytes, LABEL);
    } catch (e) {
      if (!(e instanceof FormatError)) return t.fail(`flip ${i}: ${(e as Error).stack}`);
    }
  }
  t.pass();
});

function flipped(good: Uint8Array, rand: (n: number) => number): Uint8Array {
  const bad = new Uint8Array(good);
  bad[rand(bad.length)] = rand(256);
  return bad;
}
