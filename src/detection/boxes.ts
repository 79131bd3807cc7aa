/**
 * Box geometry for detection on plain typed arrays: IoU, the center/size box coding, clipping and
 * greedy non-maximum suppression.
 *
 * Boxes are Float32Array, row-major [n, 4], as x1, y1, x2, y2 in continuous pixel coordinates:
 * width = x2 - x1, with no "+1". A box with x2 <= x1 or y2 <= y1 is empty: its IoU with anything
 * (itself included) is 0, so NMS never suppresses with it or suppresses it, as onnxruntime's
 * NonMaxSuppression does for zero-area boxes.
 */
import { UserError } from '../errors.js';

/** Weights of the box coding: dx = wx (gx - ax) / aw, dy likewise, dw = ww log(gw / aw), dh likewise. */
export type BoxWeights = [wx: number, wy: number, ww: number, wh: number];

/** The RPN's coding of anchors: unit weights. */
export const RPN_BOX_WEIGHTS: BoxWeights = [1, 1, 1, 1];

/** The box head's coding of proposals: GluonCV's stds (0.1, 0.1, 0.2, 0.2) as torchvision-style weights. */
export const RCNN_BOX_WEIGHTS: BoxWeights = [10, 10, 5, 5];

/** Largest dw, dh before exp in decoding (torchvision's bbox_xform_clip): a box grows at most 62.5x. */
export const BBOX_CLIP = Math.log(1000 / 16);

/** The number of boxes in a [n, 4] array; throws when its length is not a multiple of 4. */
export function boxCount(boxes: Float32Array, what = 'boxes'): number {
  if (boxes.length % 4 !== 0) throw new UserError(`${what}: length ${boxes.length} is not a multiple of 4 (x1, y1, x2, y2 per box)`);
  return boxes.length / 4;
}

function boxArea(b: Float32Array, i: number): number {
  const w = b[i + 2]! - b[i]!;
  const h = b[i + 3]! - b[i + 1]!;
  return w > 0 && h > 0 ? w * h : 0;
}

/** Areas of all boxes, 0 for empty ones. */
function areas(b: Float32Array, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = boxArea(b, 4 * i);
  return out;
}

/** IoU of every box of `a` with every box of `b`: [na, nb] row-major, 0 where either box is empty. */
export function iouMatrix(a: Float32Array, b: Float32Array): Float32Array {
  const na = boxCount(a, 'iouMatrix a');
  const nb = boxCount(b, 'iouMatrix b');
  const out = new Float32Array(na * nb);
  if (na === 0 || nb === 0) return out;
  const areaA = areas(a, na);
  // b outermost: b is the short side in the common case (anchors or proposals x ground truth), so
  // one box of b stays in registers while a streams past.
  for (let j = 0; j < nb; j++) {
    const bx1 = b[4 * j]!;
    const by1 = b[4 * j + 1]!;
    const bx2 = b[4 * j + 2]!;
    const by2 = b[4 * j + 3]!;
    const areaB = boxArea(b, 4 * j);
    if (areaB === 0) continue;
    for (let i = 0, o = j; i < na; i++, o += nb) {
      const ax2 = a[4 * i + 2]!;
      const ax1 = a[4 * i]!;
      const iw = (ax2 < bx2 ? ax2 : bx2) - (ax1 > bx1 ? ax1 : bx1);
      if (iw <= 0) continue;
      const ay2 = a[4 * i + 3]!;
      const ay1 = a[4 * i + 1]!;
      const ih = (ay2 < by2 ? ay2 : by2) - (ay1 > by1 ? ay1 : by1);
      if (ih <= 0) continue;
      const area = areaA[i]!;
      if (area === 0) continue;
      const inter = iw * ih;
      out[o] = inter / (area + areaB - inter);
    }
  }
  return out;
}

function checkWeights(weights: BoxWeights): void {
  if (weights.length !== 4 || !weights.every((w) => Number.isFinite(w) && w > 0)) {
    throw new UserError(`box weights must be 4 positive numbers, got [${weights.join(', ')}]`);
  }
}

/**
 * The deltas that take each reference box to its target box: [n, 4] (dx, dy, dw, dh). Reference boxes
 * must have a positive width and height (anchors and proposals do).
 */
