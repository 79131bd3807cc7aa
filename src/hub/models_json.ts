/**
 * models.json: the registry of published weights, one entry per model a user can `zoo pull`.
 *
 * An entry is the union of torchvision's `Weights.meta` and timm's `PretrainedCfg`: a name in timm's
 * `arch.tag` form whose arch is a zoo registry name (so `resnet50` is the paper's ResNet-A and
 * `resnet50b` what timm and torchvision call resnet50), aliases, sources in priority order, evaluation
 * preprocessing, the categories (kept once per label set, in data/), parameter count, GFLOPs,
 * metrics with where each number comes from, recipe, license and origin.
 *
 * Checksums are the ones the hosts publish: GluonCV's model store pins a SHA-1 per model, computed over
 * the `.params` file inside its zip (`member`), not over the zip; torchvision's file names carry the
 * first 8 hex digits of the file's sha256; the Hugging Face hub declares a large file's sha256 (its
 * linked ETag), which the puller records on the first good pull where models.json has none.
 *
 * The validator is pure apart from the optional category-file reads, so tests can feed it broken
 * copies; `loadModelsJson` runs it against the real registry before handing out any entry.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findPackageDir } from '../util/package.js';
import { checkCropFields, checkPreprocessingFields, type Interpolation } from '../predict/preprocessing.js';
import { UserError, nearMatches } from '../errors.js';
import { countNetwork } from '../models/count.js';
import { archFromTimm, getModelEntry, listModels } from '../models/registry.js';
import { ResNet } from '../models/resnet.js';

export const MODELS_JSON_VERSION = 1;

export const SOURCE_FORMATS = ['safetensors', 'gluon-zip', 'pth', 'onnx'] as const;
/** How a source file is stored. */
export type SourceFormat = (typeof SOURCE_FORMATS)[number];

export const SOURCE_NAMINGS = ['timm', 'gluon-v1b', 'gluon-v1', 'torchvision', 'zoo'] as const;
/** Whose parameter names the file uses (src/convert/naming.ts maps each onto zoo's). */
export type SourceNaming = (typeof SOURCE_NAMINGS)[number];

export const SOURCE_HOSTS = ['huggingface', 'gluoncv', 'torchvision'] as const;
/** Who serves the file; each host has its own mirror setting (hub/settings.ts). */
export type SourceHost = (typeof SOURCE_HOSTS)[number];

export { INTERPOLATIONS, type Interpolation } from '../predict/preprocessing.js';

/** Which namings each format can carry. */
const FORMAT_NAMINGS: Record<SourceFormat, readonly SourceNaming[]> = {
  safetensors: ['timm', 'zoo'],
  'gluon-zip': ['gluon-v1b', 'gluon-v1'],
  pth: ['torchvision', 'timm'],
  onnx: ['zoo'],
};

/** The file name ending each format's URL must have. */
const FORMAT_EXTENSIONS: Record<SourceFormat, string> = {
  safetensors: '.safetensors',
  'gluon-zip': '.zip',
  pth: '.pth',
  onnx: '.onnx',
};

/** One downloadable file holding an entry's weights. */
export interface WeightSource {
  format: SourceFormat;
  naming: SourceNaming;
  /** https URL on the public host; mirrors replace its host part at download time. */
  url: string;
  /** sha256 of the file as downloaded; null where the host declares it only at download time. */
  sha256?: string | null;
  /** GluonCV's SHA-1: of `member`, the .params inside the zip, not of the zip itself. */
  sha1?: string | null;
  /** For gluon-zip: the .params file inside the zip that `sha1` covers. */
  member?: string;
  /** First hex digits of the file's sha256 as a file name carries them (torchvision). */
  sha256Prefix?: string;
  /** File size in bytes, where published. */
  size?: number | null;
  host: SourceHost;
}

/** Resize, crop and normalize for evaluation: resize the shorter side, center crop, (x / 255 - mean) / std. */
export interface CropSize {
  /** Network input side (= crop). */
  inputSize: number;
  resizeShorter: number;
  crop: number;
  /** crop / resizeShorter as timm states it (`crop_pct`); resizeShorter = round(crop / cropPct). */
  cropPct?: number;
}

export interface Preprocessing extends CropSize {
  interpolation: Interpolation;
  mean: [number, number, number];
  std: [number, number, number];
  /** A larger test-time size the weights were also evaluated at (timm's `test_input_size`). */
  test?: CropSize;
}

