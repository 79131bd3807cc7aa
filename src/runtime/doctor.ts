/**
 * `zoo doctor`: what this machine gives zoo (compute backends, ONNX Runtime and its execution
 * providers, a GPU, the cache), and the installation of ONNX Runtime's CUDA execution provider.
 *
 * onnxruntime-node 1.29.0 ships its CPU binaries in the npm package; the CUDA provider libraries
 * (libonnxruntime_providers_cuda.so, _shared.so, _tensorrt.so, built for CUDA 13 and cuDNN 9) are
 * fetched by its install script from a host outside the npm registry, which zoo's .npmrc skips. The same
 * official Microsoft files for 1.29.0 are on the npm registry inside the package
 * com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 (Plugins/Linux/x64/). `installCudaProvider` fetches that
 * package with `npm pack` (or takes a tarball given by the user), checks the files are shared objects built
 * for the ONNX Runtime that onnxruntime-node loads, copies them beside libonnxruntime.so, atomically per
 * file, and records what it installed in zoo-cuda-provider.json beside them (the ONNX Runtime version they
 * are built for, the package, the sha256 of each file), which cuda.ts reads before using them.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.js';
import {
  CUDA_MANIFEST,
  CUDA_PROVIDER_LIBS,
  nvidiaSmiDevices,
  ortBinaryDir,
  ortNodeVersion,
  providerVersion,
  sha256File,
  versionStrings,
  type CudaManifest,
  type ProviderVersion,
} from './cuda.js';

const require = createRequire(import.meta.url);

export const ORT_VERSION = '1.29.0';
export const CUDA_PROVIDER_PACKAGE = 'com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9';
export const CUDA_PROVIDER_FILES = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so'] as const;
/** Where the files sit inside that package's tarball. */
const PACKAGE_DIR = 'package/Plugins/Linux/x64';

export interface GpuInfo {
  present: boolean;
  /** `nvidia-smi -L` lines, or the device files found. */
  devices: string[];
  /** CUDA runtime and cuDNN libraries the dynamic linker knows. */
  libraries: string[];
}

/** NVIDIA GPUs and the CUDA libraries visible to this process (Linux). */
export function detectGpu(): GpuInfo {
  const devices = nvidiaSmiDevices();
  if (!devices.length && process.platform === 'linux' && existsSync('/dev')) {
    devices.push(...readdirSync('/dev').filter((f) => /^nvidia\d+$/.test(f)).map((f) => `/dev/${f}`));
  }
  const libraries: string[] = [];
  if (process.platform === 'linux') {
    try {
      const out = execFileSync('ldconfig', ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
      for (const lib of ['libcudart.so', 'libcublas.so', 'libcudnn.so']) {
        const hit = out.split('\n').find((l) => l.trim().startsWith(lib));
        if (hit) libraries.push(hit.trim().split(' ')[0]!);
      }
    } catch {
      // no ldconfig: say nothing about libraries
    }
  }
  return { present: devices.length > 0, devices, libraries };
}

export interface OrtInfo {
  version: string;
  pinned: boolean;
  binaryDir: string;
  cudaFiles: { file: string; present: boolean }[];
  cudaInstalled: boolean;
  /** Which ONNX Runtime the installed provider files are built for (absent when they are not installed). */
  cudaVersion?: ProviderVersion;
}

/** onnxruntime-node and its CUDA provider files; `checksums` verifies the files against zoo's manifest (reads them whole). */
export function ortInfo(dir = ortBinaryDir(), options: { checksums?: boolean } = {}): OrtInfo {
  const version = ortNodeVersion();
  const cudaFiles = CUDA_PROVIDER_FILES.map((file) => ({ file, present: existsSync(path.join(dir, file)) }));
  const cudaInstalled = cudaFiles.filter((f) => (CUDA_PROVIDER_LIBS as readonly string[]).includes(f.file)).every((f) => f.present);
  return {
    version,
    pinned: version === ORT_VERSION,
    binaryDir: dir,
    cudaFiles,
    cudaInstalled,
    ...(cudaInstalled ? { cudaVersion: providerVersion(dir, version, options) } : {}),
  };
}

/** Which optional tfjs native backends are installed. */
export function nativeBackends(): { name: string; installed: boolean }[] {
  return ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].map((name) => {
    try {
      require.resolve(`${name}/package.json`);
      return { name, installed: true };
    } catch {
      return { name, installed: false };
    }
  });
}

function isElf(file: string): boolean {
  const b = readFileSync(file).subarray(0, 4);
  return b.length === 4 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46;
}

export interface InstallOptions {
  /** A tarball of the package already downloaded (else `npm pack` fetches it). */
  from?: string;
  /** Where to put the files (default: onnxruntime-node's binary directory). */
  target?: string;
  log?: (line: string) => void;
}

