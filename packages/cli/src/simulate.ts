/** `patchflow graph` and `patchflow simulate`: the dataflow runtime's op graph and KBK / DF step-time estimates. */
import * as fs from 'node:fs';
import { ConfigError, type GptShape, MODEL_PRESETS, buildStepGraph, describeSchedule, eagerKbk, graphToJson, lowerStep, memoryProfile, plan, resolveModel } from '@patchflow/dataflow-runtime';
import { HARDWARE_NAMES, defaultPrecision, fmtB, fmtS, loadHardware, simulateModel } from '@patchflow/backend-rdu-sim';
import type { FlagSpec } from './args.js';
import { UserError } from './errors.js';
import { formatTable } from './table.js';

const MODEL_FLAG: FlagSpec = { name: 'model', type: 'string', help: `model: a preset (${Object.keys(MODEL_PRESETS).join(', ')}) or a JSON file like a train config's "model" section (or a whole train config)` };
const SHAPE_FLAGS: FlagSpec[] = [
  { name: 'batch', type: 'int', help: 'sequences per micro-batch (default 8)', default: 8 },
  { name: 'grad-accum', type: 'int', help: 'micro-batches per optimizer step (default 1)', default: 1 },
  { name: 'seq', type: 'int', help: 'positions T the transformer sees (default: the model seqLen)' },
  { name: 'precision', type: 'string', help: 'bf16 | tf32 | fp32 (default bf16, or what the chip has)' },
  { name: 'sparsity', type: 'number', help: 'weight sparsity S of the attention and MLP matrices, in [0, 1)' },
  { name: 'sparsity-pattern', type: 'string', help: 'unstructured (default) | block:B | nm:N:M' },
  { name: 'patch-size', type: 'int', help: 'patch-level training: K tokens per position (default 1)' },
  { name: 'json', type: 'boolean', help: 'print JSON' },
];

export const GRAPH_FLAGS: FlagSpec[] = [
  MODEL_FLAG,
  ...SHAPE_FLAGS,
  { name: 'hw', type: 'string', help: `hardware for the fusion/pipeline plan: ${HARDWARE_NAMES.join(', ')} or a JSON file (default sn30)`, default: 'sn30' },
  { name: 'mode', type: 'string', help: 'kbk | dataflow: which schedule to plan (default dataflow)', default: 'dataflow' },
  { name: 'lowered', type: 'boolean', help: 'print the executable schedule the compiled WebGPU step runs (fp32): fused kernel calls, what each fuses, where its outputs live' },
];
export const SIMULATE_FLAGS: FlagSpec[] = [
  MODEL_FLAG,
  { name: 'hw', type: 'string', help: `hardware: ${HARDWARE_NAMES.join(', ')} or a JSON file`, default: 'sn30' },
  { name: 'mode', type: 'string', help: 'kbk (kernel by kernel) | dataflow', default: 'dataflow' },
  ...SHAPE_FLAGS,
];

function readModel(arg: unknown): GptShape {
  if (typeof arg !== 'string') throw new UserError('--model is required (a preset name or a JSON file)');
  if (MODEL_PRESETS[arg]) return resolveModel(arg);
  if (!fs.existsSync(arg)) throw new UserError(`--model: "${arg}" is neither a preset (${Object.keys(MODEL_PRESETS).join(', ')}) nor a file`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(arg, 'utf8'));
  } catch (e) {
    throw new UserError(`model file ${arg} is not valid JSON: ${(e as Error).message}`);
  }
  // a whole train config: take its model section
  const section = raw && typeof raw === 'object' && 'model' in (raw as object) ? (raw as { model: unknown }).model : raw;
  try {
    return resolveModel(section, 'model');
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`${arg}: ${e.message}`);
    throw e;
  }
}

function mode(v: unknown): 'kbk' | 'dataflow' {
  if (v === 'kbk' || v === 'dataflow' || v === 'df') return v === 'df' ? 'dataflow' : v;
  throw new UserError(`--mode must be kbk or dataflow, got "${String(v)}"`);
}

function graphOptions(values: Record<string, unknown>, precisionDefault: string) {
  return {
    batch: values.batch as number,
    gradAccum: values['grad-accum'] as number,
    ...(values.seq !== undefined ? { seqLen: values.seq as number } : {}),
    precision: ((values.precision as string | undefined) ?? precisionDefault) as 'bf16',
    ...(values.sparsity !== undefined ? { sparsity: values.sparsity as number } : {}),
    ...(values['sparsity-pattern'] !== undefined ? { sparsityPattern: values['sparsity-pattern'] as string } : {}),
    ...(values['patch-size'] !== undefined ? { patchSize: values['patch-size'] as number } : {}),
  };
}

