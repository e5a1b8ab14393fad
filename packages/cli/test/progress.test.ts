import { describe, expect, it } from 'vitest';
import { Progress, RateSmoother, formatDuration, formatLoss, formatPlainLine, formatRate, formatTtyLine, renderBar } from '../src/progress.js';

function fakeStream(isTTY: boolean, columns = 80) {
  const chunks: string[] = [];
  return { isTTY, columns, chunks, write: (s: string) => chunks.push(s), get text() { return chunks.join(''); } };
}
function fakeClock() {
  const c = { t: 0, now: () => c.t };
  return c;
}
const CLEAR = '\r\x1b[2K';

describe('formatting helpers', () => {
  it('formatDuration', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(45)).toBe('45s');
    expect(formatDuration(59.6)).toBe('1m00s');
    expect(formatDuration(192)).toBe('3m12s');
    expect(formatDuration(3599.4)).toBe('59m59s');
    expect(formatDuration(3600)).toBe('1h00m');
    expect(formatDuration(3725)).toBe('1h02m');
    expect(formatDuration(2 * 86400 + 3 * 3600)).toBe('2d03h');
    expect(formatDuration(-1)).toBe('--');
    expect(formatDuration(NaN)).toBe('--');
    expect(formatDuration(Infinity)).toBe('--');
  });
  it('formatRate', () => {
    expect(formatRate(1234.4)).toBe('1,234 tok/s');
    expect(formatRate(3.46)).toBe('3.5 tok/s');
    expect(formatRate(2_500_000)).toBe('2.50M tok/s');
    expect(formatRate(999_999.7)).toBe('1.00M tok/s');
    expect(formatRate(3.2e9, 'FLOP/s')).toBe('3.20G FLOP/s');
    expect(formatRate(Infinity)).toBe('-- tok/s');
  });
  it('renderBar', () => {
    expect(renderBar(0.5, 10)).toBe('[#####.....]');
    expect(renderBar(0.24, 10)).toBe('[##........]');
    expect(renderBar(0.999, 10)).toBe('[#########.]');
    expect(renderBar(1.2, 4)).toBe('[####]');
    expect(renderBar(-1, 3)).toBe('[...]');
    expect(renderBar(NaN, 3)).toBe('[...]');
    expect(renderBar(0.3, 10)).toBe('[###.......]'); // 0.3 * 10 is 3.0000000000000004 or 2.9999999999999996 in floats
  });
  it('formatLoss', () => {
    expect(formatLoss(2.31414)).toBe('2.3141');
    expect(formatLoss(NaN)).toBe('nan');
    expect(formatLoss(Infinity)).toBe('inf');
  });
});

describe('line layout', () => {
  const state = { step: 120, total: 500, loss: 2.31414, tokensPerSecond: 1234, phase: 'train', etaSeconds: 192 };
  it('fits the bar into the terminal width', () => {
    const line = formatTtyLine(state, 80);
    expect(line).toBe('train  [####...............]  step 120/500  loss 2.3141  1,234 tok/s  ETA 3m12s');
    expect(line.length).toBe(79);
    expect(formatTtyLine(state, 200)).toBe('train  [#######.......................]  step 120/500  loss 2.3141  1,234 tok/s  ETA 3m12s');
  });
  it('drops the bar, then cuts the line, on narrow terminals', () => {
    expect(formatTtyLine(state, 60)).toBe('train  step 120/500  loss 2.3141  1,234 tok/s  ETA 3m12s');
    expect(formatTtyLine(state, 40)).toBe('train  step 120/500  loss 2.3141  1,234'); // 39 characters
  });
  it('plain line has a percentage, label and extras', () => {
    expect(formatPlainLine({ ...state, label: 'run1', extra: { lr: 0.00030001, gn: 2 } })).toBe(
      'run1 train  step 120/500 (24%)  loss 2.3141  1,234 tok/s  ETA 3m12s  lr 0.0003  gn 2',
    );
    expect(formatPlainLine({ step: 7, total: 0 })).toBe('step 7');
  });
});

describe('RateSmoother', () => {
  it('follows rate changes gradually, weighted by elapsed time', () => {
    const r = new RateSmoother(10);
    r.observe(0, 0);
    expect(r.rate).toBeUndefined();
    for (let i = 1; i <= 10; i++) r.observe(10 * i, i);
    expect(r.rate).toBeCloseTo(10, 12);
    expect(r.eta(50)).toBeCloseTo(5, 12);
    r.observe(120, 11); // 20 steps in 1 s: alpha = 1 - e^-0.1
    expect(r.rate).toBeCloseTo(10 + 10 * (1 - Math.exp(-0.1)), 12);
    expect(r.rate).toBeCloseTo(10.9516, 4);
    r.observe(5, 12); // restarted
    expect(r.rate).toBeUndefined();
    expect(r.eta(10)).toBeUndefined();
  });
});

