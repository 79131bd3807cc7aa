/**
 * Scenes of Fashion-MNIST items on textured backgrounds: what the generated detection set (VOC layout) and
 * the generated segmentation set (ADE20K layout) are drawn from, so that both tasks see the same images.
 *
 * A scene is `minSide`-`maxSide` pixels a side (width and height drawn separately) on a textured background
 * (linear gradient, stripes, checkerboard or smooth value noise, with a few flat distractor shapes and pixel
 * noise), with 1-`maxObjects` items pasted at sizes from `minItem` to `maxItem` pixels (log-uniform), tinted,
 * blended by their own intensity, and placed so that the boxes around their painted pixels share at most 10%
 * of the smaller one. Items come from an `ItemDeck`: every item of a split is used once before any is used
 * again.
 *
 * `renderScene` draws everything from the one `Rng` it is given, in a fixed order, so a scene is a function
 * of its stream's seed and the deck's state. `sceneLabels` gives the scene's pixel labels: each pixel belongs
 * to whatever makes up most of its color, the background or one of the items.
 */
import type { IdxSplit } from './idx.js';
import { resample } from './transforms.js';
import type { Rng } from '../util/random.js';

/** Background textures. */
export const BACKGROUNDS = ['gradient', 'stripes', 'checker', 'noise'] as const;
export type Background = (typeof BACKGROUNDS)[number];

/** One pasted item. */
export interface SceneObject {
  /** Fashion-MNIST label (0..9). */
  label: number;
  /** The item's index in its Fashion-MNIST split. */
  item: number;
  /** Devkit box (1-based, inclusive) around the painted pixels. */
  box: [number, number, number, number];
  /** Where the item's square was pasted (0-based pixels) and its side. */
  x: number;
  y: number;
  size: number;
  /** Blend weight of each pixel of the square, [size * size]: the box is the extent of its non-zero values. */
  alpha: Float32Array;
}

/** A rendered scene: RGB pixels (HWC) and its objects. */
export interface Scene {
  width: number;
  height: number;
  pixels: Uint8Array;
  background: Background;
  objects: SceneObject[];
}

/** Item intensities (0..255) below this are background; from it up to FULL the item blends in. */
const ALPHA_FLOOR = 12;
const ALPHA_FULL = 48;
/** Largest share of the smaller of two boxes they may have in common. */
const MAX_OVERLAP = 0.1;
const PLACEMENT_TRIES = 30;

type Rgb = [number, number, number];

function randomColor(rng: Rng): Rgb {
  return [rng.range(10, 220), rng.range(10, 220), rng.range(10, 220)];
}

/** Fills `px` (HWC float, 0..255) with one of the textures. */
function paintBackground(px: Float32Array, w: number, h: number, rng: Rng): Background {
  const kind = BACKGROUNDS[rng.int(BACKGROUNDS.length)]!;
  const c0 = randomColor(rng);
  const c1 = randomColor(rng);
  const put = (i: number, t: number) => {
    px[i] = c0[0] + t * (c1[0] - c0[0]);
    px[i + 1] = c0[1] + t * (c1[1] - c0[1]);
    px[i + 2] = c0[2] + t * (c1[2] - c0[2]);
  };
  const angle = rng.range(0, 2 * Math.PI);
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  if (kind === 'gradient') {
    const span = Math.abs(cos) * w + Math.abs(sin) * h;
    const lo = Math.min(0, cos * w) + Math.min(0, sin * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) put((y * w + x) * 3, (x * cos + y * sin - lo) / span);
  } else if (kind === 'stripes') {
    const period = rng.range(6, 28);
    const hard = rng.uniform() < 0.5;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const s = 0.5 + 0.5 * Math.sin((2 * Math.PI * (x * cos + y * sin)) / period);
        put((y * w + x) * 3, hard ? (s > 0.5 ? 1 : 0) : s);
      }
    }
  } else if (kind === 'checker') {
    const cell = 6 + rng.int(27);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) put((y * w + x) * 3, (Math.floor(x / cell) + Math.floor(y / cell)) & 1);
  } else {
    // Value noise: random colors on a coarse grid, interpolated bilinearly.
    const cell = rng.range(10, 40);
    const gw = Math.ceil(w / cell) + 2;
    const gh = Math.ceil(h / cell) + 2;
    const grid = Float32Array.from({ length: gw * gh * 3 }, () => rng.range(10, 230));
    for (let y = 0; y < h; y++) {
      const gy = y / cell;
      const y0 = Math.floor(gy);
      const fy = gy - y0;
      for (let x = 0; x < w; x++) {
        const gx = x / cell;
        const x0 = Math.floor(gx);
        const fx = gx - x0;
        const a = (y0 * gw + x0) * 3;
        const b = a + 3;
        const c = a + gw * 3;
        const d = c + 3;
        const o = (y * w + x) * 3;
        for (let ch = 0; ch < 3; ch++) {
          const top = grid[a + ch]! + fx * (grid[b + ch]! - grid[a + ch]!);
          const bottom = grid[c + ch]! + fx * (grid[d + ch]! - grid[c + ch]!);
          px[o + ch] = top + fy * (bottom - top);
        }
      }
    }
  }
  return kind;
}

