/**
 * Detection geometry on typed arrays: anchors (the classic py-faster-rcnn values, grid order), the box
 * coding round trip and its clamp, IoU on hand cases, clipping, and NMS / batched NMS against a
 * brute-force reference written here.
 */
import test from 'ava';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/util/random.js';
import { AnchorGenerator, DEFAULT_ANCHORS } from '../src/detection/anchors.js';
import {
  BBOX_CLIP,
  RCNN_BOX_WEIGHTS,
  RPN_BOX_WEIGHTS,
  batchedNms,
  boxCount,
  clipBoxes,
  decodeBoxes,
  encodeBoxes,
  iouMatrix,
  nms,
  type BoxWeights,
} from '../src/detection/boxes.js';

const f32 = (rows: number[][]) => new Float32Array(rows.flat());
const rowsOf = (a: ArrayLike<number>) => Array.from({ length: a.length / 4 }, (_, i) => Array.from(a).slice(4 * i, 4 * i + 4));

// ---------------------------------------------------------------------------------------------- anchors

test('anchors: base 16, ratios 0.5/1/2, scales 8/16/32 are the nine classic py-faster-rcnn anchors', (t) => {
  const g = new AnchorGenerator({ baseSize: 16, ratios: [0.5, 1, 2], scales: [8, 16, 32] });
  t.is(g.numAnchors, 9);
  t.deepEqual(rowsOf(g.baseAnchors()), [
    [-84, -40, 99, 55],
    [-176, -88, 191, 103],
    [-360, -184, 375, 199],
    [-56, -56, 71, 71],
    [-120, -120, 135, 135],
    [-248, -248, 263, 263],
    [-36, -80, 51, 95],
    [-80, -168, 95, 183],
    [-168, -344, 183, 359],
  ]);
});

test('anchors: the defaults are 15 per position (scales 2..32, ratios 0.5/1/2), ratio-major then scale', (t) => {
  const g = new AnchorGenerator();
  t.deepEqual(g.options, DEFAULT_ANCHORS);
  t.is(g.numAnchors, 15);
  const base = rowsOf(g.baseAnchors());
  t.is(base.length, 15);
  // ratio 0.5 (ws 23, hs 12), scale 2 then 4; ratio 1, scale 2; ratio 2 (ws 11, hs 22), scale 32.
  t.deepEqual(base[0], [7.5 - 22.5, 7.5 - 11.5, 7.5 + 22.5, 7.5 + 11.5]);
  t.deepEqual(base[1], [7.5 - 45.5, 7.5 - 23.5, 7.5 + 45.5, 7.5 + 23.5]);
  t.deepEqual(base[5], [-8, -8, 23, 23]);
  t.deepEqual(base[14], [-168, -344, 183, 359]);
  // All centered on the base window's center (7.5, 7.5).
  for (const [x1, y1, x2, y2] of base) t.deepEqual([(x1! + x2!) / 2, (y1! + y2!) / 2], [7.5, 7.5]);
});

test('anchors: sizes round halves to even as numpy does (base 18, ratio 0.5: hs = round(12.5) = 12)', (t) => {
  const g = new AnchorGenerator({ baseSize: 18, ratios: [0.5], scales: [1] });
  // ws = round(sqrt(18^2 / 0.5)) = round(25.46) = 25, hs = round(12.5) = 12; center 8.5.
  t.deepEqual(Array.from(g.baseAnchors()), [8.5 - 12, 8.5 - 5.5, 8.5 + 12, 8.5 + 5.5]);
});

test('anchors: grid is [H*W*A, 4] in (y, x, a) order, shifted by stride', (t) => {
  const g = new AnchorGenerator();
  const H = 7;
  const W = 11;
  const A = g.numAnchors;
  const grid = g.grid(H, W);
  t.is(grid.length, H * W * A * 4);
  t.is(boxCount(grid), H * W * A);
  const base = g.baseAnchors();
  for (const [y, x, a] of [
    [0, 0, 0],
    [0, 1, 0],
    [1, 0, 0],
    [2, 3, 4],
    [6, 10, 14],
  ] as const) {
    const k = (y * W + x) * A + a;
    const s = [x * 16, y * 16, x * 16, y * 16];
    t.deepEqual(Array.from(grid.subarray(4 * k, 4 * k + 4)), [0, 1, 2, 3].map((c) => base[4 * a + c]! + s[c]!), `anchor (${y}, ${x}, ${a})`);
  }
  t.is(g.grid(0, 5).length, 0);
  t.is(new AnchorGenerator({ stride: 8 }).grid(2, 2)[4 * 15 * 3], base[0]! + 8);
});

