/**
 * Runs a network definition on tfjs tensors.
 *
 * Modes:
 * - 'train': batch norm with batch statistics (fused with the following ReLU and residual add, see
 *   ops/index.ts); running statistics updated with momentum 0.1 and the unbiased batch variance, as
 *   PyTorch does.
 * - 'eval': batch norm with the running statistics, folded into the preceding convolution (weights
 *   scaled, bias added, ReLU fused into the convolution kernel). Folded weights are cached until a
 *   parameter changes.
 * - 'frozen': running statistics but gamma and beta trainable and everything differentiable: for
 *   fine-tuning a head on a pretrained backbone with frozen batch-norm statistics.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { avgPool, batchNormAffine, batchNormTrain, conv2d, maxPool, relu } from '../ops/index.js';
import type { ConvBnSpec, ConvSpec, GraphBuilder, PoolSpec, ResizeSpec, RoiAlignSpec } from './graph.js';
import { roiAlign } from '../ops/roi_align.js';
import { resizeBilinear } from '../ops/resize.js';
import { defaultPadding } from './count.js';
import type { ParamStore } from './params.js';

export type RunMode = 'train' | 'eval' | 'frozen';

export interface TfBuilderOptions {
  mode: RunMode;
  epsilon: number;
  /** Running-statistics momentum (PyTorch convention: new = (1 - m) * old + m * batch). */
  momentum?: number;
  /**
   * Dropout is on (training) with masks drawn from this seed: the i-th dropout of a forward pass uses
   * seed + i, so a pass repeated with the same seed (a resumed run) drops the same units. Off when absent.
   */
  dropoutSeed?: number;
}

interface Folded {
  version: number;
  weight: Tensor4D;
  bias: Tensor1D;
}

/** Folded conv+BN weights per store, reused while the parameters do not change. */
const foldCache = new WeakMap<ParamStore, Map<string, Folded>>();

function foldedFor(params: ParamStore, spec: ConvBnSpec, epsilon: number): Folded {
  let cache = foldCache.get(params);
  if (!cache) {
    cache = new Map();
    foldCache.set(params, cache);
  }
  const hit = cache.get(spec.name);
  if (hit && hit.version === params.version) return hit;
  if (hit) {
    hit.weight.dispose();
    hit.bias.dispose();
  }
  const f = tf.tidy(() => {
    const gamma = params.get(`${spec.bn}.weight`);
    const beta = params.get(`${spec.bn}.bias`);
    const mean = params.get(`${spec.bn}.running_mean`);
    const variance = params.get(`${spec.bn}.running_var`);
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(variance, epsilon)));
    const weight = tf.mul(params.get(`${spec.name}.weight`), scale) as Tensor4D; // broadcast over out channels
    let bias = tf.sub(beta, tf.mul(mean, scale)) as Tensor1D;
    if (spec.bias) bias = tf.add(bias, tf.mul(params.get(`${spec.name}.bias`), scale)) as Tensor1D;
    return { weight: tf.keep(weight), bias: tf.keep(bias) };
  });
  const entry = { version: params.version, ...f };
  cache.set(spec.name, entry);
  return entry;
}

/** Frees the cached folded weights of a store. */
export function clearFoldCache(params: ParamStore): void {
  const cache = foldCache.get(params);
  if (!cache) return;
  for (const f of cache.values()) {
    f.weight.dispose();
    f.bias.dispose();
  }
  foldCache.delete(params);
}

export class TfBuilder implements GraphBuilder<Tensor> {
  private dropouts = 0;

  constructor(
    private readonly params: ParamStore,
    private readonly options: TfBuilderOptions,
  ) {}

  private convOptions(spec: ConvSpec) {
    const pad = defaultPadding(spec);
    if (!Number.isInteger(pad)) throw new Error(`${spec.name}: even kernel needs explicit padding`);
    return { strides: spec.stride ?? 1, pad, dilations: spec.dilation ?? 1 };
  }

