/**
 * Assembles zoo's SIMD kernels (kernels_wat.ts) with wabt and compiles them, once per process.
 */
import { createRequire } from 'node:module';
import { kernelsWat } from './kernels_wat.js';

const require = createRequire(import.meta.url);

interface Wabt {
  parseWat(name: string, text: string, features: Record<string, boolean>): {
    toBinary(o: Record<string, boolean>): { buffer: Uint8Array };
    destroy(): void;
  };
}

let compiled: Promise<WebAssembly.Module> | undefined;

export function compileKernels(): Promise<WebAssembly.Module> {
  compiled ??= (async () => {
    const init = require('wabt') as () => Promise<Wabt>;
    const wabt = await init();
    const mod = wabt.parseWat('zoo_kernels.wat', kernelsWat(), { simd: true, threads: true, bulk_memory: true });
    try {
      const { buffer } = mod.toBinary({});
      return new WebAssembly.Module(buffer as Uint8Array<ArrayBuffer>);
    } finally {
      mod.destroy();
    }
  })();
  return compiled;
}
