/**
 * A pool of threads running zoo's SIMD kernels on the wasm backend's shared memory.
 *
 * The main thread and (threads - 1) workers each instantiate the kernels over the same
 * WebAssembly.Memory. A call writes its arguments into a shared block, bumps a generation counter and
 * wakes the workers (Atomics.notify); every thread runs its part of the range and the main thread
 * waits for the others (Atomics.wait, allowed on Node's main thread). No data is copied: arguments
 * are byte addresses of tensors on the wasm heap. Work too small to be worth a wake-up runs on the
 * main thread alone.
 */
import { Worker } from 'node:worker_threads';
import { CTL, partRange } from './protocol.js';
import { KERNEL_NAMES, type KernelName } from './kernels_wat.js';
import { compileKernels } from './module.js';

type Fn = (...a: number[]) => void;

export class SimdPool {
  private readonly ctl: Int32Array;
  private readonly args: Float64Array;
  private readonly fns: Fn[];
  private lastError: string | undefined;

  private constructor(
    readonly threads: number,
    private readonly workers: Worker[],
    control: SharedArrayBuffer,
    args: SharedArrayBuffer,
    instance: WebAssembly.Instance,
  ) {
    this.ctl = new Int32Array(control);
    this.args = new Float64Array(args);
    this.fns = KERNEL_NAMES.map((n) => instance.exports[n] as Fn);
    for (const w of workers) {
      w.on('message', (m: { error?: string }) => {
        if (m?.error) this.lastError = m.error;
      });
      // After the listener (adding one refs the worker again): idle workers must not keep the
      // process alive.
      w.unref();
    }
  }

  static async create(memory: WebAssembly.Memory, threads: number): Promise<SimdPool> {
    const module = await compileKernels();
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    const control = new SharedArrayBuffer(CTL.size * 4);
    const args = new SharedArrayBuffer(32 * 8);
    const workers: Worker[] = [];
    const url = new URL('./worker.js', import.meta.url);
    for (let index = 1; index < threads; index++) {
      const w = new Worker(url, { workerData: { module, memory, control, args, index, names: [...KERNEL_NAMES] } });
      await new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
      });
      workers.push(w);
    }
    return new SimdPool(threads, workers, control, args, instance);
  }

  /**
   * Runs kernel `name` over items [0, n): `args` first, then (begin, end, part) per thread.
   * `align` keeps part boundaries on multiples (4 for element-wise and row kernels). Work below
   * `grain` items runs on the calling thread only.
   */
  run(name: KernelName, n: number, args: number[], options: { align?: number; grain?: number; parts?: number } = {}): number {
    const task = KERNEL_NAMES.indexOf(name);
    const align = options.align ?? 4;
    const parts = options.parts ?? (n >= (options.grain ?? 32768) ? this.threads : 1);
    if (parts <= 1 || this.workers.length === 0) {
      if (n > 0) this.fns[task]!(...args, 0, n, 0);
      return 1;
    }
    const ctl = this.ctl;
    this.args[0] = n;
    args.forEach((v, k) => (this.args[1 + k] = v));
    ctl[CTL.task] = task;
    ctl[CTL.parts] = parts;
    ctl[CTL.nargs] = args.length;
    ctl[CTL.align] = align;
    Atomics.store(ctl, CTL.done, 0);
    Atomics.store(ctl, CTL.error, 0);
    Atomics.add(ctl, CTL.generation, 1);
    Atomics.notify(ctl, CTL.generation);
    const [b, e] = partRange(n, parts, 0, align);
    let mainError: unknown;
    try {
      if (b < e) this.fns[task]!(...args, b, e, 0);
    } catch (err) {
      mainError = err;
    }
    const others = this.workers.length;
    for (;;) {
      const done = Atomics.load(ctl, CTL.done);
      if (done >= others) break;
      if (Atomics.wait(ctl, CTL.done, done, 60_000) === 'timed-out') {
        throw new Error(`SIMD kernel '${name}': a worker did not finish within 60 s`);
      }
    }
    if (mainError) throw mainError;
    if (Atomics.load(ctl, CTL.error)) throw new Error(`SIMD kernel '${name}' failed in a worker${this.lastError ? `: ${this.lastError}` : ''}`);
    return parts;
  }

  /** How many parts run() splits `n` items into (for reductions, which need one scratch row each). */
  partsFor(n: number, grain = 32768): number {
    return n >= grain && this.workers.length ? this.threads : 1;
  }

  async dispose(): Promise<void> {
    Atomics.store(this.ctl, CTL.task, -1);
    Atomics.add(this.ctl, CTL.generation, 1);
    Atomics.notify(this.ctl, CTL.generation);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

let pool: SimdPool | undefined;

/** Starts the pool for the wasm backend's memory (idempotent). */
export async function startSimdPool(memory: WebAssembly.Memory, threads: number): Promise<SimdPool> {
  pool ??= await SimdPool.create(memory, threads);
  return pool;
}

/** The pool, when the wasm backend runs with it. */
export function simdPool(): SimdPool | undefined {
  return pool;
}
