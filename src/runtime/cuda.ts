/**
 * Whether ONNX Runtime's CUDA execution provider can start on this machine, and if not, what is
 * missing and how to get it, in one line each.
 *
 * The provider is three shared libraries beside libonnxruntime.so (zoo installs them with `zoo doctor
 * --install-cuda`). They only start where all of this holds, checked in this order:
 *   1. the platform is Linux x64 (the only one zoo installs provider files for);
 *   2. an NVIDIA device is present (device files /dev/nvidia<N>, or `nvidia-smi -L`): without one
 *      nothing below matters, and a CPU-only machine is told that rather than to install files;
 *   3. libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so are there;
 *   4. they are built for the ONNX Runtime that onnxruntime-node loads (the manifest zoo writes when it
 *      installs them; else the version string compiled into the provider library; else unverifiable);
 *   5. the dynamic linker finds the libraries the provider links (`ldd`: libcublasLt, libcublas,
 *      libcurand, libcudart, libcuda) and cuDNN 9, which the provider opens at run time.
 * Every probe is a parameter (`CudaProbe`) so that each failure can be produced without a GPU.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

/** The two libraries the CUDA execution provider needs beside libonnxruntime.so (TensorRT's is optional). */
export const CUDA_PROVIDER_LIBS = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'] as const;
/** What `zoo doctor --install-cuda` writes beside the files it installed. */
export const CUDA_MANIFEST = 'zoo-cuda-provider.json';
/** Libraries the CUDA provider opens with dlopen at run time rather than linking (so `ldd` does not list them). */
export const CUDA_RUNTIME_LOADED = ['libcudnn.so.9'] as const;

/** The directory holding libonnxruntime.so for this platform. */
export function ortBinaryDir(): string {
  const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
  return path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}

/** The version of the installed onnxruntime-node (its package.json). */
export function ortNodeVersion(): string {
  return (require('onnxruntime-node/package.json') as { version: string }).version;
}

/** What `zoo doctor --install-cuda` records about the files it installed. */
export interface CudaManifest {
  /** The ONNX Runtime version the files are built for; null when neither the library nor the package says. */
  ortVersion: string | null;
  /** Where that version was read: the version string inside the provider library, or the package's known build. */
  ortVersionFrom: 'library' | 'package';
  /** The npm package (name@version) the files came from, or the tarball's file name when it has no package.json. */
  package: string;
  installedAt: string;
  files: Record<string, { sha256: string; bytes: number }>;
}

export function readCudaManifest(dir: string): CudaManifest | undefined {
  const file = path.join(dir, CUDA_MANIFEST);
  if (!existsSync(file)) return undefined;
  try {
    const m = JSON.parse(readFileSync(file, 'utf8')) as Partial<CudaManifest>;
    if ((typeof m.ortVersion !== 'string' && m.ortVersion !== null) || typeof m.files !== 'object' || m.files === null) return undefined;
    return m as CudaManifest;
  } catch {
    return undefined;
  }
}

const shaCache = new Map<string, string>();

/** The sha256 of a file, read in chunks (computed once per process for a given path, size and mtime). */
export function sha256File(file: string): string {
  const st = statSync(file);
  const key = `${file}:${st.size}:${st.mtimeMs}`;
  const hit = shaCache.get(key);
  if (hit) return hit;
  const h = createHash('sha256');
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 << 20);
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  const digest = h.digest('hex');
  shaCache.set(key, digest);
  return digest;
}

/**
 * The ONNX Runtime versions compiled into a provider library: NUL-delimited strings of the form 1.N.M
 * (ORT's provider libraries carry ORT_VERSION as such a string). Read in chunks: the CUDA one is 230 MB.
 */
export function versionStrings(file: string): string[] {
  const found = new Set<string>();
  const re = /\x00(1\.\d{1,3}\.\d{1,3})\x00/g;
  const fd = openSync(file, 'r');
  try {
    const size = 16 << 20;
    const overlap = 16;
    const buf = Buffer.allocUnsafe(size + overlap);
    let carried = 0;
    for (;;) {
      const n = readSync(fd, buf, carried, size, null);
      if (n <= 0) break;
      const end = carried + n;
      for (const m of buf.toString('latin1', 0, end).matchAll(re)) found.add(m[1]!);
      // Keep the tail: a string cut by the chunk boundary is read whole with the next chunk.
      const keep = Math.min(overlap, end);
      buf.copy(buf, 0, end - keep, end);
      carried = keep;
    }
  } finally {
    closeSync(fd);
  }
  return [...found].sort();
}

