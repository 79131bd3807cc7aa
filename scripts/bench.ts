/**
 * `npm run bench`: speed of ResNet-50-D on this machine.
 *
 * Measures, with medians over several runs after warm-up:
 *   tfjs forward (inference) at batch 16, 224x224;
 *   tfjs training step (forward, backward, Nesterov SGD update) at batch 4, 224x224 and batch 32, 32x32;
 *   ONNX Runtime (onnxruntime-node) inference at batch 1 and 16, 224x224;
 *   the full training step with the data pipeline (loader workers decoding and augmenting ahead of the
 *   trainer) against the bare step on a fixed batch, at the same two shapes: Fashion-MNIST images with
 *   the paper's augmentation at 32x32, and JPEG files decoded and augmented at 224x224;
 * and, where Debian's python3-torch is installed, PyTorch CPU on the same shapes with the same number
 * of threads, printing each tfjs/ORT figure as a ratio to PyTorch measured in the same run.
 * Then the detection part (scripts/bench-detection.ts): the exported ResNet-50-D Faster R-CNN in
 * onnxruntime-node at 600x1000 beside torchvision's FasterRCNN in the same configuration
 * (`--no-detection` skips it; `node dist/scripts/bench-detection.js` runs it alone), and the
 * segmentation part (scripts/bench-seg.ts): the exported FCN-ResNet-50 (output stride 8) in
 * onnxruntime-node at 480x480 beside torchvision's fcn_resnet50 (`--no-segmentation` skips it;
 * `node dist/scripts/bench-seg.js` runs it alone).
 * Writes the figures as JSON (default bench-results/bench.json). `--profile` adds a per-kernel
 * breakdown of one training step at each shape.
 *
 * `--backend webgpu` times the training step on the WebGPU backend instead (scripts/bench-webgpu.ts:
 * batch 32 and 64 at 224x224, where the time goes, the fixes tried, PyTorch on the same device) and
 * writes bench-results/bench-webgpu.json; the rows above read tensors synchronously, which Node
 * cannot do on WebGPU.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { Command } from 'commander';
import { initBackend, describeBackend, activeWasmModule, setMixedPrecision, releaseBackend } from '../src/backend/index.js';
import { UserError } from '../src/errors.js';
import { setNativeKernelsEnabled } from '../src/backend/native/kernels.js';
import { nativeEnvironmentRemoved } from '../src/backend/native/addon.js';
import { createModel, type Model } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { exportOnnx } from '../src/onnx/export.js';
import { createSession, runClassifier } from '../src/runtime/ort.js';
import { SGD } from '../src/train/optim.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { Rng } from '../src/util/random.js';
import { fail, table } from '../zoo/run.js';
import { createLoader } from '../src/data/loader.js';
import { trainTransform } from '../src/data/transforms.js';
import { embeddedFashionDatasets } from '../src/data/embedded.js';
import { openImageFolder } from '../src/data/image_folder.js';
import type { ImageDataset } from '../src/data/dataset.js';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { benchDetection, describeDetection, type DetectionBenchResult } from './bench-detection.js';
import { benchSegmentation, describeSegmentation, type SegmentationBenchResult } from './bench-seg.js';
import { findPython, median, scriptPath } from './bench_common.js';
import { addWebGpuOptions, enqueueTrainStep, runWebGpuBench, type WebGpuCliOptions } from './bench-webgpu.js';

interface PipelineResult {
  name: string;
  batch: number;
  size: number;
  bareSeconds: number;
  fullSeconds: number;
  /** full / bare - 1: what the data pipeline adds to a step (target <= 0.10). */
  overhead: number;
}

