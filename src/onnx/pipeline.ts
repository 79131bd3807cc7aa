/**
 * The jobs behind `zoo export` and `zoo import`: resolve the model, decide what travels with it
 * (architecture, class count, preprocessing at the size asked for, class names), then build, load
 * weights, export, check in ONNX Runtime and write. Planning checks every argument and starts nothing,
 * so a command can refuse bad input before the compute backend starts.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createModel, modelConfig, type CreateModelOptions, type Model } from '../models/model.js';
import { getModelEntry } from '../models/registry.js';
import { loadWeights, type LoadedWeights } from '../io/weights.js';
import type { Naming } from '../convert/naming.js';
import { writeFileAtomic } from '../io/atomic.js';
import { UserError } from '../errors.js';
import { preprocessingAt, resolveModelRef, type ResolvedModel } from '../hub/resolve.js';
import { addToLocalZoo, checkOwnModelName, findLocalModel } from '../hub/local.js';
import { hashFile } from '../hub/cache.js';
import type { HubSettings } from '../hub/settings.js';
import type { Preprocessing } from '../predict/preprocessing.js';
import { exportOnnx, type ExportOptions } from './export.js';
import { checkExport, checkSummary, type CheckReport } from './check.js';
import { labelNames, metadataProps, type ModelMetadata } from './metadata.js';

export interface ExportJob extends ExportOptions, CreateModelOptions {
  arch: string;
  /** A weights file to load first (any format convert/convert.ts reads); default: untrained. */
  weights?: string;
  /** How the weights file names its tensors (default: detected). */
  naming?: Naming;
  /** What travels with the model into the file's metadata: preprocessing, class names, name. */
  meta?: ModelMetadata;
  /** Where to write the file; without it nothing is written (the bytes are in the result). */
  output?: string;
  /** Write through a symbolic link at `output` (else refused). */
  followSymlinks?: boolean;
  /** Run the model in tfjs and ONNX Runtime on the same input (default true). */
  check?: boolean;
  checkBatch?: number;
  log?: (line: string) => void;
}

export interface ExportResult {
  output?: string;
  bytes: number;
  onnxBytes: Uint8Array;
  params: number;
  check?: CheckReport;
  /** What was loaded, when there were weights. */
  weights?: LoadedWeights;
  /** The weights were freshly initialized (no weights file). */
  untrained: boolean;
}

/** Untrained random networks amplify float32 rounding (see models/calibrate.ts); allowed on top of 1e-4. */
export const UNTRAINED_RTOL = 5e-5;

export async function runExport(job: ExportJob): Promise<ExportResult> {
  const log = job.log ?? (() => {});
  const model: Model = createModel(job.arch, job);
  try {
    const untrained = job.weights === undefined;
    let weights: LoadedWeights | undefined;
    if (job.weights) {
      weights = await loadWeights(model, job.weights, { ...(job.naming ? { naming: job.naming } : {}) });
      for (const w of weights.warnings) log(`warning: ${w}`);
      log(`loaded ${weights.loaded} tensors (${weights.format}, ${weights.naming} names)${weights.folded.length ? `, folded ${weights.folded.length} conv biases into batch norm` : ''} from ${job.weights}`);
    } else {
      log(`no weights given: exporting the untrained network (seed ${job.seed ?? 0})`);
    }
    const size = job.imageSize ?? job.meta?.preprocessing?.crop ?? 224;
    const metadata = { ...metadataProps({ ...job.meta, arch: job.arch }), ...job.metadata };
    const bytes = await exportOnnx(model, { ...job, imageSize: size, metadata });
    let check: CheckReport | undefined;
    if (job.check ?? true) {
      check = await checkExport(model, bytes, {
        imageSize: size,
        batch: job.checkBatch ?? 2,
        fp16: job.fp16 ?? false,
        rtol: untrained ? UNTRAINED_RTOL : 0,
      });
      if (!check.passed) {
        throw new UserError(
          `the ONNX file does not reproduce the tfjs model: ${describeCheck(check)}; nothing was written${job.output ? ` to '${job.output}'` : ''}`,
        );
      }
    }
    if (job.output) await writeFileAtomic(job.output, bytes, { followSymlinks: job.followSymlinks ?? false });
    return {
      ...(job.output ? { output: job.output } : {}),
      bytes: bytes.length,
      onnxBytes: bytes,
      params: model.params.countTrainable(),
      untrained,
      ...(check ? { check } : {}),
      ...(weights ? { weights } : {}),
    };
  } finally {
    model.dispose();
  }
}

