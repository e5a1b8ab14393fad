/**
 * Byte-level BPE training (GPT-2 style) that writes a Hugging Face `tokenizer.json`.
 *
 * Pipeline, the same as the tokenizer in tokenizer.ts applies when encoding:
 *   1. pre-tokenize: the GPT-2 regex (GPT2_PATTERN: contractions, ` ?letters`, ` ?digits`,
 *      ` ?other`, whitespace) splits the text into words; words are counted;
 *   2. each word becomes its UTF-8 bytes; byte b is the symbol with id b (its vocabulary string is
 *      GPT-2's bytes_to_unicode character, so a space is "Ġ" and a newline "Ċ");
 *   3. repeatedly the most frequent adjacent symbol pair (counted over all words, weighted by word
 *      frequency, never across word boundaries) is merged into a new symbol, every non-overlapping
 *      occurrence left to right, until the vocabulary has `vocabSize` entries, no pair is left, or
 *      the best pair occurs fewer than `minFrequency` times.
 *
 * Tie rule (determinism): among pairs of equal count the one with the smaller left id wins, then
 * the smaller right id (ids: bytes 0..255 by byte value, merged symbols in the order they were
 * created). This is the rule of HF's BpeTrainer, with our id order.
 *
 * Vocabulary layout: ids 0..255 are the 256 bytes in byte order (so a byte-level token id equals
 * the ByteTokenizer id of that byte), then merged symbols in merge order, then the special tokens
 * (if any), which are also written to `added_tokens` so that they are matched before
 * pre-tokenization. Two merges can produce the same string ("ab"+"c" and "a"+"bc"); the second one
 * is still recorded in `merges` but reuses the existing id, as HF does, so the vocabulary size
 * counts distinct strings.
 *
 * Speed: pair counts are kept incrementally. Each pair remembers the words it occurs in; a merge
 * only rescans those words and applies count deltas for the neighbouring pairs; a binary max-heap
 * with lazy invalidation (entries whose count is out of date are skipped when popped) gives the
 * best pair. Cost per merge is proportional to the occurrences touched, not to the corpus.
 *
 * Output (bpeTokenizerJson): the tokenizer.json schema of the `tokenizers` library — model.type
 * "BPE" with vocab (string -> id) and merges ("a b" strings, readable by every version), ByteLevel
 * pre-tokenizer and decoder (add_prefix_space false, use_regex true), no normalizer, no
 * post-processor. Only what HfTokenizer (tokenizer.ts) supports is used. Checked with the Python
 * `tokenizers` 0.23.2 on the device machine: it loads the file and gives the same ids as HfTokenizer
 * (tools/device/check_tokenizer_json.py).
 */
import { bytesToUnicode, GPT2_PATTERN, TokenizerError } from './tokenizer.js';

export interface BpeTrainOptions {
  /** Total vocabulary size: 256 bytes + merges + special tokens. */
  vocabSize: number;
  /** A pair seen fewer times than this is not merged (default 2). */
  minFrequency?: number;
  /** Special tokens (e.g. "<|endoftext|>"), given the last ids. Default none. */
  specialTokens?: readonly string[];
  /** Called during training: phase 'count' (chars of text pre-tokenized) then 'merge' (vocabulary entries). */
  onProgress?: (p: { phase: 'count' | 'merge'; done: number; total: number }) => void;
}

export interface BpeModel {
  /** Token strings by id (byte-level characters; special tokens as given). */
  tokens: string[];
  /** Merges in rank order, as pairs of token strings. */
  merges: [string, string][];
  specialTokens: string[];
  /** Why training stopped: the target was reached, no pair was left, or the best pair was below minFrequency. */
  stoppedBy: 'vocabSize' | 'noPairs' | 'minFrequency';
  /** Distinct pre-tokenized words and their total count. */
  words: { unique: number; total: number };
  /** UTF-8 bytes of the training text (special tokens excluded) and its length in tokens under the learned merges. */
  trainBytes: number;
  trainTokens: number;
}

const MAX_VOCAB = 1 << 20;
const KEY_MUL = 1 << 20; // pair key = left * 2^20 + right, exact in a double