test('anchors: bad options and sizes are UserErrors naming the value', (t) => {
  t.throws(() => new AnchorGenerator({ ratios: [] }), { instanceOf: UserError, message: /ratios/ });
  t.throws(() => new AnchorGenerator({ scales: [8, -1] }), { instanceOf: UserError, message: /scales/ });
  t.throws(() => new AnchorGenerator({ stride: 0 }), { instanceOf: UserError, message: /stride/ });
  t.throws(() => new AnchorGenerator().grid(2.5, 3), { instanceOf: UserError, message: /2\.5x3/ });
});

// ------------------------------------------------------------------------------------------ box coding

function randomBoxes(rng: Rng, n: number, extent: number, minSize: number, maxSize: number): Float32Array {
  const out = new Float32Array(4 * n);
  for (let i = 0; i < n; i++) {
    const w = rng.range(minSize, maxSize);
    const h = rng.range(minSize, maxSize);
    const x = rng.range(0, extent);
    const y = rng.range(0, extent);
    out.set([x, y, x + w, y + h], 4 * i);
  }
  return out;
}

test('box coding: decode(encode(target)) = target within 1e-5 of the box scale, for both weightings', (t) => {
  const rng = new Rng(1);
  const ref = randomBoxes(rng, 500, 800, 4, 400);
  // Targets within a factor e^3 = 20 in size (decoding clamps at 62.5) and a few widths away.
  const tgt = new Float32Array(ref.length);
  for (let i = 0; i < ref.length; i += 4) {
    const w = (ref[i + 2]! - ref[i]!) * Math.exp(rng.range(-3, 3));
    const h = (ref[i + 3]! - ref[i + 1]!) * Math.exp(rng.range(-3, 3));
    const x = ref[i]! + rng.range(-2, 2) * w;
    const y = ref[i + 1]! + rng.range(-2, 2) * h;
    tgt.set([x, y, x + w, y + h], i);
  }
  for (const weights of [RPN_BOX_WEIGHTS, RCNN_BOX_WEIGHTS, [2, 3, 0.5, 7] as BoxWeights]) {
    const back = decodeBoxes(ref, encodeBoxes(ref, tgt, weights), weights);
    let worst = 0;
    for (let i = 0; i < tgt.length; i++) {
      const b = i & ~3;
      const scale = Math.max(1, Math.abs(tgt[i]!), tgt[b + 2]! - tgt[b]!, tgt[b + 3]! - tgt[b + 1]!);
      worst = Math.max(worst, Math.abs(back[i]! - tgt[i]!) / scale);
    }
    t.true(worst <= 1e-5, `weights ${weights}: worst error ${worst} of the box scale`);
    t.log(`weights ${weights}: worst round-trip error ${worst.toExponential(2)} of the box scale`);
  }
});

test('box coding: hand values of the center/size coding (dx = wx (gx - ax) / aw, dw = ww log(gw / aw))', (t) => {
  const ref = f32([[0, 0, 10, 20]]);
  const tgt = f32([[5, 0, 25, 20]]); // center x 15 vs 5, width 20 vs 10
  const d = encodeBoxes(ref, tgt, RCNN_BOX_WEIGHTS);
  t.true(Math.abs(d[0]! - 10) < 1e-6 && d[1] === 0 && Math.abs(d[2]! - 5 * Math.log(2)) < 1e-6 && d[3] === 0, `deltas ${Array.from(d)}`);
  t.deepEqual(Array.from(encodeBoxes(ref, ref, RPN_BOX_WEIGHTS)), [0, 0, 0, 0]);
});

