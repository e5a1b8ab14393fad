/**
 * Hugging Face interop (hf.ts): the byte tokenizer as a tokenizer.json, export -> import round trips
 * with bitwise-identical weights and logits (learned / rotary x tied / untied, byte and BPE
 * tokenizers, a real trained run), an independent float64 forward of the exported GPT-2 / GPT-NeoX
 * tensors written here from transformers' layouts (not from model.ts), directories as other writers
 * produce them (no prefix, mask buffers, F16 / BF16 / F64, shards, a stored tied head, NeoX without
 * attention biases), two tiny checkpoints saved by transformers itself with the logits it computed,
 * and the one-line refusals.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf, useBackend } from '@patchflow/tensor';
import {
  ByteTokenizer,
  CHECKPOINT_FORMAT,
  GPT,
  HfError,
  HfTokenizer,
  bpeTokenizerJson,
  byteTokenizerJson,
  encodeSafetensors,
  exportHf,
  f16ToF32,
  f32ToF16,
  finalizeModelConfig,
  importHf,
  isByteTokenizerJson,
  loadTrainedModel,
  readSafetensorsAsFloat32,
  resolveConfig,
  saveCheckpoint,
  train,
  trainBpe,
  type FloatTensor,
  type ModelConfig,
  type TokenizerSpec,
} from '../src/index.js';

let tmp = '';
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-hf-'));
  await useBackend('cpu');
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Deterministic pseudo-random values in [-1, 1) (not the code under test's RNG). */
function lcg(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}

const TEXT = 'Call me Ishmael. Some years ago—never mind how long precisely—having little money in my purse, naïve 🐋 日本語 ñ. ';

function bpeJson(): string {
  return bpeTokenizerJson(trainBpe(TEXT.repeat(20), { vocabSize: 300, specialTokens: ['<|endoftext|>'] }));
}

let dirNo = 0;
const fresh = (name: string) => path.join(tmp, `${name}-${++dirNo}`);

/** A patchflow run directory holding a checkpoint of `model` with random (not trained) weights of a useful scale. */
async function randomRun(over: Partial<ModelConfig>, tokenizer: 'byte' | string, seed: number): Promise<{ dir: string; model: GPT }> {
  const json = tokenizer === 'byte' ? undefined : tokenizer;
  const vocab = json ? new HfTokenizer(json).vocabSize : 256;
  const cfg = resolveConfig({ model: { nLayer: 2, nHead: 4, dModel: 16, seqLen: 12, dFF: 24, ...over } });
  const m = finalizeModelConfig(cfg.model, vocab);
  const model = new GPT(m, seed);
  const r = lcg(seed);
  for (const s of model.specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const base = s.init === 'ones' ? 1 : 0;
    const t = tf.tensor(Float32Array.from({ length: n }, () => base + 0.35 * r()), s.shape);
    model.p(s.name).assign(t);
    t.dispose();
  }
  const weights = await model.exportWeights();
  const spec: TokenizerSpec = json ? new HfTokenizer(json, 'tok.json').toJSON() : { kind: 'byte' };
  const dir = fresh('run');
  saveCheckpoint(dir, {
    weights,
    optimizer: {},
    tokenizerJson: json,
    state: {
      format: CHECKPOINT_FORMAT,
      config: { ...cfg, model: m },
      step: 7,
      run: { step: 7, phaseIndex: 0, phaseStep: 7, flops: 0, tokens: 0, elapsed: 0 },
      sampler: { rng: [1, 2, 3, 4], batches: 0, windows: 0, tokens: 0, streamLength: 0 },
      optimizerT: 7,
      plugins: {},
      evals: [],
      tokenizer: spec,
      corpus: { name: 'test', tokens: 0 },
      parameters: model.parameterCount(),
    },
  });
  return { dir, model };
}

function randomIds(b: number, t: number, vocab: number, seed: number): Int32Array {
  const r = lcg(seed);
  return Int32Array.from({ length: b * t }, () => Math.floor(((r() + 1) / 2) * vocab) % vocab);
}