  convBn(x: Tensor, spec: ConvBnSpec, residual?: Tensor): Tensor {
    const { mode, epsilon } = this.options;
    if (mode === 'eval') {
      const f = foldedFor(this.params, spec, epsilon);
      const o = this.convOptions(spec);
      if (residual) {
        const y = tf.fused.conv2d({ x: x as Tensor4D, filter: f.weight, strides: o.strides, pad: o.pad, dilations: o.dilations, bias: f.bias });
        const s = tf.add(y, residual);
        return spec.relu ? tf.relu(s) : s;
      }
      return tf.fused.conv2d({
        x: x as Tensor4D,
        filter: f.weight,
        strides: o.strides,
        pad: o.pad,
        dilations: o.dilations,
        bias: f.bias,
        activation: spec.relu ? 'relu' : 'linear',
      });
    }
    let y: Tensor = conv2d(x as Tensor4D, this.params.get(`${spec.name}.weight`) as unknown as Tensor4D, this.convOptions(spec));
    if (spec.bias) y = tf.add(y, this.params.get(`${spec.name}.bias`));
    const gamma = this.params.get(`${spec.bn}.weight`) as unknown as Tensor1D;
    const beta = this.params.get(`${spec.bn}.bias`) as unknown as Tensor1D;
    if (mode === 'train') {
      const r = batchNormTrain(y, gamma, beta, { epsilon, relu: spec.relu, ...(residual ? { residual } : {}) });
      this.updateRunningStats(spec.bn, r.mean, r.invstd, y.size / y.shape[y.shape.length - 1]!);
      return r.y;
    }
    // frozen: fixed statistics, differentiable affine
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(this.params.get(`${spec.bn}.running_var`), epsilon))) as Tensor1D;
    const shift = tf.sub(beta, tf.mul(this.params.get(`${spec.bn}.running_mean`), scale)) as Tensor1D;
    return batchNormAffine(y, scale, shift, { relu: spec.relu, ...(residual ? { residual } : {}) });
  }

  private updateRunningStats(bn: string, mean: Tensor1D, invstd: Tensor1D, count: number): void {
    const m = this.options.momentum ?? 0.1;
    const eps = this.options.epsilon;
    const unbias = count > 1 ? count / (count - 1) : 1;
    tf.tidy(() => {
      const rm = this.params.get(`${bn}.running_mean`);
      const rv = this.params.get(`${bn}.running_var`);
      const batchVar = tf.mul(tf.sub(tf.reciprocal(tf.square(invstd)), eps), unbias);
      rm.assign(tf.add(tf.mul(rm, 1 - m), tf.mul(mean, m)));
      rv.assign(tf.add(tf.mul(rv, 1 - m), tf.mul(batchVar, m)));
    });
    this.params.version++;
  }

  conv(x: Tensor, spec: ConvSpec & { relu?: boolean }): Tensor {
    const o = this.convOptions(spec);
    if (this.options.mode === 'eval') {
      return tf.fused.conv2d({
        x: x as Tensor4D,
        filter: this.params.get(`${spec.name}.weight`) as unknown as Tensor4D,
        strides: o.strides,
        pad: o.pad,
        dilations: o.dilations,
        ...(spec.bias ? { bias: this.params.get(`${spec.name}.bias`) } : {}),
        activation: spec.relu ? 'relu' : 'linear',
      });
    }
    let y: Tensor = conv2d(x as Tensor4D, this.params.get(`${spec.name}.weight`) as unknown as Tensor4D, o);
    if (spec.bias) y = tf.add(y, this.params.get(`${spec.name}.bias`));
    return spec.relu ? relu(y) : y;
  }

  maxPool(x: Tensor, spec: PoolSpec): Tensor {
    return maxPool(x as Tensor4D, { filterSize: spec.kernel, strides: spec.stride, pad: spec.padding ?? 0 });
  }

  avgPool(x: Tensor, spec: PoolSpec): Tensor {
    const p = spec.padding ?? 0;
    if (spec.ceilMode && !spec.countIncludePad && p === 0 && spec.kernel === 2 && spec.stride === 2) {
      // TensorFlow's 'same' padding for a 2x2/2 window adds at most one row/column at the end and
      // leaves it out of the divisor: exactly ceil_mode with count_include_pad=false.
      return avgPool(x as Tensor4D, { filterSize: 2, strides: 2, pad: 'same' });
    }
    if (!spec.ceilMode && p === 0) return avgPool(x as Tensor4D, { filterSize: spec.kernel, strides: spec.stride, pad: 'valid' });
    throw new Error(`average pooling ${JSON.stringify(spec)} is not supported`);
  }

  globalAvgPool(x: Tensor): Tensor {
    return tf.mean(x, [1, 2]);
  }

  linear(x: Tensor, spec: { name: string }): Tensor {
    return tf.add(tf.matMul(x as Tensor2D, this.params.get(`${spec.name}.weight`) as unknown as Tensor2D), this.params.get(`${spec.name}.bias`));
  }

  roiAlign(x: Tensor, rois: Tensor, batchIndices: Tensor, spec: RoiAlignSpec): Tensor {
    return roiAlign(x as Tensor4D, rois as Tensor2D, batchIndices as Tensor1D, spec);
  }

  resize(x: Tensor, like: Tensor, spec: ResizeSpec): Tensor {
    return resizeBilinear(x as Tensor4D, [like.shape[1]!, like.shape[2]!], spec);
  }

  dropout(x: Tensor, spec: { rate: number }): Tensor {
    const seed = this.options.dropoutSeed;
    if (seed === undefined || spec.rate === 0) return x;
    // tf.dropout scales kept units by 1 / (1 - rate), as PyTorch's inverted dropout does.
    return tf.dropout(x, spec.rate, undefined, seed + this.dropouts++);
  }
}
