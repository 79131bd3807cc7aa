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
import { UserError, nearMatches } from '../errors.js';
import { BUDGET_SLACK_BYTES, ByteBudget } from '../formats/budget.js';
import { quoteName, type TensorDescriptor, type TensorSource } from '../formats/types.js';
import { MODEL_BUDGET_FACTOR, layoutProblem, openTensors, readFloat32, toZooLayout, type WeightFormat } from '../convert/convert.js';
import { ignorable, mapName } from '../convert/naming.js';
import { INTERPOLATIONS, type Interpolation } from '../predict/preprocessing.js';
import { listModels } from '../models/registry.js';
import type { ResNetConfig } from '../models/resnet.js';
import { defaultModelsJsonPath, loadModelsJson, modelNames, readCategoryFile, type ModelsJson } from '../hub/models_json.js';
import { hubSettings, type HubSettings } from '../hub/settings.js';
import { FetchError, describeFailure, fetchFile, hashFile, modelDir, pruneModelDir, readManifest, withModelLock, writeManifest, type SourceFailure, type Verification } from '../hub/cache.js';
import { PullError, pullHints, verifyMember } from '../hub/pull.js';
import { redactUrl, type DownloadProgress } from '../hub/download.js';
import { writeFileAtomic } from '../io/atomic.js';
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
  let bytes = 0;
  for (const spec of seg.params.specs.values()) bytes += 4 * spec.shape.reduce((a, b) => a * b, 1);
  return new ByteBudget(
    label,
    MODEL_BUDGET_FACTOR * bytes + BUDGET_SLACK_BYTES,
    `${MODEL_BUDGET_FACTOR} x the ${bytes} float32 bytes of the ${seg.arch} segmenter's parameters and buffers + 16 MiB`,
  );
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
  const take = new Map<string, TensorDescriptor>();
  const missing: string[] = [];
  const unexpected: string[] = [];
  const mismatched: string[] = [];
  const named = new Set<string>();
  let auxInFile = false;
  const segHasAux = [...specs.keys()].some((n) => n.startsWith(AUX_PREFIX));
  for (const [src, d] of source.tensors) {
    if (ignorable(src)) continue;
    const name = segmenterTensorName(src, naming, seg.backboneConfig);
    if (name?.startsWith(AUX_PREFIX)) {
      auxInFile = true;
      if (!segHasAux) continue;
    }
    const spec = name === undefined ? undefined : specs.get(name);
    if (!spec) {
      unexpected.push(name === undefined || name === src ? src : `${src} (as ${name})`);
      continue;
    }
    named.add(spec.name);
    if (d.dtype === 'bool') {
      mismatched.push(`${src}: a bool tensor, not weights`);
      continue;
    }
    if (take.has(spec.name)) {
      mismatched.push(`${spec.name}: given twice`);
      continue;
    }
    const problem = layoutProblem(d.shape, spec.shape, src);
    if (problem) mismatched.push(problem);
    else take.set(spec.name, d);
  }
  for (const name of specs.keys()) if (!named.has(name)) missing.push(name);
  if (missing.length || unexpected.length || mismatched.length) {
    const list = (what: string, xs: string[]) => (xs.length ? [`${what} ${xs.length}: ${xs.slice(0, 6).join(', ')}${xs.length > 6 ? ', ...' : ''}`] : []);
    const extra = hints(seg, source, naming);
    if (segHasAux && !auxInFile && missing.some((n) => n.startsWith(AUX_PREFIX))) {
      extra.push('the file has no auxiliary head: create the segmenter without one (aux: false)');
    }
    const why = [...list('missing', missing), ...list('unexpected', unexpected), ...list('mis-shaped', mismatched), ...extra].join('; ');
    throw new UserError(`${label} does not match the ${seg.arch} FCN with ${seg.numClasses} classes (${naming} names): ${why}. No parameter was changed.`);
  }
  // Every name and shape fits: read what the segmenter takes, then change it.
  const budget = source.budget;
  const staged = new Map<string, Float32Array>();
  for (const [name, d] of take) staged.set(name, toZooLayout(readFloat32(d, budget), specs.get(name)!.shape, budget, d.name));
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

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isText = (v: unknown): v is string => typeof v === 'string' && v.trim().length > 0;
const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
const isPos = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
const isPercent = (v: unknown): v is number => typeof v === 'number' && v > 0 && v <= 100;
const show = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

