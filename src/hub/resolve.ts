/**
 * One resolver for every command and for the library: what a user means by a model argument.
 *
 * A reference is, in this order of checks:
 *   - a path (it has a slash, starts with '.' or '~', ends in a weights or ONNX extension, or exists
 *     and is no name zoo knows): an `.onnx` file, a weights file (.safetensors, .pth, .params, a GluonCV
 *     .zip), or a training run directory (holding run.json);
 *   - a timm id (`timm/resnet50d.gluon_in1k`, `hf-hub:timm/...`, or a bare id models.json records as
 *     an entry's `timm`), meaning what timm means; `timm/<arch>` without a tag is the architecture
 *     timm means (`timm/resnet50` is zoo's `resnet50b`);
 *   - a published name or alias of models.json (pulled into the local zoo or not);
 *   - a model of the user's own in the local zoo (`zoo import --name`, `zoo train --add-to-zoo`);
 *   - a registered architecture (`zoo list`).
 * What the reference is decides what it brings: an ONNX file to run, weights to load into tfjs, the
 * architecture, and the metadata (preprocessing, class names) that must travel with it. Each command
 * says what it needs (a `purpose`); a reference that cannot serve it is a UserError that says what the
 * command takes.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError, nearMatches } from '../errors.js';
import { archFromTimm, getModelEntry, listModels } from '../models/registry.js';
import { findPublished, modelNames, stripTimmPrefix, type PublishedModel } from './models_json.js';
import { findLocalModel, type LocalModel } from './local.js';
import { hubSettings, type HubSettings } from './settings.js';
import { listCached } from './cache.js';
import { looksLikePath } from './refs.js';
import { parsePreprocessing, preprocessingForSize, IMAGENET_PREPROCESSING } from '../predict/preprocessing.js';
import { checkCategories, parseLabels, readMetadata, readOnnxMetadata, type ModelMetadata } from '../onnx/metadata.js';
import { RUN_FILES, readRunConfig, runPreprocessing } from '../train/run_config.js';

export type ModelKind = 'arch' | 'published' | 'local' | 'onnx' | 'weights' | 'run';

/** What a command does with the model, which decides what it accepts. */
export type Purpose =
  /** Run it (predict, eval, a teacher, serving): needs an ONNX file. */
  | 'run'
  /** Load its weights into a tfjs model (export --weights, fine-tuning). */
  | 'weights'
  /** Describe it (info): anything. */
  | 'describe'
  /** Build it (export without weights, train): an architecture, or anything that names one. */
  | 'build';

const TAKES: Record<Purpose, string> = {
  run: "a trained model: a local zoo name ('zoo list --local'), a published name or alias after 'zoo pull', an .onnx file, or a training run directory",
  weights: "weights: a file (.safetensors, .pth, GluonCV .zip or .params, an .onnx export of zoo), a local zoo name, a published name after 'zoo pull', or a training run directory",
  describe: "an architecture ('zoo list'), a published or local model, an .onnx file or a training run directory",
  build: "an architecture ('zoo list'), or a model that names one (a published or local model, an .onnx export of zoo, a run directory)",
};

/** A model reference, resolved. */
export interface ResolvedModel {
  kind: ModelKind;
  /** As the user gave it. */
  ref: string;
  /** How messages name it. */
  label: string;
  /** The architecture, where known. */
  arch?: string;
  /** An ONNX file that runs it. */
  onnx?: string;
  /** A file whose tensors load into a tfjs model of `arch` (an ONNX export of zoo qualifies). */
  weights?: string;
  /** Preprocessing, class names and the rest that travel with it. */
  meta: ModelMetadata;
  /** How the preprocessing is known: recorded with the model, or assumed (ImageNet's defaults). */
  preprocessingFrom: 'model' | 'assumed';
  entry?: PublishedModel;
  local?: LocalModel;
  /** The training run directory, for kind 'run' (and weights or ONNX files inside one). */
  runDir?: string;
  /** Things to tell the user (a timm id resolved, an assumption made). */
  notes: string[];
}

export interface ResolveOptions {
  purpose: Purpose;
  /** The command, for messages ('zoo predict'). */
  command?: string;
  settings?: HubSettings;
}

export { looksLikePath };

function expandHome(ref: string): string {
  return ref === '~' || ref.startsWith('~/') ? path.join(os.homedir(), ref.slice(1)) : ref;
}