test('box coding: decode clamps dw and dh at log(1000/16), in place when asked', (t) => {
  const ref = f32([[0, 0, 10, 10], [100, 100, 104, 108]]);
  const deltas = f32([[0, 0, 50, -3], [0.5, 0, 1, 100]]);
  const out = decodeBoxes(ref, deltas, RPN_BOX_WEIGHTS);
  const w0 = 10 * Math.exp(BBOX_CLIP); // 625
  const h0 = 10 * Math.exp(-3);
  const expected = [5 - w0 / 2, 5 - h0 / 2, 5 + w0 / 2, 5 + h0 / 2, 104 - 2 * Math.E, 104 - 8 * 62.5 / 2, 104 + 2 * Math.E, 104 + 8 * 62.5 / 2];
  for (let i = 0; i < 8; i++) t.true(Math.abs(out[i]! - expected[i]!) <= 1e-4 * Math.max(1, Math.abs(expected[i]!)), `coordinate ${i}: ${out[i]} vs ${expected[i]}`);
  t.true(Math.abs(w0 - 625) < 1e-9);
  // RCNN weights divide first: dw = 50 / 5 = 10 is still clamped.
  const rc = decodeBoxes(ref.subarray(0, 4), f32([[0, 0, 50, 0]]), RCNN_BOX_WEIGHTS);
  t.true(Math.abs(rc[2]! - rc[0]! - 625) < 1e-3);
  // Decoding into the deltas array gives the same boxes.
  const copy = deltas.slice();
  t.is(decodeBoxes(ref, copy, RPN_BOX_WEIGHTS, copy), copy);
  t.deepEqual(Array.from(copy), Array.from(out));
});

test('box coding: mismatched lengths and bad weights are UserErrors', (t) => {
  t.throws(() => encodeBoxes(new Float32Array(8), new Float32Array(4), RPN_BOX_WEIGHTS), { instanceOf: UserError, message: /2 reference boxes but 1/ });
  t.throws(() => decodeBoxes(new Float32Array(6), new Float32Array(6), RPN_BOX_WEIGHTS), { instanceOf: UserError, message: /multiple of 4/ });
  t.throws(() => decodeBoxes(new Float32Array(4), new Float32Array(4), [1, 1, 0, 1]), { instanceOf: UserError, message: /weights/ });
  t.throws(() => boxCount(new Float32Array(7)), { instanceOf: UserError, message: /length 7/ });
});

// ------------------------------------------------------------------------------------------------- IoU

test('IoU: disjoint, touching, contained, identical, partial, empty boxes', (t) => {
  const a = f32([
    [0, 0, 10, 10],
    [2, 2, 4, 4],
    [0, 0, 2, 2],
    [5, 5, 5, 9], // empty: zero width
  ]);
  const b = f32([
    [20, 20, 30, 30], // disjoint from all
    [10, 0, 20, 10], // touches a[0] along an edge
    [0, 0, 10, 10], // = a[0]
    [1, 1, 3, 3],
    [5, 5, 5, 9], // the same empty box
    [6, 6, 3, 3], // inverted: empty
  ]);
  const m = iouMatrix(a, b);
  t.is(m.length, 24);
  const at = (i: number, j: number) => m[i * 6 + j]!;
  for (let i = 0; i < 4; i++) t.is(at(i, 0), 0, `disjoint ${i}`);
  t.is(at(0, 1), 0, 'touching');
  t.is(at(0, 2), 1, 'identical');
  t.true(Math.abs(at(1, 2) - 4 / 100) < 1e-7, 'contained');
  t.true(Math.abs(at(2, 3) - 1 / 7) < 1e-7, 'partial');
  t.true(Math.abs(at(0, 3) - 4 / 100) < 1e-7, 'contained the other way');
  for (let j = 0; j < 6; j++) t.is(at(3, j), 0, `empty a vs ${j}`);
  for (let i = 0; i < 4; i++) t.is(at(i, 4), 0, `empty b vs ${i}`);
  for (let i = 0; i < 4; i++) t.is(at(i, 5), 0, `inverted b vs ${i}`);
  t.is(iouMatrix(new Float32Array(0), b).length, 0);
  t.is(iouMatrix(a, new Float32Array(0)).length, 0);
});

test('clipBoxes clamps to [0, width] x [0, height] in place', (t) => {
  const b = f32([[-5, -1, 120, 40], [10, 90, 20, 95]]);
  t.is(clipBoxes(b, 80, 100), b);
  t.deepEqual(rowsOf(b), [[0, 0, 100, 40], [10, 80, 20, 80]]);
});

// ------------------------------------------------------------------------------------------------- NMS

