import test from 'ava';
import {
  adjustBrightness,
  adjustHue,
  adjustSaturation,
  applyLighting,
  defaultResize,
  evalCropRect,
  evalTransform,
  flipHorizontal,
  IMAGENET_MEAN,
  IMAGENET_STD,
  lightingOffset,
  normalize,
  PCA_EIGVAL,
  PCA_EIGVEC,
  randomFlip,
  resample,
  sampleColorJitter,
  sampleLightingAlpha,
  sampleResizedCropRect,
  toRgb,
  trainTransform,
  buildTransform,
  type Image,
} from '../src/data/transforms.js';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/util/random.js';

function image(height: number, width: number, channels: number, f: (y: number, x: number, c: number) => number): Image {
  const data = new Float32Array(height * width * channels);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) for (let c = 0; c < channels; c++) data[(y * width + x) * channels + c] = f(y, x, c);
  return { data, height, width, channels };
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function std(xs: number[]): number {
  const m = mean(xs);
  return Math.sqrt(mean(xs.map((x) => (x - m) ** 2)));
}

test('random-resized crop: area in [8%, 100%], aspect in [3/4, 4/3], inside the image', (t) => {
  const rng = new Rng(1);
  const [H, W] = [800, 1000];
  const areas: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const r = sampleResizedCropRect(rng, H, W);
    t.true(r.x >= 0 && r.y >= 0 && r.x + r.width <= W && r.y + r.height <= H);
    t.true(Number.isInteger(r.x) && Number.isInteger(r.y) && Number.isInteger(r.width) && Number.isInteger(r.height));
    const area = (r.width * r.height) / (H * W);
    const aspect = r.width / r.height;
    // Rounding the sides to whole pixels moves area and aspect by well under 1 %.
    t.true(area >= 0.08 * 0.99 && area <= 1, `area ${area}`);
    t.true(aspect >= (3 / 4) * 0.99 && aspect <= (4 / 3) * 1.01, `aspect ${aspect}`);
    areas.push(area);
  }
  // Accepted areas are spread over the whole range, large ones rarer (they fit less often).
  t.true(Math.min(...areas) < 0.1 && Math.max(...areas) > 0.9);
});

test('random-resized crop falls back to a centered crop with the aspect ratio clamped', (t) => {
  // So elongated that no sampled box fits: the fallback keeps the full height and a 4/3 width.
  const r = sampleResizedCropRect(new Rng(3), 30, 3000);
  t.deepEqual(r, { x: Math.floor((3000 - 40) / 2), y: 0, width: 40, height: 30 });
  const tall = sampleResizedCropRect(new Rng(3), 3000, 30, { attempts: 0 });
  t.deepEqual(tall, { x: 0, y: Math.floor((3000 - 40) / 2), width: 30, height: 40 });
  t.deepEqual(sampleResizedCropRect(new Rng(3), 100, 110, { attempts: 0 }), { x: 0, y: 0, width: 110, height: 100 });
});

test('horizontal flip happens with probability near 0.5 and mirrors exactly', (t) => {
  const img = image(2, 3, 1, (y, x) => 10 * y + x);
  t.deepEqual(Array.from(flipHorizontal(img).data), [2, 1, 0, 12, 11, 10]);
  const rng = new Rng(11);
  let flips = 0;
  const n = 4000;
  for (let i = 0; i < n; i++) if (randomFlip(img, rng) !== img) flips++;
  t.true(Math.abs(flips / n - 0.5) < 0.03, `flip rate ${flips / n}`);
});

test('color jitter: hue, saturation and brightness factors in [0.6, 1.4], random order, no contrast', (t) => {
  const rng = new Rng(5);
  const orders = new Set<string>();
  const factors: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const { steps } = sampleColorJitter(rng);
    t.deepEqual(steps.map((s) => s.op).sort(), ['brightness', 'hue', 'saturation']);
    for (const s of steps) {
      t.true(s.factor >= 0.6 && s.factor <= 1.4, `${s.op} ${s.factor}`);
      factors.push(s.factor);
    }
    orders.add(steps.map((s) => s.op).join(','));
  }
  t.is(orders.size, 6);
  t.true(Math.abs(mean(factors) - 1) < 0.01);
  t.true(Math.abs(std(factors) - 0.8 / Math.sqrt(12)) < 0.01);
  t.true(Math.min(...factors) < 0.61 && Math.max(...factors) > 1.39);
});

