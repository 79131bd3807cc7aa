/**
 * What `zoo det train` shows while it works: the shared task printer (src/train/progress.ts) with
 * detection's own start, epoch and export lines.
 */
import type { ProgressStream } from '../hub/cache.js';
import { resumingLine } from '../train/loop.js';
import { formatDuration, taskPrinter } from '../train/progress.js';
import type { DetTrainEvent } from './train.js';

const pct = (v: number) => (Number.isFinite(v) ? `${(100 * v).toFixed(2)}%` : 'n/a');

export function detectionPrinter(stream: ProgressStream = process.stderr): (e: DetTrainEvent) => void {
  return taskPrinter<DetTrainEvent>(
    {
      resumeCommand: (dir) => `zoo det train --out ${dir} --resume`,
      lines: (e) => {
        switch (e.type) {
          case 'start': {
            const c = e.config;
            const accumulate = c.batchSize / c.microBatch;
            return [
              `training a Faster R-CNN (C4) on ${c.arch} (${c.pretrained ? `backbone weights from ${c.backbone}` : 'random backbone'}; ${(e.params / 1e6).toFixed(2)} M parameters, ` +
                `${(e.trainable / 1e6).toFixed(2)} M trained) on ${c.data.spec}: ${c.data.train} ${c.data.trainSplit} / ${c.data.val} ${c.data.valSplit} images, ${c.classes.length} classes`,
              `batch ${c.batchSize}${accumulate > 1 ? ` (${accumulate} x ${c.microBatch}, gradients accumulated)` : ''}, ${e.itersPerEpoch} updates per epoch, ${c.epochs} epochs, ` +
                `peak lr ${e.peakLr.toPrecision(3)}${e.warmupUpdates ? ` after ${e.warmupUpdates} warmup updates` : ''}, /10 at ${c.steps.map((s) => `${Math.round(100 * s)}%`).join(', ')} of the run, ` +
                `images ${c.minSize} short side (long side at most ${c.maxSize}), seed ${c.seed}`,
              ...(e.resumed ? [resumingLine(e.resumed, e.itersPerEpoch)] : []),
            ];
          }
          case 'epoch': {
            const r = e.record;
            const terms = r.terms ? ` (${Object.entries(r.terms).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')})` : '';
            return [
              `epoch ${r.epoch}/${e.epochs}: loss ${r.loss.toFixed(4)}${terms}, val mAP (VOC07) ${pct(r.valMap07)}, area mAP ${pct(r.valMap)}, lr ${r.lr.toPrecision(3)}, ` +
                `${r.imagesPerSecond.toFixed(1)} img/s, ${formatDuration(r.trainSeconds + r.valSeconds)}`,
            ];
          }
          case 'exported': {
            const worst = Math.max(...e.check.cases.map((c) => c.maxBoxDiff));
            return [`wrote ${e.path} (${(e.bytes / 1e6).toFixed(1)} MB), checked in ONNX Runtime on ${e.check.cases.length} image and batch sizes: every detection matched, box coordinates within ${worst.toExponential(1)} relative`];
          }
          default:
            return undefined;
        }
      },
    },
    stream,
  );
}
