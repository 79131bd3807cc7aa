/**
 * zoo doctor: the machine report, and installing the CUDA execution provider's files from a tarball
 * laid out as the npm package that carries them (made here; the real one is 230 MB).
 */
import test from 'ava';
import { runZoo } from './helpers/cli.js';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ortInfo } from '../src/runtime/doctor.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-doctor-'));
const FILES = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so'];

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const zoo = (...args: string[]) => runZoo(args, { env: { ...process.env, ZOO_BACKEND: 'wasm', ZOO_CACHE: join(dir, 'cache') } });

/** A package tarball with `files` (name -> content) under package/Plugins/Linux/x64/, and package.json when `pkg` is given. */
function tarball(name: string, files: Record<string, Buffer>, pkg?: { name: string; version: string }): string {
  const root = join(dir, `${name}-src`);
  const sub = join(root, 'package', 'Plugins', 'Linux', 'x64');
  mkdirSync(sub, { recursive: true });
  for (const [f, data] of Object.entries(files)) writeFileSync(join(sub, f), data);
  if (pkg) writeFileSync(join(root, 'package', 'package.json'), JSON.stringify(pkg));
  const tgz = join(dir, `${name}.tgz`);
  execFileSync('tar', ['-czf', tgz, '-C', root, 'package']);
  return tgz;
}

const elf = (tag: string) => Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.from(tag)]);

test('zoo doctor reports ONNX Runtime, its providers and the backend', async (t) => {
  const r = await zoo('doctor', '--json');
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { onnxruntime: { version: string; pinned: boolean; session: { provider: string }; cudaFiles: { present: boolean }[] }; tfjs: { backend: string; threads: number; detail: string }; cache: { dir: string } };
  t.is(j.onnxruntime.version, '1.29.0');
  t.true(j.onnxruntime.pinned);
  t.is(j.onnxruntime.cudaFiles.length, 3);
  t.true(['cpu', 'cuda'].includes(j.onnxruntime.session.provider));
  t.is(j.tfjs.backend, 'wasm', 'a value, not a sentence');
  t.true(j.tfjs.threads >= 1);
  t.regex(j.tfjs.detail, /thread/);
  t.is(j.cache.dir, join(dir, 'cache'));
  const text = await zoo('doctor');
  t.regex(text.stdout, /onnxruntime-node 1\.29\.0/);
  t.regex(text.stdout, /CUDA execution provider files: cuda (present|missing)/);
});

test('zoo doctor says whether CUDA can start, or what it lacks and how to get it, check by check', async (t) => {
  const r = await zoo('doctor', '--json');
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { cuda: { ready: boolean; problem: string | null; fix: string | null; checks: { check: string; ok: boolean; detail: string }[] }; onnxruntime: { session: { provider: string; note?: string } } };
  // Every check runs, in order, for the report.
  t.deepEqual(j.cuda.checks.map((c) => c.check).slice(0, 3), ['platform', 'device', 'provider-files']);
  const text = await zoo('doctor');
  if (j.cuda.ready) {
    t.regex(text.stdout, /^CUDA: ready \(--device auto and cuda run ONNX models on the GPU\)$/m);
    return;
  }
  t.is(j.onnxruntime.session.provider, 'cpu');
  t.is(j.onnxruntime.session.note, `CUDA not used: ${j.cuda.problem}; ${j.cuda.fix}; using the CPU`);
  const line = text.stdout.split('\n').find((l) => l.startsWith('CUDA: '));
  t.is(line, `CUDA: not ready: ${j.cuda.problem}; ${j.cuda.fix}`);
  for (const c of j.cuda.checks) t.true(text.stdout.includes(`${c.ok ? 'ok  ' : 'MISS'} `) && text.stdout.includes(c.detail), c.check);
  // The session line does not repeat the reason the CUDA line gives.
  t.regex(text.stdout, /a session opens on: cpu$/m);
  if (!existsSync('/dev/nvidia0')) t.regex(text.stdout, /MISS NVIDIA device: none found/);
});

test('--install-cuda copies the three provider libraries from the package tarball', async (t) => {
  const tgz = tarball('good', Object.fromEntries(FILES.map((f) => [f, elf(f)])));
  const target = join(dir, 'ort-bin');
  const r = await zoo('doctor', '--install-cuda', '--from', tgz, '--target', target);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /installed 3 CUDA execution provider files/);
  for (const f of FILES) t.deepEqual(readFileSync(join(target, f)), elf(f), f);
  // What was installed is recorded beside the files: no package.json and no version string here, so the
  // ONNX Runtime version is unknown and the check falls to the library (which has none): unverifiable.
  const m = JSON.parse(readFileSync(join(target, 'zoo-cuda-provider.json'), 'utf8')) as { ortVersion: string | null; package: string; files: Record<string, { sha256: string; bytes: number }> };
  t.is(m.ortVersion, null);
  t.is(m.package, 'good.tgz');
  for (const f of FILES) t.deepEqual(m.files[f], { sha256: createHash('sha256').update(elf(f)).digest('hex'), bytes: elf(f).length }, f);
  t.regex(r.stderr, /recorded .*zoo-cuda-provider\.json \(ONNX Runtime version unknown, from good\.tgz\)/);
  t.is(ortInfo(target).cudaVersion?.status, 'unverified');
});

