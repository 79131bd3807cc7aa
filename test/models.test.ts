/**
 * The registry and the ResNet builder: every registered model builds and gives the right output and
 * stage shapes without leaking tensors; parameter counts and FLOPs against the paper (Table 5) and
 * against the counts torchvision and timm publish; initialization (Xavier bounds, zero gamma);
 * batch-norm modes.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { setupBackend } from './helpers/backend.js';
import { createModel, modelConfig } from '../src/models/model.js';
import { getModelEntry, listModels } from '../src/models/registry.js';
import { ResNet } from '../src/models/resnet.js';
import { countNetwork } from '../src/models/count.js';
import { forwardLogits, type ConvSpec, type GraphBuilder } from '../src/models/graph.js';
import { xavierBound } from '../src/models/params.js';
import { UserError } from '../src/errors.js';

test.before(async () => {
  await setupBackend();
});

const SIZE = 64;

for (const name of listModels()) {
  test.serial(`${name} builds, gives logits and stage outputs of the right shape, and leaks nothing`, (t) => {
    const initial = tf.memory().numTensors;
    const m = createModel(name);
    try {
      const x = tf.randomNormal([2, SIZE, SIZE, 3]) as tf.Tensor4D;
      tf.dispose(m.forward(x)); // fills the model's cache of folded (conv + batch norm) weights
      const before = tf.memory().numTensors;
      const logits = m.forward(x);
      t.deepEqual(logits.shape, [2, m.numClasses]);
      const feats = m.features(x);
      t.is(feats.length, 4);
      feats.forEach((f, i) => {
        const info = m.featureInfo[i]!;
        t.is(f.shape[3], info.channels, `${info.name} channels`);
        t.is(f.shape[1], Math.ceil(SIZE / info.reduction), `${info.name} height`);
      });
      const counts = m.counts(SIZE);
      t.deepEqual(counts.stages.map((s) => s.shape), feats.map((f) => f.shape.slice(1)));
      t.is(counts.params, m.params.countTrainable());
      tf.dispose([logits, ...feats]);
      t.is(tf.memory().numTensors, before, 'tensors left after eval forward and features');
      x.dispose();
    } finally {
      m.dispose();
    }
    t.is(tf.memory().numTensors, initial, 'dispose() frees parameters and cached folded weights');
  });
}

test('resnet50d with 1000 classes has exactly 25,576,264 parameters', (t) => {
  t.is(countNetwork(new ResNet(modelConfig('resnet50d')), 224).params, 25_576_264);
});

test('parameter counts match those torchvision and timm publish for the same structures', (t) => {
  // torchvision resnet18/34/50/101/152 are zoo's b variants (stride in the 3x3 conv);
  // timm resnet50d/101d/152d are zoo's d variants.
  const published: Record<string, number> = {
    resnet18b: 11_689_512,
    resnet34b: 21_797_672,
    resnet50b: 25_557_032,
    resnet101b: 44_549_160,
    resnet152b: 60_192_808,
    resnet50d: 25_576_264,
    resnet101d: 44_568_392,
    resnet152d: 60_212_040,
  };
  for (const [name, n] of Object.entries(published)) {
    t.is(countNetwork(new ResNet(modelConfig(name)), 224).params, n, name);
  }
});

test('ResNet-50 and its B, C, D tweaks match paper Table 5: about 25 M parameters; 3.8, 4.1, 4.3, 4.3 GFLOPs', (t) => {
  // Counted: 3.858, 4.089, 4.329, 4.329 G multiply-adds. The paper's 3.8 for ResNet-50 is the figure of
  // the original ResNet paper, which truncates (3.858 rounds to 3.9); B, C and D round to the table.
  const table5: [string, number][] = [
    ['resnet50', 3.8],
    ['resnet50b', 4.1],
    ['resnet50c', 4.3],
    ['resnet50d', 4.3],
  ];
  const macs: number[] = [];
  for (const [name, gflops] of table5) {
    const c = countNetwork(new ResNet(modelConfig(name)), 224);
    t.true(Math.abs(c.params / 1e6 - 25.6) < 0.1, `${name} params ${c.params}`);
    t.true(Math.abs(c.macs / 1e9 - gflops) < 0.06, `${name} GMACs ${c.macs / 1e9} vs ${gflops}`);
    macs.push(c.macs);
  }
  t.true(macs[0]! < macs[1]! && macs[1]! < macs[2]!, 'A < B < C');
  t.is(macs[3], macs[2], 'D adds an average pool, no multiply-adds');
});

test('stage outputs: channels and reductions for heads, with output stride 32, 16 and 8', (t) => {
  const expect: Record<number, number[]> = { 32: [4, 8, 16, 32], 16: [4, 8, 16, 16], 8: [4, 8, 8, 8] };
  for (const os of [32, 16, 8] as const) {
    const c = countNetwork(new ResNet(modelConfig('resnet50d', { outputStride: os })), 224);
    t.deepEqual(c.stages.map((s) => s.channels), [256, 512, 1024, 2048]);
    t.deepEqual(c.stages.map((s) => s.reduction), expect[os]);
    t.deepEqual(c.stages.map((s) => s.shape[0]), expect[os]!.map((r) => 224 / r));
  }
});

test('dilated stages: dilation 2 then 4 (2 in the first block of the dilation-4 stage), pool shortcut becomes identity', (t) => {
  const net = new ResNet(modelConfig('resnet50d', { outputStride: 8 }));
  const c = countNetwork(net, 64);
  // Same parameters as the undilated network (dilation adds none).
  t.is(c.params, 25_576_264);
  // No 2x2 average pool remains in dilated stages: layer3/4 shortcuts are plain 1x1 convs at stride 1.
  const layer3 = c.layers.find((l) => l.name === 'layer3.0.downsample.1')!;
  const layer2 = c.layers.find((l) => l.name === 'layer2.0.downsample.1')!;
  t.deepEqual(layer3.outShape.slice(0, 2), [8, 8]);
  t.deepEqual(layer2.outShape.slice(0, 2), [8, 8]);
});

/** The convolutions a network definition asks for, in order (a GraphBuilder that records and computes nothing). */
function recordConvs(net: ResNet): Map<string, { stride: number; dilation: number; kernel: number }> {
  const convs = new Map<string, { stride: number; dilation: number; kernel: number }>();
  const record = (x: null, s: ConvSpec) => {
    convs.set(s.name, { stride: s.stride ?? 1, dilation: s.dilation ?? 1, kernel: s.kernel });
    return x;
  };
  const b: GraphBuilder<null> = {
    convBn: record,
    conv: record,
    maxPool: (x) => x,
    avgPool: (x) => x,
    globalAvgPool: (x) => x,
    linear: (x) => x,
    roiAlign: (x) => x,
    resize: (x) => x,
    dropout: (x) => x,
  };
  forwardLogits(net, b, null);
  return convs;
}

