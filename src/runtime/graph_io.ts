/**
 * The inputs and outputs of an open ONNX Runtime session, as plain data: what callers check a model's
 * preprocessing and class names against before the first run.
 */
import type { Session } from './ort.js';

/** One graph input or output; a string dimension is symbolic (dynamic). */
export interface TensorInfo {
  name: string;
  type: string;
  shape: (number | string)[];
}

export interface GraphIO {
  inputs: TensorInfo[];
  outputs: TensorInfo[];
}

/** The session's declared inputs and outputs (non-tensor values are listed with an empty shape). */
export function graphIO(s: Session): GraphIO {
  const info = (m: { name: string; isTensor: boolean; type?: string; shape?: readonly (number | string)[] }): TensorInfo => ({
    name: m.name,
    type: m.isTensor ? String(m.type) : 'non-tensor',
    shape: m.isTensor ? [...(m.shape ?? [])] : [],
  });
  return { inputs: s.session.inputMetadata.map(info), outputs: s.session.outputMetadata.map(info) };
}
