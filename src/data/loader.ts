/**
 * The batch loader: decodes and augments images in worker threads, `prefetch` batches ahead of the consumer,
 * so the trainer's compute does not wait on preprocessing.
 *
 * Determinism: the epoch's order is a permutation seeded by (seed, epoch) and every sample's augmentation
 * draws from its own stream seeded by (seed, epoch, sample index) (batch.ts), so a seed fixes every pixel of
 * every batch whatever the number of workers, and starting an epoch at batch k yields exactly the batches
 * k, k+1, ... of the full epoch (exact resume after a crash).
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { UserError } from '../errors.js';
import { epochOrder, renderBatch, type BatchTask } from './batch.js';
import { datasetSize, type ImageDataset } from './dataset.js';
import type { WorkerInit, WorkerReply, WorkerTask } from './loader_worker.js';
import { buildTransform, type Transform, type TransformSpec } from './transforms.js';

/** Options of `createLoader`. */
export interface LoaderOptions {
  dataset: ImageDataset;
  batchSize: number;
  /** The preprocessing: a pipeline from `trainTransform`/`evalTransform`, or its spec. */
  transform: Transform | TransformSpec;
  /** Visit the samples in a seeded random order. Default true. */
  shuffle?: boolean;
  /** Seed of the order and of every augmentation. Default 0. */
  seed?: number;
  /** The epoch the loader's own iterator runs. Default 0. */
  epoch?: number;
  /** First batch of that epoch (to resume mid-epoch). Default 0. */
  startBatch?: number;
  /** Drop the last batch when it is smaller than `batchSize`. Default false. */
  dropLast?: boolean;
  /** Worker threads; 0 runs everything in the calling thread. Default max(1, cores - 1). */
  workers?: number;
  /** Batches in flight ahead of the consumer. Default 2 per worker (at least 2). */
  prefetch?: number;
}

/** One batch: images N x H x W x 3 (normalized float32, NHWC), labels and the samples' data set indices. */
export interface Batch {
  images: Float32Array;
  labels: Int32Array;
  indices: Int32Array;
  /** Number of samples (N). */
  count: number;
  /** Image side (H = W). */
  size: number;
  epoch: number;
  /** Position of the batch in its epoch. */
  batchIndex: number;
}

/** A loader: iterate it for one epoch, or call `epoch(e)` for each epoch; `close()` when done. */
export interface BatchLoader extends AsyncIterable<Batch> {
  /** Batches in one epoch (after `dropLast`). */
  readonly batchesPerEpoch: number;
  /** Image side of the batches. */
  readonly imageSize: number;
  /** Worker threads still running. */
  readonly activeWorkers: number;
  /** The batches of `epoch` from `startBatch` on. */
  epoch(epoch: number, startBatch?: number): AsyncIterableIterator<Batch>;
  /** Stops the workers; pending batches are abandoned. Idempotent. */
  close(): Promise<void>;
}

/** The default worker count: all cores but one for the trainer, at least one. */
export function defaultWorkers(): number {
  return Math.max(1, os.availableParallelism() - 1);
}

/**
 * The most workers a loader starts: four per core, at least 8. Each is a thread with its own JavaScript
 * heap and decoder, so a mistyped count (1000) would take the machine's memory, not speed it up.
 */
export function maxWorkers(): number {
  return Math.max(8, 4 * os.availableParallelism());
}

