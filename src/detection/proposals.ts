/**
 * The two selection steps of Faster R-CNN that are not a network: proposals from the RPN's outputs,
 * and detections from the box head's. Each is written twice, side by side, because tfjs and ONNX
 * must differ here: in JavaScript on the values (training and the tfjs model), and as ONNX nodes
 * (TopK, NonMaxSuppression, GatherND, ...) for the exported graph, which must work for any input size
 * and batch. The tests run both on the same inputs and compare (test/det_export.test.ts).
 *
 * What both follow, step by step:
 *   proposals, per image: the top `preNms` anchors by objectness logit (k clamped to the number of
 *   anchors; ties: lower index first), decoded with the RPN's box coding, clipped to the image, those
 *   narrower or lower than `minSize` dropped, NMS at `nmsThreshold` keeping at most `postNms`, in
 *   descending score order; images one after the other.
 *   detections: softmax over the classes; per class and image, the class's box decoded from the region,
 *   clipped, kept when its score is above `scoreThreshold`, NMS at `nmsThreshold`; then per image the
 *   `maxDetections` highest scores (ties: class order, then NMS order), padded with zeros.
 *
 * NonMaxSuppression in ONNX Runtime keeps a box when its score is strictly above the threshold and
 * drops one whose IoU with a kept box is above the IoU threshold, as boxes.ts's nms does.
 */
import { BBOX_CLIP, RPN_BOX_WEIGHTS, clipBoxes, decodeBoxes, nms, type BoxWeights } from './boxes.js';
import type { AnchorGenerator } from './anchors.js';
import type { DetectionOptions, ProposalOptions } from './faster_rcnn.js';
import type { OnnxBuilder } from '../onnx/export.js';
import { DataType } from '../onnx/proto.js';

export interface ImageSize {
  height: number;
  width: number;
}

/** Detections of one image, sorted by descending score. */
export interface ImageDetections {
  /** [D, 4] x1, y1, x2, y2 in input pixels. */
  boxes: Float32Array;
  scores: Float32Array;
  /** 0-based indices into the data's classes (no background). */
  classes: Int32Array;
}

/** Indices of the k largest values, descending (ties: lower index first), as ONNX TopK. */
export function topK(values: Float32Array, k: number): Int32Array {
  const idx = new Int32Array(values.length);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  idx.sort((a, b) => values[b]! - values[a]! || a - b);
  return idx.slice(0, Math.min(k, values.length));
}

/**
 * Proposals of one image: `logits` [A] and `deltas` [A, 4] over `anchors` [A, 4] (the order of
 * AnchorGenerator.grid) -> boxes [P, 4] with their logits, P <= postNms.
 */
export function selectProposals(
  logits: Float32Array,
  deltas: Float32Array,
  anchors: Float32Array,
  image: ImageSize,
  o: ProposalOptions,
): { boxes: Float32Array; scores: Float32Array } {
  const n = logits.length;
  if (deltas.length !== 4 * n || anchors.length !== 4 * n) throw new Error(`proposals: ${n} logits, ${deltas.length / 4} deltas, ${anchors.length / 4} anchors`);
  const top = topK(logits, o.preNms);
  const k = top.length;
  const ref = new Float32Array(4 * k);
  const d = new Float32Array(4 * k);
  for (let i = 0; i < k; i++) {
    const j = top[i]!;
    ref.set(anchors.subarray(4 * j, 4 * j + 4), 4 * i);
    d.set(deltas.subarray(4 * j, 4 * j + 4), 4 * i);
  }
  const boxes = clipBoxes(decodeBoxes(ref, d, RPN_BOX_WEIGHTS), image.height, image.width);
  const keep: number[] = [];
  for (let i = 0; i < k; i++) {
    if (boxes[4 * i + 2]! - boxes[4 * i]! >= o.minSize && boxes[4 * i + 3]! - boxes[4 * i + 1]! >= o.minSize) keep.push(i);
  }
  const kb = new Float32Array(4 * keep.length);
  const ks = new Float32Array(keep.length);
  keep.forEach((i, m) => {
    kb.set(boxes.subarray(4 * i, 4 * i + 4), 4 * m);
    ks[m] = logits[top[i]!]!;
  });
  const sel = nms(kb, ks, o.nmsThreshold, o.postNms);
  const out = new Float32Array(4 * sel.length);
  const scores = new Float32Array(sel.length);
  sel.forEach((i, m) => {
    out.set(kb.subarray(4 * i, 4 * i + 4), 4 * m);
    scores[m] = ks[i]!;
  });
  return { boxes: out, scores };
}

