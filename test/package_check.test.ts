/**
 * zoo as a dependency (scripts/check-package.sh): the packed tarball installs into a fresh TypeScript
 * project with the npm registry alone and the README's library example runs there. It needs the npm
 * registry (or a local npm cache holding zoo's dependencies) and about a minute: ZOO_TEST_PACKAGE=1.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { findPackageDir } from '../src/util/package.js';

const script = findPackageDir(fileURLToPath(new URL('.', import.meta.url)), 'scripts/check-package.sh');

(process.env.ZOO_TEST_PACKAGE === '1' ? test : test.skip)('the packed tarball installs in a fresh TypeScript project and runs the README example', async (t) => {
  t.truthy(script, 'scripts/check-package.sh not found above the build directory');
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    execFile('bash', [script!], { timeout: 540_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
    });
  });
  t.log(output.trim().split('\n').filter((l) => /^(tarball|pack|install|tsc|run|  total|npx|require)/.test(l)).join('\n'));
  t.is(code, 0, output.slice(-4000));
  t.regex(output, /check-package: ok/);
});
