/**
 * `npm run bench -- --backend webgpu` (or `node dist/scripts/bench-webgpu.js`): the ResNet-50-D training
 * step on the WebGPU backend, where its time goes, and what the fixes tried on it change.
 *
 * The step is the one the other bench rows time (scripts/bench.ts): zoo's model forward in training
 * mode, cross-entropy, tf.variableGrads, zoo's SGD (Nesterov, weight decay) and the read-back of the
 * loss, on a fixed batch already on the device. images/s is batch / the median step time after
 * warm-up. Where the time goes, per case:
 *   JS dispatch  the time until the step's last program is enqueued (tfjs records, encodes and submits
 *                every program from JavaScript; Dawn validates each);
 *   GPU kernels  the sum of the programs' execution times, from timestamp queries (tf.time), in one
 *                more step run with every program in its own timed pass;
 *   the rest     wall time less GPU kernel time: dispatch not hidden behind the GPU, the wait for the
 *                read-back, and the GPU idling between submissions.
 *
 * The variants are the fixes tried, alternated run by run in one process so that the machine's load
 * falls on all alike:
 *   baseline       as zoo trains today: one loss read per step;
 *   read-every-N   N steps enqueued before their losses are read together (one read per N steps);
 *   submit-N       tfjs's WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE at N programs per submission (default 15);
 *   fused          batch norm (forward and backward), the ReLU gradient and SGD as fused WGSL
 *                  programs (scripts/bench-webgpu-kernels.ts) instead of compositions of core ops;
 *   im2col         the convolution filter gradient as im2col + one matrix product;
 * joined with '+' (fused+im2col+read-every-4). Each fused kernel is checked against zoo's composed
 * path before anything is timed.
 *
 * Beside it, where python3 has torch: PyTorch on the same device in the same run, alternated with
 * zoo's runs, the same step in plain PyTorch (scripts/bench_torch.py): CUDA where
 * torch.cuda.is_available(), FP32 (TF32 off) and PyTorch's default (TF32 convolutions); else the CPU,
 * labelled so (a fallback adapter such as lavapipe is itself the CPU).
 *
 * On a fallback adapter (lavapipe: the CPU, with host memory as device memory) a 224x224 step of batch
 * 32 takes ten minutes or more and about 1 GiB an image, and batch 64 does not fit its 128 MiB binding
 * limit, so the default cases there are smaller and the output says so; `--webgpu-batches 32,64
 * --webgpu-image-size 224` asks for the full ones.
 */
import * as tf from '@tensorflow/tfjs-core';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { initBackend, releaseBackend, describeBackend, type BackendInfo } from '../src/backend/index.js';
import { activeWebGpu, adapterName, formatBytes, maxBindingBytes, WebGpuError } from '../src/backend/webgpu.js';
import { createModel, type Model } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { countNetwork } from '../src/models/count.js';
import { SGD } from '../src/train/optim.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { Rng } from '../src/util/random.js';
import { UserError } from '../src/errors.js';
import { fail, table } from '../zoo/run.js';
import { findPython, median, TorchPeer } from './bench_common.js';
import { checkKernels, installFusedKernels, installIm2colFilterGrad } from './bench-webgpu-kernels.js';

/** One training step of zoo's training code, enqueued; returns the loss tensor (not yet read). */
export function enqueueTrainStep(m: Model, opt: SGD, x: tf.Tensor4D, labels: tf.Tensor2D): tf.Scalar {
  const vars = [...m.params.trainable()];
  const { value, grads } = tf.variableGrads(
    () => tf.losses.softmaxCrossEntropy(labels, m.forward(x, { mode: 'train' })) as tf.Scalar,
    vars.map(([, v]) => v),
  );
  opt.step(new Map(vars.map(([n, v]) => [n, grads[v.name]!])), 0.01);
  tf.dispose(Object.values(grads));
  return value;
}

