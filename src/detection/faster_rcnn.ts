/**
 * Faster R-CNN in the C4 layout (paper 6.1; GluonCV `faster_rcnn_resnet50_v1b_voc`), written once over
 * the model vocabulary (GraphBuilder) so that the tfjs computation, the counts and the ONNX graph are
 * the same definition.
 *
 *   image -> backbone stages 0..2 (stride 16, "C4")  -> RPN head -> objectness [H*W*A], deltas [H*W*A, 4]
 *         -> proposals (proposals.ts: decode, clip, min size, top-k, NMS; no gradient)
 *         -> RoIAlign 14x14 on C4 -> box head (backbone stage 3, its stride 2 gives 7x7, then global pool)
 *         -> predictor: class scores [R, C+1] (0 = background), class-specific deltas [R, 4C]
 *
 * Every part is replaceable, as in torchvision's `FasterRCNN`: the anchor generator, the RPN head, the
 * RoI pooler's geometry, the box head and the predictor are options with GluonCV's configuration as
 * defaults. The network sees the backbone only through its feature contract (BackboneDefinition):
 * `featureInfo`, `stages()` and `stageParams()`.
 *
 * Parameter names: the backbone keeps its own names (timm's, so backbone weights load directly); the
 * heads use torchvision's (`rpn.head.conv`, `rpn.head.cls_logits`, `rpn.head.bbox_pred`,
 * `roi_heads.box_predictor.cls_score`, `roi_heads.box_predictor.bbox_pred`).
 */
import type { BackboneDefinition, GraphBuilder, ParamSpec, RoiAlignSpec } from '../models/graph.js';
import { AnchorGenerator, DEFAULT_ANCHORS, type AnchorOptions } from './anchors.js';
import { RCNN_BOX_WEIGHTS, type BoxWeights } from './boxes.js';

/** The RPN's proposal selection, for training and for inference. */
export interface ProposalOptions {
  /** Highest-scoring anchors kept before NMS. */
  preNms: number;
  /** Proposals kept after NMS. */
  postNms: number;
  nmsThreshold: number;
  /** Proposals narrower or lower than this (input pixels) are dropped. */
  minSize: number;
}

/** How detections are selected from the box head's outputs. */
export interface DetectionOptions {
  /** Class scores at or below this are dropped before NMS. */
  scoreThreshold: number;
  /** Per-class NMS threshold. */
  nmsThreshold: number;
  /** Detections kept per image (D of the exported outputs). */
  maxDetections: number;
}

export interface RpnTrainingOptions {
  batchSize: number;
  positiveFraction: number;
  positiveIou: number;
  negativeIou: number;
  /** Smooth-L1 beta of the RPN box loss (GluonCV: 1/9). */
  boxBeta: number;
}

export interface RoiTrainingOptions {
  batchSize: number;
  positiveFraction: number;
  positiveIou: number;
  /** Smooth-L1 beta of the box-head loss (GluonCV: 1). */
  boxBeta: number;
}

export interface FasterRcnnConfig {
  /** Object classes (background not counted). */
  numClasses: number;
  anchors: AnchorOptions;
  /** Channels of the RPN's 3x3 conv (GluonCV: 1024). */
  rpnChannels: number;
  rpnTrain: ProposalOptions;
  rpnTest: ProposalOptions;
  rpnTargets: RpnTrainingOptions;
  roiTargets: RoiTrainingOptions;
  roiAlign: RoiAlignSpec;
  boxWeights: BoxWeights;
  detections: DetectionOptions;
  /** Backbone stages not trained; stage 0 is the stem and layer1 (1: GluonCV's and torchvision's default). */
  frozenStages: number;
}

/** GluonCV's faster_rcnn_resnet50_v1b_voc (SPEC section 5), for `numClasses` classes. */
export function defaultFasterRcnnConfig(numClasses: number, overrides: Partial<FasterRcnnConfig> = {}): FasterRcnnConfig {
  return {
    numClasses,
    anchors: DEFAULT_ANCHORS,
    rpnChannels: 1024,
    rpnTrain: { preNms: 12000, postNms: 2000, nmsThreshold: 0.7, minSize: 16 },
    rpnTest: { preNms: 6000, postNms: 300, nmsThreshold: 0.7, minSize: 16 },
    rpnTargets: { batchSize: 256, positiveFraction: 0.5, positiveIou: 0.7, negativeIou: 0.3, boxBeta: 1 / 9 },
    roiTargets: { batchSize: 128, positiveFraction: 0.25, positiveIou: 0.5, boxBeta: 1 },
    roiAlign: { outputSize: [14, 14], spatialScale: 1 / 16, samplingRatio: 2, aligned: true },
    boxWeights: RCNN_BOX_WEIGHTS,
    detections: { scoreThreshold: 0.01, nmsThreshold: 0.3, maxDetections: 100 },
    frozenStages: 1,
    ...overrides,
  };
}

