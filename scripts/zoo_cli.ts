/**
 * The demo scripts run the `zoo` command line as a user does, printing each command first so that it
 * can be copied.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const zooBin = fileURLToPath(new URL('../zoo/index.js', import.meta.url));

/** A `zoo(args, capture)` for `script`: runs the command, exits the script if it fails; with capture, returns its stdout. */
export function zooRunner(script: string): (args: string[], capture?: boolean) => string {
  return (args, capture = false) => {
    process.stdout.write(`\n$ zoo ${args.map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n`);
    const r = spawnSync(process.execPath, [zooBin, ...args], { stdio: capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', encoding: 'utf8' });
    if (r.status !== 0) {
      process.stderr.write(`${script}: 'zoo ${args[0]}' failed (exit ${r.status ?? r.signal})\n`);
      process.exit(r.status ?? 1);
    }
    return capture ? r.stdout : '';
  };
}
