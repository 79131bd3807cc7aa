/**
 * A segmenter as one ONNX graph (opset 17):
 *
 *   input       float32 [N, 3, H, W]  normalized, any batch, height and width
 *   logits      float32 [N, K, H, W]  at the input's resolution (the upsampling is in the graph)
 *   labels      int64   [N, H, W]     with `argmax`: argmax + 1, the label encoding (0 = unlabeled is never predicted)
 *   aux_logits  float32 [N, K, H, W]  with `aux`: the auxiliary head (training diagnostics)
 *
 * Before a file is written, `checkSegmenterExport` runs it in ONNX Runtime beside the tfjs segmenter on
 * several image sizes.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { OnnxBuilder, encodeModel, paramValues } from '../onnx/export.js';
import { DataType, valueInfo } from '../onnx/proto.js';
import { toNCHW } from '../onnx/check.js';
import { createSession, runSession, type Session } from '../runtime/ort.js';
import { smoothImages } from '../detection/export.js';
import type { Segmenter } from './segmenter.js';

export interface SegmenterExportOptions {
  /** Add the `labels` output. */
  argmax?: boolean;
  /** Add the auxiliary head's `aux_logits` output. */
  aux?: boolean;
  /** Fold batch norm into the convolutions (fewer nodes; the file can no longer be trained from). */
  foldBatchNorm?: boolean;
  metadata?: Record<string, string>;
  producerVersion?: string;
}

/** Serializes a segmenter to ONNX (bytes of a ModelProto). */
export async function exportSegmenter(seg: Segmenter, options: SegmenterExportOptions = {}): Promise<Uint8Array> {
  const b = new OnnxBuilder(await paramValues(seg.params), { foldBatchNorm: options.foldBatchNorm ?? false, fp16: false, epsilon: seg.epsilon });
  const r = seg.net.forward(b, 'input', { aux: options.aux ?? false });
  const K = seg.numClasses;
  const rename = (value: string, name: string) => {
    for (const n of b.nodes) n.output = n.output!.map((o) => (o === value ? name : o));
  };
  rename(r.out, 'logits');
  const outputs = [valueInfo('logits', DataType.FLOAT, ['batch', K, 'height', 'width'])];
  if (options.argmax) {
    const [am] = b.op('ArgMax', ['logits'], 'seg_argmax', { axis: 1, keepdims: 0 });
    b.op('Add', [am!, b.constInt64('seg_label_offset', [], [1])], 'seg_labels', {}, ['labels']);
    outputs.push(valueInfo('labels', DataType.INT64, ['batch', 'height', 'width']));
  }
  if (r.aux) {
    rename(r.aux, 'aux_logits');
    outputs.push(valueInfo('aux_logits', DataType.FLOAT, ['batch', K, 'height', 'width']));
  }
  return encodeModel({
    name: `fcn_${seg.arch}`,
    builder: b,
    inputs: [valueInfo('input', DataType.FLOAT, ['batch', seg.backboneConfig.inChannels ?? 3, 'height', 'width'])],
    outputs,
    metadata: {
      arch: seg.arch,
      num_classes: String(K),
      input_layout: 'NCHW',
      output_stride: String(seg.config.outputStride),
      upsampling: seg.config.alignCorners ? 'bilinear align_corners' : 'bilinear half_pixel',
      ...options.metadata,
    },
    ...(options.producerVersion !== undefined ? { producerVersion: options.producerVersion } : {}),
  });
}

/** Runs an exported segmenter on NHWC images; returns its outputs by name (NCHW logits). */
export async function runSegmenterSession(session: Session, nhwc: Float32Array, dims: [number, number, number, number]) {
  const [n, h, w, c] = dims;
  return runSession(session, { input: { type: 'float32', data: toNCHW(nhwc, n, h, w, c), dims: [n, c, h, w] } });
}

export interface SegCheckCase {
  batch: number;
  height: number;
  width: number;
  /** Largest |tfjs - onnx| over the logits, and the largest |logit| (the scale the tolerance is relative to). */
  maxAbsDiff: number;
  maxAbsLogit: number;
  /** Fraction of pixels whose argmax agrees. */
  labelAgreement: number;
}

