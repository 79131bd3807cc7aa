/**
 * The WebGPU backend against the wasm backend: gradients of every parameter, a short training run
 * through zoo's own trainer (loss curve, accuracy, the exported file), device errors becoming
 * exceptions, the binding-size check before a run, and tensor leaks.
 *
 * On machines without a GPU this runs on Mesa's lavapipe (a Vulkan driver on the CPU; .ci/run
 * installs it and sets ZOO_TEST_WEBGPU=1 so that a missing adapter fails instead of skipping).
 * Models are created on each backend from the same values: moving a tensor off the WebGPU backend
 * would need a synchronous read, which Node cannot do there.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { webgpuTest } from './helpers/webgpu.js';
import { tinyResNet as tiny } from './helpers/backend.js';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { WebGpuError, activeWebGpu } from '../src/backend/webgpu.js';
import { Model } from '../src/models/model.js';
import type { ResNetConfig } from '../src/models/resnet.js';
import { train } from '../src/api/train.js';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/util/random.js';

const maybe = webgpuTest('WebGPU backend');


/** Loss and the gradient of every trainable parameter, read back asynchronously. */
async function lossAndGrads(config: ResNetConfig, values: Map<string, Float32Array>, x: Float32Array, labels: Int32Array, shape: [number, number, number, number]) {
  const m = new Model('test', config, { seed: 7 });
  try {
    for (const [n, v] of values) m.params.setValues(n, v);
    const before = tf.memory().numTensors;
    const names = [...m.params.trainable().keys()];
    const { value, grads } = tf.variableGrads(
      () => tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(labels, 'int32'), 10), m.forward(tf.tensor4d(x, shape), { mode: 'train' })) as tf.Scalar,
      [...m.params.trainable().values()],
    );
    const loss = (await value.data())[0]!;
    const g = new Map<string, Float32Array>();
    for (const n of names) g.set(n, (await grads[m.params.get(n).name]!.data()) as Float32Array);
    tf.dispose([value, ...Object.values(grads)]);
    return { loss, grads: g, leaked: tf.memory().numTensors - before };
  } finally {
    m.dispose();
  }
}

const configs: [string, ResNetConfig][] = [
  ['ResNet-D bottleneck', tiny({})],
  ['ResNet-A bottleneck (7x7 stem, stride in the 1x1 conv)', tiny({ stemType: '', stemWidth: 16, strideIn: '1x1', avgDown: false })],
  ['ResNet-B basic blocks', tiny({ block: 'basic', stemType: '', stemWidth: 16, strideIn: '3x3', avgDown: false })],
  ['ResNet-D dilated to output stride 8', tiny({ outputStride: 8 })],
];

for (const [label, config] of configs) {
  maybe(`gradients of every parameter, ${label}: webgpu = wasm`, async (t) => {
    const size = 48;
    const batch = 4;
    const shape: [number, number, number, number] = [batch, size, size, 3];
    await initBackend({ backend: 'wasm', purpose: 'training' });
    const init = new Model('test', config, { seed: 7 });
    const values = init.params.toMap();
    init.dispose();
    const rng = new Rng(11);
    const x = Float32Array.from({ length: batch * size * size * 3 }, () => rng.normal());
    const labels = Int32Array.from({ length: batch }, () => rng.int(10));
    const ref = await lossAndGrads(config, values, x, labels, shape);
    await initBackend({ backend: 'webgpu', purpose: 'training' });
    const got = await lossAndGrads(config, values, x, labels, shape);
    t.is(got.leaked, 0, 'tensors left behind on webgpu');
    t.is(ref.leaked, 0, 'tensors left behind on wasm');
    t.true(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.max(1, Math.abs(ref.loss)), `loss ${got.loss} vs ${ref.loss}`);
    // L2-relative per parameter (see gradients.test.ts for why not max-abs: ReLU masks flip where a
    // pre-activation lies within float32 noise of 0).
    let worst = 0;
    let worstName = '';
    for (const [n, b] of ref.grads) {
      const a = got.grads.get(n)!;
      let num = 0;
      let den = 1e-12;
      for (let k = 0; k < b.length; k++) {
        num += (a[k]! - b[k]!) ** 2;
        den += b[k]! ** 2;
      }
      const rel = Math.sqrt(num / den);
      if (!(rel <= worst)) {
        worst = rel;
        worstName = n;
      }
    }
    t.log(`loss ${got.loss.toFixed(6)} (wasm ${ref.loss.toFixed(6)}); largest L2-relative gradient difference ${worst.toExponential(2)} (${worstName}) over ${ref.grads.size} parameters`);
    t.true(worst < 1e-3, `${worstName}: ${worst}`);
  });
}

