/**
 * ONNX export checked in onnxruntime-node, and import back into tfjs.
 *
 * Networks are given a trained-like initialization (models/calibrate.ts): on a freshly initialized
 * deep ResNet every float32 implementation differs from every other by about 1e-4 (rounding amplified
 * by the residual stream), which would test the initialization rather than the export.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { createModel, type Model } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { exportOnnx } from '../src/onnx/export.js';
import { checkExport, checkInput, toNCHW } from '../src/onnx/check.js';
import { importOnnxFile, decodeModel } from '../src/onnx/import.js';
import { createSession, runClassifier } from '../src/runtime/ort.js';
import { DataType } from '../src/onnx/proto.js';
import { UserError } from '../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-onnx-'));

test.before(async () => {
  await setupBackend();
});

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

async function prepared(arch: string, options: Parameters<typeof createModel>[1] = {}): Promise<Model> {
  const m = createModel(arch, options);
  await trainedLikeInit(m);
  return m;
}

test.serial('resnet50d at 224x224: FP32 logits match tfjs within 1e-4 in ONNX Runtime', async (t) => {
  const m = await prepared('resnet50d');
  try {
    const r = await checkExport(m, await exportOnnx(m, { imageSize: 224 }), { imageSize: 224, batch: 2 });
    t.log(`max |diff| ${r.maxAbsDiff.toExponential(2)}, max |logit| ${r.maxAbsLogit.toFixed(2)}`);
    t.true(r.maxAbsLogit > 3, 'logits of ordinary magnitude');
    t.true(r.maxAbsDiff <= 1e-4, `max |diff| ${r.maxAbsDiff}`);
    t.is(r.top1Agreement, 1);
    t.true(r.passed);
  } finally {
    m.dispose();
  }
});

test.serial('resnet50d FP16 export agrees on the top-1 class (decisive images) and is half the size', async (t) => {
  const m = await prepared('resnet50d');
  try {
    const fp32 = await exportOnnx(m, { imageSize: 224 });
    const fp16 = await exportOnnx(m, { imageSize: 224, fp16: true });
    t.true(fp16.length < 0.6 * fp32.length);
    const r = await checkExport(m, fp16, { imageSize: 224, batch: 8, fp16: true });
    t.log(`FP16: max |diff| ${r.maxAbsDiff.toFixed(4)}, top-1 ${r.top1Agreement * 100}% of 8, decisive ${r.decisive}`);
    t.true(r.decisive >= 6, `at least 6 of 8 images decisive, got ${r.decisive}`);
    t.is(r.decisiveAgreement, 1);
    t.true(r.passed);
  } finally {
    m.dispose();
  }
});

const tinyCases: { label: string; size: number; options: Parameters<typeof exportOnnx>[1]; model?: Parameters<typeof createModel>[1] }[] = [
  { label: 'FP32, 64x64', size: 64, options: {} },
  { label: 'FP32 at an odd size (72: ceil-mode average pools over odd maps)', size: 72, options: {} },
  { label: 'batch norm folded', size: 64, options: { foldBatchNorm: true } },
  { label: 'output stride 8 (dilated)', size: 64, options: {}, model: { outputStride: 8 } },
  { label: 'output stride 16 (dilated)', size: 80, options: {}, model: { outputStride: 16 } },
];

for (const c of tinyCases) {
  test.serial(`resnet_test export matches tfjs within 1e-4: ${c.label}`, async (t) => {
    const m = await prepared('resnet_test', c.model);
    try {
      const r = await checkExport(m, await exportOnnx(m, { imageSize: c.size, ...c.options }), { imageSize: c.size, batch: 3 });
      t.true(r.maxAbsDiff <= 1e-4, `max |diff| ${r.maxAbsDiff}`);
      t.true(r.maxAbsLogit > 1);
      t.is(r.top1Agreement, 1);
    } finally {
      m.dispose();
    }
  });
}

for (const arch of ['resnet18', 'resnet50', 'resnet50b', 'resnet50c', 'resnet34e']) {
  test.serial(`${arch} export matches tfjs within 1e-4 (every stem, shortcut and block type)`, async (t) => {
    const m = await prepared(arch);
    try {
      const r = await checkExport(m, await exportOnnx(m, { imageSize: 96 }), { imageSize: 96, batch: 2 });
      t.true(r.maxAbsDiff <= 1e-4, `max |diff| ${r.maxAbsDiff}`);
    } finally {
      m.dispose();
    }
  });
}

test.serial('the graph: opset 17, input NCHW with a dynamic batch axis, output logits, parameters as initializers', async (t) => {
  const m = createModel('resnet_test');
  try {
    const proto = decodeModel(await exportOnnx(m, { imageSize: 64 }), 'export');
    t.is(Number(proto.opsetImport[0]!.version), 17);
    const input = proto.graph!.input![0]!;
    t.is(input.name, 'input');
    const dims = input.type!.tensorType!.shape!.dim!;
    t.is(dims[0]!.dimParam, 'batch');
    t.deepEqual(dims.slice(1).map((d) => Number(d.dimValue)), [3, 64, 64]);
    t.is(input.type!.tensorType!.elemType, DataType.FLOAT);
    t.is(proto.graph!.output![0]!.name, 'logits');
    const names = new Set(proto.graph!.initializer!.map((i) => i.name));
    for (const n of m.params.names()) t.true(names.has(n), n);
    const conv = proto.graph!.initializer!.find((i) => i.name === 'conv1.0.weight')!;
    t.deepEqual(conv.dims!.map(Number), [8, 3, 3, 3], 'OIHW');
  } finally {
    m.dispose();
  }
});

test.serial('dynamic height and width: one file runs at two sizes', async (t) => {
  const m = await prepared('resnet_test');
  try {
    const s = await createSession(await exportOnnx(m, { dynamicSize: true }), { provider: 'cpu' });
    for (const size of [48, 80]) {
      const x = checkInput(1, size, size, 3, size);
      const y = m.forward(tf.tensor4d(x, [1, size, size, 3]));
      const want = y.dataSync();
      y.dispose();
      const got = await runClassifier(s, toNCHW(x, 1, size, size, 3), [1, 3, size, size]);
      let d = 0;
      for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(want[i]! - got[i]!));
      t.true(d <= 1e-4, `${size}: ${d}`);
    }
    await s.session.release();
  } finally {
    m.dispose();
  }
});

test.serial('round trip tfjs -> ONNX -> tfjs is exact', async (t) => {
  for (const arch of ['resnet_test', 'resnet18d']) {
    const a = await prepared(arch, { seed: 1 });
    const b = createModel(arch, { seed: 2 });
    try {
      const bytes = await exportOnnx(a, { imageSize: 64 });
      const path = join(dir, `${arch}.onnx`);
      writeFileSync(path, bytes);
      const r = await importOnnxFile(b, path);
      t.is(r.loaded, a.params.names().length);
      t.deepEqual(r.unexpected, []);
      let differing = 0;
      for (const name of a.params.names()) {
        const va = a.params.get(name).dataSync();
        const vb = b.params.get(name).dataSync();
        if (va.length !== vb.length || va.some((v, i) => !Object.is(v, vb[i]))) differing++;
      }
      t.is(differing, 0, 'parameters that differ after the round trip');
      t.true(Buffer.from(await exportOnnx(b, { imageSize: 64 })).equals(Buffer.from(bytes)), 'exporting the imported model gives the same bytes');
    } finally {
      a.dispose();
      b.dispose();
    }
  }
});

test.serial('import refuses folded, FP16 and mismatched files without changing the model', async (t) => {
  const a = createModel('resnet_test', { seed: 1 });
  const b = createModel('resnet_test', { seed: 2 });
  const other = createModel('resnet18');
  try {
    const before = Array.from(b.params.get('fc.weight').dataSync());
    const cases: [string, Uint8Array, RegExp][] = [
      ['folded.onnx', await exportOnnx(a, { foldBatchNorm: true }), /batch norm was folded/],
      ['fp16.onnx', await exportOnnx(a, { fp16: true, foldBatchNorm: false }), /FP16 export/],
      // --fp16 folds batch norm by default: the message names the FP16 export, not a flag never given.
      ['fp16-folded.onnx', await exportOnnx(a, { fp16: true }), /FP16 export does not hold the float32 parameters; import the FP32 export/],
      ['resnet18.onnx', await exportOnnx(other, { imageSize: 64 }), /does not match resnet_test \(zoo names\): missing .*mis-shaped/],
      ['garbage.onnx', new Uint8Array([1, 2, 3, 4, 5, 255, 255]), /not a readable ONNX model/],
    ];
    for (const [file, bytes, re] of cases) {
      const path = join(dir, file);
      writeFileSync(path, bytes);
      const e = await t.throwsAsync(importOnnxFile(b, path), { instanceOf: UserError });
      t.regex(e!.message, re, file);
      t.true(e!.message.includes(path), `${file}: the message names the file`);
    }
    await t.throwsAsync(importOnnxFile(b, join(dir, 'missing.onnx')), { message: /no such file/ });
    t.deepEqual(Array.from(b.params.get('fc.weight').dataSync()), before);
  } finally {
    [a, b, other].forEach((m) => m.dispose());
  }
});
