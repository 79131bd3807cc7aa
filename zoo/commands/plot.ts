import { Command } from 'commander';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { chartSvg, runPanels, writePng, PALETTE, type LinePanel } from '../../src/train/plot.js';
import { RUN_FILES, readEpochLog, scheduleOf, updatesPerEpoch, type EpochRecord, type TrainConfig } from '../../src/train/trainer.js';
import { UserError } from '../../src/errors.js';
import { readRunConfig } from '../../src/train/run_config.js';
import { action } from '../run.js';

/** Reads a log.jsonl (or the run directory holding one). */
export function readRunLog(target: string): { name: string; file: string; records: EpochRecord[]; config?: TrainConfig } {
  const file = existsSync(target) && !target.endsWith('.jsonl') && existsSync(path.join(target, RUN_FILES.log)) ? path.join(target, RUN_FILES.log) : target;
  if (!existsSync(file)) throw new UserError(`${target}: no such log (give a log.jsonl or a run directory)`, { exitCode: 2 });
  const records = readEpochLog(file);
  if (records.length === 0) throw new UserError(`${file} has no epochs logged yet`);
  const cfgFile = path.join(path.dirname(file), RUN_FILES.config);
  let config: TrainConfig | undefined;
  if (existsSync(cfgFile)) {
    try {
      config = readRunConfig(cfgFile);
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      // The configuration only adds the per-update learning rate: the log alone still draws.
      process.stderr.write(`zoo: warning: ${e.message}; the learning-rate panel shows the logged values\n`);
    }
  }
  return { name: path.basename(path.dirname(path.resolve(file))), file, records, ...(config ? { config } : {}) };
}

/** The learning rate of every update, from the run's configuration (x in epochs). */
function scheduleSeries(config: TrainConfig, upToEpoch: number, color: string, label: string) {
  const s = scheduleOf(config);
  const iters = updatesPerEpoch(config);
  const n = Math.min(s.total, iters * upToEpoch);
  const stride = Math.max(1, Math.floor(n / 600));
  const x: number[] = [];
  const y: number[] = [];
  for (let u = 0; u < n; u += stride) {
    x.push((u + 1) / iters);
    y.push(s.at(u));
  }
  return { label, x, y, color };
}

export function plotCommand(): Command {
  return new Command('plot')
    .description('draw the loss, accuracy and learning-rate curves of training runs to a PNG')
    .argument('<logs...>', 'log.jsonl files or run directories (several are overlaid)')
    .option('-o, --output <file>', 'PNG to write (default: curves.png beside the first log)')
    .option('--title <text>', 'title above the panels')
    .addHelpText(
      'after',
      `
Panels: training and validation loss, validation top-1 and top-5, and the learning rate (every update,
rebuilt from the run's run.json; the end-of-epoch values when only a log is given).

Examples:
  zoo plot runs/r18d
  zoo plot runs/baseline runs/best -o compare.png --title "baseline vs best"`,
    )
    .action(
      action(async (logs: string[], opts: { output?: string; title?: string }) => {
        const runs = logs.map(readRunLog);
        const panels = runPanels(runs);
        if (runs.every((r) => r.config)) {
          const lrPanel = panels[2] as LinePanel;
          lrPanel.title = 'Learning rate';
          lrPanel.series = runs.map((r, i) => scheduleSeries(r.config!, r.records.at(-1)!.epoch, PALETTE[i % PALETTE.length]!, runs.length > 1 ? r.name : ''));
        }
        const output = opts.output ?? path.join(path.dirname(runs[0]!.file), 'curves.png');
        if (!output.toLowerCase().endsWith('.png')) throw new UserError(`--output must end in .png, got '${output}'`, { exitCode: 2 });
        const title = opts.title ?? (runs.length === 1 ? `${runs[0]!.config?.arch ?? runs[0]!.name}${runs[0]!.config ? ` (${runs[0]!.config.recipe})` : ''}` : undefined);
        const png = await writePng(chartSvg(panels, { ...(title ? { title } : {}) }), output);
        process.stdout.write(`wrote ${output} (${png.width}x${png.height}, ${runs.reduce((a, r) => a + r.records.length, 0)} epochs)\n`);
      }),
    );
}
