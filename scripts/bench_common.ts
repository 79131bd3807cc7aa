/**
 * What the benchmarks that put an exported zoo model in onnxruntime-node beside a PyTorch peer share
 * (bench-detection.ts, bench-seg.ts, and the medians of bench.ts): the statistics, finding Debian's
 * python, the peer in its serving mode, timing the two alternately, the CPU session both sides are
 * compared on, and ONNX Runtime's per-node profile of one inference summed by operator and by part.
 */
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { decodeModel } from '../src/onnx/proto.js';
import { createSession, ort, runSession, type Session } from '../src/runtime/ort.js';
import { table } from '../zoo/run.js';
import { UserError } from '../src/errors.js';

/** onnxruntime-node's session options (its types reached through src/runtime, which owns the module). */
export type OrtSessionOptions = NonNullable<Parameters<ReturnType<typeof ort>['InferenceSession']['create']>[1]>;
type Feeds = Parameters<typeof runSession>[1];

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The median of the run-by-run ratios peer / zoo (of times: zoo's speed over the peer's), each zoo
 *  run against the peer run that follows it. */
export function pairedRatio(zooTimes: number[], peerTimes: number[]): number {
  return median(zooTimes.map((z, i) => peerTimes[i]! / z));
}

/** "met" / "NOT met" against a ratio target, "-" without a ratio. */
export function targetText(ratio: number | null | undefined, target: number): string {
  return ratio === null || ratio === undefined ? '-' : `>= ${target}x ${ratio >= target ? 'met' : 'NOT met'}`;
}

/** Checks a benchmark script's --runs, --threads and --size (HxW): usage errors name the option. Returns [height, width]. */
export function checkBenchArgs(opts: { runs: number; threads?: number; size: string }): [number, number] {
  const size = /^(\d+)x(\d+)$/.exec(opts.size);
  if (!size || Number(size[1]) < 32 || Number(size[2]) < 32) throw new UserError(`--size takes HEIGHTxWIDTH of at least 32x32, got '${opts.size}'`, { exitCode: 2 });
  if (!Number.isInteger(opts.runs) || opts.runs < 1) throw new UserError(`--runs takes a positive integer, got '${opts.runs}'`, { exitCode: 2 });
  if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 1)) throw new UserError(`--threads takes a positive integer, got '${opts.threads}'`, { exitCode: 2 });
  return [Number(size[1]), Number(size[2])];
}

