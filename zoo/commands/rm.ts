import { existsSync } from 'node:fs';
import { Command } from 'commander';
import { removeCached, modelDir } from '../../src/hub/cache.js';
import { checkModelName } from '../../src/hub/local.js';
import { modelNames } from '../../src/hub/models_json.js';
import { hubSettings } from '../../src/hub/settings.js';
import { UserError } from '../../src/errors.js';
import { action } from '../run.js';

/** The cache names `name` may stand for: itself, and the published model it is a name or alias of. */
function candidates(name: string): string[] {
  const out = [name];
  try {
    const published = modelNames().get(name);
    if (published && published.name !== name) out.push(published.name);
  } catch {
    // A broken models.json must not keep a user from removing a model by its own name.
  }
  return out;
}

export function rmCommand(): Command {
  return new Command('rm')
    .description('remove a model (and its downloads) from the local cache')
    .argument('<name>', "a model in 'zoo list --local', or a models.json alias of it")
    .action(
      action(async (name: string) => {
        const settings = hubSettings();
        const names = candidates(name);
        const valid = names.filter((n) => {
          try {
            checkModelName(n);
            return true;
          } catch {
            return false;
          }
        });
        if (valid.length === 0) checkModelName(name);
        // The directory may hold a converted model or only downloads (a pull that never finished).
        const target = valid.find((n) => existsSync(modelDir(n, settings)));
        if (!target || !(await removeCached(target, settings))) {
          throw new UserError(`'${name}' is not in the cache (${modelDir(valid.at(-1)!, settings)}); see 'zoo list --local'`);
        }
        process.stdout.write(`removed ${target}\n`);
      }),
    );
}
