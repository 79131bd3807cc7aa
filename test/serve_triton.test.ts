/**
 * zoo export --triton: the model repository's layout, and every config.pbtxt checked against Triton's own
 * schema (model_config.proto of triton-inference-server/common, kept in test/fixtures/triton/) by a
 * protobuf text-format parser and a validator over the message types protobufjs reads from the .proto:
 * field names, nesting, repeated or not, oneofs, scalar types and enum values. Beside the schema, the
 * rules Triton's core and its onnxruntime backend apply when they load a model (non-empty dims, -1 for
 * dynamic sizes, the batch dimension left out, output dims equal to the model's, reshape of batch-only
 * tensors) are checked against the graph of the copied model.onnx. Triton itself is not run here.
 */
import test from 'ava';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setupBackend } from './helpers/backend.js';
import { tempDir } from './helpers/fixtures.js';
import { runZoo } from './helpers/cli.js';
import { createModel } from '../src/models/model.js';
import { exportOnnx } from '../src/onnx/export.js';
import { metadataProps } from '../src/onnx/metadata.js';
import { onnx, DataType, IR_VERSION, OPSET, node, valueInfo } from '../src/onnx/proto.js';
import { createDetector } from '../src/detection/detector.js';
import { exportDetector } from '../src/detection/export.js';
import { detectionMetadata } from '../src/detection/metadata.js';
import { createSegmenter } from '../src/segmentation/segmenter.js';
import { exportSegmenter } from '../src/segmentation/export.js';
import { segmentationMetadata } from '../src/segmentation/metadata.js';
import { createSession } from '../src/runtime/ort.js';
import { graphIO, type GraphIO } from '../src/runtime/graph_io.js';
import { addToLocalZoo } from '../src/hub/local.js';
import { readHubSettings } from '../src/hub/settings.js';
import { IMAGENET_PREPROCESSING } from '../src/predict/preprocessing.js';
import { UserError } from '../src/errors.js';
import { renderTritonConfig, writeTritonRepository, type TritonModelConfig } from '../src/serve/triton.js';
import { parseModelSpec } from '../src/serve/model.js';

// ---------------------------------------------------------------------------------------------------
// Triton's schema, and a protobuf text-format reader checked against it

const SCHEMA_FILE = fileURLToPath(new URL('../../test/fixtures/triton/model_config.proto', import.meta.url));

// protobufjs (with its .proto parser) comes with onnx-proto, which depends on it.
const requireFromOnnxProto = createRequire(createRequire(import.meta.url).resolve('onnx-proto'));

/** The part of protobufjs's reflection this reader uses. */
interface PbEnum {
  fullName: string;
  values: Record<string, number>;
}
interface PbType {
  fullName: string;
  fields: Record<string, PbField>;
}
interface PbField {
  name: string;
  type: string;
  repeated: boolean;
  map?: boolean;
  keyType?: string;
  resolvedType: PbType | PbEnum | null;
  partOf: { name: string } | null;
}
const protobuf = requireFromOnnxProto('protobufjs') as {
  parse(source: string, options: { keepCase: boolean }): { root: { resolveAll(): void; lookupType(name: string): PbType } };
};
const typeName = (t: { fullName: string }) => t.fullName.replace(/^\./, '');

function loadSchema(): PbType {
  const root = protobuf.parse(readFileSync(SCHEMA_FILE, 'utf8'), { keepCase: true }).root;
  root.resolveAll();
  return root.lookupType('inference.ModelConfig');
}

interface Token {
  kind: 'ident' | 'number' | 'string' | 'punct';
  text: string;
  /** Decoded value of a string token. */
  value?: string;
  line: number;
}

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
    } else if (/\s/.test(c)) i++;
    else if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '"' || c === "'") {
      let v = '';
      let j = i + 1;
      for (;;) {
        if (j >= text.length || text[j] === '\n') throw new Error(`line ${line}: unterminated string`);
        const d = text[j]!;
        if (d === c) break;
        if (d === '\\') {
          const e = text[j + 1]!;
          const simple: Record<string, string> = { n: '\n', r: '\r', t: '\t', '\\': '\\', '"': '"', "'": "'", a: '\x07', b: '\b', f: '\f', v: '\v', '?': '?' };
          if (simple[e] !== undefined) {
            v += simple[e];
            j += 2;
          } else if (/[0-7]/.test(e)) {
            const m = /^[0-7]{1,3}/.exec(text.slice(j + 1))![0];
            v += String.fromCharCode(parseInt(m, 8));
            j += 1 + m.length;
          } else if (e === 'x') {
            const m = /^[0-9a-fA-F]{1,2}/.exec(text.slice(j + 2));
            if (!m) throw new Error(`line ${line}: bad \\x escape`);
            v += String.fromCharCode(parseInt(m[0], 16));
            j += 2 + m[0].length;
          } else throw new Error(`line ${line}: unknown escape \\${e}`);
        } else {
          v += d;
          j++;
        }
      }
      const prev = out[out.length - 1];
      // Adjacent strings are one string, as in C.
      if (prev?.kind === 'string') prev.value += v;
      else out.push({ kind: 'string', text: text.slice(i, j + 1), value: v, line });
      i = j + 1;
    } else if (/[-0-9.]/.test(c)) {
      const m = /^-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fF]?|inf(?:inity)?|nan)/i.exec(text.slice(i));
      if (!m) throw new Error(`line ${line}: unexpected '${c}'`);
      out.push({ kind: 'number', text: m[0], line });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i))![0];
      out.push({ kind: 'ident', text: m, line });
      i += m.length;
    } else if ('{}[]:,;<>'.includes(c)) {
      out.push({ kind: 'punct', text: c, line });
      i++;
    } else throw new Error(`line ${line}: unexpected '${c}'`);
  }
  return out;
}

type Value = { kind: 'message'; fields: TextField[]; line: number } | { kind: 'scalar'; token: Token };

interface TextField {
  name: string;
  /** A ':' followed the name (required before scalar values). */
  colon: boolean;
  /** Written as a [list]. */
  list: boolean;
  values: Value[];
  line: number;
}