export type VersionStatus = 'match' | 'mismatch' | 'unverified';

export interface ProviderVersion {
  status: VersionStatus;
  /** The version the files are built for, where known. */
  version?: string;
  source: 'manifest' | 'library' | 'none';
  /** One line for `zoo doctor`. */
  detail: string;
}

const versionCache = new Map<string, ProviderVersion>();

/**
 * Which ONNX Runtime the provider files in `dir` are built for, against `ortVersion`. The manifest is
 * trusted while the files are the ones it describes (sizes; sha256 too with `checksums`); otherwise the
 * version string inside libonnxruntime_providers_cuda.so decides; without either it cannot be verified.
 */
export function providerVersion(dir: string, ortVersion: string, options: { checksums?: boolean } = {}): ProviderVersion {
  const lib = path.join(dir, CUDA_PROVIDER_LIBS[0]);
  const manifest = readCudaManifest(dir);
  let stale: string | undefined;
  if (manifest) {
    for (const f of CUDA_PROVIDER_LIBS) {
      const rec = manifest.files[f];
      const file = path.join(dir, f);
      if (!rec || !existsSync(file)) {
        stale = `${CUDA_MANIFEST} does not describe ${f}`;
        break;
      }
      if (statSync(file).size !== rec.bytes) {
        stale = `${f} is not the file ${CUDA_MANIFEST} records (size differs)`;
        break;
      }
      if (options.checksums && sha256File(file) !== rec.sha256) {
        stale = `${f} is not the file ${CUDA_MANIFEST} records (sha256 differs)`;
        break;
      }
    }
    if (!stale && manifest.ortVersion === null) stale = `${CUDA_MANIFEST} records no ONNX Runtime version`;
    if (!stale && manifest.ortVersion !== null) {
      const checked = options.checksums ? 'sha256 checked' : 'sizes checked';
      return manifest.ortVersion === ortVersion
        ? { status: 'match', version: manifest.ortVersion, source: 'manifest', detail: `built for ONNX Runtime ${manifest.ortVersion} (${CUDA_MANIFEST}, from ${manifest.package}; ${checked})` }
        : { status: 'mismatch', version: manifest.ortVersion, source: 'manifest', detail: `built for ONNX Runtime ${manifest.ortVersion} (${CUDA_MANIFEST}, from ${manifest.package}), but onnxruntime-node is ${ortVersion}` };
    }
  }
  const st = statSync(lib);
  const key = `${lib}:${st.size}:${st.mtimeMs}:${ortVersion}`;
  let v = versionCache.get(key);
  if (!v) {
    const found = versionStrings(lib);
    const prefix = stale ? `${stale}; ` : '';
    if (found.includes(ortVersion)) {
      v = { status: 'match', version: ortVersion, source: 'library', detail: `${prefix}built for ONNX Runtime ${ortVersion} (the version string in ${CUDA_PROVIDER_LIBS[0]})` };
    } else if (found.length === 1) {
      v = { status: 'mismatch', version: found[0]!, source: 'library', detail: `${prefix}built for ONNX Runtime ${found[0]} (the version string in ${CUDA_PROVIDER_LIBS[0]}), but onnxruntime-node is ${ortVersion}` };
    } else {
      const what = found.length ? `several version strings in ${CUDA_PROVIDER_LIBS[0]} (${found.join(', ')})` : `no version string in ${CUDA_PROVIDER_LIBS[0]}`;
      v = { status: 'unverified', source: 'none', detail: `${prefix}their ONNX Runtime version cannot be verified: ${manifest ? '' : `no ${CUDA_MANIFEST} (not installed by zoo) and `}${what}` };
    }
    versionCache.set(key, v);
  }
  return v;
}

/** The libraries `ldd` reports as "=> not found", in its order, each once. */
export function parseLddMissing(text: string): string[] {
  const missing: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\S+)\s+=>\s+not found\s*$/.exec(line);
    if (m && !missing.includes(m[1]!)) missing.push(m[1]!);
  }
  return missing;
}

