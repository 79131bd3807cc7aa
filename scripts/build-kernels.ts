/**
 * Build step after tsc (`npm run build`): assembles zoo's SIMD kernels into kernels.wasm beside the
 * compiled src/backend/simd/module.js of the same build directory, so the package runs without wabt.
 *
 *   node dist/scripts/build-kernels.js
 */
import { renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assembleKernels, KERNELS_FILE } from '../src/backend/simd/module.js';

const file = fileURLToPath(KERNELS_FILE);
const bytes = await assembleKernels();
const tmp = `${file}.tmp-${process.pid}`;
writeFileSync(tmp, bytes);
renameSync(tmp, file);
