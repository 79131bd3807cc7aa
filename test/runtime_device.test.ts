/**
 * The ONNX Runtime layer for serving (src/runtime/ort.ts, cuda.ts): device selection with the reason CUDA
 * is not used (this machine has no GPU and no provider files; every other failure is produced through the
 * injectable probes), `ldd` parsing on real output, preallocated outputs and what onnxruntime-node does
 * with them, element types, feed checks, the warm-up run and the session options, on tiny graphs built here.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataType, IR_VERSION, OPSET, floatTensor, node, onnx, valueInfo } from '../src/onnx/proto.js';
import { UserError } from '../src/errors.js';
import {
  allocTensor,
  createSession,
  cudaProviderInstalled,
  ort,
  ortSessionOptions,
  runSession,
  type HostTensor,
  type SessionOptions,
} from '../src/runtime/ort.js';
import {
  CUDA_MANIFEST,
  cudaReadiness,
  cudaReason,
  diagnoseCudaFailure,
  dlopenLibraries,
  libraryFix,
  ortBinaryDir,
  parseLddMissing,
  parseLoadError,
  providerVersion,
  runLdd,
  type CudaProbe,
} from '../src/runtime/cuda.js';
import { Rng } from '../src/util/random.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-runtime-device-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const encode = (graph: object) => onnx.ModelProto.encode(onnx.ModelProto.fromObject({ irVersion: IR_VERSION, opsetImport: [{ domain: '', version: OPSET }], graph })).finish();

/** y = x W + b ([N, 4] -> [N, 3]) and z = Relu(x): two outputs, a dynamic batch axis. */
function affineModel(): { bytes: Uint8Array; w: Float32Array; b: Float32Array } {
  const w = Float32Array.from({ length: 12 }, (_, i) => (i % 5) - 2 + i / 10);
  const b = Float32Array.from([0.5, -1, 2]);
  const bytes = encode({
    name: 'affine',
    node: [node('MatMul', ['x', 'w'], ['xw'], 'mm'), node('Add', ['xw', 'b'], ['y'], 'add'), node('Relu', ['x'], ['z'], 'relu')],
    initializer: [floatTensor('w', [4, 3], w), floatTensor('b', [3], b)],
    input: [valueInfo('x', DataType.FLOAT, ['N', 4])],
    output: [valueInfo('y', DataType.FLOAT, ['N', 3]), valueInfo('z', DataType.FLOAT, ['N', 4])],
  });
  return { bytes, w, b };
}

function affineReference(x: Float32Array, w: Float32Array, b: Float32Array): Float32Array {
  const n = x.length / 4;
  const y = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) for (let j = 0; j < 3; j++) {
    let s = b[j]!;
    for (let k = 0; k < 4; k++) s += x[i * 4 + k]! * w[k * 3 + j]!;
    y[i * 3 + j] = s;
  }
  return y;
}

/** Conv 3x3 -> BatchNormalization -> Relu -> GlobalAveragePool: what graph optimization fuses. */
function convBnModel(): Uint8Array {
  const rng = new Rng(5);
  const r = (n: number, s = 1) => Float32Array.from({ length: n }, () => rng.normal() * s);
  return encode({
    name: 'conv_bn',
    node: [
      node('Conv', ['x', 'cw', 'cb'], ['c'], 'conv', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
      node('BatchNormalization', ['c', 'g', 'beta', 'mean', 'var'], ['n'], 'bn', { epsilon: { float: 1e-5 } }),
      node('Relu', ['n'], ['r'], 'relu'),
      node('GlobalAveragePool', ['r'], ['y'], 'gap'),
    ],
    initializer: [
      floatTensor('cw', [8, 3, 3, 3], r(8 * 27, 0.3)),
      floatTensor('cb', [8], r(8, 0.1)),
      floatTensor('g', [8], Float32Array.from(r(8), (v) => 1 + 0.2 * v)),
      floatTensor('beta', [8], r(8, 0.1)),
      floatTensor('mean', [8], r(8, 0.1)),
      floatTensor('var', [8], Float32Array.from(r(8), (v) => 0.5 + Math.abs(v))),
    ],
    input: [valueInfo('x', DataType.FLOAT, ['N', 3, 16, 16])],
    output: [valueInfo('y', DataType.FLOAT, ['N', 8, 1, 1])],
  });
}

/** Identity per element type (and Not for bool): what the server's KServe datatypes map onto. */
function typesModel(): Uint8Array {
  const io = [
    ['f16', DataType.FLOAT16],
    ['u8', DataType.UINT8],
    ['i8', DataType.INT8],
    ['i32', DataType.INT32],
    ['i64', DataType.INT64],
    ['b', DataType.BOOL],
  ] as const;
  return encode({
    name: 'types',
    node: io.map(([n]) => node(n === 'b' ? 'Not' : 'Identity', [n], [`${n}_out`], n)),
    input: io.map(([n, t]) => valueInfo(n, t, [2, 3])),
    output: io.map(([n, t]) => valueInfo(`${n}_out`, t, [2, 3])),
  });
}

const f32 = (data: Float32Array, dims: number[]): HostTensor => ({ type: 'float32', data, dims });
const randomX = (n: number, seed = 1) => {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * 4 }, () => rng.normal());
};
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

/** A directory laid out as onnxruntime-node's binary directory with stand-in provider files. */
function providerDir(name: string, content: Record<string, Buffer> = {}): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  const elf = (tag: string) => Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.from(tag)]);
  for (const f of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so']) writeFileSync(join(d, f), content[f] ?? elf(f));
  return d;
}

