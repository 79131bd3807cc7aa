/**
 * The detection part of `npm run bench`: images/s of the exported ResNet-50-D Faster R-CNN (C4, the
 * VOC configuration: 20 classes + background) in onnxruntime-node, batch 1 at 600x1000, beside a
 * PyTorch peer of the same configuration built from torchvision's FasterRCNN (scripts/bench_det.py),
 * with the same number of threads, in the same run.
 *
 * The two are timed alternately, one inference each in turn, so that a change in the machine's load
 * during the benchmark falls on both alike; the figures are medians after a warm-up. Both get the
 * same input (smooth random images at the scale of normalized ones, written to a file for the peer)
 * and random weights initialized alike, so that about as many boxes reach each NMS: the proposal and
 * detection counts of both are reported to compare the workloads.
 *
 * Also a script of its own (`node dist/scripts/bench-detection.js [--runs n] [--threads n]
 * [--no-torch] [--profile] [--out file]`); `--profile` adds ONNX Runtime's per-node timings of one
 * inference, summed by operator and by part of the network.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { createDetector } from '../src/detection/detector.js';
import { exportDetector, smoothImages } from '../src/detection/export.js';
import { toNCHW } from '../src/onnx/check.js';
import { DataType, decodeModel, onnx, valueInfo } from '../src/onnx/proto.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { initBackend, describeBackend } from '../src/backend/index.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { fail, table } from '../zoo/run.js';
import {
  TorchPeer,
  alternate,
  checkBenchArgs,
  benchSession,
  describeProfile,
  exportedNodeOf,
  findPython,
  median,
  pairedRatio,
  profileOrt,
  targetText,
  unmappedPart,
  type OrtProfile,
} from './bench_common.js';

/** Boxes at each stage of one inference: the workload the selection steps see. */
export interface DetectionCounts {
  /** Proposals out of the RPN's NMS (at most 300). */
  proposals: number;
  /** Detections out of the per-class NMS, before the cut to the 100 best. */
  afterNms: number;
  detections: number;
}

export interface DetectionBenchOptions {
  runs: number;
  threads: number;
  /** Run the PyTorch peer (when Debian's python3-torch and python3-torchvision are installed). */
  torch?: boolean;
  profile?: boolean;
  height?: number;
  width?: number;
  arch?: string;
  classes?: number;
  log?: (line: string) => void;
}

/** ONNX Runtime's per-node timings of one inference, by operator and by part of the detector. */
export type DetectionProfile = OrtProfile;

export interface DetectionBenchResult {
  name: string;
  arch: string;
  classes: number;
  batch: 1;
  height: number;
  width: number;
  provider: string;
  threads: number;
  seconds: number;
  times: number[];
  imagesPerSecond: number;
  counts: DetectionCounts | null;
  torch: {
    torch: string;
    torchvision: string;
    threads: number;
    params: number;
    seconds: number;
    times: number[];
    imagesPerSecond: number;
    counts: DetectionCounts;
  } | null;
  /** zoo / PyTorch images per second (of the medians). */
  ratio: number | null;
  /** The median of the run-by-run ratios (each run of zoo against the PyTorch run that follows it). */
  pairedRatio: number | null;
  target: number;
  profile?: DetectionProfile;
}

export const DETECTION_TARGET = 1.5;

/**
 * The exported graph with the outputs of its two NonMaxSuppression nodes (RPN first, detections
 * last, in the order proposals.ts emits them) added as graph outputs, to count the boxes they keep.
 */
export function withNmsOutputs(bytes: Uint8Array): { bytes: Uint8Array; rpn: string; det: string } | undefined {
  const model = decodeModel(bytes, 'the exported detector');
  const g = model.graph!;
  const nms = (g.node ?? []).filter((n) => n.opType === 'NonMaxSuppression');
  if (nms.length < 2) return undefined;
  const rpn = nms[0]!.output![0]!;
  const det = nms[nms.length - 1]!.output![0]!;
  g.output!.push(valueInfo(rpn, DataType.INT64, ['rpn_selected', 3]), valueInfo(det, DataType.INT64, ['det_selected', 3]));
  return { bytes: onnx.ModelProto.encode(model).finish(), rpn, det };
}

