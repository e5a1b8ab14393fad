#!/usr/bin/env node
/**
 * Fixtures for tools/device/hf_logits_check.py, and the check of directories transformers wrote.
 *
 *   node tools/device/hf_export_fixture.mjs OUTDIR
 *       Writes OUTDIR/<variant>/ for five tiny models: each an `exportHf` directory (config.json,
 *       model.safetensors, tokenizer.json, tokenizer_config.json) plus fixture.json with input ids
 *       [B, T], the logits patchflow's model computes for them [B, T, V], a test text and the ids
 *       patchflow's tokenizer gives it. Variants: GPT-2 (learned positions) and GPT-NeoX (rotary),
 *       tied and untied heads, byte and BPE tokenizers, trained for a few steps (`train`) or random
 *       weights of a useful scale (a checkpoint written with saveCheckpoint), n_inner != 4·d.
 *
 *   node tools/device/hf_export_fixture.mjs --check-import DIR [DIR...]
 *       For directories written by transformers' save_pretrained (hf_logits_check.py make-hf): imports
 *       each with importHf (the byte tokenizer when it has no tokenizer.json), runs patchflow's model on
 *       the ids of its patchflow_reference.json and compares with the logits PyTorch computed there.
 *       Exit 1 when any max |Δ| > 1e-4.
 *
 * Needs the built packages (npm install builds them). Runs on the cpu backend in a few seconds.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  CHECKPOINT_FORMAT,
  GPT,
  HfTokenizer,
  bpeTokenizerJson,
  exportHf,
  finalizeModelConfig,
  importHf,
  loadTrainedModel,
  resolveConfig,
  saveCheckpoint,
  train,
  trainBpe,
} from '@patchflow/trainer';
import { tf, useBackend } from '@patchflow/tensor';

const TOL = 1e-4;
const TEXT = 'Call me Ishmael. Some years ago—never mind how long precisely—having little money in my purse,\n\tI thought I would sail about a little. Naïve 🐋 日本語 ñ «»<|endoftext|> end';

function lcg(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}

function logits3d(model, idsFlat, b, t) {
  const x = tf.tensor2d(idsFlat, [b, t], 'int32');
  const y = model.forward(x);
  const flat = y.dataSync();
  x.dispose();
  y.dispose();
  const V = flat.length / (b * t);
  const out = [];
  for (let i = 0; i < b; i++) {
    const row = [];
    for (let p = 0; p < t; p++) row.push(Array.from(flat.subarray((i * t + p) * V, (i * t + p + 1) * V)));
    out.push(row);
  }
  return out;
}

function randomIds(b, t, vocab, seed) {
  const r = lcg(seed);
  return Int32Array.from({ length: b * t }, () => Math.floor(((r() + 1) / 2) * vocab) % vocab);
}

/** A run directory whose checkpoint holds random weights (std ~0.2, LayerNorm gains around 1). */
async function randomRun(dir, model, tokenizerJson, seed) {
  const cfg = resolveConfig({ model });
  const vocab = tokenizerJson ? new HfTokenizer(tokenizerJson).vocabSize : 256;
  const m = finalizeModelConfig(cfg.model, vocab);
  const gpt = new GPT(m, seed);
  const r = lcg(seed);
  for (const s of gpt.specs) {
    const n = s.shape.reduce((a, x) => a * x, 1);
    const base = s.init === 'ones' ? 1 : 0;
    const t = tf.tensor(Float32Array.from({ length: n }, () => base + 0.35 * r()), s.shape);
    gpt.p(s.name).assign(t);
    t.dispose();
  }
  saveCheckpoint(dir, {
    weights: await gpt.exportWeights(),
    optimizer: {},
    tokenizerJson,
    state: {
      format: CHECKPOINT_FORMAT,
      config: { ...cfg, model: m },
      step: 0,
      run: { step: 0, phaseIndex: 0, phaseStep: 0, flops: 0, tokens: 0, elapsed: 0 },
      sampler: { rng: [1, 2, 3, 4], batches: 0, windows: 0, tokens: 0 },
      optimizerT: 0,
      plugins: {},
      evals: [],
      tokenizer: tokenizerJson ? new HfTokenizer(tokenizerJson, 'tokenizer.json').toJSON() : { kind: 'byte' },
      corpus: { name: 'random weights', tokens: 0 },
      parameters: gpt.parameterCount(),
    },
  });
  gpt.dispose();
}

