/**
 * bench scaling: where patch-level training and sparse training save compute, over a grid of model
 * size × token budget × tokenizer (bytes, and a byte-level BPE trained on the corpus), each plan
 * against dense token-level training of the same model on the same budget, evaluated on the same
 * held-out windows.
 *
 * For every point: the final validation loss ratio at equal tokens, the FLOP ratio of the runs, and
 * the FLOPs the plan needed to reach the dense run's final loss, as a ratio of the dense run's FLOPs
 * (read from the plan's evaluation curve, linearly interpolated between evaluations; null when the
 * plan never reached it), and the epochs over the corpus.
 *
 * The full grid (default) is sized for a GPU (`--backend webgpu`): 3 sizes from ~0.5M to ~25M
 * parameters, budgets 1M–64M tokens (64×, up to ~130 tokens per parameter for the smallest), 9
 * plans. `--quick` is a reduced grid that finishes on 2 CPU cores in minutes.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bpeTokenizerJson, loadCorpus, resolveConfig, trainBpe, train, loadTokenizer, type TrainConfig, type Tokenizer } from '@patchflow/trainer';
import { UserError } from '../errors.js';
import { formatNumber, formatTable } from '../table.js';
import { lineChartSvg } from '../plot.js';

export interface ScalingSize {
  label: string;
  nLayer: number;
  dModel: number;
  nHead: number;
  seqLen: number;
  batchSize: number;
}

export interface ScalingPlan {
  label: string;
  plugins: Record<string, Record<string, unknown>>;
}

export const SCALING_PLANS: ScalingPlan[] = [
  { label: 'dense', plugins: {} },
  { label: 'patch K=2 λ=1/2', plugins: { patch: { patchSize: 2, fraction: 1 / 2 } } },
  { label: 'patch K=2 λ=2/3', plugins: { patch: { patchSize: 2, fraction: 2 / 3 } } },
  { label: 'patch K=4 λ=1/2', plugins: { patch: { patchSize: 4, fraction: 1 / 2 } } },
  { label: 'patch K=4 λ=2/3', plugins: { patch: { patchSize: 4, fraction: 2 / 3 } } },
  { label: 'block 75%', plugins: { sparsity: { sparsity: 0.75, pattern: 'block:16' } } },
  { label: 'block 87.5%', plugins: { sparsity: { sparsity: 0.875, pattern: 'block:16' } } },
  { label: 'RigL 75%', plugins: { sparsity: { sparsity: 0.75, mode: 'rigl', interval: 50 } } },
  { label: 'sparse→dense 75% (last 20% dense)', plugins: { sparsity: { sparsity: 0.75, pattern: 'block:16', denseFraction: 0.2 } } },
];

export interface ScalingGrid {
  sizes: ScalingSize[];
  /** Token budgets (training tokens of every run at that budget). */
  budgets: number[];
  /** 'bytes' or a BPE vocabulary size. */
  tokenizers: ('bytes' | number)[];
  plans: ScalingPlan[];
  corpus: string;
  /** Evaluations per run (the curve the FLOPs-to-target is read from). */
  evals: number;
}

export const FULL_GRID: ScalingGrid = {
  sizes: [
    { label: '2L d128', nLayer: 2, dModel: 128, nHead: 4, seqLen: 128, batchSize: 32 },
    { label: '4L d256', nLayer: 4, dModel: 256, nHead: 4, seqLen: 128, batchSize: 32 },
    { label: '8L d512', nLayer: 8, dModel: 512, nHead: 8, seqLen: 128, batchSize: 32 },
  ],
  budgets: [1e6, 4e6, 16e6, 64e6],
  tokenizers: ['bytes', 4096],
  plans: SCALING_PLANS,
  corpus: 'corpus:english',
  evals: 10,
};

