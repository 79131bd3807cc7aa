/**
 * What `zoo seg train` shows while it works: the shared task printer (src/train/progress.ts) with
 * segmentation's own start, epoch and export lines.
 */
import type { ProgressStream } from '../hub/cache.js';
import { resumingLine } from '../train/loop.js';
import { formatDuration, taskPrinter } from '../train/progress.js';
import type { SegTrainEvent } from './train.js';

const pct = (v: number) => (Number.isFinite(v) ? `${(100 * v).toFixed(2)}%` : 'n/a');

export function segmentationPrinter(stream: ProgressStream = process.stderr): (e: SegTrainEvent) => void {
  return taskPrinter<SegTrainEvent>(
    {
      resumeCommand: (dir) => `zoo seg train --out ${dir} --resume`,
      lines: (e) => {
        switch (e.type) {
          case 'start': {
            const c = e.config;
            const accumulate = c.batchSize / c.microBatch;
            return [
              `training an FCN (output stride ${c.fcn.outputStride ?? 8}${c.fcn.aux === false ? '' : ', auxiliary head'}) on ${c.arch} (${c.pretrained ? `backbone weights from ${c.backbone}` : 'random backbone'}; ` +
                `${(e.params / 1e6).toFixed(2)} M parameters) on ${c.data.spec}: ${c.data.train} training / ${c.data.val} validation images, ${c.classes.length} classes`,
              `batch ${c.batchSize}${accumulate > 1 ? ` (${accumulate} x ${c.microBatch}, gradients accumulated)` : ''} crops of ${c.cropSize} (long side ${c.scale[0]}..${c.scale[1]} x ${c.baseSize}), ` +
                `${e.itersPerEpoch} updates per epoch, ${c.epochs} epochs, peak lr ${e.peakLr.toPrecision(3)} (head x${c.headLrScale})${e.warmupUpdates ? ` after ${e.warmupUpdates} warmup updates` : ''}, ` +
                `poly decay ${c.power}, batch norm ${c.bn === 'train' ? 'trained' : 'frozen'}, seed ${c.seed}`,
              ...(e.resumed ? [resumingLine(e.resumed, e.itersPerEpoch)] : []),
            ];
          }
          case 'epoch': {
            const r = e.record;
            const terms = r.terms ? ` (${Object.entries(r.terms).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')})` : '';
            return [
              `epoch ${r.epoch}/${e.epochs}: loss ${r.loss.toFixed(4)}${terms}, val pixAcc ${pct(r.valPixAcc)}, mIoU ${pct(r.valMIoU)}, lr ${r.lr.toPrecision(3)}, ` +
                `${r.imagesPerSecond.toFixed(1)} img/s, ${formatDuration(r.trainSeconds + r.valSeconds)}`,
            ];
          }
          case 'exported': {
            const worst = Math.max(...e.check.cases.map((c) => c.maxAbsDiff / Math.max(1, c.maxAbsLogit)));
            return [`wrote ${e.path} (${(e.bytes / 1e6).toFixed(1)} MB), checked in ONNX Runtime on ${e.check.cases.length} image sizes: logits within ${worst.toExponential(1)} of their scale`];
          }
          default:
            return undefined;
        }
      },
    },
    stream,
  );
}