/** One published accuracy figure and where it comes from. */
export interface Metric {
  dataset: string;
  top1: number;
  top5: number | null;
  inputSize: number;
  source: string;
}

/** One models.json entry. */
export interface PublishedModel {
  /** `arch.tag`, timm style. */
  name: string;
  /** Other names, unique across the file (e.g. `resnet50d-best`). */
  aliases: string[];
  /**
   * timm's id for the same weights (`resnet50.gluon_in1k` for zoo's `resnet50b.gluon_in1k`), or null
   * (or absent) where timm has none. A timm id always means what timm means: `resolveModel` takes it as a name.
   */
  timm?: string | null;
  /** A zoo registry name: picks the builder. */
  arch: string;
  description: string;
  numClasses: number;
  /** Key into the top-level `categories`, or null for unnamed classes. */
  categories: string | null;
  /** In priority order: the puller tries the next when one fails. */
  sources: WeightSource[];
  preprocessing: Preprocessing;
  /** Trainable parameters (weights, biases, BN gamma and beta; not running statistics). */
  numParams: number;
  /** Multiply-adds per image at preprocessing.inputSize, in billions (models/count.ts convention). */
  gmacs: number;
  metrics: Metric[];
  recipe: string;
  /** Of the weights, as the host states it. */
  license: string;
  /** Who trained the weights, with links. */
  origin: string;
}

export interface ModelsJson {
  version: typeof MODELS_JSON_VERSION;
  /** Label-set key to a JSON file, relative to models.json: `{source, license, names: string[]}`. */
  categories: Record<string, string>;
  models: PublishedModel[];
}

/** What the validator checks entries against; each check is skipped when its option is absent. */
export interface ValidateOptions {
  /** Registered architecture names. */
  archNames?: readonly string[];
  /** Trainable parameter count of a registered architecture with 1000 classes. */
  archParams?: (arch: string) => number;
  /** GMACs of an architecture at an input size; entries must agree to 0.01. */
  archGmacs?: (arch: string, inputSize: number) => number;
  /** Directory holding models.json, to read category files from. */
  baseDir?: string;
}

const SHA1 = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const HEX = /^[0-9a-f]+$/;
const ENTRY_NAME = /^[a-z0-9_]+\.[a-z0-9_]+$/;
const ALIAS = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

function isText(v: unknown): v is string {
  return typeof v === 'string' && v.trim().length > 0;
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Last path segment of a URL, or '' when it does not parse. */
function urlFileName(url: string): string {
  try {
    return path.posix.basename(new URL(url).pathname);
  } catch {
    return '';
  }
}

/** A relative path that stays inside the directory it is relative to. */
function isContainedPath(p: string): boolean {
  return p.length > 0 && !path.isAbsolute(p) && !p.split(/[\\/]/).includes('..');
}

/** Names of a categories file, or a problem. */
export function readCategoryFile(file: string): string[] | string {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    return `cannot read ${file}: ${(e as Error).message}`;
  }
  if (!isObj(data) || !Array.isArray(data.names)) return `${file}: expected an object with a "names" array`;
  const bad = data.names.findIndex((n) => !isText(n));
  if (bad >= 0) return `${file}: names[${bad}] is not a non-empty string`;
  return data.names as string[];
}

const CROP_FIELDS = ['inputSize', 'resizeShorter', 'crop'] as const;

function checkCropPct(p: (field: string, msg: string) => void, c: Obj, where: string): void {
  if (c.cropPct === undefined) return;
  if (typeof c.cropPct !== 'number' || !(c.cropPct > 0 && c.cropPct <= 1)) {
    p(`${where}.cropPct`, `expected a number in (0, 1], got ${show(c.cropPct)}`);
  } else if (isPositiveInt(c.crop) && isPositiveInt(c.resizeShorter) && Math.round(c.crop / c.cropPct) !== c.resizeShorter) {
    p(`${where}.resizeShorter`, `expected round(${c.crop} / ${c.cropPct}) = ${Math.round(c.crop / c.cropPct)}, got ${c.resizeShorter}`);
  }
}

function checkPreprocessing(p: (field: string, msg: string) => void, pre: unknown): void {
  if (!isObj(pre)) {
    p('preprocessing', 'expected an object');
    return;
  }
  checkPreprocessingFields(p, pre, 'preprocessing', CROP_FIELDS);
  checkCropPct(p, pre, 'preprocessing');
  if (pre.test !== undefined) {
    if (!isObj(pre.test)) {
      p('preprocessing.test', 'expected an object');
    } else {
      checkCropFields(p, pre.test, 'preprocessing.test', CROP_FIELDS);
      checkCropPct(p, pre.test, 'preprocessing.test');
    }
  }
}

