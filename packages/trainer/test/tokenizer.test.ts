import { describe, it, expect } from 'vitest';
import { suiteTempDir } from '@patchflow/test-fixtures';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import {
  ByteTokenizer,
  HfTokenizer,
  TokenizerError,
  bytesToUnicode,
  loadHfTokenizer,
  loadTokenizer,
  tokenizerFromSpec,
} from '../src/tokenizer.js';

const tmpDir = suiteTempDir('pf-tok-');

function write(name: string, obj: unknown): string {
  const p = path.join(tmpDir(), name);
  fs.writeFileSync(p, typeof obj === 'string' ? obj : JSON.stringify(obj));
  return p;
}

describe('ByteTokenizer', () => {
  const tok = new ByteTokenizer();
  it('encodes UTF-8 bytes (hand-worked multibyte)', () => {
    // a, é = C3 A9, € = E2 82 AC, 😀 = F0 9F 98 80
    expect(Array.from(tok.encode('aé€😀'))).toEqual([0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80]);
    expect(tok.encode('')).toEqual(new Int32Array(0));
    expect(tok.vocabSize).toBe(256);
  });
  it('round-trips text with multibyte characters', () => {
    const s = 'Call me Ishmael — naïve café, 日本語, 🎉🐋\n\ttabs';
    expect(tok.decode(tok.encode(s))).toBe(s);
  });
  it('decodes partial / invalid UTF-8 with replacement characters instead of throwing', () => {
    expect(tok.decode([0x61, 0xe2, 0x82])).toBe('a\uFFFD');
    expect(tok.decode([0xff, 0x62])).toBe('\uFFFDb');
    expect(tok.decode(Int32Array.from([0xf0, 0x9f]))).toBe('\uFFFD');
    expect(() => tok.decode([256])).toThrow(/outside 0\.\.255/);
  });
  it('spec round trip', () => {
    expect(tok.toJSON()).toEqual({ kind: 'byte' });
    expect(tokenizerFromSpec({ kind: 'byte' })).toBeInstanceOf(ByteTokenizer);
    expect(loadTokenizer('')).toBeInstanceOf(ByteTokenizer);
  });
});

describe('GPT-2 byte-to-unicode map', () => {
  it('matches known entries', () => {
    const m = bytesToUnicode();
    expect(m.length).toBe(256);
    expect(new Set(m).size).toBe(256);
    expect(m[0x41]).toBe('A');
    expect(m[0x20]).toBe('\u0120'); // Ġ
    expect(m[0x0a]).toBe('\u010A'); // Ċ
    expect(m[0x00]).toBe('\u0100'); // Ā
    expect(m[0xad]).toBe('\u0143'); // Ń (soft hyphen)
    // ’ = E2 80 99 -> "âĢĻ", the well-known GPT-2 artefact
    expect(m[0xe2]! + m[0x80]! + m[0x99]!).toBe('âĢĻ');
  });
});

/** A tiny byte-level BPE; the expected ids below are worked out by hand from these merges. */
function tinyBpe(pairs: boolean) {
  const vocab = {
    h: 0, e: 1, l: 2, o: 3, 'Ġ': 4, w: 5, r: 6, d: 7, '!': 8,
    he: 9, ll: 10, lo: 11, hell: 12, 'Ġw': 13, or: 14, 'Ġwor': 15, hello: 16, el: 18,
  };
  const merges = ['h e', 'l l', 'l o', 'he ll', 'Ġ w', 'o r', 'Ġw or', 'hell o', 'e l'];
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 17, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false,
      vocab,
      merges: pairs ? merges.map((m) => m.split(' ')) : merges,
    },
  };
}

