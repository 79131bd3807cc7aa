/**
 * The teacher of knowledge distillation: a model in the local zoo (e.g. `resnet152d-teacher` after
 * `zoo pull`), an ONNX file (both run in ONNX Runtime, on CUDA where available), or a zoo/timm
 * checkpoint of a registered architecture run in tfjs.
 */
import * as tf from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';
import { runClassifier, type Session } from '../runtime/ort.js';
import { resolveModelRef } from '../hub/resolve.js';
import { ImageClassifier } from '../predict/classifier.js';
import { checkClassOrder } from '../predict/target.js';
import { toNCHW } from '../onnx/check.js';
import { createModel, type Model } from '../models/model.js';
import { loadWeights } from '../io/weights.js';

export interface Teacher {
  describe: string;
  /** Logits [n, classes] for normalized NHWC images [n, size, size, 3]. */
  logits(images: Float32Array, n: number, size: number): Promise<Float32Array>;
  dispose(): Promise<void>;
}

class OrtTeacher implements Teacher {
  constructor(
    private readonly session: Session,
    readonly describe: string,
  ) {}

  async logits(images: Float32Array, n: number, size: number): Promise<Float32Array> {
    return runClassifier(this.session, toNCHW(images, n, size, size, 3), [n, 3, size, size]);
  }

  async dispose(): Promise<void> {
    await this.session.session.release();
  }
}

class TfjsTeacher implements Teacher {
  constructor(
    private readonly model: Model,
    readonly describe: string,
  ) {}

  async logits(images: Float32Array, n: number, size: number): Promise<Float32Array> {
    const y = tf.tidy(() => this.model.forward(tf.tensor4d(images, [n, size, size, 3]), { mode: 'eval' }));
    const v = (await y.data()) as Float32Array;
    y.dispose();
    return v;
  }

  async dispose(): Promise<void> {
    this.model.dispose();
  }
}

/**
 * `spec`: anything the model resolver takes that can run (a local zoo name, a pulled published name, an
 * .onnx file, a run directory), or a weights file (with `arch`, unless it records its own).
 * `numClasses` must match the student's; with `classes` (the training data's, in order), a teacher that
 * records its labels must have the same ones, in the same order.
 * The teacher gets the student's input as it is: same size, mean and std (ImageNet's for every zoo model).
 */
export async function loadTeacher(spec: string, options: { arch?: string; numClasses: number; classes?: readonly string[]; imageSize?: number }): Promise<Teacher> {
  const r = await resolveModelRef(spec, { purpose: 'describe', command: 'zoo train --teacher' });
  if (r.kind === 'weights' || (options.arch && r.weights && !r.onnx)) {
    const arch = options.arch ?? r.arch;
    if (!arch) throw new UserError(`the teacher ${spec} is a weights file: give its architecture with --teacher-arch`, { exitCode: 2 });
    if (options.classes && r.meta.labels) checkClassOrder(r.meta.labels, options.classes, `the teacher ${r.label}`, 'the training data');
    const model = createModel(arch, { numClasses: options.numClasses });
    try {
      await loadWeights(model, r.weights!);
    } catch (e) {
      model.dispose();
      throw e;
    }
    return new TfjsTeacher(model, `${arch} from ${spec} (tfjs)`);
  }
  if (r.kind === 'arch') throw new UserError(`the teacher '${spec}' is an architecture without weights: give a trained model or a weights file`, { exitCode: 2 });
  const run = await resolveModelRef(spec, { purpose: 'run', command: 'zoo train --teacher' });
  const classifier = await ImageClassifier.open(run);
  try {
    if (options.classes) checkClassOrder(classifier.labels, options.classes, `the teacher ${run.label}`, 'the training data');
    if (classifier.numClasses !== undefined && classifier.numClasses !== options.numClasses) {
      throw new UserError(`the teacher ${run.label} outputs ${classifier.numClasses} classes; the student has ${options.numClasses}`);
    }
    const size = options.imageSize;
    if (size !== undefined && classifier.inputSize !== undefined && classifier.inputSize !== size) {
      throw new UserError(
        `the teacher ${run.label} takes ${classifier.inputSize}x${classifier.inputSize} images and the student trains at ${size}x${size}; ` +
          `export the teacher at the student's size (zoo export ${spec} --image-size ${size}), or with --dynamic-size`,
      );
    }
  } catch (e) {
    await classifier.dispose();
    throw e;
  }
  return new OrtTeacher(classifier.session, run.kind === 'onnx' ? `ONNX ${spec}` : `${run.label} (ONNX Runtime)`);
}
