import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseMxnetParams, readGluonZip } from '../src/formats/mxnet.js';
import { FormatError } from '../src/formats/types.js';
import { MX, concat, f32Bytes, makeMxnetParams, makeZip, tempDir, u16Bytes, type MxArrayFixture, type MxFormat } from './helpers/fixtures.js';
import { ELEMENT_SIZE, oracleElements, tensorDifference, type ExpectedTensor } from './helpers/weights_fixtures.js';

const LABEL = 'resnet50_v1d-117a384e.params';

function refuses(t: ExecutionContext, bytes: Uint8Array, fragment: string): FormatError {
  const err = t.throws(() => parseMxnetParams(bytes, LABEL), { instanceOf: FormatError }) as FormatError;
  t.true(err.message.startsWith(`${LABEL}: `), err.message);
  t.true(err.message.includes(fragment), err.message);
  return err;
}

const conv: MxArrayFixture = { name: 'conv1.weight', typeFlag: MX.float32, shape: [2, 1, 1, 2], data: f32Bytes([1, -2, 3.5, 0.25]) };
const gamma: MxArrayFixture = { name: 'bn1.gamma', typeFlag: MX.float16, shape: [3], data: u16Bytes([0x3c00, 0x0001, 0xfc00]) };

function sample(): MxArrayFixture[] {
  return [
    conv,
    gamma,
    { name: 'fc.bias', typeFlag: MX.float64, shape: [2], data: new Uint8Array(new Float64Array([0.1, -1e300]).buffer) },
    { name: 'ids', typeFlag: MX.int64, shape: [2], data: new Uint8Array(new BigInt64Array([-1n, 2n ** 40n]).buffer) },
    { name: 'i32', typeFlag: MX.int32, shape: [1], data: new Uint8Array(new Int32Array([-7]).buffer) },
    { name: 'u8', typeFlag: MX.uint8, shape: [2], data: Uint8Array.from([0, 255]) },
    { name: 'i8', typeFlag: MX.int8, shape: [1], data: Uint8Array.from([0x80]) },
    { name: 'mask', typeFlag: MX.bool, shape: [2], data: Uint8Array.from([1, 0]) },
    { name: 'bf', typeFlag: MX.bfloat16, shape: [1], data: u16Bytes([0xc049]) },
  ];
}

for (const format of ['v2', 'v1', 'legacy'] as MxFormat[]) {
  test(`${format} records of every dtype round trip`, (t) => {
    const out = parseMxnetParams(makeMxnetParams(sample(), { format }), LABEL);
    t.deepEqual(out.warnings, []);
    t.deepEqual([...out.keys()], sample().map((a) => a.name));
    const w = out.get('conv1.weight')!;
    t.is(w.dtype, 'float32');
    t.deepEqual(w.shape, [2, 1, 1, 2]);
    t.deepEqual(Array.from(w.data as Float32Array), [1, -2, 3.5, 0.25]);
    const g = out.get('bn1.gamma')!;
    t.is(g.dtype, 'float16');
    t.deepEqual(Array.from(g.data as Float32Array), [1, 2 ** -24, -Infinity]);
    t.deepEqual(Array.from(out.get('fc.bias')!.data as Float64Array), [0.1, -1e300]);
    t.deepEqual(Array.from(out.get('ids')!.data as BigInt64Array), [-1n, 2n ** 40n]);
    t.deepEqual(Array.from(out.get('i32')!.data as Int32Array), [-7]);
    t.deepEqual(Array.from(out.get('u8')!.data as Uint8Array), [0, 255]);
    t.deepEqual(Array.from(out.get('i8')!.data as Int8Array), [-128]);
    t.is(out.get('mask')!.dtype, 'bool');
    t.deepEqual(Array.from(out.get('bf')!.data as Float32Array), [-3.140625]);
  });
}

