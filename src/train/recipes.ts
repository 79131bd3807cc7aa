/**
 * The paper's training recipes as named sets of switches (every trick can be overridden on its own).
 *
 * baseline  (2.1) batch 256, lr 0.1, NAG, weight decay 1e-4 on everything, step decay /10 at 30-60-90
 *           of 120 epochs, float32, no warmup, no zero gamma, hard labels.
 * efficient (3)   batch 1024 with linear scaling (lr 0.4), 5 warmup epochs, zero gamma, no bias decay,
 *           FP16 (mixed precision where the backend computes in float16).
 * best      (5)   efficient + cosine decay + label smoothing 0.1 + mixup 0.2 + knowledge distillation
 *           (T = 20, teacher ResNet-152-D) + 200 epochs (mixup needs longer training).
 * Epoch counts and batch sizes are the paper's defaults; a run on a small machine overrides them
 * (the effective batch comes from gradient accumulation, and the learning rate follows it).
 */

export interface Tricks {
  /** lr = baseLr * effective batch / 256. */
  linearScaling: boolean;
  /** Linear warmup length in epochs (0: off). */
  warmupEpochs: number;
  zeroGamma: boolean;
  noBiasDecay: boolean;
  /** Mixed precision (float16 compute with float32 master weights). */
  fp16: boolean;
  /** Cosine learning-rate decay instead of step decay. */
  cosine: boolean;
  /** Label smoothing epsilon (0: off). */
  labelSmoothing: number;
  /** Mixup alpha (0: off). */
  mixup: number;
  /** Knowledge distillation (temperature; the teacher is given separately). */
  distill: boolean;
  temperature: number;
}

export interface Recipe {
  name: RecipeName;
  description: string;
  tricks: Tricks;
  batchSize: number;
  epochs: number;
  /** Learning rate for a batch of 256. */
  baseLr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
}

export const RECIPE_NAMES = ['baseline', 'efficient', 'best'] as const;
export type RecipeName = (typeof RECIPE_NAMES)[number];

const OFF: Tricks = {
  linearScaling: false,
  warmupEpochs: 0,
  zeroGamma: false,
  noBiasDecay: false,
  fp16: false,
  cosine: false,
  labelSmoothing: 0,
  mixup: 0,
  distill: false,
  temperature: 20,
};

const EFFICIENT: Tricks = { ...OFF, linearScaling: true, warmupEpochs: 5, zeroGamma: true, noBiasDecay: true, fp16: true };

export const RECIPES: Record<RecipeName, Recipe> = {
  baseline: {
    name: 'baseline',
    description: 'paper 2.1: batch 256, lr 0.1, NAG, weight decay 1e-4, step decay at 30/60/90 of 120 epochs',
    tricks: OFF,
    batchSize: 256,
    epochs: 120,
    baseLr: 0.1,
    momentum: 0.9,
    nesterov: true,
    weightDecay: 1e-4,
  },
  efficient: {
    name: 'efficient',
    description: 'paper 3: batch 1024, linear scaling, 5-epoch warmup, zero gamma, no bias decay, FP16',
    tricks: EFFICIENT,
    batchSize: 1024,
    epochs: 120,
    baseLr: 0.1,
    momentum: 0.9,
    nesterov: true,
    weightDecay: 1e-4,
  },
  best: {
    name: 'best',
    description: 'paper 5: efficient + cosine decay, label smoothing 0.1, mixup 0.2, distillation T=20, 200 epochs',
    tricks: { ...EFFICIENT, cosine: true, labelSmoothing: 0.1, mixup: 0.2, distill: true },
    batchSize: 1024,
    epochs: 200,
    baseLr: 0.1,
    momentum: 0.9,
    nesterov: true,
    weightDecay: 1e-4,
  },
};

/** A one-line summary of the switches, printed at the start of a run. */
export function describeTricks(t: Tricks): string {
  const on = (b: boolean) => (b ? 'on' : 'off');
  return [
    `linear scaling ${on(t.linearScaling)}`,
    `warmup ${t.warmupEpochs ? `${t.warmupEpochs} epoch${t.warmupEpochs === 1 ? '' : 's'}` : 'off'}`,
    `zero gamma ${on(t.zeroGamma)}`,
    `no bias decay ${on(t.noBiasDecay)}`,
    `fp16 ${on(t.fp16)}`,
    `lr decay ${t.cosine ? 'cosine' : 'step'}`,
    `label smoothing ${t.labelSmoothing || 'off'}`,
    `mixup ${t.mixup ? `alpha ${t.mixup}` : 'off'}`,
    `distillation ${t.distill ? `T=${t.temperature}` : 'off'}`,
  ].join(', ');
}

/** The share of a run past which a recipe's warmup is shortened, and the share it is shortened to. */
export const RECIPE_WARMUP_MAX_SHARE = 0.25;
export const SHORT_RUN_WARMUP_SHARE = 0.1;

/**
 * A recipe's warmup fitted to a run of `epochs`. The recipes' 5 warmup epochs are meant for the paper's
 * 120 or 200; in a run where they would take more than a quarter (longer than the whole run, or past the
 * step schedule's first decay at a quarter, where the rate would fall tenfold the moment warmup ends), they
 * are shortened to a tenth of the run, about the share that the small-scale ablation (docs/ablation.md: 1
 * of 10 epochs) found to rescue linear scaling. Returns the warmup in epochs and, when shortened, a note
 * saying to what and why. A warmup the user gave is not passed here: `validateConfig` refuses it instead.
 */
export function fitRecipeWarmup(options: {
  recipe: RecipeName;
  warmupEpochs: number;
  epochs: number;
  updatesPerEpoch: number;
  cosine: boolean;
}): { warmupEpochs: number; note?: string } {
  const { recipe, warmupEpochs, epochs, updatesPerEpoch, cosine } = options;
  if (warmupEpochs <= RECIPE_WARMUP_MAX_SHARE * epochs) return { warmupEpochs };
  const fitted = Math.round(SHORT_RUN_WARMUP_SHARE * epochs * 1000) / 1000;
  const updates = Math.round(updatesPerEpoch * fitted);
  const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'}`;
  const why =
    warmupEpochs > epochs
      ? `is longer than this ${epochs}-epoch run`
      : cosine
        ? `would take more than a quarter of this ${epochs}-epoch run`
        : `reaches past the first step decay (epoch ${RECIPE_WARMUP_MAX_SHARE * epochs} of ${epochs})`;
  return {
    warmupEpochs: fitted,
    note:
      `the ${recipe} recipe's ${warmupEpochs}-epoch warmup ${why}: shortened to a tenth of the run, ` +
      `${plural(fitted, 'epoch')} (${plural(updates, 'update')}); give --warmup N or --no-warmup to choose`,
  };
}
