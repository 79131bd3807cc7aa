/**
 * Gradients of a 2-D convolution (NHWC input, [kh, kw, in, out] filter), composed from the forward
 * Conv2D kernel so they run at the speed of the backend's best convolution.
 *
 * tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter at all, and its Conv2DBackpropInput is a scalar
 * loop (about 2 GFLOP/s against about 40 for its XNNPACK Conv2D). tfjs-core's own conv2d gradient also
 * refuses dilation > 1, which the dilated (FCN) backbones need. Both gradients here support stride,
 * explicit asymmetric padding and dilation.
 *
 * Filter gradient, per spatial axis, with stride s, dilation d, padding p:
 *   dW[k] = sum over n, o of x[n, o*s + k*d - p] * dy[n, o]
 * which is a convolution of the input (batch and channels swapped) with dy as the filter, using
 * stride d and dilation s. A 1x1 filter without padding is a plain matrix product x^T dy.
 *
 * Input gradient: with stride 1 it is a convolution of dy with the spatially flipped, in/out-swapped
 * filter (same dilation). With stride s > 1 the input positions split into s phases per axis; phase r
 * receives the taps k with k*d = r + p (mod s), which form a dense stride-1 correlation over dy. All
 * phases are computed by one convolution whose output channels hold every phase, then interleaved.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { KernelContext, sizeOf, transpose2dStrided, type ExplicitPad } from './context.js';
import { convFilterGradGemm, convForwardGemm, convInputGradGemm, preferGemm } from './conv_gemm.js';

/** Normalized geometry of one convolution. */
export interface ConvGeometry {
  batch: number;
  inH: number;
  inW: number;
  inC: number;
  outH: number;
  outW: number;
  outC: number;
  kH: number;
  kW: number;
  strideH: number;
  strideW: number;
  dilH: number;
  dilW: number;
  padTop: number;
  padBottom: number;
  padLeft: number;
  padRight: number;
}

type PadAttr = 'valid' | 'same' | number | ExplicitPad | [[number, number], [number, number]];

/** Computes the geometry from tfjs-style attributes (pad 'same' | 'valid' | number | explicit). */
export function convGeometry(
  xShape: readonly number[],
  filterShape: readonly number[],
  strides: number | [number, number],
  pad: PadAttr,
  dilations: number | [number, number] = 1,
  dimRoundingMode?: 'floor' | 'round' | 'ceil',
): ConvGeometry {
  const explicit = normalizePad(pad);
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    dilations,
    explicit ?? (pad as 'same' | 'valid' | number),
    dimRoundingMode,
    false,
    'channelsLast',
  );
  return {
    batch: info.batchSize,
    inH: info.inHeight,
    inW: info.inWidth,
    inC: info.inChannels,
    outH: info.outHeight,
    outW: info.outWidth,
    outC: info.outChannels,
    kH: info.filterHeight,
    kW: info.filterWidth,
    strideH: info.strideHeight,
    strideW: info.strideWidth,
    dilH: info.dilationHeight,
    dilW: info.dilationWidth,
    padTop: info.padInfo.top,
    padBottom: info.padInfo.bottom,
    padLeft: info.padInfo.left,
    padRight: info.padInfo.right,
  };
}

function normalizePad(pad: PadAttr): ExplicitPad | undefined {
  if (!Array.isArray(pad)) return undefined;
  if (pad.length === 2) return [[0, 0], pad[0], pad[1], [0, 0]];
  return pad as ExplicitPad;
}

/** dW of shape [kH, kW, inC, outC] from x [N, H, W, inC] and dy [N, outH, outW, outC]. */
export function conv2dBackpropFilter(ctx: KernelContext, x: TensorInfo, dy: TensorInfo, g: ConvGeometry): TensorInfo {
  if (preferGemm(ctx, g, 'filterGrad')) return ctx.keep(convFilterGradGemm(ctx, x, dy, g));
  const unpadded = g.padTop === 0 && g.padBottom === 0 && g.padLeft === 0 && g.padRight === 0;
  if (g.kH === 1 && g.kW === 1 && unpadded) return filterGrad1x1(ctx, x, dy, g);
  return filterGradByConv(ctx, x, dy, g);
}

