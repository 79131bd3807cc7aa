/**
 * ONNX Runtime's telemetry (the official Linux and macOS builds carry Microsoft's 1DS SDK) must not
 * write files when zoo opens a session: with it on, the first session of a process creates or
 * truncates $TMPDIR/mat-debug-<pid>.log and $TMPDIR/.ses, following symlinks, and keeps an event
 * database under $XDG_CACHE_HOME. A child process opens a session through zoo's runtime with fresh
 * temporary, cache and home directories and a symlink planted at each of those names beforehand.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { disableOrtTelemetry } from '../src/runtime/ort.js';

const ortModule = new URL('../src/runtime/ort.js', import.meta.url).href;
const protoModule = new URL('../src/onnx/proto.js', import.meta.url).href;

// The child prints its pid, waits for a line on stdin (the parent plants its symlinks meanwhile),
// then opens and runs a one-node model through zoo's runtime.
const CHILD = `
import { createInterface } from 'node:readline';
import { createSession, runClassifier } from ${JSON.stringify(ortModule)};
import { onnx } from ${JSON.stringify(protoModule)};
const info = (name) => ({ name, type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 1 }, { dimValue: 2 }, { dimValue: 1 }, { dimValue: 1 }] } } } });
const model = onnx.ModelProto.encode({
  irVersion: 8,
  opsetImport: [{ domain: '', version: 17 }],
  graph: { name: 'g', node: [{ opType: 'Relu', input: ['input'], output: ['logits'] }], input: [info('input')], output: [info('logits')] },
}).finish();
console.log(process.pid);
const lines = createInterface({ input: process.stdin });
for await (const _ of lines) break;
const s = await createSession(model, { provider: 'cpu', intraOpThreads: 1 });
const out = await runClassifier(s, Float32Array.from([-1, 2]), [1, 2, 1, 1]);
console.log(JSON.stringify(Array.from(out)));
`;

interface Planted {
  link: string;
  target: string;
}

/** A symlink at `link` to a new file holding `content`. */
function plant(link: string, dir: string, content: string): Planted {
  const target = path.join(dir, `target-${path.basename(link)}`);
  fs.writeFileSync(target, content);
  fs.symlinkSync(target, link);
  return { link, target };
}

function listTree(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

test('a session opened through zoo leaves no telemetry files and follows no planted symlink', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'zoo-telemetry-'));
  const planted: Planted[] = [];
  t.teardown(() => {
    // Only the symlinks this test planted (never what they point at) and its own directory.
    for (const p of planted) if (fs.lstatSync(p.link, { throwIfNoEntry: false })?.isSymbolicLink()) fs.unlinkSync(p.link);
    fs.rmSync(root, { recursive: true, force: true });
  });
  const dirs = { tmp: path.join(root, 'tmp'), cache: path.join(root, 'cache'), home: path.join(root, 'home'), targets: path.join(root, 'targets') };
  for (const d of Object.values(dirs)) fs.mkdirSync(d);
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: dirs.tmp, XDG_CACHE_HOME: dirs.cache, HOME: dirs.home };
  delete env.ORT_DISABLE_TELEMETRY;

  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const pid = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const first = stdout.split('\n')[0]!;
      if (stdout.includes('\n') && /^\d+$/.test(first)) resolve(Number(first));
    });
    child.on('close', () => reject(new Error(`child ended before printing its pid: ${stderr}`)));
  });
  t.is(pid, child.pid ?? -1);
  const logName = `mat-debug-${pid}.log`;
  planted.push(plant(path.join(dirs.tmp, logName), dirs.targets, 'kept: TMPDIR log\n'));
  planted.push(plant(path.join(dirs.tmp, '.ses'), dirs.targets, 'kept: session file\n'));
  // The SDK's default directory when TMPDIR is not honoured.
  const systemLog = path.join('/tmp', logName);
  if (process.platform !== 'win32' && !fs.existsSync(systemLog)) planted.push(plant(systemLog, dirs.targets, 'kept: /tmp log\n'));
  child.stdin.end('go\n');
  const code = await exited;
  t.is(code, 0, stderr);
  t.deepEqual(JSON.parse(stdout.trim().split('\n').pop()!), [0, 2]);

  for (const p of planted) {
    t.true(fs.lstatSync(p.link).isSymbolicLink(), `${p.link} was replaced`);
    t.regex(fs.readFileSync(p.target, 'utf8'), /^kept: /, `${p.link} was followed and its target truncated`);
  }
  t.deepEqual(listTree(dirs.tmp), ['.ses', logName], 'files created in TMPDIR');
  t.deepEqual(listTree(dirs.cache), [], 'files created in XDG_CACHE_HOME');
  t.deepEqual(listTree(dirs.home), [], 'files created in HOME');
});

test('ORT_DISABLE_TELEMETRY is set to 1 unless the user set it', (t) => {
  const unset: NodeJS.ProcessEnv = {};
  disableOrtTelemetry(unset);
  t.is(unset.ORT_DISABLE_TELEMETRY, '1');
  const empty: NodeJS.ProcessEnv = { ORT_DISABLE_TELEMETRY: '' };
  disableOrtTelemetry(empty);
  t.is(empty.ORT_DISABLE_TELEMETRY, '1');
  const chosen: NodeJS.ProcessEnv = { ORT_DISABLE_TELEMETRY: '0' };
  disableOrtTelemetry(chosen);
  t.is(chosen.ORT_DISABLE_TELEMETRY, '0');
});
