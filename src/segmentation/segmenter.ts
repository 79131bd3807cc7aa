/**
 * A segmenter: an FCN over a registered backbone architecture (dilated to output stride 8 or 16), its
 * parameters, and how to run it in tfjs. Inputs are NHWC float32 images, normalized as the backbone's
 * classifiers take them; logits come out NHWC at the input's resolution.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';
import { getModelEntry } from '../models/registry.js';
import { ResNet, type ResNetConfig } from '../models/resnet.js';
import { ParamStore } from '../models/params.js';
import { TfBuilder, clearFoldCache, type RunMode } from '../models/tf_builder.js';
import { ShapeBuilder, type LayerCount } from '../models/count.js';
import type { Model } from '../models/model.js';
import { Fcn, defaultFcnConfig, fcnConfigProblem, type FcnConfig } from './fcn.js';

export interface SegmenterOutputs {
  /** Logits [N, H, W, K] at the input's resolution. */
  out: Tensor4D;
  aux?: Tensor4D;
}

export interface LogitsOptions {
  /** Also run the auxiliary head (training). */
  aux?: boolean;
  /** Dropout on, with masks from this seed (training); off when absent. */
  dropoutSeed?: number;
}

/** Whether two backbone configurations hold the same parameters (dilation and classifier aside). */
function sameWeights(a: ResNetConfig, b: ResNetConfig): boolean {
  const strip = (c: ResNetConfig) => JSON.stringify({ ...c, numClasses: 0, outputStride: 32, zeroInitLastBn: false });
  return strip(a) === strip(b);
}

export class Segmenter {
  readonly backbone: ResNet;
  readonly net: Fcn;
  readonly params: ParamStore;

  constructor(
    /** The backbone architecture (a registry name). */
    readonly arch: string,
    readonly backboneConfig: ResNetConfig,
    readonly config: FcnConfig,
    options: { seed?: number } = {},
  ) {
    this.backbone = new ResNet({ ...backboneConfig, numClasses: 0, outputStride: config.outputStride });
    this.net = new Fcn(this.backbone, config);
    this.params = new ParamStore(this.net.params, { seed: options.seed ?? 0 });
  }

  get numClasses(): number {
    return this.config.numClasses;
  }

  get epsilon(): number {
    return this.backbone.epsilon;
  }

  builder(mode: RunMode, dropoutSeed?: number): TfBuilder {
    return new TfBuilder(this.params, { mode, epsilon: this.backbone.epsilon, ...(dropoutSeed !== undefined ? { dropoutSeed } : {}) });
  }

  /**
   * Copies the backbone's parameters from a classifier (or a backbone) of the same architecture; its
   * classifier is dropped and its strides become this segmenter's dilations. Returns how many tensors
   * were copied.
   */
  loadBackbone(model: Model): number {
    if (!sameWeights(model.config, this.backboneConfig)) {
      throw new UserError(`the backbone weights are a ${model.arch}; this segmenter's backbone is a ${this.arch}`);
    }
    let n = 0;
    for (const name of this.net.backboneParams()) {
      if (!model.params.has(name)) throw new UserError(`the backbone weights of ${model.arch} lack ${name}`);
      this.params.assign(name, model.params.get(name));
      n++;
    }
    return n;
  }

  /** Logits of a batch NHWC [N, H, W, 3]. `mode`: 'train' (batch statistics), 'frozen' or 'eval'. */
  logits(x: Tensor4D, mode: RunMode, options: LogitsOptions = {}): SegmenterOutputs {
    checkImages(x);
    const r = this.net.forward(this.builder(mode, options.dropoutSeed), x, { aux: options.aux ?? false });
    return { out: r.out as Tensor4D, ...(r.aux ? { aux: r.aux as Tensor4D } : {}) };
  }

  /** Labels [N * H * W] of a batch in the label encoding (class index + 1), with the eval-mode network. */
  async predict(x: Tensor4D): Promise<Uint8Array | Uint16Array> {
    const labels = tf.tidy(() => tf.argMax(this.logits(x, 'eval').out, 3));
    try {
      const idx = (await labels.data()) as Int32Array;
      const out = this.numClasses < 255 ? new Uint8Array(idx.length) : new Uint16Array(idx.length);
      for (let i = 0; i < idx.length; i++) out[i] = idx[i]! + 1;
      return out;
    } finally {
      labels.dispose();
    }
  }

  /** Parameters (trainable, without the auxiliary head unless asked) and multiply-adds for one image. */
  counts(height = 480, width = height, options: { aux?: boolean } = {}): { params: number; macs: number; layers: LayerCount[] } {
    const b = new ShapeBuilder();
    this.net.forward(b, { shape: [height, width, this.backboneConfig.inChannels ?? 3] }, { aux: options.aux ?? false });
    const auxNames = new Set(this.net.auxHead?.params.map((p) => p.name) ?? []);
    let params = 0;
    for (const p of this.net.params) {
      if (p.role === 'mean' || p.role === 'var') continue;
      if (!options.aux && auxNames.has(p.name)) continue;
      params += p.shape.reduce((a, v) => a * v, 1);
    }
    return { params, macs: b.layers.reduce((a, l) => a + l.macs, 0), layers: b.layers };
  }

  /** Names of the head parameters (trained with the head's learning-rate multiplier). */
  headParams(): Set<string> {
    return new Set([...this.net.head.params, ...(this.net.auxHead?.params ?? [])].map((p) => p.name));
  }

  dispose(): void {
    clearFoldCache(this.params);
    this.params.dispose();
  }
}

function checkImages(x: tf.Tensor): void {
  if (x.rank !== 4 || x.shape[3] !== 3) throw new Error(`segmenter input must be NHWC [batch, height, width, 3], got shape [${x.shape}]`);
  if (x.dtype !== 'float32') throw new Error(`segmenter input must be float32, got ${x.dtype}`);
}

export interface CreateSegmenterOptions {
  /** Configuration changes from GluonCV's defaults. */
  config?: Partial<FcnConfig>;
  seed?: number;
}

/**
 * Bytes of the largest tensor one image makes in a pass of an FCN over `arch` at height x width: a layer's
 * output, the logits at input size or the input (gradients have the same shapes). Nothing is allocated.
 */
export function segmenterImageBytes(arch: string, config: FcnConfig, height: number, width: number, options: { aux?: boolean } = {}): number {
  const entry = getModelEntry(arch);
  const net = new Fcn(new ResNet({ ...entry.config, numClasses: 0, outputStride: config.outputStride }), config);
  const b = new ShapeBuilder();
  const inChannels = entry.config.inChannels ?? 3;
  net.forward(b, { shape: [height, width, inChannels] }, { aux: options.aux ?? false });
  const largest = Math.max(height * width * Math.max(inChannels, config.numClasses), ...b.layers.map((l) => l.outShape.reduce((a, v) => a * v, 1)));
  return 4 * largest;
}

/** A segmenter over a registered architecture with freshly initialized parameters. */
export function createSegmenter(arch: string, numClasses: number, options: CreateSegmenterOptions = {}): Segmenter {
  const entry = getModelEntry(arch);
  const config = defaultFcnConfig(numClasses, options.config);
  const problem = fcnConfigProblem(config);
  if (problem) throw new UserError(`segmenter: ${problem}`, { exitCode: 2 });
  return new Segmenter(arch, entry.config, config, { seed: options.seed ?? 0 });
}