/** Binary max-heap of (count, key): larger count first, then smaller key. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  private better(i: number, j: number): boolean {
    const ci = this.counts[i]!;
    const cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }

  private swap(i: number, j: number): void {
    const c = this.counts[i]!;
    this.counts[i] = this.counts[j]!;
    this.counts[j] = c;
    const k = this.keys[i]!;
    this.keys[i] = this.keys[j]!;
    this.keys[j] = k;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes and returns the best entry. */
  pop(): { count: number; key: number } | undefined {
    const n = this.counts.length;
    if (n === 0) return undefined;
    const top = { count: this.counts[0]!, key: this.keys[0]! };
    const lastC = this.counts.pop()!;
    const lastK = this.keys.pop()!;
    if (n > 1) {
      this.counts[0] = lastC;
      this.keys[0] = lastK;
      let i = 0;
      const m = n - 1;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let b = i;
        if (l < m && this.better(l, b)) b = l;
        if (r < m && this.better(r, b)) b = r;
        if (b === i) break;
        this.swap(i, b);
        i = b;
      }
    }
    return top;
  }
}

function checkOptions(opts: BpeTrainOptions): { vocabSize: number; minFrequency: number; specials: string[] } {
  const specials = [...(opts.specialTokens ?? [])];
  const vocabSize = opts.vocabSize;
  if (!Number.isInteger(vocabSize) || vocabSize < 256 + specials.length || vocabSize > MAX_VOCAB) {
    throw new TokenizerError(
      `BPE vocabulary size must be an integer from ${256 + specials.length} (256 bytes${specials.length ? ` + ${specials.length} special tokens` : ''}) to ${MAX_VOCAB}, got ${vocabSize}`,
    );
  }
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new TokenizerError(`minFrequency must be a positive integer, got ${minFrequency}`);
  const seen = new Set<string>();
  for (const s of specials) {
    if (typeof s !== 'string' || s.length === 0) throw new TokenizerError('special tokens must be non-empty strings');
    if (seen.has(s)) throw new TokenizerError(`special token ${JSON.stringify(s)} is given twice`);
    seen.add(s);
  }
  return { vocabSize, minFrequency, specials };
}

/** Splits `text` around the special tokens (they are not part of any word) and counts GPT-2 words. */
function countWords(texts: readonly string[], specials: readonly string[], onProgress?: BpeTrainOptions['onProgress']): Map<string, number> {
  const counts = new Map<string, number>();
  const total = texts.reduce((a, t) => a + t.length, 0);
  let done = 0;
  const splitRe = specials.length
    ? new RegExp([...specials].sort((a, b) => b.length - a.length).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'gu')
    : undefined;
  const REPORT_EVERY = 1 << 20; // characters between progress reports
  for (const text of texts) {
    const parts = splitRe ? text.split(splitRe) : [text];
    for (const part of parts) {
      let nextReport = REPORT_EVERY;
      GPT2_PATTERN.lastIndex = 0;
      for (const m of part.matchAll(GPT2_PATTERN)) {
        const w = m[0];
        counts.set(w, (counts.get(w) ?? 0) + 1);
        if (m.index! >= nextReport) {
          onProgress?.({ phase: 'count', done: done + m.index!, total });
          nextReport = m.index! + REPORT_EVERY;
        }
      }
      done += part.length;
      onProgress?.({ phase: 'count', done, total });
    }
  }
  return counts;
}

/**
 * Trains a byte-level BPE on `text` (a string or several documents; words never span documents).
 * Throws TokenizerError for bad options or an empty text.
 */
