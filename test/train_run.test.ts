/**
 * The trainer end to end on a small slice of the embedded Fashion-MNIST: loss goes down, the run
 * directory holds what it promises, an interrupted and resumed run ends bit-identical to an
 * uninterrupted one, mixup reaches the teacher, a transient non-finite loss is computed again and
 * leaves no trace, a lasting one stops the run with the checkpoint intact, and nothing leaks.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupBackend } from './helpers/backend.js';
import { train, RUN_FILES, mixupRng, type TrainConfig, type EpochRecord } from '../src/train/trainer.js';
import { balancedPrefix, openTrainingData, type TrainingData } from '../src/train/data.js';
import { RECIPES, type Tricks } from '../src/train/recipes.js';
import { loadTeacher, type Teacher } from '../src/train/teacher.js';
import { readSafetensors } from '../src/formats/safetensors.js';
import { createLoader } from '../src/data/loader.js';
import { trainTransform } from '../src/data/transforms.js';
import { mixup, sampleBeta } from '../src/train/loss.js';
import { createModel } from '../src/models/model.js';
import { exportOnnx } from '../src/onnx/export.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { datasetSize } from '../src/data/dataset.js';
import { UserError } from '../src/errors.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { SGD } from '../src/train/optim.js';
import { addToLocalZoo } from '../src/hub/local.js';
import { DEFAULT_PREPROCESSING } from '../src/predict/predict.js';
import { checkClassOrder } from '../src/predict/target.js';

let data: TrainingData;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-train-'));

test.before(async () => {
  // The local zoo of the teacher test lives in this test's directory (read on first use).
  process.env.ZOO_CACHE = path.join(tmp, 'cache');
  await setupBackend();
  const full = await openTrainingData('fashion');
  data = { ...full, train: balancedPrefix(full.train, 200), val: balancedPrefix(full.val, 100) };
});

test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function config(over: Omit<Partial<TrainConfig>, 'tricks'> & { tricks?: Partial<Tricks> } = {}): TrainConfig {
  const { tricks, ...rest } = over;
  return {
    arch: 'resnet_test',
    recipe: 'baseline',
    tricks: { ...RECIPES.baseline.tricks, ...tricks },
    epochs: 2,
    batchSize: 20,
    microBatch: 20,
    imageSize: 16,
    baseLr: 0.1,
    momentum: 0.9,
    nesterov: true,
    weightDecay: 1e-4,
    seed: 1,
    minCropArea: 0.35,
    data: { spec: 'fashion[200/100]', train: datasetSize(data.train), val: datasetSize(data.val), classes: data.classes },
    ...rest,
  };
}

const readLog = (dir: string): EpochRecord[] =>
  readFileSync(path.join(dir, RUN_FILES.log), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as EpochRecord);

test.serial('a short run lowers the loss, logs every epoch, checkpoints, and exports a checked ONNX file', async (t) => {
  const out = path.join(tmp, 'short');
  const before = tf.memory().numTensors;
  const events: string[] = [];
  const r = await train({
    config: config({ epochs: 3, batchSize: 10, microBatch: 10, tricks: { warmupEpochs: 1, cosine: true } }),
    data,
    outDir: out,
    workers: 1,
    onEvent: (e) => events.push(e.type),
  });
  t.true(r.finished);
  const log = readLog(out);
  t.is(log.length, 3);
  for (const rec of log) for (const k of ['epoch', 'loss', 'lr', 'valTop1', 'valTop5'] as const) t.is(typeof rec[k], 'number', k);
  t.deepEqual(log.map((x) => x.epoch), [1, 2, 3]);
  t.true(log[2]!.loss < 0.8 * log[0]!.loss, `loss ${log.map((x) => x.loss.toFixed(3))}`);
  t.true(log[2]!.valTop1 > 0.3, `val top-1 ${log[2]!.valTop1} (chance 0.1); log ${JSON.stringify(log.map((x) => [x.loss, x.valTop1, x.valLoss]))}`);
  t.true(log[2]!.valTop5 >= log[2]!.valTop1);
  t.true(existsSync(path.join(out, RUN_FILES.checkpoint)) && existsSync(path.join(out, RUN_FILES.config)));
  t.true(r.check!.passed && r.check!.maxAbsDiff <= 1e-4, `export check ${r.check!.maxAbsDiff}`);
  t.true(existsSync(path.join(out, RUN_FILES.onnx)));
  t.deepEqual([...new Set(events)].sort(), ['checkpoint', 'epoch', 'exported', 'progress', 'start', 'validating']);
  // The checkpoint holds the final parameters.
  const ck = await readSafetensors(path.join(out, RUN_FILES.checkpoint));
  const fc = ck.tensors.get('fc.bias')!;
  t.deepEqual(Array.from(new Float32Array(fc.data.buffer, fc.data.byteOffset, fc.data.byteLength / 4)), Array.from(r.model.params.get('fc.bias').dataSync()));
  t.like(JSON.parse(ck.metadata['zoo.checkpoint']!), { epoch: 3, updateInEpoch: 0, globalUpdate: 60 });
  r.model.dispose();
  t.is(tf.memory().numTensors, before, 'tensors leaked by a training run');
});

test.serial('an interrupted and resumed run ends exactly where an uninterrupted run ends', async (t) => {
  // Every source of state: mixup draws, label smoothing, warmup and cosine, accumulation over two micro-batches.
  const c = config({ batchSize: 16, microBatch: 8, tricks: { mixup: 0.2, labelSmoothing: 0.1, warmupEpochs: 1, cosine: true, linearScaling: true, noBiasDecay: true, zeroGamma: true } });
  const whole = path.join(tmp, 'whole');
  const a = await train({ config: c, data, outDir: whole, workers: 1, export: false });
  a.model.dispose();

  const split = path.join(tmp, 'split');
  const first = await train({ config: c, data, outDir: split, workers: 1, export: false, stopAfter: 5 });
  t.false(first.finished);
  first.model.dispose();
  const mid = await readSafetensors(path.join(split, RUN_FILES.checkpoint));
  t.like(JSON.parse(mid.metadata['zoo.checkpoint']!), { epoch: 0, updateInEpoch: 5, globalUpdate: 5 });
  const second = await train({ config: c, data, outDir: split, workers: 1, export: false, resume: true, stopAfter: 9 });
  t.false(second.finished, 'stopped again in the second epoch');
  second.model.dispose();
  const third = await train({ config: c, data, outDir: split, workers: 1, export: false, resume: true });
  t.true(third.finished);
  third.model.dispose();

  const x = await readSafetensors(path.join(whole, RUN_FILES.checkpoint));
  const y = await readSafetensors(path.join(split, RUN_FILES.checkpoint));
  t.deepEqual([...x.tensors.keys()].sort(), [...y.tensors.keys()].sort());
  t.true([...x.tensors.keys()].some((k) => k.startsWith('optimizer.velocity.')), 'momentum is checkpointed');
  let differing = 0;
  const bytes = (d: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) => Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  for (const [k, tx] of x.tensors) if (!bytes(tx.data).equals(bytes(y.tensors.get(k)!.data))) differing++;
  t.is(differing, 0, 'tensors that differ between the resumed and the uninterrupted run');
  t.deepEqual(readLog(split).map((r) => [r.epoch, r.loss, r.lr, r.valTop1, r.valLoss]), readLog(whole).map((r) => [r.epoch, r.loss, r.lr, r.valTop1, r.valLoss]));
});

test.serial('resuming refuses other options, a fresh run refuses a used directory', async (t) => {
  const out = path.join(tmp, 'whole');
  const err = await t.throwsAsync(train({ config: config({ batchSize: 16, microBatch: 8, seed: 2 }), data, outDir: out, resume: true, export: false }), { instanceOf: UserError });
  t.regex(err!.message, /seed: 1 in the run, 2 now/);
  await t.throwsAsync(train({ config: config(), data, outDir: out, export: false }), { message: /already holds a run.*--resume/ });
  await t.throwsAsync(train({ config: config(), data, outDir: path.join(tmp, 'nothing'), resume: true, export: false }), { message: /does not exist/ });
});

/** Wraps a teacher to record what it is shown, and optionally to fail with NaN from a given call. */
function recording(inner: Teacher, nanFromCall = Infinity) {
  const seen: Float32Array[] = [];
  const teacher: Teacher = {
    describe: 'recording',
    async logits(images, n, size) {
      seen.push(images.slice());
      const out = await inner.logits(images, n, size);
      if (seen.length >= nanFromCall) out.fill(Number.NaN);
      return out;
    },
    dispose: () => inner.dispose(),
  };
  return { teacher, seen };
}

