/**
 * Label PNGs with an embedded grayscale ICC profile (as GIMP and Photoshop write them): the values read
 * are the stored ones, whatever the profile's curve, at 8 and 16 bits.
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import { encodeGrayPng, readLabelPng } from '../src/segmentation/png.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'zoo-png-icc-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const s15 = (v: number) => Math.round(v * 65536) | 0;

/** A minimal ICC v2 grayscale display profile (desc, wtpt, kTRC, cprt) whose tone curve is `curve`. */
function grayProfile(curve: { gamma: number } | { table: number[] }): Buffer {
  const desc = (() => {
    const s = 'Gray';
    const b = Buffer.alloc(12 + s.length + 1 + 8 + 2 + 1 + 67);
    b.write('desc', 0);
    b.writeUInt32BE(s.length + 1, 8);
    b.write(s, 12, 'latin1');
    return b;
  })();
  const wtpt = Buffer.alloc(20);
  wtpt.write('XYZ ', 0);
  wtpt.writeInt32BE(s15(0.9642), 8);
  wtpt.writeInt32BE(s15(1), 12);
  wtpt.writeInt32BE(s15(0.8249), 16);
  const points = 'gamma' in curve ? [Math.round(curve.gamma * 256)] : curve.table;
  const ktrc = Buffer.alloc(12 + 2 * points.length);
  ktrc.write('curv', 0);
  ktrc.writeUInt32BE(points.length, 8);
  points.forEach((v, i) => ktrc.writeUInt16BE(v, 12 + 2 * i));
  const cprt = Buffer.alloc(13);
  cprt.write('text', 0);
  cprt.write('none', 8, 'latin1');
  const tags: [string, Buffer][] = [['desc', desc], ['wtpt', wtpt], ['kTRC', ktrc], ['cprt', cprt]];
  let offset = 128 + 4 + 12 * tags.length;
  const table = Buffer.alloc(4 + 12 * tags.length);
  table.writeUInt32BE(tags.length, 0);
  const bodies: Buffer[] = [];
  tags.forEach(([sig, body], i) => {
    table.write(sig, 4 + 12 * i);
    table.writeUInt32BE(offset, 8 + 12 * i);
    table.writeUInt32BE(body.length, 12 + 12 * i);
    const padded = Buffer.concat([body, Buffer.alloc((4 - (body.length % 4)) % 4)]);
    bodies.push(padded);
    offset += padded.length;
  });
  const head = Buffer.alloc(128);
  head.writeUInt32BE(offset, 0);
  head.writeUInt32BE(0x02100000, 8);
  head.write('mntr', 12);
  head.write('GRAY', 16);
  head.write('XYZ ', 20);
  head.write('acsp', 36);
  head.writeInt32BE(s15(0.9642), 68);
  head.writeInt32BE(s15(1), 72);
  head.writeInt32BE(s15(0.8249), 76);
  return Buffer.concat([head, table, ...bodies]);
}

const CRC = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function chunk(type: string, data: Buffer): Buffer {
  const o = Buffer.alloc(12 + data.length);
  o.writeUInt32BE(data.length, 0);
  o.write(type, 4, 'latin1');
  data.copy(o, 8);
  let c = -1;
  for (const x of o.subarray(4, 8 + data.length)) c = CRC[(c ^ x) & 0xff]! ^ (c >>> 8);
  o.writeUInt32BE((c ^ -1) >>> 0, 8 + data.length);
  return o;
}

/** The PNG with an iCCP chunk right after IHDR (8 bytes of signature, 25 of IHDR). */
function withProfile(png: Buffer, name: string, profile: Buffer): Buffer {
  const iccp = Buffer.concat([Buffer.from(`${name}\0`, 'latin1'), Buffer.from([0]), deflateSync(profile)]);
  return Buffer.concat([png.subarray(0, 33), chunk('iCCP', iccp), png.subarray(33)]);
}

const srgbCurve = Array.from({ length: 1024 }, (_, i) => {
  const x = i / 1023;
  return Math.round((x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4) * 65535);
});

for (const [label, profile] of [
  ['gamma 2.2', grayProfile({ gamma: 2.2 })],
  ['linear (gamma 1.0)', grayProfile({ gamma: 1 })],
  ['the sRGB tone curve', grayProfile({ table: srgbCurve })],
] as const) {
  test(`a grayscale label PNG with an ICC profile of ${label} reads as its stored values, 8 and 16 bits`, async (t) => {
    const v8 = Array.from({ length: 151 }, (_, i) => i);
    const f8 = path.join(tmp, `${label.replace(/\W+/g, '_')}-8.png`);
    writeFileSync(f8, withProfile(encodeGrayPng(v8, 151, 1, 8), 'Gray', profile));
    const a = await readLabelPng(f8);
    t.deepEqual(Array.from(a.data), v8);
    const v16 = Array.from({ length: 16 }, (_, i) => i * 20 + 1);
    const f16 = path.join(tmp, `${label.replace(/\W+/g, '_')}-16.png`);
    writeFileSync(f16, withProfile(encodeGrayPng(v16, 16, 1, 16), 'Gray', profile));
    t.deepEqual(Array.from((await readLabelPng(f16)).data), v16);
  });
}