function logitsOf(model: GPT, ids: Int32Array, b: number, t: number): Float32Array {
  const x = tf.tensor2d(ids, [b, t], 'int32');
  const y = model.forward(x);
  const out = y.dataSync() as Float32Array;
  x.dispose();
  y.dispose();
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

// ---------------------------------------------------------------------------------------------
// An independent float64 forward of a transformers directory, written from modeling_gpt2.py and
// modeling_gpt_neox.py (Conv1D: y = x W + b with W [in, out]; nn.Linear: y = x Wᵀ + b with W [out,
// in]; NeoX's fused qkv viewed as [heads, 3, head width]). It reads only config.json and the
// safetensors file: nothing of patchflow's model or of hf.ts's mapping.

function referenceLogits(hfDir: string, ids: Int32Array, b: number, t: number): Float64Array {
  const cfg = JSON.parse(fs.readFileSync(path.join(hfDir, 'config.json'), 'utf8'));
  const { tensors } = readSafetensorsAsFloat32(path.join(hfDir, 'model.safetensors'));
  const W = (name: string) => {
    const x = tensors[name];
    if (!x) throw new Error(`reference: no ${name}`);
    return x.data;
  };
  const neox = cfg.model_type === 'gpt_neox';
  const d: number = neox ? cfg.hidden_size : cfg.n_embd;
  const nh: number = neox ? cfg.num_attention_heads : cfg.n_head;
  const L: number = neox ? cfg.num_hidden_layers : cfg.n_layer;
  const V: number = cfg.vocab_size;
  const hd = d / nh;
  const eps = neox ? cfg.layer_norm_eps : cfg.layer_norm_epsilon;
  const ln = (x: number[], g: Float32Array, bb: Float32Array) => {
    const mu = x.reduce((a, v) => a + v, 0) / x.length;
    const vr = x.reduce((a, v) => a + (v - mu) ** 2, 0) / x.length;
    return x.map((v, i) => ((v - mu) / Math.sqrt(vr + eps)) * g[i]! + bb[i]!);
  };
  const conv1d = (x: number[], w: Float32Array, bias: Float32Array, nOut: number) => {
    const y = Array.from(bias.subarray(0, nOut), Number);
    for (let i = 0; i < x.length; i++) for (let o = 0; o < nOut; o++) y[o]! += x[i]! * w[i * nOut + o]!;
    return y;
  };
  const linear = (x: number[], w: Float32Array, bias: Float32Array | null, nOut: number) => {
    const y = new Array<number>(nOut).fill(0);
    for (let o = 0; o < nOut; o++) {
      let s = bias ? bias[o]! : 0;
      for (let i = 0; i < x.length; i++) s += x[i]! * w[o * x.length + i]!;
      y[o] = s;
    }
    return y;
  };
  const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const rope = (v: number[], pos: number) => {
    const half = hd / 2;
    const out = v.slice();
    for (let i = 0; i < half; i++) {
      const invFreq = 1 / Math.pow(cfg.rotary_emb_base, (2 * i) / hd);
      const c = Math.cos(pos * invFreq);
      const s = Math.sin(pos * invFreq);
      out[i] = v[i]! * c - v[i + half]! * s;
      out[i + half] = v[i + half]! * c + v[i]! * s;
    }
    return out;
  };
  const P = neox ? 'gpt_neox.' : 'transformer.';
  const out = new Float64Array(b * t * V);
  for (let bi = 0; bi < b; bi++) {
    let hs: number[][] = [];
    for (let p = 0; p < t; p++) {
      const id = ids[bi * t + p]!;
      const emb = W(P + (neox ? 'embed_in.weight' : 'wte.weight'));
      const row = Array.from(emb.subarray(id * d, (id + 1) * d), Number);
      if (!neox) {
        const wpe = W(P + 'wpe.weight');
        for (let i = 0; i < d; i++) row[i]! += wpe[p * d + i]!;
      }
      hs.push(row);
    }
    for (let l = 0; l < L; l++) {
      const q: number[][][] = [];
      const k: number[][][] = [];
      const v: number[][][] = [];
      const pre = neox ? `${P}layers.${l}.` : `${P}h.${l}.`;
      for (let p = 0; p < t; p++) {
        const a = neox ? ln(hs[p]!, W(pre + 'input_layernorm.weight'), W(pre + 'input_layernorm.bias')) : ln(hs[p]!, W(pre + 'ln_1.weight'), W(pre + 'ln_1.bias'));
        const qkv = neox ? linear(a, W(pre + 'attention.query_key_value.weight'), tensors[pre + 'attention.query_key_value.bias']?.data ?? null, 3 * d) : conv1d(a, W(pre + 'attn.c_attn.weight'), W(pre + 'attn.c_attn.bias'), 3 * d);
        const qh: number[][] = [];
        const kh: number[][] = [];
        const vh: number[][] = [];
        for (let h = 0; h < nh; h++) {
          if (neox) {
            const base = h * 3 * hd;
            qh.push(rope(qkv.slice(base, base + hd), p));
            kh.push(rope(qkv.slice(base + hd, base + 2 * hd), p));
            vh.push(qkv.slice(base + 2 * hd, base + 3 * hd));
          } else {
            qh.push(qkv.slice(h * hd, (h + 1) * hd));
            kh.push(qkv.slice(d + h * hd, d + (h + 1) * hd));
            vh.push(qkv.slice(2 * d + h * hd, 2 * d + (h + 1) * hd));
          }
        }
        q.push(qh);
        k.push(kh);
        v.push(vh);
      }
      const next: number[][] = [];
      for (let p = 0; p < t; p++) {
        const merged: number[] = [];
        for (let h = 0; h < nh; h++) {
          const scores: number[] = [];
          for (let j = 0; j <= p; j++) scores.push(q[p]![h]!.reduce((a, x, e) => a + x * k[j]![h]![e]!, 0) / Math.sqrt(hd));
          const mx = Math.max(...scores);
          const ex = scores.map((s) => Math.exp(s - mx));
          const z = ex.reduce((a, x) => a + x, 0);
          for (let e = 0; e < hd; e++) merged.push(ex.reduce((a, w, j) => a + (w / z) * v[j]![h]![e]!, 0));
        }
        const attn = neox ? linear(merged, W(pre + 'attention.dense.weight'), tensors[pre + 'attention.dense.bias']?.data ?? null, d) : conv1d(merged, W(pre + 'attn.c_proj.weight'), W(pre + 'attn.c_proj.bias'), d);
        const x = hs[p]!.map((val, i) => val + attn[i]!);
        const m = neox ? ln(x, W(pre + 'post_attention_layernorm.weight'), W(pre + 'post_attention_layernorm.bias')) : ln(x, W(pre + 'ln_2.weight'), W(pre + 'ln_2.bias'));
        const ff: number = neox ? cfg.intermediate_size : cfg.n_inner;
        const f = (neox ? linear(m, W(pre + 'mlp.dense_h_to_4h.weight'), W(pre + 'mlp.dense_h_to_4h.bias'), ff) : conv1d(m, W(pre + 'mlp.c_fc.weight'), W(pre + 'mlp.c_fc.bias'), ff)).map(gelu);
        const y = neox ? linear(f, W(pre + 'mlp.dense_4h_to_h.weight'), W(pre + 'mlp.dense_4h_to_h.bias'), d) : conv1d(f, W(pre + 'mlp.c_proj.weight'), W(pre + 'mlp.c_proj.bias'), d);
        next.push(x.map((val, i) => val + y[i]!));
      }
      hs = next;
    }
    for (let p = 0; p < t; p++) {
      const f = neox ? ln(hs[p]!, W(P + 'final_layer_norm.weight'), W(P + 'final_layer_norm.bias')) : ln(hs[p]!, W(P + 'ln_f.weight'), W(P + 'ln_f.bias'));
      const head = cfg.tie_word_embeddings ? W(P + (neox ? 'embed_in.weight' : 'wte.weight')) : W(neox ? 'embed_out.weight' : 'lm_head.weight');
      const logits = linear(f, head, null, V);
      out.set(logits, (bi * t + p) * V);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('byte tokenizer as a tokenizer.json', () => {
  const bytes = new ByteTokenizer();
  const hf = new HfTokenizer(byteTokenizerJson(), 'bytes.json');

  it('maps byte b to id b: the same ids as the byte tokenizer on any text, and decodes back', () => {
    expect(hf.vocabSize).toBe(256);
    const r = lcg(42);
    const samples = [
      '',
      TEXT,
      'tabs\tand\r\nnewlines\n\n  spaces   ',
      "it's we'll they're 123 4.5e-6 $%&*",
      '\u0000\u0001\u007f\u0080\u00ff',
      'Ġ Ċ ĉ', // the byte-level characters themselves, as text
      '<|endoftext|>',
      'lone surrogate \ud800 end',
    ];
    // random code points from every plane
    for (let k = 0; k < 40; k++) {
      let s = '';
      for (let i = 0; i < 30; i++) {
        const plane = Math.floor(((r() + 1) / 2) * 4);
        const cp = [0x80, 0x800, 0x10000, 0x110000][plane]! * ((r() + 1) / 2);
        const c = Math.floor(cp);
        s += c >= 0xd800 && c < 0xe000 ? 'x' : String.fromCodePoint(c);
      }
      samples.push(s);
    }
    for (const s of samples) {
      const a = bytes.encode(s);
      const b = hf.encode(s);
      expect(Array.from(b)).toEqual(Array.from(a));
      expect(hf.decode(b)).toBe(bytes.decode(a));
    }
  });

  it('is recognised as the byte tokenizer; a trained BPE is not', () => {
    expect(isByteTokenizerJson(byteTokenizerJson())).toBe(true);
    expect(isByteTokenizerJson(bpeJson())).toBe(false);
  });
});

describe('export -> import round trip', () => {
  const cases = [
    { name: 'learned, tied, bytes', over: { positions: 'learned', tiedEmbeddings: true }, tok: 'byte', arch: 'gpt2' },
    { name: 'learned, untied, bytes', over: { positions: 'learned', tiedEmbeddings: false }, tok: 'byte', arch: 'gpt2' },
    { name: 'learned, untied, BPE', over: { positions: 'learned', tiedEmbeddings: false }, tok: 'bpe', arch: 'gpt2' },
    { name: 'rotary, tied, bytes', over: { positions: 'rotary', tiedEmbeddings: true }, tok: 'byte', arch: 'gpt_neox' },
    { name: 'rotary, untied, BPE', over: { positions: 'rotary', tiedEmbeddings: false }, tok: 'bpe', arch: 'gpt_neox' },
  ] as const;

  it.each(cases)('$name: identical weights and logits; an independent forward of the exported files agrees', async (c) => {
    const tokJson = c.tok === 'bpe' ? bpeJson() : 'byte';
    const { dir, model } = await randomRun(c.over, tokJson, 17);
    const hfDir = fresh('hf');
    const ex = exportHf(dir, hfDir);
    expect(ex.architecture).toBe(c.arch);
    expect(fs.readdirSync(hfDir).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const cfgText = fs.readFileSync(path.join(hfDir, 'config.json'), 'utf8');
    const cfg = JSON.parse(cfgText);
    expect(cfg.tie_word_embeddings).toBe(c.over.tiedEmbeddings);
    expect(cfg.architectures).toEqual([c.arch === 'gpt2' ? 'GPT2LMHeadModel' : 'GPTNeoXForCausalLM']);
    // float-typed keys stay floats in Python when whole
    if (c.arch === 'gpt2') expect(cfgText).toMatch(/"resid_pdrop": 0\.0,\n/);
    else expect(cfgText).toMatch(/"rotary_pct": 1\.0,\n[^]*"attention_dropout": 0\.0,/);
    const st = readSafetensorsAsFloat32(path.join(hfDir, 'model.safetensors'));
    expect(st.metadata.format).toBe('pt');
    expect(Object.keys(st.tensors).some((k) => k === 'lm_head.weight' || k === 'embed_out.weight')).toBe(!c.over.tiedEmbeddings);

    const runDir = fresh('imported');
    const im = importHf(hfDir, runDir);
    expect(im.architecture).toBe(c.arch);
    expect(im.tokenizer).toBe(c.tok === 'bpe' ? 'hf' : 'byte');
    const back = await loadTrainedModel(runDir);
    expect(back.step).toBe(0);
    expect(back.model.config).toEqual(model.config);
    const w0 = await model.exportWeights();
    const w1 = await back.model.exportWeights();
    for (const k of Object.keys(w0)) expect(Buffer.from(w1[k]!.data.buffer).equals(Buffer.from(w0[k]!.data.buffer)), k).toBe(true);

    const b = 2;
    const t = model.config.seqLen;
    const ids = randomIds(b, t, model.config.vocabSize, 5);
    const want = logitsOf(model, ids, b, t);
    expect(maxAbsDiff(logitsOf(back.model, ids, b, t), want)).toBe(0);

    const ref = referenceLogits(hfDir, ids, b, t);
    const scale = Math.max(...Array.from(ref, Math.abs));
    expect(scale).toBeGreaterThan(0.5); // logits of a useful size, not near-uniform
    expect(maxAbsDiff(want, ref)).toBeLessThan(1e-4);

    // the tokenizer comes back too
    const text = 'Some years ago 🐋 naïve';
    const orig = c.tok === 'bpe' ? new HfTokenizer(tokJson) : new ByteTokenizer();
    expect(Array.from(back.tokenizer.encode(text))).toEqual(Array.from(orig.encode(text)));
    back.model.dispose();
    model.dispose();
  });

  it('a trained run: export, import, and the imported run trains on (train --resume is a new run from the weights)', async () => {
    const data = path.join(tmp, 'corpus.txt');
    fs.writeFileSync(data, TEXT.repeat(60));
    const cfg = resolveConfig({ data, steps: 3, batchSize: 2, evalEvery: 0, evalBatches: 1, checkpointEvery: 0, model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 16 } });
    const runDir = fresh('trained');
    await train({ config: cfg, outDir: runDir });
    const orig = await loadTrainedModel(runDir);
    const hfDir = fresh('hf');
    exportHf(runDir, hfDir);
    const imported = fresh('imported');
    importHf(hfDir, imported, { config: { data, steps: 2, batchSize: 2, evalEvery: 0, evalBatches: 1, checkpointEvery: 0 } });
    const back = await loadTrainedModel(imported);
    const ids = randomIds(1, 16, 256, 9);
    expect(maxAbsDiff(logitsOf(back.model, ids, 1, 16), logitsOf(orig.model, ids, 1, 16))).toBe(0);
    expect(back.config.steps).toBe(2);
    // fine-tune the imported weights
    const r = await train({ config: back.config, outDir: imported, resume: true });
    expect(r.losses.length).toBe(2);
    const after = await loadTrainedModel(imported);
    expect(after.step).toBe(2);
    expect(maxAbsDiff(logitsOf(after.model, ids, 1, 16), logitsOf(orig.model, ids, 1, 16))).toBeGreaterThan(0);
    for (const m of [orig, back, after]) m.model.dispose();
  });
});

// ---------------------------------------------------------------------------------------------
// directories as other writers produce them

function f32ToBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  return Uint16Array.from(u, (v) => (v + 0x7fff + ((v >>> 16) & 1)) >>> 16);
}

type Raw = { dtype: string; shape: number[]; bytes: Uint8Array };

/** A safetensors file from raw entries (any dtype), written with our encoder's byte layout. */
function writeRaw(file: string, entries: Record<string, Raw>, metadata: Record<string, string> = { format: 'pt' }) {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  const chunks: Uint8Array[] = [];
  for (const [k, e] of Object.entries(entries)) {
    header[k] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + e.bytes.length] };
    chunks.push(e.bytes);
    off += e.bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += ' ';
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(json), ...chunks]));
}

const asBytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Rewrites an exported directory as another writer would; returns the weights' float32 values after the dtype round trip. */
function rewrite(
  src: string,
  dst: string,
  o: { dtype?: 'F32' | 'F16' | 'BF16' | 'F64'; stripPrefix?: boolean; buffers?: boolean; storeTiedHead?: boolean; shards?: boolean; dropBiases?: boolean; config?: Record<string, unknown> },
): void {
  fs.mkdirSync(dst, { recursive: true });
  const cfg = { ...JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')), ...o.config };
  const neox = cfg.model_type === 'gpt_neox';
  const { tensors } = readSafetensorsAsFloat32(path.join(src, 'model.safetensors'));
  const entries: Record<string, Raw> = {};
  const prefix = neox ? 'gpt_neox.' : 'transformer.';
  for (const [k0, t] of Object.entries(tensors)) {
    if (o.dropBiases && /attention\.(query_key_value|dense)\.bias$/.test(k0)) continue;
    const k = o.stripPrefix && k0.startsWith(prefix) ? k0.slice(prefix.length) : k0;
    const dt = o.dtype ?? 'F32';
    const bytes = dt === 'F16' ? asBytes(f32ToF16(t.data)) : dt === 'BF16' ? asBytes(f32ToBf16(t.data)) : dt === 'F64' ? asBytes(Float64Array.from(t.data)) : asBytes(t.data);
    entries[k] = { dtype: dt, shape: t.shape, bytes };
  }
  if (o.storeTiedHead) {
    const wte = entries[(o.stripPrefix ? '' : prefix) + (neox ? 'embed_in.weight' : 'wte.weight')]!;
    entries[neox ? 'embed_out.weight' : 'lm_head.weight'] = wte;
  }
  if (o.buffers) {
    const T = neox ? cfg.max_position_embeddings : cfg.n_positions;
    const L = neox ? cfg.num_hidden_layers : cfg.n_layer;
    for (let l = 0; l < L; l++) {
      const p = (o.stripPrefix ? '' : prefix) + (neox ? `layers.${l}.attention.` : `h.${l}.attn.`);
      const mask = new Uint8Array(T * T).map((_, i) => (i % T <= Math.floor(i / T) ? 1 : 0));
      entries[p + 'bias'] = { dtype: 'BOOL', shape: [1, 1, T, T], bytes: mask };
      entries[p + 'masked_bias'] = { dtype: 'F32', shape: [], bytes: asBytes(new Float32Array([-1e4])) };
      if (neox) entries[p + 'rotary_emb.inv_freq'] = { dtype: 'F32', shape: [2], bytes: asBytes(new Float32Array([1, 0.01])) };
    }
  }
  if (o.shards) {
    const names = Object.keys(entries);
    const half = Math.ceil(names.length / 2);
    const weightMap: Record<string, string> = {};
    [names.slice(0, half), names.slice(half)].forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeRaw(path.join(dst, file), Object.fromEntries(part.map((n) => [n, entries[n]!])));
      for (const n of part) weightMap[n] = file;
    });
    fs.writeFileSync(path.join(dst, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  } else writeRaw(path.join(dst, 'model.safetensors'), entries);
  fs.writeFileSync(path.join(dst, 'config.json'), JSON.stringify(cfg));
  fs.copyFileSync(path.join(src, 'tokenizer.json'), path.join(dst, 'tokenizer.json'));
}

/** Our model with every weight passed through `round` (the dtype the foreign file stored). */
async function rounded(model: GPT, round: (x: Float32Array) => Float32Array, zeroAttnBiases = false): Promise<GPT> {
  const w = await model.exportWeights();
  const copy = new GPT(model.config, 1);
  const out: Record<string, FloatTensor> = {};
  for (const [k, t] of Object.entries(w)) out[k] = { shape: t.shape, data: zeroAttnBiases && /attn\.(qkv|proj)\.bias$/.test(k) ? new Float32Array(t.data.length) : round(t.data) };
  copy.loadWeights(out);
  return copy;
}

/** Keys whose value equals GPT2Config's default: transformers' save_pretrained leaves them out. */
const DEFAULTS_LEFT_OUT = { activation_function: undefined, layer_norm_epsilon: undefined, tie_word_embeddings: undefined, scale_attn_weights: undefined, scale_attn_by_inverse_layer_idx: undefined, add_cross_attention: undefined, n_ctx: undefined };

describe('import of directories other writers produce', () => {
  const id = (x: Float32Array) => x;
  const viaF16 = (x: Float32Array) => f16ToF32(f32ToF16(x));
  const viaBf16 = (x: Float32Array) => {
    const b = f32ToBf16(x);
    return new Float32Array(Uint32Array.from(b, (v) => v << 16).buffer);
  };
  const variants = [
    { name: 'GPT-2, no "transformer." prefix, BOOL mask buffers, F16', over: { positions: 'learned', tiedEmbeddings: true }, o: { stripPrefix: true, buffers: true, dtype: 'F16', config: DEFAULTS_LEFT_OUT }, round: viaF16 },
    { name: 'GPT-2, BF16, tied head stored anyway, two shards', over: { positions: 'learned', tiedEmbeddings: true }, o: { dtype: 'BF16', storeTiedHead: true, shards: true }, round: viaBf16 },
    { name: 'GPT-2 untied, F64, n_inner null (4·d), reorder_and_upcast_attn', over: { positions: 'learned', tiedEmbeddings: false, dFF: 64 }, o: { dtype: 'F64', config: { n_inner: null, reorder_and_upcast_attn: true, activation_function: 'gelu_pytorch_tanh' } }, round: id },
    { name: 'GPT-NeoX, no prefix, buffers and inv_freq, F16, v5 rope_parameters', over: { positions: 'rotary', tiedEmbeddings: false }, o: { stripPrefix: true, buffers: true, dtype: 'F16', config: { rotary_pct: undefined, rotary_emb_base: undefined, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 1.0 } } }, round: viaF16 },
    { name: 'GPT-NeoX, attention_bias false', over: { positions: 'rotary', tiedEmbeddings: true }, o: { dropBiases: true, config: { attention_bias: false } }, round: id, zeroBiases: true },
  ] as const;

  it.each(variants)('$name', async (v) => {
    const { dir, model } = await randomRun(v.over, 'byte', 23);
    const hfDir = fresh('hf');
    exportHf(dir, hfDir);
    const foreign = fresh('foreign');
    rewrite(hfDir, foreign, v.o as Parameters<typeof rewrite>[2]);
    const runDir = fresh('imported');
    const im = importHf(foreign, runDir);
    if ((v.o as { buffers?: boolean }).buffers) expect(im.ignored.length).toBeGreaterThan(0);
    const back = await loadTrainedModel(runDir);
    const want = await rounded(model, v.round, 'zeroBiases' in v && v.zeroBiases);
    const ids = randomIds(2, model.config.seqLen, 256, 3);
    expect(maxAbsDiff(logitsOf(back.model, ids, 2, model.config.seqLen), logitsOf(want, ids, 2, model.config.seqLen))).toBe(0);
    for (const m of [model, back.model, want]) m.dispose();
  });

  it('a GPT-2 directory with vocab.json + merges.txt instead of tokenizer.json gets the GPT-2 tokenizer', async () => {
    const json = bpeJson();
    const { dir } = await randomRun({ positions: 'learned' }, json, 3);
    const hfDir = fresh('hf');
    exportHf(dir, hfDir);
    const spec = JSON.parse(json);
    fs.rmSync(path.join(hfDir, 'tokenizer.json'));
    fs.writeFileSync(path.join(hfDir, 'vocab.json'), JSON.stringify({ ...spec.model.vocab, '<|endoftext|>': 299 }));
    fs.writeFileSync(path.join(hfDir, 'merges.txt'), '#version: 0.2\n' + spec.model.merges.join('\n') + '\n');
    const runDir = fresh('imported');
    importHf(hfDir, runDir);
    const back = await loadTrainedModel(runDir);
    const s = 'Call me Ishmael 🐋<|endoftext|> naïve';
    expect(Array.from(back.tokenizer.encode(s))).toEqual(Array.from(new HfTokenizer(json).encode(s)));
    back.model.dispose();
  });
});

