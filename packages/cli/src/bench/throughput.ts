/**
 * bench throughput: the default model's training step on our `cpu` backend vs stock tfjs `cpu`,
 * measured in one process, same steps, same data. Reports tokens/s, the ratio and peak RSS.
 */
import * as os from 'node:os';
import { resolveConfig, train, loadCorpus, type TrainConfig } from '@patchflow/trainer';
import { nativeInfo } from '@patchflow/tensor';
import { formatTable, formatNumber } from '../table.js';

export interface ThroughputResult {
  backend: string;
  steps: number;
  tokensPerSecond: number;
  secondsPerStep: number;
}

/** Trains `warmup + steps` steps and times the last `steps`. */
export async function measureThroughput(base: TrainConfig, backend: string, steps: number, warmup = 1): Promise<ThroughputResult> {
  const config = resolveConfig(base, { backend, steps: warmup + steps, evalEvery: 0, checkpointEvery: 0, evalBatches: 1 });
  const stamps: { t: number; tokens: number }[] = [];
  await train({
    config,
    corpus: loadCorpus(),
    onEvent: (e) => {
      if (e.type === 'step') stamps.push({ t: performance.now(), tokens: e.tokens });
    },
  });
  const a = stamps[warmup - 1]!;
  const b = stamps.at(-1)!;
  const seconds = (b.t - a.t) / 1000;
  return { backend, steps, tokensPerSecond: (b.tokens - a.tokens) / seconds, secondsPerStep: seconds / steps };
}

export async function throughputBench(values: Record<string, unknown>): Promise<{ json: unknown; table: string }> {
  const steps = typeof values.steps === 'number' ? values.steps : values.quick ? 1 : 3;
  // --quick: the default model on a quarter of the tokens per step (batch 4 × 128), so the stock
  // backend's steps take seconds, not minutes; the ratio is measured at that shape
  const base = resolveConfig(values.quick ? { batchSize: 4 } : {});
  const ours = await measureThroughput(base, 'cpu', steps);
  const stock = await measureThroughput(base, 'tfjs-cpu', steps);
  const ratio = ours.tokensPerSecond / stock.tokensPerSecond;
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  const json = {
    ours: { backend: 'cpu', tokensPerSecond: ours.tokensPerSecond, secondsPerStep: ours.secondsPerStep },
    stock: { backend: 'tfjs-cpu', tokensPerSecond: stock.tokensPerSecond, secondsPerStep: stock.secondsPerStep },
    ratio,
    peakRssBytes,
    steps,
    model: base.model,
    batchSize: base.batchSize,
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, native: nativeInfo() },
    date: new Date().toISOString(),
  };
  const table = formatTable([
    { backend: 'cpu (patchflow)', 'tokens/s': formatNumber(ours.tokensPerSecond, 0), 's/step': ours.secondsPerStep.toFixed(3) },
    { backend: 'tfjs-cpu (stock)', 'tokens/s': formatNumber(stock.tokensPerSecond, 0), 's/step': stock.secondsPerStep.toFixed(3) },
  ]);
  return { json, table: `${table}\nratio ${ratio.toFixed(1)}x, peak RSS ${(peakRssBytes / 2 ** 20).toFixed(0)} MiB, ${steps} measured steps each at batch ${base.batchSize} × ${base.model.seqLen}` };
}
