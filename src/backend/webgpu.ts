/**
 * The WebGPU backend: tfjs's WebGPU kernels (@tensorflow/tfjs-backend-webgpu) on Dawn's Node bindings
 * (the npm package `webgpu`, which ships a prebuilt dawn.node). The one module that loads either.
 *
 * Dawn reaches the GPU through Vulkan (libvulkan1 and the vendor's ICD: NVIDIA's driver, Mesa's radv or
 * anv; in a container the NVIDIA driver capabilities must include `graphics`). Mesa's lavapipe, a
 * Vulkan driver on the CPU, answers as a *fallback* adapter: `auto` never picks it, `webgpu` accepts
 * it and says so (it is how CI checks this backend on machines without a GPU; Debian 12 needs the
 * Mesa 25 lavapipe of bookworm-backports, Dawn refuses Mesa 22's).
 *
 * WebGPU reports errors asynchronously (a binding larger than the device allows, an out-of-memory
 * buffer, a lost device) and tfjs would go on computing with zeros. Here every uncaptured error and a
 * lost device are recorded, and every read of a tensor's data (the only way a result leaves the GPU)
 * throws a WebGpuError instead of returning numbers computed after one. Synchronous reads (dataSync,
 * arraySync) cannot work in Node on this backend: zoo's paths read with `await tensor.data()`.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';

/** The device limits zoo reports and checks (bytes unless named otherwise). */
export interface WebGpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeWorkgroupsPerDimension: number;
  maxComputeInvocationsPerWorkgroup: number;
}

/** What the adapter says about itself. */
export interface WebGpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A fallback adapter: a software implementation (lavapipe, SwiftShader), not a GPU. */
  fallback: boolean;
  limits: WebGpuLimits;
  features: string[];
}

/** The outcome of looking for an adapter. */
export type WebGpuProbe = { available: true; adapter: WebGpuAdapterInfo } | { available: false; reason: string; adapter?: WebGpuAdapterInfo };

/** A device error turned into an exception: the numbers of the operation that raised it are wrong. */
export class WebGpuError extends UserError {}

/** The two packages; an install hint names both. */
const INSTALL = `npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@${tf.version_core}`;

// Minimal shapes of the WebGPU objects used here (the packages' own types are optional dependencies).
interface GpuAdapterLike {
  readonly info: { vendor: string; architecture: string; device: string; description: string; isFallbackAdapter?: boolean };
  readonly isFallbackAdapter?: boolean;
  readonly limits: Record<string, number>;
  readonly features: Iterable<string> & { has(name: string): boolean };
  requestDevice(descriptor: unknown): Promise<GpuDeviceLike>;
}
interface GpuDeviceLike {
  onuncapturederror: ((ev: { error: { message: string; constructor: { name: string } } }) => void) | null;
  readonly lost: Promise<{ reason: string; message: string }>;
  readonly limits: Record<string, number>;
  destroy(): void;
}
interface GpuLike {
  requestAdapter(options?: unknown): Promise<GpuAdapterLike | null>;
}
interface DawnModule {
  create(flags: string[]): GpuLike;
  globals: Record<string, unknown>;
}

let dawn: { gpu: GpuLike } | undefined;
let device: GpuDeviceLike | undefined;
let active: WebGpuAdapterInfo | undefined;
let deviceError: string | undefined;

function isMissing(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND';
}

/** Loads Dawn once and makes `navigator.gpu` what tfjs's WebGPU backend looks for. */
async function loadDawn(): Promise<{ gpu: GpuLike }> {
  if (dawn) return dawn;
  let mod: DawnModule;
  try {
    mod = (await import('webgpu')) as unknown as DawnModule;
  } catch (e) {
    if (isMissing(e)) throw new UserError(`webgpu is not installed (${INSTALL})`);
    throw new UserError(`Dawn's Node bindings (webgpu) failed to load: ${(e as Error).message}`);
  }
  // Dawn's WebGPU classes (GPUBufferUsage, GPUShaderStage, ...) are globals in a browser; tfjs uses them so.
  for (const [k, v] of Object.entries(mod.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  const gpu = mod.create([]);
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  if (nav && !nav.gpu) Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true });
  else if (!nav) Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  dawn = { gpu };
  return dawn;
}