/** Protobuf text format (as C++'s TextFormat reads it) into fields; syntax errors throw. */
function parseTextFormat(text: string): TextField[] {
  const toks = tokenize(text);
  let p = 0;
  const peek = () => toks[p];
  const take = (what?: string): Token => {
    const t = toks[p++];
    if (!t) throw new Error(`unexpected end of input${what ? `, expected '${what}'` : ''}`);
    if (what !== undefined && t.text !== what) throw new Error(`line ${t.line}: expected '${what}', got '${t.text}'`);
    return t;
  };
  const message = (close: string | undefined): TextField[] => {
    const fields: TextField[] = [];
    for (;;) {
      const t = peek();
      if (!t) {
        if (close) throw new Error(`unexpected end of input, expected '${close}'`);
        return fields;
      }
      if (close && t.text === close) {
        p++;
        return fields;
      }
      if (t.kind !== 'ident') throw new Error(`line ${t.line}: expected a field name, got '${t.text}'`);
      p++;
      const f: TextField = { name: t.text, colon: false, list: false, values: [], line: t.line };
      if (peek()?.text === ':') {
        p++;
        f.colon = true;
      }
      const value = (): Value => {
        const v = take();
        if (v.text === '{' || v.text === '<') return { kind: 'message', fields: message(v.text === '{' ? '}' : '>'), line: v.line };
        if (v.kind === 'punct') throw new Error(`line ${v.line}: expected a value, got '${v.text}'`);
        return { kind: 'scalar', token: v };
      };
      if (peek()?.text === '[') {
        p++;
        f.list = true;
        if (peek()?.text !== ']') {
          for (;;) {
            f.values.push(value());
            const sep = take();
            if (sep.text === ']') break;
            if (sep.text !== ',') throw new Error(`line ${sep.line}: expected ',' or ']', got '${sep.text}'`);
          }
        } else p++;
      } else f.values.push(value());
      fields.push(f);
      if (peek()?.text === ',' || peek()?.text === ';') p++;
    }
  };
  return message(undefined);
}

const INT_RANGES: Record<string, [bigint, bigint]> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  sint32: [-(2n ** 31n), 2n ** 31n - 1n],
  sfixed32: [-(2n ** 31n), 2n ** 31n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  fixed32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  sint64: [-(2n ** 63n), 2n ** 63n - 1n],
  sfixed64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  fixed64: [0n, 2n ** 64n - 1n],
};

/** Checks a scalar token against a protobuf scalar type; the error, or undefined. */
function scalarProblem(type: string, t: Token): string | undefined {
  if (type === 'string' || type === 'bytes') return t.kind === 'string' ? undefined : `expected a string, got ${t.text}`;
  if (type === 'bool') return t.kind === 'ident' && ['true', 'false'].includes(t.text) ? undefined : `expected true or false, got ${t.text}`;
  if (type === 'float' || type === 'double') return t.kind === 'number' ? undefined : `expected a number, got ${t.text}`;
  const range = INT_RANGES[type];
  if (!range) return `unknown scalar type ${type}`;
  if (t.kind !== 'number' || !/^-?(?:0[xX][0-9a-fA-F]+|\d+)$/.test(t.text)) return `expected an integer (${type}), got ${t.text}`;
  const v = t.text.startsWith('-') ? -BigInt(t.text.slice(1)) : BigInt(t.text);
  return v < range[0] || v > range[1] ? `${t.text} is out of range for ${type}` : undefined;
}

/** Every way `fields` break the message type `type` (names, nesting, repetition, oneofs, scalar types, enum values). */
function validate(type: PbType, fields: TextField[], where = ''): string[] {
  const errors: string[] = [];
  const seen = new Map<string, number>();
  const oneofs = new Map<string, string>();
  for (const f of fields) {
    const at = `${where}${f.name} (line ${f.line})`;
    const field = type.fields[f.name] as PbField | undefined;
    if (!field) {
      errors.push(`${at}: ${typeName(type)} has no field '${f.name}'`);
      continue;
    }
    seen.set(f.name, (seen.get(f.name) ?? 0) + f.values.length);
    const repeated = field.repeated || (field as { map?: boolean }).map === true;
    if (!repeated && (f.list || seen.get(f.name)! > 1)) errors.push(`${at}: '${f.name}' is not a repeated field`);
    const group = field.partOf?.name;
    if (group) {
      const other = oneofs.get(group);
      if (other !== undefined && other !== f.name) errors.push(`${at}: '${f.name}' and '${other}' are both in oneof ${group}`);
      oneofs.set(group, f.name);
    }
    const mapField = field;
    for (const v of f.values) {
      if (mapField.map) {
        if (v.kind !== 'message') {
          errors.push(`${at}: a map entry is { key: ... value: ... }`);
          continue;
        }
        for (const e of v.fields) {
          if (e.name !== 'key' && e.name !== 'value') errors.push(`${at}: a map entry has only 'key' and 'value', not '${e.name}'`);
        }
        for (const [k, kind] of [['key', mapField.keyType!], ['value', field.type]] as const) {
          const entries = v.fields.filter((e) => e.name === k);
          if (entries.length > 1) errors.push(`${at}: a map entry has one '${k}'`);
          for (const e of entries) {
            for (const ev of e.values) {
              if (k === 'value' && field.resolvedType && 'fields' in field.resolvedType) {
                if (ev.kind !== 'message') errors.push(`${at}.value: expected a ${field.type} message`);
                else errors.push(...validate(field.resolvedType as PbType, ev.fields, `${at}.value.`));
              } else if (ev.kind !== 'scalar') errors.push(`${at}.${k}: expected a ${kind}`);
              else {
                if (!e.colon) errors.push(`${at}.${k}: a scalar field needs ':'`);
                const problem = scalarProblem(kind, ev.token);
                if (problem) errors.push(`${at}.${k}: ${problem}`);
              }
            }
          }
        }
        continue;
      }
      const resolved = field.resolvedType;
      if (resolved && 'fields' in resolved) {
        if (v.kind !== 'message') errors.push(`${at}: expected a ${typeName(resolved)} message { ... }, got ${v.token.text}`);
        else errors.push(...validate(resolved as PbType, v.fields, `${where}${f.name}.`));
      } else if (v.kind !== 'scalar') errors.push(`${at}: a ${field.type} cannot be a message`);
      else {
        if (!f.colon) errors.push(`${at}: a scalar field needs ':'`);
        if (resolved && 'values' in resolved) {
          const values = (resolved as PbEnum).values;
          if (v.token.kind !== 'ident' || !Object.hasOwn(values, v.token.text)) errors.push(`${at}: ${v.token.text} is not a value of ${typeName(resolved)} (${Object.keys(values).join(', ')})`);
        } else {
          const problem = scalarProblem(field.type, v.token);
          if (problem) errors.push(`${at}: ${problem}`);
        }
      }
    }
  }
  return errors;
}

