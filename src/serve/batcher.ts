/**
 * Dynamic micro-batching: concurrent requests to one model are combined into one ONNX Runtime run.
 *
 * A request brings its feeds with a leading batch dimension (its rows). A run starts when the queue
 * holds `maxBatch` rows, or when its oldest request has waited `maxDelayMs` for company (requests that
 * queued during the previous run have usually waited that long already and run at once). Requests are
 * combined only when their inputs agree in every dimension but the first and in type, up to `maxBatch`
 * rows and `maxElements` elements (a segmenter's pixels: memory grows with them, not only with rows), in
 * arrival order. As many runs at a time as the model has instances (sessions; one by default,
 * whose intra-op threads use the cores), each given the instance it runs on. Each request's outputs are views into the
 * batch's output (no copy). A full queue refuses at once (503); a request past its deadline is dropped from
 * the queue (504), as is one whose client went away (its signal aborted). A combined run that fails, or
 * whose outputs do not follow its rows, is run again request by request, so one bad request fails alone.
 */
import type { HostTensor } from '../runtime/ort.js';
import { HttpError } from './http.js';

export type Feeds = Record<string, HostTensor>;
export type Outputs = Record<string, HostTensor>;

export interface BatcherOptions {
  /** Rows per run at most; 1 turns combining off. */
  maxBatch: number;
  maxDelayMs: number;
  /** Requests waiting at most (not counting those running). */
  maxQueue: number;
  /** Seconds a client should wait before retrying after a 503 (Retry-After). */
  retryAfterSeconds?: number;
  /** Whether requests may share a run (the model's outputs follow its batch dimension); default true. */
  combine?: boolean;
  /** How messages name the model. */
  name: string;
  /** Runs at a time (the model's instances): 1 by default. */
  instances?: number;
  /** Elements per combined run at most, as `elements` counts them (a request alone always runs). */
  maxElements?: number;
  /** What a request costs against maxElements (default: its rows). */
  elements?: (feeds: Feeds) => number;
  /** Called after each run: rows, requests and seconds. */
  onRun?: (rows: number, requests: number, seconds: number) => void;
}

interface Item {
  feeds: Feeds;
  rows: number;
  elements: number;
  key: string;
  deadline: number;
  /** performance.now() at arrival. */
  arrived: number;
  resolve: (o: Outputs) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
  signal?: AbortSignal;
  onAbort?: () => void;
}

type Typed = HostTensor['data'];

function allocLike(data: Typed, length: number): Typed {
  const C = data.constructor as new (n: number) => Typed;
  return new C(length);
}

function sliceRows(t: HostTensor, start: number, rows: number, total: number): HostTensor {
  if (t.dims[0] !== total) {
    throw new Error(`output of ${t.dims[0]} rows for a batch of ${total}: the model's outputs do not follow its batch`);
  }
  const per = t.data.length / total;
  const data = t.data.subarray(start * per, (start + rows) * per) as Typed;
  return { type: t.type, data, dims: [rows, ...t.dims.slice(1)] };
}

/** The shape signature that decides which requests may share a run (all but the batch dimension). */
export function batchKey(feeds: Feeds): string {
  return Object.keys(feeds)
    .sort()
    .map((k) => `${k}:${feeds[k]!.type}[${feeds[k]!.dims.slice(1).join(',')}]`)
    .join(';');
}

export class Batcher {
  private queue: Item[] = [];
  /** Runs in progress, and which instances are free. */
  private running = 0;
  private free: number[];
  /** Stopping: queued requests run without waiting for company. */
  private flushing = false;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private busy = 0;
  /** Requests admitted and not yet submitted (their bodies being read and parsed), counted against maxQueue. */
  private reserved = 0;

  constructor(
    /** `owned`: the feeds were assembled for this run (a combined batch) and may be handed over. */
    private readonly run: (feeds: Feeds, instance: number, owned: boolean) => Promise<Outputs>,
    readonly options: BatcherOptions,
  ) {
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new Error('maxBatch must be a positive integer');
    const instances = options.instances ?? 1;
    if (!Number.isInteger(instances) || instances < 1) throw new Error('instances must be a positive integer');
    this.free = [...Array(instances).keys()];
  }

  /** Requests waiting for a run. */
  get depth(): number {
    return this.queue.length;
  }

  /** Requests queued or running. */
  get pending(): number {
    return this.queue.length + this.busy;
  }

  /** Whether a request now would be refused for a full queue (checked before its body is read). */
  get full(): boolean {
    return this.queue.length + this.reserved >= this.options.maxQueue;
  }

  /** The 503 a request gets while the queue is full. */
  overloaded(): HttpError {
    const after = String(this.options.retryAfterSeconds ?? 1);
    const reading = this.reserved ? ` and ${this.reserved} being read` : '';
    return new HttpError(503, `${this.options.name} is overloaded: ${this.queue.length} requests are waiting${reading} (--max-queue); retry in ${after} s`, { 'Retry-After': after }, 'overloaded');
  }

