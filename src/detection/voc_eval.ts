/**
 * The Pascal VOC detection metric, computed as the devkit computes it (VOCevaldet.m, VOCap.m), so that
 * its numbers can be put beside the published ones; and the devkit's result files
 * (`comp4_det_test_<class>.txt`) so that detections can be exchanged with other tools.
 *
 * Per class, the detections are taken in descending score order (a stable sort: tied scores keep their
 * input order, as MATLAB's sort does). Each is compared with every ground-truth box of its class in its
 * image, difficult ones included, by IoU in the devkit's pixel convention (a box covers
 * (x2 - x1 + 1) x (y2 - y1 + 1) pixels), and assigned to the one of highest overlap (the first on ties):
 * - overlap >= the threshold (0.5) with a non-difficult box: a true positive if that box is not yet
 *   taken, otherwise a false positive (a duplicate; the detection does not fall back to another box);
 * - overlap >= the threshold with a difficult box: neither true nor false positive, however often;
 * - otherwise a false positive.
 * Recall counts the non-difficult boxes only. Two APs come from the precision/recall points:
 * - `ap07`, VOC2007's 11-point AP: the mean over t = 0:0.1:1 of the highest precision at recall >= t
 *   (0 where no recall reaches t);
 * - `ap`, VOC2010's area under the curve: precision made monotone from the right (the envelope),
 *   summed over the steps of recall.
 * The mean is over the classes with at least one non-difficult box in the ground truth; a class
 * without one has NaN APs and is left out; a class with ground truth and no detection has AP 0.
 *
 * Python ports differ from the devkit in two corners, and `rule: 'voc_eval.py'` reproduces them
 * (py-faster-rcnn's voc_eval.py, which detectron2 also uses): a match needs an overlap strictly above
 * the threshold, and the 11 recall thresholds are numpy's `arange(0, 1.1, 0.1)`, where 0.6 and 0.7 come
 * out one ulp high (6 * 0.1 = 0.6000000000000001), so that a recall of exactly 3/5 or 7/10 does not
 * reach them. (Both compute 0.3 as 3 * 0.1 = 0.30000000000000004, so a recall of exactly 3/10 reaches
 * t = 0.3 under neither.) Where the first detections land only on difficult boxes the devkit's
 * precision there is 0/0; it is 0 here, as in voc_eval.py. That changes no AP but one: where every
 * detection of a class lands on a difficult box, the devkit's 11-point AP is NaN, and 0 here.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';

/** One detection in the devkit's pixel coordinates (1-based, inclusive corners, as in the XML annotations). */
export interface Detection {
  imageId: string;
  /** Index into the class list (no background class). */
  label: number;
  score: number;
  box: [x1: number, y1: number, x2: number, y2: number];
}

/** What the evaluator needs of an annotated object (a structural subset of the VOC reader's VocObject). */
export interface VocGroundObject {
  label: number;
  box: readonly [number, number, number, number];
  difficult: boolean;
}

/** What the evaluator needs of an annotated image (a structural subset of the VOC reader's VocImage). */
export interface VocGroundImage {
  id: string;
  objects: readonly VocGroundObject[];
}

/** Whose corners to follow: the MATLAB devkit (default) or py-faster-rcnn's voc_eval.py (see the module comment). */
export type VocRule = 'devkit' | 'voc_eval.py';

export interface VocEvalOptions {
  /** The overlap a detection needs with a ground-truth box, in [0, 1] (default 0.5). */
  iou?: number;
  /** Default 'devkit'. */
  rule?: VocRule;
}

export interface VocClassResult {
  /** VOC2007 11-point AP, in [0, 1]; NaN without ground truth. */
  ap07: number;
  /** Area-under-curve AP (VOC2010 on), in [0, 1]; NaN without ground truth. */
  ap: number;
  /** Non-difficult ground-truth boxes (the denominator of recall). */
  gt: number;
  /** Detections of the class. */
  detections: number;
}

