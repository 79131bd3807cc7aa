/**
 * FCN (paper 6.2; GluonCV `fcn_resnet50_ade`, torchvision `fcn_resnet50`) written once over the model
 * vocabulary (GraphBuilder), so that the tfjs computation, the counts and the ONNX graph are the same
 * definition.
 *
 *   image -> backbone stages 0..3 dilated to output stride 8 (or 16)  -> C4, C5
 *   C5 -> head:      3x3 conv to 512, BN, ReLU, dropout 0.1, 1x1 conv to the classes (with bias)
 *   C4 -> aux head:  the same with 256 inner channels (training only; loss weight 0.5)
 *   -> bilinear upsampling of the logits to the input's height and width
 *
 * The network sees the backbone only through its feature contract (BackboneDefinition: featureInfo
 * and stages()). Parameter names: the backbone keeps its own (timm's), the heads take torchvision's
 * (`classifier.0` conv, `classifier.1` BN, `classifier.4` conv; `aux_classifier.*` likewise), so a
 * torchvision FCN state dict maps one to one once `backbone.` is stripped.
 */
import type { BackboneDefinition, ConvBnSpec, ConvSpec, GraphBuilder, ParamSpec } from '../models/graph.js';

export interface FcnConfig {
  /** Output channels: the data's classes (label value v is class v - 1; 0 is unlabeled). */
  numClasses: number;
  /** Input size / C5 size: 8 (stages 3 and 4 dilated, the paper's and GluonCV's) or 16 (stage 4 dilated). */
  outputStride: 8 | 16;
  /** Inner channels of the head on C5 (512). */
  headChannels: number;
  /** Inner channels of the auxiliary head on C4 (256). */
  auxChannels: number;
  /** Whether the auxiliary head exists (its parameters are in the model; it runs only when asked). */
  aux: boolean;
  /** Weight of the auxiliary loss (0.5). */
  auxWeight: number;
  /** Dropout before the last conv of each head (0.1). */
  dropout: number;
  /** Upsampling: false = half-pixel centres (PyTorch align_corners=False, torchvision); true = MXNet's (GluonCV). */
  alignCorners: boolean;
}

/** GluonCV's fcn_resnet50_ade configuration (SPEC section 5) for `numClasses` classes. */
export function defaultFcnConfig(numClasses: number, overrides: Partial<FcnConfig> = {}): FcnConfig {
  return {
    numClasses,
    outputStride: 8,
    headChannels: 512,
    auxChannels: 256,
    aux: true,
    auxWeight: 0.5,
    dropout: 0.1,
    alignCorners: false,
    ...overrides,
  };
}

/** Checks a configuration; returns the first problem or undefined. */
export function fcnConfigProblem(c: FcnConfig): string | undefined {
  if (!Number.isInteger(c.numClasses) || c.numClasses < 1) return `numClasses must be a positive integer, got ${c.numClasses}`;
  if (c.outputStride !== 8 && c.outputStride !== 16) return `outputStride must be 8 or 16, got ${c.outputStride}`;
  for (const k of ['headChannels', 'auxChannels'] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 1) return `${k} must be a positive integer, got ${c[k]}`;
  }
  if (!(c.dropout >= 0 && c.dropout < 1)) return `dropout must be in [0, 1), got ${c.dropout}`;
  if (!(c.auxWeight >= 0 && Number.isFinite(c.auxWeight))) return `auxWeight must be a non-negative number, got ${c.auxWeight}`;
  return undefined;
}

/** torchvision's FCNHead: conv 3x3 (no bias), BN, ReLU, dropout, conv 1x1 to the classes (bias). */
export class FcnHead {
  readonly params: ParamSpec[];
  private readonly inner: ConvBnSpec;
  private readonly out: ConvSpec;

  constructor(
    readonly name: string,
    inChannels: number,
    innerChannels: number,
    numClasses: number,
    private readonly dropoutRate: number,
  ) {
    this.inner = { name: `${name}.0`, bn: `${name}.1`, inChannels, outChannels: innerChannels, kernel: 3, relu: true };
    this.out = { name: `${name}.4`, inChannels: innerChannels, outChannels: numClasses, kernel: 1, bias: true };
    const fan = (k: number, ci: number, co: number) => ({ fanIn: k * k * ci, fanOut: k * k * co });
    const C = innerChannels;
    this.params = [
      { name: `${name}.0.weight`, shape: [3, 3, inChannels, C], role: 'weight', ...fan(3, inChannels, C) },
      { name: `${name}.1.weight`, shape: [C], role: 'gamma' },
      { name: `${name}.1.bias`, shape: [C], role: 'beta', zero: true },
      { name: `${name}.1.running_mean`, shape: [C], role: 'mean', zero: true },
      { name: `${name}.1.running_var`, shape: [C], role: 'var' },
      { name: `${name}.4.weight`, shape: [1, 1, C, numClasses], role: 'weight', ...fan(1, C, numClasses) },
      { name: `${name}.4.bias`, shape: [numClasses], role: 'bias', zero: true },
    ];
  }

  /** Logits at the feature map's resolution. */
  forward<T>(b: GraphBuilder<T>, x: T): T {
    const y = b.dropout(b.convBn(x, this.inner), { rate: this.dropoutRate });
    return b.conv(y, this.out);
  }
}

export interface FcnOutputs<T> {
  /** Logits [N, H, W, K] at the input's resolution. */
  out: T;
  /** The auxiliary head's logits at the input's resolution (when asked for). */
  aux?: T;
}

export class Fcn {
  readonly params: ParamSpec[];
  readonly head: FcnHead;
  readonly auxHead: FcnHead | undefined;
  /** Index of C4 and C5 in the backbone's featureInfo. */
  private readonly c4: number;
  private readonly c5: number;

  constructor(
    readonly backbone: BackboneDefinition,
    readonly config: FcnConfig,
  ) {
    const problem = fcnConfigProblem(config);
    if (problem) throw new Error(`FCN: ${problem}`);
    const info = backbone.featureInfo;
    this.c5 = info.length - 1;
    this.c4 = info.length - 2;
    const c5 = info[this.c5]!;
    const c4 = info[this.c4]!;
    if (!c4 || c5.reduction !== config.outputStride || (config.outputStride === 8 && c4.reduction !== 8)) {
      throw new Error(`FCN at output stride ${config.outputStride} needs a backbone dilated to it; its C5 is at stride ${c5.reduction}`);
    }
    this.head = new FcnHead('classifier', c5.channels, config.headChannels, config.numClasses, config.dropout);
    this.auxHead = config.aux ? new FcnHead('aux_classifier', c4.channels, config.auxChannels, config.numClasses, config.dropout) : undefined;
    this.params = [...backbone.params, ...this.head.params, ...(this.auxHead?.params ?? [])];
  }

  /** Backbone parameter names (all stages, stem included). */
  backboneParams(): string[] {
    return this.backbone.stageParams({ from: 0, to: this.backbone.featureInfo.length });
  }

  /** Logits at `x`'s resolution, and the auxiliary head's when `aux` is set (and the model has one). */
  forward<T>(b: GraphBuilder<T>, x: T, options: { aux?: boolean } = {}): FcnOutputs<T> {
    const feats = this.backbone.stages(b, x, { from: 0, to: this.backbone.featureInfo.length });
    const spec = { alignCorners: this.config.alignCorners };
    const out = b.resize(this.head.forward(b, feats[this.c5]!), x, spec);
    if (!options.aux) return { out };
    if (!this.auxHead) throw new Error('this FCN has no auxiliary head');
    return { out, aux: b.resize(this.auxHead.forward(b, feats[this.c4]!), x, spec) };
  }
}