const SOURCE_EXTENSIONS: Record<SegmenterSource['format'], string> = { pth: '.pth', 'gluon-zip': '.zip', params: '.params', safetensors: '.safetensors' };
/** The namings each format of a published source can carry. */
const SOURCE_NAMINGS: Record<SegmenterSource['format'], readonly SegmenterNaming[]> = { pth: ['torchvision'], 'gluon-zip': ['gluoncv'], params: ['gluoncv'], safetensors: ['torchvision', 'zoo'] };

function checkSource(p: (f: string, m: string) => void, s: unknown, where: string): void {
  if (!isObj(s)) return p(where, 'expected an object');
  const format = s.format as SegmenterSource['format'];
  if (!(format in SOURCE_EXTENSIONS)) p(`${where}.format`, `expected ${Object.keys(SOURCE_EXTENSIONS).join(', ')}, got ${show(s.format)}`);
  if (!SEGMENTER_NAMINGS.includes(s.naming as SegmenterNaming)) p(`${where}.naming`, `expected ${SEGMENTER_NAMINGS.join(', ')}, got ${show(s.naming)}`);
  else if (format in SOURCE_NAMINGS && !SOURCE_NAMINGS[format].includes(s.naming as SegmenterNaming)) p(`${where}.naming`, `a ${format} file does not carry ${String(s.naming)} names`);
  if (!['torchvision', 'gluoncv', 'huggingface'].includes(s.host as string)) p(`${where}.host`, `expected torchvision, gluoncv or huggingface, got ${show(s.host)}`);
  if (s.size !== undefined && s.size !== null && !isPosInt(s.size)) p(`${where}.size`, `expected null or a byte count, got ${show(s.size)}`);
  if (s.sha256 !== undefined && s.sha256 !== null && !(typeof s.sha256 === 'string' && /^[0-9a-f]{64}$/.test(s.sha256))) p(`${where}.sha256`, `expected null or 64 lower-case hex digits, got ${show(s.sha256)}`);
  let file = '';
  if (typeof s.url !== 'string' || !/^https:\/\/[^/\s]+\/\S+$/.test(s.url)) p(`${where}.url`, `expected an https URL, got ${show(s.url)}`);
  else file = new URL(s.url).pathname.split('/').pop() ?? '';
  const ext = SOURCE_EXTENSIONS[format];
  if (file && ext && !file.endsWith(ext)) p(`${where}.url`, `a ${format} URL should end in ${ext}, got '${file}'`);
  if (s.sha256Prefix !== undefined) {
    if (typeof s.sha256Prefix !== 'string' || !/^[0-9a-f]{8,64}$/.test(s.sha256Prefix)) p(`${where}.sha256Prefix`, `expected 8 to 64 lower-case hex digits, got ${show(s.sha256Prefix)}`);
    else {
      if (typeof s.sha256 === 'string' && !s.sha256.startsWith(s.sha256Prefix)) p(`${where}.sha256Prefix`, `does not match sha256 ${s.sha256}`);
      if (file && !file.includes(`-${s.sha256Prefix}`)) p(`${where}.sha256Prefix`, `the file name '${file}' does not carry it`);
    }
  }
  if (format === 'gluon-zip') {
    // GluonCV's model store: {name}-{sha1[:8]}.zip holds {name}-{sha1[:8]}.params, whose SHA-1 it pins.
    if (typeof s.sha1 !== 'string' || !/^[0-9a-f]{40}$/.test(s.sha1)) p(`${where}.sha1`, "a gluon-zip source needs GluonCV's 40-hex SHA-1");
    if (typeof s.member !== 'string' || !/^[A-Za-z0-9_.-]+\.params$/.test(s.member) || s.member.includes('..')) {
      p(`${where}.member`, `expected the .params file name inside the zip, got ${show(s.member)}`);
    } else {
      if (file && file !== s.member.replace(/\.params$/, '.zip')) p(`${where}.member`, `'${s.member}' does not match the zip '${file}'`);
      if (typeof s.sha1 === 'string' && !s.member.endsWith(`-${s.sha1.slice(0, 8)}.params`)) p(`${where}.member`, `'${s.member}' does not end in the SHA-1's first 8 digits`);
    }
  } else if (s.member !== undefined) p(`${where}.member`, 'only a gluon-zip source has a member');
  const pinned = typeof s.sha256 === 'string' || typeof s.sha256Prefix === 'string' || (format === 'gluon-zip' && typeof s.sha1 === 'string');
  if (!pinned) p(where, 'pin the file: sha256, the sha256Prefix its name carries, or GluonCV\'s sha1 of the member');
}

