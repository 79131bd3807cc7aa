/**
 * A run directory's run.json: reading it back (what --resume continues from), checking its shape, and
 * telling, flag by flag, how a configuration differs from it.
 *
 * run.json is written by zoo but lives on the user's disk, so it is read as untrusted input: anything that
 * is not a configuration zoo could have written is a UserError naming the file.
 */
import { readFileSync, statSync } from 'node:fs';
import { UserError } from '../errors.js';
import { RECIPE_NAMES, type Tricks } from './recipes.js';
import type { TrainConfig } from './trainer.js';
import { IMAGENET_MEAN, IMAGENET_STD, defaultResize } from '../data/transforms.js';

/** The files of a run directory. */
export const RUN_FILES = { config: 'run.json', log: 'log.jsonl', checkpoint: 'checkpoint.safetensors', onnx: 'model.onnx' } as const;

/** The evaluation preprocessing of a run, as recorded in the ONNX file and the local zoo. */
export function runPreprocessing(imageSize: number) {
  return {
    inputSize: imageSize,
    resizeShorter: defaultResize(imageSize),
    crop: imageSize,
    interpolation: 'bilinear' as const,
    mean: IMAGENET_MEAN.map((v) => v / 255) as [number, number, number],
    std: IMAGENET_STD.map((v) => v / 255) as [number, number, number],
  };
}


type Kind = 'number' | 'integer' | 'boolean' | 'string';

const TRICK_FIELDS: Record<keyof Tricks, Kind> = {
  linearScaling: 'boolean',
  warmupEpochs: 'number',
  zeroGamma: 'boolean',
  noBiasDecay: 'boolean',
  fp16: 'boolean',
  cosine: 'boolean',
  labelSmoothing: 'number',
  mixup: 'number',
  distill: 'boolean',
  temperature: 'number',
};

const CONFIG_FIELDS: Partial<Record<keyof TrainConfig, Kind>> = {
  arch: 'string',
  epochs: 'integer',
  batchSize: 'integer',
  microBatch: 'integer',
  imageSize: 'integer',
  baseLr: 'number',
  momentum: 'number',
  nesterov: 'boolean',
  weightDecay: 'number',
  seed: 'integer',
  minCropArea: 'number',
};

const OPTIONAL_FIELDS: Partial<Record<keyof TrainConfig, Kind>> = { hardWeight: 'number', teacher: 'string', teacherArch: 'string' };
const DATA_FIELDS = { spec: 'string', train: 'integer', val: 'integer' } as const;
const DATA_OPTIONAL = { valSplit: 'number', limitTrain: 'integer', limitVal: 'integer' } as const;

