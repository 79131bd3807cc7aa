/**
 * ONNX export: the model definition run over OnnxBuilder, which emits nodes instead of computing.
 *
 * The graph: input `input` float32 NCHW [batch, 3, H, W] (normalized, as torchvision and timm exports
 * take it), output `logits` [batch, classes]; the batch axis is dynamic (and height/width too with
 * `dynamicSize`); opset 17, IR version 8; weights are initializers named as the model's parameters
 * (timm names), so an export can be read back exactly (import.ts). Convolutions are Conv with OIHW
 * weights; batch norm is BatchNormalization, or folded into the convolution with `foldBatchNorm`.
 * The FP16 variant stores the backbone's weights and computes it in float16 after a Cast of the input;
 * global pooling and the classifier run in float32 (a Cast before the pooling), so callers still pass
 * and receive float32 and the long final reductions keep their precision.
 */
import type { Model } from '../models/model.js';
import type { ParamStore } from '../models/params.js';
import type { ConvBnSpec, ConvSpec, GraphBuilder, PoolSpec, ResizeSpec, RoiAlignSpec } from '../models/graph.js';
import { defaultPadding } from '../models/count.js';
import { DataType, IR_VERSION, OPSET, floatTensor, halfTensor, int64Tensor, node, onnx, valueInfo, type OnnxNs } from './proto.js';
import { float32ToFloat16Bits } from '../util/float16.js';
import { UserError } from '../errors.js';

export interface ExportOptions {
  /** Input height and width recorded in the graph (default 224). */
  imageSize?: number | [number, number];
  /** Leave height and width symbolic (the network itself works at any size). */
  dynamicSize?: boolean;
  /** Fold batch norm into the preceding convolution (weights scaled, bias added). Default: only for FP16. */
  foldBatchNorm?: boolean;
  /** Store weights and compute in float16; input and output stay float32. Folds batch norm unless
   *  foldBatchNorm is false: each unfused node rounds its output to float16 (folding halves the error). */
  fp16?: boolean;
  /** Extra metadata_props (preprocessing, provenance). */
  metadata?: Record<string, string>;
  producerVersion?: string;
}

/** Marks files whose convolutions hold folded batch norm (they cannot be imported for training). */
export const FOLDED_SUFFIX = ':folded';

function toOIHW(w: Float32Array, kh: number, kw: number, ci: number, co: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++)
      for (let c = 0; c < ci; c++) {
        const src = ((i * kw + j) * ci + c) * co;
        for (let o = 0; o < co; o++) out[((o * ci + c) * kh + i) * kw + j] = w[src + o]!;
      }
  return out;
}

function transpose2(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c]!;
  return out;
}

type OnnxAttrs = Record<string, number | number[] | string | { float: number }>;

export class OnnxBuilder implements GraphBuilder<string> {
  readonly nodes: OnnxNs.INodeProto[] = [];
  readonly initializers: OnnxNs.ITensorProto[] = [];
  private readonly used = new Set<string>();

  constructor(
    private readonly values: (name: string) => Float32Array,
    private readonly options: { foldBatchNorm: boolean; fp16: boolean; epsilon: number },
  ) {
    this.half = options.fp16;
  }

  private fresh(base: string): string {
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }

  /** Whether values are float16 at this point of the graph (the head runs in float32). */
  private half: boolean;

  private init(name: string, dims: number[], values: Float32Array): string {
    this.initializers.push(this.half ? halfTensor(name, dims, float32ToFloat16Bits(values)) : floatTensor(name, dims, values));
    this.used.add(name);
    return name;
  }

  private emit(opType: string, inputs: string[], base: string, attrs: OnnxAttrs = {}): string {
    const out = this.fresh(`${base}_out`);
    this.nodes.push(node(opType, inputs, [out], this.fresh(base), attrs));
    return out;
  }