function takes(options: ResolveOptions): string {
  return `${options.command ?? 'this command'} takes ${TAKES[options.purpose]}`;
}

/** The minimal, checked reading of a run directory's run.json that resolving needs. */
export interface RunSummary {
  arch: string;
  imageSize: number;
  classes: string[];
}

/** Reads `<dir>/run.json` (train/run_config.ts checks its shape); a UserError naming the file when it is not a zoo training run's. */
export function readRunSummary(dir: string): RunSummary {
  const file = path.join(dir, RUN_FILES.config);
  refuseDetectionRun(file);
  const c = readRunConfig(file);
  if (!listModels().includes(c.arch)) throw new UserError(`${file}: 'arch' names no architecture zoo builds ('${c.arch.slice(0, 60)}')`);
  if (c.imageSize < 8 || c.imageSize > 4096) throw new UserError(`${file}: 'imageSize' must be an integer from 8 to 4096, got ${c.imageSize}`);
  return { arch: c.arch, imageSize: c.imageSize, classes: parseLabels(c.data.classes, `${file}: data.classes`) };
}

/** A detection run is not a classifier: say so and where it goes, rather than call its run.json corrupt. */
function refuseDetectionRun(file: string): void {
  let task: unknown;
  try {
    task = (JSON.parse(readFileSync(file, 'utf8')) as { task?: unknown } | null)?.task;
  } catch {
    return; // readRunConfig names what is wrong with the file
  }
  if (task === 'detection') {
    throw new UserError(`${path.dirname(file)} is a detection run (Faster R-CNN), not a classifier: use zoo det predict / zoo det eval / zoo det export with it`);
  }
}

function runModel(ref: string, dir: string, summary: RunSummary): ResolvedModel {
  const onnx = path.join(dir, RUN_FILES.onnx);
  const checkpoint = path.join(dir, RUN_FILES.checkpoint);
  return {
    kind: 'run',
    ref,
    label: dir,
    arch: summary.arch,
    ...(existsSync(onnx) ? { onnx } : {}),
    ...(existsSync(checkpoint) ? { weights: checkpoint } : existsSync(onnx) ? { weights: onnx } : {}),
    meta: { arch: summary.arch, name: path.basename(path.resolve(dir)), preprocessing: runPreprocessing(summary.imageSize), labels: summary.classes },
    preprocessingFrom: 'model',
    runDir: dir,
    notes: [],
  };
}

async function resolvePath(ref: string, file: string): Promise<ResolvedModel> {
  let st;
  try {
    st = statSync(file);
  } catch {
    throw new UserError(`'${ref}': no such file or directory`);
  }
  if (st.isDirectory()) {
    if (!existsSync(path.join(file, RUN_FILES.config))) {
      throw new UserError(`'${ref}' is a directory but not a training run (no ${RUN_FILES.config} in it)`);
    }
    return runModel(ref, file, readRunSummary(file));
  }
  if (!st.isFile()) throw new UserError(`'${ref}' is not a regular file`);
  const dir = path.dirname(file);
  // A file of a training run (its checkpoint or its export) carries the run's labels and preprocessing.
  const inRun = existsSync(path.join(dir, RUN_FILES.config)) && [RUN_FILES.checkpoint, RUN_FILES.onnx].includes(path.basename(file) as never);
  const run = inRun ? readRunSummary(dir) : undefined;
  const isOnnx = path.extname(file).toLowerCase() === '.onnx';
  if (isOnnx) {
    const meta = readMetadata(await readOnnxMetadata(file), file);
    const fromRun = run && !meta.preprocessing ? { preprocessing: runPreprocessing(run.imageSize), labels: run.classes } : {};
    const merged: ModelMetadata = { ...(run ? { arch: run.arch } : {}), ...fromRun, ...meta };
    return {
      kind: 'onnx',
      ref,
      label: file,
      ...(merged.arch ? { arch: merged.arch } : {}),
      onnx: file,
      weights: file,
      meta: merged,
      preprocessingFrom: merged.preprocessing ? 'model' : 'assumed',
      ...(run ? { runDir: dir } : {}),
      notes: [],
    };
  }
  if (run) {
    // The run's labels and preprocessing, but this file's weights: not the run's ONNX export.
    const { onnx: _onnx, ...r } = runModel(ref, dir, run);
    return { ...r, kind: 'weights', label: file, weights: file };
  }
  return { kind: 'weights', ref, label: file, weights: file, meta: {}, preprocessingFrom: 'assumed', notes: [] };
}

