/**
 * Training checkpoints: one safetensors file, written atomically (a killed run leaves the previous
 * checkpoint intact, never a broken one).
 *
 * - Parameters and batch-norm statistics under their timm names, in PyTorch layout (OIHW convolutions,
 *   [out, in] linear): a checkpoint is directly usable by `zoo import`, `zoo export --weights` and timm.
 * - Momentum buffers as `optimizer.velocity.<name>` in the same layout (ignored by importers).
 * - The run's state (epoch, update, schedule position, configuration) as JSON in the metadata under
 *   `zoo.checkpoint`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Model } from '../models/model.js';
import type { ParamStore } from '../models/params.js';
import { UserError } from '../errors.js';
import { readSafetensors, writeSafetensors } from '../formats/safetensors.js';
import { toFloat32 } from '../formats/types.js';
import { loadTensorsInto } from '../convert/convert.js';
import type { SGD } from './optim.js';

export const VELOCITY_PREFIX = 'optimizer.velocity.';

/** zoo layout -> PyTorch layout for a parameter of `shape`. */
export function toTorchLayout(v: Float32Array, shape: number[]): { shape: number[]; data: Float32Array } {
  if (shape.length === 4) {
    const [kh, kw, ci, co] = shape as [number, number, number, number];
    const o = new Float32Array(v.length);
    for (let i = 0; i < kh; i++)
      for (let j = 0; j < kw; j++)
        for (let c = 0; c < ci; c++) {
          const src = ((i * kw + j) * ci + c) * co;
          for (let k = 0; k < co; k++) o[((k * ci + c) * kh + i) * kw + j] = v[src + k]!;
        }
    return { shape: [co, ci, kh, kw], data: o };
  }
  if (shape.length === 2) {
    const [inF, outF] = shape as [number, number];
    const o = new Float32Array(v.length);
    for (let i = 0; i < inF; i++) for (let k = 0; k < outF; k++) o[k * inF + i] = v[i * outF + k]!;
    return { shape: [outF, inF], data: o };
  }
  return { shape, data: v };
}

export interface CheckpointState {
  /** Epoch being trained (0-based) and updates already done in it. */
  epoch: number;
  updateInEpoch: number;
  /** Updates done since the start of the run. */
  globalUpdate: number;
  /** Anything else the trainer needs to continue (configuration, best accuracy...). */
  [key: string]: unknown;
}

/** What a checkpoint holds the parameters of: a classifier, a detector, ... */
export interface Checkpointable {
  readonly arch: string;
  readonly params: ParamStore;
}

/** Writes model parameters, optimizer state and run state to `path` atomically. */
export async function saveCheckpoint(path: string, model: Checkpointable, optimizer: SGD, state: CheckpointState): Promise<void> {
  const tensors = new Map<string, { dtype: 'float32'; shape: number[]; data: Float32Array }>();
  for (const [name, spec] of model.params.specs) {
    // Asynchronous reads: the only kind a GPU backend (WebGPU) can do in Node.
    const t = toTorchLayout((await model.params.get(name).data()) as Float32Array, spec.shape);
    tensors.set(name, { dtype: 'float32', ...t });
    const v = optimizer.velocity.get(name);
    if (v) tensors.set(`${VELOCITY_PREFIX}${name}`, { dtype: 'float32', ...toTorchLayout((await v.data()) as Float32Array, spec.shape) });
  }
  await writeSafetensors(path, tensors, { 'zoo.checkpoint': JSON.stringify(state), 'zoo.arch': model.arch, format: 'pt' });
}

/** Restores only the parameters of a checkpoint (for an export of a run), without optimizer state. */
export async function loadCheckpointParams(path: string, model: Checkpointable): Promise<CheckpointState> {
  const { tensors, metadata } = await readSafetensors(path);
  const raw = metadata['zoo.checkpoint'];
  if (!raw) throw new UserError(`${path} is not a zoo training checkpoint (no 'zoo.checkpoint' metadata)`);
  const params = new Map([...tensors].filter(([k]) => !k.startsWith(VELOCITY_PREFIX)));
  if (model instanceof Model) loadTensorsInto(model, params, 'zoo', path);
  else loadExact(model, params, path);
  try {
    return JSON.parse(raw) as CheckpointState;
  } catch (e) {
    throw new UserError(`${path}: its 'zoo.checkpoint' metadata is not JSON (${(e as Error).message})`, { cause: e });
  }
}

