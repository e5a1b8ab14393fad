/**
 * Tokenizers: raw UTF-8 bytes (vocab 256) and Hugging Face `tokenizer.json` files with a BPE
 * (byte-level, as GPT-2 / RoBERTa / Llama-3 use) or WordLevel model.
 *
 * Checkpoints record `tokenizer.toJSON()` and, for HF tokenizers, the tokenizer.json content itself
 * (as `tokenizer.json` in the checkpoint directory), so `tokenizerFromSpec(spec, { json })` rebuilds
 * the same tokenizer on another machine; the sha256 in the spec guards against a different file.
 *
 * Not implemented (a clear TokenizerError names the field): other model types (Unigram, WordPiece),
 * BPE dropout / continuing_subword_prefix / end_of_word_suffix / byte_fallback, normalizers other
 * than NFC/NFD/NFKC/NFKD/Lowercase/Sequence, pre-tokenizers other than ByteLevel/Split/Whitespace/
 * WhitespaceSplit/Sequence, decoders other than ByteLevel/Sequence/none. The post-processor
 * (e.g. BOS insertion) is ignored: encode() returns the plain token stream used for training.
 */
import { PatchflowError } from '@patchflow/tensor';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';

export class TokenizerError extends PatchflowError {
  override name = 'TokenizerError';
}

export type TokenizerSpec = { kind: 'byte' } | { kind: 'hf'; path: string; sha256: string; file?: string };

export interface Tokenizer {
  readonly kind: string;
  readonly vocabSize: number;
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  toJSON(): TokenizerSpec;
}

const utf8Encoder = new TextEncoder();

/** UTF-8 bytes as token ids; decode replaces invalid / partial sequences with U+FFFD instead of throwing. */
export class ByteTokenizer implements Tokenizer {
  readonly kind = 'byte';
  readonly vocabSize = 256;
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });

  encode(text: string): Int32Array {
    const bytes = utf8Encoder.encode(text);
    const out = new Int32Array(bytes.length);
    out.set(bytes); // typed-array copy with conversion; fast
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id > 255) throw new TokenizerError(`byte tokenizer: id ${id} at position ${i} is outside 0..255`);
      bytes[i] = id;
    }
    return this.decoder.decode(bytes);
  }

  toJSON(): TokenizerSpec {
    return { kind: 'byte' };
  }
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte <-> unicode map

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const out = new Array<string>(256);
  bs.forEach((b, i) => (out[b] = String.fromCharCode(cs[i]!)));
  return out;
}

