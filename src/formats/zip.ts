/**
 * A small, strict ZIP reader for weight archives (GluonCV's `.zip`, PyTorch's `.pth`), working on bytes
 * in memory and never writing anything to disk.
 *
 * Everything the archive declares is checked before use: the end-of-central-directory record is looked
 * for only where it can be (the last 22 + 65535 bytes), every central-directory entry and local header
 * must lie inside the file and before the central directory, local records must not overlap (the
 * overlapping-entry zip bomb), entry names must be relative paths without `..`, backslashes or NUL
 * (zip-slip), and what is read must match its CRC-32. Inflating is capped at the entry's declared size
 * (and at `maxEntryBytes`) and charged to the archive's budget before it starts (budget.ts), so a zip
 * bomb, or many entries that each stay under the cap, cannot exhaust memory. Encrypted entries, spanned archives and
 * archives that need ZIP64 fields are refused; a ZIP64 end record next to ordinary 32-bit fields, which
 * PyTorch writes for every `.pth`, is accepted since nothing in it is needed.
 */
import * as zlib from 'node:zlib';
import { ByteReader, FormatError, quoteName } from './types.js';
import type { ByteBudget } from './budget.js';

/** One file in the archive, as its central directory declares it. */
export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
}

/** An opened archive. */
export interface ZipArchive {
  /** The name errors use for the archive. */
  readonly label: string;
  /** Entries in central-directory order. */
  readonly entries: readonly ZipEntry[];
  /** Whether an entry of this exact name exists. */
  has(name: string): boolean;
  /**
   * The entry's contents, CRC-checked. A stored entry is a view into the archive bytes (no copy):
   * treat it as read-only. A deflated entry is inflated into new memory, charged (its declared size,
   * before inflating) to the archive's budget when it has one; the caller releases that charge when
   * it drops the bytes.
   */
  read(name: string): Uint8Array;
}

/** Options for openZip. */
export interface OpenZipOptions {
  /** Largest entry that will be inflated, in bytes (default 1 GiB): bounds memory whatever the archive says. */
  maxEntryBytes?: number;
  /** Charged with every inflated entry before it is inflated (see budget.ts). */
  budget?: ByteBudget;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const CDH_SIG = 0x02014b50;
const LFH_SIG = 0x04034b50;
const EOCD_SIZE = 22;
const CDH_SIZE = 46;
const LFH_SIZE = 30;
const MAX_COMMENT = 0xffff;
const FLAG_ENCRYPTED = 0x1;
const FLAG_STRONG_ENCRYPTION = 0x40;
const FLAG_UTF8 = 0x800;
/** Deflate cannot expand data more than about 1032:1; a declared size beyond that is a lie. */
const MAX_DEFLATE_RATIO = 1032;

interface EntryRecord extends ZipEntry {
  nameBytes: Uint8Array;
  localHeaderOffset: number;
  /** Where the entry's data starts, from its local header. */
  dataStart: number;
}

/** Opens a ZIP archive held in memory; `label` names it in errors. */
export function openZip(bytes: Uint8Array, label: string, options: OpenZipOptions = {}): ZipArchive {
  const maxEntryBytes = options.maxEntryBytes ?? 2 ** 30;
  const r = new ByteReader(bytes, label);
  const eocd = findEndRecord(r);
  const records = readCentralDirectory(r, eocd);
  checkLocalHeaders(r, records, eocd.cdOffset);
  const byName = new Map(records.map((rec) => [rec.name, rec]));
  const entries: ZipEntry[] = records.map(({ name, method, compressedSize, size, crc32 }) => ({
    name,
    method,
    compressedSize,
    size,
    crc32,
  }));
  return {
    label,
    entries,
    has: (name) => byName.has(name),
    read: (name) => {
      const rec = byName.get(name);
      if (!rec) throw new FormatError(label, `no entry ${quoteName(name)} in the archive`);
      return readRecord(bytes, label, rec, maxEntryBytes, options.budget);
    },
  };
}

interface EndRecord {
  pos: number;
  count: number;
  cdSize: number;
  cdOffset: number;
}

function findEndRecord(r: ByteReader): EndRecord {
  const len = r.bytes.length;
  if (len < EOCD_SIZE) throw r.fail(`file is ${len} bytes, too short to be a ZIP archive`);
  const view = new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength);
  const lowest = Math.max(0, len - EOCD_SIZE - MAX_COMMENT);
  let pos = -1;
  for (let p = len - EOCD_SIZE; p >= lowest; p--) {
    if (view.getUint32(p, true) === EOCD_SIG && p + EOCD_SIZE + view.getUint16(p + 20, true) <= len) {
      pos = p;
      break;
    }
  }
  if (pos < 0) throw r.fail('not a ZIP archive (no end of central directory record)');
  r.pos = pos + 4;
  const disk = r.u16('disk number');
  const cdDisk = r.u16('central directory disk');
  const countHere = r.u16('entry count on this disk');
  const count = r.u16('entry count');
  const cdSize = r.u32('central directory size');
  const cdOffset = r.u32('central directory offset');
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw r.fail('archive needs ZIP64 fields (over 65535 entries or 4 GiB); ZIP64 is not supported');
  }
  if (disk !== 0 || cdDisk !== 0 || countHere !== count) throw r.fail('multi-disk (spanned) archives are not supported');
  checkZip64Locator(r, view, pos);
  if (cdOffset + cdSize > pos) {
    throw r.fail(`central directory [${cdOffset}, ${cdOffset + cdSize}) runs past its end record at ${pos} (truncated or corrupt archive)`);
  }
  if (count * CDH_SIZE > cdSize) {
    throw r.fail(`central directory of ${cdSize} bytes cannot hold the ${count} entries the end record declares`);
  }
  return { pos, count, cdSize, cdOffset };
}

