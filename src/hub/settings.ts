/**
 * Hub settings: where the cache lives, whether the network may be used, which mirrors replace the
 * public weight hosts, and how long one download may take. Read from the environment once; the
 * resolution functions are pure so that tests pass their own environment (transformers.js
 * `buildResourcePaths` style).
 *
 * ZOO_CACHE              cache directory (else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo)
 * ZOO_OFFLINE=1          use only the cache (HF_HUB_OFFLINE=1 is honoured too)
 * HF_ENDPOINT            replaces https://huggingface.co (as huggingface_hub does)
 * MXNET_GLUON_REPO       replaces GluonCV's S3 base; the rest of the path is kept: {repo}gluon/models/{file}
 * ZOO_MIRROR             either a prefix map, `https://host/a=https://mirror/b;https://other=/srv/other`
 *                        (the rest of the path is kept), or one directory or base URL laid out per source:
 *                          Hugging Face   <mirror>/<repo>/resolve/<revision>/<file>   (the hub's own paths)
 *                          GluonCV        <mirror>/<file>, or <mirror>/gluon/models/<file>
 *                          torchvision    <mirror>/<file>
 *                          any other URL  <mirror>/<host>/<path>
 *                        A mirror is trusted for bytes, not for identity: a file from it is accepted only
 *                        when models.json pins its checksum or the mirror relays the hub's declared sha256.
 * ZOO_DOWNLOAD_TIMEOUT   seconds one file's download may take in all, retries included (default: 10 min
 *                        plus 10 s per MB of the expected size, at most 4 h; 1 h when the size is unknown),
 *                        besides the 30 s idle timeout
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';

/** The public Hugging Face hub, which `HF_ENDPOINT` replaces. */
export const HF_HOST = 'https://huggingface.co';

/**
 * GluonCV's model store bases, which `MXNET_GLUON_REPO` replaces. Older GluonCV releases used the
 * non-dualstack S3 name, so URLs copied from them are mirrored as well.
 */
export const GLUON_REPOS: readonly string[] = [
  'https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/',
  'https://apache-mxnet.s3-accelerate.amazonaws.com/',
];

/** torchvision's download host; its file names carry a sha256 prefix and are unique. */
export const TORCHVISION_BASE = 'https://download.pytorch.org/models/';

/** A mirror given by `ZOO_MIRROR`. */
export type Mirror =
  /** A directory or a URL laid out per source (see `mirrorCandidates`). */
  | { kind: 'base'; base: string }
  /** Each URL prefix is replaced by its target; the rest of the path is kept. */
  | { kind: 'prefix'; map: readonly (readonly [from: string, to: string])[] };

/** Settings of the download and cache layer. */
export interface HubSettings {
  /** Absolute path of the cache directory. */
  cacheDir: string;
  /** Use only the cache; never touch the network. */
  offline: boolean;
  /** Replacement for https://huggingface.co, without a trailing slash. */
  hfEndpoint: string | undefined;
  /** Replacement for the GluonCV S3 base, always ending in '/'. */
  gluonRepo: string | undefined;
  /** The generic mirror of `ZOO_MIRROR`. */
  mirror: Mirror | undefined;
  /** Overall deadline of one file's download (ZOO_DOWNLOAD_TIMEOUT); undefined: scaled to the size. */
  downloadTimeoutMs: number | undefined;
}

type Env = Record<string, string | undefined>;

const TRUE_WORDS = new Set(['1', 'true', 'yes', 'on']);
const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

function flag(value: string | undefined): boolean {
  return value !== undefined && TRUE_WORDS.has(value.trim().toLowerCase());
}

function nonEmpty(value: string | undefined): string | undefined {
  const v = value?.trim();
  return v ? v : undefined;
}

/** The cache directory: ZOO_CACHE, else $XDG_CACHE_HOME/zoo, else <home>/.cache/zoo. */
export function resolveCacheDir(env: Env, homeDir: string): string {
  const explicit = nonEmpty(env.ZOO_CACHE);
  if (explicit) return path.resolve(explicit);
  const xdg = nonEmpty(env.XDG_CACHE_HOME);
  // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'zoo');
  return path.join(homeDir, '.cache', 'zoo');
}

/** True when `source` is a URL with a scheme (http, https, file, ...) rather than a local path. */
export function hasScheme(source: string): boolean {
  return SCHEME.test(source);
}

