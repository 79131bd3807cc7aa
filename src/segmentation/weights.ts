/**
 * Loading a segmenter's weights from a file: torchvision's FCN state dicts (`fcn_resnet50`,
 * `fcn_resnet101` and any FCN built the same way), GluonCV's FCN (`fcn_resnet50_ade`, ...) and
 * zoo's own files (the segmenter's parameters under their zoo names, PyTorch layout).
 *
 * Names. A Segmenter's head parameters carry torchvision's names and its backbone the ResNet's own
 * (timm's), so the namings map as follows:
 *
 *   torchvision  backbone.<resnet name>    the ResNet's names (torchvision's resnet50 is zoo's resnet50b;
 *                                          IntermediateLayerGetter drops avgpool and fc)
 *                classifier.{0,1,4}.*      3x3 conv C5 -> 512 (no bias), BN, 1x1 conv 512 -> K (.2 ReLU, .3 dropout)
 *                aux_classifier.{0,1,4}.*  the same on C4: 1024 -> 256 -> K (absent without aux_loss)
 *   gluoncv      conv1.*, bn1.*, layerS.*  SegBaseModel keeps the base network's stem and stages under their
 *                                          own attribute names (resnetv1b.py: conv1.{0,1,3,4,6} for the deep
 *                                          stem, layerS.B.convK / bnK / downsample.{0,1}); BN gamma / beta
 *                head.block.{0,1,4}.*      _FCNHead's HybridSequential: the same layers as torchvision's
 *                auxlayer.block.{0,1,4}.*  the auxiliary head
 *   zoo          the segmenter's own names: torchvision's without `backbone.`
 *
 * Layouts and dtypes are convert/convert.ts's (OIHW convolutions to zoo's HWIO, float16/64 to
 * float32, within a memory budget). `num_batches_tracked` is ignored. A file without the auxiliary
 * head loads into a segmenter without one; a file with it loads into a segmenter without one too
 * (the auxiliary head is training only), and the report says it was skipped.
 *
 * Upsampling is part of the segmenter's configuration, not of the file: torchvision interpolates
 * bilinearly with align_corners=False, GluonCV with MXNet's BilinearResize2D, whose interpolation is
 * align_corners=True. createPublishedSegmenter takes it from models.json; `zoo seg import` from the
 * naming (defaultAlignCorners).
 *
 * Published segmenters are models.json's `segmenters` section, beside the classifiers' `models` and the
 * `detectors`: sources and checksums as the hosts publish them, the FCN configuration the weights need,
 * preprocessing, labels, counts and metrics. pullSegmenter downloads, verifies, converts, exports and
 * checks one on the path `zoo pull` uses for the other tasks (hub/cache.ts).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import type { ByteBudget } from '../formats/budget.js';
import { quoteName, type TensorSource } from '../formats/types.js';
import { openTensors, type WeightFormat } from '../convert/convert.js';
import { mapName } from '../convert/naming.js';
import { INTERPOLATIONS, type Interpolation } from '../predict/preprocessing.js';
import { listModels } from '../models/registry.js';
import type { ResNetConfig } from '../models/resnet.js';
import { defaultModelsJsonPath, modelNames, type ModelsJson } from '../hub/models_json.js';
import { hashFile, keepFile, KeepFileError } from '../hub/cache.js';
import { verifyMember } from '../hub/pull.js';
import { checkPublishedSource, headBudget, isObj, isPercent, isPosInt, isText, isTriple, matchHeadTensors, matchProblems, publishedSection, pullPublishedHead, readMatched, show, validatePublishedSection, type HeadPullOptions, type HeadPullRecord, type PulledHead, type SectionRules, type ValidateSectionOptions, type SourceRules } from '../hub/published_heads.js';
import { createSegmenter, type Segmenter } from './segmenter.js';
import type { FcnConfig } from './fcn.js';
import { checkSegmenterExport, describeSegCheck, exportSegmenter } from './export.js';
import { segmentationMetadata } from './metadata.js';

export const SEGMENTER_NAMINGS = ['torchvision', 'gluoncv', 'zoo'] as const;
/** Whose names a segmenter's weights file uses. */
export type SegmenterNaming = (typeof SEGMENTER_NAMINGS)[number];

