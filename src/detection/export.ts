/**
 * A detector as one ONNX graph (opset 17) from images to padded detections:
 *
 *   input               float32 [N, 3, H, W]  normalized, any batch, height and width
 *   num_detections      int64   [N]
 *   detection_boxes     float32 [N, D, 4]     x1, y1, x2, y2 in input pixels
 *   detection_scores    float32 [N, D]
 *   detection_classes   int64   [N, D]        0-based indices into the metadata's labels
 *
 * the layout of TensorRT's EfficientNMS and the TF Object Detection API (D = max detections, rows past
 * num_detections are zeros). The whole post-processing is in the graph (proposals.ts): anchors for the
 * actual input size, decode, clip, NonMaxSuppression, RoiAlign, TopK with k clamped to the axis length.
 *
 * Before a file is written, `checkDetectorExport` runs it in ONNX Runtime beside the tfjs detector on
 * several image sizes and batch sizes.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { OnnxBuilder, encodeModel, paramValues } from '../onnx/export.js';
import { DataType, valueInfo } from '../onnx/proto.js';
import { toNCHW } from '../onnx/check.js';
import { createSession, runSession } from '../runtime/ort.js';
import { Rng } from '../util/random.js';
import type { Detector } from './detector.js';
import { DETECTION_OUTPUTS, emitDetections, emitImageInfo, emitProposals, type ImageDetections } from './proposals.js';

export interface DetectorExportOptions {
  metadata?: Record<string, string>;
  producerVersion?: string;
}

/** Serializes a detector to ONNX (bytes of a ModelProto). */
export async function exportDetector(det: Detector, options: DetectorExportOptions = {}): Promise<Uint8Array> {
  const b = new OnnxBuilder(await paramValues(det.params), { foldBatchNorm: false, fp16: false, epsilon: det.epsilon });
  const net = det.net;
  const info = emitImageInfo(b, 'input');
  const features = net.trunk(b, 'input');
  const [logits, deltas] = net.rpnHead.forward(b, features);
  const { rois, batchIndices } = emitProposals(b, logits, deltas, features, info, net.anchorGenerator, det.config.rpnTest);
  // ONNX Runtime's layout optimizer cannot run the box head over zero regions (an image too small for
  // any proposal): one extra region always goes through it, pooled from image 0 but owned by image N,
  // which does not exist, so it never becomes a detection.
  const extraRoi = b.constFloat('det_extra_roi', [1, 4], [0, 0, 16, 16]);
  const allRois = b.op('Concat', [rois, extraRoi], 'det_rois', { axis: 0 })[0]!;
  const poolFrom = b.op('Concat', [batchIndices, b.constInt64('det_image0', [1], [0])], 'det_pool_from', { axis: 0 })[0]!;
  const owners = b.op('Concat', [batchIndices, info.batch], 'det_owners', { axis: 0 })[0]!;
  const [cls, box] = net.heads(b, features, allRois, poolFrom);
  emitDetections(b, cls, box, allRois, owners, info, det.numClasses, det.config.boxWeights, det.config.detections);
  const D = det.config.detections.maxDetections;
  return encodeModel({
    name: `faster_rcnn_${det.arch}`,
    builder: b,
    inputs: [valueInfo('input', DataType.FLOAT, ['batch', det.backboneConfig.inChannels ?? 3, 'height', 'width'])],
    outputs: [
      valueInfo('num_detections', DataType.INT64, ['batch']),
      valueInfo('detection_boxes', DataType.FLOAT, ['batch', D, 4]),
      valueInfo('detection_scores', DataType.FLOAT, ['batch', D]),
      valueInfo('detection_classes', DataType.INT64, ['batch', D]),
    ],
    metadata: {
      task: 'object-detection',
      arch: det.arch,
      detector: 'faster_rcnn_c4',
      num_classes: String(det.numClasses),
      max_detections: String(D),
      input_layout: 'NCHW',
      outputs: DETECTION_OUTPUTS.join(','),
      ...options.metadata,
    },
    ...(options.producerVersion !== undefined ? { producerVersion: options.producerVersion } : {}),
  });
}

