/**
 * Training targets for Faster R-CNN: which anchors the RPN learns as object / background and which
 * proposals the box head is trained on, with their box regression targets.
 *
 * The rules follow GluonCV's RPNTargetGenerator / RPNTargetSampler and RCNNTargetSampler, with the one
 * difference that a ground-truth box's best anchor stays positive even when its IoU is under the negative
 * threshold (py-faster-rcnn without clobbering, torchvision's Matcher with allow_low_quality_matches);
 * GluonCV lets the negative rule overwrite it. An anchor ending exactly on the far image border is
 * inside (continuous coordinates; GluonCV's x2 < width test comes from the "+1" pixel convention).
 * Sampling draws from the caller's Rng, so a seed fixes it.
 */
import { UserError } from '../errors.js';
import type { Rng } from '../util/random.js';
import { boxCount, encodeBoxes, iouMatrix, RCNN_BOX_WEIGHTS, RPN_BOX_WEIGHTS, type BoxWeights } from './boxes.js';

/** RPN target assignment and sampling (GluonCV and torchvision defaults). */
export interface RpnTargetOptions {
  /** Anchors sampled per image (positives plus negatives). */
  batchSize: number;
  /** At most this fraction of the sample is positive; negatives fill the rest. */
  positiveFraction: number;
  /** An anchor whose best IoU with a ground-truth box is at least this is positive. */
  positiveIou: number;
  /** An anchor whose best IoU is below this is negative; in between it is ignored. */
  negativeIou: number;
  /** How far (pixels) an anchor may reach past the image border and still be used; Infinity keeps all. */
  allowedBorder: number;
}

/** 256 anchors, at most half positive, IoU 0.7 / 0.3, no anchor past the border. */
export const DEFAULT_RPN_TARGETS: RpnTargetOptions = { batchSize: 256, positiveFraction: 0.5, positiveIou: 0.7, negativeIou: 0.3, allowedBorder: 0 };

/** RoI sampling for the box head (GluonCV's faster_rcnn_resnet50_v1b_voc). */
export interface RoiSampleOptions {
  /** RoIs sampled per image. */
  batchSize: number;
  /** At most this fraction of the sample is foreground; background fills the rest. */
  positiveFraction: number;
  /** A proposal whose best IoU with a ground-truth box is at least this is foreground. */
  positiveIou: number;
  /** A proposal whose best IoU is in [negativeIouLow, negativeIouHigh) is background. */
  negativeIouHigh: number;
  negativeIouLow: number;
}

/** 128 RoIs, at most a quarter foreground at IoU >= 0.5, background below 0.5. */
export const DEFAULT_ROI_SAMPLES: RoiSampleOptions = { batchSize: 128, positiveFraction: 0.25, positiveIou: 0.5, negativeIouHigh: 0.5, negativeIouLow: 0 };

/** float32 spacing at 1 (GluonCV's tolerance for "equals the best IoU of a ground-truth box"). */
const TIE_EPS = 2 ** -23;

/** numpy's round (halves to even), as GluonCV computes the number of positives. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

function checkSampling(what: string, o: { batchSize: number; positiveFraction: number }): void {
  if (!(Number.isInteger(o.batchSize) && o.batchSize > 0)) throw new UserError(`${what}: batchSize must be a positive integer, got ${o.batchSize}`);
  if (!(o.positiveFraction >= 0 && o.positiveFraction <= 1)) {
    throw new UserError(`${what}: positiveFraction must be in [0, 1], got ${o.positiveFraction}`);
  }
}

function checkIou(what: string, name: string, x: number): void {
  if (!(x >= 0 && x <= 1)) throw new UserError(`${what}: ${name} must be an IoU in [0, 1], got ${x}`);
}

function checkGt(what: string, gt: Float32Array): number {
  const n = boxCount(gt, `${what} ground-truth boxes`);
  for (let i = 0; i < gt.length; i++) {
    if (!Number.isFinite(gt[i]!)) throw new UserError(`${what}: ground-truth box ${Math.floor(i / 4)} has a non-finite coordinate (${gt[i]})`);
  }
  return n;
}

/** Keeps `k` of the first `m` entries of `xs`, chosen uniformly at random, moved to the front (partial Fisher-Yates). */
function chooseFront(xs: Int32Array, m: number, k: number, rng: Rng): void {
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(m - i);
    const t = xs[i]!;
    xs[i] = xs[j]!;
    xs[j] = t;
  }
}

/** Per row of a [n, m] IoU matrix: the best IoU and its column (the first on ties); -1 / 0 when m = 0. */
function rowMax(ious: Float32Array, n: number, m: number): { max: Float32Array; arg: Int32Array } {
  const max = new Float32Array(n).fill(-1);
  const arg = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const row = i * m;
    for (let j = 0; j < m; j++) {
      if (ious[row + j]! > max[i]!) {
        max[i] = ious[row + j]!;
        arg[i] = j;
      }
    }
  }
  return { max, arg };
}

