/**
 * @patchflow/backend-rdu-sim: hardware descriptions (hw/*.json), a loader that validates them, a
 * `simulateModel` helper over @patchflow/dataflow-runtime, and the `rdu-sim` backend: the numerics run on
 * the `cpu` backend's tfjs backend while `rduSimClock` (a trainer plugin that the backend adds to every
 * run on it: `registerRunPlugins`) advances a simulated clock by the dataflow runtime's step time and
 * reports it in each step's metrics.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type BackendPlugin, cpuBackend, registerBackend } from '@patchflow/tensor';
import { addToAllPhases, registerRunPlugins, type PhaseContext, type TrainerPlugin } from '@patchflow/trainer';
import {
  ConfigError,
  type GraphOptions,
  type GptShape,
  type HardwareSpec,
  type Precision,
  type SimulationResult,
  buildStepGraph,
  eagerKbk,
  simulate,
  validateHardware,
} from '@patchflow/dataflow-runtime';

export const HARDWARE_NAMES = ['sn10', 'sn30', 'a100', 'h100'] as const;

/** The shipped descriptions live in the package's hw/ folder (next to dist/). */
export function hardwareDir(): string {
  return fileURLToPath(new URL('../hw/', import.meta.url));
}

/** A shipped description by name (sn10, sn30, a100, h100) or a JSON file; ConfigError names the bad field. */
export function loadHardware(nameOrFile: string): HardwareSpec {
  const shipped = (HARDWARE_NAMES as readonly string[]).includes(nameOrFile);
  const file = shipped ? `${hardwareDir()}${nameOrFile}.json` : nameOrFile;
  if (!fs.existsSync(file)) throw new ConfigError(`hardware "${nameOrFile}" is neither a shipped description (${HARDWARE_NAMES.join(', ')}) nor a file`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`hardware file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  try {
    return validateHardware(raw);
  } catch (e) {
    if (e instanceof ConfigError && !shipped) throw new ConfigError(`${file}: ${e.message}`);
    throw e;
  }
}

/** The precision a chip runs by default: bf16 when it has it. */
export function defaultPrecision(hw: HardwareSpec): Precision {
  const have = Object.keys(hw.compute.matmulTflops) as Precision[];
  return have.includes('bf16') ? 'bf16' : have[0]!;
}

/**
 * Builds the step graph and simulates it. KBK on a chip whose KBK mode is PyTorch eager (kbkFusion "none": the
 * GPUs) builds the ops eager actually launches (casts, copies, fills, attention helpers; GraphOptions.eager),
 * unless `graph.eager` says otherwise; DF and fused KBK simulate the fused step graph.
 */
export function simulateModel(model: GptShape, graph: GraphOptions, hw: HardwareSpec, mode: 'kbk' | 'dataflow'): SimulationResult {
  const g = buildStepGraph(model, { precision: defaultPrecision(hw), eager: eagerKbk(hw, mode), ...graph });
  return simulate(g, hw, { mode });
}

// ---------------------------------------------------------------- the backend

export const RDU_SIM_BACKEND = 'rdu-sim';

export const rduSimBackend: BackendPlugin = {
  name: RDU_SIM_BACKEND,
  description: 'simulated dataflow chip: numerics on the cpu backend, time from @patchflow/dataflow-runtime (PATCHFLOW_SIM_HW, PATCHFLOW_SIM_MODE)',
  tfjsName: cpuBackend.tfjsName,
  checkAvailability: () => cpuBackend.checkAvailability(),
  setup: () => cpuBackend.setup(),
  capabilities() {
    const c = cpuBackend.capabilities();
    const { hw, mode } = simSettingsFromEnv();
    return { ...c, device: 'simulated', notes: [`simulates ${hw} in ${mode} mode; computes on the cpu backend`, ...(c.notes ?? [])] };
  },
  kernels: cpuBackend.kernels,
};

registerBackend(rduSimBackend);
// every run on it carries the simulated clock (settings from PATCHFLOW_SIM_* at the run's start)
registerRunPlugins(RDU_SIM_BACKEND, () => [rduSimClock()]);

export interface SimSettings {
  hw: string;
  mode: 'kbk' | 'dataflow';
  sparsity?: number;
  sparsityPattern?: string;
}

/** Simulation settings of a run on the `rdu-sim` backend: PATCHFLOW_SIM_HW (default sn30), PATCHFLOW_SIM_MODE (default dataflow). */
export function simSettingsFromEnv(env: Record<string, string | undefined> = process.env): SimSettings {
  const mode = env.PATCHFLOW_SIM_MODE ?? 'dataflow';
  if (mode !== 'kbk' && mode !== 'dataflow') throw new ConfigError(`PATCHFLOW_SIM_MODE must be kbk or dataflow, got "${mode}"`);
  const s = env.PATCHFLOW_SIM_SPARSITY;
  return { hw: env.PATCHFLOW_SIM_HW ?? 'sn30', mode, ...(s ? { sparsity: Number(s) } : {}), ...(env.PATCHFLOW_SIM_SPARSITY_PATTERN ? { sparsityPattern: env.PATCHFLOW_SIM_SPARSITY_PATTERN } : {}) };
}

export const SIM_PLUGIN = 'rdu-sim-clock';

export interface SimClock extends TrainerPlugin {
  /** Simulated seconds so far, and the last phase's simulation. */
  readonly clockSeconds: number;
  readonly last?: SimulationResult;
  /** One paragraph for the end of a run. */
  summary(): string[];
}

/**
 * A trainer plugin that, in every phase, simulates the phase's step (the model, batch, gradient
 * accumulation and row layout the trainer actually runs, so a patch phase simulates T positions from
 * K·T tokens) and advances a simulated clock by that step time after each real step. Its metrics
 * (metrics.jsonl, step events): sim_step_s, sim_clock_s, sim_tokens_per_s, sim_utilization,
 * sim_offchip_GB, sim_onchip_peak_MB.
 */
export function rduSimClock(settings: SimSettings = simSettingsFromEnv()): SimClock {
  const hw = loadHardware(settings.hw);
  let clock = 0;
  let steps = 0;
  let last: SimulationResult | undefined;
  const byPhase = new Map<number, SimulationResult>();
  const sim = (ctx: PhaseContext): SimulationResult => {
    const cached = byPhase.get(ctx.phaseIndex);
    if (cached) return cached;
    const layout = (ctx.phase as { layout?: { positions: number; labelsPerPosition: number } }).layout;
    // the sparsity plugin's settings for this phase (its target sparsity), unless the env sets them
    const sp = ctx.phase.plugins['sparsity'] as { sparsity?: number; pattern?: string; dense?: boolean } | undefined;
    const sparse =
      settings.sparsity !== undefined
        ? { sparsity: settings.sparsity, sparsityPattern: settings.sparsityPattern }
        : sp && !sp.dense && typeof sp.sparsity === 'number' && sp.sparsity > 0
          ? { sparsity: sp.sparsity, sparsityPattern: sp.pattern }
          : {};
    const r = simulateModel(
      ctx.model.config,
      {
        batch: ctx.config.batchSize,
        gradAccum: ctx.config.gradAccum,
        seqLen: layout?.positions ?? ctx.model.config.seqLen,
        patchSize: layout?.labelsPerPosition ?? 1,
        ...sparse,
      },
      hw,
      settings.mode,
    );
    byPhase.set(ctx.phaseIndex, r);
    return r;
  };
  return {
    name: SIM_PLUGIN,
    plan: (phases) => addToAllPhases(phases, SIM_PLUGIN, { hw: settings.hw, mode: settings.mode }),
    phaseStart(ctx) {
      last = sim(ctx);
    },
    afterStep(ctx) {
      last = sim(ctx);
      clock += last.stepSeconds;
      steps++;
    },
    metrics(ctx) {
      const r = sim(ctx);
      return {
        sim_step_s: r.stepSeconds,
        sim_clock_s: clock,
        sim_tokens_per_s: r.tokensPerSecond,
        sim_utilization: r.utilization,
        sim_offchip_GB: r.offChipBytes / 1e9,
        sim_onchip_peak_MB: r.onChipPeakBytes / 1e6,
      };
    },
    get clockSeconds() {
      return clock;
    },
    get last() {
      return last;
    },
    summary() {
      if (!last) return [`rdu-sim: no step simulated`];
      return [
        `Simulated ${hw.name} (${settings.mode}): ${steps} steps in ${fmtS(clock)} of simulated time; last phase ${fmtS(last.stepSeconds)} per step ` +
        `(${Math.round(last.tokensPerSecond).toLocaleString('en-US')} tokens/s), utilization ${(100 * last.utilization).toFixed(1)}%, ` +
        `off-chip traffic ${fmtB(last.offChipBytes)} per step, on-chip high-water ${fmtB(last.onChipPeakBytes)}, mostly ${last.bound}-bound.`,
      ];
    },
  };
}

export function fmtS(s: number): string {
  return s >= 1 ? `${s.toFixed(3)} s` : s >= 1e-3 ? `${(s * 1e3).toFixed(3)} ms` : `${(s * 1e6).toFixed(2)} µs`;
}

export function fmtB(b: number): string {
  return b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`;
}
