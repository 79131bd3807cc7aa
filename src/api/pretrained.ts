/**
 * Pretrained models for the library: `pull` a published model into the cache, `fromPretrained` for a
 * tfjs model with its weights (to fine-tune, or to use as a backbone). The same cache, settings,
 * resolver and errors as the command line (`zoo pull`, `zoo export --weights`).
 */
import { initBackend } from '../backend/index.js';
import { UserError } from '../errors.js';
import { createModel, type Model } from '../models/model.js';
import { loadWeights } from '../io/weights.js';
import type { PublishedModel } from '../hub/models_json.js';
import { openTensors } from '../convert/convert.js';
import { pullModel, type PullOptions as HubPullOptions, type PullResult } from '../hub/pull.js';
import { hubSettings, type HubSettings } from '../hub/settings.js';
import { resolveModelRef, resolvePublished, type Purpose, type ResolvedModel } from '../hub/resolve.js';
import { labelNames, type ModelMetadata } from '../onnx/metadata.js';

/** Progress of one file of a pull. */
export interface PullProgress {
  /** The file being downloaded (its name in the cache). */
  file: string;
  /** Bytes so far, resumed ones included. */
  received: number;
  /** Its size, when the source says. */
  total?: number;
}

export interface PullOptions extends Omit<HubPullOptions, 'onProgress'> {
  onProgress?: (p: PullProgress) => void;
}

export type { PullResult };

/**
 * Downloads, verifies, converts, exports and checks a published model (by name, alias or timm id), as
 * `zoo pull` does; a model already in the cache is returned from there. Initializes the compute
 * backend if none is active (the conversion checks the export against the tfjs model).
 */
export async function pull(name: string, options: PullOptions = {}): Promise<PullResult> {
  checkModelRef(name, 'pull()');
  const { entry } = await resolvePublished(name, { command: 'pull()', ...(options.settings ? { settings: options.settings } : {}) });
  return pullEntry(entry, options);
}

async function pullEntry(entry: PublishedModel, options: PullOptions): Promise<PullResult> {
  await initBackend({ gradients: false });
  const { onProgress, ...rest } = options;
  return pullModel(entry, {
    ...rest,
    ...(onProgress ? { onProgress: (file: string) => (p) => onProgress({ file, received: p.received, ...(p.total !== undefined ? { total: p.total } : {}) }) } : {}),
  });
}

/** Options of the loaders that may pull a published model first. */
export interface LoadOptions {
  /** Pull a published model that is not in the cache yet (default true; false: refuse). */
  pull?: boolean;
  /** Progress of that pull. */
  onProgress?: (p: PullProgress) => void;
  settings?: HubSettings;
}

/** Throws a UserError unless `ref` is a non-empty string (a JavaScript caller may pass anything). */
export function checkModelRef(ref: unknown, caller: string): asserts ref is string {
  if (typeof ref !== 'string' || ref.trim() === '') {
    throw new UserError(`${caller} takes a model: a published name, a local zoo name, an .onnx file or a run directory; got ${typeof ref === 'string' ? "''" : ref === null ? 'null' : typeof ref}`, { exitCode: 2 });
  }
}

/** Resolves `ref` for `purpose`, pulling a published model first when allowed. */
export async function resolveLoading(ref: string, purpose: Purpose, options: LoadOptions, command: string): Promise<ResolvedModel> {
  checkModelRef(ref, command);
  const settings = options.settings ?? hubSettings();
  const first = await resolveModelRef(ref, { purpose: 'describe', command, settings });
  if (first.kind === 'published' && first.entry && !first.local && (options.pull ?? true)) {
    await pullEntry(first.entry, { settings, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  }
  return resolveModelRef(ref, { purpose, command, settings });
}

export interface FromPretrainedOptions extends LoadOptions {
  /**
   * Classes of the model to build. When they differ from the weights' (fine-tuning on one's own
   * classes), every tensor but the classifier is loaded and the classifier starts from its
   * initialization, as timm's `create_model(..., pretrained=True, num_classes=n)` does.
   */
  numClasses?: number;
  /** Architecture of a weights file that does not record its own. */
  arch?: string;
  /** Seed of the parts that are initialized rather than loaded. */
  seed?: number;
}

/** The classifier's output count in a weights file, from its descriptors (nothing is decoded), if it has one. */
async function classesInWeights(file: string): Promise<number | undefined> {
  const src = await openTensors(file);
  const fc = src.tensors.get('fc.weight') ?? src.tensors.get('output.weight'); // timm, torchvision, zoo, GluonCV v1b / GluonCV v1
  return fc?.shape.length === 2 ? fc.shape[0] : undefined;
}

/** A tfjs model with pretrained weights, and what travels with them. */
export interface PretrainedModel {
  model: Model;
  /** Preprocessing and class names of the weights (the classifier's names only if it was loaded). */
  meta: ModelMetadata;
  /** Whether the classifier came from the weights (false: freshly initialized for `numClasses`). */
  classifierLoaded: boolean;
  /** What was resolved. */
  source: ResolvedModel;
}

/**
 * A tfjs model of a published name (pulled if needed), a local zoo name, a weights or ONNX file or a
 * training run, with the weights loaded: ready to fine-tune with `train` or a loop of one's own, or
 * to take `features()` from. Call `initBackend()` first to choose the backend (the default one is
 * initialized otherwise); dispose the model when done.
 */
export async function fromPretrained(ref: string, options: FromPretrainedOptions = {}): Promise<PretrainedModel> {
  checkModelRef(ref, 'fromPretrained()');
  await initBackend();
  const source = await resolveLoading(ref, 'weights', options, 'fromPretrained');
  const arch = options.arch ?? source.arch;
  if (!arch) throw new UserError(`${source.label} does not record its architecture: pass { arch }`);
  if (source.arch && options.arch && source.arch !== options.arch) throw new UserError(`${source.label} holds ${source.arch} weights, not ${options.arch}`);
  const labels = labelNames(source.meta);
  const sourceClasses = labels?.length ?? source.entry?.numClasses ?? (await classesInWeights(source.weights!));
  const wanted = options.numClasses ?? sourceClasses;
  const seed = options.seed ?? 0;
  const loaded = createModel(arch, { ...(sourceClasses ?? wanted ? { numClasses: (sourceClasses ?? wanted)! } : {}), seed });
  try {
    await loadWeights(loaded, source.weights!);
  } catch (e) {
    loaded.dispose();
    throw e;
  }
  if (wanted === undefined || wanted === loaded.numClasses) {
    return { model: loaded, meta: { ...source.meta, arch }, classifierLoaded: true, source };
  }
  // A new classifier: copy everything else into a model of the wanted size.
  const model = createModel(arch, { numClasses: wanted, seed });
  try {
    for (const name of model.params.specs.keys()) {
      if (!name.startsWith('fc.')) model.params.setValues(name, (await loaded.params.get(name).data()) as Float32Array);
    }
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    loaded.dispose();
  }
  const { labels: _labels, categories: _categories, ...rest } = source.meta;
  return { model, meta: { ...rest, arch }, classifierLoaded: false, source };
}