const LIMIT_NAMES: (keyof WebGpuLimits)[] = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension',
  'maxComputeInvocationsPerWorkgroup',
];

function describeAdapter(a: GpuAdapterLike): WebGpuAdapterInfo {
  const i = a.info;
  const limits = Object.fromEntries(LIMIT_NAMES.map((k) => [k, Number(a.limits[k])])) as unknown as WebGpuLimits;
  return {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description: i.description ?? '',
    fallback: Boolean(i.isFallbackAdapter ?? a.isFallbackAdapter),
    limits,
    features: [...a.features].sort(),
  };
}

/** "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6) (mesa software, fallback adapter)". */
export function adapterName(a: WebGpuAdapterInfo): string {
  const what = a.description || a.device || 'unnamed adapter';
  const meta = [a.vendor, a.architecture].filter(Boolean).join(' ');
  return `${what}${meta ? ` (${meta}${a.fallback ? ', fallback adapter' : ''})` : a.fallback ? ' (fallback adapter)' : ''}`;
}

async function requestAdapter(): Promise<GpuAdapterLike> {
  const { gpu } = await loadDawn();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new UserError(
      'no WebGPU adapter answered: Dawn found no Vulkan device (install libvulkan1 and the GPU\'s Vulkan driver; ' +
        'in a container, NVIDIA_DRIVER_CAPABILITIES must include graphics; for a CPU-only check, Mesa\'s lavapipe: mesa-vulkan-drivers)',
    );
  }
  return adapter;
}

/**
 * Looks for an adapter without creating a device (about 0.1 s). A fallback adapter counts as available
 * only with `allowFallback`.
 */
export async function probeWebGpu(allowFallback = false): Promise<WebGpuProbe> {
  try {
    const adapter = describeAdapter(await requestAdapter());
    if (adapter.fallback && !allowFallback) {
      return { available: false, adapter, reason: `only a CPU fallback adapter answered (${adapterName(adapter)}); --backend webgpu uses it anyway` };
    }
    return { available: true, adapter };
  } catch (e) {
    return { available: false, reason: e instanceof UserError ? e.message : (e as Error).message };
  }
}

function recordError(message: string): void {
  // The first error is the cause; what follows is usually "invalid due to a previous error".
  deviceError ??= message;
}

/**
 * Creates the device with the adapter's full limits, registers tfjs's WebGPU backend on it under the
 * name 'webgpu' and activates it. Returns the adapter.
 */
export async function setupWebGpu(allowFallback: boolean): Promise<WebGpuAdapterInfo> {
  releaseWebGpu();
  const probe = await probeWebGpu(allowFallback);
  if (!probe.available) throw new UserError(probe.reason);
  let backendModule: { WebGPUBackend: new (device: unknown, adapterInfo?: unknown) => tf.KernelBackend };
  try {
    backendModule = (await import('@tensorflow/tfjs-backend-webgpu')) as unknown as typeof backendModule;
  } catch (e) {
    if (isMissing(e)) throw new UserError(`@tensorflow/tfjs-backend-webgpu is not installed (${INSTALL})`);
    throw e;
  }
  const adapter = await requestAdapter();
  const limits: Record<string, number> = {};
  for (const k of [...LIMIT_NAMES, 'maxComputeWorkgroupSizeX']) limits[k] = adapter.limits[k]!;
  const features = ['timestamp-query'].filter((f) => adapter.features.has(f));
  const dev = await adapter.requestDevice({ requiredFeatures: features, requiredLimits: limits });
  dev.onuncapturederror = (ev) => recordError(`${ev.error.constructor.name}: ${ev.error.message.split('\n')[0]}`);
  void dev.lost.then((info) => {
    // Only the current device's loss counts; one zoo destroyed itself is not an error.
    if (device === dev) recordError(`the device was lost (${info.reason}): ${info.message}`);
  });
  device = dev;
  deviceError = undefined;
  const info = describeAdapter(adapter);
  // tfjs registers its own factory at import; this one uses the device made here.
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => {
    const backend = new backendModule.WebGPUBackend(dev, adapter.info);
    guardReads(backend);
    return backend;
  }, 1);
  if (!(await tf.setBackend('webgpu'))) {
    releaseWebGpu();
    throw new UserError(`the WebGPU backend failed to initialize on ${adapterName(info)}`);
  }
  active = info;
  return info;
}