export function trainBpe(text: string | readonly string[], opts: BpeTrainOptions): BpeModel {
  const { vocabSize, minFrequency, specials } = checkOptions(opts);
  const texts = typeof text === 'string' ? [text] : text;
  const wordCounts = countWords(texts, specials, opts.onProgress);
  if (wordCounts.size === 0) throw new TokenizerError('cannot train a BPE tokenizer on an empty text');

  const byteChar = bytesToUnicode();
  const tokens: string[] = byteChar.slice();
  const tokenId = new Map<string, number>(tokens.map((t, i) => [t, i]));
  const merges: [string, string][] = [];
  const target = vocabSize - specials.length;

  // Words as symbol arrays, with their frequencies.
  const enc = new TextEncoder();
  const words: number[][] = [];
  const freq: number[] = [];
  let totalWords = 0;
  let trainBytes = 0;
  for (const [w, c] of wordCounts) {
    const bytes = Array.from(enc.encode(w));
    words.push(bytes);
    freq.push(c);
    totalWords += c;
    trainBytes += bytes.length * c;
  }
  const nWords = words.length;

  // Pair counts and, per pair, the words it (may) occur in.
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  const addWhere = (key: number, w: number) => {
    const list = where.get(key);
    if (list === undefined) where.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  for (let w = 0; w < nWords; w++) {
    const s = words[w]!;
    const f = freq[w]!;
    for (let i = 0; i + 1 < s.length; i++) {
      const key = s[i]! * KEY_MUL + s[i + 1]!;
      pairCount.set(key, (pairCount.get(key) ?? 0) + f);
      addWhere(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  let stoppedBy: BpeModel['stoppedBy'] = 'vocabSize';
  const visited = new Int32Array(nWords).fill(-1);
  const delta = new Map<number, number>();
  let mergeNo = 0;
  const totalMerges = target - 256;
  opts.onProgress?.({ phase: 'merge', done: 0, total: totalMerges });
  while (tokens.length < target) {
    // Best pair with an up-to-date count.
    let best: { count: number; key: number } | undefined;
    for (;;) {
      const e = heap.pop();
      if (e === undefined) break;
      if (pairCount.get(e.key) === e.count && e.count > 0) {
        best = e;
        break;
      }
    }
    if (best === undefined) {
      stoppedBy = 'noPairs';
      break;
    }
    if (best.count < minFrequency) {
      stoppedBy = 'minFrequency';
      break;
    }
    const a = Math.floor(best.key / KEY_MUL);
    const b = best.key - a * KEY_MUL;
    const str = tokens[a]! + tokens[b]!;
    let c = tokenId.get(str);
    if (c === undefined) {
      c = tokens.length;
      tokens.push(str);
      tokenId.set(str, c);
    }
    merges.push([tokens[a]!, tokens[b]!]);

    // Rewrite every word holding the pair; collect count changes of the neighbouring pairs.
    delta.clear();
    const bump = (key: number, d: number) => delta.set(key, (delta.get(key) ?? 0) + d);
    const list = where.get(best.key) ?? [];
    where.delete(best.key);
    for (const w of list) {
      if (visited[w] === mergeNo) continue;
      visited[w] = mergeNo;
      const s = words[w]!;
      const f = freq[w]!;
      let found = false;
      const out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          found = true;
          bump(best.key, -f);
          if (out.length > 0) {
            const prev = out[out.length - 1]!;
            bump(prev * KEY_MUL + a, -f);
            bump(prev * KEY_MUL + c, +f);
          }
          if (i + 2 < s.length) {
            const next = s[i + 2]!;
            bump(b * KEY_MUL + next, -f);
            bump(c * KEY_MUL + next, +f);
          }
          out.push(c);
          i++;
        } else out.push(s[i]!);
      }
      if (!found) continue;
      words[w] = out;
      for (let i = 0; i + 1 < out.length; i++) if (out[i] === c || out[i + 1] === c) addWhere(out[i]! * KEY_MUL + out[i + 1]!, w);
    }
    for (const [key, d] of delta) {
      if (d === 0) continue;
      const n = (pairCount.get(key) ?? 0) + d;
      if (n < 0) throw new Error(`internal error: BPE pair count went negative (${n})`);
      if (n === 0) pairCount.delete(key);
      else {
        pairCount.set(key, n);
        heap.push(n, key);
      }
    }
    mergeNo++;
    opts.onProgress?.({ phase: 'merge', done: tokens.length - 256, total: totalMerges });
  }
  for (const s of specials) tokens.push(s);
  let trainTokens = 0;
  for (let w = 0; w < nWords; w++) trainTokens += words[w]!.length * freq[w]!;
  return { tokens, merges, specialTokens: specials, stoppedBy, words: { unique: nWords, total: totalWords }, trainBytes, trainTokens };
}

/** The Hugging Face tokenizer.json text of a trained model (schema in the module comment). */
export function bpeTokenizerJson(model: BpeModel): string {
  const nSpecial = model.specialTokens.length;
  const firstSpecial = model.tokens.length - nSpecial;
  const vocab: Record<string, number> = {};
  model.tokens.forEach((t, i) => {
    if (Object.prototype.hasOwnProperty.call(vocab, t)) throw new TokenizerError(`token ${JSON.stringify(t)} appears twice in the vocabulary (a special token equal to a byte-level token?)`);
    vocab[t] = i;
  });
  const spec = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: model.specialTokens.map((content, i) => ({
      id: firstSpecial + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: model.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  return JSON.stringify(spec, null, 2) + '\n';
}
