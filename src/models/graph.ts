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

/** RoIAlign over a feature map (average mode), as ONNX RoiAlign-16 and torchvision `roi_align`. */
export interface RoiAlignSpec {
  /** Output bins [height, width] (14x14 for the C4 box head). */
  outputSize: [number, number];
  /** Feature size / input size (1/16 for a stride-16 map). */
  spatialScale: number;
  /** Samples per bin and axis; 0: adaptive, ceil(roi size / bins). */
  samplingRatio: number;
  /** Half-pixel offset (torchvision aligned=True, ONNX "half_pixel"); false: the legacy mode of MXNet and Detectron. */
  aligned: boolean;
}

/** Bilinear resizing to another value's spatial size (segmentation heads' upsampling). */
export interface ResizeSpec {
  /** true: corners aligned (MXNet/GluonCV, ONNX "align_corners"); false: half-pixel centres
   *  (PyTorch align_corners=False, torchvision's FCN, ONNX "half_pixel"). */
  alignCorners: boolean;
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
  /**
   * Features of regions: `x` [N, H, W, C], `rois` [R, 4] (x1, y1, x2, y2 in input pixels) and
   * `batchIndices` [R] (int32, the image of each region) -> [R, outH, outW, C]. The regions become the
   * batch axis of what follows (a box head runs once per region).
   */
  roiAlign(x: T, rois: T, batchIndices: T, spec: RoiAlignSpec): T;
  /** `x` [N, h, w, C] resized bilinearly to the height and width of `like` [N, H, W, *]. */
  resize(x: T, like: T, spec: ResizeSpec): T;
  /** Dropout with drop probability `rate`: active only when a builder trains with dropout on, else the identity. */
  dropout(x: T, spec: { rate: number }): T;
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
  /** Weights drawn from N(0, std^2) instead of Xavier (detection heads, as GluonCV and torchvision). */
  std?: number;
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

/**
 * What a head may ask of a backbone (torchvision's `IntermediateLayerGetter` / `out_channels`): the
 * stages' feature info and a way to run a range of stages. Stage 0 starts with the stem.
 */
export interface BackboneDefinition {
  readonly params: ParamSpec[];
  readonly featureInfo: FeatureInfo[];
  readonly epsilon: number;
  /** Runs stages [from, to) on `x` (the image when from is 0, else stage from - 1's output); returns each stage's output. */
  stages<T>(b: GraphBuilder<T>, x: T, range: { from: number; to: number }): T[];
  /** Parameter names of stages [from, to) (stage 0 includes the stem). */
  stageParams(range: { from: number; to: number }): string[];
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