test.serial('distillation runs an ONNX teacher in ONNX Runtime on the mixed-up batch', async (t) => {
  const tm = createModel('resnet_test', { numClasses: 10, seed: 9 });
  trainedLikeInit(tm);
  const file = path.join(tmp, 'teacher.onnx');
  await writeFileAtomic(file, exportOnnx(tm, { imageSize: 16 }));
  tm.dispose();
  const { teacher, seen } = recording(await loadTeacher(file, { numClasses: 10 }));
  const c = config({ epochs: 1, tricks: { mixup: 0.2, distill: true, temperature: 5 }, teacher: file });
  const r = await train({ config: c, data, outDir: path.join(tmp, 'distill'), workers: 1, export: false, teacher });
  r.model.dispose();
  t.is(seen.length, 10, 'one teacher call per micro-batch');
  // The first batch as the loader makes it, mixed with the first update's lambda.
  const loader = createLoader({ dataset: data.train, batchSize: 20, transform: trainTransform({ size: 16, scale: [0.35, 1] }), seed: 1, dropLast: true, workers: 0 });
  const first = (await loader.epoch(0).next()).value!;
  await loader.close();
  const lambda = sampleBeta(mixupRng(1, 0), 0.2);
  t.true(lambda > 0 && lambda < 1 && Math.abs(lambda - 0.5) > 1e-3, `lambda ${lambda}`);
  const images = first.images.slice();
  mixup(images, new Float32Array(20 * 10), 20, lambda);
  t.deepEqual(seen[0], images, 'the teacher sees the mixed images');
  t.notDeepEqual(seen[0], first.images);
  t.true(Number.isFinite(readLog(path.join(tmp, 'distill'))[0]!.loss));
  await teacher.dispose();
});

