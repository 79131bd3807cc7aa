import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors } from '../src/formats/safetensors.js';
import { FormatError, float16BitsToFloat32Bits, float32ToFloat16Bits, toFloat32 } from '../src/formats/types.js';
import { UserError } from '../src/errors.js';
import { ByteBudget } from '../src/formats/budget.js';
import { concat, f32Bytes, rawSafetensors, tempDir, u16Bytes } from './helpers/fixtures.js';

const LABEL = 'model.safetensors';

function bitsOf(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0]!;
}

/** Asserts `fn` throws a FormatError for LABEL whose message contains `fragment`. */
function rejects(t: import('ava').ExecutionContext, bytes: Uint8Array, fragment: string | RegExp): void {
  const err = t.throws(() => parseSafetensors(bytes, LABEL), { instanceOf: FormatError });
  t.true(err!.message.startsWith(`${LABEL}: `), err!.message);
  if (typeof fragment === 'string') t.true(err!.message.includes(fragment), err!.message);
  else t.regex(err!.message, fragment);
}

test('float32 and float16 round trip through a file, with metadata', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'model.safetensors');
  const w = new Float32Array([1.5, -2, 0, 3.25, 1e-3, -1e30]);
  const half = new Float32Array([1, -0.5, 65504, 2 ** -24, 2 ** -14, Infinity, -Infinity, NaN]);
  await writeSafetensors(
    file,
    new Map([
      ['fc.weight', { dtype: 'float32' as const, shape: [2, 3], data: w }],
      ['fc.half', { dtype: 'float16' as const, shape: [8], data: half }],
      ['raw.half', { dtype: 'float16' as const, shape: [2], data: new Uint16Array([0x3c00, 0x8001]) }],
    ]),
    { format: 'pt', note: 'zoo' },
  );
  t.deepEqual(fs.readdirSync(dir), ['model.safetensors'], 'no temporary file is left behind');
  const { tensors, metadata } = await readSafetensors(file);
  t.deepEqual(metadata, { format: 'pt', note: 'zoo' });
  t.deepEqual([...tensors.keys()], ['fc.weight', 'fc.half', 'raw.half'], 'float32 first, then float16 by name');
  const fw = tensors.get('fc.weight')!;
  t.is(fw.dtype, 'float32');
  t.deepEqual(fw.shape, [2, 3]);
  t.deepEqual(Array.from(fw.data as Float32Array), Array.from(w));
  const fh = tensors.get('fc.half')!;
  t.is(fh.dtype, 'float16');
  t.deepEqual(Array.from(fh.data as Float32Array).map((x) => (Number.isNaN(x) ? 'NaN' : x)), [1, -0.5, 65504, 2 ** -24, 2 ** -14, Infinity, -Infinity, 'NaN']);
  t.deepEqual(Array.from(tensors.get('raw.half')!.data as Float32Array), [1, -(2 ** -24)]);
});

test('writer output is byte-identical to the reference implementation test vectors', (t) => {
  // huggingface/safetensors safetensors/src/tensor.rs, test_serialization_forced_alignement.
  const expected = [
    72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51,
    50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111,
    102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32, 32, 32, 0, 0, 0, 0, 0, 0,
    128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
  ];
  const out = concat(serializeSafetensors(new Map([['attn0', { dtype: 'float32', shape: [1, 1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) }]])));
  t.deepEqual(Array.from(out), expected);
  // test_empty, with metadata {"framework": "pt"}.
  const empty = concat(serializeSafetensors(new Map(), { framework: 'pt' }));
  t.deepEqual(Array.from(empty), [
    40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95, 95, 34, 58, 123, 34, 102, 114, 97, 109,
    101, 119, 111, 114, 107, 34, 58, 34, 112, 116, 34, 125, 125, 32, 32, 32, 32, 32,
  ]);
  t.is(parseSafetensors(out, LABEL).tensors.get('attn0')!.shape.length, 4);
});

