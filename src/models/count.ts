/**
 * Shapes, parameter counts and FLOPs of a network, by running its definition over shapes only.
 *
 * Counting convention (the paper's Table 5, and the usual one for ResNets): FLOPs are multiply-adds
 * (MACs) of the convolution and fully-connected layers, one per weight use: for a conv,
 * outH * outW * outC * kH * kW * inC; for a linear layer, in * out; per image. Batch norm, ReLU,
 * pooling, residual adds and biases are left out (together under 1% of the total for a ResNet-50).
 * Parameters are the trainable ones: conv and fc weights, biases, batch-norm gamma and beta; the
 * batch-norm running statistics are buffers and are not counted.
 */
import type { ConvBnSpec, ConvSpec, GraphBuilder, NetworkDefinition, PoolSpec, ResizeSpec, RoiAlignSpec } from './graph.js';

export interface ShapeValue {
  /** [H, W, C] for images, [C] after pooling (per image; the batch is left out). */
  shape: number[];
  /** Per-region values (after RoIAlign): how many regions of this shape an image has (default 1). */
  instances?: number;
}

export interface LayerCount {
  name: string;
  kind: 'conv' | 'linear';
  outShape: number[];
  macs: number;
}

export function convOutSize(size: number, kernel: number, stride: number, padding: number, dilation: number): number {
  return Math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1;
}

/** Pool output size, with PyTorch's ceil-mode rule (the last window must start inside the input). */
export function poolOutSize(size: number, s: PoolSpec): number {
  const p = s.padding ?? 0;
  if (!s.ceilMode) return Math.floor((size + 2 * p - s.kernel) / s.stride) + 1;
  let out = Math.ceil((size + 2 * p - s.kernel) / s.stride) + 1;
  if ((out - 1) * s.stride >= size + p) out--;
  return out;
}

export function defaultPadding(spec: ConvSpec): number {
  return spec.padding ?? ((spec.dilation ?? 1) * (spec.kernel - 1)) / 2;
}

export class ShapeBuilder implements GraphBuilder<ShapeValue> {
  readonly layers: LayerCount[] = [];

  private conv2d(x: ShapeValue, spec: ConvSpec): ShapeValue {
    const [H, W, C] = x.shape as [number, number, number];
    if (C !== spec.inChannels) throw new Error(`${spec.name}: expects ${spec.inChannels} input channels, got ${C}`);
    const s = spec.stride ?? 1;
    const d = spec.dilation ?? 1;
    const p = defaultPadding(spec);
    const oh = convOutSize(H, spec.kernel, s, p, d);
    const ow = convOutSize(W, spec.kernel, s, p, d);
    if (oh < 1 || ow < 1) throw new Error(`${spec.name}: input ${H}x${W} is too small`);
    const out = [oh, ow, spec.outChannels];
    const n = x.instances ?? 1;
    this.layers.push({ name: spec.name, kind: 'conv', outShape: out, macs: n * oh * ow * spec.outChannels * spec.kernel * spec.kernel * C });
    return withInstances({ shape: out }, x);
  }

  convBn(x: ShapeValue, spec: ConvBnSpec, residual?: ShapeValue): ShapeValue {
    const y = this.conv2d(x, spec);
    if (residual && residual.shape.join() !== y.shape.join()) {
      throw new Error(`${spec.name}: residual shape ${residual.shape} does not match ${y.shape}`);
    }
    return y;
  }

  conv(x: ShapeValue, spec: ConvSpec): ShapeValue {
    return this.conv2d(x, spec);
  }

  maxPool(x: ShapeValue, spec: PoolSpec): ShapeValue {
    const [H, W, C] = x.shape as [number, number, number];
    return withInstances({ shape: [poolOutSize(H, spec), poolOutSize(W, spec), C] }, x);
  }

  avgPool(x: ShapeValue, spec: PoolSpec): ShapeValue {
    return this.maxPool(x, spec);
  }

  globalAvgPool(x: ShapeValue): ShapeValue {
    return withInstances({ shape: [x.shape[2]!] }, x);
  }

  linear(x: ShapeValue, spec: { name: string; inFeatures: number; outFeatures: number }): ShapeValue {
    if (x.shape[0] !== spec.inFeatures) throw new Error(`${spec.name}: expects ${spec.inFeatures} features, got ${x.shape[0]}`);
    const n = x.instances ?? 1;
    this.layers.push({ name: spec.name, kind: 'linear', outShape: [spec.outFeatures], macs: n * spec.inFeatures * spec.outFeatures });
    return withInstances({ shape: [spec.outFeatures] }, x);
  }

  /** `rois` is `{shape: [4], instances: R}`: R regions per image. */
  roiAlign(x: ShapeValue, rois: ShapeValue, _batchIndices: ShapeValue, spec: RoiAlignSpec): ShapeValue {
    if (x.shape.length !== 3) throw new Error(`RoIAlign: expects a feature map [H, W, C], got [${x.shape}]`);
    if (rois.shape.join() !== '4') throw new Error(`RoIAlign: expects regions of 4 coordinates, got [${rois.shape}]`);
    return { shape: [spec.outputSize[0], spec.outputSize[1], x.shape[2]!], instances: rois.instances ?? 1 };
  }

  resize(x: ShapeValue, like: ShapeValue, _spec: ResizeSpec): ShapeValue {
    if (x.shape.length !== 3 || like.shape.length !== 3) throw new Error(`resize: expects maps [H, W, C], got [${x.shape}] and [${like.shape}]`);
    return withInstances({ shape: [like.shape[0]!, like.shape[1]!, x.shape[2]!] }, x);
  }

  dropout(x: ShapeValue): ShapeValue {
    return x;
  }
}

function withInstances(v: ShapeValue, from: ShapeValue): ShapeValue {
  return from.instances === undefined ? v : { ...v, instances: from.instances };
}

export interface NetworkCounts {
  /** Trainable parameters (weights, biases, BN gamma and beta). */
  params: number;
  /** BN running statistics (not counted in params). */
  buffers: number;
  /** Multiply-adds per image at the given input size. */
  macs: number;
  inputSize: [number, number];
  /** Shapes [H, W, C] of the stage outputs C2..C5. */
  stages: { name: string; module: string; channels: number; reduction: number; shape: number[] }[];
  layers: LayerCount[];
}

/** Parameters, multiply-adds and stage shapes of `net` for one image of `height` x `width`. */
export function countNetwork(net: NetworkDefinition, height = 224, width = height, inChannels = 3): NetworkCounts {
  let params = 0;
  let buffers = 0;
  for (const p of net.params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (p.role === 'mean' || p.role === 'var') buffers += n;
    else params += n;
  }
  const b = new ShapeBuilder();
  const feats = net.features(b, { shape: [height, width, inChannels] });
  net.head(b, feats);
  return {
    params,
    buffers,
    macs: b.layers.reduce((a, l) => a + l.macs, 0),
    inputSize: [height, width],
    stages: net.featureInfo.map((f, i) => ({ ...f, shape: feats[i]!.shape })),
    layers: b.layers,
  };
}

/** Bytes of the largest float32 tensor of one image: the input, or the largest layer output of `counts`. */
export function largestTensorBytes(counts: NetworkCounts, height: number, width: number, inChannels = 3): number {
  return 4 * Math.max(height * width * inChannels, ...counts.layers.map((l) => l.outShape.reduce((a, b) => a * b, 1)));
}
