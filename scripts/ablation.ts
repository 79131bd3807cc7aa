/**
 * The paper's Table 4 / Table 6 ablation at a scale two cores can run: a reduced ResNet-50-D
 * (`resnet50d_small`, a quarter of the width) on Fashion-MNIST, starting from the baseline recipe and
 * adding one trick per row, each row trained with several seeds.
 *
 *   baseline            batch B, lr 0.1 (not scaled), NAG, weight decay on everything, step decay
 *   + linear scaling    lr = 0.1 x B / 256
 *   + warmup            linear warmup over the first epoch
 *   + zero gamma
 *   + no bias decay
 *   + cosine decay
 *   + label smoothing   eps 0.1
 *   + mixup             alpha 0.2
 *   + distillation      T 20, from a ResNet-18-D teacher trained first by this script (best recipe)
 *   + FP16              mixed precision: bf16 convolutions on the native kernels, only where the CPU
 *                       computes bf16 (AMX or AVX512-BF16); elsewhere the row is left out, saying why
 *
 * Writes <out>/results.json, <out>/ablation.md (mean, standard deviation and range of the final
 * validation top-1 and top-5 over the seeds, and the change from the row above) and <out>/ablation.png.
 * Every run is a normal `zoo train` run directory under <out>/runs, so an interrupted ablation picks
 * up where it stopped when started again with the same options.
 *
 *   npm run build && node dist/scripts/ablation.js [--data /usr/share/datasets/fashion-mnist]
 *     [--limit-train 8000] [--limit-val 2000] [--epochs 10] [--batch-size 512] [--micro-batch 128]
 *     [--seeds 0,1,2] [--rows all] [--out ablation]
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { initBackend, describeBackend, setMixedPrecision } from '../src/backend/index.js';
import { openTrainingData, type TrainingData } from '../src/train/data.js';
import { datasetSize } from '../src/data/dataset.js';
import { RECIPES, type Tricks } from '../src/train/recipes.js';
import { train, RUN_FILES, readEpochLog, type EpochRecord, type TrainConfig, type TrainEvent } from '../src/train/trainer.js';
import { loadTeacher, type Teacher } from '../src/train/teacher.js';
import { chartSvg, writePng, PALETTE, type Series } from '../src/train/plot.js';
import { formatDuration } from '../src/train/progress.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { fail, table } from '../zoo/run.js';

const DEBIAN_FASHION = '/usr/share/datasets/fashion-mnist';

interface Row {
  key: string;
  label: string;
  tricks: Partial<Tricks>;
}

const ROWS: Row[] = [
  { key: 'baseline', label: 'baseline', tricks: {} },
  { key: 'linear-scaling', label: '+ linear scaling', tricks: { linearScaling: true } },
  { key: 'warmup', label: '+ warmup', tricks: { warmupEpochs: 1 } },
  { key: 'zero-gamma', label: '+ zero gamma', tricks: { zeroGamma: true } },
  { key: 'no-bias-decay', label: '+ no bias decay', tricks: { noBiasDecay: true } },
  { key: 'fp16', label: '+ FP16 (bf16)', tricks: { fp16: true } },
  { key: 'cosine', label: '+ cosine decay', tricks: { cosine: true } },
  { key: 'label-smoothing', label: '+ label smoothing', tricks: { labelSmoothing: 0.1 } },
  { key: 'mixup', label: '+ mixup', tricks: { mixup: 0.2 } },
  { key: 'distill', label: '+ distillation', tricks: { distill: true, temperature: 20 } },
];

interface RunOutcome {
  row: string;
  seed: number;
  records: EpochRecord[];
  seconds: number;
}

function stats(xs: number[]) {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std, min: Math.min(...xs), max: Math.max(...xs), n };
}

/** Trains one configuration in `dir`, resuming or skipping it when an earlier invocation got there. */
async function runOnce(config: TrainConfig, data: TrainingData, dir: string, teacher: Teacher | undefined, label: string, exportOnnx = false): Promise<RunOutcome['records']> {
  const done = readEpochLog(path.join(dir, RUN_FILES.log));
  if (done.length >= config.epochs && (!exportOnnx || existsSync(path.join(dir, RUN_FILES.onnx)))) {
    console.log(`${label}: done earlier (val top-1 ${(100 * done.at(-1)!.valTop1).toFixed(2)}%)`);
    return done;
  }
  // A run with every epoch logged but no ONNX file (killed while exporting) resumes straight to the export.
  const resume = existsSync(path.join(dir, RUN_FILES.checkpoint));
  const onEvent = (e: TrainEvent) => {
    if (e.type === 'epoch') {
      const r = e.record;
      console.log(`${label} epoch ${r.epoch}/${e.epochs}: loss ${r.loss.toFixed(4)}, val top-1 ${(100 * r.valTop1).toFixed(2)}%, ${r.imagesPerSecond.toFixed(0)} img/s`);
    } else if (e.type === 'notice') console.log(`${label}: note: ${e.message}`);
  };
  const r = await train({ config, data, outDir: dir, resume, export: exportOnnx, ...(teacher ? { teacher } : {}), onEvent });
  r.model.dispose();
  return r.records;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      data: { type: 'string' },
      'limit-train': { type: 'string', default: '8000' },
      'limit-val': { type: 'string', default: '2000' },
      arch: { type: 'string', default: 'resnet50d_small' },
      epochs: { type: 'string', default: '10' },
      'batch-size': { type: 'string', default: '512' },
      'micro-batch': { type: 'string', default: '128' },
      'image-size': { type: 'string', default: '32' },
      'min-crop-area': { type: 'string', default: '0.35' },
      seeds: { type: 'string', default: '0,1,2' },
      rows: { type: 'string', default: 'all' },
      'teacher-arch': { type: 'string', default: 'resnet18d' },
      'teacher-epochs': { type: 'string', default: '' },
      out: { type: 'string', default: 'ablation' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(readFileSync(new URL(import.meta.url), 'utf8').split('*/')[0]);
    return;
  }
  const dataSpec = values.data ?? (existsSync(DEBIAN_FASHION) ? DEBIAN_FASHION : 'fashion');
  const epochs = Number(values.epochs);
  const seeds = values.seeds!.split(',').map(Number);
  const picked = values.rows === 'all' ? ROWS : ROWS.filter((r) => values.rows!.split(',').includes(r.key));
  if (picked.length === 0) throw new Error(`--rows: none of ${values.rows} is a row (${ROWS.map((r) => r.key).join(', ')})`);
  const out = values.out!;

  const info = await initBackend({ purpose: 'training' });
  console.log(describeBackend(info));
  // The FP16 row runs only where it computes in bf16; elsewhere it would repeat the row above.
  const mixed = setMixedPrecision(true);
  setMixedPrecision(false);
  const skipped = mixed.bf16 ? [] : ROWS.filter((r) => r.tricks.fp16);
  if (!mixed.bf16 && picked.some((r) => r.tricks.fp16)) console.log(`+ FP16: left out: ${mixed.reason}`);
  const rows = picked.filter((r) => !skipped.includes(r));
  if (rows.length === 0) throw new Error('--rows: no row left to run');
  const data = await openTrainingData(dataSpec, {
    ...(dataSpec !== 'fashion' ? { limitTrain: Number(values['limit-train']), limitVal: Number(values['limit-val']) } : {}),
  });
  const base = {
    arch: values.arch!,
    recipe: 'baseline' as const,
    epochs,
    batchSize: Number(values['batch-size']),
    microBatch: Number(values['micro-batch']),
    imageSize: Number(values['image-size']),
    baseLr: RECIPES.baseline.baseLr,
    momentum: RECIPES.baseline.momentum,
    nesterov: RECIPES.baseline.nesterov,
    weightDecay: RECIPES.baseline.weightDecay,
    minCropArea: Number(values['min-crop-area']),
    data: { spec: dataSpec, train: datasetSize(data.train), val: datasetSize(data.val), classes: data.classes },
  };
  console.log(
    `ablation: ${base.arch} on ${dataSpec} (${base.data.train} train / ${base.data.val} val images, ${base.imageSize}x${base.imageSize}), ` +
      `${epochs} epochs, batch ${base.batchSize} (${base.batchSize / base.microBatch} x ${base.microBatch}), seeds ${seeds.join(',')}, rows: ${rows.map((r) => r.key).join(', ')}`,
  );
  const t0 = performance.now();

  // The teacher for the distillation row: trained once, best recipe without distillation.
  let teacher: Teacher | undefined;
  let teacherRecord: EpochRecord | undefined;
  if (rows.some((r) => r.tricks.distill)) {
    const tdir = path.join(out, 'teacher');
    const tEpochs = Number(values['teacher-epochs'] || epochs);
    const tconfig: TrainConfig = {
      ...base,
      arch: values['teacher-arch']!,
      recipe: 'best',
      tricks: { ...RECIPES.best.tricks, distill: false, fp16: false, warmupEpochs: 1 },
      epochs: tEpochs,
      seed: 0,
    };
    const recs = await runOnce(tconfig, data, tdir, undefined, `teacher ${tconfig.arch}`, true);
    teacherRecord = recs.at(-1);
    teacher = await loadTeacher(path.join(tdir, RUN_FILES.onnx), { numClasses: data.classes.length });
  }

  const outcomes: RunOutcome[] = [];
  let tricks: Tricks = { ...RECIPES.baseline.tricks };
  for (const row of ROWS) {
    if (skipped.includes(row)) continue;
    tricks = { ...tricks, ...row.tricks };
    if (!rows.includes(row)) continue;
    for (const seed of seeds) {
      const dir = path.join(out, 'runs', `${String(ROWS.indexOf(row)).padStart(2, '0')}-${row.key}-seed${seed}`);
      const config: TrainConfig = { ...base, tricks: { ...tricks }, seed, ...(tricks.distill ? { teacher: 'ablation teacher' } : {}) };
      const s0 = performance.now();
      const records = await runOnce(config, data, dir, tricks.distill ? teacher : undefined, `${row.label} seed ${seed}`);
      outcomes.push({ row: row.key, seed, records, seconds: (performance.now() - s0) / 1000 });
    }
  }
  await teacher?.dispose();

  // Table.
  const summary = rows.map((row) => {
    const runs = outcomes.filter((o) => o.row === row.key);
    return {
      key: row.key,
      label: row.label,
      top1: stats(runs.map((r) => r.records.at(-1)!.valTop1)),
      top5: stats(runs.map((r) => r.records.at(-1)!.valTop5)),
      loss: stats(runs.map((r) => r.records.at(-1)!.valLoss)),
      curves: runs.map((r) => r.records.map((x) => x.valTop1)),
    };
  });
  const pct = (v: number) => (100 * v).toFixed(2);
  const rowsOut = summary.map((s, i) => [
    s.label,
    `${pct(s.top1.mean)} ± ${pct(s.top1.std)}`,
    `${pct(s.top1.min)}-${pct(s.top1.max)}`,
    i === 0 ? '' : `${s.top1.mean >= summary[i - 1]!.top1.mean ? '+' : ''}${pct(s.top1.mean - summary[i - 1]!.top1.mean)}`,
    `${pct(s.top5.mean)} ± ${pct(s.top5.std)}`,
    s.loss.mean.toFixed(4),
  ]);
  const header = ['row', 'top-1 % (mean ± sd)', 'top-1 range', 'change', 'top-5 %', 'val loss'];
  const md = [
    `# Ablation: ${base.arch} on ${dataSpec}`,
    '',
    `${base.data.train} training and ${base.data.val} validation images at ${base.imageSize}x${base.imageSize}; ${epochs} epochs; ` +
      `batch ${base.batchSize} (${base.batchSize / base.microBatch} accumulated micro-batches of ${base.microBatch}); seeds ${seeds.join(', ')}; ` +
      `final-epoch validation accuracy. Each row adds one trick to the row above.` +
      (teacherRecord ? ` Teacher: ${values['teacher-arch']}, best recipe without distillation, val top-1 ${pct(teacherRecord.valTop1)}%.` : ''),
    '',
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rowsOut.map((r) => `| ${r.join(' | ')} |`),
    '',
    mixed.bf16 ? 'FP16 is bf16 compute with float32 master weights on the native kernels.' : `FP16 (Table 4) has no row here: ${mixed.reason}.`,
    '',
  ].join('\n');
  await writeFileAtomic(path.join(out, 'ablation.md'), md);
  await writeFileAtomic(
    path.join(out, 'results.json'),
    JSON.stringify({ date: new Date().toISOString(), config: { ...base, seeds }, teacher: teacherRecord ?? null, summary, runs: outcomes }, null, 2),
  );

  // Plot: final top-1 per row (mean, range), and the mean validation curve of each row.
  const curves: Series[] = summary.map((s, i) => {
    const len = Math.min(...s.curves.map((c) => c.length));
    return {
      label: s.label,
      x: Array.from({ length: len }, (_, e) => e + 1),
      y: Array.from({ length: len }, (_, e) => s.curves.reduce((a, c) => a + c[e]!, 0) / s.curves.length),
      color: PALETTE[i % PALETTE.length]!,
    };
  });
  const png = path.join(out, 'ablation.png');
  await writePng(
    chartSvg(
      [
        { kind: 'dots', title: `Final validation top-1 (mean and range over ${seeds.length} seeds)`, xLabel: 'top-1', percent: true, rows: summary.map((s) => ({ label: s.label, mean: s.top1.mean, lo: s.top1.min, hi: s.top1.max })) },
        { kind: 'lines', title: 'Validation top-1 by epoch (mean over seeds)', xLabel: 'epoch', percent: true, series: curves },
      ],
      { title: `Bag of tricks, one at a time: ${base.arch} on Fashion-MNIST`, panelWidth: 620, panelHeight: 420 },
    ),
    png,
  );
  console.log(`\n${table(rowsOut, header)}\n`);
  console.log(`wrote ${path.join(out, 'ablation.md')}, ${path.join(out, 'results.json')}, ${png} in ${formatDuration((performance.now() - t0) / 1000)}`);
}

main().catch(fail);
