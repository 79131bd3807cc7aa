import { Command } from 'commander';
import { listModels, getModelEntry } from '../../src/models/registry.js';
import { ResNet } from '../../src/models/resnet.js';
import { countNetwork } from '../../src/models/count.js';
import { loadModelsJson } from '../../src/hub/models_json.js';
import { listLocal } from '../../src/hub/local.js';
import { hubSettings } from '../../src/hub/settings.js';
import { action, table } from '../run.js';

function globMatch(patterns: string[], ...names: string[]): boolean {
  if (!patterns.length) return true;
  const res = patterns.map((g) => new RegExp(`^${g.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`));
  return names.some((n) => res.some((r) => r.test(n)));
}

/** Hosts as the published table names them (its width is 100 columns). */
const HOST_SHORT: Record<string, string> = { huggingface: 'hf', gluoncv: 'gluon', torchvision: 'tv' };

async function listPublished(patterns: string[], json: boolean): Promise<void> {
  const models = loadModelsJson().models.filter((m) => globMatch(patterns, m.name, ...(m.aliases ?? [])));
  if (json) {
    process.stdout.write(`${JSON.stringify(models, null, 2)}\n`);
    return;
  }
  const rows = models.map((m) => {
    const top1 = Math.max(...(m.metrics ?? []).map((x) => x.top1 ?? -1));
    return [m.name, m.arch, top1 > 0 ? top1.toFixed(2) : '-', m.sources.map((s) => HOST_SHORT[s.host] ?? s.host).join('>'), (m.aliases ?? []).join(', ')];
  });
  process.stdout.write(`${table(rows, ['name', 'arch', 'top-1', 'sources', 'aliases'])}\n`);
  process.stdout.write(`\nsources: hf = huggingface.co (timm), gluon = GluonCV's model store, tv = download.pytorch.org.\n'zoo pull <name or alias>' downloads, converts and checks one (it needs the hosts or a mirror);\n'zoo info <name>' shows its sources, checksums, timm id and metrics.\n`);
}

async function listLocalModels(patterns: string[], json: boolean): Promise<void> {
  const models = (await listLocal()).filter((m) => globMatch(patterns, m.name));
  if (json) {
    process.stdout.write(`${JSON.stringify(models, null, 2)}\n`);
    return;
  }
  if (!models.length) {
    process.stdout.write(`the cache (${hubSettings().cacheDir}) holds no model yet; see 'zoo pull --help'\n`);
    return;
  }
  const rows = models.map((m) => [m.name, m.arch ?? '-', m.converted ? 'yes' : 'no (download only)', `${(m.bytes / 1e6).toFixed(1)} MB`, m.source ?? '-']);
  process.stdout.write(`${table(rows, ['name', 'arch', 'converted', 'size', 'source'])}\ncache: ${hubSettings().cacheDir}\n`);
}

export function listCommand(): Command {
  return new Command('list')
    .description('list the model architectures zoo can build')
    .argument('[patterns...]', "glob patterns to filter names, e.g. 'resnet50*'")
    .option('--published', 'pretrained models of models.json (zoo pull can fetch them)')
    .option('--local', 'models in the local cache: pulled, imported or trained')
    .option('--json', 'print JSON instead of a table')
    .addHelpText(
      'after',
      `
Names follow the paper: resnet50 is the original ResNet-50 (A), resnet50b/c/d its tweaks,
resnet50s/e GluonCV's v1s/v1e. (torchvision's and timm's "resnet50" is zoo's resnet50b.)

Examples:
  zoo list
  zoo list 'resnet50*' 'resnet152*'
  zoo list --published
  zoo list --local --json`,
    )
    .action(
      action(async (patterns: string[], opts: { json?: boolean; published?: boolean; local?: boolean }) => {
        if (opts.published) return listPublished(patterns, opts.json ?? false);
        if (opts.local) return listLocalModels(patterns, opts.json ?? false);
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