/** The upsampling each origin's weights were trained with: torchvision align_corners=False, MXNet's BilinearResize2D True. */
export function defaultAlignCorners(naming: SegmenterNaming): boolean {
  return naming === 'gluoncv';
}

const HEAD_PREFIXES = ['classifier.', 'aux_classifier.'];
const AUX_PREFIX = 'aux_classifier.';

/**
 * zoo's name for a tensor of a torchvision FCN state dict, or undefined when the name is none torchvision
 * gives an FCN (`backbone.`, `classifier.`, `aux_classifier.`).
 */
export function torchvisionSegmenterName(name: string, config: ResNetConfig): string | undefined {
  if (HEAD_PREFIXES.some((p) => name.startsWith(p))) return name;
  if (!name.startsWith('backbone.')) return undefined;
  return mapName(name.slice('backbone.'.length), 'torchvision', config)?.name;
}

/**
 * zoo's name for a tensor of a GluonCV FCN (SegBaseModel on a resnetv1b base network), or undefined when
 * the name is none GluonCV gives such a model.
 */
export function gluonSegmenterName(name: string, config: ResNetConfig): string | undefined {
  const head = /^(head|auxlayer)\.block\.(\d+)\.(weight|bias|gamma|beta|running_mean|running_var)$/.exec(name);
  if (head) {
    const leaf = head[3] === 'gamma' ? 'weight' : head[3] === 'beta' ? 'bias' : head[3];
    return `${head[1] === 'head' ? 'classifier' : 'aux_classifier'}.${head[2]}.${leaf}`;
  }
  if (!/^(conv1|bn1|layer[1-4])\./.test(name)) return undefined;
  return mapName(name, 'gluon-v1b', config)?.name;
}

/** zoo's name for a source tensor under `naming`, or undefined when the naming has no such name. */
export function segmenterTensorName(name: string, naming: SegmenterNaming, config: ResNetConfig): string | undefined {
  switch (naming) {
    case 'torchvision':
      return torchvisionSegmenterName(name, config);
    case 'gluoncv':
      return gluonSegmenterName(name, config);
    case 'zoo':
      return name;
  }
}

/** Guesses the naming of a segmenter's weights from the tensor names. */
export function detectSegmenterNaming(names: Iterable<string>): SegmenterNaming | undefined {
  const list = [...names];
  if (list.some((n) => n.startsWith('backbone.'))) return 'torchvision';
  if (list.some((n) => n.startsWith('head.block.') || n.startsWith('auxlayer.block.'))) return 'gluoncv';
  if (list.some((n) => n.startsWith('classifier.') || n.startsWith('conv1.') || n.startsWith('layer1.'))) return 'zoo';
  return undefined;
}

/**
 * The memory budget for loading a file into `seg`: MODEL_BUDGET_FACTOR (4) x the float32 bytes of its
 * parameters and buffers, plus 16 MiB, as convert.ts's modelBudget gives a classifier. A torchvision
 * file always holds the auxiliary head; a segmenter without one still has room for it (it is a few
 * percent of the whole).
 */
export function segmenterBudget(seg: Segmenter, label: string): ByteBudget {
  return headBudget(seg.params.specs, label, `the ${seg.arch} segmenter`);
}

/** What loading found and did. */
export interface SegmenterConversionReport {
  /** Parameters and buffers set. */
  loaded: number;
  /**
   * 'loaded': the file's auxiliary head went into the segmenter's; 'absent': neither has one;
   * 'skipped': the file has one, the segmenter none (its tensors were not read).
   */
  aux: 'loaded' | 'absent' | 'skipped';
}