export const QUICK_GRID: ScalingGrid = {
  sizes: [
    { label: '1L d64', nLayer: 1, dModel: 64, nHead: 2, seqLen: 64, batchSize: 32 },
    { label: '2L d96', nLayer: 2, dModel: 96, nHead: 2, seqLen: 64, batchSize: 32 },
  ],
  budgets: [16_384, 65_536, 262_144, 1_048_576],
  tokenizers: ['bytes'],
  plans: SCALING_PLANS.filter((p) => ['dense', 'patch K=2 λ=1/2', 'patch K=4 λ=2/3', 'block 75%'].includes(p.label)),
  corpus: '',
  evals: 6,
};

export interface ScalingPoint {
  size: string;
  parameters: number;
  tokenizer: string;
  budgetTokens: number;
  tokensPerParameter: number;
  epochs: number;
  plan: string;
  finalValLoss: number;
  flops: number;
  /** finalValLoss / the dense run's, at the same size, budget and tokenizer. */
  lossRatio: number;
  flopRatio: number;
  /** FLOPs to reach the dense run's final loss / the dense run's FLOPs; null: not reached. */
  flopRatioToTarget: number | null;
  curve: { tokens: number; flops: number; valLoss: number }[];
}

/**
 * The grid restricted by the bench's comma-list flags (--sizes, --budgets, --tokenizers, --plans);
 * dense is always kept and run first, since every other plan is measured against it. Unknown entries are errors.
 */
export function selectGrid(grid: ScalingGrid, values: Record<string, unknown>): ScalingGrid {
  const list = (key: string): string[] | undefined =>
    typeof values[key] === 'string' ? (values[key] as string).split(',').map((x) => x.trim()).filter(Boolean) : undefined;
  const pick = <T>(key: string, all: T[], name: (t: T) => string): T[] => {
    const want = list(key);
    if (!want) return all;
    const byName = new Map(all.map((t) => [name(t), t]));
    const unknown = want.filter((w) => !byName.has(w));
    if (unknown.length) throw new UserError(`--${key}: ${unknown.map((u) => `"${u}"`).join(', ')} not in the grid (it has: ${[...byName.keys()].join(', ')})`);
    return want.map((w) => byName.get(w)!);
  };
  const plans = pick('plans', grid.plans, (p) => p.label);
  return {
    ...grid,
    ...(typeof values.data === 'string' ? { corpus: values.data } : {}),
    sizes: pick('sizes', grid.sizes, (s) => s.label),
    budgets: pick('budgets', grid.budgets, (b) => String(b)),
    tokenizers: pick('tokenizers', grid.tokenizers, (t) => String(t)),
    plans: [grid.plans.find((p) => p.label === 'dense')!, ...plans.filter((p) => p.label !== 'dense')],
  };
}

/** FLOPs at which a curve first reaches `target` (linear between evaluations), or null. */
export function flopsToReach(curve: { flops: number; valLoss: number }[], target: number): number | null {
  for (let i = 0; i < curve.length; i++) {
    const c = curve[i]!;
    if (c.valLoss <= target) {
      if (i === 0) return c.flops;
      const p = curve[i - 1]!;
      const f = (p.valLoss - target) / (p.valLoss - c.valLoss);
      return p.flops + f * (c.flops - p.flops);
    }
  }
  return null;
}

async function tokenizerFor(spec: 'bytes' | number, text: string, dir: string, say: (s: string) => void): Promise<{ label: string; tokenizer?: Tokenizer; path: string }> {
  if (spec === 'bytes') return { label: 'bytes', path: '' };
  // keyed by the corpus, so a study of other data never reuses this one's merges
  const file = path.join(dir, `bpe-${spec}-${createHash('sha256').update(text).digest('hex').slice(0, 12)}.json`);
  if (!fs.existsSync(file)) {
    say(`training a byte-level BPE tokenizer of ${spec} tokens on the corpus`);
    fs.writeFileSync(file, bpeTokenizerJson(trainBpe(text, { vocabSize: spec })));
  }
  return { label: `BPE ${spec}`, tokenizer: loadTokenizer(file), path: file };
}

