/**
 * models.json entries of the tests' own: a published model of `resnet_test` whose sources a test
 * serves from 127.0.0.1 (through ZOO_MIRROR), valid against the registry like the package's entries.
 */
import crypto from 'node:crypto';
import { countNetwork } from '../../src/models/count.js';
import { createModel } from '../../src/models/model.js';

/** The parts of an entry every fixture shares, for `resnet_test` with 10 classes evaluated at `size`. */
export function fixtureBase(size: number) {
  const m = createModel('resnet_test');
  const counts = countNetwork(m.net, size);
  m.dispose();
  return {
    arch: 'resnet_test',
    description: 'test fixture',
    numClasses: 10,
    categories: null as string | null,
    preprocessing: { inputSize: size, resizeShorter: Math.round(size / 0.875), crop: size, interpolation: 'bilinear', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    numParams: counts.params,
    gmacs: counts.macs / 1e9,
    metrics: [],
    recipe: 'test',
    license: 'test',
    origin: 'test',
  };
}

/** A timm-named safetensors source at `url`, pinned to `weights`' sha256. */
export function pinnedSafetensors(url: string, weights: Uint8Array) {
  return { format: 'safetensors', naming: 'timm', url, sha256: crypto.createHash('sha256').update(weights).digest('hex'), size: weights.length, host: 'huggingface' };
}