function filterGrad1x1(ctx: KernelContext, x: TensorInfo, dy: TensorInfo, g: ConvGeometry): TensorInfo {
  let xs = x;
  if (g.strideH > 1 || g.strideW > 1 || g.outH !== g.inH || g.outW !== g.inW) {
    xs = ctx.stridedSlice(
      x,
      [0, 0, 0, 0],
      [g.batch, (g.outH - 1) * g.strideH + 1, (g.outW - 1) * g.strideW + 1, g.inC],
      [1, g.strideH, g.strideW, 1],
    );
  }
  const m = g.batch * g.outH * g.outW;
  // A matrix product as a 1x1 convolution, i.e. XNNPACK's threaded GEMM. XNNPACK is fast when the
  // GEMM has many rows and a narrow right-hand ("weights") operand, and several times slower the
  // other way round, so the operand with more channels is transposed into the rows.
  const conv1x1 = { strides: [1, 1] as [number, number], pad: 'valid' as const, dilations: [1, 1] as [number, number] };
  if (g.inC >= g.outC) {
    // dW [inC, outC] = x^T [inC, m] @ dy [m, outC]
    const xT = ctx.transpose(ctx.reshape(xs, [m, g.inC]), [1, 0]);
    const r = ctx.conv2d(ctx.reshape(xT, [1, 1, g.inC, m]), ctx.alias(dy, [1, 1, m, g.outC]), conv1x1);
    return ctx.keep(ctx.reshape(r, [1, 1, g.inC, g.outC]));
  }
  // dW^T [outC, inC] = dy^T [outC, m] @ x [m, inC]
  const dyT = ctx.transpose(ctx.reshape(dy, [m, g.outC]), [1, 0]);
  const r = ctx.conv2d(ctx.reshape(dyT, [1, 1, g.outC, m]), ctx.alias(xs, [1, 1, m, g.inC]), conv1x1);
  const dW = ctx.transpose(ctx.reshape(r, [g.outC, g.inC]), [1, 0]);
  return ctx.keep(ctx.reshape(dW, [1, 1, g.inC, g.outC]));
}

function filterGradByConv(ctx: KernelContext, x: TensorInfo, dy: TensorInfo, g: ConvGeometry): TensorInfo {
  // Input: [inC, H, W, N] (channels become the batch); filter: dy as [outH, outW, N, outC].
  const xT = ctx.transpose(x, [3, 1, 2, 0]);
  const dyT = ctx.transpose(dy, [1, 2, 0, 3]);
  // Pad so that the output covers kernel offsets 0..k-1; rows of x past the last tap are never read,
  // so a negative far-side pad is simply left at 0 and the extra outputs are sliced off.
  const padBottom = Math.max(0, (g.kH - 1) * g.dilH + (g.outH - 1) * g.strideH + 1 - g.inH - g.padTop);
  const padRight = Math.max(0, (g.kW - 1) * g.dilW + (g.outW - 1) * g.strideW + 1 - g.inW - g.padLeft);
  let r = ctx.conv2d(xT, dyT, {
    strides: [g.dilH, g.dilW],
    dilations: [g.strideH, g.strideW],
    pad: [
      [0, 0],
      [g.padTop, padBottom],
      [g.padLeft, padRight],
      [0, 0],
    ],
  });
  if (r.shape[1] !== g.kH || r.shape[2] !== g.kW) r = ctx.slice(r, [0, 0, 0, 0], [g.inC, g.kH, g.kW, g.outC]);
  return ctx.keep(ctx.transpose(r, [1, 2, 0, 3]));
}

/** One axis of the input-gradient decomposition: for each phase r, the taps and their dy offsets. */
interface AxisPlan {
  /** Smallest dy offset over all phases and taps. */
  offset: number;
  /** Window length over dy that covers every phase's taps. */
  window: number;
  /** taps[r] = list of [kernelIndex, positionInWindow]. */
  taps: [number, number][][];
  /** Number of output positions per phase (ceil(inSize / stride)). */
  perPhase: number;
}

function planAxis(inSize: number, k: number, s: number, d: number, p: number): AxisPlan {
  const taps: [number, number][][] = [];
  let lo = Infinity;
  let hi = -Infinity;
  for (let r = 0; r < s; r++) {
    const list: [number, number][] = [];
    for (let kk = 0; kk < k; kk++) {
      const num = r + p - kk * d;
      if (((num % s) + s) % s !== 0) continue;
      const c = num / s;
      list.push([kk, c]);
      lo = Math.min(lo, c);
      hi = Math.max(hi, c);
    }
    taps.push(list);
  }
  if (lo === Infinity) {
    lo = 0;
    hi = 0;
  }
  return {
    offset: lo,
    window: hi - lo + 1,
    taps: taps.map((list) => list.map(([kk, c]) => [kk, c - lo] as [number, number])),
    perPhase: Math.ceil(inSize / s),
  };
}

