/**
 * RoIAlign (average mode) and its gradient with respect to the features, for backends whose tensor
 * memory JavaScript can reach (wasm, cpu).
 *
 * ZooRoiAlign      inputs features [N, H, W, C] float32, boxes [R, 4] float32 (x1, y1, x2, y2 before
 *                  spatialScale), boxIndices [R] int32
 *                  attrs outputHeight, outputWidth, spatialScale, samplingRatio, aligned
 *                  output [R, outputHeight, outputWidth, C]
 * ZooRoiAlignGrad  inputs dy [R, outputHeight, outputWidth, C], boxes, boxIndices
 *                  attrs those of ZooRoiAlign and featuresShape [N, H, W, C]
 *                  output dfeatures [N, H, W, C] (every bin's gradient added to the pixels it read)
 *
 * The sampling follows ONNX RoiAlign-16, onnxruntime and torchvision: a box is scaled, shifted by
 * -0.5 when aligned (ONNX "half_pixel", torchvision aligned=True) and otherwise widened to at least
 * one pixel per side (ONNX "output_half_pixel", the legacy layer of Detectron and MXNet); each of the
 * outputHeight x outputWidth bins averages gridH x gridW bilinear samples at the centres of a regular
 * grid (samplingRatio per side, or ceil(bin size) when it is 0). A sample more than one pixel outside
 * the map reads 0; one within a pixel of the border reads the border. Coordinates are computed in
 * float32, step by step as those implementations do, so the bins and border decisions agree exactly.
 *
 * In NHWC the channels of a pixel are contiguous. A sample's weight depends only on its y and its x,
 * and whether it reads anything is "y inside and x inside", so a bin's weight on pixel (y, x) is a
 * product wy(y) * wx(x) of one-dimensional sums. Each bin therefore reduces to a short list of
 * distinct pixels ("taps") with one weight each (typically 4 to 9 of them for 2 x 2 samples), and the
 * work is a pass over the channels per group of taps.
 */
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from './context.js';
import { parallelFor } from './parallel.js';

export interface RoiAlignAttrs {
  outputHeight: number;
  outputWidth: number;
  spatialScale: number;
  samplingRatio: number;
  aligned: boolean;
}

export interface RoiAlignGradAttrs extends RoiAlignAttrs {
  featuresShape: [number, number, number, number];
}

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };

const f32 = Math.fround;

/**
 * One-dimensional taps of every bin along one axis of one box: for bin i, the pixel indices
 * index[start[i] .. start[i + 1]) with the summed weights of the bin's samples on them (the
 * samples' own bilinear weights, not yet divided by the number of samples).
 */
interface AxisTaps {
  index: Int32Array;
  weight: Float64Array;
  start: Int32Array;
}

/** The sampling of one box along one axis: where it starts, its bin size and samples per bin. */
interface AxisSampling {
  start: number;
  bin: number;
  grid: number;
}

function axisSampling(lo: number, hi: number, bins: number, a: RoiAlignAttrs): AxisSampling {
  const scale = f32(a.spatialScale);
  const offset = a.aligned ? 0.5 : 0;
  const start = f32(f32(lo * scale) - offset);
  const end = f32(f32(hi * scale) - offset);
  let size = f32(end - start);
  if (!a.aligned) size = Math.max(size, 1);
  const bin = f32(size / bins);
  // A negative or empty extent (aligned boxes with x2 <= x1) has no samples when adaptive: zeros.
  const grid = a.samplingRatio > 0 ? a.samplingRatio : Math.max(Math.ceil(bin), 0);
  return { start, bin, grid };
}

/** Adds `w` to the tap of pixel `p` in taps [from, n), creating it when absent; returns the new n. */
function addTap(index: Int32Array, weight: Float64Array, from: number, n: number, p: number, w: number): number {
  if (w === 0) return n;
  for (let k = n - 1; k >= from; k--) {
    if (index[k] === p) {
      weight[k] += w;
      return n;
    }
  }
  index[n] = p;
  weight[n] = w;
  return n + 1;
}