test("dilated stages: every 3x3 convolution's dilation and stride (the first block of a dilated stage keeps the previous stage's dilation)", (t) => {
  // GluonCV `dilated=True`, timm and torchvision `replace_stride_with_dilation`: the stride of a stage
  // becomes dilation from its second block on; its first block's 3x3 convolution keeps the dilation of
  // the stage before (SPEC section 1: "first block of the dilation-4 stage uses dilation 2").
  const expected = (os: 8 | 16 | 32, stage: number, block: number) => {
    const dil = os === 8 ? [1, 1, 2, 4] : os === 16 ? [1, 1, 1, 2] : [1, 1, 1, 1];
    const strided = os === 8 ? [false, true, false, false] : os === 16 ? [false, true, true, false] : [false, true, true, true];
    return { dilation: block === 0 && stage > 0 ? dil[stage - 1]! : dil[stage]!, stride: block === 0 && strided[stage] ? 2 : 1 };
  };
  for (const [arch, conv3x3, layers] of [['resnet50d', 'conv2', [3, 4, 6, 3]], ['resnet18d', 'conv1', [2, 2, 2, 2]]] as const) {
    for (const os of [8, 16, 32] as const) {
      const convs = recordConvs(new ResNet(modelConfig(arch, { outputStride: os })));
      const got: string[] = [];
      const want: string[] = [];
      layers.forEach((n, s) => {
        for (let i = 0; i < n; i++) {
          const name = `layer${s + 1}.${i}.${conv3x3}`;
          const c = convs.get(name);
          t.truthy(c, `${arch}: ${name} exists`);
          got.push(`${name} d${c?.dilation} s${c?.stride}`);
          const e = expected(os, s, i);
          want.push(`${name} d${e.dilation} s${e.stride}`);
          // The basic block's second 3x3 convolution always takes the stage's own dilation.
          if (conv3x3 === 'conv1') {
            const second = convs.get(`layer${s + 1}.${i}.conv2`)!;
            t.is(second.dilation, expected(os, s, 1).dilation, `${arch} os ${os}: layer${s + 1}.${i}.conv2 dilation`);
          }
        }
      });
      t.deepEqual(got, want, `${arch}, output stride ${os}`);
      // 1x1 convolutions are never dilated; the stem never is.
      for (const [name, c] of convs) if (c.kernel === 1 || name.startsWith('conv1.')) t.is(c.dilation, 1, `${arch} os ${os}: ${name}`);
    }
  }
});

test('Xavier initialization: conv and fc weights within sqrt(6 / (fan_in + fan_out)), variance a^2 / 3', (t) => {
  const m = createModel('resnet_test', { seed: 3 });
  try {
    for (const [name, spec] of m.params.specs) {
      const v = m.params.get(name).dataSync();
      if (spec.role === 'weight') {
        const a = xavierBound(spec.fanIn!, spec.fanOut!);
        let max = 0;
        let sq = 0;
        for (const e of v) {
          max = Math.max(max, Math.abs(e));
          sq += e * e;
        }
        t.true(max <= a, `${name}: max ${max} > bound ${a}`);
        if (v.length > 2000) t.true(Math.abs(sq / v.length / (a * a / 3) - 1) < 0.1, `${name} variance`);
      } else if (spec.role === 'gamma') {
        t.true(v.every((e) => e === 1), `${name}: gamma starts at 1`);
      } else if (spec.role === 'var') {
        t.true(v.every((e) => e === 1), `${name}: running variance starts at 1`);
      } else {
        t.true(v.every((e) => e === 0), `${name} starts at 0`);
      }
    }
  } finally {
    m.dispose();
  }
});

