/**
 * One memory budget per weights file.
 *
 * A file's header and pickle decide how much the readers allocate: a 5 KB `.pth` can ask for a
 * broadcast view of 2^24 elements sixty-four times over, a few megabytes of deflate can declare
 * gigabytes of storage. Checking each size against the bytes in the file is not enough, because the
 * allocations add up. So every allocation a file's contents make a reader do (inflated zip entries,
 * decoded storages and tensors, gathered copies of strided views, dtype and layout conversions, the
 * unpickler's values) is charged, before it is made, to one ByteBudget for that file, and the file
 * is refused with a FormatError naming it and the figures as soon as the sum would pass the limit.
 *
 * The file's own bytes are not charged: reading them is bounded separately (`checkFile` refuses a
 * file larger than the budget before it is read), so a load holds at most the file plus the budget.
 *
 * Limits: `modelBudget` (convert/convert.ts) when the architecture is known: a few times its float32
 * parameter bytes; `fileBudget` otherwise: a multiple of the file's size, which for safetensors and
 * bare MXNet `.params` no valid file can exceed (nothing in them expands by more than float16 to
 * float32 does), and which for `.pth` and zips (broadcast views, shared storages, deflate) is a
 * generous guess that a caller who knows better overrides.
 */
import { FormatError } from './types.js';

/** Fixed allowance on top of every limit, so tiny models and files are not refused for bookkeeping. */
export const BUDGET_SLACK_BYTES = 16 * 2 ** 20;

/** Allocations charged against one limit, for one file. */
export class ByteBudget {
  private usedBytes = 0;
  private peakBytes = 0;

  /**
   * @param label the file, named in the error
   * @param limit bytes that may be allocated at once
   * @param rule how the limit was computed, for the error message (e.g. "8 x the file's 4812 bytes + 16 MiB")
   */
  constructor(
    readonly label: string,
    readonly limit: number,
    readonly rule: string,
  ) {}

  /** Bytes charged and not released. */
  get used(): number {
    return this.usedBytes;
  }

  /** The most ever charged at once. */
  get peak(): number {
    return this.peakBytes;
  }

  /** Charges `bytes` before they are allocated; throws a FormatError naming the file past the limit. */
  charge(bytes: number, what: string): void {
    if (!(bytes >= 0)) throw new Error(`ByteBudget.charge(${bytes}) for ${what}`);
    if (this.usedBytes + bytes > this.limit) {
      throw new FormatError(
        this.label,
        `${what} needs ${formatBytes(bytes)} on top of the ${formatBytes(this.usedBytes)} already allocated for this file, ` +
          `past its memory budget of ${formatBytes(this.limit)} (${this.rule}); refusing`,
      );
    }
    this.usedBytes += bytes;
    if (this.usedBytes > this.peakBytes) this.peakBytes = this.usedBytes;
  }

  /** Gives back bytes charged earlier, once what they paid for is no longer referenced. */
  release(bytes: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - bytes);
  }

  /** Refuses a file larger than the budget before it is read. */
  checkFile(size: number): void {
    if (size > this.limit) {
      throw new FormatError(this.label, `file is ${formatBytes(size)}, more than its memory budget of ${formatBytes(this.limit)} (${this.rule}); refusing to read it`);
    }
  }
}

/** A budget of `factor` times the file's size plus BUDGET_SLACK_BYTES. */
export function fileBudget(label: string, fileBytes: number, factor: number): ByteBudget {
  return new ByteBudget(label, factor * fileBytes + BUDGET_SLACK_BYTES, `${factor} x the file's ${fileBytes} bytes + 16 MiB`);
}

/** A budget no file reaches (for callers that bound memory some other way). */
export function unlimitedBudget(label: string): ByteBudget {
  return new ByteBudget(label, Number.MAX_SAFE_INTEGER, 'unlimited');
}

/** Bytes with a readable unit after the exact count: "67108864 bytes (64.0 MiB)". */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${n} bytes (${v.toFixed(1)} ${units[u]})`;
}