/**
 * The taps of every bin along one axis of length `size` (the height or width of the map), with the
 * bilinear edge rules of onnxruntime and torchvision: a sample at t < -1 or t > size reads nothing;
 * t <= 0 reads pixel 0; t at or beyond size - 1 reads pixel size - 1 alone.
 */
function axisTaps(s: AxisSampling, bins: number, size: number, out: AxisTaps): AxisTaps {
  const { start: s0, bin, grid } = s;
  // A bin has at most two taps per sample and never more than `size` distinct pixels.
  const need = bins * Math.min(grid * 2, size);
  if (out.index.length < need) {
    out.index = new Int32Array(need);
    out.weight = new Float64Array(need);
  }
  if (out.start.length < bins + 1) out.start = new Int32Array(bins + 1);
  const { index, weight, start } = out;
  let n = 0;
  for (let i = 0; i < bins; i++) {
    start[i] = n;
    const base = f32(s0 + f32(i * bin));
    for (let k = 0; k < grid; k++) {
      let t = f32(base + f32(f32((k + 0.5) * bin) / grid));
      if (t < -1 || t > size) continue;
      if (t <= 0) t = 0;
      let low = Math.trunc(t);
      let high: number;
      if (low >= size - 1) {
        high = low = size - 1;
        t = low;
      } else {
        high = low + 1;
      }
      const l = f32(t - low);
      const h = f32(1 - l);
      n = addTap(index, weight, start[i]!, n, low, h);
      n = addTap(index, weight, start[i]!, n, high, l);
    }
  }
  start[bins] = n;
  return out;
}

function emptyTaps(): AxisTaps {
  return { index: new Int32Array(64), weight: new Float64Array(64), start: new Int32Array(16) };
}

/**
 * Walks every bin of every box in [r0, r1), calling `bin` with the bin's first output element and
 * its taps: `count` feature offsets (pixel * C) in `offsets` and their final weights in `weights`.
 */
function forEachBin(
  boxes: Float32Array,
  batch: Int32Array,
  shape: readonly [number, number, number, number],
  a: RoiAlignAttrs,
  r0: number,
  r1: number,
  bin: (out: number, offsets: Int32Array, weights: Float64Array, count: number) => void,
): void {
  const [, H, W, C] = shape;
  const PH = a.outputHeight;
  const PW = a.outputWidth;
  let rows = emptyTaps();
  let cols = emptyTaps();
  let offsets = new Int32Array(64);
  let weights = new Float64Array(64);
  for (let r = r0; r < r1; r++) {
    const ys = axisSampling(boxes[4 * r + 1]!, boxes[4 * r + 3]!, PH, a);
    const xs = axisSampling(boxes[4 * r]!, boxes[4 * r + 2]!, PW, a);
    rows = axisTaps(ys, PH, H, rows);
    cols = axisTaps(xs, PW, W, cols);
    // The average is over every sample of the bin, including those that read nothing.
    const inv = 1 / Math.max(ys.grid * xs.grid, 1);
    const image = batch[r]! * H;
    for (let ph = 0; ph < PH; ph++) {
      const y0 = rows.start[ph]!;
      const y1 = rows.start[ph + 1]!;
      for (let pw = 0; pw < PW; pw++) {
        const x0 = cols.start[pw]!;
        const x1 = cols.start[pw + 1]!;
        const count = (y1 - y0) * (x1 - x0);
        if (offsets.length < count) {
          offsets = new Int32Array(count);
          weights = new Float64Array(count);
        }
        let n = 0;
        for (let i = y0; i < y1; i++) {
          const rowBase = (image + rows.index[i]!) * W;
          const wy = rows.weight[i]! * inv;
          for (let j = x0; j < x1; j++) {
            offsets[n] = (rowBase + cols.index[j]!) * C;
            weights[n] = wy * cols.weight[j]!;
            n++;
          }
        }
        bin(((r * PH + ph) * PW + pw) * C, offsets, weights, n);
      }
    }
  }
}

