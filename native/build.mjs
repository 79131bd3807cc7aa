#!/usr/bin/env node
// Builds zoo's optional native kernels (native/zoo_dnnl.cc, oneDNN) with node-gyp.
//
// Run by `npm ci` / `npm install` (the package's install script) and by `npm run build:native`.
// Where oneDNN's headers are missing (apt-get install libdnnl-dev on Debian and Ubuntu), or node-gyp
// or a compiler is, it says so in one line and exits 0: zoo then runs on the WebAssembly backend's own
// kernels, exactly as without this step. `--strict` (npm run build:native) makes a failure an error.
// ZOO_NATIVE=0 skips the build.
//
// node-gyp needs Node's headers. Where the running Node's own installation carries them
// (<prefix>/include/node/common.gypi, as Debian's nodejs and the official tarballs do) they are used
// and nothing is downloaded; otherwise node-gyp fetches them as it always does.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = path.dirname(fileURLToPath(import.meta.url));
const root = path.dirname(nativeDir);
const strict = process.argv.includes('--strict');
const say = (msg) => console.log(`zoo native kernels: ${msg}`);

function giveUp(reason) {
  say(`${reason}; zoo runs on its WebAssembly kernels`);
  process.exit(strict ? 1 : 0);
}

if (process.env.ZOO_NATIVE === '0') giveUp('skipped (ZOO_NATIVE=0)');
if (!existsSync(path.join(nativeDir, 'binding.gyp'))) giveUp('sources not found');

/** The oneDNN header directory: DNNL_INCLUDE_DIR when set (only there), else the usual prefixes. */
function findDnnlHeaders() {
  if (process.env.DNNL_INCLUDE_DIR) {
    const dir = process.env.DNNL_INCLUDE_DIR;
    return existsSync(path.join(dir, 'oneapi', 'dnnl', 'dnnl.hpp')) ? dir : undefined;
  }
  const candidates = [
    '/usr/include',
    '/usr/local/include',
    '/opt/homebrew/include',
    process.env.CONDA_PREFIX && path.join(process.env.CONDA_PREFIX, 'include'),
  ].filter(Boolean);
  for (const dir of candidates) if (existsSync(path.join(dir, 'oneapi', 'dnnl', 'dnnl.hpp'))) return dir;
  return undefined;
}

const include = findDnnlHeaders();
if (!include) {
  giveUp(
    process.env.DNNL_INCLUDE_DIR
      ? `oneDNN headers not found in DNNL_INCLUDE_DIR=${process.env.DNNL_INCLUDE_DIR}`
      : 'oneDNN headers not found (apt-get install libdnnl-dev, then npm run build:native)',
  );
}
let versionHeader = '';
try {
  versionHeader = readFileSync(path.join(include, 'oneapi', 'dnnl', 'dnnl_version.h'), 'utf8');
} catch {
  giveUp(`oneDNN's dnnl_version.h not found beside dnnl.hpp in ${include}`);
}
const version = /#define\s+DNNL_VERSION_MAJOR\s+(\d+)/.exec(versionHeader);
if (version && version[1] !== '2') giveUp(`oneDNN ${version[1]}.x found in ${include}; the kernels are written for oneDNN 2.x`);

/** node-gyp: npm's own (npm sets npm_config_node_gyp for scripts), a local install, or npm's bundled copy. */
function findNodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  const local = path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(local)) return local;
  const prefix = path.dirname(path.dirname(process.execPath));
  for (const lib of [path.join(prefix, 'lib', 'node_modules'), path.join(prefix, 'node_modules')]) {
    const bundled = path.join(lib, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (existsSync(bundled)) return bundled;
  }
  return undefined;
}

const nodeGyp = findNodeGyp();
if (!nodeGyp) giveUp('node-gyp not found (npm install -g node-gyp)');

const args = [nodeGyp, 'rebuild', '--directory', nativeDir];
const prefix = path.dirname(path.dirname(process.execPath));
if (existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) args.push(`--nodedir=${prefix}`);
const env = { ...process.env };
if (include !== '/usr/include') {
  env.CXXFLAGS = `${env.CXXFLAGS ?? ''} -I${include}`.trim();
  env.LDFLAGS = `${env.LDFLAGS ?? ''} -L${path.join(path.dirname(include), 'lib')}`.trim();
}
say(`building with oneDNN ${version ? `${version[1]}.x ` : ''}headers from ${include}`);
// Ten minutes: a compile takes seconds; node-gyp fetching Node's headers from a network it cannot reach
// would otherwise hang the install.
const r = spawnSync(process.execPath, args, { cwd: nativeDir, env, encoding: 'utf8', timeout: 600_000 });
if (r.status !== 0 || r.error) {
  const log = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const lines = log.split('\n').filter((l) => /error|not found|No such file/i.test(l)).slice(0, 6);
  rmSync(path.join(nativeDir, 'build'), { recursive: true, force: true });
  if (strict) process.stderr.write(log);
  giveUp(`build failed${lines.length ? `:\n  ${lines.join('\n  ')}` : ''}`);
}
say(`built ${path.relative(root, path.join(nativeDir, 'build', 'Release', 'zoo_dnnl.node'))}`);
