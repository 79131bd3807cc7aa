/**
 * What a training run shows while it works: on a terminal one redrawn line per epoch with a bar, the
 * running loss, the learning rate, images/s and the time left; otherwise (logs, CI) a plain line every
 * quarter of an epoch or 30 seconds. Epoch summaries, checkpoints and notices are whole lines either way.
 */
import path from 'node:path';
import type { ProgressStream } from '../hub/cache.js';
import { describeTricks } from './recipes.js';
import { resumingLine } from './loop.js';
import type { TrainEvent } from './trainer.js';
import { formatDuration } from '../util/format.js';

export { formatDuration };

const REDRAW_MS = 200;
const PLAIN_EVERY_MS = 30_000;
/** Without a terminal, the check of image files is announced from this many files on (it takes a while). */
const PLAIN_CHECK_FROM = 2000;

const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
/** Images per second: whole numbers from 10 on, two significant digits below (a detector's 0.4 img/s). */
const rate = (v: number) => (v >= 10 ? v.toFixed(0) : v.toPrecision(2));

/** An `onEvent` for `train()` that draws progress on `stream`. */
export function trainingPrinter(stream: ProgressStream = process.stderr, clock: () => number = () => performance.now()): (e: TrainEvent) => void {
  let open = false;
  let lastDraw = -Infinity;
  let lastPlainQuarter = -1;
  let lastPlainTime = clock();
  const line = (text: string) => {
    if (open) stream.write('\n');
    open = false;
    stream.write(`${text}\n`);
  };
  return (e) => {
    switch (e.type) {
      case 'start': {
        const c = e.config;
        line(`training ${c.arch} (${(e.params / 1e6).toFixed(2)} M parameters) on ${c.data.spec}: ${c.data.train} train / ${c.data.val} val images, ${c.data.classes.length} classes`);
        line(`recipe ${c.recipe}: ${describeTricks(c.tricks)}`);
        const accumulate = c.batchSize / c.microBatch;
        line(
          `batch ${c.batchSize}${accumulate > 1 ? ` (${accumulate} x ${c.microBatch}, gradients accumulated)` : ''}, ${e.itersPerEpoch} updates per epoch, ` +
            `${c.epochs} epochs, peak lr ${e.peakLr.toPrecision(3)}${e.warmupUpdates ? ` after ${e.warmupUpdates} warmup updates` : ''}, ` +
            `image ${c.imageSize}x${c.imageSize}, seed ${c.seed}${c.teacher ? `, teacher ${c.teacher}` : ''}`,
        );
        if (e.resumed) line(resumingLine(e.resumed, e.itersPerEpoch));
        break;
      }
      case 'notice':
        line(`note: ${e.message}`);
        break;
      case 'progress': {
        const now = clock();
        const frac = e.update / e.itersPerEpoch;
        const left = e.imagesPerSecond > 0 ? ((e.itersPerEpoch - e.update) * e.batchSize) / e.imagesPerSecond : NaN;
        const terms = e.terms ? ` (${Object.entries(e.terms).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(' ')})` : '';
        const stats = `loss ${e.loss.toFixed(4)}${terms} lr ${e.lr.toPrecision(3)} ${rate(e.imagesPerSecond)} img/s ETA ${formatDuration(left)}`;
        const head = `epoch ${e.epoch + 1}/${e.epochs}`;
        if (stream.isTTY) {
          if (now - lastDraw < REDRAW_MS && e.update < e.itersPerEpoch) return;
          lastDraw = now;
          const width = Math.max(0, Math.min(30, (stream.columns ?? 80) - head.length - stats.length - 30));
          const filled = Math.round(frac * width);
          const bar = width > 0 ? ` [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]` : '';
          stream.write(`\r${head}${bar} ${e.update}/${e.itersPerEpoch} ${stats}\x1b[K`);
          open = true;
          return;
        }
        const quarter = Math.floor(frac * 4);
        if (quarter > lastPlainQuarter || now - lastPlainTime > PLAIN_EVERY_MS || e.update === 1) {
          lastPlainQuarter = quarter;
          lastPlainTime = now;
          line(`${head} update ${e.update}/${e.itersPerEpoch} ${stats}`);
        }
        if (e.update === e.itersPerEpoch) lastPlainQuarter = -1;
        break;
      }
      case 'checking': {
        const what = `${e.split === 'val' ? 'validation' : 'training'} images (${e.depth === 'decode' ? 'decoding each' : 'reading headers'})`;
        if (stream.isTTY) {
          if (e.done === e.total) {
            if (open) stream.write('\r\x1b[K');
            open = false;
          } else if (clock() - lastDraw >= REDRAW_MS || e.done === 0) {
            lastDraw = clock();
            stream.write(`\rchecking ${e.total} ${what}: ${e.done}/${e.total}\x1b[K`);
            open = true;
          }
        } else if (e.done === 0 && e.total >= PLAIN_CHECK_FROM) {
          line(`checking ${e.total} ${what}`);
        }
        break;
      }
      case 'validating':
        if (stream.isTTY) {
          stream.write(`\repoch ${e.epoch + 1}: validating ${e.done}/${e.total}\x1b[K`);
          open = true;
        }
        break;
      case 'epoch': {
        const r = e.record;
        if (stream.isTTY && open) stream.write('\r\x1b[K');
        open = false;
        lastPlainQuarter = -1;
        line(
          `epoch ${r.epoch}/${e.epochs}: loss ${r.loss.toFixed(4)}, val top-1 ${pct(r.valTop1)}, top-5 ${pct(r.valTop5)}, val loss ${r.valLoss.toFixed(4)}, ` +
            `lr ${r.lr.toPrecision(3)}, ${r.imagesPerSecond.toFixed(0)} img/s (data wait ${(100 * r.dataWait).toFixed(1)}%), ` +
            `${formatDuration(r.trainSeconds + r.valSeconds)}`,
        );
        break;
      }
      case 'checkpoint':
        break; // every epoch: summarized by the epoch line
      case 'stopped':
        line(`${e.reason}: the checkpoint ${e.checkpoint} holds the run's state; continue with: zoo train --out ${path.dirname(e.checkpoint)} --resume`);
        break;
      case 'exported':
        line(`wrote ${e.path} (${(e.bytes / 1e6).toFixed(1)} MB), checked in ONNX Runtime (${e.check.provider}): max |logit difference| ${e.check.maxAbsDiff.toExponential(2)}`);
        break;
    }
  };
}

