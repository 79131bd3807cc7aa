/**
 * Prediction on what users pass: photos stored sideways with an EXIF orientation, values that are not
 * images, a pipeline used after it was disposed, and export sizes no input could fit.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { setupBackend, maxAbsDiff } from './helpers/backend.js';
import { createModel, exportOnnx, fromPretrained, pipeline, pull, UserError } from '../src/index.js';
import { metadataProps } from '../src/onnx/metadata.js';
import { decodeModel, int64Tensor, node, onnx } from '../src/onnx/proto.js';
import { ImageClassifier } from '../src/predict/classifier.js';
import { preprocessImage } from '../src/predict/predict.js';
import { preprocessingForSize, type Preprocessing } from '../src/predict/preprocessing.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-exportrev-'));
const PRE: Preprocessing = preprocessingForSize(224);

/** A 300x200 RGB image whose every pixel differs from its mirror images and transposes. */
function gradient(width: number, height: number): sharp.Sharp {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      px[i] = Math.round((255 * x) / (width - 1));
      px[i + 1] = Math.round((255 * y) / (height - 1));
      px[i + 2] = (x * 7 + y * 3) % 256;
    }
  return sharp(px, { raw: { width, height, channels: 3 } });
}

let onnxFile = '';

/** `file` with its batch dimension fixed at `batch`, as other tools often export (torch.onnx without dynamic_axes). */
function fixBatch(file: string, batch: number, out: string): string {
  const m = decodeModel(readFileSync(file), file);
  for (const v of [m.graph!.input![0]!, m.graph!.output![0]!]) v.type!.tensorType!.shape!.dim![0] = { dimValue: batch };
  writeFileSync(out, onnx.ModelProto.encode(m).finish());
  return out;
}

test.before(async () => {
  await setupBackend();
  const m = createModel('resnet18d', { numClasses: 3 });
  try {
    const pre = preprocessingForSize(32);
    const bytes = await exportOnnx(m, { imageSize: 32, metadata: metadataProps({ arch: 'resnet18d', preprocessing: pre, labels: ['a', 'b', 'c'] }) });
    onnxFile = join(dir, 'small.onnx');
    writeFileSync(onnxFile, bytes);
  } finally {
    m.dispose();
  }
});

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

for (const orientation of [6, 3, 8]) {
  test(`a JPEG stored with EXIF orientation ${orientation} is classified upright, as a viewer shows it and training reads it`, async (t) => {
    const stored = await gradient(300, 200).jpeg({ quality: 95 }).withMetadata({ orientation }).toBuffer();
    // The reference: the same decoded pixels turned upright, stored losslessly without a tag.
    const upright = await sharp(stored).rotate().png().toBuffer();
    const uprightMeta = await sharp(upright).metadata();
    t.is(uprightMeta.orientation, undefined);
    const asStored = await sharp(stored).png().toBuffer(); // the pixels as stored, tag dropped
    const got = await preprocessImage(new Uint8Array(stored), PRE);
    const want = await preprocessImage(new Uint8Array(upright), PRE);
    const sideways = await preprocessImage(new Uint8Array(asStored), PRE);
    t.true(maxAbsDiff(got, want) < 1e-5, `differs from the upright image by ${maxAbsDiff(got, want)}`);
    t.true(maxAbsDiff(got, sideways) > 0.5, 'the orientation tag changed nothing');
  });
}

test('a value that is neither a path nor image bytes is a UserError, from preprocessImage and from a pipeline', async (t) => {
  for (const bad of [42, null, undefined, { path: 'x.png' }]) {
    await t.throwsAsync(() => preprocessImage(bad as unknown as string, PRE), { instanceOf: UserError, message: /file path or the encoded bytes/ });
  }
  const classify = await pipeline('image-classification', onnxFile);
  try {
    await t.throwsAsync(() => classify(42 as unknown as string), { instanceOf: UserError, message: /file path or the encoded bytes/ });
    await t.throwsAsync(() => classify.classifyEach('x.png' as unknown as string[]), { instanceOf: UserError, message: /a list of images/ });
    const png = await gradient(40, 30).png().toBuffer();
    const [top] = await classify([png], { topk: 2 });
    t.is(top!.length, 2);
  } finally {
    await classify.dispose();
  }
});

test('a pipeline disposed twice is fine; a call after dispose is a UserError naming the model', async (t) => {
  const classify = await pipeline('image-classification', onnxFile);
  const png = await gradient(40, 30).png().toBuffer();
  t.is((await classify(png, { topk: 1 })).length, 1);
  await classify.dispose();
  await t.notThrowsAsync(() => classify.dispose());
  const e = await t.throwsAsync(() => classify(png), { instanceOf: UserError });
  t.regex(e!.message, /small\.onnx.*disposed/);
});

