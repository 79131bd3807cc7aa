/**
 * Files whose contents ask for far more memory than they hold are refused within one budget per
 * file: each case asserts the refusal, that the accounted peak never passed the limit, and, read in
 * a child process, that the real peak RSS stays far below what the file asks for (so an allocation
 * the accounting missed fails the test).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseTorchCheckpoint } from '../src/formats/torch.js';
import { ByteBudget, fileBudget } from '../src/formats/budget.js';
import { FormatError } from '../src/formats/types.js';
import { tempDir } from './helpers/fixtures.js';
import { broadcastViewsPth, deflatedStoragesPth, deflatedZeros, memoizedTensorPth } from './helpers/weights_fixtures.js';

const LABEL = 'hostile.pth';
const MIB = 2 ** 20;
const GB = 1e9;

function refused(t: import('ava').ExecutionContext, fn: () => unknown, fragment: RegExp): FormatError {
  const err = t.throws(fn, { instanceOf: FormatError }) as FormatError;
  t.true(err.message.startsWith(`${LABEL}: `), err.message);
  t.regex(err.message, fragment);
  t.false(err.message.includes('\n'), 'one line');
  return err;
}

test('64 broadcast views of a one-element storage: refused within the budget, each view charged', (t) => {
  const bytes = broadcastViewsPth(64, 2 ** 24);
  t.true(bytes.length < 8000, `${bytes.length} bytes`);
  const budget = fileBudget(LABEL, bytes.length, 8);
  refused(t, () => parseTorchCheckpoint(bytes, LABEL, { budget }), /gathering a 16777216-element view .* past its memory budget of \d+ bytes \(.*8 x the file's \d+ bytes \+ 16 MiB\)/);
  t.true(budget.peak <= budget.limit);
  t.is(parseTorchCheckpoint(broadcastViewsPth(4, 16), LABEL).get('w3')!.data.length, 16, 'small broadcast views still read');
  // Room for three views: the fourth is refused, and the accounting saw the three.
  const three = new ByteBudget(LABEL, 3 * 64 * MIB + MIB, 'three views');
  refused(t, () => parseTorchCheckpoint(bytes, LABEL, { budget: three }), /past its memory budget/);
  t.true(three.peak >= 3 * 64 * MIB && three.peak <= three.limit, `peak ${three.peak}`);
});

test('one tensor under 64 memo references is read once: refused by the default budget, shared within a larger one', (t) => {
  const bytes = memoizedTensorPth(64, 2 ** 24);
  t.true(bytes.length < 8000, `${bytes.length} bytes`);
  const small = fileBudget(LABEL, bytes.length, 8);
  refused(t, () => parseTorchCheckpoint(bytes, LABEL, { budget: small }), /gathering a 16777216-element view/);
  t.true(small.peak <= small.limit);
  const budget = new ByteBudget(LABEL, 80 * MIB, 'test');
  const sd = parseTorchCheckpoint(bytes, LABEL, { budget });
  t.is(sd.size, 64);
  const first = sd.get('w0')!.data;
  t.is(first.length, 2 ** 24);
  for (const [, v] of sd) t.is(v.data, first, 'every key holds the one tensor');
  t.true(budget.peak >= 64 * MIB && budget.peak < 65 * MIB, `one materialization charged: peak ${budget.peak}`);
});

test('six deflated 1 GiB storages in a 6 MB file: refused before inflating', (t) => {
  const bytes = deflatedStoragesPth(6);
  t.true(bytes.length < 7e6, `${bytes.length} bytes`);
  const budget = fileBudget(LABEL, bytes.length, 8);
  refused(t, () => parseTorchCheckpoint(bytes, LABEL, { budget }), /inflating entry 'archive\/data\/0' needs 1073741824 bytes/);
  t.true(budget.peak <= budget.limit && budget.peak < MIB, `nothing inflated: peak ${budget.peak}`);
});

test('an inflated storage is charged, then released once decoded: the decoded one stays', (t) => {
  const bytes = deflatedStoragesPth(1, { mib: 64, sizes: [[4]] });
  t.true(deflatedZeros(64).length < 80_000);
  const tight = new ByteBudget(LABEL, 100 * MIB, 'test');
  refused(t, () => parseTorchCheckpoint(bytes, LABEL, { budget: tight }), /decoding storage '0' \(archive\/data\/0\) needs 67108864 bytes \(64\.0 MiB\) on top of the 671\d{5} bytes/);
  t.true(tight.peak <= tight.limit);
  const budget = new ByteBudget(LABEL, 200 * MIB, 'test');
  const sd = parseTorchCheckpoint(bytes, LABEL, { budget });
  t.deepEqual(Array.from(sd.get('w0')!.data as Float32Array), [0, 0, 0, 0]);
  t.true(budget.peak >= 128 * MIB, `inflated and decoded at once: peak ${budget.peak}`);
  t.true(budget.used >= 64 * MIB && budget.used < 65 * MIB, `only the decoded storage left: ${budget.used}`);
});

// ---------------------------------------------------------------------------------------------------
// Real memory, in a child process

const modules = {
  torch: new URL('../src/formats/torch.js', import.meta.url).href,
  budget: new URL('../src/formats/budget.js', import.meta.url).href,
  zip: new URL('../src/formats/zip.js', import.meta.url).href,
};

interface ChildResult {
  outcome: string;
  message: string;
  tensors: number;
  maxRssBytes: number;
}

/**
 * Runs `body` (an async module body with `file`, `budget` (a ByteBudget or undefined) and the reader
 * modules in scope, returning a tensor count) in a fresh Node process, under a 3 GiB address-space
 * limit on Linux; its outcome and peak RSS.
 */