test('zero gamma: only the last batch norm of each residual block starts at 0', (t) => {
  for (const name of ['resnet_test', 'resnet18d']) {
    const m = createModel(name, { zeroInitLastBn: true });
    const last = m.config.block === 'bottleneck' ? 'bn3' : 'bn2';
    try {
      let zeroed = 0;
      for (const [pname, spec] of m.params.specs) {
        if (spec.role !== 'gamma') continue;
        const v = m.params.get(pname).dataSync();
        const isLast = new RegExp(`^layer\\d+\\.\\d+\\.${last}\\.weight$`).test(pname);
        t.true(v.every((e) => e === (isLast ? 0 : 1)), pname);
        if (isLast) zeroed++;
      }
      t.is(zeroed, m.config.layers.reduce((a, b) => a + b, 0));
    } finally {
      m.dispose();
    }
  }
});

test('seeded initialization is reproducible and seeds differ', (t) => {
  const a = createModel('resnet_test', { seed: 1 });
  const b = createModel('resnet_test', { seed: 1 });
  const c = createModel('resnet_test', { seed: 2 });
  const w = (m: typeof a) => Array.from(m.params.get('layer1.0.conv2.weight').dataSync());
  t.deepEqual(w(a), w(b));
  t.notDeepEqual(w(a), w(c));
  [a, b, c].forEach((m) => m.dispose());
});

test('batch-norm modes: train updates running statistics, eval and frozen use them and agree', (t) => {
  const m = createModel('resnet_test');
  try {
    const x = tf.randomNormal([4, 32, 32, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
    const rm = () => Array.from(m.params.get('bn1.running_mean').dataSync());
    const before = rm();
    tf.dispose(m.forward(x, { mode: 'eval' })); // fills the folded-weight cache (owned by the model)
    const leak0 = tf.memory().numTensors;
    tf.dispose(m.forward(x, { mode: 'frozen' }));
    t.deepEqual(rm(), before, 'frozen leaves statistics alone');
    tf.dispose(m.forward(x, { mode: 'train' }));
    t.notDeepEqual(rm(), before, 'train updates statistics');
    const read = (mode: 'eval' | 'frozen') => {
      const y = m.forward(x, { mode });
      const v = y.dataSync().slice();
      y.dispose();
      return v;
    };
    const ev = read('eval');
    const fr = read('frozen');
    let d = 0;
    for (let i = 0; i < ev.length; i++) d = Math.max(d, Math.abs(ev[i]! - fr[i]!));
    t.true(d < 1e-4, `eval (folded) vs frozen: ${d}`);
    t.is(tf.memory().numTensors, leak0, 'no tensors leaked by forward passes in any mode');
    x.dispose();
  } finally {
    m.dispose();
  }
});

test('a training step leaks no tensors', (t) => {
  const m = createModel('resnet_test');
  try {
    const x = tf.randomNormal([2, 32, 32, 3]) as tf.Tensor4D;
    const labels = tf.oneHot(tf.tensor1d([1, 2], 'int32'), 10);
    const vars = [...m.params.trainable().values()];
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, m.forward(x, { mode: 'train' })), vars);
    t.is(Object.keys(grads).length, vars.length);
    tf.dispose([value, ...Object.values(grads)]);
    t.is(tf.memory().numTensors, before);
    tf.dispose([x, labels]);
  } finally {
    m.dispose();
  }
});

test('unknown architecture names list near matches', (t) => {
  const e = t.throws(() => getModelEntry('resnet50x'), { instanceOf: UserError });
  t.regex(e!.message, /unknown model 'resnet50x'.*Did you mean: .*resnet50d/);
  t.is((e as UserError).exitCode, 2);
});

test('listModels filters by glob', (t) => {
  t.deepEqual(listModels({ include: 'resnet50*' }), ['resnet50', 'resnet50b', 'resnet50c', 'resnet50d', 'resnet50d_small', 'resnet50e', 'resnet50s']);
  t.false(listModels({ exclude: '*d' }).some((n) => n.endsWith('d')));
  t.is(listModels().length, 33);
});

test('bad model input is rejected with a clear message', (t) => {
  const m = createModel('resnet_test');
  try {
    const x = tf.zeros([1, 32, 32, 1]) as tf.Tensor4D;
    t.throws(() => m.forward(x), { message: /3 channels \(NHWC\)/ });
    x.dispose();
  } finally {
    m.dispose();
  }
});