test.serial('a teacher from a weights file (tfjs), an ONNX file and a local zoo name gives the same logits', async (t) => {
  const tm = createModel('resnet_test', { numClasses: 10, seed: 4 });
  trainedLikeInit(tm);
  const onnx = path.join(tmp, 'teacher-src.onnx');
  await writeFileAtomic(onnx, exportOnnx(tm, { imageSize: 16 }));
  const ckpt = path.join(tmp, 'teacher-src.safetensors');
  const opt = new SGD(tm.params);
  await saveCheckpoint(ckpt, tm, opt, { epoch: 1, updateInEpoch: 0, globalUpdate: 10 });
  opt.dispose();
  tm.dispose();
  await addToLocalZoo({
    name: 'my-teacher',
    arch: 'resnet_test',
    onnxBytes: readFileSync(onnx),
    preprocessing: DEFAULT_PREPROCESSING,
    source: { url: ckpt, format: 'zoo-training-run', naming: 'zoo', file: ckpt, sha256: '', sha1: '', bytes: 0 },
    check: { maxAbsDiff: 0, maxAbsLogit: 0, top1Agreement: 1, provider: 'cpu' },
    labels: data.classes.slice(),
  });
  // The teacher's recorded labels must be the training data's, in order.
  const swapped = [data.classes[1]!, data.classes[0]!, ...data.classes.slice(2)];
  await t.throwsAsync(loadTeacher('my-teacher', { numClasses: 10, classes: swapped }), { instanceOf: UserError, message: /class 0 is 'T-shirt\/top' in the teacher my-teacher but 'Trouser'/ });
  // ImageNet folders named by WordNet id match the categories by position.
  t.notThrows(() => checkClassOrder(['tench', 'goldfish'], ['n01440764', 'n01443537'], 'm', 'd'));
  t.throws(() => checkClassOrder(['tench', 'goldfish'], ['n01440764'], 'm', 'd'), { message: /m has 2 classes; d has 1/ });
  await t.throwsAsync(loadTeacher(ckpt, { numClasses: 10 }), { instanceOf: UserError, message: /--teacher-arch/ });
  await t.throwsAsync(loadTeacher('no-such-teacher', { numClasses: 10 }), { instanceOf: UserError, message: /neither a file nor in the local zoo/ });

  const n = 6;
  const images = Float32Array.from({ length: n * 16 * 16 * 3 }, (_, i) => Math.sin(i * 0.37) * 1.5);
  const before = tf.memory().numTensors;
  const outs: Float32Array[] = [];
  for (const [spec, arch] of [[ckpt, 'resnet_test'], [onnx, undefined], ['my-teacher', undefined]] as const) {
    const teacher = await loadTeacher(spec, { numClasses: 10, classes: data.classes, ...(arch ? { arch } : {}) });
    outs.push(await teacher.logits(images, n, 16));
    await teacher.dispose();
  }
  t.is(tf.memory().numTensors, before, 'no tensors leak from the tfjs teacher');
  for (const o of outs) t.is(o.length, n * 10);
  const spread = Math.max(...outs[0]!.map((v) => Math.abs(v)));
  t.true(spread > 0.1, `logits are not all near zero (${spread})`);
  let diff = 0;
  for (let i = 0; i < n * 10; i++) diff = Math.max(diff, Math.abs(outs[0]![i]! - outs[1]![i]!));
  t.true(diff < 1e-4, `tfjs and ONNX Runtime teachers agree within 1e-4 (max |diff| ${diff})`);
  t.deepEqual(outs[2], outs[1], 'the zoo name runs the same ONNX file');
});

