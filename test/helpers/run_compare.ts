/**
 * Comparing two run directories, as the exact-resume tests do: the records of their log.jsonl and the
 * checkpoint tensors that differ bit for bit.
 */
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
