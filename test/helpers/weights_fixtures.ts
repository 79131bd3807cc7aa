/**
 * Published-format weight files made from a zoo model, for conversion and pull tests: a PyTorch-layout
 * state dict (timm names), and from it safetensors, a GluonCV zip (resnetv1b or resnet v1 names, with
 * the v1 bottleneck's conv biases) and a PyTorch .pth. Layout changes are written here with plain
 * loops, independently of src/convert.
 */
import type { Model } from '../../src/models/model.js';
import { serializeSafetensors } from '../../src/formats/safetensors.js';
import { concat, makeMxnetParams, makeZip, MX, makeTorchCheckpoint, torchStateDictPickle } from './fixtures.js';
import type { RefTensor } from './reference_resnet.js';

/** zoo parameters in PyTorch layout under timm names. */
export function torchStateDict(model: Model): Map<string, RefTensor> {
  const out = new Map<string, RefTensor>();
  for (const [name, spec] of model.params.specs) {
    const v = model.params.get(name).dataSync() as Float32Array;
    if (spec.shape.length === 4) {
      const [kh, kw, ci, co] = spec.shape as [number, number, number, number];
      const o = new Float32Array(v.length);
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++)
          for (let c = 0; c < ci; c++) for (let k = 0; k < co; k++) o[((k * ci + c) * kh + i) * kw + j] = v[((i * kw + j) * ci + c) * co + k]!;
      out.set(name, { shape: [co, ci, kh, kw], data: o });
    } else if (spec.shape.length === 2) {
      const [inF, outF] = spec.shape as [number, number];
      const o = new Float32Array(v.length);
      for (let i = 0; i < inF; i++) for (let k = 0; k < outF; k++) o[k * inF + i] = v[i * outF + k]!;
      out.set(name, { shape: [outF, inF], data: o });
    } else out.set(name, { shape: [...spec.shape], data: v.slice() });
  }
  return out;
}

export function safetensorsBytes(sd: Map<string, RefTensor>, extra: Record<string, RefTensor> = {}): Uint8Array {
  const m = new Map<string, { dtype: 'float32'; shape: number[]; data: Float32Array }>();
  for (const [k, t] of sd) m.set(k, { dtype: 'float32', shape: t.shape, data: t.data });
  for (const [k, t] of Object.entries(extra)) m.set(k, { dtype: 'float32', shape: t.shape, data: t.data });
  return concat(serializeSafetensors(m));
}

const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** GluonCV resnetv1b names: batch-norm gamma / beta. */
export function gluonV1bNames(sd: Map<string, RefTensor>): Map<string, RefTensor> {
  const out = new Map<string, RefTensor>();
  const bnPrefixes = new Set([...sd.keys()].filter((k) => k.endsWith('.running_mean')).map((k) => k.slice(0, -'.running_mean'.length)));
  for (const [k, t] of sd) {
    const m = /^(.*)\.(weight|bias)$/.exec(k);
    if (m && bnPrefixes.has(m[1]!)) out.set(`${m[1]}.${m[2] === 'weight' ? 'gamma' : 'beta'}`, t);
    else out.set(k, t);
  }
  return out;
}

/**
 * GluonCV resnet (v1) names for a bottleneck ResNet (A). The v1 bottleneck's 1x1 convolutions have
 * biases: random ones are added here, and each following batch norm's running mean is raised by the
 * same amount, so the network computes exactly what `sd` does.
 */
export function gluonV1Names(sd: Map<string, RefTensor>, seed = 1): Map<string, RefTensor> {
  const out = new Map<string, RefTensor>();
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.2;
  const bn = (dst: string, src: string) => {
    out.set(`${dst}.gamma`, sd.get(`${src}.weight`)!);
    out.set(`${dst}.beta`, sd.get(`${src}.bias`)!);
    out.set(`${dst}.running_mean`, sd.get(`${src}.running_mean`)!);
    out.set(`${dst}.running_var`, sd.get(`${src}.running_var`)!);
  };
  out.set('features.0.weight', sd.get('conv1.weight')!);
  bn('features.1', 'bn1');
  for (const k of sd.keys()) {
    const m = /^layer(\d)\.(\d+)\.conv(\d)\.weight$/.exec(k);
    if (!m) continue;
    const base = `features.${Number(m[1]) + 3}.${m[2]}`;
    const idx = Number(m[3]);
    const src = `layer${m[1]}.${m[2]}`;
    out.set(`${base}.body.${[0, 3, 6][idx - 1]}.weight`, sd.get(k)!);
    bn(`${base}.body.${[1, 4, 7][idx - 1]}`, `${src}.bn${idx}`);
    if (idx !== 2) {
      const mean = sd.get(`${src}.bn${idx}.running_mean`)!;
      const bias = Float32Array.from(mean.data, () => rnd());
      out.set(`${base}.body.${[0, 3, 6][idx - 1]}.bias`, { shape: [bias.length], data: bias });
      out.set(`${base}.body.${[1, 4, 7][idx - 1]}.running_mean`, { shape: mean.shape, data: mean.data.map((v, i) => v + bias[i]!) });
    }
    if (sd.has(`${src}.downsample.0.weight`) && idx === 1) {
      out.set(`${base}.downsample.0.weight`, sd.get(`${src}.downsample.0.weight`)!);
      bn(`${base}.downsample.1`, `${src}.downsample.1`);
    }
  }
  out.set('output.weight', sd.get('fc.weight')!);
  out.set('output.bias', sd.get('fc.bias')!);
  return out;
}

/** A GluonCV-style zip holding one MXNet .params file. */
export function gluonZip(named: Map<string, RefTensor>, fileName = 'model-0000.params'): Uint8Array {
  const params = makeMxnetParams([...named].map(([name, t]) => ({ name, typeFlag: MX.float32, shape: t.shape, data: f32(t.data) })));
  return makeZip([{ name: fileName, data: params, method: 8 }]);
}

/** A PyTorch zip checkpoint (torch.save of a state dict). */
export function torchPth(sd: Map<string, RefTensor>): Uint8Array {
  const tensors = [...sd].map(([name, t], i) => ({
    name,
    storage: { key: String(i), type: 'FloatStorage', numel: t.data.length, data: f32(t.data) },
    size: t.shape,
  }));
  return makeTorchCheckpoint(torchStateDictPickle(tensors), tensors.map((x) => x.storage), { prefix: 'archive' });
}