  /**
   * Any ONNX node, for what a task adds around the network (a detector's proposal selection and
   * post-processing): returns the names of its outputs, `outputs` fresh ones or the names given (a
   * graph output's). An empty input name is an omitted optional input.
   */
  op(opType: string, inputs: string[], base: string, attrs: OnnxAttrs = {}, outputs: number | string[] = 1): string[] {
    const outs =
      typeof outputs === 'number'
        ? Array.from({ length: outputs }, (_, i) => this.fresh(outputs === 1 ? `${base}_out` : `${base}_out${i}`))
        : outputs.map((name) => (this.used.add(name), name));
    this.nodes.push(node(opType, inputs, outs, this.fresh(base), attrs));
    return outs;
  }

  /** A float32 constant (an initializer, never float16). */
  constFloat(base: string, dims: number[], values: Float32Array | number[]): string {
    const name = this.fresh(base);
    this.initializers.push(floatTensor(name, dims, values instanceof Float32Array ? values : Float32Array.from(values)));
    return name;
  }

  /** An int64 constant (shapes, axes, indices). */
  constInt64(base: string, dims: number[], values: number[]): string {
    const name = this.fresh(base);
    this.initializers.push(int64Tensor(name, dims, values));
    return name;
  }

  private convAttrs(spec: ConvSpec) {
    const p = defaultPadding(spec);
    const d = spec.dilation ?? 1;
    const s = spec.stride ?? 1;
    return { kernel_shape: [spec.kernel, spec.kernel], strides: [s, s], pads: [p, p, p, p], dilations: [d, d], group: 1 };
  }

  private convWeight(spec: ConvSpec): Float32Array {
    const k = spec.kernel;
    return toOIHW(this.values(`${spec.name}.weight`), k, k, spec.inChannels, spec.outChannels);
  }

  convBn(x: string, spec: ConvBnSpec, residual?: string): string {
    const k = spec.kernel;
    const wDims = [spec.outChannels, spec.inChannels, k, k];
    let y: string;
    if (this.options.foldBatchNorm) {
      const w = this.convWeight(spec);
      const gamma = this.values(`${spec.bn}.weight`);
      const beta = this.values(`${spec.bn}.bias`);
      const mean = this.values(`${spec.bn}.running_mean`);
      const variance = this.values(`${spec.bn}.running_var`);
      const convBias = spec.bias ? this.values(`${spec.name}.bias`) : null;
      const per = spec.inChannels * k * k;
      const b = new Float32Array(spec.outChannels);
      for (let o = 0; o < spec.outChannels; o++) {
        const scale = gamma[o]! / Math.sqrt(variance[o]! + this.options.epsilon);
        for (let i = 0; i < per; i++) w[o * per + i] = w[o * per + i]! * scale;
        b[o] = beta[o]! + ((convBias ? convBias[o]! : 0) - mean[o]!) * scale;
      }
      const wn = this.init(`${spec.name}.weight${FOLDED_SUFFIX}`, wDims, w);
      const bn = this.init(`${spec.name}.bias${FOLDED_SUFFIX}`, [spec.outChannels], b);
      y = this.emit('Conv', [x, wn, bn], spec.name, this.convAttrs(spec));
    } else {
      const inputs = [x, this.init(`${spec.name}.weight`, wDims, this.convWeight(spec))];
      if (spec.bias) inputs.push(this.init(`${spec.name}.bias`, [spec.outChannels], this.values(`${spec.name}.bias`)));
      const c = this.emit('Conv', inputs, spec.name, this.convAttrs(spec));
      const C = [spec.outChannels];
      y = this.emit(
        'BatchNormalization',
        [
          c,
          this.init(`${spec.bn}.weight`, C, this.values(`${spec.bn}.weight`)),
          this.init(`${spec.bn}.bias`, C, this.values(`${spec.bn}.bias`)),
          this.init(`${spec.bn}.running_mean`, C, this.values(`${spec.bn}.running_mean`)),
          this.init(`${spec.bn}.running_var`, C, this.values(`${spec.bn}.running_var`)),
        ],
        spec.bn,
        { epsilon: { float: this.options.epsilon } },
      );
    }
    if (residual) y = this.emit('Add', [y, residual], `${spec.name}.add`);
    if (spec.relu) y = this.emit('Relu', [y], `${spec.name}.relu`);
    return y;
  }