/** A replaceable part: its parameters and its computation over any builder. */
export interface RpnHead {
  readonly params: ParamSpec[];
  /** C4 features -> [objectness logits (A channels), box deltas (4A channels, anchor-major)]. */
  forward<T>(b: GraphBuilder<T>, features: T): [T, T];
}

export interface BoxHead {
  readonly params: ParamSpec[];
  /** Width of the pooled vector per region. */
  readonly outFeatures: number;
  /** Region features [R, ph, pw, C] -> [R, outFeatures]. */
  forward<T>(b: GraphBuilder<T>, regions: T): T;
}

export interface BoxPredictor {
  readonly params: ParamSpec[];
  /** [R, F] -> [class logits [R, C+1], class-specific deltas [R, 4C]]. */
  forward<T>(b: GraphBuilder<T>, pooled: T): [T, T];
}

/** A weight drawn from N(0, std^2), as GluonCV and torchvision initialize their detection heads. */
function normalWeight(name: string, shape: number[], std: number): ParamSpec {
  return { name, shape, role: 'weight', std };
}

const bias = (name: string, n: number): ParamSpec => ({ name, shape: [n], role: 'bias', zero: true });

/** The RPN head: 3x3 conv + ReLU, then 1x1 convs to objectness and deltas (weights N(0, 0.01)). */
export class StandardRpnHead implements RpnHead {
  readonly params: ParamSpec[];

  constructor(
    readonly inChannels: number,
    readonly channels: number,
    readonly numAnchors: number,
  ) {
    this.params = [
      normalWeight('rpn.head.conv.weight', [3, 3, inChannels, channels], 0.01),
      bias('rpn.head.conv.bias', channels),
      normalWeight('rpn.head.cls_logits.weight', [1, 1, channels, numAnchors], 0.01),
      bias('rpn.head.cls_logits.bias', numAnchors),
      normalWeight('rpn.head.bbox_pred.weight', [1, 1, channels, 4 * numAnchors], 0.01),
      bias('rpn.head.bbox_pred.bias', 4 * numAnchors),
    ];
  }

  forward<T>(b: GraphBuilder<T>, features: T): [T, T] {
    const h = b.conv(features, { name: 'rpn.head.conv', inChannels: this.inChannels, outChannels: this.channels, kernel: 3, bias: true, relu: true });
    return [
      b.conv(h, { name: 'rpn.head.cls_logits', inChannels: this.channels, outChannels: this.numAnchors, kernel: 1, bias: true }),
      b.conv(h, { name: 'rpn.head.bbox_pred', inChannels: this.channels, outChannels: 4 * this.numAnchors, kernel: 1, bias: true }),
    ];
  }
}

/** The C4 box head: the backbone's last stage on the pooled regions, then global average pooling. */
export class StageBoxHead implements BoxHead {
  readonly params: ParamSpec[];
  readonly outFeatures: number;

  constructor(
    private readonly backbone: BackboneDefinition,
    private readonly stage = 3,
  ) {
    const names = new Set(backbone.stageParams({ from: stage, to: stage + 1 }));
    this.params = backbone.params.filter((p) => names.has(p.name));
    this.outFeatures = backbone.featureInfo[stage]!.channels;
  }

  forward<T>(b: GraphBuilder<T>, regions: T): T {
    const [y] = this.backbone.stages(b, regions, { from: this.stage, to: this.stage + 1 });
    return b.globalAvgPool(y!);
  }
}

/** Class scores (N(0, 0.01)) and class-specific box deltas (N(0, 0.001)), as GluonCV initializes them. */
export class StandardBoxPredictor implements BoxPredictor {
  readonly params: ParamSpec[];

