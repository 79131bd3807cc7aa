/**
 * The detector's two implementations against each other: the selection steps in JavaScript
 * (proposals.ts selectProposals / selectDetections) against their ONNX nodes run in ONNX Runtime, and
 * the whole exported graph against the tfjs detector on three image sizes and batch 1 and 2. Also the
 * counts of the definition, the feature contract, and tensor leaks.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend } from './helpers/backend.js';
import { createDetector } from '../src/detection/detector.js';
import { checkDetectorExport, exportDetector, runDetectorSession, smoothImages } from '../src/detection/export.js';
import { emitDetections, emitImageInfo, emitProposals, selectDetections, selectProposals } from '../src/detection/proposals.js';
import { AnchorGenerator } from '../src/detection/anchors.js';
import { RCNN_BOX_WEIGHTS } from '../src/detection/boxes.js';
import { OnnxBuilder, encodeModel } from '../src/onnx/export.js';
import { DataType, valueInfo } from '../src/onnx/proto.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { countNetwork } from '../src/models/count.js';
import { ResNet } from '../src/models/resnet.js';
import { getModelEntry } from '../src/models/registry.js';
import { Rng } from '../src/util/random.js';

test.before(async () => {
  await setupBackend();
});

const randn = (n: number, rng: Rng, scale = 1) => Float32Array.from({ length: n }, () => scale * rng.normal());

/** A graph of just the proposal step: inputs logits [N, A, h, w], deltas [N, 4A, h, w], features, input. */
function proposalGraph(anchors: AnchorGenerator, p: { preNms: number; postNms: number; nmsThreshold: number; minSize: number }): Uint8Array {
  const b = new OnnxBuilder(() => new Float32Array(0), { foldBatchNorm: false, fp16: false, epsilon: 1e-5 });
  const info = emitImageInfo(b, 'input');
  const { rois, batchIndices } = emitProposals(b, 'logits', 'deltas', 'features', info, anchors, p);
  b.op('Identity', [rois], 'rois', {}, ['rois']);
  b.op('Identity', [batchIndices], 'batch', {}, ['batch_indices']);
  return encodeModel({
    name: 'proposals',
    builder: b,
    inputs: [
      valueInfo('input', DataType.FLOAT, ['n', 3, 'H', 'W']),
      valueInfo('features', DataType.FLOAT, ['n', 1, 'h', 'w']),
      valueInfo('logits', DataType.FLOAT, ['n', anchors.numAnchors, 'h', 'w']),
      valueInfo('deltas', DataType.FLOAT, ['n', 4 * anchors.numAnchors, 'h', 'w']),
    ],
    outputs: [valueInfo('rois', DataType.FLOAT, ['r', 4]), valueInfo('batch_indices', DataType.INT64, ['r'])],
    metadata: {},
  });
}

/** NHWC [N, h, w, C] -> NCHW. */
function nchw(x: Float32Array, n: number, h: number, w: number, c: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < n; i++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) for (let k = 0; k < c; k++) out[((i * c + k) * h + y) * w + xx] = x[((i * h + y) * w + xx) * c + k]!;
  return out;
}