/** A variant: which fixes are on. */
export interface Variant {
  name: string;
  fused: boolean;
  im2col: boolean;
  /** Steps per loss read. */
  readEvery: number;
  /** WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE, or undefined for tfjs's default. */
  submitBatch?: number;
}

/** Parses 'fused+im2col+read-every-4' (tokens: baseline, fused, im2col, read-every-N, submit-N). */
export function parseVariant(name: string): Variant {
  const v: Variant = { name, fused: false, im2col: false, readEvery: 1 };
  for (const token of name.split('+')) {
    let m: RegExpExecArray | null;
    if (token === 'baseline') continue;
    else if (token === 'fused') v.fused = true;
    else if (token === 'im2col') v.im2col = true;
    else if ((m = /^read-every-(\d+)$/.exec(token)) && Number(m[1]) >= 1 && Number(m[1]) <= 64) v.readEvery = Number(m[1]);
    else if ((m = /^submit-(\d+)$/.exec(token)) && Number(m[1]) >= 1) v.submitBatch = Number(m[1]);
    else {
      throw new UserError(`--webgpu-variants: unknown variant '${token}' in '${name}' (baseline, fused, im2col, read-every-N with N 1..64, submit-N; joined with '+')`, { exitCode: 2 });
    }
  }
  return v;
}

/** The defaults: each fix alone, then all together. */
export const DEFAULT_VARIANTS = ['baseline', 'read-every-4', 'submit-64', 'fused', 'im2col', 'fused+im2col+read-every-4'];
/** On a fallback adapter (minutes a step): fewer, shorter variants. */
export const FALLBACK_VARIANTS = ['baseline', 'read-every-2', 'fused', 'fused+im2col'];

export interface GpuTime {
  /** Sum of every program's execution time in one step (ms). */
  kernelMs: number;
  /** Programs dispatched in one step. */
  programs: number;
  /** [program class, ms, count], largest first. */
  byProgram: [string, number, number][];
}

export interface VariantResult {
  variant: string;
  /** Seconds per step, run by run (a run of read-every-N is N steps, its time divided by N). */
  times: number[];
  /** Median seconds per step. */
  seconds: number;
  imagesPerSecond: number;
  /** Median JavaScript time to enqueue one step (ms). */
  dispatchMs: number;
  /** GPU time of one step with this variant's programs. */
  gpu?: GpuTime;
  /** Median over runs of baseline time / this variant's time in the same run. */
  speedupVsBaseline?: number;
  finalLoss: number;
}

export interface TorchResult {
  label: string;
  device: string;
  times: number[];
  seconds: number;
  imagesPerSecond: number;
}

export interface CaseResult {
  batch: number;
  size: number;
  /** The first step, shader compilation included (s). */
  firstStepSeconds: number;
  /** Multiply-adds of one training step (3x the forward's convolutions and classifier), in billions. */
  stepGmacs: number;
  variants: VariantResult[];
  torch: TorchResult[];
  /** Ratio of the best variant and of the baseline to the first PyTorch row (median of run-by-run ratios). */
  ratioBaseline?: number;
  ratioBest?: number;
  best?: string;
  skipped?: string;
}

export interface WebGpuBenchResult {
  date: string;
  adapter: string;
  fallback: boolean;
  limits: Record<string, number>;
  backend: string;
  cpu: string;
  cores: number;
  runs: number;
  kernelCheck?: { maxRelDiff: number; cases: number };
  torch: { version: string; device: string; deviceName: string } | null;
  torchNote?: string;
  smallerThanAsked?: string;
  cases: CaseResult[];
}

export interface WebGpuBenchOptions {
  batches?: number[];
  imageSize?: number;
  runs?: number;
  variants?: string[];
  torch?: boolean;
  /** 'auto': CUDA where PyTorch sees it, else the CPU. */
  torchDevice?: 'auto' | 'cuda' | 'cpu';
  threads: number;
  log?: (line: string) => void;
  /** Called with the result so far after each case (to save partial figures of a run cut short). */
  onCase?: (partial: WebGpuBenchResult) => Promise<void>;
}

