/**
 * Loading a detector's weights from a file: zoo's own (a detector's parameters under their zoo names,
 * PyTorch layout, as zoo's checkpoints store them) or GluonCV's published Faster R-CNN
 * (`faster_rcnn_resnet50_v1b_voc` and the other C4 models built on resnetv1b.py).
 *
 * GluonCV saves a Faster R-CNN with `save_parameters`, which names every parameter by its path in the
 * network (`_collect_params_with_prefix`). The C4 models wrap the backbone in two HybridSequentials,
 * so the names are:
 *
 *   features.0.*               the stem: the 7x7 conv (`features.0.weight`), or the deep stem's
 *                              convolutions and batch norms (`features.0.{0,1,3,4,6}.*`)
 *   features.1.*               bn1 (features.2 and .3 are the ReLU and the max pool)
 *   features.{4,5,6}.B.*       layer1..layer3, block B: conv1..3, bn1..3, downsample.{0,1} (or
 *                              {1,2} after the average pool of resnet*_v1d)
 *   top_features.0.B.*         layer4, the box head
 *   rpn.conv1.0.{weight,bias}  the RPN's 3x3 conv (rpn.conv1.1 is its ReLU)
 *   rpn.score.*, rpn.loc.*     objectness (A channels) and box deltas (4A channels, anchor-major)
 *   class_predictor.*          [C + 1, 2048], background first
 *   box_predictor.*            [4C, 2048], class-major, (dx, dy, dw, dh) per class
 *   rpn.anchor_generator.anchors  a Constant: the anchors of a 128 x 128 feature map, [1, 1, 128, 128, 4A]
 *
 * Batch norm keeps gamma / beta / running_mean / running_var; convolutions are OIHW and dense layers
 * [out, in], as in PyTorch. The channel orders are zoo's: GluonCV transposes its RPN outputs to NHWC
 * and reshapes them to (H * W * A, 1) and (H * W * A, 4), which is the anchor order of
 * AnchorGenerator.grid, and reshapes the box predictor's output to (C, 4). So every tensor maps by
 * name alone. The anchors are no parameter: they are compared with the detector's own anchor grid, so
 * a file trained with another anchor configuration is refused instead of silently mis-decoded.
 *
 * Everything is checked (names, shapes, the anchors) before any parameter changes, within a memory
 * budget of a few times the detector's size, with convert/convert.ts's helpers for layouts and dtypes.
 *
 * Published detectors are models.json's `detectors` section (beside the classifiers' `models`, which
 * the classification commands read): the weights' sources and checksums as the host publishes them,
 * the detector configuration the weights need, preprocessing, labels, counts and metrics.
 */
import { existsSync, statSync } from 'node:fs';
import path, { extname } from 'node:path';
import { UserError } from '../errors.js';
import type { ByteBudget } from '../formats/budget.js';
import { quoteName, type TensorDescriptor, type TensorSource } from '../formats/types.js';
import { openTensors, readFloat32, type WeightFormat } from '../convert/convert.js';
import { INTERPOLATIONS, type Interpolation } from '../predict/preprocessing.js';
import { listModels } from '../models/registry.js';
import { defaultModelsJsonPath, modelNames } from '../hub/models_json.js';
import { verifyMember } from '../hub/pull.js';
import { keepFile, KeepFileError } from '../hub/cache.js';
import { checkPublishedSource, headBudget, isObj, isPercent, isPos, isPosInt, isText, isTriple, matchHeadTensors, matchProblems, publishedSection, pullPublishedHead, readMatched, show, validatePublishedSection, type HeadPullOptions, type HeadPullRecord, type Problem, type PulledHead, type SectionRules, type ValidateSectionOptions, type SourceRules } from '../hub/published_heads.js';
import { createDetector, type Detector } from './detector.js';
import type { FasterRcnnConfig } from './faster_rcnn.js';
import { checkDetectorExport, describeDetectorCheck, exportDetector, type DetectorCheckOptions } from './export.js';
import { detectionMetadata } from './metadata.js';