/** Restores a checkpoint into `model` and `optimizer`; returns the run state. */
export async function loadCheckpoint(path: string, model: Checkpointable, optimizer: SGD): Promise<CheckpointState> {
  const { tensors, metadata } = await readSafetensors(path);
  const raw = metadata['zoo.checkpoint'];
  if (!raw) throw new UserError(`${path} is not a zoo training checkpoint (no 'zoo.checkpoint' metadata)`);
  let state: CheckpointState;
  try {
    state = JSON.parse(raw) as CheckpointState;
  } catch (e) {
    throw new UserError(`${path}: its 'zoo.checkpoint' metadata is not JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof state !== 'object' || state === null || Array.isArray(state)) throw new UserError(`${path}: its 'zoo.checkpoint' metadata is not a run state`);
  const params = new Map([...tensors].filter(([k]) => !k.startsWith(VELOCITY_PREFIX)));
  if (model instanceof Model) loadTensorsInto(model, params, 'zoo', path);
  else loadExact(model, params, path);
  optimizer.resetVelocity();
  for (const [k, t] of tensors) {
    if (!k.startsWith(VELOCITY_PREFIX)) continue;
    const name = k.slice(VELOCITY_PREFIX.length);
    const spec = model.params.specs.get(name);
    if (!spec) throw new UserError(`${path}: optimizer state for unknown parameter '${name}'`);
    if (t.shape.reduce((a, b) => a * b, 1) !== spec.shape.reduce((a, b) => a * b, 1)) {
      throw new UserError(`${path}: optimizer state '${k}' of shape [${t.shape}] does not fit the parameter's [${spec.shape}]`);
    }
    // Back to zoo layout through the same mapping as parameters: load into a scratch copy of the shape.
    const back = fromTorchLayout(toFloat32(t, k), t.shape, spec.shape, `${path}: '${k}'`);
    optimizer.velocity.set(name, tf.keep(tf.tensor(back, spec.shape, 'float32')));
  }
  return state;
}

function fromTorchLayout(v: Float32Array, src: number[], shape: number[], label: string): Float32Array {
  if (shape.length === 4) {
    const [kh, kw, ci, co] = shape as [number, number, number, number];
    if (src.join() !== [co, ci, kh, kw].join()) throw new UserError(`${label} of shape [${src}] does not fit [${co},${ci},${kh},${kw}]`);
    const o = new Float32Array(v.length);
    for (let k = 0; k < co; k++)
      for (let c = 0; c < ci; c++)
        for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) o[((i * kw + j) * ci + c) * co + k] = v[((k * ci + c) * kh + i) * kw + j]!;
    return o;
  }
  if (shape.length === 2) {
    const [inF, outF] = shape as [number, number];
    if (src.join() !== [outF, inF].join()) throw new UserError(`${label} of shape [${src}] does not fit [${outF},${inF}]`);
    const o = new Float32Array(v.length);
    for (let k = 0; k < outF; k++) for (let i = 0; i < inF; i++) o[i * outF + k] = v[k * inF + i]!;
    return o;
  }
  return v;
}

/** Loads a checkpoint's parameters into a model other than a classifier: every name, exact shapes. */
function loadExact(model: Checkpointable, tensors: Map<string, { dtype: string; shape: number[]; data: unknown }>, path: string): void {
  const specs = model.params.specs;
  const missing = [...specs.keys()].filter((n) => !tensors.has(n));
  const unexpected = [...tensors.keys()].filter((n) => !specs.has(n));
  if (missing.length || unexpected.length) {
    const list = (what: string, xs: string[]) => (xs.length ? [`${what} ${xs.length}: ${xs.slice(0, 6).join(', ')}${xs.length > 6 ? ', ...' : ''}`] : []);
    throw new UserError(`${path} does not match this ${model.arch} model: ${[...list('missing', missing), ...list('unexpected', unexpected)].join('; ')}. No parameter was changed.`);
  }
  const staged = new Map<string, Float32Array>();
  for (const [name, spec] of specs) {
    const t = tensors.get(name)!;
    staged.set(name, fromTorchLayout(toFloat32(t as Parameters<typeof toFloat32>[0], name), t.shape, spec.shape, `${path}: '${name}'`));
  }
  for (const [name, v] of staged) model.params.setValues(name, v);
}
