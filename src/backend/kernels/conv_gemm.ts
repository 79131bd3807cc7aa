/**
 * Convolutions as matrix products, for when XNNPACK's weight packing would dominate.
 *
 * tfjs-backend-wasm's Conv2D builds an XNNPACK operator the first time it sees a filter tensor: it
 * transposes the filter to [out, k] with a generic loop, then XNNPACK packs it (together ~80 M
 * floats/s), and caches the operator under the filter's id. Inference reuses the cache; training
 * cannot: the weights change every step, and the gradients' "filters" are fresh tensors every call.
 * On small feature maps (late stages, small images) the packing of a 2048x512 weight matrix costs
 * several times the arithmetic. A product C[M, N] = A[M, K] B[K, N] run as a 1x1 convolution packs
 * B; run transposed, C^T = B^T A^T, it packs A. `gemm` picks the smaller side; convolutions with
 * larger kernels become products through im2col (and col2im for the input gradient) when the
 * feature map is small enough that the patch matrix is smaller than the weights.
 *
 * Nothing here changes results beyond float32 summation order; tests force each strategy.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf } from './context.js';
import type { ConvGeometry } from './conv_backprop.js';

export type ConvStrategy = 'auto' | 'native' | 'gemm';
let strategy: ConvStrategy = 'auto';
let orientation: 'auto' | 'standard' | 'swapped' = 'auto';

/** Forces a strategy (tests): 'native' never uses products, 'gemm' uses them wherever possible. */
export function setConvStrategy(s: ConvStrategy, o: 'auto' | 'standard' | 'swapped' = 'auto'): void {
  strategy = s;
  orientation = o;
}

/** Packing a float costs about this many times a JavaScript transpose of it (measured on x86-64). */
const PACK_COST = 4;

const ONE = { strides: [1, 1] as [number, number], pad: 'valid' as const, dilations: [1, 1] as [number, number] };

function swapWins(ctx: KernelContext, standardCost: number, swappedCost: number): boolean {
  if (orientation !== 'auto') return orientation === 'swapped';
  return ctx.hasDirectMemory && swappedCost < standardCost;
}

/** A product as a 1x1 convolution: input [rows, k] times weights [k, cols] (the packed side). */
function product(ctx: KernelContext, input: TensorInfo, weights: TensorInfo, rows: number, k: number, cols: number): TensorInfo {
  return ctx.reshape(ctx.conv2d(ctx.reshape(input, [1, 1, rows, k]), ctx.alias(weights, [1, 1, k, cols]), ONE), [rows, cols]);
}

function t2(ctx: KernelContext, x: TensorInfo, rows: number, cols: number): TensorInfo {
  return ctx.transpose(ctx.reshape(x, [rows, cols]), [1, 0]);
}

/**
 * C[M, N] = A[M, K] B[K, N]. Standard: packs B. Swapped (C^T = B^T A^T): packs A, transposes A, B, C.
 * Costs in floats moved, a pack counting PACK_COST.
 */
export function gemmNN(ctx: KernelContext, a: TensorInfo, b: TensorInfo, M: number, K: number, N: number): TensorInfo {
  if (!swapWins(ctx, PACK_COST * K * N, PACK_COST * K * M + K * M + K * N + M * N)) return product(ctx, a, b, M, K, N);
  return t2(ctx, product(ctx, t2(ctx, b, K, N), t2(ctx, a, M, K), N, K, M), N, M);
}

/** C[K, N] = A[M, K]^T B[M, N]. Standard: packs B, transposes A. Swapped: packs A, transposes B and C. */
export function gemmTN(ctx: KernelContext, a: TensorInfo, b: TensorInfo, M: number, K: number, N: number): TensorInfo {
  if (!swapWins(ctx, PACK_COST * M * N + M * K, PACK_COST * M * K + M * N + K * N)) return product(ctx, t2(ctx, a, M, K), b, K, M, N);
  return t2(ctx, product(ctx, t2(ctx, b, M, N), a, N, M, K), N, K);
}

/** C[M, K] = A[M, N] B[K, N]^T. Standard: packs B^T (transposed first). Swapped: packs A^T, input B. */
export function gemmNT(ctx: KernelContext, a: TensorInfo, b: TensorInfo, M: number, N: number, K: number): TensorInfo {
  if (!swapWins(ctx, PACK_COST * K * N + K * N, PACK_COST * M * N + M * N + M * K)) return product(ctx, a, t2(ctx, b, K, N), M, N, K);
  return t2(ctx, product(ctx, b, t2(ctx, a, M, N), K, N, M), K, M);
}

function isPointwise(g: ConvGeometry): boolean {
  return g.kH === 1 && g.kW === 1 && g.padTop === 0 && g.padBottom === 0 && g.padLeft === 0 && g.padRight === 0 && g.dilH === 1 && g.dilW === 1;
}

