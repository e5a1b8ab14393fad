/**
 * bench scaling: the FLOPs-to-target read-off against hand-worked curves, the grid selection flags,
 * and a two-plan grid on a tiny model whose ratios are checked against the runs' own numbers and the
 * patch-level paper's cost formula (λ/K + 1 − λ).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, whaleText } from '@patchflow/test-fixtures';
import { FULL_GRID, QUICK_GRID, flopsToReach, mergeScalingResults, runScalingGrid, selectGrid, type ScalingGrid, type ScalingPoint } from '../src/bench/scaling.js';
import { UserError } from '../src/errors.js';

describe('flopsToReach', () => {
  const curve = [
    { flops: 100, valLoss: 5 },
    { flops: 200, valLoss: 4 },
    { flops: 300, valLoss: 3 },
  ];
  it('interpolates linearly between the evaluations that straddle the target', () => {
    expect(flopsToReach(curve, 3.5)).toBeCloseTo(250, 10);
    expect(flopsToReach(curve, 3.75)).toBeCloseTo(225, 10);
  });
  it('an exact hit is that evaluation; a target met at the first evaluation is its FLOPs', () => {
    expect(flopsToReach(curve, 4)).toBe(200);
    expect(flopsToReach(curve, 6)).toBe(100);
  });
  it('is the first crossing, and null when the curve never gets there', () => {
    expect(flopsToReach([{ flops: 1, valLoss: 3 }, { flops: 2, valLoss: 1 }, { flops: 3, valLoss: 2 }, { flops: 4, valLoss: 0.5 }], 2)).toBeCloseTo(1.5, 10);
    expect(flopsToReach(curve, 2.9)).toBeNull();
    expect(flopsToReach([], 1)).toBeNull();
  });
});

describe('selectGrid', () => {
  it('keeps the grid without flags, and filters by label with dense always first', () => {
    expect(selectGrid(FULL_GRID, {})).toEqual(FULL_GRID);
    const g = selectGrid(FULL_GRID, { sizes: '2L d128', budgets: '1000000,16000000', tokenizers: 'bytes', plans: 'block 75%, patch K=4 λ=2/3' });
    expect(g.sizes.map((s) => s.label)).toEqual(['2L d128']);
    expect(g.budgets).toEqual([1e6, 16e6]);
    expect(g.tokenizers).toEqual(['bytes']);
    expect(g.plans.map((p) => p.label)).toEqual(['dense', 'block 75%', 'patch K=4 λ=2/3']);
    expect(selectGrid(QUICK_GRID, { plans: 'block 75%,dense' }).plans.map((p) => p.label)).toEqual(['dense', 'block 75%']);
  });
  it('names unknown entries and what the grid has', () => {
    expect(() => selectGrid(FULL_GRID, { sizes: '3L d99' })).toThrow(UserError);
    expect(() => selectGrid(FULL_GRID, { sizes: '3L d99' })).toThrow(/--sizes: "3L d99" not in the grid \(it has: 2L d128, 4L d256, 8L d512\)/);
    expect(() => selectGrid(QUICK_GRID, { tokenizers: '4096' })).toThrow(/--tokenizers: "4096" not in the grid \(it has: bytes\)/);
  });
  it('the full grid meets the study\'s shape: ≥ 3 sizes, budgets spanning ≥ 50×, bytes and a BPE of a few thousand', () => {
    expect(FULL_GRID.sizes.length).toBeGreaterThanOrEqual(3);
    expect(Math.max(...FULL_GRID.budgets) / Math.min(...FULL_GRID.budgets)).toBeGreaterThanOrEqual(50);
    expect(FULL_GRID.tokenizers).toContain('bytes');
    expect(FULL_GRID.tokenizers.some((t) => typeof t === 'number' && t >= 2000)).toBe(true);
  });
});

describe('runScalingGrid on a tiny model', () => {
  let tmp = '';
  beforeAll(() => {
    tmp = tempDir('pf-scaling-');
    fs.writeFileSync(path.join(tmp, 'corpus.txt'), whaleText(400));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('measures each plan against dense at the same budget, and reports every point as it lands', async () => {
    const grid: ScalingGrid = {
      sizes: [{ label: 'tiny', nLayer: 1, dModel: 32, nHead: 2, seqLen: 16, batchSize: 8 }],
      budgets: [8 * 16 * 24],
      tokenizers: ['bytes'],
      plans: [
        { label: 'dense', plugins: {} },
        { label: 'patch K=2 λ=1/2', plugins: { patch: { patchSize: 2, fraction: 1 / 2 } } },
      ],
      corpus: path.join(tmp, 'corpus.txt'),
      evals: 4,
    };
    const seen: number[] = [];
    const r = await runScalingGrid(grid, { backend: 'cpu', dir: tmp, say: () => {}, onPoint: (pts) => seen.push(pts.length) });
    expect(seen).toEqual([1, 2]);
    const [dense, patch] = r.points as [ScalingPoint, ScalingPoint];
    expect(dense.plan).toBe('dense');
    expect([dense.lossRatio, dense.flopRatio, dense.flopRatioToTarget]).toEqual([1, 1, 1]);
    expect(patch.lossRatio).toBeCloseTo(patch.finalValLoss / dense.finalValLoss, 12);
    expect(patch.flopRatio).toBeCloseTo(patch.flops / dense.flops, 12);
    // the paper's cost: λ/K + (1 − λ) = 0.75 (attention's quadratic term makes patch positions a little cheaper still)
    expect(patch.flopRatio).toBeGreaterThan(0.7);
    expect(patch.flopRatio).toBeLessThanOrEqual(0.75 + 1e-9);
    const reach = flopsToReach(patch.curve, dense.finalValLoss);
    expect(patch.flopRatioToTarget).toBe(reach === null ? null : reach / dense.flops);
    // every run sees the same tokens; epochs are those tokens over the training part of the corpus
    expect(patch.budgetTokens).toBe(dense.budgetTokens);
    const bytes = Buffer.byteLength(fs.readFileSync(path.join(tmp, 'corpus.txt'), 'utf8'));
    expect(r.corpus.bytes).toBe(bytes);
    expect(dense.epochs).toBeGreaterThan(dense.budgetTokens / bytes);
    expect(dense.epochs).toBeLessThan((1.2 * dense.budgetTokens) / bytes);
    expect(dense.curve.length).toBeGreaterThanOrEqual(4);
    expect(dense.curve.at(-1)!.valLoss).toBeCloseTo(dense.finalValLoss, 6);
  });
});

describe('mergeScalingResults', () => {
  const point = (size: string, budget: number, plan: string, loss: number): ScalingPoint => ({
    size, parameters: 1e5, tokenizer: 'bytes', budgetTokens: budget, tokensPerParameter: budget / 1e5, epochs: 1, plan,
    finalValLoss: loss, flops: 1, lossRatio: 1, flopRatio: 1, flopRatioToTarget: null, curve: [],
  });
  const file = (dir: string, name: string, body: unknown) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, JSON.stringify(body));
    return f;
  };
  it('joins parts of a grid in grid order; a later file replaces a point measured twice; other corpora are refused', () => {
    const dir = tempDir('pf-merge-');
    try {
      const corpus = { name: 'c.txt', bytes: 10 };
      const a = file(dir, 'a.json', { backend: 'webgpu', corpus, seconds: 5, grid: { sizes: [{ label: 'S' }, { label: 'L' }], plans: ['dense', 'p'] }, points: [point('L', 4, 'dense', 3), point('S', 4, 'p', 2.5), point('S', 4, 'dense', 2)] });
      const b = file(dir, 'b.json', { backend: 'webgpu', corpus, seconds: 7, grid: { sizes: [{ label: 'S' }], plans: ['dense', 'q'] }, points: [point('S', 1, 'dense', 4), point('S', 4, 'p', 2.4)] });
      const m = mergeScalingResults([a, b]);
      expect(m.points.map((p) => `${p.size} ${p.budgetTokens} ${p.plan} ${p.finalValLoss}`)).toEqual(['S 1 dense 4', 'S 4 dense 2', 'S 4 p 2.4', 'L 4 dense 3']);
      expect([m.sizes, m.plans, m.seconds, m.backend]).toEqual([['S', 'L'], ['dense', 'p', 'q'], 12, 'webgpu']);
      const c = file(dir, 'c.json', { corpus: { name: 'other.txt', bytes: 10 }, grid: {}, points: [] });
      expect(() => mergeScalingResults([a, c])).toThrow(/other\.txt/);
      expect(() => mergeScalingResults([path.join(dir, 'missing.json')])).toThrow(UserError);
      expect(() => mergeScalingResults([file(dir, 'd.json', { hello: 1 })])).toThrow(/not a bench scaling result/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