function randomImages(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** Bytes of the largest tensor of one image through the model at `size` (a layer output or the input). */
function perImageBytes(m: Model, size: number): number {
  const counts = countNetwork(m.net, size, size, 3);
  return 4 * Math.max(size * size * 3, ...counts.layers.map((l) => l.outShape.reduce((a, b) => a * b, 1)));
}

/** Turns the fixes of `v` on; returns the function that turns them off. */
function applyVariant(v: Variant): () => void {
  const undo: (() => void)[] = [];
  if (v.fused) undo.push(installFusedKernels());
  if (v.im2col) undo.push(installIm2colFilterGrad());
  if (v.submitBatch !== undefined) {
    const before = tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE');
    tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', v.submitBatch);
    undo.push(() => tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', before));
  }
  return () => undo.reverse().forEach((f) => f());
}

/** `v.readEvery` steps, one read of their losses: seconds per step, enqueue ms per step, the last loss. */
async function timedRun(v: Variant, step: () => tf.Scalar): Promise<{ seconds: number; dispatchMs: number; loss: number }> {
  const undo = applyVariant(v);
  try {
    const t0 = performance.now();
    let enqueue = 0;
    const losses: tf.Scalar[] = [];
    for (let i = 0; i < v.readEvery; i++) {
      const t = performance.now();
      losses.push(step());
      enqueue += performance.now() - t;
    }
    const all = losses.length === 1 ? losses[0]! : tf.stack(losses);
    const values = await all.data();
    const seconds = (performance.now() - t0) / 1000 / v.readEvery;
    tf.dispose([...losses, all]);
    const loss = values[values.length - 1]!;
    if (!Number.isFinite(loss)) throw new Error(`the loss became ${loss} in variant ${v.name}`);
    return { seconds, dispatchMs: enqueue / v.readEvery, loss };
  } finally {
    undo();
  }
}

/** One step with every program timed (tf.time: a timed pass and a query read per program). */
async function gpuTime(v: Variant, step: () => tf.Scalar): Promise<GpuTime> {
  const undo = applyVariant({ ...v, readEvery: 1 });
  try {
    let loss: tf.Scalar | undefined;
    const info = await tf.time(() => {
      loss = step();
    });
    await loss!.data();
    loss!.dispose();
    const by = new Map<string, [number, number]>();
    let programs = 0;
    const extra = (info as { getExtraProfileInfo?: () => string }).getExtraProfileInfo?.() ?? '';
    for (const part of extra.split(', ')) {
      const m = /^(.*): ([\d.eE+-]+)$/.exec(part);
      if (!m) continue;
      programs++;
      const a = by.get(m[1]!) ?? [0, 0];
      a[0] += Number(m[2]);
      a[1]++;
      by.set(m[1]!, a);
    }
    return {
      kernelMs: Number(info.kernelMs) || 0,
      programs,
      byProgram: [...by].map(([k, [ms, n]]) => [k, ms, n] as [string, number, number]).sort((a, b) => b[1] - a[1]),
    };
  } finally {
    undo();
  }
}

interface TorchReady {
  torch: string;
  device: string;
  deviceName: string;
  labels: string[];
  note?: string;
}

function startTorch(threads: number, device: 'auto' | 'cuda' | 'cpu', batch: number, size: number, runs: number): TorchPeer | undefined {
  const python = findPython(['torch']);
  if (!python) return undefined;
  return TorchPeer.start(python, 'bench_torch.py', { threads, device, runs, cases: [{ kind: 'train', batch, size, warmup: 2, readLoss: true }] });
}

/** The benchmark; the WebGPU backend must be active. */
export async function benchWebGpu(o: WebGpuBenchOptions): Promise<WebGpuBenchResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const adapter = activeWebGpu();
  if (!adapter) throw new UserError('the WebGPU benchmark needs the WebGPU backend active (--backend webgpu)', { exitCode: 2 });
  const fallback = adapter.fallback;
  const asked = o.batches !== undefined || o.imageSize !== undefined;
  const batches = o.batches ?? (fallback ? [2] : [32, 64]);
  const size = o.imageSize ?? (fallback ? 64 : 224);
  const runs = o.runs ?? (fallback ? 3 : 10);
  const variants = [...new Set(o.variants ?? (fallback ? FALLBACK_VARIANTS : DEFAULT_VARIANTS))].map(parseVariant);
  if (!variants.some((v) => v.name === 'baseline')) variants.unshift(parseVariant('baseline'));
  const result: WebGpuBenchResult = {
    date: new Date().toISOString(),
    adapter: adapterName(adapter),
    fallback,
    limits: { ...adapter.limits },
    backend: 'webgpu',
    cpu: os.cpus()[0]?.model ?? 'cpu',
    cores: os.availableParallelism(),
    runs,
    torch: null,
    cases: [],
  };
  if (fallback && !asked) {
    result.smallerThanAsked =
      `${adapterName(adapter)} is a CPU fallback adapter: its memory is host memory and its speed a CPU's, so batch 32 at 224x224 takes ` +
      `ten minutes or more a step and about 1 GiB of memory an image, and batch 64 exceeds its ${formatBytes(adapter.limits.maxStorageBufferBindingSize)} ` +
      `binding limit; this run times batch ${batches.join(',')} at ${size}x${size} instead (--webgpu-batches 32,64 --webgpu-image-size 224 asks for the full cases)`;
    log(`note: ${result.smallerThanAsked}`);
  }
  log(`WebGPU: ${adapterName(adapter)}; timestamp queries ${adapter.features.includes('timestamp-query') ? 'on' : 'not available (GPU times read 0)'}; ${runs} runs per variant`);

  if (variants.some((v) => v.fused || v.im2col)) {
    result.kernelCheck = await checkKernels();
    const ok = result.kernelCheck.maxRelDiff <= 1e-4;
    log(`fused kernels against zoo's composed path: max relative difference ${result.kernelCheck.maxRelDiff.toExponential(2)} over ${result.kernelCheck.cases} tensors${ok ? '' : ' (over 1e-4)'}`);
    if (!ok) throw new Error(`the fused WebGPU kernels differ from zoo's by ${result.kernelCheck.maxRelDiff} (relative): not timing them`);
  }

  const m = createModel('resnet50d');
  await trainedLikeInit(m, { batch: 2 });
  const counts = countNetwork(m.net, size, size, 3);
  const stepGmacs = (3 * counts.layers.reduce((a, l) => a + l.macs, 0)) / 1e9;
  const perImage = perImageBytes(m, size);
  try {
    for (const batch of batches) {
      const caseResult: CaseResult = { batch, size, firstStepSeconds: 0, stepGmacs: stepGmacs * batch, variants: [], torch: [] };
      result.cases.push(caseResult);
      const limit = maxBindingBytes();
      if (limit !== undefined && batch * perImage > limit) {
        caseResult.skipped = `its largest tensor, ${formatBytes(batch * perImage)}, exceeds the device's ${formatBytes(limit)} binding limit (batch ${Math.floor(limit / perImage)} fits)`;
        log(`b${batch} ${size}x${size}: skipped: ${caseResult.skipped}`);
        continue;
      }
      await benchCase(m, caseResult, variants, runs, o, result, log);
      await o.onCase?.(result);
    }
  } finally {
    m.dispose();
  }
  return result;
}

async function benchCase(
  m: Model,
  c: CaseResult,
  variants: Variant[],
  runs: number,
  o: WebGpuBenchOptions,
  result: WebGpuBenchResult,
  log: (l: string) => void,
): Promise<void> {
  const { batch, size } = c;
  const opt = new SGD(m.params, { momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
  const x = tf.tensor4d(randomImages(batch * size * size * 3, 2), [batch, size, size, 3]);
  const labels = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => (i * 37) % 1000), 'int32'), 1000) as tf.Tensor2D;
  const step = () => enqueueTrainStep(m, opt, x, labels);
  let peer: TorchPeer | undefined;
  try {
    const baseline = variants.find((v) => v.name === 'baseline')!;
    const first = await timedRun(baseline, step);
    c.firstStepSeconds = first.seconds;
    log(`b${batch} ${size}x${size}: first step ${first.seconds.toFixed(1)} s (shaders compiled), loss ${first.loss.toFixed(3)}; warming up ${variants.length} variants...`);
    // Warm-up: each variant's programs compiled and its buffers pooled.
    for (const v of variants) await timedRun({ ...v, readEvery: 1 }, step);

    if (o.torch ?? true) {
      peer = startTorch(o.threads, o.torchDevice ?? 'auto', batch, size, runs);
      if (peer) {
        const ready = (await peer.next()) as unknown as TorchReady & { error?: string };
        if (ready.error) throw new UserError(`--torch-device ${o.torchDevice}: ${ready.error}`, { exitCode: 2 });
        result.torch = { version: ready.torch, device: ready.device, deviceName: ready.deviceName };
        if (ready.note) result.torchNote = ready.note;
        c.torch = ready.labels.map((label) => ({ label, device: ready.device, times: [], seconds: 0, imagesPerSecond: 0 }));
      } else {
        result.torchNote = 'python3 with torch not found: no PyTorch peer';
      }
    }

    const times = new Map<string, number[]>(variants.map((v) => [v.name, []]));
    const dispatch = new Map<string, number[]>(variants.map((v) => [v.name, []]));
    const lastLoss = new Map<string, number>();
    for (let r = 0; r < runs; r++) {
      const line: string[] = [];
      for (const v of variants) {
        const t = await timedRun(v, step);
        times.get(v.name)!.push(t.seconds);
        dispatch.get(v.name)!.push(t.dispatchMs);
        lastLoss.set(v.name, t.loss);
        line.push(`${v.name} ${(t.seconds * 1000).toFixed(0)} ms`);
      }
      if (peer) {
        const s = await peer.run<number[]>();
        s.forEach((sec, i) => c.torch[i]!.times.push(sec));
        line.push(...s.map((sec, i) => `PyTorch ${c.torch[i]!.label} ${(sec * 1000).toFixed(0)} ms`));
      }
      log(`  run ${r + 1}/${runs}: ${line.join(', ')}`);
    }

    // GPU time: one timed step per distinct set of programs.
    const gpuBy = new Map<string, GpuTime>();
    for (const v of variants) {
      const key = `${v.fused}/${v.im2col}`;
      if (!gpuBy.has(key)) gpuBy.set(key, await gpuTime(v, step));
    }
    const base = times.get('baseline')!;
    for (const v of variants) {
      const ts = times.get(v.name)!;
      const seconds = median(ts);
      c.variants.push({
        variant: v.name,
        times: ts,
        seconds,
        imagesPerSecond: batch / seconds,
        dispatchMs: median(dispatch.get(v.name)!),
        gpu: gpuBy.get(`${v.fused}/${v.im2col}`)!,
        speedupVsBaseline: median(ts.map((t, i) => base[i]! / t)),
        finalLoss: lastLoss.get(v.name)!,
      });
    }
    for (const t of c.torch) {
      t.seconds = median(t.times);
      t.imagesPerSecond = batch / t.seconds;
    }
    const best = c.variants.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    c.best = best.variant;
    const peerTimes = c.torch[0]?.times;
    if (peerTimes?.length) {
      c.ratioBaseline = median(base.map((t, i) => peerTimes[i]! / t));
      c.ratioBest = median(best.times.map((t, i) => peerTimes[i]! / t));
    }
  } catch (e) {
    if (e instanceof WebGpuError) {
      c.skipped = e.message;
      log(`b${batch} ${size}x${size}: failed: ${e.message}`);
      return;
    }
    throw e;
  } finally {
    peer?.close();
    opt.dispose();
    tf.dispose([x, labels]);
  }
}