export function describeCheck(c: CheckReport): string {
  const fp16 = !Number.isFinite(c.tolerance);
  const diff = `max |logit difference| ${c.maxAbsDiff.toExponential(2)} (largest logit ${c.maxAbsLogit.toFixed(2)})`;
  if (fp16) return `${diff}, top-1 agreement ${c.decisive ? `${(c.decisiveAgreement * 100).toFixed(0)}% of ${c.decisive} decisive images` : 'n/a'} (${(c.top1Agreement * 100).toFixed(0)}% of all ${c.batch})`;
  return `${diff}, limit ${c.tolerance.toExponential(2)}, top-1 agreement ${(c.top1Agreement * 100).toFixed(0)}%`;
}

/** What the class names and an asked-for class count make of the classifier; a UserError when they disagree. */
function classesOf(labels: readonly string[] | undefined, asked: number | undefined, from: string): number | undefined {
  if (labels && asked && asked !== labels.length) throw new UserError(`--num-classes ${asked} differs from the ${labels.length} classes ${from} names`, { exitCode: 2 });
  return asked ?? labels?.length;
}

/** `<base>[-fp16].onnx` in the current directory, refused when it exists (an explicit output replaces a file). */
function defaultOutput(base: string, fp16: boolean): string {
  const file = `${base}${fp16 ? '-fp16' : ''}.onnx`;
  if (existsSync(file)) throw new UserError(`${file} exists; give -o to choose where to write (an explicit -o replaces a file)`, { exitCode: 2 });
  return file;
}

/** The base name a model is exported under when no output is given. */
function baseName(model: ResolvedModel): string {
  if (model.kind === 'run') return path.basename(path.resolve(model.runDir!));
  if (model.kind === 'onnx' || model.kind === 'weights') return path.parse(model.label).name;
  return model.label;
}

export interface ExportModelOptions extends Omit<ExportJob, 'arch' | 'weights' | 'meta' | 'output' | 'naming' | 'imageSize'> {
  /** Input height and width (default: the model's own, else 224). */
  imageSize?: number;
  /** Weights for an architecture: anything the resolver loads (a file, a local or pulled name, a run). */
  weights?: string;
  /** Default: `<model>.onnx` in the current directory, never replacing a file. */
  output?: string;
  settings?: HubSettings;
}

/** An export, planned: the job and what was decided on the way. */
export interface PlannedExport {
  job: ExportJob & { output: string };
  /** The model whose weights and metadata are exported (the --weights reference, or the model itself). */
  from: ResolvedModel;
  preprocessing: Preprocessing;
  labels: string[] | undefined;
  /** Assumptions and adaptations to tell the user. */
  notes: string[];
}

/**
 * Plans `zoo export <ref> [--weights <weights>]`: `ref` is an architecture (untrained, or with `weights`)
 * or a model that brings its own weights; the source's class names and preprocessing (adapted to
 * `imageSize`) travel into the file, and the notes say what had to be assumed.
 */
export async function planExport(ref: string, options: ExportModelOptions = {}): Promise<PlannedExport> {
  const settings = options.settings;
  const at = (r: string, purpose: 'build' | 'weights', command: string) => resolveModelRef(r, { purpose, command, ...(settings ? { settings } : {}) });
  const src = await at(ref, 'build', 'zoo export');
  const arch = src.arch!;
  let weights: ResolvedModel | undefined;
  if (options.weights) {
    if (src.kind !== 'arch') throw new UserError(`--weights goes with an architecture; ${src.label} brings its own weights`, { exitCode: 2 });
    weights = await at(options.weights, 'weights', 'zoo export --weights');
    if (weights.arch && weights.arch !== arch) {
      throw new UserError(`${weights.label} holds ${weights.arch} weights; it does not match ${arch} (export it as 'zoo export ${weights.ref}')`);
    }
  } else if (src.kind !== 'arch') {
    weights = await at(ref, 'weights', 'zoo export');
  }
  const from = weights ?? src;
  const notes = [...src.notes, ...(weights && weights !== src ? weights.notes : [])];
  const labels = labelNames(from.meta);
  const numClasses = classesOf(labels, options.numClasses, from.label);
  modelConfig(arch, { ...(numClasses ? { numClasses } : {}) }); // a classifier too large to build fails here
  const preprocessing = preprocessingAt(from, options.imageSize, notes);
  const { weights: _w, output, settings: _s, ...rest } = options;
  return {
    job: {
      ...rest,
      arch,
      output: output ?? defaultOutput(baseName(from), options.fp16 ?? false),
      ...(weights ? { weights: weights.weights! } : {}),
      meta: { ...from.meta, preprocessing, ...(labels ? { labels } : {}) },
      imageSize: preprocessing.crop,
      ...(numClasses ? { numClasses } : {}),
    },
    from,
    preprocessing,
    labels,
    notes,
  };
}

/** Exports a model (see planExport), writing the file. */
export async function exportModel(ref: string, options: ExportModelOptions = {}): Promise<ExportResult & { plan: PlannedExport }> {
  const plan = await planExport(ref, options);
  return { ...(await runExport(plan.job)), plan };
}