  constructor(
    readonly inFeatures: number,
    readonly numClasses: number,
  ) {
    this.params = [
      normalWeight('roi_heads.box_predictor.cls_score.weight', [inFeatures, numClasses + 1], 0.01),
      bias('roi_heads.box_predictor.cls_score.bias', numClasses + 1),
      normalWeight('roi_heads.box_predictor.bbox_pred.weight', [inFeatures, 4 * numClasses], 0.001),
      bias('roi_heads.box_predictor.bbox_pred.bias', 4 * numClasses),
    ];
  }

  forward<T>(b: GraphBuilder<T>, pooled: T): [T, T] {
    return [
      b.linear(pooled, { name: 'roi_heads.box_predictor.cls_score', inFeatures: this.inFeatures, outFeatures: this.numClasses + 1 }),
      b.linear(pooled, { name: 'roi_heads.box_predictor.bbox_pred', inFeatures: this.inFeatures, outFeatures: 4 * this.numClasses }),
    ];
  }
}

export interface FasterRcnnParts {
  anchorGenerator?: AnchorGenerator;
  rpnHead?: RpnHead;
  boxHead?: BoxHead;
  boxPredictor?: BoxPredictor;
}

/** The network: the trunk's stage index (C4 = stage 2) and the parts, over a backbone. */
export class FasterRcnn {
  readonly params: ParamSpec[];
  readonly anchorGenerator: AnchorGenerator;
  readonly rpnHead: RpnHead;
  readonly boxHead: BoxHead;
  readonly boxPredictor: BoxPredictor;
  /** The last backbone stage of the trunk (2: C4, stride 16). */
  readonly trunkStage = 2;
  readonly trunkChannels: number;
  readonly trunkReduction: number;

  constructor(
    readonly backbone: BackboneDefinition,
    readonly config: FasterRcnnConfig,
    parts: FasterRcnnParts = {},
  ) {
    if (!Number.isInteger(config.numClasses) || config.numClasses < 1) throw new Error(`a detector needs at least one class, got ${config.numClasses}`);
    const c4 = backbone.featureInfo[this.trunkStage]!;
    this.trunkChannels = c4.channels;
    this.trunkReduction = c4.reduction;
    this.anchorGenerator = parts.anchorGenerator ?? new AnchorGenerator(config.anchors);
    if (this.anchorGenerator.options.stride !== c4.reduction) {
      throw new Error(`the anchors' stride ${this.anchorGenerator.options.stride} differs from the trunk's (${c4.reduction})`);
    }
    if (Math.abs(config.roiAlign.spatialScale * c4.reduction - 1) > 1e-9) {
      throw new Error(`RoIAlign's spatial scale ${config.roiAlign.spatialScale} is not 1/${c4.reduction} (the trunk's stride)`);
    }
    this.rpnHead = parts.rpnHead ?? new StandardRpnHead(c4.channels, config.rpnChannels, this.anchorGenerator.numAnchors);
    this.boxHead = parts.boxHead ?? new StageBoxHead(backbone, this.trunkStage + 1);
    this.boxPredictor = parts.boxPredictor ?? new StandardBoxPredictor(this.boxHead.outFeatures, config.numClasses);
    const trunk = new Set(backbone.stageParams({ from: 0, to: this.trunkStage + 1 }));
    const seen = new Set<string>();
    this.params = [];
    for (const p of [...backbone.params.filter((q) => trunk.has(q.name)), ...this.boxHead.params, ...this.rpnHead.params, ...this.boxPredictor.params]) {
      if (seen.has(p.name)) continue;
      seen.add(p.name);
      this.params.push(p);
    }
  }

  get numClasses(): number {
    return this.config.numClasses;
  }

  /** Image [N, H, W, 3] -> C4 features [N, H/16, W/16, C]. */
  trunk<T>(b: GraphBuilder<T>, x: T): T {
    return this.backbone.stages(b, x, { from: 0, to: this.trunkStage + 1 })[this.trunkStage]!;
  }

  /** Parameters that training leaves alone: the frozen stages (stem and stage 1 by default). */
  frozenParams(): Set<string> {
    return new Set(this.backbone.stageParams({ from: 0, to: this.config.frozenStages }));
  }

  /** Box head and predictor on region features: [class logits [R, C+1], deltas [R, 4C]]. */
  heads<T>(b: GraphBuilder<T>, features: T, rois: T, batchIndices: T): [T, T] {
    const regions = b.roiAlign(features, rois, batchIndices, this.config.roiAlign);
    return this.boxPredictor.forward(b, this.boxHead.forward(b, regions));
  }
}