  conv(x: string, spec: ConvSpec & { relu?: boolean }): string {
    const k = spec.kernel;
    const inputs = [x, this.init(`${spec.name}.weight`, [spec.outChannels, spec.inChannels, k, k], this.convWeight(spec))];
    if (spec.bias) inputs.push(this.init(`${spec.name}.bias`, [spec.outChannels], this.values(`${spec.name}.bias`)));
    const y = this.emit('Conv', inputs, spec.name, this.convAttrs(spec));
    return spec.relu ? this.emit('Relu', [y], `${spec.name}.relu`) : y;
  }

  maxPool(x: string, spec: PoolSpec): string {
    const p = spec.padding ?? 0;
    return this.emit('MaxPool', [x], 'maxpool', {
      kernel_shape: [spec.kernel, spec.kernel],
      strides: [spec.stride, spec.stride],
      pads: [p, p, p, p],
    });
  }

  avgPool(x: string, spec: PoolSpec): string {
    const p = spec.padding ?? 0;
    return this.emit('AveragePool', [x], 'avgpool', {
      kernel_shape: [spec.kernel, spec.kernel],
      strides: [spec.stride, spec.stride],
      pads: [p, p, p, p],
      ceil_mode: spec.ceilMode ? 1 : 0,
      count_include_pad: spec.countIncludePad ? 1 : 0,
    });
  }

  globalAvgPool(x: string): string {
    if (this.half) {
      // The pooled mean and the classifier's long dot products lose most precision in float16;
      // they are a tiny part of the compute, so the head runs in float32.
      x = this.emit('Cast', [x], 'cast_head', { to: DataType.FLOAT });
      this.half = false;
    }
    const pooled = this.emit('GlobalAveragePool', [x], 'global_pool');
    return this.emit('Flatten', [pooled], 'flatten', { axis: 1 });
  }

  linear(x: string, spec: { name: string; inFeatures: number; outFeatures: number }): string {
    // Stored [out, in] as PyTorch does, used with transB = 1.
    const w = transpose2(this.values(`${spec.name}.weight`), spec.inFeatures, spec.outFeatures);
    return this.emit(
      'Gemm',
      [
        x,
        this.init(`${spec.name}.weight`, [spec.outFeatures, spec.inFeatures], w),
        this.init(`${spec.name}.bias`, [spec.outFeatures], this.values(`${spec.name}.bias`)),
      ],
      spec.name,
      { transB: 1 },
    );
  }

  /** `rois` float32 [R, 4], `batchIndices` int64 [R] (ONNX RoiAlign-16 takes int64 indices). */
  roiAlign(x: string, rois: string, batchIndices: string, spec: RoiAlignSpec): string {
    if (this.half) throw new Error('RoIAlign is exported in float32 only');
    return this.emit('RoiAlign', [x, rois, batchIndices], 'roi_align', {
      coordinate_transformation_mode: spec.aligned ? 'half_pixel' : 'output_half_pixel',
      mode: 'avg',
      output_height: spec.outputSize[0],
      output_width: spec.outputSize[1],
      sampling_ratio: spec.samplingRatio,
      spatial_scale: { float: spec.spatialScale },
    });
  }

  /**
   * Resize (linear) to `like`'s height and width, read from its shape at run time, so the graph keeps
   * dynamic sizes. ONNX Runtime clamps source coordinates to the map as PyTorch does.
   */
  resize(x: string, like: string, spec: ResizeSpec): string {
    if (this.half) throw new Error('Resize is exported in float32 only');
    const [nc] = this.op('Shape', [x], 'resize_shape_nc', { start: 0, end: 2 });
    const [hw] = this.op('Shape', [like], 'resize_shape_hw', { start: 2, end: 4 });
    const [sizes] = this.op('Concat', [nc!, hw!], 'resize_sizes', { axis: 0 });
    return this.emit('Resize', [x, '', '', sizes!], 'resize', {
      mode: 'linear',
      coordinate_transformation_mode: spec.alignCorners ? 'align_corners' : 'half_pixel',
    });
  }

