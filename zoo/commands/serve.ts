import { Command, Option } from 'commander';
import { startServer, SERVE_DEFAULTS } from '../../src/serve/server.js';
import { action, number, positiveInt } from '../run.js';

interface ServeCliOptions {
  port: number;
  host: string;
  device: 'auto' | 'cpu' | 'cuda';
  precision: 'auto' | 'fp32' | 'fp16';
  maxBatch: number;
  maxDelayMs: number;
  maxQueue: number;
  timeout: number;
  maxBody: number;
  maxPixels: number;
  segPixels: number;
  maxElements: number;
  drainMs: number;
  keepAliveMs: number;
  threads?: number;
  instances: number;
  warmup: boolean;
  accessLog: boolean;
}

const nonNegativeInt = (name: string) => number(name, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve ONNX models over HTTP: the Open Inference Protocol (KServe v2), an image endpoint, metrics and a playground')
    .argument('<models...>', 'local zoo names, published names (pulled on first use), .onnx files, run directories; name=file to choose the name')
    .option('--port <n>', 'TCP port (0: any free one)', nonNegativeInt('--port'), SERVE_DEFAULTS.port)
    .option('--host <address>', 'address to listen on (0.0.0.0: every interface)', SERVE_DEFAULTS.host)
    .addOption(new Option('--device <device>', 'where ONNX Runtime runs: auto tries CUDA and falls back to the CPU, saying why').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .addOption(new Option('--precision <p>', 'auto: a model\'s FP16 variant on CUDA, FP32 on the CPU').choices(['auto', 'fp32', 'fp16']).default('auto'))
    .option('--max-batch <n>', 'requests (images, rows) combined into one run at most', positiveInt('--max-batch'), SERVE_DEFAULTS.maxBatch)
    .option('--max-delay-ms <ms>', 'how long a request waits for others to share its run', nonNegativeInt('--max-delay-ms'), SERVE_DEFAULTS.maxDelayMs)
    .option('--max-queue <n>', 'requests waiting per model; more are answered 503 with Retry-After', positiveInt('--max-queue'), SERVE_DEFAULTS.maxQueue)
    .option('--timeout <ms>', 'a request not started within this is answered 504', positiveInt('--timeout'), SERVE_DEFAULTS.timeoutMs)
    .option('--max-body <bytes>', 'largest request body (413 past it)', positiveInt('--max-body'), SERVE_DEFAULTS.maxBodyBytes)
    .option('--max-pixels <n>', 'largest decoded image, in pixels (413 past it, checked before decoding)', positiveInt('--max-pixels'), SERVE_DEFAULTS.maxImagePixels)
    .option('--seg-pixels <n>', 'segmenters run on at most this many pixels per run, over its images (larger images scaled down, labels back up; larger /v2 tensors refused)', positiveInt('--seg-pixels'), SERVE_DEFAULTS.segmentationPixels)
    .option('--max-elements <n>', 'other models: rows times the dynamic dimensions of an input, per run at most (larger /v2 requests are refused with 413)', positiveInt('--max-elements'), SERVE_DEFAULTS.maxElements)
    .option('--drain-ms <ms>', 'on SIGTERM, keep accepting and answering this long after readiness turns false (for load balancers)', nonNegativeInt('--drain-ms'), SERVE_DEFAULTS.drainMs)
    .option('--keep-alive-ms <ms>', 'idle keep-alive connections close after this long', positiveInt('--keep-alive-ms'), SERVE_DEFAULTS.keepAliveMs)
    .option('--instances <n>', 'sessions per model running batches side by side, each in its own thread (on a CPU under load, 2 keep the cores busier; 1 answers a lone request sooner)', positiveInt('--instances'), 1)
    .option('--threads <n>', 'ONNX Runtime intra-op threads per session (default: the cores divided among the instances)', positiveInt('--threads'))
    .option('--no-warmup', 'skip the one run per model at start')
    .option('--no-access-log', 'do not print a JSON line per request')
    .addHelpText(
      'after',
      `
Endpoints (http://HOST:PORT):
  GET  /                                  the playground: drop an image, see the answer
  GET  /v2  /v2/health/live  /v2/health/ready
  GET  /v2/models/<name>                  inputs and outputs: name, datatype, shape (-1: dynamic)
  GET  /v2/models/<name>/ready
  POST /v2/models/<name>/infer            tensors as JSON, or binary (Inference-Header-Content-Length)
  GET  /v1/models                         the models, their tasks and labels
  POST /v1/models/<name>:predict          an image (JPEG, PNG, WebP; raw body or multipart/form-data):
                                          ?topk=5 labels | ?threshold=0.5 boxes | a label PNG (?format=json)
  GET  /metrics                           Prometheus: requests, errors, latency, batch sizes, queue depth

Concurrent requests to a model are combined into one ONNX Runtime run (up to --max-batch rows; a request
waits at most --max-delay-ms for others). Errors are JSON {"error": "..."} with a 4xx status (400 bad
input, 404 unknown model, 413 too large, 415 not an image type, 503 overloaded, 504 timed out). SIGTERM or
Ctrl-C: readiness turns false while requests are still answered for --drain-ms, then the listener closes,
requests in flight finish and the process exits.
For more than one process, 'zoo export --triton DIR <models...>' writes a Triton model repository that
answers the same /v2 requests.

Examples:
  zoo serve resnet50d-best                              http://127.0.0.1:8000
  zoo serve cls=runs/r18d det=runs/voc/model.onnx --port 9000 --host 0.0.0.0
  curl -s --data-binary @cat.jpg -H 'Content-Type: image/jpeg' localhost:8000/v1/models/resnet50d-best:predict`,
    )
    .action(
      action(async (models: string[], opts: ServeCliOptions) => {
        // A broken stdout (a log collector gone, '| head') stops the access log, not the service.
        let logging = opts.accessLog;
        process.stdout.removeAllListeners('error');
        process.stdout.on('error', (e: NodeJS.ErrnoException) => {
          if (!logging) return;
          logging = false;
          process.stderr.write(`zoo serve: the access log stopped: stdout failed (${e.code ?? e.message})\n`);
        });
        const server = await startServer(models, {
          port: opts.port,
          host: opts.host,
          device: opts.device,
          precision: opts.precision,
          maxBatch: opts.maxBatch,
          maxDelayMs: opts.maxDelayMs,
          maxQueue: opts.maxQueue,
          timeoutMs: opts.timeout,
          maxBodyBytes: opts.maxBody,
          maxImagePixels: opts.maxPixels,
          segmentationPixels: opts.segPixels,
          maxElements: opts.maxElements,
          drainMs: opts.drainMs,
          keepAliveMs: opts.keepAliveMs,
          ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
          instances: opts.instances,
          warmup: opts.warmup,
          log: opts.accessLog ? (line) => logging && process.stdout.write(`${line}\n`) : false,
          onNote: (line) => process.stderr.write(`note: ${line}\n`),
        });
        for (const m of server.models) {
          const batch = `${m.maxBatch > 1 ? `batches up to ${m.maxBatch}` : 'no batching'}${m.instances > 1 ? `, ${m.instances} instances` : ''}`;
          process.stderr.write(`serving ${m.name}: ${m.task}, ${m.provider} ${m.precision}, ${batch} (${m.file})\n`);
        }
        process.stderr.write(`zoo serve: listening on ${server.url} (playground ${server.url}/, metrics ${server.url}/metrics)\n`);
        await new Promise<void>((resolve) => {
          const stop = (signal: string) => {
            process.stderr.write(`zoo serve: ${signal}: finishing ${server.inFlight} request(s) in flight, then exiting\n`);
            server.close().then(resolve, (e) => {
              process.stderr.write(`zoo serve: error while stopping: ${(e as Error).message}\n`);
              process.exitCode = 1;
              resolve();
            });
          };
          process.once('SIGTERM', () => stop('SIGTERM'));
          process.once('SIGINT', () => stop('SIGINT'));
        });
        process.stderr.write('zoo serve: stopped\n');
      }),
    );
}
