/**
 * The playground `zoo serve` answers at `GET /`, in a real headless Chromium (Debian's, driven by
 * playwright-core): the model list, an upload through the file picker, and what a user then sees for each
 * task (the top-5, boxes on the canvas, the mask overlay and its legend) and for a server error. First
 * against a small server in this file that answers the endpoints the page uses as the serving contract has
 * them, with fixed answers chosen so that every pixel to check is known; then against `zoo serve` itself
 * with a small model of each task, the page's view compared with what :predict answers. Every request the
 * page makes is checked to stay on 127.0.0.1.
 *
 * The browser tests skip, saying why, when no Chromium is found (ZOO_CHROMIUM if set, else
 * /usr/bin/chromium or /usr/bin/chromium-browser); the checks on the page's text run everywhere.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { MASK_OPACITY, playgroundHtml } from '../src/serve/playground.js';
import { startServer, type ZooServer } from '../src/serve/server.js';
import { CLASSIFIER_LABELS, SEGMENTER_LABELS, writeServeModels } from './helpers/serve_models.js';

const html = playgroundHtml();

test('the page is self-contained: no external URL, only inline style and script', (t) => {
  t.regex(html, /^<!doctype html>/);
  t.notRegex(html, /https?:\/\//i);
  t.notRegex(html, /\bsrc\s*=/i);
  t.notRegex(html, /@import|url\(/i);
  const links = html.match(/<link\b[^>]*>/gi) ?? [];
  t.deepEqual(links, ['<link rel="icon" href="data:,">']);
  t.is(html.match(/<script\b/gi)?.length, 1);
});

test('the page never writes markup from data: no innerHTML, outerHTML, insertAdjacentHTML or document.write', (t) => {
  t.notRegex(html, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
});

// ---------------------------------------------------------------------------------------------------
// A server with the endpoints the page uses, answering as the contract says.

const LABELS = ['<img src=x onerror="window.__injected=1">', 'T-shirt/top', 'Trouser', 'Pullover', 'Dress'];
const PROBS = [0.6, 0.2, 0.1, 0.06, 0.04];
const SEG_CLASSES = ['wall', 'sky', 'tree'];

const MODELS = [
  { name: 'raw', task: 'tensor', provider: 'cpu', maxBatch: 32,
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }] },
  { name: 'fashion', task: 'image-classification', provider: 'cpu', labels: LABELS, maxBatch: 32,
    inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 32, 32] }], outputs: [{ name: 'logits', datatype: 'FP32', shape: [-1, 5] }] },
  { name: 'voc', task: 'object-detection', provider: 'cpu', maxBatch: 32,
    inputs: [{ name: 'images', datatype: 'FP32', shape: [-1, 3, -1, -1] }], outputs: [{ name: 'boxes', datatype: 'FP32', shape: [-1, 100, 4] }] },
  { name: 'ade', task: 'image-segmentation', provider: 'cpu', labels: SEG_CLASSES, maxBatch: 32,
    inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, -1, -1] }], outputs: [{ name: 'logits', datatype: 'FP32', shape: [-1, 3, -1, -1] }] },
];

/** The segmentation answer's mask: unlabeled above y = h/4, 'wall' left of x = 5w/8, 'sky' right of it. */
function maskValue(x: number, y: number, w: number, h: number): number {
  if (y < h / 4) return 0;
  return x < (5 * w) / 8 ? 1 : 2;
}

interface Seen { method: string; path: string; contentType: string | undefined; body: Buffer }

interface Fake { url: string; seen: Seen[]; close(): Promise<void> }

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length });
  res.end(data);
}