/**
 * Detections of a batch from the box head: `classLogits` [R, C+1], `deltas` [R, 4C], the regions
 * `rois` [R, 4] and their images `batchIndices` [R].
 */
export function selectDetections(
  classLogits: Float32Array,
  deltas: Float32Array,
  rois: Float32Array,
  batchIndices: Int32Array,
  numImages: number,
  image: ImageSize,
  numClasses: number,
  weights: BoxWeights,
  o: DetectionOptions,
): ImageDetections[] {
  const R = batchIndices.length;
  const C = numClasses;
  if (classLogits.length !== R * (C + 1) || deltas.length !== R * 4 * C || rois.length !== 4 * R) {
    throw new Error(`detections: ${R} regions with ${classLogits.length} class logits, ${deltas.length} deltas, ${rois.length / 4} boxes for ${C} classes`);
  }
  const probs = new Float32Array(R * (C + 1));
  for (let r = 0; r < R; r++) {
    let max = -Infinity;
    for (let c = 0; c <= C; c++) max = Math.max(max, classLogits[r * (C + 1) + c]!);
    let sum = 0;
    for (let c = 0; c <= C; c++) sum += Math.exp(classLogits[r * (C + 1) + c]! - max);
    for (let c = 0; c <= C; c++) probs[r * (C + 1) + c] = Math.exp(classLogits[r * (C + 1) + c]! - max) / sum;
  }
  // Class-specific boxes [C, R, 4], each decoded from its region.
  const classBoxes: Float32Array[] = [];
  for (let c = 0; c < C; c++) {
    const d = new Float32Array(4 * R);
    for (let r = 0; r < R; r++) d.set(deltas.subarray(r * 4 * C + 4 * c, r * 4 * C + 4 * c + 4), 4 * r);
    classBoxes.push(clipBoxes(decodeBoxes(rois, d, weights), image.height, image.width));
  }
  const picked: { image: number; cls: number; roi: number; score: number }[][] = Array.from({ length: numImages }, () => []);
  for (let c = 0; c < C; c++) {
    for (let n = 0; n < numImages; n++) {
      const cand: number[] = [];
      for (let r = 0; r < R; r++) if (batchIndices[r] === n && probs[r * (C + 1) + c + 1]! > o.scoreThreshold) cand.push(r);
      const b = new Float32Array(4 * cand.length);
      const s = new Float32Array(cand.length);
      cand.forEach((r, m) => {
        b.set(classBoxes[c]!.subarray(4 * r, 4 * r + 4), 4 * m);
        s[m] = probs[r * (C + 1) + c + 1]!;
      });
      for (const m of nms(b, s, o.nmsThreshold)) picked[n]!.push({ image: n, cls: c, roi: cand[m]!, score: s[m]! });
    }
  }
  return picked.map((list) => {
    const top = list
      .map((p, order) => ({ ...p, order }))
      .sort((a, b) => b.score - a.score || a.order - b.order)
      .slice(0, o.maxDetections);
    const boxes = new Float32Array(4 * top.length);
    top.forEach((p, m) => boxes.set(classBoxes[p.cls]!.subarray(4 * p.roi, 4 * p.roi + 4), 4 * m));
    return { boxes, scores: Float32Array.from(top.map((p) => p.score)), classes: Int32Array.from(top.map((p) => p.cls)) };
  });
}

// ---------------------------------------------------------------------------------------------------
// The same steps as ONNX nodes.

/** Below every real score: masks out candidates for NonMaxSuppression (with MASK_THRESHOLD). */
const MASKED = -3.4e38;
const MASK_THRESHOLD = -3e38;