export async function graphCommand(values: Record<string, unknown>): Promise<number> {
  const model = readModel(values.model);
  if (values.lowered) {
    const g = buildStepGraph(model, { ...graphOptions(values, 'fp32'), precision: 'fp32', eager: false });
    const masked = g.meta.sparsity > 0 ? Object.fromEntries(g.tensors.filter((t) => t.role === 'sparse-index').map((t) => [t.id.slice(2), g.meta.sparsityPattern.startsWith('block:') ? ('block' as const) : ('dense' as const)])) : {};
    const s = lowerStep(g, { gradClip: 1, masked });
    const calls = s.prologue.length + s.body.length * g.meta.gradAccum + s.epilogue.length;
    if (values.json) {
      process.stdout.write(JSON.stringify({ meta: s.meta, arenaBytes: s.arenaBytes, flatSize: s.flatSize, prologue: s.prologue, body: s.body, epilogue: s.epilogue, fusedOps: s.fusedOps, places: s.places }) + '\n');
      return 0;
    }
    process.stdout.write(
      `${g.ops.length} graph ops -> ${s.body.length} calls per micro-batch (${calls} per step with ${g.meta.gradAccum} micro-batch(es)); ` +
        `activation arena ${fmtB(s.arenaBytes)} (reused by liveness; the graph's activations total ${fmtB(g.tensors.filter((t) => t.role === 'activation').reduce((a, t) => a + t.bytes, 0))}); ` +
        `parameters, gradients and AdamW moments ${fmtB(4 * 4 * s.flatSize)}\n` +
        describeSchedule(s).join('\n') + '\n',
    );
    return 0;
  }
  const hw = loadHardware(String(values.hw));
  const m = mode(values.mode);
  // the graph simulate uses: on a GPU in KBK mode, the kernels PyTorch eager launches
  const g = buildStepGraph(model, { ...graphOptions(values, defaultPrecision(hw)), eager: eagerKbk(hw, m) });
  const p = plan(g, hw, { mode: m });
  if (values.json) {
    process.stdout.write(JSON.stringify(graphToJson(g, p.kernels, p.sections, m === 'dataflow' ? 'gpipe-per-section' : 'kernel-by-kernel')) + '\n');
    return 0;
  }
  const mem = memoryProfile(g);
  const byKind = new Map<string, { ops: number; flops: number; bytes: number }>();
  for (const o of g.ops) {
    const k = `${o.kind} ${o.phase}`;
    const e = byKind.get(k) ?? { ops: 0, flops: 0, bytes: 0 };
    e.ops++;
    e.flops += o.flops;
    e.bytes += o.bytesRead + o.bytesWritten;
    byKind.set(k, e);
  }
  const rows = [...byKind.entries()].sort((a, b) => b[1].flops - a[1].flops).map(([k, e]) => ({ op: k, count: e.ops, GFLOP: (e.flops / 1e9).toFixed(1), 'bytes moved': fmtB(e.bytes), 'FLOP/byte': (e.flops / Math.max(1, e.bytes)).toFixed(1) }));
  process.stdout.write(
    `${g.meta.parameters.toLocaleString('en-US')} parameters (${g.meta.keptParameters.toLocaleString('en-US')} kept), batch ${g.meta.batch} x ${g.meta.tokensPerRow} tokens -> ${g.meta.positions} positions, ${g.meta.precision}, sparsity ${g.meta.sparsity} (${g.meta.sparsityPattern})\n` +
      `${g.ops.length} ops, ${g.tensors.length} tensors, ${(g.meta.executedFlops / 1e12).toFixed(2)} TFLOP executed per step; memory: ${fmtB(mem.persistentBytes)} persistent, ${fmtB(mem.peakBytes)} peak (at ${mem.peakOp})\n` +
      `${p.kernels.length} kernels, ${p.sections.length} ${m === 'dataflow' ? 'dataflow sections (GPipe fill/drain per section, bubble (p-1)/(m+p-1))' : 'kernel launches'} on ${hw.name}\n\n` +
      formatTable(rows) + '\n',
  );
  return 0;
}

export async function simulateCommand(values: Record<string, unknown>): Promise<number> {
  const model = readModel(values.model);
  const hw = loadHardware(String(values.hw));
  const m = mode(values.mode);
  const t0 = performance.now();
  const r = simulateModel(model, graphOptions(values, defaultPrecision(hw)), hw, m);
  const ms = performance.now() - t0;
  if (values.json) {
    const { units, ...rest } = r;
    process.stdout.write(JSON.stringify({ ...rest, units: units.length > 400 ? undefined : units, simulateMilliseconds: ms }, null, 2) + '\n');
    return 0;
  }
  const rows = r.groups.map((gr) => ({
    'kernel group': gr.group, ops: gr.ops, kernels: gr.kernels, time: fmtS(gr.seconds), share: `${((100 * gr.seconds) / r.stepSeconds).toFixed(1)}%`,
    TFLOP: (gr.flops / 1e12).toFixed(2), 'off-chip': fmtB(gr.offChipBytes), bound: gr.bound,
  }));
  process.stdout.write(
    `${hw.name}, ${m === 'kbk' ? 'kernel-by-kernel' : 'dataflow'}: ${fmtS(r.stepSeconds)} per step (${r.model.gradAccum} x ${r.model.batch} x ${r.model.tokensPerRow} tokens), ` +
      `${Math.round(r.tokensPerSecond).toLocaleString('en-US')} tokens/s, ${(1e6 * r.stepSeconds / (r.model.gradAccum * r.model.batch * r.model.tokensPerRow)).toFixed(2)} µs/token\n` +
      `utilization ${(100 * r.utilization).toFixed(1)}% of ${r.model.precision} peak (dense-equivalent model-FLOP utilization ${(100 * r.modelFlopsUtilization).toFixed(1)}%), mostly ${r.bound}-bound; ` +
      `${r.kernels} kernels${r.sections !== undefined ? `, ${r.sections} sections` : ''}\n` +
      `off-chip traffic ${fmtB(r.offChipBytes)} per step; on-chip high-water ${fmtB(r.onChipPeakBytes)}; memory ${fmtB(r.memory.peakBytes)} peak of ${fmtB(r.memory.capacityBytes)}\n` +
      r.warnings.map((w) => `warning: ${w}\n`).join('') +
      '\n' + formatTable(rows) + '\n',
  );
  return 0;
}