function checkSource(p: (field: string, msg: string) => void, s: unknown, where: string): void {
  if (!isObj(s)) {
    p(where, 'expected an object');
    return;
  }
  const format = s.format as SourceFormat;
  const formatOk = SOURCE_FORMATS.includes(format);
  if (!formatOk) p(`${where}.format`, `expected one of ${SOURCE_FORMATS.join(', ')}, got ${show(s.format)}`);
  if (!SOURCE_NAMINGS.includes(s.naming as SourceNaming)) {
    p(`${where}.naming`, `expected one of ${SOURCE_NAMINGS.join(', ')}, got ${show(s.naming)}`);
  } else if (formatOk && !FORMAT_NAMINGS[format].includes(s.naming as SourceNaming)) {
    p(`${where}.naming`, `a ${format} source cannot use ${s.naming} names (expected ${FORMAT_NAMINGS[format].join(' or ')})`);
  }
  if (!SOURCE_HOSTS.includes(s.host as SourceHost)) p(`${where}.host`, `expected one of ${SOURCE_HOSTS.join(', ')}, got ${show(s.host)}`);
  let fileName = '';
  if (typeof s.url !== 'string' || !/^https:\/\/[^/\s]+\/\S+$/.test(s.url)) {
    p(`${where}.url`, `expected an https URL, got ${show(s.url)}`);
  } else {
    fileName = urlFileName(s.url);
    if (formatOk && !fileName.endsWith(FORMAT_EXTENSIONS[format])) {
      p(`${where}.url`, `a ${format} URL should end in ${FORMAT_EXTENSIONS[format]}, got '${fileName}'`);
    }
  }
  if (s.sha256 !== undefined && s.sha256 !== null && !(typeof s.sha256 === 'string' && SHA256.test(s.sha256))) {
    p(`${where}.sha256`, `expected null or 64 lower-case hex digits, got ${show(s.sha256)}`);
  }
  if (s.sha1 !== undefined && s.sha1 !== null && !(typeof s.sha1 === 'string' && SHA1.test(s.sha1))) {
    p(`${where}.sha1`, `expected null or 40 lower-case hex digits, got ${show(s.sha1)}`);
  }
  if (s.size !== undefined && s.size !== null && !isPositiveInt(s.size)) p(`${where}.size`, `expected null or a byte count, got ${show(s.size)}`);
  if (s.sha256Prefix !== undefined) {
    const pre = s.sha256Prefix;
    if (typeof pre !== 'string' || pre.length < 8 || pre.length > 64 || !HEX.test(pre)) {
      p(`${where}.sha256Prefix`, `expected 8 to 64 lower-case hex digits, got ${show(pre)}`);
    } else {
      if (typeof s.sha256 === 'string' && !s.sha256.startsWith(pre)) p(`${where}.sha256Prefix`, `does not match sha256 ${s.sha256}`);
      if (fileName && !fileName.includes(`-${pre}`)) p(`${where}.sha256Prefix`, `the file name '${fileName}' does not carry it`);
    }
  }
  if (format === 'gluon-zip') {
    // GluonCV's rule: {name}-{sha1[:8]}.zip holds {name}-{sha1[:8]}.params, and the SHA-1 covers that .params.
    if (typeof s.sha1 !== 'string' || !SHA1.test(s.sha1)) p(`${where}.sha1`, 'a gluon-zip source needs GluonCV\'s 40-hex SHA-1');
    if (typeof s.member !== 'string' || !/^[A-Za-z0-9_.-]+\.params$/.test(s.member) || s.member.includes('..')) {
      p(`${where}.member`, `expected the .params file name inside the zip, got ${show(s.member)}`);
    } else {
      if (fileName && fileName !== s.member.replace(/\.params$/, '.zip')) {
        p(`${where}.member`, `'${s.member}' does not match the zip '${fileName}'`);
      }
      if (typeof s.sha1 === 'string' && SHA1.test(s.sha1) && !s.member.endsWith(`-${s.sha1.slice(0, 8)}.params`)) {
        p(`${where}.member`, `'${s.member}' does not end in the SHA-1's first 8 digits (-${s.sha1.slice(0, 8)}.params)`);
      }
    }
  } else if (s.member !== undefined) {
    p(`${where}.member`, 'only a gluon-zip source has a member');
  }
}