/** Copies box `i` of `src` to row `k` of `dst`. */
function copyBox(src: Float32Array, i: number, dst: Float32Array, k: number): void {
  dst[4 * k] = src[4 * i]!;
  dst[4 * k + 1] = src[4 * i + 1]!;
  dst[4 * k + 2] = src[4 * i + 2]!;
  dst[4 * k + 3] = src[4 * i + 3]!;
}

/** Encodes box pairs (reference[i], target[match[i]]) for the listed rows into `out` at those rows. */
function encodeRows(rows: Int32Array, reference: Float32Array, target: Float32Array, match: Int32Array, weights: BoxWeights, out: Float32Array, outRow: (k: number) => number): void {
  const ref = new Float32Array(4 * rows.length);
  const tgt = new Float32Array(4 * rows.length);
  for (let k = 0; k < rows.length; k++) {
    const i = rows[k]!;
    copyBox(reference, i, ref, k);
    copyBox(target, match[i]!, tgt, k);
  }
  const deltas = encodeBoxes(ref, tgt, weights);
  for (let k = 0; k < rows.length; k++) copyBox(deltas, k, out, outRow(k));
}

/**
 * RPN targets for one image. Anchors not inside the image widened by allowedBorder (x1, y1 >= -border,
 * x2 <= width + border, y2 <= height + border) are ignored. An anchor is positive when its best IoU with
 * a ground-truth box is >= positiveIou, or when it is the best anchor (ties included) of some
 * ground-truth box it overlaps; negative when its best IoU is below negativeIou; ignored otherwise. Then
 * at most round(batchSize positiveFraction) positives are kept, and negatives up to batchSize in all,
 * both uniformly at random; the others become ignored. Deltas (RPN_BOX_WEIGHTS) take each kept positive
 * to its best ground-truth box; zeros elsewhere. An image without ground truth gives negatives only.
 */
export function rpnTargets(
  anchors: Float32Array,
  gt: Float32Array,
  image: { height: number; width: number },
  rng: Rng,
  options: Partial<RpnTargetOptions> = {},
): { labels: Int8Array; deltas: Float32Array; positives: number; negatives: number } {
  const o = { ...DEFAULT_RPN_TARGETS, ...options };
  checkSampling('rpnTargets', o);
  checkIou('rpnTargets', 'positiveIou', o.positiveIou);
  checkIou('rpnTargets', 'negativeIou', o.negativeIou);
  if (o.negativeIou > o.positiveIou) throw new UserError(`rpnTargets: negativeIou ${o.negativeIou} is above positiveIou ${o.positiveIou}`);
  if (!(o.allowedBorder >= 0)) throw new UserError(`rpnTargets: allowedBorder must be non-negative, got ${o.allowedBorder}`);
  if (!(image.height > 0 && image.width > 0)) throw new UserError(`rpnTargets: the image size must be positive, got ${image.height}x${image.width}`);
  const na = boxCount(anchors, 'rpnTargets anchors');
  const ng = checkGt('rpnTargets', gt);

  // Only inside anchors take part: IoU is computed for them alone, in a compact copy.
  const b = o.allowedBorder;
  const insideIndex = new Int32Array(na);
  let ni = 0;
  for (let i = 0; i < na; i++) {
    if (anchors[4 * i]! >= -b && anchors[4 * i + 1]! >= -b && anchors[4 * i + 2]! <= image.width + b && anchors[4 * i + 3]! <= image.height + b) {
      insideIndex[ni++] = i;
    }
  }
  const inside = new Float32Array(4 * ni);
  for (let k = 0; k < ni; k++) copyBox(anchors, insideIndex[k]!, inside, k);
  const ious = iouMatrix(inside, gt);
  const { max, arg } = rowMax(ious, ni, ng);

  const labels = new Int8Array(na).fill(-1);
  const match = new Int32Array(na);
  for (let k = 0; k < ni; k++) {
    const i = insideIndex[k]!;
    match[i] = arg[k]!;
    if (max[k]! >= o.positiveIou) labels[i] = 1;
    else if (max[k]! < o.negativeIou) labels[i] = 0;
  }
  // Each ground-truth box's best inside anchors are positive whatever their IoU, so that every object
  // is learned; a box that overlaps no anchor at all has none.
  const bestPerGt = new Float32Array(ng);
  for (let k = 0; k < ni; k++) {
    for (let j = 0; j < ng; j++) if (ious[k * ng + j]! > bestPerGt[j]!) bestPerGt[j] = ious[k * ng + j]!;
  }
  for (let k = 0; k < ni; k++) {
    const i = insideIndex[k]!;
    if (labels[i] === 1) continue;
    for (let j = 0; j < ng; j++) {
      const best = bestPerGt[j]!;
      if (best > 0 && ious[k * ng + j]! >= best - TIE_EPS) {
        labels[i] = 1;
        break;
      }
    }
  }

  let numPos = 0;
  let numNeg = 0;
  for (let i = 0; i < na; i++) {
    if (labels[i] === 1) numPos++;
    else if (labels[i] === 0) numNeg++;
  }
  const pos = new Int32Array(numPos);
  const neg = new Int32Array(numNeg);
  for (let i = 0, p = 0, q = 0; i < na; i++) {
    if (labels[i] === 1) pos[p++] = i;
    else if (labels[i] === 0) neg[q++] = i;
  }
  const keepPos = Math.min(numPos, roundHalfEven(o.batchSize * o.positiveFraction));
  const keepNeg = Math.min(numNeg, o.batchSize - keepPos);
  chooseFront(pos, numPos, keepPos, rng);
  chooseFront(neg, numNeg, keepNeg, rng);
  for (let k = keepPos; k < numPos; k++) labels[pos[k]!] = -1;
  for (let k = keepNeg; k < numNeg; k++) labels[neg[k]!] = -1;

  const deltas = new Float32Array(4 * na);
  const kept = pos.subarray(0, keepPos);
  encodeRows(kept, anchors, gt, match, RPN_BOX_WEIGHTS, deltas, (k) => kept[k]!);
  return { labels, deltas, positives: keepPos, negatives: keepNeg };
}

