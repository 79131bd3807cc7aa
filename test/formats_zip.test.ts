import test, { type ExecutionContext } from 'ava';
import { openZip, crc32, crc32Portable } from '../src/formats/zip.js';
import { FormatError } from '../src/formats/types.js';
import { buildZip, concat, crc32Bitwise, makeZip, type ZipFixtureEntry, type ZipFixtureOptions } from './helpers/fixtures.js';

const LABEL = 'weights.zip';
const text = (s: string): Uint8Array => new Uint8Array(Buffer.from(s));

function refuses(t: ExecutionContext, fn: () => unknown, fragment: string): FormatError {
  const err = t.throws(fn, { instanceOf: FormatError }) as FormatError;
  t.true(err.message.startsWith(`${LABEL}: `), err.message);
  t.true(err.message.includes(fragment), err.message);
  return err;
}

function open(entries: ZipFixtureEntry[], options?: ZipFixtureOptions) {
  return openZip(makeZip(entries, options), LABEL);
}

test('stored and deflate entries read back with their declared sizes and CRCs', (t) => {
  const big = text('resnet '.repeat(5000));
  const zip = open([
    { name: 'a.txt', data: text('hello') },
    { name: 'dir/b.params', data: big, method: 8 },
    { name: 'empty', data: new Uint8Array(0), method: 8 },
  ]);
  t.deepEqual(
    zip.entries.map((e) => [e.name, e.method, e.size]),
    [
      ['a.txt', 0, 5],
      ['dir/b.params', 8, big.length],
      ['empty', 8, 0],
    ],
  );
  t.true(zip.entries[1]!.compressedSize < big.length);
  t.is(zip.entries[1]!.crc32, crc32Bitwise(big));
  t.is(Buffer.from(zip.read('a.txt')).toString(), 'hello');
  t.deepEqual(new Uint8Array(zip.read('dir/b.params')), big);
  t.is(zip.read('empty').length, 0);
  t.true(zip.has('a.txt'));
  t.false(zip.has('b.params'));
  refuses(t, () => zip.read('missing'), "no entry 'missing' in the archive");
});

test('the PyTorch layout (data descriptors, ZIP64 end record, padding extra field, comment) is read', (t) => {
  const zip = open(
    [
      { name: 'archive/data.pkl', data: text('pickle'), localExtra: concat([text('FB'), Uint8Array.from([3, 0, 90, 90, 90])]) },
      { name: 'archive/data/0', data: text('storage') },
    ],
    { zip64End: true, dataDescriptors: true, comment: `PK\x05\x06${' '.repeat(30)}` /* a fake end signature inside the comment */ },
  );
  t.is(Buffer.from(zip.read('archive/data/0')).toString(), 'storage');
  t.is(Buffer.from(zip.read('archive/data.pkl')).toString(), 'pickle');
});

test('zip-slip names are refused, naming the entry', (t) => {
  const cases: [string, string][] = [
    ['../evil', "entry '../evil' has an unsafe name: it contains a '..' path segment"],
    ['a/../../evil', "'..' path segment"],
    ['/etc/passwd', "entry '/etc/passwd' has an unsafe name: it is an absolute path"],
    ['C:/x', 'absolute path'],
    ['a\\..\\b', 'backslash'],
    ['a\u0000b', 'NUL byte'],
    ['', 'it is empty'],
  ];
  for (const [name, fragment] of cases) {
    refuses(t, () => open([{ name: 'ok.txt', data: text('x') }, { name, data: text('y') }]), fragment);
  }
  // Dots inside names are fine.
  t.notThrows(() => open([{ name: 'model..v1/a.b..c', data: text('x') }]));
});

test('a CRC mismatch is reported when the entry is read', (t) => {
  const zip = open([
    { name: 'stored', data: text('abc'), crc: 0x12345678 },
    { name: 'deflated', data: text('abcabcabc'), method: 8, crc: 1 },
  ]);
  refuses(t, () => zip.read('stored'), "entry 'stored' is corrupt: CRC-32 is 0x352441c2, the archive says 0x12345678");
  refuses(t, () => zip.read('deflated'), "entry 'deflated' is corrupt");
});

test('a truncated archive or central directory is refused', (t) => {
  const layout = buildZip([
    { name: 'a', data: text('aaaa') },
    { name: 'b', data: text('bbbb') },
  ]);
  const { bytes, cdOffset, eocdOffset } = layout;
  refuses(t, () => openZip(bytes.subarray(0, eocdOffset + 10), LABEL), 'no end of central directory record');
  refuses(t, () => openZip(bytes.subarray(0, 10), LABEL), 'too short to be a ZIP archive');
  // Central directory cut in the middle, end record kept.
  const cut = concat([bytes.subarray(0, cdOffset + 50), bytes.subarray(eocdOffset)]);
  refuses(t, () => openZip(cut, LABEL), 'runs past its end record');
  // End record claims more entries than the directory holds.
  refuses(t, () => open([{ name: 'a', data: text('a') }], { eocd: { count: 3, countHere: 3 } }), 'cannot hold the 3 entries');
  // Directory offset pointing at file data.
  refuses(t, () => open([{ name: 'a', data: text('a'.repeat(100)) }], { eocd: { cdOffset: 0 } }), 'bad signature');
});