const withVersion = (v: string) => Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.from(`\0Replay\0${v}\0Failed to get device\0`)]);

/** Captured on this machine: `ldd` on the real libonnxruntime_providers_cuda.so of ONNX Runtime 1.29.0, with no CUDA 13 libraries but libcudart installed. */
const LDD_PROVIDER_CUDA = `	linux-vdso.so.1 (0x00007fd08d235000)
	libcublasLt.so.13 => not found
	libcublas.so.13 => not found
	libcurand.so.10 => not found
	libcudart.so.13 => /usr/local/cuda-13.0/lib/libcudart.so.13 (0x00007fd07f000000)
	libcuda.so.1 => not found
	libdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007fd08d217000)
	libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007fd07ec00000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fd07ee1e000)
	/lib64/ld-linux-x86-64.so.2 (0x00007fd08d237000)
`;
/** `ldd` of a provider whose dependencies are all found. */
const LDD_ALL_FOUND = `	linux-vdso.so.1 (0x00007ffd3a9e5000)
	libcublasLt.so.13 => /usr/local/cuda/lib64/libcublasLt.so.13 (0x00007f0a00000000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0a1a000000)
`;

/** Probes under which everything is in place, on a machine that does not have it; tests break one at a time. */
function healthy(over: CudaProbe = {}): CudaProbe {
  return {
    platform: 'linux x64',
    devices: () => ['GPU 0: NVIDIA H200 (UUID: GPU-0)'],
    dir: providerDir('healthy', { 'libonnxruntime_providers_cuda.so': withVersion('1.29.0') }),
    ortVersion: '1.29.0',
    ldd: () => LDD_ALL_FOUND,
    dlopen: (libs) => Object.fromEntries(libs.map((l) => [l, undefined])),
    ...over,
  };
}

// --- device selection -------------------------------------------------------------------------------

test('auto falls back to the CPU on this machine, and the note says what CUDA lacks and how to get it', async (t) => {
  const r = cudaReadiness();
  if (r.ready) {
    t.log('CUDA is ready on this machine: the fallback is checked through injected probes below');
    t.pass();
    return;
  }
  const s = await createSession(affineModel().bytes, { provider: 'auto' });
  try {
    t.is(s.provider, 'cpu');
    t.is(s.note, `CUDA not used: ${cudaReason(r)}; using the CPU`);
    t.false(s.note!.includes('\n'), 'one line');
    if (!existsSync('/dev/nvidia0') && !cudaProviderInstalled()) {
      // This machine: no GPU and no provider files. The GPU is what it lacks first; installing files would not help.
      t.regex(s.note!, /^CUDA not used: no NVIDIA GPU found \(no \/dev\/nvidia<N> device, and nvidia-smi -L lists none\); CUDA needs an NVIDIA GPU and its driver .*; using the CPU$/);
    }
  } finally {
    await s.session.release();
  }
  // The default device is auto, and an explicit CPU says nothing.
  const d = await createSession(affineModel().bytes);
  t.is(d.note, s.note);
  await d.session.release();
  const c = await createSession(affineModel().bytes, { provider: 'cpu' });
  t.is(c.note, undefined);
  await c.session.release();
});

test('--device cuda fails with the same reason as a UserError, on this machine and with the provider files missing', async (t) => {
  const r = cudaReadiness();
  if (!r.ready) {
    const e = await t.throwsAsync(createSession(affineModel().bytes, { provider: 'cuda' }), { instanceOf: UserError });
    t.is(e!.message, `cannot run on CUDA: ${cudaReason(r)}`);
  }
  // A GPU machine without the provider files: the fix is zoo doctor --install-cuda.
  const empty = join(dir, 'no-provider');
  mkdirSync(empty, { recursive: true });
  const probe = healthy({ dir: empty });
  const e = await t.throwsAsync(createSession(affineModel().bytes, { provider: 'cuda', cudaProbe: probe }), { instanceOf: UserError });
  t.is(
    e!.message,
    `cannot run on CUDA: the CUDA execution provider is not installed beside ONNX Runtime (libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so missing in ${empty}); run 'zoo doctor --install-cuda'`,
  );
  const s = await createSession(affineModel().bytes, { provider: 'auto', cudaProbe: probe });
  t.is(s.provider, 'cpu');
  t.is(s.note, `CUDA not used: the CUDA execution provider is not installed beside ONNX Runtime (libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so missing in ${empty}); run 'zoo doctor --install-cuda'; using the CPU`);
  await s.session.release();
});

