/**
 * Charts of training runs as SVG, rendered to PNG with sharp (librsvg): loss, accuracy and learning-rate
 * curves of one or more logs (`zoo plot`), and the dot-and-whisker summary of an ablation.
 *
 * Text needs a system font (any sans-serif, such as Debian's fonts-dejavu-core); without one the curves
 * are drawn and the labels are left out.
 */
import sharp from 'sharp';
import { writeFileAtomic } from '../io/atomic.js';
import type { EpochRecord } from './trainer.js';

export interface Series {
  label: string;
  x: number[];
  y: number[];
  color: string;
  dashed?: boolean;
}

export interface LinePanel {
  kind: 'lines';
  title: string;
  xLabel: string;
  series: Series[];
  /** Format y ticks as percentages (values in [0, 1]). */
  percent?: boolean;
  /** Logarithmic y axis (positive values only). */
  logY?: boolean;
}

export interface DotPanel {
  kind: 'dots';
  title: string;
  xLabel: string;
  /** One row per category, top to bottom: mean with a whisker from lo to hi. */
  rows: { label: string; mean: number; lo: number; hi: number }[];
  percent?: boolean;
}

export type Panel = LinePanel | DotPanel;

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

const FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    return niceTicks(lo - d, hi + d, count);
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function fmt(v: number, percent?: boolean): string {
  if (percent) return `${+(100 * v).toFixed(2)}%`;
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0);
  return String(+v.toPrecision(3));
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