function ms(v: number): string {
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

/** The result as text: one table per case, then where the time goes. */
export function describeWebGpu(r: WebGpuBenchResult): string {
  const out: string[] = [];
  const torchName = r.torch ? `PyTorch ${r.torch.version} ${r.torch.device === 'cpu' ? `CPU (${r.fallback ? 'the same CPU lavapipe runs on' : 'not the GPU: no CUDA'})` : `CUDA, ${r.torch.deviceName}`}` : 'no PyTorch';
  out.push(`resnet50d training step (forward, loss, backward, SGD, loss read) on WebGPU: ${r.adapter}`);
  if (r.smallerThanAsked) out.push(`note: ${r.smallerThanAsked}`);
  if (r.torchNote) out.push(`PyTorch: ${r.torchNote}`);
  for (const c of r.cases) {
    out.push('');
    if (c.skipped) {
      out.push(`b${c.batch} ${c.size}x${c.size}: not run: ${c.skipped}`);
      continue;
    }
    out.push(`b${c.batch} ${c.size}x${c.size} (${c.stepGmacs.toFixed(1)} G multiply-adds a step; first step ${c.firstStepSeconds.toFixed(1)} s with shader compilation)`);
    const rows = c.variants.map((v) => {
      const gpu = v.gpu?.kernelMs ?? 0;
      const wall = v.seconds * 1000;
      return [
        v.variant,
        v.imagesPerSecond.toFixed(2),
        ms(wall),
        ms(v.dispatchMs),
        gpu ? ms(gpu) : '-',
        gpu ? `${Math.round((100 * gpu) / wall)}%` : '-',
        gpu ? ms(Math.max(0, wall - gpu)) : '-',
        String(v.gpu?.programs ?? '-'),
        v.gpu?.programs ? ((1000 * v.dispatchMs) / v.gpu.programs).toFixed(0) : '-',
        v.variant === 'baseline' ? '-' : `${v.speedupVsBaseline!.toFixed(2)}x`,
      ];
    });
    for (const t of c.torch) rows.push([`${torchName.split(' (')[0]} ${t.label}`, t.imagesPerSecond.toFixed(2), ms(t.seconds * 1000), '-', '-', '-', '-', '-', '-', '-']);
    out.push(table(rows, ['variant', 'images/s', 'step ms', 'JS dispatch ms', 'GPU kernel ms', 'GPU busy', 'rest ms', 'programs', 'us/program', 'vs baseline'], { width: 170 }));
    if (c.ratioBaseline !== undefined) {
      out.push(
        `ratio to ${torchName} ${c.torch[0]!.label}: baseline ${c.ratioBaseline.toFixed(3)}x, best (${c.best}) ${c.ratioBest!.toFixed(3)}x (medians of run-by-run ratios)`,
      );
    }
    // GPU time by program class (count in brackets), once per distinct set of programs.
    const shown = new Set<GpuTime>();
    for (const v of c.variants) {
      if (!v.gpu?.byProgram.length || shown.has(v.gpu)) continue;
      shown.add(v.gpu);
      out.push(`GPU time by program, ${v.variant}: ${v.gpu.byProgram.slice(0, 8).map(([k, t, n]) => `${k} ${ms(t)} ms (${n})`).join(', ')}`);
    }
  }
  out.push('');
  out.push(
    'step ms: median of the runs (a read-every-N run is N steps, its time / N); JS dispatch: time to enqueue a step; GPU kernel: the sum of the programs\' ' +
      'timestamp-query times in one more step, each program in its own timed pass (so it can exceed an untimed step\'s wall time); rest: step less GPU kernel time ' +
      '(dispatch not hidden behind the GPU, read-back, idle GPU); us/program: JS dispatch / programs; vs baseline: median of the run-by-run time ratios.',
  );
  if (r.fallback) {
    out.push(
      'On a fallback adapter the "GPU" is the CPU: its threads and JavaScript share the cores, and part of the execution (and all shader compilation) ' +
        'happens inside the submitting call, so JS dispatch includes some GPU work and overlap (read-every-N) cannot help.',
    );
  }
  return out.join('\n');
}

function list(v: string): number[] {
  const xs = v.split(',').map(Number);
  if (!xs.length || xs.some((x) => !Number.isInteger(x) || x < 1)) throw new UserError(`--webgpu-batches takes positive integers separated by commas, got '${v}'`, { exitCode: 2 });
  return xs;
}

/** Options shared by bench.ts and this script's own command line. */
export function addWebGpuOptions(c: Command): Command {
  return c
    .option('--webgpu-batches <list>', 'batch sizes (default 32,64; 2 on a fallback adapter)', list)
    .option('--webgpu-image-size <n>', 'image size (default 224; 64 on a fallback adapter)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 32) throw new UserError(`--webgpu-image-size takes an integer of at least 32, got '${v}'`, { exitCode: 2 });
      return n;
    })
    .option('--webgpu-variants <list>', `variants, comma-separated (default ${DEFAULT_VARIANTS.join(',')}; on a fallback adapter ${FALLBACK_VARIANTS.join(',')})`, (v) => {
      const names = v.split(',');
      names.forEach(parseVariant);
      return names;
    })
    .option('--torch-device <d>', "PyTorch peer's device: auto (CUDA where available), cuda or cpu", (v) => {
      if (!['auto', 'cuda', 'cpu'].includes(v)) throw new UserError(`--torch-device takes auto, cuda or cpu, got '${v}'`, { exitCode: 2 });
      return v;
    }, 'auto');
}