export interface ValidateSegmentersOptions {
  /** Registered architecture names. */
  archNames?: readonly string[];
  /** Names, aliases and timm ids other sections (classifiers, detectors) already use. */
  taken?: ReadonlySet<string>;
  /** Directory of models.json, to read label files from. */
  baseDir?: string;
}

/**
 * Problems with models.json's `segmenters` section (absent is valid), one line each naming the entry
 * and field; empty when valid. Parameter counts and GMACs are left to the tests (they need a segmenter).
 */
export function validateSegmenterEntries(data: unknown, options: ValidateSegmentersOptions = {}): string[] {
  const problems: string[] = [];
  if (!isObj(data)) return ['models.json: expected a JSON object'];
  if (data.segmenters === undefined) return problems;
  if (!Array.isArray(data.segmenters)) return ['segmenters: expected an array'];
  const owners = new Map<string, string>();
  data.segmenters.forEach((e: unknown, i: number) => {
    const label = isObj(e) && typeof e.name === 'string' ? `segmenters[${i}] (${e.name})` : `segmenters[${i}]`;
    const p = (f: string, m: string) => problems.push(`${label}.${f}: ${m}`);
    if (!isObj(e)) return problems.push(`${label}: expected an object`);
    const claim = (id: string, field: string) => {
      if (options.taken?.has(id)) p(field, `'${id}' is already the name of a classification model or detector`);
      else if (options.archNames?.includes(id)) p(field, `'${id}' is an architecture name`);
      else if (owners.has(id)) p(field, `'${id}' is already used by ${owners.get(id)}`);
      else owners.set(id, label);
    };
    if (typeof e.name !== 'string' || !/^fcn_[a-z0-9_]+\.[a-z0-9_]+$/.test(e.name)) p('name', `expected fcn_<arch>.<tag>, got ${show(e.name)}`);
    else {
      claim(e.name, 'name');
      const arch = e.name.slice('fcn_'.length).split('.')[0];
      if (typeof e.arch === 'string' && arch !== e.arch) p('name', `the arch part '${arch}' differs from arch '${e.arch}'`);
    }
    if (!Array.isArray(e.aliases)) p('aliases', 'expected an array of strings (may be empty)');
    else e.aliases.forEach((a: unknown, j: number) => (typeof a === 'string' && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(a) ? claim(a, `aliases[${j}]`) : p(`aliases[${j}]`, `expected a name, got ${show(a)}`)));
    if (e.task !== 'semantic-segmentation') p('task', `expected 'semantic-segmentation', got ${show(e.task)}`);
    if (e.segmenter !== 'fcn') p('segmenter', `expected 'fcn', got ${show(e.segmenter)}`);
    if (typeof e.arch !== 'string' || (options.archNames && !options.archNames.includes(e.arch))) p('arch', `expected a registered architecture, got ${show(e.arch)}`);
    for (const k of ['description', 'recipe', 'license', 'origin'] as const) if (!isText(e[k])) p(k, 'expected a non-empty string');
    if (!isPosInt(e.numClasses) || e.numClasses > 65535) p('numClasses', `expected a positive integer (at most 65535), got ${show(e.numClasses)}`);
    if (typeof e.labels !== 'string' || path.isAbsolute(e.labels) || e.labels.split(/[\\/]/).includes('..')) p('labels', `expected a file inside the package, got ${show(e.labels)}`);
    else if (options.baseDir !== undefined) {
      const names = readCategoryFile(path.join(options.baseDir, e.labels));
      if (typeof names === 'string') p('labels', names);
      else if (isPosInt(e.numClasses) && names.length !== e.numClasses) p('labels', `${e.labels} has ${names.length} names but the entry has ${e.numClasses} classes`);
    }
    if (!Array.isArray(e.sources) || e.sources.length === 0) p('sources', 'expected a non-empty array');
    else e.sources.forEach((s: unknown, j: number) => checkSource(p, s, `sources[${j}]`));
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
    const triple = (v: unknown, positive: boolean) => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0));
    if (!isObj(pre) || !['shorter', 'longer', 'none'].includes(pre.resize as string) || (pre.resize === 'none' ? pre.size !== null : !isPosInt(pre.size)) ||
      !INTERPOLATIONS.includes(pre.interpolation as Interpolation) || !triple(pre.mean, false) || !triple(pre.std, true)) {
      p('preprocessing', `expected {resize: shorter|longer|none, size (null for none), interpolation, mean [3], std [3]}, got ${show(pre)}`);
    }
    if (!isPosInt(e.numParams)) p('numParams', `expected a positive integer, got ${show(e.numParams)}`);
    if (!isPos(e.gmacs)) p('gmacs', `expected a positive number, got ${show(e.gmacs)}`);
    const at = e.gmacsAt;
    if (!isObj(at) || !isPosInt(at.height) || !isPosInt(at.width)) p('gmacsAt', `expected {height, width}, got ${show(at)}`);
    if (!Array.isArray(e.metrics)) p('metrics', 'expected an array (may be empty)');
    else
      e.metrics.forEach((m: unknown, j: number) => {
        const w = `metrics[${j}]`;
        if (!isObj(m)) return p(w, 'expected an object');
        for (const k of ['dataset', 'protocol', 'source'] as const) if (!isText(m[k])) p(`${w}.${k}`, k === 'source' ? 'say where the number comes from' : 'expected a non-empty string');
        if (!isPercent(m.pixAcc)) p(`${w}.pixAcc`, `expected a percentage, got ${show(m.pixAcc)}`);
        if (!isPercent(m.mIoU)) p(`${w}.mIoU`, `expected a percentage, got ${show(m.mIoU)}`);
      });
  });
  return problems;
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

