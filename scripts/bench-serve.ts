/**
 * `npm run bench:serve`: a bounded load test of `zoo serve` on 127.0.0.1, beside bare onnxruntime-node.
 *
 * The model is ResNet-50-D (random weights: a dense network's work does not depend on them) exported at
 * 224x224 with a dynamic batch. Bare: one session of src/runtime on the CPU, timed at batch 1, 4, 8, 16
 * and 32; its best images/s is the reference, measured before and after the service (the mean of the
 * two is used, so a change in the machine's load falls on both sides alike). Service: `zoo serve` as a
 * child process with its defaults (max batch 32, 5 ms delay), driven by closed-loop clients here that
 * each send one image per request as binary tensors (the protocol's binary extension) and wait for the
 * answer, at concurrency 1, 8 and 32, for a fixed time each. Throughput is answers per second over that
 * time; latency p50 and p99 are over every answer. A last row sends JPEG images to the task endpoint at
 * concurrency 32 (decoding and preprocessing included), for what an image client sees.
 *
 * Also a script of its own: `node dist/scripts/bench-serve.js [--seconds s] [--threads n] [--out file]`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import sharp from 'sharp';
import { initBackend, describeBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/model.js';
import { exportOnnx } from '../src/onnx/export.js';
import { metadataProps } from '../src/onnx/metadata.js';
import { IMAGENET_PREPROCESSING } from '../src/predict/preprocessing.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { encodeInferRequest } from '../src/serve/protocol.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { UserError } from '../src/errors.js';
import { fail, table } from '../zoo/run.js';
import { median } from './bench_common.js';

const TARGET = 0.95;
const BARE_BATCHES = [1, 4, 8, 16, 32];
const CONCURRENCY = [1, 8, 32];

interface Level {
  what: string;
  concurrency: number;
  requests: number;
  errors: number;
  seconds: number;
  imagesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : NaN;
}

/** Images/s of bare onnxruntime-node at each batch: the median over runs of `seconds` in all per batch. */
async function bare(file: string, threads: number, seconds: number, batches: readonly number[]): Promise<Map<number, number>> {
  const s = await createSession(file, { provider: 'cpu', intraOpThreads: threads });
  const out = new Map<number, number>();
  try {
    for (const b of batches) {
      const x = new Float32Array(b * 3 * 224 * 224).map((_, i) => Math.sin(i * 0.001));
      const feeds = { input: { type: 'float32' as const, data: x, dims: [b, 3, 224, 224] } };
      await runSession(s, feeds);
      const rates: number[] = [];
      const end = performance.now() + seconds * 1000;
      while (performance.now() < end || rates.length < 3) {
        const t0 = performance.now();
        await runSession(s, feeds);
        rates.push(b / ((performance.now() - t0) / 1000));
      }
      out.set(b, median(rates));
    }
  } finally {
    await s.session.release();
  }
  return out;
}

/** Starts `zoo serve` on a free port; resolves with its URL once it listens. */
function startService(cli: string, file: string, threads: number): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [cli, 'serve', `resnet50d=${file}`, '--port', '0', '--device', 'cpu', '--threads', String(threads), '--no-access-log'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
      const m = /listening on (http:\/\/\S+) /.exec(stderr);
      if (m) resolve({ url: m[1]!, child });
    });
    child.once('exit', (code) => reject(new Error(`zoo serve exited (${code}) before listening: ${stderr.trim()}`)));
  });
}

/** Closed-loop clients: each sends a request, waits for its answer, sends the next, for `seconds`. */
async function load(concurrency: number, seconds: number, send: () => Promise<number>, what: string): Promise<Level> {
  const latencies: number[] = [];
  let errors = 0;
  const warmEnd = performance.now() + 2000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < warmEnd) await send();
  }));
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const s = performance.now();
        const status = await send().catch(() => 0);
        if (status === 200) latencies.push(performance.now() - s);
        else errors++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return { what, concurrency, requests: latencies.length, errors, seconds: elapsed, imagesPerSecond: latencies.length / elapsed, p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99) };
}

