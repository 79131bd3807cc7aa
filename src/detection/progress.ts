/**
 * What `zoo det train` shows while it works: the classification printer's progress bar and notices
 * (src/train/progress.ts), with detection's own start, epoch and export lines.
 */
import path from 'node:path';
import type { ProgressStream } from '../hub/cache.js';
import { trainingPrinter, formatDuration } from '../train/progress.js';
import type { TrainEvent } from '../train/trainer.js';
import type { DetTrainEvent } from './train.js';

const pct = (v: number) => (Number.isFinite(v) ? `${(100 * v).toFixed(2)}%` : 'n/a');

export function detectionPrinter(stream: ProgressStream = process.stderr): (e: DetTrainEvent) => void {
  const shared = trainingPrinter(stream);
  // A whole line: the shared printer ends an open progress line first (a notice does), then ours.
  const say = (text: string) => {
    if (stream.isTTY) stream.write('\r\x1b[K');
    stream.write(`${text}\n`);
  };
  return (e) => {
    switch (e.type) {
      case 'start': {
        const c = e.config;
        say(
          `training a Faster R-CNN (C4) on ${c.arch} (${c.pretrained ? `backbone weights from ${c.backbone}` : 'random backbone'}; ${(e.params / 1e6).toFixed(2)} M parameters, ` +
            `${(e.trainable / 1e6).toFixed(2)} M trained) on ${c.data.spec}: ${c.data.train} ${c.data.trainSplit} / ${c.data.val} ${c.data.valSplit} images, ${c.classes.length} classes`,
        );
        const accumulate = c.batchSize / c.microBatch;
        say(
          `batch ${c.batchSize}${accumulate > 1 ? ` (${accumulate} x ${c.microBatch}, gradients accumulated)` : ''}, ${e.itersPerEpoch} updates per epoch, ${c.epochs} epochs, ` +
            `peak lr ${e.peakLr.toPrecision(3)}${e.warmupUpdates ? ` after ${e.warmupUpdates} warmup updates` : ''}, /10 at ${c.steps.map((s) => `${Math.round(100 * s)}%`).join(', ')} of the run, ` +
            `images ${c.minSize} short side (long side at most ${c.maxSize}), seed ${c.seed}`,
        );
        if (e.resumed) say(`resuming at epoch ${e.resumed.epoch + 1}, update ${e.resumed.updateInEpoch} of ${e.itersPerEpoch} (update ${e.resumed.globalUpdate} of the run)`);
        break;
      }
      case 'epoch': {
        const r = e.record;
        const terms = r.terms ? ` (${Object.entries(r.terms).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')})` : '';
        say(
          `epoch ${r.epoch}/${e.epochs}: loss ${r.loss.toFixed(4)}${terms}, val mAP (VOC07) ${pct(r.valMap07)}, area mAP ${pct(r.valMap)}, lr ${r.lr.toPrecision(3)}, ` +
            `${r.imagesPerSecond.toFixed(1)} img/s, ${formatDuration(r.trainSeconds + r.valSeconds)}`,
        );
        break;
      }
      case 'stopped':
        say(`${e.reason}: the checkpoint ${e.checkpoint} holds the run's state; continue with: zoo det train --out ${path.dirname(e.checkpoint)} --resume`);
        break;
      case 'exported': {
        const worst = Math.max(...e.check.cases.map((c) => c.maxBoxDiff));
        say(`wrote ${e.path} (${(e.bytes / 1e6).toFixed(1)} MB), checked in ONNX Runtime on ${e.check.cases.length} image and batch sizes: every detection matched, box coordinates within ${worst.toExponential(1)} relative`);
        break;
      }
      default:
        shared(e as unknown as TrainEvent);
    }
  };
}
