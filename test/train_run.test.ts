/**
 * The trainer end to end on a small slice of the embedded Fashion-MNIST: loss goes down, the run
 * directory holds what it promises, an interrupted and resumed run ends bit-identical to an
 * uninterrupted one, mixup reaches the teacher, a transient non-finite loss is computed again and
 * leaves no trace, a lasting one stops the run with the checkpoint intact, and nothing leaks.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupBackend } from './helpers/backend.js';
import sharp from 'sharp';
import { train, RUN_FILES, TrainingError, mixupRng, runPreprocessing, type TrainConfig, type EpochRecord } from '../src/train/trainer.js';
import { configDiffs, parseRunConfig } from '../src/train/run_config.js';
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
  await trainedLikeInit(tm);
  const file = path.join(tmp, 'teacher.onnx');
  await writeFileAtomic(file, await exportOnnx(tm, { imageSize: 16 }));
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
  await trainedLikeInit(tm);
  const onnx = path.join(tmp, 'teacher-src.onnx');
  await writeFileAtomic(onnx, await exportOnnx(tm, { imageSize: 16 }));
  const ckpt = path.join(tmp, 'teacher-src.safetensors');
  const opt = new SGD(tm.params);
  await saveCheckpoint(ckpt, tm, opt, { epoch: 1, updateInEpoch: 0, globalUpdate: 10 });
  opt.dispose();
  tm.dispose();
  await addToLocalZoo({
    name: 'my-teacher',
    arch: 'resnet_test',
    onnxBytes: readFileSync(onnx),
    preprocessing: runPreprocessing(16), // what a run at 16x16 records (the graph takes 16x16 images)
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
  await t.throwsAsync(loadTeacher('no-such-teacher', { numClasses: 10 }), { instanceOf: UserError, message: /unknown model 'no-such-teacher'.* --teacher takes/ });

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

/** Rewrites a safetensors file's metadata, keeping its tensors (header offsets are relative to the data). */
function withMetadata(file: string, change: (m: Record<string, string>) => void): void {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown> & { __metadata__: Record<string, string> };
  change(header.__metadata__);
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (text.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  writeFileSync(file, Buffer.concat([len, Buffer.from(text), bytes.subarray(8 + n)]));
}

test.serial('a corrupt run.json, checkpoint or log on resume is a one-line error naming the file', async (t) => {
  const c = config({ epochs: 1 });
  const base = path.join(tmp, 'corrupt-base');
  const first = await train({ config: c, data, outDir: base, workers: 1, export: false, stopAfter: 3 });
  first.model.dispose();
  const cases: [string, (dir: string) => void, RegExp][] = [
    ['run.json not JSON', (d) => writeFileSync(path.join(d, RUN_FILES.config), '{"arch": "resnet_test",'), /run\.json: not JSON/],
    ['run.json an array', (d) => writeFileSync(path.join(d, RUN_FILES.config), '[1, 2]'), /run\.json: not a zoo run configuration \(a JSON array, expected an object\)/],
    ['run.json null', (d) => writeFileSync(path.join(d, RUN_FILES.config), 'null'), /run\.json: not a zoo run configuration \(a JSON null/],
    [
      'run.json with a wrong type',
      (d) => writeFileSync(path.join(d, RUN_FILES.config), JSON.stringify({ ...c, epochs: '1' })),
      /run\.json: not a zoo run configuration \('epochs' is "1", not an integer\)/,
    ],
    [
      'run.json without tricks',
      (d) => writeFileSync(path.join(d, RUN_FILES.config), JSON.stringify({ ...c, tricks: undefined })),
      /run\.json: not a zoo run configuration \('tricks' is missing\)/,
    ],
    ['checkpoint truncated', (d) => writeFileSync(path.join(d, RUN_FILES.checkpoint), readFileSync(path.join(d, RUN_FILES.checkpoint)).subarray(0, 100)), /checkpoint\.safetensors/],
    ['checkpoint not safetensors', (d) => writeFileSync(path.join(d, RUN_FILES.checkpoint), 'PK\u0003\u0004 not a checkpoint at all'), /checkpoint\.safetensors/],
    [
      'checkpoint state not JSON',
      (d) => withMetadata(path.join(d, RUN_FILES.checkpoint), (m) => (m['zoo.checkpoint'] = '{"epoch": 0,')),
      /checkpoint\.safetensors: its 'zoo\.checkpoint' metadata is not JSON/,
    ],
    [
      'checkpoint state of the wrong shape',
      (d) => withMetadata(path.join(d, RUN_FILES.checkpoint), (m) => (m['zoo.checkpoint'] = '{"epoch": "zero", "updateInEpoch": 0, "globalUpdate": 0}')),
      /checkpoint\.safetensors: its run state is not a zoo checkpoint's/,
    ],
    [
      'checkpoint position past the run',
      (d) => withMetadata(path.join(d, RUN_FILES.checkpoint), (m) => (m['zoo.checkpoint'] = '{"epoch": 0, "updateInEpoch": 99, "globalUpdate": 99}')),
      /checkpoint\.safetensors: its position \(epoch 0 update 99, 99 updates done\) does not fit this run of 1 epochs of 10 updates/,
    ],
    ['log with a null record', (d) => writeFileSync(path.join(d, RUN_FILES.log), '{"epoch": 1, "loss": 2}\nnull\n'), /log\.jsonl:2: not an epoch record/],
    ['log not JSON', (d) => writeFileSync(path.join(d, RUN_FILES.log), '{"epoch": 1, "lo'), /log\.jsonl:1: not a JSON record/],
  ];
  const before = tf.memory().numTensors;
  for (const [what, corrupt, message] of cases) {
    const dir = path.join(tmp, `corrupt-${what.replace(/\W+/g, '-')}`);
    cpSync(base, dir, { recursive: true });
    corrupt(dir);
    const e = await t.throwsAsync(train({ config: c, data, outDir: dir, workers: 1, export: false, resume: true }), { instanceOf: UserError }, what);
    if (!e) continue;
    t.regex(e.message, message, what);
    t.false(e.message.includes('\n'), `${what}: one line`);
  }
  t.is(tf.memory().numTensors, before, 'nothing leaks from a refused resume');
  // The untouched copy still resumes.
  const ok = await train({ config: c, data, outDir: base, workers: 1, export: false, resume: true });
  t.true(ok.finished);
  ok.model.dispose();
});

test('resume differences are named by their flags; fields older runs did not record are not compared', (t) => {
  const c = config();
  t.deepEqual(configDiffs(c, c), []);
  const d = configDiffs(c, { ...c, seed: 2, tricks: { ...c.tricks, warmupEpochs: 1 }, data: { ...c.data, train: 100 }, arch: 'resnet18d' });
  t.deepEqual(d, [
    'architecture: "resnet_test" in the run, "resnet18d" now',
    '--warmup: 0 in the run, 1 now',
    '--seed: 1 in the run, 2 now',
    'training images (--data, --limit-train, --val-split): 200 in the run, 100 now',
  ]);
  // A run written before limits were recorded compares by image counts only.
  t.deepEqual(configDiffs(c, { ...c, data: { ...c.data, limitTrain: 200 }, teacherArch: 'resnet_test' }), []);
  t.deepEqual(configDiffs({ ...c, data: { ...c.data, limitTrain: 300 } }, { ...c, data: { ...c.data, limitTrain: 200 } }), ['--limit-train: 300 in the run, 200 now']);
  t.notThrows(() => parseRunConfig(JSON.parse(JSON.stringify(c)), 'run.json'));
});

/** An image folder of two colour classes (train/ and val/), JPEG files. */
async function colourFolder(root: string, perClass: { train: number; val: number }): Promise<void> {
  const colours = { blue: { r: 30, g: 30, b: 220 }, red: { r: 220, g: 30, b: 30 } };
  for (const split of ['train', 'val'] as const) {
    for (const [name, c] of Object.entries(colours)) {
      mkdirSync(path.join(root, split, name), { recursive: true });
      for (let i = 0; i < perClass[split]; i++) {
        const v = (x: number) => Math.max(0, Math.min(255, x + ((i * 37) % 40) - 20));
        await sharp({ create: { width: 24 + i, height: 20 + i, channels: 3, background: { r: v(c.r), g: v(c.g), b: v(c.b) } } })
          .jpeg()
          .toFile(path.join(root, split, name, `${i}.jpg`));
      }
    }
  }
}

/** A JPEG cut in the middle of its scan data: its header (format and size) reads, its pixels do not. */
function truncate(file: string): void {
  const bytes = readFileSync(file);
  const scan = bytes.indexOf(Buffer.from([0xff, 0xda])); // start of scan: the headers end here
  writeFileSync(file, bytes.subarray(0, bytes.length - Math.max(2, Math.floor((bytes.length - scan) / 4))));
}

function folderConfig(folder: TrainingData, over: Omit<Partial<TrainConfig>, 'tricks'> = {}): TrainConfig {
  return config({
    epochs: 2,
    batchSize: 4,
    microBatch: 4,
    data: { spec: 'folder', train: datasetSize(folder.train), val: datasetSize(folder.val), classes: folder.classes },
    ...over,
  });
}

test.serial('a corrupt validation image stops the run before the first epoch, naming it', async (t) => {
  const root = path.join(tmp, 'bad-val');
  await colourFolder(root, { train: 6, val: 3 });
  const bad = path.join(root, 'val', 'red', '1.jpg');
  truncate(bad);
  const junk = path.join(root, 'val', 'blue', '2.jpg');
  writeFileSync(junk, '<html>not found</html>');
  const folder = await openTrainingData(root);
  const events: string[] = [];
  const out = path.join(tmp, 'bad-val-run');
  const e = await t.throwsAsync(
    train({ config: folderConfig(folder), data: folder, outDir: out, workers: 1, export: false, onEvent: (ev) => events.push(ev.type) }),
    { instanceOf: UserError },
  );
  t.is(e!.message.split('\n').length, 1, e!.message);
  t.regex(e!.message, /^2 of 6 validation images cannot be decoded: cannot decode image .*blue\/2\.jpg: .*; cannot decode image .*red\/1\.jpg: /);
  t.false(events.includes('progress'), 'no training happened');
  t.false(existsSync(out), 'nothing was written');
  // The training split's headers are read too: a file that is not an image at all is found at once.
  writeFileSync(bad, readFileSync(path.join(root, 'val', 'red', '0.jpg')));
  writeFileSync(junk, readFileSync(path.join(root, 'val', 'blue', '0.jpg')));
  writeFileSync(path.join(root, 'train', 'red', '4.jpg'), 'GIF89a, not really');
  const e2 = await t.throwsAsync(train({ config: folderConfig(folder), data: folder, outDir: out, workers: 1, export: false }), { instanceOf: UserError });
  t.regex(e2!.message, /^1 of 12 training images cannot be read: cannot read image .*red\/4\.jpg: /);
});

test.serial('a training image that fails to decode mid-run stops it naming the file, with the last checkpoint intact', async (t) => {
  const root = path.join(tmp, 'bad-train');
  await colourFolder(root, { train: 6, val: 2 });
  const folder = await openTrainingData(root);
  const c = folderConfig(folder);
  const out = path.join(tmp, 'bad-train-run');
  const first = await train({ config: c, data: folder, outDir: out, workers: 1, export: false, stopAfter: 2 });
  first.model.dispose();
  // A file cut short after its header passes the check before the first epoch; decoding it fails.
  const bad = path.join(root, 'train', 'blue', '3.jpg');
  truncate(bad);
  const ckpt = path.join(out, RUN_FILES.checkpoint);
  const saved = readFileSync(ckpt);
  const e = await t.throwsAsync(train({ config: c, data: folder, outDir: out, workers: 1, export: false, resume: true }), { instanceOf: TrainingError });
  t.is(e!.message.split('\n').length, 1, e!.message);
  t.regex(e!.message, /^cannot decode image .*blue\/3\.jpg: .* \(epoch [12], update \d of 3\)\. The run stopped; its last checkpoint \(.*checkpoint\.safetensors, update (\d+)\) is intact/);
  const update = Number(/update (\d+)\) is intact/.exec(e!.message)![1]);
  const ck = await readSafetensors(ckpt);
  t.is((JSON.parse(ck.metadata['zoo.checkpoint']!) as { globalUpdate: number }).globalUpdate, update, 'the checkpoint is the one the message names');
  if (update === 2) t.true(readFileSync(ckpt).equals(saved), 'not rewritten');
});
