/**
 * What the transfer tasks' library functions (detection.ts, segmentation.ts) share: the tfjs backend
 * of a task whose ops need direct tensor memory, the backbone a run starts from, and image inputs.
 */
import sharp from 'sharp';
import { UserError } from '../errors.js';
import type { BackendOptions } from '../backend/index.js';
import { getModelEntry, listModels } from '../models/registry.js';
import type { Model } from '../models/model.js';
import { decodeImage } from '../data/image_folder.js';
import { fromPretrained } from './pretrained.js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { RUN_FILES } from '../train/run_config.js';
import { pulledHeadFile } from '../hub/published_heads.js';

/**
 * The backend options of a transfer job (detection, segmentation): the backend asked for, else
 * ZOO_BACKEND, else 'auto' over the backends these heads are checked on: WebGPU on a GPU, else wasm
 * with its own kernels (not tfjs-node, not zoo's native kernels: ask for `native` by name).
 */
export function transferBackend(asked: string | undefined): Pick<BackendOptions, 'backend' | 'exclude'> {
  const b = asked ?? process.env.ZOO_BACKEND;
  return !b || b === 'auto' ? { backend: 'auto', exclude: ['tfjs-node-gpu', 'tfjs-node', 'native'] } : { backend: b };
}

/** `o` without its undefined fields. */
export function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * On --resume: the run's data directory (run.json's data.spec) must still be there unless --data gives
 * its new location (the data is then compared by its contents, not its path).
 */
export function checkDataLocation(spec: string, given: string | undefined): void {
  if (given !== undefined || existsSync(spec)) return;
  throw new UserError(`--resume: the run's data ${spec} does not exist: if it has moved, give its new location with --data`, { exitCode: 2 });
}

export interface TransferBackbone {
  arch: string;
  /** Whether weights were loaded (false: an architecture name, random initialization). */
  pretrained: boolean;
  /** The loaded classifier whose backbone the head starts from; the caller disposes it. */
  model?: Model;
}

/**
 * The backbone a run starts from: a registered architecture (random initialization), a local zoo or
 * published name, a weights file (with `arch` when it does not record one) or a classification run.
 * `resumedArch`: a resumed run's backbone is in its checkpoint, so the source is not read again.
 */
export async function resolveTransferBackbone(ref: string, options: { arch?: string; resumedArch?: string; resumedPretrained?: boolean } = {}): Promise<TransferBackbone> {
  if (options.resumedArch) return { arch: options.resumedArch, pretrained: options.resumedPretrained ?? false };
  if (listModels().includes(ref)) {
    getModelEntry(ref);
    return { arch: ref, pretrained: false };
  }
  refuseHeadRun(ref);
  const p = await fromPretrained(ref, { ...(options.arch ? { arch: options.arch } : {}) });
  return { arch: p.model.arch, pretrained: true, model: p.model };
}

/**
 * A detection or segmentation run directory given as a backbone: said as what it is (its run.json's
 * task), not read as a classification run whose configuration is broken.
 */
function refuseHeadRun(ref: string): void {
  const file = path.join(ref, RUN_FILES.config);
  if (!existsSync(ref) || !statSync(ref).isDirectory() || !existsSync(file)) return;
  let task: unknown;
  try {
    task = (JSON.parse(readFileSync(file, 'utf8')) as { task?: unknown } | null)?.task;
  } catch {
    return; // the classification reader says what is wrong with it
  }
  if (task !== 'detection' && task !== 'segmentation') return;
  throw new UserError(
    `${ref} is a ${task} run (${file} says task '${task}'), not a classifier: --backbone takes a classification run (zoo train), a local zoo or published classifier, a weights file or an architecture`,
    { exitCode: 2 },
  );
}

/** How image bytes are decoded: refused when truncated or corrupt, past `maxPixels`, resized to `size` (after EXIF orientation). */
export interface DecodeOptions {
  strict?: boolean;
  maxPixels?: number;
  size?: { width: number; height: number };
}

/** An image file or image bytes (JPEG, PNG, WebP) as RGB pixels, EXIF orientation applied. */
export async function decodeImageInput(img: string | Uint8Array, options: DecodeOptions = {}): Promise<{ data: Uint8Array; width: number; height: number; channels: 3 }> {
  if (typeof img === 'string' && !options.strict && options.maxPixels === undefined && !options.size) {
    const d = await decodeImage(img);
    return { data: d.data, width: d.width, height: d.height, channels: 3 };
  }
  let bytes: Uint8Array;
  if (typeof img === 'string') {
    const file = img;
    bytes = await readFile(file).catch((e: NodeJS.ErrnoException) => {
      throw new UserError(`image '${file}' cannot be read (${e.code ?? e.message})`);
    });
  } else bytes = img;
  try {
    let image = sharp(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
      ...(options.strict ? { failOn: 'error' as const } : {}),
      ...(options.maxPixels !== undefined ? { limitInputPixels: options.maxPixels } : {}),
    }).rotate();
    if (options.size) image = image.resize(options.size.width, options.size.height, { fit: 'fill', kernel: 'linear' });
    const { data, info } = await image.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: 3 };
  } catch (e) {
    throw new UserError(`the image bytes cannot be decoded (${(e as Error).message})`);
  }
}

/**
 * The ONNX file of a transfer model given as a run directory (its model.onnx), an .onnx file, a local zoo
 * name (`local`, where the task has local zoo records) or a published name pulled into the cache.
 */
export async function resolveHeadFile(
  ref: string,
  o: {
    /** 'detector' / 'segmenter': the word of messages and the manifest key of pulls. */
    what: 'detector' | 'segmenter';
    /** The task's command ('det', 'seg') and its runs' name ('detection', 'segmentation'). */
    command: string;
    runs: string;
    published: readonly { name: string; aliases: readonly string[] }[];
    local?: (name: string) => Promise<string | undefined>;
  },
): Promise<string> {
  if (existsSync(ref) && statSync(ref).isDirectory()) {
    const f = path.join(ref, RUN_FILES.onnx);
    if (!existsSync(f)) throw new UserError(`${ref} has no ${RUN_FILES.onnx}: export the run first (zoo ${o.command} export ${ref} -o ${f})`);
    return f;
  }
  if (existsSync(ref)) return ref;
  const local = await o.local?.(ref);
  if (local) return local;
  const published = o.published.find((e) => e.name === ref || e.aliases.includes(ref));
  if (published) {
    const file = await pulledHeadFile(published.name, o.what);
    if (file) return file;
    throw new UserError(`${published.name} is a published ${o.what} that is not in the cache: run 'zoo pull ${ref}' first`);
  }
  const names = o.local ? 'a local zoo name' : 'a pulled published name';
  throw new UserError(`'${ref}' is not a ${o.what}: give a ${o.runs} run directory, an exported .onnx file or ${names}`);
}