export interface VocEvalResult {
  /** Mean of `ap07` over the classes with ground truth; NaN when there is none. */
  map07: number;
  /** Mean of `ap` over the classes with ground truth; NaN when there is none. */
  map: number;
  /** Per class, keyed and ordered by the class list. */
  classes: Record<string, VocClassResult>;
}

/** The devkit's IoU of two boxes: pixel-inclusive areas, 0 when they do not share a pixel. */
export function vocIou(a: readonly number[], b: readonly number[]): number {
  const iw = Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!) + 1;
  const ih = Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!) + 1;
  if (!(iw > 0 && ih > 0)) return 0;
  // Operand order as in VOCevaldet.m and voc_eval.py, so that the last bits agree with theirs.
  const ua = (a[2]! - a[0]! + 1) * (a[3]! - a[1]! + 1) + (b[2]! - b[0]! + 1) * (b[3]! - b[1]! + 1) - iw * ih;
  return (iw * ih) / ua;
}

/** The 11 recall thresholds of VOC2007's AP, as each implementation computes 0:0.1:1 in floating point. */
export function recallThresholds07(rule: VocRule = 'devkit'): number[] {
  // MATLAB's colon operator fills the second half of a range down from its end (1 - k * 0.1);
  // numpy's arange computes every element as start + i * step.
  return Array.from({ length: 11 }, (_, k) => (rule === 'devkit' && k > 5 ? 1 - (10 - k) * 0.1 : k * 0.1));
}

/**
 * VOC2007's 11-point AP of a precision/recall sequence (one point per detection, in score order):
 * the mean over the thresholds t of the highest precision at recall >= t, 0 where no recall reaches t.
 */
export function averagePrecision07(recall: ArrayLike<number>, precision: ArrayLike<number>, rule: VocRule = 'devkit'): number {
  // Summed, then divided: the devkit's running sum of p / 11 ends one ulp above 1 for a perfect detector.
  let sum = 0;
  for (const t of recallThresholds07(rule)) {
    let p = 0;
    for (let i = 0; i < recall.length; i++) if (recall[i]! >= t && precision[i]! > p) p = precision[i]!;
    sum += p;
  }
  return sum / 11;
}

/**
 * The area-under-curve AP of VOC2010 on (VOCap.m): the curve is closed with (0, 0) before and (1, 0)
 * after, precision is replaced by its running maximum from the right, and summed over recall's steps.
 */
export function averagePrecisionArea(recall: ArrayLike<number>, precision: ArrayLike<number>): number {
  const n = recall.length;
  const mrec = new Float64Array(n + 2);
  const mpre = new Float64Array(n + 2);
  for (let i = 0; i < n; i++) {
    mrec[i + 1] = recall[i]!;
    mpre[i + 1] = precision[i]!;
  }
  mrec[n + 1] = 1;
  for (let i = n; i >= 0; i--) mpre[i] = Math.max(mpre[i]!, mpre[i + 1]!);
  let ap = 0;
  for (let i = 1; i <= n + 1; i++) if (mrec[i] !== mrec[i - 1]) ap += (mrec[i]! - mrec[i - 1]!) * mpre[i]!;
  return ap;
}

/** Checks of the inputs; `where` names the detection or object in the message. */
function checkLabel(label: number, numClasses: number, where: string): void {
  if (!Number.isInteger(label) || label < 0 || label >= numClasses) {
    throw new UserError(`${where}: label ${label} is not a class index (0..${numClasses - 1})`);
  }
}

function checkBox(box: readonly number[], where: string): void {
  if (!Array.isArray(box) || box.length !== 4 || !box.every((v) => Number.isFinite(v))) {
    throw new UserError(`${where}: the box ${JSON.stringify(box)} is not four finite numbers x1 y1 x2 y2`);
  }
}

function checkClasses(classes: readonly string[]): void {
  if (classes.length === 0) throw new UserError('the class list is empty');
  const seen = new Set<string>();
  for (const c of classes) {
    if (typeof c !== 'string' || c === '') throw new UserError(`the class list has an empty name: ${JSON.stringify(classes)}`);
    if (seen.has(c)) throw new UserError(`the class list names '${c}' twice`);
    seen.add(c);
  }
}

