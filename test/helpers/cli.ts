/**
 * Running the built command line as a user does: a child process, its exit code and both streams.
 */
import { execFile } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

/** The built CLI entry point. */
export const ZOO_CLI = fileURLToPath(new URL('../../zoo/index.js', import.meta.url));

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** The child's environment (default: this process's, with the WebAssembly backend). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill it after this long (default 120 s; a killed run reports 128 + its signal number, as a shell does). */
  timeoutMs?: number;
}

/** Runs `zoo <args>` to its end. */
export function runZoo(args: readonly string[], options: CliOptions = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [ZOO_CLI, ...args],
      { env: options.env ?? { ...process.env, ZOO_BACKEND: 'wasm' }, ...(options.cwd ? { cwd: options.cwd } : {}), timeout: options.timeoutMs ?? 120_000 },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string | null; signal?: NodeJS.Signals | null }) | null;
        const code = !e ? 0 : typeof e.code === 'number' ? e.code : e.signal ? 128 + (os.constants.signals[e.signal] ?? 0) : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