/** A ZIP64 locator is fine as long as it describes a single-disk archive; its record is never needed. */
function checkZip64Locator(r: ByteReader, view: DataView, eocdPos: number): void {
  const at = eocdPos - 20;
  if (at < 0 || view.getUint32(at, true) !== ZIP64_LOCATOR_SIG) return;
  const disks = view.getUint32(at + 16, true);
  if (view.getUint32(at + 4, true) !== 0 || disks > 1) throw r.fail('multi-disk (spanned) archives are not supported');
}

function readCentralDirectory(r: ByteReader, eocd: EndRecord): EntryRecord[] {
  const cd = new ByteReader(r.bytes.subarray(eocd.cdOffset, eocd.cdOffset + eocd.cdSize), r.label);
  const records: EntryRecord[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < eocd.count; i++) {
    const rec = readCentralEntry(cd, i);
    if (seen.has(rec.name)) throw r.fail(`entry ${quoteName(rec.name)} appears twice`);
    seen.add(rec.name);
    records.push(rec);
  }
  // The end record's size and the entries must agree: a larger size means a corrupt end record.
  if (cd.remaining !== 0) throw r.fail(`central directory has ${cd.remaining} bytes after its ${eocd.count} entries (corrupt end record)`);
  return records;
}

function readCentralEntry(cd: ByteReader, index: number): EntryRecord {
  const what = `central directory entry ${index}`;
  if (cd.remaining < CDH_SIZE || cd.u32(what) !== CDH_SIG) {
    throw cd.fail(`${what} is missing or has a bad signature (truncated or corrupt central directory)`);
  }
  cd.pos += 4; // versions made by / needed
  const flags = cd.u16(`${what} flags`);
  const method = cd.u16(`${what} method`);
  cd.pos += 4; // time, date
  const crc32 = cd.u32(`${what} CRC-32`);
  const compressedSize = cd.u32(`${what} compressed size`);
  const size = cd.u32(`${what} size`);
  const nameLen = cd.u16(`${what} name length`);
  const extraLen = cd.u16(`${what} extra length`);
  const commentLen = cd.u16(`${what} comment length`);
  const diskStart = cd.u16(`${what} disk`);
  cd.pos += 6; // internal and external attributes
  const localHeaderOffset = cd.u32(`${what} local header offset`);
  const nameBytes = cd.take(nameLen, `${what} name`);
  cd.take(extraLen, `${what} extra field`);
  cd.take(commentLen, `${what} comment`);
  const name = decodeName(nameBytes, flags);
  const q = quoteName(name);
  checkName(cd, name, nameBytes);
  if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) throw cd.fail(`entry ${q} is encrypted, which is not supported`);
  if (compressedSize === 0xffffffff || size === 0xffffffff || localHeaderOffset === 0xffffffff || diskStart === 0xffff) {
    throw cd.fail(`entry ${q} needs ZIP64 fields; ZIP64 is not supported`);
  }
  if (diskStart !== 0) throw cd.fail(`entry ${q} is on disk ${diskStart}: multi-disk archives are not supported`);
  if (method !== 0 && method !== 8) throw cd.fail(`entry ${q} uses compression method ${method}; only stored (0) and deflate (8) are supported`);
  if (method === 0 && compressedSize !== size) {
    throw cd.fail(`stored entry ${q} declares ${size} bytes but holds ${compressedSize}`);
  }
  return { name, nameBytes, method, compressedSize, size, crc32, localHeaderOffset, dataStart: -1 };
}

function decodeName(raw: Uint8Array, flags: number): string {
  // Without the UTF-8 flag names are CP437; ASCII reads the same, and latin1 keeps other bytes visible.
  return new TextDecoder(flags & FLAG_UTF8 ? 'utf-8' : 'latin1').decode(raw);
}

