/**
 * An image classifier in ONNX Runtime: a resolved model's ONNX file, opened once, with the
 * preprocessing and class names that travel with it, checked against the graph before the first image.
 *
 * This is what `zoo predict`, `zoo eval`, a distillation teacher and the library's
 * `pipeline('image-classification', ...)` run: one place that knows how a model's inputs are made.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../errors.js';
import { createSession, runClassifier, type ProviderChoice, type Session, type SessionOptions } from '../runtime/ort.js';
import { graphIO } from '../runtime/graph_io.js';
import type { ResolvedModel } from '../hub/resolve.js';
import { labelNames } from '../onnx/metadata.js';
import { IMAGENET_PREPROCESSING, preprocessingForSize, type Preprocessing } from './preprocessing.js';
import { preprocessImage } from './predict.js';

/** An image: a file path, or the encoded bytes of a JPEG, PNG, WebP, GIF, AVIF or TIFF. */
export type ImageInput = string | Uint8Array;

export interface Classification {
  index: number;
  label: string;
  probability: number;
}

/** One image's answer: its top classes, or why it could not be read. */
export interface ImageResult {
  /** The path, or `#<position>` for bytes. */
  image: string;
  top?: Classification[];
  error?: string;
}

export interface ClassifyOptions {
  /** Classes per image (default 5). */
  topk?: number;
  /** Images per ONNX Runtime call (default 8). */
  batchSize?: number;
}

export interface OpenOptions {
  provider?: ProviderChoice;
  /** ONNX Runtime's session options (threads, optimization, memory arena). */
  session?: Omit<SessionOptions, 'provider'>;
  /** Receives a line for each assumption made (preprocessing adapted to the graph's input size). */
  notes?: string[];
}

/** File name endings the folder expansion picks up. */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.gif', '.avif', '.tif', '.tiff'];

/** The `k` most probable classes of one row of logits (softmax in float64). */
export function softmaxTop(logits: Float32Array, offset: number, k: number, n: number, labels: readonly string[] | undefined): Classification[] {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  const p = new Float64Array(n);
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[offset + i]! - max);
  const order = [...Array(n).keys()].sort((a, b) => p[b]! - p[a]!).slice(0, k);
  return order.map((i) => ({ index: i, label: labels?.[i] ?? String(i), probability: p[i]! / sum }));
}

const dimValue = (d: number | string | undefined): number | undefined => (typeof d === 'number' && d > 0 ? d : undefined);

/** An option that must be a positive integer (a batch of 0 would never advance). */
function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) throw new UserError(`${name} must be a positive integer, got ${value}`, { exitCode: 2 });
  return value;
}

export class ImageClassifier {
  private constructor(
    readonly session: Session,
    /** How messages name the model. */
    readonly name: string,
    readonly preprocessing: Preprocessing,
    readonly labels: readonly string[] | undefined,
    /** Classes the graph outputs; undefined when its output shape is symbolic. */
    readonly numClasses: number | undefined,
    /** The side of the square images the graph takes; undefined when its height and width are symbolic. */
    readonly inputSize: number | undefined,
    /** The images per run of a graph whose batch dimension is fixed (often 1 in other tools' exports); undefined when dynamic. */
    readonly fixedBatch: number | undefined = undefined,
  ) {}

  /** Set by dispose(): the session is released, and a call after it would reach a released session. */
  private disposed = false;

  private alive(): void {
    if (this.disposed) throw new UserError(`${this.name}: the classifier was disposed; open the model again to classify`);
  }

  /** Where the model runs. */
  get provider(): 'cpu' | 'cuda' {
    return this.session.provider;
  }

  /** Opens `model` (which must have an ONNX file) and checks its inputs, outputs, preprocessing and class names. */
  static async open(model: Pick<ResolvedModel, 'onnx' | 'label' | 'meta' | 'preprocessingFrom'>, options: OpenOptions = {}): Promise<ImageClassifier> {
    if (!model.onnx) throw new UserError(`${model.label} has no ONNX file to run`);
    const session = await createSession(model.onnx, { ...options.session, provider: options.provider ?? 'auto' });
    try {
      const io = graphIO(session);
      const input = io.inputs[0];
      const output = io.outputs[0];
      if (io.inputs.length !== 1 || !input || input.type !== 'float32' || input.shape.length !== 4 || (dimValue(input.shape[1]) ?? 3) !== 3) {
        const shown = io.inputs.map((i) => `${i.name} ${i.type} [${i.shape.join(', ')}]`).join(', ');
        throw new UserError(`${model.label} is not an image classifier zoo can feed: it takes ${shown || 'no input'}, not one float32 [batch, 3, height, width] image tensor`);
      }
      if (!output || output.shape.length !== 2) {
        throw new UserError(`${model.label} is not a classifier: its first output is ${output ? `[${output.shape.join(', ')}]` : 'missing'}, not [batch, classes] logits`);
      }
      const [h, w] = [dimValue(input.shape[2]), dimValue(input.shape[3])];
      if (h !== undefined && w !== undefined && h !== w) throw new UserError(`${model.label} takes ${h}x${w} images; zoo's preprocessing makes square crops`);
      let pre = model.meta.preprocessing ?? IMAGENET_PREPROCESSING;
      if (h !== undefined && pre.crop !== h) {
        if (model.preprocessingFrom === 'model' && model.meta.preprocessing) {
          throw new UserError(`${model.label}: its preprocessing crops ${pre.crop}x${pre.crop}, but the graph takes ${h}x${h} images (the file's metadata does not fit its graph)`);
        }
        pre = preprocessingForSize(h, pre);
        options.notes?.push(`${model.label} records no preprocessing: using ImageNet's at the graph's ${h}x${h} input (resize ${pre.resizeShorter})`);
      } else if (!model.meta.preprocessing || model.preprocessingFrom === 'assumed') {
        options.notes?.push(`${model.label} records no preprocessing: using ImageNet's defaults (resize ${pre.resizeShorter}, crop ${pre.crop})`);
      }
      const classes = dimValue(output.shape[1]);
      const labels = labelNames(model.meta);
      if (labels && classes !== undefined && labels.length !== classes) {
        throw new UserError(`${model.label} outputs ${classes} classes but its metadata names ${labels.length}`);
      }
      return new ImageClassifier(session, model.label, pre, labels, classes, h, dimValue(input.shape[0]));
    } catch (e) {
      await session.session.release();
      throw e;
    }
  }

