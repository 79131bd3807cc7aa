/**
 * Writing files so that a crash, a failed check or a hostile path never leaves a truncated or unverified
 * file at the destination, and never replaces something that is not ours to replace.
 *
 * The data goes to a temporary file created exclusively (O_EXCL, which never follows a link) in the
 * target's own directory, is flushed, and is renamed onto the target; the directory is flushed after
 * the rename. A target that exists must be a regular file: a device node (`-o /dev/null` as root), a
 * FIFO, a socket or a directory is refused, and so is a symbolic link unless `followSymlinks` is set,
 * in which case the link stays and the file it points to is replaced. An existing file keeps its
 * permission bits.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, readlink, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError } from '../errors.js';

export interface AtomicWriteOptions {
  /** Write through a symbolic link at the target (replacing the file it points to) instead of refusing it. */
  followSymlinks?: boolean;
  /** Permission bits of a new file (default 0o644, less the umask); an existing file keeps its own. */
  mode?: number;
}

/** What a write may go through: bytes, text, or a sequence of chunks (serializers that stream). */
export type AtomicData = Uint8Array | string | Iterable<Uint8Array>;

function describeKind(s: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  if (s.isDirectory()) return 'a directory';
  if (s.isFIFO()) return 'a FIFO';
  if (s.isSocket()) return 'a socket';
  if (s.isCharacterDevice() || s.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * The path that a write to `path` replaces, after checking it may be replaced: the target itself, or
 * with `followSymlinks` the file at the end of its links. Pure checks; nothing is created.
 * Throws a UserError naming the path for a target that is not a regular file.
 */
export async function writableTarget(path: string, options: AtomicWriteOptions = {}): Promise<{ target: string; mode: number | undefined }> {
  const abs = resolve(path);
  const st = await lstat(abs).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
    throw new UserError(`cannot write '${path}': ${e.message}`);
  });
  if (!st) return { target: abs, mode: undefined };
  if (st.isSymbolicLink()) {
    if (!options.followSymlinks) {
      const to = await readlink(abs).catch(() => '?');
      throw new UserError(`'${path}' is a symbolic link (to ${to}); refusing to replace it (write to the file itself, or pass --follow-symlinks)`, { exitCode: 2 });
    }
    // The end of the chain; a dangling link names a file that does not exist yet.
    const real = await realpath(abs).catch(async () => resolve(dirname(abs), await readlink(abs)));
    const end = await stat(real).catch(() => undefined);
    if (end && !end.isFile()) throw new UserError(`'${path}' links to ${real}, which is ${describeKind(end)}; refusing to write there`, { exitCode: 2 });
    return { target: real, mode: end ? end.mode & 0o7777 : undefined };
  }
  if (!st.isFile()) throw new UserError(`'${path}' is ${describeKind(st)}, not a regular file; refusing to replace it`, { exitCode: 2 });
  return { target: abs, mode: st.mode & 0o7777 };
}

function chunksOf(data: AtomicData): Iterable<Uint8Array> {
  if (typeof data === 'string') return [new TextEncoder().encode(data)];
  if (data instanceof Uint8Array) return [data];
  return data;
}

async function syncDirectory(dir: string): Promise<void> {
  // Makes the rename itself durable; some file systems refuse to open a directory for this.
  const fh = await open(dir, constants.O_RDONLY).catch(() => undefined);
  if (!fh) return;
  try {
    await fh.sync();
  } catch {
    // not supported here (some network and container file systems): the data itself is flushed
  } finally {
    await fh.close();
  }
}

/** Writes `data` to `path` atomically, creating the parent directory. See the module comment for what is refused. */
export async function writeFileAtomic(path: string, data: AtomicData, options: AtomicWriteOptions = {}): Promise<void> {
  const { target, mode } = await writableTarget(path, options);
  const dir = dirname(target);
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new UserError(`cannot create the directory of '${path}': ${(e as Error).message}`);
  }
  const tmp = join(dir, `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, options.mode ?? 0o644);
    try {
      for (const chunk of chunksOf(data)) {
        // write() may take less than asked for; loop until the chunk is out.
        for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
      }
      // Flushed before the rename: otherwise a power loss can leave the new name on an empty file.
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (mode !== undefined) await chmod(tmp, mode);
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true });
    if (e instanceof UserError) throw e;
    throw new UserError(`cannot write '${path}': ${(e as Error).message}`, { cause: e });
  }
  await syncDirectory(dir);
}

/**
 * Creates directory `dir` (and its parents) for output; a path that is a file, or a directory that cannot
 * be made, is a UserError naming it and `what` (the flag or role that gave it).
 */
export async function ensureDir(dir: string, what: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'EEXIST' || err.code === 'ENOTDIR' ? 'a file is in the way' : err.message.split('\n')[0];
    throw new UserError(`${what} ${dir} cannot be made a directory: ${why}`, { cause: e });
  }
}