const loadedSegmenters = new Map<string, PublishedSegmenter[]>();

/**
 * The published segmenters of models.json (default: the package's), validated against the registry, the
 * other sections' names and the label files. Invalid content is a UserError listing every problem.
 */
export function loadPublishedSegmenters(file: string = defaultModelsJsonPath()): PublishedSegmenter[] {
  const abs = path.resolve(file);
  const hit = loadedSegmenters.get(abs);
  if (hit) return hit;
  const doc = loadModelsJson(abs);
  const problems = validateSegmenterEntries(doc, { archNames: listModels(), taken: takenNames(doc), baseDir: path.dirname(abs) });
  if (problems.length) throw new UserError(`${abs} is not valid:\n  ${problems.join('\n  ')}`);
  const list = ((doc as unknown as { segmenters?: PublishedSegmenter[] }).segmenters ?? []).slice();
  loadedSegmenters.set(abs, list);
  return list;
}

/** The published segmenter called `name` (its name or an alias), or undefined. */
export function lookupPublishedSegmenter(name: string, file?: string): PublishedSegmenter | undefined {
  return loadPublishedSegmenters(file).find((e) => e.name === name || e.aliases.includes(name));
}

/** The published segmenter called `name` (its name or an alias); an unknown name is a UserError listing near matches. */
export function findPublishedSegmenter(name: string, file?: string): PublishedSegmenter {
  const hit = lookupPublishedSegmenter(name, file);
  if (hit) return hit;
  const list = loadPublishedSegmenters(file);
  const near = nearMatches(name, list.flatMap((e) => [e.name, ...e.aliases]));
  throw new UserError(
    `no published segmenter '${name}' in models.json.${near.length ? ` Did you mean: ${near.join(', ')}?` : ''} Published: ${list.map((e) => e.name).join(', ') || 'none'}.`,
    { exitCode: 2 },
  );
}