export const DETECTOR_NAMINGS = ['gluoncv', 'zoo'] as const;
/** Whose names a detector's weights file uses. */
export type DetectorNaming = (typeof DETECTOR_NAMINGS)[number];

/** The Constant in which GluonCV saves its RPN's anchors. */
export const GLUON_ANCHORS = 'rpn.anchor_generator.anchors';

/** Largest difference, in input pixels, between the file's anchors and the detector's that is accepted. */
const ANCHOR_TOLERANCE = 1e-3;

const GLUON_HEADS: [RegExp, string][] = [
  [/^rpn\.conv1\.0\.(weight|bias)$/, 'rpn.head.conv'],
  [/^rpn\.score\.(weight|bias)$/, 'rpn.head.cls_logits'],
  [/^rpn\.loc\.(weight|bias)$/, 'rpn.head.bbox_pred'],
  [/^class_predictor\.(weight|bias)$/, 'roi_heads.box_predictor.cls_score'],
  [/^box_predictor\.(weight|bias)$/, 'roi_heads.box_predictor.bbox_pred'],
];

/** The backbone containers of GluonCV's C4 models: `features` children by index, `top_features.0`. */
const GLUON_TRUNK: Record<string, string> = { '0': 'conv1', '1': 'bn1', '4': 'layer1', '5': 'layer2', '6': 'layer3' };

/**
 * zoo's name for a tensor of a GluonCV Faster R-CNN (C4, resnetv1b backbone), or undefined when the
 * name is none GluonCV gives such a model. The anchors Constant maps to itself (it is checked, not loaded).
 */
export function gluonDetectorName(name: string): string | undefined {
  if (name === GLUON_ANCHORS) return name;
  for (const [re, to] of GLUON_HEADS) {
    const m = re.exec(name);
    if (m) return `${to}.${m[1]}`;
  }
  let path: string | undefined;
  const f = /^features\.(\d+)\.(.+)$/.exec(name);
  if (f && GLUON_TRUNK[f[1]!]) path = `${GLUON_TRUNK[f[1]!]}.${f[2]}`;
  const t = /^top_features\.0\.(.+)$/.exec(name);
  if (t) path = `layer4.${t[1]}`;
  if (!path) return undefined;
  // Only batch norm has gamma and beta in Gluon; zoo (timm) calls them weight and bias.
  return path.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
}

/** Guesses the naming of a detector's weights from the tensor names. */
export function detectDetectorNaming(names: Iterable<string>): DetectorNaming | undefined {
  const list = [...names];
  if (list.some((n) => n.startsWith('features.') || n.startsWith('top_features.') || n.startsWith('rpn.conv1.') || n.startsWith('class_predictor.'))) return 'gluoncv';
  if (list.some((n) => n.startsWith('rpn.head.') || n.startsWith('roi_heads.') || n.startsWith('conv1.') || n.startsWith('layer1.'))) return 'zoo';
  return undefined;
}

/**
 * The memory budget for loading a file into `det`: MODEL_BUDGET_FACTOR (4) x the float32 bytes of its
 * parameters and buffers, plus 16 MiB (which also covers GluonCV's 3.9 MB anchors Constant), as
 * convert.ts's modelBudget gives a classifier.
 */
export function detectorBudget(det: Detector, label: string): ByteBudget {
  return headBudget(det.params.specs, label, `the ${det.arch} detector`);
}

/** What loading found and did. */
export interface DetectorConversionReport {
  /** Parameters and buffers set. */
  loaded: number;
  /** 'checked': the file's anchors matched the detector's; 'absent': the file holds none (zoo's files never do). */
  anchors: 'checked' | 'absent';
}

function describeShape(d: TensorDescriptor): string {
  return `[${d.shape.join(', ')}]`;
}

/**
 * Why GluonCV's anchors [1, 1, H, W, 4A] differ from the detector's grid of an H x W map, or undefined
 * when they agree within ANCHOR_TOLERANCE pixels.
 */