function checkMetric(p: (field: string, msg: string) => void, m: unknown, where: string): void {
  if (!isObj(m)) {
    p(where, 'expected an object');
    return;
  }
  if (!isText(m.dataset)) p(`${where}.dataset`, 'expected a non-empty string');
  if (!isText(m.source)) p(`${where}.source`, 'say where the number comes from');
  if (!isPositiveInt(m.inputSize)) p(`${where}.inputSize`, `expected a positive integer, got ${show(m.inputSize)}`);
  const top1 = m.top1;
  if (typeof top1 !== 'number' || !(top1 > 0 && top1 <= 100)) p(`${where}.top1`, `expected a percentage, got ${show(top1)}`);
  if (m.top5 !== null && !(typeof m.top5 === 'number' && m.top5 > 0 && m.top5 <= 100 && (typeof top1 !== 'number' || m.top5 >= top1))) {
    p(`${where}.top5`, `expected null or a percentage at least top1, got ${show(m.top5)}`);
  }
}

/**
 * Problems with a parsed models.json, one line each naming the entry and field; empty when valid.
 * Checks types and required fields, unique names and aliases, architectures against the registry,
 * parameter counts and GFLOPs against the builder, checksums, URLs, formats and namings, and that
 * each categories file has as many names as the entry has classes.
 */