test.serial('a non-finite loss that does not recur is computed again from the same state; the run ends as if it had not happened', async (t) => {
  const c = config({ epochs: 1, batchSize: 16, microBatch: 8, tricks: { mixup: 0.2, labelSmoothing: 0.1 } });
  const clean = await train({ config: c, data, outDir: path.join(tmp, 'clean'), workers: 1, export: false });
  clean.model.dispose();

  // A transient fault: one NaN written into the output of one training-mode batch norm, once.
  const backendName = tf.getBackend();
  const original = tf.getKernel('ZooBatchNormTrain', backendName)!;
  t.truthy(original, 'the batch-norm training kernel to wrap');
  let calls = 0;
  let poisoned = 0;
  tf.unregisterKernel('ZooBatchNormTrain', backendName);
  tf.registerKernel({
    ...original,
    kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) => {
      const out = original.kernelFunc(args) as tf.TensorInfo | tf.TensorInfo[];
      if (++calls === 50) {
        const y = Array.isArray(out) ? out[0]! : out;
        const b = args.backend as unknown as { typedArrayFromHeap?: (i: tf.TensorInfo) => Float32Array; data: { get(id: unknown): { values: Float32Array } } };
        const values = b.typedArrayFromHeap ? b.typedArrayFromHeap(y) : b.data.get(y.dataId).values;
        values[0] = NaN;
        poisoned++;
      }
      return out;
    }) as tf.KernelFunc,
  });
  const notices: string[] = [];
  try {
    const r = await train({
      config: c,
      data,
      outDir: path.join(tmp, 'fault'),
      workers: 1,
      export: false,
      onEvent: (e) => {
        if (e.type === 'notice') notices.push(e.message);
      },
    });
    r.model.dispose();
  } finally {
    tf.unregisterKernel('ZooBatchNormTrain', backendName);
    tf.registerKernel(original);
  }
  t.is(poisoned, 1);
  t.is(notices.filter((n) => /did not recur when the micro-batch was computed again/.test(n)).length, 1, notices.join('\n'));
  const log = readLog(path.join(tmp, 'fault'));
  t.is(log[0]!.recomputed, 1);
  // Batch-norm statistics were restored before the recomputation: every tensor ends bit-identical.
  const x = await readSafetensors(path.join(tmp, 'clean', RUN_FILES.checkpoint));
  const y = await readSafetensors(path.join(tmp, 'fault', RUN_FILES.checkpoint));
  const bytes = (d: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) => Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  const differing = [...x.tensors].filter(([k, tx]) => !bytes(tx.data).equals(bytes(y.tensors.get(k)!.data))).map(([k]) => k);
  t.deepEqual(differing, [], 'tensors that differ from the run without the fault');
  t.deepEqual(log.map((r) => [r.loss, r.valTop1]), readLog(path.join(tmp, 'clean')).map((r) => [r.loss, r.valTop1]));
});

