/**
 * The playground `zoo serve` answers at `GET /`: one self-contained HTML page (inline CSS and script, no
 * external URL, nothing to build) that lists the served models from `GET /v1/models`, posts a dropped or
 * chosen image to `POST /v1/models/<name>:predict` as the raw body with the file's content type, and shows
 * the answer as its task says: the top-5 with probability bars, the boxes drawn over the image, or the label
 * mask blended over the image with a legend of classes and areas.
 *
 * Every string that comes from the server (model names, labels, error messages) enters the page through
 * `textContent` or a canvas, never as markup. Requests use relative URLs, so the page also works behind a
 * proxy that serves the whole API under a prefix.
 */

/** How opaque the class colours are over the image in the segmentation view. */
export const MASK_OPACITY = 0.55;

const STYLE = String.raw`
:root { color-scheme: light dark; --bg: #f6f7f9; --card: #fff; --fg: #1b1f24; --muted: #59636e; --line: #d0d7de;
  --accent: #0b62d6; --accent-soft: #dbe9fd; --bad: #b3261e; --bad-soft: #fde7e5; }
@media (prefers-color-scheme: dark) { :root { --bg: #111418; --card: #1b1f24; --fg: #e6e9ed; --muted: #9aa4ae;
  --line: #353c44; --accent: #6aa6ff; --accent-soft: #1c2e4a; --bad: #ff8a80; --bad-soft: #3a1d1b; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header, main { max-width: 760px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 24px; }
h1 { font-size: 1.4rem; margin: 0 0 4px; }
h2 { font-size: 1rem; margin: 0 0 8px; }
header p, .muted { color: var(--muted); margin: 0; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px; margin: 16px 0; }
fieldset { border: 0; margin: 0; padding: 0; }
legend { font-weight: 600; margin-bottom: 8px; padding: 0; }
.models { display: flex; flex-wrap: wrap; gap: 8px; }
.model { display: flex; align-items: center; gap: 6px; border: 1px solid var(--line); border-radius: 8px; padding: 6px 10px; cursor: pointer; }
.model:has(input:checked) { border-color: var(--accent); background: var(--accent-soft); }
.model:has(input:disabled) { opacity: .6; cursor: default; }
.model .task { color: var(--muted); font-size: .85em; }
.options { display: flex; align-items: center; gap: 8px; margin: 12px 0 0; }
.options input { width: 5.5em; font: inherit; padding: 2px 6px; border: 1px solid var(--line); border-radius: 6px; background: var(--card); color: var(--fg); }
.vh { position: absolute; width: 1px; height: 1px; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.drop { display: block; border: 2px dashed var(--line); border-radius: 10px; padding: 28px 16px; text-align: center; cursor: pointer; }
.drop:hover, .drop.over { border-color: var(--accent); background: var(--accent-soft); }
#file:focus-visible + .drop, input:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.drop strong { color: var(--accent); }
.error { background: var(--bad-soft); color: var(--bad); border-radius: 8px; padding: 8px 12px; margin: 8px 0 0; white-space: pre-wrap; }
canvas { display: block; max-width: 100%; border-radius: 6px; margin: 8px 0; }
.top { list-style: none; padding: 0; margin: 8px 0 0; }
.top li { display: grid; grid-template-columns: minmax(0, 14em) 1fr 4.5em; gap: 10px; align-items: center; padding: 3px 0; }
.top .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar { height: 10px; background: var(--accent-soft); border-radius: 5px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--accent); }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.items { list-style: none; padding: 0; margin: 4px 0 0; columns: 2 16em; }
.items li { display: flex; align-items: center; gap: 8px; padding: 2px 0; break-inside: avoid; }
.swatch { width: 14px; height: 14px; border-radius: 3px; flex: none; border: 1px solid rgba(0,0,0,.25); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85em; }
`;