/** A python that imports `modules`: Debian's first (the pyenv on PATH may lack python3-torch). */
export function findPython(modules: string[]): string | undefined {
  return ['/usr/bin/python3', 'python3'].find((p) => {
    try {
      execFileSync(p, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });
}

/** The path of a script of scripts/ from the compiled scripts (dist/scripts/*.js). */
export function scriptPath(name: string): string {
  const script = fileURLToPath(new URL(`../../scripts/${name}`, import.meta.url));
  if (!existsSync(script)) throw new Error(`missing ${script}`);
  return script;
}

/**
 * A PyTorch peer (scripts/bench_*.py) started in its serving mode: one JSON line when it is built and
 * warmed up, then one `{"seconds": s}` line for each "run" it is sent.
 */
export class TorchPeer {
  private readonly lines: AsyncIterator<string>;
  private stderr = '';

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly script: string,
  ) {
    child.stderr.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    child.stdin.on('error', () => {}); // a peer that died is reported by next()
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  /** Starts `scripts/<script>` with the job as JSON on argv[1] (and `serve: true`). */
  static start(python: string, script: string, job: Record<string, unknown>): TorchPeer {
    const file = scriptPath(script);
    return new TorchPeer(spawn(python, [file, JSON.stringify({ ...job, serve: true })], { stdio: ['pipe', 'pipe', 'pipe'] }), script);
  }

  /** The next line, parsed: the first is the peer's description once it is ready. */
  async next(): Promise<Record<string, unknown>> {
    const r = await this.lines.next();
    if (r.done) throw new Error(`the PyTorch peer (scripts/${this.script}) stopped: ${this.stderr.trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
    return JSON.parse(r.value) as Record<string, unknown>;
  }

  /** One timed inference of the peer: its seconds (or, for a peer timing several cases, their list). */
  async run<T = number>(): Promise<T> {
    this.child.stdin.write('run\n');
    return (await this.next()).seconds as T;
  }

  close(): void {
    this.child.stdin.end('quit\n');
  }
}

/**
 * `runs` timed inferences of zoo's side, each followed by one of the peer's (when there is one), so
 * that a change in the machine's load falls on both alike. The caller warms both up first.
 */
export async function alternate(
  runs: number,
  zoo: () => Promise<unknown>,
  peer: TorchPeer | undefined,
  log: (line: string) => void,
): Promise<{ zoo: number[]; torch: number[] }> {
  const zooTimes: number[] = [];
  const torchTimes: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t = performance.now();
    await zoo();
    zooTimes.push((performance.now() - t) / 1000);
    if (peer) torchTimes.push(await peer.run());
    log(`  run ${r + 1}/${runs}: onnxruntime-node ${zooTimes[r]!.toFixed(2)} s${peer ? `, PyTorch ${torchTimes[r]!.toFixed(2)} s` : ''}`);
  }
  return { zoo: zooTimes, torch: torchTimes };
}

/** ONNX Runtime's session options for a benchmark: the CPU provider (the peers run on the CPU, so
 *  ONNX Runtime does too even where CUDA is installed), all graph optimizations, `threads` threads. */
export function benchSessionOptions(threads: number): OrtSessionOptions {
  return { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads };
}

/** The session zoo's side is timed on: src/runtime's, on the CPU with `threads` threads. */
export function benchSession(bytes: Uint8Array, threads: number): Promise<Session> {
  return createSession(bytes, { provider: 'cpu', intraOpThreads: threads });
}


export interface OrtProfile {
  /** Sum of the node kernel times of one inference (ms) and the run's wall time (ms). */
  kernelMs: number;
  runMs: number;
  /** [name, ms, calls] by operator type and by part of the network, largest first. */
  byOp: [string, number, number][];
  byPart: [string, number, number][];
  /** The slowest single nodes: [node, op, ms]. */
  topNodes: [string, string, number][];
  /** Billions of multiply-adds of the convolutions in each part (from the shapes ONNX Runtime reports). */
  convGmacs: Record<string, number>;
}

type ShapeArg = Record<string, number[]>[];

/** A convolution's multiply-adds from its profiled shapes: weight elements x batch x output height x width
 *  (the output may be in ONNX Runtime's blocked layout, [N, C/8, H, W, 8]: its height and width sit alike). */
function convMacs(args: { input_type_shape?: ShapeArg; output_type_shape?: ShapeArg }): number {
  const w = Object.values(args.input_type_shape?.[1] ?? {})[0];
  const y = Object.values(args.output_type_shape?.[0] ?? {})[0];
  if (!w || !y || y.length < 4) return 0;
  return w.reduce((a, b) => a * b, 1) * y[0]! * y[2]! * y[3]!;
}

/**
 * Maps a node of ONNX Runtime's optimized graph to the index of the exported node it comes from. Its
 * nodes keep the exported names, or take the name of the value they compute with a suffix
 * ('layer4.0.conv2.relu_out_nchwc' for a Conv fused with its BN and ReLU in the blocked layout,
 * 'det_slice_3/GatherSliceToSplitFusion'); layout conversions it adds map to nothing.
 */
export function exportedNodeOf(bytes: Uint8Array): (name: string) => number | undefined {
  const nodes = decodeModel(bytes, 'the exported model').graph!.node ?? [];
  const byName = new Map<string, number>();
  const byOutput = new Map<string, number>();
  nodes.forEach((n, i) => {
    byName.set(n.name!, i);
    for (const o of n.output ?? []) byOutput.set(o, i);
  });
  return (name: string) => {
    const base = name.replace(/\/.*$/, '');
    return byName.get(base) ?? byOutput.get(base.replace(/_nchwc$/, '')) ?? byName.get(base.replace(/_nchwc$/, ''));
  };
}

/** The part of a node that exportedNodeOf maps to nothing: ONNX Runtime's own layout conversions, or 'other'. */
export function unmappedPart(name: string): string {
  return /^(Reorder|Reshape)/.test(name.replace(/\/.*$/, '')) ? 'layout changes (ONNX Runtime)' : 'other';
}

/**
 * ONNX Runtime's profile of one inference after a warm-up, summed by operator and by part (`partOf`
 * names the part of an optimized-graph node). `options` are the session options profiled (default:
 * benchSessionOptions).
 */
export async function profileOrt(
  bytes: Uint8Array,
  feeds: Feeds,
  threads: number,
  partOf: (name: string) => string,
  options: OrtSessionOptions = benchSessionOptions(threads),
): Promise<OrtProfile> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-bench-prof-'));
  try {
    const session = await ort().InferenceSession.create(bytes, { ...options, enableProfiling: true, profileFilePrefix: path.join(dir, 'prof') });
    const s: Session = { session, provider: 'cpu' };
    await runSession(s, feeds);
    await runSession(s, feeds);
    session.endProfiling();
    await session.release();
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) throw new Error(`ONNX Runtime wrote no profile into ${dir}`);
    type Event = { cat: string; name: string; ts: number; dur: number; args?: { op_name?: string; input_type_shape?: ShapeArg; output_type_shape?: ShapeArg } };
    const events = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Event[];
    const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts);
    const last = runs[runs.length - 1]!;
    const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.ts >= last.ts && e.ts <= last.ts + last.dur);
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
    const convGmacs: Record<string, number> = {};
    for (const e of nodes) {
      const name = e.name.slice(0, -'_kernel_time'.length);
      const op = e.args?.op_name ?? '?';
      const ms = e.dur / 1000;
      const part = partOf(name);
      kernelMs += ms;
      add(byOp, op, ms);
      add(byPart, part, ms);
      top.push([name, op, ms]);
      if (/Conv$/.test(op)) convGmacs[part] = (convGmacs[part] ?? 0) + convMacs(e.args ?? {}) / 1e9;
    }
    const sorted = (m: Map<string, [number, number]>) => [...m].map(([k, [ms, n]]) => [k, ms, n] as [string, number, number]).sort((a, b) => b[1] - a[1]);
    return { kernelMs, runMs: last.dur / 1000, byOp: sorted(byOp), byPart: sorted(byPart), topNodes: top.sort((a, b) => b[2] - a[2]).slice(0, 12), convGmacs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A profile as the lines of three tables: by part (with the convolutions' multiply-add rate), by operator, the slowest nodes. */
export function describeProfile(p: OrtProfile): string[] {
  const row = ([k, ms, n]: [string, number, number]) => [k, ms.toFixed(0), String(n), `${((100 * ms) / p.kernelMs).toFixed(1)}%`];
  // How near each part's convolutions run to the machine's multiply-add rate.
  const gmacs = p.convGmacs ?? {};
  const speed = (k: string, ms: number) => (gmacs[k] ? `${gmacs[k]!.toFixed(1)} GMAC at ${((1000 * gmacs[k]!) / ms).toFixed(1)} GMAC/s` : '');
  const total = Object.values(gmacs).reduce((a, b) => a + b, 0);
  return [
    `\nONNX Runtime profile of one inference: ${p.runMs.toFixed(0)} ms, nodes ${p.kernelMs.toFixed(0)} ms${total ? `; convolutions ${total.toFixed(1)} GMAC` : ''}`,
    table(p.byPart.slice(0, 16).map((r) => [...row(r), speed(r[0], r[1])]), ['part', 'ms', 'nodes', 'share', 'convolutions']),
    '',
    table(p.byOp.slice(0, 12).map(row), ['operator', 'ms', 'nodes', 'share']),
    '',
    table(p.topNodes.map(([n, op, ms]) => [n, op, ms.toFixed(0)]), ['slowest nodes', 'operator', 'ms']),
  ];
}