/** Number of batches in an epoch of `n` samples. */
export function batchCount(n: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

function checkInt(value: number, name: string, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new UserError(`${name} must be an integer >= ${min}, got ${value}`);
}

type Runner = { run(task: BatchTask): Promise<Float32Array>; readonly active: number; close(): Promise<void> };

/** Runs tasks in the calling thread (workers: 0). */
function inlineRunner(dataset: ImageDataset, transform: Transform): Runner {
  const source = dataset.source.kind === 'memory' ? dataset.source : undefined;
  return { run: (task) => renderBatch(source, transform, task), active: 0, close: async () => undefined };
}

interface PendingTask {
  resolve(images: Float32Array): void;
  reject(error: Error): void;
  slot: WorkerSlot;
}

interface WorkerSlot {
  worker: Worker;
  pending: number;
  alive: boolean;
}

function replyError(error: { name: string; message: string; stack?: string }): Error {
  if (error.name === 'UserError') return new UserError(error.message);
  const e = new Error(`data loader worker failed: ${error.message}`);
  if (error.stack) e.stack = `${e.message}\n--- in the worker ---\n${error.stack}`;
  return e;
}

/**
 * A pool of loader workers. Idle workers are unref'd so an unclosed loader does not keep the process alive;
 * a worker is ref'd while it owes a batch so that awaiting one does.
 */
class WorkerPool implements Runner {
  private readonly slots: WorkerSlot[] = [];
  private readonly tasks = new Map<number, PendingTask>();
  private nextId = 0;
  private failure: Error | undefined;
  private closed = false;

  constructor(count: number, init: WorkerInit) {
    for (let i = 0; i < count; i++) this.slots.push(this.spawn(init));
  }

  get active(): number {
    return this.slots.filter((s) => s.alive).length;
  }

  private spawn(init: WorkerInit): WorkerSlot {
    const worker = new Worker(new URL('./loader_worker.js', import.meta.url), { workerData: init });
    const slot: WorkerSlot = { worker, pending: 0, alive: true };
    worker.unref();
    worker.on('message', (reply: WorkerReply) => this.settle(reply));
    worker.on('error', (e) => this.fail(new Error(`data loader worker crashed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => {
      slot.alive = false;
      if (!this.closed) this.fail(new Error(`data loader worker exited unexpectedly (code ${code})`));
    });
    return slot;
  }

  private settle(reply: WorkerReply): void {
    const task = this.tasks.get(reply.id);
    if (!task) return;
    this.tasks.delete(reply.id);
    if (--task.slot.pending === 0) task.slot.worker.unref();
    if ('error' in reply) task.reject(replyError(reply.error));
    else task.resolve(reply.images);
  }

  /** Rejects everything in flight and stops the workers: after an error no later batch can be trusted. */
  private fail(error: Error): void {
    this.failure ??= error;
    for (const t of this.tasks.values()) t.reject(this.failure);
    this.tasks.clear();
    void this.close();
  }

  run(task: BatchTask): Promise<Float32Array> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('the data loader is closed'));
    const slot = this.slots.reduce((a, b) => (b.pending < a.pending ? b : a));
    const id = this.nextId++;
    return new Promise<Float32Array>((resolve, reject) => {
      this.tasks.set(id, { resolve, reject, slot });
      if (slot.pending++ === 0) slot.worker.ref();
      slot.worker.postMessage({ id, ...task } satisfies WorkerTask);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.tasks.values()) t.reject(new Error('the data loader was closed'));
    this.tasks.clear();
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/** A runner that starts once `ready` settles (sharp must be loaded by the main thread before any worker). */
function deferredRunner(ready: Promise<Runner>): Runner {
  let runner: Runner | undefined;
  let closed = false;
  const started = ready.then((r) => {
    runner = r;
    if (closed) void r.close();
    return r;
  });
  return {
    run: async (task) => (await started).run(task),
    get active() {
      return runner?.active ?? 0;
    },
    close: async () => {
      closed = true;
      await runner?.close();
    },
  };
}

function makeRunner(dataset: ImageDataset, transform: Transform, workers: number): Runner {
  if (workers === 0) return inlineRunner(dataset, transform);
  const files = dataset.source.kind === 'files';
  const init: WorkerInit = { source: files ? undefined : dataset.source, transform: transform.spec, sharpThreads: 1 };
  if (!files) return new WorkerPool(workers, init);
  // sharp's documentation: load it in the main thread before any worker does, or libvips may be unloaded
  // from under a live thread when a worker exits.
  return deferredRunner(import('sharp').then(() => new WorkerPool(workers, init)));
}

/**
 * Creates a loader over `dataset` (options above). Workers start at once and are reused across epochs.
 */
export function createLoader(options: LoaderOptions): BatchLoader {
  const { dataset } = options;
  const n = datasetSize(dataset);
  checkInt(options.batchSize, 'batch size', 1);
  const workers = options.workers ?? defaultWorkers();
  checkInt(workers, 'workers', 0);
  if (workers > maxWorkers()) {
    throw new UserError(`workers: ${workers} loader threads on ${os.availableParallelism()} cores is more than makes sense (at most ${maxWorkers()}: four per core)`, { exitCode: 2 });
  }
  const prefetch = options.prefetch ?? Math.max(2, 2 * workers);
  checkInt(prefetch, 'prefetch', 1);
  const transform = 'apply' in options.transform ? options.transform : buildTransform(options.transform);
  const shuffle = options.shuffle ?? true;
  const seed = options.seed ?? 0;
  const dropLast = options.dropLast ?? false;
  const batchesPerEpoch = batchCount(n, options.batchSize, dropLast);
  if (batchesPerEpoch === 0) {
    throw new UserError(`${dataset.name}: ${n} samples make no batch of ${options.batchSize}${dropLast ? ' with drop-last' : ''}`);
  }
  const runner = makeRunner(dataset, transform, workers);
  let closed = false;
  const files = dataset.source.kind === 'files' ? dataset.source.files : undefined;

  async function* epochBatches(epoch: number, startBatch: number): AsyncGenerator<Batch> {
    checkInt(epoch, 'epoch', 0);
    checkInt(startBatch, 'start batch', 0);
    if (startBatch > batchesPerEpoch) throw new UserError(`start batch ${startBatch} is past the end of the epoch (${batchesPerEpoch} batches)`);
    const order = epochOrder(n, { shuffle, seed, epoch });
    const inFlight = new Map<number, Promise<Float32Array>>();
    let next = startBatch;
    const indicesOf = (b: number) => order.slice(b * options.batchSize, Math.min(n, (b + 1) * options.batchSize));
    const taskOf = (b: number): BatchTask => {
      const indices = indicesOf(b);
      return { indices, seed, epoch, ...(files ? { files: Array.from(indices, (i) => files[i]!) } : {}) };
    };
    const fill = () => {
      for (; next < batchesPerEpoch && inFlight.size < prefetch; next++) {
        const p = runner.run(taskOf(next));
        p.catch(() => undefined); // awaited below; this only silences batches abandoned by an early exit
        inFlight.set(next, p);
      }
    };
    try {
      for (let b = startBatch; b < batchesPerEpoch; b++) {
        if (closed) throw new Error('the data loader was closed');
        fill();
        const images = await inFlight.get(b)!;
        inFlight.delete(b);
        if (closed) throw new Error('the data loader was closed');
        fill();
        const indices = indicesOf(b);
        const labels = indices.map((i) => dataset.labels[i]!);
        yield { images, labels, indices, count: indices.length, size: transform.size, epoch, batchIndex: b };
      }
    } catch (e) {
      await runner.close();
      throw e;
    }
  }

  return {
    batchesPerEpoch,
    imageSize: transform.size,
    get activeWorkers() {
      return runner.active;
    },
    epoch: (epoch, startBatch = 0) => epochBatches(epoch, startBatch),
    [Symbol.asyncIterator]: () => epochBatches(options.epoch ?? 0, options.startBatch ?? 0),
    close: () => {
      closed = true;
      return runner.close();
    },
  };
}
