/** Autoregressive sampling from a trained model (full forward per token; no KV cache). */
import { tf } from '@patchflow/tensor';
import type { GPT } from './model.js';
import { Rng } from './rng.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** Keep the k most likely tokens; 0 = all. */
  topK: number;
  seed: number;
}

export async function generate(model: GPT, prompt: ArrayLike<number>, o: GenerateOptions): Promise<number[]> {
  const out = Array.from(prompt);
  const rng = new Rng(o.seed);
  const t = model.config.seqLen;
  const v = model.config.vocabSize;
  for (let i = 0; i < o.maxNewTokens; i++) {
    const ctx = out.slice(-t);
    const logits = tf.tidy(() => {
      const all = model.forward(tf.tensor2d(Int32Array.from(ctx), [1, ctx.length], 'int32'));
      return tf.slice(all, [ctx.length - 1, 0], [1, v]);
    });
    const row = (await logits.data()) as Float32Array;
    logits.dispose();
    out.push(sampleFromLogits(row, o.temperature, o.topK, rng));
  }
  return out.slice(prompt.length);
}

export function sampleFromLogits(logits: Float32Array, temperature: number, topK: number, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature <= 0) return best;
  let idx = Array.from(logits.keys());
  if (topK > 0 && topK < logits.length) idx = idx.sort((a, b) => logits[b]! - logits[a]!).slice(0, topK);
  const max = logits[best]!;
  const w = idx.map((i) => Math.exp((logits[i]! - max) / temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let r = rng.next() * total;
  for (let j = 0; j < idx.length; j++) {
    r -= w[j]!;
    if (r <= 0) return idx[j]!;
  }
  return idx[idx.length - 1]!;
}
