import * as tf from '@tensorflow/tfjs-core';
/**
 * A model: a registered architecture, its parameters, and how to run it.
 *
 * Inputs are NHWC float32 images already normalized (mean/std), as the ONNX export takes them in NCHW.
 */
import type { Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { getModelEntry } from './registry.js';
import { ResNet, type ResNetConfig } from './resnet.js';
import { ParamStore } from './params.js';
import { TfBuilder, clearFoldCache, type RunMode } from './tf_builder.js';
import { countNetwork, largestTensorBytes, type NetworkCounts } from './count.js';
import type { FeatureInfo } from './graph.js';
import { UserError } from '../errors.js';

export interface CreateModelOptions {
  numClasses?: number;
  outputStride?: 8 | 16 | 32;
  /** Zero gamma for the last BN of every residual block (paper 3.1). */
  zeroInitLastBn?: boolean;
  /** Seed of the initialization. */
  seed?: number;
}

/** The four stage outputs of a ResNet backbone, C2 (stride 4) to C5 (stride 32, or less when dilated). */
export type StageFeatures = [c2: Tensor4D, c3: Tensor4D, c4: Tensor4D, c5: Tensor4D];

export interface ForwardOptions {
  /** 'eval' (default): running statistics, folded BN. 'train': batch statistics. 'frozen': see TfBuilder. */
  mode?: RunMode;
}

export class Model {
  readonly net: ResNet;
  readonly params: ParamStore;

  constructor(
    readonly arch: string,
    readonly config: ResNetConfig,
    options: { seed?: number } = {},
  ) {
    this.net = new ResNet(config);
    this.params = new ParamStore(this.net.params, options);
  }

  get featureInfo(): FeatureInfo[] {
    return this.net.featureInfo;
  }

  get numClasses(): number {
    return this.net.numClasses;
  }

  private builder(mode: RunMode, momentum?: number): TfBuilder {
    return new TfBuilder(this.params, { mode, epsilon: this.net.epsilon, ...(momentum !== undefined ? { momentum } : {}) });
  }

  /**
   * Sets every batch norm's running statistics to the statistics of `x` (a forward pass in training
   * mode with momentum 1). Gives a freshly initialized network activations and logits of ordinary
   * magnitude in inference mode, for export checks and benchmarks.
   */
  calibrateBatchNorm(x: Tensor4D): void {
    checkInput(x, this.config.inChannels ?? 3);
    const b = this.builder('train', 1);
    tf.tidy(() => {
      this.net.head(b, this.net.features(b, x));
    });
  }

  /** Logits [N, numClasses] for NHWC images [N, H, W, C] (any tensor of that shape; checked). */
  forward(x: Tensor, options: ForwardOptions = {}): Tensor2D {
    checkInput(x, this.config.inChannels ?? 3);
    if (options.mode === 'train') checkGradients();
    const b = this.builder(options.mode ?? 'eval');
    return tf.tidy(() => this.net.head(b, this.net.features(b, x)) as Tensor2D);
  }

  /** Stage outputs [C2, C3, C4, C5] (NHWC; channels and reduction in `featureInfo`), for detection and segmentation heads. */
  features(x: Tensor, options: ForwardOptions = {}): StageFeatures {
    checkInput(x, this.config.inChannels ?? 3);
    const b = this.builder(options.mode ?? 'eval');
    return tf.tidy(() => this.net.features(b, x) as StageFeatures);
  }

  /**
   * The gradients `tf.variableGrads` returns (keyed by the tfjs variables' names) by parameter name,
   * as `SGD.step` takes them: for a training loop of one's own.
   */
  gradientsByName(grads: tf.NamedTensorMap): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [name, v] of this.params.trainable()) {
      const g = grads[v.name];
      if (g) out.set(name, g);
    }
    return out;
  }

  /** Parameters, multiply-adds and stage shapes at an input size. */
  counts(height = 224, width = height): NetworkCounts {
    return countNetwork(this.net, height, width, this.config.inChannels ?? 3);
  }

  /** Bytes of the largest float32 tensor one image makes at an input size: the input or a layer's output. */
  largestTensorBytes(height = 224, width = height): number {
    return largestTensorBytes(this.counts(height, width), height, width, this.config.inChannels ?? 3);
  }

  dispose(): void {
    clearFoldCache(this.params);
    this.params.dispose();
  }
}

/**
 * A training-mode pass is for taking gradients, which tfjs-core's Node bundle does not register: say
 * how to get them instead of failing later with "gradient function not found for RealDiv".
 */
function checkGradients(): void {
  if (!tf.getGradient('RealDiv')) {
    throw new Error("tfjs-core's gradient functions are not registered: call `await initBackend()` (or `await registerCoreGradients()`) from zoo before training");
  }
}

function checkInput(x: Tensor, channels: number): void {
  if (x.rank !== 4) throw new Error(`model input must be NHWC [batch, height, width, ${channels}], got shape [${x.shape}]`);
  if (x.shape[3] !== channels) throw new Error(`model input must have ${channels} channels (NHWC), got shape [${x.shape}]`);
  if (x.dtype !== 'float32') throw new Error(`model input must be float32, got ${x.dtype}`);
}

/** Largest classifier accepted, in float32 weights: 1 GiB, a quarter of the WebAssembly heap. */
export const MAX_CLASSIFIER_WEIGHTS = 2 ** 28;

/** The configuration of a registered architecture with options applied. */
export function modelConfig(arch: string, options: CreateModelOptions = {}): ResNetConfig {
  const entry = getModelEntry(arch);
  const k = options.numClasses;
  if (k !== undefined) {
    if (!Number.isInteger(k) || k < 1) throw new UserError(`the number of classes must be a positive integer, got ${k}`, { exitCode: 2 });
    const features = new ResNet({ ...entry.config, numClasses: 1 }).featureInfo.at(-1)!.channels;
    if (k * features > MAX_CLASSIFIER_WEIGHTS) {
      throw new UserError(
        `${k} classes would need a ${features} x ${k} classifier (${((4 * k * features) / 2 ** 30).toFixed(1)} GiB of weights); ` +
          `${arch} takes at most ${Math.floor(MAX_CLASSIFIER_WEIGHTS / features)} classes`,
        { exitCode: 2 },
      );
    }
  }
  return {
    ...entry.config,
    ...(options.numClasses !== undefined ? { numClasses: options.numClasses } : {}),
    ...(options.outputStride !== undefined ? { outputStride: options.outputStride } : {}),
    ...(options.zeroInitLastBn !== undefined ? { zeroInitLastBn: options.zeroInitLastBn } : {}),
  };
}

/** Builds a registered architecture with freshly initialized parameters (on the active tfjs backend). */
export function createModel(arch: string, options: CreateModelOptions = {}): Model {
  const config = modelConfig(arch, options);
  try {
    tf.engine().backend; // initializes the best registered backend, or throws when none is
  } catch {
    throw new Error('no tfjs backend is active: call `await initBackend()` (from zoo) before creating a model');
  }
  return new Model(arch, config, { seed: options.seed ?? 0 });
}
