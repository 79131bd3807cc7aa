/**
 * The VOC detection metric against hand-computed APs (difficult objects, duplicates, the IoU threshold,
 * classes without detections or ground truth, tied scores, the 11 recall thresholds), the devkit's
 * result files (round trip and malformed input), and, where python3 with numpy is installed, a numpy
 * re-implementation of the devkit's procedure on random data.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  averagePrecision07,
  averagePrecisionArea,
  evaluateVoc,
  formatVocResult,
  readVocDetections,
  recallThresholds07,
  vocIou,
  vocResultJson,
  writeVocDetections,
  type Detection,
  type VocEvalResult,
  type VocGroundImage,
} from '../src/detection/voc_eval.js';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/util/random.js';
import { tempDir } from './helpers/fixtures.js';

type Box = [number, number, number, number];

const image = (id: string, objects: [label: number, box: Box, difficult?: boolean][]): VocGroundImage => ({
  id,
  objects: objects.map(([label, box, difficult]) => ({ label, box, difficult: difficult ?? false })),
});
const det = (imageId: string, label: number, score: number, box: Box): Detection => ({ imageId, label, score, box });

const close = (t: { true: (v: boolean, m?: string) => void }, actual: number, expected: number, what: string, tol = 1e-12) =>
  t.true(Math.abs(actual - expected) <= tol, `${what}: ${actual}, expected ${expected}`);

const CAT: readonly string[] = ['cat'];

test('vocIou counts pixels inclusively (+1), touching boxes share a column, disjoint ones 0', (t) => {
  // [1,10] x [1,10] is 10 x 10 = 100 pixels; [6,15] overlaps it in columns 6..10: 5 x 10 = 50 pixels.
  close(t, vocIou([1, 1, 10, 10], [6, 1, 15, 10]), 50 / 150, 'half-shifted');
  close(t, vocIou([1, 1, 10, 10], [10, 1, 19, 10]), 10 / 190, 'sharing column 10');
  t.is(vocIou([1, 1, 10, 10], [11, 1, 20, 10]), 0);
  t.is(vocIou([1, 1, 10, 10], [1, 1, 10, 10]), 1);
  t.is(vocIou([1, 1, 10, 10], [1, 1, 10, 5]), 0.5, 'exactly one half');
});

test('one class over two images: the precision/recall sequence and both APs by hand', (t) => {
  // Four non-difficult cats: A1, A2 in image a; B1, B2 in image b. In score order the detections are
  //   0.95 a on A1          TP  tp=1 fp=0  R=1/4  P=1
  //   0.90 b at A2's place  FP  (no cat there in image b)  R=1/4  P=1/2
  //   0.80 b on B1          TP  tp=2 fp=1  R=1/2  P=2/3
  //   0.70 a on A1 again    FP  (duplicate)  R=1/2  P=1/2
  //   0.60 a far away       FP  R=1/2  P=2/5
  //   0.50 b on B2          TP  tp=3 fp=3  R=3/4  P=1/2
  // 11-point: t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3; t = .6, .7 -> 1/2; t = .8, .9, 1 -> 0:
  //   AP07 = (3 + 3 * 2/3 + 2 * 1/2) / 11 = 6/11.
  // Area: envelope 1 over R in (0, 1/4], 2/3 over (1/4, 1/2], 1/2 over (1/2, 3/4], 0 after:
  //   AP = 1/4 + 1/4 * 2/3 + 1/4 * 1/2 = 13/24.
  const ground = [image('a', [[0, [1, 1, 10, 10]], [0, [21, 1, 30, 10]]]), image('b', [[0, [1, 1, 10, 10]], [0, [41, 41, 60, 60]]])];
  const dets = [
    det('a', 0, 0.6, [100, 100, 120, 120]),
    det('b', 0, 0.9, [21, 1, 30, 10]),
    det('b', 0, 0.5, [41, 41, 60, 60]),
    det('a', 0, 0.95, [1, 1, 10, 10]),
    det('a', 0, 0.7, [1, 1, 10, 10]),
    det('b', 0, 0.8, [1, 1, 10, 10]),
  ];
  const r = evaluateVoc(ground, dets, CAT);
  close(t, r.classes.cat!.ap07, 6 / 11, 'AP07');
  close(t, r.classes.cat!.ap, 13 / 24, 'AP');
  t.is(r.classes.cat!.gt, 4);
  t.is(r.classes.cat!.detections, 6);
  close(t, r.map07, 6 / 11, 'mAP07');
  close(t, r.map, 13 / 24, 'mAP');
  // The same sequence given to the AP functions directly.
  const recall = [1 / 4, 1 / 4, 1 / 2, 1 / 2, 1 / 2, 3 / 4];
  const precision = [1, 1 / 2, 2 / 3, 1 / 2, 2 / 5, 1 / 2];
  close(t, averagePrecision07(recall, precision), 6 / 11, 'averagePrecision07');
  close(t, averagePrecisionArea(recall, precision), 13 / 24, 'averagePrecisionArea');
  // The inputs are not changed: which boxes are taken is the evaluator's own state.
  const before = JSON.stringify([ground, dets]);
  t.deepEqual(evaluateVoc(ground, dets, CAT), r, 'a second evaluation');
  t.is(JSON.stringify([ground, dets]), before);
});

test('the 11 recall thresholds: the devkit reaches 0.6 with a recall of 3/5, voc_eval.py (numpy arange) does not', (t) => {
  // Five cats; detections TP TP TP FP TP: R = .2 .4 .6 .6 .8, P = 1 1 1 3/4 4/5.
  // Devkit (MATLAB 0:0.1:1, t(7) = 1 - 4 * 0.1 = 0.6 exactly): t = 0 .. .6 -> 1 (7 points), t = .7, .8 -> 4/5:
  //   AP07 = (7 + 2 * 4/5) / 11 = 8.6/11.
  // numpy: t(7) = 6 * 0.1 = 0.6000000000000001 > 3/5, so t = .6 .. .8 -> 4/5: AP07 = (6 + 3 * 4/5) / 11 = 8.4/11.
  // Area (same for both): 3/5 * 1 + 1/5 * 4/5 = 0.76.
  const cats: [number, Box][] = [0, 1, 2, 3, 4].map((k) => [0, [1 + 20 * k, 1, 10 + 20 * k, 10]]);
  const ground = [image('a', cats)];
  const dets = [
    det('a', 0, 0.9, cats[0]![1]),
    det('a', 0, 0.8, cats[1]![1]),
    det('a', 0, 0.7, cats[2]![1]),
    det('a', 0, 0.6, [200, 200, 210, 210]),
    det('a', 0, 0.5, cats[3]![1]),
  ];
  const devkit = evaluateVoc(ground, dets, CAT);
  const py = evaluateVoc(ground, dets, CAT, { rule: 'voc_eval.py' });
  close(t, devkit.classes.cat!.ap07, 8.6 / 11, 'devkit AP07');
  close(t, py.classes.cat!.ap07, 8.4 / 11, 'voc_eval.py AP07');
  close(t, devkit.classes.cat!.ap, 0.76, 'devkit AP');
  close(t, py.classes.cat!.ap, 0.76, 'voc_eval.py AP');
  t.deepEqual(recallThresholds07('devkit'), [0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]);
  t.deepEqual(recallThresholds07('voc_eval.py'), [0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6000000000000001, 0.7000000000000001, 0.8, 0.9, 1]);
});

test('difficult objects: detections on them are neither TP nor FP, and they are not counted in recall', (t) => {
  // Cat A is non-difficult, cat D difficult. Detections: on D, on A, on D again, far away.
  // Ignored, TP, ignored, FP: R = 0 1 1 1 (over 1 object), P = 0 1 1 1/2 -> AP07 = AP = 1.
  // (Were the ones on D false positives, P at A would be 1/2 and the AP 1/2.)
  const ground = [image('a', [[0, [1, 1, 10, 10]], [0, [31, 1, 40, 10], true]])];
  const withDifficult = [
    det('a', 0, 0.9, [31, 1, 40, 10]),
    det('a', 0, 0.8, [1, 1, 10, 10]),
    det('a', 0, 0.7, [32, 1, 40, 10]),
    det('a', 0, 0.6, [100, 100, 110, 110]),
  ];
  const r = evaluateVoc(ground, withDifficult, CAT);
  t.is(r.classes.cat!.gt, 1, 'the difficult cat is not in the recall denominator');
  close(t, r.classes.cat!.ap07, 1, 'AP07');
  close(t, r.classes.cat!.ap, 1, 'AP');
  const without = evaluateVoc(ground, [withDifficult[1]!, withDifficult[3]!], CAT);
  t.deepEqual(without.classes.cat, { ...r.classes.cat!, detections: 2 }, 'the detections on the difficult cat change nothing');

  // Found only the non-difficult cat: recall 1 (were D counted, recall 1/2 and AP 1/2).
  const one = evaluateVoc(ground, [det('a', 0, 0.9, [1, 1, 10, 10])], CAT);
  close(t, one.classes.cat!.ap, 1, 'AP with the difficult cat missed');
  close(t, one.classes.cat!.ap07, 1, 'AP07 with the difficult cat missed');

  // Every detection on the difficult cat: precision 0/0 at each, taken as 0; the cat A is missed: AP 0.
  const onlyDifficult = evaluateVoc(ground, [det('a', 0, 0.9, [31, 1, 40, 10])], CAT);
  t.is(onlyDifficult.classes.cat!.ap07, 0);
  t.is(onlyDifficult.classes.cat!.ap, 0);
});

test('duplicates are false positives, and a duplicate does not fall back to the next-best box', (t) => {
  // Cats A = [1,1,10,10] and B = [4,1,13,10]. The detection [2,1,11,10] overlaps A by 90/110 and
  // B by 80/120 (both above 0.5); A is the better match and already taken, so it is a duplicate.
  // TP FP TP over 2 cats: R = 1/2 1/2 1, P = 1 1/2 2/3.
  //   AP07 = (6 * 1 + 5 * 2/3) / 11 = 28/33; AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
  const ground = [image('a', [[0, [1, 1, 10, 10]], [0, [4, 1, 13, 10]]])];
  const dets = [det('a', 0, 0.9, [1, 1, 10, 10]), det('a', 0, 0.8, [2, 1, 11, 10]), det('a', 0, 0.7, [4, 1, 13, 10])];
  close(t, vocIou([2, 1, 11, 10], [1, 1, 10, 10]), 90 / 110, 'overlap with A');
  close(t, vocIou([2, 1, 11, 10], [4, 1, 13, 10]), 80 / 120, 'overlap with B');
  const r = evaluateVoc(ground, dets, CAT);
  close(t, r.classes.cat!.ap07, 28 / 33, 'AP07');
  close(t, r.classes.cat!.ap, 5 / 6, 'AP');
});

test('an overlap of exactly 0.5 matches in the devkit (>=) and not in voc_eval.py (>)', (t) => {
  const ground = [image('a', [[0, [1, 1, 10, 10]]])];
  const dets = [det('a', 0, 0.9, [1, 1, 10, 5])]; // 50 of 100 pixels: IoU 0.5 exactly
  const devkit = evaluateVoc(ground, dets, CAT);
  t.is(devkit.classes.cat!.ap, 1);
  t.is(devkit.classes.cat!.ap07, 1);
  const py = evaluateVoc(ground, dets, CAT, { rule: 'voc_eval.py' });
  t.is(py.classes.cat!.ap, 0);
  t.is(py.classes.cat!.ap07, 0);
  t.is(evaluateVoc(ground, dets, CAT, { iou: 0.6 }).classes.cat!.ap, 0, 'a higher threshold');
  t.is(evaluateVoc(ground, dets, CAT, { iou: 0.4, rule: 'voc_eval.py' }).classes.cat!.ap, 1, 'a lower threshold');
});

test('a class without detections has AP 0 and is in the mean; one without ground truth is NaN and left out', (t) => {
  const classes = ['cat', 'dog', 'bird'];
  const ground = [image('a', [[0, [1, 1, 10, 10]], [1, [21, 1, 30, 10]]]), image('b', [[2, [1, 1, 10, 10], true]])];
  const dets = [det('a', 0, 0.9, [1, 1, 10, 10]), det('b', 2, 0.8, [1, 1, 10, 10])];
  const r = evaluateVoc(ground, dets, classes);
  t.deepEqual(Object.keys(r.classes), classes, 'keyed in class order');
  t.deepEqual(r.classes.cat, { ap07: 1, ap: 1, gt: 1, detections: 1 });
  t.deepEqual(r.classes.dog, { ap07: 0, ap: 0, gt: 1, detections: 0 });
  t.deepEqual(r.classes.bird, { ap07: NaN, ap: NaN, gt: 0, detections: 1 }, 'only a difficult bird: no ground truth to count');
  t.is(r.map07, 0.5);
  t.is(r.map, 0.5);
  t.deepEqual(vocResultJson(r), {
    map07: 0.5,
    map: 0.5,
    classes: { cat: { ap07: 1, ap: 1 }, dog: { ap07: 0, ap: 0 }, bird: { ap07: null, ap: null } },
  });
  t.is(JSON.stringify(vocResultJson(r)), '{"map07":0.5,"map":0.5,"classes":{"cat":{"ap07":1,"ap":1},"dog":{"ap07":0,"ap":0},"bird":{"ap07":null,"ap":null}}}');

  const none = evaluateVoc([image('a', [])], [], classes);
  t.true(Number.isNaN(none.map) && Number.isNaN(none.map07), 'no ground truth at all: NaN means');
  t.deepEqual(vocResultJson(none).map, null);
});

test('tied scores keep their input order (a stable sort), so the result does not depend on the sort', (t) => {
  // One cat; X on it and Y far away, both scored 0.5.
  // [X, Y]: R = 1 1, P = 1 1/2 -> AP 1.  [Y, X]: R = 0 1, P = 0 1/2 -> AP07 = AP = 1/2.
  const ground = [image('a', [[0, [1, 1, 10, 10]]])];
  const x = det('a', 0, 0.5, [1, 1, 10, 10]);
  const y = det('a', 0, 0.5, [50, 50, 60, 60]);
  const first = evaluateVoc(ground, [x, y], CAT).classes.cat!;
  t.is(first.ap, 1);
  t.is(first.ap07, 1);
  const second = evaluateVoc(ground, [y, x], CAT).classes.cat!;
  close(t, second.ap, 0.5, 'AP');
  close(t, second.ap07, 0.5, 'AP07');
  // Ties among many: always the same answer for the same input.
  const many = Array.from({ length: 40 }, (_, i) => (i % 3 ? y : x));
  t.deepEqual(evaluateVoc(ground, many, CAT), evaluateVoc(ground, many, CAT));
});

test('bad input is a UserError naming the image, detection or value', (t) => {
  const ground = [image('a', [[0, [1, 1, 10, 10]]])];
  const err = (f: () => unknown, pattern: RegExp) => {
    const e = t.throws(f, { instanceOf: UserError });
    t.regex(e!.message, pattern);
  };
  err(() => evaluateVoc(ground, [det('zz', 0, 0.5, [1, 1, 2, 2])], CAT), /detection 1 is for image 'zz', which is not in the ground truth/);
  err(() => evaluateVoc(ground, [det('a', 1, 0.5, [1, 1, 2, 2])], CAT), /detection 1: label 1 is not a class index \(0\.\.0\)/);
  err(() => evaluateVoc(ground, [det('a', 0, NaN, [1, 1, 2, 2])], CAT), /score NaN/);
  err(() => evaluateVoc(ground, [det('a', 0, 0.5, [1, 1, 2, Infinity])], CAT), /box/);
  err(() => evaluateVoc([...ground, image('a', [])], [], CAT), /image 'a' twice/);
  err(() => evaluateVoc([image('b', [[3, [1, 1, 2, 2]]])], [], CAT), /image 'b', object 1: label 3/);
  err(() => evaluateVoc(ground, [], CAT, { iou: 1.5 }), /IoU threshold 1.5/);
  err(() => evaluateVoc(ground, [], ['cat', 'cat']), /'cat' twice/);
});

test('formatVocResult: one row per class in percent, "-" without ground truth, and the mean over the counted classes', (t) => {
  const ground = [image('a', [[0, [1, 1, 10, 10]], [1, [21, 1, 30, 10]]])];
  const r = evaluateVoc(ground, [det('a', 0, 0.9, [1, 1, 10, 10])], ['cat', 'dog', 'bird']);
  const lines = formatVocResult(r).trimEnd().split('\n');
  t.is(lines.length, 5);
  t.regex(lines[0]!, /^class\s+gt\s+detections\s+AP \(VOC07\)\s+AP$/);
  t.regex(lines[1]!, /^cat\s+1\s+1\s+100\.00\s+100\.00$/);
  t.regex(lines[2]!, /^dog\s+1\s+0\s+0\.00\s+0\.00$/);
  t.regex(lines[3]!, /^bird\s+0\s+0\s+-\s+-$/);
  t.regex(lines[4]!, /^mean \(2 of 3 classes\)\s+50\.00\s+50\.00$/);
});

test('result files: written per class (empty ones too), read back to the same detections and the same APs', async (t) => {
  const dir = join(tempDir(t), 'results');
  const classes = ['cat', 'dog', 'bird'];
  const dets = [
    det('000005', 0, 0.1 + 0.2, [1.5, 2.25, 100.125, 50]),
    det('000007', 2, 0.9, [10, 10, 20, 20]),
    det('000005', 0, 1e-7, [3, 4, 5, 6]),
    det('000009', 2, 0.9, [-1, 0, 1e3, 2]),
  ];
  const paths = await writeVocDetections(dir, dets, classes);
  t.deepEqual(paths, classes.map((c) => join(dir, `comp4_det_test_${c}.txt`)));
  t.deepEqual(readdirSync(dir).sort(), ['comp4_det_test_bird.txt', 'comp4_det_test_cat.txt', 'comp4_det_test_dog.txt'], 'no temporary file left');
  t.is(readFileSync(paths[0]!, 'utf8'), '000005 0.30000000000000004 1.5 2.25 100.125 50\n000005 1e-7 3 4 5 6\n');
  t.is(readFileSync(paths[1]!, 'utf8'), '');

  const back = await readVocDetections(dir, classes);
  t.deepEqual(back.detections, [dets[0], dets[2], dets[1], dets[3]], 'class order, then file order');
  t.deepEqual(back.missing, []);
  t.is(back.skipped, 0);

  const ground = [
    image('000005', [[0, [1, 2, 100, 50]], [1, [5, 5, 9, 9]]]),
    image('000007', [[2, [10, 10, 20, 21]]]),
    image('000009', []),
  ];
  t.deepEqual(evaluateVoc(ground, back.detections, classes), evaluateVoc(ground, dets, classes));

  const other = await writeVocDetections(dir, dets, classes, { prefix: 'comp3_det_val_' });
  t.is(other[2], join(dir, 'comp3_det_val_bird.txt'));
  t.deepEqual((await readVocDetections(dir, classes, { prefix: 'comp3_det_val_' })).detections, back.detections);

  const rejected = await t.throwsAsync(writeVocDetections(dir, [det('has space', 0, 0.5, [1, 1, 2, 2])], classes), { instanceOf: UserError });
  t.regex(rejected!.message, /image id "has space"/);
  // A '/' in a class name (Fashion-MNIST's T-shirt/top) becomes '_' in its file name; '..' cannot name one.
  t.deepEqual(await writeVocDetections(dir, [], ['a/b']), [join(dir, 'comp4_det_test_a_b.txt')]);
  await t.throwsAsync(writeVocDetections(dir, [], ['..']), { instanceOf: UserError, message: /class name '\.\.'/ });
});

test('reading result files: a malformed line names the file and line; unknown images; missing files', async (t) => {
  const dir = tempDir(t);
  const cat = join(dir, 'comp4_det_test_cat.txt');
  const classes = ['cat', 'dog'];
  const read = (options = {}) => readVocDetections(dir, classes, options);
  const fails = async (content: string, pattern: RegExp, options = {}) => {
    writeFileSync(cat, content);
    const e = await t.throwsAsync(read(options), { instanceOf: UserError });
    t.regex(e!.message, pattern);
  };

  await fails('a 0.5 1 1 2 2\nb 0.5 1 1 2\n', new RegExp(`^${cat.replace(/[.]/g, '\\.')}:2: expected '<image id> <score> <x1> <y1> <x2> <y2>', got 'b 0.5 1 1 2'$`));
  await fails('a high 1 1 2 2\n', /comp4_det_test_cat\.txt:1: score 'high' is not a finite number/);
  await fails('\n\na 0.5 0x10 1 2 2\n', /comp4_det_test_cat\.txt:3: x1 '0x10'/);
  await fails('a 0.5 1 1 2 nan\n', /:1: y2 'nan'/);
  await fails('a 0.5 1 1 2 2 7\n', /:1: expected/);
  await fails('zz 0.5 1 1 2 2\n', /comp4_det_test_cat\.txt:1: image 'zz' is not in the split/, { imageIds: ['a'] });

  // White space, CRLF and blank lines are tolerated; the dog file is missing: no dog detections.
  writeFileSync(cat, '\uFEFFa  0.5\t1 1 2 2\r\n\r\nzz 0.25 1 1 2 2\r\n');
  const r = await read({ imageIds: ['a'], allowUnknownImages: true });
  t.deepEqual(r.detections, [det('a', 0, 0.5, [1, 1, 2, 2])]);
  t.deepEqual(r.missing, ['dog']);
  t.is(r.skipped, 1);
  t.is((await read()).detections.length, 2, 'without imageIds every line is kept');

  const empty = join(dir, 'empty');
  mkdirSync(empty);
  await t.throwsAsync(readVocDetections(empty, classes), { instanceOf: UserError, message: /no VOC result file in .*comp4_det_test_cat\.txt/ });
  await t.throwsAsync(readVocDetections(join(dir, 'nowhere'), classes), { instanceOf: UserError, message: /is not a directory/ });
  mkdirSync(join(dir, 'comp4_det_test_dog.txt'));
  await t.throwsAsync(read(), { instanceOf: UserError, message: /cannot read .*comp4_det_test_dog\.txt/ });
});

// An independent numpy re-implementation of the devkit's procedure (the structure of voc_eval.py:
// vectorized overlaps, argmax, cumulative sums), run under both rules.
const PYTHON_VOC = String.raw`
import json, sys
import numpy as np
data = json.load(sys.stdin)
thr = data['iou']
out = {}
for rule in ('devkit', 'voc_eval.py'):
    if rule == 'devkit':
        ts = np.concatenate((np.arange(6) * 0.1, 1 - np.arange(4, -1, -1) * 0.1))
    else:
        ts = np.arange(0., 1.1, 0.1)
    res = []
    for c in range(len(data['classes'])):
        recs = {}
        npos = 0
        for im in data['ground']:
            objs = [o for o in im['objects'] if o['label'] == c]
            diff = np.array([o['difficult'] for o in objs], dtype=bool)
            npos += int((~diff).sum())
            recs[im['id']] = {'bbox': np.array([o['box'] for o in objs], dtype=float).reshape(-1, 4), 'difficult': diff, 'det': [False] * len(objs)}
        dets = [d for d in data['detections'] if d['label'] == c]
        if npos == 0:
            res.append(None)
            continue
        conf = np.array([d['score'] for d in dets], dtype=float)
        order = np.argsort(-conf, kind='stable')
        tp = np.zeros(len(dets))
        fp = np.zeros(len(dets))
        for i, k in enumerate(order):
            R = recs[dets[k]['imageId']]
            bb = np.array(dets[k]['box'], dtype=float)
            BBGT = R['bbox']
            ovmax = -np.inf
            if BBGT.size > 0:
                iw = np.maximum(np.minimum(BBGT[:, 2], bb[2]) - np.maximum(BBGT[:, 0], bb[0]) + 1., 0.)
                ih = np.maximum(np.minimum(BBGT[:, 3], bb[3]) - np.maximum(BBGT[:, 1], bb[1]) + 1., 0.)
                inters = iw * ih
                uni = (bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) + (BBGT[:, 2] - BBGT[:, 0] + 1.) * (BBGT[:, 3] - BBGT[:, 1] + 1.) - inters
                ov = inters / uni
                ovmax = np.max(ov)
                jmax = np.argmax(ov)
            hit = ovmax >= thr if rule == 'devkit' else ovmax > thr
            if hit:
                if not R['difficult'][jmax]:
                    if not R['det'][jmax]:
                        tp[i] = 1.
                        R['det'][jmax] = True
                    else:
                        fp[i] = 1.
            else:
                fp[i] = 1.
        fp = np.cumsum(fp)
        tp = np.cumsum(tp)
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap07 = 0.
        for t in ts:
            ap07 += (0. if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])) / 11.
        mrec = np.concatenate(([0.], rec, [1.]))
        mpre = np.concatenate(([0.], prec, [0.]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        res.append([float(ap07), float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))])
    out[rule] = res
print(json.dumps(out))
`;

const hasNumpy = spawnSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;

/** Random VOC-like data on a small integer grid, so that exact overlaps of 0.5, ties and duplicates occur. */
function randomCase(rng: Rng, classes: number) {
  const ground: VocGroundImage[] = [];
  const detections: Detection[] = [];
  const box = (): Box => {
    const x = 1 + rng.int(40);
    const y = 1 + rng.int(40);
    return [x, y, x + 3 + rng.int(20), y + 3 + rng.int(20)];
  };
  for (let i = 0; i < 12; i++) {
    const id = `img${i}`;
    const objects = Array.from({ length: rng.int(6) }, () => ({ label: rng.int(classes), box: box(), difficult: rng.uniform() < 0.2 }));
    ground.push({ id, objects });
    const score = () => (rng.uniform() < 0.3 ? Math.round(rng.uniform() * 10) / 10 : rng.uniform());
    for (const o of objects) {
      for (let k = rng.int(3); k > 0; k--) {
        const j = () => rng.int(7) - 3;
        const b = o.box;
        detections.push({ imageId: id, label: rng.uniform() < 0.85 ? o.label : rng.int(classes), score: score(), box: [b[0] + j(), b[1] + j(), b[2] + j(), b[3] + j()] });
      }
    }
    for (let k = rng.int(4); k > 0; k--) detections.push({ imageId: id, label: rng.int(classes), score: score(), box: box() });
  }
  return { ground, detections };
}

