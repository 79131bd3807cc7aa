/**
 * The Open Inference Protocol (KServe v2) over HTTP/REST: model metadata, inference requests and
 * responses as JSON, and the binary tensor data extension (tensors after the JSON header, whose length
 * the Inference-Header-Content-Length header gives), as Triton, KServe, Seldon MLServer and OpenVINO
 * Model Server speak it. Datatypes are the protocol's names (FP32, INT64, ...); tensor data is row-major,
 * little-endian, flattened or nested in JSON.
 */
import { HOST_ARRAY, type HostTensor } from '../runtime/ort.js';
import { HttpError, badRequest } from './http.js';

export const INFERENCE_HEADER = 'inference-header-content-length';

/** A tensor as model metadata declares it: -1 marks a dynamic dimension. */
export interface TensorMeta {
  name: string;
  datatype: string;
  shape: number[];
}

type Element = HostTensor['type'];

interface DatatypeInfo {
  /** ONNX Runtime's element type. */
  type: Element;
  bytes: number;
  array: new (buffer: ArrayBuffer | number, byteOffset?: number, length?: number) => HostTensor['data'];
  /** Whether JSON can carry it (FP16 has no JSON form). */
  json: boolean;
}

/** A datatype of the protocol over ONNX Runtime's element type: its typed array and size come from the runtime's. */
function datatype(type: Element, json = true): DatatypeInfo {
  const array = HOST_ARRAY[type] as unknown as DatatypeInfo['array'] & { BYTES_PER_ELEMENT: number };
  return { type, bytes: array.BYTES_PER_ELEMENT, array, json };
}

/** The protocol's datatypes zoo's models use, and how they map onto ONNX Runtime tensors. */
export const DATATYPES: Record<string, DatatypeInfo> = {
  FP32: datatype('float32'),
  FP16: datatype('float16', false),
  INT64: datatype('int64'),
  INT32: datatype('int32'),
  INT8: datatype('int8'),
  UINT8: datatype('uint8'),
  BOOL: datatype('bool'),
};

/** The protocol's datatype for an ONNX Runtime element type ('float32' -> 'FP32'), or undefined. */
export function datatypeOf(type: string): string | undefined {
  return Object.entries(DATATYPES).find(([, d]) => d.type === type)?.[0];
}

/** Metadata shape of an ONNX Runtime input or output: symbolic or unknown dimensions are -1. */
export function metaShape(shape: readonly (number | string)[]): number[] {
  return shape.map((d) => (typeof d === 'number' && d > 0 ? d : -1));
}

export interface RequestedOutput {
  name: string;
  binary: boolean;
}

export interface InferRequest {
  id?: string;
  inputs: Record<string, HostTensor>;
  /** The outputs to return (all, when the request names none) and whether each goes as binary. */
  outputs: RequestedOutput[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Brackets deep a request's JSON may be: the request, its inputs and parameters, and data nested 16 levels. */
export const MAX_JSON_DEPTH = 32;

/** Elements the JSON outputs of one answer may hold together; larger outputs go as binary data. */
export const MAX_JSON_OUTPUT_ELEMENTS = 1 << 20;

/**
 * Refuses JSON nested deeper than `limit` brackets, before it is parsed: a scan of the bytes that skips
 * strings (a deep body would otherwise hold the parser, and then the walk over it, for seconds).
 */
export function checkJsonDepth(bytes: Uint8Array, limit = MAX_JSON_DEPTH): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) throw badRequest(`the inference request is nested more than ${limit} levels deep`);
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
}

/** The leaves of (nested) JSON data in order, at most `limit` of them (past that: the count is wrong, said by the caller). */
function flatten(data: unknown, limit: number): unknown[] {
  const out: unknown[] = [];
  const walk = (d: unknown, depth: number): void => {
    if (depth > 16) throw badRequest('tensor data nested more than 16 levels deep');
    if (Array.isArray(d)) {
      for (const x of d) {
        walk(x, depth + 1);
        if (out.length > limit) return;
      }
    } else out.push(d);
  };
  walk(data, 0);
  return out;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkShape(where: string, shape: unknown, meta: TensorMeta, maxBatch: number | undefined, limits: ElementLimits | undefined): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw badRequest(`${where}: 'shape' must be an array of non-negative integers`);
  }
  const dims = shape as number[];
  if (dims.length !== meta.shape.length) {
    throw badRequest(`${where}: shape [${dims.join(', ')}] has ${dims.length} dimensions; the model takes [${meta.shape.join(', ')}]`);
  }
  meta.shape.forEach((m, i) => {
    if (m !== -1 && dims[i] !== m) throw badRequest(`${where}: shape [${dims.join(', ')}] does not fit the model's [${meta.shape.join(', ')}] (dimension ${i} must be ${m})`);
  });
  if (dims.some((d) => d === 0)) throw badRequest(`${where}: shape [${dims.join(', ')}] holds no elements`);
  if (maxBatch !== undefined && dims[0]! > maxBatch) throw badRequest(`a batch of ${dims[0]} is more than the ${maxBatch} the model runs at once (--max-batch)`);
  if (limits) {
    // The sizes a client chooses (the dynamic dimensions; the rows of a batch) decide what a run costs.
    const batched = maxBatch !== undefined;
    let n = 1;
    meta.shape.forEach((m, i) => {
      if (m === -1 && (i > 0 || !batched)) n *= dims[i]!;
    });
    if (batched) n *= dims[0]!;
    if (n > limits.maxElements) {
      const what = limits.option === '--seg-pixels' ? 'pixels' : 'elements in its dynamic dimensions';
      throw new HttpError(413, `${where}: shape [${dims.join(', ')}] has ${n} ${what}, more than the ${limits.maxElements} the model runs at once (${limits.option})`);
    }
  }
  return dims;
}

