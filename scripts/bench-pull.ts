/**
 * `npm run bench:pull`: `zoo pull` from a local HTTP server (127.0.0.1): download throughput with the
 * streaming sha256/sha1 on, and the time of each stage of a full pull of a ResNet-50-D-sized file
 * (download, conversion, ONNX export, ONNX Runtime check). Medians over runs; nothing leaves the machine.
 */
import http from 'node:http';
import crypto from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Command } from 'commander';
import { initBackend } from '../src/backend/index.js';
import { download } from '../src/hub/download.js';
import { pullModel } from '../src/hub/pull.js';
import { readHubSettings } from '../src/hub/settings.js';
import { createModel } from '../src/models/model.js';
import { serializeSafetensors } from '../src/formats/safetensors.js';
import { fail } from '../zoo/run.js';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** resnet50d's parameters in timm layout (random values: the pull does not care). */
function resnet50dSafetensors(): Buffer {
  const m = createModel('resnet50d');
  const tensors = new Map<string, { dtype: 'float32'; shape: number[]; data: Float32Array }>();
  for (const [name, spec] of m.params.specs) {
    const v = m.params.get(name).dataSync() as Float32Array;
    const shape = spec.shape.length === 4 ? [spec.shape[3]!, spec.shape[2]!, spec.shape[0]!, spec.shape[1]!] : spec.shape.length === 2 ? [spec.shape[1]!, spec.shape[0]!] : spec.shape;
    tensors.set(name, { dtype: 'float32', shape, data: v });
  }
  m.dispose();
  return Buffer.concat(serializeSafetensors(tensors));
}

async function main(): Promise<void> {
  const opts = new Command('bench-pull').option('--runs <n>', 'runs', (v) => Number(v), 5).parse(process.argv).opts<{ runs: number }>();
  await initBackend();
  const body = resnet50dSafetensors();
  const sha256 = crypto.createHash('sha256').update(body).digest('hex');
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream', 'x-linked-etag': `"${sha256}"` });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/timm/model.safetensors`;
  const root = mkdtempSync(join(tmpdir(), 'zoo-bench-pull-'));
  try {
    const mb = body.length / 1e6;
    console.log(`file: resnet50d in timm layout, ${mb.toFixed(1)} MB, served from 127.0.0.1`);
    const dl: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      const t = performance.now();
      const r = await download(url, join(root, `dl-${i}.safetensors`), { expected: { sha256 } });
      dl.push((performance.now() - t) / 1000);
      if (r.sha256 !== sha256) throw new Error('checksum mismatch');
    }
    console.log(`download with sha256 + sha1: ${(mb / median(dl)).toFixed(0)} MB/s (median of ${opts.runs}: ${(median(dl) * 1000).toFixed(0)} ms)`);
    const stages: number[] = [];
    for (let i = 0; i < Math.min(opts.runs, 3); i++) {
      const settings = readHubSettings({ ZOO_CACHE: join(root, `cache-${i}`) }, root);
      const entry = {
        name: 'resnet50d.bench',
        arch: 'resnet50d',
        numClasses: 1000,
        categories: null,
        sources: [{ format: 'safetensors' as const, naming: 'timm' as const, url, sha256 }],
        preprocessing: { inputSize: 224, resizeShorter: 256, crop: 224, interpolation: 'bicubic' as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
      };
      const t = performance.now();
      await pullModel(entry, { settings });
      stages.push((performance.now() - t) / 1000);
    }
    console.log(`full pull (download, verify, convert, export, check in ONNX Runtime): ${median(stages).toFixed(1)} s (median of ${stages.length})`);
  } finally {
    server.close();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch(fail);