maybe('a short training run through the trainer: the loss curve, accuracy and exported file match the wasm backend', async (t) => {
  const runs: Record<string, { losses: number[]; top1: number; loss: number; onnx: Buffer }> = {};
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-webgpu-'));
  try {
    for (const backend of ['wasm', 'webgpu']) {
      const losses: number[] = [];
      const out = await train(
        {
          arch: 'resnet_test',
          data: 'fashion',
          limitTrain: 96,
          limitVal: 40,
          epochs: 2,
          batchSize: 16,
          imageSize: 32,
          seed: 3,
          warmup: false,
          mixup: false,
          distill: false,
          out: path.join(dir, backend),
          workers: 1,
          backend,
        },
        { onProgress: (p) => losses.push(p.loss) },
      );
      const last = out.records.at(-1)!;
      runs[backend] = { losses, top1: last.valTop1, loss: last.loss, onnx: readFileSync(out.onnx!) };
    }
    const a = runs.webgpu!;
    const b = runs.wasm!;
    t.is(a.losses.length, b.losses.length);
    t.true(a.losses.length >= 8, `${a.losses.length} updates`);
    const rel = Math.max(...a.losses.map((l, i) => Math.abs(l - b.losses[i]!) / Math.abs(b.losses[i]!)));
    t.log(`losses webgpu ${a.losses.map((l) => l.toFixed(4)).join(' ')}`);
    t.log(`losses wasm   ${b.losses.map((l) => l.toFixed(4)).join(' ')}`);
    t.log(`largest relative difference over the curve ${rel.toExponential(2)}; val top-1 webgpu ${a.top1}, wasm ${b.top1}`);
    t.true(rel < 1e-3, `loss curves differ by ${rel}`);
    t.true(Math.abs(a.top1 - b.top1) <= 1 / 40 + 1e-9, `val top-1 ${a.top1} vs ${b.top1}`);
    t.true(a.onnx.length > 10_000 && Math.abs(a.onnx.length - b.onnx.length) < 64, 'exported files of the same network');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

maybe('a tensor larger than the device binds fails with a WebGpuError at the next read, not with wrong numbers', async (t) => {
  await initBackend({ backend: 'webgpu' });
  const limit = activeWebGpu()!.limits.maxStorageBufferBindingSize;
  const n = Math.floor(limit / 4) + 1024;
  if (n * 4 > 2 ** 31) {
    t.log(`the device binds ${limit} bytes: too large to exceed in a test`);
    t.pass();
    return;
  }
  const y = tf.tidy(() => tf.add(tf.fill([n], 1), 2));
  await t.throwsAsync(() => y.data(), { instanceOf: WebGpuError, message: /storage-buffer binding limit|binding size/i });
  y.dispose();
  // The device stays unusable: every later read says so rather than returning zeros.
  const small = tf.scalar(1);
  await t.throwsAsync(() => small.data(), { instanceOf: WebGpuError });
  small.dispose();
  // A new device after releasing the old one works again.
  releaseBackend();
  await initBackend({ backend: 'webgpu' });
  t.deepEqual([...(await tf.add(tf.scalar(1), 2).data())], [3]);
});

maybe('a micro-batch whose largest tensor the device cannot bind is refused before the run, with the largest that fits', async (t) => {
  const limit = (await initBackend({ backend: 'webgpu' })).webgpu!.limits.maxStorageBufferBindingSize;
  // resnet50d's largest tensor at 224x224 is 56*56*256 floats (3 MiB) per image.
  const perImage = 56 * 56 * 256 * 4;
  const batch = Math.floor(limit / perImage) + 1;
  if (batch > 512) {
    t.log(`the device binds ${limit} bytes: a refusing micro-batch would be ${batch}`);
    t.pass();
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-webgpu-fit-'));
  try {
    const e = await t.throwsAsync(
      () => train({ arch: 'resnet50d', data: 'fashion', limitTrain: batch * 2, limitVal: 20, epochs: 1, batchSize: batch, microBatch: batch, imageSize: 224, warmup: false, out: dir, backend: 'webgpu', export: false }),
      { instanceOf: UserError },
    );
    t.regex(e!.message, new RegExp(`--micro-batch ${batch - 1} or smaller`));
    t.regex(e!.message, /--image-size \d+ at this batch/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

maybe('wasm, then webgpu, then releaseBackend(), then auto: the same wasm module comes back with its tensors', async (t) => {
  await initBackend({ backend: 'wasm' });
  const x = tf.tensor([1, 2, 3]);
  await initBackend({ backend: 'webgpu' });
  releaseBackend();
  const info = await initBackend({});
  t.is(info.name, 'wasm');
  t.deepEqual([...(await x.data())], [1, 2, 3]);
  x.dispose();
});

test.serial("auto with exclusions turns zoo's native kernels off for that job and on again after", async (t) => {
  releaseBackend();
  const first = await initBackend({ backend: 'wasm' });
  const a = await initBackend({});
  const b = await initBackend({ exclude: ['tfjs-node-gpu', 'tfjs-node', 'native'] });
  t.is(b.choice, 'wasm');
  t.is(b.name, first.name);
  const c = await initBackend({});
  t.is(c.choice, a.choice, 'auto without exclusions returns to what it chose before');
});

test.after.always(() => releaseBackend());