test('exportOnnx refuses an image size no input could fit instead of writing it into the graph', async (t) => {
  const m = createModel('resnet18d', { numClasses: 3 });
  try {
    for (const imageSize of [0, -32, 31.5, Number.NaN, [32, 0] as [number, number]]) {
      await t.throwsAsync(() => exportOnnx(m, { imageSize }), { instanceOf: UserError, message: /imageSize must be a positive integer/ });
    }
    t.true((await exportOnnx(m, { imageSize: [32, 48] })).length > 0);
  } finally {
    m.dispose();
  }
});

test('a graph with a fixed batch (1, or 3 for 5 images) is run in runs of that size, padded, with the answers of the dynamic graph', async (t) => {
  const images = await Promise.all([0, 1, 2, 3, 4].map((i) => gradient(40 + 9 * i, 30 + 5 * i).png().toBuffer()));
  const dynamic = await predictAll(onnxFile, images);
  for (const batch of [1, 3]) {
    const file = fixBatch(onnxFile, batch, join(dir, `fixed${batch}.onnx`));
    const c = await ImageClassifier.open({ onnx: file, label: file, meta: { preprocessing: preprocessingForSize(32), labels: ['a', 'b', 'c'] }, preprocessingFrom: 'model' });
    try {
      t.is(c.fixedBatch, batch);
      const got = await c.classify(images, { topk: 3, batchSize: 8 });
      t.deepEqual(got.map((r) => r.error), images.map(() => undefined));
      for (let i = 0; i < images.length; i++) {
        t.deepEqual(got[i]!.top!.map((p) => p.index), dynamic[i]!.map((p) => p.index));
        t.true(maxAbsDiff(got[i]!.top!.map((p) => p.probability), dynamic[i]!.map((p) => p.probability)) < 1e-6);
      }
    } finally {
      await c.dispose();
    }
  }
});

async function predictAll(file: string, images: Uint8Array[]) {
  const classify = await pipeline('image-classification', file);
  try {
    return await classify(images, { topk: 3 });
  } finally {
    await classify.dispose();
  }
}

test('a graph that loads but cannot run on images of its own input shape is a UserError naming the file, not an internal error', async (t) => {
  // A Reshape to rows of 7 before the classifier: 512 features per image cannot be split so at run time.
  const m = decodeModel(readFileSync(onnxFile), onnxFile);
  const g = m.graph!;
  const gemm = g.node!.findIndex((n) => n.opType === 'Gemm');
  const features = g.node![gemm]!.input![0]!;
  g.initializer!.push(onnx.TensorProto.fromObject(int64Tensor('bad_shape', [2], [-1, 7])), onnx.TensorProto.fromObject(int64Tensor('good_shape', [2], [-1, 512])));
  g.node!.splice(gemm, 0, onnx.NodeProto.fromObject(node('Reshape', [features, 'bad_shape'], ['odd_rows'], 'bad_reshape')), onnx.NodeProto.fromObject(node('Reshape', ['odd_rows', 'good_shape'], ['rows'], 'back')));
  g.node![gemm + 2]!.input![0] = 'rows';
  const file = join(dir, 'broken.onnx');
  writeFileSync(file, onnx.ModelProto.encode(m).finish());
  const classify = await pipeline('image-classification', file);
  try {
    const png = await gradient(40, 30).png().toBuffer();
    const e = await t.throwsAsync(() => classify(png), { instanceOf: UserError });
    t.regex(e!.message, /broken\.onnx: ONNX Runtime could not run the graph on 1 image\(s\) of 3x32x32: .*Reshape/);
    t.false(e!.message.includes('\n'));
  } finally {
    await classify.dispose();
  }
});

test('pipeline(), fromPretrained() and pull() without a model name are a UserError, not a TypeError', async (t) => {
  for (const bad of [undefined, null, 42, '', '  ']) {
    const ref = bad as unknown as string;
    await t.throwsAsync(() => pipeline('image-classification', ref), { instanceOf: UserError, message: /pipeline\('image-classification'\) takes a model/ });
    await t.throwsAsync(() => pipeline('object-detection', ref), { instanceOf: UserError, message: /takes a model/ });
    await t.throwsAsync(() => fromPretrained(ref), { instanceOf: UserError, message: /fromPretrained\(\) takes a model/ });
    await t.throwsAsync(() => pull(ref), { instanceOf: UserError, message: /pull\(\) takes a model/ });
  }
});