function checkIou(iou: number): void {
  if (!(typeof iou === 'number' && iou >= 0 && iou <= 1)) throw new UserError(`the IoU threshold ${iou} is not a number in [0, 1]`);
}

interface GroundCell {
  boxes: (readonly number[])[];
  difficult: boolean[];
  taken: boolean[];
}

/**
 * The VOC metric of `detections` against `ground` (see the module comment for the rules). Every
 * detection must name an image of `ground` (the devkit refuses unknown images too). Pure: the inputs
 * are not changed.
 */
export function evaluateVoc(
  ground: readonly VocGroundImage[],
  detections: readonly Detection[],
  classes: readonly string[],
  options: VocEvalOptions = {},
): VocEvalResult {
  const iou = options.iou ?? 0.5;
  const rule = options.rule ?? 'devkit';
  checkIou(iou);
  if (rule !== 'devkit' && rule !== 'voc_eval.py') throw new UserError(`unknown VOC evaluation rule '${String(rule)}' (devkit, voc_eval.py)`);
  checkClasses(classes);
  const C = classes.length;

  // cells[label].get(imageId): that class's boxes in that image; images without any are absent.
  const images = new Set<string>();
  const cells: Map<string, GroundCell>[] = Array.from({ length: C }, () => new Map());
  const npos = new Array<number>(C).fill(0);
  for (const image of ground) {
    if (images.has(image.id)) throw new UserError(`the ground truth has image '${image.id}' twice`);
    images.add(image.id);
    image.objects.forEach((o, j) => {
      const where = `image '${image.id}', object ${j + 1}`;
      checkLabel(o.label, C, where);
      checkBox(o.box, where);
      let cell = cells[o.label]!.get(image.id);
      if (!cell) cells[o.label]!.set(image.id, (cell = { boxes: [], difficult: [], taken: [] }));
      cell.boxes.push(o.box);
      cell.difficult.push(Boolean(o.difficult));
      cell.taken.push(false);
      if (!o.difficult) npos[o.label]!++;
    });
  }

  const byClass: Detection[][] = Array.from({ length: C }, () => []);
  detections.forEach((d, i) => {
    const where = `detection ${i + 1}`;
    if (!images.has(d.imageId)) throw new UserError(`${where} is for image '${d.imageId}', which is not in the ground truth`);
    checkLabel(d.label, C, where);
    if (!Number.isFinite(d.score)) throw new UserError(`${where}: the score ${d.score} is not a finite number`);
    checkBox(d.box, where);
    byClass[d.label]!.push(d);
  });

  const result: VocEvalResult = { map07: NaN, map: NaN, classes: {} };
  let sum07 = 0;
  let sum = 0;
  let counted = 0;
  for (let c = 0; c < C; c++) {
    const dets = byClass[c]!;
    const n = npos[c]!;
    let ap07 = NaN;
    let ap = NaN;
    if (n > 0) {
      const { recall, precision } = precisionRecall(dets, cells[c]!, n, iou, rule);
      ap07 = averagePrecision07(recall, precision, rule);
      ap = averagePrecisionArea(recall, precision);
      sum07 += ap07;
      sum += ap;
      counted++;
    }
    result.classes[classes[c]!] = { ap07, ap, gt: n, detections: dets.length };
  }
  if (counted > 0) {
    result.map07 = sum07 / counted;
    result.map = sum / counted;
  }
  return result;
}

