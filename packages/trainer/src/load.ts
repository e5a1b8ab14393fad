/** Opening a trained run for evaluation or generation: a checkpoint is an ordinary token-level model. */
import { useBackend } from '@patchflow/tensor';
import { type TrainConfig, ConfigError } from './config.js';
import { GPT } from './model.js';
import { loadTrainingCheckpoint } from './run-state.js';
import { tokenizerFromSpec, type Tokenizer } from './tokenizer.js';
import { loadCorpus } from './data.js';
import { evaluate, splitDataset, validationWindows } from './evaluate.js';

export interface TrainedModel {
  model: GPT;
  tokenizer: Tokenizer;
  config: TrainConfig;
  step: number;
}

export async function loadTrainedModel(dir: string, backend = 'cpu'): Promise<TrainedModel> {
  const ck = loadTrainingCheckpoint(dir);
  const st = ck.state;
  await useBackend(backend);
  const tokenizer = tokenizerFromSpec(st.tokenizer, { json: ck.tokenizerJson });
  const model = new GPT(st.config.model, st.config.seed);
  model.loadWeights(ck.weights);
  return { model, tokenizer, config: st.config, step: st.step };
}

/** Token-level validation loss on the validation split of `data` (default: the training corpus). */
export async function evaluateOnCorpus(t: TrainedModel, opts: { data?: string; batches?: number } = {}): Promise<{ valLoss: number; tokens: number; corpus: string }> {
  const corpus = loadCorpus(opts.data ?? (t.config.data || undefined));
  const ids = t.tokenizer.encode(corpus.text);
  const seqLen = t.model.config.seqLen;
  const ds = splitDataset(ids, t.config, seqLen);
  const batches = opts.batches ?? t.config.evalBatches;
  if (!(batches >= 1)) throw new ConfigError(`evaluation batches must be >= 1, got ${batches}`);
  const windows = validationWindows(ds, t.config, seqLen, batches);
  const valLoss = await evaluate(t.model, windows, t.config.batchSize);
  return { valLoss, tokens: windows.length * seqLen, corpus: corpus.name };
}