/** The class names of a published segmenter: output channel k is names[k]. */
export function publishedSegmenterLabels(entry: PublishedSegmenter, file: string = defaultModelsJsonPath()): string[] {
  const names = readCategoryFile(path.join(path.dirname(path.resolve(file)), entry.labels));
  if (typeof names === 'string') throw new UserError(names);
  return names;
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
export interface SegmenterPullRecord {
  task: 'semantic-segmentation';
  arch: string;
  numClasses: number;
  labels: string[];
  config: PublishedSegmenterConfig;
  preprocessing: SegmenterPreprocessing;
  source: { url: string; format: string; naming: SegmenterNaming; file: string; sha256: string; sha1: string; bytes: number; verified: Verification };
  onnx: { file: string; sha256: string; bytes: number };
  check: { summary: string; cases: string[]; maxAbsDiff: number; maxAbsLogit: number; tolerance: number };
  time: string;
}

export interface PullSegmenterOptions {
  /** Download and convert again even when the cache has the model. */
  force?: boolean;
  settings?: HubSettings;
  log?: (line: string) => void;
  onProgress?: (p: DownloadProgress) => void;
  /** Input sizes [height, width] of the export check (default PULL_CHECK_SIZES). */
  checkSizes?: [number, number][];
  /** Class names (default: the entry's labels file beside the package's models.json). */
  labels?: string[];
  /** Metadata for the ONNX file (default: pulledSegmenterMetadata). */
  metadata?: (entry: PublishedSegmenter, labels: string[]) => Record<string, string>;
  signal?: AbortSignal;
}

/** The export check of a pull: two small odd sizes (each costs a full dilated forward pass in tfjs). */
export const PULL_CHECK_SIZES: [number, number][] = [[97, 131], [128, 128]];

/** Metadata of a pulled segmenter (metadata.ts): the task, the entry's name and arch, labels and normalization. */
export function pulledSegmenterMetadata(entry: PublishedSegmenter, labels: string[]): Record<string, string> {
  return segmentationMetadata({ arch: entry.arch, name: entry.name, labels, mean: entry.preprocessing.mean, std: entry.preprocessing.std });
}

export interface PulledSegmenter {
  name: string;
  dir: string;
  /** The converted segmenter. */
  onnx: string;
  /** The weights file as published. */
  weights: string;
  record: SegmenterPullRecord;
  fromCache: boolean;
}

function sourceFile(url: string): string {
  const name = path.posix.basename(new URL(url).pathname);
  if (!name || name === '.' || name === '..') throw new UserError(`cannot derive a file name from source '${url}'`);
  return name;
}

async function cachedSegmenter(entry: PublishedSegmenter, settings: HubSettings): Promise<PulledSegmenter | undefined> {
  const manifest = await readManifest(entry.name, settings);
  const record = manifest?.meta?.segmenter as SegmenterPullRecord | undefined;
  if (!record || record.arch !== entry.arch || !entry.sources.some((s) => s.url === record.source?.url)) return undefined;
  const dir = modelDir(entry.name, settings);
  const onnx = path.join(dir, record.onnx.file);
  if (!existsSync(onnx) || (await hashFile(onnx)).sha256 !== record.onnx.sha256) return undefined;
  return { name: entry.name, dir, onnx, weights: path.join(dir, record.source.file), record, fromCache: true };
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
    const bytes = exportSegmenter(seg, { metadata });
    const check = await checkSegmenterExport(seg, bytes, { sizes: options.checkSizes ?? PULL_CHECK_SIZES });
    const summary = describeSegCheck(check);
    if (!check.passed) throw new UserError(`the converted ${entry.name} does not reproduce in ONNX Runtime: ${summary}`);
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
  const settings = options.settings ?? hubSettings();
  const log = options.log ?? (() => {});
  const labels = options.labels ?? publishedSegmenterLabels(entry);
  if (labels.length !== entry.numClasses) throw new UserError(`${entry.name} has ${entry.numClasses} classes but ${labels.length} labels were given`);
  return withModelLock(
    entry.name,
    async () => {
      if (!options.force) {
        const cached = await cachedSegmenter(entry, settings);
        if (cached) return cached;
      }
      const failures: SourceFailure[] = [];
      for (const source of entry.sources) {
        const fileName = sourceFile(source.url);
        let converted: Awaited<ReturnType<typeof convertPublished>> | undefined;
        try {
          const byMember = source.format === 'gluon-zip' && source.member && source.sha1 ? { member: source.member, sha1: source.sha1 } : undefined;
          const byPrefix = !source.sha256 && source.sha256Prefix ? source.sha256Prefix : undefined;
          const pinnedBy = byMember ? `GluonCV's SHA-1 of ${byMember.member}` : byPrefix ? `the sha256 prefix ${byPrefix} in its file name` : undefined;
          const fetched = await fetchFile({
            name: entry.name,
            fileName,
            sources: [source.url],
            expected: source.sha256 ? { sha256: source.sha256 } : {},
            ...(pinnedBy ? { pinnedBy } : {}),
            ...(source.size ? { size: source.size } : {}),
            verify: async (file) => {
              if (byMember) await verifyMember(file, byMember.member, byMember.sha1);
              if (byPrefix) await checkSha256Prefix(file, byPrefix);
              converted = await convertPublished(entry, source, file, labels, options, log);
            },
            force: options.force ?? false,
            lockHeld: true,
            log,
            settings,
            ...(options.onProgress ? { onProgress: options.onProgress } : {}),
            ...(options.signal ? { signal: options.signal } : {}),
          });
          const dir = modelDir(entry.name, settings);
          const onnx = path.join(dir, 'model.onnx');
          // fetchFile runs `verify` on a fresh download and on a cached copy alike, so the conversion is there.
          await writeFileAtomic(onnx, converted!.bytes);
          const h = await hashFile(onnx);
          const e = fetched.entry;
          const c = converted!.check;
          const record: SegmenterPullRecord = {
            task: 'semantic-segmentation',
            arch: entry.arch,
            numClasses: entry.numClasses,
            labels,
            config: entry.config,
            preprocessing: entry.preprocessing,
            source: { url: source.url, format: source.format, naming: source.naming, file: fileName, sha256: e.sha256, sha1: e.sha1, bytes: e.size, verified: fetched.verified },
            onnx: { file: 'model.onnx', sha256: h.sha256, bytes: h.bytes },
            check: {
              summary: converted!.summary,
              cases: c.cases.map((k) => `${k.batch}x${k.height}x${k.width}`),
              maxAbsDiff: Math.max(0, ...c.cases.map((k) => k.maxAbsDiff)),
              maxAbsLogit: Math.max(0, ...c.cases.map((k) => k.maxAbsLogit)),
              tolerance: c.tolerance,
            },
            time: new Date().toISOString(),
          };
          const manifest = (await readManifest(entry.name, settings)) ?? { name: entry.name, files: {} };
          manifest.meta = { ...(manifest.meta ?? {}), segmenter: record };
          await writeManifest(entry.name, manifest, settings);
          return { name: entry.name, dir, onnx, weights: fetched.path, record, fromCache: false };
        } catch (err) {
          if (!(err instanceof UserError) || options.signal?.aborted) throw err;
          const failure =
            err instanceof FetchError && err.failures.length === 1
              ? err.failures[0]!
              : { source: redactUrl(source.url), tried: [], reason: err.message, notFound: false, network: false };
          failures.push(failure);
          log(`source ${source.url} failed: ${describeFailure(failure)}`);
        }
      }
      await pruneModelDir(entry.name, settings);
      throw new PullError(entry.name, failures, pullHints(entry, settings, failures));
    },
    settings,
  );
}
