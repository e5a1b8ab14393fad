/**
 * bench patch: patch-level training (K=4 on λ=2/3 of the tokens, then token-level) against
 * token-level training, same model, same token budget, same held-out set, on the bundled corpus.
 * Reports final validation loss, training FLOPs and wall-clock seconds (periodic evaluations
 * excluded) for both, their ratios, an ablation over K and λ at a shorter budget, and a picture of
 * validation loss against training FLOPs (loss-vs-flops.svg, next to the JSON).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveConfig, train, loadCorpus, type TrainConfig, type TrainerPlugin } from '@patchflow/trainer';
import { nativeInfo } from '@patchflow/tensor';
import { patchTraining, planCost, expectedRelativeCost, type PlanCost } from '@patchflow/patch-training';
import { formatTable, formatNumber } from '../table.js';
import { lineChartSvg } from '../plot.js';

export interface RunMeasure {
  valLoss: number;
  flops: number;
  /** Training wall-clock seconds, from the first step to the last (periodic evaluations excluded). */
  seconds: number;
  tokens: number;
  steps: number;
  curve: { step: number; tokens: number; flops: number; valLoss: number }[];
  cost: PlanCost;
}

export async function measureRun(config: TrainConfig, plugins: TrainerPlugin[], corpus: { name: string; text: string }): Promise<RunMeasure> {
  let tStart = 0;
  let tLastStep = 0;
  let evalSeconds = 0;
  let totalSteps = 0;
  const r = await train({
    config,
    plugins,
    corpus,
    onEvent: (e) => {
      const now = performance.now();
      if (e.type === 'start') {
        tStart = now;
        totalSteps = e.totalSteps;
      } else if (e.type === 'step') tLastStep = now;
      // a periodic evaluation runs right after its step's event, inside the measured span; the final
      // one (at the last step) runs after it
      else if (e.type === 'eval' && e.step < totalSteps) evalSeconds += (now - tLastStep) / 1000;
    },
  });
  const seconds = (tLastStep - tStart) / 1000 - evalSeconds;
  const out: RunMeasure = {
    valLoss: r.valLoss,
    flops: r.flops,
    seconds,
    tokens: r.tokens,
    steps: r.steps,
    curve: r.evals.map((e) => ({ step: e.step, tokens: e.tokens, flops: e.flops, valLoss: e.valLoss })),
    cost: planCost(r.phases),
  };
  r.model.dispose();
  return out;
}

function fmtLoss(x: number): string {
  return x.toFixed(4);
}