/** Parses `ZOO_MIRROR`: a prefix map when its entries look like `scheme://...=target`, else a base laid out per source. */
export function parseMirror(value: string | undefined): Mirror | undefined {
  const v = nonEmpty(value);
  if (!v) return undefined;
  const entries = v.split(/[;\n]/).map((e) => e.trim()).filter((e) => e !== '');
  const looksLikeMap = entries.some((e) => e.includes('=') && hasScheme(e.slice(0, e.indexOf('='))));
  if (!looksLikeMap) return { kind: 'base', base: v };
  const map = entries.map((entry) => {
    const eq = entry.indexOf('=');
    const from = eq > 0 ? entry.slice(0, eq).trim() : '';
    const to = eq > 0 ? entry.slice(eq + 1).trim() : '';
    if (!hasScheme(from) || to === '') {
      throw new UserError(`ZOO_MIRROR: entry '${entry}' is not of the form https://host/prefix=target`, { exitCode: 2 });
    }
    return [trimSlash(from), trimSlash(to)] as const;
  });
  // Longest prefix first, so a specific entry wins over a whole host.
  map.sort((a, b) => b[0].length - a[0].length);
  return { kind: 'prefix', map };
}

/** Parses `ZOO_DOWNLOAD_TIMEOUT` (seconds, > 0) into milliseconds. */
export function parseDownloadTimeout(value: string | undefined): number | undefined {
  const v = nonEmpty(value);
  if (v === undefined) return undefined;
  const seconds = Number(v);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new UserError(`ZOO_DOWNLOAD_TIMEOUT must be a number of seconds greater than 0, got '${v}'`, { exitCode: 2 });
  }
  return seconds * 1000;
}

/** Builds the settings from an environment (default: this process's). */
export function readHubSettings(env: Env = process.env, homeDir: string = os.homedir()): HubSettings {
  const gluon = nonEmpty(env.MXNET_GLUON_REPO);
  const hf = nonEmpty(env.HF_ENDPOINT);
  return {
    cacheDir: resolveCacheDir(env, homeDir),
    offline: flag(env.ZOO_OFFLINE) || flag(env.HF_HUB_OFFLINE),
    hfEndpoint: hf ? trimSlash(hf) : undefined,
    // GluonCV appends '/' when the variable lacks it, then formats '{repo}gluon/models/{file}'.
    gluonRepo: gluon ? (gluon.endsWith('/') ? gluon : `${gluon}/`) : undefined,
    mirror: parseMirror(env.ZOO_MIRROR),
    downloadTimeoutMs: parseDownloadTimeout(env.ZOO_DOWNLOAD_TIMEOUT),
  };
}

let processSettings: HubSettings | undefined;

/** The settings of this process, read from process.env on first use and kept. */
export function hubSettings(): HubSettings {
  processSettings ??= readHubSettings();
  return processSettings;
}

function trimSlash(s: string): string {
  return s.length > 1 ? s.replace(/\/+$/, '') : s;
}