/**
 * RoIs to train the box head on, for one image. The ground-truth boxes are appended to the proposals
 * (so that early in training there are foreground RoIs at all); a candidate is foreground when its best
 * IoU with a ground-truth box is >= positiveIou, background when it is in [negativeIouLow,
 * negativeIouHigh). At most round(batchSize positiveFraction) foreground RoIs are drawn uniformly at
 * random, then background up to batchSize in all; foreground first. Labels are the matched ground-truth
 * label (1..C) or 0; deltas (RCNN_BOX_WEIGHTS) take each foreground RoI to its box, zeros for background.
 */
export function sampleRois(
  proposals: Float32Array,
  gt: Float32Array,
  gtLabels: Int32Array,
  rng: Rng,
  options: Partial<RoiSampleOptions> = {},
): { rois: Float32Array; labels: Int32Array; deltas: Float32Array } {
  const o = { ...DEFAULT_ROI_SAMPLES, ...options };
  checkSampling('sampleRois', o);
  checkIou('sampleRois', 'positiveIou', o.positiveIou);
  checkIou('sampleRois', 'negativeIouHigh', o.negativeIouHigh);
  checkIou('sampleRois', 'negativeIouLow', o.negativeIouLow);
  if (o.negativeIouLow > o.negativeIouHigh) throw new UserError(`sampleRois: negativeIouLow ${o.negativeIouLow} is above negativeIouHigh ${o.negativeIouHigh}`);
  if (o.negativeIouHigh > o.positiveIou) throw new UserError(`sampleRois: negativeIouHigh ${o.negativeIouHigh} is above positiveIou ${o.positiveIou}`);
  const np = boxCount(proposals, 'sampleRois proposals');
  const ng = checkGt('sampleRois', gt);
  if (gtLabels.length !== ng) throw new UserError(`sampleRois: ${ng} ground-truth boxes but ${gtLabels.length} labels`);
  for (let j = 0; j < ng; j++) {
    if (!(gtLabels[j]! >= 1)) throw new UserError(`sampleRois: ground-truth label ${gtLabels[j]} of box ${j} is not a class (1..C; 0 is background)`);
  }

  const n = np + ng;
  const all = new Float32Array(4 * n);
  all.set(proposals, 0);
  all.set(gt, 4 * np);
  const ious = iouMatrix(all, gt);
  const { max, arg } = rowMax(ious, n, ng);

  let numPos = 0;
  let numNeg = 0;
  const kind = new Int8Array(n).fill(-1);
  for (let i = 0; i < n; i++) {
    const m = ng === 0 ? 0 : max[i]!;
    if (ng > 0 && m >= o.positiveIou) {
      kind[i] = 1;
      numPos++;
    } else if (m < o.negativeIouHigh && m >= o.negativeIouLow) {
      kind[i] = 0;
      numNeg++;
    }
  }
  const pos = new Int32Array(numPos);
  const neg = new Int32Array(numNeg);
  for (let i = 0, p = 0, q = 0; i < n; i++) {
    if (kind[i] === 1) pos[p++] = i;
    else if (kind[i] === 0) neg[q++] = i;
  }
  const keepPos = Math.min(numPos, roundHalfEven(o.batchSize * o.positiveFraction));
  const keepNeg = Math.min(numNeg, o.batchSize - keepPos);
  chooseFront(pos, numPos, keepPos, rng);
  chooseFront(neg, numNeg, keepNeg, rng);

  const s = keepPos + keepNeg;
  const rois = new Float32Array(4 * s);
  const labels = new Int32Array(s);
  const deltas = new Float32Array(4 * s);
  for (let k = 0; k < s; k++) {
    const i = k < keepPos ? pos[k]! : neg[k - keepPos]!;
    copyBox(all, i, rois, k);
    if (k < keepPos) labels[k] = gtLabels[arg[i]!]!;
  }
  const kept = pos.subarray(0, keepPos);
  encodeRows(kept, all, gt, arg, RCNN_BOX_WEIGHTS, deltas, (k) => k);
  return { rois, labels, deltas };
}