function anchorProblem(det: Detector, d: TensorDescriptor, values: Float32Array): string | undefined {
  const [, , h, w] = d.shape as [number, number, number, number, number];
  const grid = det.net.anchorGenerator.grid(h, w);
  const A = det.net.anchorGenerator.numAnchors;
  let worst = -1;
  let diff = 0;
  for (let i = 0; i < grid.length; i++) {
    const e = Math.abs(grid[i]! - values[i]!);
    if (!(e <= diff)) {
      diff = e;
      worst = i;
    }
  }
  if (!(diff > ANCHOR_TOLERANCE)) return undefined;
  const box = Math.floor(worst / 4);
  const a = box % A;
  const x = Math.floor(box / A) % w;
  const y = Math.floor(box / A / w);
  const show = (v: Float32Array) => `[${Array.from(v.subarray(4 * box, 4 * box + 4), (z) => +z.toFixed(2)).join(', ')}]`;
  const o = det.net.anchorGenerator.options;
  return (
    `${GLUON_ANCHORS}: the file's anchors differ from this detector's by up to ${diff.toPrecision(3)} pixels ` +
    `(anchor ${a} at feature position (${y}, ${x}): the file has ${show(values)}, the detector ${show(grid)}); ` +
    `the weights were trained with other anchors than stride ${o.stride}, base size ${o.baseSize}, scales [${o.scales.join(', ')}], ratios [${o.ratios.join(', ')}]`
  );
}

function anchorShapeProblem(det: Detector, d: TensorDescriptor): string | undefined {
  const A = det.net.anchorGenerator.numAnchors;
  const s = d.shape;
  if (s.length === 5 && s[0] === 1 && s[1] === 1 && s[4] === 4 * A) return undefined;
  return `${GLUON_ANCHORS}: source ${describeShape(d)}, expected [1, 1, height, width, ${4 * A}] (${A} anchors per position)`;
}

/** A hint for files that are not a detector's: a classifier's weights, or another number of classes. */
function hints(det: Detector, source: TensorSource, naming: DetectorNaming): string[] {
  const names = [...source.tensors.keys()];
  const out: string[] = [];
  if (names.includes('fc.weight') || names.includes('output.weight')) {
    out.push(`it looks like a classifier's weights (it has ${names.includes('fc.weight') ? 'fc' : 'output'}.weight): use it as the detector's backbone instead (load it into a classifier of the same architecture, then Detector.loadBackbone)`);
  }
  const cls = source.tensors.get(naming === 'gluoncv' ? 'class_predictor.weight' : 'roi_heads.box_predictor.cls_score.weight');
  if (cls && cls.shape.length === 2 && cls.shape[1] === det.net.boxHead.outFeatures && cls.shape[0] !== det.numClasses + 1) {
    out.push(`the file's class predictor has ${cls.shape[0]! - 1} classes and background, this detector ${det.numClasses}`);
  }
  return out;
}

/**
 * Loads the tensors of an opened file into `det`. Every parameter and running statistic must be there
 * with its shape and nothing may be left over (GluonCV's anchors are checked against the detector's);
 * otherwise a UserError lists what is missing, unexpected or mis-shaped and no parameter changes.
 * Names and shapes are decided from the descriptors before any tensor is read; reads and conversions
 * are charged to the source's budget.
 */
export function loadDetectorTensors(det: Detector, source: TensorSource, naming: DetectorNaming, label: string): DetectorConversionReport {
  const specs = det.params.specs;
  let anchors: TensorDescriptor | undefined;
  const match = matchHeadTensors(source, specs, (src, d) => {
    const name = naming === 'gluoncv' ? gluonDetectorName(src) : src;
    if (name !== GLUON_ANCHORS || naming !== 'gluoncv') return name;
    const problem = anchorShapeProblem(det, d);
    if (problem) return { problem };
    anchors = d;
    return null;
  });
  const fail = (lists: string[]) => {
    const why = [...lists, ...hints(det, source, naming)].join('; ');
    return new UserError(`${label} does not match the ${det.arch} detector with ${det.numClasses} classes (${naming} names): ${why}. No parameter was changed.`);
  };
  const problems = matchProblems(match);
  if (problems.length) throw fail(problems);
  const budget = source.budget;
  if (anchors) {
    const problem = anchorProblem(det, anchors, readFloat32(anchors, budget));
    if (problem) throw fail([problem]);
  }
  // Every name and shape fits: read what the detector takes, then change it.
  const staged = readMatched(match, specs, budget);
  for (const [name, v] of staged) det.params.setValues(name, v);
  return { loaded: staged.size, anchors: anchors ? 'checked' : 'absent' };
}