test('color operations: brightness scales and clamps, saturation 0 gives gray, hue rotates', (t) => {
  const px = (r: number, g: number, b: number): Image => ({ data: Float32Array.of(r, g, b), height: 1, width: 1, channels: 3 });
  t.deepEqual(Array.from(adjustBrightness(px(100, 200, 50), 1.4).data), [140, 255, 70]);
  const gray = 0.299 * 100 + 0.587 * 200 + 0.114 * 50;
  Array.from(adjustSaturation(px(100, 200, 50), 0).data).forEach((v) => t.true(Math.abs(v - gray) < 1e-3));
  Array.from(adjustSaturation(px(100, 200, 50), 1).data).forEach((v, i) => t.true(Math.abs(v - [100, 200, 50][i]!) < 1e-3));
  // A third of a turn: red to green to blue; a gray pixel has no hue to turn.
  t.deepEqual(Array.from(adjustHue(px(255, 0, 0), 1 + 1 / 3).data).map(Math.round), [0, 255, 0]);
  t.deepEqual(Array.from(adjustHue(px(0, 255, 0), 1 + 1 / 3).data).map(Math.round), [0, 0, 255]);
  t.deepEqual(Array.from(adjustHue(px(200, 100, 50), 0.6 + 0.4).data), [200, 100, 50]);
  t.deepEqual(Array.from(adjustHue(px(77, 77, 77), 1.3).data), [77, 77, 77]);
  // Hue rotation keeps each pixel's max and min.
  const rotated = Array.from(adjustHue(px(200, 100, 50), 0.75).data);
  t.is(Math.round(Math.max(...rotated)), 200);
  t.is(Math.round(Math.min(...rotated)), 50);
});

test('PCA lighting: alpha ~ N(0, 0.1), offsets from the AlexNet eigenvectors (columns) and eigenvalues', (t) => {
  const rng = new Rng(9);
  const alphas: number[] = [];
  for (let i = 0; i < 20000; i++) alphas.push(...sampleLightingAlpha(rng));
  t.true(Math.abs(mean(alphas)) < 0.003, `mean ${mean(alphas)}`);
  t.true(Math.abs(std(alphas) - 0.1) < 0.003, `std ${std(alphas)}`);
  t.deepEqual(PCA_EIGVAL, [55.46, 4.794, 1.148]);
  // alpha = e_j gives eigenvalue j times eigenvector j, the j-th column of the matrix.
  for (let j = 0; j < 3; j++) {
    const alpha = [0, 0, 0] as [number, number, number];
    alpha[j] = 1;
    lightingOffset(alpha).forEach((v, c) => t.true(Math.abs(v - PCA_EIGVAL[j]! * PCA_EIGVEC[c]![j]!) < 1e-9));
  }
  const lit = applyLighting({ data: Float32Array.of(100, 100, 100), height: 1, width: 1, channels: 3 }, [0.1, 0, 0]);
  t.true(Math.abs(lit.data[0]! - (100 - 0.5675 * 5.546)) < 1e-3);
});

test('normalization uses the paper constants', (t) => {
  t.deepEqual(IMAGENET_MEAN, [123.68, 116.779, 103.939]);
  t.deepEqual(IMAGENET_STD, [58.393, 57.12, 57.375]);
  const img: Image = { data: Float32Array.of(123.68, 116.779, 103.939, 123.68 + 58.393, 116.779 + 57.12, 103.939 + 57.375), height: 1, width: 2, channels: 3 };
  Array.from(normalize(img)).forEach((v, i) => t.true(Math.abs(v - [0, 0, 0, 1, 1, 1][i]!) < 1e-5));
});

test('resampling: constant stays constant, shrinking averages (antialiased), enlarging is bilinear', (t) => {
  const flat = resample(image(37, 53, 3, () => 42), { x: 0, y: 0, width: 53, height: 37 }, 20, 24);
  t.true(Array.from(flat.data).every((v) => Math.abs(v - 42) < 1e-4));
  // A 1-pixel checkerboard halved: the widened filter averages it to flat gray (away from the clamped border).
  const checker = resample(image(16, 16, 1, (y, x) => ((x + y) % 2) * 255), { x: 0, y: 0, width: 16, height: 16 }, 8, 8);
  for (let y = 1; y < 7; y++) for (let x = 1; x < 7; x++) t.true(Math.abs(checker.data[y * 8 + x]! - 127.5) < 1e-3);
  // Doubling a ramp 0, 10, 20, 30: samples at half-pixel centers interpolate linearly inside.
  const ramp = resample(image(1, 4, 1, (_, x) => 10 * x), { x: 0, y: 0, width: 4, height: 1 }, 1, 8);
  t.deepEqual(Array.from(ramp.data).map((v) => Math.round(v * 1000) / 1000), [0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30]);
});

