/**
 * A worker of the SIMD kernel pool (pool.ts): instantiates the kernels over the shared wasm memory and
 * runs its part of each task the main thread posts through the shared control block.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CTL, partRange } from './protocol.js';

interface Data {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  args: SharedArrayBuffer;
  index: number;
  names: string[];
}

const d = workerData as Data;
const instance = new WebAssembly.Instance(d.module, { env: { memory: d.memory } });
const fns = d.names.map((n) => instance.exports[n] as (...a: number[]) => void);
const ctl = new Int32Array(d.control);
const args = new Float64Array(d.args);
parentPort!.postMessage('ready');

let generation = Atomics.load(ctl, CTL.generation);
for (;;) {
  Atomics.wait(ctl, CTL.generation, generation);
  generation = Atomics.load(ctl, CTL.generation);
  const task = Atomics.load(ctl, CTL.task);
  if (task < 0) break;
  try {
    const [begin, end] = partRange(args[0]!, ctl[CTL.parts]!, d.index, ctl[CTL.align]!);
    if (begin < end) {
      const n = ctl[CTL.nargs]!;
      const a: number[] = new Array(n + 3);
      for (let k = 0; k < n; k++) a[k] = args[1 + k]!;
      a[n] = begin;
      a[n + 1] = end;
      a[n + 2] = d.index;
      fns[task]!(...a);
    }
  } catch (e) {
    Atomics.store(ctl, CTL.error, 1);
    parentPort!.postMessage({ error: String(e) });
  }
  Atomics.add(ctl, CTL.done, 1);
  Atomics.notify(ctl, CTL.done);
}
