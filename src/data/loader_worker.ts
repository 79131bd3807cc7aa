/**
 * Entry point of the data loader's worker threads. A worker receives the data set's description and the
 * transform's spec once (workerData), then batch tasks; it answers each with the batch's pixels, transferring
 * the buffer rather than copying it, or with the error that stopped it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { renderBatch, type BatchTask } from './batch.js';
import type { DatasetSource } from './dataset.js';
import { buildTransform, type TransformSpec } from './transforms.js';

/** What a worker is started with. */
export interface WorkerInit {
  /** The in-memory source (shared pixels); undefined for file data sets, whose tasks carry their paths. */
  source: DatasetSource | undefined;
  transform: TransformSpec;
  /** libvips threads per decode. */
  sharpThreads: number;
}

/** A task as posted to a worker. */
export interface WorkerTask extends BatchTask {
  id: number;
}

/** A worker's answer. */
export type WorkerReply = { id: number; images: Float32Array } | { id: number; error: { name: string; message: string; stack?: string } };

const init = workerData as WorkerInit;
const port = parentPort!;
const transform = buildTransform(init.transform);
let sharpReady: Promise<void> | undefined;

function prepareSharp(): Promise<void> {
  sharpReady ??= import('./image_folder.js').then((m) => m.configureSharp({ threads: init.sharpThreads }));
  return sharpReady;
}

port.on('message', (task: WorkerTask) => {
  void (async () => {
    try {
      if (task.files) await prepareSharp();
      const images = await renderBatch(init.source, transform, task);
      port.postMessage({ id: task.id, images } satisfies WorkerReply, [images.buffer]);
    } catch (e) {
      const err = e as Error;
      port.postMessage({ id: task.id, error: { name: err.name, message: err.message, stack: err.stack } } satisfies WorkerReply);
    }
  })();
});