/** out[o + c] = sum over the taps of weight * f[offset + c], for c < C. */
function gatherBin(f: Float32Array, out: Float32Array, o: number, C: number, offsets: Int32Array, weights: Float64Array, n: number): void {
  if (n === 0) {
    out.fill(0, o, o + C);
    return;
  }
  // The first pass writes (the output is not zeroed) and takes up to six taps, so that the usual
  // bins (four to nine taps) need one or two passes over the channels; the rest go by four.
  const first = n <= 6 ? n : n - 4 * Math.ceil((n - 6) / 4);
  const a = offsets[0]!;
  const wa = weights[0]!;
  const b = offsets[1]!;
  const wb = weights[1]!;
  const d = offsets[2]!;
  const wd = weights[2]!;
  switch (first) {
    case 1:
      for (let c = 0; c < C; c++) out[o + c] = wa * f[a + c]!;
      break;
    case 2:
      for (let c = 0; c < C; c++) out[o + c] = wa * f[a + c]! + wb * f[b + c]!;
      break;
    case 3:
      for (let c = 0; c < C; c++) out[o + c] = wa * f[a + c]! + wb * f[b + c]! + wd * f[d + c]!;
      break;
    default: {
      const e = offsets[3]!;
      const we = weights[3]!;
      if (first === 4) {
        for (let c = 0; c < C; c++) out[o + c] = wa * f[a + c]! + wb * f[b + c]! + wd * f[d + c]! + we * f[e + c]!;
        break;
      }
      const g = offsets[4]!;
      const wg = weights[4]!;
      if (first === 5) {
        for (let c = 0; c < C; c++) out[o + c] = wa * f[a + c]! + wb * f[b + c]! + wd * f[d + c]! + we * f[e + c]! + wg * f[g + c]!;
        break;
      }
      const h = offsets[5]!;
      const wh = weights[5]!;
      for (let c = 0; c < C; c++) {
        out[o + c] = wa * f[a + c]! + wb * f[b + c]! + wd * f[d + c]! + we * f[e + c]! + wg * f[g + c]! + wh * f[h + c]!;
      }
    }
  }
  for (let k = first; k < n; k += 4) {
    const p0 = offsets[k]!;
    const p1 = offsets[k + 1]!;
    const p2 = offsets[k + 2]!;
    const p3 = offsets[k + 3]!;
    const w0 = weights[k]!;
    const w1 = weights[k + 1]!;
    const w2 = weights[k + 2]!;
    const w3 = weights[k + 3]!;
    for (let c = 0; c < C; c++) out[o + c] += w0 * f[p0 + c]! + w1 * f[p1 + c]! + w2 * f[p2 + c]! + w3 * f[p3 + c]!;
  }
}

/** dx[offset + c] += weight * dy[o + c] for every tap (the taps of one bin are distinct pixels). */
function scatterBin(dy: Float32Array, dx: Float32Array, o: number, C: number, offsets: Int32Array, weights: Float64Array, n: number): void {
  let k = 0;
  for (; k + 4 <= n; k += 4) {
    const p0 = offsets[k]!;
    const p1 = offsets[k + 1]!;
    const p2 = offsets[k + 2]!;
    const p3 = offsets[k + 3]!;
    const w0 = weights[k]!;
    const w1 = weights[k + 1]!;
    const w2 = weights[k + 2]!;
    const w3 = weights[k + 3]!;
    for (let c = 0; c < C; c++) {
      const g = dy[o + c]!;
      dx[p0 + c] += w0 * g;
      dx[p1 + c] += w1 * g;
      dx[p2 + c] += w2 * g;
      dx[p3 + c] += w3 * g;
    }
  }
  const left = n - k;
  if (left === 0) return;
  const p0 = offsets[k]!;
  const w0 = weights[k]!;
  if (left === 1) {
    for (let c = 0; c < C; c++) dx[p0 + c] += w0 * dy[o + c]!;
    return;
  }
  const p1 = offsets[k + 1]!;
  const w1 = weights[k + 1]!;
  if (left === 2) {
    for (let c = 0; c < C; c++) {
      const g = dy[o + c]!;
      dx[p0 + c] += w0 * g;
      dx[p1 + c] += w1 * g;
    }
    return;
  }
  const p2 = offsets[k + 2]!;
  const w2 = weights[k + 2]!;
  for (let c = 0; c < C; c++) {
    const g = dy[o + c]!;
    dx[p0 + c] += w0 * g;
    dx[p1 + c] += w1 * g;
    dx[p2 + c] += w2 * g;
  }
}