/** What ONNX Runtime returned, per image, in the tfjs detector's form. */
export function unpadDetections(out: { num: BigInt64Array; boxes: Float32Array; scores: Float32Array; classes: BigInt64Array }, maxDetections: number): ImageDetections[] {
  const N = out.num.length;
  const D = maxDetections;
  return Array.from({ length: N }, (_, n) => {
    const k = Number(out.num[n]!);
    return {
      boxes: out.boxes.slice(n * D * 4, n * D * 4 + 4 * k),
      scores: out.scores.slice(n * D, n * D + k),
      classes: Int32Array.from(out.classes.slice(n * D, n * D + k), Number),
    };
  });
}

/** Runs an exported detector on an NHWC batch (converted to NCHW). */
export async function runDetectorSession(
  session: Awaited<ReturnType<typeof createSession>>,
  nhwc: Float32Array,
  dims: [number, number, number, number],
  maxDetections: number,
): Promise<ImageDetections[]> {
  const [n, h, w, c] = dims;
  const r = await runSession(session, { input: { type: 'float32', data: toNCHW(nhwc, n, h, w, c), dims: [n, c, h, w] } });
  return unpadDetections(
    {
      num: r.num_detections!.data as BigInt64Array,
      boxes: r.detection_boxes!.data as Float32Array,
      scores: r.detection_scores!.data as Float32Array,
      classes: r.detection_classes!.data as BigInt64Array,
    },
    maxDetections,
  );
}

export interface DetectorCheckCase {
  batch: number;
  height: number;
  width: number;
  /** Detections of tfjs and of ONNX Runtime (summed over the batch). */
  tfjs: number;
  onnx: number;
  /** ONNX detections with a tfjs detection of the same class, box and score within tolerance. */
  matched: number;
  /**
   * Unmatched ONNX detections at the cut of a full list (D detections): scores within tolerance of the
   * lowest kept one, where the two runtimes' last-bit differences may order near-ties differently.
   */
  boundary: number;
  /** Largest relative difference of a box coordinate (|a - b| / max(|a|, |b|, 1 pixel)) over the matched detections. */
  maxBoxDiff: number;
  maxScoreDiff: number;
}

export interface DetectorCheckReport {
  passed: boolean;
  cases: DetectorCheckCase[];
  /** Tolerances: box coordinates relative, scores absolute. */
  boxTolerance: number;
  scoreTolerance: number;
}

export interface DetectorCheckOptions {
  /** [height, width] of the images checked (default: three sizes around 224). */
  sizes?: [number, number][];
  batches?: number[];
  /** Inputs: a function of (batch, height, width) giving NHWC values; default: smooth random images. */
  inputs?: (batch: number, height: number, width: number) => Float32Array;
  seed?: number;
}

/**
 * Smooth random images (low-frequency noise, normalized scale): a random detector's features on white
 * noise are all alike, which makes a weak test of the selection steps.
 */
export function smoothImages(batch: number, height: number, width: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(batch * height * width * 3);
  const waves = Array.from({ length: 6 }, () => ({ fx: rng.range(0.5, 6), fy: rng.range(0.5, 6), px: rng.range(0, 6.28), a: rng.normal() }));
  for (let n = 0; n < batch; n++)
    for (let y = 0; y < height; y++)
      for (let xx = 0; xx < width; xx++)
        for (let c = 0; c < 3; c++) {
          let v = 0;
          for (const [i, wv] of waves.entries()) v += wv.a * Math.sin((wv.fx * xx) / width * 6.28 + (wv.fy * y) / height * 6.28 + wv.px + n + c * (i + 1));
          x[((n * height + y) * width + xx) * 3 + c] = v + 0.3 * rng.normal();
        }
  return x;
}

/**
 * The exported graph against the tfjs detector: per size and batch, every ONNX Runtime detection must
 * have a tfjs detection of the same image and class with box coordinates within 1e-3 relative
 * and a score within 1e-4, and the counts must agree. A full list's cut may fall between near-tied
 * scores that the runtimes order differently (at most a tenth of the list, scores at the cut).
 */