test('validation geometry: shorter side to 256, center crop 224', (t) => {
  t.is(defaultResize(224), 256);
  t.is(defaultResize(32), 37);
  // 375 x 500 resizes to 256 x 341; the crop starts at (16, 59) of that (58.5 rounds up, as torchvision's
  // CenterCrop and zoo predict round), mapped back by 375/256 and 500/341.
  const r = evalCropRect(375, 500, 224, 256);
  t.true(Math.abs(r.y - 16 * (375 / 256)) < 1e-9 && Math.abs(r.height - 224 * (375 / 256)) < 1e-9);
  t.true(Math.abs(r.x - 59 * (500 / 341)) < 1e-9 && Math.abs(r.width - 224 * (500 / 341)) < 1e-9);
  // At scale 1 the result is exactly the center crop.
  const src = image(256, 300, 3, (y, x, c) => (y * 7 + x * 3 + c * 50) % 256);
  const out = evalTransform({ size: 224, resize: 256, mean: [0, 0, 0], std: [1, 1, 1] }).apply(src, new Rng(0));
  t.is(out.length, 224 * 224 * 3);
  const [top, left] = [16, 38];
  let maxDiff = 0;
  for (let y = 0; y < 224; y++)
    for (let x = 0; x < 224; x++)
      for (let c = 0; c < 3; c++) maxDiff = Math.max(maxDiff, Math.abs(out[(y * 224 + x) * 3 + c]! - src.data[((y + top) * 300 + x + left) * 3 + c]!));
  t.true(maxDiff < 1e-3, `max diff ${maxDiff}`);
  t.throws(() => evalTransform({ size: 32, resize: 30 }).apply(src, new Rng(0)), { instanceOf: UserError });
});

test('grayscale input is replicated to three equal channels; PCA lighting then adds a color cast', (t) => {
  const gray = image(28, 28, 1, (y, x) => (x * 9 + y * 5) % 256);
  t.is(toRgb(gray).channels, 3);
  const raw = trainTransform({ size: 32, lighting: 0, mean: [0, 0, 0], std: [1, 1, 1] }).apply(gray, new Rng(4));
  t.is(raw.length, 32 * 32 * 3);
  for (let i = 0; i < raw.length; i += 3) t.true(raw[i] === raw[i + 1] && raw[i] === raw[i + 2]);
  const lit = trainTransform({ size: 32, mean: [0, 0, 0], std: [1, 1, 1] }).apply(gray, new Rng(4));
  let unequal = 0;
  for (let i = 0; i < lit.length; i += 3) if (lit[i] !== lit[i + 2]) unequal++;
  t.true(unequal > 0);
});

test('the training pipeline is deterministic given the seed, and differs across seeds', (t) => {
  const src: Image<Uint8Array> = { data: Uint8Array.from({ length: 60 * 80 * 3 }, (_, i) => (i * 31) % 256), height: 60, width: 80, channels: 3 };
  const tf = trainTransform({ size: 48 });
  const a = tf.apply(src, new Rng(123));
  const b = tf.apply(src, new Rng(123));
  const c = tf.apply(src, new Rng(124));
  t.deepEqual(a, b);
  t.notDeepEqual(a, c);
  t.true(a.every(Number.isFinite));
  // Pixels stay in [0, 255] before normalization, so normalized values stay within the implied range.
  const lo = Math.min(...IMAGENET_MEAN.map((m, i) => -m / IMAGENET_STD[i]!));
  const hi = Math.max(...IMAGENET_MEAN.map((m, i) => (255 - m) / IMAGENET_STD[i]!));
  t.true(a.every((v) => v >= lo - 1e-5 && v <= hi + 1e-5));
});

test("the training pipeline's default crop area is the paper's [8%, 100%], in the calling thread and in a worker's rebuild", (t) => {
  const src: Image<Uint8Array> = { data: Uint8Array.from({ length: 150 * 200 * 3 }, (_, i) => (i * 31 + (i >> 7) * 7) % 256), height: 150, width: 200, channels: 3 };
  const byDefault = trainTransform({ size: 24 });
  const rebuilt = buildTransform(byDefault.spec);
  const paper = trainTransform({ size: 24, scale: [0.08, 1] });
  const others = [trainTransform({ size: 24, scale: [0.09, 1] }), trainTransform({ size: 24, scale: [0.08, 0.99] })];
  const differs = [0, 0];
  const seeds = 200;
  for (let seed = 0; seed < seeds; seed++) {
    const a = byDefault.apply(src, new Rng(seed));
    t.deepEqual(a, paper.apply(src, new Rng(seed)), `seed ${seed}: the default crop is not [0.08, 1]`);
    t.deepEqual(rebuilt.apply(src, new Rng(seed)), a, `seed ${seed}: a worker's pipeline differs`);
    // The comparison can tell: a crop range only slightly off changes most images.
    others.forEach((o, k) => {
      const b = o.apply(src, new Rng(seed));
      if (b.some((v, i) => v !== a[i])) differs[k]!++;
    });
  }
  // (Deterministic counts: 176 and 135 of 200; a crop whose sides round to the same pixels can stay.)
  for (const d of differs) t.true(d > seeds / 2, `${d} of ${seeds} images change with a crop range slightly off [0.08, 1]`);
});

test('sizes are validated as user errors', (t) => {
  t.throws(() => trainTransform({ size: 0 }), { instanceOf: UserError });
  t.throws(() => evalTransform({ size: 2.5 }), { instanceOf: UserError });
});