/** Makes every async read of the backend throw once the device has reported an error. */
function guardReads(backend: tf.KernelBackend): void {
  const read = backend.read.bind(backend);
  backend.read = async (dataId: object) => {
    throwIfDeviceError();
    let values: Awaited<ReturnType<typeof read>>;
    try {
      values = await read(dataId);
    } catch (e) {
      throwIfDeviceError();
      throw new WebGpuError(`reading a result back from the WebGPU device failed: ${(e as Error).message}`);
    }
    throwIfDeviceError();
    return values;
  };
  const readSync = backend.readSync.bind(backend);
  backend.readSync = (dataId: object) => {
    try {
      return readSync(dataId);
    } catch (e) {
      throw new Error(
        `a synchronous read (dataSync/arraySync) on the WebGPU backend, which Node cannot do: ${(e as Error).message}. ` +
          'This is a bug in zoo when it happens on a zoo path; in your own code, use `await tensor.data()`',
      );
    }
  };
}

/** Throws the first device error recorded since the device was made. */
export function throwIfDeviceError(): void {
  if (deviceError === undefined) return;
  throw new WebGpuError(
    `the WebGPU device reported an error, so results computed since are wrong and were not used: ${deviceError}` +
      (/binding size|maximum storage buffer/i.test(deviceError) && active
        ? ` (a tensor was larger than the device's ${formatBytes(active.limits.maxStorageBufferBindingSize)} storage-buffer binding limit: use a smaller batch or image size)`
        : ''),
  );
}

/** The adapter of the active device, or undefined. */
export function activeWebGpu(): WebGpuAdapterInfo | undefined {
  return active;
}

/**
 * Largest single binding the device takes. A tensor is one buffer bound whole, so no tensor of a run
 * may be larger; callers check their largest activation against it before the run starts.
 */
export function maxBindingBytes(): number | undefined {
  return active && tf.getBackend() === 'webgpu' ? active.limits.maxStorageBufferBindingSize : undefined;
}

/** The most workgroups one dispatch may have along an axis (a batched product's batch is one), while WebGPU is active. */
export function maxWorkgroupsPerDimension(): number | undefined {
  return active && tf.getBackend() === 'webgpu' ? active.limits.maxComputeWorkgroupsPerDimension : undefined;
}

