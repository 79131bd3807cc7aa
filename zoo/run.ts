/**
 * The command line's error policy, in one place: a UserError prints its message and exits with its
 * code (no stack trace); anything else is a bug in zoo and says so (stack with ZOO_DEBUG=1).
 */
import type { Command } from 'commander';
import { UserError } from '../src/errors.js';
import { releaseBackend } from '../src/backend/index.js';

export function fail(e: unknown): never {
  if (e instanceof UserError) {
    process.stderr.write(`zoo: error: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  const err = e as Error;
  process.stderr.write(`zoo: internal error (a bug in zoo; please report it): ${err?.message ?? String(e)}\n`);
  if (process.env.ZOO_DEBUG) process.stderr.write(`${err?.stack ?? ''}\n`);
  else process.stderr.write('zoo: run again with ZOO_DEBUG=1 for the stack trace\n');
  process.exit(70);
}

/** Wraps a command action: errors go through fail(); the WebGPU device is released at the end either
 *  way (Dawn would keep the process alive). */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      releaseBackend();
      fail(e);
    }
    releaseBackend();
  };
}

/** Parses a number option that must pass `check`, with a message naming the option and what it must be. */
export function number(name: string, check: (v: number) => boolean = Number.isFinite, what = 'a number'): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UserError(`${name} must be ${what}, got '${value}'`, { exitCode: 2 });
    return n;
  };
}

/** Parses a positive integer option, with a message naming the option. */
export function positiveInt(name: string): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new UserError(`${name} must be a positive integer, got '${value}'`, { exitCode: 2 });
    return n;
  };
}

/** Widest line the command line's tables print (the standard terminal width, with room to spare). */
export const TABLE_WIDTH = 100;

function cut(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 3))}...`;
}

/**
 * Left-aligned text table. With `shrink`, that column (default the last) is cut short with '...' so
 * that no line is wider than `width` (default TABLE_WIDTH).
 */
export function table(rows: string[][], header?: string[], options: { width?: number; shrink?: number } = {}): string {
  const all = header ? [header, ...rows] : rows;
  if (!all.length) return '';
  const ncol = all[0]!.length;
  const widths = all[0]!.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const limit = options.width ?? TABLE_WIDTH;
  const shrink = options.shrink ?? ncol - 1;
  const total = widths.reduce((a, w) => a + w, 0) + 2 * (ncol - 1);
  if (total > limit) widths[shrink] = Math.max((header?.[shrink] ?? '').length, 8, widths[shrink]! - (total - limit));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? cut(c, widths[i]!) : cut(c, widths[i]!).padEnd(widths[i]!))).join('  ').trimEnd();
  const out = all.map(line);
  if (header) out.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return out.join('\n');
}

/**
 * Runs a long job that stops cleanly on Ctrl-C: the first Ctrl-C aborts the signal (the run finishes
 * its update and checkpoints), a second one quits at once (the last checkpoint stays intact).
 */
export async function withStopSignal<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = new AbortController();
  const onSigint = () => {
    if (stop.signal.aborted) process.exit(130);
    process.stderr.write('\nstopping after this update or validation image (Ctrl-C again to quit now)...\n');
    stop.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    return await fn(stop.signal);
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** A comma-separated list of numbers, each parsed by `parse` (an option parser such as positiveInt's). */
export function list(parse: (v: string) => number): (value: string) => number[] {
  return (value: string) => value.split(',').map((v) => parse(v.trim()));
}

/** The options the user gave on the command line (with --resume the rest comes from run.json). */
export function given(opts: Record<string, unknown>, cmd: Command): Record<string, unknown> {
  return Object.fromEntries(Object.entries(opts).filter(([k]) => cmd.getOptionValueSource(k) === 'cli'));
}
