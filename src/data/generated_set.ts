/**
 * Publishing a generated data set: written into a hidden directory beside the target and renamed into place
 * when complete, so an interrupted run never leaves something that looks like a finished set; a manifest
 * (`zoo-generated.json`: generator version, options, counts) inside it marks it as made here, so an existing
 * set is reused only when it was made with the same options, and replaced only when it was made by zoo.
 * The generated detection set (VOC layout) and segmentation set (ADE20K layout) are published this way.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../errors.js';

/** What a generator does when its set is already there. */
export type IfExists = 'error' | 'overwrite' | 'reuse';

/** Name of the manifest at the root of a generated set. */
export const GENERATED_MANIFEST = 'zoo-generated.json';

interface Manifest<O, C> {
  generator: string;
  version: number;
  options: O;
  counts: C;
}

/** What `publishGeneratedSet` needs to know about one generator. */
export interface PublishSpec<O, C> {
  /** The directory the user gave; the set is `<dir>/<name>`. */
  dir: string;
  /** The set's directory name ('VOCdevkit', 'ADEChallengeData2016'). */
  name: string;
  /** Bumped whenever the same options would render different files. */
  version: number;
  options: O;
  /** Whether two option sets render the same files. */
  sameOptions(a: O, b: O): boolean;
  /**
   * 'error': an existing set is a UserError; 'reuse' it if it was generated with the same options (an error
   * otherwise); 'overwrite' it if it was generated (a directory not made here is never replaced).
   */
  ifExists: IfExists;
  /** Writes the set's files into `tmp` (an empty directory) and returns its counts. */
  write(tmp: string): Promise<C>;
}

/** Where the set is and what it holds; `reused` when an existing set was returned as is. */
export interface PublishedSet<O, C> {
  root: string;
  options: O;
  counts: C;
  reused: boolean;
}

async function readManifest<O, C>(root: string): Promise<Manifest<O, C> | undefined> {
  const text = await readFile(path.join(root, GENERATED_MANIFEST), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const m = JSON.parse(text) as Manifest<O, C>;
    return m && m.generator === 'zoo' && typeof m.options === 'object' && typeof m.counts === 'object' ? m : undefined;
  } catch {
    return undefined;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Removes partial sets named `.<name>-partial-...` left by runs that were killed (their process is gone). */
async function removeStalePartials(dir: string, name: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const pattern = new RegExp(`^\\.${escapeRegExp(name)}-(?:partial|old)-(\\d+)-[0-9a-f]+$`);
  for (const entry of names) {
    const m = pattern.exec(entry);
    if (!m) continue;
    const pid = Number(m[1]);
    let alive = pid === process.pid;
    if (!alive) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (e) {
        alive = (e as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    if (!alive) await rm(path.join(dir, entry), { recursive: true, force: true });
  }
}

/** Writes (or reuses) a generated set as the module comment says. */
export async function publishGeneratedSet<O, C>(spec: PublishSpec<O, C>): Promise<PublishedSet<O, C>> {
  const { dir, name, options } = spec;
  const abs = path.resolve(dir);
  const root = path.join(abs, name);
  const existing = await stat(root).then(
    () => true,
    () => false,
  );
  if (existing) {
    const manifest = await readManifest<O, C>(root);
    const where = path.join(dir, name);
    if (spec.ifExists === 'error') throw new UserError(`${where} already exists (reuse it, or overwrite it, or choose another directory)`, { exitCode: 2 });
    if (!manifest) throw new UserError(`${where} exists and was not made by zoo's generator; refusing to ${spec.ifExists === 'reuse' ? 'reuse' : 'replace'} it`, { exitCode: 2 });
    if (spec.ifExists === 'reuse') {
      if (manifest.version === spec.version && spec.sameOptions(manifest.options, options)) return { root, options, counts: manifest.counts, reused: true };
      throw new UserError(`${where} was generated with other options (or by another version of the generator); overwrite it or choose another directory`, { exitCode: 2 });
    }
  }

  await mkdir(abs, { recursive: true }).catch((e: Error) => {
    throw new UserError(`cannot create ${dir}: ${e.message}`);
  });
  await removeStalePartials(abs, name);
  const tmp = path.join(abs, `.${name}-partial-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(tmp, { recursive: true });
    const counts = await spec.write(tmp);
    const manifest: Manifest<O, C> = { generator: 'zoo', version: spec.version, options, counts };
    await writeFile(path.join(tmp, GENERATED_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    if (existing) {
      const old = path.join(abs, `.${name}-old-${process.pid}-${randomBytes(4).toString('hex')}`);
      await rename(root, old);
      await rename(tmp, root);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, root);
    }
    return { root, options, counts, reused: false };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    if (e instanceof UserError) throw e;
    const err = e as NodeJS.ErrnoException;
    if (err.code) throw new UserError(`cannot write the generated set under ${dir}: ${err.message}`, { cause: e });
    throw e;
  }
}

/**
 * Runs file-writing jobs with a bound on how many are in flight: scenes are rendered in order on the
 * JavaScript thread while the encoding and writing of earlier ones overlap in sharp's and libuv's threads.
 * After a failure no new job starts; `drain` throws the first failure.
 */
export class WriteQueue {
  private readonly pending = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly limit = 8) {}

  /** False once a job has failed (stop adding). */
  get ok(): boolean {
    return this.failure === undefined;
  }

  /** Starts `job`, then waits while `limit` jobs are in flight. */
  async add(job: () => Promise<void>): Promise<void> {
    if (this.failure) return;
    const p = job().catch((e) => {
      this.failure ??= { error: e };
    });
    this.pending.add(p);
    void p.then(() => this.pending.delete(p));
    if (this.pending.size >= this.limit) await Promise.race(this.pending);
  }

  /** Waits for every job; throws the first failure. */
  async drain(): Promise<void> {
    await Promise.all(this.pending);
    if (this.failure) throw this.failure.error;
  }
}