export interface ImportOptions {
  /** The architecture, unless the file (or its run) records it. */
  arch?: string;
  /** Where to write the ONNX file; default `<file name>[-fp16].onnx` here unless `name` is given. */
  output?: string;
  /** Add the model to the local zoo under this name. */
  name?: string;
  naming?: Naming;
  numClasses?: number;
  /** Class names (default: what the file or its run records). */
  labels?: string[];
  imageSize?: number;
  fp16?: boolean;
  /** Replace a local zoo model of that name. */
  force?: boolean;
  followSymlinks?: boolean;
  settings?: HubSettings;
  log?: (line: string) => void;
}

export interface PlannedImport {
  file: string;
  job: ExportJob;
  name: string | undefined;
  labels: string[] | undefined;
  imagenet: boolean;
  preprocessing: Preprocessing;
  notes: string[];
}

/** Plans `zoo import <file>`: the file's architecture, class names and preprocessing, or what must be assumed. */
export async function planImport(file: string, options: ImportOptions = {}): Promise<PlannedImport> {
  const src = await resolveModelRef(file, { purpose: 'weights', command: 'zoo import', ...(options.settings ? { settings: options.settings } : {}) });
  if (src.kind === 'published' || src.kind === 'local') throw new UserError(`'${file}' is a model name; zoo import takes a file (zoo export converts models already in the zoo)`, { exitCode: 2 });
  const arch = options.arch ?? src.arch;
  if (!arch) throw new UserError(`${file} does not record its architecture: give --arch (see 'zoo list')`, { exitCode: 2 });
  getModelEntry(arch);
  if (src.arch && options.arch && src.arch !== options.arch) throw new UserError(`${file} records ${src.arch} weights, not --arch ${options.arch}`, { exitCode: 2 });
  if (options.name) {
    checkOwnModelName(options.name);
    // Found now rather than after the conversion.
    if (!options.force && (await findLocalModel(options.name, ...(options.settings ? [options.settings] : [])))) {
      throw new UserError(`the local zoo already has '${options.name}' (pass --force to replace it, or 'zoo rm ${options.name}')`);
    }
  }
  const notes = [...src.notes];
  const labels = options.labels ?? labelNames(src.meta);
  const numClasses = classesOf(labels, options.numClasses, 'the class names');
  modelConfig(arch, { ...(numClasses ? { numClasses } : {}) });
  const imagenet = !labels && (numClasses ?? getModelEntry(arch).config.numClasses) === 1000;
  if (!labels) notes.push(imagenet ? `${file} names no classes: 1000 outputs, recorded as ImageNet's (imagenet-1k)` : `${file} names no classes (give --labels): predictions will show class indices`);
  const preprocessing = preprocessingAt(src, options.imageSize, notes);
  const fp16 = options.fp16 ?? false;
  const output = options.output ?? (options.name ? undefined : defaultOutput(path.parse(file).name, fp16));
  const meta: ModelMetadata = { arch, ...(options.name ? { name: options.name } : {}), preprocessing, ...(labels ? { labels } : imagenet ? { categories: 'imagenet-1k' } : {}) };
  return {
    file,
    job: {
      arch,
      weights: src.weights!,
      ...(options.naming ? { naming: options.naming } : {}),
      meta,
      ...(output ? { output } : {}),
      imageSize: preprocessing.crop,
      fp16,
      ...(numClasses ? { numClasses } : {}),
      followSymlinks: options.followSymlinks ?? false,
      ...(options.log ? { log: options.log } : {}),
    },
    name: options.name,
    labels,
    imagenet,
    preprocessing,
    notes,
  };
}

/** Runs a planned import: converts, checks, writes the file and/or adds it to the local zoo. */
export async function runImport(plan: PlannedImport, options: { force?: boolean; settings?: HubSettings } = {}): Promise<ExportResult & { added?: { name: string; onnx: string } }> {
  const r = await runExport(plan.job);
  if (!plan.name) return r;
  const source = plan.job.weights!;
  const local = await addToLocalZoo({
    name: plan.name,
    arch: plan.job.arch,
    onnxBytes: r.onnxBytes,
    preprocessing: plan.preprocessing,
    categories: plan.imagenet ? 'imagenet-1k' : null,
    ...(plan.labels ? { labels: plan.labels } : {}),
    source: { url: path.resolve(source), format: r.weights!.format, naming: r.weights!.naming, file: path.resolve(source), ...(await hashFile(source)) },
    check: checkSummary(r.check!),
    force: options.force ?? false,
    ...(options.settings ? { settings: options.settings } : {}),
  });
  return { ...r, added: { name: local.name, onnx: local.onnx } };
}
