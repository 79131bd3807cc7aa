/**
 * The ADE20K scene-parsing benchmark's metrics (pixel accuracy and mean IoU), computed as the benchmark
 * code computes them (the sceneparsing devkit's `intersectionAndUnion`, GluonCV's `batch_pix_accuracy`
 * and `batch_intersection_union`), so that zoo's numbers can be put beside the published ones.
 *
 * Label encoding (annotations and predictions alike): 0 = unlabeled, v in 1..K = class index v - 1.
 * - Only labeled pixels count. A prediction on an unlabeled pixel is dropped entirely: it is neither
 *   correct nor wrong, and it adds to no class's union (the devkit multiplies the prediction by
 *   `label > 0` before counting: "we should not penalize detections in unlabeled portions").
 * - pixAcc = correct labeled pixels / labeled pixels. A labeled pixel predicted 0 ("no class") is wrong.
 * - For each class k, over the whole split (not per image, then averaged):
 *     intersection_k = labeled pixels of class k predicted k,
 *     union_k = pixels labeled k + labeled pixels predicted k - intersection_k,
 *     IoU_k = intersection_k / union_k.
 *   A class that is predicted somewhere but never labeled has union > 0 and IoU 0: it counts.
 * - mIoU = the mean of IoU_k over the classes with union_k > 0; a class with union 0 (never labeled and
 *   never predicted on a labeled pixel) has `iou: null` and is left out.
 *
 * The benchmark code takes the mean over all K classes, giving a class with union 0 an IoU of 0
 * (0 / eps). The two means are equal whenever every class occurs in the split, as all 150 do in
 * ADE20K's validation set. zoo leaves such classes out because an absent class is no evidence about
 * the model: counting it as 0 would make the mean depend on how long the class list is rather than on
 * the predictions, so that a subset of the validation images, or a data set of one's own whose class
 * list names a class its validation images lack, would score a perfect prediction below 1. (The
 * benchmark also adds eps = 2^-52 to each union; that changes an IoU only where the union is a single
 * pixel, by one unit in the last place.)
 *
 * The counts (per class: labeled pixels, labeled pixels predicted as it, their intersection: the
 * confusion matrix's row sums, column sums and diagonal) are accumulated in one pass in float64, exact
 * up to 2^53 pixels (ADE20K's validation set has about 3 * 10^8).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import type { SegDataset } from './ade.js';
import { readLabelPng, type LabelImage } from './png.js';

export { colorize, palette, writeOverlay, type RgbImage } from './overlay.js';

/** One class's figures over the split. */
export interface SegClassResult {
  /** intersection / union; null where the union is 0 (the class neither occurs nor is predicted). */
  iou: number | null;
  /** Pixels labeled with the class. */
  pixels: number;
  /** Labeled pixels predicted as the class. */
  predicted: number;
  /** Pixels labeled with the class and predicted as it. */
  intersection: number;
  /** pixels + predicted - intersection. */
  union: number;
}

export interface SegEvalResult {
  /** Correct labeled pixels / labeled pixels, in [0, 1]; NaN without labeled pixels. */
  pixAcc: number;
  /** Mean IoU over the classes with union > 0, in [0, 1]; NaN when there is none. */
  mIoU: number;
  /** Per class, keyed and ordered by the class list. */
  classes: Record<string, SegClassResult>;
  /** Pixels with a label (value > 0) over the split. */
  labeledPixels: number;
}

/** Where the values of one `add` came from, so that a bad value is reported by file and pixel. */
export interface SegSource {
  /** Row length, to report a pixel as (x, y); without it the flat index is given. */
  width?: number;
  /** File (or description) of the predictions. */
  predictions?: string;
  /** File (or description) of the labels. */
  labels?: string;
}

function pixelName(i: number, width: number | undefined): string {
  if (!width) return `pixel ${i}`;
  const x = i % width;
  const y = (i - x) / width;
  return `pixel (${x}, ${y})`;
}

function checkClasses(classes: readonly string[], numClasses: number): void {
  if (classes.length !== numClasses) {
    throw new UserError(`the class list has ${classes.length} names, but the metric counts ${numClasses} classes`);
  }
  const seen = new Set<string>();
  for (const c of classes) {
    if (typeof c !== 'string' || c === '') throw new UserError(`the class list has an empty name: ${JSON.stringify(classes)}`);
    if (seen.has(c)) throw new UserError(`the class list names '${c}' twice`);
    seen.add(c);
  }
}

/**
 * Accumulates the benchmark's counts over a split (see the module comment): call `add` once per image
 * (or batch), then `result`. The state is three counts per class (labeled pixels, labeled pixels
 * predicted as the class, and their intersection), so its size grows with K, not K^2.
 */