test.serial('proposals: the ONNX nodes select what selectProposals selects (top-k clamped to the anchors, min size, NMS, images in order)', async (t) => {
  const anchors = new AnchorGenerator();
  const A = anchors.numAnchors;
  const rng = new Rng(3);
  const cases = [
    { n: 1, h: 6, w: 9, p: { preNms: 6000, postNms: 300, nmsThreshold: 0.7, minSize: 16 } }, // k clamped: 810 anchors < 6000
    { n: 2, h: 5, w: 7, p: { preNms: 200, postNms: 50, nmsThreshold: 0.5, minSize: 40 } }, // k below the anchors, many small boxes dropped
  ];
  for (const c of cases) {
    const H = 16 * c.h;
    const W = 16 * c.w;
    const logits = randn(c.n * c.h * c.w * A, rng, 2); // NHWC order (y, x, a)
    const deltas = randn(c.n * c.h * c.w * A * 4, rng, 0.3);
    const session = await createSession(proposalGraph(anchors, c.p));
    try {
      const out = await runSession(session, {
        input: { type: 'float32', data: new Float32Array(c.n * 3 * H * W), dims: [c.n, 3, H, W] },
        features: { type: 'float32', data: new Float32Array(c.n * c.h * c.w), dims: [c.n, 1, c.h, c.w] },
        logits: { type: 'float32', data: nchw(logits, c.n, c.h, c.w, A), dims: [c.n, A, c.h, c.w] },
        deltas: { type: 'float32', data: nchw(deltas, c.n, c.h, c.w, 4 * A), dims: [c.n, 4 * A, c.h, c.w] },
      });
      const grid = anchors.grid(c.h, c.w);
      const M = c.h * c.w * A;
      const expected: number[] = [];
      const expectedBatch: number[] = [];
      for (let n = 0; n < c.n; n++) {
        const r = selectProposals(logits.subarray(n * M, (n + 1) * M), deltas.subarray(4 * n * M, 4 * (n + 1) * M), grid, { height: H, width: W }, c.p);
        expected.push(...r.boxes);
        for (let i = 0; i < r.boxes.length / 4; i++) expectedBatch.push(n);
      }
      const got = out.rois!.data as Float32Array;
      t.true(expected.length > 0);
      t.is(got.length, expected.length, `${c.n}x${c.h}x${c.w}: proposal counts`);
      t.deepEqual(Array.from(out.batch_indices!.data as BigInt64Array, Number), expectedBatch);
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
      t.true(worst < 1e-3, `max box difference ${worst} px`);
    } finally {
      await session.session.release();
    }
  }
});

/** A graph of just the detection step. */
function detectionGraph(C: number, d: { scoreThreshold: number; nmsThreshold: number; maxDetections: number }): Uint8Array {
  const b = new OnnxBuilder(() => new Float32Array(0), { foldBatchNorm: false, fp16: false, epsilon: 1e-5 });
  const info = emitImageInfo(b, 'input');
  emitDetections(b, 'cls', 'deltas', 'rois', 'batch_indices', info, C, RCNN_BOX_WEIGHTS, d);
  const D = d.maxDetections;
  return encodeModel({
    name: 'detections',
    builder: b,
    inputs: [
      valueInfo('input', DataType.FLOAT, ['n', 3, 'H', 'W']),
      valueInfo('cls', DataType.FLOAT, ['r', C + 1]),
      valueInfo('deltas', DataType.FLOAT, ['r', 4 * C]),
      valueInfo('rois', DataType.FLOAT, ['r', 4]),
      valueInfo('batch_indices', DataType.INT64, ['r']),
    ],
    outputs: [
      valueInfo('num_detections', DataType.INT64, ['n']),
      valueInfo('detection_boxes', DataType.FLOAT, ['n', D, 4]),
      valueInfo('detection_scores', DataType.FLOAT, ['n', D]),
      valueInfo('detection_classes', DataType.INT64, ['n', D]),
    ],
    metadata: {},
  });
}