export function validateModelsJson(data: unknown, options: ValidateOptions = {}): string[] {
  const problems: string[] = [];
  if (!isObj(data)) return ['models.json: expected a JSON object'];
  if (data.version !== MODELS_JSON_VERSION) problems.push(`version: expected ${MODELS_JSON_VERSION}, got ${show(data.version)}`);

  const categorySizes = new Map<string, number | undefined>();
  if (!isObj(data.categories)) {
    problems.push('categories: expected an object of label-set name to file');
  } else {
    for (const [key, file] of Object.entries(data.categories)) {
      if (typeof file !== 'string' || !isContainedPath(file)) {
        problems.push(`categories.${key}: expected a relative path inside the package, got ${show(file)}`);
        categorySizes.set(key, undefined);
        continue;
      }
      if (options.baseDir === undefined) {
        categorySizes.set(key, undefined);
        continue;
      }
      const names = readCategoryFile(path.join(options.baseDir, file));
      if (typeof names === 'string') problems.push(`categories.${key}: ${names}`);
      else if (new Set(names).size !== names.length) problems.push(`categories.${key}: ${file} repeats a name`);
      categorySizes.set(key, typeof names === 'string' ? undefined : names.length);
    }
  }

  if (!Array.isArray(data.models) || data.models.length === 0) {
    problems.push('models: expected a non-empty array');
    return problems;
  }
  const archs = options.archNames ? new Set(options.archNames) : undefined;
  const owners = new Map<string, string>(); // name or alias -> the entry that claims it
  data.models.forEach((entry: unknown, i: number) => {
    const label = isObj(entry) && typeof entry.name === 'string' ? `models[${i}] (${entry.name})` : `models[${i}]`;
    const p = (field: string, msg: string) => problems.push(`${label}.${field}: ${msg}`);
    if (!isObj(entry)) {
      problems.push(`${label}: expected an object`);
      return;
    }
    const claim = (id: string, field: string) => {
      const owner = owners.get(id);
      if (owner !== undefined) p(field, `'${id}' is already used by ${owner}`);
      else owners.set(id, label);
    };

    if (typeof entry.name !== 'string' || !ENTRY_NAME.test(entry.name)) {
      p('name', `expected arch.tag in lower case (e.g. resnet50d.gluon_in1k), got ${show(entry.name)}`);
    } else {
      claim(entry.name, 'name');
      if (typeof entry.arch === 'string' && entry.name.split('.')[0] !== entry.arch) {
        p('name', `the arch part '${entry.name.split('.')[0]}' differs from arch '${entry.arch}'`);
      }
    }
    if (!Array.isArray(entry.aliases)) {
      p('aliases', 'expected an array of strings (may be empty)');
    } else {
      entry.aliases.forEach((a: unknown, j: number) => {
        if (typeof a !== 'string' || !ALIAS.test(a)) p(`aliases[${j}]`, `expected letters, digits, '_', '.' or '-', got ${show(a)}`);
        else if (archs?.has(a)) p(`aliases[${j}]`, `'${a}' is an architecture name; an alias must name weights`);
        else claim(a, `aliases[${j}]`);
      });
    }
    // timm ids share the namespace of names and aliases: a timm user's id must find exactly the network timm means.
    if (entry.timm !== undefined && entry.timm !== null && (typeof entry.timm !== 'string' || !ENTRY_NAME.test(entry.timm))) {
      p('timm', `expected null or timm's arch.tag id, got ${show(entry.timm)}`);
    } else if (typeof entry.timm === 'string') {
      const timmArch = entry.timm.split('.')[0]!;
      const means = archFromTimm(timmArch);
      if (typeof entry.arch === 'string' && means !== entry.arch) {
        p('timm', `timm's ${timmArch} is ${means ? `zoo's ${means}` : 'no architecture zoo builds'}, not ${entry.arch}`);
      }
      if (entry.timm !== entry.name) claim(entry.timm, 'timm');
    }

    if (typeof entry.arch !== 'string') p('arch', 'expected a registry name');
    else if (archs && !archs.has(entry.arch)) {
      const near = nearMatches(entry.arch, archs);
      p('arch', `'${entry.arch}' is not a registered architecture${near.length ? ` (did you mean ${near.join(', ')}?)` : ''}`);
    }
    const archKnown = typeof entry.arch === 'string' && (!archs || archs.has(entry.arch));

    for (const k of ['description', 'recipe', 'license', 'origin'] as const) {
      if (!isText(entry[k])) p(k, 'expected a non-empty string');
    }
    if (!isPositiveInt(entry.numClasses)) p('numClasses', `expected a positive integer, got ${show(entry.numClasses)}`);

    if (entry.categories !== null) {
      if (typeof entry.categories !== 'string' || !categorySizes.has(entry.categories)) {
        p('categories', `expected null or one of ${[...categorySizes.keys()].join(', ') || '(none defined)'}, got ${show(entry.categories)}`);
      } else {
        const n = categorySizes.get(entry.categories);
        if (n !== undefined && isPositiveInt(entry.numClasses) && n !== entry.numClasses) {
          p('categories', `'${entry.categories}' has ${n} names but the entry has ${entry.numClasses} classes`);
        }
      }
    }

    if (!Array.isArray(entry.sources) || entry.sources.length === 0) p('sources', 'expected a non-empty array');
    else {
      const urls = new Set<string>();
      entry.sources.forEach((s: unknown, j: number) => {
        checkSource(p, s, `sources[${j}]`);
        if (isObj(s) && typeof s.url === 'string') {
          if (urls.has(s.url)) p(`sources[${j}].url`, 'listed twice');
          urls.add(s.url);
        }
      });
    }

    checkPreprocessing(p, entry.preprocessing);

    if (!isPositiveInt(entry.numParams)) p('numParams', `expected a positive integer, got ${show(entry.numParams)}`);
    else if (options.archParams && archKnown && entry.numClasses === 1000) {
      const expected = options.archParams(entry.arch as string);
      if (expected !== entry.numParams) p('numParams', `${entry.numParams} differs from ${entry.arch}'s ${expected}`);
    }
    if (typeof entry.gmacs !== 'number' || !(entry.gmacs > 0)) p('gmacs', `expected a positive number, got ${show(entry.gmacs)}`);
    else if (options.archGmacs && archKnown && isObj(entry.preprocessing) && isPositiveInt(entry.preprocessing.inputSize)) {
      const expected = options.archGmacs(entry.arch as string, entry.preprocessing.inputSize);
      if (Math.abs(expected - entry.gmacs) > 0.01) p('gmacs', `${entry.gmacs} differs from ${entry.arch}'s ${expected.toFixed(3)} at ${entry.preprocessing.inputSize}`);
    }

    if (!Array.isArray(entry.metrics)) p('metrics', 'expected an array (may be empty)');
    else entry.metrics.forEach((m: unknown, j: number) => checkMetric(p, m, `metrics[${j}]`));
  });
  return problems;
}

/** Registry-backed checks: architecture names, and parameter counts and GFLOPs from the builder. */
export function registryChecks(): Required<Pick<ValidateOptions, 'archNames' | 'archParams' | 'archGmacs'>> {
  const counts = (arch: string, size: number) => countNetwork(new ResNet({ ...getModelEntry(arch).config, numClasses: 1000 }), size);
  return {
    archNames: listModels(),
    archParams: (arch) => counts(arch, 224).params,
    archGmacs: (arch, size) => counts(arch, size).macs / 1e9,
  };
}


/**
 * The package's own models.json. This file runs from dist/src/hub/ (or another build directory, or
 * node_modules/@zoo-ml/zoo/dist/src/hub/ when installed), so walk up to the package root.
 */
export function defaultModelsJsonPath(): string {
  // ZOO_MODELS_JSON: a registry of one's own (private weights, an internal mirror) used instead.
  if (process.env.ZOO_MODELS_JSON) return path.resolve(process.env.ZOO_MODELS_JSON);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const file = findPackageDir(here, 'models.json');
  if (!file) throw new UserError(`models.json was not found above ${here}; is the package complete?`);
  return file;
}

const loaded = new Map<string, ModelsJson>();

/**
 * Reads and validates models.json (default: the package's), against the registry and the category
 * files beside it. Invalid content is a UserError listing every problem. Cached per path.
 */
export function loadModelsJson(file: string = defaultModelsJsonPath()): ModelsJson {
  const abs = path.resolve(file);
  const hit = loaded.get(abs);
  if (hit) return hit;
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(abs, 'utf8'));
  } catch (e) {
    throw new UserError(`cannot read ${abs}: ${(e as Error).message}`, { cause: e });
  }
  const problems = validateModelsJson(data, { ...registryChecks(), baseDir: path.dirname(abs) });
  if (problems.length) throw new UserError(`${abs} is not valid:\n  ${problems.join('\n  ')}`);
  const doc = data as ModelsJson;
  loaded.set(abs, doc);
  return doc;
}