/** Options for loadDetectorWeights. */
export interface LoadDetectorWeightsOptions {
  /** 'auto' (default): from the tensor names. */
  naming?: DetectorNaming | 'auto';
  /** Default: from the file name and contents. */
  format?: WeightFormat;
  /** Default: detectorBudget(det, file). */
  budget?: ByteBudget;
}

export interface LoadedDetectorWeights extends DetectorConversionReport {
  format: WeightFormat;
  naming: DetectorNaming;
  warnings: string[];
}

/**
 * Loads a weights file (safetensors, .pth, GluonCV's .params or its zip) into `det`; any problem is a
 * UserError naming the file, and leaves `det` unchanged.
 */
export async function loadDetectorWeights(det: Detector, file: string, options: LoadDetectorWeightsOptions = {}): Promise<LoadedDetectorWeights> {
  const naming = options.naming ?? 'auto';
  if (naming !== 'auto' && !DETECTOR_NAMINGS.includes(naming)) {
    throw new UserError(`unknown detector weights naming '${String(naming)}' (expected ${DETECTOR_NAMINGS.join(', ')} or auto)`, { exitCode: 2 });
  }
  if (!existsSync(file)) throw new UserError(`weights file '${file}' does not exist`);
  if (!statSync(file).isFile()) throw new UserError(`weights path '${file}' is not a file`);
  if (options.format === 'onnx' || extname(file).toLowerCase() === '.onnx') {
    throw new UserError(`${file}: an ONNX export is a graph, not a weights file a detector loads; give the .safetensors, .pth or GluonCV .params/.zip it came from`);
  }
  const source = await openTensors(file, {
    ...(options.format ? { format: options.format } : {}),
    budget: options.budget ?? detectorBudget(det, file),
  });
  const used = naming === 'auto' ? detectDetectorNaming(source.tensors.keys()) : naming;
  if (!used) {
    const some = [...source.tensors.keys()].slice(0, 3).map((n) => quoteName(n)).join(', ');
    throw new UserError(`${file}: cannot tell how its tensors are named (${some || 'no tensors'}); pass naming 'gluoncv' or 'zoo'`);
  }
  const report = loadDetectorTensors(det, source, used, file);
  return { ...report, format: source.format, naming: used, warnings: [...source.warnings] };
}

// ---------------------------------------------------------------------------------------------------
// Published detectors: the `detectors` section of models.json.

/** One downloadable file of a published detector's weights. */
export interface DetectorSource {
  format: 'gluon-zip' | 'params' | 'safetensors';
  naming: DetectorNaming;
  url: string;
  /** GluonCV's SHA-1: of `member`, the .params inside the zip. */
  sha1?: string | null;
  member?: string;
  sha256?: string | null;
  size?: number | null;
  host: 'gluoncv' | 'huggingface';
}

/**
 * Test-time resizing as GluonCV does it (resize_short_within): the shorter side to `minSize`, the longer
 * at most `maxSize`, then (x / 255 - mean) / std per RGB channel; the names of detection/metadata.ts.
 */
export interface DetectorPreprocessing {
  minSize: number;
  maxSize: number;
  interpolation: Interpolation;
  mean: [number, number, number];
  std: [number, number, number];
}

/** A published detection metric (VOC07 11-point mAP, and the area-under-curve mAP where known). */
export interface DetectorMetric {
  dataset: string;
  map07: number;
  map: number | null;
  iou: number;
  source: string;
}