/** The box indices as int32 values, checked against the batch size. */
function boxBatch(backend: KernelBackend, t: TensorInfo, n: number, what: string): Int32Array {
  const raw = backend.readSync(t.dataId);
  const batch = raw instanceof Int32Array ? raw : Int32Array.from(raw as ArrayLike<number>);
  for (let r = 0; r < batch.length; r++) {
    const b = batch[r]!;
    if (!(b >= 0 && b < n)) throw new Error(`${what}: box index ${b} of box ${r} is outside the batch of ${n} feature maps`);
  }
  return batch;
}

function attrsOf(attrs: NamedAttrMap): RoiAlignAttrs {
  const a = attrs as unknown as RoiAlignAttrs;
  return {
    outputHeight: a.outputHeight,
    outputWidth: a.outputWidth,
    spatialScale: a.spatialScale,
    samplingRatio: a.samplingRatio,
    aligned: a.aligned,
  };
}

export function roiAlignKernel(args: KernelArgs, backendName: string): TensorInfo {
  const a = attrsOf(args.attrs);
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const { features: fI, boxes: bI, boxIndices: iI } = args.inputs as Record<string, TensorInfo>;
    const shape = fI!.shape as [number, number, number, number];
    const R = bI!.shape[0]!;
    const C = shape[3];
    const batch = boxBatch(args.backend, iI!, shape[0], 'roiAlign');
    // Allocate before taking views: an allocation may grow (and, without threads, detach) the heap.
    const outI = ctx.empty([R, a.outputHeight, a.outputWidth, C]);
    if (sizeOf(outI.shape) === 0) return ctx.keep(outI);
    const f = ctx.f32(fI!);
    const boxes = ctx.f32(bI!);
    const out = ctx.f32(outI);
    parallelFor(R, (r0, r1) =>
      forEachBin(boxes, batch, shape, a, r0, r1, (o, offsets, weights, n) => gatherBin(f, out, o, C, offsets, weights, n)),
    );
    return ctx.keep(outI);
  } finally {
    ctx.dispose();
  }
}

export function roiAlignGradKernel(args: KernelArgs, backendName: string): TensorInfo {
  const a = attrsOf(args.attrs);
  const shape = (args.attrs as unknown as RoiAlignGradAttrs).featuresShape;
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const { dy: dyI, boxes: bI, boxIndices: iI } = args.inputs as Record<string, TensorInfo>;
    const R = bI!.shape[0]!;
    const C = shape[3];
    const batch = boxBatch(args.backend, iI!, shape[0], 'roiAlign gradient');
    const dxI = ctx.empty([...shape]);
    if (sizeOf(shape) === 0) return ctx.keep(dxI);
    const dx = ctx.f32(dxI);
    dx.fill(0);
    if (R === 0 || C === 0) return ctx.keep(dxI);
    const dy = ctx.f32(dyI!);
    const boxes = ctx.f32(bI!);
    // One range: boxes of the same image add into the same pixels.
    forEachBin(boxes, batch, shape, a, 0, R, (o, offsets, weights, n) => scatterBin(dy, dx, o, C, offsets, weights, n));
    return ctx.keep(dxI);
  } finally {
    ctx.dispose();
  }
}
