/**
 * Composing kernels out of other kernels, inside a kernel.
 *
 * A kernel function receives TensorInfos and a backend, not tensors; it cannot call tf ops without
 * confusing the engine's bookkeeping. KernelContext runs other registered kernels of the same backend,
 * tracks every intermediate it creates and frees them all at the end, except the one(s) returned.
 * For the wasm and cpu backends it also gives direct Float32Array access to a tensor's memory, so
 * memory-bound steps (transposes, element-wise passes) can be done in JavaScript where that is faster
 * than the backend's own kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { simdPool, type SimdPool } from '../simd/pool.js';

interface WasmBackendLike extends KernelBackend {
  wasm: { wasmMemory: WebAssembly.Memory; tfjs: { disposeData(id: number): void } };
  dataIdMap: { get(id: object): { id: number; memoryOffset: number } | undefined; delete(id: object): void };
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number): TensorInfo;
}
interface CpuBackendLike extends KernelBackend {
  data: { get(id: object): { values: tf.backend_util.BackendValues } | undefined };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): TensorInfo;
}

export type ExplicitPad = [[number, number], [number, number], [number, number], [number, number]];

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export class KernelContext {
  private readonly owned: TensorInfo[] = [];

  constructor(
    readonly backend: KernelBackend,
    readonly backendName: string,
  ) {}

  /** True where tensor memory can be read and written from JavaScript. */
  get hasDirectMemory(): boolean {
    return this.backendName === 'wasm' || this.backendName === 'cpu';
  }

  /** Runs a registered kernel of this backend; the result is freed by dispose() unless kept. */
  run(kernelName: string, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap = {}): TensorInfo {
    const kernel = tf.getKernel(kernelName, this.backendName);
    if (!kernel) throw new Error(`kernel '${kernelName}' is not registered for backend '${this.backendName}'`);
    const out = kernel.kernelFunc({ inputs, backend: this.backend, attrs }) as TensorInfo | TensorInfo[];
    if (Array.isArray(out)) throw new Error(`kernel '${kernelName}' returned several outputs; use runMulti`);
    this.owned.push(out);
    return out;
  }

  runMulti(kernelName: string, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap = {}): TensorInfo[] {
    const kernel = tf.getKernel(kernelName, this.backendName);
    if (!kernel) throw new Error(`kernel '${kernelName}' is not registered for backend '${this.backendName}'`);
    const out = kernel.kernelFunc({ inputs, backend: this.backend, attrs }) as TensorInfo | TensorInfo[];
    const list = Array.isArray(out) ? out : [out];
    this.owned.push(...list);
    return list;
  }

  /** A new float32 (or given dtype) tensor of this backend, owned by the context. */
  empty(shape: number[], dtype: tf.DataType = 'float32'): TensorInfo {
    let t: TensorInfo;
    if (this.backendName === 'wasm') {
      t = (this.backend as WasmBackendLike).makeOutput(shape, dtype);
    } else if (this.backendName === 'cpu') {
      const n = sizeOf(shape);
      const values = dtype === 'int32' ? new Int32Array(n) : dtype === 'bool' ? new Uint8Array(n) : new Float32Array(n);
      t = (this.backend as CpuBackendLike).makeTensorInfo(shape, dtype, values);
    } else {
      t = this.run('Fill', {}, { shape, value: 0, dtype });
      return t;
    }
    this.owned.push(t);
    return t;
  }

  /** A float32 view of a tensor's memory (wasm heap or cpu array). */
  f32(t: TensorInfo): Float32Array {
    if (this.backendName === 'wasm') {
      const b = this.backend as WasmBackendLike;
      const info = b.dataIdMap.get(t.dataId);
      if (!info) throw new Error('tensor data is not on the wasm backend');
      // Views are made from the memory's current buffer: the heap may have grown since the last view.
      return new Float32Array(b.wasm.wasmMemory.buffer, info.memoryOffset, sizeOf(t.shape));
    }
    if (this.backendName === 'cpu') {
      const values = (this.backend as CpuBackendLike).data.get(t.dataId)?.values;
      if (!(values instanceof Float32Array)) throw new Error('expected float32 data on the cpu backend');
      return values;
    }
    throw new Error(`no direct memory access on backend '${this.backendName}'`);
  }

  /** Byte address of a tensor on the wasm heap (for zoo's SIMD kernels). */
  address(t: TensorInfo): number {
    const info = (this.backend as WasmBackendLike).dataIdMap.get(t.dataId);
    if (!info) throw new Error('tensor data is not on the wasm backend');
    return info.memoryOffset;
  }

  /** zoo's SIMD kernel pool, when this context runs on the wasm backend with it. */
  get simd(): SimdPool | undefined {
    return this.backendName === 'wasm' ? simdPool() : undefined;
  }

  /** A tensor made from JS data, owned by the context. */
  fromValues(shape: number[], values: Float32Array): TensorInfo {
    const t = this.empty(shape);
    if (this.hasDirectMemory) {
      this.f32(t).set(values);
      return t;
    }
    // Other backends: write through the backend's own data path.
    this.free(t);
    const dataId = this.backend.write(values, shape, 'float32');
    const info = { dataId, shape, dtype: 'float32' as const };
    this.owned.push(info);
    return info;
  }

  /**
   * A second tensor over the same memory as `x`, with its own id, for use as the filter of a Conv2D.
   * The wasm Conv2D kernel caches XNNPACK's packed copy of a filter under the filter's id until that id
   * is disposed; for an activation used as a filter that copy would stay alive (as large as the
   * activation) for the rest of the training step. Releasing the alias drops the copy at once and
   * leaves `x` untouched. On other backends this is a Reshape.
   */
  alias(x: TensorInfo, shape: number[]): TensorInfo {
    if (this.backendName !== 'wasm') return this.reshape(x, shape);
    const b = this.backend as WasmBackendLike;
    const info = b.dataIdMap.get(x.dataId);
    if (!info) throw new Error('tensor data is not on the wasm backend');
    const t = b.makeOutput(shape, x.dtype, info.memoryOffset);
    this.aliases.push(t);
    return t;
  }

  private readonly aliases: TensorInfo[] = [];

  private releaseAliases(): void {
    const b = this.backend as WasmBackendLike;
    for (const t of this.aliases) {
      const info = b.dataIdMap.get(t.dataId);
      if (!info) continue;
      b.wasm.tfjs.disposeData(info.id); // runs the disposal callbacks (cached operators), frees nothing
      b.dataIdMap.delete(t.dataId);
    }
    this.aliases.length = 0;
  }

  /** Removes `t` from the list of intermediates, so dispose() leaves it alive (a kernel's output). */
  keep<T extends TensorInfo>(t: T): T {
    const i = this.owned.lastIndexOf(t);
    if (i >= 0) this.owned.splice(i, 1);
    return t;
  }

  /** Frees an intermediate now instead of at dispose(). */
  free(t: TensorInfo): void {
    const i = this.owned.lastIndexOf(t);
    if (i >= 0) this.owned.splice(i, 1);
    this.backend.disposeData(t.dataId);
  }

  dispose(): void {
    this.releaseAliases();
    for (const t of this.owned) this.backend.disposeData(t.dataId);
    this.owned.length = 0;
  }

  // Thin wrappers over the kernels the compositions use.

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    return this.run('Reshape', { x }, { shape });
  }

  conv2d(
    x: TensorInfo,
    filter: TensorInfo,
    o: { strides: [number, number]; pad: ExplicitPad | 'valid'; dilations: [number, number] },
  ): TensorInfo {
    return this.run(
      'Conv2D',
      { x, filter },
      { strides: o.strides, pad: o.pad, dataFormat: 'NHWC', dilations: o.dilations, dimRoundingMode: undefined } as unknown as NamedAttrMap,
    );
  }

  slice(x: TensorInfo, begin: number[], size: number[]): TensorInfo {
    return this.run('Slice', { x }, { begin, size });
  }

  stridedSlice(x: TensorInfo, begin: number[], end: number[], strides: number[]): TensorInfo {
    return this.run(
      'StridedSlice',
      { x },
      { begin, end, strides, beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0 },
    );
  }

  pad(x: TensorInfo, paddings: [number, number][]): TensorInfo {
    return this.run('PadV2', { x }, { paddings, constantValue: 0 } as unknown as NamedAttrMap);
  }

  depthToSpace(x: TensorInfo, blockSize: number): TensorInfo {
    return this.run('DepthToSpace', { x }, { blockSize, dataFormat: 'NHWC' });
  }

  concat(xs: TensorInfo[], axis: number): TensorInfo {
    const inputs: Record<string, TensorInfo> = {};
    xs.forEach((x, i) => (inputs[i] = x));
    return this.run('Concat', inputs, { axis });
  }

  /** Transpose; in JavaScript on wasm/cpu (cache-blocked, faster than wasm's kernel), else the backend's. */
  transpose(x: TensorInfo, perm: number[]): TensorInfo {
    if (!this.hasDirectMemory || x.dtype !== 'float32') return this.run('Transpose', { x }, { perm });
    const outShape = perm.map((p) => x.shape[p]!);
    const out = this.empty(outShape);
    const simd = this.simd;
    const plan = simd ? mergedPermutation(x.shape, perm) : undefined;
    if (simd && plan && simdTranspose(this, simd, plan, this.address(x), this.address(out))) return out;
    transposeF32(this.f32(x), x.shape, perm, this.f32(out));
    return out;
  }
}

