/**
 * The teacher of knowledge distillation: a model in the local zoo (e.g. `resnet152d-teacher` after
 * `zoo pull`), an ONNX file (both run in ONNX Runtime, on CUDA where available), or a zoo/timm
 * checkpoint of a registered architecture run in tfjs.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync } from 'node:fs';
import { extname } from 'node:path';
import { UserError } from '../errors.js';
import { createSession, runClassifier, type Session } from '../runtime/ort.js';
import { findLocalModel } from '../hub/local.js';
import { checkClassOrder, resolveModelTarget } from '../predict/target.js';
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
 * `spec`: an .onnx file, a weights file (needs `arch`), or a name in the local zoo.
 * `numClasses` must match the student's; with `classes` (the training data's, in order), an ONNX or
 * local zoo teacher that records its labels must have the same ones, in the same order.
 * The teacher gets the student's input as it is: same size, mean and std (ImageNet's for every zoo model).
 */
export async function loadTeacher(spec: string, options: { arch?: string; numClasses: number; classes?: readonly string[] }): Promise<Teacher> {
  if (existsSync(spec) && extname(spec).toLowerCase() !== '.onnx') {
    if (!options.arch) throw new UserError(`the teacher ${spec} is a weights file: give its architecture with --teacher-arch`, { exitCode: 2 });
    const model = createModel(options.arch, { numClasses: options.numClasses });
    await loadWeights(model, spec);
    return new TfjsTeacher(model, `${options.arch} from ${spec} (tfjs)`);
  }
  if (!existsSync(spec) && !(await findLocalModel(spec))) {
    throw new UserError(`teacher '${spec}' is neither a file nor in the local zoo; 'zoo pull ${spec}' first, or give an .onnx file`);
  }
  const target = await resolveModelTarget(spec);
  if (options.classes) checkClassOrder(target.labels, options.classes, `the teacher ${target.label}`, 'the training data');
  const session = await createSession(target.onnx);
  return new OrtTeacher(session, existsSync(spec) ? `ONNX ${spec}` : `${target.label} (ONNX Runtime)`);
}