/** One JSON line; non-finite numbers become null (JSON has none). */
function jsonLine(stream: { write(s: string): unknown }, value: Record<string, unknown>): void {
  stream.write(`${JSON.stringify(value)}\n`);
}

/**
 * An `onEvent` for `train()` that writes one JSON object per line to `stream` (`zoo train --json`): the
 * run's events with their figures, keyed by `event`. Progress within an epoch is left out (the epoch
 * lines carry its figures); `extra.start` adds fields to the start line (the command's backend and run
 * directory); the command adds `finished`, `added` and `error`.
 *
 *   {"event":"start","config":{...},"params":..,"updatesPerEpoch":..,"totalUpdates":..,"peakLr":..,"warmupUpdates":..,"resumed"?:{...}}
 *   {"event":"notice","message":"..."}
 *   {"event":"epoch","epochs":..,"epoch":..,"loss":..,"lr":..,"valTop1":..,"valTop5":..,"valLoss":..,...}
 *   {"event":"checkpoint","path":"...","update":..}
 *   {"event":"stopped","reason":"...","checkpoint":"..."}
 *   {"event":"exported","path":"...","bytes":..,"check":{"passed":true,"maxAbsDiff":..,...}}
 */
export function trainingJsonPrinter(
  stream: { write(s: string): unknown } = process.stdout,
  extra: { start?: Record<string, unknown> } = {},
): (e: TrainEvent) => void {
  return (e) => {
    switch (e.type) {
      case 'start':
        jsonLine(stream, {
          event: 'start',
          ...extra.start,
          config: e.config,
          params: e.params,
          updatesPerEpoch: e.itersPerEpoch,
          totalUpdates: e.totalUpdates,
          peakLr: e.peakLr,
          warmupUpdates: e.warmupUpdates,
          ...(e.resumed ? { resumed: { epoch: e.resumed.epoch, updateInEpoch: e.resumed.updateInEpoch, globalUpdate: e.resumed.globalUpdate } } : {}),
        });
        break;
      case 'notice':
        jsonLine(stream, { event: 'notice', message: e.message });
        break;
      case 'epoch':
        jsonLine(stream, { event: 'epoch', epochs: e.epochs, ...e.record });
        break;
      case 'checkpoint':
        jsonLine(stream, { event: 'checkpoint', path: e.path, update: e.globalUpdate });
        break;
      case 'stopped':
        jsonLine(stream, { event: 'stopped', reason: e.reason, checkpoint: e.checkpoint });
        break;
      case 'exported':
        jsonLine(stream, { event: 'exported', path: e.path, bytes: e.bytes, check: e.check });
        break;
      case 'progress':
      case 'validating':
      case 'checking':
        break;
    }
  };
}

/** Writes one `zoo train --json` line that the command itself adds (`finished`, `added`). */
export function writeJsonEvent(event: string, fields: Record<string, unknown>, stream: { write(s: string): unknown } = process.stdout): void {
  jsonLine(stream, { event, ...fields });
}

/** What a transfer task (detection, segmentation) says for its own events; the rest is trainingPrinter's. */
export interface TaskLines<E extends { type: string }> {
  /** Lines for an event of the task's own, or undefined to leave it to the shared printer. */
  lines(e: E): string[] | undefined;
  /** How to continue a stopped run in `dir`. */
  resumeCommand(dir: string): string;
}

/**
 * A printer for a transfer task's training: the classification printer's progress bar and notices, with
 * the task's own start, epoch and export lines (each a whole line: an open progress line is ended first).
 */
export function taskPrinter<E extends { type: string }>(task: TaskLines<E>, stream: ProgressStream = process.stderr): (e: E) => void {
  const shared = trainingPrinter(stream);
  const say = (text: string) => {
    if (stream.isTTY) stream.write('\r\x1b[K');
    stream.write(`${text}\n`);
  };
  return (e) => {
    if (e.type === 'stopped') {
      const s = e as unknown as { reason: string; checkpoint: string };
      say(`${s.reason}: the checkpoint ${s.checkpoint} holds the run's state; continue with: ${task.resumeCommand(path.dirname(s.checkpoint))}`);
      return;
    }
    const lines = task.lines(e);
    if (lines) for (const l of lines) say(l);
    else shared(e as unknown as TrainEvent);
  };
}