test('writer keeps every tensor aligned and names that look like integers in order', (t) => {
  const out = concat(
    serializeSafetensors(
      new Map([
        ['b', { dtype: 'float16' as const, shape: [3], data: new Float32Array([1, 2, 3]) }],
        ['10', { dtype: 'float32' as const, shape: [1], data: new Float32Array([7]) }],
        ['2', { dtype: 'float32' as const, shape: [1], data: new Float32Array([8]) }],
      ]),
    ),
  );
  const n = Number(new DataView(out.buffer).getBigUint64(0, true));
  t.is(n % 8, 0);
  const header = new TextDecoder().decode(out.subarray(8, 8 + n));
  t.true(header.startsWith('{"10":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"2":'), header);
  t.true(header.includes('"b":{"dtype":"F16","shape":[3],"data_offsets":[8,14]}'), header);
  const { tensors } = parseSafetensors(out, LABEL);
  t.deepEqual([...tensors.keys()], ['10', '2', 'b']);
});

test('writer replaces an existing file atomically and refuses inconsistent input', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'w.safetensors');
  fs.writeFileSync(file, 'old');
  await writeSafetensors(file, new Map([['x', { dtype: 'float32' as const, shape: [1], data: new Float32Array([1]) }]]));
  t.is((await readSafetensors(file)).tensors.size, 1);
  await t.throwsAsync(writeSafetensors(file, new Map([['x', { dtype: 'float32' as const, shape: [2], data: new Float32Array([1]) }]])), {
    message: /1 values for shape \[2\]/,
  });
  t.deepEqual(fs.readdirSync(dir), ['w.safetensors']);
});

test('bfloat16 and float16 decode exactly: subnormals, infinities, NaN, signed zero', (t) => {
  const bf = [0x3f80, 0xc049, 0x0001, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f7f];
  const f16 = [0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x8000, 0x3555];
  const bytes = rawSafetensors(
    { bf: { dtype: 'BF16', shape: [8], data_offsets: [0, 16] }, h: { dtype: 'F16', shape: [9], data_offsets: [16, 34] } },
    concat([u16Bytes(bf), u16Bytes(f16)]),
  );
  const { tensors } = parseSafetensors(bytes, LABEL);
  const bfOut = tensors.get('bf')!.data as Float32Array;
  t.deepEqual(Array.from(bfOut, bitsOf), bf.map((b) => (b << 16) >>> 0), 'bfloat16 is the top half of float32');
  const hOut = Array.from(tensors.get('h')!.data as Float32Array);
  t.is(hOut[0], 2 ** -24);
  t.is(hOut[1], 1023 * 2 ** -24);
  t.is(hOut[2], 2 ** -14);
  t.is(hOut[3], 65504);
  t.is(hOut[4], Infinity);
  t.is(hOut[5], -Infinity);
  t.true(Number.isNaN(hOut[6]));
  t.true(Object.is(hOut[7], -0));
  t.is(hOut[8], (1 + 0x155 / 1024) / 4);
});

test('float16 decoding is exact for all 65536 patterns and float32-to-float16 rounds to nearest even', (t) => {
  for (let h = 0; h < 65536; h++) {
    const f = new Float32Array(new Uint32Array([float16BitsToFloat32Bits(h)]).buffer)[0]!;
    const exp = (h >> 10) & 31;
    const mant = h & 1023;
    const sign = h & 0x8000 ? -1 : 1;
    const want = exp === 31 ? (mant ? NaN : sign * Infinity) : exp === 0 ? sign * mant * 2 ** -24 : sign * (1 + mant / 1024) * 2 ** (exp - 15);
    if (!Object.is(f, want)) return t.fail(`0x${h.toString(16)} decodes to ${f}, expected ${want}`);
    // Every half value survives the trip back.
    if (!Number.isNaN(want) && float32ToFloat16Bits([want])[0] !== h) return t.fail(`0x${h.toString(16)} does not round trip`);
  }
  const cases: [number, number][] = [
    [65520, 0x7c00], // halfway past the largest half: ties to even overflow to infinity
    [65519, 0x7bff],
    [2 ** -25, 0x0000], // half the smallest subnormal: tie to even, zero
    [2 ** -25 * 1.5, 0x0001],
    [1 + 2 ** -11, 0x3c00], // tie, even mantissa stays
    [1 + 3 * 2 ** -11, 0x3c02], // tie, odd mantissa rounds up
    [-(2 ** -14) * (1 - 2 ** -11), 0x8400], // largest subnormal + half ulp rounds up into the normals
    [1e-10, 0x0000],
  ];
  for (const [x, bits] of cases) t.is(float32ToFloat16Bits([x])[0], bits, `${x}`);
  t.is(float32ToFloat16Bits([NaN])[0]! & 0x7e00, 0x7e00);
});

