/** Dependency-free SVG line charts (loss curves, benchmark sweeps). */

export type Point = readonly [number, number];

export interface Series {
  name: string;
  points: readonly Point[];
  /** Any SVG color; default from a colorblind-friendly palette, by series index. */
  color?: string;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  /** Default 720. */
  width?: number;
  /** Default 420. */
  height?: number;
  /** Logarithmic x axis; points with x ≤ 0 are skipped. */
  logX?: boolean;
  /** Logarithmic y axis; points with y ≤ 0 are skipped. */
  logY?: boolean;
}

export interface NiceTicks {
  ticks: number[];
  /** Distance between ticks (linear axes); for log axes the ratio between ticks is not constant and this is 0. */
  step: number;
  /** The axis range: the data range widened to the outer ticks when that gives 5–8 ticks. */
  domain: [number, number];
}

export const PALETTE: readonly string[] = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

/** Escape text for XML content and attribute values; drops characters XML 1.0 cannot hold. */
export function escapeXml(text: string): string {
  return text
    .replace(/[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** `m × 10^k` parsed from its decimal form, so `3 × 0.1` is exactly `0.3`. */
function decimal(m: number, k: number): number {
  return Number(`${m}e${k}`);
}

/**
 * 5–8 (by default) ticks at multiples of 1, 2 or 5 × 10^k covering [min, max]. The largest step
 * whose ticks, widened to enclose the data, number between minTicks and maxTicks wins (the domain
 * then ends on ticks); failing that, the largest step with that many ticks inside the data range
 * (the domain is the data range). One of the two always exists for the default 5–8.
 */
export function niceTicks(min: number, max: number, options: { minTicks?: number; maxTicks?: number } = {}): NiceTicks {
  const minTicks = options.minTicks ?? 5;
  const maxTicks = options.maxTicks ?? 8;
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new RangeError(`niceTicks: non-finite range [${min}, ${max}]`);
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const half = min === 0 ? 1 : Math.abs(min) / 2;
    min -= half;
    max += half;
  }
  const e = Math.floor(Math.log10(max - min));
  const steps: [number, number][] = [];
  for (let k = e + 1; k >= e - 3; k--) for (const m of [5, 2, 1]) steps.push([m, k]);

  const build = (m: number, k: number, from: number, to: number): number[] => {
    const ticks: number[] = [];
    for (let i = from; i <= to; i++) ticks.push(decimal(i * m, k));
    return ticks;
  };
  for (const [m, k] of steps) {
    const step = decimal(m, k);
    // The 1e-9 slack absorbs float noise (0.3 / 0.1 = 2.9999999999999996); the checks keep coverage exact.
    let lo = Math.floor(min / step + 1e-9);
    let hi = Math.ceil(max / step - 1e-9);
    if (decimal(lo * m, k) > min) lo--;
    if (decimal(hi * m, k) < max) hi++;
    const count = hi - lo + 1;
    if (count >= minTicks && count <= maxTicks) {
      const ticks = build(m, k, lo, hi);
      return { ticks, step, domain: [ticks[0]!, ticks[ticks.length - 1]!] };
    }
  }
  for (const [m, k] of steps) {
    const step = decimal(m, k);
    let lo = Math.ceil(min / step - 1e-9);
    let hi = Math.floor(max / step + 1e-9);
    if (decimal(lo * m, k) < min) lo++;
    if (decimal(hi * m, k) > max) hi--;
    const count = hi - lo + 1;
    if (count >= minTicks && count <= maxTicks) return { ticks: build(m, k, lo, hi), step, domain: [min, max] };
  }
  // Unreachable for minTicks ≤ 5 and maxTicks ≥ 8; a plain fallback for unusual bounds.
  const step = (max - min) / (minTicks - 1);
  return { ticks: Array.from({ length: minTicks }, (_, i) => min + i * step), step, domain: [min, max] };
}

/**
 * Ticks for a log axis over [min, max] (min > 0): the domain is widened to whole decades;
 * up to two decades get 1, 2, 5 × 10^k, more get powers of ten (every n-th, at most 8).
 */
export function niceLogTicks(min: number, max: number): NiceTicks {
  if (!(min > 0) || !(max > 0) || !Number.isFinite(min) || !Number.isFinite(max)) {
    throw new RangeError(`niceLogTicks: range [${min}, ${max}] is not positive and finite`);
  }
  if (min > max) [min, max] = [max, min];
  const a = Math.floor(Math.log10(min) + 1e-9);
  let b = Math.ceil(Math.log10(max) - 1e-9);
  if (b <= a) b = a + 1;
  const decades = b - a;
  const ticks: number[] = [];
  if (decades <= 2) {
    for (let k = a; k < b; k++) for (const m of [1, 2, 5]) ticks.push(decimal(m, k));
    ticks.push(decimal(1, b));
  } else {
    const stride = Math.ceil(decades / 7); // at most 8 ticks
    b = a + Math.ceil(decades / stride) * stride;
    for (let k = a; k <= b; k += stride) ticks.push(decimal(1, k));
  }
  return { ticks, step: 0, domain: [decimal(1, a), decimal(1, b)] };
}

/** Tick label: `0`, `0.25`, `1500`, and exponent form (`1e6`, `2.5e-5`) for very large or small values. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-4) return Number(v.toPrecision(6)).toExponential().replace('e+', 'e');
  return String(Number(v.toPrecision(12)));
}

/** SVG coordinates: two decimals, no trailing zeros. */
function num(v: number): string {
  const r = Math.round(v * 100) / 100;
  return String(Object.is(r, -0) ? 0 : r);
}

interface Axis {
  ticks: number[];
  /** Data value → pixel. */
  map(v: number): number;
}

function makeAxis(values: number[], log: boolean, p0: number, p1: number): Axis {
  let nice: NiceTicks;
  if (values.length === 0) nice = log ? niceLogTicks(1, 10) : niceTicks(0, 1);
  else {
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    nice = log ? niceLogTicks(lo, hi) : niceTicks(lo, hi);
  }
  const t = log ? Math.log10 : (v: number) => v;
  const d0 = t(nice.domain[0]);
  const d1 = t(nice.domain[1]);
  return { ticks: nice.ticks, map: (v) => p0 + ((t(v) - d0) / (d1 - d0)) * (p1 - p0) };
}

function minMaxFree(values: number[]): number[] {
  // Math.min(...values) overflows the stack for very long series; reduce to two values first.
  if (values.length < 50_000) return values;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/**
 * A standalone SVG document (as a string) with a line chart: title, axes with nice ticks and
 * labels, grid lines, a legend, and one polyline per series. Non-finite points (and non-positive
 * ones on log axes) are skipped and break the line; a lone point between gaps is drawn as a dot.
 */
export function lineChartSvg(options: LineChartOptions): string {
  const width = options.width ?? 720;
  const height = options.height ?? 420;
  const logX = options.logX === true;
  const logY = options.logY === true;
  const usable = (p: Point): boolean =>
    Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!logX || p[0] > 0) && (!logY || p[1] > 0);

  const margin = { top: options.title ? 40 : 16, right: 20, bottom: 52, left: 72 };
  const x0 = margin.left;
  const x1 = width - margin.right;
  const y0 = margin.top;
  const y1 = height - margin.bottom;

  const pts = options.series.flatMap((s) => s.points.filter(usable));
  const xAxis = makeAxis(minMaxFree(pts.map((p) => p[0])), logX, x0, x1);
  const yAxis = makeAxis(minMaxFree(pts.map((p) => p[1])), logY, y1, y0);

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${num(width)}" height="${num(height)}" viewBox="0 0 ${num(width)} ${num(height)}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<title>${escapeXml(options.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${num(width)}" height="${num(height)}" fill="#ffffff"/>`);
  if (options.title) {
    out.push(`<text class="title" x="${num(width / 2)}" y="24" text-anchor="middle" font-size="16">${escapeXml(options.title)}</text>`);
  }

  out.push('<g class="x-axis">');
  for (const v of xAxis.ticks) {
    const px = num(xAxis.map(v));
    out.push(
      `<g class="x-tick" data-value="${v}">` +
        `<line class="grid" x1="${px}" y1="${num(y0)}" x2="${px}" y2="${num(y1)}" stroke="#e5e5e5"/>` +
        `<line x1="${px}" y1="${num(y1)}" x2="${px}" y2="${num(y1 + 5)}" stroke="#333333"/>` +
        `<text x="${px}" y="${num(y1 + 18)}" text-anchor="middle">${escapeXml(formatTick(v))}</text></g>`,
    );
  }
  out.push(`<line class="axis" x1="${num(x0)}" y1="${num(y1)}" x2="${num(x1)}" y2="${num(y1)}" stroke="#333333"/>`);
  out.push(`<text class="label" x="${num((x0 + x1) / 2)}" y="${num(height - 12)}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  out.push('</g>');

  out.push('<g class="y-axis">');
  for (const v of yAxis.ticks) {
    const py = num(yAxis.map(v));
    out.push(
      `<g class="y-tick" data-value="${v}">` +
        `<line class="grid" x1="${num(x0)}" y1="${py}" x2="${num(x1)}" y2="${py}" stroke="#e5e5e5"/>` +
        `<line x1="${num(x0 - 5)}" y1="${py}" x2="${num(x0)}" y2="${py}" stroke="#333333"/>` +
        `<text x="${num(x0 - 8)}" y="${num(Number(py) + 4)}" text-anchor="end">${escapeXml(formatTick(v))}</text></g>`,
    );
  }
  out.push(`<line class="axis" x1="${num(x0)}" y1="${num(y0)}" x2="${num(x0)}" y2="${num(y1)}" stroke="#333333"/>`);
  const ly = num((y0 + y1) / 2);
  out.push(`<text class="label" x="18" y="${ly}" text-anchor="middle" transform="rotate(-90 18 ${ly})">${escapeXml(options.yLabel)}</text>`);
  out.push('</g>');

  options.series.forEach((s, i) => {
    const color = escapeXml(s.color ?? PALETTE[i % PALETTE.length]!);
    out.push(`<g class="series" data-name="${escapeXml(s.name)}">`);
    const segments: string[][] = [[]];
    for (const p of s.points) {
      if (usable(p)) segments[segments.length - 1]!.push(`${num(xAxis.map(p[0]))},${num(yAxis.map(p[1]))}`);
      else if (segments[segments.length - 1]!.length > 0) segments.push([]);
    }
    for (const seg of segments) {
      if (seg.length === 1) {
        const [cx, cy] = seg[0]!.split(',');
        out.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${color}"/>`);
      } else if (seg.length > 1) {
        out.push(`<polyline points="${seg.join(' ')}" fill="none" stroke="${color}" stroke-width="1.75" stroke-linejoin="round"/>`);
      }
    }
    out.push('</g>');
  });

  if (options.series.length > 0) {
    const longest = Math.max(...options.series.map((s) => [...s.name].length));
    const boxW = 36 + longest * 7;
    const boxH = 8 + options.series.length * 18;
    const bx = x1 - boxW - 8;
    const by = y0 + 8;
    out.push(`<g class="legend">`);
    out.push(`<rect x="${num(bx)}" y="${num(by)}" width="${num(boxW)}" height="${num(boxH)}" fill="#ffffff" fill-opacity="0.85" stroke="#cccccc"/>`);
    options.series.forEach((s, i) => {
      const color = escapeXml(s.color ?? PALETTE[i % PALETTE.length]!);
      const cy = by + 13 + i * 18;
      out.push(
        `<line x1="${num(bx + 8)}" y1="${num(cy)}" x2="${num(bx + 26)}" y2="${num(cy)}" stroke="${color}" stroke-width="2.5"/>` +
          `<text x="${num(bx + 31)}" y="${num(cy + 4)}">${escapeXml(s.name)}</text>`,
      );
    });
    out.push('</g>');
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