/** Hints for files that are not this segmenter's: a classifier, another class count, another backbone. */
function hints(seg: Segmenter, source: TensorSource, naming: SegmenterNaming): string[] {
  const names = [...source.tensors.keys()];
  const out: string[] = [];
  const prefix = naming === 'torchvision' ? 'backbone.' : '';
  if (names.includes('fc.weight') || names.includes('output.weight')) {
    out.push(`it looks like a classifier's weights (it has ${names.includes('fc.weight') ? 'fc' : 'output'}.weight): use it as the segmenter's backbone instead (--backbone)`);
  }
  const cls = source.tensors.get(naming === 'gluoncv' ? 'head.block.4.weight' : 'classifier.4.weight');
  if (cls && cls.shape.length === 4 && cls.shape[0] !== seg.numClasses) {
    out.push(`the file's classifier has ${cls.shape[0]} classes, this segmenter ${seg.numClasses} (--num-classes)`);
  }
  const deepFile = names.some((n) => n.startsWith(`${prefix}conv1.0.`));
  const deepSeg = seg.backboneConfig.stemType === 'deep';
  if (names.some((n) => n.startsWith(`${prefix}conv1.`)) && deepFile !== deepSeg) {
    out.push(`the file's backbone has ${deepFile ? 'a deep 3x3 stem (conv1.0)' : 'a 7x7 stem (conv1.weight)'} but ${seg.arch} ${deepSeg ? 'a deep one' : 'a 7x7 one'}: pick a backbone arch with the file's stem`);
  }
  const blocks = (stage: number) => new Set(names.map((n) => new RegExp(`^${prefix.replace('.', '\\.')}layer${stage}\\.(\\d+)\\.`).exec(n)?.[1]).filter((b) => b !== undefined)).size;
  const fileLayers = [1, 2, 3, 4].map(blocks);
  if (fileLayers.every((b) => b > 0) && fileLayers.join() !== seg.backboneConfig.layers.join()) {
    out.push(`the file's backbone has [${fileLayers.join(', ')}] blocks per stage, ${seg.arch} [${seg.backboneConfig.layers.join(', ')}]`);
  }
  return out;
}

/**
 * Loads the tensors of an opened file into `seg`. Every parameter and running statistic must be there
 * with its shape and nothing may be left over (an auxiliary head the segmenter lacks is skipped);
 * otherwise a UserError lists what is missing, unexpected or mis-shaped and no parameter changes.
 * Names and shapes are decided from the descriptors before any tensor is read; reads and conversions
 * are charged to the source's budget.
 */
export function loadSegmenterTensors(seg: Segmenter, source: TensorSource, naming: SegmenterNaming, label: string): SegmenterConversionReport {
  const specs = seg.params.specs;
  let auxInFile = false;
  const segHasAux = [...specs.keys()].some((n) => n.startsWith(AUX_PREFIX));
  const match = matchHeadTensors(source, specs, (src) => {
    const name = segmenterTensorName(src, naming, seg.backboneConfig);
    if (name?.startsWith(AUX_PREFIX)) {
      auxInFile = true;
      if (!segHasAux) return null;
    }
    return name;
  });
  const problems = matchProblems(match);
  if (problems.length) {
    const extra = hints(seg, source, naming);
    if (segHasAux && !auxInFile && match.missing.some((n) => n.startsWith(AUX_PREFIX))) {
      extra.push('the file has no auxiliary head: create the segmenter without one (aux: false)');
    }
    const why = [...problems, ...extra].join('; ');
    throw new UserError(`${label} does not match the ${seg.arch} FCN with ${seg.numClasses} classes (${naming} names): ${why}. No parameter was changed.`);
  }
  // Every name and shape fits: read what the segmenter takes, then change it.
  const staged = readMatched(match, specs, source.budget);
  for (const [name, v] of staged) seg.params.setValues(name, v);
  return { loaded: staged.size, aux: segHasAux ? 'loaded' : auxInFile ? 'skipped' : 'absent' };
}

/** Options for loadSegmenterWeights. */
export interface LoadSegmenterWeightsOptions {
  /** 'auto' (default): from the tensor names. */
  naming?: SegmenterNaming | 'auto';
  /** Default: from the file name and contents. */
  format?: WeightFormat;
  /** Default: segmenterBudget(seg, file). */
  budget?: ByteBudget;
}

export interface LoadedSegmenterWeights extends SegmenterConversionReport {
  format: WeightFormat;
  naming: SegmenterNaming;
  warnings: string[];
}

/** The naming a file's tensors use, from options or their names; a UserError naming the file when neither tells. */
function namingOf(file: string, names: Iterable<string>, naming: SegmenterNaming | 'auto'): SegmenterNaming {
  if (naming !== 'auto') return naming;
  const list = [...names];
  const used = detectSegmenterNaming(list);
  if (used) return used;
  const some = list.slice(0, 3).map((n) => quoteName(n)).join(', ');
  throw new UserError(`${file}: cannot tell how its tensors are named (${some || 'no tensors'}); pass naming ${SEGMENTER_NAMINGS.map((n) => `'${n}'`).join(', ')}`);
}