/** The configuration an entry fixes; the rest comes from defaultFasterRcnnConfig. */
export type PublishedDetectorConfig = Pick<FasterRcnnConfig, 'anchors' | 'rpnChannels' | 'rpnTest' | 'roiAlign' | 'boxWeights' | 'detections'>;

/** One entry of models.json's `detectors`. */
export interface PublishedDetector {
  /** `faster_rcnn_<arch>.<tag>`. */
  name: string;
  aliases: string[];
  task: 'object-detection';
  detector: 'faster_rcnn_c4';
  /** The backbone: a zoo registry name. */
  arch: string;
  description: string;
  numClasses: number;
  /** A `{source, license, names}` file relative to models.json: class i is names[i]. */
  labels: string;
  sources: DetectorSource[];
  config: PublishedDetectorConfig;
  preprocessing: DetectorPreprocessing;
  /** Trainable parameters (Detector.counts). */
  numParams: number;
  /** Multiply-adds per image at `gmacsAt`, in billions (Detector.counts). */
  gmacs: number;
  gmacsAt: { height: number; width: number; regions: number };
  metrics: DetectorMetric[];
  recipe: string;
  license: string;
  origin: string;
}


const SOURCE_RULES: SourceRules = {
  extensions: { 'gluon-zip': '.zip', params: '.params', safetensors: '.safetensors' },
  formatsText: 'gluon-zip, params or safetensors',
  namings: DETECTOR_NAMINGS,
  namingsText: DETECTOR_NAMINGS.join(' or '),
  hosts: ['gluoncv', 'huggingface'],
  hostsText: 'gluoncv or huggingface',
};

function checkDetectorSource(p: Problem, s: unknown, where: string): void {
  checkPublishedSource(p, s, where, SOURCE_RULES);
}

function checkDetectorConfig(p: Problem, c: unknown): void {
  if (!isObj(c)) return p('config', 'expected an object');
  const a = c.anchors;
  if (!isObj(a) || !isPos(a.stride) || !isPos(a.baseSize) || !Array.isArray(a.scales) || !a.scales.every(isPos) || !Array.isArray(a.ratios) || !a.ratios.every(isPos)) {
    p('config.anchors', `expected {stride, baseSize, scales, ratios} of positive numbers, got ${show(a)}`);
  }
  if (!isPosInt(c.rpnChannels)) p('config.rpnChannels', `expected a positive integer, got ${show(c.rpnChannels)}`);
  const r = c.rpnTest;
  if (!isObj(r) || !isPosInt(r.preNms) || !isPosInt(r.postNms) || !(typeof r.nmsThreshold === 'number' && r.nmsThreshold >= 0 && r.nmsThreshold <= 1) || !(typeof r.minSize === 'number' && r.minSize >= 0)) {
    p('config.rpnTest', `expected {preNms, postNms, nmsThreshold in [0, 1], minSize}, got ${show(r)}`);
  }
  const o = c.roiAlign;
  if (!isObj(o) || !Array.isArray(o.outputSize) || o.outputSize.length !== 2 || !o.outputSize.every(isPosInt) || !isPos(o.spatialScale) || !(Number.isInteger(o.samplingRatio) && (o.samplingRatio as number) >= 0) || typeof o.aligned !== 'boolean') {
    p('config.roiAlign', `expected {outputSize [h, w], spatialScale, samplingRatio, aligned}, got ${show(o)}`);
  }
  if (!Array.isArray(c.boxWeights) || c.boxWeights.length !== 4 || !c.boxWeights.every(isPos)) p('config.boxWeights', `expected 4 positive numbers, got ${show(c.boxWeights)}`);
  const d = c.detections;
  if (!isObj(d) || !(typeof d.scoreThreshold === 'number' && d.scoreThreshold >= 0 && d.scoreThreshold < 1) || !(typeof d.nmsThreshold === 'number' && d.nmsThreshold >= 0 && d.nmsThreshold <= 1) || !isPosInt(d.maxDetections)) {
    p('config.detections', `expected {scoreThreshold, nmsThreshold, maxDetections}, got ${show(d)}`);
  }
}