/** A folder of JPEG photos-like images (smooth gradients with noise, 500x375), train/<class>/*.jpg. */
async function makeJpegFolder(dir: string, count: number): Promise<void> {
  const rng = new Rng(4);
  for (let i = 0; i < count; i++) {
    const cls = path.join(dir, 'train', `class${i % 4}`);
    mkdirSync(cls, { recursive: true });
    const [w, h] = [500, 375];
    const px = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let c = 0; c < 3; c++) px[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, ((x * (c + 1) + y * (3 - c)) >> 2) % 256 + 24 * rng.normal()));
    await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toFile(path.join(cls, `${i}.jpg`));
  }
  mkdirSync(path.join(dir, 'val'), { recursive: true });
}

/**
 * Bare step (a fixed batch already in memory) against the full step (the next batch from the loader,
 * its workers running alongside, then the same step), alternated run by run so that drift in the
 * machine's speed hits both alike.
 */
async function pipelineCase(m: Model, opt: SGD, dataset: ImageDataset, batch: number, size: number, runs: number): Promise<PipelineResult> {
  const loader = createLoader({ dataset, batchSize: batch, transform: trainTransform({ size }), seed: 3, dropLast: true });
  const labelsOf = (ys: ArrayLike<number>) => tf.oneHot(tf.tensor1d(Array.from(ys, (y) => y % 1000), 'int32'), 1000) as tf.Tensor2D;
  const fixedX = tf.tensor4d(randomImages(batch, size, 7), [batch, size, size, 3]);
  const fixedY = labelsOf(Array.from({ length: batch }, (_, i) => i));
  let it = loader.epoch(0);
  let epoch = 0;
  const nextBatch = async () => {
    let r = await it.next();
    if (r.done) {
      it = loader.epoch(++epoch);
      r = await it.next();
    }
    return r.value!;
  };
  const full = async () => {
    const b = await nextBatch();
    const x = tf.tensor4d(b.images, [b.count, size, size, 3]);
    const y = labelsOf(b.labels);
    trainStep(m, opt, x, y);
    tf.dispose([x, y]);
  };
  const bare: number[] = [];
  const fulls: number[] = [];
  await full(); // warm-up: workers started, first batches in flight
  trainStep(m, opt, fixedX, fixedY);
  for (let r = 0; r < runs; r++) {
    let t = performance.now();
    trainStep(m, opt, fixedX, fixedY);
    bare.push((performance.now() - t) / 1000);
    t = performance.now();
    await full();
    fulls.push((performance.now() - t) / 1000);
  }
  await loader.close();
  tf.dispose([fixedX, fixedY]);
  const b = median(bare);
  const f = median(fulls);
  return { name: `data+train b${batch} ${size}`, batch, size, bareSeconds: b, fullSeconds: f, overhead: f / b - 1 };
}

interface CaseResult {
  name: string;
  kind: 'forward' | 'train' | 'ort';
  batch: number;
  size: number;
  seconds: number;
  times: number[];
  imagesPerSecond: number;
  torchImagesPerSecond?: number;
  /** PyTorch with the model and input in channels_last memory. */
  torchChannelsLastImagesPerSecond?: number;
  /** PyTorch under bf16 autocast (the --fp16 rows). */
  torchAutocastImagesPerSecond?: number;
  ratio?: number;
  target?: number;
}

async function timeRuns(fn: () => Promise<void> | void, runs: number, warmup: number): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    times.push((performance.now() - t) / 1000);
  }
  return times;
}

function randomImages(batch: number, size: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: batch * size * size * 3 }, () => rng.normal());
}

/** One training step: forward in training mode, cross-entropy, gradients, Nesterov SGD update, the loss read. */
function trainStep(m: Model, opt: SGD, x: Tensor4D, labels: tf.Tensor2D): void {
  const value = enqueueTrainStep(m, opt, x, labels);
  value.dataSync();
  value.dispose();
}

interface TorchCase {
  kind: string;
  batch: number;
  size: number;
  warmup: number;
  /** 'channels_last' runs the model and input in NHWC memory (oneDNN's preferred layout). */
  layout?: 'channels_last';
  /** Mixed precision: torch.autocast('cpu', bfloat16). */
  autocast?: boolean;
}