export class SegMetric {
  readonly numClasses: number;
  /** [pixels labeled k | labeled pixels predicted k | intersection k], each of length K. */
  private readonly counts: Float64Array;

  constructor(numClasses: number) {
    if (!Number.isInteger(numClasses) || numClasses < 1 || numClasses > 65535) {
      throw new UserError(`the number of classes ${numClasses} is not an integer in 1..65535`);
    }
    this.numClasses = numClasses;
    this.counts = new Float64Array(3 * numClasses);
  }

  /**
   * Adds the pixels of one image or batch. predictions: class values in the label encoding, 0..K
   * everywhere (a 0 on a labeled pixel counts as wrong); labels: 0 = ignored, 1..K. Both row-major of
   * the same length. A value outside 0..K (or not an integer) is a UserError naming the pixel, and
   * `source` names the files; nothing of that call is counted then.
   */
  add(predictions: ArrayLike<number>, labels: ArrayLike<number>, source: SegSource = {}): void {
    const n = labels.length;
    if (predictions.length !== n) {
      throw new UserError(
        `${source.predictions ?? 'the predictions'} have ${predictions.length} pixels, ${source.labels ?? 'the labels'} ${n}`,
      );
    }
    const K = this.numClasses;
    // Counted into scratch arrays first, so that a bad value leaves the accumulated state as it was.
    // Index 0 of each is the value 0 (unlabeled / no class), so that the loop needs no branch for it.
    const pixels = new Float64Array(K + 1);
    const predicted = new Float64Array(K + 1);
    const inter = new Float64Array(K + 1);
    for (let i = 0; i < n; i++) {
      const p = predictions[i]!;
      const l = labels[i]!;
      // (v >>> 0) !== v catches negative, fractional and NaN values at the cost of one compare.
      if (p > K || p >>> 0 !== p) {
        throw new UserError(`${source.predictions ?? 'predictions'}: value ${p} at ${pixelName(i, source.width)} is not a class value (0..${K})`);
      }
      if (l === 0) continue;
      if (l > K || l >>> 0 !== l) {
        throw new UserError(`${source.labels ?? 'labels'}: value ${l} at ${pixelName(i, source.width)} is not a label value (0..${K})`);
      }
      pixels[l]++;
      predicted[p]++;
      if (p === l) inter[l]++;
    }
    const c = this.counts;
    for (let k = 0; k < K; k++) {
      c[k] += pixels[k + 1]!;
      c[K + k] += predicted[k + 1]!;
      c[2 * K + k] += inter[k + 1]!;
    }
  }

  /** Forgets everything added. */
  reset(): void {
    this.counts.fill(0);
  }

  /** The figures of everything added so far, with `classes` naming the K classes in order. */
  result(classes: readonly string[]): SegEvalResult {
    const K = this.numClasses;
    checkClasses(classes, K);
    const c = this.counts;
    const out: Record<string, SegClassResult> = {};
    let labeledPixels = 0;
    let correct = 0;
    let sum = 0;
    let counted = 0;
    for (let k = 0; k < K; k++) {
      const pixels = c[k]!;
      const predicted = c[K + k]!;
      const intersection = c[2 * K + k]!;
      const union = pixels + predicted - intersection;
      const iou = union > 0 ? intersection / union : null;
      if (iou !== null) {
        sum += iou;
        counted++;
      }
      labeledPixels += pixels;
      correct += intersection;
      out[classes[k]!] = { iou, pixels, predicted, intersection, union };
    }
    return {
      pixAcc: labeledPixels > 0 ? correct / labeledPixels : NaN,
      mIoU: counted > 0 ? sum / counted : NaN,
      classes: out,
      labeledPixels,
    };
  }
}

/** The result of a predictions directory: the metric, and the files there that are not predictions for the split. */
export interface PredictionDirResult extends SegEvalResult {
  /** Names of the directory's entries that are no `<image id>.png` of the split (ignored), sorted. */
  ignored: string[];
  /** A one-line note about `ignored` for the user, absent when nothing was ignored. */
  note?: string;
}

const SHOWN = 5;

/**
 * Evaluates a directory of prediction PNGs against a data set: one `<image id>.png` per sample (the
 * annotations' file names), in the label encoding (0..K, 8- or 16-bit grayscale). A missing
 * prediction, a size that differs from the annotation's, or a value above the class count is a
 * UserError naming the file; other files in the directory are ignored and listed in the result.
 */