export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(n % 2 ** 30 ? 1 : 0)} GiB`;
  return n >= 2 ** 20 ? `${Math.round(n / 2 ** 20)} MiB` : `${Math.max(1, Math.round(n / 1024))} KiB`;
}

/**
 * Destroys the device (Node does not exit while Dawn holds one). The backend is removed from tfjs;
 * a later setupWebGpu() makes a new device.
 */
export function releaseWebGpu(): void {
  if (!device) return;
  const dev = device;
  device = undefined;
  active = undefined;
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  dev.destroy();
}

/** What `zoo doctor` says about WebGPU. */
export interface WebGpuReport {
  /** 'auto': a GPU adapter, used by default; 'explicit': only a CPU fallback adapter, used with --backend webgpu; 'no'. */
  usable: 'auto' | 'explicit' | 'no';
  reason: string;
  adapter?: WebGpuAdapterInfo;
  /** Vulkan driver manifests Dawn's loader can see (VK_DRIVER_FILES / VK_ICD_FILENAMES, else the standard directories). */
  vulkanDrivers: string[];
}

function vulkanDrivers(): string[] {
  const named = process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES;
  if (named) return named.split(':').filter(Boolean);
  const dirs = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'];
  return dirs.flatMap((d) => {
    try {
      return readdirSync(d).filter((f) => f.endsWith('.json')).map((f) => path.join(d, f));
    } catch {
      return [];
    }
  });
}

/** Looks for an adapter (the active one when WebGPU is the backend) and says whether and how zoo uses it. */
export async function webgpuReport(): Promise<WebGpuReport> {
  const drivers = vulkanDrivers();
  let adapter = active;
  if (!adapter) {
    const p = await probeWebGpu(true);
    if (!p.available) return { usable: 'no', reason: p.reason, vulkanDrivers: drivers };
    adapter = p.adapter;
  }
  if (adapter.fallback) {
    return { usable: 'explicit', reason: `${adapterName(adapter)} is a CPU fallback adapter: used only with --backend webgpu (for checking; slower than wasm)`, adapter, vulkanDrivers: drivers };
  }
  return { usable: 'auto', reason: `${adapterName(adapter)}: --backend auto uses it for training and inference`, adapter, vulkanDrivers: drivers };
}

/** The largest tensor of a run, per image, for the check before it starts. */
export interface WebGpuFitRequest {
  /** What runs, e.g. "resnet50d training at 224x224". */
  what: string;
  /** Images per forward/backward pass. */
  batch: number;
  /** Bytes of the largest per-image tensor (activation or gradient) at this size. */
  perImageBytes: number;
  /** The option that sets the batch (default --micro-batch). */
  batchOption?: string;
  /** Bytes of the largest per-image tensor at another square size, to name the largest size that fits. */
  perImageBytesAt?: (size: number) => number;
  size?: number;
  /** The option that sets that size (default --image-size). */
  sizeOption?: string;
  /** What to do when no batch or size option helps. */
  advice?: string;
}

/** The largest batch whose per-image tensor of `perImageBytes` the active WebGPU device binds (Infinity elsewhere). */
export function largestBatchThatFits(perImageBytes: number): number {
  const limit = maxBindingBytes();
  return limit === undefined ? Infinity : Math.max(1, Math.floor(limit / perImageBytes));
}

/**
 * Checks, before a run starts, that its largest tensor binds on the device: WebGPU binds each tensor
 * whole, and a larger one would fail on the device mid-run. The message names the largest batch
 * (and size) that fits. No-op unless WebGPU is the active backend.
 */
export function checkWebGpuFits(r: WebGpuFitRequest): void {
  const limit = maxBindingBytes();
  if (limit === undefined) return;
  const need = r.batch * r.perImageBytes;
  if (need <= limit) return;
  const maxBatch = Math.floor(limit / r.perImageBytes);
  const fixes: string[] = [];
  if (maxBatch >= 1) fixes.push(`${r.batchOption ?? '--micro-batch'} ${maxBatch} or smaller`);
  if (r.perImageBytesAt && r.size) {
    let s = r.size;
    while (s > 8 && r.batch * r.perImageBytesAt(s) > limit) s -= 8;
    if (s < r.size && r.batch * r.perImageBytesAt(s) <= limit) fixes.push(`${r.sizeOption ?? '--image-size'} ${s} at this batch`);
  }
  throw new UserError(
    `${r.what} needs a ${formatBytes(need)} tensor at batch ${r.batch} (${formatBytes(r.perImageBytes)} per image), and this WebGPU device binds at most ` +
      `${formatBytes(limit)} per tensor (${active ? adapterName(active) : 'the adapter'})` +
      (fixes.length ? `: use ${fixes.join(', or ')}` : `: even one image is too large; ${r.advice ?? 'use a smaller image size'}`),
  );
}
