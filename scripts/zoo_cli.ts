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

/**
 * The demos' backbone: `arch` pretrained on Fashion-MNIST classification (the embedded subset) with
 * `zoo train`, added to the local zoo as `name`. Returns the seconds it took.
 */
export function pretrainFashionBackbone(zoo: (args: string[]) => string, o: { arch: string; name: string; epochs: string; out: string }): number {
  const t = performance.now();
  zoo([
    'train', o.arch,
    '--data', 'fashion',
    '--epochs', o.epochs,
    '--batch-size', '128',
    '--warmup', '1',
    '--image-size', '32',
    '--min-crop-area', '0.35',
    '--no-fp16',
    '--out', o.out,
    '--add-to-zoo', o.name,
    '--force',
  ]);
  return (performance.now() - t) / 1000;
}
