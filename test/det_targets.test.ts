/**
 * Faster R-CNN training targets on hand cases: RPN anchor labels (thresholds, each object's best
 * anchor, anchors past the border), RPN and RoI sampling limits, determinism for a seed, images without
 * objects, and RoI deltas that decode back to their ground-truth boxes.
 */
import test from 'ava';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/util/random.js';
import { AnchorGenerator } from '../src/detection/anchors.js';
import { RCNN_BOX_WEIGHTS, decodeBoxes, iouMatrix } from '../src/detection/boxes.js';
import { rpnTargets, sampleRois } from '../src/detection/targets.js';

const f32 = (rows: number[][]) => new Float32Array(rows.flat());
const row = (a: Float32Array, i: number) => Array.from(a.subarray(4 * i, 4 * i + 4));
const count = (xs: ArrayLike<number>, v: number) => Array.from(xs).filter((x) => x === v).length;
const image = { height: 100, width: 100 };

// ------------------------------------------------------------------------------------------------- RPN

test('rpnTargets: >= 0.7 positive, < 0.3 negative, in between ignored, past the border ignored', (t) => {
  const gt = f32([[10, 10, 50, 50]]);
  const anchors = f32([
    [10, 10, 50, 50], // IoU 1: positive
    [12, 10, 52, 50], // IoU 1520/1680 = 0.905: positive
    [10, 10, 50, 80], // IoU 1600/2800 = 0.571: ignored
    [60, 60, 90, 90], // IoU 0: negative
    [-1, 10, 49, 50], // IoU 1560/2040 = 0.765 but x1 < 0: ignored
    [10, 10, 30, 50], // IoU 0.5: ignored
    [50, 50, 100, 100], // touches the far border (x2 = width): inside, IoU 0: negative
  ]);
  const r = rpnTargets(anchors, gt, image, new Rng(0));
  t.deepEqual(Array.from(r.labels), [1, 1, -1, 0, -1, -1, 0]);
  t.is(r.positives, 2);
  t.is(r.negatives, 2);
  // Deltas of positives take the anchor to the box (RPN weights 1); zeros elsewhere.
  t.deepEqual(row(r.deltas, 0), [0, 0, 0, 0]);
  const d1 = row(r.deltas, 1);
  t.true(Math.abs(d1[0]! + 2 / 40) < 1e-7 && d1[1] === 0 && Math.abs(d1[2]!) < 1e-7 && d1[3] === 0, `deltas ${d1}`);
  for (const i of [2, 3, 4, 5, 6]) t.deepEqual(row(r.deltas, i), [0, 0, 0, 0], `anchor ${i}`);

  // allowedBorder 1 lets the anchor at x1 = -1 in: positive.
  const wide = rpnTargets(anchors, gt, image, new Rng(0), { allowedBorder: 1 });
  t.is(wide.labels[4], 1);
  t.is(rpnTargets(anchors, gt, { height: 100, width: 99.5 }, new Rng(0)).labels[6], -1, 'x2 past the width');
});

test('rpnTargets: each object\'s best anchor is positive even under the negative threshold; ties too', (t) => {
  const gt = f32([[0, 0, 30, 30], [60, 60, 70, 70]]);
  const anchors = f32([
    [0, 0, 60, 60], // IoU 0.25 with gt 0: its best anchor
    [0, 0, 70, 70], // IoU 0.18 with gt 0, 0.02 with gt 1: negative
    [0, 0, 60, 60], // tie with anchor 0: positive as well
    [80, 0, 100, 20], // IoU 0: negative
    [55, 55, 100, 70], // IoU 100/675 = 0.148 with gt 1: negative while anchor 5 is inside
    [60, 60, 70, 72], // IoU 100/120 = 0.833 with gt 1: positive, unless the image is 71 high
  ]);
  const r = rpnTargets(anchors, gt, image, new Rng(3));
  t.deepEqual(Array.from(r.labels), [1, 0, 1, 0, 0, 1]);
  // With anchor 5 outside the image, gt 1's best inside anchor is anchor 4: positive at IoU 0.148.
  const short = rpnTargets(anchors, gt, { height: 71, width: 100 }, new Rng(3));
  t.deepEqual(Array.from(short.labels), [1, 0, 1, 0, 1, -1]);
  // A positive by the best-anchor rule regresses to its own best box.
  const back = decodeBoxes(anchors.subarray(16, 20), short.deltas.subarray(16, 20), [1, 1, 1, 1]);
  t.true(row(back, 0).every((v, i) => Math.abs(v - [60, 60, 70, 70][i]!) < 1e-4), `decoded ${row(back, 0)}`);
  // An object overlapping no inside anchor makes none positive.
  const none = rpnTargets(f32([[0, 0, 10, 10]]), f32([[50, 50, 60, 60]]), image, new Rng(0));
  t.deepEqual(Array.from(none.labels), [0]);
});

