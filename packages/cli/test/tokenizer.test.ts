/**
 * `patchflow tokenizer train`: spawns the built CLI (bin/patchflow.js over dist/; build first) and
 * checks the written tokenizer.json with the trainer's loader, plus the one-line errors (exit 2).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadHfTokenizer } from '@patchflow/trainer';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'patchflow.js');
let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-tokcli-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cli(args: string[]) {
  const env = { ...process.env };
  delete env.PATCHFLOW_DEBUG;
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: tmp, env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('patchflow tokenizer train', () => {
  it('trains on a text file and writes a tokenizer.json the loader reads, with exactly --vocab entries', () => {
    const data = path.join(tmp, 'corpus.txt');
    const para = 'The whale, the whale! Naïve sailors sing 🐋 songs of the sea; the sea answers. ';
    fs.writeFileSync(data, para.repeat(200));
    const out = path.join(tmp, 'tok.json');
    const r = cli(['tokenizer', 'train', '--vocab', '300', '--data', data, '--out', out, '--special', '<|endoftext|>', '--quiet']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^wrote .*tok\.json: vocabulary 300 \(256 bytes \+ 43 merges \+ 1 special\)/);
    const t = loadHfTokenizer(out);
    expect(t.vocabSize).toBe(300);
    const s = 'The whale sings 🐋 naïve<|endoftext|>日本';
    expect(t.decode(t.encode(s))).toBe(s);
    expect(t.encode(' whale').length).toBe(1);
  });

  it('warns (stderr, exit 0) when the text has too few pairs for the vocabulary', () => {
    const data = path.join(tmp, 'tiny.txt');
    fs.writeFileSync(data, 'ab ab ab cd');
    const r = cli(['tokenizer', 'train', '--vocab', '400', '--data', data, '--out', path.join(tmp, 'small.json'), '--quiet']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^patchflow: warning: vocabulary is \d+, not 400/);
  });

  it.each([
    [['tokenizer', 'train', '--out', 'x.json'], /--vocab N is required/],
    [['tokenizer', 'train', '--vocab', '4096'], /--out PATH is required/],
    [['tokenizer', 'train', '--vocab', '100', '--out', 'x.json'], /--vocab must be at least 256/],
    [['tokenizer', 'train', '--vocab', 'many', '--out', 'x.json'], /--vocab expects an integer/],
    [['tokenizer', 'train', '--vocab', '300', '--data', 'missing.txt', '--out', 'x.json'], /corpus path not found/],
    [['tokenizer', 'train', '--vocab', '300', '--out', 'no/such/dir/x.json'], /directory .* does not exist/],
    [['tokenizer', 'train', '--vocab', '300', '--out', 'x.json', '--min-frequency', '0'], /--min-frequency must be at least 1/],
    [['tokenizer', 'fit', '--vocab', '300'], /unknown tokenizer action 'fit'/],
    [['tokenizer'], /missing action/],
  ])('bad input %j: one line on stderr, exit 2', (args, re) => {
    const r = cli(args as string[]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(r.stderr).toMatch(/^patchflow: /);
    expect(r.stderr).toMatch(re as RegExp);
    expect(r.stderr).not.toMatch(/\bat .*\.js:\d+/);
  });
});
