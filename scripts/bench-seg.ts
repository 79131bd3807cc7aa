/**
 * The segmentation part of `npm run bench`: images/s of the exported FCN-ResNet-50 (ResNet-50-B
 * dilated to output stride 8, the FCN head on C5, no auxiliary head, 21 classes, bilinear upsampling
 * to the input size) in onnxruntime-node, batch 1 at 480x480, beside torchvision's own `fcn_resnet50`
 * of the same configuration (scripts/bench_seg.py), with the same number of threads, in the same run.
 *
 * The two are timed alternately, one inference each in turn, so that a change in the machine's load
 * during the benchmark falls on both alike; the figures are medians after a warm-up. Both get the same
 * input (smooth random images at the scale of normalized ones, written to a file for the peer) and
 * random weights; a dense network's work does not depend on its weights, and the output's range is
 * reported for both to show that neither computes on infinities.
 *
 * Also a script of its own (`node dist/scripts/bench-seg.js [--runs n] [--threads n] [--size HxW]
 * [--no-torch] [--profile] [--fold-bn] [--variants] [--convs] [--out file]`): `--profile` adds ONNX Runtime's
 * per-node timings of one inference, summed by operator and by part of the network; `--fold-bn` times
 * the export with batch norm folded into the convolutions; `--variants` times, alternately, the session
 * options and export variants that could make a difference (graph optimization level, folded batch norm);
 * `--convs` times the network's heaviest convolutions alone on both sides (ONNX Runtime's MLAS against
 * PyTorch's oneDNN on the same shapes), to tell the kernels' speed from the graph's.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { createSegmenter } from '../src/segmentation/segmenter.js';
import { exportSegmenter } from '../src/segmentation/export.js';
import { OnnxBuilder, encodeModel } from '../src/onnx/export.js';
import { Rng } from '../src/util/random.js';
import { smoothImages } from '../src/detection/export.js';
import { toNCHW } from '../src/onnx/check.js';
import { DataType, decodeModel, valueInfo } from '../src/onnx/proto.js';
import { ort, runSession, type HostTensor, type Session } from '../src/runtime/ort.js';
import { initBackend, describeBackend } from '../src/backend/index.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { fail, table } from '../zoo/run.js';
import {
  TorchPeer,
  alternate,
  checkBenchArgs,
  benchSession,
  benchSessionOptions,
  describeProfile,
  exportedNodeOf,
  findPython,
  median,
  pairedRatio,
  profileOrt,
  targetText,
  unmappedPart,
  type OrtProfile,
  type OrtSessionOptions,
} from './bench_common.js';

export const SEGMENTATION_TARGET = 1.5;

export interface SegmentationBenchOptions {
  runs: number;
  threads: number;
  /** Run the PyTorch peer (when Debian's python3-torch and python3-torchvision are installed). */
  torch?: boolean;
  profile?: boolean;
  /** Time the export with batch norm folded into the convolutions. */
  foldBatchNorm?: boolean;
  /** Also time the variants of session options and export (alternately, zoo's side only). */
  variants?: boolean;
  /** Also time the heaviest convolutions alone, ONNX Runtime against PyTorch alternately. */
  convs?: boolean;
  height?: number;
  width?: number;
  arch?: string;
  classes?: number;
  log?: (line: string) => void;
}

/** The logits' shape and range: random networks' outputs, to compare the two sides' work. */
export interface OutputSummary {
  shape: number[];
  /** The fraction of finite values. */
  finite: number;
  maxAbs: number | null;
}

export interface VariantResult {
  name: string;
  seconds: number;
  times: number[];
  imagesPerSecond: number;
  /** This variant's speed over the first one's (the benchmarked configuration), run by run. */
  relative: number;
}

/** One convolution (+ ReLU) of the FCN at the benchmark's size, timed alone on both sides. */
export interface ConvCase {
  name: string;
  inChannels: number;
  outChannels: number;
  kernel: number;
  dilation: number;
  /** Height and width of its input (the feature map at output stride 8). */
  size: number;
  /** Multiply-adds, in billions. */
  gmacs: number;
  /** How many such convolutions the network has. */
  count: number;
}

