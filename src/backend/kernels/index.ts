/**
 * zoo's kernels, registered for the active backend by initBackend().
 *
 * Every backend gets:
 *   ZooConv2D                 the backend's own Conv2D, under a name that carries zoo's gradient
 *                             (dilation supported, input gradient only when it is needed)
 *   ZooConv2DBackpropFilter   composed from Conv2D (conv_backprop.ts)
 *   ZooConv2DBackpropInput    composed from Conv2D (conv_backprop.ts)
 *   ZooRelu / ZooReluGrad     ReLU whose gradient is one fused pass over the saved output
 * Backends whose memory JavaScript can reach (wasm, cpu) also get the fused batch-norm kernels
 * (batchnorm.ts); elsewhere ops/batchnorm.ts composes batch norm from core ops. So it is with RoIAlign
 * and its gradient (roi_align.ts here; ops/roi_align.ts composes them from core ops elsewhere) and the
 * gradient of bilinear resizing (resize.ts here; ops/resize.ts composes it from matrix products
 * elsewhere, tfjs's own ignoring half-pixel centres).
 *
 *   ZooMaxPool / ZooAvgPool   the backend's pooling, with gradients in pool.ts (first-maximum ties;
 *                             average-pool divisor as in the forward pass)
 *   ZooResizeBilinear         the backend's ResizeBilinear, with the gradient of ops/resize.ts
 * The wasm backend additionally gets the core kernels it lacks or runs on slow scalar paths:
 *   Conv2DBackpropFilter (missing), Conv2DBackpropInput and BatchMatMul (replaced),
 * so plain tf.conv2d / tf.matMul gradients are fast there too, and an Identity that shares data.
 * On wasm, where zoo's native addon is loaded (../native/), the convolutions (core and zoo names, and
 * FusedConv2D), BatchMatMul, batch norm, the ReLU and pooling gradients and SGD run there instead;
 * each falls back to the kernel named here for a case the addon does not take.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { backpropFilterKernel, backpropInputKernel, convForwardKernel } from './conv_backprop.js';
import { batchMatMulKernel } from './matmul.js';
import { batchNormTrainGradKernel, batchNormTrainKernel, reluGradKernel } from './batchnorm.js';
import { KernelContext } from './context.js';
import { avgPoolGradKernel, identitySharingKernel, maxPoolGradKernel } from './pool.js';
import { resizeBilinearGradKernel } from './resize.js';
import { roiAlignGradKernel, roiAlignKernel } from './roi_align.js';
import { sgdKernel } from './sgd.js';
import {
  nativeBatchMatMul,
  nativeBatchNormTrain,
  nativeBatchNormTrainGrad,
  nativeConvBackpropFilter,
  nativeConvBackpropInput,
  nativeConvForward,
  nativeAvgPoolGrad,
  nativeMaxPoolGrad,
  nativeReluGrad,
  nativeSgd,
  preferNative,
} from '../native/kernels.js';

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: KernelBackend; attrs: NamedAttrMap };
type Impl = (args: KernelArgs, backendName: string) => TensorInfo | TensorInfo[];

export const ZOO_KERNELS = {
  conv2d: 'ZooConv2D',
  conv2dBackpropFilter: 'ZooConv2DBackpropFilter',
  conv2dBackpropInput: 'ZooConv2DBackpropInput',
  relu: 'ZooRelu',
  reluGrad: 'ZooReluGrad',
  batchNormTrain: 'ZooBatchNormTrain',
  batchNormTrainGrad: 'ZooBatchNormTrainGrad',
  maxPool: 'ZooMaxPool',
  maxPoolGrad: 'ZooMaxPoolGrad',
  avgPool: 'ZooAvgPool',
  avgPoolGrad: 'ZooAvgPoolGrad',
  sgd: 'ZooSgd',
  roiAlign: 'ZooRoiAlign',
  roiAlignGrad: 'ZooRoiAlignGrad',
  resizeBilinear: 'ZooResizeBilinear',
  resizeBilinearGrad: 'ZooResizeBilinearGrad',
} as const;

const registered = new Set<string>();

function register(kernelName: string, backendName: string, impl: Impl): void {
  if (tf.getKernel(kernelName, backendName)) tf.unregisterKernel(kernelName, backendName);
  tf.registerKernel({
    kernelName,
    backendName,
    kernelFunc: ((args: KernelArgs) => impl(args, backendName)) as unknown as tf.KernelFunc,
  });
}

function delegate(coreName: string): Impl {
  return (args, backendName) => {
    const kernel = tf.getKernel(coreName, backendName);
    if (!kernel) throw new Error(`backend '${backendName}' has no '${coreName}' kernel`);
    return kernel.kernelFunc(args as unknown as Parameters<tf.KernelFunc>[0]) as TensorInfo;
  };
}

/** ReLU gradient from core kernels, for backends without direct memory access. */
const reluGradComposed: Impl = (args, backendName) => {
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const mask = ctx.run('Step', { x: args.inputs.y! }, { alpha: 0 });
    return ctx.keep(ctx.run('Multiply', { a: args.inputs.dy!, b: mask }));
  } finally {
    ctx.dispose();
  }
};