async function makeFixtures(outDir) {
  await useBackend('cpu');
  fs.mkdirSync(outDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-hf-fixture-'));
  const corpus = path.join(work, 'corpus.txt');
  fs.writeFileSync(corpus, (TEXT.replace('<|endoftext|>', ' ') + ' ').repeat(80));
  const bpe = bpeTokenizerJson(trainBpe(TEXT.repeat(30), { vocabSize: 320, specialTokens: ['<|endoftext|>'] }));
  const small = { nLayer: 2, nHead: 4, dModel: 32, seqLen: 24 };
  const variants = [
    { name: 'gpt2-trained-bytes-tied', trained: true, model: { ...small, positions: 'learned', tiedEmbeddings: true } },
    { name: 'gpt2-random-bpe-untied', model: { ...small, positions: 'learned', tiedEmbeddings: false, dFF: 48 }, tokenizer: bpe },
    { name: 'neox-trained-bytes-untied', trained: true, model: { ...small, positions: 'rotary', tiedEmbeddings: false } },
    { name: 'neox-random-bytes-tied', model: { ...small, positions: 'rotary', tiedEmbeddings: true, dFF: 80 } },
    { name: 'neox-random-bpe-untied', model: { ...small, nHead: 2, positions: 'rotary', tiedEmbeddings: false }, tokenizer: bpe },
  ];
  let seed = 11;
  for (const v of variants) {
    const run = path.join(work, v.name);
    if (v.trained) {
      const config = resolveConfig({ data: corpus, steps: 40, batchSize: 8, evalEvery: 0, evalBatches: 1, checkpointEvery: 0, optim: { lr: 1e-2, warmupSteps: 5 }, model: v.model });
      await train({ config, outDir: run });
    } else await randomRun(run, v.model, v.tokenizer, seed++);
    const dir = path.join(outDir, v.name);
    fs.rmSync(dir, { recursive: true, force: true });
    const ex = exportHf(run, dir);
    const loaded = await loadTrainedModel(run);
    const b = 2;
    const t = loaded.model.config.seqLen;
    const ids = randomIds(b, t, loaded.tokenizer.vocabSize, seed++);
    const fixture = {
      schema: 'patchflow-hf-fixture/1',
      variant: v.name,
      architecture: ex.architecture,
      model_class: ex.modelClass,
      model: loaded.model.config,
      ids: [Array.from(ids.subarray(0, t)), Array.from(ids.subarray(t))],
      logits: logits3d(loaded.model, ids, b, t),
      text: TEXT,
      text_ids: Array.from(loaded.tokenizer.encode(TEXT)),
    };
    fs.writeFileSync(path.join(dir, 'fixture.json'), JSON.stringify(fixture));
    loaded.model.dispose();
    const size = fs.readdirSync(dir).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
    console.log(`${v.name.padEnd(26)} ${ex.modelClass.padEnd(19)} ${ex.parameters.toLocaleString('en-US').padStart(7)} params, ${(size / 1024).toFixed(0)} KB -> ${dir}`);
  }
  fs.rmSync(work, { recursive: true, force: true });
}

async function checkImports(dirs) {
  await useBackend('cpu');
  let pass = 0;
  let fail = 0;
  for (const dir of dirs) {
    const ref = JSON.parse(fs.readFileSync(path.join(dir, 'patchflow_reference.json'), 'utf8'));
    const run = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-hf-import-'));
    fs.rmSync(run, { recursive: true });
    let line;
    let ok = false;
    try {
      const hasTok = fs.existsSync(path.join(dir, 'tokenizer.json')) || fs.existsSync(path.join(dir, 'vocab.json'));
      const im = importHf(dir, run, hasTok ? {} : { tokenizer: 'bytes' });
      const loaded = await loadTrainedModel(run);
      const b = ref.ids.length;
      const t = ref.ids[0].length;
      const got = logits3d(loaded.model, Int32Array.from(ref.ids.flat()), b, t);
      let max = 0;
      let scale = 0;
      got.flat(2).forEach((x, i) => {
        const want = ref.logits.flat(2)[i];
        max = Math.max(max, Math.abs(x - want));
        scale = Math.max(scale, Math.abs(want));
      });
      ok = max <= TOL;
      line = `${path.basename(dir).padEnd(24)} ${im.architecture.padEnd(8)} ${im.dtypes.join('/').padEnd(5)} ignored ${im.ignored.length} buffers; max|Δlogits| ${max.toExponential(2)} (max |logit| ${scale.toFixed(2)}; ${ref.writer ?? 'transformers'})`;
      loaded.model.dispose();
    } catch (e) {
      line = `${path.basename(dir).padEnd(24)} import failed: ${e.message}`;
    } finally {
      fs.rmSync(run, { recursive: true, force: true });
    }
    console.log(`${line}  ${ok ? 'PASS' : 'FAIL'}`);
    if (ok) pass++;
    else fail++;
  }
  console.log(`${pass} passed, ${fail} failed`);
  return fail ? 1 : 0;
}

const args = process.argv.slice(2);
if (args[0] === '--check-import' && args.length > 1) {
  // a folder of directories or the directories themselves
  const dirs = args.slice(1).flatMap((d) =>
    fs.existsSync(path.join(d, 'patchflow_reference.json'))
      ? [d]
      : fs.readdirSync(d).map((x) => path.join(d, x)).filter((x) => fs.existsSync(path.join(x, 'patchflow_reference.json'))).sort(),
  );
  if (!dirs.length) {
    console.error('no directory with patchflow_reference.json given');
    process.exit(2);
  }
  process.exit(await checkImports(dirs));
} else if (args.length === 1 && !args[0].startsWith('-')) {
  await makeFixtures(args[0]);
} else {
  console.error('usage: node tools/device/hf_export_fixture.mjs OUTDIR\n       node tools/device/hf_export_fixture.mjs --check-import DIR [DIR...]');
  process.exit(2);
}