test('V3 records (NumPy shapes) read, with scalars and unknown-shape arrays', (t) => {
  const out = parseMxnetParams(
    makeMxnetParams(
      [
        { name: 's', typeFlag: MX.float32, shape: [], data: f32Bytes([4]) },
        { name: 'none', typeFlag: MX.float32, shape: null, data: new Uint8Array(0) },
        { name: 'z', typeFlag: MX.float32, shape: [0, 3], data: new Uint8Array(0) },
      ],
      { format: 'v3' },
    ),
    LABEL,
  );
  t.deepEqual(out.get('s')!.shape, []);
  t.deepEqual(Array.from(out.get('s')!.data as Float32Array), [4]);
  t.deepEqual(out.get('z')!.shape, [0, 3]);
  t.false(out.has('none'));
  t.deepEqual(out.warnings, ["array 'none' is empty (no shape); skipped"]);
});

test('arg:/aux: prefixes are stripped; unnamed arrays are named by index with a warning', (t) => {
  const prefixed = parseMxnetParams(
    makeMxnetParams([
      { ...conv, name: 'arg:conv0_weight' },
      { ...gamma, name: 'aux:bn0_running_mean' },
    ]),
    LABEL,
  );
  t.deepEqual([...prefixed.keys()], ['conv0_weight', 'bn0_running_mean']);
  const unnamed = parseMxnetParams(makeMxnetParams([conv, gamma], { names: false }), LABEL);
  t.deepEqual([...unnamed.keys()], ['0', '1']);
  t.is(unnamed.warnings.length, 1);
  t.regex(unnamed.warnings[0]!, /no names; named by index/);
  refuses(t, makeMxnetParams([{ ...conv, name: 'arg:x' }, { ...gamma, name: 'aux:x' }]), "name 'x' appears twice");
});

test('a file cut short at any point is a truncation error', (t) => {
  const good = makeMxnetParams(sample());
  // Points inside the list header, a record header, a shape, the data, the name list, a name.
  const cuts = [0, 5, 12, 20, 27, 31, 40, 55, 70, good.length - 30, good.length - 9, good.length - 1];
  for (const cut of cuts) refuses(t, good.subarray(0, cut), 'truncated');
  for (let cut = 0; cut < good.length; cut++) {
    t.throws(() => parseMxnetParams(good.subarray(0, cut), LABEL), { instanceOf: FormatError }, `cut at ${cut}`);
  }
});

test('counts larger than the file allows are refused before anything is allocated', (t) => {
  const good = makeMxnetParams([conv]);
  const huge = new Uint8Array(good);
  new DataView(huge.buffer).setBigUint64(16, 2n ** 40n, true);
  refuses(t, huge, 'declares 1099511627776 arrays but only');
  const max = new Uint8Array(good);
  new DataView(max.buffer).setBigUint64(16, 2n ** 64n - 1n, true);
  refuses(t, max, 'array count is 18446744073709551615');
  // A dimension so large the data cannot be in the file.
  const bigDim = makeMxnetParams([{ ...conv, shape: [2 ** 31, 2 ** 31, 4] }]);
  refuses(t, bigDim, 'truncated: array 0 of shape [2147483648, 2147483648, 4] (float32) needs more than');
  // Name count larger than the file.
  const names = new Uint8Array(good);
  const at = good.length - 8 - 'conv1.weight'.length - 8;
  new DataView(names.buffer).setBigUint64(at, 1n, true);
  t.notThrows(() => parseMxnetParams(names, LABEL));
  new DataView(names.buffer).setBigUint64(at, 5n, true);
  refuses(t, names, 'has 1 arrays but 5 names');
  const nameLen = new Uint8Array(good);
  new DataView(nameLen.buffer).setBigUint64(at + 8, 2n ** 40n, true);
  refuses(t, nameLen, 'name 0 needs 1099511627776 bytes');
});