/** Options of validateDetectorEntries; `taken` holds the names, aliases and timm ids of the classification entries. */
export type ValidateDetectorsOptions = ValidateSectionOptions;

const SECTION_RULES: SectionRules = {
  section: 'detectors',
  namePrefix: 'faster_rcnn_',
  task: 'object-detection',
  kind: { field: 'detector', value: 'faster_rcnn_c4' },
  takenIs: "a classification model's name",
  checkSource: checkDetectorSource,
  checkEntry(p, e) {
    checkDetectorConfig(p, e.config);
    const pre = e.preprocessing;
    if (!isObj(pre) || !isPosInt(pre.minSize) || !isPosInt(pre.maxSize) || (pre.maxSize as number) < (pre.minSize as number) ||
      !INTERPOLATIONS.includes(pre.interpolation as Interpolation) || !isTriple(pre.mean, false) || !isTriple(pre.std, true)) {
      p('preprocessing', `expected {minSize, maxSize >= minSize, interpolation, mean [3], std [3]}, got ${show(pre)}`);
    }
  },
  gmacsAt: ['height', 'width', 'regions'],
  checkMetric(p, m, w) {
    if (!isText(m.dataset)) p(`${w}.dataset`, 'expected a non-empty string');
    if (!isText(m.source)) p(`${w}.source`, 'say where the number comes from');
    if (!isPercent(m.map07)) p(`${w}.map07`, `expected a percentage, got ${show(m.map07)}`);
    if (m.map !== null && !isPercent(m.map)) p(`${w}.map`, `expected null or a percentage, got ${show(m.map)}`);
    if (!(typeof m.iou === 'number' && m.iou > 0 && m.iou < 1)) p(`${w}.iou`, `expected the IoU threshold, got ${show(m.iou)}`);
  },
};

/**
 * Problems with models.json's `detectors` section (absent is valid), one line each naming the entry
 * and field; empty when valid. Parameter counts and GMACs are left to the tests (they need a detector).
 */
export function validateDetectorEntries(data: unknown, options: ValidateDetectorsOptions = {}): string[] {
  return validatePublishedSection(data, SECTION_RULES, options);
}

const detectors = publishedSection<PublishedDetector>({
  section: 'detectors',
  what: 'detector',
  validate: validateDetectorEntries,
  archNames: listModels,
  taken: (doc) => new Set(modelNames(doc).keys()),
});

/**
 * The published detectors of models.json (default: the package's), validated against the registry,
 * the classification entries' names and the label files. Invalid content is a UserError listing every problem.
 */
export function loadPublishedDetectors(file: string = defaultModelsJsonPath()): PublishedDetector[] {
  return detectors.load(file);
}

/** The published detector called `name` (its name or an alias); an unknown name is a UserError listing near matches. */
export function findPublishedDetector(name: string, file?: string): PublishedDetector {
  return detectors.find(name, file);
}

/** The class names of a published detector, class i (1-based in the model, after background) being names[i - 1]. */
export function publishedDetectorLabels(entry: PublishedDetector, file: string = defaultModelsJsonPath()): string[] {
  return detectors.labels(entry, file);
}

/** A detector configured as a published entry says, with fresh parameters (load the weights with loadDetectorWeights). */
export function createPublishedDetector(entry: PublishedDetector, options: { seed?: number } = {}): Detector {
  return createDetector(entry.arch, entry.numClasses, { config: { ...entry.config }, ...(options.seed !== undefined ? { seed: options.seed } : {}) });
}

// ---------------------------------------------------------------------------------------------------
// Pulling a published detector: download and verify through the hub's cache, convert, export, check.

/**
 * What a pull records in the model's manifest, under `meta.detector` (not `meta.converted`, which
 * the classification commands take for a classifier): enough to use model.onnx without models.json.
 */
