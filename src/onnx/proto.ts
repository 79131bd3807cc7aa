/**
 * Small constructors over onnx-proto's generated classes (protobufjs), so the exporter reads as a
 * list of nodes. Tensors are stored little-endian in raw_data, as every runtime expects.
 */
import { createRequire } from 'node:module';
import type { onnx as OnnxNs } from 'onnx-proto';
import { UserError } from '../errors.js';

const require = createRequire(import.meta.url);
export const onnx = (require('onnx-proto') as { onnx: typeof OnnxNs }).onnx;
export type { OnnxNs };

export const DataType = onnx.TensorProto.DataType;
export const IR_VERSION = 8; // ONNX 1.12, the IR that goes with opset 17
export const OPSET = 17;

function le(bytes: ArrayBufferView): Uint8Array {
  // Typed arrays are little-endian on every platform Node runs on; copy to an exact-size buffer.
  return new Uint8Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
}

export function floatTensor(name: string, dims: number[], values: Float32Array): OnnxNs.ITensorProto {
  return { name, dims, dataType: DataType.FLOAT, rawData: le(values) };
}

export function halfTensor(name: string, dims: number[], bits: Uint16Array): OnnxNs.ITensorProto {
  return { name, dims, dataType: DataType.FLOAT16, rawData: le(bits) };
}

export function int64Tensor(name: string, dims: number[], values: number[]): OnnxNs.ITensorProto {
  return { name, dims, dataType: DataType.INT64, rawData: le(BigInt64Array.from(values.map(BigInt))) };
}

type AttrValue = number | number[] | string | { float: number };

export function attr(name: string, value: AttrValue): OnnxNs.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if (typeof value === 'object') return { name, type: T.FLOAT, f: value.float };
  return { name, type: T.INT, i: value };
}

export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  name: string,
  attrs: Record<string, AttrValue> = {},
): OnnxNs.INodeProto {
  return {
    opType,
    input: inputs,
    output: outputs,
    name,
    attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
  };
}

/** A value_info for a float tensor; string dims are symbolic (dynamic). */
export function valueInfo(name: string, elemType: number, dims: (number | string)[]): OnnxNs.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

/**
 * Float32 values of a tensor (raw_data or float_data; FLOAT16 converted). What a file can get wrong
 * (data kept in an external file, dims that are negative or beyond any file, a data size that does
 * not match dims and type, an unsupported type) is a UserError naming `label` and the initializer.
 */
export function tensorValues(t: OnnxNs.ITensorProto, fromHalf: (bits: Uint16Array) => Float32Array, label = 'ONNX model'): Float32Array {
  const what = `${label}: initializer ${JSON.stringify(t.name ?? '')}`;
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (t.externalData?.length ?? 0) > 0) {
    const location = t.externalData?.find((e) => e.key === 'location')?.value;
    throw new UserError(
      `${what} keeps its data in an external file${location ? ` (${JSON.stringify(location)})` : ''}; only ONNX files with their weights inside can be read`,
    );
  }
  const dims = (t.dims ?? []).map(Number);
  let n = 1;
  for (const d of dims) {
    // Past 2^32 elements no tensor fits a readable file; stopping there keeps the product exact.
    if (!Number.isSafeInteger(d) || d < 0 || (n *= d) > 2 ** 32) {
      throw new UserError(`${what} has dims [${(t.dims ?? []).map(String).join(', ')}], which are not the sizes of a tensor in a file`);
    }
  }
  const mismatch = (have: string, per: string) => new UserError(`${what} has ${have} but dims [${dims.join(', ')}] need ${n} ${per}`);
  if (t.dataType === DataType.FLOAT) {
    if (t.rawData && t.rawData.length) {
      if (t.rawData.length !== n * 4) throw mismatch(`${t.rawData.length} bytes of raw data`, 'float32 values (4 bytes each)');
      return new Float32Array(le(t.rawData).buffer);
    }
    if ((t.floatData?.length ?? 0) !== n) throw mismatch(`${t.floatData?.length ?? 0} float values`, 'values');
    return Float32Array.from(t.floatData ?? []);
  }
  if (t.dataType === DataType.FLOAT16) {
    if (t.rawData && t.rawData.length) {
      if (t.rawData.length !== n * 2) throw mismatch(`${t.rawData.length} bytes of raw data`, 'float16 values (2 bytes each)');
      return fromHalf(new Uint16Array(le(t.rawData).buffer));
    }
    if ((t.int32Data?.length ?? 0) !== n) throw mismatch(`${t.int32Data?.length ?? 0} float16 values`, 'values');
    return fromHalf(Uint16Array.from(t.int32Data ?? []));
  }
  throw new UserError(`${what} has data type ${String(t.dataType)}; only float32 (and float16) initializers hold weights`);
}

/** Decodes ONNX model bytes; a file that is not one gives a UserError naming it. */
export function decodeModel(bytes: Uint8Array, label: string): OnnxNs.ModelProto {
  try {
    return onnx.ModelProto.decode(bytes);
  } catch (e) {
    // protobufjs reports a bad file as RangeError or Error ("index out of range", "invalid wire type").
    throw new UserError(`${label}: not a readable ONNX model (${(e as Error).message})`, { cause: e });
  }
}