test.serial('detections: the ONNX nodes select what selectDetections selects, padded to D; no detection at all gives zeros', async (t) => {
  const rng = new Rng(5);
  const C = 4;
  const N = 2;
  const H = 120;
  const W = 160;
  const R = 60;
  const rois = new Float32Array(4 * R);
  for (let r = 0; r < R; r++) {
    const x = rng.range(0, W - 30);
    const y = rng.range(0, H - 30);
    rois.set([x, y, x + rng.range(8, 40), y + rng.range(8, 40)], 4 * r);
  }
  const batch = Int32Array.from({ length: R }, (_, r) => (r < 35 ? 0 : 1));
  const cls = randn(R * (C + 1), rng, 2);
  const deltas = randn(R * 4 * C, rng, 0.5);
  for (const d of [
    { scoreThreshold: 0.05, nmsThreshold: 0.3, maxDetections: 10 }, // more candidates than D: TopK at D
    { scoreThreshold: 0.05, nmsThreshold: 0.3, maxDetections: 500 }, // fewer than D: k clamped, padding
    { scoreThreshold: 0.999, nmsThreshold: 0.3, maxDetections: 20 }, // nothing passes: all zeros
  ]) {
    const session = await createSession(detectionGraph(C, d));
    try {
      const out = await runSession(session, {
        input: { type: 'float32', data: new Float32Array(N * 3 * H * W), dims: [N, 3, H, W] },
        cls: { type: 'float32', data: cls, dims: [R, C + 1] },
        deltas: { type: 'float32', data: deltas, dims: [R, 4 * C] },
        rois: { type: 'float32', data: rois, dims: [R, 4] },
        batch_indices: { type: 'int64', data: BigInt64Array.from(batch, BigInt), dims: [R] },
      });
      const expected = selectDetections(cls, deltas, rois, batch, N, { height: H, width: W }, C, RCNN_BOX_WEIGHTS, d);
      const num = Array.from(out.num_detections!.data as BigInt64Array, Number);
      t.deepEqual(num, expected.map((e) => e.scores.length), `counts at threshold ${d.scoreThreshold}, D ${d.maxDetections}`);
      t.deepEqual(out.detection_boxes!.dims, [N, d.maxDetections, 4]);
      const boxes = out.detection_boxes!.data as Float32Array;
      const scores = out.detection_scores!.data as Float32Array;
      const classes = Array.from(out.detection_classes!.data as BigInt64Array, Number);
      const D = d.maxDetections;
      for (let n = 0; n < N; n++) {
        const e = expected[n]!;
        for (let i = 0; i < D; i++) {
          if (i < e.scores.length) {
            t.is(classes[n * D + i], e.classes[i]);
            t.true(Math.abs(scores[n * D + i]! - e.scores[i]!) < 1e-5);
            for (let k = 0; k < 4; k++) t.true(Math.abs(boxes[(n * D + i) * 4 + k]! - e.boxes[4 * i + k]!) < 1e-3);
          } else {
            t.is(scores[n * D + i], 0, 'padding');
            t.is(classes[n * D + i], 0, 'padding');
          }
        }
      }
      if (d.scoreThreshold > 0.99) t.deepEqual(num, [0, 0]);
    } finally {
      await session.session.release();
    }
  }
});

/**
 * A random detector whose class scores are spread out, as a trained one's are: a fresh predictor
 * scores every region about 1 / (C + 1), and near-ties (1e-7 apart) are ordered differently by float32
 * (ONNX Runtime) and float64 (JavaScript) softmax, which changes what NMS keeps.
 */
function decisiveDetector(seed: number) {
  const det = createDetector('resnet_test', 3, { seed, config: { rpnChannels: 64 } });
  const name = 'roi_heads.box_predictor.cls_score.weight';
  det.params.setValues(name, (det.params.get(name).dataSync() as Float32Array).map((v) => 300 * v));
  return det;
}

test.serial('the exported detector reproduces the tfjs detector on three image sizes and batch 1 and 2, and detect() leaks no tensor', async (t) => {
  const det = decisiveDetector(2);
  try {
    const bytes = await exportDetector(det);
    // Warm the folded batch-norm weights (a cache that lives with the parameters) before counting.
    const warm = tf.tensor4d(smoothImages(1, 64, 64, 1), [1, 64, 64, 3]);
    await det.detect(warm);
    const before = tf.memory().numTensors;
    const report = await checkDetectorExport(det, bytes, {
      sizes: [
        [160, 160],
        [128, 224],
        [208, 144],
      ],
      batches: [1, 2],
    });
    t.is(tf.memory().numTensors, before, 'tensors left behind by detect()');
    warm.dispose();
    t.is(report.cases.length, 6);
    for (const c of report.cases) {
      t.true(c.onnx > 0, `${c.batch}x${c.height}x${c.width}: some detections`);
      t.is(c.onnx, c.tfjs);
      t.is(c.matched, c.onnx, `${c.batch}x${c.height}x${c.width}: every detection matched`);
      t.true(c.maxBoxDiff <= 1e-3);
    }
    t.true(report.passed);
    // An image too small for any proposal: no detections, in both runtimes (not an ONNX Runtime error).
    const tiny = await checkDetectorExport(det, bytes, { sizes: [[15, 15], [15, 200]], batches: [1, 2] });
    t.true(tiny.passed, JSON.stringify(tiny.cases));
    t.true(tiny.cases.every((c) => c.onnx === 0 && c.tfjs === 0));
    // The batch axis is independent: image 1 of a batch of 2 is what it is alone.
    const x = smoothImages(2, 96, 128, 9);
    const s = await createSession(bytes);
    try {
      const both = await runDetectorSession(s, x, [2, 96, 128, 3], 100);
      const second = await runDetectorSession(s, x.subarray(96 * 128 * 3), [1, 96, 128, 3], 100);
      t.deepEqual(Array.from(both[1]!.classes), Array.from(second[0]!.classes));
      t.deepEqual(Array.from(both[1]!.boxes, (v) => Math.round(v * 100)), Array.from(second[0]!.boxes, (v) => Math.round(v * 100)));
    } finally {
      await s.session.release();
    }
  } finally {
    det.dispose();
  }
});

