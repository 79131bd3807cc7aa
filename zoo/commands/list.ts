import { Command } from 'commander';
import { listModels, getModelEntry } from '../../src/models/registry.js';
import { ResNet } from '../../src/models/resnet.js';
import { countNetwork } from '../../src/models/count.js';
import { action, table } from '../run.js';

export function listCommand(): Command {
  return new Command('list')
    .description('list the model architectures zoo can build')
    .argument('[patterns...]', "glob patterns to filter names, e.g. 'resnet50*'")
    .option('--json', 'print JSON instead of a table')
    .addHelpText(
      'after',
      `
Names follow the paper: resnet50 is the original ResNet-50 (A), resnet50b/c/d its tweaks,
resnet50s/e GluonCV's v1s/v1e. (torchvision's and timm's "resnet50" is zoo's resnet50b.)

Examples:
  zoo list
  zoo list 'resnet50*' 'resnet152*'
  zoo list --json`,
    )
    .action(
      action((patterns: string[], opts: { json?: boolean }) => {
        const names = listModels(patterns.length ? { include: patterns } : {});
        const rows = names.map((name) => {
          const e = getModelEntry(name);
          const c = countNetwork(new ResNet(e.config), 224);
          return { name, params: c.params, gmacs: c.macs / 1e9, description: e.description };
        });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (!rows.length) {
          process.stdout.write(`no model matches ${patterns.map((p) => `'${p}'`).join(' ')}\n`);
          process.exitCode = 1;
          return;
        }
        process.stdout.write(
          `${table(
            rows.map((r) => [r.name, `${(r.params / 1e6).toFixed(2)}M`, r.gmacs.toFixed(2), r.description]),
            ['name', 'params', 'GMACs@224', 'description'],
          )}\n`,
        );
      }),
    );
}
