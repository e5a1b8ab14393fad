/**
 * The training loop: plan -> phases -> steps. Each step samples windows, lets plugins shape the
 * batch and embeddings, computes the loss and gradients (with accumulation), lets plugins edit the
 * gradients, applies AdamW with the phase's schedule, and lets plugins act after the update
 * (step.ts). Evaluation is always token-level on the fixed validation split (evaluate.ts);
 * checkpoints are atomic and typed (run-state.ts); the run directory is locked (runlock.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { useBackend, EXIT_CODES, PatchflowError } from '@patchflow/tensor';
import { ConfigError, type TrainConfig, finalizeModelConfig } from './config.js';
import { GPT } from './model.js';
import { AdamW, learningRate } from './optim.js';
import { type Batch, type PhaseContext, type StepContext, type TrainerPlugin, buildPlan, tokenBatch } from './plugin.js';
import { type CompiledStep, type CompiledStepResult, phaseContribution, stepCompilerFor } from './compile.js';
import { pluginsFromConfig, runPluginsFor } from './composition.js';
import { type ResolvedPhase, resolvePhases, stepFlops } from './phases.js';
import { evaluate, splitDataset, validationWindows } from './evaluate.js';
import { eagerStep } from './step.js';
import { Rng } from './rng.js';
import { BatchSampler, DataError, loadCorpus } from './data.js';
import { type Tokenizer, HfTokenizer, loadTokenizer } from './tokenizer.js';
import { CHECKPOINT_DIR, StorageError, asStorageError, saveCheckpoint } from './checkpoint.js';
import { CHECKPOINT_FORMAT, type CheckpointState, type EvalRecord, type RunState, type TrainingCheckpoint, loadTrainingCheckpoint, pluginTensorName, pluginTensors } from './run-state.js';
import { acquireRunLock, formatStarted } from './runlock.js';

export class DivergenceError extends PatchflowError {
  override name = 'DivergenceError';
  override readonly exitCode = EXIT_CODES.diverged;
}

export type TrainEvent =
  | { type: 'start'; phases: ResolvedPhase[]; totalSteps: number; parameters: number; resumedFrom?: number }
  | { type: 'phase'; phase: ResolvedPhase }
  | { type: 'step'; step: number; totalSteps: number; phase: string; loss: number; lr: number; gradNorm: number; tokens: number; flops: number; tokensPerSecond: number; elapsed: number; extra: Record<string, number> }
  | ({ type: 'eval' } & EvalRecord)
  | { type: 'checkpoint'; step: number; dir: string }
  | { type: 'log'; message: string };

export interface TrainOptions {
  config: TrainConfig;
  /**
   * The run's plugins. Default: built from `config.plugins` by the registered plugin definitions
   * (composition.ts; on resume from the checkpoint's config), in their declared order. A backend's
   * run plugins (e.g. rdu-sim's simulated clock) are added either way, unless one of these has the
   * same name.
   */
  plugins?: TrainerPlugin[];
  /** Run directory for checkpoints and metrics; none = keep everything in memory. */
  outDir?: string;
  resume?: boolean;
  /**
   * On resume: train to this budget (config.steps, token-level optimizer steps) instead of the
   * checkpoint's, e.g. to extend a finished run. It may not be smaller than the checkpoint's; the
   * learning-rate schedule is recomputed for the new length.
   */
  extendSteps?: number;
  /** Text to train on; default loadCorpus(config.data). */
  corpus?: { name: string; text: string };
  tokenizer?: Tokenizer;
  onEvent?: (e: TrainEvent) => void;
  /** Aborting saves a checkpoint and returns early with `interrupted: true`. */
  signal?: AbortSignal;
}