export async function patchBench(values: Record<string, unknown>): Promise<{ json: unknown; table: string }> {
  const quick = values.quick === true;
  const loadStart = os.loadavg();
  // main comparison: token budget of `mainSteps` token-level steps; ablation: `ablSteps`
  const mainSteps = typeof values.steps === 'number' ? values.steps : quick ? 150 : 600;
  const ablSteps = quick ? 60 : 200;
  const evalEvery = quick ? 25 : 50;
  const base = quick
    ? resolveConfig({ model: { nLayer: 2, nHead: 4, dModel: 128, seqLen: 64 }, batchSize: 16, evalBatches: 8, checkpointEvery: 0, optim: { warmupSteps: 20 } })
    : resolveConfig({ checkpointEvery: 0 });
  const corpus = loadCorpus();
  const say = (s: string) => process.stderr.write(`bench patch: ${s}\n`);
  const cfg = (steps: number, every: number) => resolveConfig(base, { steps, evalEvery: every, checkpointEvery: 0 });
  const K = 4;
  const lambda = 2 / 3;

  say(`main comparison, token budget ${mainSteps} steps × ${base.batchSize} × ${base.model.seqLen} tokens: (a) token-level`);
  const a = await measureRun(cfg(mainSteps, evalEvery), [], corpus);
  say(`(a) val ${fmtLoss(a.valLoss)} in ${a.seconds.toFixed(0)} s; (b) patch K=${K} on λ=2/3, then token-level`);
  const b = await measureRun(cfg(mainSteps, evalEvery), [patchTraining({ patchSize: K, fraction: lambda })], corpus);
  say(`(b) val ${fmtLoss(b.valLoss)} in ${b.seconds.toFixed(0)} s`);
  const ratios = { valLoss: b.valLoss / a.valLoss, flops: b.flops / a.flops, seconds: b.seconds / a.seconds };

  // ablation at a shorter budget, final evaluation only
  say(`ablation at ${ablSteps} steps of token budget: token-level reference`);
  const ref = await measureRun(cfg(ablSteps, 0), [], corpus);
  const grid: { patchSize: number; fraction: number; label: string }[] = [
    ...[2, 4, 8, 16].map((k) => ({ patchSize: k, fraction: lambda, label: '2/3' })),
    { patchSize: 4, fraction: 1 / 2, label: '1/2' },
    { patchSize: 4, fraction: 3 / 4, label: '3/4' },
  ];
  const ablation: Record<string, unknown>[] = [];
  for (const g of grid) {
    say(`ablation K=${g.patchSize}, λ=${g.label}`);
    const m = await measureRun(cfg(ablSteps, 0), [patchTraining({ patchSize: g.patchSize, fraction: g.fraction })], corpus);
    ablation.push({
      patchSize: g.patchSize,
      fraction: g.fraction,
      valLoss: m.valLoss,
      flops: m.flops,
      seconds: m.seconds,
      ratios: { valLoss: m.valLoss / ref.valLoss, flops: m.flops / ref.flops, seconds: m.seconds / ref.seconds },
      expectedFlopRatio: expectedRelativeCost(g.patchSize, g.fraction),
      phases: m.cost.phases.map((p) => ({ name: p.name, steps: p.steps, tokens: p.tokens, flops: p.flops })),
    });
  }

  const outFile = typeof values.out === 'string' ? values.out : undefined;
  const dir = outFile ? path.dirname(path.resolve(outFile)) : path.resolve('bench-results');
  fs.mkdirSync(dir, { recursive: true });
  const svgPath = path.join(dir, 'loss-vs-flops.svg');
  fs.writeFileSync(
    svgPath,
    lineChartSvg({
      title: `validation loss vs training FLOPs (${mainSteps}-step token budget)`,
      xLabel: 'training FLOPs',
      yLabel: 'validation loss (nats/byte)',
      series: [
        { name: '(a) token-level', points: a.curve.map((c) => [c.flops, c.valLoss] as [number, number]) },
        { name: `(b) patch K=${K}, λ=2/3, then token`, points: b.curve.map((c) => [c.flops, c.valLoss] as [number, number]) },
      ],
    }),
  );

  const pick = (m: RunMeasure) => ({ valLoss: m.valLoss, flops: m.flops, seconds: m.seconds, tokens: m.tokens, steps: m.steps });
  const goal = { valLossRatioAtMost: 1.0, flopsRatioAbout: 0.5, secondsRatioAtMost: 0.55 };
  const json = {
    baseline: pick(a),
    patch: { ...pick(b), patchSize: K, fraction: lambda, optimizer: 'reset', phases: b.cost.phases.map((p) => ({ name: p.name, steps: p.steps, tokens: p.tokens, flops: p.flops })) },
    ratios,
    goal: { ...goal, met: { valLoss: ratios.valLoss <= 1, seconds: ratios.seconds <= 0.55 } },
    ablation: { steps: ablSteps, tokenBudget: ablSteps * base.batchSize * base.gradAccum * base.model.seqLen, baseline: pick(ref), runs: ablation },
    curves: { baseline: a.curve, patch: b.curve },
    settings: {
      quick,
      mainSteps,
      mainTokenBudget: mainSteps * base.batchSize * base.gradAccum * base.model.seqLen,
      evalEvery,
      evalWindows: base.evalBatches * base.batchSize,
      model: base.model,
      batchSize: base.batchSize,
      optim: base.optim,
      corpus: corpus.name,
      secondsNote: 'training wall-clock from the first to the last step, periodic evaluations excluded',
    },
    plot: svgPath,
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, native: nativeInfo(), loadAverage1mStart: loadStart[0], loadAverage1mEnd: os.loadavg()[0] },
    date: new Date().toISOString(),
  };
  if (!outFile) fs.writeFileSync(path.join(dir, 'patch.json'), JSON.stringify(json, null, 2) + '\n');

  const row = (name: string, m: { valLoss: number; flops: number; seconds: number }, r?: { valLoss: number; flops: number; seconds: number }) => ({
    run: name,
    'val loss': fmtLoss(m.valLoss),
    'TFLOP': (m.flops / 1e12).toFixed(2),
    seconds: m.seconds.toFixed(0),
    'loss ratio': r ? r.valLoss.toFixed(3) : '',
    'FLOP ratio': r ? r.flops.toFixed(3) : '',
    'time ratio': r ? r.seconds.toFixed(3) : '',
  });
  const main = formatTable([row('(a) token-level', a), row(`(b) patch K=${K}, λ=2/3 + token`, b, ratios)]);
  const abl = formatTable([
    row('token-level', ref),
    ...ablation.map((x) => {
      const m = x as { patchSize: number; fraction: number; valLoss: number; flops: number; seconds: number; ratios: { valLoss: number; flops: number; seconds: number } };
      const g = grid.find((y) => y.patchSize === m.patchSize && y.fraction === m.fraction)!;
      return row(`K=${m.patchSize}, λ=${g.label}`, m, m.ratios);
    }),
  ]);
  const tokens = (n: number) => formatNumber(n * base.batchSize * base.gradAccum * base.model.seqLen);
  const table =
    `main comparison: token budget ${mainSteps} token-level steps (${tokens(mainSteps)} tokens), model ${base.model.nLayer}×${base.model.dModel}, seqLen ${base.model.seqLen}, batch ${base.batchSize}; ` +
    `(b) = ${b.cost.phases.map((p) => `${p.name} ${p.steps} steps`).join(' + ')}\n${main}\n` +
    `goal: loss ratio <= 1.00 (${ratios.valLoss <= 1 ? 'met' : 'not met'}), FLOP ratio ≈ 0.5 (${ratios.flops.toFixed(3)}), time ratio <= 0.55 (${ratios.seconds <= 0.55 ? 'met' : 'not met'})\n\n` +
    `ablation: token budget ${ablSteps} token-level steps (${tokens(ablSteps)} tokens), final validation loss only\n${abl}\n` +
    `validation loss vs FLOPs: ${svgPath}`;
  return { json, table };
}
