/**
 * RPN anchors with the geometry of py-faster-rcnn and GluonCV's RPNAnchorGenerator, which GluonCV's
 * published VOC detectors were trained with.
 *
 * The base window is [0, 0, base - 1, base - 1] with center c = (base - 1) / 2. For ratio r (height /
 * width): ws = round(sqrt(base^2 / r)), hs = round(ws r) (numpy rounding, half to even); for scale s the
 * anchor is c -/+ 0.5 (ws s - 1) across and c -/+ 0.5 (hs s - 1) down. Base 16, ratios 0.5/1/2,
 * scales 8/16/32 give the nine classic anchors, the first [-84, -40, 99, 55].
 */
import { UserError } from '../errors.js';

/** Anchor generator settings: feature stride, base window size, scales and ratios (height / width). */
export interface AnchorOptions {
  stride: number;
  baseSize: number;
  scales: number[];
  ratios: number[];
}

/** GluonCV's faster_rcnn_resnet50_v1b_voc anchors: 15 per position on the stride-16 map. */
export const DEFAULT_ANCHORS: AnchorOptions = { stride: 16, baseSize: 16, scales: [2, 4, 8, 16, 32], ratios: [0.5, 1, 2] };

/** numpy's round: halves to the nearest even integer. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function positiveList(name: string, xs: unknown): number[] {
  if (!Array.isArray(xs) || xs.length === 0 || !xs.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) {
    throw new UserError(`anchor ${name} must be a non-empty list of positive numbers, got ${JSON.stringify(xs)}`);
  }
  return [...(xs as number[])];
}

function positive(name: string, x: unknown): number {
  if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) throw new UserError(`anchor ${name} must be a positive number, got ${String(x)}`);
  return x;
}

/** Anchors at every position of a feature map (torchvision's AnchorGenerator, GluonCV's geometry). */
export class AnchorGenerator {
  readonly options: AnchorOptions;
  private readonly base: Float32Array;

  constructor(options: Partial<AnchorOptions> = {}) {
    const o = { ...DEFAULT_ANCHORS, ...options };
    this.options = {
      stride: positive('stride', o.stride),
      baseSize: positive('baseSize', o.baseSize),
      scales: positiveList('scales', o.scales),
      ratios: positiveList('ratios', o.ratios),
    };
    this.base = this.computeBase();
  }

  /** Anchors per feature-map position: scales x ratios. */
  get numAnchors(): number {
    return this.options.scales.length * this.options.ratios.length;
  }

  private computeBase(): Float32Array {
    const { baseSize, scales, ratios } = this.options;
    const c = (baseSize - 1) * 0.5;
    const out = new Float32Array(4 * scales.length * ratios.length);
    let k = 0;
    for (const r of ratios) {
      const ws = roundHalfEven(Math.sqrt((baseSize * baseSize) / r));
      const hs = roundHalfEven(ws * r);
      for (const s of scales) {
        const hw = 0.5 * (ws * s - 1);
        const hh = 0.5 * (hs * s - 1);
        out[k++] = c - hw;
        out[k++] = c - hh;
        out[k++] = c + hw;
        out[k++] = c + hh;
      }
    }
    return out;
  }

  /** The anchors at position (0, 0): [A, 4], ratio-major then scale. */
  baseAnchors(): Float32Array {
    return this.base.slice();
  }

  /**
   * All anchors of a featureHeight x featureWidth map: [H * W * A, 4] in (y, x, a) order, anchor (y, x, a)
   * being baseAnchors[a] shifted by (x stride, y stride), the layout of an NHWC RPN head's outputs.
   */
  grid(featureHeight: number, featureWidth: number): Float32Array {
    if (!(Number.isInteger(featureHeight) && featureHeight >= 0 && Number.isInteger(featureWidth) && featureWidth >= 0)) {
      throw new UserError(`anchor grid: the feature map size must be non-negative integers, got ${featureHeight}x${featureWidth}`);
    }
    const { stride } = this.options;
    const a4 = this.base.length;
    const out = new Float32Array(featureHeight * featureWidth * a4);
    let k = 0;
    for (let y = 0; y < featureHeight; y++) {
      const sy = y * stride;
      for (let x = 0; x < featureWidth; x++) {
        const sx = x * stride;
        for (let j = 0; j < a4; j += 4) {
          out[k++] = this.base[j]! + sx;
          out[k++] = this.base[j + 1]! + sy;
          out[k++] = this.base[j + 2]! + sx;
          out[k++] = this.base[j + 3]! + sy;
        }
      }
    }
    return out;
  }
}