async function predictAnswer(name: string, query: URLSearchParams, contentType: string | undefined, body: Buffer): Promise<[number, unknown]> {
  if (!/^(image\/(jpeg|png|webp)|application\/octet-stream)$/.test(contentType ?? '')) {
    return [415, { error: `unsupported content type '${contentType}': send image/jpeg, image/png or image/webp` }];
  }
  let meta: sharp.Metadata;
  try {
    meta = await sharp(body).metadata();
  } catch {
    return [400, { error: 'the body is not an image' }];
  }
  const width = meta.width!, height = meta.height!;
  if (name === 'fashion') {
    const topk = Number(query.get('topk') ?? 5);
    return [200, { model: name, task: 'image-classification',
      predictions: LABELS.slice(0, topk).map((label, index) => ({ label, index, probability: PROBS[index] })) }];
  }
  if (name === 'voc') {
    return [200, { model: name, task: 'object-detection', width, height, detections: [
      { label: 'dog', index: 11, score: 0.923, box: [200, 100, 600, 500] },
      { label: 'person', index: 14, score: 0.61, box: [700, 50, 1200, 600] },
    ] }];
  }
  if (name === 'ade') {
    if (query.get('format') !== 'json') return [400, { error: 'this test server answers segmentation with format=json only' }];
    const mask = Buffer.alloc(width * height);
    const areas: Record<string, number> = {};
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const v = maskValue(x, y, width, height);
        mask[y * width + x] = v;
        if (v > 0) areas[SEG_CLASSES[v - 1]!] = (areas[SEG_CLASSES[v - 1]!] ?? 0) + 1;
      }
    }
    const png = await sharp(mask, { raw: { width, height, channels: 1 } }).png().toBuffer();
    return [200, { model: name, task: 'image-segmentation', width, height, classes: SEG_CLASSES, areas, labels_png: png.toString('base64') }];
  }
  return [404, { error: `unknown model '${name}'` }];
}

async function startFake(): Promise<Fake> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method ?? '', path: url.pathname + url.search, contentType: req.headers['content-type'], body });
      const predict = /^\/v1\/models\/([^/:]+):predict$/.exec(url.pathname);
      if (req.method === 'GET' && url.pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(html);
      } else if (req.method === 'GET' && url.pathname === '/v1/models') {
        send(res, 200, { models: MODELS });
      } else if (req.method === 'POST' && predict) {
        predictAnswer(decodeURIComponent(predict[1]!), url.searchParams, req.headers['content-type'], body).then(
          ([status, answer]) => send(res, status, answer),
          (err: unknown) => send(res, 500, { error: String(err) }),
        );
      } else {
        send(res, 404, { error: `no route ${req.method} ${url.pathname}` });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    seen,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

// ---------------------------------------------------------------------------------------------------
// The browser.

/** ZOO_CHROMIUM when set (and only it), else Debian's or Ubuntu's package. */
function findChromium(): string | undefined {
  const given = process.env.ZOO_CHROMIUM;
  const candidates = given ? [given] : ['/usr/bin/chromium', '/usr/bin/chromium-browser'];
  return candidates.find((p) => existsSync(p));
}

const executablePath = findChromium();

/** A page in its own context; requests to anything but 127.0.0.1 are aborted and recorded in `outside`. */
interface Tab { context: BrowserContext; page: Page; outside: string[]; errors: string[] }

async function openTab(browser: Browser, url: string): Promise<Tab> {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const outside: string[] = [];
  const errors: string[] = [];
  await context.route('**', (route) => {
    const u = new URL(route.request().url());
    if (u.hostname === '127.0.0.1') return route.continue();
    outside.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(url);
  await page.locator('#models input').first().waitFor();
  return { context, page, outside, errors };
}

async function closeTab(t: ExecutionContext, tab: Tab): Promise<void> {
  t.deepEqual(tab.outside, [], 'the page asked for something off 127.0.0.1');
  t.deepEqual(tab.errors, [], 'the page threw');
  await tab.context.close();
}

async function solidPng(width: number, height: number, rgb: [number, number, number]): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).png().toBuffer();
}

/** The RGB of the result canvas at (x, y), in canvas pixels. */
async function canvasPixel(page: Page, x: number, y: number): Promise<number[]> {
  return page.evaluate(([px, py]) => {
    const c = document.querySelector<HTMLCanvasElement>('#result canvas')!;
    return Array.from(c.getContext('2d')!.getImageData(px!, py!, 1, 1).data.slice(0, 3));
  }, [Math.round(x), Math.round(y)]);
}

async function canvasSize(page: Page): Promise<{ width: number; height: number }> {
  return page.evaluate(() => {
    const c = document.querySelector<HTMLCanvasElement>('#result canvas')!;
    return { width: c.width, height: c.height };
  });
}

/** The colours of the swatches in the result's list, in order, as [r, g, b]. */
async function swatches(page: Page): Promise<number[][]> {
  const styles = await page.locator('#result .swatch').evaluateAll((els) => els.map((e) => getComputedStyle(e).backgroundColor));
  return styles.map((s) => (/rgb\((\d+), (\d+), (\d+)\)/.exec(s) ?? []).slice(1).map(Number));
}

function near(t: ExecutionContext, got: number[], want: number[], tol: number, what: string): void {
  const ok = got.length === want.length && got.every((v, i) => Math.abs(v - want[i]!) <= tol);
  t.true(ok, `${what}: got [${got}], want [${want.map((v) => v.toFixed(1))}] within ${tol}`);
}

/** A picture with structure, so that the models' answers are not all alike. */
async function picture(width: number, height: number): Promise<{ png: Buffer; rgb: Buffer }> {
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      const inside = x > width / 4 && x < (3 * width) / 4 && y > height / 4 && y < (3 * height) / 4;
      rgb[o] = inside ? 230 : Math.round((x * 255) / width);
      rgb[o + 1] = inside ? 40 : Math.round((y * 255) / height);
      rgb[o + 2] = (x * y) % 255;
    }
  }
  return { png: await sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer(), rgb };
}