function inChild(file: string, budgetBytes: number | undefined, body: string): Promise<ChildResult> {
  const code = `
    const { readTorchCheckpoint } = await import(${JSON.stringify(modules.torch)});
    const { ByteBudget } = await import(${JSON.stringify(modules.budget)});
    const { openZip } = await import(${JSON.stringify(modules.zip)});
    const { readFileSync } = await import('node:fs');
    const file = ${JSON.stringify(file)};
    const budget = ${budgetBytes === undefined ? 'undefined' : `new ByteBudget(file, ${budgetBytes}, 'test')`};
    let outcome = 'read', message = '', tensors = 0;
    try {
      tensors = await (async () => { ${body} })();
    } catch (e) {
      outcome = e.name; message = e.message;
    }
    console.log(JSON.stringify({ outcome, message, tensors, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
  `;
  const node = [process.execPath, '--input-type=module', '-e', code];
  const [cmd, args] = process.platform === 'linux' ? ['/bin/sh', ['-c', 'ulimit -v 3145728 && exec "$@"', 'sh', ...node]] : [node[0]!, node.slice(1)];
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 120_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as ChildResult);
      } catch {
        reject(new Error(`child failed (${err?.message ?? 'no output'}): ${stderr.slice(-2000)}`));
      }
    });
  });
}

const READ_CHECKPOINT = 'return (await readTorchCheckpoint(file, budget ? { budget } : {})).size;';

test('read in a child process, each hostile file is refused (or shared) with a peak RSS far below what it asks for', async (t) => {
  const dir = tempDir(t);
  const cases: [string, Uint8Array, number | undefined, string][] = [
    ['broadcast.pth', broadcastViewsPth(64, 2 ** 24), undefined, 'FormatError'],
    ['memo.pth', memoizedTensorPth(64, 2 ** 24), undefined, 'FormatError'],
    ['memo-shared.pth', memoizedTensorPth(64, 2 ** 24), 80 * MIB, 'read'],
    ['deflated.pth', deflatedStoragesPth(6), undefined, 'FormatError'],
  ];
  for (const [name, bytes, budget, expected] of cases) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    const r = await inChild(file, budget, READ_CHECKPOINT);
    t.is(r.outcome, expected, `${name}: ${r.message}`);
    if (expected === 'FormatError') t.true(r.message.startsWith(`${file}: `), r.message);
    else t.is(r.tensors, 64);
    t.true(r.maxRssBytes < 0.5 * GB, `${name}: peak RSS ${(r.maxRssBytes / MIB).toFixed(0)} MiB (the file asks for over 4 GB)`);
    t.log(`${name} (${bytes.length} bytes): ${r.outcome}, peak RSS ${(r.maxRssBytes / MIB).toFixed(0)} MiB`);
  }
});

test('a deflated entry is inflated into one buffer of its size, as charged (no second copy)', async (t) => {
  const file = path.join(tempDir(t), 'entry.pth');
  fs.writeFileSync(file, deflatedStoragesPth(1, { mib: 512 }));
  const r = await inChild(file, undefined, "return openZip(readFileSync(file), file).read('archive/data/0').length;");
  t.is(r.outcome, 'read', r.message);
  t.is(r.tensors, 512 * MIB);
  t.true(r.maxRssBytes < 700 * MIB, `peak RSS ${(r.maxRssBytes / MIB).toFixed(0)} MiB for a 512 MiB entry`);
});
