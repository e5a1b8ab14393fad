/**
 * `patchflow tokenizer train --vocab N [--data PATH] --out tokenizer.json`: trains a byte-level BPE
 * (GPT-2 pre-tokenizer and byte map; @patchflow/trainer's trainBpe) and writes a Hugging Face
 * tokenizer.json that `patchflow train --tokenizer` reads.
 *
 * The corpus is read as `patchflow train --data` reads it (loadCorpus), so the same sources work.
 * Progress goes to stderr; one summary line to stdout. Mistakes are one line on stderr, exit 2.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadCorpus, trainBpe, bpeTokenizerJson, type BpeModel } from '@patchflow/trainer';
import type { FlagSpec } from './args.js';
import { UserError } from './errors.js';
import { Progress } from './progress.js';

export const TOKENIZER_FLAGS: FlagSpec[] = [
  { name: 'vocab', type: 'int', help: 'vocabulary size: 256 bytes + merges + special tokens', placeholder: 'n' },
  { name: 'data', type: 'string', help: 'training text, as for `train --data`: .txt, directory, .jsonl, or corpus:NAME (moby-dick, sotu, brown, english); default: bundled Moby Dick', placeholder: 'path' },
  { name: 'out', type: 'string', short: 'o', help: 'tokenizer.json to write', placeholder: 'path' },
  { name: 'min-frequency', type: 'int', help: 'do not merge pairs seen fewer times', default: 2 },
  { name: 'special', type: 'string', help: 'comma-separated special tokens, given the last ids (e.g. "<|endoftext|>")', placeholder: 'tokens' },
  { name: 'quiet', type: 'boolean', help: 'no progress on stderr' },
];

export async function tokenizerCommand(positionals: string[], values: Record<string, unknown>): Promise<number> {
  const action = positionals[0];
  if (action !== 'train') {
    throw new UserError(action === undefined ? "missing action: use 'patchflow tokenizer train --vocab N --out tokenizer.json'" : `unknown tokenizer action '${action}' (supported: train)`);
  }
  if (values.vocab === undefined) throw new UserError('--vocab N is required (e.g. --vocab 4096)');
  const vocab = Number(values.vocab);
  if (typeof values.out !== 'string' || values.out === '') throw new UserError('--out PATH is required (e.g. --out tokenizer.json)');
  const out = values.out;
  const special = typeof values.special === 'string' && values.special !== '' ? values.special.split(',').filter((s) => s.length > 0) : [];
  const minFrequency = Number(values['min-frequency']);
  if (!fs.existsSync(path.dirname(path.resolve(out)))) throw new UserError(`cannot write ${out}: directory ${path.dirname(out)} does not exist`);
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new UserError(`cannot write ${out}: it is a directory`);
  // Checked before reading the corpus, so a mistake fails fast.
  if (!Number.isInteger(vocab) || vocab < 256 + special.length) throw new UserError(`--vocab must be at least ${256 + special.length} (256 bytes${special.length ? ` + ${special.length} special tokens` : ''}), got ${vocab}`);
  if (minFrequency < 1) throw new UserError(`--min-frequency must be at least 1, got ${minFrequency}`);

  const t0 = performance.now();
  const corpus = loadCorpus(typeof values.data === 'string' ? values.data : undefined);
  const quiet = values.quiet === true;
  let progress: Progress | undefined;
  let phase = '';
  let model: BpeModel;
  try {
    model = trainBpe(corpus.text, {
      vocabSize: vocab,
      minFrequency,
      specialTokens: special,
      onProgress: quiet
        ? undefined
        : (p) => {
            if (p.phase !== phase) {
              progress?.done();
              phase = p.phase;
              progress = new Progress({ total: p.total, label: 'tokenizer' });
            }
            progress!.update({ step: p.done, phase: p.phase === 'count' ? 'pre-tokenize (chars)' : 'merges' });
          },
    });
  } finally {
    progress?.done();
  }
  const json = bpeTokenizerJson(model);
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, json);
    fs.renameSync(tmp, out);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new UserError(`cannot write ${out}: ${(e as Error).message}`);
  }
  const secs = (performance.now() - t0) / 1000;
  const nMerges = model.merges.length;
  if (model.tokens.length < vocab) {
    const why = model.stoppedBy === 'noPairs' ? 'every word is already one token' : `no pair occurs ${minFrequency} or more times`;
    process.stderr.write(`patchflow: warning: vocabulary is ${model.tokens.length}, not ${vocab}: ${why} (use more text${model.stoppedBy === 'minFrequency' ? ' or a lower --min-frequency' : ''})\n`);
  }
  process.stdout.write(
    `wrote ${out}: vocabulary ${model.tokens.length} (256 bytes + ${nMerges} merges${special.length ? ` + ${special.length} special` : ''}) ` +
      `from ${corpus.name} (${model.trainBytes.toLocaleString('en-US')} bytes, ${model.words.total.toLocaleString('en-US')} words, ${model.words.unique.toLocaleString('en-US')} distinct); ` +
      `${(model.trainBytes / Math.max(1, model.trainTokens)).toFixed(2)} bytes/token on it; ${secs.toFixed(1)} s\n`,
  );
  return 0;
}