function torchPeer(threads: number, runs: number, cases: TorchCase[]) {
  const python = findPython(['torch']);
  if (!python) return undefined;
  // PyTorch runs with the environment the user gave, not the OpenMP settings zoo made for its addon.
  const out = execFileSync(python, [scriptPath('bench_torch.py'), JSON.stringify({ threads, runs, cases })], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    env: nativeEnvironmentRemoved(process.env),
  });
  return JSON.parse(out) as { torch: string; threads: number; cases: (TorchCase & { imagesPerSecond: number })[] };
}

async function profileStep(m: Model, opt: SGD, batch: number, size: number): Promise<string> {
  const x = tf.tensor4d(randomImages(batch, size, 5), [batch, size, size, 3]);
  const labels = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 1000), 'int32'), 1000) as tf.Tensor2D;
  trainStep(m, opt, x, labels);
  const t = performance.now();
  const prof = await tf.profile(() => trainStep(m, opt, x, labels));
  const wall = performance.now() - t;
  const agg = new Map<string, { ms: number; n: number }>();
  for (const k of prof.kernels) {
    const a = agg.get(k.name) ?? { ms: 0, n: 0 };
    const ms = await k.kernelTimeMs;
    a.ms += typeof ms === "number" ? ms : 0;
    a.n++;
    agg.set(k.name, a);
  }
  tf.dispose([x, labels]);
  const rows = [...agg].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12);
  return `training step, batch ${batch}, ${size}x${size}: ${wall.toFixed(0)} ms (profiled)\n${table(
    rows.map(([k, a]) => [k, a.ms.toFixed(1), String(a.n), `${((100 * a.ms) / wall).toFixed(1)}%`]),
    ['kernel', 'ms', 'calls', 'share'],
  )}`;
}

