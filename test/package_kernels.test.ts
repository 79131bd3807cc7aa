/**
 * The SIMD kernels the build assembles into kernels.wasm (scripts/build-kernels.ts): the package runs
 * them without wabt, and a file assembled from other kernel text is never used.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assembleKernels, compileKernels, KERNELS_FILE, kernelsOrigin, prebuiltKernels, SOURCE_SECTION, sourceHash, withCustomSection } from '../src/backend/simd/module.js';
import { KERNEL_NAMES, kernelsWat } from '../src/backend/simd/kernels_wat.js';

const exportNames = (m: WebAssembly.Module) => WebAssembly.Module.exports(m).map((e) => e.name).sort();

test('assembled kernels carry the hash of their text and export every kernel', async (t) => {
  const text = kernelsWat();
  const bytes = await assembleKernels(text);
  const module = prebuiltKernels(bytes, text);
  t.truthy(module);
  t.deepEqual(exportNames(module!), [...KERNEL_NAMES].sort());
  const [section] = WebAssembly.Module.customSections(module!, SOURCE_SECTION);
  t.is(new TextDecoder().decode(section), sourceHash(text));
});

test('a kernels file from other text, without the hash, or corrupt is not used', async (t) => {
  const text = kernelsWat();
  const other = `${text}\n;; edited`;
  t.is(prebuiltKernels(await assembleKernels(other), text), undefined);
  const bytes = await assembleKernels(text);
  // The same module with the hash section (the last one) cut off.
  const sectionLength = withCustomSection(new Uint8Array(0), SOURCE_SECTION, sourceHash(text)).length;
  const plain = bytes.subarray(0, bytes.length - sectionLength);
  t.truthy(new WebAssembly.Module(plain as Uint8Array<ArrayBuffer>));
  t.is(prebuiltKernels(plain, text), undefined);
  t.is(prebuiltKernels(bytes.subarray(0, 100), text), undefined);
  t.is(prebuiltKernels(undefined, text), undefined);
});

test('withCustomSection writes multi-byte sizes', (t) => {
  const empty = Uint8Array.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  const payload = 'x'.repeat(300);
  const module = new WebAssembly.Module(withCustomSection(empty, 'n', payload) as Uint8Array<ArrayBuffer>);
  t.is(new TextDecoder().decode(WebAssembly.Module.customSections(module, 'n')[0]), payload);
});

const built = existsSync(KERNELS_FILE);
(built ? test : test.skip)("the build's kernels.wasm was assembled from the current text and is the one used", async (t) => {
  const module = prebuiltKernels(readFileSync(KERNELS_FILE), kernelsWat());
  t.truthy(module, `${fileURLToPath(KERNELS_FILE)} is stale: run npm run build`);
  await compileKernels();
  t.is(kernelsOrigin(), 'prebuilt');
});
