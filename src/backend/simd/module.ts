/**
 * zoo's SIMD kernels (kernels_wat.ts) as a compiled WebAssembly module, once per process.
 *
 * The build assembles the text into kernels.wasm beside this file (scripts/build-kernels.ts, run by
 * `npm run build`), so the installed package needs no assembler and a process does not spend the
 * 0.2 s wabt takes. The file records the sha256 of the text it was assembled from in a custom section.
 * Where it is missing (a build directory made by tsc alone) or was assembled from other text, the
 * text is assembled here with wabt, a development dependency.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { kernelsWat } from './kernels_wat.js';

const require = createRequire(import.meta.url);

/** Where the build puts the assembled kernels. */
export const KERNELS_FILE = new URL('./kernels.wasm', import.meta.url);

/** Name of the custom section holding the sha256 (hex) of the text a kernels file was assembled from. */
export const SOURCE_SECTION = 'zoo.kernels_wat.sha256';

const FEATURES = { simd: true, threads: true, bulk_memory: true };

interface Wabt {
  parseWat(name: string, text: string, features: Record<string, boolean>): {
    toBinary(o: Record<string, boolean>): { buffer: Uint8Array };
    destroy(): void;
  };
}

export function sourceHash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function leb128(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n) byte |= 0x80;
    out.push(byte);
  } while (n);
  return out;
}

/** `module` with a custom section (id 0) appended; custom sections may appear anywhere in a module. */
export function withCustomSection(module: Uint8Array, name: string, payload: string): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  const body = [...leb128(nameBytes.length), ...nameBytes, ...new TextEncoder().encode(payload)];
  const section = Uint8Array.from([0, ...leb128(body.length), ...body]);
  const out = new Uint8Array(module.length + section.length);
  out.set(module);
  out.set(section, module.length);
  return out;
}

function loadWabt(): () => Promise<Wabt> {
  try {
    return require('wabt') as () => Promise<Wabt>;
  } catch (e) {
    throw new Error(
      `zoo's SIMD kernels: ${fileURLToPath(KERNELS_FILE)} is missing or was built from other kernel text, and wabt is not installed to assemble them (${(e as Error).message.split('\n')[0]}); the package was built without 'npm run build'`,
    );
  }
}

/** Assembles kernel text with wabt into a module that records the text's hash. */
export async function assembleKernels(text: string = kernelsWat()): Promise<Uint8Array> {
  const wabt = await loadWabt()();
  const mod = wabt.parseWat('zoo_kernels.wat', text, FEATURES);
  try {
    return withCustomSection(mod.toBinary({}).buffer, SOURCE_SECTION, sourceHash(text));
  } finally {
    mod.destroy();
  }
}

/** The module in `bytes` if they are a module assembled from `text`, else undefined. */
export function prebuiltKernels(bytes: Uint8Array | undefined, text: string): WebAssembly.Module | undefined {
  if (!bytes) return undefined;
  let module: WebAssembly.Module;
  try {
    module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
  } catch {
    return undefined;
  }
  const sections = WebAssembly.Module.customSections(module, SOURCE_SECTION);
  if (sections.length !== 1) return undefined;
  return new TextDecoder().decode(sections[0]) === sourceHash(text) ? module : undefined;
}

function readIfPresent(file: URL): Uint8Array | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

let compiled: Promise<WebAssembly.Module> | undefined;
let origin: 'prebuilt' | 'assembled' | undefined;

export function compileKernels(): Promise<WebAssembly.Module> {
  compiled ??= (async () => {
    const text = kernelsWat();
    const prebuilt = prebuiltKernels(readIfPresent(KERNELS_FILE), text);
    if (prebuilt) {
      origin = 'prebuilt';
      return prebuilt;
    }
    const module = new WebAssembly.Module((await assembleKernels(text)) as Uint8Array<ArrayBuffer>);
    origin = 'assembled';
    return module;
  })();
  return compiled;
}

/** Where this process's kernels came from: the build's kernels.wasm or wabt at run time. */
export function kernelsOrigin(): 'prebuilt' | 'assembled' | undefined {
  return origin;
}