async function main(): Promise<void> {
  const command = addWebGpuOptions(new Command('bench'))
    .option('--runs <n>', 'timed runs per case (default 5; with --backend webgpu 10, 3 on a fallback adapter)', (v) => Number(v))
    .option('--out <file>', 'JSON output', 'bench-results/bench.json')
    .option('--no-torch', 'skip the PyTorch peer')
    .option('--no-detection', 'skip the detection benchmark')
    .option('--no-segmentation', 'skip the segmentation benchmark')
    .option('--profile', 'print a per-kernel breakdown of the training steps')
    .option('--backend <name>', 'compute backend (default: auto)')
    .option('--no-compare-wasm', 'with the native kernels: skip the same cases on the wasm kernels alone')
    .parse(process.argv);
  const opts = command.opts<
    { runs?: number; out: string; torch: boolean; detection: boolean; segmentation: boolean; profile?: boolean; backend?: string; compareWasm: boolean } & WebGpuCliOptions
  >();
  const info = await initBackend({ ...(opts.backend ? { backend: opts.backend } : {}), purpose: 'training' });
  const threads = info.threads;
  if (info.name === 'webgpu') {
    console.log(`${describeBackend(info)}; ${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores`);
    const out = command.getOptionValueSource('out') === 'default' ? 'bench-results/bench-webgpu.json' : opts.out;
    try {
      await runWebGpuBench({ ...opts, out }, info);
    } finally {
      releaseBackend();
    }
    return;
  }
  const runs = opts.runs ?? 5;
  if (!Number.isInteger(runs) || runs < 1) throw new UserError(`--runs takes a positive integer, got '${opts.runs}'`, { exitCode: 2 });
  console.log(`${describeBackend(info)}; ${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores; ${runs} runs per case`);
  const results: CaseResult[] = [];
  const record = (name: string, kind: CaseResult['kind'], batch: number, size: number, times: number[]) => {
    const seconds = median(times);
    const r = { name, kind, batch, size, seconds, times, imagesPerSecond: batch / seconds };
    results.push(r);
    console.log(`  ${name}: ${r.imagesPerSecond.toFixed(2)} images/s (median of ${times.length}: ${(seconds * 1000).toFixed(0)} ms)`);
  };

  const m = createModel('resnet50d');
  await trainedLikeInit(m);

  // tfjs forward, batch 16 at 224.
  {
    const x = tf.tensor4d(randomImages(16, 224, 1), [16, 224, 224, 3]);
    const times = await timeRuns(() => {
      const y = m.forward(x);
      y.dataSync();
      y.dispose();
    }, runs, 1);
    record('tfjs forward b16 224', 'forward', 16, 224, times);
    x.dispose();
  }
  // tfjs training steps.
  const opt = new SGD(m.params, { momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
  let peakHeap = 0;
  for (const [batch, size] of [
    [4, 224],
    [8, 224],
    [32, 32],
  ] as const) {
    const x = tf.tensor4d(randomImages(batch, size, 2), [batch, size, size, 3]);
    const labels = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => (i * 37) % 1000), 'int32'), 1000) as tf.Tensor2D;
    const times = await timeRuns(() => trainStep(m, opt, x, labels), runs, 1);
    record(`tfjs train step b${batch} ${size}`, 'train', batch, size, times);
    const heap = activeWasmModule()?.wasmMemory.buffer.byteLength;
    if (heap) peakHeap = Math.max(peakHeap, heap);
    tf.dispose([x, labels]);
  }
  // The same cases on the wasm kernels alone (what a machine without oneDNN's headers gets), and the
  // training steps under --fp16 where the CPU computes bf16.
  const wasmOnly: CaseResult[] = [];
  const fp16: CaseResult[] = [];
  if (info.native && opts.compareWasm) {
    setNativeKernelsEnabled(false);
    try {
      console.log('  the same on the wasm kernels (--backend wasm):');
      for (const r of results.filter((c) => c.kind === 'forward' || c.kind === 'train')) {
        const x = tf.tensor4d(randomImages(r.batch, r.size, 2), [r.batch, r.size, r.size, 3]);
        const labels = tf.oneHot(tf.tensor1d(Array.from({ length: r.batch }, (_, i) => (i * 37) % 1000), 'int32'), 1000) as tf.Tensor2D;
        const times = await timeRuns(
          () => {
            if (r.kind === 'train') return trainStep(m, opt, x, labels);
            const y = m.forward(x);
            y.dataSync();
            y.dispose();
          },
          runs,
          1,
        );
        tf.dispose([x, labels]);
        const seconds = median(times);
        wasmOnly.push({ ...r, name: `${r.name} (wasm kernels)`, seconds, times, imagesPerSecond: r.batch / seconds });
        console.log(`  ${r.name} on the wasm kernels: ${(r.batch / seconds).toFixed(2)} images/s`);
      }
    } finally {
      setNativeKernelsEnabled(true);
    }
  }
  const mixed = setMixedPrecision(true);
  try {
    if (mixed.bf16) {
      for (const r of results.filter((c) => c.kind === 'train')) {
        const x = tf.tensor4d(randomImages(r.batch, r.size, 2), [r.batch, r.size, r.size, 3]);
        const labels = tf.oneHot(tf.tensor1d(Array.from({ length: r.batch }, (_, i) => (i * 37) % 1000), 'int32'), 1000) as tf.Tensor2D;
        const times = await timeRuns(() => trainStep(m, opt, x, labels), runs, 1);
        tf.dispose([x, labels]);
        const seconds = median(times);
        fp16.push({ ...r, name: `${r.name} --fp16`, seconds, times, imagesPerSecond: r.batch / seconds });
        console.log(`  ${r.name} --fp16 (bf16): ${(r.batch / seconds).toFixed(2)} images/s`);
      }
    } else {
      console.log(`  --fp16: ${mixed.reason}; no mixed-precision figures`);
    }
  } finally {
    setMixedPrecision(false);
  }

  // The data pipeline's cost: full step against bare step.
  const pipeline: PipelineResult[] = [];
  {
    const fashion = (await embeddedFashionDatasets()).train;
    const jpegDir = mkdtempSync(path.join(os.tmpdir(), 'zoo-bench-jpeg-'));
    try {
      await makeJpegFolder(jpegDir, 48);
      const folder = await openImageFolder(jpegDir, { valFraction: 0 });
      for (const [dataset, batch, size, label] of [
        [fashion, 32, 32, 'Fashion-MNIST, 28x28 grayscale'],
        [folder.train, 4, 224, 'JPEG 500x375'],
      ] as const) {
        // The overhead is a small difference between two noisy figures: a median over 15 or more pairs
        // (5 pairs gave anything from 0% to 15% on the same build).
        const r = await pipelineCase(m, opt, dataset, batch, size, Math.max(3 * runs, 15));
        pipeline.push(r);
        console.log(
          `  ${r.name} (${label}): full step ${(r.fullSeconds * 1000).toFixed(0)} ms vs bare ${(r.bareSeconds * 1000).toFixed(0)} ms: data pipeline ${(100 * r.overhead).toFixed(1)}% (target <= 10%)`,
        );
      }
    } finally {
      rmSync(jpegDir, { recursive: true, force: true });
    }
  }
  if (opts.profile) {
    for (const [b, s] of [
      [4, 224],
      [32, 32],
    ] as const) console.log(`\n${await profileStep(m, opt, b, s)}`);
    if (info.native) {
      // The same steps on the wasm kernels, for the breakdown before the native ones.
      setNativeKernelsEnabled(false);
      try {
        for (const [b, s] of [
          [4, 224],
          [32, 32],
        ] as const) console.log(`\non the wasm kernels: ${await profileStep(m, opt, b, s)}`);
      } finally {
        setNativeKernelsEnabled(true);
      }
    }
  }
  opt.dispose();

  // ONNX Runtime inference.
  {
    const s = await createSession(await exportOnnx(m, { imageSize: 224 }), { provider: 'auto' });
    for (const batch of [1, 16]) {
      const x = randomImages(batch, 224, 3);
      const times = await timeRuns(async () => {
        await runClassifier(s, x, [batch, 3, 224, 224]);
      }, batch === 1 ? runs * 4 : runs, 2);
      record(`onnxruntime-node (${s.provider}) b${batch} 224`, 'ort', batch, 224, times);
    }
    await s.session.release();
  }
  m.dispose();

  // PyTorch peer.
  let torch: ReturnType<typeof torchPeer>;
  if (opts.torch) {
    console.log('PyTorch peer...');
    const base: TorchCase[] = [
      { kind: 'forward', batch: 16, size: 224, warmup: 1 },
      { kind: 'train', batch: 4, size: 224, warmup: 1 },
      { kind: 'train', batch: 8, size: 224, warmup: 1 },
      { kind: 'train', batch: 32, size: 32, warmup: 2 },
      { kind: 'forward', batch: 1, size: 224, warmup: 3 },
    ];
    torch = torchPeer(threads, runs, [
      ...base,
      ...base.filter((c) => c.batch > 1).map((c) => ({ ...c, layout: 'channels_last' as const })),
      ...(fp16.length ? base.filter((c) => c.kind === 'train').map((c) => ({ ...c, autocast: true })) : []),
    ]);
    if (!torch) console.log('  python3-torch not found (apt-get install python3-torch): no ratios');
  }
  // Targets: the native kernels at least match PyTorch (and --fp16 beats its FP32 by half and matches its
  // bf16 autocast); the wasm kernels alone were held to half of it in training, 0.7 forward.
  const targets: Record<string, number> = info.native ? { forward: 1.0, train: 1.0, ort: 1.5 } : { forward: 0.7, train: 0.5, ort: 1.5 };
  const peerOf = (r: CaseResult, extra: Partial<TorchCase> = {}) =>
    torch?.cases.find(
      (c) =>
        (r.kind === 'train' ? c.kind === 'train' : c.kind === 'forward') &&
        c.batch === r.batch &&
        c.size === r.size &&
        (c.layout ?? null) === (extra.layout ?? null) &&
        !!c.autocast === !!extra.autocast,
    );
  for (const r of [...results, ...wasmOnly]) {
    const peer = peerOf(r);
    if (peer) {
      r.torchImagesPerSecond = peer.imagesPerSecond;
      r.ratio = r.imagesPerSecond / peer.imagesPerSecond;
      r.target = wasmOnly.includes(r) ? ({ forward: 0.7, train: 0.5 } as Record<string, number>)[r.kind]! : targets[r.kind]!;
    }
    const cl = peerOf(r, { layout: 'channels_last' });
    if (cl) r.torchChannelsLastImagesPerSecond = cl.imagesPerSecond;
  }
  for (const r of fp16) {
    const peer = peerOf(r);
    const auto = peerOf(r, { autocast: true });
    if (peer) {
      r.torchImagesPerSecond = peer.imagesPerSecond;
      r.ratio = r.imagesPerSecond / peer.imagesPerSecond;
      r.target = 1.5;
    }
    if (auto) r.torchAutocastImagesPerSecond = auto.imagesPerSecond;
  }
  const all = [...results, ...wasmOnly, ...fp16];
  const autocastColumn = fp16.length > 0;
  console.log(
    `\n${table(
      all.map((r) => [
        r.name,
        r.imagesPerSecond.toFixed(2),
        r.torchImagesPerSecond?.toFixed(2) ?? '-',
        r.ratio !== undefined ? `${r.ratio.toFixed(2)}x` : '-',
        r.torchChannelsLastImagesPerSecond ? `${(r.imagesPerSecond / r.torchChannelsLastImagesPerSecond).toFixed(2)}x` : '-',
        ...(autocastColumn
          ? [r.torchAutocastImagesPerSecond ? `${(r.imagesPerSecond / r.torchAutocastImagesPerSecond).toFixed(2)}x (>= 1x ${r.imagesPerSecond >= r.torchAutocastImagesPerSecond ? 'met' : 'NOT met'})` : '-']
          : []),
        r.target !== undefined ? `>= ${r.target}x ${r.ratio! >= r.target ? 'met' : 'NOT met'}` : '-',
      ]),
      [
        'case (resnet50d)',
        'images/s',
        `PyTorch ${torch ? `${torch.torch}, ${torch.threads} threads` : ''}`,
        'ratio',
        'vs channels_last',
        ...(autocastColumn ? ['vs bf16 autocast'] : []),
        'target',
      ],
      { width: 160 },
    )}`,
  );
  for (const r of pipeline) {
    console.log(`${r.name}: data pipeline adds ${(100 * r.overhead).toFixed(1)}% to the step (target <= 10%: ${r.overhead <= 0.1 ? 'met' : 'NOT met'})`);
  }
  if (peakHeap) console.log(`wasm heap after training steps: ${(peakHeap / 2 ** 30).toFixed(2)} GiB (limit 4 GiB)`);
  let detection: DetectionBenchResult | null = null;
  if (opts.detection) {
    console.log('\nDetection: Faster R-CNN ResNet-50-D C4, 600x1000, onnxruntime-node and PyTorch alternately...');
    detection = await benchDetection({ runs, threads, torch: opts.torch });
    console.log(describeDetection(detection));
  }
  let segmentation: SegmentationBenchResult | null = null;
  if (opts.segmentation) {
    console.log('\nSegmentation: FCN ResNet-50 output stride 8, 480x480, onnxruntime-node and PyTorch alternately...');
    segmentation = await benchSegmentation({ runs, threads, torch: opts.torch });
    console.log(describeSegmentation(segmentation));
  }
  await writeFileAtomic(
    opts.out,
    JSON.stringify({ date: new Date().toISOString(), backend: info, cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), torch: torch ?? null, wasmHeapBytes: peakHeap || null, results, wasmKernels: wasmOnly, fp16, pipeline, detection, segmentation }, null, 2),
  );
  console.log(`wrote ${opts.out}`);
}

main().catch(fail);
