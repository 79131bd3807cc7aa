/**
 * Loading a file into a model: names and shapes are checked against the architecture before any
 * tensor is read, and everything the file makes the loader allocate is charged to one budget of a
 * few times the model's parameter bytes (modelBudget).
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { tempDir } from './helpers/fixtures.js';
import {
  broadcastViewsPth,
  deflatedStoragesPth,
  gluonV1bNames,
  gluonZip,
  memoizedTensorPth,
  safetensorsBytes,
  torchPth,
  torchStateDict,
} from './helpers/weights_fixtures.js';
import { createModel, type Model } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { loadWeights } from '../src/io/weights.js';
import { modelBudget, readTensors } from '../src/convert/convert.js';
import { ByteBudget } from '../src/formats/budget.js';
import { FormatError } from '../src/formats/types.js';
import { UserError } from '../src/errors.js';

test.before(async () => {
  await setupBackend();
});

const MIB = 2 ** 20;

function snapshot(m: Model): Float32Array[] {
  return m.params.names().map((n) => (m.params.get(n).dataSync() as Float32Array).slice());
}

function paramBytes(m: Model): number {
  let n = 0;
  for (const s of m.params.specs.values()) n += 4 * s.shape.reduce((a, b) => a * b, 1);
  return n;
}

test('the model budget is 4 x the float32 bytes of the parameters and buffers + 16 MiB, and says so', (t) => {
  const m = createModel('resnet_test');
  try {
    const b = modelBudget(m, 'w.pth');
    t.is(b.limit, 4 * paramBytes(m) + 16 * MIB);
    t.is(b.rule, `4 x the ${paramBytes(m)} float32 bytes of resnet_test's parameters and buffers + 16 MiB`);
  } finally {
    m.dispose();
  }
});

test('hostile files with names the model lacks are refused before any tensor is read', async (t) => {
  const dir = tempDir(t);
  const m = createModel('resnet_test', { seed: 3 });
  try {
    const before = snapshot(m);
    for (const [name, bytes] of [
      ['broadcast.pth', broadcastViewsPth(64, 2 ** 24)],
      ['memo.pth', memoizedTensorPth(64, 2 ** 24)],
      ['deflated.pth', deflatedStoragesPth(6)],
    ] as const) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, bytes);
      const budget = modelBudget(m, file);
      const err = await t.throwsAsync(loadWeights(m, file, { naming: 'timm', budget }), { instanceOf: UserError });
      t.regex(err!.message, /does not match resnet_test \(timm names\): missing 97: .*; unexpected \d+: w0, w1/, name);
      t.true(err!.message.startsWith(file), err!.message);
      // Only the pickle's own values were charged: no storage was inflated or decoded, no view gathered.
      t.true(budget.peak < MIB, `${name}: peak ${budget.peak}`);
    }
    t.deepEqual(snapshot(m), before, 'no parameter changed');
  } finally {
    m.dispose();
  }
});

test("a file with the model's names and shapes on a 1 GiB deflated storage is refused by the model budget, before inflating", async (t) => {
  const dir = tempDir(t);
  const m = createModel('resnet_test', { seed: 3 });
  try {
    const sd = torchStateDict(m);
    const file = path.join(dir, 'inflates.pth');
    fs.writeFileSync(file, deflatedStoragesPth(1, { oneStorageFor: [...sd].map(([k, v]) => [k, v.shape]) }));
    t.true(fs.statSync(file).size < 2 * MIB);
    const before = snapshot(m);
    const budget = modelBudget(m, file);
    const err = await t.throwsAsync(loadWeights(m, file, { budget }), { instanceOf: FormatError });
    t.is(
      err!.message,
      `${file}: inflating entry 'archive/data/0' needs 1073741824 bytes (1.0 GiB) on top of the ${budget.used} bytes (${(budget.used / 1024).toFixed(1)} KiB) already allocated for this file, past its memory budget of ${budget.limit} bytes (${(budget.limit / MIB).toFixed(1)} MiB) (${budget.rule}); refusing`,
    );
    t.true(budget.peak <= budget.limit);
    t.deepEqual(snapshot(m), before, 'no parameter changed');
  } finally {
    m.dispose();
  }
});

test('a file larger than the model budget is refused before it is read', async (t) => {
  const m = createModel('resnet_test');
  try {
    const file = path.join(tempDir(t), 'big.safetensors');
    const big = new Float32Array(5 * MIB); // 20 MiB beside the model's half megabyte
    fs.writeFileSync(file, safetensorsBytes(torchStateDict(m), { 'extra.weight': { shape: [big.length], data: big } }));
    const budget = modelBudget(m, file);
    const err = await t.throwsAsync(loadWeights(m, file, { budget }), { instanceOf: FormatError });
    t.regex(err!.message, /^.*big\.safetensors: file is \d+ bytes \(20\.\d MiB\), more than its memory budget of \d+ bytes \(18\.\d MiB\) \(4 x the 538248 float32 bytes of resnet_test's parameters and buffers \+ 16 MiB\); refusing to read it$/);
    t.is(budget.peak, 0);
  } finally {
    m.dispose();
  }
});

test('real files load within the budget, and the accounting sees their tensors', async (t) => {
  const dir = tempDir(t);
  const src = createModel('resnet_test', { seed: 5 });
  await trainedLikeInit(src, { seed: 6 });
  const sd = torchStateDict(src);
  const want = snapshot(src);
  const P = paramBytes(src);
  src.dispose();
  const files: [string, Uint8Array][] = [
    ['w.safetensors', safetensorsBytes(sd)],
    ['w.pth', torchPth(sd)],
    ['w.zip', gluonZip(gluonV1bNames(sd))],
  ];
  for (const [name, bytes] of files) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    const m = createModel('resnet_test', { seed: 9 });
    try {
      const budget = modelBudget(m, file);
      const r = await loadWeights(m, file, { budget });
      t.is(r.loaded, 97, name);
      t.deepEqual(snapshot(m), want, `${name}: every value loaded`);
      // Every tensor decoded (P bytes), the convolution and fc weights copied once more into zoo's layout.
      t.true(budget.peak >= P && budget.peak <= 3 * P + MIB, `${name}: peak ${budget.peak} for ${P} parameter bytes`);
      t.log(`${name}: ${bytes.length} bytes, peak charged ${budget.peak} for ${P} parameter bytes (limit ${budget.limit})`);
    } finally {
      m.dispose();
    }
  }
});

test('readTensors takes its options second, as the library documents (readTensors(file, { budget })), or a format there', async (t) => {
  const m = createModel('resnet_test');
  const sd = torchStateDict(m);
  m.dispose();
  const file = path.join(tempDir(t), 'w.safetensors');
  fs.writeFileSync(file, safetensorsBytes(sd));
  const tiny = () => new ByteBudget('w.safetensors', 1000, 'a test budget');
  const err = await t.throwsAsync(readTensors(file, { budget: tiny() }), { instanceOf: UserError });
  t.regex(err!.message, /memory budget of 1000 bytes/);
  await t.throwsAsync(readTensors(file, 'safetensors', { budget: tiny() }), { message: /memory budget of 1000 bytes/ });
  const all = await readTensors(file, { format: 'safetensors' });
  t.is(all.format, 'safetensors');
  t.is(all.tensors.size, sd.size);
  t.is((await readTensors(file)).tensors.size, sd.size);
  const unknown = await t.throwsAsync(readTensors(file, 'tflite' as never), { instanceOf: UserError });
  t.regex(unknown!.message, /w\.safetensors: unknown weights format 'tflite' \(one of safetensors, gluon-zip, params, pth, onnx\)/);
});