/**
 * Kernel taps (i, j) that reach the input from at least one output position. On maps smaller than the
 * kernel's reach (a padded 3x3 on a 1x1 map: only the centre) the others only ever read padding, so the
 * products skip them: fewer columns in im2col, a smaller slice of the weights, and zero filter gradient.
 */
export function liveTaps(g: ConvGeometry): [number, number][] {
  const rowsLive = (k: number, s: number, d: number, p: number, inSize: number, outSize: number, i: number) => {
    for (let o = 0; o < outSize; o++) {
      const h = o * s + i * d - p;
      if (h >= 0 && h < inSize) return true;
    }
    return false;
  };
  const taps: [number, number][] = [];
  for (let i = 0; i < g.kH; i++) {
    if (!rowsLive(g.kH, g.strideH, g.dilH, g.padTop, g.inH, g.outH, i)) continue;
    for (let j = 0; j < g.kW; j++) if (rowsLive(g.kW, g.strideW, g.dilW, g.padLeft, g.inW, g.outW, j)) taps.push([i, j]);
  }
  return taps;
}

export type ConvOp = 'forward' | 'inputGrad' | 'filterGrad';

/**
 * Whether products beat the native convolution for this geometry and operation. Costs are counted in
 * floats moved, a packed float counting PACK_COST + 1 (tfjs's transpose before XNNPACK's packing):
 * - forward, native: pack the weights (K x outC); products (swapped): im2col, then pack and
 *   transpose the patches, transpose the weights and the output;
 * - input gradient, native: flip and pack the weights; products: transpose and pack dy, transpose
 *   the patch gradients and scatter them (col2im);
 * - filter gradient: products when the patch matrix is under half the weights (the native
 *   formulation packs dy too, but reads the input transposed and convolves over the batch).
 * Pointwise (1x1, unpadded) convolutions always take products: no im2col, and the orientation rule
 * of gemmNN/TN/NT decides what gets packed.
 */
export function preferGemm(ctx: KernelContext, g: ConvGeometry, op: ConvOp): boolean {
  if (!ctx.hasDirectMemory || strategy === 'native') return false;
  if (isPointwise(g) || strategy === 'gemm') return true;
  const M = g.batch * g.outH * g.outW;
  const K = liveTaps(g).length * g.inC;
  const N = g.outC;
  const pack = PACK_COST + 1;
  switch (op) {
    case 'forward':
      return M * K + pack * M * K + K * N + M * N < pack * K * N;
    case 'inputGrad':
      return pack * M * N + 2 * M * K < (pack + 1) * K * N;
    case 'filterGrad':
      return 2 * M * K < K * N;
  }
}

/** The patch matrix [M, taps*inC] of x over the given taps (zeros where a tap falls outside). */
export function im2col(ctx: KernelContext, x: TensorInfo, g: ConvGeometry, taps: [number, number][] = liveTaps(g)): TensorInfo {
  const { batch, inH, inW, inC, outH, outW } = g;
  const K = taps.length * inC;
  const cols = ctx.empty([batch * outH * outW, K]);
  const src = ctx.f32(x);
  const dst = ctx.f32(cols);
  let row = 0;
  for (let n = 0; n < batch; n++)
    for (let oh = 0; oh < outH; oh++)
      for (let ow = 0; ow < outW; ow++, row++) {
        let o = row * K;
        for (const [i, j] of taps) {
          const h = oh * g.strideH + i * g.dilH - g.padTop;
          const w = ow * g.strideW + j * g.dilW - g.padLeft;
          if (h < 0 || h >= inH || w < 0 || w >= inW) dst.fill(0, o, o + inC);
          else {
            const s = ((n * inH + h) * inW + w) * inC;
            dst.set(src.subarray(s, s + inC), o);
          }
          o += inC;
        }
      }
  return cols;
}

/** dx[N, H, W, inC] = the scatter-add of patch gradients dcols [M, taps*inC] (col2im). */
export function col2im(ctx: KernelContext, dcols: TensorInfo, g: ConvGeometry, taps: [number, number][] = liveTaps(g)): TensorInfo {
  const { batch, inH, inW, inC, outH, outW } = g;
  const K = taps.length * inC;
  const dx = ctx.empty([batch, inH, inW, inC]);
  const src = ctx.f32(dcols);
  const dst = ctx.f32(dx);
  dst.fill(0);
  let row = 0;
  for (let n = 0; n < batch; n++)
    for (let oh = 0; oh < outH; oh++)
      for (let ow = 0; ow < outW; ow++, row++) {
        let o = row * K;
        for (const [i, j] of taps) {
          const h = oh * g.strideH + i * g.dilH - g.padTop;
          const w = ow * g.strideW + j * g.dilW - g.padLeft;
          if (h >= 0 && h < inH && w >= 0 && w < inW) {
            const d = ((n * inH + h) * inW + w) * inC;
            for (let c = 0; c < inC; c++) dst[d + c] += src[o + c]!;
          }
          o += inC;
        }
      }
  return dx;
}