/** One class's precision/recall points in descending score order; marks the boxes it takes in `cells`. */
function precisionRecall(dets: readonly Detection[], cells: Map<string, GroundCell>, npos: number, iou: number, rule: VocRule) {
  // Array.prototype.sort is stable: tied scores keep their input order.
  const order = dets.map((_, i) => i).sort((a, b) => dets[b]!.score - dets[a]!.score);
  const recall = new Float64Array(order.length);
  const precision = new Float64Array(order.length);
  let tp = 0;
  let fp = 0;
  order.forEach((k, i) => {
    const d = dets[k]!;
    const cell = cells.get(d.imageId);
    let ovmax = -Infinity;
    let jmax = -1;
    if (cell) {
      for (let j = 0; j < cell.boxes.length; j++) {
        const ov = vocIou(d.box, cell.boxes[j]!);
        if (ov > 0 && ov > ovmax) {
          ovmax = ov;
          jmax = j;
        }
      }
    }
    const matched = rule === 'devkit' ? ovmax >= iou : ovmax > iou;
    if (!matched) fp++;
    else if (!cell!.difficult[jmax]) {
      if (cell!.taken[jmax]) fp++;
      else {
        tp++;
        cell!.taken[jmax] = true;
      }
    }
    recall[i] = tp / npos;
    precision[i] = tp + fp > 0 ? tp / (tp + fp) : 0;
  });
  return { recall, precision };
}

/** The `--json` form of a result: exactly map07, map and per class ap07 and ap; null where NaN. */
export interface VocResultJson {
  map07: number | null;
  map: number | null;
  classes: Record<string, { ap07: number | null; ap: number | null }>;
}

const orNull = (v: number): number | null => (Number.isFinite(v) ? v : null);

/** The `--json` form of a result (JSON has no NaN: classes without ground truth get null). */
export function vocResultJson(result: VocEvalResult): VocResultJson {
  const classes: VocResultJson['classes'] = {};
  for (const [name, c] of Object.entries(result.classes)) classes[name] = { ap07: orNull(c.ap07), ap: orNull(c.ap) };
  return { map07: orNull(result.map07), map: orNull(result.map), classes };
}

/**
 * A per-class table of a result, APs in percent as papers quote them, with the mean over the
 * classes that have ground truth. Classes without ground truth show '-'.
 */
export function formatVocResult(result: VocEvalResult): string {
  const pct = (v: number) => (Number.isFinite(v) ? (100 * v).toFixed(2) : '-');
  const entries = Object.entries(result.classes);
  const counted = entries.filter(([, c]) => c.gt > 0).length;
  const mean = `mean (${counted} of ${entries.length} classes)`;
  const width = Math.max(5, mean.length, ...entries.map(([name]) => name.length));
  const row = (name: string, gt: string, dets: string, ap07: string, ap: string) =>
    `${name.padEnd(width)}  ${gt.padStart(6)}  ${dets.padStart(10)}  ${ap07.padStart(10)}  ${ap.padStart(7)}`;
  const lines = [row('class', 'gt', 'detections', 'AP (VOC07)', 'AP')];
  for (const [name, c] of entries) lines.push(row(name, String(c.gt), String(c.detections), pct(c.ap07), pct(c.ap)));
  lines.push(row(mean, '', '', pct(result.map07), pct(result.map)));
  return lines.join('\n') + '\n';
}

/** Where the result files live: `<dir>/<prefix><class>.txt`. */
export interface VocResultFileOptions {
  /** Default 'comp4_det_test_' (the devkit's competition 4: training data of one's own choosing). */
  prefix?: string;
}

export const DEFAULT_RESULT_PREFIX = 'comp4_det_test_';

/**
 * The result file of one class (pure). A '/' or '\\' in a class name (Fashion-MNIST's "T-shirt/top")
 * becomes '_' in the file name.
 */
export function vocResultFile(dir: string, className: string, options: VocResultFileOptions = {}): string {
  const prefix = options.prefix ?? DEFAULT_RESULT_PREFIX;
  const name = className.replace(/[/\\]/g, '_');
  if (/[/\\\0]/.test(prefix) || name.includes('\0') || name === '.' || name === '..') {
    throw new UserError(`the class name '${className}' (with prefix '${prefix}') cannot name a result file`);
  }
  return join(dir, `${prefix}${name}.txt`);
}

/**
 * Writes the devkit's result files, one per class (empty for a class without detections), each line
 * `<image id> <score> <x1> <y1> <x2> <y2>` in the input order. Numbers are written in full (shortest
 * round-trip form) so that reading the files back evaluates exactly as the detections did. Each file
 * is replaced atomically. Returns the paths written, in class order.
 */