/** A few flat rectangles and ellipses: edges and blobs that are not objects. */
function paintDistractors(px: Float32Array, w: number, h: number, rng: Rng): void {
  const n = rng.int(4);
  for (let k = 0; k < n; k++) {
    const color = randomColor(rng);
    const bw = 8 + rng.int(50);
    const bh = 8 + rng.int(50);
    const x0 = rng.int(w) - (bw >> 1);
    const y0 = rng.int(h) - (bh >> 1);
    const ellipse = rng.uniform() < 0.5;
    for (let y = Math.max(0, y0); y < Math.min(h, y0 + bh); y++) {
      for (let x = Math.max(0, x0); x < Math.min(w, x0 + bw); x++) {
        if (ellipse) {
          const u = (x - x0 + 0.5) / bw - 0.5;
          const v = (y - y0 + 0.5) / bh - 0.5;
          if (u * u + v * v > 0.25) continue;
        }
        px.set(color, (y * w + x) * 3);
      }
    }
  }
}

/**
 * The scene as bytes: every value plus uniform noise of width `amplitude` (sensor noise over background and
 * items alike), rounded and clamped. The noise comes from an inline xorshift32 stream seeded by `seed`: a
 * method call per value on `Rng` took most of a scene's time.
 */
function toBytesWithNoise(px: Float32Array, amplitude: number, seed: number): Uint8Array {
  const out = new Uint8Array(px.length);
  let x = seed | 1;
  const k = amplitude / 4294967296;
  const offset = 0.5 - amplitude / 2;
  for (let i = 0; i < px.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const v = px[i]! + (x >>> 0) * k + offset;
    out[i] = v <= 0 ? 0 : v >= 255 ? 255 : v | 0;
  }
  return out;
}

/** The item resized to `size`, as blend weights, and the extent of its non-zero weights (or undefined). */
function itemAlpha(split: IdxSplit, item: number, size: number): { alpha: Float32Array; values: Float32Array; extent?: [number, number, number, number] } {
  const n = split.height * split.width;
  const src = { data: split.images.subarray(item * n, (item + 1) * n), height: split.height, width: split.width, channels: 1 };
  const values = resample(src, { x: 0, y: 0, width: split.width, height: split.height }, size, size).data;
  const alpha = new Float32Array(size * size);
  let x0 = size;
  let y0 = size;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const v = values[y * size + x]!;
      if (v < ALPHA_FLOOR) continue;
      alpha[y * size + x] = Math.min(1, v / ALPHA_FULL);
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  return { alpha, values, ...(x1 >= 0 ? { extent: [x0, y0, x1, y1] as [number, number, number, number] } : {}) };
}

function overlapsTooMuch(a: readonly number[], b: readonly number[]): boolean {
  const iw = Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!) + 1;
  const ih = Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!) + 1;
  if (iw <= 0 || ih <= 0) return false;
  const area = (r: readonly number[]) => (r[2]! - r[0]! + 1) * (r[3]! - r[1]! + 1);
  return iw * ih > MAX_OVERLAP * Math.min(area(a), area(b));
}

/** A per-split deck of item indices: a seeded shuffle, reshuffled when used up. */
export class ItemDeck {
  private order: Int32Array;
  private pos = 0;

  constructor(
    readonly count: number,
    private readonly rng: Rng,
  ) {
    this.order = Int32Array.from({ length: count }, (_, i) => i);
    rng.shuffle(this.order);
  }

