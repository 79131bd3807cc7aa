/**
 * SGD with momentum, Nesterov's variant (NAG, paper 2.1) by default, and L2 weight decay.
 *
 * Parameter groups: with `noBiasDecay` (paper 3.1), weight decay applies to conv and fully-connected
 * weights only; biases and batch-norm gamma and beta are not regularized.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, Tensor } from '@tensorflow/tfjs-core';
import type { ParamStore } from '../models/params.js';
import { ZOO_KERNELS, hasZooKernel } from '../backend/kernels/index.js';

export interface SgdOptions {
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  /** Weight decay on conv/fc weights only (paper 3.1). */
  noBiasDecay?: boolean;
  /**
   * Use zoo's fused update kernel where the backend has it (wasm, cpu). Default true; false computes the
   * update from tfjs-core ops, as on the backends without the kernel (tfjs-node, tfjs-node-gpu).
   */
  fused?: boolean;
  /** Learning-rate multipliers by parameter name (a segmentation head's x10); 1 for the others. */
  lrScale?: ReadonlyMap<string, number>;
}

/** Which parameters get weight decay. */
export function decayedParams(params: ParamStore, noBiasDecay: boolean): Set<string> {
  const out = new Set<string>();
  for (const [name, spec] of params.specs) {
    if (spec.role === 'mean' || spec.role === 'var') continue;
    if (!noBiasDecay || spec.role === 'weight') out.add(name);
  }
  return out;
}

export class SGD {
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly noBiasDecay: boolean;
  private readonly fused: boolean;
  private readonly decayed: Set<string>;
  private readonly lrScale: ReadonlyMap<string, number>;
  /** Momentum buffers, by parameter name. */
  readonly velocity = new Map<string, tf.Tensor>();

  constructor(
    private readonly params: ParamStore,
    options: SgdOptions = {},
  ) {
    this.momentum = options.momentum ?? 0.9;
    this.nesterov = options.nesterov ?? true;
    this.weightDecay = options.weightDecay ?? 1e-4;
    this.noBiasDecay = options.noBiasDecay ?? false;
    this.fused = options.fused ?? true;
    this.decayed = decayedParams(params, this.noBiasDecay);
    this.lrScale = options.lrScale ?? new Map();
  }

  /** Applies one update with learning rate `lr`; grads by parameter name. `gradScale` multiplies them. */
  step(grads: Map<string, Tensor>, baseLr: number, gradScale = 1): void {
    const fused = this.fused && hasZooKernel(ZOO_KERNELS.sgd);
    for (const [name, variable] of this.params.trainable()) {
      const g = grads.get(name);
      if (!g) continue;
      const lr = baseLr * (this.lrScale.get(name) ?? 1);
      const wd = this.decayed.has(name) ? this.weightDecay : 0;
      const v = this.velocity.get(name) ?? tf.keep(tf.zerosLike(variable));
      const [w2, v2] = tf.tidy(() => {
        if (fused) {
          return tf.engine().runKernel(ZOO_KERNELS.sgd, { param: variable, grad: g, velocity: v }, {
            lr,
            momentum: this.momentum,
            weightDecay: wd,
            nesterov: this.nesterov,
            gradScale,
          } as unknown as NamedAttrMap) as Tensor[];
        }
        const d = tf.add(tf.mul(g, gradScale), tf.mul(variable, wd));
        const vn = tf.add(tf.mul(v, this.momentum), d);
        const step = this.nesterov ? tf.add(d, tf.mul(vn, this.momentum)) : vn;
        return [tf.sub(variable, tf.mul(step, lr)), vn];
      });
      variable.assign(w2!);
      w2!.dispose();
      v.dispose();
      this.velocity.set(name, tf.keep(v2!));
    }
    this.params.version++;
  }

  /** Drops the momentum buffers (a fresh optimizer state). */
  resetVelocity(): void {
    for (const v of this.velocity.values()) v.dispose();
    this.velocity.clear();
  }

  dispose(): void {
    this.resetVelocity();
  }
}