/** What a request may hold in the dynamic dimensions of an input (rows included where the model batches). */
export interface ElementLimits {
  maxElements: number;
  /** The option that sets it, for messages. */
  option: string;
}

function fromJson(where: string, datatype: string, info: DatatypeInfo, values: unknown[], count: number): HostTensor['data'] {
  if (values.length !== count) throw badRequest(`${where}: ${values.length > count ? `more than ${count}` : values.length} values for a shape of ${count} elements`);
  const out = new info.array(count);
  if (datatype === 'BOOL') {
    for (let i = 0; i < count; i++) {
      const v = values[i];
      if (typeof v !== 'boolean') throw badRequest(`${where}: BOOL data must be true or false (element ${i} is ${JSON.stringify(v)?.slice(0, 20)})`);
      (out as Uint8Array)[i] = v ? 1 : 0;
    }
    return out;
  }
  const integer = datatype !== 'FP32';
  for (let i = 0; i < count; i++) {
    const v = values[i];
    if (typeof v !== 'number' || (integer && !Number.isInteger(v))) {
      throw badRequest(`${where}: ${datatype} data must be ${integer ? 'integers' : 'numbers'} (element ${i} is ${JSON.stringify(v)?.slice(0, 20)})`);
    }
    if (out instanceof BigInt64Array) {
      // 2^63 itself is out of range (BigInt64Array would wrap it to -2^63); -2^63 is INT64's least value.
      if (v >= 2 ** 63 || v < -(2 ** 63)) throw badRequest(`${where}: element ${i} (${v}) is out of range for INT64`);
      out[i] = BigInt(v);
    }
    else (out as Float32Array)[i] = v;
  }
  if (integer && !(out instanceof BigInt64Array)) {
    // A typed array wraps out-of-range integers silently: refuse them instead.
    for (let i = 0; i < count; i++) if ((out as Int32Array)[i] !== values[i]) throw badRequest(`${where}: element ${i} (${String(values[i])}) is out of range for ${datatype}`);
  }
  return out;
}

/**
 * Parses and checks an inference request for a model with `inputs` and `outputs`: every input named once,
 * of the model's datatype and a shape that fits, its data complete (JSON, or binary after the header).
 */