function manyAnchors() {
  const anchors = new AnchorGenerator().grid(38, 50); // a 600x800 image
  const gt = f32([
    [100, 120, 300, 400],
    [400, 50, 700, 300],
    [20, 20, 60, 70],
    [500, 350, 780, 590],
  ]);
  return { anchors, gt, image: { height: 600, width: 800 } };
}

test('rpnTargets: at most 128 positives and 256 in all; negatives fill the sample', (t) => {
  const { anchors, gt, image: size } = manyAnchors();
  const r = rpnTargets(anchors, gt, size, new Rng(1));
  t.is(count(r.labels, 1), r.positives);
  t.is(count(r.labels, 0), r.negatives);
  t.true(r.positives > 0 && r.positives <= 128, `positives ${r.positives}`);
  t.is(r.positives + r.negatives, 256);
  // Candidates before sampling (batch large enough to keep all), to check that sampling only removes.
  const all = rpnTargets(anchors, gt, size, new Rng(1), { batchSize: 1e6, positiveFraction: 1 });
  for (let i = 0; i < r.labels.length; i++) if (r.labels[i] !== -1) t.is(r.labels[i], all.labels[i]);
  // Many identical positive candidates: the fraction caps positives, negatives fill up to batchSize.
  const many = new Float32Array(4 * 40);
  for (let i = 0; i < 30; i++) many.set([10, 10, 50, 50], 4 * i);
  for (let i = 30; i < 40; i++) many.set([60, 60, 90, 90], 4 * i);
  const capped = rpnTargets(many, f32([[10, 10, 50, 50]]), image, new Rng(2), { batchSize: 20, positiveFraction: 0.25 });
  t.is(capped.positives, 5);
  t.is(capped.negatives, 10);
  t.is(count(capped.labels.subarray(0, 30), 1), 5);
  t.is(count(capped.labels.subarray(30), 0), 10);
  const fewNeg = rpnTargets(many, f32([[10, 10, 50, 50]]), image, new Rng(2), { batchSize: 12, positiveFraction: 0.25 });
  t.deepEqual([fewNeg.positives, fewNeg.negatives], [3, 9]);
});

test('rpnTargets: sampling is uniform over the candidates and fixed by the seed', (t) => {
  const many = new Float32Array(4 * 30);
  for (let i = 0; i < 30; i++) many.set([10, 10, 50, 50], 4 * i);
  const gt = f32([[10, 10, 50, 50]]);
  const hits = new Array<number>(30).fill(0);
  const draws = 3000;
  for (let s = 0; s < draws; s++) {
    const r = rpnTargets(many, gt, image, new Rng(s), { batchSize: 10, positiveFraction: 0.5 });
    r.labels.forEach((l, i) => (hits[i]! += l === 1 ? 1 : 0));
  }
  // Each of 30 candidates is kept with probability 5/30 = 1/6: 500 of 3000 draws (sd about 20).
  for (const h of hits) t.true(h > 400 && h < 600, `hits ${hits}`);

  const { anchors, gt: boxes, image: size } = manyAnchors();
  const a = rpnTargets(anchors, boxes, size, new Rng(11));
  const b = rpnTargets(anchors, boxes, size, new Rng(11));
  const c = rpnTargets(anchors, boxes, size, new Rng(12));
  t.deepEqual(a.labels, b.labels);
  t.deepEqual(a.deltas, b.deltas);
  t.notDeepEqual(a.labels, c.labels);
});

test('rpnTargets: an image without objects gives sampled negatives only', (t) => {
  const { anchors, image: size } = manyAnchors();
  const r = rpnTargets(anchors, new Float32Array(0), size, new Rng(5));
  t.is(r.positives, 0);
  t.is(r.negatives, 256);
  t.is(count(r.labels, 1), 0);
  t.is(count(r.labels, 0), 256);
  t.true(r.deltas.every((d) => d === 0));
  // Negatives come from inside anchors only.
  for (let i = 0; i < r.labels.length; i++) {
    if (r.labels[i] === 0) t.true(anchors[4 * i]! >= 0 && anchors[4 * i + 1]! >= 0 && anchors[4 * i + 2]! <= 800 && anchors[4 * i + 3]! <= 600);
  }
});

