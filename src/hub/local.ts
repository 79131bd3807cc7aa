/**
 * The local zoo: converted models in the cache, pulled (`zoo pull`) or added by the user (`zoo import
 * --name`, `zoo train --add-to-zoo`), found by name or by a models.json alias.
 *
 * A model's directory holds `model.onnx` and `manifest.json` whose `meta.converted` records how it was
 * made, its preprocessing and its class names (a models.json categories key, or `labels` for a model
 * trained on the user's own classes).
 */
import { extname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { hubSettings, type HubSettings } from './settings.js';
import { MANIFEST_FILE, hashFile, listCached, modelDir, readManifest, withModelLock, writeManifest, type Manifest } from './cache.js';
import { modelNames } from './models_json.js';
import { listModels } from '../models/registry.js';
import { looksLikePath } from './refs.js';
import type { ConvertedRecord, PullPreprocessing } from './pull.js';

export interface LocalModel {
  name: string;
  dir: string;
  onnx: string;
  record: ConvertedRecord & { labels?: string[] };
}

/** Model names are directory names in the cache: letters, digits, '.', '_' and '-'. */
export function checkModelName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name) || name.includes('..')) {
    throw new UserError(`'${name}' is not a valid model name (letters, digits, '.', '_', '-'; no '..')`, { exitCode: 2 });
  }
}

/**
 * A name for the user's own model: valid as a directory, read as a name (not as a path: no weights or
 * .onnx extension), not an architecture, and not a name, alias or timm id from models.json.
 */
export function checkOwnModelName(name: string): void {
  checkModelName(name);
  if (looksLikePath(name)) {
    throw new UserError(`'${name}' would be read as a file, not a model name (it ends in ${extname(name)}); choose a name without that extension`, { exitCode: 2 });
  }
  if (listModels().includes(name)) throw new UserError(`'${name}' is an architecture's name; choose another name for your own model`, { exitCode: 2 });
  const published = modelNames().get(name);
  if (published) {
    const what = published.name === name ? "a published model's name" : `an alias of the published model ${published.name}`;
    throw new UserError(`'${name}' is ${what}; choose another name for your own model`, { exitCode: 2 });
  }
}

/** A converted model in the cache, by its name or a models.json alias of it. */
export async function findLocalModel(name: string, settings: HubSettings = hubSettings()): Promise<LocalModel | undefined> {
  const candidates = [name];
  const published = modelNames().get(name);
  if (published && published.name !== name) candidates.push(published.name);
  for (const n of candidates) {
    try {
      checkModelName(n);
    } catch {
      continue;
    }
    const manifest = await readManifest(n, settings);
    if (manifest?.meta?.converted === undefined) continue;
    const dir = modelDir(n, settings);
    const record = checkConvertedRecord(manifest.meta.converted, join(dir, MANIFEST_FILE), n);
    const onnx = join(dir, record.onnx.file);
    if (existsSync(onnx)) return { name: n, dir, onnx, record };
  }
  return undefined;
}

/**
 * The conversion record of a manifest, checked as far as zoo relies on it (the cache is on the user's
 * disk): its ONNX file name stays inside the model's directory and its architecture is one zoo builds.
 * Preprocessing and labels are checked where they are used (hub/resolve.ts). A UserError names the file.
 */
export function checkConvertedRecord(value: unknown, file: string, name: string): LocalModel['record'] {
  const bad = (what: string): never => {
    throw new UserError(`${file}: ${what}; the cached model is damaged: 'zoo rm ${name}' and pull or import it again`);
  };
  if (typeof value !== 'object' || value === null) bad('meta.converted is not an object');
  const r = value as Partial<LocalModel['record']>;
  if (typeof r.arch !== 'string' || !listModels().includes(r.arch)) bad(`'arch' ${JSON.stringify(r.arch)} is no architecture zoo builds`);
  const f = r.onnx?.file;
  if (typeof f !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*\.onnx$/.test(f) || f.includes('..')) bad(`'onnx.file' ${JSON.stringify(f)} is not a file name in the model's directory`);
  return r as LocalModel['record'];
}

export interface AddOptions {
  name: string;
  arch: string;
  onnxBytes: Uint8Array;
  preprocessing: PullPreprocessing;
  categories?: string | null;
  labels?: string[];
  /** Where the weights came from (a file, a training run). */
  source: ConvertedRecord['source'];
  check: ConvertedRecord['check'];
  /** Replace an existing model of that name. */
  force?: boolean;
  settings?: HubSettings;
  /** A detector (see ConvertedRecord.task). */
  task?: 'object-detection';
}

/** Adds a converted model to the local zoo (atomically; refuses to overwrite without force). */
export async function addToLocalZoo(o: AddOptions): Promise<LocalModel> {
  checkOwnModelName(o.name);
  const settings = o.settings ?? hubSettings();
  return withModelLock(
    o.name,
    async () => {
      const existing = await readManifest(o.name, settings);
      if (existing?.meta?.converted && !o.force) {
        throw new UserError(`the local zoo already has '${o.name}' (pass --force to replace it, or 'zoo rm ${o.name}')`);
      }
      const dir = modelDir(o.name, settings);
      const onnx = join(dir, 'model.onnx');
      await writeFileAtomic(onnx, o.onnxBytes);
      const h = await hashFile(onnx);
      const record: LocalModel['record'] = {
        arch: o.arch,
        source: o.source,
        onnx: { file: 'model.onnx', sha256: h.sha256, bytes: h.bytes },
        check: o.check,
        preprocessing: o.preprocessing,
        categories: o.categories ?? null,
        ...(o.labels ? { labels: o.labels } : {}),
        ...(o.task ? { task: o.task } : {}),
        time: new Date().toISOString(),
      };
      const manifest: Manifest = existing ?? { name: o.name, files: {} };
      manifest.meta = { ...(manifest.meta ?? {}), converted: record };
      await writeManifest(o.name, manifest, settings);
      return { name: o.name, dir, onnx, record };
    },
    settings,
  );
}

/** Every model in the cache, with what it holds. */
export async function listLocal(settings: HubSettings = hubSettings()) {
  return (await listCached(settings)).map((m) => {
    const record = m.manifest?.meta?.converted as LocalModel['record'] | undefined;
    return { name: m.name, bytes: m.bytes, files: m.files, arch: record?.arch, converted: Boolean(record), source: record?.source?.url, time: record?.time };
  });
}
