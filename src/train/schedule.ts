/**
 * Learning-rate schedules of the paper, per iteration (one optimizer update).
 *
 * - Linear scaling (paper 3.1): lr = 0.1 x b / 256 for a (effective) batch of b.
 * - Warmup (3.1): over the first m iterations, lr_i = i * lr / m (i = 1..m), reaching lr at the end.
 * - Step decay (2.1, the baseline): divided by 10 at 30, 60 and 90 of 120 epochs, i.e. at a quarter,
 *   half and three quarters of the run for other lengths.
 * - Cosine decay (5.1): lr_t = 0.5 (1 + cos(pi t / T)) lr, with t and T counted after warmup.
 * - Poly decay (the FCN's, paper 6.2 and GluonCV's segmentation training): lr_t = lr (1 - t / T)^power,
 *   power 0.9, t and T counted after warmup.
 */

export interface ScheduleOptions {
  /** Learning rate for a batch of 256 (0.1 in the paper). */
  baseLr: number;
  /** Effective batch size (all micro-batches of one update). */
  batch: number;
  /** Scale the rate by batch / 256. Without it the rate is baseLr whatever the batch. */
  linearScaling: boolean;
  /** Updates per epoch. */
  itersPerEpoch: number;
  epochs: number;
  /** Warmup length in epochs (0: none). */
  warmupEpochs: number;
  decay: 'step' | 'cosine' | 'poly';
  /** Exponent of poly decay (default 0.9). */
  power?: number;
  /** Fractions of the run at which step decay divides by `stepFactor` (default 0.25, 0.5, 0.75). */
  steps?: number[];
  stepFactor?: number;
}

export class LrSchedule {
  readonly peak: number;
  readonly total: number;
  readonly warmup: number;

  constructor(private readonly o: ScheduleOptions) {
    if (!(o.baseLr > 0)) throw new Error(`learning rate must be positive, got ${o.baseLr}`);
    this.peak = o.linearScaling ? (o.baseLr * o.batch) / 256 : o.baseLr;
    this.total = o.itersPerEpoch * o.epochs;
    this.warmup = Math.min(Math.round(o.itersPerEpoch * o.warmupEpochs), this.total);
  }

  /** Learning rate of update `iter` (0-based: the first update is 0). */
  at(iter: number): number {
    const i = iter + 1; // warmup counts updates from 1 (the paper's lr_i = i * lr / m)
    if (i <= this.warmup) return (i * this.peak) / this.warmup;
    const t = iter - this.warmup; // updates after warmup, from 0
    const T = Math.max(this.total - this.warmup, 1);
    if (this.o.decay === 'cosine') return 0.5 * (1 + Math.cos((Math.PI * t) / T)) * this.peak;
    if (this.o.decay === 'poly') return this.peak * Math.pow(Math.max(0, 1 - t / T), this.o.power ?? 0.9);
    const steps = this.o.steps ?? [0.25, 0.5, 0.75];
    const factor = this.o.stepFactor ?? 0.1;
    const epoch = iter / this.o.itersPerEpoch;
    let lr = this.peak;
    for (const s of steps) if (epoch >= s * this.o.epochs) lr *= factor;
    return lr;
  }
}
