/**
 * Comparing two run directories, as the exact-resume tests do: the records of their log.jsonl and the
 * checkpoint tensors that differ bit for bit.
 */
import type { ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { readSafetensors } from '../../src/formats/safetensors.js';

/** The records of `dir`/log.jsonl. */
export function readRunLog<R>(dir: string): R[] {
  return readFileSync(path.join(dir, 'log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as R);
}

/** How many tensors of the two runs' checkpoints differ in any bit (a tensor only one of them has counts). */
export async function checkpointTensorsDiffering(a: string, b: string): Promise<number> {
  const x = await readSafetensors(path.join(a, 'checkpoint.safetensors'));
  const y = await readSafetensors(path.join(b, 'checkpoint.safetensors'));
  const bytes = (d: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) => Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  let n = Math.abs(x.tensors.size - y.tensors.size);
  for (const [k, tx] of x.tensors) {
    const ty = y.tensors.get(k);
    if (!ty || !bytes(tx.data).equals(bytes(ty.data))) n++;
  }
  return n;
}

/** What a run returns that the check reads. */
interface RunResult {
  finished: boolean;
}

/**
 * Stops a run at its first validation image and checks what the run loop promises: the run stops there
 * (one validating event, `stopped` last, no epoch record), its checkpoint holds the epoch's `updates`
 * marked as not yet evaluated, and the resumed run ends as the uninterrupted run `ref`, bit for bit.
 */
export async function checkStopDuringValidation(
  t: ExecutionContext,
  o: {
    run: (callbacks: { signal: AbortSignal; onEvent: (e: { type: string; done?: number }) => void }) => Promise<RunResult>;
    resume: () => Promise<RunResult>;
    out: string;
    ref: string;
    updates: number;
    /** The log fields that must equal the uninterrupted run's, per record. */
    logFields: (dir: string) => unknown[];
  },
): Promise<void> {
  const stop = new AbortController();
  const events: { type: string; done?: number }[] = [];
  const first = await o.run({
    signal: stop.signal,
    onEvent: (e) => {
      events.push(e.type === 'validating' ? { type: e.type, done: e.done } : { type: e.type });
      if (e.type === 'validating' && e.done === 1) stop.abort();
    },
  });
  t.false(first.finished);
  t.deepEqual(events.filter((e) => e.type === 'validating').map((e) => e.done), [1], 'validation stopped after the image in progress');
  t.is(events.at(-1)!.type, 'stopped');
  t.false(events.some((e) => e.type === 'epoch'));
  const ck = await readSafetensors(path.join(o.out, 'checkpoint.safetensors'));
  t.like(JSON.parse(ck.metadata['zoo.checkpoint']!), { epoch: 0, updateInEpoch: o.updates, globalUpdate: o.updates, evaluating: true });
  const resumed = await o.resume();
  t.true(resumed.finished);
  t.is(await checkpointTensorsDiffering(o.ref, o.out), 0, 'tensors that differ from the uninterrupted run');
  t.deepEqual(o.logFields(o.out), o.logFields(o.ref));
}
