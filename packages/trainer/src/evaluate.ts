/** Token-level evaluation on a run's fixed validation split (training's evaluations and `patchflow eval` alike). */
import { tf, crossEntropy } from '@patchflow/tensor';
import type { TrainConfig } from './config.js';
import type { GPT } from './model.js';
import { tokenBatch, tokenLayout } from './plugin.js';
import { TokenDataset, evalWindows } from './data.js';

/** The run's fixed train/validation split of a token stream. */
export function splitDataset(ids: Int32Array, config: TrainConfig, seqLen: number): TokenDataset {
  return new TokenDataset(ids, { valFraction: config.valFraction, minTokens: seqLen + 1 });
}

/** The held-out windows every evaluation of a run uses (training's and `patchflow eval`'s alike). */
export function validationWindows(dataset: TokenDataset, config: TrainConfig, seqLen: number, batches = config.evalBatches): Int32Array[] {
  return evalWindows(dataset.valTokens, seqLen + 1, batches * config.batchSize);
}

/** Mean token-level validation loss over the fixed evaluation windows. */
export async function evaluate(model: GPT, windows: Int32Array[], batchSize: number): Promise<number> {
  const t = model.config.seqLen;
  let total = 0;
  let count = 0;
  for (let i = 0; i < windows.length; i += batchSize) {
    const rows = windows.slice(i, i + batchSize);
    const flat = new Int32Array(rows.length * (t + 1));
    rows.forEach((w, r) => flat.set(w, r * (t + 1)));
    const batch = tokenBatch(flat, rows.length, tokenLayout(t));
    const s = tf.tidy(() => {
      const logits = model.forward(tf.tensor2d(batch.inputs, [rows.length, t], 'int32'));
      return tf.sum(crossEntropy(logits, tf.tensor2d(batch.labels, [rows.length * t, 1], 'int32')));
    });
    total += (await s.data())[0]!;
    s.dispose();
    count += rows.length * t;
  }
  return total / count;
}
