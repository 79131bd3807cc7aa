/**
 * The one run loop every task trains with (classification in trainer.ts, detection in
 * src/detection/train.ts): epochs of updates, each the sum of `accumulate` micro-batch gradients,
 * progress events, log.jsonl, atomic checkpoints (at epoch ends, every `checkpointMinutes`, on a stop),
 * exact resume from a checkpoint's position, Ctrl-C (an AbortSignal) and a recomputation of a micro-batch
 * whose loss was not finite once (a transient fault) before a non-finite loss stops the run.
 *
 * An epoch's updates are checkpointed before its evaluation (the state says the evaluation is still to
 * come), and the evaluation gets the stop signal: a Ctrl-C during validation stops after the image or
 * batch in progress (where the task's evaluation takes the signal), and a second one, which quits at
 * once, loses only the evaluation; a resumed run evaluates that epoch first.
 *
 * A task supplies what differs: its micro-batches, the loss and gradients of one, and its evaluation at
 * the end of an epoch. The loop owns the order of things and what is on disk.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensorMap, Tensor } from '@tensorflow/tfjs-core';
import { existsSync, readFileSync, statSync } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { RUN_FILES } from './run_config.js';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { ParamStore } from '../models/params.js';
import { loadCheckpoint, saveCheckpoint, type CheckpointState, type Checkpointable } from './checkpoint.js';
import type { LrSchedule } from './schedule.js';
import type { SGD } from './optim.js';

/** A non-finite loss or a broken configuration stops the run with this error. */
export class TrainingError extends UserError {}

/** Checks an option that must be a whole number of at least `min` (a usage error naming the flag). */
export function checkInteger(v: number, name: string, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new UserError(`${name} must be an integer >= ${min}, got ${v}`, { exitCode: 2 });
}

/** The options every task's run has, checked with the flags' names: epochs, batches, SGD. */
export function checkRunOptions(c: { epochs: number; batchSize: number; microBatch: number; lr: number; momentum: number; weightDecay: number }): void {
  checkInteger(c.epochs, '--epochs');
  checkInteger(c.batchSize, '--batch-size');
  checkInteger(c.microBatch, '--micro-batch');
  if (c.batchSize % c.microBatch !== 0) {
    throw new UserError(`--batch-size ${c.batchSize} must be a multiple of --micro-batch ${c.microBatch} (the effective batch is made of whole micro-batches)`, {
      exitCode: 2,
    });
  }
  if (!(c.lr > 0)) throw new UserError(`--lr must be positive, got ${c.lr}`, { exitCode: 2 });
  if (!(c.momentum >= 0 && c.momentum < 1)) throw new UserError(`--momentum must be in [0, 1), got ${c.momentum}`, { exitCode: 2 });
  if (!(c.weightDecay >= 0)) throw new UserError(`--weight-decay must be >= 0, got ${c.weightDecay}`, { exitCode: 2 });
}

/** Optimizer updates in one epoch of `samples`: whole effective batches of whole micro-batches. */
export function updatesIn(samples: number, batchSize: number, microBatch: number): number {
  return Math.floor(Math.floor(samples / microBatch) / (batchSize / microBatch));
}

/** The fields every epoch record has; a task adds its evaluation's. */
export interface LoopRecord {
  epoch: number;
  /** Mean training loss over the epoch. */
  loss: number;
  /** Learning rate of the epoch's last update. */
  lr: number;
  updates: number;
  images: number;
  /** Wall time of the epoch's training (data + steps) and of its validation. */
  trainSeconds: number;
  valSeconds: number;
  imagesPerSecond: number;
  /** Share of the training time spent waiting for the data. */
  dataWait: number;
  /** Micro-batches recomputed so far in the run after a non-finite loss that did not recur. */
  recomputed?: number;
  /** Mean of each loss term over the epoch (tasks whose loss has several). */
  terms?: Record<string, number>;
}

