/**
 * ONNX files whose initializers cannot be read (data in an external file, a raw size that does not
 * match dims and type, negative or absurd dims, a name twice, a type that holds no weights) are
 * user errors naming the file, from the library and from `zoo import` (exit code 1, one line).
 */
import test from 'ava';
import { runZoo } from './helpers/cli.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { tempDir } from './helpers/fixtures.js';
import { createModel } from '../src/models/model.js';
import { exportOnnx } from '../src/onnx/export.js';
import { importOnnxFile } from '../src/onnx/import.js';
import { decodeModel, onnx, tensorValues, DataType, type OnnxNs } from '../src/onnx/proto.js';
import { loadWeights } from '../src/io/weights.js';
import { float16ToFloat32 } from '../src/util/float16.js';
import { UserError } from '../src/errors.js';

test.before(async () => {
  await setupBackend();
});

/** A resnet_test export with one initializer changed by `edit`. */
async function edited(edit: (t: OnnxNs.ITensorProto, all: OnnxNs.ITensorProto[]) => void): Promise<Uint8Array> {
  const m = createModel('resnet_test', { seed: 1 });
  try {
    const proto = decodeModel(await exportOnnx(m, { imageSize: 64 }), 'export');
    const inits = proto.graph!.initializer!;
    edit(inits.find((t) => t.name === 'fc.weight')!, inits);
    return onnx.ModelProto.encode(proto).finish();
  } finally {
    m.dispose();
  }
}

const cases: [string, (t: OnnxNs.ITensorProto, all: OnnxNs.ITensorProto[]) => void, RegExp][] = [
  [
    'external.onnx',
    (t) => {
      t.rawData = new Uint8Array(0);
      t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      t.externalData = [{ key: 'location', value: 'weights.bin' }, { key: 'offset', value: '0' }];
    },
    /: initializer 'fc\.weight' keeps its data in an external file \('weights\.bin'\); only ONNX files with their weights inside can be read$/,
  ],
  ['short.onnx', (t) => void (t.rawData = t.rawData!.subarray(0, t.rawData!.length - 4)), /: initializer 'fc\.weight' has \d+ bytes of raw data but dims \[\d+, \d+\] need \d+ float32 values$/],
  ['negative.onnx', (t) => void (t.dims = [-1, ...t.dims!.slice(1)]), /: initializer 'fc\.weight' has dims \[-1, \d+\], which are not the sizes of a tensor in a file$/],
  ['absurd.onnx', (t) => void (t.dims = [2 ** 40, 2 ** 40]), /: initializer 'fc\.weight' has dims \[1099511627776, 1099511627776\], which are not the sizes/],
  ['twice.onnx', (t, all) => void all.push({ ...t }), /: initializer 'fc\.weight' appears twice$/],
  ['int64.onnx', (t) => void (t.dataType = DataType.INT64), /: initializer 'fc\.weight' has data type 7; only float32 initializers hold the parameters/],
];

test('unreadable initializers are one-line user errors naming the file, and leave the model unchanged', async (t) => {
  const dir = tempDir(t);
  const m = createModel('resnet_test', { seed: 2 });
  try {
    const before = Array.from(m.params.get('fc.weight').dataSync());
    for (const [name, edit, message] of cases) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, await edited(edit));
      for (const load of [() => loadWeights(m, file), () => importOnnxFile(m, file)]) {
        const err = await t.throwsAsync(load(), { instanceOf: UserError });
        t.true(err!.message.startsWith(`${file}: `), err!.message);
        t.regex(err!.message, message, name);
        t.false(err!.message.includes('\n'));
      }
    }
    t.deepEqual(Array.from(m.params.get('fc.weight').dataSync()), before);
    // The edits are what broke them: the same export unedited loads.
    const good = path.join(dir, 'good.onnx');
    fs.writeFileSync(good, await edited(() => {}));
    t.is((await loadWeights(m, good)).loaded, 97);
  } finally {
    m.dispose();
  }
});

test('tensorValues refuses what a file can get wrong with a UserError naming it', (t) => {
  const ok = { name: 'w', dims: [2], dataType: DataType.FLOAT, rawData: new Uint8Array(new Float32Array([1, 2]).buffer) };
  t.deepEqual(Array.from(tensorValues(ok, float16ToFloat32, 'm.onnx')), [1, 2]);
  t.deepEqual(Array.from(tensorValues({ name: 'f', dims: [2], dataType: DataType.FLOAT, floatData: [3, 4] }, float16ToFloat32, 'm.onnx')), [3, 4]);
  const bad: [OnnxNs.ITensorProto, RegExp][] = [
    [{ ...ok, rawData: new Uint8Array(7) }, /^m\.onnx: initializer "w" has 7 bytes of raw data but dims \[2\] need 2 float32 values/],
    [{ ...ok, dims: [-2] }, /^m\.onnx: initializer "w" has dims \[-2\]/],
    [{ ...ok, dims: [2 ** 33] }, /^m\.onnx: initializer "w" has dims \[8589934592\]/],
    [{ ...ok, rawData: new Uint8Array(0), externalData: [{ key: 'location', value: 'x.bin' }] }, /external file \("x\.bin"\)/],
    [{ ...ok, dataType: DataType.INT64 }, /has data type 7/],
    [{ name: 'f', dims: [3], dataType: DataType.FLOAT, floatData: [3, 4] }, /has 2 float values but dims \[3\] need 3 values/],
    [{ name: 'h', dims: [2], dataType: DataType.FLOAT16, rawData: new Uint8Array(2) }, /has 2 bytes of raw data but dims \[2\] need 2 float16 values/],
  ];
  for (const [tensor, message] of bad) {
    const err = t.throws(() => tensorValues(tensor, float16ToFloat32, 'm.onnx'), { instanceOf: UserError });
    t.regex(err!.message, message);
  }
});


const zoo = (...args: string[]) => runZoo(args);

test('zoo import of such a file exits 1 with one line naming it, not as a bug in zoo', async (t) => {
  const dir = tempDir(t);
  for (const [name, edit] of [cases[0]!, cases[1]!]) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, await edited(edit));
    const r = await zoo('import', file, '--arch', 'resnet_test', '-o', path.join(dir, 'out.onnx'));
    t.is(r.code, 1, r.stderr);
    const lines = r.stderr.split('\n').filter((l) => l.includes(`${file}: initializer 'fc.weight'`));
    t.is(lines.length, 1, r.stderr);
    t.false(/bug in zoo|internal error/i.test(r.stderr), r.stderr);
    t.false(fs.existsSync(path.join(dir, 'out.onnx')));
  }
});

test("integer initializers that are graph constants (a segmenter's label offset) are not parameters: the file still imports", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'with-constant.onnx');
  fs.writeFileSync(
    file,
    await edited((_t, all) => void all.push({ name: 'seg_label_offset', dataType: DataType.INT64, dims: [], int64Data: [1] })),
  );
  const m = createModel('resnet_test', { seed: 2 });
  try {
    await loadWeights(m, file);
    const want = createModel('resnet_test', { seed: 1 });
    t.deepEqual(Array.from(m.params.get('fc.weight').dataSync()), Array.from(want.params.get('fc.weight').dataSync()));
    want.dispose();
  } finally {
    m.dispose();
  }
});
