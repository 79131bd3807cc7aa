/**
 * A model's parameters and buffers as tfjs Variables, by name.
 *
 * Initialization (paper 2.1): conv and fc weights Xavier uniform in [-a, a], a = sqrt(6 / (fanIn +
 * fanOut)); biases 0; batch-norm gamma 1 (0 where zero gamma applies) and beta 0; running mean 0 and
 * running variance 1. Values come from zoo's seeded generator, so a seed gives the same network on
 * every backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ParamSpec } from './graph.js';
import { Rng } from '../util/random.js';

let storeCounter = 0;

/** Xavier-uniform bound for a weight. */
export function xavierBound(fanIn: number, fanOut: number): number {
  return Math.sqrt(6 / (fanIn + fanOut));
}

export function initialValues(spec: ParamSpec, rng: Rng): Float32Array {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  switch (spec.role) {
    case 'weight': {
      if (spec.std !== undefined) {
        for (let i = 0; i < n; i++) v[i] = rng.normal() * spec.std;
        break;
      }
      const a = xavierBound(spec.fanIn!, spec.fanOut!);
      for (let i = 0; i < n; i++) v[i] = (2 * rng.uniform() - 1) * a;
      break;
    }
    case 'gamma':
      if (!spec.zero) v.fill(1);
      break;
    case 'var':
      v.fill(1);
      break;
    default:
      break; // bias, beta, mean: zero
  }
  return v;
}

export class ParamStore {
  readonly specs: ReadonlyMap<string, ParamSpec>;
  private readonly vars = new Map<string, tf.Variable>();
  /** Incremented whenever a value changes; caches derived from parameters (folded BN) key on it. */
  version = 0;
  private readonly prefix: string;

  constructor(specs: ParamSpec[], options: { seed?: number } = {}) {
    this.prefix = `zoo${storeCounter++}/`;
    const m = new Map<string, ParamSpec>();
    for (const s of specs) {
      if (m.has(s.name)) throw new Error(`duplicate parameter '${s.name}'`);
      m.set(s.name, s);
    }
    this.specs = m;
    const rng = new Rng(options.seed ?? 0);
    for (const s of specs) {
      const trainable = s.role !== 'mean' && s.role !== 'var';
      // The initial tensor is disposed by tidy; the variable keeps its data.
      this.vars.set(s.name, tf.tidy(() => tf.variable(tf.tensor(initialValues(s, rng), s.shape, 'float32'), trainable, this.prefix + s.name)));
    }
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new Error(`no parameter '${name}'`);
    return v;
  }

  has(name: string): boolean {
    return this.vars.has(name);
  }

  names(): string[] {
    return [...this.vars.keys()];
  }

  /** Variables that training updates (everything but the running statistics). */
  trainable(): Map<string, tf.Variable> {
    return new Map([...this.vars].filter(([, v]) => v.trainable));
  }

  /** Replaces a value (shape must match); the new tensor is copied. */
  assign(name: string, value: tf.Tensor): void {
    const v = this.get(name);
    if (value.shape.join() !== v.shape.join()) {
      throw new Error(`parameter '${name}': shape [${value.shape}] does not match [${v.shape}]`);
    }
    v.assign(value);
    this.version++;
  }

  /** Sets a value from raw float32 data in the parameter's own layout. */
  setValues(name: string, values: Float32Array): void {
    const v = this.get(name);
    const n = v.shape.reduce((a, b) => a * b, 1);
    if (values.length !== n) throw new Error(`parameter '${name}': ${values.length} values for shape [${v.shape}]`);
    tf.tidy(() => v.assign(tf.tensor(values, v.shape, 'float32')));
    this.version++;
  }

  /** All values, read synchronously, in parameter order (wasm and cpu backends; not WebGPU in Node). */
  toMap(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [k, v] of this.vars) out.set(k, v.dataSync() as Float32Array);
    return out;
  }

  /** All values, read asynchronously (every backend), in parameter order. */
  async read(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const [k, v] of this.vars) out.set(k, (await v.data()) as Float32Array);
    return out;
  }

  /** Number of elements over trainable parameters. */
  countTrainable(): number {
    let n = 0;
    for (const v of this.vars.values()) if (v.trainable) n += v.size;
    return n;
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}