test('each missing piece gives its own problem and fix', (t) => {
  t.true(cudaReadiness(healthy()).ready, 'the healthy probes are ready');
  const cases: { name: string; probe: CudaProbe; problem: RegExp; fix: RegExp | undefined }[] = [
    { name: 'platform', probe: healthy({ platform: 'darwin arm64' }), problem: /^zoo runs ONNX Runtime's CUDA execution provider on Linux x64 only, and this is darwin arm64$/, fix: undefined },
    { name: 'no device', probe: healthy({ devices: () => [] }), problem: /^no NVIDIA GPU found/, fix: /NVIDIA GPU and its driver.*--gpus all/ },
    { name: 'missing provider files', probe: healthy({ dir: join(dir, 'nothing-here') }), problem: /^the CUDA execution provider is not installed beside ONNX Runtime \(libonnxruntime_providers_cuda\.so, libonnxruntime_providers_shared\.so missing in .*nothing-here\)$/, fix: /^run 'zoo doctor --install-cuda'$/ },
    {
      name: 'version mismatch (library string)',
      probe: healthy({ dir: providerDir('v128', { 'libonnxruntime_providers_cuda.so': withVersion('1.28.0') }) }),
      problem: /^the CUDA execution provider files in .*v128 are built for ONNX Runtime 1\.28\.0, but onnxruntime-node is 1\.29\.0$/,
      fix: /^run 'zoo doctor --install-cuda' to replace them with the files for 1\.29\.0$/,
    },
    {
      name: 'missing libcublasLt (ldd)',
      probe: healthy({ ldd: (f) => (f.endsWith('providers_cuda.so') ? LDD_PROVIDER_CUDA : LDD_ALL_FOUND) }),
      problem: /^the dynamic linker cannot find libcublasLt\.so\.13, libcublas\.so\.13, libcurand\.so\.10 and libcuda\.so\.1 \(linked by the provider\)$/,
      fix: /^install CUDA 13's cuBLAS and cuRAND and the NVIDIA driver \(libcuda\.so\.1\), and make them findable \(ldconfig, or their directories on LD_LIBRARY_PATH\)$/,
    },
    {
      name: 'missing cuDNN (opened at run time)',
      probe: healthy({ dlopen: (libs) => Object.fromEntries(libs.map((l) => [l, `${l}: cannot open shared object file: No such file or directory`])) }),
      problem: /^the dynamic linker cannot find libcudnn\.so\.9 \(opened by the provider at run time\)$/,
      fix: /^install cuDNN 9 for CUDA 13, and make it findable/,
    },
  ];
  for (const c of cases) {
    const r = cudaReadiness(c.probe);
    t.false(r.ready, c.name);
    t.regex(r.problem!, c.problem, c.name);
    if (c.fix) t.regex(r.fix!, c.fix, c.name);
    else t.is(r.fix, undefined, c.name);
    t.false(cudaReason(r).includes('\n'), `${c.name}: one line`);
    t.is(r.checks.filter((k) => !k.ok).length, 1, `${c.name}: stops at the first failure`);
  }
  // The device is checked before the files: a CPU-only machine is not told to install them.
  const cpuOnly = cudaReadiness(healthy({ devices: () => [], dir: join(dir, 'nothing-here') }));
  t.regex(cpuOnly.problem!, /^no NVIDIA GPU found/);
  // complete: every check runs and reports (zoo doctor).
  const all = cudaReadiness(healthy({ devices: () => [], ldd: () => LDD_PROVIDER_CUDA, complete: true }));
  t.deepEqual(all.checks.map((c) => [c.check, c.ok]), [['platform', true], ['device', false], ['provider-files', true], ['version', true], ['libraries', false]]);
  t.regex(all.problem!, /^no NVIDIA GPU found/);
  // Without ldd or the dlopen child, the libraries are not blamed, and the detail says they were not checked.
  const unchecked = cudaReadiness(healthy({ ldd: () => undefined, dlopen: () => undefined }));
  t.true(unchecked.ready);
  t.regex(unchecked.checks.at(-1)!.detail, /ldd is not available.*libcudnn\.so\.9 not checked/);
});

test('the provider files are checked against onnxruntime-node: manifest, else the library string, else unverifiable', (t) => {
  // The manifest zoo writes is trusted while the files are the ones it records.
  const m = providerDir('manifest');
  const sizes = (d: string) =>
    Object.fromEntries(['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'].map((f) => [f, { sha256: 'x', bytes: readFileSync(join(d, f)).length }]));
  writeFileSync(join(m, CUDA_MANIFEST), JSON.stringify({ ortVersion: '1.28.0', ortVersionFrom: 'package', package: 'some-package@1.0.0', installedAt: '', files: sizes(m) }));
  const mm = cudaReadiness(healthy({ dir: m }));
  t.false(mm.ready);
  t.is(mm.problem, `the CUDA execution provider files in ${m} are built for ONNX Runtime 1.28.0, but onnxruntime-node is 1.29.0`);
  t.regex(mm.checks.find((c) => c.check === 'version')!.detail, /zoo-cuda-provider\.json, from some-package@1\.0\.0/);
  t.is(providerVersion(m, '1.28.0').status, 'match');
  // Checksums (zoo doctor) catch a file replaced with one of the same size; the library decides then.
  t.is(providerVersion(m, '1.28.0', { checksums: true }).status, 'unverified');
  t.regex(providerVersion(m, '1.28.0', { checksums: true }).detail, /^libonnxruntime_providers_cuda\.so is not the file zoo-cuda-provider\.json records \(sha256 differs\); their ONNX Runtime version cannot be verified: no version string/);
  // A manifest whose sizes no longer fit: the version string in the library decides.
  const stale = providerDir('stale', { 'libonnxruntime_providers_cuda.so': withVersion('1.29.0') });
  writeFileSync(join(stale, CUDA_MANIFEST), JSON.stringify({ ortVersion: '1.28.0', ortVersionFrom: 'package', package: 'p@1', installedAt: '', files: { ...sizes(stale), 'libonnxruntime_providers_cuda.so': { sha256: 'x', bytes: 1 } } }));
  const sv = providerVersion(stale, '1.29.0');
  t.is(sv.status, 'match');
  t.is(sv.source, 'library');
  t.regex(sv.detail, /^libonnxruntime_providers_cuda\.so is not the file zoo-cuda-provider\.json records \(size differs\); built for ONNX Runtime 1\.29\.0 \(the version string in libonnxruntime_providers_cuda\.so\)$/);
  // Files installed some other way, with no version string: not verifiable, which does not block CUDA.
  const plain = providerDir('plain');
  const pv = providerVersion(plain, '1.29.0');
  t.is(pv.status, 'unverified');
  t.is(pv.detail, 'their ONNX Runtime version cannot be verified: no zoo-cuda-provider.json (not installed by zoo) and no version string in libonnxruntime_providers_cuda.so');
  t.true(cudaReadiness(healthy({ dir: plain })).ready);
  // A version string cut by the 16 MiB read boundary is still found.
  const big = Buffer.alloc(16 << 20, 0x41);
  const cut = providerDir('cut', { 'libonnxruntime_providers_cuda.so': Buffer.concat([big.subarray(0, (16 << 20) - 4), Buffer.from('\u00001.29.0\u0000'), big.subarray(0, 100)]) });
  t.is(providerVersion(cut, '1.29.0').status, 'match');
});

test('ldd output: "not found" lines parsed from captured text and from real ldd runs on this machine', (t) => {
  t.deepEqual(parseLddMissing(LDD_PROVIDER_CUDA), ['libcublasLt.so.13', 'libcublas.so.13', 'libcurand.so.10', 'libcuda.so.1']);
  t.deepEqual(parseLddMissing(LDD_ALL_FOUND), []);
  t.deepEqual(parseLddMissing('\tnot a dynamic executable\n'), []);
  // libonnxruntime.so.1 of onnxruntime-node: every dependency found here.
  const ortLib = join(ortBinaryDir(), 'libonnxruntime.so.1');
  const real = runLdd(ortLib);
  if (real === undefined) {
    t.log('ldd is not installed here: real runs skipped');
    return;
  }
  t.regex(real, /libc\.so\.6 => \S+/, 'real ldd output');
  t.deepEqual(parseLddMissing(real), []);
  // A shared library built here that links one which is then removed: ldd reports it, and so does dlopen.
  if (spawnSync('cc', ['--version']).status !== 0) {
    t.log('no C compiler here: the missing-library build skipped');
    return;
  }
  const b = join(dir, 'cc');
  mkdirSync(b, { recursive: true });
  writeFileSync(join(b, 'gone.c'), 'int zoo_gone(void) { return 7; }\n');
  writeFileSync(join(b, 'needs.c'), 'int zoo_gone(void);\nint zoo_needs(void) { return zoo_gone() + 1; }\n');
  const cc = (args: string[]) => t.is(spawnSync('cc', args, { cwd: b }).status, 0, args.join(' '));
  cc(['-shared', '-fPIC', '-Wl,-soname,libzoo_gone.so.1', '-o', 'libzoo_gone.so.1', 'gone.c']);
  cc(['-shared', '-fPIC', '-o', 'libzoo_needs.so', 'needs.c', join(b, 'libzoo_gone.so.1')]);
  rmSync(join(b, 'libzoo_gone.so.1'));
  const out = runLdd(join(b, 'libzoo_needs.so'))!;
  t.regex(out, /libzoo_gone\.so\.1 => not found/);
  t.deepEqual(parseLddMissing(out), ['libzoo_gone.so.1']);
  const opened = dlopenLibraries([join(b, 'libzoo_needs.so'), 'libm.so.6', 'libzoo_never_there.so.3']);
  t.truthy(opened);
  t.is(parseLoadError(opened![join(b, 'libzoo_needs.so')]!), 'libzoo_gone.so.1');
  t.is(opened!['libm.so.6'], undefined, 'a library that loads');
  t.is(parseLoadError(opened!['libzoo_never_there.so.3']!), 'libzoo_never_there.so.3');
});

test("ONNX Runtime's load failures are parsed for the library they name", (t) => {
  const logLine =
    '/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory';
  t.is(parseLoadError(logLine), 'libcublasLt.so.13');
  t.is(parseLoadError('/usr/lib/libcudnn.so.9: cannot open shared object file'), 'libcudnn.so.9');
  t.is(parseLoadError('CUDA failure 100: no CUDA-capable device is detected'), undefined);
  t.deepEqual(diagnoseCudaFailure(logLine), { problem: 'ONNX Runtime could not load libcublasLt.so.13 for the CUDA execution provider', fix: libraryFix(['libcublasLt.so.13']) });
  // onnxruntime-node 1.29 throws only "Failed to load shared library" (the reason goes to its log):
  // the provider library is then opened in a child process to find it.
  let asked: readonly string[] = [];
  const d = diagnoseCudaFailure('OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library', {
    dir: '/opt/ort',
    dlopen: (libs) => {
      asked = libs;
      return { [libs[0]!]: 'libcurand.so.10: cannot open shared object file: No such file or directory' };
    },
  });
  t.deepEqual(asked, ['/opt/ort/libonnxruntime_providers_cuda.so']);
  t.is(d.problem, 'ONNX Runtime could not load libcurand.so.10 for the CUDA execution provider');
  t.regex(d.fix, /^install CUDA 13's cuRAND/);
  t.regex(diagnoseCudaFailure('CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version').fix, /580 or newer/);
  t.regex(diagnoseCudaFailure('something else\nmore').problem, /^ONNX Runtime could not start the CUDA execution provider: something else$/);
});

test('auto falls back when ONNX Runtime itself fails to start CUDA, naming the library; cuda throws it', async (t) => {
  if (cudaProviderInstalled()) {
    t.log('the provider files are installed here: ONNX Runtime might start CUDA, so its failure cannot be produced');
    t.pass();
    return;
  }
  // Readiness passes (injected), ONNX Runtime then really fails to load its CUDA provider (not installed),
  // and the child-process probe (injected) names the library.
  const probe = healthy({ dlopen: (libs) => Object.fromEntries(libs.map((l) => [l, l.endsWith('providers_cuda.so') ? 'libcublasLt.so.13: cannot open shared object file: No such file or directory' : undefined])) });
  const s = await createSession(affineModel().bytes, { provider: 'auto', cudaProbe: probe });
  t.is(s.provider, 'cpu');
  t.is(s.note, "CUDA not used: ONNX Runtime could not load libcublasLt.so.13 for the CUDA execution provider; install CUDA 13's cuBLAS, and make it findable (ldconfig, or its directory on LD_LIBRARY_PATH); using the CPU");
  const x = randomX(2);
  const out = await runSession(s, { x: f32(x, [2, 4]) });
  t.true(maxAbsDiff(out.y!.data as Float32Array, affineReference(x, affineModel().w, affineModel().b)) < 1e-5, 'the CPU session runs');
  await s.session.release();
  const e = await t.throwsAsync(createSession(affineModel().bytes, { provider: 'cuda', cudaProbe: probe }), { instanceOf: UserError });
  t.is(e!.message, "cannot run on CUDA: ONNX Runtime could not load libcublasLt.so.13 for the CUDA execution provider; install CUDA 13's cuBLAS, and make it findable (ldconfig, or its directory on LD_LIBRARY_PATH)");
});

// --- runs --------------------------------------------------------------------------------------------

test('preallocated outputs: ONNX Runtime writes into the given buffers, and runSession returns them', async (t) => {
  const { bytes, w, b } = affineModel();
  const s = await createSession(bytes, { provider: 'cpu' });
  try {
    const x = randomX(3);
    const plain = await runSession(s, { x: f32(x, [3, 4]) });
    // Both outputs preallocated, one inside a larger buffer (a slice of a batch buffer, as a server keeps).
    const y = allocTensor('float32', [3, 3]);
    const backing = new Float32Array(40).fill(-99);
    const z: HostTensor = { type: 'float32', data: backing.subarray(10, 22), dims: [3, 4] };
    const got = await runSession(s, { x: f32(x, [3, 4]) }, { outputs: { y, z } });
    t.is(got.y, y, 'the very tensor');
    t.is(got.y!.data, y.data, 'the very buffer');
    t.is(got.z!.data, z.data);
    t.true(maxAbsDiff(y.data as Float32Array, affineReference(x, w, b)) < 1e-5);
    t.deepEqual(Array.from(y.data as Float32Array), Array.from(plain.y!.data as Float32Array));
    t.deepEqual(Array.from(backing.subarray(10, 22)), Array.from(x, (v) => Math.max(0, v)));
    t.true(backing.subarray(0, 10).every((v) => v === -99) && backing.subarray(22).every((v) => v === -99), 'nothing written outside the slice');
    // One output preallocated: the other is allocated as usual.
    const y2 = allocTensor('float32', [3, 3]);
    const part = await runSession(s, { x: f32(x, [3, 4]) }, { outputs: { y: y2 } });
    t.is(part.y!.data, y2.data);
    t.deepEqual(part.z!.dims, [3, 4]);
    t.deepEqual(Array.from(part.z!.data as Float32Array), Array.from(x, (v) => Math.max(0, v)));
    // A preallocated output that cannot be the output is refused before the run.
    await t.throwsAsync(runSession(s, { x: f32(x, [3, 4]) }, { outputs: { y: allocTensor('float32', [3, 5]) } }), { instanceOf: UserError, message: "output 'y' has shape [3, 5]; the model's is [N, 3]" });
    await t.throwsAsync(runSession(s, { x: f32(x, [3, 4]) }, { outputs: { logits: allocTensor('float32', [3, 3]) } }), { instanceOf: UserError, message: "the model has no output 'logits' (its outputs: y, z)" });
  } finally {
    await s.session.release();
  }
});

test('onnxruntime-node 1.29 copies each output once into a new buffer, also when it is preallocated', async (t) => {
  // What the README states about copies; a change in the binding fails here.
  const s = await createSession(affineModel().bytes, { provider: 'cpu' });
  try {
    const T = ort().Tensor;
    const x = randomX(2);
    const buf = new Float32Array(6);
    const r = await s.session.run({ x: new T('float32', x, [2, 4]) }, { y: new T('float32', buf, [2, 3]), z: null });
    t.not(r.y!.data, buf, 'the returned tensor is not the preallocated one');
    t.deepEqual(Array.from(buf), Array.from(r.y!.data as Float32Array), 'ONNX Runtime wrote into the preallocated buffer');
    (r.y!.data as Float32Array)[0] = 12345;
    t.not(buf[0], 12345, 'the returned data is a copy');
    // Device memory for outputs is WebGPU's only: with the CPU provider the option changes nothing.
    const s2 = await ort().InferenceSession.create(affineModel().bytes, { executionProviders: ['cpu'], preferredOutputLocation: 'gpu-buffer' });
    const r2 = await s2.run({ x: new T('float32', x, [2, 4]) });
    t.is(r2.y!.location, 'cpu');
    await s2.release();
  } finally {
    await s.session.release();
  }
});

test('element types: float16, uint8, int8, int32, int64 and bool round-trip', async (t) => {
  const s = await createSession(typesModel(), { provider: 'cpu' });
  try {
    const dims = [2, 3];
    const feeds: Record<string, HostTensor> = {
      f16: { type: 'float16', data: Uint16Array.from([0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x8000]), dims }, // 1, -2, ~1/3, 65504, tiny, -0
      u8: { type: 'uint8', data: Uint8Array.from([0, 1, 127, 128, 254, 255]), dims },
      i8: { type: 'int8', data: Int8Array.from([-128, -1, 0, 1, 100, 127]), dims },
      i32: { type: 'int32', data: Int32Array.from([-(2 ** 31), -1, 0, 1, 7, 2 ** 31 - 1]), dims },
      i64: { type: 'int64', data: BigInt64Array.from([-(2n ** 63n), -1n, 0n, 1n, 2n ** 53n + 1n, 2n ** 63n - 1n]), dims },
      b: { type: 'bool', data: Uint8Array.from([1, 0, 1, 1, 0, 0]), dims },
    };
    const out = await runSession(s, feeds);
    for (const k of ['f16', 'u8', 'i8', 'i32', 'i64']) {
      t.is(out[`${k}_out`]!.type, feeds[k]!.type, k);
      t.is(out[`${k}_out`]!.data.constructor, feeds[k]!.data.constructor, `${k}: carried in the same array type`);
      t.deepEqual(Array.from(out[`${k}_out`]!.data as ArrayLike<number>), Array.from(feeds[k]!.data as ArrayLike<number>), k);
    }
    t.is(out.b_out!.type, 'bool');
    t.deepEqual(Array.from(out.b_out!.data as Uint8Array), [0, 1, 0, 0, 1, 1]);
    // Preallocated outputs of these types too.
    const h = allocTensor('float16', dims);
    const r = await runSession(s, feeds, { outputs: { f16_out: h, b_out: allocTensor('bool', dims) } });
    t.is(r.f16_out!.data, h.data);
    t.deepEqual(Array.from(h.data as Uint16Array), Array.from(feeds.f16!.data as Uint16Array));
    t.deepEqual(Array.from(r.b_out!.data as Uint8Array), [0, 1, 0, 0, 1, 1]);
  } finally {
    await s.session.release();
  }
});

test('feeds are checked against the model before the run: names, types, shapes, sizes', async (t) => {
  const s = await createSession(affineModel().bytes, { provider: 'cpu' });
  const x = randomX(2);
  const bad = async (feeds: Record<string, HostTensor>, message: string) => t.throwsAsync(runSession(s, feeds), { instanceOf: UserError, message });
  try {
    await bad({}, "the model's input 'x' is not given");
    await bad({ x: f32(x, [2, 4]), extra: f32(x, [2, 4]) }, "the model has no input 'extra' (its inputs: x)");
    await bad({ x: { type: 'int32', data: new Int32Array(8), dims: [2, 4] } }, "input 'x' is int32; the model's is float32");
    await bad({ x: f32(x, [4, 2]) }, "input 'x' has shape [4, 2]; the model's is [N, 4]");
    await bad({ x: f32(x, [2, 4, 1]) }, "input 'x' has shape [2, 4, 1]; the model's is [N, 4]");
    await bad({ x: f32(x.subarray(0, 7), [2, 4]) }, "input 'x' has shape [2, 4] (8 elements) but 7 values");
    await bad({ x: { type: 'float32', data: new Int32Array(8) as unknown as Float32Array, dims: [2, 4] } }, "input 'x' is float32 but its data is a Int32Array, not a Float32Array");
    await bad({ x: f32(x, [2.5, 4]) }, "input 'x' has shape [2.5,4]: dimensions must be whole numbers >= 0");
    // A batch of 0 is a shape, not an error.
    const empty = await runSession(s, { x: f32(new Float32Array(0), [0, 4]) });
    t.deepEqual(empty.y!.dims, [0, 3]);
  } finally {
    await s.session.release();
  }
});

test('warm-up: the feeds run before createSession returns; bad warm-up feeds are a UserError and release the session', async (t) => {
  const { bytes, w, b } = affineModel();
  const x = randomX(4, 9);
  const s = await createSession(bytes, { provider: 'cpu', warmup: { x: f32(x, [4, 4]) } });
  try {
    const out = await runSession(s, { x: f32(x, [4, 4]) });
    t.true(maxAbsDiff(out.y!.data as Float32Array, affineReference(x, w, b)) < 1e-5);
  } finally {
    await s.session.release();
  }
  await t.throwsAsync(createSession(bytes, { provider: 'cpu', warmup: { x: f32(x, [2, 8]) } }), { instanceOf: UserError, message: "warm-up run: input 'x' has shape [2, 8]; the model's is [N, 4]" });
  await t.throwsAsync(createSession(bytes, { provider: 'cpu', warmup: {} }), { instanceOf: UserError, message: "warm-up run: the model's input 'x' is not given" });
  // Under auto on a machine without CUDA, the warm-up runs on the CPU and the note is kept.
  const a = await createSession(bytes, { provider: 'auto', warmup: { x: f32(x, [4, 4]) }, cudaProbe: healthy({ devices: () => [] }) });
  t.is(a.provider, 'cpu');
  t.regex(a.note!, /^CUDA not used: no NVIDIA GPU found/);
  await a.session.release();
});

test('session options reach ONNX Runtime: optimization level, threads, arena; the numbers stay within 1e-5', async (t) => {
  t.deepEqual(ortSessionOptions({ intraOpThreads: 1, graphOptimization: 'disabled', memoryArena: false }), {
    graphOptimizationLevel: 'disabled',
    intraOpNumThreads: 1,
    enableCpuMemArena: false,
    enableMemPattern: false,
  });
  t.deepEqual(ortSessionOptions({ intraOpThreads: 2, interOpThreads: 2 }), {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: 2,
    interOpNumThreads: 2,
    executionMode: 'parallel',
    enableCpuMemArena: true,
    enableMemPattern: true,
  });
  // Spinning off is ONNX Runtime's session configuration entry, for its intra- and inter-op pools.
  t.deepEqual(ortSessionOptions({ intraOpThreads: 1, spinning: false }).extra, { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });
  t.false('extra' in ortSessionOptions({ intraOpThreads: 1 }), 'ONNX Runtime\'s default unless asked');
  // The level is what ONNX Runtime applies: its optimized graph keeps BatchNormalization only when disabled.
  const bytes = convBnModel();
  const ops = async (level: SessionOptions['graphOptimization']) => {
    const file = join(dir, `opt-${level}.onnx`);
    const s = await ort().InferenceSession.create(bytes, { ...ortSessionOptions({ graphOptimization: level, intraOpThreads: 1 }), executionProviders: ['cpu'], optimizedModelFilePath: file });
    await s.release();
    return (onnx.ModelProto.decode(readFileSync(file)).graph?.node ?? []).map((n) => n.opType);
  };
  t.true((await ops('disabled')).includes('BatchNormalization'));
  t.false((await ops('basic')).includes('BatchNormalization'), 'folded into the Conv');
  const rng = new Rng(11);
  const x = Float32Array.from({ length: 2 * 3 * 16 * 16 }, () => rng.normal());
  const run = async (o: SessionOptions) => {
    const s = await createSession(bytes, { provider: 'cpu', ...o });
    try {
      return (await runSession(s, { x: f32(x, [2, 3, 16, 16]) })).y!.data as Float32Array;
    } finally {
      await s.session.release();
    }
  };
  const ref = await run({ graphOptimization: 'all' });
  for (const o of [{ graphOptimization: 'disabled' }, { graphOptimization: 'basic' }, { graphOptimization: 'extended' }, { intraOpThreads: 1 }, { interOpThreads: 2 }, { memoryArena: false }, { spinning: false }, { spinning: false, thread: 'worker' }] as SessionOptions[]) {
    const d = maxAbsDiff(await run(o), ref);
    t.true(d <= 1e-5, `${JSON.stringify(o)}: max |diff| ${d}`);
  }
  for (const [o, message] of [
    [{ intraOpThreads: 0 }, 'intraOpThreads must be a whole number >= 1, not 0'],
    [{ interOpThreads: 1.5 }, 'interOpThreads must be a whole number >= 1, not 1.5'],
    [{ graphOptimization: 'max' }, "graphOptimization must be one of disabled, basic, extended, all, not 'max'"],
    [{ provider: 'gpu' }, "device must be auto, cpu or cuda, not 'gpu'"],
  ] as [SessionOptions, string][]) {
    const e = await t.throwsAsync(createSession(bytes, o), { instanceOf: UserError, message });
    t.is((e as UserError).exitCode, 2);
  }
});

// --- sessions in a worker thread ----------------------------------------------------------------------

/** 20 MatMuls of 1024 x 1024: a run long enough (tens of milliseconds) to watch the event loop during it. */
function heavyModel(): Uint8Array {
  const n = 1024;
  const nodes = Array.from({ length: 20 }, (_, i) => node('MatMul', [i ? `h${i - 1}` : 'x', 'w'], [i === 19 ? 'y' : `h${i}`], `mm${i}`));
  return encode({
    name: 'heavy',
    node: nodes,
    initializer: [floatTensor('w', [n, n], new Float32Array(n * n).fill(1 / n))],
    input: [valueInfo('x', DataType.FLOAT, ['N', n])],
    output: [valueInfo('y', DataType.FLOAT, ['N', n])],
  });
}

/** Whether a run started now has finished by the time a callback queued right after it runs. */
async function finishedBeforeNextImmediate(run: () => Promise<unknown>): Promise<boolean> {
  let done = false;
  const p = run().then(() => {
    done = true;
  });
  const seen = await new Promise<boolean>((resolve) => setImmediate(() => resolve(done)));
  await p;
  return seen;
}

test("thread 'worker': this thread stays free during runs (on the main thread a run holds it), with the same results", async (t) => {
  const feeds = { x: f32(new Float32Array(64 * 1024).fill(1), [64, 1024]) };
  const main = await createSession(heavyModel(), { provider: 'cpu' });
  const worker = await createSession(heavyModel(), { provider: 'cpu', thread: 'worker' });
  try {
    t.true(await finishedBeforeNextImmediate(() => runSession(main, feeds)), 'onnxruntime-node 1.29 runs on the calling thread');
    t.false(await finishedBeforeNextImmediate(() => runSession(worker, feeds)), 'the worker session leaves the event loop free');
    const a = await runSession(main, feeds);
    const b = await runSession(worker, feeds);
    t.deepEqual(b.y!.dims, [64, 1024]);
    t.deepEqual(Array.from(b.y!.data as Float32Array), Array.from(a.y!.data as Float32Array));
    // Runs sent together are answered in order, each its own.
    const xs = [1, 2, 3].map((v) => f32(new Float32Array(2 * 1024).fill(v), [2, 1024]));
    const outs = await Promise.all(xs.map((x) => runSession(worker, { x })));
    t.deepEqual(outs.map((o) => Math.round((o.y!.data as Float32Array)[0]!)), [1, 2, 3]);
  } finally {
    await main.session.release();
    await worker.session.release();
  }
  await t.throwsAsync(runSession(worker, feeds), { message: /worker thread has exited/ }, 'released');
});

test("thread 'worker': preallocated outputs, element types, checks, notes and errors as on the main thread", async (t) => {
  const { bytes, w, b } = affineModel();
  const x = randomX(3);
  const s = await createSession(bytes, { thread: 'worker', warmup: { x: f32(x, [3, 4]) }, intraOpThreads: 1 });
  try {
    const main = cudaReadiness();
    if (!main.ready) {
      t.is(s.provider, 'cpu');
      t.is(s.note, `CUDA not used: ${cudaReason(main)}; using the CPU`);
    }
    t.deepEqual([...s.session.inputNames], ['x']);
    const y = allocTensor('float32', [3, 3]);
    const got = await runSession(s, { x: f32(x, [3, 4]) }, { outputs: { y } });
    t.is(got.y, y);
    t.true(maxAbsDiff(y.data as Float32Array, affineReference(x, w, b)) < 1e-5, 'the preallocated buffer holds the values');
    t.deepEqual(Array.from(got.z!.data as Float32Array), Array.from(x, (v) => Math.max(0, v)));
    await t.throwsAsync(runSession(s, { x: f32(x, [3, 5]) }), { instanceOf: UserError, message: "input 'x' has shape [3, 5]; the model's is [N, 4]" });
    // transferInputs: a buffer the typed array covers whole moves to the worker (detached here); a view is copied.
    const whole = Float32Array.from(x);
    const moved = await runSession(s, { x: f32(whole, [3, 4]) }, { transferInputs: true });
    t.is(whole.byteLength, 0, 'handed over, not copied');
    t.true(maxAbsDiff(moved.y!.data as Float32Array, affineReference(x, w, b)) < 1e-5);
    const big = new Float32Array(24);
    big.set(x, 4);
    const part = big.subarray(4, 16);
    await runSession(s, { x: f32(part, [3, 4]) }, { transferInputs: true });
    t.is(big.byteLength, 96, 'a view into a larger buffer stays');
    const kept = Float32Array.from(x);
    await runSession(s, { x: f32(kept, [3, 4]) });
    t.is(kept.byteLength, 48, 'copied unless asked');
  } finally {
    await s.session.release();
  }
  const types = await createSession(typesModel(), { provider: 'cpu', thread: 'worker' });
  try {
    const dims = [2, 3];
    const r = await runSession(types, {
      f16: { type: 'float16', data: Uint16Array.from([0x3c00, 0xc000, 1, 2, 3, 4]), dims },
      u8: { type: 'uint8', data: Uint8Array.from([0, 1, 2, 3, 4, 255]), dims },
      i8: { type: 'int8', data: Int8Array.from([-128, 0, 1, 2, 3, 127]), dims },
      i32: { type: 'int32', data: Int32Array.from([-1, 0, 1, 2, 3, 4]), dims },
      i64: { type: 'int64', data: BigInt64Array.from([-1n, 0n, 1n, 2n, 3n, 2n ** 62n]), dims },
      b: { type: 'bool', data: Uint8Array.from([1, 0, 1, 0, 1, 0]), dims },
    });
    t.deepEqual(Array.from(r.f16_out!.data as Uint16Array), [0x3c00, 0xc000, 1, 2, 3, 4]);
    t.is(r.i64_out!.data.constructor, BigInt64Array);
    t.is((r.i64_out!.data as BigInt64Array)[5], 2n ** 62n);
    t.deepEqual(Array.from(r.b_out!.data as Uint8Array), [0, 1, 0, 1, 0, 1]);
  } finally {
    await types.session.release();
  }
  // Errors raised in the worker arrive as they were raised: a UserError stays one.
  await t.throwsAsync(createSession(bytes, { thread: 'worker', provider: 'cpu', warmup: { x: f32(x, [3, 5]) } }), { instanceOf: UserError, message: "warm-up run: input 'x' has shape [3, 5]; the model's is [N, 4]" });
  await t.throwsAsync(createSession(Uint8Array.from([1, 2, 3]), { thread: 'worker', provider: 'cpu' }), { instanceOf: UserError, message: /^ONNX Runtime could not load the model: / });
  await t.throwsAsync(createSession(bytes, { thread: 'worker', provider: 'cuda', cudaProbe: { platform: 'darwin arm64' } }), { instanceOf: UserError, message: /^cannot run on CUDA: zoo runs ONNX Runtime's CUDA execution provider on Linux x64 only, and this is darwin arm64$/ });
  await t.throwsAsync(createSession(bytes, { thread: 'gpu' as 'worker' }), { instanceOf: UserError, message: "thread must be main or worker, not 'gpu'" });
});