/** Max-pool gradient from the core kernel, for backends without direct memory access. */
const maxPoolGradComposed: Impl = (args, backendName) => {
  const ctx = new KernelContext(args.backend, backendName);
  try {
    const { dy, x, y } = args.inputs as Record<string, TensorInfo>;
    return ctx.keep(ctx.run('MaxPoolGrad', { dy: dy!, input: x!, output: y! }, args.attrs));
  } finally {
    ctx.dispose();
  }
};

/** The kernel registered now under a core name (before zoo replaces it). */
function original(coreName: string, backendName: string): Impl {
  const kernel = tf.getKernel(coreName, backendName);
  if (!kernel) return delegate(coreName);
  const f = kernel.kernelFunc;
  return (args) => f(args as unknown as Parameters<tf.KernelFunc>[0]) as TensorInfo;
}

/**
 * Registers zoo's kernels for `backendName` (idempotent). On wasm, the kernels that zoo's native
 * addon provides (../native/kernels.ts) run there whenever the addon is in use, and these otherwise.
 */
export function registerZooKernels(backendName: string): void {
  if (registered.has(backendName)) return;
  const direct = backendName === 'wasm' || backendName === 'cpu';
  const wasm = backendName === 'wasm';
  // preferNative() passes through to the second kernel on every backend but wasm.
  register(ZOO_KERNELS.conv2d, backendName, preferNative(nativeConvForward, direct ? convForwardKernel : delegate('Conv2D')));
  register(ZOO_KERNELS.conv2dBackpropFilter, backendName, preferNative(nativeConvBackpropFilter, backpropFilterKernel));
  register(ZOO_KERNELS.conv2dBackpropInput, backendName, preferNative(nativeConvBackpropInput, backpropInputKernel));
  register(ZOO_KERNELS.relu, backendName, delegate('Relu'));
  register(ZOO_KERNELS.reluGrad, backendName, direct ? preferNative(nativeReluGrad, reluGradKernel) : reluGradComposed);
  register(ZOO_KERNELS.maxPool, backendName, delegate('MaxPool'));
  register(ZOO_KERNELS.maxPoolGrad, backendName, direct ? preferNative(nativeMaxPoolGrad, maxPoolGradKernel) : maxPoolGradComposed);
  register(ZOO_KERNELS.avgPool, backendName, delegate('AvgPool'));
  register(ZOO_KERNELS.avgPoolGrad, backendName, preferNative(nativeAvgPoolGrad, avgPoolGradKernel));
  register(ZOO_KERNELS.resizeBilinear, backendName, delegate('ResizeBilinear'));
  if (direct) {
    register(ZOO_KERNELS.batchNormTrain, backendName, preferNative(nativeBatchNormTrain, batchNormTrainKernel));
    register(ZOO_KERNELS.batchNormTrainGrad, backendName, preferNative(nativeBatchNormTrainGrad, batchNormTrainGradKernel));
    register(ZOO_KERNELS.sgd, backendName, preferNative(nativeSgd, sgdKernel));
    register(ZOO_KERNELS.roiAlign, backendName, roiAlignKernel);
    register(ZOO_KERNELS.roiAlignGrad, backendName, roiAlignGradKernel);
    register(ZOO_KERNELS.resizeBilinearGrad, backendName, resizeBilinearGradKernel);
  }
  if (wasm) {
    register('Conv2D', backendName, preferNative(nativeConvForward, original('Conv2D', backendName)));
    register('FusedConv2D', backendName, preferNative(nativeConvForward, original('FusedConv2D', backendName)));
    register('Conv2DBackpropFilter', backendName, preferNative(nativeConvBackpropFilter, backpropFilterKernel));
    register('Conv2DBackpropInput', backendName, preferNative(nativeConvBackpropInput, backpropInputKernel));
    register('BatchMatMul', backendName, preferNative(nativeBatchMatMul, batchMatMulKernel));
    // The tape clones every tensor it saves for the backward pass; wasm's Identity copies the data,
    // doubling the memory of saved activations. Share it instead (strings keep the copying kernel).
    const copying = tf.getKernel('Identity', backendName)?.kernelFunc;
    register('Identity', backendName, (args) =>
      args.inputs.x!.dtype === 'string' && copying
        ? (copying(args as unknown as Parameters<tf.KernelFunc>[0]) as TensorInfo)
        : identitySharingKernel(args),
    );
  }
  registered.add(backendName);
}

/** Whether a zoo kernel is available on the active backend. */
export function hasZooKernel(kernelName: string): boolean {
  return tf.getKernel(kernelName, tf.getBackend()) !== undefined;
}