describe('HF byte-level BPE', () => {
  for (const pairs of [false, true]) {
    it(`hand-worked merges (${pairs ? '[a, b] pairs' : '"a b" strings'})`, () => {
      const tok = loadHfTokenizer(write(`tiny-${pairs}.json`, tinyBpe(pairs)));
      expect(tok.vocabSize).toBe(19);
      // "hello" : h e l l o -> (h e)=0 -> (l l)=1 -> (he ll)=3 -> (hell o)=7 -> [hello]
      // " world": Ġ w o r l d -> (Ġ w)=4 -> (o r)=5 -> (Ġw or)=6 -> [Ġwor, l, d]
      // "!"     : [!]
      expect(Array.from(tok.encode('hello world!'))).toEqual([16, 15, 2, 7, 8]);
      // rank order, not left-to-right: "llo" merges (l l)=1 before (l o)=2 -> [ll, o]
      expect(Array.from(tok.encode('llo'))).toEqual([10, 3]);
      // "ell": (e l)=8 is leftmost but (l l)=1 ranks first -> [e, ll]; leftmost-first would give [el, l]
      expect(Array.from(tok.encode('ell'))).toEqual([1, 10]);
      // added tokens split the text first
      expect(Array.from(tok.encode('hello<|endoftext|>lo'))).toEqual([16, 17, 11]);
      expect(tok.decode([16, 15, 2, 7, 8])).toBe('hello world!');
      expect(tok.decode([16, 17, 11])).toBe('hello<|endoftext|>lo');
      expect(tok.decode(tok.encode('hello world! hello<|endoftext|>'))).toBe('hello world! hello<|endoftext|>');
    });
  }

  it('errors when a byte has no vocabulary entry', () => {
    const tok = new HfTokenizer(JSON.stringify(tinyBpe(false)));
    expect(() => tok.encode('x')).toThrow(/"x" is not in the vocabulary/);
    expect(() => tok.decode([99])).toThrow(/id 99/);
  });

  /** All 256 byte symbols with id = byte value, plus a few merges. */
  function fullByteBpe(extra: Record<string, unknown> = {}, merges: string[] = ['Ġ c', 'a t', 'Ġc at']) {
    const m = bytesToUnicode();
    const vocab: Record<string, number> = {};
    m.forEach((ch, b) => (vocab[ch] = b));
    merges.forEach((mg, i) => (vocab[mg.replace(' ', '')] = 256 + i));
    return {
      added_tokens: [],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, use_regex: true },
      decoder: { type: 'ByteLevel' },
      model: { type: 'BPE', vocab, merges },
      ...extra,
    };
  }

  it('with no applicable merges the ids are the UTF-8 bytes; multibyte round trip', () => {
    const tok = new HfTokenizer(JSON.stringify(fullByteBpe()));
    const s = 'naïve Zürich — 日本語 🎉 ’quoted’\n'; // no " c" or "at" in it
    expect(Array.from(tok.encode(s))).toEqual(Array.from(new TextEncoder().encode(s)));
    expect(tok.decode(tok.encode(s))).toBe(s);
    // " cat": Ġ c a t -> (Ġ c)=0 -> (a t)=1 -> (Ġc at)=2 -> id 258
    expect(Array.from(tok.encode('the cat'))).toEqual([116, 104, 101, 258]);
    expect(tok.decode([258])).toBe(' cat');
    // decoding half a character does not throw
    expect(tok.decode([0xe2, 0x80])).toBe('\uFFFD');
  });

  it('add_prefix_space prepends a space', () => {
    const tok = new HfTokenizer(JSON.stringify(fullByteBpe({ pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true } })));
    expect(Array.from(tok.encode('cat'))).toEqual([258]);
  });

  it('Llama-3 style Split regex with (?i:...) groups + ByteLevel(use_regex=false)', () => {
    const llama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const spec = fullByteBpe(
      {
        pre_tokenizer: {
          type: 'Sequence',
          pretokenizers: [
            { type: 'Split', pattern: { Regex: llama3 }, behavior: 'Isolated', invert: false },
            { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
          ],
        },
      },
      ['I \'', '\' M', '1 2'],
    );
    const tok = new HfTokenizer(JSON.stringify(spec));
    // pieces "I" | "'M" | " here": "'M" merges via ("' M")=1 -> 257; "I'" never forms across pieces
    expect(Array.from(tok.encode("I'M here"))).toEqual([73, 257, 0x20, 104, 101, 114, 101]);
    // numbers split in groups of at most 3 digits: "1234" -> "123" | "4"; (1 2)=2 -> 258
    expect(Array.from(tok.encode('1234'))).toEqual([258, 51, 52]);
  });

  it('ignore_merges uses whole-word vocabulary entries directly', () => {
    const spec = tinyBpe(false);
    (spec.model as Record<string, unknown>).ignore_merges = true;
    (spec.model.vocab as Record<string, number>)['llo'] = 19;
    const tok = new HfTokenizer(JSON.stringify(spec));
    expect(Array.from(tok.encode('llo'))).toEqual([19]);
  });
});