function linePanel(p: LinePanel, box: Box): string {
  const pts = p.series.flatMap((s) => s.x.map((x, i) => [x, s.y[i]!] as const)).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.logY || y > 0));
  const parts: string[] = [];
  const plot = { x: box.x + 64, y: box.y + 28, w: box.w - 84, h: box.h - 72 };
  parts.push(`<text x="${box.x + box.w / 2}" y="${box.y + 18}" text-anchor="middle" font-size="15" font-weight="bold" ${FONT}>${esc(p.title)}</text>`);
  parts.push(`<rect x="${plot.x}" y="${plot.y}" width="${plot.w}" height="${plot.h}" fill="none" stroke="#444"/>`);
  if (pts.length === 0) {
    parts.push(`<text x="${plot.x + plot.w / 2}" y="${plot.y + plot.h / 2}" text-anchor="middle" font-size="13" ${FONT}>no data</text>`);
    return parts.join('\n');
  }
  const xs = pts.map((q) => q[0]);
  const tY = (v: number) => (p.logY ? Math.log10(v) : v);
  const ys = pts.map((q) => tY(q[1]));
  const xt = niceTicks(Math.min(...xs), Math.max(...xs));
  let yt: number[];
  if (p.logY) {
    const lo = Math.floor(Math.min(...ys));
    const hi = Math.ceil(Math.max(...ys));
    yt = [];
    for (let e = lo; e <= Math.max(hi, lo + 1); e++) yt.push(e);
  } else {
    yt = niceTicks(Math.min(...ys), Math.max(...ys));
  }
  const [x0, x1] = [Math.min(xt[0]!, ...xs), Math.max(xt.at(-1)!, ...xs)];
  const [y0, y1] = [Math.min(yt[0]!, ...ys), Math.max(yt.at(-1)!, ...ys)];
  const sx = (v: number) => plot.x + ((v - x0) / (x1 - x0 || 1)) * plot.w;
  const sy = (v: number) => plot.y + plot.h - ((tY(v) - y0) / (y1 - y0 || 1)) * plot.h;
  const syRaw = (t: number) => plot.y + plot.h - ((t - y0) / (y1 - y0 || 1)) * plot.h;
  for (const v of xt) {
    const X = sx(v).toFixed(1);
    parts.push(`<line x1="${X}" y1="${plot.y}" x2="${X}" y2="${plot.y + plot.h}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${X}" y="${plot.y + plot.h + 16}" text-anchor="middle" font-size="11" ${FONT}>${fmt(v)}</text>`);
  }
  for (const t of yt) {
    const Y = syRaw(t).toFixed(1);
    parts.push(`<line x1="${plot.x}" y1="${Y}" x2="${plot.x + plot.w}" y2="${Y}" stroke="#e4e4e4"/>`);
    const label = p.logY ? fmt(10 ** t) : fmt(t, p.percent);
    parts.push(`<text x="${plot.x - 6}" y="${(+Y + 4).toFixed(1)}" text-anchor="end" font-size="11" ${FONT}>${label}</text>`);
  }
  parts.push(`<text x="${plot.x + plot.w / 2}" y="${plot.y + plot.h + 34}" text-anchor="middle" font-size="12" ${FONT}>${esc(p.xLabel)}</text>`);
  for (const s of p.series) {
    const d = s.x
      .map((x, i) => [x, s.y[i]!] as const)
      .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.logY || y > 0))
      .map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`)
      .join(' ');
    if (!d) continue;
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6,4"' : ''}/>`);
    if (s.x.length === 1) parts.push(`<circle cx="${sx(s.x[0]!).toFixed(1)}" cy="${sy(s.y[0]!).toFixed(1)}" r="3" fill="${s.color}"/>`);
  }
  // Legend, inside the plot, in the corner that hides the fewest points of the curves.
  const legend = p.series.filter((s) => s.label);
  const lw = Math.min(plot.w - 8, 12 + 7 * Math.max(0, ...legend.map((s) => s.label.length)) + 30);
  const lh = legend.length * 16 + 6;
  if (legend.length) {
    const screen: [number, number][] = [];
    for (const s of p.series) {
      const q = s.x.map((x, i) => [x, s.y[i]!] as const).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.logY || y > 0));
      q.forEach(([x, y], i) => {
        if (i === 0) return screen.push([sx(x), sy(y)]);
        const [a, b] = [[sx(q[i - 1]![0]), sy(q[i - 1]![1])], [sx(x), sy(y)]] as const;
        for (let k = 1; k <= 16; k++) screen.push([a[0] + ((b[0] - a[0]) * k) / 16, a[1] + ((b[1] - a[1]) * k) / 16]);
      });
    }
    const corners = [
      [plot.x + plot.w - lw - 4, plot.y + 4],
      [plot.x + plot.w - lw - 4, plot.y + plot.h - lh - 4],
      [plot.x + 4, plot.y + 4],
      [plot.x + 4, plot.y + plot.h - lh - 4],
    ] as const;
    // Points within a few pixels of the box count too: a curve along the frame still collides with it.
    const m = 6;
    const hidden = corners.map(([cx, cy]) => screen.filter(([x, y]) => x >= cx - m && x <= cx + lw + m && y >= cy - m && y <= cy + lh + m).length);
    const [lx, ly] = corners[hidden.indexOf(Math.min(...hidden))]!;
    parts.push(`<rect x="${lx}" y="${ly}" width="${lw}" height="${lh}" fill="white" fill-opacity="0.85" stroke="#bbb"/>`);
    legend.forEach((s, i) => {
      const y = ly + 12 + i * 16;
      parts.push(`<line x1="${lx + 6}" y1="${y - 4}" x2="${lx + 30}" y2="${y - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6,4"' : ''}/>`);
      parts.push(`<text x="${lx + 36}" y="${y}" font-size="11" ${FONT}>${esc(s.label)}</text>`);
    });
  }
  return parts.join('\n');
}