export function encodeBoxes(reference: Float32Array, target: Float32Array, weights: BoxWeights): Float32Array {
  const n = boxCount(reference, 'encodeBoxes reference');
  const nt = boxCount(target, 'encodeBoxes target');
  if (nt !== n) throw new UserError(`encodeBoxes: ${n} reference boxes but ${nt} target boxes`);
  checkWeights(weights);
  const [wx, wy, ww, wh] = weights;
  const out = new Float32Array(4 * n);
  for (let i = 0; i < 4 * n; i += 4) {
    const aw = reference[i + 2]! - reference[i]!;
    const ah = reference[i + 3]! - reference[i + 1]!;
    const ax = reference[i]! + 0.5 * aw;
    const ay = reference[i + 1]! + 0.5 * ah;
    const gw = target[i + 2]! - target[i]!;
    const gh = target[i + 3]! - target[i + 1]!;
    const gx = target[i]! + 0.5 * gw;
    const gy = target[i + 1]! + 0.5 * gh;
    out[i] = (wx * (gx - ax)) / aw;
    out[i + 1] = (wy * (gy - ay)) / ah;
    out[i + 2] = ww * Math.log(gw / aw);
    out[i + 3] = wh * Math.log(gh / ah);
  }
  return out;
}

/**
 * Applies deltas to reference boxes (the inverse of encodeBoxes), with dw and dh clamped at BBOX_CLIP
 * before exp. `out` may be `reference` or `deltas` itself (decoding in place).
 */
export function decodeBoxes(reference: Float32Array, deltas: Float32Array, weights: BoxWeights, out?: Float32Array): Float32Array {
  const n = boxCount(reference, 'decodeBoxes reference');
  const nd = boxCount(deltas, 'decodeBoxes deltas');
  if (nd !== n) throw new UserError(`decodeBoxes: ${n} reference boxes but ${nd} deltas`);
  checkWeights(weights);
  const result = out ?? new Float32Array(4 * n);
  if (result.length !== 4 * n) throw new UserError(`decodeBoxes: the output has length ${result.length}, expected ${4 * n}`);
  const [wx, wy, ww, wh] = weights;
  for (let i = 0; i < 4 * n; i += 4) {
    const aw = reference[i + 2]! - reference[i]!;
    const ah = reference[i + 3]! - reference[i + 1]!;
    const ax = reference[i]! + 0.5 * aw;
    const ay = reference[i + 1]! + 0.5 * ah;
    const dx = deltas[i]! / wx;
    const dy = deltas[i + 1]! / wy;
    const dw = Math.min(deltas[i + 2]! / ww, BBOX_CLIP);
    const dh = Math.min(deltas[i + 3]! / wh, BBOX_CLIP);
    const cx = ax + dx * aw;
    const cy = ay + dy * ah;
    const w = Math.exp(dw) * aw;
    const h = Math.exp(dh) * ah;
    result[i] = cx - 0.5 * w;
    result[i + 1] = cy - 0.5 * h;
    result[i + 2] = cx + 0.5 * w;
    result[i + 3] = cy + 0.5 * h;
  }
  return result;
}

/** Clamps x to [0, width] and y to [0, height], in place; returns `boxes`. */
export function clipBoxes(boxes: Float32Array, height: number, width: number): Float32Array {
  boxCount(boxes, 'clipBoxes boxes');
  if (!(height >= 0 && width >= 0)) throw new UserError(`clipBoxes: image size must be non-negative, got ${height}x${width}`);
  for (let i = 0; i < boxes.length; i += 4) {
    boxes[i] = Math.min(Math.max(boxes[i]!, 0), width);
    boxes[i + 1] = Math.min(Math.max(boxes[i + 1]!, 0), height);
    boxes[i + 2] = Math.min(Math.max(boxes[i + 2]!, 0), width);
    boxes[i + 3] = Math.min(Math.max(boxes[i + 3]!, 0), height);
  }
  return boxes;
}

function checkNmsArgs(what: string, boxes: Float32Array, scores: Float32Array, iouThreshold: number, maxOutput: number | undefined): number {
  const n = boxCount(boxes, `${what} boxes`);
  if (scores.length !== n) throw new UserError(`${what}: ${n} boxes but ${scores.length} scores`);
  // onnxruntime's NonMaxSuppression refuses thresholds outside [0, 1]; so does this one.
  if (!(iouThreshold >= 0 && iouThreshold <= 1)) throw new UserError(`${what}: the IoU threshold must be in [0, 1], got ${iouThreshold}`);
  if (maxOutput !== undefined && !(Number.isInteger(maxOutput) && maxOutput >= 0)) {
    throw new UserError(`${what}: maxOutput must be a non-negative integer, got ${maxOutput}`);
  }
  return n;
}

const INDEX_BITS = 2 ** 21;

/**
 * Indices in descending score order, ties by lower index first; NaN scores sort last. Each float32
 * score maps to a 32-bit key that orders as the scores do, and key * 2^21 + index (exact in a double)
 * sorts natively, several times faster than a comparator; beyond 2^21 boxes a comparator sort is used.
 */