function refIou(b: Float32Array, i: number, j: number): number {
  const [ax1, ay1, ax2, ay2] = [b[4 * i]!, b[4 * i + 1]!, b[4 * i + 2]!, b[4 * i + 3]!];
  const [bx1, by1, bx2, by2] = [b[4 * j]!, b[4 * j + 1]!, b[4 * j + 2]!, b[4 * j + 3]!];
  const areaA = ax2 > ax1 && ay2 > ay1 ? (ax2 - ax1) * (ay2 - ay1) : 0;
  const areaB = bx2 > bx1 && by2 > by1 ? (bx2 - bx1) * (by2 - by1) : 0;
  if (areaA === 0 || areaB === 0) return 0;
  const iw = Math.max(0, Math.min(ax2, bx2) - Math.max(ax1, bx1));
  const ih = Math.max(0, Math.min(ay2, by2) - Math.max(ay1, by1));
  const inter = iw * ih;
  return inter / (areaA + areaB - inter);
}

/** Textbook NMS: repeatedly take the best remaining box and strike out every box overlapping it. */
function referenceNms(boxes: Float32Array, scores: Float32Array, threshold: number, maxOutput = Infinity, members?: number[]): number[] {
  const alive = new Set(members ?? Array.from({ length: scores.length }, (_, i) => i));
  const out: number[] = [];
  while (alive.size > 0 && out.length < maxOutput) {
    let best = -1;
    for (const i of alive) if (best < 0 || scores[i]! > scores[best]! || (scores[i] === scores[best] && i < best)) best = i;
    out.push(best);
    alive.delete(best);
    for (const j of [...alive]) if (refIou(boxes, best, j) > threshold) alive.delete(j);
  }
  return out;
}

/** Clustered boxes (so that NMS has work), a few empty ones, scores on a coarse grid (so that ties occur). */
function nmsCase(seed: number, n: number): { boxes: Float32Array; scores: Float32Array } {
  const rng = new Rng(seed);
  const boxes = new Float32Array(4 * n);
  const scores = new Float32Array(n);
  const centers = Array.from({ length: 8 }, () => [rng.range(0, 200), rng.range(0, 200)]);
  for (let i = 0; i < n; i++) {
    const [cx, cy] = centers[rng.int(centers.length)]!;
    const w = rng.range(5, 60);
    const h = rng.range(5, 60);
    const x = cx! + rng.range(-15, 15) - w / 2;
    const y = cy! + rng.range(-15, 15) - h / 2;
    boxes.set(rng.uniform() < 0.03 ? [x, y, x, y + h] : [x, y, x + w, y + h], 4 * i);
    scores[i] = Math.round(rng.uniform() * 50) / 50;
  }
  return { boxes, scores };
}

test('nms equals a brute-force reference on random boxes (several seeds, thresholds, output limits)', (t) => {
  let cases = 0;
  let suppressed = 0;
  for (const seed of [1, 2, 3, 4, 5]) {
    const { boxes, scores } = nmsCase(seed, 300);
    for (const threshold of [0, 0.3, 0.5, 0.7, 1]) {
      for (const maxOutput of [undefined, 10]) {
        const got = Array.from(nms(boxes, scores, threshold, maxOutput));
        t.deepEqual(got, referenceNms(boxes, scores, threshold, maxOutput), `seed ${seed}, threshold ${threshold}, maxOutput ${maxOutput}`);
        if (maxOutput === undefined) suppressed += 300 - got.length;
        cases++;
      }
    }
  }
  t.is(cases, 50);
  t.true(suppressed > 1000, `the cases suppress boxes (${suppressed})`);
});

test('nms: descending score, ties by lower index, IoU equal to the threshold is kept, empty boxes never suppress', (t) => {
  const boxes = f32([
    [0, 0, 10, 10],
    [0, 0, 10, 10],
    [0, 0, 10, 20], // IoU 0.5 with box 0
    [3, 3, 3, 8], // empty
    [3, 3, 3, 8], // empty
  ]);
  const scores = new Float32Array([0.5, 0.5, 0.4, 0.9, 0.8]);
  t.deepEqual(Array.from(nms(boxes, scores, 0.5)), [3, 4, 0, 2]);
  t.deepEqual(Array.from(nms(boxes, scores, 0.49)), [3, 4, 0]);
  t.deepEqual(Array.from(nms(boxes, scores, 0.5, 2)), [3, 4]);
  t.deepEqual(Array.from(nms(boxes, scores, 0.5, 0)), []);
  t.deepEqual(Array.from(nms(new Float32Array(0), new Float32Array(0), 0.5)), []);
  // Negative, tiny, signed-zero and NaN scores order as numbers do (NaN last, -0 ties with 0).
  const apart = f32([0, 1, 2, 3, 4, 5, 6].map((i) => [20 * i, 0, 20 * i + 10, 10]));
  const odd = new Float32Array([-0.5, 0.3, -2, 1e-30, -1e-30, NaN, -0]);
  t.deepEqual(Array.from(nms(apart, odd, 0.5)), [1, 3, 6, 4, 0, 2, 5]);
  // NaN counts as -Infinity: it ties with it, the lower index first.
  t.deepEqual(Array.from(nms(apart, new Float32Array([0, NaN, -0, -Infinity, Infinity, 0, -0]), 0.5)), [4, 0, 2, 5, 6, 1, 3]);
});