test('toFloat32 converts integer tensors and refuses bool', (t) => {
  const bytes = rawSafetensors(
    {
      i: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
      b: { dtype: 'BOOL', shape: [2], data_offsets: [16, 18] },
      u: { dtype: 'U8', shape: [2], data_offsets: [18, 20] },
    },
    concat([new Uint8Array(new BigInt64Array([-3n, 5n]).buffer), Uint8Array.from([1, 0]), Uint8Array.from([255, 7])]),
  );
  const { tensors } = parseSafetensors(bytes, LABEL);
  t.deepEqual(Array.from(toFloat32(tensors.get('i')!)), [-3, 5]);
  t.deepEqual(Array.from(toFloat32(tensors.get('u')!)), [255, 7]);
  t.throws(() => toFloat32(tensors.get('b')!, 'b'), { instanceOf: UserError, message: /bool/ });
});

test('header length past the end of the file, or over the limit, is refused', (t) => {
  const data = f32Bytes([1]);
  const header = { x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } };
  rejects(t, rawSafetensors(header, data, { declaredLength: 10_000 }), /header length 10000 runs past the end of the file \(\d+ bytes\)/);
  rejects(t, rawSafetensors(header, data, { declaredLength: 2n ** 63n }), 'exceeds the 100000000-byte limit');
  rejects(t, rawSafetensors(header, data, { declaredLength: 200_000_000 }), 'exceeds the 100000000-byte limit');
  rejects(t, new Uint8Array(5), 'too short');
});

test('offsets past the end, overlapping, gaps, trailing bytes and wrong sizes are refused', (t) => {
  const data = f32Bytes([1, 2, 3, 4]);
  rejects(
    t,
    rawSafetensors({ 'fc.weight': { dtype: 'F32', shape: [1024000], data_offsets: [0, 4096000] } }, data),
    "tensor 'fc.weight' data_offsets [0, 4096000] run past the end of the data (16 bytes)",
  );
  rejects(
    t,
    rawSafetensors({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data),
    "tensors 'a' [0, 12] and 'b' [8, 16] overlap",
  );
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data), 'bytes [0, 8) of the data buffer belong to no tensor');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data), '8 bytes after the last tensor');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, data), "tensor 'a' has 16 bytes at data_offsets [0, 16] but dtype F32 and shape [3] need 12");
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 16] } }, data), 'need more than the whole data buffer');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [4], data_offsets: [16, 0] } }, data), 'end before they begin');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16.5] } }, data), 'not a pair of non-negative integers');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [4], data_offsets: [0] } }, data), 'not a pair of non-negative integers');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, data), 'not a list of non-negative integers');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: '4', data_offsets: [0, 16] } }, data), 'not a list of non-negative integers');
  rejects(t, rawSafetensors({ a: { dtype: 'F32', shape: [1e300], data_offsets: [0, 16] } }, data), 'not a list of non-negative integers');
});