/** Installs the CUDA execution provider's libraries beside ONNX Runtime; returns the files written. */
export function installCudaProvider(options: InstallOptions = {}): string[] {
  const log = options.log ?? (() => {});
  if (!options.target && (process.platform !== 'linux' || process.arch !== 'x64')) {
    throw new UserError(`the CUDA execution provider files zoo can install are for Linux x64; this is ${process.platform} ${process.arch}`);
  }
  const target = options.target ?? ortBinaryDir();
  if (!options.target) {
    const version = ortNodeVersion();
    if (version !== ORT_VERSION) throw new UserError(`onnxruntime-node is ${version}; the provider files in ${CUDA_PROVIDER_PACKAGE} are built for ${ORT_VERSION}`);
  }
  const ortVersion = ortNodeVersion();
  const work = mkdtempSync(path.join(os.tmpdir(), 'zoo-cuda-ep-'));
  try {
    let tarball = options.from;
    if (tarball) {
      if (!existsSync(tarball)) throw new UserError(`--from ${tarball}: no such file`, { exitCode: 2 });
    } else {
      log(`npm pack ${CUDA_PROVIDER_PACKAGE} (about 230 MB, from the npm registry)...`);
      const r = spawnSync('npm', ['pack', CUDA_PROVIDER_PACKAGE, '--pack-destination', work, '--silent'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      if (r.error || r.status !== 0) {
        throw new UserError(`npm pack ${CUDA_PROVIDER_PACKAGE} failed: ${(r.error?.message ?? r.stderr ?? '').trim().split('\n').slice(-3).join(' ')}`);
      }
      const name = readdirSync(work).find((f) => f.endsWith('.tgz'));
      if (!name) throw new UserError(`npm pack ${CUDA_PROVIDER_PACKAGE} wrote no tarball`);
      tarball = path.join(work, name);
    }
    const out = path.join(work, 'x');
    mkdirSync(out);
    const members = CUDA_PROVIDER_FILES.map((f) => `${PACKAGE_DIR}/${f}`);
    const r = spawnSync('tar', ['-xzf', tarball, '-C', out, ...members], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.error || r.status !== 0) {
      throw new UserError(`${tarball}: cannot extract ${members.join(', ')} (${(r.error?.message ?? r.stderr).trim().split('\n')[0]})`);
    }
    // Every file is checked before any is copied: a bad tarball leaves the installation as it was.
    for (const f of CUDA_PROVIDER_FILES) {
      const src = path.join(out, PACKAGE_DIR, f);
      if (!existsSync(src) || !statSync(src).isFile() || !isElf(src)) throw new UserError(`${tarball}: ${PACKAGE_DIR}/${f} is missing or not a shared object`);
    }
    const manifest = describeFiles(tarball, out, ortVersion);
    mkdirSync(target, { recursive: true });
    // The old manifest goes first: it must never describe files other than the ones it lists.
    rmSync(path.join(target, CUDA_MANIFEST), { force: true });
    const written: string[] = [];
    for (const f of CUDA_PROVIDER_FILES) {
      const src = path.join(out, PACKAGE_DIR, f);
      const dst = path.join(target, f);
      const tmp = `${dst}.tmp-${process.pid}`;
      copyFileSync(src, tmp);
      renameSync(tmp, dst);
      written.push(dst);
      log(`installed ${dst} (${(statSync(dst).size / 1e6).toFixed(1)} MB)`);
    }
    const mf = path.join(target, CUDA_MANIFEST);
    writeFileSync(`${mf}.tmp-${process.pid}`, `${JSON.stringify(manifest, null, 2)}\n`);
    renameSync(`${mf}.tmp-${process.pid}`, mf);
    log(`recorded ${mf} (${manifest.ortVersion ? `built for ONNX Runtime ${manifest.ortVersion}` : 'ONNX Runtime version unknown'}, from ${manifest.package})`);
    return written;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The manifest for the files extracted under `out`: their sha256 and sizes, the package they came from
 * (its package.json, else the tarball's name), and the ONNX Runtime they are built for: the version string
 * inside libonnxruntime_providers_cuda.so, else the version zoo's pinned package is known to be built for
 * when the tarball is that package, else unknown (null). Files built for another ONNX Runtime than
 * `ortVersion` are refused.
 */
function describeFiles(tarball: string, out: string, ortVersion: string): CudaManifest {
  let pkg: string | undefined;
  const r = spawnSync('tar', ['-xzf', tarball, '-C', out, 'package/package.json'], { stdio: 'ignore' });
  if (!r.error && r.status === 0) {
    try {
      const j = JSON.parse(readFileSync(path.join(out, 'package', 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (typeof j.name === 'string' && typeof j.version === 'string') pkg = `${j.name}@${j.version}`;
    } catch {
      // no usable package.json: named by the tarball below
    }
  }
  const lib = path.join(out, PACKAGE_DIR, CUDA_PROVIDER_LIBS[0]);
  const found = versionStrings(lib);
  let built: string | null = null;
  let from: CudaManifest['ortVersionFrom'] = 'library';
  if (found.includes(ortVersion)) built = ortVersion;
  else if (found.length === 1) {
    throw new UserError(`${tarball}: its ${CUDA_PROVIDER_LIBS[0]} is built for ONNX Runtime ${found[0]}, but onnxruntime-node is ${ortVersion}; nothing installed`);
  } else if (pkg === CUDA_PROVIDER_PACKAGE) {
    built = ORT_VERSION;
    from = 'package';
  }
  const files: CudaManifest['files'] = {};
  for (const f of CUDA_PROVIDER_FILES) {
    const file = path.join(out, PACKAGE_DIR, f);
    files[f] = { sha256: sha256File(file), bytes: statSync(file).size };
  }
  return { ortVersion: built, ortVersionFrom: from, package: pkg ?? path.basename(tarball), installedAt: new Date().toISOString(), files };
}
