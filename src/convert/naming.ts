/**
 * How published checkpoints name ResNet parameters, mapped onto zoo's (timm's) names.
 *
 * - 'timm', 'torchvision', 'zoo': zoo's own names (conv1 or conv1.0/.3/.6 for the deep stem, bn1,
 *   layerS.B.convK / bnK, layerS.B.downsample.I, fc); BN tensors weight / bias / running_mean /
 *   running_var; `num_batches_tracked` is ignored.
 * - 'gluon-v1b' (GluonCV resnetv1b.py: resnet*_v1b/c/d/s/e): the same structure, BN gamma / beta.
 * - 'gluon-v1' (GluonCV resnet.py: resnet*_v1, the paper's plain ResNet-50): `features.0` (7x7
 *   conv), `features.1` (BN), stages `features.4..7`, blocks `features.S.B.body.I` with I in
 *   (0, 1, 3, 4, 6, 7) for a bottleneck and (0, 1, 3, 4) for a basic block, `downsample.0/1`,
 *   classifier `output`. Its bottleneck 1x1 convolutions carry biases (Gluon's default); each is
 *   followed by batch norm, which absorbs it exactly: running_mean -= bias.
 *
 * Layouts: convolution weights arrive OIHW ([out, in, kh, kw]) and fully connected weights [out, in];
 * zoo stores [kh, kw, in, out] and [in, out].
 */
import type { ResNetConfig } from '../models/resnet.js';

export const NAMINGS = ['timm', 'torchvision', 'zoo', 'gluon-v1b', 'gluon-v1'] as const;
export type Naming = (typeof NAMINGS)[number];

export interface MappedName {
  /** zoo parameter name */
  name: string;
  /** A conv bias to fold into this batch norm's running mean (gluon-v1), instead of a parameter. */
  foldBiasInto?: string;
}

const BN_SUFFIX: Record<string, string> = { gamma: 'weight', beta: 'bias', running_mean: 'running_mean', running_var: 'running_var', weight: 'weight', bias: 'bias' };

/** Source names that carry no parameter zoo needs. */
export function ignorable(name: string): boolean {
  // Batch counters of PyTorch batch norm, and optimizer state in zoo's training checkpoints.
  return name.endsWith('num_batches_tracked') || name.startsWith('optimizer.');
}

function gluonV1(name: string, config: ResNetConfig): MappedName | undefined {
  let m = /^features\.0\.weight$/.exec(name);
  if (m) return { name: 'conv1.weight' };
  m = /^features\.1\.(gamma|beta|running_mean|running_var)$/.exec(name);
  if (m) return { name: `bn1.${BN_SUFFIX[m[1]!]!}` };
  m = /^output\.(weight|bias)$/.exec(name);
  if (m) return { name: `fc.${m[1]}` };
  m = /^features\.([4-7])\.(\d+)\.(body|downsample)\.(\d+)\.(weight|bias|gamma|beta|running_mean|running_var)$/.exec(name);
  if (!m) return undefined;
  const block = `layer${Number(m[1]) - 3}.${m[2]}`;
  const index = Number(m[4]);
  const leaf = m[5]!;
  if (m[3] === 'downsample') {
    if (index === 0 && leaf === 'weight') return { name: `${block}.downsample.0.weight` };
    if (index === 1) return { name: `${block}.downsample.1.${BN_SUFFIX[leaf]!}` };
    return undefined;
  }
  const bottleneck = config.block === 'bottleneck';
  const convs = bottleneck ? [0, 3, 6] : [0, 3];
  const bns = bottleneck ? [1, 4, 7] : [1, 4];
  const ci = convs.indexOf(index);
  if (ci >= 0) {
    if (leaf === 'weight') return { name: `${block}.conv${ci + 1}.weight` };
    if (leaf === 'bias') return { name: `${block}.conv${ci + 1}.bias`, foldBiasInto: `${block}.bn${ci + 1}` };
    return undefined;
  }
  const bi = bns.indexOf(index);
  if (bi >= 0 && leaf in BN_SUFFIX) return { name: `${block}.bn${bi + 1}.${BN_SUFFIX[leaf]!}` };
  return undefined;
}

/** zoo's name for a source tensor, or undefined when the name is not one the naming produces. */
export function mapName(name: string, naming: Naming, config: ResNetConfig): MappedName | undefined {
  switch (naming) {
    case 'timm':
    case 'torchvision':
    case 'zoo':
      return { name };
    case 'gluon-v1b': {
      const m = /^(.*)\.(gamma|beta)$/.exec(name);
      return { name: m ? `${m[1]}.${BN_SUFFIX[m[2]!]!}` : name };
    }
    case 'gluon-v1':
      return gluonV1(name, config);
  }
}

/** Guesses the naming from the tensor names (for `zoo import` without --naming). */
export function detectNaming(names: Iterable<string>): Naming | undefined {
  const list = [...names];
  if (list.some((n) => n.startsWith('features.') && n.includes('.body.'))) return 'gluon-v1';
  if (list.some((n) => n.endsWith('.gamma'))) return 'gluon-v1b';
  if (list.some((n) => n === 'fc.weight' || n.startsWith('layer1.'))) return 'timm';
  return undefined;
}