function publishedModel(ref: string, entry: PublishedModel, local: LocalModel | undefined, note?: string): ResolvedModel {
  return {
    kind: 'published',
    ref,
    label: entry.name,
    arch: entry.arch,
    ...(local ? { onnx: local.onnx, weights: local.onnx, local } : {}),
    meta: { arch: entry.arch, name: entry.name, preprocessing: entry.preprocessing, ...(entry.categories ? { categories: entry.categories } : {}) },
    preprocessingFrom: 'model',
    entry,
    notes: note ? [note] : [],
  };
}

function localModel(ref: string, local: LocalModel): ResolvedModel {
  const r = local.record;
  if (r.task === 'object-detection') {
    throw new UserError(`the local zoo's ${local.name} is a detector (Faster R-CNN), not a classifier: use zoo det predict / zoo det eval with it`);
  }
  const where = `the local zoo's ${local.name}`;
  const labels = r.labels ? parseLabels(r.labels, `${where}: labels`) : undefined;
  const meta: ModelMetadata = {
    arch: r.arch,
    name: local.name,
    preprocessing: parsePreprocessing(r.preprocessing, `${where}: preprocessing`),
    ...(labels ? { labels } : r.categories ? { categories: checkCategories(r.categories, where) } : {}),
  };
  return { kind: 'local', ref, label: local.name, arch: r.arch, onnx: local.onnx, weights: local.onnx, meta, preprocessingFrom: 'model', local, notes: [] };
}

function archModel(ref: string, arch: string, note?: string): ResolvedModel {
  return { kind: 'arch', ref, label: arch, arch, meta: { arch }, preprocessingFrom: 'assumed', notes: note ? [note] : [] };
}

/** What `zoo pull` and `pull()` take, for their messages. */
const PULL_TAKES = "a published name, alias or timm id ('zoo list --published')";

/**
 * What `ref` names, without judging whether the purpose can use it. `forPull`: an unknown name is
 * answered with what a pull takes and the published names near it.
 */
async function find(ref: string, options: ResolveOptions, forPull = false): Promise<ResolvedModel> {
  const settings = options.settings ?? hubSettings();
  const file = expandHome(ref);
  const knownName = (): boolean => Boolean(findPublished(ref)) || listModels().includes(ref);
  if (looksLikePath(ref) || (existsSync(file) && !knownName() && !(await findLocalModel(ref, settings)))) {
    return resolvePath(ref, file);
  }
  const published = findPublished(ref);
  const architectureFirst = options.purpose === 'build' || options.purpose === 'describe';
  const registered = listModels().includes(ref) ? ref : undefined;
  if (registered && architectureFirst) return archModel(ref, registered);
  if (published) {
    const { entry, via } = published;
    const note = via === 'timm' && entry.name !== ref
      ? `'${ref}' is timm's id of ${entry.name} (${entry.arch}, ${getModelEntry(entry.arch).description.split(':')[0]})`
      : undefined;
    return publishedModel(ref, entry, await findLocalModel(entry.name, settings), note);
  }
  const local = await findLocalModel(ref, settings);
  if (local) return localModel(ref, local);
  if (registered) return archModel(ref, registered);
  const { id, timm } = stripTimmPrefix(ref);
  const timmArch = timm ? archFromTimm(id) : undefined;
  if (timmArch) return archModel(ref, timmArch, `'${ref}' is timm's ${id}, zoo's ${timmArch}`);
  const candidates = forPull
    ? [...modelNames().keys()]
    : [...modelNames().keys(), ...listModels(), ...(await listCached(settings)).map((m) => m.name)];
  const near = nearMatches(timm ? id : ref, new Set(candidates));
  const what = forPull
    ? `no published model '${ref}' in models.json${timm ? ' (as a timm id)' : ''}`
    : `unknown model '${ref}'${timm ? ' (as a timm id: models.json records no such weights and zoo builds no such architecture)' : ''}`;
  throw new UserError(
    `${what}.` +
      (near.length ? ` Did you mean: ${near.join(', ')}?` : '') +
      ` ${forPull ? `${options.command ?? 'pull'} takes ${PULL_TAKES}` : takes(options)}.`,
    { exitCode: 2 },
  );
}