test('--install-cuda records the ONNX Runtime version the files are built for, and refuses files built for another', async (t) => {
  // The package zoo pins: its files are known to be built for 1.29.0.
  const pinned = tarball('pinned', Object.fromEntries(FILES.map((f) => [f, elf(f)])), { name: 'com.github.asus4.onnxruntime.linux-x64-gpu', version: '0.4.9' });
  const t1 = join(dir, 'ort-pinned');
  const r1 = await zoo('doctor', '--install-cuda', '--from', pinned, '--target', t1);
  t.is(r1.code, 0, r1.stderr);
  const m1 = JSON.parse(readFileSync(join(t1, 'zoo-cuda-provider.json'), 'utf8')) as { ortVersion: string; ortVersionFrom: string; package: string };
  t.deepEqual([m1.ortVersion, m1.ortVersionFrom, m1.package], ['1.29.0', 'package', 'com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9']);
  t.is(ortInfo(t1, { checksums: true }).cudaVersion?.status, 'match');
  t.regex(ortInfo(t1, { checksums: true }).cudaVersion!.detail, /^built for ONNX Runtime 1\.29\.0 \(zoo-cuda-provider\.json, from com\.github\.asus4\.onnxruntime\.linux-x64-gpu@0\.4\.9; sha256 checked\)$/);
  // The version string inside the provider library (as ONNX Runtime's own builds carry it) wins.
  const withVersion = (v: string) => Buffer.concat([elf('cuda'), Buffer.from(`\0Replay\0${v}\0Failed`)]);
  const own = tarball('own', { ...Object.fromEntries(FILES.map((f) => [f, elf(f)])), [FILES[0]!]: withVersion('1.29.0') }, { name: 'my-build', version: '1.0.0' });
  const t2 = join(dir, 'ort-own');
  const r2 = await zoo('doctor', '--install-cuda', '--from', own, '--target', t2);
  t.is(r2.code, 0, r2.stderr);
  const m2 = JSON.parse(readFileSync(join(t2, 'zoo-cuda-provider.json'), 'utf8')) as { ortVersion: string; ortVersionFrom: string; package: string };
  t.deepEqual([m2.ortVersion, m2.ortVersionFrom, m2.package], ['1.29.0', 'library', 'my-build@1.0.0']);
  // Built for another ONNX Runtime: refused, nothing installed.
  const old = tarball('old', { ...Object.fromEntries(FILES.map((f) => [f, elf(f)])), [FILES[0]!]: withVersion('1.28.0') });
  const t3 = join(dir, 'ort-old');
  const r3 = await zoo('doctor', '--install-cuda', '--from', old, '--target', t3);
  t.is(r3.code, 1);
  t.regex(r3.stderr, /old\.tgz: its libonnxruntime_providers_cuda\.so is built for ONNX Runtime 1\.28\.0, but onnxruntime-node is 1\.29\.0; nothing installed/);
  for (const f of [...FILES, 'zoo-cuda-provider.json']) t.false(existsSync(join(t3, f)), `${f} not installed`);
  // Reinstalling over good files with bad ones leaves the good files and their manifest.
  const r4 = await zoo('doctor', '--install-cuda', '--from', old, '--target', t1);
  t.is(r4.code, 1);
  t.is(ortInfo(t1, { checksums: true }).cudaVersion?.status, 'match');
});

test('--install-cuda refuses a tarball without the libraries or with something else in their place', async (t) => {
  const target = join(dir, 'ort-bin-bad');
  const missing = tarball('missing', { [FILES[0]!]: elf('a'), [FILES[1]!]: elf('b') });
  const r1 = await zoo('doctor', '--install-cuda', '--from', missing, '--target', target);
  t.is(r1.code, 1);
  t.regex(r1.stderr, /cannot extract/);
  const text = tarball('text', Object.fromEntries(FILES.map((f) => [f, Buffer.from('<html>not found</html>')])));
  const r2 = await zoo('doctor', '--install-cuda', '--from', text, '--target', target);
  t.is(r2.code, 1);
  t.regex(r2.stderr, /libonnxruntime_providers_cuda\.so is missing or not a shared object/);
  t.false(existsSync(join(target, FILES[0]!)), 'nothing installed');
  // Two good libraries and a bad third: still nothing installed, not a mixed set.
  const lastBad = tarball('last-bad', { [FILES[0]!]: elf('a'), [FILES[1]!]: elf('b'), [FILES[2]!]: Buffer.from('<html>not found</html>') });
  const r2b = await zoo('doctor', '--install-cuda', '--from', lastBad, '--target', target);
  t.is(r2b.code, 1);
  t.regex(r2b.stderr, /providers_tensorrt\.so is missing or not a shared object/);
  for (const f of FILES) t.false(existsSync(join(target, f)), `${f} not installed`);
  const r3 = await zoo('doctor', '--install-cuda', '--from', join(dir, 'nope.tgz'), '--target', target);
  t.is(r3.code, 2);
  t.regex(r3.stderr, /no such file/);
});