export async function checkDetectorExport(det: Detector, bytes: Uint8Array, options: DetectorCheckOptions = {}): Promise<DetectorCheckReport> {
  const sizes = options.sizes ?? [
    [224, 224],
    [192, 256],
    [256, 208],
  ];
  const batches = options.batches ?? [1, 2];
  const boxTolerance = 1e-3;
  const scoreTolerance = 1e-4;
  const session = await createSession(bytes, { provider: 'cpu' });
  const cases: DetectorCheckCase[] = [];
  try {
    let seed = options.seed ?? 7;
    for (const [height, width] of sizes) {
      for (const batch of batches) {
        const x = options.inputs ? options.inputs(batch, height, width) : smoothImages(batch, height, width, seed++);
        const t = tf.tensor4d(x, [batch, height, width, 3]) as Tensor4D;
        let expected: ImageDetections[];
        try {
          expected = await det.detect(t);
        } finally {
          t.dispose();
        }
        const got = await runDetectorSession(session, x, [batch, height, width, 3], det.config.detections.maxDetections);
        cases.push(compareDetections(expected, got, { batch, height, width }, boxTolerance, scoreTolerance));
      }
    }
  } finally {
    await session.session.release();
  }
  const passed = cases.every((c) => c.tfjs === c.onnx && c.matched + c.boundary === c.onnx && c.boundary <= 0.1 * c.onnx);
  return { passed, cases, boxTolerance, scoreTolerance };
}

/** Matches each ONNX detection to an unused tfjs detection of the same class. */
export function compareDetections(
  expected: ImageDetections[],
  got: ImageDetections[],
  size: { batch: number; height: number; width: number },
  boxTolerance: number,
  scoreTolerance: number,
): DetectorCheckCase {
  let matched = 0;
  let boundary = 0;
  let maxBoxDiff = 0;
  let maxScoreDiff = 0;
  let tfjs = 0;
  let onnx = 0;
  got.forEach((g, n) => {
    const e = expected[n]!;
    tfjs += e.scores.length;
    onnx += g.scores.length;
    const used = new Uint8Array(e.scores.length);
    for (let i = 0; i < g.scores.length; i++) {
      let best = -1;
      let bestDiff = Infinity;
      for (let j = 0; j < e.scores.length; j++) {
        if (used[j] || e.classes[j] !== g.classes[i]) continue;
        // Relative to each coordinate, with a floor of one pixel for coordinates near 0.
        let d = 0;
        for (let k = 0; k < 4; k++) {
          const a = e.boxes[4 * j + k]!;
          const b = g.boxes[4 * i + k]!;
          d = Math.max(d, Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1));
        }
        const ds = Math.abs(e.scores[j]! - g.scores[i]!);
        if (d <= boxTolerance && ds <= scoreTolerance && d < bestDiff) {
          best = j;
          bestDiff = d;
        }
      }
      if (best < 0) {
        const lowest = e.scores.length ? e.scores[e.scores.length - 1]! : Infinity;
        if (e.scores.length === g.scores.length && g.scores[i]! <= lowest + scoreTolerance) boundary++;
        continue;
      }
      used[best] = 1;
      matched++;
      maxBoxDiff = Math.max(maxBoxDiff, bestDiff);
      maxScoreDiff = Math.max(maxScoreDiff, Math.abs(e.scores[best]! - g.scores[i]!));
    }
  });
  return { ...size, tfjs, onnx, matched, boundary, maxBoxDiff, maxScoreDiff };
}

/** One line per case, for error messages and the CLI. */
export function describeDetectorCheck(r: DetectorCheckReport): string {
  return r.cases
    .map((c) => `${c.batch}x${c.height}x${c.width}: ${c.matched}/${c.onnx} ONNX detections matched${c.boundary ? ` (${c.boundary} at the cut)` : ''} (tfjs ${c.tfjs}), box diff ${c.maxBoxDiff.toExponential(1)}, score diff ${c.maxScoreDiff.toExponential(1)}`)
    .join('; ');
}
