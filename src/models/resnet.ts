/**
 * One ResNet builder; the variants of the paper (section 4) and of GluonCV are data.
 *
 * | variant | stem                                   | downsampling block, path A | shortcut (path B)              |
 * |---------|----------------------------------------|----------------------------|--------------------------------|
 * | A (v1)  | 7x7/2 conv 64, 3x3/2 max pool          | stride on the first 1x1    | 1x1 conv stride 2 + BN         |
 * | B (v1b) | same                                   | stride on the 3x3          | 1x1 conv stride 2 + BN         |
 * | C (v1c) | deep: 3x3/2 conv 32, 3x3 32, 3x3 64    | stride on the 3x3          | 1x1 conv stride 2 + BN         |
 * | D (v1d) | deep, as C                             | stride on the 3x3          | 2x2/2 avg pool, 1x1 conv + BN  |
 * | S (v1s) | deep 64-64-128                         | stride on the 3x3          | 1x1 conv stride 2 + BN         |
 * | E (v1e) | deep 64-64-128                         | stride on the 3x3          | 2x2/2 avg pool, 1x1 conv + BN  |
 *
 * Depths: 18 and 34 use the basic block (two 3x3 convs, where A and B coincide), 50/101/152 the
 * bottleneck (1x1, 3x3, 1x1, expansion 4). Parameter names follow timm (`conv1.0`, `bn1`,
 * `layer1.0.conv1`, `layer1.0.downsample.1`, `fc`) so published weights map one to one; the
 * avg-pool shortcut keeps timm's indices (`downsample.1` conv, `downsample.2` BN).
 *
 * Output stride 16 or 8 replaces the stride of the last one or two stages by dilation (GluonCV
 * `dilated=True`, used by FCN): stage 3 dilation 2, stage 4 dilation 4 (2 in its first block); the
 * shortcut's average pool becomes an identity (1x1, stride 1) in a dilated stage, as in GluonCV.
 */
import type { BackboneDefinition, ConvBnSpec, FeatureInfo, GraphBuilder, NetworkDefinition, ParamSpec } from './graph.js';

export type BlockType = 'basic' | 'bottleneck';

export interface ResNetConfig {
  block: BlockType;
  /** Blocks per stage. */
  layers: [number, number, number, number];
  /** Bottleneck widths per stage (the block output is 4x for bottlenecks). */
  widths?: [number, number, number, number];
  /** 'deep': three 3x3 convs; '': one 7x7 conv. */
  stemType: '' | 'deep';
  /** Channels of the deep stem's first two convs (its output is twice this). Plain stem: output. */
  stemWidth: number;
  /** Where a downsampling bottleneck strides: the first 1x1 (ResNet A) or the 3x3 (B and later). */
  strideIn: '1x1' | '3x3';
  /** Shortcut downsampling by 2x2 average pool then 1x1 conv (ResNet-D), else by a strided 1x1 conv. */
  avgDown: boolean;
  /** Classes of the classifier; 0: no classifier, the head returns the pooled features (timm's `num_classes=0`). */
  numClasses: number;
  /** 32 (default), 16 or 8, by dilating the last stages. */
  outputStride?: 8 | 16 | 32;
  /** Zero gamma: the last BN of each residual block starts at gamma = 0 (paper 3.1). */
  zeroInitLastBn?: boolean;
  /** Batch norm epsilon (1e-5 in PyTorch, timm and GluonCV). */
  bnEpsilon?: number;
  /** Input channels (3 for RGB). */
  inChannels?: number;
}

const EXPANSION: Record<BlockType, number> = { basic: 1, bottleneck: 4 };

interface BlockPlan {
  name: string;
  inC: number;
  width: number;
  outC: number;
  stride: number;
  dilation: number;
  firstDilation: number;
  downsample: null | { avg: boolean; poolStride: number; stride: number };
}

/** The ResNet family as a NetworkDefinition. */
export class ResNet implements NetworkDefinition, BackboneDefinition {
  readonly params: ParamSpec[] = [];
  readonly featureInfo: FeatureInfo[] = [];
  readonly numClasses: number;
  readonly epsilon: number;
  private readonly blocks: BlockPlan[][] = [];
  private readonly stemOut: number;
  private readonly finalChannels: number;
  /** The stage (0..3; the stem counts as stage 0) of every parameter. */
  private readonly stageOf = new Map<string, number>();

