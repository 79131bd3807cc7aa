/**
 * Splitting element-wise work into ranges. Runs on the calling thread for now; kernels are written
 * against ranges so that the split can move to worker threads sharing the wasm heap.
 */
export function parallelFor(n: number, body: (begin: number, end: number) => void): void {
  if (n > 0) body(0, n);
}