const BYTE_TO_CHAR = bytesToUnicode();
const CHAR_TO_BYTE = new Map<string, number>(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** The GPT-2 pre-tokenization regex (what HF's ByteLevel pre-tokenizer uses with use_regex). */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

// ---------------------------------------------------------------------------------------------
// tokenizer.json pieces

type Json = Record<string, unknown>;

function fieldType(obj: unknown, field: string): string {
  if (obj === null || typeof obj !== 'object') throw new TokenizerError(`tokenizer.json: ${field} must be an object`);
  const t = (obj as Json).type;
  if (typeof t !== 'string') throw new TokenizerError(`tokenizer.json: ${field}.type is missing`);
  return t;
}

/** Converts an Oniguruma/Rust regex from tokenizer.json to a JS regex (inline `(?i:...)` groups of literals are expanded). */
function convertRegex(src: string, field: string): RegExp {
  const expanded = src.replace(/\(\?i:([^()[\]\\]*)\)/g, (_m, body: string) => {
    const alt = body.replace(/\p{L}/gu, (ch) => {
      const lo = ch.toLowerCase();
      const up = ch.toUpperCase();
      return lo === up ? ch : `[${lo}${up}]`;
    });
    return `(?:${alt})`;
  });
  try {
    return new RegExp(expanded, 'gu');
  } catch (e) {
    throw new TokenizerError(`tokenizer.json: ${field} regex ${JSON.stringify(src)} is not supported here: ${(e as Error).message}`);
  }
}

type Normalize = (s: string) => string;

function buildNormalizer(n: unknown, field = 'normalizer'): Normalize {
  if (n === null || n === undefined) return (s) => s;
  const t = fieldType(n, field);
  switch (t) {
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
      return (s) => s.normalize(t);
    case 'Lowercase':
      return (s) => s.toLowerCase();
    case 'Sequence': {
      const list = (n as Json).normalizers;
      if (!Array.isArray(list)) throw new TokenizerError(`tokenizer.json: ${field}.normalizers must be an array`);
      const fs_ = list.map((x, i) => buildNormalizer(x, `${field}.normalizers[${i}]`));
      return (s) => fs_.reduce((acc, f) => f(acc), s);
    }
    default:
      throw new TokenizerError(`tokenizer.json: unsupported ${field}.type "${t}" (supported: NFC, NFD, NFKC, NFKD, Lowercase, Sequence, null)`);
  }
}

/** A pre-tokenizer maps a list of pieces to a list of pieces. `byteLevel` is set when pieces get the GPT-2 byte mapping. */
interface PreTok {
  run(pieces: string[]): string[];
  byteLevel: boolean;
}

function splitWith(s: string, re: RegExp, behavior: string, invert: boolean): string[] {
  // Collect (text, isMatch) segments.
  const segs: [string, boolean][] = [];
  let last = 0;
  re.lastIndex = 0;
  for (const m of s.matchAll(re)) {
    if (m[0].length === 0) continue;
    if (m.index! > last) segs.push([s.slice(last, m.index), false]);
    segs.push([m[0], true]);
    last = m.index! + m[0].length;
  }
  if (last < s.length) segs.push([s.slice(last), false]);
  if (invert) for (const seg of segs) seg[1] = !seg[1];
  const out: string[] = [];
  switch (behavior) {
    case 'Isolated':
      return segs.map((x) => x[0]);
    case 'Removed':
      return segs.filter((x) => !x[1]).map((x) => x[0]);
    case 'MergedWithPrevious':
      for (const [t, isM] of segs) {
        if (isM && out.length) out[out.length - 1] += t;
        else out.push(t);
      }
      return out;
    case 'MergedWithNext': {
      let pending = '';
      for (const [t, isM] of segs) {
        if (isM) pending += t;
        else {
          out.push(pending + t);
          pending = '';
        }
      }
      if (pending) out.push(pending);
      return out;
    }
    default:
      throw new TokenizerError(`unsupported split behavior "${behavior}"`);
  }
}

function buildPreTokenizer(p: unknown, field = 'pre_tokenizer'): PreTok {
  if (p === null || p === undefined) return { run: (x) => x, byteLevel: false };
  const t = fieldType(p, field);
  const o = p as Json;
  switch (t) {
    case 'ByteLevel': {
      const addPrefix = o.add_prefix_space === true;
      const useRegex = o.use_regex !== false;
      return {
        byteLevel: true,
        run: (pieces) => {
          const out: string[] = [];
          for (let s of pieces) {
            if (addPrefix && !s.startsWith(' ')) s = ' ' + s;
            if (useRegex) for (const m of s.matchAll(GPT2_PATTERN)) out.push(m[0]);
            else out.push(s);
          }
          return out.map(toByteLevel);
        },
      };
    }
    case 'Whitespace':
      return { byteLevel: false, run: (pieces) => pieces.flatMap((s) => Array.from(s.matchAll(/\w+|[^\w\s]+/gu), (m) => m[0])) };
    case 'WhitespaceSplit':
      return { byteLevel: false, run: (pieces) => pieces.flatMap((s) => s.split(/\s+/u).filter((x) => x.length > 0)) };
    case 'Split': {
      const pat = o.pattern as Json | undefined;
      let re: RegExp;
      if (pat && typeof pat.Regex === 'string') re = convertRegex(pat.Regex, `${field}.pattern.Regex`);
      else if (pat && typeof pat.String === 'string') re = new RegExp(pat.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
      else throw new TokenizerError(`tokenizer.json: ${field}.pattern must be {"Regex": ...} or {"String": ...}`);
      const behavior = String(o.behavior ?? 'Isolated');
      if (!['Isolated', 'Removed', 'MergedWithPrevious', 'MergedWithNext'].includes(behavior)) {
        throw new TokenizerError(`tokenizer.json: unsupported ${field}.behavior "${behavior}" (supported: Isolated, Removed, MergedWithPrevious, MergedWithNext)`);
      }
      const invert = o.invert === true;
      return { byteLevel: false, run: (pieces) => pieces.flatMap((s) => splitWith(s, re, behavior, invert)) };
    }
    case 'Sequence': {
      const list = o.pretokenizers;
      if (!Array.isArray(list)) throw new TokenizerError(`tokenizer.json: ${field}.pretokenizers must be an array`);
      const subs = list.map((x, i) => buildPreTokenizer(x, `${field}.pretokenizers[${i}]`));
      return { byteLevel: subs.some((s) => s.byteLevel), run: (pieces) => subs.reduce((acc, s) => s.run(acc), pieces) };
    }
    default:
      throw new TokenizerError(`tokenizer.json: unsupported ${field}.type "${t}" (supported: ByteLevel, Split, Whitespace, WhitespaceSplit, Sequence, null)`);
  }
}

function toByteLevel(s: string): string {
  const bytes = utf8Encoder.encode(s);
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += BYTE_TO_CHAR[bytes[i]!];
  return out;
}

type Decode = (tokens: string[]) => string;

function buildDecoder(d: unknown, field = 'decoder'): Decode {
  if (d === null || d === undefined) return (tokens) => tokens.join(' ');
  const t = fieldType(d, field);
  switch (t) {
    case 'ByteLevel':
      return (tokens) => {
        const bytes: number[] = [];
        for (const tok of tokens) {
          const mapped: number[] = [];
          let ok = true;
          for (const ch of tok) {
            const b = CHAR_TO_BYTE.get(ch);
            if (b === undefined) {
              ok = false;
              break;
            }
            mapped.push(b);
          }
          // As HF does: a token with a character outside the byte map (e.g. an added token) keeps its own UTF-8 bytes.
          if (ok) for (const b of mapped) bytes.push(b);
          else for (const b of utf8Encoder.encode(tok)) bytes.push(b);
        }
        return new TextDecoder('utf-8', { fatal: false }).decode(new Uint8Array(bytes));
      };
    case 'Sequence': {
      const list = (d as Json).decoders;
      if (!Array.isArray(list) || list.length !== 1) {
        throw new TokenizerError(`tokenizer.json: ${field}.decoders: only a Sequence of one decoder is supported`);
      }
      return buildDecoder(list[0], `${field}.decoders[0]`);
    }
    default:
      throw new TokenizerError(`tokenizer.json: unsupported ${field}.type "${t}" (supported: ByteLevel, Sequence, null)`);
  }
}

interface AddedToken {
  id: number;
  content: string;
  lstrip: boolean;
  rstrip: boolean;
}

/** A tokenizer built from a Hugging Face tokenizer.json (model BPE or WordLevel). */
export class HfTokenizer implements Tokenizer {
  readonly kind = 'hf';
  readonly vocabSize: number;
  readonly modelType: 'BPE' | 'WordLevel';
  /** The tokenizer.json text this tokenizer was built from (stored in checkpoints). */
  readonly json: string;
  readonly sha256: string;
  readonly path: string;
  private readonly vocab = new Map<string, number>();
  private readonly idToToken: string[] = [];
  private readonly ranks = new Map<string, number>();
  private readonly added: AddedToken[] = [];
  private readonly addedSplit?: RegExp;
  private addedOrder: AddedToken[] = [];
  private readonly addedByContent = new Map<string, number>();
  private readonly addedIds = new Set<number>();
  private readonly normalize: Normalize;
  private readonly preTok: PreTok;
  private readonly decodeTokens: Decode;
  private readonly unkId?: number;
  private readonly ignoreMerges: boolean;
  private readonly cache = new Map<string, number[]>();

  constructor(json: string, path = '<inline>') {
    this.json = json;
    this.path = path;
    this.sha256 = sha256Hex(json);
    let spec: Json;
    try {
      spec = JSON.parse(json) as Json;
    } catch (e) {
      throw new TokenizerError(`tokenizer.json ${path} is not valid JSON: ${(e as Error).message}`);
    }
    if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) throw new TokenizerError(`tokenizer.json ${path}: top level must be an object`);
    const model = spec.model as Json | undefined;
    if (!model || typeof model !== 'object') throw new TokenizerError(`tokenizer.json ${path}: missing field "model"`);
    // Older BPE files omit model.type.
    const type = typeof model.type === 'string' ? model.type : model.merges !== undefined ? 'BPE' : undefined;
    if (type !== 'BPE' && type !== 'WordLevel') {
      throw new TokenizerError(`tokenizer.json ${path}: unsupported model.type "${String(model.type)}" (supported: BPE, WordLevel)`);
    }
    this.modelType = type;
    if (type === 'BPE') {
      if (model.dropout !== null && model.dropout !== undefined) throw new TokenizerError(`tokenizer.json ${path}: unsupported model.dropout (BPE dropout must be null)`);
      for (const f of ['continuing_subword_prefix', 'end_of_word_suffix'] as const) {
        if (model[f] !== null && model[f] !== undefined && model[f] !== '') throw new TokenizerError(`tokenizer.json ${path}: unsupported model.${f} ${JSON.stringify(model[f])}`);
      }
      if (model.byte_fallback === true) throw new TokenizerError(`tokenizer.json ${path}: unsupported model.byte_fallback = true`);
    }
    const vocab = model.vocab as Record<string, unknown> | undefined;
    if (!vocab || typeof vocab !== 'object' || Array.isArray(vocab)) throw new TokenizerError(`tokenizer.json ${path}: model.vocab must be an object of token -> id`);
    let maxId = -1;
    for (const [tok, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0) throw new TokenizerError(`tokenizer.json ${path}: model.vocab["${tok}"] is not a non-negative integer id`);
      this.vocab.set(tok, id as number);
      this.idToToken[id as number] = tok;
      maxId = Math.max(maxId, id as number);
    }
    if (type === 'BPE') {
      const merges = model.merges;
      if (!Array.isArray(merges)) throw new TokenizerError(`tokenizer.json ${path}: model.merges must be an array`);
      merges.forEach((m, rank) => {
        let a: unknown, b: unknown;
        if (typeof m === 'string') {
          const sp = m.indexOf(' ', 1);
          if (sp < 0) throw new TokenizerError(`tokenizer.json ${path}: model.merges[${rank}] "${m}" is not "a b"`);
          [a, b] = [m.slice(0, sp), m.slice(sp + 1)];
        } else if (Array.isArray(m) && m.length === 2) [a, b] = m;
        if (typeof a !== 'string' || typeof b !== 'string') throw new TokenizerError(`tokenizer.json ${path}: model.merges[${rank}] must be "a b" or ["a", "b"]`);
        const key = a + ' ' + b;
        if (!this.ranks.has(key)) this.ranks.set(key, rank);
      });
    }
    this.ignoreMerges = model.ignore_merges === true;
    if (typeof model.unk_token === 'string') {
      const id = this.vocab.get(model.unk_token);
      if (id === undefined) throw new TokenizerError(`tokenizer.json ${path}: model.unk_token "${model.unk_token}" is not in the vocabulary`);
      this.unkId = id;
    }
    const addedList = spec.added_tokens ?? [];
    if (!Array.isArray(addedList)) throw new TokenizerError(`tokenizer.json ${path}: added_tokens must be an array`);
    addedList.forEach((t: Json, i) => {
      if (!t || typeof t.content !== 'string' || !Number.isInteger(t.id) || (t.id as number) < 0) {
        throw new TokenizerError(`tokenizer.json ${path}: added_tokens[${i}] needs a string "content" and an integer "id"`);
      }
      const tok: AddedToken = { id: t.id as number, content: t.content, lstrip: t.lstrip === true, rstrip: t.rstrip === true };
      this.added.push(tok);
      this.addedByContent.set(tok.content, tok.id);
      this.addedIds.add(tok.id);
      this.idToToken[tok.id] = tok.content;
      maxId = Math.max(maxId, tok.id);
    });
    if (this.added.length) {
      // Longest content first so that overlapping added tokens prefer the longer one.
      this.addedOrder = this.added.filter((t) => t.content.length > 0).sort((x, y) => y.content.length - x.content.length);
      const alts = this.addedOrder.map(
        (t) => `${t.lstrip ? '\\s*' : ''}(${t.content.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')})${t.rstrip ? '\\s*' : ''}`,
      );
      if (alts.length) this.addedSplit = new RegExp(alts.join('|'), 'gu');
    }
    this.vocabSize = maxId + 1;
    this.normalize = buildNormalizer(spec.normalizer);
    this.preTok = buildPreTokenizer(spec.pre_tokenizer);
    this.decodeTokens = buildDecoder(spec.decoder);
  }

  encode(text: string): Int32Array {
    const out: number[] = [];
    const encodePlain = (s: string) => {
      if (!s) return;
      const pieces = this.preTok.run([this.normalize(s)]);
      for (const p of pieces) if (p) for (const id of this.encodeWord(p)) out.push(id);
    };
    if (this.addedSplit) {
      let last = 0;
      this.addedSplit.lastIndex = 0;
      for (const m of text.matchAll(this.addedSplit)) {
        encodePlain(text.slice(last, m.index));
        const which = m.slice(1).findIndex((g) => g !== undefined);
        out.push(this.addedOrder[which]!.id);
        last = m.index! + m[0].length;
      }
      encodePlain(text.slice(last));
    } else encodePlain(text);
    return Int32Array.from(out);
  }

  private encodeWord(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    let ids: number[];
    if (this.modelType === 'WordLevel') {
      const id = this.vocab.get(word) ?? this.unkId;
      if (id === undefined) throw new TokenizerError(`tokenizer ${this.path}: "${word}" is not in the WordLevel vocabulary and there is no unk_token`);
      ids = [id];
    } else if (this.ignoreMerges && this.vocab.has(word)) {
      ids = [this.vocab.get(word)!];
    } else {
      ids = this.bpe(word).map((sym) => {
        const id = this.vocab.get(sym) ?? this.unkId;
        if (id === undefined) throw new TokenizerError(`tokenizer ${this.path}: symbol ${JSON.stringify(sym)} is not in the vocabulary and there is no unk_token`);
        return id;
      });
    }
    if (this.cache.size < 100_000) this.cache.set(word, ids);
    return ids;
  }

  /** Merges adjacent symbols, lowest merge rank first, until no ranked pair remains. */
  private bpe(word: string): string[] {
    const syms = Array.from(word);
    while (syms.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < syms.length - 1; i++) {
        const r = this.ranks.get(syms[i]! + ' ' + syms[i + 1]!);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const a = syms[best]!;
      const b = syms[best + 1]!;
      // Merge every occurrence of the pair, left to right.
      const next: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i < syms.length - 1 && syms[i] === a && syms[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(syms[i]!);
      }
      syms.length = 0;
      syms.push(...next);
    }
    return syms;
  }

  /** Vocabulary string of an id (added tokens give their content). */
  idToTokenString(id: number): string | undefined {
    return this.idToToken[id];
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token) ?? this.vocab.get(token);
  }

  decode(ids: ArrayLike<number>): string {
    const toks: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const t = this.idToToken[ids[i]!];
      if (t === undefined) throw new TokenizerError(`tokenizer ${this.path}: id ${ids[i]} at position ${i} is not in the vocabulary`);
      toks.push(t);
    }
    return this.decodeTokens(toks);
  }

  toJSON(): TokenizerSpec {
    return { kind: 'hf', path: this.path, sha256: this.sha256, file: 'tokenizer.json' };
  }
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Loads a Hugging Face tokenizer.json from disk. */
export function loadHfTokenizer(path: string): HfTokenizer {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TokenizerError(code === 'ENOENT' ? `tokenizer file not found: ${path}` : `cannot read tokenizer file ${path}: ${(e as Error).message}`);
  }
  return new HfTokenizer(text, path);
}