  /** Inference graphs: dropout is the identity and emits nothing. */
  dropout(x: string): string {
    return x;
  }
}

/**
 * A parameter store's values by name for OnnxBuilder (a fresh copy per use). All are read first, and
 * asynchronously: the only way a GPU backend (WebGPU) can give them in Node.
 */
export async function paramValues(params: ParamStore): Promise<(name: string) => Float32Array> {
  const values = await params.read();
  return (name: string) => {
    const v = values.get(name);
    if (!v) throw new Error(`no parameter '${name}'`);
    return v.slice(); // builders may modify (folding)
  };
}

/** A built graph as the bytes of a ModelProto (opset 17, IR 8). */
export function encodeModel(g: {
  name: string;
  builder: OnnxBuilder;
  inputs: OnnxNs.IValueInfoProto[];
  outputs: OnnxNs.IValueInfoProto[];
  metadata: Record<string, string>;
  producerVersion?: string;
}): Uint8Array {
  const m: OnnxNs.IModelProto = {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'zoo',
    producerVersion: g.producerVersion ?? '0',
    graph: { name: g.name, node: g.builder.nodes, initializer: g.builder.initializers, input: g.inputs, output: g.outputs },
    metadataProps: Object.entries(g.metadata).map(([key, value]) => ({ key, value })),
  };
  return onnx.ModelProto.encode(onnx.ModelProto.fromObject(m)).finish();
}

/** Serializes `model` to ONNX (bytes of a ModelProto). */
export async function exportOnnx(model: Model, options: ExportOptions = {}): Promise<Uint8Array> {
  const [h, w] = typeof options.imageSize === 'number' ? [options.imageSize, options.imageSize] : (options.imageSize ?? [224, 224]);
  // Recorded as the graph's input dimensions: 0, a fraction or NaN would make a graph no input fits.
  for (const side of [h, w]) {
    if (!Number.isInteger(side) || side < 1) throw new UserError(`imageSize must be a positive integer (or two), got ${JSON.stringify(options.imageSize)}`, { exitCode: 2 });
  }
  const fp16 = options.fp16 ?? false;
  const values = await paramValues(model.params);
  const foldBatchNorm = options.foldBatchNorm ?? fp16;
  const b = new OnnxBuilder(values, { foldBatchNorm, fp16, epsilon: model.net.epsilon });
  const inC = model.config.inChannels ?? 3;
  let x = 'input';
  if (fp16) {
    x = 'input_fp16';
    b.nodes.push(node('Cast', ['input'], [x], 'cast_input', { to: DataType.FLOAT16 }));
  }
  model.net.head(b, model.net.features(b, x));
  // Name the last value 'logits' by renaming the producing node's output (the classifier, float32).
  b.nodes[b.nodes.length - 1]!.output = ['logits'];
  const hDim = options.dynamicSize ? 'height' : h;
  const wDim = options.dynamicSize ? 'width' : w;
  const metadata: Record<string, string> = {
    arch: model.arch,
    num_classes: String(model.numClasses),
    input_layout: 'NCHW',
    input_size: `${h}x${w}`,
    batch_norm: foldBatchNorm ? 'folded' : 'separate',
    precision: fp16 ? 'float16' : 'float32',
    ...options.metadata,
  };
  return encodeModel({
    name: model.arch,
    builder: b,
    inputs: [valueInfo('input', DataType.FLOAT, ['batch', inC, hDim, wDim])],
    outputs: [valueInfo('logits', DataType.FLOAT, ['batch', model.numClasses])],
    metadata,
    ...(options.producerVersion !== undefined ? { producerVersion: options.producerVersion } : {}),
  });
}