/** The library named in a dynamic loader's message ("libcublasLt.so.13: cannot open shared object file ..."). */
export function parseLoadError(message: string): string | undefined {
  const m = /([A-Za-z0-9_.+-]+\.so(?:\.[0-9]+)*): cannot open shared object file/.exec(message);
  return m ? path.basename(m[1]!) : undefined;
}

/** CUDA 13 toolkit libraries by soname prefix (the provider files are built for CUDA 13 and cuDNN 9). */
const CUDA13_PARTS: [RegExp, string][] = [
  [/^libcublas(Lt)?\.so/, 'cuBLAS'],
  [/^libcudart\.so/, 'runtime (cudart)'],
  [/^libcurand\.so/, 'cuRAND'],
  [/^libcufft\.so/, 'cuFFT'],
  [/^libnvrtc/, 'NVRTC'],
  [/^libnvJitLink/, 'nvJitLink'],
];

/** How to get `libs`: the CUDA 13 / cuDNN 9 / driver parts they belong to, or the provider files. */
export function libraryFix(libs: readonly string[]): string {
  if (libs.some((l) => l.startsWith('libonnxruntime_providers'))) return "run 'zoo doctor --install-cuda'";
  const toolkit: string[] = [];
  const others: string[] = [];
  const add = (list: string[], v: string) => list.includes(v) || list.push(v);
  for (const lib of libs) {
    const part = CUDA13_PARTS.find(([re]) => re.test(lib))?.[1];
    if (part) add(toolkit, part);
    else if (/^libcudnn/.test(lib)) add(others, 'cuDNN 9 for CUDA 13');
    else if (/^libcuda\.so/.test(lib)) add(others, 'the NVIDIA driver (libcuda.so.1)');
    else add(others, lib);
  }
  const parts = [...(toolkit.length ? [`CUDA 13's ${joinAnd(toolkit)}`] : []), ...others];
  const onlyDriver = libs.every((l) => /^libcuda\.so/.test(l));
  return `install ${joinAnd(parts)}${onlyDriver ? '' : `, and make ${libs.length > 1 ? 'them' : 'it'} findable (ldconfig, or ${libs.length > 1 ? 'their directories' : 'its directory'} on LD_LIBRARY_PATH)`}`;
}

