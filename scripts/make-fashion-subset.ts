/**
 * Writes the embedded Fashion-MNIST subset (data/fashion-mnist-subset/) from the full data set:
 * the first K training and the first M test images of each class, in the files' original order, as gzipped
 * IDX files, plus a README with provenance, license, counts and SHA-256 of the decompressed files.
 * Deterministic: no random draws; the decompressed bytes depend only on the source files and K, M.
 *
 *   npm run build && node dist/scripts/make-fashion-subset.js \
 *     [--source /usr/share/datasets/fashion-mnist] [--out data/fashion-mnist-subset] \
 *     [--train-per-class 300] [--test-per-class 50]
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import zlib from 'node:zlib';
import { encodeIdx, FASHION_MNIST_CLASSES, loadFashionMnist, type IdxSplit } from '../src/data/idx.js';

const DEFAULT_SOURCE = '/usr/share/datasets/fashion-mnist';

/** Indices of the first `perClass` samples of each class, in file order. */
function firstPerClass(labels: Int32Array, perClass: number, numClasses: number): number[] {
  const taken = new Array<number>(numClasses).fill(0);
  const picked: number[] = [];
  labels.forEach((l, i) => {
    if (taken[l]! < perClass) {
      taken[l]!++;
      picked.push(i);
    }
  });
  const short = taken.findIndex((t) => t < perClass);
  if (short >= 0) throw new Error(`class ${short} has only ${taken[short]} samples, fewer than ${perClass}`);
  return picked;
}

function subset(split: IdxSplit, picked: number[]): { images: Uint8Array; labels: Uint8Array; dims: number[] } {
  const per = split.height * split.width;
  const images = new Uint8Array(picked.length * per);
  picked.forEach((i, j) => images.set(split.images.subarray(i * per, (i + 1) * per), j * per));
  return { images, labels: Uint8Array.from(picked, (i) => split.labels[i]!), dims: [picked.length, split.height, split.width] };
}

interface Written {
  name: string;
  bytes: number;
  rawSha256: string;
}

async function writeIdxGz(out: string, name: string, dims: number[], data: Uint8Array): Promise<Written> {
  const raw = encodeIdx(dims, data);
  // Node's gzip header carries no timestamp or name, so the output is stable for a given zlib.
  const gz = zlib.gzipSync(raw, { level: 9 });
  await writeFile(path.join(out, `${name}.gz`), gz);
  return { name: `${name}.gz`, bytes: gz.length, rawSha256: createHash('sha256').update(raw).digest('hex') };
}

function readme(args: { trainPerClass: number; testPerClass: number; files: Written[]; command: string }): string {
  const nTrain = args.trainPerClass * 10;
  const nTest = args.testPerClass * 10;
  const total = args.files.reduce((s, f) => s + f.bytes, 0);
  return `# Fashion-MNIST subset (embedded default data set)

A class-balanced subset of [Fashion-MNIST](https://github.com/zalandoresearch/fashion-mnist):
28x28 grayscale images of 10 clothing classes, stored as gzipped IDX files in the original format
(readable by \`loadFashionMnist\` and by any MNIST reader).

| split | images | per class | source file |
| --- | --- | --- | --- |
| train | ${nTrain} | ${args.trainPerClass} | train-images-idx3-ubyte (60,000) |
| test | ${nTest} | ${args.testPerClass} | t10k-images-idx3-ubyte (10,000) |

Selection: the first ${args.trainPerClass} (train) and ${args.testPerClass} (test) images of each class, in the
source files' order, which is kept. No random draws are involved. Total size: ${total} bytes.

Classes (label order): ${FASHION_MNIST_CLASSES.map((c, i) => `${i} ${c}`).join(', ')}.

## Provenance

Source: the Debian package \`dataset-fashion-mnist\` (files in ${DEFAULT_SOURCE}), which packages
Zalando Research's release unchanged.

Regenerate (deterministic; the decompressed files match the SHA-256 sums below, the gzip bytes may differ
with the zlib version):

    ${args.command}

| file | gzipped bytes | SHA-256 of the decompressed file |
| --- | --- | --- |
${args.files.map((f) => `| ${f.name} | ${f.bytes} | ${f.rawSha256} |`).join('\n')}

## License

Fashion-MNIST: Copyright (c) 2017 Zalando SE, https://tech.zalando.com, released under the MIT (Expat)
License (as recorded in /usr/share/doc/dataset-fashion-mnist/copyright):

    Permission is hereby granted, free of charge, to any person obtaining a
    copy of this software and associated documentation files (the "Software"),
    to deal in the Software without restriction, including without limitation
    the rights to use, copy, modify, merge, publish, distribute, sublicense,
    and/or sell copies of the Software, and to permit persons to whom the
    Software is furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included
    in all copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
    OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
    MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
    IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
    CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
    TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
    SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

Citation: Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms. arXiv:1708.07747, 2017.
`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      source: { type: 'string', default: DEFAULT_SOURCE },
      out: { type: 'string', default: path.join('data', 'fashion-mnist-subset') },
      'train-per-class': { type: 'string', default: '300' },
      'test-per-class': { type: 'string', default: '50' },
    },
  });
  const trainPerClass = Number(values['train-per-class']);
  const testPerClass = Number(values['test-per-class']);
  for (const [k, v] of [['train-per-class', trainPerClass], ['test-per-class', testPerClass]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
  }
  const out = values.out!;
  const full = await loadFashionMnist(values.source!);
  const train = subset(full.train, firstPerClass(full.train.labels, trainPerClass, 10));
  const test = subset(full.test, firstPerClass(full.test.labels, testPerClass, 10));
  await mkdir(out, { recursive: true });
  const files = [
    await writeIdxGz(out, 'train-images-idx3-ubyte', train.dims, train.images),
    await writeIdxGz(out, 'train-labels-idx1-ubyte', [train.labels.length], train.labels),
    await writeIdxGz(out, 't10k-images-idx3-ubyte', test.dims, test.images),
    await writeIdxGz(out, 't10k-labels-idx1-ubyte', [test.labels.length], test.labels),
  ];
  const command =
    'npm run build && node dist/scripts/make-fashion-subset.js ' +
    `--source ${values.source} --out ${out} --train-per-class ${trainPerClass} --test-per-class ${testPerClass}`;
  await writeFile(path.join(out, 'README.md'), readme({ trainPerClass, testPerClass, files, command }));
  for (const f of files) console.log(`${path.join(out, f.name)}  ${f.bytes} bytes  sha256(raw) ${f.rawSha256}`);
}

await main();