  constructor(readonly config: ResNetConfig) {
    const c = config;
    if (!['basic', 'bottleneck'].includes(c.block)) throw new Error(`unknown block type '${c.block}'`);
    if (c.layers.length !== 4 || c.layers.some((n) => !Number.isInteger(n) || n < 1)) {
      throw new Error(`layers must be four positive integers, got [${c.layers}]`);
    }
    const os = c.outputStride ?? 32;
    if (![8, 16, 32].includes(os)) throw new Error(`output stride must be 8, 16 or 32, got ${os}`);
    if (!Number.isInteger(c.numClasses) || c.numClasses < 0) throw new Error(`numClasses must be a non-negative integer, got ${c.numClasses}`);
    this.numClasses = c.numClasses;
    this.epsilon = c.bnEpsilon ?? 1e-5;
    const inCh = c.inChannels ?? 3;
    const widths = c.widths ?? [64, 128, 256, 512];
    const exp = EXPANSION[c.block];

    // Stem parameters.
    if (c.stemType === 'deep') {
      this.stemOut = c.stemWidth * 2;
      this.convBnParams({ name: 'conv1.0', bn: 'conv1.1', inChannels: inCh, outChannels: c.stemWidth, kernel: 3, relu: true });
      this.convBnParams({ name: 'conv1.3', bn: 'conv1.4', inChannels: c.stemWidth, outChannels: c.stemWidth, kernel: 3, relu: true });
      this.convBnParams({ name: 'conv1.6', bn: 'bn1', inChannels: c.stemWidth, outChannels: this.stemOut, kernel: 3, relu: true });
    } else {
      this.stemOut = c.stemWidth;
      this.convBnParams({ name: 'conv1', bn: 'bn1', inChannels: inCh, outChannels: c.stemWidth, kernel: 7, relu: true });
    }

    // Stage plan (stride / dilation per stage, timm/GluonCV rules).
    let inC = this.stemOut;
    let netStride = 4;
    let dilation = 1;
    for (let s = 0; s < 4; s++) {
      let stride = s === 0 ? 1 : 2;
      const prevDilation = dilation;
      if (netStride >= os && stride > 1) {
        dilation *= stride;
        stride = 1;
      } else {
        netStride *= stride;
      }
      const width = widths[s]!;
      const outC = width * exp;
      const stage: BlockPlan[] = [];
      for (let i = 0; i < c.layers[s]!; i++) {
        const first = i === 0;
        const bStride = first ? stride : 1;
        const needsDown = first && (bStride !== 1 || inC !== outC);
        stage.push({
          name: `layer${s + 1}.${i}`,
          inC,
          width,
          outC,
          stride: bStride,
          dilation,
          firstDilation: first ? prevDilation : dilation,
          downsample: needsDown
            ? {
                avg: c.avgDown,
                // GluonCV: the pool matches the block stride; in a dilated stage it is 1x1/1 (identity).
                poolStride: bStride,
                stride: bStride,
              }
            : null,
        });
        inC = outC;
      }
      this.blocks.push(stage);
      this.featureInfo.push({ name: `C${s + 2}`, module: `layer${s + 1}`, channels: outC, reduction: netStride });
    }
    this.finalChannels = inC;
    for (const p of this.params) this.stageOf.set(p.name, 0);
    this.blocks.forEach((stage, s) => {
      const before = this.params.length;
      for (const b of stage) this.blockParams(b);
      for (const p of this.params.slice(before)) this.stageOf.set(p.name, s);
    });
    if (c.numClasses > 0) {
      this.params.push(
        { name: 'fc.weight', shape: [inC, c.numClasses], role: 'weight', fanIn: inC, fanOut: c.numClasses },
        { name: 'fc.bias', shape: [c.numClasses], role: 'bias', zero: true },
      );
    }
  }

  stageParams(range: { from: number; to: number }): string[] {
    return [...this.stageOf].filter(([, s]) => s >= range.from && s < range.to).map(([name]) => name);
  }

  private convBnParams(s: ConvBnSpec): void {
    const k = s.kernel;
    this.params.push({
      name: `${s.name}.weight`,
      shape: [k, k, s.inChannels, s.outChannels],
      role: 'weight',
      fanIn: k * k * s.inChannels,
      fanOut: k * k * s.outChannels,
    });
    const C = s.outChannels;
    this.params.push(
      { name: `${s.bn}.weight`, shape: [C], role: 'gamma', zero: s.zeroGamma ?? false },
      { name: `${s.bn}.bias`, shape: [C], role: 'beta', zero: true },
      { name: `${s.bn}.running_mean`, shape: [C], role: 'mean', zero: true },
      { name: `${s.bn}.running_var`, shape: [C], role: 'var' },
    );
  }

