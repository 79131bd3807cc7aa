/**
 * A plain ResNet forward pass (inference: batch norm with running statistics) written directly with
 * tfjs-core ops from a PyTorch-layout state dict (timm names, OIHW convolutions, [out, in] linear),
 * independent of zoo's builder and converters: the reference that converted models are checked against.
 */
import * as tf from '@tensorflow/tfjs-core';

export interface RefTensor {
  shape: number[];
  data: Float32Array;
}

export interface RefConfig {
  stem: 'deep' | 'plain';
  /** Where a downsampling bottleneck strides. */
  strideIn: '1x1' | '3x3';
  avgDown: boolean;
  layers: number[];
}

export function referenceLogits(sd: Map<string, RefTensor>, cfg: RefConfig, x: tf.Tensor4D): tf.Tensor2D {
  return tf.tidy(() => {
    const get = (n: string) => {
      const t = sd.get(n);
      if (!t) throw new Error(`reference: missing ${n}`);
      return tf.tensor(t.data, t.shape);
    };
    const conv = (v: tf.Tensor4D, name: string, stride: number, pad: number) => {
      const w = tf.transpose(get(`${name}.weight`), [2, 3, 1, 0]) as tf.Tensor4D; // OIHW -> HWIO
      let y = tf.conv2d(v, w, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]]);
      if (sd.has(`${name}.bias`)) y = tf.add(y, get(`${name}.bias`));
      return y;
    };
    const bn = (v: tf.Tensor4D, p: string) =>
      tf.add(
        tf.mul(tf.div(tf.sub(v, get(`${p}.running_mean`)), tf.sqrt(tf.add(get(`${p}.running_var`), 1e-5))), get(`${p}.weight`)),
        get(`${p}.bias`),
      ) as tf.Tensor4D;
    let h: tf.Tensor4D;
    if (cfg.stem === 'deep') {
      h = tf.relu(bn(conv(x, 'conv1.0', 2, 1), 'conv1.1'));
      h = tf.relu(bn(conv(h, 'conv1.3', 1, 1), 'conv1.4'));
      h = tf.relu(bn(conv(h, 'conv1.6', 1, 1), 'bn1'));
    } else {
      h = tf.relu(bn(conv(x, 'conv1', 2, 3), 'bn1'));
    }
    h = tf.maxPool(h, 3, 2, 1);
    cfg.layers.forEach((blocks, s) => {
      for (let b = 0; b < blocks; b++) {
        const p = `layer${s + 1}.${b}`;
        const stride = s > 0 && b === 0 ? 2 : 1;
        let shortcut: tf.Tensor4D = h;
        if (sd.has(`${p}.downsample.0.weight`)) shortcut = bn(conv(h, `${p}.downsample.0`, stride, 0), `${p}.downsample.1`);
        else if (sd.has(`${p}.downsample.1.weight`)) {
          const pooled = stride > 1 ? tf.avgPool(h, 2, 2, 'same') : h;
          shortcut = bn(conv(pooled, `${p}.downsample.1`, 1, 0), `${p}.downsample.2`);
        }
        const [s1, s2] = cfg.strideIn === '1x1' ? [stride, 1] : [1, stride];
        let y = tf.relu(bn(conv(h, `${p}.conv1`, s1, 0), `${p}.bn1`));
        y = tf.relu(bn(conv(y, `${p}.conv2`, s2, 1), `${p}.bn2`));
        y = bn(conv(y, `${p}.conv3`, 1, 0), `${p}.bn3`);
        h = tf.relu(tf.add(y, shortcut)) as tf.Tensor4D;
      }
    });
    const pooled = tf.mean(h, [1, 2]) as tf.Tensor2D;
    return tf.add(tf.matMul(pooled, get('fc.weight') as tf.Tensor2D, false, true), get('fc.bias')) as tf.Tensor2D;
  });
}
