/**
 * The model registry: architecture names to configurations.
 *
 * Names follow the paper: `resnet50` is the original ResNet-50 ("ResNet-A", GluonCV resnet50_v1, stride
 * in the first 1x1 conv of a downsampling block); `resnet50b`, `c`, `d` are the paper's tweaks, and `s`,
 * `e` GluonCV's v1s and v1e. Note that torchvision's and timm's "resnet50" is our `resnet50b`.
 * Every depth of 18, 34, 50, 101 and 152 is registered with every variant; `resnet50d_small` is
 * ResNet-50-D at a quarter of the width (the ablation script's network); `resnet_test` is a tiny
 * bottleneck ResNet-D for fast tests, `resnet_test_a` the same size in ResNet (A) form.
 */
import { UserError, nearMatches } from '../errors.js';
import type { ResNetConfig } from './resnet.js';

export type Variant = '' | 'b' | 'c' | 'd' | 's' | 'e';

export interface ModelEntry {
  name: string;
  description: string;
  config: ResNetConfig;
}

const DEPTHS: Record<number, Pick<ResNetConfig, 'block' | 'layers'>> = {
  18: { block: 'basic', layers: [2, 2, 2, 2] },
  34: { block: 'basic', layers: [3, 4, 6, 3] },
  50: { block: 'bottleneck', layers: [3, 4, 6, 3] },
  101: { block: 'bottleneck', layers: [3, 4, 23, 3] },
  152: { block: 'bottleneck', layers: [3, 8, 36, 3] },
};

/** The variant table of resnet.ts, as data. */
export const VARIANTS: Record<Variant, Pick<ResNetConfig, 'stemType' | 'stemWidth' | 'strideIn' | 'avgDown'> & { label: string }> = {
  '': { stemType: '', stemWidth: 64, strideIn: '1x1', avgDown: false, label: 'ResNet (A): 7x7 stem, stride in the first 1x1 conv' },
  b: { stemType: '', stemWidth: 64, strideIn: '3x3', avgDown: false, label: 'ResNet-B: stride moved to the 3x3 conv' },
  c: { stemType: 'deep', stemWidth: 32, strideIn: '3x3', avgDown: false, label: 'ResNet-C: deep 3x3 stem (32-32-64)' },
  d: { stemType: 'deep', stemWidth: 32, strideIn: '3x3', avgDown: true, label: 'ResNet-D: deep stem, avg-pool shortcut' },
  s: { stemType: 'deep', stemWidth: 64, strideIn: '3x3', avgDown: false, label: 'ResNet-S (GluonCV v1s): deep stem 64-64-128' },
  e: { stemType: 'deep', stemWidth: 64, strideIn: '3x3', avgDown: true, label: 'ResNet-E (GluonCV v1e): deep stem 64-64-128, avg-pool shortcut' },
};

const registry = new Map<string, ModelEntry>();

/** Adds a model; throws on a duplicate name. */
export function registerModel(entry: ModelEntry): void {
  if (registry.has(entry.name)) throw new Error(`model '${entry.name}' is already registered`);
  registry.set(entry.name, entry);
}

for (const [depth, d] of Object.entries(DEPTHS)) {
  for (const [v, spec] of Object.entries(VARIANTS) as [Variant, (typeof VARIANTS)[Variant]][]) {
    const { label, ...variant } = spec;
    registerModel({
      name: `resnet${depth}${v}`,
      description: `ResNet-${depth}${v ? `-${v.toUpperCase()}` : ''}: ${label}`,
      config: { ...d, ...variant, numClasses: 1000 },
    });
  }
}

registerModel({
  name: 'resnet50d_small',
  description: 'ResNet-50-D layout (3-4-6-3 bottlenecks, deep stem, average-pool shortcuts) at a quarter of the width, for small-scale ablations',
  config: {
    block: 'bottleneck',
    layers: [3, 4, 6, 3],
    widths: [16, 32, 64, 128],
    stemType: 'deep',
    stemWidth: 8,
    strideIn: '3x3',
    avgDown: true,
    numClasses: 1000,
  },
});

registerModel({
  name: 'resnet_test',
  description: 'Tiny ResNet-D (bottleneck, one block per stage, widths 8-64) for tests',
  config: {
    block: 'bottleneck',
    layers: [1, 1, 1, 1],
    widths: [8, 16, 32, 64],
    stemType: 'deep',
    stemWidth: 8,
    strideIn: '3x3',
    avgDown: true,
    numClasses: 10,
  },
});

registerModel({
  name: 'resnet_test_a',
  description: 'Tiny ResNet (A) (bottleneck, 7x7 stem, stride in the 1x1 conv) for tests',
  config: {
    block: 'bottleneck',
    layers: [1, 1, 1, 1],
    widths: [8, 16, 32, 64],
    stemType: '',
    stemWidth: 16,
    strideIn: '1x1',
    avgDown: false,
    numClasses: 10,
  },
});

/** The registered entry; an unknown name throws a UserError listing near matches. */
export function getModelEntry(name: string): ModelEntry {
  const entry = registry.get(name);
  if (entry) return entry;
  const near = nearMatches(name, registry.keys());
  throw new UserError(
    `unknown model '${name}'.` +
      (near.length ? ` Did you mean: ${near.join(', ')}?` : '') +
      ` Run 'zoo list' for all ${registry.size} models.`,
    { exitCode: 2 },
  );
}

function globToRegExp(glob: string): RegExp {
  const esc = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${esc}$`);
}

/** Registered names, sorted, filtered by include / exclude globs (e.g. 'resnet50*'). */
export function listModels(filter: { include?: string | string[]; exclude?: string | string[] } = {}): string[] {
  const inc = [filter.include ?? []].flat().map(globToRegExp);
  const exc = [filter.exclude ?? []].flat().map(globToRegExp);
  return [...registry.keys()]
    .filter((n) => (inc.length === 0 || inc.some((r) => r.test(n))) && !exc.some((r) => r.test(n)))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
}

/**
 * The zoo architecture a timm architecture name means, or undefined when zoo builds no such network.
 * timm names the ResNet-B layout plainly (`resnet50`, as torchvision does), where zoo's `resnet50` is
 * the paper's original ResNet-A; timm's `c`, `d` and `s` variants are zoo's of the same name.
 */
export function archFromTimm(timmArch: string): string | undefined {
  const m = /^resnet(18|34|50|101|152)([cds]?)$/.exec(timmArch);
  if (!m) return undefined;
  const zoo = `resnet${m[1]}${m[2] || 'b'}`;
  return registry.has(zoo) ? zoo : undefined;
}