/**
 * Loads a weights file (safetensors, torchvision's .pth, GluonCV's .params or its zip) into `seg`; any
 * problem is a UserError naming the file, and leaves `seg` unchanged.
 */
export async function loadSegmenterWeights(seg: Segmenter, file: string, options: LoadSegmenterWeightsOptions = {}): Promise<LoadedSegmenterWeights> {
  const naming = options.naming ?? 'auto';
  if (naming !== 'auto' && !SEGMENTER_NAMINGS.includes(naming)) {
    throw new UserError(`unknown segmenter weights naming '${String(naming)}' (expected ${SEGMENTER_NAMINGS.join(', ')} or auto)`, { exitCode: 2 });
  }
  if (!existsSync(file)) throw new UserError(`weights file '${file}' does not exist`);
  const source = await openTensors(file, {
    ...(options.format ? { format: options.format } : {}),
    budget: options.budget ?? segmenterBudget(seg, file),
  });
  const used = namingOf(file, source.tensors.keys(), naming);
  const report = loadSegmenterTensors(seg, source, used, file);
  const warnings = [...source.warnings];
  if (report.aux === 'skipped') warnings.push(`${file}: the auxiliary head (training only) was not loaded: this segmenter has none`);
  return { ...report, format: source.format, naming: used, warnings };
}

/**
 * The FCN configuration a file implies when nothing else says: whether it holds the auxiliary head, its
 * class count (the classifier's output channels) and its naming. For `zoo seg import`, which is told the
 * backbone and the classes; a UserError naming the file when the file is no FCN.
 */
export async function inspectSegmenterFile(file: string, options: { naming?: SegmenterNaming | 'auto'; format?: WeightFormat } = {}): Promise<{ naming: SegmenterNaming; numClasses: number; aux: boolean; format: WeightFormat }> {
  if (!existsSync(file)) throw new UserError(`weights file '${file}' does not exist`);
  const source = await openTensors(file, options.format ? { format: options.format } : {});
  const naming = namingOf(file, source.tensors.keys(), options.naming ?? 'auto');
  const cls = source.tensors.get(naming === 'gluoncv' ? 'head.block.4.weight' : 'classifier.4.weight');
  if (!cls || cls.shape.length !== 4) throw new UserError(`${file}: no FCN classifier (${naming === 'gluoncv' ? 'head.block.4.weight' : 'classifier.4.weight'}, a 1x1 convolution) in it`);
  const auxName = naming === 'gluoncv' ? 'auxlayer.block.' : AUX_PREFIX;
  return { naming, numClasses: cls.shape[0]!, aux: [...source.tensors.keys()].some((n) => n.startsWith(auxName)), format: source.format };
}

// ---------------------------------------------------------------------------------------------------
// Published segmenters: the `segmenters` section of models.json.

/** One downloadable file of a published segmenter's weights. */
export interface SegmenterSource {
  format: 'pth' | 'gluon-zip' | 'params' | 'safetensors';
  naming: SegmenterNaming;
  url: string;
  sha256?: string | null;
  /** First hex digits of the file's sha256 as torchvision's file names carry them. */
  sha256Prefix?: string;
  /** GluonCV's SHA-1: of `member`, the .params inside the zip. */
  sha1?: string | null;
  member?: string;
  size?: number | null;
  host: 'torchvision' | 'gluoncv' | 'huggingface';
}

/**
 * How an image is prepared for the published metric: resize its shorter (torchvision) or longer
 * (GluonCV, at scale 1.0) side to `size`, or not at all, then (x / 255 - mean) / std per RGB channel.
 */
export interface SegmenterPreprocessing {
  resize: 'shorter' | 'longer' | 'none';
  size: number | null;
  interpolation: Interpolation;
  mean: [number, number, number];
  std: [number, number, number];
}

/** A published segmentation metric: pixel accuracy and mean IoU, in percent, and how they were measured. */
export interface SegmenterMetric {
  dataset: string;
  pixAcc: number;
  mIoU: number;
  protocol: string;
  source: string;
}

/** The FCN configuration an entry fixes; the rest comes from the FCN's defaults. */
export type PublishedSegmenterConfig = Pick<FcnConfig, 'outputStride' | 'aux' | 'alignCorners'>;

