/**
 * Tiny ONNX graphs of no zoo task for the service's tests, each written to a file: an identity, a Reshape
 * whose dynamic size must be a multiple of 3, an Add whose inputs must broadcast, an INT64 identity, and a
 * graph whose output starts with a dimension of its own (not the input's batch).
 */
import { writeFileSync } from 'node:fs';
import { OnnxBuilder, encodeModel } from '../../src/onnx/export.js';
import { DataType, node, valueInfo } from '../../src/onnx/proto.js';

type Dim = number | string;

function write(file: string, name: string, build: (b: OnnxBuilder) => void, inputs: [string, number, Dim[]][], outputs: [string, number, Dim[]][]): string {
  const b = new OnnxBuilder(() => new Float32Array(0), { foldBatchNorm: false, fp16: false, epsilon: 1e-5 });
  build(b);
  writeFileSync(
    file,
    encodeModel({
      name,
      builder: b,
      inputs: inputs.map(([n, t, s]) => valueInfo(n, t, s)),
      outputs: outputs.map(([n, t, s]) => valueInfo(n, t, s)),
      metadata: {},
    }),
  );
  return file;
}

/** y = x: FP32 [batch, n]. */
export function identityGraph(file: string): string {
  return write(file, 'identity', (b) => b.nodes.push(node('Identity', ['x'], ['y'], 'identity')), [['x', DataType.FLOAT, ['batch', 'n']]], [['y', DataType.FLOAT, ['batch', 'n']]]);
}

/** y = Reshape(x, [0, -1, 3]): x [batch, n] runs only when n is a multiple of 3. */
export function reshapeGraph(file: string): string {
  return write(
    file,
    'reshape',
    (b) => {
      const shape = b.constInt64('shape', [3], [0, -1, 3]);
      b.nodes.push(node('Reshape', ['x', shape], ['y'], 'reshape'));
    },
    [['x', DataType.FLOAT, ['batch', 'n']]],
    [['y', DataType.FLOAT, ['batch', 'm', 3]]],
  );
}

/** y = a + c: a [batch, n], c [batch, k]; runs only when n and k broadcast. */
export function addGraph(file: string): string {
  return write(file, 'add', (b) => b.nodes.push(node('Add', ['a', 'c'], ['y'], 'add')), [['a', DataType.FLOAT, ['batch', 'n']], ['c', DataType.FLOAT, ['batch', 'k']]], [['y', DataType.FLOAT, ['batch', 'n']]]);
}

/** y = x: INT64 [batch, 2]. */
export function int64Graph(file: string): string {
  return write(file, 'int64', (b) => b.nodes.push(node('Identity', ['x'], ['y'], 'identity')), [['x', DataType.INT64, ['batch', 2]]], [['y', DataType.INT64, ['batch', 2]]]);
}

/** y = Reshape(x, [-1, 2]): x [batch, 4] gives y [rows, 2], whose first dimension is not the batch's. */
export function regroupGraph(file: string): string {
  return write(
    file,
    'regroup',
    (b) => {
      const shape = b.constInt64('shape', [2], [-1, 2]);
      b.nodes.push(node('Reshape', ['x', shape], ['y'], 'reshape'));
    },
    [['x', DataType.FLOAT, ['batch', 4]]],
    [['y', DataType.FLOAT, ['rows', 2]]],
  );
}
