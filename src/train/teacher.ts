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
 * `numClasses` must match the student's.
 */
export async function loadTeacher(spec: string, options: { arch?: string; numClasses: number }): Promise<Teacher> {
  if (existsSync(spec)) {
    if (extname(spec).toLowerCase() === '.onnx') {
      return new OrtTeacher(await createSession(spec), `ONNX ${spec}`);
    }
    if (!options.arch) throw new UserError(`the teacher ${spec} is a weights file: give its architecture with --teacher-arch`, { exitCode: 2 });
    const model = createModel(options.arch, { numClasses: options.numClasses });
    await loadWeights(model, spec);
    return new TfjsTeacher(model, `${options.arch} from ${spec} (tfjs)`);
  }
  const local = await findLocalModel(spec);
  if (!local) throw new UserError(`teacher '${spec}' is neither a file nor in the local zoo; 'zoo pull ${spec}' first, or give an .onnx file`);
  return new OrtTeacher(await createSession(local.onnx), `${local.name} (ONNX Runtime)`);
}
