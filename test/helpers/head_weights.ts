/**
 * Weight files made from a detector's or segmenter's own parameters, for the weights and pull tests:
 * the parameters in PyTorch layout under zoo's names, written as safetensors or GluonCV's .params into
 * a test's temporary folder; and the Python with PyTorch the reference comparisons need. Layout changes
 * are written here with plain loops, independently of src/convert.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ParamStore } from '../../src/models/params.js';
import { serializeSafetensors } from '../../src/formats/safetensors.js';
import { makeMxnetParams, MX } from './fixtures.js';

/** Tensors by name, as a file holds them. */
export type Tensors = Map<string, { shape: number[]; data: Float32Array }>;

/** A zoo-layout value in PyTorch layout (convolutions HWIO to OIHW, dense layers [in, out] to [out, in]). */
export function torchLayout(v: Float32Array, shape: number[]): { shape: number[]; data: Float32Array } {
  const o = new Float32Array(v.length);
  if (shape.length === 4) {
    const [kh, kw, ci, co] = shape as [number, number, number, number];
    for (let i = 0; i < kh; i++)
      for (let j = 0; j < kw; j++)
        for (let c = 0; c < ci; c++) for (let k = 0; k < co; k++) o[((k * ci + c) * kh + i) * kw + j] = v[((i * kw + j) * ci + c) * co + k]!;
    return { shape: [co, ci, kh, kw], data: o };
  }
  if (shape.length === 2) {
    const [inF, outF] = shape as [number, number];
    for (let i = 0; i < inF; i++) for (let k = 0; k < outF; k++) o[k * inF + i] = v[i * outF + k]!;
    return { shape: [outF, inF], data: o };
  }
  return { shape: [...shape], data: v.slice() };
}

/** A model's parameters and buffers under zoo's names in PyTorch layout. */
export function zooTensors(model: { params: ParamStore }): Tensors {
  const out: Tensors = new Map();
  for (const [name, spec] of model.params.specs) out.set(name, torchLayout(model.params.get(name).dataSync() as Float32Array, spec.shape));
  return out;
}

export function safetensorsBytes(t: Tensors): Uint8Array {
  const m = new Map([...t].map(([k, v]) => [k, { dtype: 'float32' as const, shape: v.shape, data: v.data }]));
  return Buffer.concat(serializeSafetensors(m));
}

/** MXNet's .params of float32 tensors, as GluonCV's save_parameters writes them. */
export function paramsBytes(t: Tensors): Uint8Array {
  return makeMxnetParams([...t].map(([name, v]) => ({ name, typeFlag: MX.float32, shape: v.shape, data: new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength) })));
}

/** Writes bytes to a fresh file in `dir` (w0.ext, w1.ext, ...) and says where. */
export function fileWriter(dir: string): (bytes: Uint8Array, ext: string) => string {
  let count = 0;
  return (bytes, ext) => {
    const f = join(dir, `w${count++}${ext}`);
    writeFileSync(f, bytes);
    return f;
  };
}

/** A Python that imports torch, torchvision and numpy (ZOO_PYTHON first), or undefined. */
export function findTorchPython(): string | undefined {
  return [process.env.ZOO_PYTHON, 'python3', '/usr/bin/python3'].find(
    (p) => p && spawnSync(p, ['-c', 'import torch, torchvision, numpy'], { stdio: 'ignore' }).status === 0,
  );
}
