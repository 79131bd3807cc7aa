/**
 * What `zoo serve` serves: model arguments (name=ref, files, local zoo names), a graph that is no zoo
 * task (protocol endpoints only, several inputs, INT64 and BOOL tensors), and the precision chosen for a
 * pulled model with an FP16 variant (FP32 on the CPU under auto, FP16 when asked), pulled from a server
 * on 127.0.0.1 as a user's would be.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../src/serve/server.js';
import { noFp16Variant, parseModelSpec } from '../src/serve/model.js';
import { writeTritonRepository } from '../src/serve/triton.js';
import { decodeInferResponse, encodeInferRequest } from '../src/serve/protocol.js';
import { OnnxBuilder, encodeModel } from '../src/onnx/export.js';
import { DataType, node, valueInfo } from '../src/onnx/proto.js';
import { UserError } from '../src/errors.js';
import { cudaReadiness } from '../src/runtime/cuda.js';
import { pull, readHubSettings, createModel, trainedLikeInit } from '../src/index.js';
import { FixtureServer } from './helpers/http_server.js';
import { safetensorsBytes, torchStateDict } from './helpers/weights_fixtures.js';
import { fixtureBase, pinnedSafetensors } from './helpers/models_json_fixture.js';
import { setupBackend } from './helpers/backend.js';
import { writeClassifier } from './helpers/serve_models.js';

const dir = mkdtempSync(join(tmpdir(), 'zoo-serve-models-'));

/** sum = a + b, bigger = a > b, count = Cast(bigger, INT64): [batch, 3] each. */
function tensorGraph(file: string): string {
  const b = new OnnxBuilder(() => new Float32Array(0), { foldBatchNorm: false, fp16: false, epsilon: 1e-5 });
  b.nodes.push(node('Add', ['a', 'b'], ['sum'], 'add'), node('Greater', ['a', 'b'], ['bigger'], 'greater'), node('Cast', ['bigger'], ['count'], 'cast', { to: DataType.INT64 }));
  writeFileSync(
    file,
    encodeModel({
      name: 'tensors',
      builder: b,
      inputs: [valueInfo('a', DataType.FLOAT, ['batch', 3]), valueInfo('b', DataType.FLOAT, ['batch', 3])],
      outputs: [valueInfo('sum', DataType.FLOAT, ['batch', 3]), valueInfo('bigger', DataType.BOOL, ['batch', 3]), valueInfo('count', DataType.INT64, ['batch', 3])],
      metadata: {},
    }),
  );
  return file;
}

test.before(async () => {
  await setupBackend();
});

test.after.always(() => {
  delete process.env.ZOO_MODELS_JSON;
  rmSync(dir, { recursive: true, force: true });
});

test('model arguments: name=ref, a file by its base name, a name by itself; bad names are usage errors', (t) => {
  t.deepEqual(parseModelSpec('cls=runs/a/model.onnx'), { name: 'cls', ref: 'runs/a/model.onnx' });
  t.deepEqual(parseModelSpec('models/resnet.v2.onnx'), { name: 'resnet.v2', ref: 'models/resnet.v2.onnx' });
  t.deepEqual(parseModelSpec('resnet50d-best'), { name: 'resnet50d-best', ref: 'resnet50d-best' });
  for (const bad of ['a b=x.onnx', '../x=y.onnx', '-x=m.onnx', 'na/me=m.onnx']) {
    const e = t.throws(() => parseModelSpec(bad), { instanceOf: UserError }, bad);
    t.regex(e!.message, /cannot be a model name \(a URL path segment of zoo serve, a directory of a Triton repository\)/, bad);
  }
  t.throws(() => parseModelSpec('x='), { message: /nothing after '='/ });
});

test('two models under one name, no models, or a model that is not there: clear errors before listening', async (t) => {
  const f = await writeClassifier(join(dir, 'm.onnx'));
  await t.throwsAsync(startServer([f, `m=${f}`], { port: 0, log: false }), { instanceOf: UserError, message: /two models would be served as 'm'/ });
  await t.throwsAsync(startServer([], { port: 0, log: false }), { instanceOf: UserError, message: /at least one model/ });
  await t.throwsAsync(startServer([join(dir, 'nope.onnx')], { port: 0, log: false }), { instanceOf: UserError, message: /nope\.onnx/ });
  await t.throwsAsync(startServer(['no-such-model-here'], { port: 0, log: false }), { instanceOf: UserError });
  await t.throwsAsync(startServer([f], { port: 0, log: false, maxBatch: 0 }), { instanceOf: UserError, message: /--max-batch must be an integer of at least 1/ });
});

