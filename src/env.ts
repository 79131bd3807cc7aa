/**
 * Settings read from the environment, in one place and once.
 *
 * ZOO_BACKEND   compute backend: auto | tfjs-node-gpu | tfjs-node | webgpu | native | wasm | cpu (default auto)
 * ZOO_THREADS   threads of the WebAssembly backend (default: all cores)
 */
import os from 'node:os';
import { UserError } from './errors.js';

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${name} must be a positive integer, got '${value}'`, { exitCode: 2 });
  return n;
}

export interface Settings {
  backend: string | undefined;
  threads: number;
}

export function readSettings(source: NodeJS.ProcessEnv = process.env): Settings {
  return {
    backend: source.ZOO_BACKEND || undefined,
    threads: positiveInt('ZOO_THREADS', source.ZOO_THREADS) ?? os.availableParallelism(),
  };
}

let processSettings: Settings | undefined;

/**
 * This process's settings, read from process.env on first use (not at import: a bad value must reach
 * the command line's error policy as a one-line error, not crash the import).
 */
export function settings(): Settings {
  processSettings ??= readSettings();
  return processSettings;
}
