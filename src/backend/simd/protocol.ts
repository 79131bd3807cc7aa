/** The shared control block between the SIMD pool and its workers (indices into an Int32Array). */
export const CTL = {
  generation: 0,
  task: 1,
  done: 2,
  parts: 3,
  nargs: 4,
  align: 5,
  error: 6,
  size: 8,
} as const;

/** Part `index` of `n` items split in `parts`, boundaries on multiples of `align`. */
export function partRange(n: number, parts: number, index: number, align: number): [number, number] {
  const per = Math.ceil(n / parts / align) * align;
  const begin = Math.min(n, index * per);
  const end = Math.min(n, begin + per);
  return [begin, end];
}