/** `url` with `prefix` replaced by `target`, matching only at a path boundary; undefined if no match. */
function replacePrefix(url: string, prefix: string, target: string): string | undefined {
  const from = trimSlash(prefix);
  if (url !== from && !url.startsWith(`${from}/`) && !url.startsWith(`${from}?`)) return undefined;
  const rest = url.slice(from.length);
  if (hasScheme(target) && !target.startsWith('file://')) return trimSlash(target) + rest;
  // A local directory target: the rest of the URL path becomes a path below it.
  return underBase(target, rest.replace(/[?#].*$/, '').replace(/^\/+/, ''));
}

function localPath(target: string): string {
  return target.startsWith('file://') ? fileURLToPath(target) : path.resolve(target);
}

/** One URL path segment as a file name; an encoded separator or a '..' could leave the mirror directory. */
function pathSegment(seg: string, rel: string): string {
  let name: string;
  try {
    name = decodeURIComponent(seg);
  } catch {
    name = seg;
  }
  if (name === '..' || name.includes('/') || name.includes('\\') || name.includes('\0')) {
    throw new UserError(`a source path '${rel}' would leave the mirror directory`);
  }
  return name;
}

/** `base` (a directory, a file:// URL or a base URL) joined with a relative, still URL-encoded path. */
function underBase(base: string, rel: string): string {
  if (hasScheme(base) && !base.startsWith('file://')) return `${trimSlash(base)}/${rel}`;
  return path.join(localPath(base), ...rel.split('/').filter((seg) => seg !== '').map((seg) => pathSegment(seg, rel)));
}

/** The public host a source URL belongs to, by its prefix; undefined for any other URL. */
export function sourceHost(url: string): 'huggingface' | 'gluoncv' | 'torchvision' | undefined {
  if (url.startsWith(`${HF_HOST}/`)) return 'huggingface';
  if (GLUON_REPOS.some((repo) => url.startsWith(repo))) return 'gluoncv';
  if (url.startsWith(TORCHVISION_BASE)) return 'torchvision';
  return undefined;
}

/**
 * Where a source URL lies in a mirror laid out per source, most likely first. Pure: no I/O.
 * Hugging Face keeps the hub's own path (`<repo>/resolve/<revision>/<file>`), so two repos' identical
 * file names (every timm repo has a `model.safetensors`) never meet; GluonCV's and torchvision's file
 * names carry a checksum prefix and are unique by themselves.
 */
export function mirrorCandidates(url: string, base: string): string[] {
  const u = new URL(url);
  const rel = u.pathname.replace(/^\/+/, '');
  const file = rel.slice(rel.lastIndexOf('/') + 1);
  switch (sourceHost(url)) {
    case 'huggingface':
      return [underBase(base, rel)];
    case 'gluoncv':
      return [underBase(base, file), underBase(base, `gluon/models/${file}`)];
    case 'torchvision':
      return [underBase(base, file)];
    default:
      return [underBase(base, `${u.host}/${rel}`)];
  }
}

/**
 * Where a source URL is actually fetched from under the mirror settings, in the order to try. Pure:
 * no I/O. ZOO_MIRROR comes first (it is zoo's own and the most specific), then HF_ENDPOINT and
 * MXNET_GLUON_REPO for their hosts. Local paths and file:// URLs are returned unchanged. Each result
 * is a URL or, for a mirror that is a local directory, an absolute path.
 */
export function resolveSourceCandidates(url: string, settings: HubSettings): string[] {
  if (!hasScheme(url) || url.startsWith('file://')) return [url];
  const { mirror } = settings;
  if (mirror?.kind === 'prefix') {
    for (const [from, to] of mirror.map) {
      const hit = replacePrefix(url, from, to);
      if (hit !== undefined) return [hit];
    }
  } else if (mirror?.kind === 'base') {
    return mirrorCandidates(url, mirror.base);
  }
  if (settings.hfEndpoint) {
    const hit = replacePrefix(url, HF_HOST, settings.hfEndpoint);
    if (hit !== undefined) return [hit];
  }
  if (settings.gluonRepo) {
    for (const repo of GLUON_REPOS) {
      if (url.startsWith(repo)) return [settings.gluonRepo + url.slice(repo.length)];
    }
  }
  return [url];
}

/** The first place `resolveSourceCandidates` gives: where a source is fetched from. Pure. */
export function resolveSourceUrl(url: string, settings: HubSettings): string {
  return resolveSourceCandidates(url, settings)[0]!;
}

/** Which setting sends `url` elsewhere ('ZOO_MIRROR', 'HF_ENDPOINT', 'MXNET_GLUON_REPO'), if any. */
export function mirrorSetting(url: string, settings: HubSettings): 'ZOO_MIRROR' | 'HF_ENDPOINT' | 'MXNET_GLUON_REPO' | undefined {
  if (!hasScheme(url) || url.startsWith('file://')) return undefined;
  const { mirror } = settings;
  if (mirror?.kind === 'base') return 'ZOO_MIRROR';
  if (mirror?.kind === 'prefix' && mirror.map.some(([from, to]) => replacePrefix(url, from, to) !== undefined)) return 'ZOO_MIRROR';
  if (settings.hfEndpoint && replacePrefix(url, HF_HOST, settings.hfEndpoint) !== undefined) return 'HF_ENDPOINT';
  if (settings.gluonRepo && GLUON_REPOS.some((repo) => url.startsWith(repo))) return 'MXNET_GLUON_REPO';
  return undefined;
}