export interface ConvResult extends ConvCase {
  ortSeconds: number;
  torchSeconds: number | null;
  /** Billions of multiply-adds per second of each side. */
  ortGmacsPerSecond: number;
  torchGmacsPerSecond: number | null;
  /** ONNX Runtime's speed over PyTorch's, run by run. */
  pairedRatio: number | null;
}

export interface SegmentationBenchResult {
  name: string;
  arch: string;
  classes: number;
  outputStride: number;
  batchNorm: 'separate' | 'folded';
  batch: 1;
  height: number;
  width: number;
  provider: string;
  threads: number;
  seconds: number;
  times: number[];
  imagesPerSecond: number;
  output: OutputSummary;
  torch: {
    torch: string;
    torchvision: string;
    threads: number;
    params: number;
    seconds: number;
    times: number[];
    imagesPerSecond: number;
    output: OutputSummary;
    /** With `profile`: one forward timed module by module, by part (named as segPartResolver names them). */
    parts?: Record<string, { ms: number; gmacs: number }>;
    profileMs?: number;
  } | null;
  /** zoo / PyTorch images per second (of the medians). */
  ratio: number | null;
  /** The median of the run-by-run ratios (each run of zoo against the PyTorch run that follows it). */
  pairedRatio: number | null;
  target: number;
  profile?: OrtProfile;
  variants?: VariantResult[];
  convs?: ConvResult[];
}

/**
 * The part of the FCN a node of ONNX Runtime's optimized graph belongs to: the stage, and for the
 * convolutions (with the batch norm, ReLU and residual add fused into them) the kernel and dilation,
 * so that the 1x1 and the dilated 3x3 convolutions of a stage are counted apart.
 */
export function segPartResolver(bytes: Uint8Array): (name: string) => string {
  const nodes = decodeModel(bytes, 'the exported segmenter').graph!.node ?? [];
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.output?.forEach((o) => producer.set(o, i)));
  // A fused node is named after the last node it absorbed (conv -> bn -> add -> relu): walk back to the conv.
  const convOf = (i: number | undefined) => {
    for (let k = 0; k < 4 && i !== undefined; k++) {
      if (nodes[i]!.opType === 'Conv') return nodes[i]!;
      i = producer.get(nodes[i]!.input?.[0] ?? '');
    }
    return undefined;
  };
  const exported = exportedNodeOf(bytes);
  return (name: string) => {
    const i = exported(name);
    if (i === undefined) return unmappedPart(name);
    const n = nodes[i]!.name!;
    const stage = /^(layer\d)\./.exec(n)?.[1] ?? (n.startsWith('classifier.') ? 'head' : n.startsWith('aux_classifier.') ? 'auxiliary head' : undefined);
    if (n.startsWith('resize')) return 'upsampling (Resize)';
    if (!stage) return /^(conv1|bn1|maxpool)/.test(n) ? 'stem' : 'other';
    const conv = convOf(i);
    if (!conv) return `${stage} other`;
    const k = conv.attribute?.find((a) => a.name === 'kernel_shape')?.ints?.map(Number) ?? [];
    const d = Number(conv.attribute?.find((a) => a.name === 'dilations')?.ints?.[0] ?? 1);
    return `${stage} ${k.join('x')}${d > 1 ? ` dilation ${d}` : ''}`;
  };
}

function summarize(logits: HostTensor): OutputSummary {
  const x = logits.data as Float32Array;
  let finite = 0;
  let maxAbs = 0;
  for (const v of x) {
    if (Number.isFinite(v)) {
      finite++;
      maxAbs = Math.max(maxAbs, Math.abs(v));
    }
  }
  return { shape: logits.dims, finite: finite / x.length, maxAbs: finite ? maxAbs : null };
}

type Feeds = Parameters<typeof runSession>[1];

async function openVariant(bytes: Uint8Array, options: OrtSessionOptions): Promise<Session> {
  return { session: await ort().InferenceSession.create(bytes, options), provider: 'cpu' };
}

/**
 * zoo's side under other session options and export variants, timed alternately with the benchmarked
 * configuration (the first), so their figures compare with one another on a busy machine.
 */