export interface WebGpuCliOptions {
  webgpuBatches?: number[];
  webgpuImageSize?: number;
  webgpuVariants?: string[];
  torchDevice: string;
}

/** Runs the benchmark from command-line options, prints it and writes the JSON to `out`. */
export async function runWebGpuBench(opts: WebGpuCliOptions & { runs?: number; torch: boolean; out: string }, info: BackendInfo): Promise<void> {
  if (opts.runs !== undefined && (!Number.isInteger(opts.runs) || opts.runs < 1)) throw new UserError(`--runs takes a positive integer, got '${opts.runs}'`, { exitCode: 2 });
  const r = await benchWebGpu({
    ...(opts.webgpuBatches ? { batches: opts.webgpuBatches } : {}),
    ...(opts.webgpuImageSize ? { imageSize: opts.webgpuImageSize } : {}),
    ...(opts.runs !== undefined ? { runs: opts.runs } : {}),
    ...(opts.webgpuVariants ? { variants: opts.webgpuVariants } : {}),
    torch: opts.torch,
    torchDevice: opts.torchDevice as 'auto' | 'cuda' | 'cpu',
    threads: info.threads,
    onCase: (partial) => writeFileAtomic(opts.out, JSON.stringify({ ...partial, backendInfo: info, partial: true }, null, 2)),
  });
  console.log(`\n${describeWebGpu(r)}`);
  await writeFileAtomic(opts.out, JSON.stringify({ ...r, backendInfo: info }, null, 2));
  console.log(`wrote ${opts.out}`);
}

async function main(): Promise<void> {
  const opts = addWebGpuOptions(
    new Command('bench-webgpu')
      .option('--runs <n>', 'timed runs per variant (default 10; 3 on a fallback adapter)', (v) => Number(v))
      .option('--out <file>', 'JSON output', 'bench-results/bench-webgpu.json')
      .option('--no-torch', 'skip the PyTorch peer'),
  )
    .parse(process.argv)
    .opts<WebGpuCliOptions & { runs?: number; out: string; torch: boolean }>();
  const info = await initBackend({ backend: 'webgpu', purpose: 'training' });
  console.log(`${describeBackend(info)}; ${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores`);
  try {
    await runWebGpuBench(opts, info);
  } finally {
    releaseBackend();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main().catch(fail);