(hasNumpy ? test : test.skip)('cross-check against a numpy re-implementation of the devkit on random data, both rules', (t) => {
  const classes = ['a', 'b', 'c', 'd'];
  const rng = new Rng(20240607);
  for (let trial = 0; trial < 30; trial++) {
    const { ground, detections } = randomCase(rng, classes.length);
    const iou = trial % 3 === 0 ? 0.3 : 0.5;
    const py = spawnSync('python3', ['-c', PYTHON_VOC], { input: JSON.stringify({ classes, ground, detections, iou }), encoding: 'utf8' });
    t.is(py.status, 0, py.stderr);
    const expected = JSON.parse(py.stdout) as Record<string, ([number, number] | null)[]>;
    for (const rule of ['devkit', 'voc_eval.py'] as const) {
      const r: VocEvalResult = evaluateVoc(ground, detections, classes, { iou, rule });
      classes.forEach((name, c) => {
        const e = expected[rule]![c];
        const got = r.classes[name]!;
        if (e === null) t.true(Number.isNaN(got.ap) && Number.isNaN(got.ap07), `trial ${trial} ${rule} ${name}: no ground truth`);
        else {
          close(t, got.ap07, e![0], `trial ${trial} ${rule} ${name} AP07`);
          close(t, got.ap, e![1], `trial ${trial} ${rule} ${name} AP`);
        }
      });
    }
  }
});