/**
 * Resolves a model reference for a purpose. Throws a UserError that says what the command takes when
 * the reference names something it cannot use (an architecture where a trained model is needed, a
 * published model not pulled yet, a weights file where an ONNX file is needed).
 */
export async function resolveModelRef(ref: string, options: ResolveOptions): Promise<ResolvedModel> {
  if (ref.trim() === '') throw new UserError(`an empty model name: ${takes(options)}`, { exitCode: 2 });
  const r = await find(ref, options);
  const cmd = options.command ?? 'this command';
  switch (options.purpose) {
    case 'run':
      if (r.onnx) return r;
      if (r.kind === 'published') throw new UserError(`'${ref}' is not in the local cache yet; run 'zoo pull ${ref}' first`);
      if (r.kind === 'arch') throw new UserError(`'${ref}' is an architecture, without trained weights; ${takes(options)}`, { exitCode: 2 });
      if (r.kind === 'run') {
        throw new UserError(
          `the run ${r.label} has no ${RUN_FILES.onnx}, which ${cmd} needs: a run exports it when it finishes (unless --no-export); ` +
            `'zoo train --out ${r.label} --resume' finishes it or, for a finished run, exports it`,
        );
      }
      throw new UserError(`'${ref}' is a weights file, not an ONNX model: convert it with 'zoo import ${ref} --arch <arch> -o model.onnx', or give ${TAKES.run}`);
    case 'weights':
      if (r.weights) return r;
      if (r.kind === 'published') throw new UserError(`'${ref}' is not in the local cache yet; run 'zoo pull ${ref}' first`);
      if (r.kind === 'arch') throw new UserError(`'${ref}' is an architecture, without weights; ${takes(options)}`, { exitCode: 2 });
      throw new UserError(`the run ${r.label} has neither a checkpoint nor an export to load`);
    case 'build':
      if (r.arch) return r;
      throw new UserError(`${r.label} does not say which architecture it is: give the architecture, with the file as --weights (see 'zoo list')`, { exitCode: 2 });
    case 'describe':
      return r;
  }
}

/**
 * The preprocessing to record for a model at `imageSize`: its own, adapted to the size when that
 * differs, or ImageNet's defaults at that size. `notes` gets a line for every assumption or change.
 */
export function preprocessingAt(model: Pick<ResolvedModel, 'meta' | 'preprocessingFrom' | 'label'>, imageSize: number | undefined, notes: string[]) {
  const own = model.meta.preprocessing;
  const size = imageSize ?? own?.crop ?? IMAGENET_PREPROCESSING.crop;
  if (!own || model.preprocessingFrom === 'assumed') {
    notes.push(`${model.label} records no preprocessing: recording ImageNet's defaults at ${size}x${size} (resize ${preprocessingForSize(size).resizeShorter}, center crop, timm's mean and std)`);
    return preprocessingForSize(size);
  }
  const at = preprocessingForSize(size, own);
  if (at !== own) notes.push(`${model.label} was evaluated at ${own.crop}x${own.crop}; at ${size}x${size} the resize becomes ${at.resizeShorter} (same crop fraction, mean and std)`);
  return at;
}

/**
 * The published entry `ref` names, for `zoo pull` and `pull()`: any other kind of model is refused with
 * what the command takes (and, for an architecture, the published weights of it).
 */
export async function resolvePublished(ref: string, options: { command?: string; settings?: HubSettings } = {}): Promise<ResolvedModel & { entry: PublishedModel }> {
  const command = options.command ?? 'pull';
  if (ref.trim() === '') throw new UserError(`an empty model name: ${command} takes ${PULL_TAKES}`, { exitCode: 2 });
  const r = await find(ref, { purpose: 'describe', command, ...(options.settings ? { settings: options.settings } : {}) }, true);
  if (r.kind === 'published' && r.entry) return r as ResolvedModel & { entry: PublishedModel };
  const what = r.kind === 'arch' ? 'an architecture' : r.kind === 'local' ? 'a model of your own in the local zoo' : `a ${r.kind === 'run' ? 'training run' : 'file'}`;
  const weights = r.kind === 'arch' ? [...new Set(modelNames().values())].filter((m) => m.arch === r.arch).map((m) => m.aliases[0] ?? m.name) : [];
  throw new UserError(
    `'${ref}' is ${what}; ${command} takes ${PULL_TAKES}` +
      (weights.length ? `. Published weights of ${r.arch}: ${weights.join(', ')}` : ''),
    { exitCode: 2 },
  );
}