/** dx of shape [N, H, W, inC] from dy [N, outH, outW, outC] and filter [kH, kW, inC, outC]. */
export function conv2dBackpropInput(ctx: KernelContext, dy: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  if (preferGemm(ctx, g, 'inputGrad')) return ctx.keep(convInputGradGemm(ctx, dy, filter, g));
  if (g.strideH === 1 && g.strideW === 1) return inputGradStride1(ctx, dy, filter, g);
  if (g.dilH !== 1 || g.dilW !== 1) {
    throw new Error('conv2d input gradient with both stride > 1 and dilation > 1 is not supported');
  }
  // The phase decomposition builds its combined filter in JavaScript; a backend whose memory
  // JavaScript cannot reach synchronously (WebGPU) runs its own strided kernel instead.
  if (!ctx.hasDirectMemory) return ctx.keep(backendInputGrad(ctx, dy, filter, g));
  return inputGradPhases(ctx, dy, filter, g);
}

/** The filter flipped in space with in/out swapped: [kH, kW, outC, inC]. */
function flippedFilter(w: Float32Array, g: ConvGeometry): Float32Array {
  const { kH, kW, inC, outC } = g;
  const out = new Float32Array(w.length);
  for (let i = 0; i < kH; i++)
    for (let j = 0; j < kW; j++) {
      const src = ((kH - 1 - i) * kW + (kW - 1 - j)) * inC * outC;
      transpose2dStrided(w, src, inC, outC, out, (i * kW + j) * outC * inC, inC);
    }
  return out;
}

/** The backend's own Conv2DBackpropInput (dilation 1), with zoo's explicit padding. */
function backendInputGrad(ctx: KernelContext, dy: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  return ctx.run('Conv2DBackpropInput', { dy, filter }, {
    strides: [g.strideH, g.strideW],
    pad: [
      [0, 0],
      [g.padTop, g.padBottom],
      [g.padLeft, g.padRight],
      [0, 0],
    ],
    dataFormat: 'NHWC',
    inputShape: [g.batch, g.inH, g.inW, g.inC],
  } as unknown as NamedAttrMap);
}

/**
 * flippedFilter() as a tensor: on the wasm heap with the SIMD pool (one 2-D transpose per kernel tap),
 * in JavaScript on the cpu backend, and with the backend's Reverse and Transpose elsewhere.
 */
function flippedFilterTensor(ctx: KernelContext, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  const simd = ctx.simd;
  if (!ctx.hasDirectMemory) return ctx.transpose(ctx.run('Reverse', { x: filter }, { dims: [0, 1] }), [0, 1, 3, 2]);
  if (!simd) return ctx.fromValues([g.kH, g.kW, g.outC, g.inC], flippedFilter(ctx.f32(filter), g));
  const out = ctx.empty([g.kH, g.kW, g.outC, g.inC]);
  const src = ctx.address(filter);
  const dst = ctx.address(out);
  const tap = g.inC * g.outC * 4;
  for (let i = 0; i < g.kH; i++)
    for (let j = 0; j < g.kW; j++) {
      const from = src + ((g.kH - 1 - i) * g.kW + (g.kW - 1 - j)) * tap;
      simd.run('transpose', g.inC, [from, dst + (i * g.kW + j) * tap, g.inC, g.outC], { grain: Math.max(4, Math.ceil(65536 / g.outC)) });
    }
  return out;
}

function inputGradStride1(ctx: KernelContext, dy: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  const wf = flippedFilterTensor(ctx, filter, g);
  // dx[i] = sum_k dy[i + a + k*d] * wflip[k], a = p - (k-1)*d: pad dy by -a before, enough after.
  const padT = (g.kH - 1) * g.dilH - g.padTop;
  const padL = (g.kW - 1) * g.dilW - g.padLeft;
  const padB = g.inH - 1 + (g.kH - 1) * g.dilH - padT - (g.outH - 1);
  const padR = g.inW - 1 + (g.kW - 1) * g.dilW - padL - (g.outW - 1);
  let src = dy;
  // Negative pads (padding larger than the kernel reach) become crops.
  const cropT = Math.max(0, -padT);
  const cropL = Math.max(0, -padL);
  const cropB = Math.max(0, -padB);
  const cropR = Math.max(0, -padR);
  if (cropT || cropL || cropB || cropR) {
    src = ctx.slice(dy, [0, cropT, cropL, 0], [g.batch, g.outH - cropT - cropB, g.outW - cropL - cropR, g.outC]);
  }
  const r = ctx.conv2d(src, wf, {
    strides: [1, 1],
    dilations: [g.dilH, g.dilW],
    pad: [
      [0, 0],
      [Math.max(0, padT), Math.max(0, padB)],
      [Math.max(0, padL), Math.max(0, padR)],
      [0, 0],
    ],
  });
  return ctx.keep(r);
}

