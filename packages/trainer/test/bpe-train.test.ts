import { describe, it, expect } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { trainBpe, bpeTokenizerJson } from '../src/bpe-train.js';
import { HfTokenizer, ByteTokenizer, TokenizerError, GPT2_PATTERN, bytesToUnicode } from '../src/tokenizer.js';
import { loadCorpus } from '../src/data.js';

const tok = (text: string | string[], vocabSize: number, extra: Partial<Parameters<typeof trainBpe>[1]> = {}) =>
  trainBpe(text, { vocabSize, ...extra });

describe('trainBpe: hand-worked examples', () => {
  it('"aaabdaaabac" (the textbook example): aa, then ab (tie broken by smaller ids), then aa+ab', () => {
    // One GPT-2 word. Pair counts: aa 4, ab 2, bd 1, da 1, ba 1, ac 1 -> merge (a,a).
    // Word: aa a b d aa a b a c; counts: (aa,a) 2, (a,b) 2, others 1. Tie at 2: ids (97,98) < (256,97) -> (a,b).
    // Word: aa ab d aa ab a c; (aa,ab) 2 -> merge. Then every pair occurs once < minFrequency 2 -> stop.
    const m = tok('aaabdaaabac', 1000);
    expect(m.merges).toEqual([['a', 'a'], ['a', 'b'], ['aa', 'ab']]);
    expect(m.tokens.slice(256)).toEqual(['aa', 'ab', 'aaab']);
    expect(m.stoppedBy).toBe('minFrequency');
    // With minFrequency 1 it goes on merging the count-1 pairs (smallest ids first) until one symbol is left.
    const all = tok('aaabdaaabac', 1000, { minFrequency: 1 });
    expect(all.stoppedBy).toBe('noPairs');
    expect(all.tokens[all.tokens.length - 1]).toBe('aaabdaaabac');
    // The vocabulary size is exactly the one asked for when enough pairs exist.
    expect(tok('aaabdaaabac', 258).tokens.length).toBe(258);
    expect(tok('aaabdaaabac', 258).merges).toEqual([['a', 'a'], ['a', 'b']]);
  });

  it('"the cat the hat": words carry the space as Ġ; at, he, t+he', () => {
    // Words: "the", " cat", " the", " hat" -> the, Ġcat, Ġthe, Ġhat.
    // Count-2 pairs: (t,h)=(116,104), (h,e)=(104,101), (a,t)=(97,116); smallest ids first: a t, then h e;
    // then "t he" occurs twice (the, Ġthe); all else once.
    const m = tok('the cat the hat', 1000);
    expect(m.merges).toEqual([['a', 't'], ['h', 'e'], ['t', 'he']]);
    expect(m.words).toEqual({ unique: 4, total: 4 });
    const t = new HfTokenizer(bpeTokenizerJson(m));
    const ids = Array.from(t.encode('the cat'));
    expect(ids.map((i) => t.idToTokenString(i))).toEqual(['the', 'Ġ', 'c', 'at']);
    expect(ids).toEqual([258, 0x20, 0x63, 256]); // bytes keep their byte value as id
    expect(t.decode(ids)).toBe('the cat');
  });

  it('matches a naive trainer that recounts every pair at every merge', () => {
    // Reference: same rules (GPT-2 words, count-weighted pairs, ties by smaller left then right id), no incremental state.
    const naive = (text: string, vocabSize: number, minFrequency: number) => {
      const counts = new Map<string, number>();
      for (const m of text.matchAll(GPT2_PATTERN)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
      const words = [...counts].map(([w, c]) => ({ s: Array.from(new TextEncoder().encode(w)), c }));
      const names = bytesToUnicode();
      const ids = new Map(names.map((t, i) => [t, i]));
      const merges: [string, string][] = [];
      while (names.length < vocabSize) {
        const pc = new Map<string, number>();
        for (const { s, c } of words) for (let i = 0; i + 1 < s.length; i++) pc.set(s[i] + ',' + s[i + 1], (pc.get(s[i] + ',' + s[i + 1]) ?? 0) + c);
        let best: [number, number, number] | undefined;
        for (const [k, c] of pc) {
          const [a, b] = k.split(',').map(Number) as [number, number];
          if (!best || c > best[2] || (c === best[2] && (a < best[0] || (a === best[0] && b < best[1])))) best = [a, b, c];
        }
        if (!best || best[2] < minFrequency) break;
        const [a, b] = best;
        const str = names[a]! + names[b]!;
        let id = ids.get(str);
        if (id === undefined) { id = names.length; names.push(str); ids.set(str, id); }
        merges.push([names[a]!, names[b]!]);
        for (const w of words) {
          const out: number[] = [];
          for (let i = 0; i < w.s.length; i++) {
            if (i + 1 < w.s.length && w.s[i] === a && w.s[i + 1] === b) { out.push(id); i++; } else out.push(w.s[i]!);
          }
          w.s = out;
        }
      }
      return merges;
    };
    const moby = loadCorpus().text.slice(100_000, 130_000);
    expect(tok(moby, 700).merges).toEqual(naive(moby, 700, 2));
    // Repetitive text with long runs exercises overlapping pairs (a a a) and merges of merged symbols.
    let r = 7;
    const rnd = () => (r = (r * 48271) % 2147483647) / 2147483647;
    let text = '';
    for (let i = 0; i < 3000; i++) text += (rnd() < 0.15 ? ' ' : '') + 'aab'[Math.floor(rnd() * 3)];
    expect(tok(text, 400, { minFrequency: 1 }).merges).toEqual(naive(text, 400, 1));
  });
});

describe('trainBpe: round trip through the existing loader', () => {
  const sample =
    loadCorpus().text.slice(0, 200_000) +
    '\nNaïve café — 日本語のテキスト, Ελληνικά, emoji 🐋🎉👩‍👩‍👧 and 🏳️‍🌈; tabs\tand  double  spaces\r\n' +
    "it's they're we'll I'd 12345 3.14159 $100 <tag attr=\"x\">\n";
  const model = tok(sample, 1000, { specialTokens: ['<|endoftext|>'] });
  const json = bpeTokenizerJson(model);
  const t = new HfTokenizer(json, 'trained.json');

  it('has exactly the asked vocabulary size, bytes first, special token last', () => {
    expect(model.stoppedBy).toBe('vocabSize');
    expect(t.vocabSize).toBe(1000);
    expect(model.tokens.length).toBe(1000);
    expect(t.tokenToId('<|endoftext|>')).toBe(999);
    expect(t.tokenToId('Ġ')).toBe(32);
    expect(t.tokenToId('a')).toBe(97);
    const spec = JSON.parse(json);
    expect(spec.model.type).toBe('BPE');
    expect(spec.pre_tokenizer).toEqual({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true });
    expect(spec.decoder.type).toBe('ByteLevel');
    expect(Object.keys(spec.model.vocab).length).toBe(1000);
    expect(spec.model.merges.every((m: string) => m.split(' ').length === 2)).toBe(true);
  });

  it('round-trips arbitrary text, including non-ASCII, emoji and text unseen in training', () => {
    const texts = [
      sample.slice(0, 5000),
      'Call me Ishmael. Some years ago—never mind how long precisely—',
      'Zürich, Ærøskøbing, naïve, 東京, 🐋🐳 whale-song 🎶 \u0000\u0001 control bytes',
      'Unseen: qwxzj 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{10FFFF} end',
      '   leading and trailing spaces   \n\n\n',
      'before<|endoftext|>after',
    ];
    for (const s of texts) expect(t.decode(t.encode(s))).toBe(s);
    const ids = Array.from(t.encode('a<|endoftext|>b'));
    expect(ids).toEqual([97, 999, 98]);
  });

  it('compresses English: fewer tokens than bytes', () => {
    const s = sample.slice(0, 20_000);
    const n = t.encode(s).length;
    const bytes = new ByteTokenizer().encode(s).length;
    expect(n).toBeLessThan(bytes * 0.6);
  });

  it('is deterministic', () => {
    expect(bpeTokenizerJson(tok(sample, 1000, { specialTokens: ['<|endoftext|>'] }))).toBe(json);
  });

  it('encodes training words to the segmentation the trainer produced (first words)', () => {
    // Every merge learned is one the loader applies: a frequent word becomes one token.
    expect(t.encode(' the').length).toBe(1);
    expect(t.encode(' whale').length).toBe(1);
  });
});

describe('trainBpe: bad input', () => {
  it('rejects bad options and empty text with TokenizerError', () => {
    expect(() => tok('abc', 100)).toThrow(TokenizerError);
    expect(() => tok('abc', 256.5)).toThrow(/vocabulary size/);
    expect(() => tok('abc', 256, { specialTokens: ['<s>'] })).toThrow(/from 257/);
    expect(() => tok('abc', 300, { minFrequency: 0 })).toThrow(/minFrequency/);
    expect(() => tok('abc', 300, { specialTokens: ['x', 'x'] })).toThrow(/twice/);
    expect(() => tok('', 300)).toThrow(/empty/);
  });
  it('a vocabulary of exactly 256 is the byte-level alphabet with no merges', () => {
    const m = tok('hello hello', 256);
    expect(m.merges).toEqual([]);
    const t = new HfTokenizer(bpeTokenizerJson(m));
    expect(Array.from(t.encode('hi'))).toEqual([104, 105]);
  });
});

describe('speed', () => {
  it('trains 2,000 tokens on 1.2 MB of Moby Dick in well under the budget', () => {
    const text = loadCorpus().text;
    const t0 = performance.now();
    const m = tok(text, 2000);
    const secs = (performance.now() - t0) / 1000;
    expect(m.tokens.length).toBe(2000);
    expect(secs).toBeLessThan(30);
  }, 60_000);
});

/** Python `tokenizers` reads the file and encodes like our loader (when the library is installed). */
describe('Python tokenizers library', () => {
  const probe = spawnSync('python3', ['-c', 'import tokenizers'], { encoding: 'utf8' });
  const has = probe.status === 0;
  it.skipIf(!has)('loads the trained tokenizer.json and gives the same ids', () => {
    const model = tok(loadCorpus().text.slice(0, 100_000) + ' 🐋 naïve', 600, { specialTokens: ['<|endoftext|>'] });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-bpe-py-'));
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, bpeTokenizerJson(model));
    const text = 'Call me Ishmael. Naïve 🐋 whale<|endoftext|>end';
    const out = execFileSync('python3', ['-c', 'import sys,json,tokenizers; t=tokenizers.Tokenizer.from_file(sys.argv[1]); print(json.dumps(t.encode(sys.argv[2]).ids))', file, text], { encoding: 'utf8' });
    const ours = Array.from(new HfTokenizer(bpeTokenizerJson(model)).encode(text));
    expect(JSON.parse(out)).toEqual(ours);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  if (!has) it.skip('Python tokenizers is not installed here (no PyPI, no Debian package); checked on the device with tools/device/check_tokenizer_json.py', () => {});
});