export interface TrainResult {
  model: GPT;
  tokenizer: Tokenizer;
  /** The run's plugins, as composed (the config's, then the backend's run plugins). */
  plugins: TrainerPlugin[];
  phases: ResolvedPhase[];
  steps: number;
  valLoss: number;
  /** Validation losses measured during the run. */
  evals: EvalRecord[];
  losses: { step: number; loss: number; flops: number }[];
  flops: number;
  tokens: number;
  seconds: number;
  /**
   * Seconds of this process's training steps: the run's time less evaluations, checkpoints and
   * compiling (and the weight copies they need on a compiled step).
   */
  stepSeconds: number;
  interrupted: boolean;
}

/**
 * Trains a model. With `outDir`, the run directory is locked for the whole run (a second writer
 * fails before step 1 with RunLockError; a stale lock is taken over with a 'log' event) and the lock
 * is released on every exit path.
 */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  if (!opts.outDir) return trainUnlocked(opts);
  const lock = acquireRunLock(opts.outDir, 'patchflow train');
  try {
    if (lock.tookOver) {
      const h = lock.tookOver;
      opts.onEvent?.({ type: 'log', message: `took over the stale lock on ${opts.outDir} of pid ${h.pid} (started ${formatStarted(h.started)}), whose process is gone` });
    }
    return await trainUnlocked(opts);
  } finally {
    lock.release();
  }
}

/** precision 'f16' needs a backend with a compiled step, and the compiled step turned on: checked before anything runs. */
function checkPrecision(config: TrainConfig): void {
  const precision = config.precision ?? 'fp32';
  if (precision === 'fp32') return;
  if (precision !== 'f16') throw new ConfigError(`invalid config: precision must be one of fp32, f16, got ${JSON.stringify(precision)}`);
  if (!stepCompilerFor(config.backend)) {
    throw new ConfigError(`invalid config: precision 'f16' needs a backend with a compiled step (webgpu); backend "${config.backend}" has none`);
  }
  if (config.compile === false) throw new ConfigError(`invalid config: precision 'f16' runs only on the compiled step; it cannot be combined with compile: false (--no-compile)`);
}