test('nms: bad arguments are UserErrors', (t) => {
  t.throws(() => nms(new Float32Array(8), new Float32Array(3), 0.5), { instanceOf: UserError, message: /2 boxes but 3 scores/ });
  t.throws(() => nms(new Float32Array(4), new Float32Array(1), 1.5), { instanceOf: UserError, message: /\[0, 1\]/ });
  t.throws(() => nms(new Float32Array(4), new Float32Array(1), 0.5, -1), { instanceOf: UserError, message: /maxOutput/ });
  t.throws(() => batchedNms(new Float32Array(4), new Float32Array(1), new Int32Array(2), 0.5), { instanceOf: UserError, message: /group/ });
});

test('batchedNms: groups are independent; equals per-group reference NMS merged by score', (t) => {
  // Two identical boxes in different groups are both kept; in one group one goes.
  const two = f32([[0, 0, 10, 10], [0, 0, 10, 10]]);
  const s = new Float32Array([0.9, 0.8]);
  t.deepEqual(Array.from(batchedNms(two, s, new Int32Array([0, 1]), 0.5)), [0, 1]);
  t.deepEqual(Array.from(batchedNms(two, s, new Int32Array([4, 4]), 0.5)), [0]);

  for (const seed of [7, 8, 9]) {
    const { boxes, scores } = nmsCase(seed, 400);
    const rng = new Rng(seed + 100);
    const groups = new Int32Array(400).map(() => [0, 3, 20, -1][rng.int(4)]!);
    for (const threshold of [0.3, 0.7]) {
      for (const maxOutput of [undefined, 25]) {
        const merged: number[] = [];
        for (const g of [0, 3, 20, -1]) {
          const members = Array.from(groups.keys()).filter((i) => groups[i] === g);
          merged.push(...referenceNms(boxes, scores, threshold, Infinity, members));
        }
        merged.sort((i, j) => scores[j]! - scores[i]! || i - j);
        const expected = merged.slice(0, maxOutput ?? merged.length);
        t.deepEqual(Array.from(batchedNms(boxes, scores, groups, threshold, maxOutput)), expected, `seed ${seed}, threshold ${threshold}, maxOutput ${maxOutput}`);
        // More survive than in one group: boxes of different groups do not suppress each other.
        t.true(expected.length >= nms(boxes, scores, threshold, maxOutput).length);
      }
    }
  }
});

test('nms on 6000 proposals of a 600x1000 image, 300 kept (time logged, not asserted)', (t) => {
  const rng = new Rng(42);
  const n = 6000;
  const boxes = randomBoxes(rng, n, 900, 16, 300);
  clipBoxes(boxes, 600, 1000);
  const scores = new Float32Array(n).map(() => rng.uniform());
  nms(boxes, scores, 0.7, 300); // warm up the JIT
  const runs = 20;
  const start = process.hrtime.bigint();
  let kept = 0;
  for (let r = 0; r < runs; r++) kept = nms(boxes, scores, 0.7, 300).length;
  const ms = Number(process.hrtime.bigint() - start) / 1e6 / runs;
  t.is(kept, 300);
  t.log(`nms: 6000 boxes, IoU 0.7, 300 kept in ${ms.toFixed(2)} ms`);
  const anchors = new AnchorGenerator().grid(38, 63);
  const gt = randomBoxes(rng, 10, 900, 30, 300);
  iouMatrix(anchors, gt);
  const start2 = process.hrtime.bigint();
  const m = iouMatrix(anchors, gt);
  t.log(`iouMatrix: ${boxCount(anchors)} anchors x 10 boxes in ${(Number(process.hrtime.bigint() - start2) / 1e6).toFixed(2)} ms`);
  t.is(m.length, boxCount(anchors) * 10);
});