async function timeVariants(
  variants: { name: string; bytes: () => Uint8Array; options: OrtSessionOptions }[],
  feeds: Feeds,
  runs: number,
  log: (line: string) => void,
): Promise<VariantResult[]> {
  const sessions: Session[] = [];
  try {
    for (const v of variants) {
      const s = await openVariant(v.bytes(), v.options);
      await runSession(s, feeds); // warm-up
      sessions.push(s);
    }
    const times = variants.map(() => [] as number[]);
    for (let r = 0; r < runs; r++) {
      for (const [k, s] of sessions.entries()) {
        const t = performance.now();
        await runSession(s, feeds);
        times[k]!.push((performance.now() - t) / 1000);
      }
      log(`  variants run ${r + 1}/${runs}: ${times.map((t, k) => `${variants[k]!.name} ${t[r]!.toFixed(2)} s`).join(', ')}`);
    }
    return variants.map((v, k) => {
      const seconds = median(times[k]!);
      return { name: v.name, seconds, times: times[k]!, imagesPerSecond: 1 / seconds, relative: pairedRatio(times[k]!, times[0]!) };
    });
  } finally {
    for (const s of sessions) await s.session.release();
  }
}

/** The FCN-ResNet-50's heaviest convolutions (and one undilated twin) at output stride 8 on an HxW image. */
export function convCases(height: number, width: number): ConvCase[] {
  const size = Math.round(Math.sqrt(Math.ceil(height / 8) * Math.ceil(width / 8)));
  const c = (name: string, inChannels: number, outChannels: number, kernel: number, dilation: number, count: number): ConvCase => ({
    name,
    inChannels,
    outChannels,
    kernel,
    dilation,
    size,
    gmacs: (size * size * outChannels * inChannels * kernel * kernel) / 1e9,
    count,
  });
  return [
    c('head classifier.0, 3x3 2048->512', 2048, 512, 3, 1, 1),
    c('layer4 conv2, 3x3 512->512 dilation 4', 512, 512, 3, 4, 3),
    c('same, undilated', 512, 512, 3, 1, 0),
    c('layer4 conv1, 1x1 2048->512', 2048, 512, 1, 1, 2),
    c('layer4 conv3, 1x1 512->2048', 512, 2048, 1, 1, 3),
    c('layer4.0 downsample, 1x1 1024->2048', 1024, 2048, 1, 1, 1),
    c('layer3 conv2, 3x3 256->256 dilation 2', 256, 256, 3, 2, 5),
  ];
}

/** One convolution with bias, then ReLU, as an ONNX graph (random weights). */
function singleConv(k: ConvCase, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const values = (name: string) => {
    const n = name.endsWith('.bias') ? k.outChannels : k.outChannels * k.inChannels * k.kernel * k.kernel;
    const scale = Math.sqrt(2 / (k.inChannels * k.kernel * k.kernel));
    return Float32Array.from({ length: n }, () => (name.endsWith('.bias') ? 0 : scale * rng.normal()));
  };
  const b = new OnnxBuilder(values, { foldBatchNorm: false, fp16: false, epsilon: 1e-5 });
  b.conv('input', { name: 'conv', inChannels: k.inChannels, outChannels: k.outChannels, kernel: k.kernel, dilation: k.dilation, bias: true, relu: true });
  b.nodes[b.nodes.length - 1]!.output = ['output'];
  return encodeModel({
    name: 'conv',
    builder: b,
    inputs: [valueInfo('input', DataType.FLOAT, [1, k.inChannels, k.size, k.size])],
    outputs: [valueInfo('output', DataType.FLOAT, [1, k.outChannels, k.size, k.size])],
    metadata: {},
  });
}

