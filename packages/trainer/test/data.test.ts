import { describe, it, expect } from 'vitest';
import { suiteTempDir } from '@patchflow/test-fixtures';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BatchSampler, DataError, TokenDataset, evalBatches, evalWindows, loadCorpus } from '../src/data.js';
import { Rng } from '../src/rng.js';
import { ByteTokenizer } from '../src/tokenizer.js';

const tmpDir = suiteTempDir('pf-data-');

function file(rel: string, content: string): string {
  const p = path.join(tmpDir(), rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  return p;
}

const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
const stream = (n: number) => Int32Array.from(range(0, n));

describe('TokenDataset split', () => {
  it('every 1/f-th block goes to validation (hand-worked, blockSize 4, f = 0.25)', () => {
    // 35 tokens -> blocks [0..3] [4..7] [8..11] [12..15] [16..19] [20..23] [24..27] [28..31] [32..34]
    // validation blocks: i = 3, 7
    const ds = new TokenDataset(stream(35), { valFraction: 0.25, blockSize: 4 });
    expect(ds.valBlocks).toEqual([3, 7]);
    expect(Array.from(ds.valTokens)).toEqual([12, 13, 14, 15, 28, 29, 30, 31]);
    expect(Array.from(ds.trainTokens)).toEqual([...range(0, 12), ...range(16, 28), 32, 33, 34]);
  });

  it('default rule: blocks of 4096, every 10th block', () => {
    const n = 4096 * 10 + 100; // 11 blocks; only block 9 is validation
    const ds = new TokenDataset(stream(n));
    expect(ds.valBlocks).toEqual([9]);
    expect(ds.valTokens.length).toBe(4096);
    expect(ds.valTokens[0]).toBe(9 * 4096);
    expect(ds.valTokens[4095]).toBe(10 * 4096 - 1);
    expect(ds.trainTokens.length).toBe(n - 4096);
    expect(ds.trainTokens[9 * 4096]).toBe(10 * 4096);
    // 20 blocks -> blocks 9 and 19
    expect(new TokenDataset(stream(4096 * 20)).valBlocks).toEqual([9, 19]);
  });

  it('uneven fractions spread floor(nBlocks * f) blocks evenly', () => {
    // f = 0.3 over 10 blocks: floor((i+1)*0.3) steps up at i = 3, 6, 9
    const ds = new TokenDataset(stream(40), { valFraction: 0.3, blockSize: 4 });
    expect(ds.valBlocks).toEqual([3, 6, 9]);
    expect(Array.from(ds.valTokens)).toEqual([...range(12, 16), ...range(24, 28), ...range(36, 40)]);
  });

  it('falls back to the last round(N * f) tokens when no block is picked', () => {
    // 10 tokens in 3 blocks of 4; f = 0.2 would need 5 blocks
    const ds = new TokenDataset(stream(10), { valFraction: 0.2, blockSize: 4 });
    expect(ds.valBlocks).toEqual([]);
    expect(Array.from(ds.trainTokens)).toEqual(range(0, 8));
    expect(Array.from(ds.valTokens)).toEqual([8, 9]);
  });

  it('is reproducible', () => {
    const ids = Int32Array.from({ length: 50_000 }, (_, i) => (i * 7919) % 256);
    const a = new TokenDataset(ids);
    const b = new TokenDataset(ids.slice());
    expect(a.trainTokens).toEqual(b.trainTokens);
    expect(a.valTokens).toEqual(b.valTokens);
    expect(a.trainTokens.length + a.valTokens.length).toBe(ids.length);
  });

  it('errors when a split is shorter than one sequence', () => {
    expect(() => new TokenDataset(stream(10), { valFraction: 0.2, blockSize: 4, seqLen: 2 })).toThrow(
      /validation split has 2 tokens but at least 3 are needed/,
    );
    expect(() => new TokenDataset(stream(10), { valFraction: 0.2, blockSize: 4, minTokens: 9 })).toThrow(/training split has 8 tokens but at least 9/);
    expect(() => new TokenDataset(stream(10), { valFraction: 0.2, blockSize: 4, minTokens: 9 })).toThrow(DataError);
    expect(() => new TokenDataset(stream(10), { valFraction: 0 })).toThrow(/valFraction/);
    expect(() => new TokenDataset(stream(1000), { seqLen: 64 })).not.toThrow();
  });
});

describe('BatchSampler', () => {
  const tokens = stream(1000); // token value == position, so windows are easy to check

  it('draws contiguous windows; targets are inputs shifted by one', () => {
    const s = new BatchSampler(tokens, 4, 8, new Rng(1));
    const b = s.next();
    expect(b.inputs.length).toBe(32);
    expect(b.targets.length).toBe(32);
    expect(b.rows).toBe(4);
    for (let r = 0; r < 4; r++) {
      const start = b.inputs[r * 8]!;
      expect(Array.from(b.inputs.subarray(r * 8, r * 8 + 8))).toEqual(range(start, start + 8));
      expect(Array.from(b.targets.subarray(r * 8, r * 8 + 8))).toEqual(range(start + 1, start + 9));
      expect(start + 9).toBeLessThanOrEqual(1000);
    }
  });

  it('window starts follow rng.int(N - len + 1)', () => {
    const s = new BatchSampler(tokens, 3, 10, new Rng(77));
    const ref = new Rng(77);
    const b = s.next();
    const starts = [0, 1, 2].map((r) => b.inputs[r * 10]);
    expect(starts).toEqual([0, 1, 2].map(() => ref.int(1000 - 11 + 1)));
  });

  it('window length is a parameter (K x seqLen for patch-level training)', () => {
    const s = new BatchSampler(tokens, 2, 4, new Rng(3));
    const b = s.next(16);
    expect(b.inputs.length).toBe(32);
    expect(b.targets[0]).toBe(b.inputs[0]! + 1);
    const raw = new BatchSampler(tokens, new Rng(3)).next(2, 17); // rows, windowLen
    expect(raw.length).toBe(34);
    expect(raw[16]).toBe(raw[0]! + 16);
    // same rng -> same starts as the structured form
    expect(raw[0]).toBe(b.inputs[0]);
    expect(raw[17]).toBe(b.inputs[16]);
  });

  it('is deterministic and restores to produce exactly the same batches', () => {
    const a = new BatchSampler(tokens, 4, 16, new Rng(11));
    const b = new BatchSampler(tokens, 4, 16, new Rng(11));
    for (let i = 0; i < 3; i++) expect(a.next()).toEqual(b.next());
    const saved = JSON.parse(JSON.stringify(a.state()));
    expect(saved.batches).toBe(3);
    expect(saved.windows).toBe(12);
    expect(saved.tokens).toBe(3 * 4 * 17);
    expect(a.tokensConsumed).toBe(3 * 4 * 17);
    const want = [a.next(), a.next(32), a.next()];
    const c = BatchSampler.fromState(tokens, saved, 4, 16);
    expect([c.next(), c.next(32), c.next()]).toEqual(want);
    const d = new BatchSampler(tokens, 4, 16, new Rng(999));
    d.restore(saved);
    expect([d.next(), d.next(32), d.next()]).toEqual(want);
    expect(d.state()).toEqual(a.state());
    // trainer-style sampler (tokens, rng) with next(rows, windowLen)
    const e = new BatchSampler(tokens, new Rng(5));
    e.next(2, 9);
    const st = JSON.parse(JSON.stringify(e.state()));
    const w1 = e.next(2, 9);
    const f = new BatchSampler(tokens, new Rng(0));
    f.restore(st);
    expect(f.next(2, 9)).toEqual(w1);
  });

  it('errors', () => {
    expect(() => new BatchSampler(stream(5), 1, 5, new Rng(1))).toThrow(/windows of 6 tokens need at least 6 tokens but the stream has 5/);
    expect(() => new BatchSampler(tokens, new Rng(1)).next()).toThrow(/no batch size/);
    const st = new BatchSampler(tokens, new Rng(1)).state();
    expect(() => new BatchSampler(stream(999), new Rng(1)).restore(st)).toThrow(/1000 tokens but this one has 999/);
    expect(() => new BatchSampler(tokens, new Rng(1)).restore({ ...st, rng: [0, 0, 0, 0] })).toThrow(DataError);
  });
});

describe('evaluation windows', () => {
  it('cover the validation split from the start, same every call (hand-worked)', () => {
    const val = stream(21);
    const b = evalBatches(val, 2, 4, 10);
    // windows of 5 at 0, 4, 8, 12, 16 -> batches of 2, 2, 1
    expect(b.map((x) => x.rows)).toEqual([2, 2, 1]);
    expect(Array.from(b[0]!.inputs)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(Array.from(b[0]!.targets)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(Array.from(b[2]!.inputs)).toEqual([16, 17, 18, 19]);
    expect(Array.from(b[2]!.targets)).toEqual([17, 18, 19, 20]);
    expect(evalBatches(val, 2, 4, 10)).toEqual(b);
    expect(evalBatches(val, 2, 4, 2).length).toBe(2);
    expect(evalWindows(val, 5, 3).map((w) => Array.from(w))).toEqual([range(0, 5), range(4, 9), range(8, 13)]);
    expect(() => evalWindows(stream(3), 5, 3)).toThrow(/3 tokens, fewer than one evaluation window of 5/);
  });
});

describe('loadCorpus', () => {
  it('loads the embedded Moby Dick in chapter order', () => {
    const c = loadCorpus();
    expect(c.name).toBe('moby-dick');
    expect(c.text.startsWith('CHAPTER 1. Loomings.\n\nCall me Ishmael.')).toBe(true);
    expect(Buffer.byteLength(c.text, 'utf8')).toBeGreaterThan(1_000_000);
    const i9 = c.text.indexOf('CHAPTER 9. ');
    const i10 = c.text.indexOf('CHAPTER 10. ');
    const i100 = c.text.indexOf('CHAPTER 100. ');
    const i135 = c.text.indexOf('CHAPTER 135. ');
    expect(0 < i9 && i9 < i10 && i10 < i100 && i100 < i135).toBe(true);
    // tokenising it with the byte tokenizer is fast
    const t0 = performance.now();
    const ids = new ByteTokenizer().encode(c.text);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(ids.length).toBe(Buffer.byteLength(c.text, 'utf8'));
  });

  it('loads a .txt file (BOM dropped)', () => {
    const p = file('one.txt', '\uFEFFhello there\n');
    expect(loadCorpus(p)).toEqual({ name: 'one.txt', text: 'hello there\n' });
  });

  it('loads a directory of .txt files recursively, sorted by relative path', () => {
    file('dir/b.txt', 'B');
    file('dir/a.txt', 'A');
    file('dir/b/c.txt', 'C');
    file('dir/.hidden.txt', 'H');
    file('dir/notes.md', 'M');
    expect(loadCorpus(path.join(tmpDir(), 'dir'))).toEqual({ name: 'dir', text: 'A\n\nB\n\nC' });
  });

  it('loads JSONL', () => {
    const p = file('docs.jsonl', '{"text": "first"}\n\n{"text": "second", "id": 2}\n');
    expect(loadCorpus(p).text).toBe('first\n\nsecond');
  });

  const cases: [string, () => string, RegExp][] = [
    ['missing path', () => path.join(tmpDir(), 'missing.txt'), /corpus path not found: .*missing\.txt/],
    ['empty file', () => file('empty.txt', '  \n'), /corpus .*empty\.txt is empty/],
    ['dir without .txt', () => (file('nodocs/readme.md', 'x'), file('nodocs/.h.txt', 'x'), path.join(tmpDir(), 'nodocs')), /no \.txt files in directory .*nodocs/],
    ['dir of empty files', () => (file('emptydir/a.txt', ''), path.join(tmpDir(), 'emptydir')), /is empty/],
    ['bad JSON line', () => file('bad.jsonl', '{"text": "ok"}\n{"text": "fine"}\n{oops\n'), /bad\.jsonl: line 3 is not valid JSON/],
    ['no text field', () => file('notext.jsonl', '{"text": "ok"}\n{"text": 5}\n'), /notext\.jsonl: line 2 has no string "text" field/],
    ['empty jsonl', () => file('blank.jsonl', '{"text": ""}\n'), /is empty/],
    ['unsupported extension', () => file('data.csv', 'a,b'), /unsupported corpus file extension "\.csv"/],
  ];
  for (const [name, make, re] of cases) {
    it(`DataError: ${name}`, () => {
      const p = make();
      expect(() => loadCorpus(p)).toThrow(re);
      expect(() => loadCorpus(p)).toThrow(DataError);
    });
  }
});
