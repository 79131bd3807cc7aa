/**
 * A detector: a Faster R-CNN over a registered backbone architecture, its parameters, and how to run it
 * in tfjs. Inputs are NHWC float32 images, normalized as the backbone's classifiers take them; boxes
 * come out in input pixels.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';
import { getModelEntry } from '../models/registry.js';
import { ResNet, type ResNetConfig } from '../models/resnet.js';
import { ParamStore } from '../models/params.js';
import { TfBuilder, clearFoldCache, type RunMode } from '../models/tf_builder.js';
import { ShapeBuilder, type LayerCount } from '../models/count.js';
import type { Model } from '../models/model.js';
import { FasterRcnn, defaultFasterRcnnConfig, type FasterRcnnConfig, type FasterRcnnParts } from './faster_rcnn.js';
import { selectDetections, selectProposals, type ImageDetections } from './proposals.js';

export interface CreateDetectorOptions {
  /** Configuration changes from GluonCV's defaults. */
  config?: Partial<FasterRcnnConfig>;
  parts?: FasterRcnnParts;
  seed?: number;
}

/** The RPN's outputs and the proposals of a batch. */
export interface RpnOutputs {
  /** C4 features [N, h, w, C]. */
  features: Tensor4D;
  /** Objectness logits [N, h*w*A] and deltas [N, h*w*A, 4] (anchor order of AnchorGenerator.grid). */
  logits: Tensor2D;
  deltas: Tensor;
}

export class Detector {
  readonly backbone: ResNet;
  readonly net: FasterRcnn;
  readonly params: ParamStore;

  constructor(
    /** The backbone architecture (a registry name). */
    readonly arch: string,
    readonly backboneConfig: ResNetConfig,
    readonly config: FasterRcnnConfig,
    options: { seed?: number; parts?: FasterRcnnParts } = {},
  ) {
    if ((backboneConfig.outputStride ?? 32) !== 32) throw new Error('the C4 detector takes an undilated backbone (output stride 32)');
    this.backbone = new ResNet({ ...backboneConfig, numClasses: 0 });
    this.net = new FasterRcnn(this.backbone, config, options.parts);
    this.params = new ParamStore(this.net.params, { seed: options.seed ?? 0 });
  }

  get numClasses(): number {
    return this.config.numClasses;
  }

  get epsilon(): number {
    return this.backbone.epsilon;
  }

  builder(mode: RunMode): TfBuilder {
    return new TfBuilder(this.params, { mode, epsilon: this.backbone.epsilon });
  }

  /**
   * Copies the backbone's parameters from a classifier of the same architecture (its classifier is
   * dropped). Returns how many tensors were copied.
   */
  loadBackbone(model: Model): number {
    const fromConfig = { ...model.config, numClasses: 0 };
    const mine = { ...this.backboneConfig, numClasses: 0 };
    if (JSON.stringify(fromConfig) !== JSON.stringify(mine)) {
      throw new UserError(`the backbone weights are a ${model.arch}; this detector's backbone is a ${this.arch}`);
    }
    let n = 0;
    for (const name of this.params.specs.keys()) {
      if (!model.params.has(name)) continue;
      this.params.assign(name, model.params.get(name));
      n++;
    }
    return n;
  }

  /** Anchors [h*w*A, 4] of a C4 feature map [N, h, w, C]. */
  anchors(features: Tensor4D): Float32Array {
    return this.net.anchorGenerator.grid(features.shape[1], features.shape[2]);
  }

  /** Trunk and RPN head on `x` (in `mode`). */
  rpn(x: Tensor4D, mode: RunMode): RpnOutputs {
    checkImages(x);
    const b = this.builder(mode);
    const features = this.net.trunk(b, x) as Tensor4D;
    const [lg, dl] = this.net.rpnHead.forward(b, features);
    const N = features.shape[0];
    return {
      features,
      logits: tf.reshape(lg, [N, -1]) as Tensor2D,
      deltas: tf.reshape(dl, [N, -1, 4]),
    };
  }

  /** Proposals of every image of a batch from RPN outputs' values, images in order. */
  proposals(logits: Float32Array, deltas: Float32Array, anchors: Float32Array, batch: number, image: { height: number; width: number }, train: boolean) {
    const A = anchors.length / 4;
    const opts = train ? this.config.rpnTrain : this.config.rpnTest;
    const out: Float32Array[] = [];
    for (let n = 0; n < batch; n++) {
      out.push(selectProposals(logits.subarray(n * A, (n + 1) * A), deltas.subarray(4 * n * A, 4 * (n + 1) * A), anchors, image, opts).boxes);
    }
    return out;
  }

  /** Class logits [R, C+1] and deltas [R, 4C] of regions of `features`. */
  heads(features: Tensor4D, rois: Tensor2D, batchIndices: Tensor1D, mode: RunMode): [Tensor2D, Tensor2D] {
    return this.net.heads(this.builder(mode), features, rois, batchIndices) as [Tensor2D, Tensor2D];
  }