test('a graph of no zoo task is served on the protocol: several inputs, FP32, BOOL and INT64 tensors, combined runs', async (t) => {
  const server = await startServer([tensorGraph(join(dir, 'tensors.onnx'))], { port: 0, device: 'cpu', log: false, maxDelayMs: 300 });
  try {
    t.deepEqual(server.models.map((m) => [m.name, m.task, m.maxBatch]), [['tensors', 'tensor', 32]]);
    const meta = (await (await fetch(`${server.url}/v2/models/tensors`)).json()) as Record<string, any>;
    t.deepEqual(meta.outputs, [
      { name: 'sum', datatype: 'FP32', shape: [-1, 3] },
      { name: 'bigger', datatype: 'BOOL', shape: [-1, 3] },
      { name: 'count', datatype: 'INT64', shape: [-1, 3] },
    ]);
    const send = async (a: number[], b: number[], binary: boolean) => {
      const req = encodeInferRequest(
        [
          { name: 'a', datatype: 'FP32', shape: [a.length / 3, 3], data: Float32Array.from(a) },
          { name: 'b', datatype: 'FP32', shape: [b.length / 3, 3], data: Float32Array.from(b) },
        ],
        { binary },
      );
      const r = await fetch(`${server.url}/v2/models/tensors/infer`, { method: 'POST', body: new Uint8Array(req.body), headers: req.headers });
      const body = Buffer.from(await r.arrayBuffer());
      t.is(r.status, 200, body.toString().slice(0, 200));
      return decodeInferResponse(body, r.headers.get('inference-header-content-length'));
    };
    const [x, y] = await Promise.all([send([1, 2, 3], [3, 2, 1], true), send([0, 5, -1, 4, 4, 4], [1, 1, 1, 4, 5, 3], false)]);
    t.deepEqual(Array.from(x.outputs.sum!.data as Float32Array), [4, 4, 4]);
    t.deepEqual(Array.from(x.outputs.bigger!.data as Uint8Array), [0, 0, 1]);
    t.deepEqual(Array.from(x.outputs.count!.data as BigInt64Array), [0n, 0n, 1n]);
    t.deepEqual(y.outputs.bigger!.shape, [2, 3]);
    t.deepEqual(Array.from(y.outputs.count!.data as BigInt64Array), [0n, 1n, 0n, 0n, 0n, 1n]);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    t.regex(metrics, /zoo_batch_size_count\{model="tensors"\} 1\n/, 'the two requests ran as one');
    t.regex(metrics, /zoo_batch_size_sum\{model="tensors"\} 3\n/);
    const json = (await (await fetch(`${server.url}/v2/models/tensors/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'a', shape: [1, 3], datatype: 'FP32', data: [1, 1, 1] }, { name: 'b', shape: [1, 3], datatype: 'FP32', data: [0, 1, 2] }] }) })).json()) as Record<string, any>;
    t.deepEqual(json.outputs.find((o: { name: string }) => o.name === 'bigger').data, [true, false, false], 'BOOL as JSON booleans');
    const missing = await fetch(`${server.url}/v2/models/tensors/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'a', shape: [1, 3], datatype: 'FP32', data: [1, 1, 1] }] }) });
    t.is(missing.status, 400);
    t.regex(((await missing.json()) as { error: string }).error, /needs input 'b'/);
    const rows = await fetch(`${server.url}/v2/models/tensors/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'a', shape: [1, 3], datatype: 'FP32', data: [1, 1, 1] }, { name: 'b', shape: [2, 3], datatype: 'FP32', data: [0, 1, 2, 3, 4, 5] }] }) });
    t.is(rows.status, 400);
    t.regex(((await rows.json()) as { error: string }).error, /disagree on the batch size \(1 vs 2\)/);
    const task = await fetch(`${server.url}/v1/models/tensors:predict`, { method: 'POST', body: new Uint8Array([1, 2]), headers: { 'Content-Type': 'image/png' } });
    t.is(task.status, 400);
    t.regex(((await task.json()) as { error: string }).error, /not a zoo classifier, detector or segmenter.*\/v2\/models\/tensors\/infer/);
  } finally {
    await server.close();
  }
});

test.serial('a pulled model with an FP16 variant: FP32 on the CPU under auto, FP16 when asked, FP16 refused where there is none', async (t) => {
  const server = await FixtureServer.start();
  try {
    const m = createModel('resnet_test', { seed: 5 });
    await trainedLikeInit(m);
    const weights = safetensorsBytes(torchStateDict(m));
    m.dispose();
    server.route('/timm/servetest/model.safetensors', { data: Buffer.from(weights) });
    const entry = { ...fixtureBase(32), name: 'resnet_test.servetest', aliases: ['serve-model'], sources: [pinnedSafetensors('https://fixtures.invalid/timm/servetest/model.safetensors', weights)] };
    writeFileSync(join(dir, 'models.json'), JSON.stringify({ version: 1, categories: {}, models: [entry] }));
    process.env.ZOO_MODELS_JSON = join(dir, 'models.json');
    const env = { ZOO_CACHE: join(dir, 'cache'), ZOO_MIRROR: `https://fixtures.invalid=${server.url('')}` };
    const settings = readHubSettings(env, dir);
    await pull('serve-model', { settings, fp16: true });
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const auto = await startServer(['serve-model'], { port: 0, device: 'cpu', log: false });
      t.deepEqual(auto.models.map((x) => [x.name, x.precision, x.provider]), [['serve-model', 'fp32', 'cpu']]);
      t.regex(auto.models[0]!.file, /model\.onnx$/);
      await auto.close();
      const half = await startServer(['serve-model'], { port: 0, device: 'cpu', log: false, precision: 'fp16' });
      t.is(half.models[0]!.precision, 'fp16');
      t.regex(half.models[0]!.file, /model-fp16\.onnx$/);
      const meta = (await (await fetch(`${half.url}/v2/models/serve-model`)).json()) as Record<string, any>;
      t.is(meta.inputs[0].datatype, 'FP32', 'the FP16 export keeps float32 input and output');
      await half.close();
      const plain = await writeClassifier(join(dir, 'plain.onnx'));
      await t.throwsAsync(startServer([plain], { port: 0, device: 'cpu', log: false, precision: 'fp16' }), { instanceOf: UserError, message: /has no FP16 variant \(--precision fp16\); a file is served as it is: give the FP16 export itself/ });
      t.regex(noFp16Variant('my-model', '--fp16').message, /pull it with 'zoo pull my-model --fp16'/);
      // The same variant goes into a Triton repository on request.
      const repo = join(dir, 'triton');
      const written = await writeTritonRepository(repo, ['serve-model'], { precision: 'fp16', settings });
      t.deepEqual(readFileSync(join(repo, 'serve-model', '1', 'model.onnx')), readFileSync(half.models[0]!.file));
      t.is(written.models.length, 1);
      await t.throwsAsync(writeTritonRepository(join(dir, 'triton2'), [plain], { precision: 'fp16' }), { instanceOf: UserError, message: /has no FP16 variant \(--fp16\)/ });
    } finally {
      process.env = saved;
    }
  } finally {
    await server.close();
  }
});