export async function runScalingGrid(
  grid: ScalingGrid,
  opts: { backend: string; dir: string; say: (s: string) => void; onPoint?: (points: ScalingPoint[], corpus: { name: string; bytes: number }) => void },
): Promise<{ corpus: { name: string; bytes: number }; points: ScalingPoint[] }> {
  const corpus = loadCorpus(grid.corpus || undefined);
  const corpusInfo = { name: corpus.name, bytes: Buffer.byteLength(corpus.text) };
  const points: ScalingPoint[] = [];
  for (const tokSpec of grid.tokenizers) {
    const tok = await tokenizerFor(tokSpec, corpus.text, opts.dir, opts.say);
    const corpusTokens = (tok.tokenizer ?? loadTokenizer('')).encode(corpus.text).length;
    for (const size of grid.sizes) {
      for (const budget of grid.budgets) {
        let dense: ScalingPoint | undefined;
        for (const plan of grid.plans) {
          const steps = Math.max(1, Math.round(budget / (size.batchSize * size.seqLen)));
          const evalEvery = Math.max(1, Math.floor(steps / grid.evals));
          const config: TrainConfig = resolveConfig({
            model: { nLayer: size.nLayer, dModel: size.dModel, nHead: size.nHead, seqLen: size.seqLen },
            batchSize: size.batchSize,
            steps,
            evalEvery,
            evalBatches: 4,
            checkpointEvery: 0,
            backend: opts.backend,
            tokenizer: tok.path,
            optim: { warmupSteps: Math.min(100, Math.floor(steps / 10)) },
            plugins: plan.plugins,
          });
          const r = await train({ config, corpus, ...(tok.tokenizer ? { tokenizer: tok.tokenizer } : {}) });
          const params = r.model.parameterCount();
          r.model.dispose();
          const curve = [...r.evals.map((e) => ({ tokens: e.tokens, flops: e.flops, valLoss: e.valLoss }))];
          const p: ScalingPoint = {
            size: size.label,
            parameters: params,
            tokenizer: tok.label,
            budgetTokens: r.tokens,
            tokensPerParameter: r.tokens / params,
            epochs: r.tokens / (corpusTokens * (1 - config.valFraction)),
            plan: plan.label,
            finalValLoss: r.valLoss,
            flops: r.flops,
            lossRatio: 1,
            flopRatio: 1,
            flopRatioToTarget: 1,
            curve,
          };
          if (!dense) dense = p;
          else {
            p.lossRatio = p.finalValLoss / dense.finalValLoss;
            p.flopRatio = p.flops / dense.flops;
            const f = flopsToReach(curve, dense.finalValLoss);
            p.flopRatioToTarget = f === null ? null : f / dense.flops;
          }
          points.push(p);
          opts.onPoint?.(points, corpusInfo);
          opts.say(
            `${tok.label} ${size.label} ${formatNumber(budget)} tokens ${plan.label}: val ${p.finalValLoss.toFixed(4)} (×${p.lossRatio.toFixed(3)}), ` +
              `FLOPs ×${p.flopRatio.toFixed(3)}, to the dense loss ${p.flopRatioToTarget === null ? 'not reached' : `×${p.flopRatioToTarget.toFixed(3)}`}`,
          );
        }
      }
    }
  }
  return { corpus: corpusInfo, points };
}

