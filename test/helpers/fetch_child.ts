/**
 * Child process for the concurrent-pull test: fetches one file into the cache named by ZOO_CACHE and
 * prints JSON lines (`waiting` when it finds the model locked, then `done` or `error`).
 * Usage: node fetch_child.js <url> <model name> <file name> <sha256>
 */
import { fetchFile } from '../../src/hub/cache.js';
import { readHubSettings } from '../../src/hub/settings.js';

const [url, name, fileName, sha256] = process.argv.slice(2);
const say = (value: object): void => {
  process.stdout.write(`${JSON.stringify(value)}\n`);
};

try {
  const r = await fetchFile({
    name: name!,
    fileName: fileName!,
    sources: [url!],
    expected: { sha256: sha256! },
    settings: readHubSettings(process.env),
    transfer: { backoffMs: 5, timeoutMs: 10_000 },
    lock: { timeoutMs: 20_000, onWait: (holder) => say({ event: 'waiting', holder: holder?.pid }) },
  });
  say({ event: 'done', pid: process.pid, fromCache: r.fromCache, sha256: r.entry.sha256 });
} catch (err) {
  say({ event: 'error', message: (err as Error).message });
  process.exitCode = 1;
}
