/**
 * bench gpu: the compiled WebGPU training step (fp32 and f16 mixed precision) vs the eager
 * tfjs-webgpu step (tokens/s, side by side), and the compiled matmuls' TFLOP/s (fp32, f16) (backend-gpu src/step/bench.ts). Needs a WebGPU adapter.
 */
import { getBackendPlugin } from '@patchflow/tensor';
import { GPU_BENCH_SHAPES, gpuBench } from '@patchflow/backend-gpu';
import { UserError } from '../errors.js';
import { formatNumber, formatTable } from '../table.js';

export async function gpuBenchSuite(values: Record<string, unknown>): Promise<{ json: unknown; table: string }> {
  const avail = await getBackendPlugin('webgpu').checkAvailability();
  if (!avail.ok) throw new UserError(`bench gpu needs a WebGPU adapter: ${avail.reason}`);
  const quick = values.quick === true;
  if (typeof values.shape === 'string' && !GPU_BENCH_SHAPES.some((s) => s.label.includes(values.shape as string))) {
    throw new UserError(`--shape ${values.shape}: no bench shape matches (${GPU_BENCH_SHAPES.map((s) => s.label).join(', ')})`);
  }
  const r = await gpuBench({
    steps: typeof values.steps === 'number' ? values.steps : quick ? 10 : 30,
    shapes: quick ? GPU_BENCH_SHAPES.slice(0, 1) : typeof values.shape === 'string' ? GPU_BENCH_SHAPES.filter((s) => s.label.includes(values.shape as string)) : GPU_BENCH_SHAPES,
    // --quick (and software adapters in CI): a small square product, no per-shape tuning
    ...(quick ? { matmulSize: 512, modelShapes: false } : {}),
    ...(values['no-eager'] === true ? { skipEager: true } : {}),
    ...(values['f16-only'] === true ? { fp32: false, skipEager: true } : {}),
    log: (l) => process.stderr.write(`bench gpu: ${l}\n`),
  });
  const table =
    `${r.gpu} (${r.driver})\n` +
    formatTable(
      r.rows.map((x) => ({
        shape: x.shape,
        'compiled tokens/s': Math.round(x.compiledTokensPerSecond),
        'compiled ms/step': formatNumber(x.compiledMsPerStep, 2),
        'compiled f16 tokens/s': x.compiledF16TokensPerSecond === undefined ? '' : Math.round(x.compiledF16TokensPerSecond),
        'eager tokens/s': x.eagerTokensPerSecond === undefined ? '' : Math.round(x.eagerTokensPerSecond),
        speedup: x.eagerTokensPerSecond ? `${formatNumber(x.compiledTokensPerSecond / x.eagerTokensPerSecond, 1)}x` : '',
        dispatches: x.dispatchesPerStep,
      })),
    ) +
    `\nmatmul fp32 at ${r.matmul.size}³: ${formatNumber(r.matmul.fp32Tflops4096, 2)} TFLOP/s` +
    (r.matmul.fp32PeakTflops ? ` (${formatNumber((100 * r.matmul.fp32Tflops4096) / r.matmul.fp32PeakTflops, 1)}% of the ${r.matmul.fp32PeakTflops} TFLOP/s fp32 peak)` : '') +
    (r.matmul.f16Tflops4096 !== undefined ? `\nmatmul f16→f32 at ${r.matmul.size}³: ${formatNumber(r.matmul.f16Tflops4096, 2)} TFLOP/s (${r.matmul.f16Kernel})` : '') +
    (r.matmul.f16Note ? `\n${r.matmul.f16Note}` : '');
  return { json: r, table };
}