type Plain = { [k: string]: unknown };

/** The fields as plain data, named as in the schema: repeated fields are arrays, maps objects, enums their names. Call after validate(). */
function toPlain(type: PbType, fields: TextField[]): Plain {
  const out: Plain = {};
  for (const f of fields) {
    const field = type.fields[f.name]!;
    const mapField = field;
    const scalar = (t: Token, kind: string): unknown => (t.kind === 'string' ? t.value : kind === 'bool' ? t.text === 'true' : t.kind === 'number' ? Number(t.text) : t.text);
    for (const v of f.values) {
      if (mapField.map && v.kind === 'message') {
        const key = v.fields.find((e) => e.name === 'key')!.values[0]!;
        const value = v.fields.find((e) => e.name === 'value')!.values[0]!;
        const map = (out[f.name] ??= {}) as Plain;
        map[String(scalar((key as { token: Token }).token, mapField.keyType!))] =
          value.kind === 'message' ? toPlain(field.resolvedType as PbType, value.fields) : scalar(value.token, field.type);
        continue;
      }
      const item = v.kind === 'message' ? toPlain(field.resolvedType as PbType, v.fields) : scalar(v.token, field.type);
      if (field.repeated) ((out[f.name] ??= []) as unknown[]).push(item);
      else out[f.name] = item;
    }
    if (field.repeated && out[f.name] === undefined) out[f.name] = [];
  }
  return out;
}

let schema: PbType;

/** Parses and validates config.pbtxt text; the plain config, or a thrown list of what is wrong. */
function readConfig(text: string): Plain {
  const fields = parseTextFormat(text);
  const errors = validate(schema, fields);
  if (errors.length) throw new Error(errors.join('\n'));
  return toPlain(schema, fields);
}

function schemaErrors(text: string): string[] {
  try {
    return validate(schema, parseTextFormat(text));
  } catch (e) {
    return [(e as Error).message];
  }
}

/** A Python with Google's protobuf package (Debian's python3-protobuf), or undefined. */
function findProtobufPython(): string | undefined {
  return [process.env.ZOO_PYTHON, 'python3', '/usr/bin/python3'].find(
    (p) => p && spawnSync(p, ['-c', 'from google.protobuf import descriptor_pool, text_format, json_format'], { stdio: 'ignore' }).status === 0,
  );
}

/**
 * Parses config files with Google's own text-format parser (Python protobuf) over the schema, as a
 * FileDescriptorSet protobufjs makes from the .proto. protobufjs names a map's entry type after its field
 * ('Cc_model_filenames'); protobuf requires '<CamelCase>Entry', so the entries are renamed first.
 */
const GOOGLE_PARSE = `
import json, sys
from google.protobuf import descriptor_pb2, descriptor_pool, text_format, json_format
s = descriptor_pb2.FileDescriptorSet()
s.ParseFromString(open(sys.argv[1], 'rb').read())
def camel(n): return ''.join(p[:1].upper() + p[1:] for p in n.split('_'))
def fix(msg):
    entries = {n.name: n for n in msg.nested_type if n.options.map_entry}
    for f in msg.field:
        if f.type_name in entries:
            entry = entries[f.type_name]
            entry.name = camel(f.name) + 'Entry'
            f.type_name = entry.name
    for n in msg.nested_type: fix(n)
for m in s.file[0].message_type: fix(m)
pool = descriptor_pool.DescriptorPool()
pool.Add(s.file[0])
d = pool.FindMessageTypeByName('inference.ModelConfig')
try:
    from google.protobuf.message_factory import GetMessageClass
    cls = GetMessageClass(d)
except ImportError:
    from google.protobuf import message_factory
    cls = message_factory.MessageFactory(pool).GetPrototype(d)
out = []
for path in sys.argv[2:]:
    m = cls()
    try:
        text_format.Parse(open(path, encoding='utf-8').read(), m)
        out.append({'ok': json_format.MessageToDict(m, preserving_proto_field_name=True)})
    except text_format.ParseError as e:
        out.append({'error': str(e)})
print(json.dumps(out))
`;

