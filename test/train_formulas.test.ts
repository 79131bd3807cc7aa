/**
 * The paper's formulas (SPEC section 2) against hand computations: learning-rate schedules, label
 * smoothing, mixup, distillation, the NAG update with weight-decay groups, zero gamma and Xavier bounds.
 */
import test, { type ExecutionContext } from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend, maxAbsDiff } from './helpers/backend.js';
import { LrSchedule } from '../src/train/schedule.js';
import { smoothTargets, mixup, sampleBeta, sampleGamma, softCrossEntropy, distillationLoss, topkHits } from '../src/train/loss.js';
import { SGD, decayedParams } from '../src/train/optim.js';
import { RECIPES, describeTricks, fitRecipeWarmup } from '../src/train/recipes.js';
import { ZOO_KERNELS, hasZooKernel } from '../src/backend/kernels/index.js';
import { createModel } from '../src/models/model.js';
import { xavierBound } from '../src/models/params.js';
import { Rng } from '../src/util/random.js';

test.before(async () => {
  await setupBackend();
});

const close = (t: { true: (v: boolean, m?: string) => void }, a: number, b: number, tol: number, what: string) =>
  t.true(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tolerance ${tol})`);

test('linear scaling: lr = 0.1 x b / 256; without it the base rate', (t) => {
  const base = { baseLr: 0.1, itersPerEpoch: 10, epochs: 10, warmupEpochs: 0, decay: 'cosine' as const };
  t.is(new LrSchedule({ ...base, batch: 1024, linearScaling: true }).peak, 0.4);
  close(t, new LrSchedule({ ...base, batch: 128, linearScaling: true }).peak, 0.05, 1e-15, 'batch 128');
  t.is(new LrSchedule({ ...base, batch: 1024, linearScaling: false }).peak, 0.1);
});

test('warmup: lr_i = i * lr / m over the first m updates (5 epochs), then the peak', (t) => {
  const s = new LrSchedule({ baseLr: 0.1, batch: 1024, linearScaling: true, itersPerEpoch: 10, epochs: 120, warmupEpochs: 5, decay: 'step' });
  t.is(s.warmup, 50);
  close(t, s.at(0), 0.4 / 50, 1e-15, 'first update');
  close(t, s.at(24), (25 * 0.4) / 50, 1e-15, 'update 25');
  close(t, s.at(49), 0.4, 1e-15, 'end of warmup');
  close(t, s.at(50), 0.4, 1e-15, 'after warmup');
  for (let i = 1; i < 50; i++) t.true(s.at(i) > s.at(i - 1), 'warmup increases');
});

test('step decay: /10 at epochs 30, 60 and 90 of 120', (t) => {
  const s = new LrSchedule({ baseLr: 0.1, batch: 256, linearScaling: true, itersPerEpoch: 10, epochs: 120, warmupEpochs: 0, decay: 'step' });
  close(t, s.at(299), 0.1, 1e-15, 'epoch 29');
  close(t, s.at(300), 0.01, 1e-15, 'epoch 30');
  close(t, s.at(599), 0.01, 1e-15, 'epoch 59');
  close(t, s.at(600), 0.001, 1e-15, 'epoch 60');
  close(t, s.at(900), 0.0001, 1e-15, 'epoch 90');
  close(t, s.at(1199), 0.0001, 1e-15, 'last update');
});

test('cosine decay: lr_t = 0.5 (1 + cos(pi t / T)) lr with t and T counted after warmup', (t) => {
  const s = new LrSchedule({ baseLr: 0.1, batch: 1024, linearScaling: true, itersPerEpoch: 10, epochs: 100, warmupEpochs: 5, decay: 'cosine' });
  const T = 1000 - 50;
  close(t, s.at(50), 0.4, 1e-15, 't = 0');
  close(t, s.at(50 + T / 2), 0.2, 1e-12, 't = T/2');
  close(t, s.at(50 + 100), 0.5 * (1 + Math.cos((Math.PI * 100) / T)) * 0.4, 1e-15, 't = 100');
  close(t, s.at(999), 0.5 * (1 + Math.cos((Math.PI * 949) / T)) * 0.4, 1e-15, 'last update');
  t.true(s.at(999) < 1e-5);
});

test("label smoothing: 1 - eps on the true class, eps / (K - 1) elsewhere (the paper's formula)", (t) => {
  const q = smoothTargets(Int32Array.from([3, 0]), 10, 0.1);
  close(t, q[3]!, 0.9, 1e-7, 'true class');
  close(t, q[0]!, 0.1 / 9, 1e-8, 'other class');
  close(t, q[10]!, 0.9, 1e-7, 'second row true class');
  for (let r = 0; r < 2; r++) close(t, q.subarray(r * 10, r * 10 + 10).reduce((a, b) => a + b, 0), 1, 1e-6, `row ${r} sums to 1`);
  t.deepEqual(Array.from(smoothTargets(Int32Array.from([1]), 3, 0)), [0, 1, 0]);
  t.throws(() => smoothTargets(Int32Array.from([5]), 3, 0.1), { message: /out of range/ });
});

test('mixup: x = l x_i + (1 - l) x_j and y likewise, with j the reversed batch', (t) => {
  const n = 3;
  const images = Float32Array.from([1, 2, 10, 20, 100, 200]); // 2 values per image
  const targets = Float32Array.from([1, 0, 0, 1, 0.5, 0.5]); // 2 classes
  const l = 0.7;
  mixup(images, targets, n, l);
  const want = [l * 1 + (1 - l) * 100, l * 2 + (1 - l) * 200, l * 10 + (1 - l) * 10, l * 20 + (1 - l) * 20, l * 100 + (1 - l) * 1, l * 200 + (1 - l) * 2];
  t.true(maxAbsDiff(images, want) < 1e-4, `images ${images}`);
  const wantY = [l * 1 + (1 - l) * 0.5, l * 0 + (1 - l) * 0.5, 0, 1, l * 0.5 + (1 - l) * 1, l * 0.5 + (1 - l) * 0];
  t.true(maxAbsDiff(targets, wantY) < 1e-6, `targets ${targets}`);
});

test('mixup lambda ~ Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)), in [0, 1]; Gamma(k) has mean k', (t) => {
  const rng = new Rng(7);
  const n = 40000;
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const v = sampleBeta(rng, 0.2);
    t.true(v >= 0 && v <= 1);
    s += v;
    s2 += v * v;
  }
  const mean = s / n;
  const variance = s2 / n - mean * mean;
  close(t, mean, 0.5, 0.01, 'mean');
  close(t, variance, 1 / (4 * 1.4), 0.006, 'variance');
  for (const k of [0.2, 1, 3.5]) {
    let g = 0;
    for (let i = 0; i < n; i++) g += sampleGamma(rng, k);
    close(t, g / n, k, 0.04 * Math.max(1, k), `Gamma(${k}) mean`);
  }
});

test('soft cross-entropy and the distillation loss CE(p, softmax(z)) + T^2 CE(softmax(r/T), softmax(z/T))', (t) => {
  const z = [
    [2, -1, 0.5],
    [0.1, 0.2, -0.3],
  ];
  const r = [
    [1, 3, -2],
    [0.5, -0.5, 0],
  ];
  const p = [
    [0.9, 0.05, 0.05],
    [0.05, 0.05, 0.9],
  ];
  const T = 4;
  const logSoftmax = (v: number[]) => {
    const m = Math.max(...v);
    const lse = Math.log(v.reduce((a, x) => a + Math.exp(x - m), 0)) + m;
    return v.map((x) => x - lse);
  };
  const ce = (q: number[], logits: number[]) => -logSoftmax(logits).reduce((a, l, i) => a + q[i]! * l, 0);
  const softmax = (v: number[]) => logSoftmax(v).map(Math.exp);
  const hard = (ce(p[0]!, z[0]!) + ce(p[1]!, z[1]!)) / 2;
  const soft = (ce(softmax(r[0]!.map((v) => v / T)), z[0]!.map((v) => v / T)) + ce(softmax(r[1]!.map((v) => v / T)), z[1]!.map((v) => v / T))) / 2;
  const [Z, R, P] = [tf.tensor2d(z), tf.tensor2d(r), tf.tensor2d(p)];
  const got = softCrossEntropy(Z, P);
  close(t, got.dataSync()[0]!, hard, 1e-6, 'soft cross-entropy');
  const kd = distillationLoss(Z, P, R, T);
  close(t, kd.dataSync()[0]!, hard + T * T * soft, 1e-5, 'distillation (paper)');
  const kdw = distillationLoss(Z, P, R, T, 0.5);
  close(t, kdw.dataSync()[0]!, 0.5 * hard + 0.5 * T * T * soft, 1e-5, 'distillation (hard weight 0.5)');
  tf.dispose([Z, R, P, got, kd, kdw]);
});

test('top-k hits count ties against the true class in index order', (t) => {
  const logits = Float32Array.from([0.1, 0.5, 0.2, 0.9, 0.1, 0.0, 0.3, 0.3, 0.1]);
  t.deepEqual(topkHits(logits, Int32Array.from([1, 0, 1]), 3), { top1: 2, top5: 3 });
  t.deepEqual(topkHits(logits, Int32Array.from([2, 0, 0]), 3), { top1: 2, top5: 3 }, 'a tie won by the lower index');
  // A broken model must not score: NaN or infinite logits of the true class are misses, NaN rivals rank above.
  const bad = Float32Array.from([NaN, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9, NaN, 0.1, 0.2, 0.3, 0.4, Infinity, 0, 0, 0, 0, 0]);
  t.deepEqual(topkHits(bad, Int32Array.from([0, 0, 0]), 6), { top1: 0, top5: 1 });
  t.deepEqual(topkHits(Float32Array.from([NaN, NaN, NaN]), Int32Array.from([1]), 3), { top1: 0, top5: 0 });
});

test('no bias decay: weight decay only on conv and fc weights; running statistics never', (t) => {
  const m = createModel('resnet_test');
  const all = decayedParams(m.params, false);
  const weights = decayedParams(m.params, true);
  for (const [name, spec] of m.params.specs) {
    const isStat = name.endsWith('running_mean') || name.endsWith('running_var');
    t.is(all.has(name), !isStat, name);
    t.is(weights.has(name), spec.role === 'weight' && spec.shape.length > 1, `${name} (${spec.role})`);
  }
  t.true(weights.has('fc.weight') && !weights.has('fc.bias') && !weights.has('bn1.weight') && !weights.has('bn1.bias'));
  m.dispose();
});

/**
 * Three NAG steps with weight-decay groups and a gradient scale against a float64 hand computation:
 * v <- m v + (g s + wd w), w <- w - lr (g s + wd w + m v); plain momentum w <- w - lr v.
 */
function checkSgdAgainstHand(t: ExecutionContext, options: { fused: boolean; nesterov: boolean }): void {
  const m = createModel('resnet_test', { seed: 3 });
  const names = ['conv1.0.weight', 'bn1.weight', 'fc.bias'];
  const lr = 0.05;
  const mom = 0.9;
  const wd = 1e-2;
  const opt = new SGD(m.params, { momentum: mom, nesterov: options.nesterov, weightDecay: wd, noBiasDecay: true, fused: options.fused });
  const w = new Map(names.map((n) => [n, Float64Array.from(m.params.get(n).dataSync())]));
  const v = new Map(names.map((n) => [n, new Float64Array(w.get(n)!.length)]));
  const rng = new Rng(11);
  const scale = 0.5; // gradient accumulation: two micro-batches summed, scaled by 1/2
  const before = tf.memory().numTensors;
  for (let step = 0; step < 3; step++) {
    const grads = new Map<string, tf.Tensor>();
    const gv = new Map<string, Float32Array>();
    for (const n of names) {
      const g = Float32Array.from({ length: w.get(n)!.length }, () => rng.normal());
      gv.set(n, g);
      grads.set(n, tf.tensor(g, m.params.get(n).shape));
    }
    opt.step(grads, lr, scale);
    tf.dispose([...grads.values()]);
    for (const n of names) {
      const decay = n === 'conv1.0.weight' ? wd : 0;
      const W = w.get(n)!;
      const V = v.get(n)!;
      const G = gv.get(n)!;
      for (let i = 0; i < W.length; i++) {
        const d = G[i]! * scale + decay * W[i]!;
        V[i] = mom * V[i]! + d;
        W[i] = W[i]! - lr * (options.nesterov ? d + mom * V[i]! : V[i]!);
      }
      const got = m.params.get(n).dataSync();
      const diff = maxAbsDiff(got, W);
      t.true(diff < 1e-6, `${n} after step ${step + 1} (${options.fused ? 'fused kernel' : 'tfjs ops'}, nesterov ${options.nesterov}): max diff ${diff}`);
      const vel = maxAbsDiff(opt.velocity.get(n)!.dataSync(), V);
      t.true(vel < 1e-6, `${n} momentum after step ${step + 1}: max diff ${vel}`);
    }
  }
  // One momentum buffer per parameter that had a gradient; nothing else is kept.
  t.is(tf.memory().numTensors, before + names.length, 'tensors kept by three updates');
  const other = m.params.get('conv1.1.weight').dataSync().slice(0, 4);
  t.deepEqual(Array.from(other), Array.from(createModel('resnet_test', { seed: 3 }).params.get('conv1.1.weight').dataSync().slice(0, 4)), 'parameters without gradients stay');
  opt.dispose();
  m.dispose();
}

test('NAG update with weight-decay groups matches a hand computation over three steps (the fused kernel)', (t) => {
  t.true(hasZooKernel(ZOO_KERNELS.sgd), `the ${tf.getBackend()} backend has the fused update kernel`);
  checkSgdAgainstHand(t, { fused: true, nesterov: true });
  checkSgdAgainstHand(t, { fused: true, nesterov: false });
});

test('the update from tfjs-core ops (backends without the fused kernel: tfjs-node, tfjs-node-gpu) matches the same hand computation', (t) => {
  checkSgdAgainstHand(t, { fused: false, nesterov: true });
  checkSgdAgainstHand(t, { fused: false, nesterov: false });
});

test('zero gamma: the last batch norm of every residual block starts at 0, every other gamma at 1', (t) => {
  for (const arch of ['resnet_test', 'resnet18d']) {
    const m = createModel(arch, { zeroInitLastBn: true });
    const last = arch === 'resnet_test' ? 'bn3' : 'bn2';
    let zeroed = 0;
    for (const [name, spec] of m.params.specs) {
      if (spec.role !== 'gamma') continue;
      const vals = m.params.get(name).dataSync();
      const isLast = new RegExp(`^layer\\d\\.\\d+\\.${last}\\.weight$`).test(name);
      if (isLast) zeroed++;
      t.true(vals.every((x) => x === (isLast ? 0 : 1)), `${arch} ${name}`);
    }
    t.is(zeroed, arch === 'resnet_test' ? 4 : 8, `${arch}: one zeroed BN per block`);
    m.dispose();
    const plain = createModel(arch, { zeroInitLastBn: false });
    t.true(plain.params.get(`layer1.0.${last}.weight`).dataSync().every((x) => x === 1));
    plain.dispose();
  }
});

test('Xavier init: conv and fc weights uniform in [-a, a], a = sqrt(6 / (fan_in + fan_out)); biases 0', (t) => {
  const m = createModel('resnet18d', { seed: 5 });
  for (const [name, spec] of m.params.specs) {
    const v = m.params.get(name).dataSync();
    if (spec.role !== 'weight') continue;
    const s = spec.shape;
    const [fanIn, fanOut] = s.length === 4 ? [s[0]! * s[1]! * s[2]!, s[0]! * s[1]! * s[3]!] : [s[0]!, s[1]!];
    const a = xavierBound(fanIn, fanOut);
    let max = 0;
    let sq = 0;
    for (const x of v) {
      max = Math.max(max, Math.abs(x));
      sq += x * x;
    }
    t.true(max <= a, `${name}: |w| ${max} > bound ${a}`);
    if (v.length >= 4096) {
      t.true(max > 0.99 * a, `${name}: values should fill [-a, a] (max ${max}, a ${a})`);
      close(t, sq / v.length, (a * a) / 3, 0.05 * ((a * a) / 3), `${name} variance`);
    }
  }
  t.true(m.params.get('fc.bias').dataSync().every((x) => x === 0));
  m.dispose();
});

test('recipes: baseline has no tricks; efficient adds the section 3 heuristics; best adds section 5', (t) => {
  const b = RECIPES.baseline.tricks;
  t.false(b.linearScaling || b.zeroGamma || b.noBiasDecay || b.cosine || b.distill || b.fp16);
  t.is(b.warmupEpochs + b.labelSmoothing + b.mixup, 0);
  t.like(RECIPES.efficient.tricks, { linearScaling: true, warmupEpochs: 5, zeroGamma: true, noBiasDecay: true, fp16: true, cosine: false, mixup: 0 });
  t.like(RECIPES.best.tricks, { linearScaling: true, warmupEpochs: 5, zeroGamma: true, noBiasDecay: true, cosine: true, labelSmoothing: 0.1, mixup: 0.2, distill: true, temperature: 20 });
  t.is(RECIPES.best.epochs, 200);
  t.is(RECIPES.efficient.batchSize, 1024);
  t.regex(describeTricks(RECIPES.best.tricks), /cosine.*label smoothing 0\.1.*mixup alpha 0\.2.*distillation T=20/);
});

test("a recipe's warmup that would take more than a quarter of a short run is shortened to a tenth of it, with a note", (t) => {
  // Long enough: kept as the recipe has it, with no note.
  t.deepEqual(fitRecipeWarmup({ recipe: 'best', warmupEpochs: 5, epochs: 20, updatesPerEpoch: 10, cosine: true }), { warmupEpochs: 5 });
  t.deepEqual(fitRecipeWarmup({ recipe: 'efficient', warmupEpochs: 5, epochs: 120, updatesPerEpoch: 10, cosine: false }), { warmupEpochs: 5 });
  // Longer than the run.
  const short = fitRecipeWarmup({ recipe: 'best', warmupEpochs: 5, epochs: 3, updatesPerEpoch: 20, cosine: true });
  t.is(short.warmupEpochs, 0.3);
  t.regex(short.note!, /the best recipe's 5-epoch warmup is longer than this 3-epoch run: shortened to a tenth of the run, 0\.3 epochs \(6 updates\)/);
  // Past the first step decay (a quarter of the run) without cosine.
  const step = fitRecipeWarmup({ recipe: 'efficient', warmupEpochs: 5, epochs: 12, updatesPerEpoch: 7, cosine: false });
  t.is(step.warmupEpochs, 1.2);
  t.regex(step.note!, /reaches past the first step decay \(epoch 3 of 12\): shortened to a tenth of the run, 1\.2 epochs \(8 updates\)/);
  const cosine = fitRecipeWarmup({ recipe: 'best', warmupEpochs: 5, epochs: 12, updatesPerEpoch: 7, cosine: true });
  t.regex(cosine.note!, /would take more than a quarter of this 12-epoch run/);
  // The fitted warmup passes the checks a run's configuration must pass (at most a quarter of the run).
  for (const epochs of [1, 2, 3, 7, 19]) {
    const f = fitRecipeWarmup({ recipe: 'efficient', warmupEpochs: 5, epochs, updatesPerEpoch: 5, cosine: false });
    t.true(f.warmupEpochs <= 0.25 * epochs && f.warmupEpochs > 0, `${epochs} epochs: warmup ${f.warmupEpochs}`);
  }
});
