/**
 * The vocabulary a model definition is written in.
 *
 * A model's forward pass is written once, against GraphBuilder<T>, and interpreted by several
 * builders: TfBuilder computes tensors (training or inference), ShapeBuilder propagates shapes and
 * counts parameters and multiply-adds, OnnxBuilder emits an ONNX graph. The exported graph, the
 * FLOP count and the computation therefore cannot drift apart.
 *
 * Layout is NHWC throughout the definitions (tfjs's native layout); the ONNX builder maps to NCHW.
 */

/** A convolution's parameters. `name` is the parameter prefix (`<name>.weight`, `<name>.bias`). */
export interface ConvSpec {
  name: string;
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride?: number;
  /** Symmetric padding per side; defaults to dilation * (kernel - 1) / 2 ("same" for odd kernels). */
  padding?: number;
  dilation?: number;
  bias?: boolean;
}

/** A convolution followed by batch norm, optionally a residual add, optionally ReLU. */
export interface ConvBnSpec extends ConvSpec {
  /** Parameter prefix of the batch norm (`<bn>.weight`, `.bias`, `.running_mean`, `.running_var`). */
  bn: string;
  relu: boolean;
  /** Batch norm's gamma starts at zero (last BN of a residual block, "zero gamma"). */
  zeroGamma?: boolean;
}

export interface PoolSpec {
  kernel: number;
  stride: number;
  padding?: number;
  /** Average pooling: output size rounds up, the last window may hang over the edge. */
  ceilMode?: boolean;
  /** Average pooling: padded positions do not count in the divisor (false, the default here). */
  countIncludePad?: boolean;
}

export interface GraphBuilder<T> {
  /** conv -> batch norm [-> + residual] [-> relu] */
  convBn(x: T, spec: ConvBnSpec, residual?: T): T;
  /** conv [+ bias] [-> relu] without batch norm. */
  conv(x: T, spec: ConvSpec & { relu?: boolean }): T;
  maxPool(x: T, spec: PoolSpec): T;
  avgPool(x: T, spec: PoolSpec): T;
  /** Mean over the spatial axes: [N, H, W, C] -> [N, C]. */
  globalAvgPool(x: T): T;
  /** Fully connected: [N, in] -> [N, out], parameters `<name>.weight` [in, out] and `<name>.bias`. */
  linear(x: T, spec: { name: string; inFeatures: number; outFeatures: number }): T;
}

/** A parameter or buffer the definition needs, with how it is initialized. */
export interface ParamSpec {
  name: string;
  shape: number[];
  /** weight: conv/fc weights (weight decay applies); bias: conv/fc bias; gamma/beta: BN affine;
   *  mean/var: BN running statistics (buffers, not trained). */
  role: 'weight' | 'bias' | 'gamma' | 'beta' | 'mean' | 'var';
  /** Xavier fan sizes for weights. */
  fanIn?: number;
  fanOut?: number;
  zero?: boolean;
}

/** The output of one backbone stage, for heads (detection, segmentation). */
export interface FeatureInfo {
  /** C2..C5 */
  name: string;
  /** The module whose output this is ('layer1'..'layer4'). */
  module: string;
  channels: number;
  /** Input size / feature size (4, 8, 16, 32 without dilation). */
  reduction: number;
}

/** A network definition: its parameters and its forward pass over any builder. */
export interface NetworkDefinition {
  readonly params: ParamSpec[];
  readonly featureInfo: FeatureInfo[];
  readonly numClasses: number;
  /** Stage outputs (C2..C5) of the backbone. */
  features<T>(b: GraphBuilder<T>, x: T): T[];
  /** Classification logits from the stage outputs. */
  head<T>(b: GraphBuilder<T>, features: T[]): T;
}

/** Runs the whole network: features, then head. */
export function forwardLogits<T>(net: NetworkDefinition, b: GraphBuilder<T>, x: T): T {
  return net.head(b, net.features(b, x));
}