  /** Detections of a batch of images NHWC [N, H, W, 3], with the test-time configuration. */
  async detect(x: Tensor4D): Promise<ImageDetections[]> {
    const [N, H, W] = x.shape;
    const image = { height: H, width: W };
    const [features, logitsT, deltasT] = tf.tidy(() => {
      const o = this.rpn(x, 'eval');
      return [o.features, o.logits, o.deltas];
    }) as [Tensor4D, Tensor2D, Tensor];
    const r = { features, logits: logitsT, deltas: deltasT };
    try {
      const [logits, deltas] = (await Promise.all([r.logits.data(), r.deltas.data()])) as [Float32Array, Float32Array];
      const props = this.proposals(logits, deltas, this.anchors(r.features), N, image, false);
      const { rois, batchIndices } = concatRois(props);
      const C = this.numClasses;
      if (batchIndices.length === 0) return props.map(() => ({ boxes: new Float32Array(0), scores: new Float32Array(0), classes: new Int32Array(0) }));
      const [cls, box] = tf.tidy(() => this.heads(r.features, tf.tensor2d(rois, [batchIndices.length, 4]), tf.tensor1d(batchIndices, 'int32'), 'eval'));
      try {
        const [cv, bv] = (await Promise.all([cls.data(), box.data()])) as [Float32Array, Float32Array];
        return selectDetections(cv, bv, rois, batchIndices, N, image, C, this.config.boxWeights, this.config.detections);
      } finally {
        tf.dispose([cls, box]);
      }
    } finally {
      tf.dispose([r.features, r.logits, r.deltas]);
    }
  }

  /**
   * Parameters and multiply-adds for one image of `height` x `width` with `regions` proposals (the
   * test-time 300 by default): the trunk, the RPN head and the box head over the regions.
   */
  counts(height = 600, width = 1000, regions = this.config.rpnTest.postNms): { params: number; macs: number; layers: LayerCount[] } {
    const b = new ShapeBuilder();
    const f = this.net.trunk(b, { shape: [height, width, this.backboneConfig.inChannels ?? 3] });
    this.net.rpnHead.forward(b, f);
    this.net.heads(b, f, { shape: [4], instances: regions }, { shape: [], instances: regions });
    let params = 0;
    for (const p of this.net.params) if (p.role !== 'mean' && p.role !== 'var') params += p.shape.reduce((a, v) => a * v, 1);
    return { params, macs: b.layers.reduce((a, l) => a + l.macs, 0), layers: b.layers };
  }

  /** Variables that training updates: not the frozen stages, not batch norm (frozen, GluonCV). */
  trainableVariables(): Map<string, tf.Variable> {
    const frozen = this.net.frozenParams();
    return new Map(
      [...this.params.trainable()].filter(([name]) => {
        const role = this.params.specs.get(name)!.role;
        return !frozen.has(name) && role !== 'gamma' && role !== 'beta';
      }),
    );
  }

  dispose(): void {
    clearFoldCache(this.params);
    this.params.dispose();
  }
}

/** Regions of several images as one batch: rois [R, 4] and their image indices. */
export function concatRois(perImage: Float32Array[]): { rois: Float32Array; batchIndices: Int32Array } {
  const total = perImage.reduce((a, p) => a + p.length / 4, 0);
  const rois = new Float32Array(4 * total);
  const batchIndices = new Int32Array(total);
  let at = 0;
  perImage.forEach((p, n) => {
    rois.set(p, 4 * at);
    batchIndices.fill(n, at, at + p.length / 4);
    at += p.length / 4;
  });
  return { rois, batchIndices };
}

function checkImages(x: Tensor): void {
  if (x.rank !== 4 || x.shape[3] !== 3) throw new Error(`detector input must be NHWC [batch, height, width, 3], got shape [${x.shape}]`);
  if (x.dtype !== 'float32') throw new Error(`detector input must be float32, got ${x.dtype}`);
}

/** Bytes of a detector's largest tensors for one image (detectorTensorBytes). */
export interface DetectorTensorBytes {
  /** The largest of the input, the trunk's and the RPN head's activations. */
  image: number;
  /** The largest per-region tensor (RoIAlign's output or a box-head activation), for one region. */
  region: number;
}

/**
 * Bytes of the largest tensors that one image of `height` x `width` makes in a detector of `arch`:
 * over the image (the trunk's and the RPN head's activations) and per region (RoIAlign's output and the
 * box head's activations); gradients have the same shapes. WebGPU binds each tensor whole, so a run
 * checks these against the device before it starts. (Where RoIAlign is composed from core ops, its
 * intermediate splits itself under the device's limit: ops/roi_align.ts.)
 */
export function detectorTensorBytes(arch: string, config: FasterRcnnConfig, height: number, width: number): DetectorTensorBytes {
  const entry = getModelEntry(arch);
  const net = new FasterRcnn(new ResNet({ ...entry.config, numClasses: 0 }), config);
  const inChannels = entry.config.inChannels ?? 3;
  const b = new ShapeBuilder();
  const f = net.trunk(b, { shape: [height, width, inChannels] });
  net.rpnHead.forward(b, f);
  const perImage = b.layers.length;
  net.heads(b, f, { shape: [4], instances: 1 }, { shape: [], instances: 1 });
  const size = (shape: number[]) => shape.reduce((a, v) => a * v, 1);
  let image = height * width * inChannels;
  let region = size([...config.roiAlign.outputSize, net.trunkChannels]);
  b.layers.forEach((l, k) => {
    if (k < perImage) image = Math.max(image, size(l.outShape));
    else region = Math.max(region, size(l.outShape));
  });
  return { image: 4 * image, region: 4 * region };
}

/** A detector over a registered architecture with freshly initialized parameters. */
export function createDetector(arch: string, numClasses: number, options: CreateDetectorOptions = {}): Detector {
  const entry = getModelEntry(arch);
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new UserError(`a detector needs at least one class, got ${numClasses}`, { exitCode: 2 });
  const config = defaultFasterRcnnConfig(numClasses, options.config);
  return new Detector(arch, entry.config, config, { seed: options.seed ?? 0, ...(options.parts ? { parts: options.parts } : {}) });
}