/** The filter's rows [taps*inC, outC] for the given taps (the whole filter when all are live). */
function filterRows(ctx: KernelContext, filter: TensorInfo, g: ConvGeometry, taps: [number, number][]): TensorInfo {
  if (taps.length === g.kH * g.kW) return filter;
  const block = g.inC * g.outC;
  const out = ctx.empty([taps.length * g.inC, g.outC]);
  const src = ctx.f32(filter);
  const dst = ctx.f32(out);
  taps.forEach(([i, j], t) => dst.set(src.subarray((i * g.kW + j) * block, (i * g.kW + j + 1) * block), t * block));
  return out;
}

/** x, strided to the output grid, as [M, inC] (for 1x1 convolutions with stride). */
function pointwiseInput(ctx: KernelContext, x: TensorInfo, g: ConvGeometry): TensorInfo {
  if (g.strideH === 1 && g.strideW === 1 && g.outH === g.inH && g.outW === g.inW) return x;
  return ctx.stridedSlice(x, [0, 0, 0, 0], [g.batch, (g.outH - 1) * g.strideH + 1, (g.outW - 1) * g.strideW + 1, g.inC], [1, g.strideH, g.strideW, 1]);
}

/** y[N, outH, outW, outC] of a convolution, as a product. */
export function convForwardGemm(ctx: KernelContext, x: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  const m = g.batch * g.outH * g.outW;
  const taps = isPointwise(g) ? [[0, 0] as [number, number]] : liveTaps(g);
  const K = taps.length * g.inC;
  const a = isPointwise(g) ? pointwiseInput(ctx, x, g) : im2col(ctx, x, g, taps);
  return ctx.reshape(gemmNN(ctx, a, filterRows(ctx, filter, g, taps), m, K, g.outC), [g.batch, g.outH, g.outW, g.outC]);
}

/** dW[kH, kW, inC, outC] = patches^T dy, as a product; taps that never reach the input get 0. */
export function convFilterGradGemm(ctx: KernelContext, x: TensorInfo, dy: TensorInfo, g: ConvGeometry): TensorInfo {
  const m = g.batch * g.outH * g.outW;
  const taps = isPointwise(g) ? [[0, 0] as [number, number]] : liveTaps(g);
  const K = taps.length * g.inC;
  const a = isPointwise(g) ? pointwiseInput(ctx, x, g) : im2col(ctx, x, g, taps);
  const dw = gemmTN(ctx, a, dy, m, K, g.outC); // [taps*inC, outC]
  if (taps.length === g.kH * g.kW) return ctx.reshape(dw, [g.kH, g.kW, g.inC, g.outC]);
  const full = ctx.empty([g.kH, g.kW, g.inC, g.outC]);
  const block = g.inC * g.outC;
  const src = ctx.f32(dw);
  const dst = ctx.f32(full);
  dst.fill(0);
  taps.forEach(([i, j], t) => dst.set(src.subarray(t * block, (t + 1) * block), (i * g.kW + j) * block));
  return full;
}

/** dx = col2im(dy W^T), as a product over the live taps. */
export function convInputGradGemm(ctx: KernelContext, dy: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  const m = g.batch * g.outH * g.outW;
  const taps = isPointwise(g) ? [[0, 0] as [number, number]] : liveTaps(g);
  const K = taps.length * g.inC;
  // dcols [m, K] = dy [m, outC] @ W_taps [K, outC]^T
  const dcols = gemmNT(ctx, dy, filterRows(ctx, filter, g, taps), m, g.outC, K);
  if (!isPointwise(g)) return col2im(ctx, dcols, g, taps);
  if (g.strideH === 1 && g.strideW === 1 && g.outH === g.inH && g.outW === g.inW) return ctx.reshape(dcols, [g.batch, g.inH, g.inW, g.inC]);
  // Strided 1x1: scatter rows to the strided positions, zeros elsewhere.
  const dx = ctx.empty([g.batch, g.inH, g.inW, g.inC]);
  const src = ctx.f32(dcols);
  const dst = ctx.f32(dx);
  dst.fill(0);
  let row = 0;
  for (let n = 0; n < g.batch; n++)
    for (let oh = 0; oh < g.outH; oh++)
      for (let ow = 0; ow < g.outW; ow++, row++) {
        const d = ((n * g.inH + oh * g.strideH) * g.inW + ow * g.strideW) * g.inC;
        dst.set(src.subarray(row * g.inC, (row + 1) * g.inC), d);
      }
  return dx;
}

export { sizeOf };