export async function writeVocDetections(
  dir: string,
  detections: readonly Detection[],
  classes: readonly string[],
  options: VocResultFileOptions = {},
): Promise<string[]> {
  checkClasses(classes);
  const paths = classes.map((c) => vocResultFile(dir, c, options));
  const lines: string[][] = classes.map(() => []);
  detections.forEach((d, i) => {
    const where = `detection ${i + 1}`;
    checkLabel(d.label, classes.length, where);
    if (typeof d.imageId !== 'string' || !/^\S+$/.test(d.imageId)) {
      throw new UserError(`${where}: the image id ${JSON.stringify(d.imageId)} cannot go in a result file (empty or with white space)`);
    }
    if (!Number.isFinite(d.score)) throw new UserError(`${where}: the score ${d.score} is not a finite number`);
    checkBox(d.box, where);
    lines[d.label]!.push(`${d.imageId} ${d.score} ${d.box[0]} ${d.box[1]} ${d.box[2]} ${d.box[3]}\n`);
  });
  for (let c = 0; c < classes.length; c++) await writeFileAtomic(paths[c]!, lines[c]!.join(''));
  return paths;
}

export interface ReadVocDetectionsOptions extends VocResultFileOptions {
  /** The split's image ids: a line naming another image is an error (or skipped, see `allowUnknownImages`). */
  imageIds?: Iterable<string>;
  /** Skip lines for images outside `imageIds` instead of refusing them (result files of a larger set). */
  allowUnknownImages?: boolean;
}

export interface VocDetectionFiles {
  /** In class order, then line order. */
  detections: Detection[];
  /** Classes without a result file (read as no detections). */
  missing: string[];
  /** Lines skipped for images outside `imageIds` (with `allowUnknownImages`). */
  skipped: number;
}

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const FIELDS = ['score', 'x1', 'y1', 'x2', 'y2'] as const;

/**
 * Reads the devkit's result files of `classes` from `dir`. A class without a file has no detections
 * (listed in `missing`); a directory without a file for any class is an error, since it is almost
 * surely the wrong directory or prefix. A malformed line is a UserError naming the file and line.
 */
export async function readVocDetections(dir: string, classes: readonly string[], options: ReadVocDetectionsOptions = {}): Promise<VocDetectionFiles> {
  checkClasses(classes);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new UserError(`'${dir}' is not a directory of VOC result files`);
  const known = options.imageIds === undefined ? undefined : new Set(options.imageIds);
  const out: VocDetectionFiles = { detections: [], missing: [], skipped: 0 };
  for (let label = 0; label < classes.length; label++) {
    const file = vocResultFile(dir, classes[label]!, options);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        out.missing.push(classes[label]!);
        continue;
      }
      throw new UserError(`cannot read '${file}': ${(e as Error).message}`);
    }
    const lines = text.replace(/^\uFEFF/, '').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '') continue;
      const at = `${file}:${i + 1}`;
      const fields = line.split(/\s+/);
      if (fields.length !== 6) {
        const shown = line.length > 80 ? `${line.slice(0, 77)}...` : line;
        throw new UserError(`${at}: expected '<image id> <score> <x1> <y1> <x2> <y2>', got '${shown}'`);
      }
      const values = fields.slice(1).map((s, k) => {
        const v = NUMBER.test(s) ? Number(s) : NaN;
        if (!Number.isFinite(v)) throw new UserError(`${at}: ${FIELDS[k]} '${s}' is not a finite number`);
        return v;
      });
      const imageId = fields[0]!;
      if (known && !known.has(imageId)) {
        if (options.allowUnknownImages) {
          out.skipped++;
          continue;
        }
        throw new UserError(`${at}: image '${imageId}' is not in the split`);
      }
      out.detections.push({ imageId, label, score: values[0]!, box: [values[1]!, values[2]!, values[3]!, values[4]!] });
    }
  }
  if (out.missing.length === classes.length) {
    throw new UserError(`no VOC result file in '${dir}' (expected ${vocResultFile(dir, classes[0]!, options)} and the like)`);
  }
  return out;
}