/** The convolutions of convCases alone: each side runs every case in turn, the two sides alternately. */
async function timeConvs(cases: ConvCase[], threads: number, runs: number, python: string | undefined, log: (line: string) => void): Promise<ConvResult[]> {
  const peer = python ? TorchPeer.start(python, 'bench_seg.py', { threads, seed: 0, warmup: 1, convs: cases }) : undefined;
  const sessions: Session[] = [];
  try {
    const rng = new Rng(5);
    const feeds = cases.map((k): Feeds => ({
      input: { type: 'float32', data: Float32Array.from({ length: k.inChannels * k.size * k.size }, () => rng.normal()), dims: [1, k.inChannels, k.size, k.size] },
    }));
    for (const [i, k] of cases.entries()) {
      const s = await benchSession(singleConv(k, i), threads);
      await runSession(s, feeds[i]!);
      await runSession(s, feeds[i]!);
      sessions.push(s);
    }
    if (peer) await peer.next();
    const ortTimes = cases.map(() => [] as number[]);
    const torchTimes = cases.map(() => [] as number[]);
    for (let r = 0; r < runs; r++) {
      for (const [i, s] of sessions.entries()) {
        const t = performance.now();
        await runSession(s, feeds[i]!);
        ortTimes[i]!.push((performance.now() - t) / 1000);
      }
      if (peer) (await peer.run<number[]>()).forEach((t, i) => torchTimes[i]!.push(t));
      log(`  convolutions run ${r + 1}/${runs}`);
    }
    return cases.map((k, i) => {
      const ortSeconds = median(ortTimes[i]!);
      const torchSeconds = peer ? median(torchTimes[i]!) : null;
      return {
        ...k,
        ortSeconds,
        torchSeconds,
        ortGmacsPerSecond: k.gmacs / ortSeconds,
        torchGmacsPerSecond: torchSeconds === null ? null : k.gmacs / torchSeconds,
        pairedRatio: peer ? pairedRatio(ortTimes[i]!, torchTimes[i]!) : null,
      };
    });
  } finally {
    peer?.close();
    for (const s of sessions) await s.session.release();
  }
}