test('bad magic, sparse storage, unknown type flags and odd shapes are refused', (t) => {
  const good = makeMxnetParams([conv]);
  const magic = new Uint8Array(good);
  magic[0] = 0x13;
  refuses(t, magic, 'not an MXNet NDArray file (magic 0x113, expected 0x112)');
  refuses(t, new Uint8Array(Buffer.from('\x89PNG\r\n\x1a\n........', 'latin1')), 'not an MXNet NDArray file');
  refuses(t, makeMxnetParams([{ ...conv, stype: 1 }]), 'array 0 has sparse storage type 1');
  refuses(t, makeMxnetParams([{ ...conv, typeFlag: 9 }]), 'array 0 has type flag 9, which is not supported');
  refuses(t, makeMxnetParams([{ ...conv, shape: [-1, 4] }]), 'array 0 has negative dimension -1');
  // A record with an unknown magic is read as a legacy ndim, which is then absurd.
  const record = new Uint8Array(good);
  new DataView(record.buffer).setUint32(24, 0xdeadbeef, true);
  refuses(t, record, 'unknown record magic 0xdeadbeef');
  const badName = makeMxnetParams([{ ...conv, name: 'x' }]);
  badName[badName.length - 1] = 0xff;
  refuses(t, badName, 'name 0 is not valid UTF-8');
  const trailing = parseMxnetParams(concat([good, Uint8Array.from([0, 0, 0])]), LABEL);
  t.deepEqual(trailing.warnings, ['3 bytes after the name list ignored']);
});

test('a GluonCV zip is opened and its one .params entry parsed', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'resnet50_v1d-117a384e.zip');
  fs.writeFileSync(file, makeZip([{ name: 'resnet50_v1d-117a384e.params', data: makeMxnetParams(sample()), method: 8 }]));
  const out = await readGluonZip(file);
  t.is(out.size, sample().length);
  t.deepEqual(Array.from(out.get('conv1.weight')!.data as Float32Array), [1, -2, 3.5, 0.25]);

  const none = path.join(dir, 'none.zip');
  fs.writeFileSync(none, makeZip([{ name: 'readme.txt', data: new Uint8Array(1) }]));
  const e1 = await t.throwsAsync(readGluonZip(none), { instanceOf: FormatError });
  t.is(e1!.message, `${none}: expected exactly one .params entry, found 0 (entries: 'readme.txt')`);

  const cut = path.join(dir, 'cut.zip');
  const params = makeMxnetParams(sample());
  fs.writeFileSync(cut, makeZip([{ name: 'm.params', data: params.subarray(0, params.length - 20) }]));
  const e2 = await t.throwsAsync(readGluonZip(cut), { instanceOf: FormatError });
  t.true(e2!.message.startsWith(`${cut}:m.params: truncated`), e2!.message);

  const evil = path.join(dir, 'evil.zip');
  fs.writeFileSync(evil, makeZip([{ name: '../m.params', data: params }]));
  await t.throwsAsync(readGluonZip(evil), { instanceOf: FormatError, message: /entry '\.\.\/m\.params' has an unsafe name/ });
});

// ---------------------------------------------------------------------------------------------------
// Byte flips: each one must be refused naming the file, or explained exactly

const TYPE_NAMES = new Map<number, string>(Object.entries(MX).map(([k, v]) => [v, k]));

/** What a flipped byte of the sample file must give: an error, or exactly these tensors (named by index when `unnamed`). */
type Expectation = { error: true } | { tensors: ExpectedTensor[] };