const SCRIPT = String.raw`
'use strict';
const TASKS = { 'image-classification': 'classification', 'object-detection': 'detection',
  'image-segmentation': 'segmentation', tensor: 'tensors only (POST /v2/models/<name>/infer)' };
const MASK_ALPHA = ${MASK_OPACITY};
const $ = (id) => document.getElementById(id);
const state = { model: null, file: null, seq: 0 };

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function setStatus(text) { $('status').textContent = text; }
function showError(text) { const e = $('error'); e.textContent = text; e.hidden = false; }
function clearError() { const e = $('error'); e.textContent = ''; e.hidden = true; }

// Distinct, stable colours per class index: golden-angle hues at one saturation and lightness.
function classColour(i) {
  const h = (i * 137.508 + 20) % 360, s = 0.75, l = 0.5, a = s * Math.min(l, 1 - l);
  const f = (n) => { const k = (n + h / 30) % 12; return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
  return [f(0), f(8), f(4)];
}
const css = (c) => 'rgb(' + c[0] + ', ' + c[1] + ', ' + c[2] + ')';

async function loadModels() {
  let body;
  try {
    const res = await fetch('v1/models');
    body = await res.json();
    if (!res.ok) throw new Error(typeof body.error === 'string' ? body.error : 'HTTP ' + res.status);
  } catch (err) {
    $('models-status').textContent = '';
    showError('Could not list the models: ' + (err && err.message ? err.message : err));
    return;
  }
  const models = Array.isArray(body.models) ? body.models : [];
  const box = $('models');
  box.replaceChildren();
  $('models-status').textContent = models.length ? '' : 'No models are served.';
  for (const m of models) {
    const name = String(m.name), task = String(m.task);
    const label = el('label', 'model');
    const input = el('input');
    input.type = 'radio'; input.name = 'model'; input.value = name;
    const known = Object.prototype.hasOwnProperty.call(TASKS, task);
    input.disabled = !known || task === 'tensor';
    input.addEventListener('change', () => { chooseModel({ name, task }); if (state.file) predict(); });
    label.append(input, el('span', 'name', name), ' ', el('span', 'task', known ? TASKS[task] : task));
    box.append(label);
    if (!state.model && !input.disabled) { input.checked = true; chooseModel({ name, task }); }
  }
}

function chooseModel(model) {
  state.model = model;
  $('options').hidden = model.task !== 'object-detection';
}

function threshold() {
  const v = Number($('threshold').value);
  return $('threshold').value !== '' && v >= 0 && v <= 1 ? v : 0.5;
}

function decodeImage(file) {
  return createImageBitmap(file).catch(() => null);  // the server may read what this browser cannot
}

async function predict() {
  const file = state.file, model = state.model, seq = ++state.seq;
  clearError();
  if (!file) return;
  if (!model) { showError('Choose a model first.'); return; }
  $('result').replaceChildren();
  setStatus('Running ' + model.name + ' on ' + file.name + '...');
  const query = model.task === 'image-segmentation' ? '?format=json' : model.task === 'image-classification' ? '?topk=5'
    : model.task === 'object-detection' ? '?threshold=' + threshold() : '';
  const url = 'v1/models/' + encodeURIComponent(model.name) + ':predict' + query;
  const started = performance.now();
  const imagePromise = decodeImage(file);
  let res, text;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'content-type': file.type || 'application/octet-stream' }, body: file });
    text = await res.text();
  } catch (err) {
    if (seq !== state.seq) return;
    setStatus('');
    showError('Could not reach the server: ' + (err && err.message ? err.message : err));
    return;
  }
  const ms = Math.round(performance.now() - started);
  let body = null;
  try { body = JSON.parse(text); } catch { /* reported below */ }
  const image = await imagePromise;
  if (seq !== state.seq) return;  // a newer image or model took over
  if (!res.ok || !body) {
    setStatus('');
    const why = body && typeof body.error === 'string' ? body.error : (text.trim().slice(0, 300) || res.statusText);
    showError(model.name + ': ' + why + ' (HTTP ' + res.status + ')');
    return;
  }
  setStatus(model.name + ' answered in ' + ms + ' ms.');
  try {
    if (body.task === 'image-classification') showClassification(body, image);
    else if (body.task === 'object-detection') showDetection(body, image);
    else if (body.task === 'image-segmentation') await showSegmentation(body, image);
    else $('result').append(el('pre', '', JSON.stringify(body, null, 2)));
  } catch (err) {
    showError('Could not show the answer: ' + (err && err.message ? err.message : err));
  }
}

// The image at the width the page has room for (at most maxSide on its longer side, if given); sx, sy map
// the server's image pixels onto it.
function imageCanvas(image, width, height, maxSide) {
  const w = width > 0 ? width : image ? image.width : 1, h = height > 0 ? height : image ? image.height : 1;
  const room = Math.max(64, $('result').clientWidth || 640);
  const scale = Math.min(1, room / w, maxSide ? maxSide / Math.max(w, h) : 1);
  const canvas = el('canvas');
  canvas.width = Math.max(1, Math.round(w * scale));
  canvas.height = Math.max(1, Math.round(h * scale));
  canvas.setAttribute('role', 'img');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (image) ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  else { ctx.fillStyle = '#888'; ctx.fillRect(0, 0, canvas.width, canvas.height); }
  $('result').append(canvas);
  return { canvas, ctx, sx: canvas.width / w, sy: canvas.height / h };
}

function showClassification(body, image) {
  const predictions = Array.isArray(body.predictions) ? body.predictions.slice(0, 5) : [];
  if (image) imageCanvas(image, image.width, image.height, 320).canvas.setAttribute('aria-label', 'the image');
  $('result').append(el('h3', 'vh', 'Top ' + predictions.length + ' classes'));
  const list = el('ol', 'top');
  for (const p of predictions) {
    const prob = Math.max(0, Math.min(1, Number(p.probability) || 0));
    const li = el('li');
    const bar = el('span', 'bar'), fill = el('span');
    bar.setAttribute('aria-hidden', 'true');
    fill.style.width = (prob * 100).toFixed(1) + '%';
    bar.append(fill);
    const label = el('span', 'label', p.label);
    label.title = String(p.label);
    li.append(label, ' ', bar, el('span', 'num', (prob * 100).toFixed(1) + '%'));
    list.append(li);
  }
  $('result').append(list);
}

function showDetection(body, image) {
  const dets = Array.isArray(body.detections) ? body.detections : [];
  const { canvas, ctx, sx, sy } = imageCanvas(image, Number(body.width), Number(body.height));
  canvas.setAttribute('aria-label', 'the image with ' + dets.length + ' box' + (dets.length === 1 ? '' : 'es'));
  ctx.font = '600 13px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  const list = el('ul', 'items');
  for (const d of dets) {
    const b = Array.isArray(d.box) ? d.box.map(Number) : [0, 0, 0, 0];
    const colour = classColour(Number(d.index) || 0);
    const text = String(d.label) + ' ' + (Number(d.score) || 0).toFixed(2);
    const x = b[0] * sx, y = b[1] * sy, w = (b[2] - b[0]) * sx, h = (b[3] - b[1]) * sy;
    ctx.lineWidth = 3;
    ctx.strokeStyle = css(colour);
    ctx.strokeRect(x, y, w, h);
    const tw = ctx.measureText(text).width + 8, ty = y >= 18 ? y - 18 : y;
    ctx.fillStyle = css(colour);
    ctx.fillRect(x - 1.5, ty, tw, 18);
    ctx.fillStyle = '#fff';
    ctx.fillText(text, x + 3, ty + 2);
    const li = el('li');
    const sw = el('span', 'swatch');
    sw.style.background = css(colour);
    li.append(sw, el('span', '', text), ' ', el('span', 'muted', '[' + b.map((v) => Math.round(v)).join(', ') + ']'));
    list.append(li);
  }
  $('result').append(dets.length ? list : el('p', 'muted', 'No objects above the threshold.'));
}

async function showSegmentation(body, image) {
  const bytes = Uint8Array.from(atob(String(body.labels_png || '')), (ch) => ch.charCodeAt(0));
  // A canvas keeps 8 bits a channel: a 16-bit label PNG (more than 255 classes) would lose its values.
  if (bytes.length > 24 && bytes[24] !== 8) throw new Error('the label PNG has ' + bytes[24] + '-bit values; the playground shows 8-bit label PNGs (up to 255 classes)');
  // No colour management or premultiplication: the red channel must keep the class values as written.
  const mask = await createImageBitmap(new Blob([bytes], { type: 'image/png' }), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const off = document.createElement('canvas');
  off.width = mask.width; off.height = mask.height;
  const octx = off.getContext('2d', { willReadFrequently: true });
  octx.drawImage(mask, 0, 0);
  const px = octx.getImageData(0, 0, off.width, off.height);
  const counts = new Map(), colours = new Map();
  for (let i = 0; i < px.data.length; i += 4) {
    const v = px.data[i];
    if (v === 0) { px.data[i + 3] = 0; continue; }  // unlabeled
    const cls = v - 1;
    let c = colours.get(cls);
    if (!c) { c = classColour(cls); colours.set(cls, c); }
    counts.set(cls, (counts.get(cls) || 0) + 1);
    px.data[i] = c[0]; px.data[i + 1] = c[1]; px.data[i + 2] = c[2]; px.data[i + 3] = Math.round(255 * MASK_ALPHA);
  }
  octx.putImageData(px, 0, 0);
  const width = Number(body.width) || mask.width, height = Number(body.height) || mask.height;
  const { canvas, ctx } = imageCanvas(image, width, height);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  canvas.setAttribute('aria-label', 'the image with the mask of ' + counts.size + ' class' + (counts.size === 1 ? '' : 'es'));
  const classes = Array.isArray(body.classes) ? body.classes : [];
  const areas = body.areas && typeof body.areas === 'object' ? body.areas : {};
  const rows = [...counts].map(([cls, n]) => {
    const name = cls < classes.length ? String(classes[cls]) : 'class ' + cls;
    const area = Object.prototype.hasOwnProperty.call(areas, name) && typeof areas[name] === 'number' ? areas[name] : n;
    return { cls, name, area };
  }).sort((a, b) => b.area - a.area || a.cls - b.cls);
  const list = el('ul', 'items');
  list.setAttribute('aria-label', 'classes');
  for (const r of rows) {
    const li = el('li');
    const sw = el('span', 'swatch');
    sw.style.background = css(colours.get(r.cls));
    li.append(sw, el('span', 'name', r.name), ' ', el('span', 'muted', r.area.toLocaleString('en') + ' px (' + (100 * r.area / (width * height)).toFixed(1) + '%)'));
    list.append(li);
  }
  $('result').append(rows.length ? list : el('p', 'muted', 'No labeled pixels.'));
}

function useFile(file) {
  if (!file) return;
  state.file = file;
  predict();
}

$('threshold').addEventListener('change', () => { if (state.file) predict(); });
$('file').addEventListener('change', (e) => { useFile(e.target.files[0]); e.target.value = ''; });
const drop = $('drop');
// Dropping anywhere on the page takes the file instead of navigating away to it.
document.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
document.addEventListener('dragleave', (e) => { if (!e.relatedTarget) drop.classList.remove('over'); });
document.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  useFile(e.dataTransfer && e.dataTransfer.files[0]);
});
loadModels();
`;