function isKind(v: unknown, kind: Kind): boolean {
  if (kind === 'integer') return typeof v === 'number' && Number.isSafeInteger(v);
  if (kind === 'number') return typeof v === 'number' && Number.isFinite(v);
  return typeof v === kind;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Checks that `value` (parsed from `file`) has the shape of a TrainConfig; a UserError naming the file and
 * the first field that is missing or of the wrong type. Values are range-checked by `validateConfig`.
 */
export function parseRunConfig(value: unknown, file: string): TrainConfig {
  const bad = (what: string): never => {
    throw new UserError(`${file}: not a zoo run configuration (${what}); restore it or start a new run in another --out`);
  };
  const field = (o: Record<string, unknown>, key: string, kind: Kind, prefix = '') => {
    if (!isKind(o[key], kind)) bad(`'${prefix}${key}' ${key in o ? `is ${JSON.stringify(o[key])}, not` : 'is missing, expected'} ${kind === 'integer' ? 'an integer' : `a ${kind}`}`);
  };
  if (!isObject(value)) bad(`a JSON ${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value}, expected an object`);
  const o = value as Record<string, unknown>;
  for (const [k, kind] of Object.entries(CONFIG_FIELDS)) field(o, k, kind!);
  for (const [k, kind] of Object.entries(OPTIONAL_FIELDS)) if (o[k] !== undefined) field(o, k, kind!);
  if (!RECIPE_NAMES.includes(o.recipe as never)) bad(`'recipe' is ${JSON.stringify(o.recipe)}, not one of ${RECIPE_NAMES.join(', ')}`);
  if (!isObject(o.tricks)) bad(`'tricks' is ${'tricks' in o ? 'not an object' : 'missing'}`);
  for (const [k, kind] of Object.entries(TRICK_FIELDS)) field(o.tricks as Record<string, unknown>, k, kind, 'tricks.');
  if (!isObject(o.data)) bad(`'data' is ${'data' in o ? 'not an object' : 'missing'}`);
  const d = o.data as Record<string, unknown>;
  for (const [k, kind] of Object.entries(DATA_FIELDS)) field(d, k, kind, 'data.');
  for (const [k, kind] of Object.entries(DATA_OPTIONAL)) if (d[k] !== undefined) field(d, k, kind, 'data.');
  if (!Array.isArray(d.classes) || d.classes.length < 2 || !d.classes.every((c) => typeof c === 'string')) bad(`'data.classes' is not a list of at least two class names`);
  return value as unknown as TrainConfig;
}

/** Reads and checks a run.json (module comment); a UserError naming the file when it is not one. */
export function readRunConfig(file: string): TrainConfig {
  let text: string;
  try {
    // A FIFO or device would block the read or never end; zoo writes run.json as a regular file.
    if (!statSync(file).isFile()) throw new UserError(`${file} is not a regular file (not a run configuration)`);
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof UserError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(code === 'ENOENT' ? `${file} does not exist (not a run directory)` : `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not JSON (${(e as Error).message}); restore it or start a new run in another --out`, { cause: e });
  }
  return parseRunConfig(value, file);
}

/** The command-line flag that sets each configuration field (for messages). */
const FLAGS: Record<string, string> = {
  arch: 'architecture',
  recipe: '--recipe',
  epochs: '--epochs',
  batchSize: '--batch-size',
  microBatch: '--micro-batch',
  imageSize: '--image-size',
  baseLr: '--lr',
  momentum: '--momentum',
  nesterov: 'nesterov (--no-nesterov)',
  weightDecay: '--weight-decay',
  seed: '--seed',
  minCropArea: '--min-crop-area',
  hardWeight: '--hard-weight',
  teacher: '--teacher',
  teacherArch: '--teacher-arch',
  'tricks.linearScaling': '--linear-scaling',
  'tricks.warmupEpochs': '--warmup',
  'tricks.zeroGamma': '--zero-gamma',
  'tricks.noBiasDecay': 'no bias decay (--bias-decay / --no-bias-decay)',
  'tricks.fp16': '--fp16',
  'tricks.cosine': '--cosine',
  'tricks.labelSmoothing': '--label-smoothing',
  'tricks.mixup': '--mixup',
  'tricks.distill': '--distill',
  'tricks.temperature': '--temperature',
  'data.spec': '--data',
  'data.train': 'training images (--data, --limit-train, --val-split)',
  'data.val': 'validation images (--data, --limit-val, --val-split)',
  'data.classes': 'classes (--data)',
  'data.valSplit': '--val-split',
  'data.limitTrain': '--limit-train',
  'data.limitVal': '--limit-val',
};

/** The --data of the embedded Fashion-MNIST subset. */
const EMBEDDED_SPEC = 'fashion';

/** Fields that older runs did not record: compared only when the saved run has them. */
const RECORDED_LATER = new Set(['teacherArch', 'data.valSplit', 'data.limitTrain', 'data.limitVal']);

function show(v: unknown): string {
  if (v === undefined) return '(unset)';
  if (Array.isArray(v) && v.length > 6) return `[${v.slice(0, 3).map((x) => JSON.stringify(x)).join(',')},... ${v.length} in all]`;
  return JSON.stringify(v);
}

/**
 * How `now` differs from the `saved` run, one line per field, named by its flag:
 * `--seed: 1 in the run, 2 now`. Empty when they agree. The data's path is not compared (data that moved
 * resumes with --data at its new place) unless one side is the embedded set.
 */
export function configDiffs(saved: TrainConfig, now: TrainConfig): string[] {
  const diffs: string[] = [];
  const walk = (a: Record<string, unknown>, b: Record<string, unknown>, prefix: string) => {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const key = `${prefix}${k}`;
      const x = a[k];
      const y = b[k];
      if (x === undefined && RECORDED_LATER.has(key)) continue;
      // A data directory that moved is the same data at a new place: its splits are compared by their
      // image counts and classes, not by the path. The embedded set has no place to move from.
      if (key === 'data.spec' && x !== EMBEDDED_SPEC && y !== EMBEDDED_SPEC) continue;
      if ((key === 'tricks' || key === 'data') && isObject(x) && isObject(y)) {
        walk(x, y, `${key}.`);
        continue;
      }
      if (JSON.stringify(x) !== JSON.stringify(y)) diffs.push(`${FLAGS[key] ?? key}: ${show(x)} in the run, ${show(y)} now`);
    }
  };
  walk(saved as unknown as Record<string, unknown>, now as unknown as Record<string, unknown>, '');
  return diffs;
}