/** What every task's training run takes besides its configuration and data (TrainOptions, DetTrainOptions). */
export interface RunControlOptions {
  /** The run directory (created if needed). */
  outDir: string;
  /** Continue the run in outDir from its checkpoint. */
  resume?: boolean;
  /** Also checkpoint every this many minutes within an epoch (default 10; 0: only at epoch ends). */
  checkpointMinutes?: number;
  /** Also checkpoint every this many updates (tests). */
  checkpointEvery?: number;
  /** Stop (with a checkpoint) when this signal aborts, after the update in progress (or within validation). */
  signal?: AbortSignal;
  /** Stop (with a checkpoint) after this many updates of the run (counted from its start). */
  stopAfter?: number;
  /** Export model.onnx at the end (default true). */
  export?: boolean;
  /** Check the image files before the first update (default true; what is checked is the task's). */
  checkData?: boolean;
}

/** The loop's share of a task's run-control options (resume, checkpoint cadence, stop), only those given. */
export function loopControl(o: RunControlOptions): Pick<LoopOptions<never>, 'resume' | 'checkpointMinutes' | 'checkpointEvery' | 'signal' | 'stopAfter'> {
  return {
    ...(o.resume ? { resume: true } : {}),
    ...(o.checkpointMinutes !== undefined ? { checkpointMinutes: o.checkpointMinutes } : {}),
    ...(o.checkpointEvery !== undefined ? { checkpointEvery: o.checkpointEvery } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.stopAfter !== undefined ? { stopAfter: o.stopAfter } : {}),
  };
}

/**
 * The micro-batches `skip` .. `count - 1` of an epoch, loaded one ahead: the next one decodes (in sharp's
 * threads) while the model computes on the current one.
 */
export function prefetchBatches<B>(count: number, skip: number, load: (index: number) => Promise<B>): AsyncIterator<B> {
  let next = skip;
  const start = (): Promise<B> | undefined => {
    if (next >= count) return undefined;
    const p = load(next);
    p.catch(() => {}); // surfaced when awaited; a stopped run never awaits it
    return p;
  };
  let ahead = start();
  return {
    async next(): Promise<IteratorResult<B>> {
      if (!ahead) return { done: true, value: undefined };
      const current = ahead;
      next++;
      ahead = start();
      return { done: false, value: await current };
    },
    async return(): Promise<IteratorResult<B>> {
      ahead = undefined;
      return { done: true, value: undefined };
    },
  };
}

/**
 * The fields of two task configurations that differ (for --resume), as "field: run value -> given value".
 * The data is compared by what identifies it (counts, split files, digests of the sample ids), not by
 * where it is: `data.spec`, its directory, may move between a run and its resume. A data field the run did
 * not record (written by an older zoo) is not compared.
 */
export function taskConfigDiffs(saved: unknown, c: object): string[] {
  const out: string[] = [];
  const s = (saved ?? {}) as Record<string, unknown>;
  const differ = (k: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) out.push(`${k}: ${JSON.stringify(a)} in the run, ${JSON.stringify(b)} given`);
  };
  for (const [k, v] of Object.entries(c)) {
    const runData = s[k];
    if (k === 'data' && v && typeof v === 'object' && runData && typeof runData === 'object') {
      const d = runData as Record<string, unknown>;
      const given = v as Record<string, unknown>;
      for (const dk of new Set([...Object.keys(given), ...Object.keys(d)])) if (dk !== 'spec' && dk in d) differ(`data.${dk}`, d[dk], given[dk]);
      continue;
    }
    differ(k, runData, v);
  }
  return out;
}

/**
 * On a resume whose data has moved (taskConfigDiffs does not compare `data.spec`), records the data's new
 * location in run.json, so that the next resume finds it without --data.
 */
export async function recordDataLocation(file: string, spec: string): Promise<void> {
  const c = JSON.parse(await fsp.readFile(file, 'utf8')) as { data?: { spec?: unknown } };
  if (!c.data || typeof c.data !== 'object' || c.data.spec === spec) return;
  await writeFileAtomic(file, `${JSON.stringify({ ...c, data: { ...c.data, spec } }, null, 2)}\n`);
}

