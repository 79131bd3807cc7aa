/**
 * Batch normalization in training mode over NHWC data (channels last), with the ReLU and the residual
 * add that follow it in a ResNet block fused in, forward and backward in closed form.
 *
 * Forward, per channel c over the P = N*H*W positions:
 *   mean = sum(x) / P, var = sum(x^2) / P - mean^2 (accumulated in float64), invstd = 1 / sqrt(var + eps)
 *   y = relu?((x - mean) * invstd * gamma + beta + residual?)
 * Backward, with g = dy masked by y > 0 when the ReLU is fused, xhat = (x - mean) * invstd:
 *   dbeta = sum(g), dgamma = sum(g * xhat), dresidual = g
 *   dx = gamma * invstd / P * (P * g - dbeta - xhat * dgamma)
 * That is two passes over the data each way, against about ten separate element-wise kernels (and as
 * many temporaries) when the same gradient is derived op by op.
 *
 * Functions work on a range of positions [p0, p1) so the work can be split between threads; the
 * reductions return per-range partial sums.
 *
 * ReLU is written (v + |v|) / 2 and its mask as dy * +(y > 0): exact and branch-free. With
 * data-dependent branches these loops run three to four times slower on activations that are half
 * positive. (A NaN in dy stays NaN under the mask; a non-finite loss stops training anyway.)
 */

/** Adds sum(x) and sum(x^2) per channel over positions [p0, p1) into s and q. */
export function bnStats(x: Float32Array, C: number, p0: number, p1: number, s: Float64Array, q: Float64Array): void {
  for (let p = p0; p < p1; p++) {
    const o = p * C;
    for (let c = 0; c < C; c++) {
      const v = x[o + c]!;
      s[c] += v;
      q[c] += v * v;
    }
  }
}

/** mean and invstd from the sums over P positions. */
export function bnMoments(s: Float64Array, q: Float64Array, P: number, eps: number, mean: Float32Array, invstd: Float32Array): void {
  for (let c = 0; c < s.length; c++) {
    const m = s[c]! / P;
    const v = Math.max(q[c]! / P - m * m, 0);
    mean[c] = m;
    invstd[c] = 1 / Math.sqrt(v + eps);
  }
}

/** y = act((x - mean) * invstd * gamma + beta + residual) over positions [p0, p1). */
export function bnApply(
  x: Float32Array,
  y: Float32Array,
  C: number,
  p0: number,
  p1: number,
  scale: Float32Array, // gamma * invstd
  shift: Float32Array, // beta - mean * gamma * invstd
  residual: Float32Array | null,
  relu: boolean,
): void {
  for (let p = p0; p < p1; p++) {
    const o = p * C;
    if (residual) {
      if (relu) {
        for (let c = 0; c < C; c++) {
          const v = x[o + c]! * scale[c]! + shift[c]! + residual[o + c]!;
          y[o + c] = (v + Math.abs(v)) * 0.5;
        }
      } else {
        for (let c = 0; c < C; c++) y[o + c] = x[o + c]! * scale[c]! + shift[c]! + residual[o + c]!;
      }
    } else if (relu) {
      for (let c = 0; c < C; c++) {
        const v = x[o + c]! * scale[c]! + shift[c]!;
        y[o + c] = (v + Math.abs(v)) * 0.5;
      }
    } else {
      for (let c = 0; c < C; c++) y[o + c] = x[o + c]! * scale[c]! + shift[c]!;
    }
  }
}

/**
 * Backward reduction over [p0, p1): adds sum(g) into sg and sum(g * (x - mean)) into sgx (the invstd
 * factor is applied once per channel afterwards). With relu, g = dy where y > 0, else 0; with dres,
 * g is also written there (the residual's gradient).
 */
export function bnGradReduce(
  dy: Float32Array,
  x: Float32Array,
  y: Float32Array | null,
  C: number,
  p0: number,
  p1: number,
  mean: Float32Array,
  sg: Float64Array,
  sgx: Float64Array,
  dres: Float32Array | null,
): void {
  for (let p = p0; p < p1; p++) {
    const o = p * C;
    for (let c = 0; c < C; c++) {
      const g = y !== null ? dy[o + c]! * +(y[o + c]! > 0) : dy[o + c]!;
      if (dres !== null) dres[o + c] = g;
      sg[c] += g;
      sgx[c] += g * (x[o + c]! - mean[c]!);
    }
  }
}

/**
 * dx over [p0, p1): dx = a * g + b * (x - mean) + k, per channel, where
 *   a = gamma * invstd, b = -gamma * invstd^3 * sgx / P, k = -a * sg / P
 * (the closed form above with xhat expanded). x - mean is formed before scaling: expanding it into
 * b * x - b * mean cancels catastrophically in float32 when a channel's mean is large against its
 * spread, which conv outputs often are.
 */
export function bnGradApply(
  dy: Float32Array,
  x: Float32Array,
  y: Float32Array | null,
  dx: Float32Array,
  C: number,
  p0: number,
  p1: number,
  mean: Float32Array,
  a: Float32Array,
  b: Float32Array,
  k: Float32Array,
): void {
  for (let p = p0; p < p1; p++) {
    const o = p * C;
    if (y !== null) {
      for (let c = 0; c < C; c++) {
        const g = dy[o + c]! * +(y[o + c]! > 0);
        dx[o + c] = a[c]! * g + b[c]! * (x[o + c]! - mean[c]!) + k[c]!;
      }
    } else {
      for (let c = 0; c < C; c++) dx[o + c] = a[c]! * dy[o + c]! + b[c]! * (x[o + c]! - mean[c]!) + k[c]!;
    }
  }
}

/** Per-channel coefficients of bnGradApply, and dgamma, dbeta. */
export function bnGradCoefficients(
  sg: Float64Array,
  sgx: Float64Array,
  P: number,
  gamma: Float32Array,
  invstd: Float32Array,
  out: { a: Float32Array; b: Float32Array; k: Float32Array; dgamma: Float32Array; dbeta: Float32Array },
): void {
  for (let c = 0; c < sg.length; c++) {
    const is = invstd[c]!;
    const a = gamma[c]! * is;
    out.a[c] = a;
    out.b[c] = (-gamma[c]! * is * is * is * sgx[c]!) / P;
    out.k[c] = (-a * sg[c]!) / P;
    out.dgamma[c] = sgx[c]! * is;
    out.dbeta[c] = sg[c]!;
  }
}

/** dx = dy where y > 0, else 0, over [i0, i1). */
export function reluGrad(dy: Float32Array, y: Float32Array, dx: Float32Array, i0: number, i1: number): void {
  for (let i = i0; i < i1; i++) dx[i] = dy[i]! * +(y[i]! > 0);
}