function joinAnd(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** NVIDIA devices visible to this process: /dev/nvidia<N> device files, else `nvidia-smi -L` lines. */
export function listNvidiaDevices(): string[] {
  if (process.platform === 'linux' && existsSync('/dev')) {
    const files = readdirSync('/dev').filter((f) => /^nvidia\d+$/.test(f)).map((f) => `/dev/${f}`);
    if (files.length) return files;
  }
  return nvidiaSmiDevices();
}

/** `nvidia-smi -L` lines (GPU names and UUIDs); [] where it is missing or fails. */
export function nvidiaSmiDevices(): string[] {
  try {
    const out = execFileSync('nvidia-smi', ['-L'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
    return out.split('\n').filter((l) => l.startsWith('GPU '));
  } catch {
    return [];
  }
}

/** Runs `ldd file`; its stdout, or undefined where ldd cannot be run. */
export function runLdd(file: string): string | undefined {
  const r = spawnSync('ldd', [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  if (r.error || typeof r.stdout !== 'string') return undefined;
  return r.stdout;
}

const DLOPEN_CHILD = `
const { constants } = require('node:os');
const out = {};
for (const lib of process.argv.slice(1)) {
  try { process.dlopen({ exports: {} }, lib, constants.dlopen.RTLD_NOW); out[lib] = null; }
  catch (e) { out[lib] = /did not self-register/.test(String(e && e.message)) ? null : String(e && e.message).split('\\n')[0]; }
}
process.stdout.write(JSON.stringify(out));
`;

/**
 * Opens each library (a path, or a name the dynamic linker searches for) in a child process as ONNX
 * Runtime would, so nothing is loaded into this one. Per library: undefined when it loads, else the
 * loader's message. Undefined as a whole where the child cannot be run.
 */
export function dlopenLibraries(libs: readonly string[]): Record<string, string | undefined> | undefined {
  const r = spawnSync(process.execPath, ['-e', DLOPEN_CHILD, ...libs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60_000 });
  if (r.error || r.status !== 0) return undefined;
  try {
    const parsed = JSON.parse(r.stdout) as Record<string, string | null>;
    return Object.fromEntries(libs.map((l) => [l, parsed[l] ?? undefined]));
  } catch {
    return undefined;
  }
}

/** Everything `cudaReadiness` looks at, each replaceable. */
export interface CudaProbe {
  /** `${process.platform} ${process.arch}` (default: this process's). */
  platform?: string;
  /** Where the provider files sit, beside libonnxruntime.so (default: onnxruntime-node's binary directory). */
  dir?: string;
  /** onnxruntime-node's version (default: its package.json). */
  ortVersion?: string;
  /** NVIDIA devices present (default: `listNvidiaDevices`). */
  devices?: () => string[];
  /** `ldd <file>` output, or undefined where ldd is unavailable (default: `runLdd`). */
  ldd?: (file: string) => string | undefined;
  /** Loads libraries by name and reports the ones that fail (default: `dlopenLibraries`). */
  dlopen?: (libs: readonly string[]) => Record<string, string | undefined> | undefined;
  /** Run every check, not only up to the first failure (for `zoo doctor`). */
  complete?: boolean;
  /** Check the manifest's sha256 of each file (reads them whole; for `zoo doctor`). */
  checksums?: boolean;
}

export type CudaCheckName = 'platform' | 'device' | 'provider-files' | 'version' | 'libraries';

export interface CudaCheck {
  check: CudaCheckName;
  ok: boolean;
  /** What was found, one line. */
  detail: string;
  problem?: string;
  fix?: string;
}

export interface CudaReadiness {
  ready: boolean;
  /** The first thing missing, one line (absent when ready). */
  problem?: string;
  /** How to fix it, one line. */
  fix?: string;
  /** The checks that ran, in order. */
  checks: CudaCheck[];
}

/** `problem; fix`: the reason CUDA is not used, as notes and errors print it. */
export function cudaReason(r: { problem?: string; fix?: string }): string {
  return [r.problem ?? 'the CUDA execution provider cannot start', r.fix].filter(Boolean).join('; ');
}

let defaultReadiness: CudaReadiness | undefined;

/**
 * Whether the CUDA execution provider can start, checked without starting it (module doc). Called
 * without a probe the answer is computed once per process.
 */
export function cudaReadiness(probe?: CudaProbe): CudaReadiness {
  if (!probe) return (defaultReadiness ??= runChecks({}));
  return runChecks(probe);
}

function runChecks(probe: CudaProbe): CudaReadiness {
  const dir = probe.dir ?? ortBinaryDir();
  const steps = [
    () => checkPlatform(probe.platform ?? `${process.platform} ${process.arch}`),
    () => checkDevice((probe.devices ?? listNvidiaDevices)()),
    () => checkFiles(dir),
    // These two read the provider files: they run only where the files are there.
    () => checkVersion(dir, probe.ortVersion ?? ortNodeVersion(), probe.checksums ?? false),
    () => checkLibraries(dir, probe.ldd ?? runLdd, probe.dlopen ?? dlopenLibraries),
  ];
  const checks: CudaCheck[] = [];
  for (const step of steps) {
    const c = step();
    checks.push(c);
    if (!c.ok && (!probe.complete || c.check === 'provider-files')) break;
  }
  const failed = checks.find((c) => !c.ok);
  return failed ? { ready: false, problem: failed.problem!, ...(failed.fix ? { fix: failed.fix } : {}), checks } : { ready: true, checks };
}

function checkPlatform(platform: string): CudaCheck {
  return platform === 'linux x64'
    ? { check: 'platform', ok: true, detail: platform }
    : { check: 'platform', ok: false, detail: platform, problem: `zoo runs ONNX Runtime's CUDA execution provider on Linux x64 only, and this is ${platform}` };
}

function checkDevice(devices: string[]): CudaCheck {
  if (devices.length) return { check: 'device', ok: true, detail: devices.join('; ') };
  return {
    check: 'device',
    ok: false,
    detail: 'none found',
    problem: 'no NVIDIA GPU found (no /dev/nvidia<N> device, and nvidia-smi -L lists none)',
    fix: 'CUDA needs an NVIDIA GPU and its driver (in a container: run it with the NVIDIA Container Toolkit, e.g. docker run --gpus all)',
  };
}

function checkFiles(dir: string): CudaCheck {
  const missing = CUDA_PROVIDER_LIBS.filter((f) => !existsSync(path.join(dir, f)));
  if (!missing.length) return { check: 'provider-files', ok: true, detail: `${CUDA_PROVIDER_LIBS.join(', ')} in ${dir}` };
  return {
    check: 'provider-files',
    ok: false,
    detail: `${missing.join(', ')} missing in ${dir}`,
    problem: `the CUDA execution provider is not installed beside ONNX Runtime (${missing.join(', ')} missing in ${dir})`,
    fix: "run 'zoo doctor --install-cuda'",
  };
}

function checkVersion(dir: string, ortVersion: string, checksums: boolean): CudaCheck {
  const v = providerVersion(dir, ortVersion, { checksums });
  if (v.status !== 'mismatch') return { check: 'version', ok: true, detail: v.detail };
  return {
    check: 'version',
    ok: false,
    detail: v.detail,
    problem: `the CUDA execution provider files in ${dir} are built for ONNX Runtime ${v.version}, but onnxruntime-node is ${ortVersion}`,
    fix: `run 'zoo doctor --install-cuda' to replace them with the files for ${ortVersion}`,
  };
}

function checkLibraries(dir: string, ldd: NonNullable<CudaProbe['ldd']>, dlopen: NonNullable<CudaProbe['dlopen']>): CudaCheck {
  const linked: string[] = [];
  let lddRan = false;
  for (const f of CUDA_PROVIDER_LIBS) {
    const out = ldd(path.join(dir, f));
    if (out === undefined) continue;
    lddRan = true;
    for (const lib of parseLddMissing(out)) if (!linked.includes(lib)) linked.push(lib);
  }
  const loads = dlopen(CUDA_RUNTIME_LOADED);
  const opened = loads ? CUDA_RUNTIME_LOADED.filter((l) => loads[l] !== undefined) : [];
  const all = [...linked, ...opened];
  if (!all.length) {
    const notChecked = [...(lddRan ? [] : ['ldd is not available: linked libraries not checked']), ...(loads ? [] : [`${CUDA_RUNTIME_LOADED.join(', ')} not checked`])];
    return { check: 'libraries', ok: true, detail: notChecked.length ? `none missing that could be checked (${notChecked.join('; ')})` : 'every library the provider links or opens is found' };
  }
  const why = [
    ...(linked.length ? [`${joinAnd(linked)} (linked by the provider)`] : []),
    ...(opened.length ? [`${joinAnd(opened)} (opened by the provider at run time)`] : []),
  ].join(' and ');
  return { check: 'libraries', ok: false, detail: `not found: ${all.join(', ')}`, problem: `the dynamic linker cannot find ${why}`, fix: libraryFix(all) };
}

/**
 * Why ONNX Runtime failed to create (or first run) a CUDA session: the library it could not load when its
 * message names one or loading the provider library in a child process shows one, the driver being too
 * old for CUDA 13, or ORT's own first line.
 */
export function diagnoseCudaFailure(message: string, probe: Pick<CudaProbe, 'dir' | 'dlopen'> = {}): { problem: string; fix: string } {
  const first = message.split('\n')[0]!.trim();
  let lib = parseLoadError(message);
  if (!lib && /Failed to load (shared )?library/i.test(message)) {
    const file = path.join(probe.dir ?? ortBinaryDir(), CUDA_PROVIDER_LIBS[0]);
    const r = (probe.dlopen ?? dlopenLibraries)([file]);
    const err = r?.[file];
    if (err) lib = parseLoadError(err);
  }
  if (lib) return { problem: `ONNX Runtime could not load ${lib} for the CUDA execution provider`, fix: libraryFix([lib]) };
  if (/driver version is insufficient/i.test(message)) {
    return { problem: `the NVIDIA driver is older than CUDA 13 needs (ONNX Runtime: ${first})`, fix: 'update the NVIDIA driver to one for CUDA 13 (580 or newer)' };
  }
  if (/no CUDA-capable device/i.test(message)) {
    return { problem: `no CUDA device answers (ONNX Runtime: ${first})`, fix: 'check that the GPU is visible to this process (nvidia-smi; CUDA_VISIBLE_DEVICES)' };
  }
  return { problem: `ONNX Runtime could not start the CUDA execution provider: ${first}`, fix: "its log lines above say more; 'zoo doctor' shows what CUDA has here" };
}