/**
 * A task's run.json: read, parsed and checked to be of `task` (with an arch and a class list), else a
 * UserError saying what the file is not.
 */
export async function readTaskRunConfig<C>(file: string, task: string): Promise<C> {
  let raw: string;
  try {
    raw = await fsp.readFile(file, 'utf8');
  } catch (e) {
    throw new UserError(`${file} cannot be read (${(e as Error).message}): not a ${task} run directory`, { cause: e });
  }
  let c: unknown;
  try {
    c = JSON.parse(raw);
  } catch (e) {
    throw new UserError(`${file} is not JSON (${(e as Error).message}); restore it or start a new run`, { cause: e });
  }
  const r = c as { task?: unknown; arch?: unknown; classes?: unknown } | null;
  if (!r || typeof r !== 'object' || r.task !== task || typeof r.arch !== 'string' || !Array.isArray(r.classes)) {
    throw new UserError(`${file} is not a ${task} run's configuration (task '${task}', arch, classes)`);
  }
  return r as C;
}

/** Why a loss was not finite, for a task's `diagnose`: the batch's inputs, else the parameters, else the forward pass. */
export async function diagnoseNonFinite(inputs: Float32Array, params: ParamStore): Promise<string> {
  for (let i = 0; i < inputs.length; i++) if (!Number.isFinite(inputs[i]!)) return 'the input batch holds non-finite values (a data problem)';
  const values = await params.read();
  const bad = [...params.specs.keys()].filter((n) => values.get(n)!.some((v) => !Number.isFinite(v)));
  if (bad.length) return `${bad.length} parameter tensors hold non-finite values (first: ${bad.slice(0, 3).join(', ')}): the previous updates diverged`;
  return 'inputs and parameters are finite, so the forward pass overflowed (the learning rate is probably too high)';
}

/** One micro-batch's result. */
export interface MicroStep {
  loss: number;
  /** Gradients keyed by the tfjs variables' names (what tf.variableGrads returns). */
  grads: NamedTensorMap;
  /** The loss's terms, for progress and the log. */
  terms?: Record<string, number>;
}

export interface LoopTask<B> {
  /** The micro-batches of `epoch`, the first `skip` left out (a resumed epoch). */
  batches(epoch: number, skip: number): AsyncIterator<B>;
  /** Images in a micro-batch. */
  count(batch: B): number;
  /** Loss and gradients of a micro-batch within update `update` (0-based, of the run). */
  step(batch: B, update: number): Promise<MicroStep>;
  /** Why a loss was not finite, as far as can be told cheaply. */
  diagnose(batch: B): Promise<string>;
  /**
   * The end-of-epoch evaluation: fields for the record (and its wall time). When `signal` aborts it may
   * stop between images or batches by throwing (signal.throwIfAborted()); the run then stops with the
   * epoch's updates checkpointed and evaluates the epoch again when resumed.
   */
  evaluate(epoch: number, signal?: AbortSignal): Promise<{ fields: Record<string, number>; seconds: number }>;
  /** Closes the data (worker threads...). */
  close?(): Promise<void>;
}

export type LoopEvent<R> =
  | { type: 'notice'; message: string }
  | { type: 'progress'; epoch: number; epochs: number; update: number; itersPerEpoch: number; batchSize: number; loss: number; lr: number; imagesPerSecond: number; terms?: Record<string, number> }
  | { type: 'epoch'; record: R; epochs: number }
  | { type: 'checkpoint'; path: string; globalUpdate: number }
  | { type: 'stopped'; reason: string; checkpoint: string };

