/**
 * What detectors and segmenters have in common beyond their networks: matching a weights file's tensors
 * to the head's parameters (names and shapes first, then reads within a memory budget); and for their
 * published entries in models.json, the validation of their sections (`detectors`, `segmenters`) and of their sources, loading and looking up the entries and
 * their label files, and `zoo pull` of one (download and verify through the cache, convert, export,
 * check, record in the manifest under `meta.detector` or `meta.segmenter`). detection/weights.ts and
 * segmentation/weights.ts supply what differs: the section's rules, how to convert and check a model,
 * and what the record keeps of the check.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { UserError, nearMatches } from '../errors.js';
import { defaultModelsJsonPath, loadModelsJson, readCategoryFile, type ModelsJson } from './models_json.js';
import { hubSettings, type HubSettings } from './settings.js';
import { FetchError, describeFailure, fetchFile, hashFile, modelDir, pruneModelDir, readManifest, withModelLock, writeManifest, type SourceFailure, type Verification } from './cache.js';
import { lockWaitLine, PullError, pullHints } from './pull.js';
import { redactUrl, type DownloadOptions, type DownloadProgress } from './download.js';
import { writeFileAtomic } from '../io/atomic.js';
import { BUDGET_SLACK_BYTES, ByteBudget } from '../formats/budget.js';
import type { TensorDescriptor, TensorSource } from '../formats/types.js';
import { MODEL_BUDGET_FACTOR, layoutProblem, readFloat32, toZooLayout } from '../convert/convert.js';
import { ignorable } from '../convert/naming.js';

// ---------------------------------------------------------------------------------------------------
// Loading a weights file into a detector or segmenter.

/** A parameter or buffer of the head: its zoo name and shape. */
interface HeadSpec {
  name: string;
  shape: number[];
}

/**
 * The memory budget for loading a file into a head with these parameters and buffers: MODEL_BUDGET_FACTOR
 * (4) x their float32 bytes, plus 16 MiB, as convert.ts's modelBudget gives a classifier. `owner` is
 * whose they are ("the resnet50 detector").
 */
export function headBudget(specs: ReadonlyMap<string, HeadSpec>, label: string, owner: string): ByteBudget {
  let bytes = 0;
  for (const spec of specs.values()) bytes += 4 * spec.shape.reduce((a, b) => a * b, 1);
  return new ByteBudget(label, MODEL_BUDGET_FACTOR * bytes + BUDGET_SLACK_BYTES, `${MODEL_BUDGET_FACTOR} x the ${bytes} float32 bytes of ${owner}'s parameters and buffers + 16 MiB`);
}

/** How a head names one tensor of a file: its zoo name, undefined for none, null to pass over it, or a problem with it. */
export type TensorNaming = string | undefined | null | { problem: string };

/** The tensors of a file matched to a head's parameters and buffers, by name and shape, before any is read. */
export interface TensorMatch {
  /** The file's descriptor for each parameter that fits. */
  take: Map<string, TensorDescriptor>;
  missing: string[];
  unexpected: string[];
  mismatched: string[];
}

/** Matches the file's tensors (those `ignorable` leaves aside excepted) to `specs` under `naming`. */
export function matchHeadTensors(source: TensorSource, specs: ReadonlyMap<string, HeadSpec>, naming: (src: string, d: TensorDescriptor) => TensorNaming): TensorMatch {
  const take = new Map<string, TensorDescriptor>();
  const missing: string[] = [];
  const unexpected: string[] = [];
  const mismatched: string[] = [];
  // Parameters the file names, fitting or not: a mis-shaped one is not also reported missing.
  const named = new Set<string>();
  for (const [src, d] of source.tensors) {
    if (ignorable(src)) continue;
    const name = naming(src, d);
    if (name === null) continue;
    if (typeof name === 'object') {
      mismatched.push(name.problem);
      continue;
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
  return { take, missing, unexpected, mismatched };
}

/** The lines of a refusal: what is missing, unexpected and mis-shaped (six names of each at most); empty when the file fits. */
export function matchProblems(match: TensorMatch): string[] {
  const list = (what: string, xs: string[]) => (xs.length ? [`${what} ${xs.length}: ${xs.slice(0, 6).join(', ')}${xs.length > 6 ? ', ...' : ''}`] : []);
  return [...list('missing', match.missing), ...list('unexpected', match.unexpected), ...list('mis-shaped', match.mismatched)];
}

/** Reads and converts the matched tensors to zoo's layout, charged to the source's budget: the values to set. */
export function readMatched(match: TensorMatch, specs: ReadonlyMap<string, HeadSpec>, budget: ByteBudget): Map<string, Float32Array> {
  const staged = new Map<string, Float32Array>();
  for (const [name, d] of match.take) staged.set(name, toZooLayout(readFloat32(d, budget), specs.get(name)!.shape, budget, d.name));
  return staged;
}

// ---------------------------------------------------------------------------------------------------
// Validation of a models.json section.

export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
export const isText = (v: unknown): v is string => typeof v === 'string' && v.trim().length > 0;
export const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
export const isPos = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
export const isPercent = (v: unknown): v is number => typeof v === 'number' && v > 0 && v <= 100;
/** Three finite numbers (positive ones when `positive`): a mean or std per RGB channel. */
export const isTriple = (v: unknown, positive: boolean): boolean =>
  Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0));