test('rpnTargets: bad input is a UserError naming it', (t) => {
  const a = f32([[0, 0, 10, 10]]);
  t.throws(() => rpnTargets(new Float32Array(5), a, image, new Rng(0)), { instanceOf: UserError, message: /anchors.*length 5/ });
  t.throws(() => rpnTargets(a, new Float32Array(3), image, new Rng(0)), { instanceOf: UserError, message: /ground-truth.*length 3/ });
  t.throws(() => rpnTargets(a, f32([[0, 0, NaN, 1]]), image, new Rng(0)), { instanceOf: UserError, message: /box 0.*non-finite/ });
  t.throws(() => rpnTargets(a, a, { height: 0, width: 10 }, new Rng(0)), { instanceOf: UserError, message: /image size/ });
  t.throws(() => rpnTargets(a, a, image, new Rng(0), { batchSize: 0 }), { instanceOf: UserError, message: /batchSize/ });
  t.throws(() => rpnTargets(a, a, image, new Rng(0), { negativeIou: 0.8 }), { instanceOf: UserError, message: /negativeIou/ });
});

// ------------------------------------------------------------------------------------------------ RoIs

const roiGt = f32([[10, 10, 50, 50], [60, 60, 90, 90]]);
const roiLabels = new Int32Array([3, 7]);
const roiProposals = f32([
  [12, 10, 52, 50], // 0.905 with gt 0: foreground 3
  [10, 10, 50, 80], // 0.571: foreground 3
  [10, 10, 30, 50], // 0.5: foreground 3
  [0, 0, 20, 20], // 100/1900 = 0.053: background
  [61, 60, 91, 90], // 870/930 = 0.935 with gt 1: foreground 7
  [200, 200, 210, 210], // 0: background
]);

/** The label each RoI should have, from its coordinates. */
function expectedLabel(box: number[]): number {
  const key = box.join(',');
  const table: Record<string, number> = {
    '12,10,52,50': 3, '10,10,50,80': 3, '10,10,30,50': 3, '0,0,20,20': 0, '61,60,91,90': 7, '200,200,210,210': 0,
    '10,10,50,50': 3, '60,60,90,90': 7,
  };
  if (!(key in table)) throw new Error(`unexpected RoI ${key}`);
  return table[key]!;
}

test('sampleRois: gt appended, >= 0.5 foreground with its label, < 0.5 background, foreground first', (t) => {
  const r = sampleRois(roiProposals, roiGt, roiLabels, new Rng(0));
  t.is(r.labels.length, 8);
  t.is(r.rois.length, 32);
  t.deepEqual(Array.from(r.labels).map((l) => (l > 0 ? 1 : 0)), [1, 1, 1, 1, 1, 1, 0, 0]);
  const rois = Array.from({ length: 8 }, (_, i) => row(r.rois, i));
  rois.forEach((b, i) => t.is(r.labels[i], expectedLabel(b), `RoI ${b}`));
  t.true(rois.some((b) => b.join(',') === '10,10,50,50') && rois.some((b) => b.join(',') === '60,60,90,90'), 'gt boxes are RoIs');
  // Background deltas are zero; foreground deltas decode back to their gt box.
  for (let i = 6; i < 8; i++) t.deepEqual(row(r.deltas, i), [0, 0, 0, 0]);
  const back = decodeBoxes(r.rois.subarray(0, 24), r.deltas.subarray(0, 24), RCNN_BOX_WEIGHTS);
  for (let i = 0; i < 6; i++) {
    const target = r.labels[i] === 3 ? [10, 10, 50, 50] : [60, 60, 90, 90];
    t.true(row(back, i).every((v, c) => Math.abs(v - target[c]!) < 1e-4), `RoI ${rois[i]} decodes to ${row(back, i)}`);
  }
});

