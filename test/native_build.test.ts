/**
 * The native kernels are optional: the install step says why it builds nothing and succeeds, and a
 * missing or broken addon leaves zoo on the wasm kernels with the backend line naming the one command
 * that enables them. Runs in child processes (the addon's state is per process).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const build = fileURLToPath(new URL('../../native/build.mjs', import.meta.url));
const backendModule = new URL('../src/backend/index.js', import.meta.url).href;

function run(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('without oneDNN headers the install step builds nothing, says why and how, and succeeds', (t) => {
  const empty = mkdtempSync(path.join(os.tmpdir(), 'zoo-no-dnnl-'));
  const r = run([build], { DNNL_INCLUDE_DIR: empty });
  t.is(r.status, 0, r.out);
  t.regex(r.out, /zoo native kernels: oneDNN headers not found in DNNL_INCLUDE_DIR=.*; zoo runs on its WebAssembly kernels/);
  const strict = run([build, '--strict'], { DNNL_INCLUDE_DIR: empty });
  t.is(strict.status, 1, 'npm run build:native fails where it cannot build');
  const skipped = run([build], { ZOO_NATIVE: '0' });
  t.is(skipped.status, 0);
  t.regex(skipped.out, /skipped \(ZOO_NATIVE=0\)/);
});

const probe = `
const { initBackend, describeBackend } = await import(${JSON.stringify(backendModule)});
const info = await initBackend({ purpose: 'training' });
console.log(JSON.stringify({ line: describeBackend(info), choice: info.choice, native: info.native ?? null }));
`;

test('a missing addon: the wasm kernels, and the backend line gives the command that builds it', (t) => {
  const r = run(['--input-type=module', '-e', probe], { ZOO_NATIVE_ADDON: path.join(os.tmpdir(), 'no-such-addon.node'), ZOO_BACKEND: 'auto' });
  t.is(r.status, 0, r.out);
  const info = JSON.parse(r.out.trim().split('\n').pop()!);
  t.is(info.choice, 'wasm');
  t.is(info.native, null);
  t.regex(info.line, /native kernels are not built \(apt-get install libdnnl-dev && npm run build:native\)/);
  const insist = run(['--input-type=module', '-e', probe], { ZOO_NATIVE_ADDON: path.join(os.tmpdir(), 'no-such-addon.node'), ZOO_BACKEND: 'native' });
  t.not(insist.status, 0);
  t.regex(insist.out, /native kernels are not built/);
});

test('a broken addon file is reported and zoo runs on the wasm kernels', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-bad-addon-'));
  const bad = path.join(dir, 'zoo_dnnl.node');
  writeFileSync(bad, 'not a shared library');
  const r = run(['--input-type=module', '-e', probe], { ZOO_NATIVE_ADDON: bad, ZOO_BACKEND: 'auto' });
  t.is(r.status, 0, r.out);
  const info = JSON.parse(r.out.trim().split('\n').pop()!);
  t.is(info.choice, 'wasm');
  t.regex(info.line, /native kernels failed to load \(.*\); rebuild them: apt-get install libdnnl-dev && npm run build:native/);
});