/** Zip-slip: an entry name must be a plain relative path, whatever a consumer later does with it. */
function checkName(r: ByteReader, name: string, raw: Uint8Array): void {
  let why: string | undefined;
  if (raw.length === 0) why = 'it is empty';
  else if (raw.includes(0)) why = 'it contains a NUL byte';
  else if (name.includes('\\')) why = 'it contains a backslash';
  else if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) why = 'it is an absolute path';
  else if (name.split('/').includes('..')) why = "it contains a '..' path segment";
  if (why) throw r.fail(`entry ${quoteName(name)} has an unsafe name: ${why}`);
}

/** Reads each local header, checks it agrees with the central directory, and that records do not overlap. */
function checkLocalHeaders(r: ByteReader, records: EntryRecord[], cdOffset: number): void {
  for (const rec of records) {
    const q = quoteName(rec.name);
    const at = rec.localHeaderOffset;
    if (at + LFH_SIZE > cdOffset) throw r.fail(`entry ${q} local header at ${at} lies past the start of the central directory (${cdOffset})`);
    r.pos = at;
    if (r.u32(`entry ${q} local header`) !== LFH_SIG) throw r.fail(`entry ${q} local header at ${at} has a bad signature`);
    r.pos = at + 6;
    const flags = r.u16(`entry ${q} local flags`);
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) throw r.fail(`entry ${q} is encrypted, which is not supported`);
    r.pos = at + 26;
    const nameLen = r.u16(`entry ${q} local name length`);
    const extraLen = r.u16(`entry ${q} local extra length`);
    const localName = r.take(nameLen, `entry ${q} local name`);
    if (Buffer.compare(localName, rec.nameBytes) !== 0) throw r.fail(`entry ${q} has a different name in its local header`);
    rec.dataStart = at + LFH_SIZE + nameLen + extraLen;
    if (rec.dataStart + rec.compressedSize > cdOffset) {
      throw r.fail(`entry ${q} data [${rec.dataStart}, ${rec.dataStart + rec.compressedSize}) runs past the start of the central directory (${cdOffset})`);
    }
  }
  const sorted = [...records].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev.dataStart + prev.compressedSize > cur.localHeaderOffset) {
      throw r.fail(`entries ${quoteName(prev.name)} and ${quoteName(cur.name)} overlap`);
    }
  }
}

function readRecord(bytes: Uint8Array, label: string, rec: EntryRecord, maxEntryBytes: number, budget: ByteBudget | undefined): Uint8Array {
  const q = quoteName(rec.name);
  const raw = bytes.subarray(rec.dataStart, rec.dataStart + rec.compressedSize);
  const data = rec.method === 0 ? raw : inflate(raw, label, rec, maxEntryBytes, budget);
  const actual = crc32(data);
  if (actual !== rec.crc32) {
    throw new FormatError(label, `entry ${q} is corrupt: CRC-32 is ${hex(actual)}, the archive says ${hex(rec.crc32)}`);
  }
  return data;
}

function inflate(raw: Uint8Array, label: string, rec: EntryRecord, maxEntryBytes: number, budget: ByteBudget | undefined): Uint8Array {
  const q = quoteName(rec.name);
  if (rec.size > maxEntryBytes) throw new FormatError(label, `entry ${q} declares ${rec.size} bytes, more than the ${maxEntryBytes}-byte limit`);
  if (rec.size > rec.compressedSize * MAX_DEFLATE_RATIO + 1024) {
    throw new FormatError(label, `entry ${q} declares ${rec.size} bytes from ${rec.compressedSize} compressed: more than deflate can produce`);
  }
  budget?.charge(rec.size, `inflating entry ${q}`);
  let out: Buffer;
  try {
    // One output buffer one byte larger than the declared size: zlib then neither concatenates
    // chunks (twice the memory at the end) nor starts a second buffer when the first is exactly full.
    out = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, rec.size), chunkSize: Math.max(64, rec.size + 1) });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_BUFFER_TOO_LARGE') {
      throw new FormatError(label, `entry ${q} inflates to more than its declared ${rec.size} bytes`);
    }
    throw new FormatError(label, `entry ${q} has corrupt deflate data (${err.message})`, { cause: e });
  }
  if (out.length !== rec.size) throw new FormatError(label, `entry ${q} inflates to ${out.length} bytes, not the declared ${rec.size}`);
  return out;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

// ---------------------------------------------------------------------------------------------------
// CRC-32

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3, as ZIP uses) in plain JS, for Node versions without zlib.crc32. */
export function crc32Portable(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

/** CRC-32 of `data`: zlib's native one where Node has it (20.15+), else the portable one. */
export function crc32(data: Uint8Array): number {
  return nativeCrc32 ? nativeCrc32(data) >>> 0 : crc32Portable(data);
}