export function parseInferRequest(
  body: Buffer,
  headerLength: string | undefined,
  model: { name: string; inputs: TensorMeta[]; outputs: TensorMeta[]; maxBatch?: number; elementLimits?: ElementLimits },
): InferRequest {
  let jsonEnd = body.length;
  if (headerLength !== undefined) {
    const n = Number(headerLength);
    if (!Number.isSafeInteger(n) || n < 0 || n > body.length) {
      throw badRequest(`Inference-Header-Content-Length ${headerLength} does not fit a body of ${body.length} bytes`);
    }
    jsonEnd = n;
  }
  let header: unknown;
  const json = body.subarray(0, jsonEnd);
  checkJsonDepth(json);
  try {
    header = JSON.parse(json.toString('utf8'));
  } catch (e) {
    throw badRequest(`the inference request is not JSON (${(e as Error).message})${headerLength === undefined && body.length > 0 && body.includes(0) ? '; binary tensor data needs the Inference-Header-Content-Length header' : ''}`);
  }
  if (!isObject(header)) throw badRequest('the inference request must be a JSON object with "inputs"');
  if (header.id !== undefined && typeof header.id !== 'string') throw badRequest("'id' must be a string");
  if (!Array.isArray(header.inputs) || header.inputs.length === 0) throw badRequest("the inference request has no 'inputs' array");
  const params = isObject(header.parameters) ? header.parameters : {};
  let offset = jsonEnd;
  const inputs: Record<string, HostTensor> = {};
  for (const [i, raw] of (header.inputs as unknown[]).entries()) {
    if (!isObject(raw)) throw badRequest(`inputs[${i}] must be an object with name, shape, datatype and data`);
    const name = raw.name;
    if (typeof name !== 'string') throw badRequest(`inputs[${i}] has no 'name'`);
    const where = `input '${name}'`;
    const meta = model.inputs.find((m) => m.name === name);
    if (!meta) throw badRequest(`${model.name} has no input '${name}'; its inputs are ${model.inputs.map((m) => m.name).join(', ')}`);
    if (inputs[name]) throw badRequest(`input '${name}' is given twice`);
    if (typeof raw.datatype !== 'string') throw badRequest(`${where} has no 'datatype'`);
    if (raw.datatype !== meta.datatype) throw badRequest(`${where} is ${raw.datatype}; ${model.name} takes ${meta.datatype}`);
    const info = DATATYPES[meta.datatype];
    if (!info) throw new HttpError(400, `${where}: datatype ${meta.datatype} is not one zoo serves`);
    const dims = checkShape(where, raw.shape, meta, model.maxBatch, model.elementLimits);
    const count = elementCount(dims);
    const p = isObject(raw.parameters) ? raw.parameters : {};
    let data: HostTensor['data'];
    if (p.binary_data_size !== undefined) {
      const size = p.binary_data_size;
      if (!Number.isSafeInteger(size) || (size as number) < 0) throw badRequest(`${where}: binary_data_size must be a non-negative integer`);
      if (headerLength === undefined) throw badRequest(`${where} has binary_data_size but the request has no Inference-Header-Content-Length header`);
      if ((size as number) !== count * info.bytes) throw badRequest(`${where}: binary_data_size ${String(size)} is not ${count} ${meta.datatype} elements (${count * info.bytes} bytes)`);
      if (offset + (size as number) > body.length) throw badRequest(`${where}: the body ends ${offset + (size as number) - body.length} bytes before its binary data does`);
      const bytes = body.subarray(offset, offset + (size as number));
      offset += size as number;
      if (bytes.byteOffset % info.bytes === 0) data = new info.array(bytes.buffer as ArrayBuffer, bytes.byteOffset, count);
      else {
        // The views of a typed array must be aligned: copy the rare unaligned tensor.
        const copy = new Uint8Array(bytes.length);
        copy.set(bytes);
        data = new info.array(copy.buffer, 0, count);
      }
    } else {
      if (!info.json) throw badRequest(`${where}: ${meta.datatype} has no JSON form; send it as binary data (binary_data_size)`);
      if (raw.data === undefined) throw badRequest(`${where} has no 'data'`);
      data = fromJson(where, meta.datatype, info, flatten(raw.data, count), count);
    }
    inputs[name] = { type: info.type, data, dims };
  }
  if (offset !== body.length) throw badRequest(`${body.length - offset} bytes after the last binary tensor belong to no input`);
  const missing = model.inputs.filter((m) => !inputs[m.name]);
  if (missing.length) throw badRequest(`${model.name} needs input${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m.name}'`).join(', ')}`);
  const rows = new Set(Object.values(inputs).map((t) => t.dims[0]));
  if (rows.size > 1) throw badRequest(`the inputs disagree on the batch size (${[...rows].join(' vs ')})`);
  const allBinary = params.binary_data_output === true;
  let outputs: RequestedOutput[];
  if (header.outputs === undefined) outputs = model.outputs.map((o) => ({ name: o.name, binary: allBinary }));
  else {
    if (!Array.isArray(header.outputs)) throw badRequest("'outputs' must be an array");
    outputs = (header.outputs as unknown[]).map((o, i) => {
      if (!isObject(o) || typeof o.name !== 'string') throw badRequest(`outputs[${i}] must be an object with a 'name'`);
      if (!model.outputs.some((m) => m.name === o.name)) throw badRequest(`${model.name} has no output '${o.name}'; its outputs are ${model.outputs.map((m) => m.name).join(', ')}`);
      const op = isObject(o.parameters) ? o.parameters : {};
      return { name: o.name, binary: op.binary_data === undefined ? allBinary : op.binary_data === true };
    });
  }
  return { ...(typeof header.id === 'string' ? { id: header.id } : {}), inputs, outputs };
}

function jsonData(t: HostTensor): unknown[] {
  if (t.data instanceof BigInt64Array) return Array.from(t.data, (v) => Number(v));
  if (t.type === 'bool') return Array.from(t.data as Uint8Array, (v) => v !== 0);
  return Array.from(t.data as Float32Array);
}

/** An inference response: its JSON header and binary parts (views of the outputs, not copies). */
export function encodeInferResponse(
  model: { name: string; version?: string },
  request: Pick<InferRequest, 'id' | 'outputs'>,
  outputs: Record<string, HostTensor>,
): { header: Buffer; binary: Uint8Array[] } {
  const binary: Uint8Array[] = [];
  let jsonElements = 0;
  for (const r of request.outputs) {
    const t = outputs[r.name];
    if (t && !r.binary && DATATYPES[datatypeOf(t.type) ?? '']?.json) jsonElements += t.data.length;
  }
  if (jsonElements > MAX_JSON_OUTPUT_ELEMENTS) {
    const names = request.outputs.filter((r) => !r.binary).map((r) => r.name);
    throw new HttpError(
      400,
      `the outputs asked for as JSON (${names.join(', ')}) hold ${jsonElements} elements, more than the ${MAX_JSON_OUTPUT_ELEMENTS} an answer carries as JSON; ask for binary data ("parameters": {"binary_data_output": true}, or "binary_data": true per output)`,
    );
  }
  const list = request.outputs.map((r) => {
    const t = outputs[r.name];
    if (!t) throw new Error(`the run returned no output '${r.name}'`);
    const datatype = datatypeOf(t.type);
    if (!datatype) throw new Error(`output '${r.name}' has an element type (${t.type}) the protocol cannot carry`);
    const base = { name: r.name, datatype, shape: t.dims };
    if (r.binary || !DATATYPES[datatype]!.json) {
      const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      binary.push(bytes);
      return { ...base, parameters: { binary_data_size: bytes.byteLength } };
    }
    return { ...base, data: jsonData(t) };
  });
  const body = { model_name: model.name, model_version: model.version ?? '1', ...(request.id !== undefined ? { id: request.id } : {}), outputs: list };
  return { header: Buffer.from(JSON.stringify(body)), binary };
}

/** A tensor as a client sends it: the protocol's datatype, a shape and flat data. */
export interface ClientTensor {
  name: string;
  datatype: string;
  shape: number[];
  data: HostTensor['data'];
}

/**
 * The body and headers of an inference request, for clients (tests, benchmarks, a Node program of one's
 * own): tensors as binary data after the JSON header (`binary: true`, the default) or as JSON.
 */
export function encodeInferRequest(
  inputs: readonly ClientTensor[],
  options: { binary?: boolean; binaryOutput?: boolean; outputs?: string[]; id?: string } = {},
): { body: Buffer; headers: Record<string, string> } {
  const binary = options.binary ?? true;
  const parts: Uint8Array[] = [];
  const list = inputs.map((t) => {
    const base = { name: t.name, datatype: t.datatype, shape: t.shape };
    if (binary) {
      const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      parts.push(bytes);
      return { ...base, parameters: { binary_data_size: bytes.byteLength } };
    }
    return { ...base, data: jsonData({ type: DATATYPES[t.datatype]?.type ?? 'float32', data: t.data, dims: t.shape }) };
  });
  const header = Buffer.from(
    JSON.stringify({
      ...(options.id !== undefined ? { id: options.id } : {}),
      inputs: list,
      ...(options.outputs ? { outputs: options.outputs.map((name) => ({ name, parameters: { binary_data: options.binaryOutput ?? binary } })) } : {}),
      ...(options.binaryOutput ?? binary ? { parameters: { binary_data_output: true } } : {}),
    }),
  );
  const headers: Record<string, string> = { 'Content-Type': binary ? 'application/octet-stream' : 'application/json' };
  if (binary) headers['Inference-Header-Content-Length'] = String(header.length);
  return { body: Buffer.concat([header, ...parts]), headers };
}

/** An inference response's outputs by name, binary parts read back into typed arrays. */
export function decodeInferResponse(body: Buffer, headerLength: string | null | undefined): { header: Record<string, unknown>; outputs: Record<string, ClientTensor> } {
  const end = headerLength ? Number(headerLength) : body.length;
  const header = JSON.parse(body.subarray(0, end).toString('utf8')) as { outputs?: { name: string; datatype: string; shape: number[]; data?: unknown[]; parameters?: { binary_data_size?: number } }[] };
  let at = end;
  const outputs: Record<string, ClientTensor> = {};
  for (const o of header.outputs ?? []) {
    const info = DATATYPES[o.datatype];
    if (!info) throw new Error(`output ${o.name}: datatype ${o.datatype} is not one this client reads`);
    let data: HostTensor['data'];
    const size = o.parameters?.binary_data_size;
    if (size !== undefined) {
      const copy = new Uint8Array(size);
      copy.set(body.subarray(at, at + size));
      at += size;
      data = new info.array(copy.buffer, 0, size / info.bytes);
    } else {
      const values = o.data ?? [];
      data = new info.array(values.length);
      values.forEach((v, i) => ((data as unknown as unknown[])[i] = data instanceof BigInt64Array ? BigInt(v as number) : typeof v === 'boolean' ? (v ? 1 : 0) : v));
    }
    outputs[o.name] = { name: o.name, datatype: o.datatype, shape: o.shape, data };
  }
  return { header: header as Record<string, unknown>, outputs };
}