export interface DetectorPullRecord
  extends HeadPullRecord<
    'object-detection',
    PublishedDetectorConfig,
    DetectorPreprocessing,
    DetectorNaming,
    { cases: string[]; maxBoxDiff: number; maxScoreDiff: number; boxTolerance: number; scoreTolerance: number }
  > {}

export interface PullDetectorOptions extends HeadPullOptions {
  /** Image sizes and batch sizes of the export check (default PULL_CHECK). */
  check?: Pick<DetectorCheckOptions, 'sizes' | 'batches'>;
  /** Class names (default: the entry's labels file beside the package's models.json). */
  labels?: string[];
}

/**
 * The export check of a pull: one size at batch 1 and 2. A full ResNet-50 detector spends about 0.25 s
 * per region in tfjs on two cores, so each image of 300 proposals costs over a minute; the graph's other
 * sizes run the same nodes, which zoo's export tests cover.
 */
export const PULL_CHECK: Required<Pick<DetectorCheckOptions, 'sizes' | 'batches'>> = { sizes: [[224, 224]], batches: [1, 2] };

export type PulledDetector = PulledHead<DetectorPullRecord>;

/** Loads a downloaded file into the entry's detector, exports it and checks the export in ONNX Runtime. */
async function convertPublished(entry: PublishedDetector, source: DetectorSource, file: string, labels: string[], options: PullDetectorOptions, log: (l: string) => void) {
  log(`converting ${path.basename(file)} (${source.format}, ${source.naming} names) to the ${entry.arch} detector`);
  const det = createPublishedDetector(entry);
  try {
    const loaded = await loadDetectorWeights(det, file, { naming: source.naming, format: source.format });
    for (const w of loaded.warnings) log(`warning: ${w}`);
    if (loaded.anchors === 'checked') log("the file's anchors match the detector's");
    const metadata = detectionMetadata({
      arch: entry.arch,
      name: entry.name,
      labels,
      minSize: entry.preprocessing.minSize,
      maxSize: entry.preprocessing.maxSize,
      mean: entry.preprocessing.mean,
      std: entry.preprocessing.std,
    });
    // From here on the file has passed: a failure is the export's or the runtime's, and the file stays cached.
    const bytes = await exportDetector(det, { metadata }).catch(keepFile);
    const check = await checkDetectorExport(det, bytes, options.check ?? PULL_CHECK).catch(keepFile);
    if (!check.passed) throw new KeepFileError(`the converted ${entry.name} does not reproduce in ONNX Runtime: ${describeDetectorCheck(check)}`);
    log(`checked in ONNX Runtime: ${describeDetectorCheck(check)}`);
    return { bytes, check };
  } finally {
    det.dispose();
  }
}

/**
 * Pulls a published detector into the cache (`<cache>/<name>/`): downloads its first source that works
 * (mirrors, checksums, GluonCV's member SHA-1, resumable transfers and the model's lock as `zoo pull`
 * has them: hub/cache.ts), loads it into the entry's detector, exports the ONNX graph, checks it against
 * the tfjs detector, and records it all. A model already pulled comes from the cache.
 */
export async function pullDetector(entry: PublishedDetector, options: PullDetectorOptions = {}): Promise<PulledDetector> {
  const labels = options.labels ?? publishedDetectorLabels(entry);
  return pullPublishedHead(entry, labels, options, {
    key: 'detector',
    task: 'object-detection',
    pin: (source) => (source.member && source.sha1 ? { by: `GluonCV's SHA-1 of ${source.member}`, check: (file) => verifyMember(file, source.member!, source.sha1!) } : undefined),
    convert: (source, file, log) => convertPublished(entry, source, file, labels, options, log),
    check: ({ check: c }) => ({
      cases: c.cases.map((k) => `${k.batch}x${k.height}x${k.width}: ${k.matched}/${k.onnx}`),
      maxBoxDiff: Math.max(0, ...c.cases.map((k) => k.maxBoxDiff)),
      maxScoreDiff: Math.max(0, ...c.cases.map((k) => k.maxScoreDiff)),
      boxTolerance: c.boxTolerance,
      scoreTolerance: c.scoreTolerance,
    }),
  });
}