test.serial('a non-finite loss stops the run naming the update, and the last checkpoint stays intact', async (t) => {
  const tm = createModel('resnet_test', { numClasses: 10 });
  const inner: Teacher = {
    describe: 'tfjs',
    async logits(images, n, size) {
      const y = tf.tidy(() => tm.forward(tf.tensor4d(images, [n, size, size, 3])));
      const v = (await y.data()) as Float32Array;
      y.dispose();
      return v;
    },
    async dispose() {},
  };
  const { teacher } = recording(inner, 4);
  const out = path.join(tmp, 'nan');
  await inner.logits(new Float32Array(2 * 16 * 16 * 3), 2, 16); // builds the teacher's folded-BN cache first
  const before = tf.memory().numTensors;
  const err = await t.throwsAsync(
    train({ config: config({ epochs: 1, tricks: { distill: true, temperature: 2 }, teacher: 'nan' }), data, outDir: out, workers: 1, export: false, teacher, checkpointEvery: 1 }),
    { instanceOf: UserError },
  );
  t.regex(err!.message, /loss became NaN at update 4 \(epoch 1, update 4 of 10.*the teacher's logits are not finite/);
  t.is(tf.memory().numTensors, before, 'nothing leaks when a run fails');
  const ck = await readSafetensors(path.join(out, RUN_FILES.checkpoint));
  t.like(JSON.parse(ck.metadata['zoo.checkpoint']!), { globalUpdate: 3 });
  for (const [k, v] of ck.tensors) {
    const f = new Float32Array(v.data.buffer.slice(v.data.byteOffset, v.data.byteOffset + v.data.byteLength));
    t.true(f.every(Number.isFinite), `${k} is finite`);
  }
  tm.dispose();
});

test('configuration errors are clear', async (t) => {
  const run = (c: TrainConfig) => train({ config: c, data, outDir: path.join(tmp, 'never'), export: false });
  await t.throwsAsync(run(config({ batchSize: 20, microBatch: 8 })), { message: /multiple of --micro-batch/ });
  await t.throwsAsync(run(config({ tricks: { warmupEpochs: 5 } })), { message: /--warmup 5 is longer than the run/ });
  await t.throwsAsync(run(config({ batchSize: 400, microBatch: 400 })), { message: /fewer than one batch/ });
  await t.throwsAsync(run(config({ arch: 'resnet51' })), { message: /resnet51/ });
  await t.throwsAsync(run(config({ tricks: { distill: true } })), { message: /no teacher/ });
  t.false(existsSync(path.join(tmp, 'never', RUN_FILES.log)));
});