async function trainUnlocked(opts: TrainOptions): Promise<TrainResult> {
  const emit = opts.onEvent ?? (() => {});
  const outDir = opts.outDir;
  let config = opts.config;

  // Resuming: the checkpoint's config wins for everything that shapes the run (the backend, the
  // execution path and the precision may change; checkpoints are f32 either way).
  let ckpt: TrainingCheckpoint | undefined;
  if (opts.resume) {
    if (!outDir) throw new Error('resume needs an output directory');
    ckpt = loadTrainingCheckpoint(outDir, { backend: opts.config.backend, compile: opts.config.compile, precision: opts.config.precision ?? 'fp32' });
    config = ckpt.state.config;
    if (opts.extendSteps !== undefined && opts.extendSteps !== config.steps) {
      if (!Number.isInteger(opts.extendSteps) || opts.extendSteps < config.steps) {
        throw new ConfigError(`a resumed run can be extended, not shortened: steps ${opts.extendSteps} is less than the checkpoint's ${config.steps}`);
      }
      emit({ type: 'log', message: `extending the run from ${config.steps} to ${opts.extendSteps} steps; the learning-rate schedule now spans the new length` });
      config = { ...config, steps: opts.extendSteps };
    }
  } else if (opts.extendSteps !== undefined) {
    throw new ConfigError('extendSteps applies to a resumed run (resume: true)');
  }
  const own = opts.plugins ?? pluginsFromConfig(config);
  // a backend's run plugin yields to one of the same name the caller brought (its own settings)
  const plugins = [...own, ...runPluginsFor(config).filter((r) => !own.some((p) => p.name === r.name))];

  checkPrecision(config);
  await useBackend(config.backend);
  const tokenizer = opts.tokenizer ?? loadTokenizer(config.tokenizer, ckpt?.tokenizerJson);
  const corpus = opts.corpus ?? loadCorpus(config.data || undefined);
  const ids = tokenizer.encode(corpus.text);
  const modelCfg = finalizeModelConfig(config.model, tokenizer.vocabSize);
  config = { ...config, model: modelCfg };
  const dataset = splitDataset(ids, config, modelCfg.seqLen);

  const model = new GPT(modelCfg, config.seed);
  const optimizer = new AdamW(config.optim, model.specs.map((s) => ({ name: s.name, variable: model.p(s.name), decay: s.decay })));
  const phases = resolvePhases(buildPlan(plugins, config), config, plugins, model, optimizer);
  for (const ph of phases) {
    const need = ph.layout.windowTokens;
    if (dataset.trainTokens.length < need) {
      throw new DataError(`phase "${ph.name}" reads windows of ${need} tokens but the training split has only ${dataset.trainTokens.length}`);
    }
  }
  const totalSteps = phases.reduce((a, p) => a + p.steps, 0);
  const sampler = new BatchSampler(dataset.trainTokens, new Rng(config.seed + 1));
  const evalSet = validationWindows(dataset, config, modelCfg.seqLen);

  const run: RunState = { step: 0, phaseIndex: 0, phaseStep: 0, flops: 0, tokens: 0, elapsed: 0 };
  const evals: EvalRecord[] = [];
  const losses: TrainResult['losses'] = [];
  const ctxBase = { config, model, optimizer };
  const phaseCtx = (ph: ResolvedPhase, p: TrainerPlugin): PhaseContext => ({ ...ctxBase, phase: ph, phaseIndex: ph.index, settings: ph.plugins[p.name] });
  for (const p of plugins) await p.init?.(ctxBase);

  if (ckpt) {
    const st = ckpt.state;
    model.loadWeights(ckpt.weights);
    optimizer.importState(st.optimizerT, ckpt.optimizer);
    sampler.restore(st.sampler);
    Object.assign(run, st.run);
    evals.push(...st.evals);
    for (const p of plugins) {
      const ps = st.plugins[p.name];
      if (ps && p.loadState) p.loadState({ json: ps.json, tensors: pluginTensors(ckpt.optimizer, p.name) });
    }
    trimMetrics(outDir!, run.step);
  }

  const metricsPath = outDir ? path.join(outDir, 'metrics.jsonl') : undefined;
  /** A refused write as one StorageError that also says which checkpoint is intact. */
  const refused = (e: unknown, what: string, file?: string): unknown => {
    const intact = run.lastGood !== undefined ? `; the checkpoint of step ${run.lastGood} in ${path.join(outDir!, CHECKPOINT_DIR)} is intact` : '; no checkpoint had been written yet';
    return asStorageError(e, what, file, intact) ?? e;
  };
  const writeMetric = (rec: object) => {
    if (!metricsPath) return;
    try {
      fs.appendFileSync(metricsPath, JSON.stringify(rec) + '\n');
    } catch (e) {
      throw refused(e, 'metrics', metricsPath);
    }
  };
  if (outDir) checkFreeSpace(outDir, model);

  const save = async () => {
    if (!outDir) return;
    const pluginStates: CheckpointState['plugins'] = {};
    const extraTensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const p of plugins) {
      if (!p.saveState) continue;
      const s = await p.saveState();
      pluginStates[p.name] = { json: s.json };
      for (const [k, v] of Object.entries(s.tensors ?? {})) extraTensors[pluginTensorName(p.name, k)] = v;
    }
    const opt = await optimizer.exportState();
    const state: CheckpointState = {
      format: CHECKPOINT_FORMAT,
      config,
      step: run.step,
      run: { ...run, lastGood: run.step },
      sampler: sampler.state(),
      optimizerT: opt.t,
      plugins: pluginStates,
      evals,
      tokenizer: tokenizer.toJSON(),
      corpus: { name: corpus.name, tokens: ids.length },
      parameters: model.parameterCount(),
    };
    try {
      saveCheckpoint(outDir, {
        weights: await model.exportWeights(),
        optimizer: { ...opt.tensors, ...extraTensors },
        state,
        tokenizerJson: tokenizer instanceof HfTokenizer ? tokenizer.json : undefined,
      });
    } catch (e) {
      throw refused(e, `the checkpoint of step ${run.step}`);
    }
    run.lastGood = run.step;
    emit({ type: 'checkpoint', step: run.step, dir: outDir });
  };

  /** A sampled micro-batch of the phase (the plugin that owns the row layout builds it). */
  const makeBatch = (ph: ResolvedPhase, active: TrainerPlugin[]): Batch => {
    const windows = sampler.windows(config.batchSize, ph.layout.windowTokens);
    const owner = active.find((p) => p.makeBatch);
    return owner ? owner.makeBatch!(windows, config.batchSize, ph.layout, phaseCtx(ph, owner)) : tokenBatch(windows, config.batchSize, ph.layout);
  };

  /** The phase's compiled step, when the backend has a compiler and every active plugin a compiled form; else says why not. */
  const compilePhase = async (ph: ResolvedPhase, active: TrainerPlugin[]): Promise<CompiledStep | undefined> => {
    const compiler = stepCompilerFor(config.backend);
    if (!compiler || config.compile === false) return undefined;
    const contribution = phaseContribution(active, (p) => phaseCtx(ph, p));
    const c = 'reason' in contribution ? contribution : await compiler.compile({ config, model, optimizer, phase: ph, contribution });
    if ('reason' in c) {
      if (config.precision === 'f16') throw new ConfigError(`invalid config: precision 'f16' runs only on a compiled step, and phase "${ph.name}" cannot be compiled on ${config.backend}: ${c.reason}`);
      emit({ type: 'log', message: `phase "${ph.name}" runs the eager tfjs step on ${config.backend}: ${c.reason}` });
      return undefined;
    }
    emit({ type: 'log', message: `phase "${ph.name}": compiled step on ${config.backend}: ${c.description}` });
    return c;
  };

  /** Seconds spent outside training steps (evaluations, checkpoints, compiling). */
  let aside = 0;
  const timedAside = async <T>(f: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    try {
      return await f();
    } finally {
      aside += (performance.now() - t) / 1000;
    }
  };

  const resumedAtEnd = !!ckpt && run.step >= totalSteps;
  emit({ type: 'start', phases, totalSteps, parameters: model.parameterCount(), resumedFrom: ckpt ? run.step : undefined });
  const t0 = Date.now() - run.elapsed * 1000;
  const loopStart = performance.now();
  let interrupted = false;

  const doEval = async () => {
    const valLoss = await evaluate(model, evalSet, config.batchSize);
    const rec = { step: run.step, valLoss, flops: run.flops, tokens: run.tokens, elapsed: (Date.now() - t0) / 1000 };
    evals.push(rec);
    writeMetric({ type: 'eval', ...rec });
    emit({ type: 'eval', ...rec });
    return valLoss;
  };

  /** Steps submitted to a compiled step whose results are not processed yet (oldest first). */
  interface Pending {
    result: Promise<CompiledStepResult>;
    lr: number;
  }

  outer: for (let pi = run.phaseIndex; pi < phases.length; pi++) {
    const ph = phases[pi]!;
    const active = plugins.filter((p) => ph.plugins[p.name] !== undefined);
    const fresh = run.phaseIndex !== pi || run.phaseStep === 0;
    if (fresh) {
      run.phaseIndex = pi;
      run.phaseStep = 0;
      if (pi > 0 && ph.optimizer === 'reset') optimizer.reset();
    }
    for (const p of active) await p.phaseStart?.(phaseCtx(ph, p));
    emit({ type: 'phase', phase: ph });
    const compiled = await timedAside(() => compilePhase(ph, active));
    const hasFlopsHook = active.some((p) => p.flops);
    const rowsPerStep = config.batchSize * config.gradAccum;
    let windowStart = Date.now();
    let windowTokens = 0;
    const stepCtxAt = (p: TrainerPlugin, step: number, phaseStep: number): StepContext => ({ ...phaseCtx(ph, p), plan: phases, step, phaseStep, phaseSteps: ph.steps });

    /** Books a finished step: counters, plugins' afterStep (eager path), metrics, events. */
    const finishStep = async (loss: number, gradNorm: number, lr: number, mixed?: CompiledStepResult) => {
      if (!Number.isFinite(loss)) throw new DivergenceError(divergenceMessage(run.step + 1, loss, run.lastGood, outDir));
      // a skipped mixed-precision step (its scaled gradients overflowed) is not a divergence, unless
      // the loss scale cannot go lower
      const skipped = !!mixed?.skipped && (mixed.lossScale ?? 0) > 1;
      if (!Number.isFinite(gradNorm) && !skipped) throw new DivergenceError(divergenceMessage(run.step + 1, gradNorm, run.lastGood, outDir, 'gradient norm'));
      const flopsNow = hasFlopsHook ? stepFlops(active, { ...ctxBase, phase: ph, phaseIndex: ph.index, layout: ph.layout, rowsPerStep, step: run.step + 1 }, model) : ph.flopsPerStep;
      run.step++;
      run.phaseStep++;
      run.flops += flopsNow;
      run.tokens += ph.tokensPerStep;
      windowTokens += ph.tokensPerStep;
      if (!compiled) for (const p of active) await p.afterStep?.(stepCtxAt(p, run.step, run.phaseStep - 1));
      losses.push({ step: run.step, loss, flops: run.flops });
      const now = Date.now();
      const tps = windowTokens / Math.max(1e-3, (now - windowStart) / 1000);
      if (now - windowStart > 5000) {
        windowStart = now;
        windowTokens = 0;
      }
      const extra: Record<string, number> = {};
      for (const p of active) Object.assign(extra, p.metrics?.(phaseCtx(ph, p)) ?? {});
      if (mixed?.lossScale !== undefined) Object.assign(extra, { lossScale: mixed.lossScale, skipped: mixed.skipped ? 1 : 0, skippedSteps: mixed.skippedSteps ?? 0 });
      run.elapsed = (now - t0) / 1000;
      if (run.step % config.logEvery === 0 || run.phaseStep === ph.steps) {
        writeMetric({ type: 'train', step: run.step, phase: ph.name, loss, lr, gradNorm, tokens: run.tokens, flops: run.flops, tokensPerSecond: tps, elapsed: run.elapsed, ...extra });
      }
      emit({ type: 'step', step: run.step, totalSteps, phase: ph.name, loss, lr, gradNorm, tokens: run.tokens, flops: run.flops, tokensPerSecond: tps, elapsed: run.elapsed, extra });
    };

    /** After step `step`: evaluation, checkpoint, interruption (each needs the weights of exactly that step). */
    const isSyncPoint = (step: number) =>
      step === totalSteps ||
      (config.evalEvery > 0 && step % config.evalEvery === 0) ||
      (config.checkpointEvery > 0 && step % config.checkpointEvery === 0) ||
      !!opts.signal?.aborted;
    /** `inFlight`: compiled steps submitted after this one; an interruption waits until they are booked too (the GPU's weights are theirs). */
    const afterBooking = async (inFlight = 0): Promise<boolean> => {
      const last = run.step === totalSteps;
      const evalNow = config.evalEvery > 0 && run.step % config.evalEvery === 0 && !last;
      const saveNow = config.checkpointEvery > 0 && run.step % config.checkpointEvery === 0 && !last;
      if ((evalNow || saveNow) && compiled) await timedAside(() => compiled.store());
      if (evalNow) await timedAside(doEval);
      if (saveNow) await timedAside(save);
      // let signal handlers run: on the cpu backends every await above resolves at once, so without
      // this turn of the event loop a Ctrl-C would not be seen until training ends
      await new Promise<void>((r) => setImmediate(r));
      if (opts.signal?.aborted && !last && inFlight === 0) {
        if (compiled) await compiled.store();
        interrupted = true;
        await save();
        return true;
      }
      return false;
    };

    if (compiled) {
      await timedAside(() => compiled.load());
      const pending: Pending[] = [];
      const drainOne = async () => {
        const p = pending.shift()!;
        const r = await p.result;
        await finishStep(r.loss, r.gradNorm, p.lr, r);
        return afterBooking(pending.length);
      };
      try {
        while (run.phaseStep + pending.length < ph.steps) {
          const step = run.step + pending.length; // 0-based index of the step to submit
          const lr = learningRate(config.optim, step - ph.scheduleStart, ph.scheduleSteps);
          const batches = Array.from({ length: config.gradAccum }, () => makeBatch(ph, active));
          optimizer.t += 1;
          pending.push({ result: (await compiled.submit(batches, lr, optimizer.t)).done, lr });
          // keep steps in flight while the next is prepared, except where a step's weights are needed
          while (pending.length > compiled.stepsInFlight || (pending.length && isSyncPoint(run.step + pending.length))) {
            if (await drainOne()) break outer;
          }
        }
        while (pending.length) if (await drainOne()) break outer;
        await timedAside(() => compiled.store());
      } finally {
        // steps submitted but not booked (an error, an interrupt) are not counted
        optimizer.t -= pending.length;
        compiled.dispose();
      }
      continue;
    }

    while (run.phaseStep < ph.steps) {
      const lr = learningRate(config.optim, run.step - ph.scheduleStart, ph.scheduleSteps);
      const stepCtx = (p: TrainerPlugin): StepContext => stepCtxAt(p, run.step + 1, run.phaseStep);
      for (const p of active) await p.beforeStep?.(stepCtx(p));
      const { loss, gradNorm, applied } = await eagerStep({ config, model, optimizer, sampler, phase: ph, active, phaseCtx: (p) => phaseCtx(ph, p), stepCtx, lr });
      await finishStep(applied ? loss : NaN, gradNorm, lr);
      if (await afterBooking()) break outer;
    }
  }
  const stepSeconds = (performance.now() - loopStart) / 1000 - aside;
  let valLoss = evals.at(-1)?.valLoss ?? NaN;
  const alreadyDone = resumedAtEnd && evals.at(-1)?.step === run.step;
  if (!interrupted && !alreadyDone) {
    valLoss = await doEval();
    await save();
  }
  return { model, tokenizer, plugins, phases, steps: run.step, valLoss, evals, losses, flops: run.flops, tokens: run.tokens, seconds: (Date.now() - t0) / 1000, stepSeconds, interrupted };
}

