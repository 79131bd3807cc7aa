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
 * [--no-torch] [--profile] [--fold-bn] [--variants] [--out file]`): `--profile` adds ONNX Runtime's
 * per-node timings of one inference, summed by operator and by part of the network; `--fold-bn` times
 * the export with batch norm folded into the convolutions; `--variants` times, alternately, the session
 * options and export variants that could make a difference (graph optimization level, folded batch norm).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { createSegmenter } from '../src/segmentation/segmenter.js';
import { exportSegmenter } from '../src/segmentation/export.js';
import { smoothImages } from '../src/detection/export.js';
import { toNCHW } from '../src/onnx/check.js';
import { decodeModel } from '../src/onnx/proto.js';
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
  } | null;
  /** zoo / PyTorch images per second (of the medians). */
  ratio: number | null;
  /** The median of the run-by-run ratios (each run of zoo against the PyTorch run that follows it). */
  pairedRatio: number | null;
  target: number;
  profile?: OrtProfile;
  variants?: VariantResult[];
}

/** The part of the FCN a node of ONNX Runtime's optimized graph belongs to. */
export function segPartResolver(bytes: Uint8Array): (name: string) => string {
  const nodes = decodeModel(bytes, 'the exported segmenter').graph!.node ?? [];
  const dilation = new Map<string, number>();
  for (const n of nodes) {
    const d = n.attribute?.find((a) => a.name === 'dilations');
    const stage = /^(layer\d)\./.exec(n.name ?? '')?.[1];
    if (stage && d?.ints?.length) dilation.set(stage, Math.max(dilation.get(stage) ?? 1, Number(d.ints[0])));
  }
  const exported = exportedNodeOf(bytes);
  return (name: string) => {
    const i = exported(name);
    if (i === undefined) return unmappedPart(name);
    const n = nodes[i]!.name!;
    const stage = /^(layer\d)\./.exec(n)?.[1];
    if (stage) {
      const d = dilation.get(stage) ?? 1;
      return d > 1 ? `${stage} (dilated, up to ${d})` : stage;
    }
    if (n.startsWith('classifier.')) return 'head (3x3 conv 512, 1x1 conv)';
    if (n.startsWith('aux_classifier.')) return 'auxiliary head';
    if (n.startsWith('resize')) return 'upsampling (Resize)';
    if (/^(conv1|bn1|maxpool)/.test(n)) return 'stem';
    return 'other';
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
    bytes = exportSegmenter(seg, { foldBatchNorm: o.foldBatchNorm ?? false });
    if (o.variants) folded = o.foldBatchNorm ? bytes : exportSegmenter(seg, { foldBatchNorm: true });
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
      peer = TorchPeer.start(python, 'bench_seg.py', { threads: o.threads, height: H, width: W, classes, seed: 0, warmup: 1, input });
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
    return result;
  } finally {
    peer?.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

const outputText = (s: OutputSummary) => `logits [${s.shape.join(', ')}], ${s.finite === 1 ? 'all finite' : `${(100 * s.finite).toFixed(1)}% finite`}, max |x| ${s.maxAbs?.toPrecision(3) ?? '-'}`;

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
  if (r.variants) {
    lines.push(
      '',
      table(
        r.variants.map((v) => [v.name, v.imagesPerSecond.toFixed(3), `${(v.seconds * 1000).toFixed(0)} ms`, `${v.relative.toFixed(3)}x`]),
        ['ORT variant (alternated)', 'images/s', 'median', 'vs first, run by run'],
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
    .parse(process.argv)
    .opts<{ runs: number; threads?: number; size: string; out: string; torch: boolean; profile?: boolean; foldBn?: boolean; variants?: boolean }>();
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
    height,
    width,
  });
  console.log(`\n${describeSegmentation(r)}`);
  await writeFileAtomic(opts.out, JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), ...r }, null, 2));
  console.log(`wrote ${opts.out}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main().then(() => process.exit(0), fail);