/** The sample file's layout, field by field, as makeMxnetParams writes V2 records (fixtures.ts). */
function expectationsFor(arrays: MxArrayFixture[]): (pos: number, bytes: Uint8Array) => Expectation {
  const original = (): ExpectedTensor[] =>
    arrays.map((a) => ({ name: a.name, dtype: TYPE_NAMES.get(a.typeFlag)!, shape: a.shape!, values: oracleElements(a.data, TYPE_NAMES.get(a.typeFlag)!) }));
  type Field = { start: number; end: number; explain: (bytes: Uint8Array) => Expectation };
  const fields: Field[] = [];
  const error = (): Expectation => ({ error: true });
  const same = (): Expectation => ({ tensors: original() });
  let at = 0;
  const field = (len: number, explain: Field['explain']) => {
    fields.push({ start: at, end: at + len, explain });
    at += len;
  };
  const u32 = (b: Uint8Array, start: number) => new DataView(b.buffer, b.byteOffset).getUint32(start, true);
  field(8, error); // list magic
  field(8, same); // reserved: MXNet ignores it
  field(8, error); // array count
  arrays.forEach((a, i) => {
    const start = at;
    // V2 -> V3 magic changes only how ndim 0 and -1 read, which these arrays do not use.
    field(4, (b) => (u32(b, start) === 0xf993faca ? same() : error()));
    field(4, error); // storage type
    field(4 + 8 * a.shape!.length, error); // ndim and dims
    field(8, same); // device type and id: not used
    const flagAt = at;
    field(4, (b) => {
      const dtype = TYPE_NAMES.get(new DataView(b.buffer, b.byteOffset).getInt32(flagAt, true));
      if (!dtype || ELEMENT_SIZE[dtype] !== ELEMENT_SIZE[TYPE_NAMES.get(a.typeFlag)!]) return error();
      // Another type of the same width: the same bytes read as that type.
      const tensors = original();
      tensors[i] = { ...tensors[i]!, dtype, values: oracleElements(a.data, dtype) };
      return { tensors };
    });
    const dataAt = at;
    field(a.data.length, (b) => {
      const tensors = original();
      tensors[i] = { ...tensors[i]!, values: oracleElements(b.subarray(dataAt, dataAt + a.data.length), tensors[i]!.dtype) };
      return { tensors };
    });
  });
  const countAt = at;
  field(8, (b) => {
    // A name count of 0 is a file without names: the arrays are named by index.
    if (new DataView(b.buffer, b.byteOffset).getBigUint64(countAt, true) !== 0n) return error();
    return { tensors: original().map((t, i) => ({ ...t, name: String(i) })) };
  });
  arrays.forEach((a, i) => {
    const len = Buffer.byteLength(a.name);
    const renamed = (raw: Uint8Array): Expectation => {
      let name: string;
      try {
        name = new TextDecoder('utf-8', { fatal: true }).decode(raw);
      } catch {
        return error();
      }
      if (name.startsWith('arg:') || name.startsWith('aux:')) name = name.slice(4);
      if (arrays.some((o, j) => j !== i && o.name === name)) return error();
      const tensors = original();
      tensors[i] = { ...tensors[i]!, name };
      return { tensors };
    };
    const lenAt = at;
    field(8, (b) => {
      // The last name may shrink: its tail becomes trailing bytes (a warning). Anything else misreads what follows.
      const shorter = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(lenAt, true));
      return i === arrays.length - 1 && shorter < len ? renamed(b.subarray(lenAt + 8, lenAt + 8 + shorter)) : error();
    });
    const nameAt = at;
    field(len, (b) => renamed(b.subarray(nameAt, nameAt + len)));
  });
  return (pos, bytes) => fields.find((f) => pos >= f.start && pos < f.end)!.explain(bytes);
}

test('every byte flip is refused naming the file, or changes the result exactly as it explains', (t) => {
  const arrays = sample();
  const good = makeMxnetParams(arrays);
  const expect = expectationsFor(arrays);
  let refusedCount = 0;
  let explained = 0;
  for (let pos = 0; pos < good.length; pos++) {
    for (const mask of [0x01, 0x02, 0x10, 0x80, 0xff]) {
      const bad = new Uint8Array(good);
      bad[pos] ^= mask;
      const want = expect(pos, bad);
      let got: ReturnType<typeof parseMxnetParams> | undefined;
      try {
        got = parseMxnetParams(bad, LABEL);
      } catch (e) {
        if (!(e instanceof FormatError) || !e.message.startsWith(`${LABEL}: `)) return t.fail(`byte ${pos} ^ ${mask}: ${(e as Error).stack}`);
        if (!('error' in want)) return t.fail(`byte ${pos} ^ ${mask} should read, but: ${e.message}`);
        refusedCount++;
        continue;
      }
      if ('error' in want) return t.fail(`byte ${pos} ^ ${mask} was accepted; it must be refused`);
      const diff = tensorDifference(got, want.tensors);
      if (diff) return t.fail(`byte ${pos} ^ ${mask} read, but ${diff}`);
      explained++;
    }
  }
  t.log(`${good.length} bytes x 5 flips: ${refusedCount} refused, ${explained} read as explained`);
  t.true(refusedCount > 300 && explained > 300);
});
