/**
 * Writing files so that a crash or a failed check never leaves a truncated or unverified file at the
 * destination: write a temporary file beside it, then rename.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { UserError } from '../errors.js';

export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${Date.now().toString(36)}`;
}

/** Writes `data` to `path` atomically, creating the parent directory. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const dest = resolve(path);
  try {
    await mkdir(dirname(dest), { recursive: true });
  } catch (e) {
    throw new UserError(`cannot create the directory of '${path}': ${(e as Error).message}`);
  }
  const tmp = tempPathFor(dest);
  try {
    // Flushed before the rename: otherwise a power loss can leave the new name on an empty file.
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dest);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new UserError(`cannot write '${path}': ${(e as Error).message}`);
  }
}