/** Every name, alias and timm id a user can give, each with its entry. */
export function modelNames(data: ModelsJson = loadModelsJson()): Map<string, PublishedModel> {
  const names = new Map<string, PublishedModel>();
  for (const m of data.models) {
    names.set(m.name, m);
    for (const a of m.aliases) names.set(a, m);
    if (m.timm) names.set(m.timm, m);
  }
  return names;
}

/**
 * timm's ways of naming hub weights, reduced to the bare id: `timm/resnet50d.gluon_in1k` (the hub repo)
 * and `hf-hub:timm/resnet50d.gluon_in1k` (timm.create_model's form). Other names come back unchanged.
 */
export function stripTimmPrefix(name: string): { id: string; timm: boolean } {
  const m = /^(?:hf[-_]hub:)?timm\/(.+)$/i.exec(name);
  return m ? { id: m[1]!, timm: true } : { id: name, timm: false };
}

/** How a name found its entry, for a note when it is not the entry's own name. */
export interface ResolvedName {
  entry: PublishedModel;
  /** 'name', 'alias', or 'timm' (the name is timm's id of the weights). */
  via: 'name' | 'alias' | 'timm';
}

/** The entry a name means, or undefined. A timm id means what timm means (validated unique, see above). */
export function findPublished(name: string, data: ModelsJson = loadModelsJson()): ResolvedName | undefined {
  const { id, timm } = stripTimmPrefix(name);
  for (const entry of data.models) {
    if (entry.timm === id) return { entry, via: 'timm' };
    if (timm) continue;
    if (entry.name === id) return { entry, via: 'name' };
    if (entry.aliases.includes(id)) return { entry, via: 'alias' };
  }
  return undefined;
}

/** The entry called `name` (its name, an alias or its timm id); an unknown name is a UserError listing near matches. */
export function resolveModel(name: string, data: ModelsJson = loadModelsJson()): PublishedModel {
  const hit = findPublished(name, data);
  if (hit) return hit.entry;
  const { id, timm } = stripTimmPrefix(name);
  const near = nearMatches(id, modelNames(data).keys());
  throw new UserError(
    `no published model '${name}' in models.json${timm ? ' (as a timm id)' : ''}.` +
      (near.length ? ` Did you mean: ${near.join(', ')}?` : '') +
      ` Published: ${data.models.map((m) => (m.aliases.length ? `${m.name} (${m.aliases.join(', ')})` : m.name)).join('; ')}.`,
    { exitCode: 2 },
  );
}

/**
 * Class names of a label set (e.g. 'imagenet-1k'), in class-index order. `file` is the models.json the
 * set is declared in; category paths are relative to it.
 */
export function loadCategories(key: string, file: string = defaultModelsJsonPath()): string[] {
  const data = loadModelsJson(file);
  const rel = Object.hasOwn(data.categories, key) ? data.categories[key] : undefined;
  if (typeof rel !== 'string') {
    throw new UserError(`unknown label set '${key}'; models.json defines ${Object.keys(data.categories).join(', ') || 'none'}`);
  }
  const names = readCategoryFile(path.join(path.dirname(path.resolve(file)), rel));
  if (typeof names === 'string') throw new UserError(names);
  return names;
}