describe('HF WordLevel', () => {
  it('maps whitespace-split words, with unk', () => {
    const tok = new HfTokenizer(
      JSON.stringify({
        normalizer: { type: 'Lowercase' },
        pre_tokenizer: { type: 'Whitespace' },
        decoder: null,
        model: { type: 'WordLevel', vocab: { '[UNK]': 0, hello: 1, world: 2, '!': 3 }, unk_token: '[UNK]' },
      }),
    );
    expect(Array.from(tok.encode('Hello world !? moon'))).toEqual([1, 2, 0, 0]);
    expect(tok.decode([1, 2, 3])).toBe('hello world !');
    expect(tok.vocabSize).toBe(4);
  });
});

describe('tokenizer errors', () => {
  const base = () => tinyBpe(false) as Record<string, unknown>;
  const cases: [string, (s: Record<string, unknown>) => void, RegExp][] = [
    ['Unigram model', (s) => ((s.model as Record<string, unknown>).type = 'Unigram'), /unsupported model\.type "Unigram"/],
    ['BertNormalizer', (s) => (s.normalizer = { type: 'BertNormalizer' }), /unsupported normalizer\.type "BertNormalizer"/],
    ['nested normalizer', (s) => (s.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Replace' }] }), /normalizer\.normalizers\[1\]\.type "Replace"/],
    ['Metaspace', (s) => (s.pre_tokenizer = { type: 'Metaspace' }), /unsupported pre_tokenizer\.type "Metaspace"/],
    ['WordPiece decoder', (s) => (s.decoder = { type: 'WordPiece' }), /unsupported decoder\.type "WordPiece"/],
    ['dropout', (s) => ((s.model as Record<string, unknown>).dropout = 0.1), /model\.dropout/],
    ['subword prefix', (s) => ((s.model as Record<string, unknown>).continuing_subword_prefix = '##'), /model\.continuing_subword_prefix/],
    ['byte_fallback', (s) => ((s.model as Record<string, unknown>).byte_fallback = true), /model\.byte_fallback/],
    ['bad merge', (s) => ((s.model as Record<string, unknown>).merges = ['ab']), /model\.merges\[0\]/],
    ['no model', (s) => delete s.model, /missing field "model"/],
  ];
  for (const [name, edit, re] of cases) {
    it(name, () => {
      const s = base();
      edit(s);
      expect(() => loadHfTokenizer(write(`bad-${name}.json`, s))).toThrow(re);
      expect(() => loadHfTokenizer(write(`bad-${name}.json`, s))).toThrow(TokenizerError);
    });
  }
  it('bad JSON and missing file', () => {
    expect(() => loadHfTokenizer(write('broken.json', '{"model": '))).toThrow(/broken\.json is not valid JSON/);
    expect(() => loadHfTokenizer(path.join(tmpDir(), 'nope.json'))).toThrow(/tokenizer file not found: .*nope\.json/);
  });
});

describe('tokenizer specs (checkpoints)', () => {
  it('hf spec records path + sha256 and rebuilds from the stored json on another machine', () => {
    const json = JSON.stringify(tinyBpe(false));
    const p = write('spec.json', json);
    const tok = loadHfTokenizer(p);
    const spec = tok.toJSON();
    expect(spec).toEqual({ kind: 'hf', path: p, sha256: createHash('sha256').update(json).digest('hex'), file: 'tokenizer.json' });
    // The original path is gone on "another machine": the json from the checkpoint is enough.
    const specElsewhere = { ...spec, path: '/nonexistent/tokenizer.json' };
    const again = tokenizerFromSpec(JSON.parse(JSON.stringify(specElsewhere)), { json: tok.json });
    expect(Array.from(again.encode('hello world!'))).toEqual([16, 15, 2, 7, 8]);
    // Without the json it reads the path.
    expect(Array.from(tokenizerFromSpec(spec).encode('hello'))).toEqual([16]);
    // A different file is refused.
    expect(() => tokenizerFromSpec(spec, { json: json.replace('"hello":16', '"hello":16 ') })).toThrow(/sha256/);
    expect(() => tokenizerFromSpec({ kind: 'sentencepiece' } as never)).toThrow(/unknown tokenizer kind "sentencepiece"/);
    // loadTokenizer (trainer entry point): checkpoint json wins over the path.
    expect(loadTokenizer('/nonexistent/tokenizer.json', tok.json).vocabSize).toBe(19);
    expect(loadTokenizer(p).kind).toBe('hf');
  });
});