  private blockSpecs(b: BlockPlan): { convs: ConvBnSpec[]; down: ConvBnSpec | null } {
    const c = this.config;
    const zeroGamma = c.zeroInitLastBn ?? false;
    const down: ConvBnSpec | null = b.downsample
      ? {
          name: `${b.name}.downsample.${b.downsample.avg ? 1 : 0}`,
          bn: `${b.name}.downsample.${b.downsample.avg ? 2 : 1}`,
          inChannels: b.inC,
          outChannels: b.outC,
          kernel: 1,
          stride: b.downsample.avg ? 1 : b.downsample.stride,
          relu: false,
        }
      : null;
    if (c.block === 'basic') {
      return {
        down,
        convs: [
          { name: `${b.name}.conv1`, bn: `${b.name}.bn1`, inChannels: b.inC, outChannels: b.width, kernel: 3, stride: b.stride, dilation: b.firstDilation, relu: true },
          { name: `${b.name}.conv2`, bn: `${b.name}.bn2`, inChannels: b.width, outChannels: b.outC, kernel: 3, dilation: b.dilation, relu: true, zeroGamma },
        ],
      };
    }
    const on1x1 = c.strideIn === '1x1';
    return {
      down,
      convs: [
        { name: `${b.name}.conv1`, bn: `${b.name}.bn1`, inChannels: b.inC, outChannels: b.width, kernel: 1, stride: on1x1 ? b.stride : 1, relu: true },
        { name: `${b.name}.conv2`, bn: `${b.name}.bn2`, inChannels: b.width, outChannels: b.width, kernel: 3, stride: on1x1 ? 1 : b.stride, dilation: b.firstDilation, relu: true },
        { name: `${b.name}.conv3`, bn: `${b.name}.bn3`, inChannels: b.width, outChannels: b.outC, kernel: 1, relu: true, zeroGamma },
      ],
    };
  }

  private blockParams(b: BlockPlan): void {
    const { convs, down } = this.blockSpecs(b);
    for (const s of convs) this.convBnParams(s);
    if (down) this.convBnParams(down);
  }

  features<T>(g: GraphBuilder<T>, x: T): T[] {
    return this.stages(g, x, { from: 0, to: 4 });
  }

  stages<T>(g: GraphBuilder<T>, x: T, range: { from: number; to: number }): T[] {
    const { from, to } = range;
    if (!(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from < to && to <= 4)) throw new Error(`stage range [${from}, ${to}) is not within [0, 4)`);
    if (from === 0) x = this.stem(g, x);
    const out: T[] = [];
    for (const stage of this.blocks.slice(from, to)) {
      for (const b of stage) x = this.block(g, x, b);
      out.push(x);
    }
    return out;
  }

  private stem<T>(g: GraphBuilder<T>, x: T): T {
    const c = this.config;
    const inCh = c.inChannels ?? 3;
    if (c.stemType === 'deep') {
      x = g.convBn(x, { name: 'conv1.0', bn: 'conv1.1', inChannels: inCh, outChannels: c.stemWidth, kernel: 3, stride: 2, relu: true });
      x = g.convBn(x, { name: 'conv1.3', bn: 'conv1.4', inChannels: c.stemWidth, outChannels: c.stemWidth, kernel: 3, relu: true });
      x = g.convBn(x, { name: 'conv1.6', bn: 'bn1', inChannels: c.stemWidth, outChannels: this.stemOut, kernel: 3, relu: true });
    } else {
      x = g.convBn(x, { name: 'conv1', bn: 'bn1', inChannels: inCh, outChannels: c.stemWidth, kernel: 7, stride: 2, relu: true });
    }
    return g.maxPool(x, { kernel: 3, stride: 2, padding: 1 });
  }

  private block<T>(g: GraphBuilder<T>, x: T, b: BlockPlan): T {
    const { convs, down } = this.blockSpecs(b);
    let shortcut = x;
    if (down) {
      let s = x;
      if (b.downsample!.avg && b.downsample!.poolStride > 1) {
        s = g.avgPool(s, { kernel: 2, stride: b.downsample!.poolStride, ceilMode: true, countIncludePad: false });
      }
      shortcut = g.convBn(s, down);
    }
    let y = x;
    convs.forEach((spec, i) => {
      y = g.convBn(y, spec, i === convs.length - 1 ? shortcut : undefined);
    });
    return y;
  }

  head<T>(g: GraphBuilder<T>, features: T[]): T {
    const pooled = g.globalAvgPool(features[features.length - 1]!);
    if (this.numClasses === 0) return pooled;
    return g.linear(pooled, { name: 'fc', inFeatures: this.finalChannels, outFeatures: this.numClasses });
  }
}