const BODY = String.raw`
<header>
  <h1>zoo serve</h1>
  <p>Drop an image to run it through a served model. The image goes to this server only.</p>
</header>
<main>
  <section>
    <fieldset>
      <legend>Model</legend>
      <p id="models-status" class="muted" role="status">Loading the models...</p>
      <div id="models" class="models"></div>
      <p id="options" class="options" hidden>
        <label for="threshold">Score threshold</label>
        <input id="threshold" type="number" min="0" max="1" step="0.05" value="0.5">
      </p>
    </fieldset>
  </section>
  <section>
    <h2>Image</h2>
    <input id="file" class="vh" type="file" accept="image/jpeg,image/png,image/webp">
    <label id="drop" class="drop" for="file">
      Drop an image here or <strong>choose a file</strong><br>
      <span class="muted">JPEG, PNG or WebP</span>
    </label>
  </section>
  <section aria-labelledby="result-h">
    <h2 id="result-h">Result</h2>
    <p id="status" class="muted" role="status"></p>
    <p id="error" class="error" role="alert" hidden></p>
    <div id="result"></div>
  </section>
</main>
`;

/** The playground page: one HTML document with everything inline, safe to serve as it is. */
export function playgroundHtml(): string {
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<title>zoo serve</title>',
    // An empty icon: the browser asks for no /favicon.ico.
    '<link rel="icon" href="data:,">',
    `<style>${STYLE}</style>`,
    '</head>',
    '<body>',
    BODY,
    `<script>${SCRIPT}</script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}
