import { existsSync } from 'node:fs';
import { Command } from 'commander';
import { removeCached, modelDir } from '../../src/hub/cache.js';
import { checkModelName } from '../../src/hub/local.js';
import { findPublished } from '../../src/hub/models_json.js';
import { describeLockHolder, formatWait } from '../../src/hub/lock.js';
import { hubSettings } from '../../src/hub/settings.js';
import { UserError } from '../../src/errors.js';
import { action } from '../run.js';

/** The cache names `name` may stand for: itself, and the published model it names (a name, alias or timm id, as `zoo pull` reads it). */
function candidates(name: string): string[] {
  const out = [name];
  try {
    const published = findPublished(name)?.entry;
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
        // A pull of the model in progress holds its lock: say whose it is while waiting for it.
        const onWait = (holder: Parameters<typeof describeLockHolder>[0], waitedMs: number) => process.stderr.write(
          waitedMs === 0
            ? `${target} is locked by ${describeLockHolder(holder)} (a pull in progress?); waiting for it to finish before removing\n`
            : `still waiting for the lock on ${target}, held by ${describeLockHolder(holder)}: ${formatWait(waitedMs)} so far\n`,
        );
        if (!target || !(await removeCached(target, settings, { onWait }))) {
          throw new UserError(`'${name}' is not in the cache (${modelDir(valid.at(-1)!, settings)}); see 'zoo list --local'`);
        }
        process.stdout.write(`removed ${target}\n`);
      }),
    );
}