test('invalid JSON, a non-object header, unknown dtypes and bad metadata are refused', (t) => {
  const data = f32Bytes([1]);
  rejects(t, rawSafetensors('{"a": {"dtype": "F32",', data), 'header is not valid JSON');
  rejects(t, rawSafetensors('[1, 2]', data), 'header is not a JSON object');
  rejects(t, rawSafetensors('null', data), 'header is not a JSON object');
  rejects(t, rawSafetensors({ a: { dtype: 'F8_E4M3', shape: [4], data_offsets: [0, 4] } }, data), `tensor 'a' has unknown or unsupported dtype "F8_E4M3"`);
  rejects(t, rawSafetensors({ a: { dtype: 'toString', shape: [1], data_offsets: [0, 4] } }, data), 'unknown or unsupported dtype');
  rejects(t, rawSafetensors({ a: { shape: [1], data_offsets: [0, 4] } }, data), 'unknown or unsupported dtype undefined');
  rejects(t, rawSafetensors({ a: [1] }, data), "tensor 'a' is not an object");
  rejects(t, rawSafetensors({ __metadata__: { n: 1 }, a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, data), "__metadata__ value for 'n' is not a string");
  const badUtf8 = rawSafetensors('{"a":1}', data);
  badUtf8[9] = 0xff;
  rejects(t, badUtf8, 'not valid UTF-8');
});

test('a key given twice anywhere in the header is refused, not last-wins', (t) => {
  const a = '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
  const b = '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}';
  const data = f32Bytes([1, 2]);
  rejects(t, rawSafetensors(`{${a},${b},${a.replace('[0,4]', '[4,8]').replace('"a"', '"b"')}}`, data), "key 'b' appears twice in the header");
  rejects(t, rawSafetensors(`{${a},"\\u0062":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},${b}}`, data), "key 'b' appears twice in the header");
  rejects(t, rawSafetensors(`{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]},${b}}`, data), "key 'dtype' appears twice in the entry 'a'");
  rejects(t, rawSafetensors(`{"__metadata__":{"k":"1","k":"2"},${a},${b}}`, data), "key 'k' appears twice in the entry '__metadata__'");
  // The same names in different objects, and in strings that are not keys, are fine.
  const ok = rawSafetensors(`{"__metadata__":{"a":"b","dtype":"\\"a\\":1,"},${a},${b}}`, data);
  t.deepEqual([...parseSafetensors(ok, LABEL).tensors.keys()], ['a', 'b']);
  t.deepEqual(parseSafetensors(ok, LABEL).metadata, { a: 'b', dtype: '"a":1,' });
});

test('decoding is charged to the budget: the default fits any valid file, a smaller one refuses it', (t) => {
  const bytes = concat(serializeSafetensors(new Map([['h', { dtype: 'float16' as const, shape: [1000], data: new Float32Array(1000) }]])));
  const budget = new ByteBudget(LABEL, 20_000, 'test');
  const { tensors } = parseSafetensors(bytes, LABEL, { budget });
  t.is(tensors.get('h')!.data.length, 1000);
  t.true(budget.used >= 4000, 'the float16 tensor widened to float32 is charged at 4 bytes a value');
  const small = new ByteBudget(LABEL, 3000, 'test');
  const err = t.throws(() => parseSafetensors(bytes, LABEL, { budget: small }), { instanceOf: FormatError });
  t.regex(err!.message, /^model\.safetensors: decoding tensor 'h' needs 4000 bytes \(3\.9 KiB\) on top of the \d+ bytes .* past its memory budget of 3000 bytes \(2\.9 KiB\) \(test\); refusing$/);
  t.true(small.peak <= small.limit);
});

test('a "__proto__" metadata key stays an ordinary entry', (t) => {
  const bytes = rawSafetensors('{"__metadata__":{"__proto__":"x","k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32Bytes([1]));
  const { metadata } = parseSafetensors(bytes, LABEL);
  t.is(Object.getPrototypeOf(metadata), Object.prototype);
  t.is(Object.getOwnPropertyDescriptor(metadata, '__proto__')?.value, 'x');
  t.is(metadata['k'], 'v');
});

test('a missing file is a user error naming the path', async (t) => {
  const file = path.join(tempDir(t), 'absent.safetensors');
  const err = await t.throwsAsync(readSafetensors(file), { instanceOf: UserError });
  t.true(err!.message.includes(file));
});

test('truncations and byte flips end in a FormatError or a valid result, never a crash', (t) => {
  const good = concat(
    serializeSafetensors(
      new Map([
        ['a', { dtype: 'float32' as const, shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }],
        ['b', { dtype: 'float16' as const, shape: [3], data: new Float32Array([1, 2, 3]) }],
      ]),
      { k: 'v' },
    ),
  );
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let cut = 0; cut < good.length; cut++) {
    t.throws(() => parseSafetensors(good.subarray(0, cut), LABEL), { instanceOf: FormatError }, `cut at ${cut}`);
  }
  for (let i = 0; i < 400; i++) {
    const bad = new Uint8Array(good);
    for (let k = 0; k <= rand(3); k++) bad[rand(bad.length)] = rand(256);
    try {
      parseSafetensors(bad, LABEL);
    } catch (e) {
      if (!(e instanceof FormatError)) return t.fail(`flip ${i}: ${(e as Error).stack}`);
    }
  }
  t.pass();
});
