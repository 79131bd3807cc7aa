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
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { createDetector } from '../src/detection/detector.js';
import { exportDetector, smoothImages } from '../src/detection/export.js';
import { toNCHW } from '../src/onnx/check.js';
import { DataType, decodeModel, onnx, valueInfo } from '../src/onnx/proto.js';
import { createSession, ort, runSession, type Session } from '../src/runtime/ort.js';
import { initBackend, describeBackend } from '../src/backend/index.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { fail, table } from '../zoo/run.js';
import { UserError } from '../src/errors.js';

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

export interface DetectionProfile {
  /** Sum of the node kernel times of one inference (ms) and the run's wall time (ms). */
  kernelMs: number;
  runMs: number;
  /** [name, ms, calls] by operator type and by part of the network, largest first. */
  byOp: [string, number, number][];
  byPart: [string, number, number][];
  /** The slowest single nodes: [node, op, ms]. */
  topNodes: [string, string, number][];
}

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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A python with torch and torchvision: Debian's first (the pyenv on PATH may lack them). */
function findPython(): string | undefined {
  return ['/usr/bin/python3', 'python3'].find((p) => {
    try {
      execFileSync(p, ['-c', 'import torch, torchvision'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });
}

/** The peer, started in its serving mode: one JSON line when ready, then one per "run". */
class TorchPeer {
  private readonly lines: AsyncIterator<string>;
  private stderr = '';

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stderr.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    child.stdin.on('error', () => {}); // a peer that died is reported by next()
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  static start(python: string, job: Record<string, unknown>): TorchPeer {
    const script = fileURLToPath(new URL('../../scripts/bench_det.py', import.meta.url));
    if (!existsSync(script)) throw new Error(`missing ${script}`);
    return new TorchPeer(spawn(python, [script, JSON.stringify({ ...job, serve: true })], { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  async next(): Promise<Record<string, unknown>> {
    const r = await this.lines.next();
    if (r.done) throw new Error(`the PyTorch peer (scripts/bench_det.py) stopped: ${this.stderr.trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
    return JSON.parse(r.value) as Record<string, unknown>;
  }

  async run(): Promise<number> {
    this.child.stdin.write('run\n');
    return (await this.next()).seconds as number;
  }

  close(): void {
    this.child.stdin.end('quit\n');
  }
}

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

/**
 * Which part of the detector a node of ONNX Runtime's optimized graph belongs to. Its nodes keep the
 * exported names, or take the name of the value they compute with a suffix ('layer4.0.conv2.relu_out_nchwc'
 * for a Conv fused with its BN and ReLU in the blocked layout, 'det_slice_3/GatherSliceToSplitFusion');
 * layout conversions it adds are counted apart.
 */
export function partResolver(bytes: Uint8Array): (name: string) => string {
  const nodes = decodeModel(bytes, 'the exported detector').graph!.node ?? [];
  const byName = new Map<string, number>();
  const byOutput = new Map<string, number>();
  nodes.forEach((n, i) => {
    byName.set(n.name!, i);
    for (const o of n.output ?? []) byOutput.set(o, i);
  });
  const roi = nodes.findIndex((n) => n.opType === 'RoiAlign');
  return (name: string) => {
    const base = name.replace(/\/.*$/, '');
    const i = byName.get(base) ?? byOutput.get(base.replace(/_nchwc$/, '')) ?? byName.get(base.replace(/_nchwc$/, ''));
    if (i === undefined) return /^(Reorder|Reshape)/.test(base) ? 'layout changes (ONNX Runtime)' : 'other';
    const n = nodes[i]!.name!;
    const post = n.startsWith('det_') || n.startsWith('rpn_');
    if (i === roi) return 'RoiAlign';
    if (roi < 0) return post ? 'post-processing' : 'network';
    if (i < roi) return n.startsWith('rpn.head') ? 'RPN head' : post ? 'proposals (TopK, decode, NMS)' : 'trunk (stem..stage 3)';
    return n.startsWith('roi_heads') ? 'predictor' : post ? 'detections (decode, NMS, TopK)' : 'box head (stage 4, pool)';
  };
}

/** ONNX Runtime's profile of one inference after a warm-up, summed by operator and by part. */
export async function profileSession(bytes: Uint8Array, feeds: Feeds, threads: number): Promise<DetectionProfile> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-bench-det-prof-'));
  try {
    const session = await ort().InferenceSession.create(bytes, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: threads,
      enableProfiling: true,
      profileFilePrefix: path.join(dir, 'det'),
    });
    const s: Session = { session, provider: 'cpu' };
    await runSession(s, feeds);
    await runSession(s, feeds);
    session.endProfiling();
    await session.release();
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) throw new Error(`ONNX Runtime wrote no profile into ${dir}`);
    type Event = { cat: string; name: string; ts: number; dur: number; args?: { op_name?: string } };
    const events = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Event[];
    const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts);
    const last = runs[runs.length - 1]!;
    const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.ts >= last.ts && e.ts <= last.ts + last.dur);
    const partOf = partResolver(bytes);
    const byOp = new Map<string, [number, number]>();
    const byPart = new Map<string, [number, number]>();
    const add = (m: Map<string, [number, number]>, k: string, ms: number) => {
      const a = m.get(k) ?? [0, 0];
      a[0] += ms;
      a[1]++;
      m.set(k, a);
    };
    let kernelMs = 0;
    const top: [string, string, number][] = [];
    for (const e of nodes) {
      const name = e.name.slice(0, -'_kernel_time'.length);
      const op = e.args?.op_name ?? '?';
      const ms = e.dur / 1000;
      kernelMs += ms;
      add(byOp, op, ms);
      add(byPart, partOf(name), ms);
      top.push([name, op, ms]);
    }
    const sorted = (m: Map<string, [number, number]>) => [...m].map(([k, [ms, n]]) => [k, ms, n] as [string, number, number]).sort((a, b) => b[1] - a[1]);
    return { kernelMs, runMs: last.dur / 1000, byOp: sorted(byOp), byPart: sorted(byPart), topNodes: top.sort((a, b) => b[2] - a[2]).slice(0, 12) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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
    bytes = exportDetector(det);
  } finally {
    det.dispose();
  }
  const nchw = toNCHW(smoothImages(1, H, W, 11), 1, H, W, 3);
  const feeds: Feeds = { input: { type: 'float32', data: nchw, dims: [1, 3, H, W] } };
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-bench-det-'));
  let peer: TorchPeer | undefined;
  try {
    const python = o.torch === false ? undefined : findPython();
    if (o.torch !== false && !python) log('  python3-torch / python3-torchvision not found (apt-get install python3-torchvision): no ratio');
    if (python) {
      // The peer builds and warms up while this side does the same; nothing is timed until both are ready.
      const input = path.join(tmp, 'input.f32');
      writeFileSync(input, nchw);
      peer = TorchPeer.start(python, { threads: o.threads, height: H, width: W, classes, seed: 0, warmup: 1, input });
    }
    // CPU against CPU: the peer runs on the CPU, so ONNX Runtime does too even where CUDA is installed.
    const session = await createSession(bytes, { provider: 'cpu', intraOpThreads: o.threads });
    const zooTimes: number[] = [];
    const torchTimes: number[] = [];
    let counts: DetectionCounts | null;
    let ready: Record<string, unknown> | undefined;
    try {
      await runSession(session, feeds); // warm-up
      counts = await countBoxes(bytes, feeds, o.threads);
      if (peer) ready = await peer.next();
      for (let r = 0; r < runs; r++) {
        const t = performance.now();
        await runSession(session, feeds);
        zooTimes.push((performance.now() - t) / 1000);
        if (peer) torchTimes.push(await peer.run());
        log(`  run ${r + 1}/${runs}: onnxruntime-node ${zooTimes[r]!.toFixed(2)} s${peer ? `, PyTorch ${torchTimes[r]!.toFixed(2)} s` : ''}`);
      }
    } finally {
      await session.session.release();
    }
    peer?.close();
    peer = undefined;
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
      result.pairedRatio = median(zooTimes.map((z, i) => torchTimes[i]! / z));
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
          r.ratio !== null ? `>= ${r.target}x ${r.ratio >= r.target ? 'met' : 'NOT met'}` : '-',
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
  if (r.profile) {
    const p = r.profile;
    const rows = (xs: [string, number, number][]) => xs.slice(0, 12).map(([k, ms, n]) => [k, ms.toFixed(0), String(n), `${((100 * ms) / p.kernelMs).toFixed(1)}%`]);
    lines.push(
      `\nONNX Runtime profile of one inference: ${p.runMs.toFixed(0)} ms, nodes ${p.kernelMs.toFixed(0)} ms`,
      table(rows(p.byPart), ['part', 'ms', 'nodes', 'share']),
      '',
      table(rows(p.byOp), ['operator', 'ms', 'nodes', 'share']),
      '',
      table(p.topNodes.map(([n, op, ms]) => [n, op, ms.toFixed(0)]), ['slowest nodes', 'operator', 'ms']),
    );
  }
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
  const size = /^(\d+)x(\d+)$/.exec(opts.size);
  if (!size || Number(size[1]) < 32 || Number(size[2]) < 32) throw new UserError(`--size takes HEIGHTxWIDTH of at least 32x32, got '${opts.size}'`, { exitCode: 2 });
  if (!Number.isInteger(opts.runs) || opts.runs < 1) throw new UserError(`--runs takes a positive integer, got '${opts.runs}'`, { exitCode: 2 });
  if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 1)) throw new UserError(`--threads takes a positive integer, got '${opts.threads}'`, { exitCode: 2 });
  const info = await initBackend({ purpose: 'inference' });
  const threads = opts.threads ?? info.threads;
  console.log(`${describeBackend(info)}; ${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores; ${threads} threads, ${opts.runs} runs`);
  const r = await benchDetection({ runs: opts.runs, threads, torch: opts.torch, profile: opts.profile ?? false, height: Number(size[1]), width: Number(size[2]) });
  console.log(`\n${describeDetection(r)}`);
  await writeFileAtomic(opts.out, JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), ...r }, null, 2));
  console.log(`wrote ${opts.out}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main().then(() => process.exit(0), fail);