test('a deflate entry cannot inflate past its declared size (zip bomb)', (t) => {
  const bomb = new Uint8Array(1 << 20); // 1 MiB of zeros deflates to about 1 KiB
  refuses(t, () => open([{ name: 'bomb', data: bomb, method: 8, size: 1000 }]).read('bomb'), "entry 'bomb' inflates to more than its declared 1000 bytes");
  refuses(t, () => open([{ name: 'liar', data: text('x'), method: 8, size: 100_000_000 }]).read('liar'), 'more than deflate can produce');
  refuses(t, () => open([{ name: 'huge', data: text('x'), method: 8, size: 4_000_000_000 }]).read('huge'), 'more than the 1073741824-byte limit');
  const limited = openZip(makeZip([{ name: 'big', data: bomb, method: 8 }]), LABEL, { maxEntryBytes: 1000 });
  refuses(t, () => limited.read('big'), "entry 'big' declares 1048576 bytes, more than the 1000-byte limit");
  refuses(t, () => open([{ name: 'short', data: text('abcdef'), method: 8, size: 10 }]).read('short'), 'inflates to 6 bytes, not the declared 10');
});

test('corrupt deflate data is a FormatError', (t) => {
  const layout = buildZip([{ name: 'd', data: text('some text to compress '.repeat(20)), method: 8 }]);
  const bytes = new Uint8Array(layout.bytes);
  bytes[30 + 1] = 0xff; // first byte of the deflate stream after the 1-byte name
  bytes[30 + 2] = 0xff;
  refuses(t, () => openZip(bytes, LABEL).read('d'), "entry 'd' has corrupt deflate data");
});

test('encrypted entries, other methods, ZIP64, spanning and inconsistent records are refused', (t) => {
  refuses(t, () => open([{ name: 'secret', data: text('x'), flags: 0x801 }]), "entry 'secret' is encrypted");
  refuses(t, () => open([{ name: 'bz', data: text('x'), method: 12 }]), "entry 'bz' uses compression method 12");
  refuses(t, () => open([{ name: 'a', data: text('x') }], { eocd: { cdOffset: 0xffffffff } }), 'ZIP64 is not supported');
  refuses(t, () => open([{ name: 'a', data: text('x'), size: 0xffffffff }]), "entry 'a' needs ZIP64 fields; ZIP64 is not supported");
  refuses(t, () => open([{ name: 'a', data: text('x') }], { eocd: { disk: 1 } }), 'multi-disk');
  refuses(t, () => open([{ name: 'a', data: text('x') }, { name: 'a', data: text('y') }]), "entry 'a' appears twice");
  refuses(t, () => open([{ name: 'a', data: text('x'), localName: 'b' }]), "entry 'a' has a different name in its local header");
  refuses(t, () => open([{ name: 'a', data: text('x'), size: 2 }]), "stored entry 'a' declares 2 bytes but holds 1");
  refuses(t, () => open([{ name: 'a', data: text('xxxx') }, { name: 'b', data: text('y'), localHeaderOffset: 0 }]), 'different name in its local header');
  refuses(t, () => open([{ name: 'a', data: text('xxxx') }, { name: 'b', data: text('y'), localHeaderOffset: 5000 }]), "entry 'b' local header at 5000 lies past");
});

test('entries whose local records overlap are refused', (t) => {
  // A real overlap: entry b's data starts inside entry a's record.
  const layout = buildZip([
    { name: 'a', data: text('0123456789') },
    { name: 'b', data: text('zz') },
  ]);
  const tampered = new Uint8Array(layout.bytes);
  // Grow a's declared size in its central entry so its data runs into b's local header.
  const cdv = new DataView(tampered.buffer, layout.cdOffset);
  cdv.setUint32(20, 20, true);
  cdv.setUint32(24, 20, true);
  refuses(t, () => openZip(tampered, LABEL), "entries 'a' and 'b' overlap");
});

test('CRC-32 matches the standard check value in both implementations', (t) => {
  const check = text('123456789');
  t.is(crc32(check), 0xcbf43926);
  t.is(crc32Portable(check), 0xcbf43926);
  const data = new Uint8Array(10_000).map((_, i) => (i * 31) & 0xff);
  t.is(crc32Portable(data), crc32Bitwise(data));
  t.is(crc32(data), crc32Bitwise(data));
});

test('truncations and byte flips end in a FormatError or a valid read, never a crash', (t) => {
  const good = makeZip([
    { name: 'x/one', data: text('first entry '.repeat(10)), method: 8 },
    { name: 'x/two', data: text('second') },
  ]);
  let seed = 11;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const attempt = (bytes: Uint8Array, what: string): boolean => {
    try {
      const zip = openZip(bytes, LABEL);
      for (const e of zip.entries) zip.read(e.name);
    } catch (e) {
      if (!(e instanceof FormatError)) {
        t.fail(`${what}: ${(e as Error).stack}`);
        return false;
      }
    }
    return true;
  };
  for (let cut = 0; cut < good.length; cut++) if (!attempt(good.subarray(0, cut), `cut ${cut}`)) return;
  for (let i = 0; i < 500; i++) {
    const bad = new Uint8Array(good);
    for (let k = 0; k <= rand(3); k++) bad[rand(bad.length)] = rand(256);
    if (!attempt(bad, `flip ${i}`)) return;
  }
  t.pass();
});