describe('Progress on a terminal', () => {
  it('redraws one line in place, throttled, with an ETA from the smoothed rate', () => {
    const s = fakeStream(true);
    const clock = fakeClock();
    const p = new Progress({ total: 100, stream: s, now: clock.now });
    p.update({ step: 1, loss: 3, tokensPerSecond: 100, phase: 'train' });
    clock.t = 50;
    p.update({ step: 2, loss: 3, tokensPerSecond: 100, phase: 'train' }); // throttled
    clock.t = 100;
    p.update({ step: 3, loss: 2.5, tokensPerSecond: 100, phase: 'train' });
    expect(s.chunks).toHaveLength(2);
    for (const c of s.chunks) {
      expect(c.startsWith(CLEAR)).toBe(true);
      expect(c).not.toContain('\n');
    }
    // 20 steps/s, 97 steps left: 4.85 s
    expect(s.chunks[1]).toContain('step 3/100  loss 2.5000  100 tok/s  ETA 5s');
    expect(s.chunks[0]).toContain('ETA --');
  });
  it('draws at most 10 times a second', () => {
    const s = fakeStream(true);
    const clock = fakeClock();
    const p = new Progress({ total: 1000, stream: s, now: clock.now });
    for (let i = 0; i < 100; i++) {
      clock.t = i * 10;
      p.update({ step: i + 1, loss: 1, tokensPerSecond: 1 });
    }
    expect(s.chunks).toHaveLength(10);
  });
  it('log() prints above the bar and redraws it; done() ends the line once', () => {
    const s = fakeStream(true);
    const clock = fakeClock();
    const p = new Progress({ total: 10, stream: s, now: clock.now });
    p.update({ step: 4, loss: 1, tokensPerSecond: 1 });
    const bar = s.chunks[0]!;
    p.log('validation loss 1.5');
    expect(s.chunks.slice(1)).toEqual([`${CLEAR}validation loss 1.5\n`, bar]);
    p.done();
    p.done();
    expect(s.chunks.slice(3)).toEqual([bar, '\n']);
    p.update({ step: 5 });
    expect(s.chunks).toHaveLength(5);
  });
  it('redraws at once on a phase change', () => {
    const s = fakeStream(true);
    const clock = fakeClock();
    const p = new Progress({ total: 10, stream: s, now: clock.now });
    p.update({ step: 1, phase: 'short' });
    p.update({ step: 2, phase: 'long' });
    expect(s.chunks).toHaveLength(2);
    expect(s.chunks[1]).toContain('long');
  });
});

describe('Progress without a terminal', () => {
  it('prints a plain line every 5%, never a carriage return', () => {
    const s = fakeStream(false);
    const clock = fakeClock();
    const p = new Progress({ total: 100, stream: s, now: clock.now });
    for (let step = 1; step <= 100; step++) {
      clock.t = step * 100;
      p.update({ step, loss: 1, tokensPerSecond: 10 });
    }
    p.done();
    const lines = s.text.trimEnd().split('\n');
    expect(lines).toHaveLength(20);
    expect(lines[0]).toMatch(/^step 5\/100 \(5%\)  loss 1\.0000  10 tok\/s  ETA /);
    expect(lines[19]).toMatch(/^step 100\/100 \(100%\)/);
    expect(s.text).not.toContain('\r');
    expect(s.text).not.toContain('\x1b');
  });
  it('prints every 10 s when progress is slow, plus the final state', () => {
    const s = fakeStream(false);
    const clock = fakeClock();
    const p = new Progress({ total: 1000, stream: s, now: clock.now });
    for (let step = 1; step <= 9; step++) {
      clock.t = step * 3000;
      p.update({ step });
    }
    p.done();
    const steps = s.text.trimEnd().split('\n').map((l) => l.split(' ')[1]);
    expect(steps).toEqual(['4/1000', '8/1000', '9/1000']);
  });
  it('log() writes the line as is; phase changes print a line', () => {
    const s = fakeStream(false);
    const clock = fakeClock();
    const p = new Progress({ total: 1000, stream: s, now: clock.now, label: 'run' });
    p.update({ step: 1, phase: 'a' });
    p.log('hello');
    p.update({ step: 2, phase: 'b' });
    expect(s.text).toBe('hello\nrun b  step 2/1000 (0%)  ETA --\n');
  });
});
