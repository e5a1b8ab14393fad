import { describe, expect, it } from 'vitest';
import { escapeXml, formatTick, lineChartSvg, niceLogTicks, niceTicks } from '../src/plot.js';

/** Tiny XML checker: balanced tags, quoted attributes, no raw '<' or stray '&' in text. Returns the root tag name. */
function checkXml(xml: string): string {
  const stack: string[] = [];
  let root = '';
  for (const token of xml.match(/<[^>]*>|[^<]+/g) ?? []) {
    if (!token.startsWith('<')) {
      expect(token).not.toMatch(/&(?!(amp|lt|gt|quot|apos|#\d+);)/);
      expect(token).not.toContain('>');
      continue;
    }
    if (token.startsWith('</')) {
      expect(token).toMatch(/^<\/[A-Za-z][\w:-]*>$/);
      expect(stack.pop()).toBe(token.slice(2, -1));
      continue;
    }
    expect(token).toMatch(/^<[A-Za-z][\w:-]*(\s+[\w:-]+="[^"<&]*(&(amp|lt|gt|quot|apos);[^"<&]*)*")*\s*\/?>$/);
    const name = /^<([A-Za-z][\w:-]*)/.exec(token)![1]!;
    if (stack.length === 0) {
      expect(root).toBe(''); // a single root element
      root = name;
    }
    if (!token.endsWith('/>')) stack.push(name);
  }
  expect(stack).toEqual([]);
  return root;
}

type Tick = { value: number; px: number };
function ticks(svg: string, axis: 'x' | 'y'): Tick[] {
  const coord = axis === 'x' ? 'x1' : 'y1';
  const re = new RegExp(`<g class="${axis}-tick" data-value="[^"]*"><line class="grid" [^>]*?${coord}="([^"]+)"[^]*?<text[^>]*>([^<]*)</text></g>`, 'g');
  return [...svg.matchAll(re)].map((m) => ({ px: Number(m[1]), value: Number(m[2]) }));
}
function polylines(svg: string): [number, number][][] {
  return [...svg.matchAll(/<polyline points="([^"]*)"/g)].map((m) =>
    m[1]!.split(' ').map((pair) => pair.split(',').map(Number) as [number, number]),
  );
}
/** Pixel → data, from the first and last tick labels and positions (log10 space for log axes). */
function inverse(t: Tick[], log = false): (px: number) => number {
  const f = (v: number) => (log ? Math.log10(v) : v);
  const a = t[0]!;
  const b = t[t.length - 1]!;
  return (px) => {
    const v = f(a.value) + ((px - a.px) / (b.px - a.px)) * (f(b.value) - f(a.value));
    return log ? 10 ** v : v;
  };
}

describe('niceTicks', () => {
  it('hand-checked cases', () => {
    expect(niceTicks(0, 1)).toEqual({ ticks: [0, 0.2, 0.4, 0.6, 0.8, 1], step: 0.2, domain: [0, 1] });
    expect(niceTicks(0.13, 0.97)).toEqual({ ticks: [0, 0.2, 0.4, 0.6, 0.8, 1], step: 0.2, domain: [0, 1] });
    expect(niceTicks(-3.7, 12.2)).toEqual({ ticks: [-5, 0, 5, 10, 15], step: 5, domain: [-5, 15] });
    // [0, 15]: enclosing ticks give 4 (step 5) or 9 (step 2); ticks inside the data give 8 at step 2
    expect(niceTicks(0, 15)).toEqual({ ticks: [0, 2, 4, 6, 8, 10, 12, 14], step: 2, domain: [0, 15] });
    expect(niceTicks(2, 2)).toEqual({ ticks: [1, 1.5, 2, 2.5, 3], step: 0.5, domain: [1, 3] });
    expect(niceTicks(0.7, 0.3).ticks).toEqual([0.3, 0.4, 0.5, 0.6, 0.7]);
    expect(niceTicks(1000, 48000).ticks).toEqual([0, 10000, 20000, 30000, 40000, 50000]);
  });
  it('always gives 5–8 ticks at 1/2/5 × 10^k steps within a domain that covers the data', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 2000; i++) {
      const lo = (rand() - 0.5) * 10 ** Math.floor(rand() * 12 - 6);
      const hi = lo + rand() * 10 ** Math.floor(rand() * 12 - 6);
      const r = niceTicks(lo, hi);
      expect(r.ticks.length).toBeGreaterThanOrEqual(5);
      expect(r.ticks.length).toBeLessThanOrEqual(8);
      const mantissa = r.step / 10 ** Math.floor(Math.log10(r.step) + 1e-12);
      expect([1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-9)).toBe(true);
      expect(r.domain[0]).toBeLessThanOrEqual(Math.min(lo, hi));
      expect(r.domain[1]).toBeGreaterThanOrEqual(Math.max(lo, hi));
      for (const t of r.ticks) expect(t >= r.domain[0] - 1e-12 && t <= r.domain[1] + 1e-12).toBe(true);
    }
  });
  it('log ticks', () => {
    expect(niceLogTicks(1, 1000)).toEqual({ ticks: [1, 10, 100, 1000], step: 0, domain: [1, 1000] });
    expect(niceLogTicks(3, 40).ticks).toEqual([1, 2, 5, 10, 20, 50, 100]);
    expect(niceLogTicks(1e-3, 1e12).ticks).toEqual([1e-3, 1, 1e3, 1e6, 1e9, 1e12]);
  });
  it('formatTick', () => {
    expect(formatTick(0.30000000000000004)).toBe('0.3');
    expect(formatTick(1500)).toBe('1500');
    expect(formatTick(2e6)).toBe('2e6');
    expect(formatTick(2.5e-5)).toBe('2.5e-5');
  });
});

describe('lineChartSvg', () => {
  const opts = {
    title: 'loss',
    xLabel: 'step',
    yLabel: 'loss',
    series: [
      { name: 'train', points: [[0, 4], [50, 2.5], [100, 1.25]] as [number, number][] },
      { name: 'val', points: [[100, 1.5]] as [number, number][], color: '#000000' },
    ],
  };
  it('is well-formed XML with an svg root', () => {
    const svg = lineChartSvg(opts);
    expect(checkXml(svg)).toBe('svg');
    expect(svg).toContain('width="720" height="420"');
  });
  it('maps known points to coordinates that invert back through the tick labels', () => {
    const svg = lineChartSvg(opts);
    const xt = ticks(svg, 'x');
    const yt = ticks(svg, 'y');
    expect(xt.map((t) => t.value)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(yt.map((t) => t.value)).toEqual([1, 1.5, 2, 2.5, 3, 3.5, 4]);
    const [line] = polylines(svg);
    expect(line).toHaveLength(3);
    const fx = inverse(xt);
    const fy = inverse(yt);
    const back = line!.map(([px, py]) => [fx(px), fy(py)]);
    opts.series[0]!.points.forEach(([x, y], i) => {
      expect(back[i]![0]).toBeCloseTo(x, 1);
      expect(back[i]![1]).toBeCloseTo(y, 2);
    });
    // y grows upwards: a higher loss is nearer the top
    expect(line![0]![1]).toBeLessThan(line![2]![1]);
    // the lone validation point is a dot at (100, 1.5)
    const dot = /<circle cx="([^"]+)" cy="([^"]+)"/.exec(svg)!;
    expect(fx(Number(dot[1]))).toBeCloseTo(100, 1);
    expect(fy(Number(dot[2]))).toBeCloseTo(1.5, 2);
  });
  it('maps log-x points', () => {
    const svg = lineChartSvg({ ...opts, logX: true, series: [{ name: 's', points: [[1, 1], [100, 2], [10, 3], [0, 5]] }] });
    const xt = ticks(svg, 'x');
    expect(xt.map((t) => t.value)).toEqual([1, 2, 5, 10, 20, 50, 100]);
    const fx = inverse(xt, true);
    const [line] = polylines(svg);
    expect(line!.map(([px]) => fx(px))).toEqual([expect.closeTo(1, 2), expect.closeTo(100, 0), expect.closeTo(10, 1)]);
    // x = 0 cannot be shown on a log axis: dropped (y = 5 never widened the y axis either)
    expect(Math.max(...ticks(svg, 'y').map((t) => t.value))).toBe(3);
  });
  it('skips non-finite points, breaking the line', () => {
    const svg = lineChartSvg({
      ...opts,
      series: [{ name: 's', points: [[0, 1], [1, NaN], [2, 3], [3, 4], [4, Infinity], [5, 2], [NaN, 9]] }],
    });
    expect(polylines(svg)).toHaveLength(1);
    expect(polylines(svg)[0]).toHaveLength(2);
    expect(svg.match(/<circle /g)).toHaveLength(2);
    expect(svg).not.toMatch(/NaN|Infinity/);
    expect(Math.max(...ticks(svg, 'y').map((t) => t.value))).toBe(4);
  });
  it('escapes text and attributes', () => {
    const svg = lineChartSvg({
      title: 'loss <a> & "b"',
      xLabel: "it's",
      yLabel: 'y\u0001',
      series: [{ name: '<script>', points: [[0, 0], [1, 1]], color: '"/><script>' }],
    });
    checkXml(svg);
    expect(svg).toContain('loss &lt;a&gt; &amp; &quot;b&quot;');
    expect(svg).toContain('it&apos;s');
    expect(svg).toContain('&lt;script&gt;');
    expect(svg).not.toContain('<script');
    expect(svg).not.toContain('\u0001');
    expect(escapeXml('a&b<c>"d"\'e')).toBe('a&amp;b&lt;c&gt;&quot;d&quot;&apos;e');
  });
  it('draws empty charts and a legend entry per series', () => {
    const svg = lineChartSvg({ title: '', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [] }, { name: 'b', points: [[1, 1], [2, 2]] }] });
    checkXml(svg);
    expect(svg.match(/<g class="legend">[^]*?<\/g>/)![0].match(/<text/g)).toHaveLength(2);
    checkXml(lineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [] }));
  });
});