export async function evaluatePredictionDir(predictions: string, data: SegDataset): Promise<PredictionDirResult> {
  const st = await stat(predictions).catch(() => undefined);
  if (!st?.isDirectory()) throw new UserError(`'${predictions}' is not a directory of prediction PNGs`);
  let names: string[];
  try {
    names = await readdir(predictions);
  } catch (e) {
    throw new UserError(`cannot read the directory '${predictions}': ${(e as Error).message}`);
  }
  const entries = new Set(names);
  if (data.samples.length === 0) throw new UserError(`the data at '${data.root}' has no ${data.split} images to evaluate`);
  const wanted = data.samples.map((s) => `${s.id}.png`);
  const missing = data.samples.filter((_, i) => !entries.has(wanted[i]!));
  if (missing.length > 0) {
    const first = join(predictions, `${missing[0]!.id}.png`);
    throw new UserError(
      missing.length === 1
        ? `no prediction '${first}' for image '${missing[0]!.id}'`
        : `${missing.length} of the ${wanted.length} predictions are missing from '${predictions}', the first '${first}'`,
    );
  }
  for (const name of wanted) entries.delete(name);
  const ignored = [...entries].sort();

  const metric = new SegMetric(data.classes.length);
  // The next pair is read while the current one is counted.
  const read = (i: number) => {
    const s = data.samples[i]!;
    const file = join(predictions, wanted[i]!);
    return Promise.all([readLabelPng(file), readLabelPng(s.annotation)]).then(([p, a]) => ({ file, s, p, a }));
  };
  let next: Promise<{ file: string; s: (typeof data.samples)[number]; p: LabelImage; a: LabelImage }> | undefined = read(0);
  for (let i = 0; next; i++) {
    const { file, s, p, a } = await next;
    next = i + 1 < wanted.length ? read(i + 1) : undefined;
    // A rejected read-ahead is awaited (and reported) in the next round; until then it must not be unhandled.
    next?.catch(() => undefined);
    if (p.width !== a.width || p.height !== a.height) {
      throw new UserError(`${file}: the prediction is ${p.width}x${p.height}, its annotation ${s.annotation} is ${a.width}x${a.height}`);
    }
    metric.add(p.data, a.data, { width: a.width, predictions: file, labels: s.annotation });
  }
  const result: PredictionDirResult = { ...metric.result(data.classes), ignored };
  if (ignored.length > 0) {
    const shown = ignored.slice(0, SHOWN).join(', ') + (ignored.length > SHOWN ? `, ... (${ignored.length - SHOWN} more)` : '');
    result.note = `${ignored.length} ${ignored.length === 1 ? 'entry' : 'entries'} in '${predictions}' ${ignored.length === 1 ? 'is' : 'are'} not a prediction for the ${data.split} images and ${ignored.length === 1 ? 'was' : 'were'} ignored: ${shown}`;
  }
  return result;
}

/** The `--json` form of a result. */
export interface SegResultJson {
  pixAcc: number | null;
  mIoU: number | null;
  classes: Record<string, { iou: number | null }>;
}

const orNull = (v: number): number | null => (Number.isFinite(v) ? v : null);

/** The `--json` form of a result: pixAcc, mIoU and per class the IoU, fractions in [0, 1]; null where undefined. */
export function segResultJson(result: SegEvalResult): SegResultJson {
  const classes: SegResultJson['classes'] = {};
  for (const [name, c] of Object.entries(result.classes)) classes[name] = { iou: c.iou };
  return { pixAcc: orNull(result.pixAcc), mIoU: orNull(result.mIoU), classes };
}

/**
 * A per-class table of a result in the class order (labeled pixels and IoU in percent, as papers quote
 * it; '-' for a class with union 0), then the mean IoU over the counted classes and the pixel accuracy
 * over the labeled pixels.
 */
export function formatSegResult(result: SegEvalResult): string {
  const pct = (v: number | null) => (v !== null && Number.isFinite(v) ? (100 * v).toFixed(2) : '-');
  const entries = Object.entries(result.classes);
  const counted = entries.filter(([, c]) => c.iou !== null).length;
  const mean = `mIoU (${counted} of ${entries.length} classes)`;
  const acc = 'pixAcc (labeled pixels)';
  const pixels = (v: number) => String(v);
  const width = Math.max(5, mean.length, acc.length, ...entries.map(([name]) => name.length));
  const pixWidth = Math.max(6, pixels(result.labeledPixels).length);
  const row = (name: string, px: string, iou: string) => `${name.padEnd(width)}  ${px.padStart(pixWidth)}  ${iou.padStart(6)}`;
  const lines = [row('class', 'pixels', 'IoU')];
  for (const [name, c] of entries) lines.push(row(name, pixels(c.pixels), pct(c.iou)));
  lines.push(row(mean, '', pct(result.mIoU)));
  lines.push(row(acc, pixels(result.labeledPixels), pct(result.pixAcc)));
  return lines.join('\n') + '\n';
}
