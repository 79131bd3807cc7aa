/**
 * The charts of `zoo plot` and the ablation: tick values, the legend's placement away from the curves,
 * escaping of labels, the PNG that comes out, and reading a run's files for it.
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { chartSvg, niceTicks, writePng, type Series } from '../src/train/plot.js';
import { readRunLog } from '../zoo/commands/plot.js';
import { UserError } from '../src/errors.js';

test('niceTicks: round steps of 1, 2 or 5 that cover the range', (t) => {
  t.deepEqual(niceTicks(0, 1).map((v) => +v.toFixed(9)), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  for (const [lo, hi] of [
    [0.1, 0.83],
    [3, 917],
    [-2.5, 7.1],
    [1e-5, 3e-4],
  ] as const) {
    const ticks = niceTicks(lo, hi);
    const step = ticks[1]! - ticks[0]!;
    const mantissa = step / 10 ** Math.floor(Math.log10(step));
    t.true([1, 2, 5, 10].some((m) => Math.abs(mantissa - m) < 1e-6), `step ${step} for [${lo}, ${hi}]`);
    t.true(ticks[0]! >= lo - 1e-12 && ticks[0]! - step < lo, `first tick ${ticks[0]} starts at the range`);
    t.true(ticks.at(-1)! <= hi + 1e-12 && ticks.at(-1)! + step > hi, `last tick ${ticks.at(-1)} ends at the range`);
    t.true(ticks.length >= 3 && ticks.length <= 11);
  }
  // A flat series still gets an axis.
  t.true(niceTicks(0.5, 0.5).length >= 2);
});

/** The legend box's top left corner in the one-panel chart. */
function legendBox(svg: string): { x: number; y: number } {
  const m = /<rect x="([\d.]+)" y="([\d.]+)" width="[\d.]+" height="[\d.]+" fill="white" fill-opacity="0.85"/.exec(svg);
  if (!m) throw new Error('no legend in the chart');
  return { x: Number(m[1]), y: Number(m[2]) };
}

test('the legend goes to the corner the curves leave free', (t) => {
  const x = Array.from({ length: 20 }, (_, i) => i + 1);
  const rising: Series[] = [
    { label: 'top-1', x, y: x.map((e) => 1 - 0.9 * Math.exp(-e / 3)), color: '#000' },
    { label: 'top-5', x, y: x.map((e) => 1 - 0.5 * Math.exp(-e / 3)), color: '#111' },
  ];
  const falling: Series[] = rising.map((s) => ({ ...s, y: s.y.map((v) => 1 - v) }));
  const chart = (series: Series[]) => chartSvg([{ kind: 'lines', title: 'accuracy', xLabel: 'epoch', series }], { panelWidth: 400, panelHeight: 300 });
  const up = legendBox(chart(rising));
  const down = legendBox(chart(falling));
  // Rising curves fill the top right: the legend sits low. Falling ones fill the top left and bottom right.
  t.true(up.y > 150, `legend of rising curves at y ${up.y}`);
  t.true(down.x > 200 && down.y < 100, `legend of falling curves at (${down.x}, ${down.y})`);
});

test('labels are escaped and the chart renders to a PNG of the stated size', async (t) => {
  const svg = chartSvg(
    [
      { kind: 'lines', title: 'loss <train & val>', xLabel: 'epoch', series: [{ label: 'a"b', x: [1, 2, 3], y: [3, 2, 1], color: '#f00' }], logY: true },
      { kind: 'dots', title: 'final', xLabel: 'top-1', percent: true, rows: [{ label: 'row <1>', mean: 0.5, lo: 0.4, hi: 0.6 }] },
    ],
    { title: 'A & B', panelWidth: 300, panelHeight: 200 },
  );
  t.false(/<train|& val|row <1>|a"b/.test(svg));
  t.true(svg.includes('loss &lt;train &amp; val&gt;') && svg.includes('a&quot;b') && svg.includes('A &amp; B'));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-plot-'));
  try {
    const file = path.join(dir, 'chart.png');
    const r = await writePng(svg, file);
    // Rendered at 96 dpi: 4/3 of the SVG's 600x230 points, for sharp text.
    t.deepEqual([r.width, r.height], [800, 307]);
    const meta = await sharp(file).metadata();
    t.is(meta.format, 'png');
    t.deepEqual([meta.width, meta.height], [r.width, r.height]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("zoo plot's reader: a log line that is not an epoch record names the file and line; a corrupt run.json only costs the per-update rate", (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'zoo-plot-'));
  try {
    const log = path.join(dir, 'log.jsonl');
    writeFileSync(log, '{"epoch": 1, "loss": 2.3, "valTop1": 0.1, "valTop5": 0.5, "valLoss": 2.2, "lr": 0.1}\nnull\n');
    t.throws(() => readRunLog(dir), { instanceOf: UserError, message: /log\.jsonl:2: not an epoch record/ });
    writeFileSync(log, '{"epoch": 1, "loss": 2.3, "valTop1": 0.1, "valTop5": 0.5, "valLoss": 2.2, "lr": 0.1}\n');
    writeFileSync(path.join(dir, 'run.json'), '{"arch": ');
    const warnings: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (warnings.push(String(s)), true)) as typeof process.stderr.write;
    let run;
    try {
      run = readRunLog(dir);
    } finally {
      process.stderr.write = write;
    }
    t.is(run.records.length, 1);
    t.is(run.config, undefined);
    t.regex(warnings.join(''), /warning: .*run\.json: not JSON .*the learning-rate panel shows the logged values/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
