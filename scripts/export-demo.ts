/**
 * `npm run demo:export`: export ResNet-50-D to ONNX (FP32 and FP16) and check both in ONNX
 * Runtime against the tfjs model. The network is initialized trained-like (models/calibrate.ts) so the
 * check runs at ordinary logit magnitudes; pretrained weights come with `zoo pull` (see README).
 */
import { mkdirSync } from 'node:fs';
import { initBackend, describeBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/model.js';
import { trainedLikeInit } from '../src/models/calibrate.js';
import { exportOnnx } from '../src/onnx/export.js';
import { checkExport } from '../src/onnx/check.js';
import { describeCheck } from '../src/onnx/pipeline.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { fail } from '../zoo/run.js';

async function main(): Promise<void> {
  const info = await initBackend();
  console.log(describeBackend(info));
  const arch = process.argv[2] ?? 'resnet50d';
  const m = createModel(arch);
  await trainedLikeInit(m);
  const c = m.counts(224);
  console.log(`${arch}: ${c.params.toLocaleString('en-US')} parameters, ${(c.macs / 1e9).toFixed(2)} GFLOPs (multiply-adds) at 224x224`);
  mkdirSync('out', { recursive: true });
  for (const fp16 of [false, true]) {
    const t0 = performance.now();
    const bytes = await exportOnnx(m, { imageSize: 224, fp16 });
    const report = await checkExport(m, bytes, { imageSize: 224, batch: 4, fp16 });
    const file = `out/${arch}${fp16 ? '-fp16' : ''}.onnx`;
    if (!report.passed) throw new Error(`check failed for ${file}: ${describeCheck(report)}`);
    await writeFileAtomic(file, bytes);
    console.log(`${file}: ${(bytes.length / 1e6).toFixed(1)} MB, checked in ONNX Runtime (${report.provider}): ${describeCheck(report)} [${((performance.now() - t0) / 1000).toFixed(1)} s]`);
  }
  m.dispose();
}

main().catch(fail);