describe('checkpoints transformers wrote (test/fixtures/hf-written: save_pretrained of transformers 5.17, torch 2.14)', () => {
  // made with `python3 tools/device/hf_logits_check.py make-hf DIR --tiny`: random weights stored in
  // BF16 / F16, and the logits transformers computes for the saved directory (float32, eager)
  const root = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'hf-written');
  it.each(['gpt2-bf16-tied', 'neox-f16-untied'])('%s imports and gives transformers\' logits', async (name) => {
    const dir = path.join(root, name);
    const ref = JSON.parse(fs.readFileSync(path.join(dir, 'patchflow_reference.json'), 'utf8')) as { ids: number[][]; logits: number[][][] };
    const runDir = fresh('imported');
    const im = importHf(dir, runDir, { tokenizer: 'bytes' });
    expect(im.dtypes).toEqual([name.includes('bf16') ? 'BF16' : 'F16']);
    const back = await loadTrainedModel(runDir);
    const b = ref.ids.length;
    const t = ref.ids[0]!.length;
    const got = logitsOf(back.model, Int32Array.from(ref.ids.flat()), b, t);
    const want = ref.logits.flat(2);
    expect(Math.max(...want.map(Math.abs))).toBeGreaterThan(1);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-4);
    back.model.dispose();
  });
});