test('a graph whose outputs do not follow the batch runs each request alone: no client gets another\'s values', async (t) => {
  const b = new OnnxBuilder(() => new Float32Array(0), { foldBatchNorm: false, fp16: false, epsilon: 1e-5 });
  b.nodes.push(node('Transpose', ['a'], ['t'], 'transpose', { perm: [1, 0] }));
  const file = join(dir, 'transpose.onnx');
  writeFileSync(file, encodeModel({ name: 'transpose', builder: b, inputs: [valueInfo('a', DataType.FLOAT, ['batch', 3])], outputs: [valueInfo('t', DataType.FLOAT, [3, 'batch'])], metadata: {} }));
  const server = await startServer([file], { port: 0, device: 'cpu', log: false, maxDelayMs: 300 });
  try {
    t.is(server.models[0]!.maxBatch, 1);
    const send = async (v: number) => {
      const r = await fetch(`${server.url}/v2/models/transpose/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'a', shape: [1, 3], datatype: 'FP32', data: [v, v, v] }] }) });
      return ((await r.json()) as { outputs: { shape: number[]; data: number[] }[] }).outputs[0]!;
    };
    const answers = await Promise.all([1, 2, 3].map(send));
    answers.forEach((a, i) => {
      t.deepEqual(a.shape, [3, 1]);
      t.deepEqual(a.data, [i + 1, i + 1, i + 1]);
    });
  } finally {
    await server.close();
  }
});

test('--device auto on a machine where CUDA cannot start serves on the CPU and says why once; --device cuda refuses with the reason', async (t) => {
  if (cudaReadiness().ready) return t.pass('CUDA can start here: the fallback is not what this machine does');
  const f = await writeClassifier(join(dir, 'dev.onnx'));
  const notes: string[] = [];
  const server = await startServer([f], { port: 0, device: 'auto', log: false, onNote: (n) => notes.push(n) });
  try {
    t.is(server.models[0]!.provider, 'cpu');
    const cuda = notes.filter((n) => /CUDA/.test(n));
    t.is(cuda.length, 1, notes.join('\n'));
    t.regex(cuda[0]!, /^dev: CUDA not used: .+; using the CPU$/);
  } finally {
    await server.close();
  }
  const e = await t.throwsAsync(startServer([f], { port: 0, device: 'cuda', log: false }), { instanceOf: UserError });
  t.regex(e!.message, /^cannot run on CUDA: /);
  t.regex(e!.message, /NVIDIA GPU|zoo doctor --install-cuda|CUDA 13/);
});