function plots(points: ScalingPoint[], sizes: string[], plans: string[], dir: string): string[] {
  const files: string[] = [];
  const tokenizers = [...new Set(points.map((p) => p.tokenizer))];
  for (const tok of tokenizers) {
    // loss vs training FLOPs per model size, every plan, at the largest budget
    for (const size of sizes) {
      const mine = points.filter((p) => p.tokenizer === tok && p.size === size);
      if (!mine.length) continue;
      const last = Math.max(...mine.map((p) => p.budgetTokens));
      const series = mine
        .filter((p) => p.budgetTokens === last)
        .map((p) => ({ name: p.plan, points: p.curve.map((c) => [c.flops, c.valLoss] as [number, number]) }));
      const file = path.join(dir, `scaling-loss-${size.replace(/\s+/g, '')}-${tok.replace(/\s+/g, '')}.svg`);
      fs.writeFileSync(file, lineChartSvg({ title: `${size}, ${tok}: validation loss vs training FLOPs (${formatNumber(last)} tokens)`, xLabel: 'training FLOPs', yLabel: 'validation loss', series, logX: true }));
      files.push(file);
    }
    // FLOP ratio to the dense loss vs tokens per parameter, one line per plan
    const series = plans
      .filter((pl) => pl !== 'dense')
      .map((pl) => ({
        name: pl,
        points: points
          .filter((p) => p.tokenizer === tok && p.plan === pl && p.flopRatioToTarget !== null)
          .sort((a, b) => a.tokensPerParameter - b.tokensPerParameter)
          .map((p) => [p.tokensPerParameter, p.flopRatioToTarget!] as [number, number]),
      }));
    const file = path.join(dir, `scaling-flop-ratio-${tok.replace(/\s+/g, '')}.svg`);
    fs.writeFileSync(file, lineChartSvg({ title: `${tok}: FLOPs to reach the dense run's loss, relative (lower saves compute)`, xLabel: 'tokens per parameter', yLabel: 'FLOP ratio to the dense final loss', series, logX: true }));
    files.push(file);
  }
  return files;
}

/** The results of several runs of the bench (e.g. parts of the grid run side by side), as one. */
export function mergeScalingResults(files: string[]): { backend: string; corpus: { name: string; bytes: number }; points: ScalingPoint[]; sizes: string[]; plans: string[]; seconds: number } {
  const byKey = new Map<string, ScalingPoint>();
  const sizes: string[] = [];
  const plans: string[] = [];
  const backends = new Set<string>();
  let corpus: { name: string; bytes: number } | undefined;
  let seconds = 0;
  for (const file of files) {
    let j: { backend?: string; corpus?: { name: string; bytes: number }; points?: ScalingPoint[]; grid?: { sizes?: { label: string }[]; plans?: string[] }; seconds?: number };
    try {
      j = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new UserError(`--merge: cannot read ${file}: ${(e as Error).message}`);
    }
    if (!Array.isArray(j.points) || !j.corpus || !j.grid) throw new UserError(`--merge: ${file} is not a bench scaling result (no grid, corpus and points)`);
    if (corpus && (corpus.name !== j.corpus.name || corpus.bytes !== j.corpus.bytes))
      throw new UserError(`--merge: ${file} studied ${j.corpus.name} (${j.corpus.bytes} bytes), the others ${corpus.name} (${corpus.bytes} bytes)`);
    corpus = j.corpus;
    backends.add(j.backend ?? 'cpu');
    seconds += j.seconds ?? 0;
    for (const s of j.grid.sizes ?? []) if (!sizes.includes(s.label)) sizes.push(s.label);
    for (const p of j.grid.plans ?? []) if (!plans.includes(p)) plans.push(p);
    // a later file's point replaces an earlier one's (a re-run)
    for (const p of j.points) byKey.set(`${p.tokenizer}|${p.size}|${p.budgetTokens}|${p.plan}`, p);
  }
  // the grid's order: sizes by parameter count, plans as SCALING_PLANS lists them (others after)
  const params = new Map<string, number>();
  for (const p of byKey.values()) params.set(p.size, Math.min(params.get(p.size) ?? Infinity, p.parameters));
  sizes.sort((a, b) => (params.get(a) ?? Infinity) - (params.get(b) ?? Infinity));
  const rank = (plan: string) => {
    const i = SCALING_PLANS.findIndex((p) => p.label === plan);
    return i < 0 ? SCALING_PLANS.length : i;
  };
  plans.sort((a, b) => rank(a) - rank(b));
  // a plan's token count rounds to the nearest whole step (or patch step) of the budget
  const nominal = (p: ScalingPoint) => Number(p.budgetTokens.toPrecision(2));
  const points = [...byKey.values()].sort(
    (a, b) => a.tokenizer.localeCompare(b.tokenizer) || sizes.indexOf(a.size) - sizes.indexOf(b.size) || nominal(a) - nominal(b) || plans.indexOf(a.plan) - plans.indexOf(b.plan),
  );
  return { backend: [...backends].join('+'), corpus: corpus!, points, sizes, plans, seconds };
}