/**
 * Fails before step 1 when the output directory's file system cannot hold one checkpoint (weights
 * and AdamW moments in f32, plus a margin); where free space cannot be read, says nothing.
 */
function checkFreeSpace(outDir: string, model: GPT): void {
  let free: number;
  try {
    const st = fs.statfsSync(outDir);
    free = Number(st.bavail) * Number(st.bsize);
  } catch {
    return;
  }
  const need = Math.ceil(model.parameterCount() * 4 * 3 * 1.05) + 64 * 1024;
  if (free < need) {
    const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    throw new StorageError(
      `${outDir} has ${mb(free)} free but a checkpoint of this model needs about ${mb(need)} (weights and optimizer state); free some space or use another output directory`,
      'ENOSPC',
      outDir,
    );
  }
}

function divergenceMessage(step: number, value: number, lastGood: number | undefined, outDir: string | undefined, what = 'loss'): string {
  const kept = outDir && lastGood !== undefined ? `; the last good checkpoint (step ${lastGood}) is kept in ${outDir}` : outDir ? '; no checkpoint had been written yet' : '';
  return `training diverged at step ${step}: ${what} is ${value}${kept}. Try a lower optim.lr or a smaller gradClip.`;
}

/** After a resume, drops metric lines past the checkpoint's step (they will be written again). */
function trimMetrics(outDir: string, step: number): void {
  const p = path.join(outDir, 'metrics.jsonl');
  if (!fs.existsSync(p)) return;
  const kept = fs
    .readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => {
      if (!l.trim()) return false;
      try {
        return (JSON.parse(l) as { step: number }).step <= step;
      } catch {
        return false;
      }
    });
  fs.writeFileSync(p, kept.map((l) => l + '\n').join(''));
}