export interface LoopOptions<R> {
  model: Checkpointable;
  optimizer: SGD;
  /** The variables updated; everything else stays as it is. */
  trainable: [string, tf.Variable][];
  schedule: LrSchedule;
  epochs: number;
  itersPerEpoch: number;
  /** Micro-batches per update. */
  accumulate: number;
  /** Images per update (for progress and the record). */
  batchSize: number;
  files: { log: string; checkpoint: string };
  /** The log's records so far (a resumed run's); the loop appends and rewrites the file. */
  records: R[];
  resume?: boolean;
  /** How to continue this run, for messages ("zoo train --out DIR --resume"). */
  resumeCommand: string;
  checkpointMinutes?: number;
  checkpointEvery?: number;
  signal?: AbortSignal;
  stopAfter?: number;
  /** Called with the position the run starts from (after a resume, the checkpoint's). */
  onStart?: (state: CheckpointState) => void;
  onEvent?: (e: LoopEvent<R>) => void;
  /** The record of an epoch from the loop's fields and the task's evaluation. */
  record: (base: LoopRecord, fields: Record<string, number>) => R;
}

export interface LoopResult<R> {
  finished: boolean;
  records: R[];
  globalUpdate: number;
}

/** The position of a run, saved in its checkpoint. */
interface RunState extends CheckpointState {
  /** Sum and count of update losses so far in the epoch (for its mean). */
  lossSum: number;
  lossCount: number;
  /** Sums of the loss terms so far in the epoch. */
  termSums?: Record<string, number>;
  /** Training time and data-wait time so far in the epoch. */
  trainSeconds: number;
  waitSeconds: number;
  /** Micro-batches whose non-finite loss did not recur when computed again (transient faults). */
  recomputed?: number;
  /**
   * The epoch's updates are done (updateInEpoch is the epoch's count) and its evaluation, record and log
   * line are still to come: the checkpoint written before the evaluation.
   */
  evaluating?: true;
}

/** Where a resumed run starts, for a printer's line. */
export function resumingLine(s: CheckpointState, itersPerEpoch: number): string {
  if ((s as RunState).evaluating) return `resuming after the ${itersPerEpoch} updates of epoch ${s.epoch + 1} (update ${s.globalUpdate} of the run): its validation first`;
  return `resuming at epoch ${s.epoch + 1}, update ${s.updateInEpoch} of ${itersPerEpoch} (update ${s.globalUpdate} of the run)`;
}

/** Whether `e`, thrown while `signal` is aborted, is that stop (signal.throwIfAborted(), an AbortError). */
export function isStop(e: unknown, signal: AbortSignal | undefined): boolean {
  if (!signal?.aborted) return false;
  return e === signal.reason || (e instanceof Error && e.name === 'AbortError');
}

/** The records of a log.jsonl (none if the file does not exist); a malformed line is an error naming it. */
export function readEpochLog<R extends { epoch: number; loss: number }>(file: string): R[] {
  if (!existsSync(file)) return [];
  if (!statSync(file).isFile()) throw new UserError(`${file} is not a regular file (not a training log)`);
  const out: R[] = [];
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (!line.trim()) return;
      let r: unknown;
      try {
        r = JSON.parse(line);
      } catch {
        throw new UserError(`${file}:${i + 1}: not a JSON record`);
      }
      const rec = r as R | null;
      if (typeof rec !== 'object' || rec === null || typeof rec.epoch !== 'number' || typeof rec.loss !== 'number') {
        throw new UserError(`${file}:${i + 1}: not an epoch record (an object with numbers 'epoch' and 'loss')`);
      }
      out.push(rec);
    });
  return out;
}