export interface SegCheckReport {
  passed: boolean;
  cases: SegCheckCase[];
  /** Pass when maxAbsDiff <= tolerance * max(1, maxAbsLogit) on every case. */
  tolerance: number;
}

export interface SegCheckOptions {
  /** [height, width] of the images checked (default three odd sizes). */
  sizes?: [number, number][];
  batch?: number;
  /** NHWC inputs as a function of (batch, height, width); default smooth random images. */
  inputs?: (batch: number, height: number, width: number) => Float32Array;
  seed?: number;
  tolerance?: number;
}

/** Default check sizes: not multiples of the output stride, one not square. */
export const SEG_CHECK_SIZES: [number, number][] = [
  [97, 97],
  [64, 120],
  [131, 75],
];

/**
 * The exported graph against the tfjs segmenter (eval mode): logits within `tolerance` (5e-4) relative
 * to their scale on every size. The upsampled logits of ONNX Runtime and tfjs come from different
 * convolution algorithms; a relative bound is what FP32 allows for deep nets.
 */
export async function checkSegmenterExport(seg: Segmenter, bytes: Uint8Array, options: SegCheckOptions = {}): Promise<SegCheckReport> {
  const sizes = options.sizes ?? SEG_CHECK_SIZES;
  const batch = options.batch ?? 1;
  const tolerance = options.tolerance ?? 5e-4;
  const session = await createSession(bytes, { provider: 'cpu' });
  const cases: SegCheckCase[] = [];
  try {
    let seed = options.seed ?? 11;
    for (const [height, width] of sizes) {
      const x = options.inputs ? options.inputs(batch, height, width) : smoothImages(batch, height, width, seed++);
      const expected = tf.tidy(() => tf.transpose(seg.logits(tf.tensor4d(x, [batch, height, width, 3]) as Tensor4D, 'eval').out, [0, 3, 1, 2]));
      let want: Float32Array;
      try {
        want = (await expected.data()) as Float32Array;
      } finally {
        expected.dispose();
      }
      const got = (await runSegmenterSession(session, x, [batch, height, width, 3])).logits!.data as Float32Array;
      cases.push({ batch, height, width, ...compareLogits(want, got, seg.numClasses, height * width) });
    }
  } finally {
    await session.session.release();
  }
  const passed = cases.every((c) => Number.isFinite(c.maxAbsDiff) && c.maxAbsDiff <= tolerance * Math.max(1, c.maxAbsLogit));
  return { passed, cases, tolerance };
}

/** Differences of two NCHW logit arrays of K channels and P pixels per image. */
export function compareLogits(a: Float32Array, b: Float32Array, K: number, P: number): Omit<SegCheckCase, 'batch' | 'height' | 'width'> {
  if (a.length !== b.length) return { maxAbsDiff: Infinity, maxAbsLogit: 0, labelAgreement: 0 };
  let maxAbsDiff = 0;
  let maxAbsLogit = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= maxAbsDiff)) maxAbsDiff = Number.isNaN(d) ? Infinity : d;
    maxAbsLogit = Math.max(maxAbsLogit, Math.abs(a[i]!));
  }
  const N = a.length / (K * P);
  let agree = 0;
  for (let n = 0; n < N; n++) {
    for (let p = 0; p < P; p++) {
      let ia = 0;
      let ib = 0;
      for (let k = 1; k < K; k++) {
        const o = (n * K + k) * P + p;
        if (a[o]! > a[(n * K + ia) * P + p]!) ia = k;
        if (b[o]! > b[(n * K + ib) * P + p]!) ib = k;
      }
      if (ia === ib) agree++;
    }
  }
  return { maxAbsDiff, maxAbsLogit, labelAgreement: agree / (N * P) };
}

export function describeSegCheck(r: SegCheckReport): string {
  return r.cases
    .map((c) => `${c.batch}x${c.height}x${c.width}: max |diff| ${c.maxAbsDiff.toExponential(2)} (logits up to ${c.maxAbsLogit.toFixed(2)}), ${(100 * c.labelAgreement).toFixed(2)}% labels agree`)
    .join('; ');
}