/** Small helpers over OnnxBuilder for the post-processing graph. */
class Ops {
  constructor(readonly b: OnnxBuilder) {}
  op(type: string, inputs: string[], attrs: Record<string, number | number[] | string | { float: number }> = {}): string {
    return this.b.op(type, inputs, `det_${type.toLowerCase()}`, attrs)[0]!;
  }
  i64(values: number[], dims: number[] = [values.length]): string {
    return this.b.constInt64('det_const', dims, values);
  }
  f32(values: number[], dims: number[] = [values.length]): string {
    return this.b.constFloat('det_const', dims, values);
  }
  /** The last axis sliced to [from, to). */
  last(x: string, from: number, to: number): string {
    return this.op('Slice', [x, this.i64([from]), this.i64([to]), this.i64([-1])]);
  }
  /** Axis `axis` of `shape` (an int64 [rank] tensor) as an int64 [1] tensor. */
  dim(shape: string, axis: number): string {
    return this.op('Gather', [shape, this.i64([axis])], { axis: 0 });
  }
  /** A [1] int64 value as a float32 scalar. */
  scalarFloat(v: string): string {
    return this.op('Cast', [this.op('Squeeze', [v, this.i64([0])])], { to: DataType.FLOAT });
  }
}

/** Box decoding (as boxes.ts's decodeBoxes) of `deltas` [..., 4] against `ref` [..., 4] (broadcast). */
function emitDecode(o: Ops, ref: string, deltas: string, w: BoxWeights): string {
  const [x1, y1, x2, y2] = [0, 1, 2, 3].map((i) => o.last(ref, i, i + 1)) as [string, string, string, string];
  const half = o.f32([0.5], []);
  const width = o.op('Sub', [x2, x1]);
  const height = o.op('Sub', [y2, y1]);
  const cx = o.op('Add', [x1, o.op('Mul', [width, half])]);
  const cy = o.op('Add', [y1, o.op('Mul', [height, half])]);
  const d = [0, 1, 2, 3].map((i) => o.op('Div', [o.last(deltas, i, i + 1), o.f32([w[i]!], [])])) as [string, string, string, string];
  const clip = o.f32([BBOX_CLIP], []);
  const dw = o.op('Min', [d[2], clip]);
  const dh = o.op('Min', [d[3], clip]);
  const pcx = o.op('Add', [o.op('Mul', [d[0], width]), cx]);
  const pcy = o.op('Add', [o.op('Mul', [d[1], height]), cy]);
  const pw = o.op('Mul', [o.op('Mul', [o.op('Exp', [dw]), width]), half]);
  const ph = o.op('Mul', [o.op('Mul', [o.op('Exp', [dh]), height]), half]);
  return o.op('Concat', [o.op('Sub', [pcx, pw]), o.op('Sub', [pcy, ph]), o.op('Add', [pcx, pw]), o.op('Add', [pcy, ph])], { axis: -1 });
}

/** Clips boxes [..., 4] to [0, width] x [0, height] (float32 scalars). */
function emitClip(o: Ops, boxes: string, height: string, width: string): string {
  const zero = o.f32([0], []);
  const lim = (x: string, hi: string) => o.op('Max', [o.op('Min', [x, hi]), zero]);
  return o.op('Concat', [lim(o.last(boxes, 0, 1), width), lim(o.last(boxes, 1, 2), height), lim(o.last(boxes, 2, 3), width), lim(o.last(boxes, 3, 4), height)], { axis: -1 });
}

export interface OnnxImageInfo {
  /** The input's shape (int64 [4], NCHW). */
  shape: string;
  /** Height and width as float32 scalars. */
  height: string;
  width: string;
  /** Batch size as int64 [1]. */
  batch: string;
}

/** The input's sizes, computed once for both selection steps. */
export function emitImageInfo(b: OnnxBuilder, input: string): OnnxImageInfo {
  const o = new Ops(b);
  const shape = o.op('Shape', [input]);
  return { shape, batch: o.dim(shape, 0), height: o.scalarFloat(o.dim(shape, 2)), width: o.scalarFloat(o.dim(shape, 3)) };
}

/**
 * Proposals as ONNX nodes: RPN outputs `logits` [N, A, h, w] and `deltas` [N, 4A, h, w] (NCHW) over the
 * anchors of the feature map `features` -> rois [S, 4] and batch indices [S] (int64), images in order.
 */