export async function writeEpochLog(file: string, records: readonly object[]): Promise<void> {
  await writeFileAtomic(file, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
}

/** The files of a run directory (RUN_FILES under `out`). */
export function runFiles(out: string): { config: string; log: string; checkpoint: string; onnx: string } {
  return {
    config: path.join(out, RUN_FILES.config),
    log: path.join(out, RUN_FILES.log),
    checkpoint: path.join(out, RUN_FILES.checkpoint),
    onnx: path.join(out, RUN_FILES.onnx),
  };
}

/**
 * Opens a run directory for a fresh run or a resume: a fresh run refuses a directory that holds a
 * checkpoint; a resume needs one, and options that differ from run.json (`diffs()`, as "flag: run value,
 * given value") are refused, saying how to resume. Returns the log's records so far.
 */
export async function openRunDir<R extends { epoch: number; loss: number }>(
  out: string,
  o: { resume?: boolean; diffs: () => string[] | Promise<string[]>; resumeCommand: string },
): Promise<R[]> {
  const files = runFiles(out);
  // The checkpoint is what makes a run resumable: a log without one (killed between the first epoch's
  // log and its checkpoint) is an unrecoverable start, which a fresh run replaces.
  if (!o.resume && existsSync(files.checkpoint)) {
    throw new UserError(`${out} already holds a run (${RUN_FILES.checkpoint}): pass --resume to continue it, or choose another --out`, { exitCode: 2 });
  }
  if (!o.resume) return [];
  if (!existsSync(files.checkpoint)) throw new UserError(`--resume: ${files.checkpoint} does not exist (nothing to resume in ${out})`, { exitCode: 2 });
  const diffs = await o.diffs();
  if (diffs.length) {
    throw new UserError(
      `--resume: the options differ from the run in ${out} (${RUN_FILES.config}): ${diffs.join('; ')}. ` +
        `A resumed run uses the run's own options: leave these out (${o.resumeCommand} reads them all)`,
      { exitCode: 2 },
    );
  }
  return readEpochLog<R>(files.log);
}

/** A checkpoint's run state, checked against the run it continues (a UserError naming the file). */
function runState(saved: CheckpointState, epochs: number, iters: number, file: string): RunState {
  const int = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const num = (v: unknown) => v === undefined || (typeof v === 'number' && Number.isFinite(v));
  const s = saved as Partial<RunState>;
  const where = `epoch ${String(s.epoch)} update ${String(s.updateInEpoch)}, ${String(s.globalUpdate)} updates done`;
  const terms = s.termSums === undefined || (typeof s.termSums === 'object' && s.termSums !== null && Object.values(s.termSums).every((v) => typeof v === 'number'));
  if (!int(s.epoch) || !int(s.updateInEpoch) || !int(s.globalUpdate) || ![s.lossSum, s.lossCount, s.trainSeconds, s.waitSeconds, s.recomputed].every(num) || !terms || (s.evaluating !== undefined && s.evaluating !== true)) {
    throw new UserError(`${file}: its run state is not a zoo checkpoint's (${where}); restore the file or start a new run`);
  }
  const pos = s.epoch! * iters + s.updateInEpoch!;
  // Before an evaluation the position is the epoch's end (its last update done); otherwise within it.
  const inEpoch = s.evaluating ? s.updateInEpoch === iters && s.epoch! < epochs : s.updateInEpoch! < Math.max(iters, 1);
  if (s.epoch! > epochs || !inEpoch || s.globalUpdate !== pos || (s.epoch === epochs && s.updateInEpoch !== 0)) {
    throw new UserError(`${file}: its position (${where}) does not fit this run of ${epochs} epochs of ${iters} updates; restore the file or start a new run`);
  }
  return { lossSum: 0, lossCount: 0, trainSeconds: 0, waitSeconds: 0, ...s } as RunState;
}

/** What a transfer task's 'start' event reports, beside its configuration. */
export interface TaskStartFields {
  /** Trainable parameters of the model, and of those the ones this run updates. */
  params: number;
  trainable: number;
  itersPerEpoch: number;
  totalUpdates: number;
  peakLr: number;
  warmupUpdates: number;
  resumed?: CheckpointState;
}

/**
 * The run loop as a transfer task (detection, segmentation) drives it: the run's sizes from its
 * configuration, the run-control options forwarded, and the 'start' fields computed once for every task.
 */
export function runTaskLoop<B, R extends LoopRecord>(o: {
  task: LoopTask<B>;
  config: { epochs: number; batchSize: number; microBatch: number };
  model: Checkpointable;
  optimizer: SGD;
  trainable: [string, tf.Variable][];
  schedule: LrSchedule;
  itersPerEpoch: number;
  files: { log: string; checkpoint: string };
  records: R[];
  control: RunControlOptions;
  resumeCommand: string;
  onStart: (fields: TaskStartFields) => void;
  onEvent: (e: LoopEvent<R>) => void;
  record: (base: LoopRecord, fields: Record<string, number>) => R;
}): Promise<LoopResult<R>> {
  const { config: c, schedule } = o;
  return runLoop(o.task, {
    model: o.model,
    optimizer: o.optimizer,
    trainable: o.trainable,
    schedule,
    epochs: c.epochs,
    itersPerEpoch: o.itersPerEpoch,
    accumulate: c.batchSize / c.microBatch,
    batchSize: c.batchSize,
    files: o.files,
    records: o.records,
    ...loopControl(o.control),
    resumeCommand: o.resumeCommand,
    onStart: (state) =>
      o.onStart({
        params: o.model.params.countTrainable(),
        trainable: o.trainable.reduce((a, [, v]) => a + v.size, 0),
        itersPerEpoch: o.itersPerEpoch,
        totalUpdates: schedule.total,
        peakLr: schedule.peak,
        warmupUpdates: schedule.warmup,
        ...(o.control.resume ? { resumed: state } : {}),
      }),
    onEvent: o.onEvent,
    record: o.record,
  });
}

/** Runs (or continues) the epochs of a run. The caller creates and disposes the model and the optimizer. */
export async function runLoop<B, R extends LoopRecord>(task: LoopTask<B>, o: LoopOptions<R>): Promise<LoopResult<R>> {
  try {
    return await epochs(task, o);
  } finally {
    await task.close?.();
  }
}

async function epochs<B, R extends LoopRecord>(task: LoopTask<B>, o: LoopOptions<R>): Promise<LoopResult<R>> {
  const emit = o.onEvent ?? (() => {});
  const { schedule, itersPerEpoch, accumulate, files } = o;
  let records = o.records;
  let state: RunState = { epoch: 0, updateInEpoch: 0, globalUpdate: 0, lossSum: 0, lossCount: 0, trainSeconds: 0, waitSeconds: 0 };
  if (o.resume) {
    state = runState(await loadCheckpoint(files.checkpoint, o.model, o.optimizer), o.epochs, itersPerEpoch, files.checkpoint);
    // Epochs after the checkpoint's position may have been logged before the run was killed.
    records = records.filter((r) => r.epoch <= state.epoch);
  }
  await writeEpochLog(files.log, records);
  o.onStart?.(state);

  const startUpdate = state.globalUpdate;
  let lastCheckpoint = performance.now();
  const checkpointMs = (o.checkpointMinutes ?? 10) * 60_000;
  const params: ParamStore = o.model.params;
  const stats = [...params.specs].filter(([, sp]) => sp.role === 'mean' || sp.role === 'var').map(([name]) => params.get(name));
  const disposeGrads = (g: NamedTensorMap) => tf.dispose(Object.values(g));
  let lastSaved = o.resume ? state.globalUpdate : 0;
  // `quiet`: the checkpoint before an evaluation, which the 'checkpoint' event after it (the epoch's) reports.
  const save = async (quiet = false) => {
    await saveCheckpoint(files.checkpoint, o.model, o.optimizer, state);
    lastSaved = state.globalUpdate;
    lastCheckpoint = performance.now();
    if (!quiet) emit({ type: 'checkpoint', path: files.checkpoint, globalUpdate: state.globalUpdate });
  };
  // What a run that stops on an error leaves: the checkpoint of the last save, untouched since.
  const intact = () =>
    lastSaved || o.resume ? `its last checkpoint (${files.checkpoint}, update ${lastSaved}) is intact` : 'no checkpoint had been written yet';
  /** A data error (an image that cannot be decoded, an annotation that does not fit) as a one-line stop of the run. */
  const dataStop = (e: unknown, where: string): unknown => {
    if (!(e instanceof UserError) || e instanceof TrainingError) return e;
    const next = lastSaved || o.resume ? `continue with: ${o.resumeCommand}` : 'start the run again';
    return new TrainingError(`${e.message.replace(/\.$/, '')} (${where}). The run stopped; ${intact()}: fix or replace the file and ${next}`, { cause: e });
  };
  const stopRequested = (): string | undefined => {
    if (o.signal?.aborted) return 'interrupted';
    if (o.stopAfter !== undefined && state.globalUpdate - startUpdate >= o.stopAfter) return `stopped after ${o.stopAfter} updates`;
    return undefined;
  };

  for (let epoch = state.epoch; epoch < o.epochs; epoch++) {
    // A run resumed from the checkpoint before an evaluation has the epoch's updates done: it evaluates first.
    if (!state.evaluating) {
      const it = task.batches(epoch, state.updateInEpoch * accumulate);
      const rateStart = performance.now();
      let ratedImages = 0;
      while (state.updateInEpoch < itersPerEpoch) {
        // Let signal handlers and timers run: every await below may resolve without reaching the event loop.
        await new Promise((resolve) => setImmediate(resolve));
        const reason = stopRequested();
        if (reason) {
          await it.return?.(undefined);
          await save();
          emit({ type: 'stopped', reason, checkpoint: files.checkpoint });
          return { finished: false, records, globalUpdate: state.globalUpdate };
        }
        const u = state.globalUpdate;
        const lr = schedule.at(u);
        const updateStart = performance.now();
        let wait = 0;
        let acc: Map<string, Tensor> | undefined;
        let updateLoss = 0;
        const updateTerms: Record<string, number> = {};
        try {
          for (let micro = 0; micro < accumulate; micro++) {
            const w0 = performance.now();
            let next: IteratorResult<B>;
            try {
              next = await it.next();
            } catch (e) {
              throw dataStop(e, `epoch ${epoch + 1}, update ${state.updateInEpoch + 1} of ${itersPerEpoch}`);
            }
            wait += performance.now() - w0;
            if (next.done) throw new Error(`the data ended early in epoch ${epoch}`);
            const batch = next.value;
            // Batch norm's running statistics change in a training-mode forward pass; keep the
            // values from before it so that a recomputation starts from the same state.
            const statsBefore = stats.map((v) => tf.clone(v));
            let step: MicroStep;
            try {
              step = await task.step(batch, u);
              if (!Number.isFinite(step.loss)) {
                // A diverging run gives the same non-finite loss again; anything else was a transient fault.
                disposeGrads(step.grads);
                stats.forEach((v, k) => v.assign(statsBefore[k]!));
                step = await task.step(batch, u);
                if (Number.isFinite(step.loss)) {
                  state.recomputed = (state.recomputed ?? 0) + 1;
                  emit({ type: 'notice', message: `update ${u + 1}: a non-finite loss did not recur when the micro-batch was computed again (loss ${step.loss.toFixed(4)}); continuing` });
                }
              }
            } finally {
              tf.dispose(statsBefore);
            }
            const { loss, grads } = step;
            if (!Number.isFinite(loss)) {
              disposeGrads(grads);
              const why = await task.diagnose(batch);
              throw new TrainingError(
                `the loss became ${loss} at update ${u + 1} (epoch ${epoch + 1}, update ${state.updateInEpoch + 1} of ${itersPerEpoch}, ` +
                  `learning rate ${lr.toPrecision(3)}): ${why}. The run stopped; ${intact()}. ` +
                  'Lower --lr, lengthen --warmup, or check the data.',
              );
            }
            if (!acc) acc = new Map(o.trainable.map(([name, v]) => [name, grads[v.name]!]));
            else {
              for (const [name, v] of o.trainable) {
                const sum = tf.add(acc.get(name)!, grads[v.name]!);
                acc.get(name)!.dispose();
                grads[v.name]!.dispose();
                acc.set(name, sum);
              }
            }
            updateLoss += loss / accumulate;
            for (const [k, v] of Object.entries(step.terms ?? {})) updateTerms[k] = (updateTerms[k] ?? 0) + v / accumulate;
            ratedImages += task.count(batch);
          }
          o.optimizer.step(acc!, lr, 1 / accumulate);
        } finally {
          if (acc) for (const g of acc.values()) g.dispose();
        }
        state.globalUpdate++;
        state.updateInEpoch++;
        state.lossSum += updateLoss;
        state.lossCount += 1;
        if (Object.keys(updateTerms).length) {
          const sums = { ...(state.termSums ?? {}) };
          for (const [k, v] of Object.entries(updateTerms)) sums[k] = (sums[k] ?? 0) + v;
          state.termSums = sums;
        }
        state.waitSeconds += wait / 1000;
        const now = performance.now();
        state.trainSeconds += (now - updateStart) / 1000;
        const rate = (ratedImages * 1000) / Math.max(now - rateStart, 1);
        const terms = meanTerms(state);
        emit({
          type: 'progress',
          epoch,
          epochs: o.epochs,
          update: state.updateInEpoch,
          itersPerEpoch,
          batchSize: o.batchSize,
          loss: state.lossSum / state.lossCount,
          lr,
          imagesPerSecond: rate,
          ...(terms ? { terms } : {}),
        });
        const dueByCount = o.checkpointEvery !== undefined && state.globalUpdate % o.checkpointEvery === 0;
        const dueByTime = checkpointMs > 0 && now - lastCheckpoint > checkpointMs;
        if ((dueByCount || dueByTime) && state.updateInEpoch < itersPerEpoch) await save();
      }
      await it.return?.(undefined);
      // The epoch's updates, kept before its evaluation (which a stop or a crash may cut short).
      state.evaluating = true;
      await save(true);
    }

    // End of epoch: evaluate, log, checkpoint at the start of the next epoch.
    const stoppedInValidation = () => {
      emit({ type: 'stopped', reason: 'interrupted', checkpoint: files.checkpoint });
      return { finished: false, records, globalUpdate: state.globalUpdate };
    };
    await new Promise((resolve) => setImmediate(resolve));
    if (o.signal?.aborted) return stoppedInValidation();
    let val: { fields: Record<string, number>; seconds: number };
    try {
      val = await task.evaluate(epoch, o.signal);
    } catch (e) {
      if (isStop(e, o.signal)) return stoppedInValidation();
      throw dataStop(e, `validation after epoch ${epoch + 1}`);
    }
    const trainSeconds = state.trainSeconds;
    const terms = meanTerms(state);
    const base: LoopRecord = {
      epoch: epoch + 1,
      loss: state.lossSum / Math.max(state.lossCount, 1),
      lr: schedule.at(state.globalUpdate - 1),
      updates: state.globalUpdate,
      images: itersPerEpoch * o.batchSize,
      trainSeconds,
      valSeconds: val.seconds,
      imagesPerSecond: (itersPerEpoch * o.batchSize) / Math.max(trainSeconds, 1e-9),
      dataWait: state.waitSeconds / Math.max(trainSeconds, 1e-9),
      ...(state.recomputed ? { recomputed: state.recomputed } : {}),
      ...(terms ? { terms } : {}),
    };
    const record = o.record(base, val.fields);
    records.push(record);
    await writeEpochLog(files.log, records);
    emit({ type: 'epoch', record, epochs: o.epochs });
    const { termSums: _dropped, evaluating: _done, ...rest } = state;
    state = { ...rest, epoch: epoch + 1, updateInEpoch: 0, lossSum: 0, lossCount: 0, trainSeconds: 0, waitSeconds: 0 };
    await save();
  }
  return { finished: true, records, globalUpdate: state.globalUpdate };
}

function meanTerms(state: RunState): Record<string, number> | undefined {
  if (!state.termSums) return undefined;
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(state.termSums)) out[k] = v / Math.max(state.lossCount, 1);
  return out;
}
