/**
 * zoo doctor: the machine report, and installing the CUDA execution provider's files from a tarball
 * laid out as the npm package that carries them (made here; the real one is 230 MB).
 */
import test from 'ava';
import { runZoo } from './helpers/cli.js';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'zoo-doctor-'));
const FILES = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so'];

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const zoo = (...args: string[]) => runZoo(args, { env: { ...process.env, ZOO_BACKEND: 'wasm', ZOO_CACHE: join(dir, 'cache') } });

/** A package tarball with `files` (name -> content) under package/Plugins/Linux/x64/. */
function tarball(name: string, files: Record<string, Buffer>): string {
  const root = join(dir, `${name}-src`);
  const sub = join(root, 'package', 'Plugins', 'Linux', 'x64');
  mkdirSync(sub, { recursive: true });
  for (const [f, data] of Object.entries(files)) writeFileSync(join(sub, f), data);
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

test('--install-cuda copies the three provider libraries from the package tarball', async (t) => {
  const tgz = tarball('good', Object.fromEntries(FILES.map((f) => [f, elf(f)])));
  const target = join(dir, 'ort-bin');
  const r = await zoo('doctor', '--install-cuda', '--from', tgz, '--target', target);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /installed 3 CUDA execution provider files/);
  for (const f of FILES) t.deepEqual(readFileSync(join(target, f)), elf(f), f);
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