export function emitProposals(
  b: OnnxBuilder,
  logits: string,
  deltas: string,
  features: string,
  image: OnnxImageInfo,
  anchors: AnchorGenerator,
  p: ProposalOptions,
): { rois: string; batchIndices: string } {
  const o = new Ops(b);
  const A = anchors.numAnchors;
  // Anchors for the actual feature size, in (y, x, a) order as AnchorGenerator.grid.
  const fshape = o.op('Shape', [features]);
  const stride = o.f32([anchors.options.stride], []);
  const range = (dim: string) => o.op('Mul', [o.op('Range', [o.f32([0], []), o.scalarFloat(dim), o.f32([1], [])]), stride]);
  const sx = o.op('Reshape', [range(o.dim(fshape, 3)), o.i64([1, -1, 1, 1])]);
  const sy = o.op('Reshape', [range(o.dim(fshape, 2)), o.i64([-1, 1, 1, 1])]);
  const zero = o.op('Mul', [sy, o.f32([0], [])]);
  const gx = o.op('Add', [sx, zero]);
  const gy = o.op('Add', [o.op('Mul', [sx, o.f32([0], [])]), sy]);
  const shifts = o.op('Concat', [gx, gy, gx, gy], { axis: 3 });
  const base = o.f32([...anchors.baseAnchors()], [1, 1, A, 4]);
  const grid = o.op('Reshape', [o.op('Add', [shifts, base]), o.i64([-1, 4])]);

  const scores = o.op('Reshape', [o.op('Transpose', [logits], { perm: [0, 2, 3, 1] }), o.i64([0, -1])]);
  const boxDeltas = o.op('Reshape', [o.op('Transpose', [deltas], { perm: [0, 2, 3, 1] }), o.i64([0, -1, 4])]);
  const k = o.op('Min', [o.dim(o.op('Shape', [scores]), 1), o.i64([p.preNms])]);
  const [topScores, topIdx] = b.op('TopK', [scores, k], 'rpn_topk', { axis: 1, largest: 1, sorted: 1 }, 2) as [string, string];
  const ref = o.op('Gather', [grid, topIdx], { axis: 0 });
  const d = o.op('GatherND', [boxDeltas, o.op('Unsqueeze', [topIdx, o.i64([2])])], { batch_dims: 1 });
  const boxes = emitClip(o, emitDecode(o, ref, d, RPN_BOX_WEIGHTS), image.height, image.width);
  const minSize = o.f32([p.minSize], []);
  const bw = o.op('Sub', [o.last(boxes, 2, 3), o.last(boxes, 0, 1)]);
  const bh = o.op('Sub', [o.last(boxes, 3, 4), o.last(boxes, 1, 2)]);
  const big = o.op('Squeeze', [o.op('And', [o.op('GreaterOrEqual', [bw, minSize]), o.op('GreaterOrEqual', [bh, minSize])]), o.i64([2])]);
  const masked = o.op('Where', [big, topScores, o.f32([MASKED], [])]);
  const selected = o.op('NonMaxSuppression', [boxes, o.op('Unsqueeze', [masked, o.i64([1])]), o.i64([p.postNms]), o.f32([p.nmsThreshold]), o.f32([MASK_THRESHOLD])]);
  const batchBox = o.op('Gather', [selected, o.i64([0, 2])], { axis: 1 });
  return { rois: o.op('GatherND', [boxes, batchBox]), batchIndices: o.op('Squeeze', [o.op('Gather', [selected, o.i64([0])], { axis: 1 }), o.i64([1])]) };
}

/** The exported detector's outputs (TensorRT EfficientNMS / TF Object Detection API layout). */
export const DETECTION_OUTPUTS = ['num_detections', 'detection_boxes', 'detection_scores', 'detection_classes'] as const;

/**
 * Detections as ONNX nodes, writing the four outputs of DETECTION_OUTPUTS: `classLogits` [S, C+1],
 * `deltas` [S, 4C], `rois` [S, 4], `batchIndices` [S] (int64).
 */