type Feeds = Parameters<typeof runSession>[1];

async function countBoxes(bytes: Uint8Array, feeds: Feeds, threads: number): Promise<DetectionCounts | null> {
  const probe = withNmsOutputs(bytes);
  if (!probe) return null;
  const s = await createSession(probe.bytes, { provider: 'cpu', intraOpThreads: threads });
  try {
    const r = await runSession(s, feeds);
    return { proposals: r[probe.rpn]!.dims[0]!, afterNms: r[probe.det]!.dims[0]!, detections: Number((r.num_detections!.data as BigInt64Array)[0]) };
  } finally {
    await s.session.release();
  }
}

/** Which part of the detector a node of ONNX Runtime's optimized graph belongs to. */
export function partResolver(bytes: Uint8Array): (name: string) => string {
  const nodes = decodeModel(bytes, 'the exported detector').graph!.node ?? [];
  const exported = exportedNodeOf(bytes);
  const roi = nodes.findIndex((n) => n.opType === 'RoiAlign');
  return (name: string) => {
    const i = exported(name);
    if (i === undefined) return unmappedPart(name);
    const n = nodes[i]!.name!;
    const post = n.startsWith('det_') || n.startsWith('rpn_');
    if (i === roi) return 'RoiAlign';
    if (roi < 0) return post ? 'post-processing' : 'network';
    if (i < roi) return n.startsWith('rpn.head') ? 'RPN head' : post ? 'proposals (TopK, decode, NMS)' : 'trunk (stem..stage 3)';
    return n.startsWith('roi_heads') ? 'predictor' : post ? 'detections (decode, NMS, TopK)' : 'box head (stage 4, pool)';
  };
}

/** ONNX Runtime's profile of one inference after a warm-up, summed by operator and by part. */
export function profileSession(bytes: Uint8Array, feeds: Feeds, threads: number): Promise<DetectionProfile> {
  return profileOrt(bytes, feeds, threads, partResolver(bytes));
}