function googleParse(python: string, files: string[]): ({ ok: Plain } | { error: string })[] {
  const root = protobuf.parse(readFileSync(SCHEMA_FILE, 'utf8'), { keepCase: true }).root as unknown as { toDescriptor(syntax: string): unknown };
  const descriptor = requireFromOnnxProto('protobufjs/ext/descriptor') as { FileDescriptorSet: { encode(m: unknown): { finish(): Uint8Array } } };
  const dir = tempDir();
  try {
    const set = join(dir, 'model_config.desc');
    writeFileSync(set, descriptor.FileDescriptorSet.encode(root.toDescriptor('proto3')).finish());
    const r = spawnSync(python, ['-c', GOOGLE_PARSE, set, ...files], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`python protobuf: ${r.stderr}`);
    return JSON.parse(r.stdout) as ({ ok: Plain } | { error: string })[];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Names of the enum values that are 0 (defaults, which protobuf's JSON mapping leaves out) in the messages under `type`. */
function zeroEnumNames(type: PbType, seen = new Set<PbType>(), names = new Set<string>()): Set<string> {
  seen.add(type);
  for (const f of Object.values(type.fields)) {
    const r = f.resolvedType;
    if (r && 'values' in r) for (const [name, v] of Object.entries(r.values)) if (v === 0) names.add(name);
    if (r && 'fields' in r && !seen.has(r)) zeroEnumNames(r, seen, names);
  }
  return names;
}

/** Both readers' output in one form: protobuf's JSON mapping leaves out default values and writes 64-bit integers as strings. */
function normalize(v: unknown, zeros = zeroEnumNames(schema)): unknown {
  if (Array.isArray(v)) return v.length ? v.map((x) => normalize(x, zeros)) : undefined;
  if (v && typeof v === 'object') {
    const out: Plain = {};
    for (const [k, x] of Object.entries(v)) {
      const n = normalize(x, zeros);
      if (n !== undefined) out[k] = n;
    }
    return out;
  }
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return Number(v);
  return v === 0 || v === '' || v === false || (typeof v === 'string' && zeros.has(v)) ? undefined : v;
}

// ---------------------------------------------------------------------------------------------------
// What Triton's core and its onnxruntime backend check when they load an ONNX model (read from their
// sources: ValidateIOShape in core's model_config_utils.cc, ValidateInputs/ValidateOutputs and
// CompareDimsSupported in onnxruntime_backend), against the graph ONNX Runtime reads from model.onnx.

const ORT_TYPES: Record<string, string> = { float32: 'TYPE_FP32', float16: 'TYPE_FP16', int64: 'TYPE_INT64', int32: 'TYPE_INT32', uint8: 'TYPE_UINT8', bool: 'TYPE_BOOL' };

function loadProblems(config: Plain, io: GraphIO, dirName: string): string[] {
  const problems: string[] = [];
  if (config.name !== dirName) problems.push(`name '${String(config.name)}' is not the directory's '${dirName}'`);
  if (config.platform !== 'onnxruntime_onnx' || config.backend !== 'onnxruntime') problems.push('not the onnxruntime_onnx platform on the onnxruntime backend');
  const maxBatch = Number(config.max_batch_size ?? 0);
  const model = (t: { shape: (number | string)[] }) => t.shape.map((d) => (typeof d === 'number' && d > 0 ? d : -1));
  const check = (kind: 'input' | 'output', tensors: GraphIO['inputs']) => {
    const configured = (config[kind] as Plain[] | undefined) ?? [];
    const names = configured.map((c) => c.name);
    if (names.slice().sort().join() !== tensors.map((t) => t.name).sort().join()) problems.push(`${kind}s ${names.join(', ')} are not the model's ${tensors.map((t) => t.name).join(', ')}`);
    for (const c of configured) {
      const t = tensors.find((x) => x.name === c.name);
      if (!t) continue;
      const dims = (c.dims as number[] | undefined) ?? [];
      if (dims.length === 0) problems.push(`${String(c.name)}: empty dims`);
      if (dims.some((d) => d < 1 && d !== -1)) problems.push(`${String(c.name)}: dims must be >= 1 or -1`);
      if (ORT_TYPES[t.type] !== c.data_type) problems.push(`${String(c.name)}: ${String(c.data_type)}, the model has ${t.type}`);
      const reshape = (c.reshape as Plain | undefined)?.shape as number[] | undefined;
      if (reshape && reshape.length === 0 && (maxBatch === 0 || dims.length !== 1 || dims[0] !== 1)) problems.push(`${String(c.name)}: an empty reshape needs batching and dims [1]`);
      const compared = reshape ?? dims;
      const shape = model(t);
      if (shape.length === 0) {
        if (compared.some((d) => d !== 1)) problems.push(`${String(c.name)}: a scalar takes dims of 1 only`);
        continue;
      }
      if (maxBatch > 0 && shape[0] !== -1) problems.push(`${String(c.name)}: batching needs a dynamic first dimension, the model has ${JSON.stringify(shape)}`);
      const full = maxBatch > 0 ? [-1, ...compared] : compared;
      const exact = kind === 'output';
      const ok = full.length === shape.length && full.every((d, i) => (exact || shape[i] !== -1 ? d === shape[i] : true));
      if (!ok) problems.push(`${String(c.name)}: dims ${JSON.stringify(full)} do not match the model's ${JSON.stringify(shape)}`);
    }
  };
  check('input', io.inputs);
  check('output', io.outputs);
  const db = config.dynamic_batching as Plain | undefined;
  for (const b of (db?.preferred_batch_size as number[] | undefined) ?? []) if (b < 1 || b > maxBatch) problems.push(`preferred batch size ${b} is not within 1..max_batch_size`);
  return problems;
}

async function modelIO(file: string): Promise<GraphIO> {
  const s = await createSession(file, { provider: 'cpu', intraOpThreads: 1 });
  try {
    return graphIO(s);
  } finally {
    await s.session.release();
  }
}

/** Reads DIR/<name>: its config (validated against the schema) and whether Triton would load it with its model.onnx. */
async function readModelDir(dir: string, name: string): Promise<{ config: Plain; text: string; io: GraphIO }> {
  const text = readFileSync(join(dir, name, 'config.pbtxt'), 'utf8');
  const config = readConfig(text);
  const io = await modelIO(join(dir, name, '1', 'model.onnx'));
  const problems = loadProblems(config, io, name);
  if (problems.length) throw new Error(`${name}: ${problems.join('; ')}`);
  return { config, text, io };
}

// ---------------------------------------------------------------------------------------------------
// Fixtures: small exports of each task, made as the other tests make them

const root = tempDir();
const files = {
  classifier: join(root, 'fashion.onnx'),
  dynamic: join(root, 'dyn.onnx'),
  detector: join(root, 'voc.onnx'),
  segmenter: join(root, 'ade.onnx'),
  fixed: join(root, 'fixed.onnx'),
  batchOnly: join(root, 'rowmax.onnx'),
  scalar: join(root, 'total.onnx'),
  plain: join(root, 'plain.onnx'),
};
const LABELS = Array.from({ length: 10 }, (_, i) => `class ${i}`);
const DET_LABELS = ['cat', 'dog', 'person'];
const SEG_LABELS = ['wall', 'floor', 'sky', 'tree'];
const settings = readHubSettings({ ZOO_CACHE: join(root, 'cache') }, root);

/** A one-node graph (ReduceMax over `axes`, or every axis) from input [inDims] to output [outDims]. */
function reduceModel(inDims: (number | string)[], outDims: (number | string)[], axes?: number[]): Uint8Array {
  return onnx.ModelProto.encode(
    onnx.ModelProto.fromObject({
      irVersion: IR_VERSION,
      opsetImport: [{ domain: '', version: OPSET }],
      producerName: 'zoo-test',
      graph: {
        name: 'reduce',
        node: [node('ReduceMax', ['x'], ['y'], 'max', { keepdims: 0, ...(axes ? { axes } : {}) })],
        input: [valueInfo('x', DataType.FLOAT, inDims)],
        output: [valueInfo('y', DataType.FLOAT, outDims)],
      },
    }),
  ).finish();
}

const preprocessing = { ...IMAGENET_PREPROCESSING, inputSize: 32, crop: 32, resizeShorter: 37 };
const source = { url: 'test', format: 'onnx', naming: 'zoo', file: 'test', sha256: '0', sha1: '0', bytes: 0 } as const;
const check = { maxAbsDiff: 0, maxAbsLogit: 1, top1Agreement: 1, provider: 'cpu' } as const;

test.before(async () => {
  schema = loadSchema();
  await setupBackend('cpu');
  const m = createModel('resnet_test');
  const clsBytes = await exportOnnx(m, { imageSize: 32, metadata: metadataProps({ arch: 'resnet_test', preprocessing, labels: LABELS }) });
  writeFileSync(files.classifier, clsBytes);
  writeFileSync(files.dynamic, await exportOnnx(m, { dynamicSize: true, metadata: metadataProps({ arch: 'resnet_test', labels: LABELS }) }));
  m.dispose();
  const det = createDetector('resnet_test', DET_LABELS.length, { seed: 1, config: { rpnChannels: 16 } });
  const detBytes = await exportDetector(det, { metadata: detectionMetadata({ arch: 'resnet_test', labels: DET_LABELS, minSize: 64, maxSize: 96, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }) });
  writeFileSync(files.detector, detBytes);
  det.dispose();
  const seg = createSegmenter('resnet_test', SEG_LABELS.length, { seed: 2 });
  writeFileSync(files.segmenter, await exportSegmenter(seg, { argmax: true, metadata: segmentationMetadata({ arch: 'resnet_test', labels: SEG_LABELS, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }) }));
  seg.dispose();
  writeFileSync(files.fixed, reduceModel([1, 4], [1], [1]));
  writeFileSync(files.batchOnly, reduceModel(['n', 4], ['n'], [1]));
  writeFileSync(files.scalar, reduceModel([2, 4], []));
  writeFileSync(files.plain, reduceModel(['n', 4, 6], ['n', 6], [1]));
  await addToLocalZoo({ name: 'my-model', arch: 'resnet_test', onnxBytes: clsBytes, preprocessing, labels: LABELS, source, check, settings });
  await addToLocalZoo({ name: 'my-det', arch: 'resnet_test', task: 'object-detection', onnxBytes: detBytes, preprocessing, labels: DET_LABELS, source, check, settings });
  // A segmentation run directory: found through its run.json's task.
  mkdirSync(join(root, 'seg-run'));
  writeFileSync(join(root, 'seg-run', 'run.json'), JSON.stringify({ task: 'segmentation' }));
  writeFileSync(join(root, 'seg-run', 'model.onnx'), readFileSync(files.segmenter));
});

test.after.always(() => rmSync(root, { recursive: true, force: true }));

const write = (dir: string, args: string[], options: Parameters<typeof writeTritonRepository>[2] = {}) => writeTritonRepository(dir, args, { settings, ...options });

// ---------------------------------------------------------------------------------------------------

test('the schema is Triton\'s model_config.proto, with its license header, and the reader follows it', (t) => {
  const text = readFileSync(SCHEMA_FILE, 'utf8');
  t.regex(text, /^\/\/ Copyright 2018-\d{4}, NVIDIA CORPORATION & AFFILIATES\. All rights reserved\./);
  t.regex(text, /Redistribution and use in source and binary forms/);
  t.regex(text, /package inference;/);
  for (const f of ['name', 'platform', 'backend', 'max_batch_size', 'input', 'output', 'dynamic_batching', 'instance_group', 'optimization']) t.truthy(schema.fields[f], f);
  t.is(schema.fields.dynamic_batching!.partOf?.name, 'scheduling_choice');
  // Text format as Triton's documentation writes it reads back whole.
  const doc = readConfig(`
    platform: "tensorrt_plan"
    max_batch_size: 8
    input [ { name: "input0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "in" dims: [ 1 ] reshape: { shape: [ ] } } ]
    version_policy: { all { }}
    instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]
    parameters { key: "intra_op_thread_count" value: { string_value: "0" } }
    optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }`);
  t.deepEqual(doc.input, [{ name: 'input0', data_type: 'TYPE_FP32', dims: [16] }, { name: 'in', dims: [1], reshape: { shape: [] } }]);
  t.deepEqual(doc.parameters, { intra_op_thread_count: { string_value: '0' } });
  t.deepEqual((doc.optimization as Plain).execution_accelerators, { gpu_execution_accelerator: [{ name: 'tensorrt', parameters: { precision_mode: 'FP16' } }] });
});

test('the schema check fails on a misspelt field, a wrong enum value, wrong nesting, repetition, oneofs and scalar types', async (t) => {
  const dir = tempDir(t);
  await write(dir, [files.classifier]);
  const good = readFileSync(join(dir, 'fashion', 'config.pbtxt'), 'utf8');
  t.deepEqual(schemaErrors(good), []);
  const cases: [string, string, RegExp][] = [
    ['max_batch_size: 32', 'max_batch_sizes: 32', /has no field 'max_batch_sizes'/],
    ['kind: KIND_GPU', 'kind: KIND_GPUS', /KIND_GPUS is not a value of inference\.ModelInstanceGroup\.Kind/],
    ['data_type: TYPE_FP32', 'data_type: TYPE_FLOAT32', /TYPE_FLOAT32 is not a value of inference\.DataType/],
    ['data_type: TYPE_FP32', 'data_type: "TYPE_FP32"', /"TYPE_FP32" is not a value of inference\.DataType/],
    ['label_filename: "labels.txt"', 'labels_filename: "labels.txt"', /ModelOutput has no field 'labels_filename'/],
    ['max_queue_delay_microseconds: 5000', 'max_queue_delay_microseconds: -5', /-5 is out of range for uint64/],
    ['max_batch_size: 32', 'max_batch_size: 32.5', /expected an integer/],
    ['max_batch_size: 32', 'max_batch_size: 4294967296', /out of range for int32/],
    ['dims: [ 3, 32, 32 ]', 'dims: [ "3", 32, 32 ]', /expected an integer/],
    ['name: "fashion"', 'name: fashion', /expected a string/],
    ['max_batch_size: 32', 'max_batch_size: 32\nmax_batch_size: 4', /'max_batch_size' is not a repeated field/],
    ['max_batch_size: 32', 'max_batch_size: [ 32 ]', /'max_batch_size' is not a repeated field/],
    ['max_batch_size: 32', 'max_batch_size 32', /a scalar field needs ':'/],
    ['max_batch_size: 32', 'max_batch_size { }', /cannot be a message/],
    ['dynamic_batching {', 'sequence_batching { }\ndynamic_batching {', /both in oneof scheduling_choice/],
    ['    count: 1', '    count: 1\n    dims: [ 1 ]', /ModelInstanceGroup has no field 'dims'/],
    ['instance_group [', 'instance_group: KIND_GPU\ninstance_group [', /expected a inference\.ModelInstanceGroup message/],
    ['platform: "onnxruntime_onnx"', 'platform: "onnxruntime_onnx" }', /expected a field name/],
  ];
  for (const [from, to, want] of cases) {
    t.true(good.includes(from), from);
    const errors = schemaErrors(good.replace(from, to));
    t.true(errors.some((e) => want.test(e)), `${to}: ${errors.join(' | ') || 'no error'}`);
  }
});

test('a classifier: DIR/<name>/config.pbtxt, 1/model.onnx (a copy), labels.txt; dims without the batch axis; the schema and the backend\'s checks pass', async (t) => {
  const dir = tempDir(t);
  const r = await write(dir, [files.classifier]);
  t.is(r.models.length, 1);
  const m = r.models[0]!;
  t.is(m.name, 'fashion', 'a file is named by its base name, as zoo serve names it');
  t.is(m.task, 'image-classification');
  t.deepEqual(readdirSync(dir), ['fashion'], 'nothing else in the repository (no staging left behind)');
  t.deepEqual(readdirSync(join(dir, 'fashion')).sort(), ['1', 'config.pbtxt', 'labels.txt']);
  t.deepEqual(readdirSync(join(dir, 'fashion', '1')), ['model.onnx']);
  t.true(readFileSync(join(dir, 'fashion', '1', 'model.onnx')).equals(readFileSync(files.classifier)), 'model.onnx is the file, byte for byte');
  t.is(m.bytes, statSync(files.classifier).size);
  t.is(readFileSync(join(dir, 'fashion', 'labels.txt'), 'utf8'), `${LABELS.join('\n')}\n`);
  const { config, text } = await readModelDir(dir, 'fashion');
  t.regex(text, new RegExp(`# 1/model.onnx sha256 ${m.sha256}`));
  t.deepEqual(config, {
    name: 'fashion',
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    max_batch_size: 32,
    input: [{ name: 'input', data_type: 'TYPE_FP32', dims: [3, 32, 32] }],
    output: [{ name: 'logits', data_type: 'TYPE_FP32', dims: [10], label_filename: 'labels.txt' }],
    dynamic_batching: { max_queue_delay_microseconds: 5000 },
    instance_group: [{ kind: 'KIND_GPU', count: 1 }],
  });
  // --dynamic-size: H and W are -1
  const dyn = await write(dir, [files.dynamic]);
  t.is(dyn.models[0]!.name, 'dyn');
  const d = await readModelDir(dir, 'dyn');
  t.deepEqual((d.config.input as Plain[])[0]!.dims, [3, -1, -1]);
});

test('a detector: dynamic H and W as -1, int64 outputs, num_detections [batch] as dims [1] reshaped to the model\'s [batch]', async (t) => {
  const dir = tempDir(t);
  const r = await write(dir, [`det=${files.detector}`]);
  t.is(r.models[0]!.task, 'object-detection');
  const { config } = await readModelDir(dir, 'det');
  t.is(config.max_batch_size, 32);
  t.deepEqual(config.input, [{ name: 'input', data_type: 'TYPE_FP32', dims: [3, -1, -1] }]);
  t.deepEqual(config.output, [
    { name: 'num_detections', data_type: 'TYPE_INT64', dims: [1], reshape: { shape: [] } },
    { name: 'detection_boxes', data_type: 'TYPE_FP32', dims: [100, 4] },
    { name: 'detection_scores', data_type: 'TYPE_FP32', dims: [100] },
    { name: 'detection_classes', data_type: 'TYPE_INT64', dims: [100] },
  ]);
  t.is(readFileSync(join(dir, 'det', 'labels.txt'), 'utf8'), 'cat\ndog\nperson\n', 'class names beside the config, for clients; no output is a classification');
});

test('a segmenter (as its run directory): input [3, -1, -1], logits [K, -1, -1], labels INT64 [-1, -1]', async (t) => {
  const dir = tempDir(t);
  const r = await write(dir, [join(root, 'seg-run'), `ade=${files.segmenter}`]);
  t.deepEqual(r.models.map((m) => [m.name, m.task]), [['seg-run', 'image-segmentation'], ['ade', 'image-segmentation']]);
  for (const name of ['seg-run', 'ade']) {
    const { config } = await readModelDir(dir, name);
    t.deepEqual(config.input, [{ name: 'input', data_type: 'TYPE_FP32', dims: [3, -1, -1] }]);
    t.deepEqual(config.output, [
      { name: 'logits', data_type: 'TYPE_FP32', dims: [SEG_LABELS.length, -1, -1] },
      { name: 'labels', data_type: 'TYPE_INT64', dims: [-1, -1] },
    ]);
  }
});

test('a model without a dynamic first dimension gets max_batch_size 0, full dims and no batcher; a scalar is dims [1]; a [batch] tensor is reshaped', async (t) => {
  const dir = tempDir(t);
  const r = await write(dir, [files.fixed, files.scalar, files.batchOnly, files.plain]);
  t.deepEqual(r.models.map((m) => [m.name, m.task, m.maxBatchSize]), [['fixed', 'tensor', 0], ['total', 'tensor', 0], ['rowmax', 'tensor', 32], ['plain', 'tensor', 32]]);
  t.true(r.notes.some((n) => /^fixed: 'x' \[1, 4\] does not start with a dynamic batch dimension: max_batch_size 0/.test(n)), r.notes.join('\n'));
  const fixed = await readModelDir(dir, 'fixed');
  t.is(fixed.config.max_batch_size, 0);
  t.is(fixed.config.dynamic_batching, undefined);
  t.deepEqual(fixed.config.input, [{ name: 'x', data_type: 'TYPE_FP32', dims: [1, 4] }]);
  t.deepEqual(fixed.config.output, [{ name: 'y', data_type: 'TYPE_FP32', dims: [1] }]);
  const scalar = await readModelDir(dir, 'total');
  t.deepEqual(scalar.config.output, [{ name: 'y', data_type: 'TYPE_FP32', dims: [1] }], 'a scalar of a model without batching: dims [1], no reshape');
  const rowmax = await readModelDir(dir, 'rowmax');
  t.deepEqual(rowmax.config.input, [{ name: 'x', data_type: 'TYPE_FP32', dims: [4] }]);
  t.deepEqual(rowmax.config.output, [{ name: 'y', data_type: 'TYPE_FP32', dims: [1], reshape: { shape: [] } }]);
  t.false(existsSync(join(dir, 'fixed', 'labels.txt')), 'no labels without class names');
  // --max-batch 0 turns batching off for a model that could batch: the batch dimension is a -1 in dims.
  await write(dir, [`plain0=${files.plain}`], { maxBatch: 0 });
  const off = await readModelDir(dir, 'plain0');
  t.is(off.config.max_batch_size, 0);
  t.deepEqual((off.config.input as Plain[])[0]!.dims, [-1, 4, 6]);
  t.deepEqual((off.config.output as Plain[])[0]!.dims, [-1, 6]);
});

test('options: CPU or auto instances, their count, max batch, queue delay, preferred batch sizes, TensorRT (FP16) and CUDA accelerators', async (t) => {
  const dir = tempDir(t);
  await write(dir, [`cpu=${files.classifier}`], { device: 'cpu', instances: 3, maxBatch: 8, maxDelayMs: 0.25, preferredBatch: [2, 8] });
  const cpu = (await readModelDir(dir, 'cpu')).config;
  t.is(cpu.max_batch_size, 8);
  t.deepEqual(cpu.dynamic_batching, { preferred_batch_size: [2, 8], max_queue_delay_microseconds: 250 });
  t.deepEqual(cpu.instance_group, [{ kind: 'KIND_CPU', count: 3 }]);
  t.is(cpu.optimization, undefined);
  await write(dir, [`trt=${files.classifier}`], { accelerator: 'tensorrt', tensorrtFp16: true });
  const trt = (await readModelDir(dir, 'trt')).config;
  t.deepEqual(trt.optimization, { execution_accelerators: { gpu_execution_accelerator: [{ name: 'tensorrt', parameters: { precision_mode: 'FP16' } }] } });
  await write(dir, [`cuda=${files.detector}`], { accelerator: 'cuda', device: 'auto' });
  const cuda = (await readModelDir(dir, 'cuda')).config;
  t.deepEqual(cuda.optimization, { execution_accelerators: { gpu_execution_accelerator: [{ name: 'cuda' }] } });
  t.deepEqual(cuda.instance_group, [{ kind: 'KIND_AUTO', count: 1 }]);
});

test('local zoo names (a classifier, a detector) are found as the commands that run models find them', async (t) => {
  const dir = tempDir(t);
  const r = await write(dir, ['my-model', 'my-det']);
  t.deepEqual(r.models.map((m) => [m.name, m.task]), [['my-model', 'image-classification'], ['my-det', 'object-detection']]);
  const cls = await readModelDir(dir, 'my-model');
  t.is((cls.config.output as Plain[])[0]!.label_filename, 'labels.txt');
  await readModelDir(dir, 'my-det');
});

const python = findProtobufPython();

(python ? test : test.skip)("every kind of config.pbtxt parses with Google's protobuf text format parser (python3-protobuf) to what this reader reads", async (t) => {
  const dir = tempDir(t);
  await write(dir, [files.classifier, files.detector, files.segmenter, files.fixed, files.batchOnly, files.scalar]);
  await write(dir, [`trt=${files.classifier}`], { accelerator: 'tensorrt', tensorrtFp16: true, preferredBatch: [4, 8], device: 'auto', instances: 2 });
  const names = ['fashion', 'voc', 'ade', 'fixed', 'rowmax', 'total', 'trt'];
  const paths = names.map((n) => join(dir, n, 'config.pbtxt'));
  const misspelt = join(dir, 'misspelt.pbtxt');
  writeFileSync(misspelt, readFileSync(paths[0]!, 'utf8').replace('kind: KIND_GPU', 'kind: KIND_GPUS'));
  const parsed = googleParse(python!, [...paths, misspelt]);
  names.forEach((n, i) => {
    const r = parsed[i]!;
    if (!('ok' in r)) return t.fail(`${n}: ${r.error}`);
    t.deepEqual(normalize(r.ok), normalize(readConfig(readFileSync(paths[i]!, 'utf8'))), n);
  });
  const bad = parsed[names.length]!;
  t.true('error' in bad && /KIND_GPUS/.test(bad.error), JSON.stringify(bad));
});

test('names are rendered and read back exactly, quotes and backslashes escaped', (t) => {
  const config: TritonModelConfig = {
    name: 'm',
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    maxBatchSize: 0,
    input: [{ name: 'a "quoted"\\name\n', dataType: 'TYPE_UINT8', dims: [2] }],
    output: [{ name: 'é\ttab', dataType: 'TYPE_BOOL', dims: [-1] }],
    instanceGroup: [{ kind: 'KIND_CPU', count: 1 }],
  };
  const c = readConfig(renderTritonConfig(config, ['two\nlines']));
  t.deepEqual(c.input, [{ name: 'a "quoted"\\name\n', data_type: 'TYPE_UINT8', dims: [2] }]);
  t.deepEqual(c.output, [{ name: 'é\ttab', data_type: 'TYPE_BOOL', dims: [-1] }]);
});

test('a model already in DIR is kept unless --force; --force replaces its whole directory (an old version 2/ would be served before 1/)', async (t) => {
  const dir = tempDir(t);
  await write(dir, [`m=${files.classifier}`]);
  const before = readFileSync(join(dir, 'm', 'config.pbtxt'), 'utf8');
  await t.throwsAsync(write(dir, [`m=${files.detector}`]), { instanceOf: UserError, message: /m exists: the repository already has a model 'm' \(pass --force to replace it\)/ });
  t.is(readFileSync(join(dir, 'm', 'config.pbtxt'), 'utf8'), before, 'unchanged');
  mkdirSync(join(dir, 'm', '2'));
  writeFileSync(join(dir, 'm', '2', 'model.onnx'), 'stale');
  mkdirSync(join(dir, 'other'));
  const r = await write(dir, [`m=${files.detector}`], { force: true });
  t.true(r.models[0]!.replaced);
  t.deepEqual(readdirSync(join(dir, 'm')).sort(), ['1', 'config.pbtxt', 'labels.txt'], 'the old version 2/ is gone');
  t.true(readFileSync(join(dir, 'm', '1', 'model.onnx')).equals(readFileSync(files.detector)));
  t.deepEqual(readdirSync(dir).sort(), ['m', 'other'], 'other models stay; no staging directories left');
  await readModelDir(dir, 'm');
});

test('refused before anything is written: clashing names, bad names, unknown models, architectures, bad options, DIR a file', async (t) => {
  const dir = tempDir(t);
  const refuse = async (args: string[], message: RegExp, options: Parameters<typeof write>[2] = {}, exitCode = 2) => {
    const e = await t.throwsAsync(write(join(dir, 'repo'), args, options), { instanceOf: UserError, message });
    t.is(e?.exitCode, exitCode, args.join(' '));
    t.false(existsSync(join(dir, 'repo')), `${args.join(' ')}: nothing written`);
  };
  await refuse([files.classifier, `fashion=${files.detector}`], /both be the model 'fashion'; name one of them with <name>=<model>/);
  await refuse([`A=${files.classifier}`, `a=${files.detector}`], /'A=.*' and 'a=.*' would both be the model 'a' \(names differing only in case/);
  const spaced = join(dir, 'my model.onnx');
  writeFileSync(spaced, readFileSync(files.fixed));
  await refuse([spaced], /'my model' cannot be a model name.*\(name it: <name>=/);
  for (const bad of ['x/y', '.hidden', 'a..b', '-dash', 'ü']) await refuse([`${bad}=${files.classifier}`], /cannot be a model name/);
  await refuse([`ok=${files.classifier}`, `bad=${join(dir, 'nope.onnx')}`], /nope\.onnx': no such file/, {}, 1);
  await refuse(['no-such-model'], /unknown model 'no-such-model'/);
  await refuse(['resnet50d'], /'resnet50d' is an architecture, without trained weights/);
  await refuse([`x=${files.classifier}`], /--preferred-batch: 64 is not a batch size from 1 to --max-batch \(32\)/, { preferredBatch: [64] });
  await refuse([`x=${files.classifier}`], /--triton-accelerator cuda is a GPU execution accelerator; it does nothing for --triton-device cpu/, { device: 'cpu', accelerator: 'cuda' });
  await refuse([`x=${files.classifier}`], /--triton-fp16 .* needs --triton-accelerator tensorrt/, { tensorrtFp16: true });
  await refuse([`x=${files.classifier}`], /--max-batch must be an integer from 0/, { maxBatch: -1 });
  await refuse([`x=${files.classifier}`], /--instances must be an integer from 1/, { instances: 0 });
  await refuse([], /give at least one model/);
  writeFileSync(join(dir, 'repo'), 'a file');
  await t.throwsAsync(write(join(dir, 'repo'), [files.classifier]), { instanceOf: UserError, message: /--triton .*repo is not a directory/ });
  t.throws(() => parseModelSpec('x='), { instanceOf: UserError, message: /nothing after '='/ });
});

test('zoo export --triton as a user runs it: several models, --json, notes on stderr; usage errors exit 2', async (t) => {
  const dir = tempDir(t);
  const env = { ...process.env, ZOO_BACKEND: 'cpu', ZOO_CACHE: join(root, 'cache') };
  const repo = join(dir, 'models');
  const r = await runZoo(['export', '--triton', repo, 'my-model', `det=${files.detector}`, files.fixed, '--triton-device', 'cpu', '--instances', '2', '--max-batch', '16', '--json'], { env });
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { repository: string; models: { name: string; task: string; maxBatchSize: number; sha256: string }[]; notes: string[] };
  t.deepEqual(out.models.map((m) => [m.name, m.task, m.maxBatchSize]), [['my-model', 'image-classification', 16], ['det', 'object-detection', 16], ['fixed', 'tensor', 0]]);
  t.regex(r.stderr, /note: fixed: 'x' \[1, 4\] does not start with a dynamic batch dimension/);
  for (const name of ['my-model', 'det', 'fixed']) {
    const { config } = await readModelDir(repo, name);
    t.deepEqual(config.instance_group, [{ kind: 'KIND_CPU', count: 2 }]);
  }
  const again = await runZoo(['export', '--triton', repo, 'my-model'], { env });
  t.is(again.code, 1);
  t.regex(again.stderr, /zoo: error: .*my-model exists: the repository already has a model 'my-model' \(pass --force to replace it\)/);
  const forced = await runZoo(['export', '--triton', repo, 'my-model', '--force'], { env });
  t.is(forced.code, 0, forced.stderr);
  t.regex(forced.stdout, /wrote .*my-model \(image-classification; max_batch_size 32, dynamic batching; 0\.\d MB; labels\.txt; replaced the model that was there\)/);
  const usage: [string[], RegExp][] = [
    [['export', files.classifier, files.detector], /zoo export takes one model \(several only with --triton DIR\), got 2/],
    [['export', 'resnet_test', '--max-batch', '4', '--force'], /--max-batch, --force: options of --triton DIR/],
    [['export', '--triton', repo, files.classifier, '-o', join(dir, 'x.onnx'), '--fp16'], /--output: not options of --triton/],
    [['export', '--triton', repo, files.classifier, '--fp16'], /has no FP16 variant \(--fp16\)/],
    [['export', '--triton', repo, files.classifier, '--triton-device', 'tpu'], /--triton-device must be one of gpu, cpu, auto, got 'tpu'/],
    [['export', '--triton', repo, files.classifier, '--triton-accelerator', 'openvino'], /--triton-accelerator must be one of cuda, tensorrt/],
    [['export', '--triton', repo, `bad/name=${files.classifier}`], /cannot be a model name/],
  ];
  for (const [args, want] of usage) {
    const u = await runZoo(args, { env });
    t.is(u.code, 2, `${args.join(' ')}: ${u.stderr}`);
    t.regex(u.stderr, want);
    t.false(u.stderr.includes('    at '), 'no stack trace');
  }
});