  /**
   * Admits a request whose body is still to be read: it holds a place in the queue (so bodies being read
   * count against maxQueue) until the returned function is called, just before it is submitted or when
   * it fails. Throws the 503 when the queue is full.
   */
  reserve(): () => void {
    if (this.full) throw this.overloaded();
    this.reserved++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.reserved--;
    };
  }

  /**
   * Runs `feeds` (rows along dimension 0 of every input) in some batch; its outputs, rows in order.
   * `signal` aborted while the request waits takes it out of the queue (its client went away).
   */
  submit(feeds: Feeds, timeoutMs: number, signal?: AbortSignal): Promise<Outputs> {
    const first = Object.values(feeds)[0];
    const rows = first?.dims[0] ?? 1;
    if ((this.options.combine ?? true) && rows > this.options.maxBatch) {
      return Promise.reject(new HttpError(400, `a batch of ${rows} is more than the ${this.options.maxBatch} that ${this.options.name} runs at once (--max-batch)`));
    }
    if (this.full) return Promise.reject(this.overloaded());
    if (signal?.aborted) return Promise.reject(new HttpError(499, 'the client closed the connection'));
    return new Promise<Outputs>((resolve, reject) => {
      const item: Item = { feeds, rows, elements: this.options.elements?.(feeds) ?? rows, key: batchKey(feeds), deadline: Date.now() + timeoutMs, arrived: performance.now(), resolve, reject };
      const drop = (e: HttpError) => {
        const at = this.queue.indexOf(item);
        if (at < 0) return;
        this.queue.splice(at, 1);
        this.release(item);
        reject(e);
        if (this.queue.length === 0 && this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
      };
      item.timer = setTimeout(() => drop(new HttpError(504, `${this.options.name} did not start the request within ${timeoutMs} ms (--timeout); the service is busy`)), timeoutMs);
      item.timer.unref?.();
      if (signal) {
        item.signal = signal;
        item.onAbort = () => drop(new HttpError(499, 'the client closed the connection'));
        signal.addEventListener('abort', item.onAbort, { once: true });
      }
      this.queue.push(item);
      this.schedule();
    });
  }

  private get combines(): boolean {
    return (this.options.combine ?? true) && this.options.maxBatch > 1;
  }

  private release(item: Item): void {
    clearTimeout(item.timer);
    if (item.signal && item.onAbort) item.signal.removeEventListener('abort', item.onAbort);
  }

  /** Runs what is queued now and from now on without waiting for company (the service is stopping). */
  flush(): void {
    this.flushing = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.schedule();
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private schedule(): void {
    if (this.free.length === 0 || this.queue.length === 0) return;
    const rows = this.queue.reduce((s, i) => s + i.rows, 0);
    const wait = this.flushing ? 0 : this.queue[0]!.arrived + this.options.maxDelayMs - performance.now();
    if (rows >= this.options.maxBatch || wait <= 0) {
      this.startRun();
      return;
    }
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.startRun();
    }, wait);
  }

  /** Takes the oldest request and those after it that fit with it. */
  private take(): Item[] {
    const head = this.queue.shift()!;
    const batch: Item[] = [head];
    if (!this.combines) return batch;
    let rows = head.rows;
    let elements = head.elements;
    const maxElements = this.options.maxElements ?? Infinity;
    for (let i = 0; i < this.queue.length && rows < this.options.maxBatch && elements < maxElements; ) {
      const it = this.queue[i]!;
      if (it.key === head.key && rows + it.rows <= this.options.maxBatch && elements + it.elements <= maxElements) {
        batch.push(it);
        rows += it.rows;
        elements += it.elements;
        this.queue.splice(i, 1);
      } else i++;
    }
    return batch;
  }

  private startRun(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.queue.length === 0) {
      if (this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    if (this.free.length === 0) return;
    const instance = this.free.shift()!;
    const batch = this.take();
    for (const it of batch) this.release(it);
    this.running++;
    this.busy += batch.length;
    void this.execute(batch, instance).finally(() => {
      this.running--;
      this.busy -= batch.length;
      this.free.push(instance);
      if (this.queue.length === 0) {
        if (this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
      } else this.schedule();
    });
    // Another instance may take what is left at once.
    if (this.queue.length > 0) this.schedule();
  }

  private async execute(batch: Item[], instance: number): Promise<void> {
    const total = batch.reduce((s, i) => s + i.rows, 0);
    const t0 = performance.now();
    let out: Outputs;
    try {
      out = await this.run(batch.length === 1 ? batch[0]!.feeds : concatFeeds(batch.map((b) => b.feeds), total), instance, batch.length > 1);
    } catch (e) {
      if (batch.length === 1) batch[0]!.reject(e as Error);
      else await this.oneByOne(batch, instance);
      return;
    }
    this.options.onRun?.(total, batch.length, (performance.now() - t0) / 1000);
    if (batch.length === 1) {
      batch[0]!.resolve(out);
      return;
    }
    const parts: Outputs[] = [];
    try {
      let start = 0;
      for (const it of batch) {
        const mine: Outputs = {};
        for (const [name, t] of Object.entries(out)) mine[name] = sliceRows(t, start, it.rows, total);
        parts.push(mine);
        start += it.rows;
      }
    } catch {
      // An output that does not follow the rows cannot be split: nobody gets another request's values.
      await this.oneByOne(batch, instance);
      return;
    }
    batch.forEach((it, i) => it.resolve(parts[i]!));
  }

  /** Runs each request of a batch alone (after a combined run failed or could not be split). */
  private async oneByOne(batch: readonly Item[], instance: number): Promise<void> {
    for (const it of batch) {
      const t0 = performance.now();
      try {
        const out = await this.run(it.feeds, instance, false);
        this.options.onRun?.(it.rows, 1, (performance.now() - t0) / 1000);
        it.resolve(out);
      } catch (e) {
        it.reject(e as Error);
      }
    }
  }
}

/** Feeds of several requests stacked along dimension 0 (their keys agree). */
export function concatFeeds(list: readonly Feeds[], total: number): Feeds {
  const out: Feeds = {};
  for (const name of Object.keys(list[0]!)) {
    const first = list[0]![name]!;
    const per = first.data.length / first.dims[0]!;
    const data = allocLike(first.data, per * total);
    let at = 0;
    for (const f of list) {
      const t = f[name]!;
      (data as Float32Array).set(t.data as Float32Array, at);
      at += t.data.length;
    }
    out[name] = { type: first.type, data, dims: [total, ...first.dims.slice(1)] };
  }
  return out;
}
