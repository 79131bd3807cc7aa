/**
 * What travels with a model besides its weights: the architecture, the evaluation preprocessing and
 * the class names, written into every ONNX file zoo produces (`metadata_props`) and read back by every
 * command that runs one. The keys:
 *
 *   zoo.arch           the registered architecture the graph was built from
 *   zoo.name           the model's name (local zoo or published)
 *   zoo.preprocessing  JSON, see predict/preprocessing.ts
 *   zoo.labels         JSON array of class names, in class-index order
 *   zoo.categories     a models.json label set (e.g. imagenet-1k), instead of zoo.labels
 *   zoo.training       JSON summary of the run that trained it (free-form, informational)
 *
 * Metadata read from a file is untrusted: every value is checked, and a bad one is a UserError that
 * names the file and the key.
 */
import { readFile, stat } from 'node:fs/promises';
import { UserError } from '../errors.js';
import { parsePreprocessing, type Preprocessing } from '../predict/preprocessing.js';
import { loadCategories, loadModelsJson } from '../hub/models_json.js';
import { listModels } from '../models/registry.js';

export const META = {
  arch: 'zoo.arch',
  name: 'zoo.name',
  preprocessing: 'zoo.preprocessing',
  labels: 'zoo.labels',
  categories: 'zoo.categories',
  training: 'zoo.training',
} as const;

/** The model's description, as far as it is known. */
export interface ModelMetadata {
  arch?: string;
  name?: string;
  preprocessing?: Preprocessing;
  /** Class names in index order (a model trained on the user's own classes). */
  labels?: string[];
  /** A models.json label set, for published models (the names are looked up, not copied). */
  categories?: string;
  /** Free-form description of the training run. */
  training?: string;
}

/** Longest class name and most classes accepted from a file. */
const MAX_LABEL_LENGTH = 1000;
const MAX_CLASSES = 1_000_000;

/** `metadata_props` for a model's description. */
export function metadataProps(meta: ModelMetadata): Record<string, string> {
  return {
    ...(meta.arch ? { [META.arch]: meta.arch } : {}),
    ...(meta.name ? { [META.name]: meta.name } : {}),
    ...(meta.preprocessing ? { [META.preprocessing]: JSON.stringify(meta.preprocessing) } : {}),
    ...(meta.labels ? { [META.labels]: JSON.stringify(meta.labels) } : {}),
    ...(!meta.labels && meta.categories ? { [META.categories]: meta.categories } : {}),
    ...(meta.training ? { [META.training]: meta.training } : {}),
  };
}

function parseJson(raw: string, label: string, key: string): unknown {
  try {
    return JSON.parse(raw);
  } catch (e) {
    throw new UserError(`${label}: metadata '${key}' is not JSON (${(e as Error).message})`);
  }
}

/** Checks a list of class names read from `label`. */
export function parseLabels(value: unknown, label: string): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_CLASSES) {
    throw new UserError(`${label}: the class names must be a non-empty JSON array of strings`);
  }
  const bad = value.findIndex((v) => typeof v !== 'string' || v.length === 0 || v.length > MAX_LABEL_LENGTH);
  if (bad >= 0) throw new UserError(`${label}: class name ${bad} is not a non-empty string of at most ${MAX_LABEL_LENGTH} characters`);
  return value as string[];
}

/** A models.json label set named by `label`, which must be one models.json defines. */
export function checkCategories(key: string, label: string): string {
  const defined = loadModelsJson().categories;
  if (!Object.hasOwn(defined, key)) {
    throw new UserError(`${label}: unknown label set '${key.slice(0, 60)}' (models.json defines ${Object.keys(defined).join(', ') || 'none'})`);
  }
  return key;
}

/** The description in a file's `metadata_props`; `label` names the file in errors. */
export function readMetadata(props: Record<string, string>, label: string): ModelMetadata {
  const get = (k: string) => (Object.hasOwn(props, k) ? props[k] : undefined);
  const meta: ModelMetadata = {};
  // Exports made before zoo.arch existed say `arch`.
  const archKey = get(META.arch) !== undefined ? META.arch : 'arch';
  const arch = get(archKey);
  if (arch !== undefined) {
    if (!listModels().includes(arch)) throw new UserError(`${label}: metadata '${archKey}' names no architecture zoo builds ('${arch.slice(0, 60)}')`);
    meta.arch = arch;
  }
  const name = get(META.name);
  if (name) meta.name = name;
  const pre = get(META.preprocessing);
  if (pre !== undefined) meta.preprocessing = parsePreprocessing(parseJson(pre, label, META.preprocessing), `${label}: metadata '${META.preprocessing}'`);
  const labels = get(META.labels);
  if (labels !== undefined) meta.labels = parseLabels(parseJson(labels, label, META.labels), `${label}: metadata '${META.labels}'`);
  const categories = get(META.categories);
  if (categories !== undefined && !meta.labels) meta.categories = checkCategories(categories, label);
  const training = get(META.training);
  if (training) meta.training = training;
  return meta;
}

/** The class names a description gives (its own, or its label set's), if any. */
export function labelNames(meta: ModelMetadata): string[] | undefined {
  if (meta.labels) return meta.labels;
  if (meta.categories) return loadCategories(meta.categories);
  return undefined;
}

/**
 * ONNX metadata_props without decoding the (large) graph: a scan of the ModelProto's top-level
 * fields, skipping all but field 14 (metadata_props: StringStringEntryProto { key = 1, value = 2 }).
 */
export async function readOnnxMetadata(path: string): Promise<Record<string, string>> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    throw new UserError(`cannot read '${path}': ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  });
  if (!st.isFile()) throw new UserError(`'${path}' is not a regular file`);
  const bytes = await readFile(path);
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  let pos = 0;
  const varint = (): number => {
    let result = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (pos >= bytes.length) throw new UserError(`${path}: truncated ONNX file`);
      const b = bytes[pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return result;
      shift += 7;
    }
    throw new UserError(`${path}: malformed ONNX file (varint)`);
  };
  const utf8 = new TextDecoder();
  while (pos < bytes.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint();
      if (pos + len > bytes.length) throw new UserError(`${path}: truncated ONNX file`);
      if (field === 14) {
        const end = pos + len;
        let k = '';
        let v = '';
        while (pos < end) {
          const kk = varint();
          if ((kk & 7) !== 2) throw new UserError(`${path}: malformed ONNX metadata entry`);
          const l = varint();
          if (pos + l > end) throw new UserError(`${path}: truncated ONNX metadata entry`);
          const s = utf8.decode(bytes.subarray(pos, pos + l));
          pos += l;
          if (kk >> 3 === 1) k = s;
          else if (kk >> 3 === 2) v = s;
        }
        out[k] = v;
      } else pos += len;
    } else throw new UserError(`${path}: not an ONNX model (unexpected wire type ${wire})`);
  }
  return out;
}