  next(): number {
    if (this.pos === this.count) {
      this.rng.shuffle(this.order);
      this.pos = 0;
    }
    return this.order[this.pos++]!;
  }
}

/** Scene geometry. */
export interface SceneOptions {
  /** Range of a scene's width and height (drawn separately). */
  minSide: number;
  maxSide: number;
  /** Range of a pasted item's side (log-uniform, at most the scene's shorter side). */
  minItem: number;
  maxItem: number;
  /** Items per scene: 1 to this (fewer when an item finds no place). */
  maxObjects: number;
}

/** Renders one scene (module comment): background, distractors, then the items from `deck`. */
export function renderScene(rng: Rng, split: IdxSplit, deck: ItemDeck, options: SceneOptions): Scene {
  const side = () => options.minSide + rng.int(options.maxSide - options.minSide + 1);
  const width = side();
  const height = side();
  const px = new Float32Array(width * height * 3);
  const background = paintBackground(px, width, height, rng);
  paintDistractors(px, width, height, rng);
  const noise = rng.range(4, 20);
  const noiseSeed = rng.nextU32();

  const wanted = 1 + rng.int(options.maxObjects);
  const logLo = Math.log(options.minItem);
  const logHi = Math.log(Math.min(options.maxItem, width, height));
  const objects: SceneObject[] = [];
  for (let k = 0; k < wanted; k++) {
    const item = deck.next();
    const size = Math.round(Math.exp(rng.range(logLo, logHi)));
    const { alpha, values, extent } = itemAlpha(split, item, size);
    if (!extent) continue;
    let placed: { x: number; y: number; box: [number, number, number, number] } | undefined;
    for (let t = 0; t < PLACEMENT_TRIES && !placed; t++) {
      const x = rng.int(width - size + 1);
      const y = rng.int(height - size + 1);
      const box: [number, number, number, number] = [x + extent[0] + 1, y + extent[1] + 1, x + extent[2] + 1, y + extent[3] + 1];
      if (!objects.some((o) => overlapsTooMuch(o.box, box))) placed = { x, y, box };
    }
    if (!placed) continue;
    const tint = [rng.range(0.55, 1), rng.range(0.55, 1), rng.range(0.55, 1)];
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const a = alpha[y * size + x]!;
        if (a === 0) continue;
        const o = ((placed.y + y) * width + placed.x + x) * 3;
        const v = values[y * size + x]!;
        for (let c = 0; c < 3; c++) px[o + c] = px[o + c]! * (1 - a) + v * tint[c]! * a;
      }
    }
    objects.push({ label: split.labels[item]!, item, box: placed.box, x: placed.x, y: placed.y, size, alpha });
  }
  return { width, height, pixels: toBytesWithNoise(px, noise, noiseSeed), background, objects };
}

/**
 * The scene's pixel labels, [height * width] row-major: `background` where the background makes up most of
 * the pixel's color, `valueOf(object)` where an item does. Items blend over what is below them in paint
 * order, so after items with weights a1, a2 (a2 painted last) a pixel is a2 of item 2, (1 - a2) a1 of item 1
 * and (1 - a2)(1 - a1) background; the largest share wins (a tie keeps what was there first). A lone item
 * owns the pixels where its weight passes 0.5: its faint fringe stays background.
 */
export function sceneLabels(scene: Pick<Scene, 'width' | 'height' | 'objects'>, valueOf: (o: SceneObject) => number, background = 0): Uint8Array {
  const { width, height } = scene;
  const labels = new Uint8Array(width * height).fill(background);
  // The largest share so far of each pixel: the other shares scale by (1 - a) together, so it stays the largest.
  const share = new Float64Array(width * height).fill(1);
  for (const o of scene.objects) {
    const value = valueOf(o);
    for (let y = 0; y < o.size; y++) {
      for (let x = 0; x < o.size; x++) {
        const a = o.alpha[y * o.size + x]!;
        if (a === 0) continue;
        const i = (o.y + y) * width + o.x + x;
        const below = share[i]! * (1 - a);
        if (a > below) {
          share[i] = a;
          labels[i] = value;
        } else {
          share[i] = below;
        }
      }
    }
  }
  return labels;
}