/** One entry of models.json's `segmenters`. */
export interface PublishedSegmenter {
  /** `fcn_<arch>.<tag>`. */
  name: string;
  aliases: string[];
  task: 'semantic-segmentation';
  segmenter: 'fcn';
  /** The backbone: a zoo registry name. */
  arch: string;
  description: string;
  numClasses: number;
  /** A `{source, license, names}` file relative to models.json: output channel k is names[k]. */
  labels: string;
  sources: SegmenterSource[];
  config: PublishedSegmenterConfig;
  preprocessing: SegmenterPreprocessing;
  /** Trainable parameters, the auxiliary head included (torchvision's count). */
  numParams: number;
  /** Multiply-adds per image at `gmacsAt` without the auxiliary head, in billions. */
  gmacs: number;
  gmacsAt: { height: number; width: number };
  metrics: SegmenterMetric[];
  recipe: string;
  license: string;
  origin: string;
}

/** The namings each format of a published source can carry. */
const SOURCE_NAMINGS: Record<SegmenterSource['format'], readonly SegmenterNaming[]> = { pth: ['torchvision'], 'gluon-zip': ['gluoncv'], params: ['gluoncv'], safetensors: ['torchvision', 'zoo'] };

const SOURCE_EXTENSIONS: Record<SegmenterSource['format'], string> = { pth: '.pth', 'gluon-zip': '.zip', params: '.params', safetensors: '.safetensors' };

const SOURCE_RULES: SourceRules = {
  extensions: SOURCE_EXTENSIONS,
  formatsText: Object.keys(SOURCE_EXTENSIONS).join(', '),
  namings: SEGMENTER_NAMINGS,
  namingsText: SEGMENTER_NAMINGS.join(', '),
  formatNamings: SOURCE_NAMINGS,
  hosts: ['torchvision', 'gluoncv', 'huggingface'],
  hostsText: 'torchvision, gluoncv or huggingface',
  sha256Prefix: true,
};

/** Options of validateSegmenterEntries; `taken` holds the names, aliases and timm ids of the other sections (classifiers, detectors). */
export type ValidateSegmentersOptions = ValidateSectionOptions;

const SECTION_RULES: SectionRules = {
  section: 'segmenters',
  namePrefix: 'fcn_',
  task: 'semantic-segmentation',
  kind: { field: 'segmenter', value: 'fcn' },
  takenIs: 'the name of a classification model or detector',
  refuseArchNames: true,
  maxClasses: 65535,
  checkSource: (p, s, where) => checkPublishedSource(p, s, where, SOURCE_RULES),
  checkEntry(p, e) {
    const c = e.config;
    if (!isObj(c) || (c.outputStride !== 8 && c.outputStride !== 16) || typeof c.aux !== 'boolean' || typeof c.alignCorners !== 'boolean') {
      p('config', `expected {outputStride: 8 or 16, aux: boolean, alignCorners: boolean}, got ${show(c)}`);
    } else if (Array.isArray(e.sources)) {
      // The upsampling is the origin's: a mismatch would silently shift every prediction by up to half a pixel of the output stride.
      for (const [j, s] of e.sources.entries()) {
        if (isObj(s) && SEGMENTER_NAMINGS.includes(s.naming as SegmenterNaming) && s.naming !== 'zoo' && defaultAlignCorners(s.naming as SegmenterNaming) !== c.alignCorners) {
          p('config.alignCorners', `${String(c.alignCorners)} but sources[${j}] is ${String(s.naming)}'s, which upsamples with align_corners=${defaultAlignCorners(s.naming as SegmenterNaming) ? 'True' : 'False'}`);
        }
      }
    }
    const pre = e.preprocessing;
    if (!isObj(pre) || !['shorter', 'longer', 'none'].includes(pre.resize as string) || (pre.resize === 'none' ? pre.size !== null : !isPosInt(pre.size)) ||
      !INTERPOLATIONS.includes(pre.interpolation as Interpolation) || !isTriple(pre.mean, false) || !isTriple(pre.std, true)) {
      p('preprocessing', `expected {resize: shorter|longer|none, size (null for none), interpolation, mean [3], std [3]}, got ${show(pre)}`);
    }
  },
  gmacsAt: ['height', 'width'],
  checkMetric(p, m, w) {
    for (const k of ['dataset', 'protocol', 'source'] as const) if (!isText(m[k])) p(`${w}.${k}`, k === 'source' ? 'say where the number comes from' : 'expected a non-empty string');
    if (!isPercent(m.pixAcc)) p(`${w}.pixAcc`, `expected a percentage, got ${show(m.pixAcc)}`);
    if (!isPercent(m.mIoU)) p(`${w}.mIoU`, `expected a percentage, got ${show(m.mIoU)}`);
  },
};