describe('refusals: one HfError line naming the setting', () => {
  let gpt2 = '';
  let neox = '';
  beforeAll(async () => {
    const a = await randomRun({ positions: 'learned' }, 'byte', 1);
    gpt2 = fresh('hf');
    exportHf(a.dir, gpt2);
    const b = await randomRun({ positions: 'rotary' }, 'byte', 2);
    neox = fresh('hf');
    exportHf(b.dir, neox);
  });

  const cfgCases: [string, 'gpt2' | 'neox', Record<string, unknown>, RegExp][] = [
    ['exact-erf GELU', 'gpt2', { activation_function: 'gelu' }, /activation_function is "gelu", patchflow's MLP uses GELU's tanh approximation/],
    ['another LayerNorm eps', 'gpt2', { layer_norm_epsilon: 1e-6 }, /layer_norm_epsilon is 0.000001, patchflow's LayerNorm uses 0.00001/],
    ['scale_attn_by_inverse_layer_idx', 'gpt2', { scale_attn_by_inverse_layer_idx: true }, /scale_attn_by_inverse_layer_idx is true/],
    ['unscaled attention', 'gpt2', { scale_attn_weights: false }, /scale_attn_weights is false/],
    ['cross-attention', 'gpt2', { add_cross_attention: true }, /add_cross_attention/],
    ['another architecture', 'gpt2', { model_type: 'llama' }, /model_type "llama" is not supported \(supported: gpt2, gpt_neox\)/],
    ['parallel residual (Pythia)', 'neox', { use_parallel_residual: true }, /use_parallel_residual is not false/],
    ['partial rotary (Pythia)', 'neox', { rotary_pct: 0.25 }, /rotary_pct is 0.25, patchflow rotates every channel/],
    ['another rotary base', 'neox', { rotary_emb_base: 500000 }, /the rotary base is 500000/],
    ['RoPE scaling', 'neox', { rope_scaling: { type: 'linear', factor: 2 } }, /RoPE scaling/],
    ['NeoX default (exact) GELU', 'neox', { hidden_act: 'gelu' }, /hidden_act is "gelu"/],
    ['odd head width with rotary', 'neox', { num_attention_heads: 16 }, /even head width/],
  ];
  it.each(cfgCases)('%s', (_n, which, patch, re) => {
    const dst = fresh('bad');
    rewrite(which === 'gpt2' ? gpt2 : neox, dst, { config: patch });
    expect(() => importHf(dst, fresh('run'))).toThrow(HfError);
    expect(() => importHf(dst, fresh('run'))).toThrow(re);
  });

  it('missing, extra and misshapen tensors; no weights file; no tokenizer; a run directory in use', () => {
    const ck = (mut: (dir: string) => void, re: RegExp) => {
      const dst = fresh('bad');
      fs.cpSync(gpt2, dst, { recursive: true });
      mut(dst);
      expect(() => importHf(dst, fresh('run'))).toThrow(re);
    };
    const edit = (dir: string, f: (t: Record<string, FloatTensor>) => void) => {
      const { tensors } = readSafetensorsAsFloat32(path.join(dir, 'model.safetensors'));
      const plain: Record<string, FloatTensor> = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
      f(plain);
      fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat(encodeSafetensors(plain, { format: 'pt' })));
    };
    ck((d) => edit(d, (t) => delete t['transformer.h.1.mlp.c_fc.bias']), /no tensor transformer\.h\.1\.mlp\.c_fc\.bias/);
    ck((d) => edit(d, (t) => (t['transformer.h.0.crossattention.c_attn.weight'] = { shape: [1], data: new Float32Array(1) })), /no place for: transformer\.h\.0\.crossattention/);
    ck((d) => edit(d, (t) => (t['transformer.wpe.weight'] = { shape: [3, 16], data: new Float32Array(48) })), /transformer\.wpe\.weight has shape \[3,16\] but config\.json gives \[12,16\]/);
    ck((d) => {
      const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...c, tie_word_embeddings: false }));
    }, /no tensor lm_head\.weight \(config\.json says tie_word_embeddings is false\)/);
    ck((d) => {
      fs.rmSync(path.join(d, 'model.safetensors'));
      fs.writeFileSync(path.join(d, 'pytorch_model.bin'), 'x');
    }, /has pytorch_model\.bin but no model\.safetensors/);
    ck((d) => fs.rmSync(path.join(d, 'tokenizer.json')), /has no tokenizer\.json .*--tokenizer FILE/);
    ck((d) => fs.writeFileSync(path.join(d, 'config.json'), '{oops'), /config\.json: not valid JSON/);
    ck((d) => fs.writeFileSync(path.join(d, 'model.safetensors'), 'short'), /model\.safetensors: .*safetensors/);
    expect(() => importHf(path.join(tmp, 'nope'), fresh('run'))).toThrow(/no Hugging Face model directory/);
    // a tokenizer larger than the model's vocabulary
    const tok = path.join(tmp, 'big.json');
    fs.writeFileSync(tok, bpeJson());
    expect(() => importHf(gpt2, fresh('run'), { tokenizer: tok })).toThrow(/tokenizer has 300 ids but the model's vocab_size is 256/);
    // the config may not contradict config.json, nor bring plugins
    expect(() => importHf(gpt2, fresh('run'), { config: { model: { nLayer: 5 } } })).toThrow(/model\.nLayer = 5 but .* gives 2/);
    expect(() => importHf(gpt2, fresh('run'), { config: { plugins: { patch: { patchSize: 4 } } } })).toThrow(/without plugins/);
    // importing twice into one run directory
    const run = fresh('run');
    importHf(gpt2, run);
    expect(() => importHf(gpt2, run)).toThrow(/already holds a checkpoint/);
  });

  it('export refuses a checkpoint whose weights do not fit its config', async () => {
    const { dir } = await randomRun({}, 'byte', 4);
    const bad = fresh('bad-run');
    fs.cpSync(dir, bad, { recursive: true });
    const st = JSON.parse(fs.readFileSync(path.join(bad, 'checkpoint', 'state.json'), 'utf8'));
    st.config.model.nLayer = 3;
    fs.writeFileSync(path.join(bad, 'checkpoint', 'state.json'), JSON.stringify(st));
    expect(() => exportHf(bad, fresh('hf'))).toThrow(/no tensor "blocks\.2\.ln1\.weight"/);
  });
});