test.serial('a check catches a broken export: a graph with other box weights than the tfjs detector does not pass', async (t) => {
  const det = createDetector('resnet_test', 2, { seed: 4, config: { rpnChannels: 32 } });
  const other = createDetector('resnet_test', 2, { seed: 5, config: { rpnChannels: 32 } });
  try {
    const report = await checkDetectorExport(det, await exportDetector(other), { sizes: [[128, 128]], batches: [1] });
    t.false(report.passed);
  } finally {
    det.dispose();
    other.dispose();
  }
});

test.serial('counts: the trunk is the backbone up to stage 3, the box head is stage 4 per region, the heads are counted once per region', (t) => {
  const det = createDetector('resnet50d', 20);
  const full = countNetwork(new ResNet({ ...getModelEntry('resnet50d').config, numClasses: 0 }), 608, 1008);
  const trunkMacs = full.layers.filter((l) => !l.name.startsWith('layer4')).reduce((a, l) => a + l.macs, 0);
  const c300 = det.counts(608, 1008, 300);
  const c100 = det.counts(608, 1008, 100);
  const perRegion = (c300.macs - c100.macs) / 200;
  const rpn = c300.layers.filter((l) => l.name.startsWith('rpn.')).reduce((a, l) => a + l.macs, 0);
  t.is(c300.macs - 300 * perRegion, trunkMacs + rpn);
  // Stage 4 on a 14x14 region (7x7 after its stride) and the predictor.
  const stage4 = countNetwork(new ResNet({ ...getModelEntry('resnet50d').config, numClasses: 0 }), 224, 224).layers.filter((l) => l.name.startsWith('layer4')).reduce((a, l) => a + l.macs, 0);
  t.is(perRegion, stage4 + 2048 * 21 + 2048 * 80);
  // The RPN head: 3x3 1024 -> 1024 at stride 16, 1x1 to 15 and 60 channels.
  t.is(rpn, 38 * 63 * 1024 * (9 * 1024 + 15 + 60));
  // Parameters: backbone without fc + RPN + predictor.
  const backbone = full.params;
  t.is(c300.params, backbone + (9 * 1024 * 1024 + 1024) + (1024 * 15 + 15) + (1024 * 60 + 60) + (2048 * 21 + 21) + (2048 * 80 + 80));
});

test.serial('the detector sees its backbone through the feature contract only: frozen stages and the trainable set', (t) => {
  const det = createDetector('resnet18d', 5);
  try {
    const trainable = [...det.trainableVariables().keys()];
    t.false(trainable.some((n) => n.startsWith('conv1.') || n.startsWith('layer1.')), 'stem and stage 1 frozen');
    t.false(trainable.some((n) => /bn\d?\.|downsample\.2\.|conv1\.[14]\./.test(n)), 'batch norm frozen');
    t.true(trainable.includes('layer2.0.conv1.weight'));
    t.true(trainable.includes('layer4.1.conv2.weight'));
    t.true(trainable.includes('rpn.head.conv.weight'));
    t.true(trainable.includes('roi_heads.box_predictor.bbox_pred.weight'));
    t.false(det.params.has('fc.weight'), 'the classifier is dropped');
  } finally {
    det.dispose();
  }
});