function inputGradPhases(ctx: KernelContext, dy: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  const ph = planAxis(g.inH, g.kH, g.strideH, 1, g.padTop);
  const pw = planAxis(g.inW, g.kW, g.strideW, 1, g.padLeft);
  // Phases with at least one tap on both axes; the others receive no gradient (e.g. 1x1 stride 2).
  const phases: [number, number][] = [];
  for (let rh = 0; rh < g.strideH; rh++)
    for (let rw = 0; rw < g.strideW; rw++) if (ph.taps[rh]!.length && pw.taps[rw]!.length) phases.push([rh, rw]);
  const w = ctx.f32(filter);
  const P = phases.length;
  const { inC, outC } = g;
  // Combined filter [window_h, window_w, outC, P * inC]: phase q's channels hold its taps.
  const comb = new Float32Array(ph.window * pw.window * outC * P * inC);
  phases.forEach(([rh, rw], q) => {
    for (const [kh, jh] of ph.taps[rh]!)
      for (const [kw, jw] of pw.taps[rw]!) {
        const src = (kh * g.kW + kw) * inC * outC;
        const dst = (jh * pw.window + jw) * outC * P * inC + q * inC;
        transpose2dStrided(w, src, inC, outC, comb, dst, P * inC);
      }
  });
  const wc = ctx.fromValues([ph.window, pw.window, outC, P * inC], comb);
  // Correlation over dy covering q in [0, perPhase): rows offset .. perPhase - 1 + offset + window - 1.
  const padT = -ph.offset;
  const padL = -pw.offset;
  const padB = ph.perPhase + ph.offset + ph.window - 1 - g.outH;
  const padR = pw.perPhase + pw.offset + pw.window - 1 - g.outW;
  let src = dy;
  const cropT = Math.max(0, -padT);
  const cropL = Math.max(0, -padL);
  const cropB = Math.max(0, -padB);
  const cropR = Math.max(0, -padR);
  if (cropT || cropL || cropB || cropR) {
    src = ctx.slice(dy, [0, cropT, cropL, 0], [g.batch, g.outH - cropT - cropB, g.outW - cropL - cropR, outC]);
  }
  const r = ctx.conv2d(src, wc, {
    strides: [1, 1],
    dilations: [1, 1],
    pad: [
      [0, 0],
      [Math.max(0, padT), Math.max(0, padB)],
      [Math.max(0, padL), Math.max(0, padR)],
      [0, 0],
    ],
  }); // [N, >= perPhaseH, >= perPhaseW, P * inC]
  const dx = ctx.empty([g.batch, g.inH, g.inW, inC]);
  if (ctx.hasDirectMemory) {
    scatterPhases(ctx.f32(r), r.shape as number[], ctx.f32(dx), g, phases, ph.perPhase, pw.perPhase);
    return ctx.keep(dx);
  }
  ctx.free(dx);
  return ctx.keep(interleaveWithKernels(ctx, r, g, phases, ph.perPhase, pw.perPhase));
}

/** dx[n, q*s + rh, t*s + rw, :] = r[n, q, t, phase * inC : (phase + 1) * inC], zero where no phase lands. */
function scatterPhases(
  r: Float32Array,
  rShape: number[],
  dx: Float32Array,
  g: ConvGeometry,
  phases: [number, number][],
  qh: number,
  qw: number,
): void {
  const { batch, inH, inW, inC, strideH: sh, strideW: sw } = g;
  const rH = rShape[1]!;
  const rW = rShape[2]!;
  const rC = rShape[3]!;
  if (phases.length < sh * sw) dx.fill(0);
  for (let n = 0; n < batch; n++)
    for (let q = 0; q < qh; q++)
      for (let t = 0; t < qw; t++) {
        if (q >= rH || t >= rW) continue;
        const srcBase = ((n * rH + q) * rW + t) * rC;
        for (let p = 0; p < phases.length; p++) {
          const [rh, rw] = phases[p]!;
          const h = q * sh + rh;
          const w = t * sw + rw;
          if (h >= inH || w >= inW) continue;
          const s0 = srcBase + p * inC;
          dx.set(r.subarray(s0, s0 + inC), ((n * inH + h) * inW + w) * inC);
        }
      }
}