/** Runs the detection benchmark; progress lines go to `log`. */
export async function benchDetection(o: DetectionBenchOptions): Promise<DetectionBenchResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const [H, W] = [o.height ?? 600, o.width ?? 1000];
  const arch = o.arch ?? 'resnet50d';
  const classes = o.classes ?? 20;
  const runs = Math.max(1, o.runs);
  const det = createDetector(arch, classes, { seed: 0 });
  let bytes: Uint8Array;
  try {
    bytes = await exportDetector(det);
  } finally {
    det.dispose();
  }
  const nchw = toNCHW(smoothImages(1, H, W, 11), 1, H, W, 3);
  const feeds: Feeds = { input: { type: 'float32', data: nchw, dims: [1, 3, H, W] } };
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-bench-det-'));
  let peer: TorchPeer | undefined;
  try {
    const python = o.torch === false ? undefined : findPython(['torch', 'torchvision']);
    if (o.torch !== false && !python) log('  python3-torch / python3-torchvision not found (apt-get install python3-torchvision): no ratio');
    if (python) {
      // The peer builds and warms up while this side does the same; nothing is timed until both are ready.
      const input = path.join(tmp, 'input.f32');
      writeFileSync(input, nchw);
      peer = TorchPeer.start(python, 'bench_det.py', { threads: o.threads, height: H, width: W, classes, seed: 0, warmup: 1, input });
    }
    const session = await benchSession(bytes, o.threads);
    let times: { zoo: number[]; torch: number[] };
    let counts: DetectionCounts | null;
    let ready: Record<string, unknown> | undefined;
    try {
      await runSession(session, feeds); // warm-up
      counts = await countBoxes(bytes, feeds, o.threads);
      if (peer) ready = await peer.next();
      times = await alternate(runs, () => runSession(session, feeds), peer, log);
    } finally {
      await session.session.release();
    }
    peer?.close();
    peer = undefined;
    const { zoo: zooTimes, torch: torchTimes } = times;
    const seconds = median(zooTimes);
    const result: DetectionBenchResult = {
      name: `faster_rcnn_${arch} onnxruntime-node (cpu) b1 ${H}x${W}`,
      arch,
      classes,
      batch: 1,
      height: H,
      width: W,
      provider: 'cpu',
      threads: o.threads,
      seconds,
      times: zooTimes,
      imagesPerSecond: 1 / seconds,
      counts,
      torch: null,
      ratio: null,
      pairedRatio: null,
      target: DETECTION_TARGET,
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
        counts: { proposals: Number(ready.proposals), afterNms: Number(ready.afterNms), detections: Number(ready.detections) },
      };
      result.ratio = result.imagesPerSecond / result.torch.imagesPerSecond;
      result.pairedRatio = pairedRatio(zooTimes, torchTimes);
    }
    if (o.profile) result.profile = await profileSession(bytes, feeds, o.threads);
    return result;
  } finally {
    peer?.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

const countText = (c: DetectionCounts | null | undefined) => (c ? `${c.proposals} proposals, ${c.afterNms} after NMS, ${c.detections} detections` : 'counts unavailable');

/** The report lines: images/s of both, the ratio against the target, the workloads. */
export function describeDetection(r: DetectionBenchResult): string {
  const lines = [
    table(
      [
        [
          `${r.arch} C4 b1 ${r.height}x${r.width}`,
          r.imagesPerSecond.toFixed(3),
          r.torch ? r.torch.imagesPerSecond.toFixed(3) : '-',
          r.ratio !== null ? `${r.ratio.toFixed(2)}x` : '-',
          targetText(r.ratio, r.target),
        ],
      ],
      ['Faster R-CNN', 'ORT images/s', 'PyTorch images/s', 'ratio', 'target'],
    ),
    `  onnxruntime-node: median ${(r.seconds * 1000).toFixed(0)} ms of ${r.times.length}, ${r.threads} threads; ${countText(r.counts)}`,
  ];
  if (r.torch) {
    lines.push(
      `  PyTorch:          median ${(r.torch.seconds * 1000).toFixed(0)} ms of ${r.torch.times.length}, ${r.torch.threads} threads (torch ${r.torch.torch}, torchvision ${r.torch.torchvision}); ${countText(r.torch.counts)}`,
      `  ratio run by run: ${r.pairedRatio!.toFixed(2)}x (median over the ${r.times.length} pairs of alternated runs)`,
    );
  }
  if (r.profile) lines.push(...describeProfile(r.profile));
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = new Command('bench-detection')
    .option('--runs <n>', 'timed runs of each', (v) => Number(v), 5)
    .option('--threads <n>', 'threads of both (default: the backend\'s)', (v) => Number(v))
    .option('--out <file>', 'JSON output', 'bench-results/bench-detection.json')
    .option('--size <HxW>', 'image height x width', '600x1000')
    .option('--no-torch', 'skip the PyTorch peer')
    .option('--profile', 'add ONNX Runtime\'s per-node timings of one inference')
    .parse(process.argv)
    .opts<{ runs: number; threads?: number; size: string; out: string; torch: boolean; profile?: boolean }>();
  const [height, width] = checkBenchArgs(opts);
  const info = await initBackend({ purpose: 'inference' });
  const threads = opts.threads ?? info.threads;
  console.log(`${describeBackend(info)}; ${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores; ${threads} threads, ${opts.runs} runs`);
  const r = await benchDetection({ runs: opts.runs, threads, torch: opts.torch, profile: opts.profile ?? false, height, width });
  console.log(`\n${describeDetection(r)}`);
  await writeFileAtomic(opts.out, JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), ...r }, null, 2));
  console.log(`wrote ${opts.out}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main().then(() => process.exit(0), fail);