/**
 * Axes merged where they stay adjacent (runs of input axes that appear consecutively, in order, in
 * perm; size-1 groups dropped since they move no data): the merged input sizes and their permutation.
 */
function mergedPermutation(shape: readonly number[], perm: readonly number[]): { dims: number[]; perm: number[] } {
  const groups: number[][] = [];
  for (const p of perm) {
    const last = groups[groups.length - 1];
    if (last && last[last.length - 1]! + 1 === p) last.push(p);
    else groups.push([p]);
  }
  const kept = groups.filter((g) => sizeOf(g.map((a) => shape[a]!)) !== 1);
  const order = [...kept].sort((a, b) => a[0]! - b[0]!);
  return { dims: order.map((g) => sizeOf(g.map((a) => shape[a]!))), perm: kept.map((g) => order.indexOf(g)) };
}

/**
 * The transposes the gradient compositions use, with zoo's SIMD kernels: 2-D ([1,0]), batched 2-D
 * ([0,2,1]), block ([1,0,2]: rows move intact) and reversed 3-D ([2,1,0] = 2-D then block). Returns
 * false for other permutations (the JavaScript fallback handles them).
 */
function simdTranspose(ctx: KernelContext, simd: SimdPool, plan: { dims: number[]; perm: number[] }, src: number, dst: number): boolean {
  const { dims, perm } = plan;
  const key = perm.join();
  const grain = (cols: number) => Math.max(4, Math.ceil(65536 / Math.max(cols, 1)));
  if (key === '1,0') {
    simd.run('transpose', dims[0]!, [src, dst, dims[0]!, dims[1]!], { grain: grain(dims[1]!) });
    return true;
  }
  if (key === '0,2,1') {
    const [b, r, c] = dims as [number, number, number];
    for (let k = 0; k < b; k++) simd.run('transpose', r, [src + k * r * c * 4, dst + k * r * c * 4, r, c], { grain: grain(c) });
    return true;
  }
  if (key === '1,0,2') {
    const [r, c, inner] = dims as [number, number, number];
    simd.run('transpose_blocks', r, [src, dst, r, c, inner], { align: 1, grain: Math.max(1, Math.ceil(65536 / (c * inner))) });
    return true;
  }
  if (key === '2,1,0') {
    const [a, b, c] = dims as [number, number, number];
    const tmp = ctx.empty([b, c, a]);
    const t = ctx.address(tmp);
    simd.run('transpose', a, [src, t, a, b * c], { grain: grain(b * c) }); // [a, b*c] -> [b, c, a]
    simd.run('transpose_blocks', b, [t, dst, b, c, a], { align: 1, grain: Math.max(1, Math.ceil(65536 / (c * a))) }); // -> [c, b, a]
    ctx.free(tmp);
    return true;
  }
  return false;
}