/**
 * Recreates a tokenizer from `toJSON()` output. For `hf`, `json` (the tokenizer.json content saved in
 * the checkpoint) is preferred over reading `spec.path`; either way its sha256 must match the spec.
 */
export function tokenizerFromSpec(spec: TokenizerSpec, opts: { json?: string } = {}): Tokenizer {
  if (!spec || typeof spec !== 'object') throw new TokenizerError(`invalid tokenizer spec ${JSON.stringify(spec)}`);
  if (spec.kind === 'byte') return new ByteTokenizer();
  if (spec.kind === 'hf') {
    const tok = opts.json !== undefined ? new HfTokenizer(opts.json, spec.path) : loadHfTokenizer(spec.path);
    if (spec.sha256 && tok.sha256 !== spec.sha256) {
      throw new TokenizerError(`tokenizer.json (${opts.json !== undefined ? 'from the checkpoint' : spec.path}) has sha256 ${tok.sha256.slice(0, 12)}… but the checkpoint recorded ${spec.sha256.slice(0, 12)}…`);
    }
    return tok;
  }
  throw new TokenizerError(`unknown tokenizer kind "${(spec as { kind: unknown }).kind}" (supported: byte, hf)`);
}

/**
 * Convenience used by the trainer: `json` (tokenizer.json content from a checkpoint) wins; otherwise
 * an empty path gives the byte tokenizer and a path loads that tokenizer.json.
 */
export function loadTokenizer(path: string | undefined, json?: string): Tokenizer {
  if (json !== undefined) return new HfTokenizer(json, path || 'checkpoint/tokenizer.json');
  if (!path) return new ByteTokenizer();
  return loadHfTokenizer(path);
}
