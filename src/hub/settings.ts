/**
 * Hub settings: where the cache lives, whether the network may be used, and which mirrors replace
 * the public weight hosts. Read from the environment once; the resolution functions are pure so that
 * tests pass their own environment (transformers.js `buildResourcePaths` style).
 *
 * ZOO_CACHE          cache directory (else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo)
 * ZOO_OFFLINE=1      use only the cache (HF_HUB_OFFLINE=1 is honoured too)
 * HF_ENDPOINT        replaces https://huggingface.co (as huggingface_hub does)
 * MXNET_GLUON_REPO   replaces GluonCV's S3 base; the rest of the path is kept: {repo}gluon/models/{file}
 * ZOO_MIRROR         either a prefix map, `https://host/a=https://mirror/b;https://other=/srv/other`
 *                    (the rest of the path is kept), or one flat directory or base URL holding every
 *                    file by its last path segment: `<dir>/<file name>`
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

/** A mirror given by `ZOO_MIRROR`. */
export type Mirror =
  /** Every file sits directly under `base` (a directory or a URL) by its last path segment. */
  | { kind: 'flat'; base: string }
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

/** Parses `ZOO_MIRROR`: a prefix map when its entries look like `scheme://...=target`, else a flat base. */
export function parseMirror(value: string | undefined): Mirror | undefined {
  const v = nonEmpty(value);
  if (!v) return undefined;
  const entries = v.split(/[;\n]/).map((e) => e.trim()).filter((e) => e !== '');
  const looksLikeMap = entries.some((e) => e.includes('=') && hasScheme(e.slice(0, e.indexOf('='))));
  if (!looksLikeMap) return { kind: 'flat', base: v };
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
  return path.join(localPath(target), decodeURIComponent(rest.replace(/[?#].*$/, '')));
}

function lastSegment(url: string): string {
  const pathname = new URL(url).pathname;
  return pathname.slice(pathname.lastIndexOf('/') + 1);
}

function localPath(target: string): string {
  return target.startsWith('file://') ? fileURLToPath(target) : path.resolve(target);
}

function flatMirror(url: string, base: string): string {
  const segment = lastSegment(url);
  if (hasScheme(base) && !base.startsWith('file://')) return `${trimSlash(base)}/${segment}`;
  return path.join(localPath(base), decodeURIComponent(segment));
}

/**
 * Where a source URL is actually fetched from under the mirror settings. Pure: no I/O.
 * ZOO_MIRROR comes first (it is zoo's own and the most specific), then HF_ENDPOINT and
 * MXNET_GLUON_REPO for their hosts. Local paths and file:// URLs are returned unchanged.
 * The result is a URL or, for a mirror that is a local directory, an absolute path.
 */
export function resolveSourceUrl(url: string, settings: HubSettings): string {
  if (!hasScheme(url) || url.startsWith('file://')) return url;
  const { mirror } = settings;
  if (mirror?.kind === 'prefix') {
    for (const [from, to] of mirror.map) {
      const hit = replacePrefix(url, from, to);
      if (hit !== undefined) return hit;
    }
  } else if (mirror?.kind === 'flat') {
    return flatMirror(url, mirror.base);
  }
  if (settings.hfEndpoint) {
    const hit = replacePrefix(url, HF_HOST, settings.hfEndpoint);
    if (hit !== undefined) return hit;
  }
  if (settings.gluonRepo) {
    for (const repo of GLUON_REPOS) {
      if (url.startsWith(repo)) return settings.gluonRepo + url.slice(repo.length);
    }
  }
  return url;
}