/**
 * Problems with models.json's `segmenters` section (absent is valid), one line each naming the entry
 * and field; empty when valid. Parameter counts and GMACs are left to the tests (they need a segmenter).
 */
export function validateSegmenterEntries(data: unknown, options: ValidateSegmentersOptions = {}): string[] {
  return validatePublishedSection(data, SECTION_RULES, options);
}


/** Names, aliases and timm ids of the classification entries and the detectors of a models.json document. */
function takenNames(doc: ModelsJson): Set<string> {
  const taken = new Set(modelNames(doc).keys());
  const detectors = (doc as unknown as { detectors?: unknown }).detectors;
  if (!Array.isArray(detectors)) return taken;
  for (const d of detectors) {
    if (!isObj(d)) continue;
    if (typeof d.name === 'string') taken.add(d.name);
    if (Array.isArray(d.aliases)) for (const a of d.aliases) if (typeof a === 'string') taken.add(a);
  }
  return taken;
}


const segmenters = publishedSection<PublishedSegmenter>({
  section: 'segmenters',
  what: 'segmenter',
  validate: validateSegmenterEntries,
  archNames: listModels,
  taken: takenNames,
});

/**
 * The published segmenters of models.json (default: the package's), validated against the registry, the
 * other sections' names and the label files. Invalid content is a UserError listing every problem.
 */
export function loadPublishedSegmenters(file: string = defaultModelsJsonPath()): PublishedSegmenter[] {
  return segmenters.load(file);
}

/** The published segmenter called `name` (its name or an alias), or undefined. */
export function lookupPublishedSegmenter(name: string, file?: string): PublishedSegmenter | undefined {
  return segmenters.lookup(name, file);
}

/** The published segmenter called `name` (its name or an alias); an unknown name is a UserError listing near matches. */
export function findPublishedSegmenter(name: string, file?: string): PublishedSegmenter {
  return segmenters.find(name, file);
}

/** The class names of a published segmenter: output channel k is names[k]. */
export function publishedSegmenterLabels(entry: PublishedSegmenter, file: string = defaultModelsJsonPath()): string[] {
  return segmenters.labels(entry, file);
}


/**
 * A segmenter configured as a published entry says, with fresh parameters (load the weights with
 * loadSegmenterWeights). `aux: false` leaves the training-only auxiliary head out.
 */
export function createPublishedSegmenter(entry: PublishedSegmenter, options: { seed?: number; aux?: boolean } = {}): Segmenter {
  return createSegmenter(entry.arch, entry.numClasses, {
    config: { ...entry.config, ...(options.aux !== undefined ? { aux: options.aux } : {}) },
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
  });
}


// ---------------------------------------------------------------------------------------------------
// Pulling a published segmenter: download and verify through the hub's cache, convert, export, check.

/** What a pull records in the model's manifest, under `meta.segmenter`: enough to use model.onnx without models.json. */
export interface SegmenterPullRecord
  extends HeadPullRecord<
    'semantic-segmentation',
    PublishedSegmenterConfig,
    SegmenterPreprocessing,
    SegmenterNaming,
    { summary: string; cases: string[]; maxAbsDiff: number; maxAbsLogit: number; tolerance: number }
  > {}

export interface PullSegmenterOptions extends HeadPullOptions {
  /** Input sizes [height, width] of the export check (default PULL_CHECK_SIZES). */
  checkSizes?: [number, number][];
  /** Class names (default: the entry's labels file beside the package's models.json). */
  labels?: string[];
  /** Metadata for the ONNX file (default: pulledSegmenterMetadata). */
  metadata?: (entry: PublishedSegmenter, labels: string[]) => Record<string, string>;
}

/** The export check of a pull: two small odd sizes (each costs a full dilated forward pass in tfjs). */
export const PULL_CHECK_SIZES: [number, number][] = [[97, 131], [128, 128]];

/** Metadata of a pulled segmenter (metadata.ts): the task, the entry's name and arch, labels and normalization. */
export function pulledSegmenterMetadata(entry: PublishedSegmenter, labels: string[]): Record<string, string> {
  return segmentationMetadata({ arch: entry.arch, name: entry.name, labels, mean: entry.preprocessing.mean, std: entry.preprocessing.std });
}