function scoreOrder(scores: Float32Array): Int32Array {
  const n = scores.length;
  const order = new Int32Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  if (n > INDEX_BITS) {
    const key = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const s = scores[i]!;
      key[i] = s === s ? s : -Infinity;
      order[i] = i;
    }
    return order.sort((i, j) => key[j]! - key[i]! || i - j);
  }
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = scores[i]!;
    f[0] = s !== s ? -Infinity : s === 0 ? 0 : s; // NaN last; -0 ties with 0
    const bits = u[0]!;
    // Ascending order of the scores as unsigned integers, then flipped for descending.
    const asc = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
    keys[i] = (0xffffffff - asc) * INDEX_BITS + i;
  }
  keys.sort();
  for (let i = 0; i < n; i++) order[i] = keys[i]! % INDEX_BITS;
  return order;
}

/**
 * Greedy NMS over boxes visited in `order`, a box kept unless its IoU with a kept box of the same group
 * is above the threshold. `groups` undefined: one group.
 */
function greedyNms(boxes: Float32Array, order: Int32Array, groups: Int32Array | undefined, iouThreshold: number, limit: number): Int32Array {
  const kept = new Int32Array(Math.min(limit, order.length));
  if (kept.length === 0) return kept;
  // Kept boxes' corners and areas side by side, and per kept box the previous kept box of its group,
  // so that a candidate is compared with its own group only.
  const kx1 = new Float64Array(kept.length);
  const ky1 = new Float64Array(kept.length);
  const kx2 = new Float64Array(kept.length);
  const ky2 = new Float64Array(kept.length);
  const karea = new Float64Array(kept.length);
  const prevInGroup = new Int32Array(kept.length);
  const lastOfGroup = new Map<number, number>();
  let count = 0;
  for (let o = 0; o < order.length && count < kept.length; o++) {
    const i = order[o]!;
    const x1 = boxes[4 * i]!;
    const y1 = boxes[4 * i + 1]!;
    const x2 = boxes[4 * i + 2]!;
    const y2 = boxes[4 * i + 3]!;
    const area = x2 > x1 && y2 > y1 ? (x2 - x1) * (y2 - y1) : 0;
    let keep = true;
    const first = groups === undefined ? count - 1 : lastOfGroup.get(groups[i]!) ?? -1;
    if (area > 0) {
      for (let k = first; k >= 0; k = groups === undefined ? k - 1 : prevInGroup[k]!) {
        if (karea[k] === 0) continue;
        const iw = Math.min(x2, kx2[k]!) - Math.max(x1, kx1[k]!);
        if (iw <= 0) continue;
        const ih = Math.min(y2, ky2[k]!) - Math.max(y1, ky1[k]!);
        if (ih <= 0) continue;
        const inter = iw * ih;
        if (inter / (area + karea[k]! - inter) > iouThreshold) {
          keep = false;
          break;
        }
      }
    }
    if (!keep) continue;
    kept[count] = i;
    kx1[count] = x1;
    ky1[count] = y1;
    kx2[count] = x2;
    ky2[count] = y2;
    karea[count] = area;
    if (groups !== undefined) {
      prevInGroup[count] = first;
      lastOfGroup.set(groups[i]!, count);
    }
    count++;
  }
  return kept.slice(0, count);
}

/**
 * Greedy non-maximum suppression as ONNX NonMaxSuppression (onnxruntime) computes it: boxes visited in
 * descending score order (ties: lower index first), a box dropped when its IoU with a kept box is greater
 * than `iouThreshold`. Returns the kept indices in that order, at most `maxOutput` of them.
 */
export function nms(boxes: Float32Array, scores: Float32Array, iouThreshold: number, maxOutput?: number): Int32Array {
  const n = checkNmsArgs('nms', boxes, scores, iouThreshold, maxOutput);
  return greedyNms(boxes, scoreOrder(scores), undefined, iouThreshold, maxOutput ?? n);
}

/**
 * NMS within each group (e.g. class) independently: boxes of different groups never suppress each other.
 * The kept indices of all groups in descending score order (ties: lower index first), at most `maxOutput`.
 */
export function batchedNms(boxes: Float32Array, scores: Float32Array, groups: Int32Array, iouThreshold: number, maxOutput?: number): Int32Array {
  const n = checkNmsArgs('batchedNms', boxes, scores, iouThreshold, maxOutput);
  if (groups.length !== n) throw new UserError(`batchedNms: ${n} boxes but ${groups.length} group ids`);
  return greedyNms(boxes, scoreOrder(scores), groups, iouThreshold, maxOutput ?? n);
}