export function emitDetections(
  b: OnnxBuilder,
  classLogits: string,
  deltas: string,
  rois: string,
  batchIndices: string,
  image: OnnxImageInfo,
  numClasses: number,
  weights: BoxWeights,
  d: DetectionOptions,
): void {
  const o = new Ops(b);
  const C = numClasses;
  const probs = o.op('Softmax', [classLogits], { axis: 1 });
  const fg = o.op('Slice', [probs, o.i64([1]), o.i64([C + 1]), o.i64([1])]); // [S, C]
  const classDeltas = o.op('Reshape', [deltas, o.i64([-1, C, 4])]); // [S, C, 4]
  const boxes = emitClip(o, emitDecode(o, o.op('Unsqueeze', [rois, o.i64([1])]), classDeltas, weights), image.height, image.width);
  const boxesCS = o.op('Transpose', [boxes], { perm: [1, 0, 2] }); // [C, S, 4]: NMS "batch" = class
  const scoresCS = o.op('Transpose', [fg], { perm: [1, 0] }); // [C, S]
  // NMS "classes" = images: a region's score counts only in its own image's row.
  const images = o.op('Range', [o.i64([0], []), o.op('Squeeze', [image.batch, o.i64([0])]), o.i64([1], [])]); // [N]
  const inImage = o.op('Equal', [o.op('Unsqueeze', [images, o.i64([1])]), o.op('Unsqueeze', [batchIndices, o.i64([0])])]); // [N, S]
  const scoresCNS = o.op('Where', [o.op('Unsqueeze', [inImage, o.i64([0])]), o.op('Unsqueeze', [scoresCS, o.i64([1])]), o.f32([MASKED], [])]);
  const selected = o.op('NonMaxSuppression', [boxesCS, scoresCNS, o.i64([2 ** 31 - 1]), o.f32([d.nmsThreshold]), o.f32([d.scoreThreshold])]); // [K, 3]: class, image, region
  const classRegion = o.op('Gather', [selected, o.i64([0, 2])], { axis: 1 });
  const selScores = o.op('GatherND', [scoresCS, classRegion]); // [K]
  const selBoxes = o.op('GatherND', [boxesCS, classRegion]); // [K, 4]
  const selClasses = o.op('Squeeze', [o.op('Gather', [selected, o.i64([0])], { axis: 1 }), o.i64([1])]);
  const selImages = o.op('Squeeze', [o.op('Gather', [selected, o.i64([1])], { axis: 1 }), o.i64([1])]);
  // Per image, the top D of its detections: a dense [N, K] score matrix, -1 outside the image.
  const mine = o.op('Equal', [o.op('Unsqueeze', [images, o.i64([1])]), o.op('Unsqueeze', [selImages, o.i64([0])])]);
  const dense = o.op('Where', [mine, o.op('Unsqueeze', [selScores, o.i64([0])]), o.f32([-1], [])]);
  const k = o.op('Min', [o.dim(o.op('Shape', [selScores]), 0), o.i64([d.maxDetections])]);
  const [topScores, topIdx] = b.op('TopK', [dense, k], 'det_topk', { axis: 1, largest: 1, sorted: 1 }, 2) as [string, string];
  const valid = o.op('Greater', [topScores, o.f32([-0.5], [])]); // [N, k]
  const validI = o.op('Cast', [valid], { to: DataType.INT64 });
  const pad = o.op('Sub', [o.i64([d.maxDetections]), k]); // [1]
  const zeros = o.i64([0, 0]);
  const pad2 = o.op('Concat', [zeros, o.i64([0]), pad], { axis: 0 }); // [0, 0, 0, D-k] for [N, k]
  const pad3 = o.op('Concat', [zeros, o.i64([0]), o.i64([0]), pad, o.i64([0])], { axis: 0 }); // [N, k, 4]
  const zeroF = o.f32([0], []);
  const scoresOut = o.op('Pad', [o.op('Where', [valid, topScores, zeroF]), pad2]);
  const boxesOut = o.op('Pad', [o.op('Where', [o.op('Unsqueeze', [valid, o.i64([2])]), o.op('Gather', [selBoxes, topIdx], { axis: 0 }), zeroF]), pad3]);
  const classesOut = o.op('Pad', [o.op('Mul', [o.op('Gather', [selClasses, topIdx], { axis: 0 }), validI]), pad2]);
  const count = o.op('ReduceSum', [validI, o.i64([1])], { keepdims: 0 });
  const named: [string, string][] = [
    [count, 'num_detections'],
    [boxesOut, 'detection_boxes'],
    [scoresOut, 'detection_scores'],
    [classesOut, 'detection_classes'],
  ];
  for (const [value, name] of named) b.op('Identity', [value], name, {}, [name]);
}
