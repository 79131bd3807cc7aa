/**
 * Metrics in Prometheus's text exposition format (version 0.0.4): counters, gauges and histograms with
 * labels, rendered on `GET /metrics`. Small on purpose: the service records a handful of series.
 */

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const pairs = Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1));
  if (extra) pairs.push(extra);
  return pairs.length ? `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : '';
}

function number(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

const key = (labels: Labels): string => JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));

interface Metric {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  render(): string[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

export class Counter implements Metric {
  readonly type = 'counter';
  private values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const k = key(labels);
    const v = this.values.get(k) ?? { labels, value: 0 };
    v.value += by;
    this.values.set(k, v);
  }
  get(labels: Labels = {}): number {
    return this.values.get(key(labels))?.value ?? 0;
  }
  render(): string[] {
    return [...this.values.values()].map((v) => `${this.name}${labelText(v.labels)} ${number(v.value)}`);
  }
}

/** A value read at each scrape: a gauge, or a counter kept elsewhere (CPU seconds). */
export class Gauge implements Metric {
  private values = new Map<string, { labels: Labels; value: () => number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'gauge' | 'counter' = 'gauge',
  ) {}
  /** The gauge's value for `labels` is read from `read` at each scrape. */
  track(labels: Labels, read: () => number): void {
    this.values.set(key(labels), { labels, value: read });
  }
  render(): string[] {
    return [...this.values.values()].map((v) => `${this.name}${labelText(v.labels)} ${number(v.value())}`);
  }
}

export class Histogram implements Metric {
  readonly type = 'histogram';
  private values = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {
    for (let i = 1; i < buckets.length; i++) if (!(buckets[i]! > buckets[i - 1]!)) throw new Error(`histogram ${name}: buckets must increase`);
  }
  observe(labels: Labels, value: number): void {
    const k = key(labels);
    let v = this.values.get(k);
    if (!v) this.values.set(k, (v = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) v.counts[i]!++;
    v.sum += value;
    v.count++;
  }
  count(labels: Labels = {}): number {
    return this.values.get(key(labels))?.count ?? 0;
  }
  render(): string[] {
    const lines: string[] = [];
    for (const v of this.values.values()) {
      this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${labelText(v.labels, ['le', number(b)])} ${v.counts[i]}`));
      lines.push(`${this.name}_bucket${labelText(v.labels, ['le', '+Inf'])} ${v.count}`);
      lines.push(`${this.name}_sum${labelText(v.labels)} ${number(v.sum)}`);
      lines.push(`${this.name}_count${labelText(v.labels)} ${v.count}`);
    }
    return lines;
  }
}

export class Registry {
  private metrics: Metric[] = [];
  private add<M extends Metric>(m: M): M {
    if (!NAME.test(m.name)) throw new Error(`'${m.name}' is not a Prometheus metric name`);
    if (this.metrics.some((x) => x.name === m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.push(m);
    return m;
  }
  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }
  gauge(name: string, help: string): Gauge {
    return this.add(new Gauge(name, help));
  }
  /** A counter whose value is read at each scrape from where it is kept. */
  observedCounter(name: string, help: string): Gauge {
    return this.add(new Gauge(name, help, 'counter'));
  }
  histogram(name: string, help: string, buckets: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, buckets));
  }
  /** The text exposition format: HELP and TYPE, then the samples, of every metric. */
  render(): string {
    const out: string[] = [];
    for (const m of this.metrics) {
      out.push(`# HELP ${m.name} ${escapeHelp(m.help)}`, `# TYPE ${m.name} ${m.type}`, ...m.render());
    }
    return `${out.join('\n')}\n`;
  }
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Latency buckets (seconds) from 1 ms to 60 s. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Batch-size buckets: powers of two to 256. */
export const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/** The service's metrics. */
export function serveMetrics() {
  const registry = new Registry();
  return {
    registry,
    requests: registry.counter('zoo_requests_total', 'HTTP requests answered, by model, endpoint and status code'),
    errors: registry.counter('zoo_request_errors_total', 'HTTP requests answered with a 4xx or 5xx status, by model, endpoint and status code'),
    latency: registry.histogram('zoo_request_duration_seconds', 'Time from a request arriving to its answer being sent, by model and endpoint', LATENCY_BUCKETS),
    inference: registry.histogram('zoo_inference_duration_seconds', 'Time of one ONNX Runtime run of a combined batch, by model', LATENCY_BUCKETS),
    batchSize: registry.histogram('zoo_batch_size', 'Rows (images) in each ONNX Runtime run, by model', BATCH_BUCKETS),
    queueDepth: registry.gauge('zoo_queue_depth', 'Requests waiting for a run, by model'),
    inFlight: registry.gauge('zoo_requests_in_flight', 'HTTP requests being handled'),
    rejected: registry.counter('zoo_rejected_total', 'Requests refused because the queue was full (503), by model'),
    cpu: registry.observedCounter('process_cpu_seconds_total', 'CPU time of the process, user and system, every thread (seconds)'),
  };
}
export type ServeMetrics = ReturnType<typeof serveMetrics>;
