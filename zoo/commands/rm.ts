import { Command } from 'commander';
import { removeCached, modelDir } from '../../src/hub/cache.js';
import { findLocalModel, checkModelName } from '../../src/hub/local.js';
import { UserError } from '../../src/errors.js';
import { action } from '../run.js';

export function rmCommand(): Command {
  return new Command('rm')
    .description('remove a model (and its downloads) from the local cache')
    .argument('<name>', "a model in 'zoo list --local', or a models.json alias of it")
    .action(
      action(async (name: string) => {
        const local = await findLocalModel(name);
        const target = local?.name ?? name;
        checkModelName(target);
        if (!(await removeCached(target))) throw new UserError(`'${name}' is not in the cache (${modelDir(target)}); see 'zoo list --local'`);
        process.stdout.write(`removed ${target}\n`);
      }),
    );
}