/** The same interleave with kernels only (backends without direct memory access). */
function interleaveWithKernels(
  ctx: KernelContext,
  r: TensorInfo,
  g: ConvGeometry,
  phases: [number, number][],
  qh: number,
  qw: number,
): TensorInfo {
  const { strideH: sh, strideW: sw, inC } = g;
  if (sh !== sw) throw new Error('conv2d input gradient with unequal strides needs the wasm or cpu backend');
  let full = ctx.slice(r, [0, 0, 0, 0], [g.batch, qh, qw, phases.length * inC]);
  if (phases.length < sh * sh) {
    // Insert zero channels for the phases without taps, in phase order.
    const parts: TensorInfo[] = [];
    for (let rh = 0; rh < sh; rh++)
      for (let rw = 0; rw < sw; rw++) {
        const hit = phases.findIndex(([a, b]) => a === rh && b === rw);
        if (hit >= 0) parts.push(ctx.slice(full, [0, 0, 0, hit * inC], [g.batch, qh, qw, inC]));
        else parts.push(ctx.run('Fill', {}, { shape: [g.batch, qh, qw, inC], value: 0, dtype: 'float32' }));
      }
    full = ctx.concat(parts, 3);
  }
  const d2s = ctx.depthToSpace(full, sh);
  return ctx.slice(d2s, [0, 0, 0, 0], [g.batch, g.inH, g.inW, inC]);
}

/** Attributes of the zoo kernels (and of the core names where zoo replaces them). */
export interface ConvGradAttrs {
  strides: number | [number, number];
  pad: PadAttr;
  dilations?: number | [number, number];
  dataFormat?: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape?: [number, number, number, number];
  inputShape?: [number, number, number, number];
}

function checkFormat(attrs: ConvGradAttrs, kernel: string): void {
  if (attrs.dataFormat && attrs.dataFormat !== 'NHWC') {
    throw new Error(`${kernel}: only NHWC data is supported, got ${attrs.dataFormat}`);
  }
}

export function backpropFilterKernel(args: { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap }, backendName: string): TensorInfo {
  const attrs = args.attrs as unknown as ConvGradAttrs;
  checkFormat(attrs, 'Conv2DBackpropFilter');
  const x = args.inputs.x!;
  const dy = args.inputs.dy!;
  const g = convGeometry(x.shape, attrs.filterShape!, attrs.strides, attrs.pad, attrs.dilations ?? 1, attrs.dimRoundingMode);
  const ctx = new KernelContext(args.backend, backendName);
  try {
    return conv2dBackpropFilter(ctx, x, dy, g);
  } finally {
    ctx.dispose();
  }
}

/** Forward convolution (zoo's ZooConv2D on wasm and cpu): products where packing would dominate. */
export function convForwardKernel(args: { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap }, backendName: string): TensorInfo {
  const attrs = args.attrs as unknown as ConvGradAttrs;
  checkFormat(attrs, 'Conv2D');
  const x = args.inputs.x!;
  const filter = args.inputs.filter!;
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const g = convGeometry(x.shape, filter.shape, attrs.strides, attrs.pad, attrs.dilations ?? 1, attrs.dimRoundingMode);
    if (preferGemm(ctx, g, 'forward')) return ctx.keep(convForwardGemm(ctx, x, filter, g));
    return ctx.keep(ctx.run('Conv2D', { x, filter }, args.attrs));
  } finally {
    ctx.dispose();
  }
}

export function backpropInputKernel(args: { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap }, backendName: string): TensorInfo {
  const attrs = args.attrs as unknown as ConvGradAttrs;
  checkFormat(attrs, 'Conv2DBackpropInput');
  const dy = args.inputs.dy!;
  const filter = args.inputs.filter!;
  const g = convGeometry(attrs.inputShape!, filter.shape, attrs.strides, attrs.pad, attrs.dilations ?? 1, attrs.dimRoundingMode);
  if (g.outH !== dy.shape[1] || g.outW !== dy.shape[2]) {
    throw new Error(`Conv2DBackpropInput: dy shape ${dy.shape} does not match the convolution output ${g.outH}x${g.outW}`);
  }
  const ctx = new KernelContext(args.backend, backendName);
  try {
    return conv2dBackpropInput(ctx, dy, filter, g);
  } finally {
    ctx.dispose();
  }
}

export { sizeOf };