test('sampleRois: thresholds select foreground, background and ignored RoIs', (t) => {
  // Background only from [0.1, 0.5): the two far proposals drop out.
  const low = sampleRois(roiProposals, roiGt, roiLabels, new Rng(0), { negativeIouLow: 0.1 });
  t.deepEqual(Array.from(low.labels).map((l) => (l > 0 ? 1 : 0)), [1, 1, 1, 1, 1, 1]);
  // Foreground from 0.6: the 0.571 and 0.5 proposals fall between the thresholds and are ignored.
  const high = sampleRois(roiProposals, roiGt, roiLabels, new Rng(0), { positiveIou: 0.6 });
  const kept = Array.from({ length: high.labels.length }, (_, i) => row(high.rois, i).join(','));
  t.is(high.labels.length, 6);
  t.false(kept.includes('10,10,50,80') || kept.includes('10,10,30,50'));
  t.is(count(high.labels, 0), 2);
});

test('sampleRois: 128 RoIs, at most 32 foreground; fewer when candidates run out', (t) => {
  const rng = new Rng(4);
  const gt = f32([[100, 100, 200, 200]]);
  const labels = new Int32Array([1]);
  const near = (k: number) => Array.from({ length: k }, () => {
    const d = [rng.range(-3, 3), rng.range(-3, 3), rng.range(-3, 3), rng.range(-3, 3)];
    return [100 + d[0]!, 100 + d[1]!, 200 + d[2]!, 200 + d[3]!];
  });
  const far = (k: number) => Array.from({ length: k }, () => {
    const x = rng.range(300, 500);
    return [x, x, x + 50, x + 50];
  });
  const both = sampleRois(f32([...near(200), ...far(500)]), gt, labels, new Rng(1));
  t.is(both.labels.length, 128);
  t.is(count(both.labels, 1), 32);
  t.deepEqual(Array.from(both.labels.subarray(0, 32)), new Array(32).fill(1));
  const fewFg = sampleRois(f32(far(500)), gt, labels, new Rng(1));
  t.deepEqual([fewFg.labels.length, count(fewFg.labels, 1)], [128, 1], 'only the gt itself is foreground; background fills');
  const fewBg = sampleRois(f32([...near(200), ...far(10)]), gt, labels, new Rng(1));
  t.deepEqual([fewBg.labels.length, count(fewBg.labels, 1)], [42, 32]);
  const ious = iouMatrix(fewBg.rois, gt);
  for (let i = 0; i < 42; i++) t.is(ious[i]! >= 0.5, fewBg.labels[i] === 1, `RoI ${i} IoU ${ious[i]}`);
  // The same seed draws the same sample; another seed another.
  const proposals = f32([...near(200), ...far(500)]);
  const a = sampleRois(proposals, gt, labels, new Rng(9));
  t.deepEqual(a, sampleRois(proposals, gt, labels, new Rng(9)));
  t.notDeepEqual(a.rois, sampleRois(proposals, gt, labels, new Rng(10)).rois);
});

test('sampleRois: an image without objects gives background RoIs only', (t) => {
  const r = sampleRois(roiProposals, new Float32Array(0), new Int32Array(0), new Rng(0));
  t.is(r.labels.length, 6);
  t.true(r.labels.every((l) => l === 0));
  t.true(r.deltas.every((d) => d === 0));
  const none = sampleRois(new Float32Array(0), new Float32Array(0), new Int32Array(0), new Rng(0));
  t.deepEqual([none.rois.length, none.labels.length, none.deltas.length], [0, 0, 0]);
});

test('sampleRois: bad input is a UserError naming it', (t) => {
  t.throws(() => sampleRois(new Float32Array(6), roiGt, roiLabels, new Rng(0)), { instanceOf: UserError, message: /proposals.*length 6/ });
  t.throws(() => sampleRois(roiProposals, roiGt, new Int32Array([1]), new Rng(0)), { instanceOf: UserError, message: /2 ground-truth boxes but 1 labels/ });
  t.throws(() => sampleRois(roiProposals, roiGt, new Int32Array([0, 2]), new Rng(0)), { instanceOf: UserError, message: /label 0 of box 0/ });
  t.throws(() => sampleRois(roiProposals, roiGt, roiLabels, new Rng(0), { positiveFraction: 2 }), { instanceOf: UserError, message: /positiveFraction/ });
  t.throws(() => sampleRois(roiProposals, roiGt, roiLabels, new Rng(0), { negativeIouHigh: 0.7 }), { instanceOf: UserError, message: /negativeIouHigh/ });
});