function scalingTable(points: ScalingPoint[]): string {
  return formatTable(
    points
      .filter((p) => p.plan !== 'dense')
      .map((p) => ({
        tokenizer: p.tokenizer,
        size: `${p.size} (${formatNumber(p.parameters / 1e6, 2)}M)`,
        'tokens/param': p.tokensPerParameter < 1 ? p.tokensPerParameter.toFixed(2) : formatNumber(p.tokensPerParameter, 1),
        epochs: formatNumber(p.epochs, 2),
        plan: p.plan,
        'loss ratio': p.lossRatio.toFixed(3),
        'FLOP ratio': p.flopRatio.toFixed(3),
        'FLOPs to dense loss': p.flopRatioToTarget === null ? 'not reached' : p.flopRatioToTarget.toFixed(3),
      })),
  );
}

export async function scalingBench(values: Record<string, unknown>): Promise<{ json: unknown; table: string }> {
  if (typeof values.merge === 'string') {
    const files = values.merge.split(',').map((f) => f.trim()).filter(Boolean);
    if (!files.length) throw new UserError('--merge needs a comma list of bench scaling JSON files');
    const m = mergeScalingResults(files);
    const dir = typeof values.out === 'string' ? path.dirname(path.resolve(values.out)) : path.resolve('bench-results');
    fs.mkdirSync(dir, { recursive: true });
    const svgs = plots(m.points, m.sizes, m.plans, dir);
    const json = { merged: files.map((f) => path.basename(f)), backend: m.backend, corpus: m.corpus, sizes: m.sizes, plans: m.plans, points: m.points, plots: svgs.map((f) => path.basename(f)), seconds: m.seconds, date: new Date().toISOString() };
    return { json, table: `${scalingTable(m.points)}\n${m.points.length} runs merged from ${files.length} files; corpus ${m.corpus.name} (${formatNumber(m.corpus.bytes / 1e6, 1)} MB); plots: ${svgs.map((f) => path.basename(f)).join(', ')}` };
  }
  const grid = selectGrid(values.quick === true ? QUICK_GRID : FULL_GRID, values);
  const backend = typeof values.backend === 'string' ? values.backend : 'cpu';
  const outFile = typeof values.out === 'string' ? values.out : undefined;
  const dir = outFile ? path.dirname(path.resolve(outFile)) : path.resolve('bench-results');
  fs.mkdirSync(dir, { recursive: true });
  const say = (s: string) => process.stderr.write(`bench scaling: ${s}\n`);
  const t0 = performance.now();
  const gridJson = { ...grid, plans: grid.plans.map((p) => p.label) };
  // the JSON grows point by point, so a run cut short (a time limit, Ctrl-C) keeps what it measured
  const onPoint = (points: ScalingPoint[], corpus: { name: string; bytes: number }) => {
    if (!outFile) return;
    const tmp = `${outFile}.partial.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ grid: gridJson, backend, corpus, points, partial: true, date: new Date().toISOString() }, null, 2) + '\n');
    fs.renameSync(tmp, outFile);
  };
  const r = await runScalingGrid(grid, { backend, dir, say, onPoint });
  const svgs = plots(r.points, grid.sizes.map((s) => s.label), grid.plans.map((p) => p.label), dir);
  const seconds = (performance.now() - t0) / 1000;
  const table = scalingTable(r.points);
  const json = { grid: gridJson, backend, corpus: r.corpus, points: r.points, plots: svgs.map((f) => path.basename(f)), seconds, date: new Date().toISOString() };
  return { json, table: `${table}\n${r.points.length} runs on ${backend} in ${formatNumber(seconds / 60, 1)} min; corpus ${r.corpus.name} (${formatNumber(r.corpus.bytes / 1e6, 1)} MB); plots: ${svgs.map((f) => path.basename(f)).join(', ')}` };
}