/** Runs the segmentation benchmark; progress lines go to `log`. */
export async function benchSegmentation(o: SegmentationBenchOptions): Promise<SegmentationBenchResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const [H, W] = [o.height ?? 480, o.width ?? 480];
  const arch = o.arch ?? 'resnet50b';
  const classes = o.classes ?? 21;
  const runs = Math.max(1, o.runs);
  const seg = createSegmenter(arch, classes, { config: { outputStride: 8, aux: false }, seed: 0 });
  let bytes: Uint8Array;
  let folded: Uint8Array | undefined;
  try {
    bytes = await exportSegmenter(seg, { foldBatchNorm: o.foldBatchNorm ?? false });
    if (o.variants) folded = o.foldBatchNorm ? bytes : await exportSegmenter(seg, { foldBatchNorm: true });
  } finally {
    seg.dispose();
  }
  const outputStride = seg.config.outputStride;
  const nchw = toNCHW(smoothImages(1, H, W, 11), 1, H, W, 3);
  const feeds: Feeds = { input: { type: 'float32', data: nchw, dims: [1, 3, H, W] } };
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-bench-seg-'));
  let peer: TorchPeer | undefined;
  try {
    const python = o.torch === false ? undefined : findPython(['torch', 'torchvision']);
    if (o.torch !== false && !python) log('  python3-torch / python3-torchvision not found (apt-get install python3-torchvision): no ratio');
    if (python) {
      // The peer builds and warms up while this side does the same; nothing is timed until both are ready.
      const input = path.join(tmp, 'input.f32');
      writeFileSync(input, nchw);
      peer = TorchPeer.start(python, 'bench_seg.py', { threads: o.threads, height: H, width: W, classes, seed: 0, warmup: 1, input, profile: o.profile ?? false });
    }
    const session = await benchSession(bytes, o.threads);
    let times: { zoo: number[]; torch: number[] };
    let output: OutputSummary;
    let ready: Record<string, unknown> | undefined;
    try {
      output = summarize((await runSession(session, feeds)).logits!); // warm-up
      if (peer) ready = await peer.next();
      times = await alternate(runs, () => runSession(session, feeds), peer, log);
    } finally {
      await session.session.release();
    }
    peer?.close();
    peer = undefined;
    const { zoo: zooTimes, torch: torchTimes } = times;
    const seconds = median(zooTimes);
    const result: SegmentationBenchResult = {
      name: `fcn_${arch} os${outputStride} onnxruntime-node (cpu) b1 ${H}x${W}`,
      arch,
      classes,
      outputStride,
      batchNorm: o.foldBatchNorm ? 'folded' : 'separate',
      batch: 1,
      height: H,
      width: W,
      provider: 'cpu',
      threads: o.threads,
      seconds,
      times: zooTimes,
      imagesPerSecond: 1 / seconds,
      output,
      torch: null,
      ratio: null,
      pairedRatio: null,
      target: SEGMENTATION_TARGET,
    };
    if (ready) {
      const ts = median(torchTimes);
      result.torch = {
        torch: String(ready.torch),
        torchvision: String(ready.torchvision),
        threads: Number(ready.threads),
        params: Number(ready.params),
        seconds: ts,
        times: torchTimes,
        imagesPerSecond: 1 / ts,
        output: { shape: ready.outputShape as number[], finite: Number(ready.finite), maxAbs: ready.maxAbs === null ? null : Number(ready.maxAbs) },
      };
      if (ready.parts) {
        result.torch.parts = ready.parts as Record<string, { ms: number; gmacs: number }>;
        result.torch.profileMs = Number(ready.profileMs);
      }
      result.ratio = result.imagesPerSecond / result.torch.imagesPerSecond;
      result.pairedRatio = pairedRatio(zooTimes, torchTimes);
    }
    if (o.profile) result.profile = await profileOrt(bytes, feeds, o.threads, segPartResolver(bytes));
    if (o.variants) {
      const base = benchSessionOptions(o.threads);
      log('  session and export variants, alternately:');
      result.variants = await timeVariants(
        [
          { name: `${result.batchNorm} BN, optimization all`, bytes: () => bytes, options: base },
          { name: 'folded BN, optimization all', bytes: () => folded!, options: base },
          { name: `${result.batchNorm} BN, optimization extended`, bytes: () => bytes, options: { ...base, graphOptimizationLevel: 'extended' } },
          { name: `${result.batchNorm} BN, optimization basic`, bytes: () => bytes, options: { ...base, graphOptimizationLevel: 'basic' } },
        ],
        feeds,
        runs,
        log,
      );
    }
    if (o.convs) {
      log('  the heaviest convolutions alone, alternately:');
      result.convs = await timeConvs(convCases(H, W), o.threads, runs, python, log);
    }
    return result;
  } finally {
    peer?.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

const outputText = (s: OutputSummary) => `logits [${s.shape.join(', ')}], ${s.finite === 1 ? 'all finite' : `${(100 * s.finite).toFixed(1)}% finite`}, max |x| ${s.maxAbs?.toPrecision(3) ?? '-'}`;

/**
 * ONNX Runtime's profile beside PyTorch's module-by-module timing, part by part. ONNX Runtime fuses
 * batch norm, ReLU and the residual add into the convolutions; PyTorch runs batch norm and ReLU as
 * modules of their own (its parts "<stage> BN, ReLU") and the residual add inside the block (in no part).
 */
function compareParts(p: OrtProfile, torch: Record<string, { ms: number; gmacs: number }>, torchMs: number): string[] {
  const ortMs = new Map(p.byPart.map(([k, ms]) => [k, ms]));
  const names = [...new Set([...ortMs.keys(), ...Object.keys(torch)])].sort((a, b) => (ortMs.get(b) ?? 0) + (torch[b]?.ms ?? 0) - (ortMs.get(a) ?? 0) - (torch[a]?.ms ?? 0));
  const cell = (ms: number | undefined, gmacs: number | undefined) => (ms === undefined ? '-' : `${ms.toFixed(0)}${gmacs ? ` (${((1000 * gmacs) / ms).toFixed(1)})` : ''}`);
  return [
    `ONNX Runtime (${p.runMs.toFixed(0)} ms) beside PyTorch (${torchMs.toFixed(0)} ms, modules timed one by one), by part:`,
    table(
      names.map((k) => {
        const o = ortMs.get(k);
        const t = torch[k]?.ms;
        return [k, cell(o, p.convGmacs[k]), cell(t, torch[k]?.gmacs), o !== undefined && t !== undefined && o > 0 ? `${(t / o).toFixed(2)}x` : '-'];
      }),
      ['part', 'ORT ms (GMAC/s)', 'PyTorch ms (GMAC/s)', 'PyTorch / ORT'],
    ),
  ];
}

/** The report lines: images/s of both, the ratio against the target, the outputs. */
export function describeSegmentation(r: SegmentationBenchResult): string {
  const lines = [
    table(
      [
        [
          `${r.arch} OS${r.outputStride} b1 ${r.height}x${r.width}`,
          r.imagesPerSecond.toFixed(3),
          r.torch ? r.torch.imagesPerSecond.toFixed(3) : '-',
          r.ratio !== null ? `${r.ratio.toFixed(2)}x` : '-',
          targetText(r.ratio, r.target),
        ],
      ],
      ['FCN', 'ORT images/s', 'PyTorch images/s', 'ratio', 'target'],
    ),
    `  onnxruntime-node: median ${(r.seconds * 1000).toFixed(0)} ms of ${r.times.length}, ${r.threads} threads, batch norm ${r.batchNorm}; ${outputText(r.output)}`,
  ];
  if (r.torch) {
    lines.push(
      `  PyTorch:          median ${(r.torch.seconds * 1000).toFixed(0)} ms of ${r.torch.times.length}, ${r.torch.threads} threads (torch ${r.torch.torch}, torchvision ${r.torch.torchvision} fcn_resnet50); ${outputText(r.torch.output)}`,
      `  ratio run by run: ${r.pairedRatio!.toFixed(2)}x (median over the ${r.times.length} pairs of alternated runs)`,
    );
  }
  if (r.profile) lines.push(...describeProfile(r.profile));
  if (r.profile && r.torch?.parts) lines.push('', ...compareParts(r.profile, r.torch.parts, r.torch.profileMs ?? 0));
  if (r.variants) {
    lines.push(
      '',
      table(
        r.variants.map((v) => [v.name, v.imagesPerSecond.toFixed(3), `${(v.seconds * 1000).toFixed(0)} ms`, `${v.relative.toFixed(3)}x`]),
        ['ORT variant (alternated)', 'images/s', 'median', 'vs first, run by run'],
      ),
    );
  }
  if (r.convs) {
    lines.push(
      '',
      table(
        r.convs.map((c) => [
          c.name,
          `${c.size}x${c.size}`,
          String(c.count),
          c.gmacs.toFixed(2),
          `${(c.ortSeconds * 1000).toFixed(0)} ms, ${c.ortGmacsPerSecond.toFixed(1)}`,
          c.torchSeconds === null ? '-' : `${(c.torchSeconds * 1000).toFixed(0)} ms, ${c.torchGmacsPerSecond!.toFixed(1)}`,
          c.pairedRatio === null ? '-' : `${c.pairedRatio.toFixed(2)}x`,
        ]),
        ['convolution + ReLU alone', 'input', 'in net', 'GMAC', 'ORT (GMAC/s)', 'PyTorch (GMAC/s)', 'ratio'],
      ),
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = new Command('bench-seg')
    .option('--runs <n>', 'timed runs of each', (v) => Number(v), 5)
    .option('--threads <n>', "threads of both (default: the backend's)", (v) => Number(v))
    .option('--out <file>', 'JSON output', 'bench-results/bench-seg.json')
    .option('--size <HxW>', 'image height x width', '480x480')
    .option('--no-torch', 'skip the PyTorch peer')
    .option('--profile', "add ONNX Runtime's per-node timings of one inference")
    .option('--fold-bn', 'time the export with batch norm folded into the convolutions')
    .option('--variants', 'also time session options and export variants against each other')
    .option('--convs', 'also time the heaviest convolutions alone, ONNX Runtime against PyTorch')
    .parse(process.argv)
    .opts<{ runs: number; threads?: number; size: string; out: string; torch: boolean; profile?: boolean; foldBn?: boolean; variants?: boolean; convs?: boolean }>();
  const [height, width] = checkBenchArgs(opts);
  const info = await initBackend({ purpose: 'inference' });
  const threads = opts.threads ?? info.threads;
  console.log(`${describeBackend(info)}; ${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores; ${threads} threads, ${opts.runs} runs`);
  const r = await benchSegmentation({
    runs: opts.runs,
    threads,
    torch: opts.torch,
    profile: opts.profile ?? false,
    foldBatchNorm: opts.foldBn ?? false,
    variants: opts.variants ?? false,
    convs: opts.convs ?? false,
    height,
    width,
  });
  console.log(`\n${describeSegmentation(r)}`);
  await writeFileAtomic(opts.out, JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), ...r }, null, 2));
  console.log(`wrote ${opts.out}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main().then(() => process.exit(0), fail);