export type PulledSegmenter = PulledHead<SegmenterPullRecord>;

/** The check a source needs beyond its sha256: GluonCV's SHA-1 of the zip's member, or torchvision's sha256 prefix. */
function sourcePin(source: SegmenterSource): { by: string; check: (file: string) => Promise<void> } | undefined {
  const byMember = source.format === 'gluon-zip' && source.member && source.sha1 ? { member: source.member, sha1: source.sha1 } : undefined;
  const byPrefix = !source.sha256 && source.sha256Prefix ? source.sha256Prefix : undefined;
  if (!byMember && !byPrefix) return undefined;
  return {
    by: byMember ? `GluonCV's SHA-1 of ${byMember.member}` : `the sha256 prefix ${byPrefix} in its file name`,
    check: async (file) => {
      if (byMember) await verifyMember(file, byMember.member, byMember.sha1);
      if (byPrefix) await checkSha256Prefix(file, byPrefix);
    },
  };
}


/** torchvision pins a file by the sha256 prefix in its name: the hub's cache cannot check that by itself. */
async function checkSha256Prefix(file: string, prefix: string): Promise<void> {
  const got = (await hashFile(file)).sha256;
  if (!got.startsWith(prefix.toLowerCase())) throw new UserError(`${path.basename(file)}: checksum mismatch: sha256 should start with ${prefix}, got ${got}`);
}

/** Loads a downloaded file into the entry's segmenter (without the auxiliary head), exports it and checks the export in ONNX Runtime. */
async function convertPublished(entry: PublishedSegmenter, source: SegmenterSource, file: string, labels: string[], options: PullSegmenterOptions, log: (l: string) => void) {
  log(`converting ${path.basename(file)} (${source.format}, ${source.naming} names) to the ${entry.arch} FCN`);
  const seg = createPublishedSegmenter(entry, { aux: false });
  try {
    const format = source.format === 'gluon-zip' ? 'gluon-zip' : source.format;
    const loaded = await loadSegmenterWeights(seg, file, { naming: source.naming, format });
    for (const w of loaded.warnings) log(`note: ${w}`);
    const metadata = (options.metadata ?? pulledSegmenterMetadata)(entry, labels);
    // From here on the file has passed: a failure is the export's or the runtime's, and the file stays cached.
    const bytes = await exportSegmenter(seg, { metadata }).catch(keepFile);
    const check = await checkSegmenterExport(seg, bytes, { sizes: options.checkSizes ?? PULL_CHECK_SIZES }).catch(keepFile);
    const summary = describeSegCheck(check);
    if (!check.passed) throw new KeepFileError(`the converted ${entry.name} does not reproduce in ONNX Runtime: ${summary}`);
    log(`checked in ONNX Runtime: ${summary}`);
    return { bytes, summary, check };
  } finally {
    seg.dispose();
  }
}

/**
 * Pulls a published segmenter into the cache (`<cache>/<name>/`): downloads its first source that works
 * (mirrors, checksums, GluonCV's member SHA-1, torchvision's sha256 prefix, resumable transfers and the
 * model's lock as `zoo pull` has them: hub/cache.ts), loads it into the entry's FCN, exports the ONNX
 * graph (without the auxiliary head), checks it against the tfjs segmenter, and records it all. A model
 * already pulled comes from the cache.
 */
export async function pullSegmenter(entry: PublishedSegmenter, options: PullSegmenterOptions = {}): Promise<PulledSegmenter> {
  const labels = options.labels ?? publishedSegmenterLabels(entry);
  return pullPublishedHead(entry, labels, options, {
    key: 'segmenter',
    task: 'semantic-segmentation',
    pin: sourcePin,
    convert: (source, file, log) => convertPublished(entry, source, file, labels, options, log),
    check: ({ summary, check: c }) => ({
      summary,
      cases: c.cases.map((k) => `${k.batch}x${k.height}x${k.width}`),
      maxAbsDiff: Math.max(0, ...c.cases.map((k) => k.maxAbsDiff)),
      maxAbsLogit: Math.max(0, ...c.cases.map((k) => k.maxAbsLogit)),
      tolerance: c.tolerance,
    }),
  });
}