  /**
   * Logits [n, classes] for normalized NCHW images [n, 3, crop, crop]. A graph with a fixed batch runs
   * the images in runs of that many, the last one padded with zeros (their logits are dropped).
   */
  async logits(input: Float32Array, n: number): Promise<Float32Array> {
    this.alive();
    const c = this.preprocessing.crop;
    const fixed = this.fixedBatch;
    const run = async (x: Float32Array, rows: number): Promise<Float32Array> => {
      try {
        return await runClassifier(this.session, x, [rows, 3, c, c]);
      } catch (e) {
        // The graph loaded and takes images of this shape, yet cannot run on them: the file is broken.
        const why = String((e as Error).message ?? e).split('\n')[0]!.slice(0, 300);
        throw new UserError(`${this.name}: ONNX Runtime could not run the graph on ${rows} image(s) of 3x${c}x${c}: ${why}`, { cause: e });
      }
    };
    let out: Float32Array;
    if (fixed === undefined || fixed === n) {
      out = await run(input, n);
    } else {
      const per = 3 * c * c;
      const parts: Float32Array[] = [];
      for (let start = 0; start < n; start += fixed) {
        const rows = Math.min(fixed, n - start);
        const chunk = new Float32Array(fixed * per);
        chunk.set(input.subarray(start * per, (start + rows) * per));
        const got = await run(chunk, fixed);
        parts.push(got.subarray(0, (got.length / fixed) * rows));
      }
      out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
    }
    if (this.labels && out.length !== n * this.labels.length) {
      throw new UserError(`${this.name} gives ${out.length / n} outputs per image but names ${this.labels.length} classes`);
    }
    return out;
  }

  /**
   * The top classes of each image. An image that cannot be read gets an `error` instead of stopping
   * the others; a model that fails to run throws.
   */
  async classify(images: readonly ImageInput[], options: ClassifyOptions = {}): Promise<ImageResult[]> {
    this.alive();
    if (!Array.isArray(images)) throw new UserError(`classify takes a list of images (file paths or encoded bytes), got ${images === null ? 'null' : typeof images}`);
    const bs = positive(options.batchSize, 8, 'batchSize');
    const k = positive(options.topk, 5, 'topk');
    const pre = this.preprocessing;
    const per = pre.crop * pre.crop * 3;
    const results: ImageResult[] = images.map((img, i) => ({ image: typeof img === 'string' ? img : `#${i}` }));
    for (let start = 0; start < images.length; start += bs) {
      const ok: { at: number; data: Float32Array }[] = [];
      for (let i = start; i < Math.min(start + bs, images.length); i++) {
        try {
          ok.push({ at: i, data: await preprocessImage(images[i]!, pre) });
        } catch (e) {
          if (!(e instanceof UserError)) throw e;
          results[i]!.error = e.message;
        }
      }
      if (!ok.length) continue;
      const input = new Float32Array(ok.length * per);
      ok.forEach((o, j) => input.set(o.data, j * per));
      const logits = await this.logits(input, ok.length);
      const classes = logits.length / ok.length;
      ok.forEach((o, j) => (results[o.at]!.top = softmaxTop(logits, j * classes, Math.min(k, classes), classes, this.labels)));
    }
    return results;
  }

  /** Releases the ONNX Runtime session; a second call does nothing. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.session.session.release();
  }
}

/**
 * Image arguments with folders expanded: a directory stands for the images below it (by extension,
 * sorted, recursively). Other arguments are kept as given; unreadable ones are reported per image.
 */
export async function expandImages(args: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else if (e.isFile() && IMAGE_EXTENSIONS.includes(path.extname(e.name).toLowerCase())) out.push(full);
    }
  };
  for (const a of args) {
    const st = await stat(a).catch(() => undefined);
    if (st?.isDirectory()) {
      const before = out.length;
      await walk(a);
      if (out.length === before) throw new UserError(`${a}: a folder with no images in it (${IMAGE_EXTENSIONS.join(' ')})`);
    } else out.push(a);
  }
  return out;
}