async function main(): Promise<void> {
  const program = new Command('bench-serve')
    .option('--seconds <s>', 'time per concurrency level (and per batch of the bare runs, halved)', Number, 15)
    .option('--threads <n>', 'ONNX Runtime intra-op threads, bare and in the service', Number, os.availableParallelism())
    .option('--out <file>', 'JSON output', 'bench-results/bench-serve.json')
    .parse(process.argv);
  const opts = program.opts<{ seconds: number; threads: number; out: string }>();
  if (!(opts.seconds > 0 && opts.seconds <= 600)) throw new UserError(`--seconds takes a number from 1 to 600, got ${opts.seconds}`, { exitCode: 2 });
  if (!Number.isInteger(opts.threads) || opts.threads < 1) throw new UserError(`--threads takes a positive integer, got ${opts.threads}`, { exitCode: 2 });
  const cli = fileURLToPath(new URL('../zoo/index.js', import.meta.url));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-bench-serve-'));
  let child: ChildProcess | undefined;
  try {
    const backend = describeBackend(await initBackend({ purpose: 'inference' }));
    const model = createModel('resnet50d', { seed: 1 });
    const file = path.join(dir, 'resnet50d.onnx');
    writeFileSync(file, exportOnnx(model, { imageSize: 224, metadata: metadataProps({ arch: 'resnet50d', preprocessing: IMAGENET_PREPROCESSING }) }));
    model.dispose();
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    process.stderr.write(`bench:serve: ResNet-50-D 224x224, ${opts.threads} ONNX Runtime threads, ${os.availableParallelism()} cores (${cpu}); ${opts.seconds} s per level\n`);

    const before = await bare(file, opts.threads, opts.seconds / 2, BARE_BATCHES);
    const bestBatch = [...before.entries()].sort((a, b) => b[1] - a[1])[0]![0];
    process.stderr.write(`bare onnxruntime-node: ${[...before.entries()].map(([b, r]) => `batch ${b} ${r.toFixed(1)}/s`).join(', ')}; best batch ${bestBatch}\n`);

    const service = await startService(cli, file, opts.threads);
    child = service.child;
    const image = new Float32Array(3 * 224 * 224).map((_, i) => Math.cos(i * 0.001));
    const tensorRequest = encodeInferRequest([{ name: 'input', datatype: 'FP32', shape: [1, 3, 224, 224], data: image }]);
    const sendTensor = async () => {
      const r = await fetch(`${service.url}/v2/models/resnet50d/infer`, { method: 'POST', body: new Uint8Array(tensorRequest.body), headers: tensorRequest.headers });
      await r.arrayBuffer();
      return r.status;
    };
    const px = Buffer.alloc(500 * 375 * 3).map((_, i) => (i * 7) % 251);
    const jpeg = new Uint8Array(await sharp(px, { raw: { width: 500, height: 375, channels: 3 } }).jpeg({ quality: 90 }).toBuffer());
    const sendImage = async () => {
      const r = await fetch(`${service.url}/v1/models/resnet50d:predict`, { method: 'POST', body: jpeg, headers: { 'Content-Type': 'image/jpeg' } });
      await r.arrayBuffer();
      return r.status;
    };
    const levels: Level[] = [];
    for (const c of CONCURRENCY) {
      levels.push(await load(c, opts.seconds, sendTensor, 'zoo serve, /v2 infer, binary tensors'));
      process.stderr.write(`  concurrency ${c}: ${levels.at(-1)!.imagesPerSecond.toFixed(1)} images/s\n`);
    }
    levels.push(await load(32, opts.seconds, sendImage, 'zoo serve, /v1 :predict, 500x375 JPEG'));
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    child.kill('SIGTERM');
    await new Promise((r) => child!.once('exit', r));
    child = undefined;

    const after = await bare(file, opts.threads, opts.seconds / 2, [bestBatch]);
    const bareBest = (before.get(bestBatch)! + after.get(bestBatch)!) / 2;
    const batchSum = Number(/zoo_batch_size_sum\{model="resnet50d"\} (\S+)/.exec(metrics)?.[1] ?? NaN);
    const batchCount = Number(/zoo_batch_size_count\{model="resnet50d"\} (\S+)/.exec(metrics)?.[1] ?? NaN);
    const c32 = levels.find((l) => l.concurrency === 32)!;
    const ratio = c32.imagesPerSecond / bareBest;
    const rows = [
      ...[...before.entries()].map(([b, r]) => [`bare onnxruntime-node, batch ${b}`, '-', r.toFixed(1), '-', '-', '-', b === bestBatch ? `best (after: ${after.get(b)!.toFixed(1)})` : '']),
      ...levels.map((l) => [l.what, String(l.concurrency), l.imagesPerSecond.toFixed(1), l.p50Ms.toFixed(0), l.p99Ms.toFixed(0), String(l.errors), l.what.includes('binary') ? `${(l.imagesPerSecond / bareBest).toFixed(2)}x bare` : '']),
    ];
    process.stdout.write(`\nResNet-50-D, ${cpu}, ${opts.threads} threads (exported with ${backend})\n`);
    process.stdout.write(`${table(rows, ['', 'concurrency', 'images/s', 'p50 ms', 'p99 ms', 'errors', ''])}\n`);
    process.stdout.write(`mean rows per run in the service: ${(batchSum / batchCount).toFixed(1)} (${batchCount} runs)\n`);
    const noErrors = c32.errors === 0;
    process.stdout.write(`concurrency 32 against bare at its best batch (${bareBest.toFixed(1)} images/s, mean of before and after): ${ratio.toFixed(3)}x, target >= ${TARGET}x with no errors: ${ratio >= TARGET && noErrors ? 'met' : 'NOT met'}\n`);
    await writeFileAtomic(
      opts.out,
      `${JSON.stringify({ model: 'resnet50d', size: 224, threads: opts.threads, cpu, cores: os.availableParallelism(), seconds: opts.seconds, bare: Object.fromEntries(before), bareAfter: Object.fromEntries(after), bestBatch, bareBest, levels, meanRowsPerRun: batchSum / batchCount, ratioAt32: ratio, target: TARGET, met: ratio >= TARGET && noErrors }, null, 2)}\n`,
    );
    process.stdout.write(`results: ${opts.out}\n`);
  } finally {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch(fail);
