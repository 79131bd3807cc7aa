/**
 * Serving from a program of one's own: `serve(models, options)` starts what `zoo serve` starts (the Open
 * Inference Protocol's REST API, the image task endpoint, metrics, the playground) and returns a handle
 * whose `close()` stops it gracefully.
 *
 *   const server = await serve(['resnet50d-best', 'det=runs/voc/model.onnx'], { port: 8000 });
 *   console.log(server.url);           // http://127.0.0.1:8000
 *   process.on('SIGTERM', () => server.close());
 */
export { startServer as serve, SERVE_DEFAULTS, type ServeOptions, type ZooServer } from '../serve/server.js';
export type { ServedModelInfo, ServeTask } from '../serve/model.js';
export type { TensorMeta } from '../serve/protocol.js';