/**
 * Transposes float32 data by `perm`. Adjacent axes that stay adjacent are merged first, so most
 * transposes become a batch of 2-D transposes done in 32x32 tiles.
 */
export function transposeF32(src: Float32Array, shape: readonly number[], perm: readonly number[], dst: Float32Array): void {
  const { dims, perm: mperm } = mergedPermutation(shape, perm);
  const n = sizeOf(dims);
  if (mperm.every((p, i) => p === i)) {
    dst.set(src.subarray(0, n));
    return;
  }
  if (mperm.length === 2) {
    transpose2d(src, 0, dst, 0, dims[0]!, dims[1]!);
    return;
  }
  if (mperm.length === 3 && mperm[0] === 0 && mperm[1] === 2 && mperm[2] === 1) {
    const [b, r, c] = dims as [number, number, number];
    for (let i = 0; i < b; i++) transpose2d(src, i * r * c, dst, i * r * c, r, c);
    return;
  }
  transposeGeneric(src, dims, mperm, dst);
}

function transpose2d(src: Float32Array, so: number, dst: Float32Array, d0: number, rows: number, cols: number): void {
  transpose2dStrided(src, so, rows, cols, dst, d0, rows);
}

/**
 * dst[d0 + c * dstStride + r] = src[so + r * cols + c] for r < rows, c < cols, in 32x32 tiles
 * (a cache-blocked 2-D transpose whose output rows may be longer than `rows`).
 */
export function transpose2dStrided(
  src: Float32Array,
  so: number,
  rows: number,
  cols: number,
  dst: Float32Array,
  d0: number,
  dstStride: number,
): void {
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(r0 + B, rows);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(c0 + B, cols);
      for (let r = r0; r < r1; r++) {
        const s = so + r * cols;
        for (let c = c0; c < c1; c++) dst[d0 + c * dstStride + r] = src[s + c]!;
      }
    }
  }
}

function transposeGeneric(src: Float32Array, dims: number[], perm: number[], dst: Float32Array): void {
  const rank = dims.length;
  const inStrides = new Array<number>(rank);
  let s = 1;
  for (let i = rank - 1; i >= 0; i--) {
    inStrides[i] = s;
    s *= dims[i]!;
  }
  const outDims = perm.map((p) => dims[p]!);
  const strideOfOut = perm.map((p) => inStrides[p]!);
  const idx = new Array<number>(rank).fill(0);
  const last = rank - 1;
  const innerN = outDims[last]!;
  const innerStride = strideOfOut[last]!;
  let o = 0;
  const total = sizeOf(dims);
  while (o < total) {
    let base = 0;
    for (let i = 0; i < last; i++) base += idx[i]! * strideOfOut[i]!;
    for (let j = 0; j < innerN; j++) dst[o++] = src[base + j * innerStride]!;
    for (let i = last - 1; i >= 0; i--) {
      if (++idx[i]! < outDims[i]!) break;
      idx[i] = 0;
    }
  }
}