async function predictHere(server: ZooServer, path: string, body: Buffer, type = 'image/png'): Promise<Record<string, any>> {
  const r = await fetch(`${server.url}${path}`, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': type } });
  return (await r.json()) as Record<string, any>;
}

if (!executablePath) {
  const why = process.env.ZOO_CHROMIUM
    ? `ZOO_CHROMIUM=${process.env.ZOO_CHROMIUM} does not exist: the playground browser tests are skipped`
    : 'no Chromium at /usr/bin/chromium or /usr/bin/chromium-browser (apt-get install chromium, or set ZOO_CHROMIUM): the playground browser tests are skipped';
  console.log(why);
  test.skip(`playground in headless Chromium: ${why}`, () => {});
} else {
  let browser: Browser;
  let fake: Fake;
  let server: ZooServer;
  const dir = mkdtempSync(join(tmpdir(), 'zoo-playground-'));

  test.before(async () => {
    fake = await startFake();
    const files = await writeServeModels(dir);
    server = await startServer([`fashion=${files.classifier}`, `det=${files.detector}`, `seg=${files.segmenter}`], { port: 0, device: 'cpu', log: () => {}, maxDelayMs: 1 });
    browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  });

  test.after.always(async () => {
    await browser?.close();
    await fake?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test.serial('the page lists the served models with their tasks; tensor-only models cannot be picked', async (t) => {
    const tab = await openTab(browser, fake.url);
    const { page } = tab;
    t.deepEqual(await page.locator('#models label').allTextContents(), [
      'raw tensors only (POST /v2/models/<name>/infer)', 'fashion classification', 'voc detection', 'ade segmentation',
    ]);
    t.true(await page.getByRole('radio', { name: 'fashion classification' }).isChecked(), 'the first image model is chosen');
    t.true(await page.getByRole('radio', { name: /^raw / }).isDisabled());
    t.is(await page.title(), 'zoo serve');
    await closeTab(t, tab);
  });

  test.serial('an image through the file picker gets the top-5 with bars; labels are shown as text, never as markup', async (t) => {
    const tab = await openTab(browser, fake.url);
    const { page } = tab;
    const png = await solidPng(64, 48, [200, 30, 30]);
    const before = fake.seen.length;
    await page.locator('#file').setInputFiles({ name: 'shirt.png', mimeType: 'image/png', buffer: png });
    const rows = page.locator('#result .top li');
    await rows.nth(4).waitFor();
    t.is(await rows.count(), 5);
    t.deepEqual(await page.locator('#result .top .label').allTextContents(), LABELS);
    t.deepEqual(await page.locator('#result .top .num').allTextContents(), ['60.0%', '20.0%', '10.0%', '6.0%', '4.0%']);
    const widths = await page.locator('#result .bar span').evaluateAll((els) => els.map((e) => (e as HTMLElement).style.width));
    t.deepEqual(widths.map((w) => parseFloat(w)), [60, 20, 10, 6, 4]);
    t.true(widths.every((w) => w.endsWith('%')));
    t.is(await page.locator('#result img').count(), 0, 'a label with markup made an element');
    t.is(await page.evaluate(() => (window as unknown as { __injected?: number }).__injected), undefined);
    // The raw file went to :predict with its own content type.
    const posted = fake.seen.slice(before).filter((s) => s.method === 'POST');
    t.is(posted.length, 1);
    t.is(posted[0]!.path, '/v1/models/fashion:predict?topk=5');
    t.is(posted[0]!.contentType, 'image/png');
    t.true(posted[0]!.body.equals(png));
    t.regex(await page.locator('#status').textContent() ?? '', /fashion answered in \d+ ms/);
    await closeTab(t, tab);
  });

  test.serial('an image dropped on the page is posted like one chosen with the picker', async (t) => {
    const tab = await openTab(browser, fake.url);
    const { page } = tab;
    const png = await solidPng(16, 16, [0, 90, 0]);
    const before = fake.seen.length;
    const dataTransfer = await page.evaluateHandle((b64) => {
      const d = new DataTransfer();
      d.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], 'dropped.png', { type: 'image/png' }));
      return d;
    }, png.toString('base64'));
    await page.dispatchEvent('#drop', 'dragover', { dataTransfer });
    t.true(await page.locator('#drop.over').isVisible(), 'the drop zone shows it will take the file');
    await page.dispatchEvent('#drop', 'drop', { dataTransfer });
    await page.locator('#result .top li').nth(4).waitFor();
    t.false(await page.locator('#drop.over').isVisible());
    const posted = fake.seen.slice(before).filter((r) => r.method === 'POST');
    t.is(posted.length, 1);
    t.is(posted[0]!.contentType, 'image/png');
    t.true(posted[0]!.body.equals(png));
    await closeTab(t, tab);
  });

  test.serial('detection draws each box at the displayed scale with "label score"', async (t) => {
    const tab = await openTab(browser, fake.url);
    const { page } = tab;
    await page.getByRole('radio', { name: 'voc detection' }).check();
    const image: [number, number, number] = [20, 20, 20];
    await page.locator('#file').setInputFiles({ name: 'street.png', mimeType: 'image/png', buffer: await solidPng(1280, 640, image) });
    await page.locator('#result .items li').nth(1).waitFor();
    t.deepEqual(await page.locator('#result .items li span:nth-child(2)').allTextContents(), ['dog 0.92', 'person 0.61']);
    t.is(fake.seen.at(-1)!.path, '/v1/models/voc:predict?threshold=0.5');
    const { width, height } = await canvasSize(page);
    t.true(width < 1280, `the 1280 px image is shown smaller (${width} px), so boxes must be scaled`);
    const s = width / 1280;
    t.is(height, Math.round(640 * s));
    const [dog, person] = await swatches(page);
    t.notDeepEqual(dog, person);
    // On the boxes' edges: the box colour; inside and outside them: the image.
    near(t, await canvasPixel(page, 200 * s, 300 * s), dog!, 2, 'dog box, left edge');
    near(t, await canvasPixel(page, 600 * s, 300 * s), dog!, 2, 'dog box, right edge');
    near(t, await canvasPixel(page, 400 * s, 500 * s), dog!, 2, 'dog box, bottom edge');
    near(t, await canvasPixel(page, 950 * s, 600 * s), person!, 2, 'person box, bottom edge');
    near(t, await canvasPixel(page, 1200 * s, 300 * s), person!, 2, 'person box, right edge');
    near(t, await canvasPixel(page, 400 * s, 300 * s), image, 2, 'inside the dog box');
    near(t, await canvasPixel(page, 100 * s, 300 * s), image, 2, 'left of the dog box');
    near(t, await canvasPixel(page, 650 * s, 300 * s), image, 2, 'between the boxes');
    await closeTab(t, tab);
  });

  test.serial('segmentation blends each class colour over the image where the mask says, with a legend of names and areas', async (t) => {
    const tab = await openTab(browser, fake.url);
    const { page } = tab;
    await page.getByRole('radio', { name: 'ade segmentation' }).check();
    const image: [number, number, number] = [40, 80, 120];
    const w = 320, h = 160;
    await page.locator('#file').setInputFiles({ name: 'room.png', mimeType: 'image/png', buffer: await solidPng(w, h, image) });
    await page.locator('#result .items li').nth(1).waitFor();
    t.is(fake.seen.at(-1)!.path, '/v1/models/ade:predict?format=json');
    t.deepEqual(await page.locator('#result .items li').allTextContents(), ['wall 24,000 px (46.9%)', 'sky 14,400 px (28.1%)']);
    t.deepEqual(await canvasSize(page), { width: w, height: h });
    const [wall, sky] = await swatches(page);
    t.notDeepEqual(wall, sky);
    const blend = (c: number[]) => c.map((v, i) => MASK_OPACITY * v + (1 - MASK_OPACITY) * image[i]!);
    for (const [x, y] of [[10, 50], [150, 100], [195, 159]] as const) near(t, await canvasPixel(page, x, y), blend(wall!), 3, `wall at ${x},${y}`);
    for (const [x, y] of [[205, 50], [300, 120], [319, 159]] as const) near(t, await canvasPixel(page, x, y), blend(sky!), 3, `sky at ${x},${y}`);
    for (const [x, y] of [[10, 10], [250, 35]] as const) near(t, await canvasPixel(page, x, y), image, 2, `unlabeled at ${x},${y}`);
    await closeTab(t, tab);
  });

  test.serial('a server error is shown as the server said it, and the next good answer clears it', async (t) => {
    const tab = await openTab(browser, fake.url);
    const { page } = tab;
    await page.locator('#file').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image') });
    const alert = page.getByRole('alert');
    await alert.waitFor();
    t.is(await alert.textContent(), "fashion: unsupported content type 'text/plain': send image/jpeg, image/png or image/webp (HTTP 415)");
    t.is(await page.locator('#result *').count(), 0);
    await page.locator('#file').setInputFiles({ name: 'shirt.png', mimeType: 'image/png', buffer: await solidPng(8, 8, [0, 0, 0]) });
    await page.locator('#result .top li').nth(4).waitFor();
    t.true(await alert.isHidden());
    await closeTab(t, tab);
  });

  // The page on `zoo serve` itself, with a small model of each task.

  test.serial('on zoo serve: the page lists the models and shows what :predict answers for each task', async (t) => {
    const tab = await openTab(browser, `${server.url}/`);
    const { page } = tab;
    t.deepEqual(await page.locator('#models label').allTextContents(), ['fashion classification', 'det detection', 'seg segmentation']);
    const { png, rgb } = await picture(64, 48);
    const upload = () => page.locator('#file').setInputFiles({ name: 'picture.png', mimeType: 'image/png', buffer: png });

    // An error, in the server's words.
    const text = Buffer.from('not an image');
    await page.locator('#file').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: text });
    await page.getByRole('alert').waitFor();
    const refusal = await predictHere(server, '/v1/models/fashion:predict', text, 'text/plain');
    t.is(await page.getByRole('alert').textContent(), `fashion: ${refusal.error} (HTTP 415)`);

    // Classification: the server's top classes (4 labels, so 4 rows), in its order, as percentages.
    await upload();
    await page.locator('#result .top li').nth(CLASSIFIER_LABELS.length - 1).waitFor();
    const top = (await predictHere(server, '/v1/models/fashion:predict?topk=5', png)).predictions as { label: string; probability: number }[];
    t.deepEqual(await page.locator('#result .top .label').allTextContents(), top.map((p) => p.label));
    t.deepEqual(await page.locator('#result .top .num').allTextContents(), top.map((p) => `${(p.probability * 100).toFixed(1)}%`));
    t.deepEqual([...top.map((p) => p.label)].sort(), [...CLASSIFIER_LABELS].sort());

    // Detection: none of the untrained detector's boxes pass 0.5; at threshold 0 each box the server finds
    // is listed and drawn, its left edge in its colour.
    await page.getByRole('radio', { name: 'det detection' }).check();
    await page.getByText('No objects above the threshold.').waitFor();
    t.deepEqual((await predictHere(server, '/v1/models/det:predict', png)).detections, []);
    await page.getByLabel('Score threshold').fill('0');
    await page.getByLabel('Score threshold').press('Tab');
    await page.locator('#result .items li').first().waitFor();
    const dets = (await predictHere(server, '/v1/models/det:predict?threshold=0', png)).detections as { label: string; score: number; box: number[] }[];
    t.true(dets.length > 0);
    t.deepEqual(await page.locator('#result .items li span:nth-child(2)').allTextContents(), dets.map((d) => `${d.label} ${d.score.toFixed(2)}`));
    t.deepEqual(await canvasSize(page), { width: 64, height: 48 });
    const boxColours = await swatches(page);
    const last = dets.length - 1;  // drawn last, so nothing covers its edges
    const [x1, y1, , y2] = dets[last]!.box;
    near(t, await canvasPixel(page, Math.min(63, x1!), (y1! + y2!) / 2), boxColours[last]!, 2, 'the last box, left edge');

    // Segmentation: every pixel of the canvas is the image blended with its class's legend colour.
    await page.getByRole('radio', { name: 'seg segmentation' }).check();
    await page.locator('#result .items li').first().waitFor();
    const seg = await predictHere(server, '/v1/models/seg:predict?format=json', png);
    const mask = await sharp(Buffer.from(seg.labels_png as string, 'base64')).raw().toBuffer({ resolveWithObject: true });
    t.deepEqual([seg.width, seg.height, mask.info.width, mask.info.height], [64, 48, 64, 48]);
    const names = await page.locator('#result .items .name').allTextContents();
    t.deepEqual([...names].sort(), Object.keys(seg.areas as object).sort());
    t.log('areas', JSON.stringify(seg.areas));
    const colour = new Map(names.map((n, i) => [n, i] as const));
    const legend = await swatches(page);
    const drawn = await page.evaluate(() => {
      const c = document.querySelector<HTMLCanvasElement>('#result canvas')!;
      return Array.from(c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data);
    });
    let worst = 0;
    for (let p = 0; p < 64 * 48; p++) {
      const v = mask.data[p * mask.info.channels]!;
      const c = v === 0 ? undefined : legend[colour.get(SEGMENTER_LABELS[v - 1]!)!]!;
      for (let ch = 0; ch < 3; ch++) {
        const img = rgb[p * 3 + ch]!;
        const want = c ? MASK_OPACITY * c[ch]! + (1 - MASK_OPACITY) * img : img;
        worst = Math.max(worst, Math.abs(drawn[p * 4 + ch]! - want));
      }
    }
    t.true(worst <= 3, `largest difference from the expected overlay: ${worst}`);
    await closeTab(t, tab);
  });
}