function dotPanel(p: DotPanel, box: Box): string {
  const parts: string[] = [];
  const labelW = Math.min(box.w * 0.45, 12 + 7 * Math.max(0, ...p.rows.map((r) => r.label.length)));
  const plot = { x: box.x + labelW + 16, y: box.y + 28, w: box.w - labelW - 36, h: box.h - 72 };
  parts.push(`<text x="${box.x + box.w / 2}" y="${box.y + 18}" text-anchor="middle" font-size="15" font-weight="bold" ${FONT}>${esc(p.title)}</text>`);
  parts.push(`<rect x="${plot.x}" y="${plot.y}" width="${plot.w}" height="${plot.h}" fill="none" stroke="#444"/>`);
  const vals = p.rows.flatMap((r) => [r.lo, r.hi, r.mean]).filter(Number.isFinite);
  if (vals.length === 0) return parts.join('\n');
  const span = Math.max(...vals) - Math.min(...vals) || Math.abs(vals[0]!) || 1;
  const lo = Math.min(...vals) - 0.06 * span;
  const hi = Math.max(...vals) + 0.06 * span;
  const xt = niceTicks(lo, hi).filter((v) => v >= lo && v <= hi);
  const x0 = lo;
  const x1 = hi;
  const sx = (v: number) => plot.x + ((v - x0) / (x1 - x0 || 1)) * plot.w;
  for (const v of xt) {
    const X = sx(v).toFixed(1);
    parts.push(`<line x1="${X}" y1="${plot.y}" x2="${X}" y2="${plot.y + plot.h}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${X}" y="${plot.y + plot.h + 16}" text-anchor="middle" font-size="11" ${FONT}>${fmt(v, p.percent)}</text>`);
  }
  parts.push(`<text x="${plot.x + plot.w / 2}" y="${plot.y + plot.h + 34}" text-anchor="middle" font-size="12" ${FONT}>${esc(p.xLabel)}</text>`);
  const rowH = plot.h / Math.max(p.rows.length, 1);
  p.rows.forEach((r, i) => {
    const y = plot.y + rowH * (i + 0.5);
    parts.push(`<text x="${plot.x - 8}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="12" ${FONT}>${esc(r.label)}</text>`);
    parts.push(`<line x1="${sx(r.lo).toFixed(1)}" y1="${y.toFixed(1)}" x2="${sx(r.hi).toFixed(1)}" y2="${y.toFixed(1)}" stroke="#1f77b4" stroke-width="2"/>`);
    for (const v of [r.lo, r.hi]) parts.push(`<line x1="${sx(v).toFixed(1)}" y1="${(y - 5).toFixed(1)}" x2="${sx(v).toFixed(1)}" y2="${(y + 5).toFixed(1)}" stroke="#1f77b4" stroke-width="2"/>`);
    parts.push(`<circle cx="${sx(r.mean).toFixed(1)}" cy="${y.toFixed(1)}" r="4.5" fill="#d62728"/>`);
  });
  return parts.join('\n');
}

/** Panels side by side (`columns` per row), as one SVG document. */
export function chartSvg(panels: Panel[], options: { title?: string; panelWidth?: number; panelHeight?: number; columns?: number } = {}): string {
  const pw = options.panelWidth ?? 460;
  const ph = options.panelHeight ?? 320;
  const cols = Math.max(1, Math.min(options.columns ?? panels.length, panels.length));
  const rows = Math.ceil(panels.length / cols);
  const top = options.title ? 30 : 0;
  const W = pw * cols;
  const H = ph * rows + top;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  if (options.title) parts.push(`<text x="${W / 2}" y="21" text-anchor="middle" font-size="17" font-weight="bold" ${FONT}>${esc(options.title)}</text>`);
  panels.forEach((p, i) => {
    const box = { x: (i % cols) * pw, y: top + Math.floor(i / cols) * ph, w: pw, h: ph };
    parts.push(p.kind === 'lines' ? linePanel(p, box) : dotPanel(p, box));
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Renders an SVG document to a PNG file (atomically). */
export async function writePng(svg: string, file: string): Promise<{ width: number; height: number; bytes: number }> {
  const png = await sharp(Buffer.from(svg), { density: 96 }).png({ compressionLevel: 9 }).toBuffer({ resolveWithObject: true });
  await writeFileAtomic(file, png.data);
  return { width: png.info.width, height: png.info.height, bytes: png.data.length };
}

/** The three panels of `zoo plot` for one or more runs: loss, validation accuracy, learning rate. */
export function runPanels(runs: { name: string; records: EpochRecord[] }[]): Panel[] {
  const several = runs.length > 1;
  const label = (run: string, what: string) => (several ? `${run} ${what}` : what);
  const loss: Series[] = [];
  const acc: Series[] = [];
  const lr: Series[] = [];
  runs.forEach((run, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const x = run.records.map((r) => r.epoch);
    loss.push({ label: label(run.name, 'train'), x, y: run.records.map((r) => r.loss), color });
    loss.push({ label: label(run.name, 'val'), x, y: run.records.map((r) => r.valLoss), color: several ? color : PALETTE[1]!, dashed: true });
    acc.push({ label: label(run.name, 'top-1'), x, y: run.records.map((r) => r.valTop1), color });
    acc.push({ label: label(run.name, 'top-5'), x, y: run.records.map((r) => r.valTop5), color: several ? color : PALETTE[2]!, dashed: true });
    lr.push({ label: several ? run.name : '', x, y: run.records.map((r) => r.lr), color });
  });
  return [
    { kind: 'lines', title: 'Loss', xLabel: 'epoch', series: loss },
    { kind: 'lines', title: 'Validation accuracy', xLabel: 'epoch', series: acc, percent: true },
    { kind: 'lines', title: 'Learning rate (end of epoch)', xLabel: 'epoch', series: lr },
  ];
}
