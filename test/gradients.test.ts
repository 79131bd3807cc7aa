/**
 * End to end: the gradient of a training loss with respect to every parameter of a network, computed
 * on the wasm backend with zoo's kernels (fused batch norm, composed convolution gradients, pooling
 * gradients), against an independent reference on the cpu backend built from tfjs-core ops only
 * (tf.conv2d, batch norm from moments, tf.relu, tf.maxPool, tf.avgPool, tf.matMul) and tfjs's own
 * automatic differentiation. Input sizes keep every average pool on even maps, where tfjs's own
 * average-pool gradient is right. Dilated convolutions, which tfjs-core cannot differentiate, use
 * zoo's convolution op in the reference too.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setupBackend, tinyResNet as tiny } from './helpers/backend.js';
import { Model } from '../src/models/model.js';
import type { ResNetConfig } from '../src/models/resnet.js';
import type { ConvBnSpec, ConvSpec, GraphBuilder, PoolSpec, ResizeSpec, RoiAlignSpec } from '../src/models/graph.js';
import { defaultPadding } from '../src/models/count.js';
import { batchNormTrainComposed, conv2d as zooConv2d, resizeBilinear, roiAlign } from '../src/ops/index.js';
import { registerZooKernels } from '../src/backend/kernels/index.js';
import { Rng } from '../src/util/random.js';

class ReferenceBuilder implements GraphBuilder<tf.Tensor> {
  constructor(private readonly p: Map<string, tf.Tensor>) {}
  roiAlign(x: tf.Tensor, rois: tf.Tensor, idx: tf.Tensor, s: RoiAlignSpec): tf.Tensor {
    return roiAlign(x as tf.Tensor4D, rois as tf.Tensor2D, idx as tf.Tensor1D, s);
  }
  resize(x: tf.Tensor, like: tf.Tensor, s: ResizeSpec): tf.Tensor {
    return resizeBilinear(x as tf.Tensor4D, [like.shape[1]!, like.shape[2]!], s);
  }
  dropout(x: tf.Tensor): tf.Tensor {
    return x;
  }
  private conv2d(x: tf.Tensor, s: ConvSpec): tf.Tensor {
    const pad = defaultPadding(s);
    const w = this.p.get(`${s.name}.weight`) as tf.Tensor4D;
    // tfjs-core cannot differentiate dilated convolutions; those use zoo's op, whose gradient kernels
    // are checked against direct loops in kernels.test.ts.
    if ((s.dilation ?? 1) > 1) return zooConv2d(x as tf.Tensor4D, w, { strides: s.stride ?? 1, pad, dilations: s.dilation! });
    return tf.conv2d(x as tf.Tensor4D, w, s.stride ?? 1, [[0, 0], [pad, pad], [pad, pad], [0, 0]], 'NHWC', 1);
  }
  convBn(x: tf.Tensor, s: ConvBnSpec, residual?: tf.Tensor): tf.Tensor {
    const y = this.conv2d(x, s);
    return batchNormTrainComposed(y, this.p.get(`${s.bn}.weight`) as tf.Tensor1D, this.p.get(`${s.bn}.bias`) as tf.Tensor1D, {
      epsilon: 1e-5,
      relu: s.relu,
      ...(residual ? { residual } : {}),
    }).y;
  }
  conv(x: tf.Tensor, s: ConvSpec): tf.Tensor {
    return this.conv2d(x, s);
  }
  maxPool(x: tf.Tensor, s: PoolSpec): tf.Tensor {
    return tf.maxPool(x as tf.Tensor4D, s.kernel, s.stride, s.padding ?? 0);
  }
  avgPool(x: tf.Tensor, s: PoolSpec): tf.Tensor {
    return tf.avgPool(x as tf.Tensor4D, s.kernel, s.stride, 'same');
  }
  globalAvgPool(x: tf.Tensor): tf.Tensor {
    return tf.mean(x, [1, 2]);
  }
  linear(x: tf.Tensor, s: { name: string }): tf.Tensor {
    return tf.add(tf.matMul(x as tf.Tensor2D, this.p.get(`${s.name}.weight`) as tf.Tensor2D), this.p.get(`${s.name}.bias`)!);
  }
}

test.before(async () => {
  await setupBackend('wasm');
  registerZooKernels('cpu');
});


// Every structural path of the builder, kept small enough for the cpu backend's pure JS kernels.
const configs: [string, ResNetConfig][] = [
  ['ResNet-D bottleneck (deep stem, avg-pool shortcut)', tiny({})],
  ['ResNet-A bottleneck (7x7 stem, stride in the 1x1 conv)', tiny({ stemType: '', stemWidth: 16, strideIn: '1x1', avgDown: false })],
  ['ResNet-B basic blocks', tiny({ block: 'basic', stemType: '', stemWidth: 16, strideIn: '3x3', avgDown: false })],
  ['ResNet-D dilated, output stride 8', tiny({ outputStride: 8 })],
  ['ResNet-D, two blocks per stage (zero gamma off)', tiny({ layers: [2, 2, 2, 2], widths: [8, 8, 16, 16] })],
];

for (const [label, config] of configs) {
  test.serial(`gradients of every parameter, ${label}: wasm with zoo's kernels = cpu with tfjs-core ops`, async (t) => {
    // Batch norm over few values is ill-conditioned (1x1 maps at batch 3 amplify float32 differences
    // past any tolerance), so the last stage keeps at least 16 values per channel here.
    const size = Number(process.env.GRAD_SIZE ?? 64);
    const batch = Number(process.env.GRAD_BATCH ?? 4);
    await tf.setBackend('wasm');
    const m = new Model('test', config, { seed: 7 });
    const rng = new Rng(11);
    const x = Float32Array.from({ length: batch * size * size * 3 }, () => rng.normal());
    const labels = Int32Array.from({ length: batch }, () => rng.int(10));
    const values = m.params.toMap();
    const lossOf = (logits: tf.Tensor) => tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(labels, 'int32'), 10), logits);

    const names = [...m.params.trainable().keys()];
    if (process.env.GRAD_OURS_BACKEND) await tf.setBackend(process.env.GRAD_OURS_BACKEND);
    const ours = tf.tidy(() => {
      if (process.env.GRAD_OURS_REF) {
        const params = new Map<string, tf.Tensor>();
        for (const [n, v] of values) params.set(n, tf.tensor(v, m.params.specs.get(n)!.shape));
        const f = (...vs: tf.Tensor[]) => {
          const p = new Map(params);
          names.forEach((n, i) => p.set(n, vs[i]!));
          const b = new ReferenceBuilder(p);
          return lossOf(m.net.head(b, m.net.features(b, tf.tensor4d(x, [batch, size, size, 3]))));
        };
        return tf.grads(f)(names.map((n) => params.get(n)!));
      }
      const { grads } = tf.variableGrads(() => lossOf(m.forward(tf.tensor4d(x, [batch, size, size, 3]), { mode: 'train' })) as tf.Scalar, [...m.params.trainable().values()]);
      return names.map((n) => grads[m.params.get(n).name]!);
    });
    const oursData = ours.map((g) => g.dataSync().slice());
    tf.dispose(ours);
    m.dispose();

    await tf.setBackend(process.env.GRAD_REF_BACKEND ?? 'cpu');
    const refTensors = tf.tidy(() => {
      const params = new Map<string, tf.Tensor>();
      for (const [n, v] of values) params.set(n, tf.tensor(v, m.params.specs.get(n)!.shape));
      const trainable = names.map((n) => params.get(n)!);
      const f = (...vs: tf.Tensor[]) => {
        const p = new Map(params);
        names.forEach((n, i) => p.set(n, vs[i]!));
        const b = new ReferenceBuilder(p);
        return lossOf(m.net.head(b, m.net.features(b, tf.tensor4d(x, [batch, size, size, 3]))));
      };
      return tf.grads(f)(trainable);
    });
    const refData = refTensors.map((g) => g.dataSync().slice());
    tf.dispose(refTensors);
    await tf.setBackend('wasm');

    // Per parameter, the L2-relative difference |a - b| / |b|. Max-abs comparisons are not meaningful
    // here: the two implementations' float32 forward passes differ by ~1e-5, which flips the ReLU mask
    // wherever a pre-activation lies that close to 0 (about one position in 1e5), and batch norm spreads
    // each flip over its channel. A few flips move the L2 norm by far less than a wrong formula would.
    let worst = '';
    let worstRel = 0;
    let worstMax = 0;
    names.forEach((n, i) => {
      const a = oursData[i]!;
      const b = refData[i]!;
      let num = 0;
      let den = 1e-12;
      let scale = 1e-3;
      let diff = 0;
      for (let k = 0; k < b.length; k++) {
        num += (a[k]! - b[k]!) ** 2;
        den += b[k]! ** 2;
        scale = Math.max(scale, Math.abs(b[k]!));
        diff = Math.max(diff, Math.abs(a[k]! - b[k]!));
      }
      const rel = Math.sqrt(num / den);
      if (process.env.GRAD_VERBOSE) t.log(`${n}: L2-relative ${rel.toExponential(2)}, max-relative ${(diff / scale).toExponential(2)}`);
      worstMax = Math.max(worstMax, diff / scale);
      if (rel > worstRel) {
        worstRel = rel;
        worst = n;
      }
    });
    t.log(`largest L2-relative difference ${worstRel.toExponential(2)} (${worst}) over ${names.length} parameters; largest max-relative ${worstMax.toExponential(2)}`);
    t.true(worstRel < 5e-3, `${worst}: ${worstRel}`);
  });
}