/** A value as a problem line shows it: JSON, cut at 60 characters. */
export const show = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

/** Records a problem with field `f` of the entry being checked. */
export type Problem = (f: string, m: string) => void;

/** What a section allows in a source (`sources[j]` of an entry). */
export interface SourceRules {
  /** Each format and the ending its URL has. */
  extensions: Readonly<Record<string, string>>;
  /** The formats as the problem line lists them. */
  formatsText: string;
  namings: readonly string[];
  namingsText: string;
  /** The namings each format can carry; any naming when absent. */
  formatNamings?: Readonly<Record<string, readonly string[]>>;
  hosts: readonly string[];
  hostsText: string;
  /** Allow torchvision's `sha256Prefix` (the sha256 prefix its file names carry) and require a pin. */
  sha256Prefix?: boolean;
}

/** Checks one source of a published entry: format, naming, host, size, checksums, URL and GluonCV's zip member. */
export function checkPublishedSource(p: Problem, s: unknown, where: string, rules: SourceRules): void {
  if (!isObj(s)) return p(where, 'expected an object');
  const format = s.format as string;
  const known = typeof format === 'string' && Object.hasOwn(rules.extensions, format);
  if (!known) p(`${where}.format`, `expected ${rules.formatsText}, got ${show(s.format)}`);
  if (!rules.namings.includes(s.naming as string)) p(`${where}.naming`, `expected ${rules.namingsText}, got ${show(s.naming)}`);
  else if (known && rules.formatNamings?.[format] && !rules.formatNamings[format]!.includes(s.naming as string)) p(`${where}.naming`, `a ${format} file does not carry ${String(s.naming)} names`);
  if (!rules.hosts.includes(s.host as string)) p(`${where}.host`, `expected ${rules.hostsText}, got ${show(s.host)}`);
  if (s.size !== undefined && s.size !== null && !isPosInt(s.size)) p(`${where}.size`, `expected null or a byte count, got ${show(s.size)}`);
  if (s.sha256 !== undefined && s.sha256 !== null && !(typeof s.sha256 === 'string' && /^[0-9a-f]{64}$/.test(s.sha256))) p(`${where}.sha256`, `expected null or 64 lower-case hex digits, got ${show(s.sha256)}`);
  let file = '';
  if (typeof s.url !== 'string' || !/^https:\/\/[^/\s]+\/\S+$/.test(s.url)) p(`${where}.url`, `expected an https URL, got ${show(s.url)}`);
  else file = new URL(s.url).pathname.split('/').pop() ?? '';
  const ext = known ? rules.extensions[format] : undefined;
  if (file && ext && !file.endsWith(ext)) p(`${where}.url`, `a ${format} URL should end in ${ext}, got '${file}'`);
  if (rules.sha256Prefix && s.sha256Prefix !== undefined) {
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
  if (rules.sha256Prefix) {
    const pinned = typeof s.sha256 === 'string' || typeof s.sha256Prefix === 'string' || (format === 'gluon-zip' && typeof s.sha1 === 'string');
    if (!pinned) p(where, 'pin the file: sha256, the sha256Prefix its name carries, or GluonCV\'s sha1 of the member');
  }
}

/** What a section's entries must be, beyond the fields every published head has. */
export interface SectionRules {
  /** The section of models.json: `detectors`, `segmenters`. */
  section: string;
  /** Entry names are `<namePrefix><arch>.<tag>`. */
  namePrefix: string;
  task: string;
  /** The field naming the kind of head, and its only value (`detector: 'faster_rcnn_c4'`). */
  kind: { field: string; value: string };
  /** What a name in `taken` is, for the problem line ("a classification model's name"). */
  takenIs: string;
  /** Refuse names and aliases that are architecture names. */
  refuseArchNames?: boolean;
  /** Largest class count allowed. */
  maxClasses?: number;
  checkSource: (p: Problem, s: unknown, where: string) => void;
  /** The configuration and preprocessing, checked after the sources. */
  checkEntry: (p: Problem, e: Obj) => void;
  /** The positive integers of `gmacsAt`. */
  gmacsAt: readonly string[];
  /** One metric (an object) at `where`. */
  checkMetric: (p: Problem, m: Obj, where: string) => void;
}

export interface ValidateSectionOptions {
  /** Registered architecture names. */
  archNames?: readonly string[];
  /** Names, aliases and timm ids other sections already use. */
  taken?: ReadonlySet<string>;
  /** Directory of models.json, to read label files from. */
  baseDir?: string;
}

/** Problems with a section of published heads (absent is valid), one line each naming the entry and field. */
export function validatePublishedSection(data: unknown, rules: SectionRules, options: ValidateSectionOptions = {}): string[] {
  const problems: string[] = [];
  if (!isObj(data)) return ['models.json: expected a JSON object'];
  const entries = data[rules.section];
  if (entries === undefined) return problems;
  if (!Array.isArray(entries)) return [`${rules.section}: expected an array`];
  const owners = new Map<string, string>();
  const namePattern = new RegExp(`^${rules.namePrefix}[a-z0-9_]+\\.[a-z0-9_]+$`);
  entries.forEach((e: unknown, i: number) => {
    const label = isObj(e) && typeof e.name === 'string' ? `${rules.section}[${i}] (${e.name})` : `${rules.section}[${i}]`;
    const p = (f: string, m: string) => problems.push(`${label}.${f}: ${m}`);
    if (!isObj(e)) return problems.push(`${label}: expected an object`);
    const claim = (id: string, field: string) => {
      if (options.taken?.has(id)) p(field, `'${id}' is already ${rules.takenIs}`);
      else if (rules.refuseArchNames && options.archNames?.includes(id)) p(field, `'${id}' is an architecture name`);
      else if (owners.has(id)) p(field, `'${id}' is already used by ${owners.get(id)}`);
      else owners.set(id, label);
    };
    if (typeof e.name !== 'string' || !namePattern.test(e.name)) p('name', `expected ${rules.namePrefix}<arch>.<tag>, got ${show(e.name)}`);
    else {
      claim(e.name, 'name');
      const arch = e.name.slice(rules.namePrefix.length).split('.')[0];
      if (typeof e.arch === 'string' && arch !== e.arch) p('name', `the arch part '${arch}' differs from arch '${e.arch}'`);
    }
    if (!Array.isArray(e.aliases)) p('aliases', 'expected an array of strings (may be empty)');
    else e.aliases.forEach((a: unknown, j: number) => (typeof a === 'string' && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(a) ? claim(a, `aliases[${j}]`) : p(`aliases[${j}]`, `expected a name, got ${show(a)}`)));
    if (e.task !== rules.task) p('task', `expected '${rules.task}', got ${show(e.task)}`);
    if (e[rules.kind.field] !== rules.kind.value) p(rules.kind.field, `expected '${rules.kind.value}', got ${show(e[rules.kind.field])}`);
    if (typeof e.arch !== 'string' || (options.archNames && !options.archNames.includes(e.arch))) p('arch', `expected a registered architecture, got ${show(e.arch)}`);
    for (const k of ['description', 'recipe', 'license', 'origin'] as const) if (!isText(e[k])) p(k, 'expected a non-empty string');
    const max = rules.maxClasses;
    if (!isPosInt(e.numClasses) || (max !== undefined && e.numClasses > max)) p('numClasses', `expected a positive integer${max !== undefined ? ` (at most ${max})` : ''}, got ${show(e.numClasses)}`);
    if (typeof e.labels !== 'string' || path.isAbsolute(e.labels) || e.labels.split(/[\\/]/).includes('..')) p('labels', `expected a file inside the package, got ${show(e.labels)}`);
    else if (options.baseDir !== undefined) {
      const names = readCategoryFile(path.join(options.baseDir, e.labels));
      if (typeof names === 'string') p('labels', names);
      else if (isPosInt(e.numClasses) && names.length !== e.numClasses) p('labels', `${e.labels} has ${names.length} names but the entry has ${e.numClasses} classes`);
    }
    if (!Array.isArray(e.sources) || e.sources.length === 0) p('sources', 'expected a non-empty array');
    else e.sources.forEach((s: unknown, j: number) => rules.checkSource(p, s, `sources[${j}]`));
    rules.checkEntry(p, e);
    if (!isPosInt(e.numParams)) p('numParams', `expected a positive integer, got ${show(e.numParams)}`);
    if (!isPos(e.gmacs)) p('gmacs', `expected a positive number, got ${show(e.gmacs)}`);
    const at = e.gmacsAt;
    if (!isObj(at) || !rules.gmacsAt.every((k) => isPosInt(at[k]))) p('gmacsAt', `expected {${rules.gmacsAt.join(', ')}}, got ${show(at)}`);
    if (!Array.isArray(e.metrics)) p('metrics', 'expected an array (may be empty)');
    else
      e.metrics.forEach((m: unknown, j: number) => {
        const w = `metrics[${j}]`;
        if (!isObj(m)) return p(w, 'expected an object');
        rules.checkMetric(p, m, w);
      });
  });
  return problems;
}

// ---------------------------------------------------------------------------------------------------
// Loading and looking up a section's entries.

/** The fields of a published entry that loading and lookup use. */
export interface PublishedHeadEntry {
  name: string;
  aliases: string[];
  /** A `{source, license, names}` file relative to models.json. */
  labels: string;
}

/** A section's entries, validated and cached by the models.json file they come from. */
export interface PublishedSection<E extends PublishedHeadEntry> {
  /** The entries of `file` (default: the package's models.json); invalid content is a UserError listing every problem. */
  load(file?: string): E[];
  /** The entry called `name` (its name or an alias), or undefined. */
  lookup(name: string, file?: string): E | undefined;
  /** The entry called `name`; an unknown name is a usage error listing near matches. */
  find(name: string, file?: string): E;
  /** The class names of an entry's labels file, beside `file`. */
  labels(entry: E, file?: string): string[];
}

export function publishedSection<E extends PublishedHeadEntry>(rules: {
  section: string;
  /** `no published <what> 'x' in models.json`. */
  what: string;
  validate: (doc: ModelsJson, options: ValidateSectionOptions) => string[];
  archNames: () => readonly string[];
  /** The names other sections of `doc` hold. */
  taken: (doc: ModelsJson) => Set<string>;
}): PublishedSection<E> {
  const loaded = new Map<string, E[]>();
  const load = (file: string = defaultModelsJsonPath()): E[] => {
    const abs = path.resolve(file);
    const hit = loaded.get(abs);
    if (hit) return hit;
    const doc = loadModelsJson(abs);
    const problems = rules.validate(doc, { archNames: rules.archNames(), taken: rules.taken(doc), baseDir: path.dirname(abs) });
    if (problems.length) throw new UserError(`${abs} is not valid:\n  ${problems.join('\n  ')}`);
    const list = (((doc as unknown as Record<string, unknown>)[rules.section] as E[] | undefined) ?? []).slice();
    loaded.set(abs, list);
    return list;
  };
  const lookup = (name: string, file?: string): E | undefined => load(file).find((e) => e.name === name || e.aliases.includes(name));
  return {
    load,
    lookup,
    find(name, file) {
      const hit = lookup(name, file);
      if (hit) return hit;
      const list = load(file);
      const near = nearMatches(name, list.flatMap((e) => [e.name, ...e.aliases]));
      throw new UserError(
        `no published ${rules.what} '${name}' in models.json.${near.length ? ` Did you mean: ${near.join(', ')}?` : ''} Published: ${list.map((e) => e.name).join(', ') || 'none'}.`,
        { exitCode: 2 },
      );
    },
    labels(entry, file = defaultModelsJsonPath()) {
      const names = readCategoryFile(path.join(path.dirname(path.resolve(file)), entry.labels));
      if (typeof names === 'string') throw new UserError(names);
      return names;
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Pulling a published head: download and verify through the hub's cache, convert, export, check, record.

/** What a pull records in the model's manifest, under `meta.<key>`: enough to use model.onnx without models.json. */
export interface HeadPullRecord<Task extends string, Config, Pre, Naming extends string, Check> {
  task: Task;
  arch: string;
  numClasses: number;
  labels: string[];
  config: Config;
  preprocessing: Pre;
  source: { url: string; format: string; naming: Naming; file: string; sha256: string; sha1: string; bytes: number; verified: Verification };
  onnx: { file: string; sha256: string; bytes: number };
  check: Check;
  time: string;
}

/** A pulled head in the cache. */
export interface PulledHead<R> {
  name: string;
  dir: string;
  /** The converted model. */
  onnx: string;
  /** The weights file as published. */
  weights: string;
  record: R;
  fromCache: boolean;
}

/** The fields of a source that pulling uses. */
export interface PullableSource<Naming extends string> {
  url: string;
  format: string;
  naming: Naming;
  sha256?: string | null;
  size?: number | null;
}

/** The fields of an entry that pulling uses. */
export interface PullableEntry<S, Config, Pre> {
  name: string;
  arch: string;
  numClasses: number;
  sources: S[];
  config: Config;
  preprocessing: Pre;
}

export interface HeadPullOptions {
  /** Download and convert again even when the cache has the model. */
  force?: boolean;
  settings?: HubSettings;
  /** Lines for a person: failed sources, waits for another process's lock on the model. */
  log?: (line: string) => void;
  onProgress?: (p: DownloadProgress) => void;
  /** Longest wait for another process's lock on the model (default 30 min). */
  lockTimeoutMs?: number;
  /** Overall deadline of each file's download (default: ZOO_DOWNLOAD_TIMEOUT, else scaled to the size). */
  downloadTimeoutMs?: number;
  /** Transfer tuning (retries, idle timeout, backoff, name resolution) passed to the downloader. */
  transfer?: Pick<DownloadOptions, 'retries' | 'timeoutMs' | 'backoffMs' | 'network'>;
  signal?: AbortSignal;
}

/** What differs between pulling a detector and a segmenter. */
export interface HeadPullRules<S, Converted extends { bytes: Uint8Array }, Task extends string, Check> {
  /** The manifest's `meta` key of the record: `detector`, `segmenter`. */
  key: string;
  task: Task;
  /** A published checksum the cache's `expected` cannot hold, and its check of a file. */
  pin: (source: S) => { by: string; check: (file: string) => Promise<void> } | undefined;
  /** Loads a verified file into the entry's model, exports it and checks the export (a UserError when it fails). */
  convert: (source: S, file: string, log: (line: string) => void) => Promise<Converted>;
  /** What the record keeps of the check. */
  check: (converted: Converted) => Check;
}

/** The last path segment of a source's URL: the file's name in the cache. */
export function sourceFileName(url: string): string {
  const name = path.posix.basename(new URL(url).pathname);
  if (!name || name === '.' || name === '..') throw new UserError(`cannot derive a file name from source '${url}'`);
  return name;
}

/** The model.onnx a pull of `name` recorded under `meta.<key>`, when the cache still holds it. */
export async function pulledHeadFile(name: string, key: string, settings: HubSettings = hubSettings()): Promise<string | undefined> {
  const record = (await readManifest(name, settings))?.meta?.[key] as { onnx?: { file?: string } } | undefined;
  const file = record?.onnx?.file ? path.join(modelDir(name, settings), record.onnx.file) : undefined;
  return file && existsSync(file) ? file : undefined;
}

/** The pulled model of the cache when its record is the entry's (same arch and a listed source) and model.onnx still has its digest. */
async function cachedHead<R extends { arch: string; source: { url: string; file: string }; onnx: { file: string; sha256: string } }>(
  entry: { name: string; arch: string; sources: readonly { url: string }[] },
  key: string,
  settings: HubSettings,
): Promise<PulledHead<R> | undefined> {
  const manifest = await readManifest(entry.name, settings);
  const record = manifest?.meta?.[key] as R | undefined;
  if (!record || record.arch !== entry.arch || !entry.sources.some((s) => s.url === record.source?.url)) return undefined;
  const dir = modelDir(entry.name, settings);
  const onnx = path.join(dir, record.onnx.file);
  if (!existsSync(onnx) || (await hashFile(onnx)).sha256 !== record.onnx.sha256) return undefined;
  return { name: entry.name, dir, onnx, weights: path.join(dir, record.source.file), record, fromCache: true };
}

/**
 * Pulls a published head into the cache (`<cache>/<name>/`): the first source that works (mirrors,
 * checksums, resumable transfers and the model's lock as `zoo pull` has them: hub/cache.ts), converted,
 * exported and checked by `rules`, recorded under `meta.<key>`. A model already pulled comes from the cache.
 */
export async function pullPublishedHead<Naming extends string, S extends PullableSource<Naming>, Config, Pre, Converted extends { bytes: Uint8Array }, Task extends string, Check>(
  entry: PullableEntry<S, Config, Pre>,
  labels: string[],
  options: HeadPullOptions,
  rules: HeadPullRules<S, Converted, Task, Check>,
): Promise<PulledHead<HeadPullRecord<Task, Config, Pre, Naming, Check>>> {
  type R = HeadPullRecord<Task, Config, Pre, Naming, Check>;
  const settings = options.settings ?? hubSettings();
  const log = options.log ?? (() => {});
  if (labels.length !== entry.numClasses) throw new UserError(`${entry.name} has ${entry.numClasses} classes but ${labels.length} labels were given`);
  const waitLine = lockWaitLine(entry.name, options.lockTimeoutMs);
  const deadlineMs = options.downloadTimeoutMs ?? settings.downloadTimeoutMs;
  return withModelLock(
    entry.name,
    async () => {
      if (!options.force) {
        const cached = await cachedHead<R>(entry, rules.key, settings);
        if (cached) return cached;
      }
      const failures: SourceFailure[] = [];
      for (const source of entry.sources) {
        const fileName = sourceFileName(source.url);
        let converted: Converted | undefined;
        try {
          const pin = rules.pin(source);
          const fetched = await fetchFile({
            name: entry.name,
            fileName,
            sources: [source.url],
            expected: source.sha256 ? { sha256: source.sha256 } : {},
            ...(pin ? { pinnedBy: pin.by } : {}),
            ...(source.size ? { size: source.size } : {}),
            verify: async (file) => {
              if (pin) await pin.check(file);
              converted = await rules.convert(source, file, log);
            },
            force: options.force ?? false,
            lockHeld: true,
            log,
            settings,
            ...(options.onProgress ? { onProgress: options.onProgress } : {}),
            ...(options.signal ? { signal: options.signal } : {}),
            transfer: { ...options.transfer, ...(deadlineMs !== undefined ? { deadlineMs } : {}) },
          });
          const dir = modelDir(entry.name, settings);
          const onnx = path.join(dir, 'model.onnx');
          // fetchFile runs `verify` on a fresh download and on a cached copy alike, so the conversion is there.
          await writeFileAtomic(onnx, converted!.bytes);
          const h = await hashFile(onnx);
          const e = fetched.entry;
          const record: R = {
            task: rules.task,
            arch: entry.arch,
            numClasses: entry.numClasses,
            labels,
            config: entry.config,
            preprocessing: entry.preprocessing,
            source: { url: source.url, format: source.format, naming: source.naming, file: fileName, sha256: e.sha256, sha1: e.sha1, bytes: e.size, verified: fetched.verified },
            onnx: { file: 'model.onnx', sha256: h.sha256, bytes: h.bytes },
            check: rules.check(converted!),
            time: new Date().toISOString(),
          };
          const manifest = (await readManifest(entry.name, settings)) ?? { name: entry.name, files: {} };
          manifest.meta = { ...(manifest.meta ?? {}), [rules.key]: record };
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
    {
      ...(options.lockTimeoutMs !== undefined ? { timeoutMs: options.lockTimeoutMs } : {}),
      onWait: (holder, waitedMs) => log(waitLine(holder, waitedMs)),
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
}
