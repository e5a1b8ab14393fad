/**
 * Hugging Face interop: a patchflow checkpoint as a `transformers` model directory and back.
 *
 *   exportHf(checkpointDir, outDir)  -> config.json, model.safetensors, tokenizer.json, tokenizer_config.json
 *   importHf(hfDir, runDir)          -> <runDir>/checkpoint/ that loadTrainedModel (eval, generate) opens
 *
 * Which architecture (mapping decisions; each checked against transformers' modeling_gpt2.py and
 * modeling_gpt_neox.py):
 *
 * - learned positions -> GPT-2 (`GPT2LMHeadModel`, model_type "gpt2"). The math is the same function:
 *   pre-LN blocks, LayerNorm eps 1e-5, GELU tanh approximation ("gelu_new"), attention scaled by
 *   1/sqrt(head width), q/k/v as three column blocks of one [d, 3d] projection with heads as contiguous
 *   slices of each. GPT-2's Conv1D stores weights [in, out] like ours, so every projection is copied
 *   as is; only the untied LM head is transposed ([d, V] -> lm_head.weight [V, d]). Tied: no
 *   lm_head.weight is written and `tie_word_embeddings` is true (as in openai-community/gpt2).
 * - rotary positions -> GPT-NeoX (`GPTNeoXForCausalLM`, model_type "gpt_neox"): GPT-2 has no rotary
 *   variant. With `use_parallel_residual: false` (x += attn(ln1 x); x += mlp(ln2 x)), `rotary_pct: 1`
 *   (every channel of a head rotated), `rotary_emb_base: 10000`, rotate-half form
 *   (q·cos + rotate_half(q)·sin, rotate_half(x) = [-x2, x1], inv_freq_i = base^(-2i/hd)), it is our
 *   rotary model exactly. NeoX stores nn.Linear weights [out, in], so every matrix is transposed, and
 *   its fused qkv is per head: output row h·3hd + j·hd + e (j = q, k, v) is our column j·d + h·hd + e.
 *   Tied: `tie_word_embeddings` true and no embed_out.weight.
 *
 * Import reads both layouts, from our own exports or from elsewhere: names with or without the base
 * prefix ("transformer." / "gpt_neox."), attention mask buffers and rotary inv_freq ignored, a tied
 * head absent, F32/F16/BF16/F64 weights converted to float32, sharded safetensors
 * (model.safetensors.index.json). Anything that is not our math is refused with one line that names
 * the setting (another activation, LayerNorm eps other than 1e-5, parallel residual, partial rotary,
 * another rotary base, RoPE scaling, cross-attention, GPT-2's scale_attn_by_inverse_layer_idx or
 * unscaled attention). `attention_bias: false` (NeoX) imports as zero biases.
 *
 * The imported run: a step-0 checkpoint with the training config defaults (or the given config
 * patch), zero AdamW moments and a fresh sampler, so `train --resume` on it trains the imported
 * weights as a new run (a fine-tune with that config); eval and generate open it like any run.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PatchflowError } from '@patchflow/tensor';
import { type ConfigPatch, type ModelConfig, type TrainConfig, finalizeModelConfig, resolveConfig } from './config.js';
import {
  CHECKPOINT_DIR,
  CHECKPOINT_OLD_DIR,
  CheckpointError,
  type FloatTensor,
  asStorageError,
  encodeSafetensors,
  f16ToF32,
  saveCheckpoint,
  writeFileAtomic,
} from './checkpoint.js';
import { CHECKPOINT_FORMAT, type CheckpointState, loadTrainingCheckpoint } from './run-state.js';
import { FINAL_NORM, LM_HEAD, POSITION_EMBEDDING, TOKEN_EMBEDDING, blockParamNames, paramSpecs } from './spec.js';
import { HfTokenizer, bytesToUnicode, loadHfTokenizer, tokenizerFromSpec, type Tokenizer, type TokenizerSpec } from './tokenizer.js';
import { bpeTokenizerJson } from './bpe-train.js';
import { Rng } from './rng.js';
import type { SamplerState } from './data.js';
import { acquireRunLock } from './runlock.js';

/** A Hugging Face directory that cannot be read or written as asked (bad input: exit 2 in a CLI). */
export class HfError extends PatchflowError {
  override name = 'HfError';
}

export type HfArchitecture = 'gpt2' | 'gpt_neox';

/** The LayerNorm epsilon of patchflow's model (fixed: layerNorm's default in @patchflow/tensor). */
export const PATCHFLOW_LN_EPS = 1e-5;
/** The rotary base of patchflow's model (model.ts). */
export const PATCHFLOW_ROPE_BASE = 10000;
/** Activations that are GELU's tanh approximation, the function patchflow's MLP applies. */
export const TANH_GELU_ACTIVATIONS = ['gelu_new', 'gelu_pytorch_tanh', 'gelu_fast'] as const;

const ARCH_CLASS: Record<HfArchitecture, string> = { gpt2: 'GPT2LMHeadModel', gpt_neox: 'GPTNeoXForCausalLM' };
const BASE_PREFIX: Record<HfArchitecture, string> = { gpt2: 'transformer.', gpt_neox: 'gpt_neox.' };
const HEAD_NAME: Record<HfArchitecture, string> = { gpt2: 'lm_head.weight', gpt_neox: 'embed_out.weight' };

/** The architecture a model exports as: GPT-2 for learned positions, GPT-NeoX for rotary. */
export function hfArchitectureFor(m: ModelConfig): HfArchitecture {
  return m.positions === 'rotary' ? 'gpt_neox' : 'gpt2';
}

// ---------------------------------------------------------------------------------------------
// tensor layouts

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

/** NeoX fused-qkv row o (per head: q, k, v of head h) -> our qkv column (q | k | v blocks, heads inside each). */
function neoxQkvColumn(o: number, d: number, hd: number): number {
  const h = Math.floor(o / (3 * hd));
  const r = o % (3 * hd);
  const j = Math.floor(r / hd);
  const e = r % hd;
  return j * d + h * hd + e;
}

interface Mapping {
  ours: string;
  /** Name in the HF state dict, with the base prefix. */
  hf: string;
  hfShape: number[];
  toHf(x: Float32Array): Float32Array;
  fromHf(x: Float32Array): Float32Array;
}

const same = (x: Float32Array) => x;

/** Every parameter of our model and its tensor in the HF state dict of `arch` (the head only when untied). */
function layout(arch: HfArchitecture, m: ModelConfig): Mapping[] {
  const d = m.dModel;
  const ff = m.dFF;
  const V = m.vocabSize;
  const hd = d / m.nHead;
  const out: Mapping[] = [];
  const add = (ours: string, hf: string, hfShape: number[], toHf = same, fromHf = same) => out.push({ ours, hf, hfShape, toHf, fromHf });
  // [in, out] (ours) <-> [out, in] (nn.Linear)
  const linear = (ours: string, hf: string, inDim: number, outDim: number) =>
    add(ours, hf, [outDim, inDim], (x) => transpose(x, inDim, outDim), (x) => transpose(x, outDim, inDim));
  if (arch === 'gpt2') {
    const p = BASE_PREFIX.gpt2;
    add(TOKEN_EMBEDDING, p + 'wte.weight', [V, d]);
    add(POSITION_EMBEDDING, p + 'wpe.weight', [m.seqLen, d]);
    for (let i = 0; i < m.nLayer; i++) {
      const n = blockParamNames(i);
      const h = `${p}h.${i}.`;
      add(n.ln1.gain, h + 'ln_1.weight', [d]);
      add(n.ln1.bias, h + 'ln_1.bias', [d]);
      // Conv1D weights are [in, out], as ours
      add(n.qkv.weight, h + 'attn.c_attn.weight', [d, 3 * d]);
      add(n.qkv.bias, h + 'attn.c_attn.bias', [3 * d]);
      add(n.out.weight, h + 'attn.c_proj.weight', [d, d]);
      add(n.out.bias, h + 'attn.c_proj.bias', [d]);
      add(n.ln2.gain, h + 'ln_2.weight', [d]);
      add(n.ln2.bias, h + 'ln_2.bias', [d]);
      add(n.fc.weight, h + 'mlp.c_fc.weight', [d, ff]);
      add(n.fc.bias, h + 'mlp.c_fc.bias', [ff]);
      add(n.proj.weight, h + 'mlp.c_proj.weight', [ff, d]);
      add(n.proj.bias, h + 'mlp.c_proj.bias', [d]);
    }
    add(FINAL_NORM.gain, p + 'ln_f.weight', [d]);
    add(FINAL_NORM.bias, p + 'ln_f.bias', [d]);
  } else {
    const p = BASE_PREFIX.gpt_neox;
    add(TOKEN_EMBEDDING, p + 'embed_in.weight', [V, d]);
    for (let i = 0; i < m.nLayer; i++) {
      const n = blockParamNames(i);
      const h = `${p}layers.${i}.`;
      add(n.ln1.gain, h + 'input_layernorm.weight', [d]);
      add(n.ln1.bias, h + 'input_layernorm.bias', [d]);
      add(
        n.qkv.weight,
        h + 'attention.query_key_value.weight',
        [3 * d, d],
        (w) => {
          const o = new Float32Array(w.length);
          for (let r = 0; r < 3 * d; r++) {
            const c = neoxQkvColumn(r, d, hd);
            for (let i2 = 0; i2 < d; i2++) o[r * d + i2] = w[i2 * 3 * d + c]!;
          }
          return o;
        },
        (w) => {
          const o = new Float32Array(w.length);
          for (let r = 0; r < 3 * d; r++) {
            const c = neoxQkvColumn(r, d, hd);
            for (let i2 = 0; i2 < d; i2++) o[i2 * 3 * d + c] = w[r * d + i2]!;
          }
          return o;
        },
      );
      add(
        n.qkv.bias,
        h + 'attention.query_key_value.bias',
        [3 * d],
        (b) => Float32Array.from({ length: 3 * d }, (_, r) => b[neoxQkvColumn(r, d, hd)]!),
        (b) => {
          const o = new Float32Array(3 * d);
          for (let r = 0; r < 3 * d; r++) o[neoxQkvColumn(r, d, hd)] = b[r]!;
          return o;
        },
      );
      linear(n.out.weight, h + 'attention.dense.weight', d, d);
      add(n.out.bias, h + 'attention.dense.bias', [d]);
      add(n.ln2.gain, h + 'post_attention_layernorm.weight', [d]);
      add(n.ln2.bias, h + 'post_attention_layernorm.bias', [d]);
      linear(n.fc.weight, h + 'mlp.dense_h_to_4h.weight', d, ff);
      add(n.fc.bias, h + 'mlp.dense_h_to_4h.bias', [ff]);
      linear(n.proj.weight, h + 'mlp.dense_4h_to_h.weight', ff, d);
      add(n.proj.bias, h + 'mlp.dense_4h_to_h.bias', [d]);
    }
    add(FINAL_NORM.gain, p + 'final_layer_norm.weight', [d]);
    add(FINAL_NORM.bias, p + 'final_layer_norm.bias', [d]);
  }
  // our head is [d, V]; both HF heads are nn.Linear(d, V): [V, d]
  if (!m.tiedEmbeddings) linear(LM_HEAD, HEAD_NAME[arch], d, V);
  return out;
}

/** Our weights (by parameter name) as the HF state dict of `hfArchitectureFor(m)`. */
export function hfFromWeights(m: ModelConfig, weights: Record<string, FloatTensor>): { architecture: HfArchitecture; tensors: Record<string, FloatTensor> } {
  const arch = hfArchitectureFor(m);
  checkWeights(m, weights, 'weights');
  const tensors: Record<string, FloatTensor> = {};
  for (const e of layout(arch, m)) tensors[e.hf] = { shape: e.hfShape, data: e.toHf(weights[e.ours]!.data) };
  return { architecture: arch, tensors };
}

function checkWeights(m: ModelConfig, weights: Record<string, FloatTensor>, where: string): void {
  for (const s of paramSpecs(m)) {
    const w = weights[s.name];
    if (!w) throw new HfError(`${where}: no tensor "${s.name}" for this model config`);
    if (w.shape.join('x') !== s.shape.join('x')) throw new HfError(`${where}: tensor "${s.name}" has shape [${w.shape}] but the model config gives [${s.shape}]`);
  }
}

// ---------------------------------------------------------------------------------------------
// config.json

/** Token ids for bos/eos in config.json: the tokenizer's `<|endoftext|>` if it has one, else none. */
function specialIds(tokenizer: Tokenizer): { bos: number | null; eos: number | null } {
  if (tokenizer instanceof HfTokenizer) {
    const id = tokenizer.tokenToId('<|endoftext|>');
    if (id !== undefined) return { bos: id, eos: id };
  }
  return { bos: null, eos: null };
}

/** The config.json of model `m` in architecture `arch` (no dropout; float32). */
export function hfConfig(m: ModelConfig, special: { bos: number | null; eos: number | null } = { bos: null, eos: null }): Record<string, unknown> {
  const arch = hfArchitectureFor(m);
  if (arch === 'gpt2') {
    return {
      architectures: [ARCH_CLASS.gpt2],
      model_type: 'gpt2',
      vocab_size: m.vocabSize,
      n_positions: m.seqLen,
      n_ctx: m.seqLen,
      n_embd: m.dModel,
      n_layer: m.nLayer,
      n_head: m.nHead,
      n_inner: m.dFF,
      activation_function: 'gelu_new',
      layer_norm_epsilon: PATCHFLOW_LN_EPS,
      resid_pdrop: 0,
      embd_pdrop: 0,
      attn_pdrop: 0,
      scale_attn_weights: true,
      scale_attn_by_inverse_layer_idx: false,
      reorder_and_upcast_attn: false,
      add_cross_attention: false,
      tie_word_embeddings: m.tiedEmbeddings,
      initializer_range: 0.02,
      use_cache: true,
      bos_token_id: special.bos,
      eos_token_id: special.eos,
    };
  }
  return {
    architectures: [ARCH_CLASS.gpt_neox],
    model_type: 'gpt_neox',
    vocab_size: m.vocabSize,
    max_position_embeddings: m.seqLen,
    hidden_size: m.dModel,
    num_hidden_layers: m.nLayer,
    num_attention_heads: m.nHead,
    intermediate_size: m.dFF,
    hidden_act: 'gelu_new',
    layer_norm_eps: PATCHFLOW_LN_EPS,
    use_parallel_residual: false,
    // legacy keys, read by every transformers version (v5 turns them into rope_parameters)
    rotary_pct: 1.0,
    rotary_emb_base: PATCHFLOW_ROPE_BASE,
    attention_bias: true,
    attention_dropout: 0,
    hidden_dropout: 0,
    tie_word_embeddings: m.tiedEmbeddings,
    initializer_range: 0.02,
    use_cache: true,
    bos_token_id: special.bos,
    eos_token_id: special.eos,
  };
}

/** config.json keys that transformers types as float: written with a decimal point even when whole (0.0, 1.0). */
const FLOAT_KEYS = new Set(['resid_pdrop', 'embd_pdrop', 'attn_pdrop', 'attention_dropout', 'hidden_dropout', 'rotary_pct', 'layer_norm_epsilon', 'layer_norm_eps', 'initializer_range']);

/** JSON text of a config, whole numbers of FLOAT_KEYS written as floats (typed configs may reject an int where a float is declared). */
export function hfConfigJson(cfg: Record<string, unknown>): string {
  return (
    JSON.stringify(cfg, null, 2).replace(/^(\s*)"(\w+)": (-?\d+)(,?)$/gm, (line, ind: string, key: string, n: string, comma: string) =>
      FLOAT_KEYS.has(key) ? `${ind}"${key}": ${n}.0${comma}` : line,
    ) + '\n'
  );
}

type Json = Record<string, unknown>;

function num(cfg: Json, key: string, where: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new HfError(`${where}: "${key}" must be a number, got ${JSON.stringify(cfg[key])}`);
  return v;
}

function int(cfg: Json, key: string, where: string, fallback?: number): number {
  const v = num(cfg, key, where, fallback);
  if (!Number.isInteger(v) || v < 1) throw new HfError(`${where}: "${key}" must be a positive integer, got ${JSON.stringify(cfg[key])}`);
  return v;
}

function refuse(where: string, what: string): never {
  throw new HfError(`${where}: ${what}; patchflow's model cannot represent it`);
}

function checkEps(eps: number, key: string, where: string): void {
  if (Math.abs(eps - PATCHFLOW_LN_EPS) > 1e-12) refuse(where, `${key} is ${eps}, patchflow's LayerNorm uses ${PATCHFLOW_LN_EPS}`);
}

function checkActivation(act: unknown, key: string, where: string): void {
  if (!(TANH_GELU_ACTIVATIONS as readonly unknown[]).includes(act)) {
    refuse(where, `${key} is ${JSON.stringify(act)}, patchflow's MLP uses GELU's tanh approximation (${TANH_GELU_ACTIVATIONS.join(', ')})`);
  }
}

/** The model a config.json describes (GPT-2 or GPT-NeoX), or an HfError naming what patchflow cannot run. */
export function modelConfigFromHf(cfg: Json, where = 'config.json'): { architecture: HfArchitecture; model: ModelConfig; attentionBias: boolean } {
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) throw new HfError(`${where}: not a JSON object`);
  const type = cfg.model_type;
  if (type === 'gpt2') {
    // fallbacks are GPT2Config's defaults: save_pretrained leaves out values equal to them
    const d = int(cfg, 'n_embd', where, 768);
    const model: ModelConfig = {
      vocabSize: int(cfg, 'vocab_size', where, 50257),
      nLayer: int(cfg, 'n_layer', where, 12),
      nHead: int(cfg, 'n_head', where, 12),
      dModel: d,
      dFF: cfg.n_inner === null || cfg.n_inner === undefined ? 4 * d : int(cfg, 'n_inner', where),
      seqLen: int(cfg, 'n_positions', where, 1024),
      positions: 'learned',
      // PretrainedConfig's default is true
      tiedEmbeddings: cfg.tie_word_embeddings !== false,
    };
    checkActivation(cfg.activation_function ?? 'gelu_new', 'activation_function', where);
    checkEps(num(cfg, 'layer_norm_epsilon', where, 1e-5), 'layer_norm_epsilon', where);
    if (cfg.scale_attn_weights === false) refuse(where, 'scale_attn_weights is false (attention scores not divided by sqrt(head width))');
    if (cfg.scale_attn_by_inverse_layer_idx === true) refuse(where, 'scale_attn_by_inverse_layer_idx is true (scores divided by the layer index + 1)');
    if (cfg.add_cross_attention === true) refuse(where, 'add_cross_attention is true (an encoder-decoder block)');
    // reorder_and_upcast_attn only changes where the scale is applied and the precision under autocast: the same function in float32
    return { architecture: 'gpt2', model: checked(model, where), attentionBias: true };
  }
  if (type === 'gpt_neox') {
    // fallbacks are GPTNeoXConfig's defaults: save_pretrained leaves out values equal to them
    const d = int(cfg, 'hidden_size', where, 6144);
    const model: ModelConfig = {
      vocabSize: int(cfg, 'vocab_size', where, 50432),
      nLayer: int(cfg, 'num_hidden_layers', where, 44),
      nHead: int(cfg, 'num_attention_heads', where, 64),
      dModel: d,
      dFF: int(cfg, 'intermediate_size', where, 24576),
      seqLen: int(cfg, 'max_position_embeddings', where, 2048),
      positions: 'rotary',
      // GPTNeoXConfig's default is false
      tiedEmbeddings: cfg.tie_word_embeddings === true,
    };
    checkActivation(cfg.hidden_act ?? 'gelu', 'hidden_act', where);
    checkEps(num(cfg, 'layer_norm_eps', where, 1e-5), 'layer_norm_eps', where);
    if (cfg.use_parallel_residual !== false) refuse(where, 'use_parallel_residual is not false (x + attn(ln1 x) + mlp(ln2 x) in one step)');
    const rope = (cfg.rope_parameters ?? null) as Json | null;
    const ropeType = rope?.rope_type ?? rope?.type ?? 'default';
    const scaling = cfg.rope_scaling as Json | null | undefined;
    if (ropeType !== 'default' || (scaling !== null && scaling !== undefined && (scaling.rope_type ?? scaling.type ?? 'default') !== 'default')) {
      refuse(where, `RoPE scaling ${JSON.stringify(scaling ?? rope)} is set`);
    }
    const base = (rope?.rope_theta ?? cfg.rope_theta ?? cfg.rotary_emb_base ?? 10000) as unknown;
    if (base !== PATCHFLOW_ROPE_BASE) refuse(where, `the rotary base is ${JSON.stringify(base)}, patchflow's is ${PATCHFLOW_ROPE_BASE}`);
    const pct = (rope?.partial_rotary_factor ?? cfg.partial_rotary_factor ?? cfg.rotary_pct ?? 0.25) as unknown;
    if (pct !== 1) refuse(where, `rotary_pct is ${JSON.stringify(pct)}, patchflow rotates every channel of a head (1.0)`);
    return { architecture: 'gpt_neox', model: checked(model, where), attentionBias: cfg.attention_bias !== false };
  }
  throw new HfError(`${where}: model_type ${JSON.stringify(type)} is not supported (supported: gpt2, gpt_neox)`);
}

function checked(m: ModelConfig, where: string): ModelConfig {
  try {
    return finalizeModelConfig(m, 0);
  } catch (e) {
    throw new HfError(`${where}: ${(e as Error).message.replace(/^invalid config: /, '')}`);
  }
}

// ---------------------------------------------------------------------------------------------
// safetensors, as other writers produce them

const DTYPE_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};
const FLOAT_DTYPES = new Set(['F64', 'F32', 'F16', 'BF16']);
const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

/** bfloat16 bits -> float32 values (exact). */
export function bf16ToF32(bits: Uint16Array): Float32Array {
  const u = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i]! << 16;
  return new Float32Array(u.buffer);
}

/**
 * Reads a safetensors file as float32 tensors: F32, F16, BF16 and F64 are converted; tensors for
 * which `skip(name)` is true are not decoded whatever their dtype (attention-mask buffers are often
 * BOOL or U8). Offsets and sizes are checked; every problem is an HfError naming the file.
 */
export function readSafetensorsAsFloat32(file: string, skip: (name: string) => boolean = () => false): { tensors: Record<string, FloatTensor & { dtype: string }>; skipped: string[]; metadata: Record<string, string> } {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HfError(code === 'ENOENT' ? `${file}: file not found` : `${file}: cannot read (${(e as Error).message})`);
  }
  const bad = (msg: string) => new HfError(`${file}: ${msg}`);
  if (bytes.length < 8) throw bad('not a safetensors file (shorter than 8 bytes)');
  const n = bytes.readBigUInt64LE(0);
  if (n > BigInt(bytes.length - 8)) throw bad(`safetensors header length ${n} exceeds the file size; truncated or not a safetensors file`);
  let header: Json;
  try {
    header = JSON.parse(bytes.subarray(8, 8 + Number(n)).toString('utf8')) as Json;
  } catch (e) {
    throw bad(`safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw bad('safetensors header is not a JSON object');
  const start = 8 + Number(n);
  const bufLen = bytes.length - start;
  const tensors: Record<string, FloatTensor & { dtype: string }> = {};
  const skipped: string[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (raw && typeof raw === 'object') metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = String(e?.dtype);
    const shape = e?.shape;
    const off = e?.data_offsets;
    if (!(dtype in DTYPE_BYTES)) throw bad(`tensor "${name}": unknown dtype ${JSON.stringify(e?.dtype)}`);
    if (!Array.isArray(shape) || !shape.every((x) => Number.isSafeInteger(x) && x >= 0)) throw bad(`tensor "${name}": invalid shape ${JSON.stringify(shape)}`);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && x >= 0) || off[0] > off[1] || off[1] > bufLen) {
      throw bad(`tensor "${name}": invalid data_offsets ${JSON.stringify(off)} (data buffer ${bufLen} bytes)`);
    }
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (off[1] - off[0] !== count * DTYPE_BYTES[dtype]!) throw bad(`tensor "${name}": ${off[1] - off[0]} bytes but shape [${shape}] of ${dtype} needs ${count * DTYPE_BYTES[dtype]!}`);
    if (skip(name)) {
      skipped.push(name);
      continue;
    }
    if (!FLOAT_DTYPES.has(dtype)) throw bad(`tensor "${name}" has dtype ${dtype}; weights must be F32, F16, BF16 or F64`);
    const src = bytes.subarray(start + off[0], start + off[1]);
    const copy = new Uint8Array(src.length);
    copy.set(src);
    const dv = new DataView(copy.buffer);
    let data: Float32Array;
    if (dtype === 'F32') data = LITTLE_ENDIAN_HOST ? new Float32Array(copy.buffer) : Float32Array.from({ length: count }, (_, i) => dv.getFloat32(i * 4, true));
    else if (dtype === 'F64') data = Float32Array.from({ length: count }, (_, i) => dv.getFloat64(i * 8, true));
    else {
      const bits = Uint16Array.from({ length: count }, (_, i) => dv.getUint16(i * 2, true));
      data = dtype === 'F16' ? f16ToF32(bits) : bf16ToF32(bits);
    }
    tensors[name] = { dtype, shape: shape as number[], data };
  }
  return { tensors, skipped, metadata };
}

/** Buffers that transformers' GPT-2 / GPT-NeoX checkpoints may carry and that hold no weights. */
function isBuffer(name: string): boolean {
  return /(^|\.)attn\.(bias|masked_bias)$/.test(name) || /(^|\.)attention\.(bias|masked_bias)$/.test(name) || /(^|\.)rotary_emb\.inv_freq$/.test(name);
}

/** The weight files of an HF model directory: model.safetensors, or the shards its index names. */
function weightFiles(dir: string): string[] {
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return [single];
  const index = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(index)) {
    let map: unknown;
    try {
      map = (JSON.parse(fs.readFileSync(index, 'utf8')) as Json).weight_map;
    } catch (e) {
      throw new HfError(`${index}: not valid JSON (${(e as Error).message})`);
    }
    if (!map || typeof map !== 'object') throw new HfError(`${index}: no "weight_map"`);
    return [...new Set(Object.values(map as Record<string, string>))].map((f) => path.join(dir, String(f)));
  }
  const pt = ['pytorch_model.bin', 'model.pt', 'tf_model.h5', 'flax_model.msgpack'].find((f) => fs.existsSync(path.join(dir, f)));
  if (pt) throw new HfError(`${dir} has ${pt} but no model.safetensors: only safetensors weights are read (convert with transformers: model.save_pretrained(dir, safe_serialization=True))`);
  throw new HfError(`${dir} has no model.safetensors (nor model.safetensors.index.json)`);
}

// ---------------------------------------------------------------------------------------------
// tokenizers

/**
 * The tokenizer.json of the byte tokenizer: byte-level BPE with the 256 bytes as the vocabulary
 * (byte b is GPT-2's bytes_to_unicode character of b, with id b) and no merges, so every text encodes
 * to its UTF-8 bytes, ids equal to ByteTokenizer's.
 */
export function byteTokenizerJson(): string {
  return bpeTokenizerJson({
    tokens: bytesToUnicode(),
    merges: [],
    specialTokens: [],
    stoppedBy: 'vocabSize',
    words: { unique: 0, total: 0 },
    trainBytes: 0,
    trainTokens: 0,
  });
}

/** Whether a tokenizer.json is the byte tokenizer (byteTokenizerJson or an equivalent: 256 byte ids, no merges, no added tokens). */
export function isByteTokenizerJson(json: string): boolean {
  let t: HfTokenizer;
  try {
    t = new HfTokenizer(json);
  } catch {
    return false;
  }
  let spec: Json;
  try {
    spec = JSON.parse(json) as Json;
  } catch {
    return false;
  }
  const model = spec.model as Json;
  const pre = spec.pre_tokenizer as Json | null;
  if (t.modelType !== 'BPE' || t.vocabSize !== 256 || (Array.isArray(spec.added_tokens) && spec.added_tokens.length > 0)) return false;
  if (!Array.isArray(model.merges) || model.merges.length !== 0 || (spec.normalizer !== null && spec.normalizer !== undefined)) return false;
  if (!pre || pre.type !== 'ByteLevel' || pre.add_prefix_space === true) return false;
  const chars = bytesToUnicode();
  return chars.every((c, b) => t.tokenToId(c) === b);
}

/** A GPT-2 tokenizer.json from the slow tokenizer's vocab.json and merges.txt (byte-level BPE, `<|endoftext|>` special). */
export function gpt2TokenizerJsonFromFiles(vocabFile: string, mergesFile: string): string {
  let vocab: Record<string, number>;
  try {
    vocab = JSON.parse(fs.readFileSync(vocabFile, 'utf8')) as Record<string, number>;
  } catch (e) {
    throw new HfError(`${vocabFile}: cannot read as JSON (${(e as Error).message})`);
  }
  const merges = fs
    .readFileSync(mergesFile, 'utf8')
    .split('\n')
    .filter((l, i) => l.trim() !== '' && !(i === 0 && l.startsWith('#version')));
  const eot = vocab['<|endoftext|>'];
  const spec = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: eot === undefined ? [] : [{ id: eot, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  return JSON.stringify(spec) + '\n';
}

// ---------------------------------------------------------------------------------------------
// export

export interface HfExportOptions {
  /** Write the tokenizer files (default true). */
  tokenizer?: boolean;
}

export interface HfExportResult {
  outDir: string;
  architecture: HfArchitecture;
  /** The model class config.json names (GPT2LMHeadModel / GPTNeoXForCausalLM). */
  modelClass: string;
  files: string[];
  step: number;
  tokenizer: 'byte' | 'hf';
  parameters: number;
}

function writeOut(file: string, data: string | Uint8Array[]): void {
  try {
    writeFileAtomic(file, data);
  } catch (e) {
    throw asStorageError(e, path.basename(file), file) ?? e;
  }
}

/**
 * Writes the last checkpoint of run (or checkpoint) directory `checkpointDir` as a transformers model
 * directory `outDir` (created if missing; the files it writes are replaced, others left alone).
 */
export function exportHf(checkpointDir: string, outDir: string, opts: HfExportOptions = {}): HfExportResult {
  const ck = loadTrainingCheckpoint(checkpointDir);
  const st = ck.state;
  const tokenizer = tokenizerFromSpec(st.tokenizer, { json: ck.tokenizerJson });
  const m = finalizeModelConfig(st.config.model, tokenizer.vocabSize);
  const { architecture, tensors } = hfFromWeights(m, ck.weights);
  if (fs.existsSync(outDir) && !fs.statSync(outDir).isDirectory()) throw new HfError(`cannot export to ${outDir}: it is a file`);
  try {
    fs.mkdirSync(outDir, { recursive: true });
  } catch (e) {
    throw asStorageError(e, 'the export directory', outDir) ?? e;
  }
  const files: string[] = [];
  const put = (name: string, data: string | Uint8Array[]) => {
    writeOut(path.join(outDir, name), data);
    files.push(name);
  };
  // transformers refuses a safetensors file whose metadata lacks format "pt"
  put('model.safetensors', encodeSafetensors(tensors, { format: 'pt', producer: 'patchflow', patchflow_step: String(st.step) }));
  put('config.json', hfConfigJson(hfConfig(m, specialIds(tokenizer))));
  if (opts.tokenizer !== false) {
    const json = tokenizer.kind === 'byte' ? byteTokenizerJson() : (tokenizer as HfTokenizer).json;
    put('tokenizer.json', json);
    // PreTrainedTokenizerFast over tokenizer.json as is: no special tokens added, decode without space clean-up
    put('tokenizer_config.json', JSON.stringify({ tokenizer_class: 'PreTrainedTokenizerFast', model_max_length: m.seqLen, clean_up_tokenization_spaces: false }, null, 2) + '\n');
  }
  const parameters = paramSpecs(m).reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  return { outDir, architecture, modelClass: ARCH_CLASS[architecture], files, step: st.step, tokenizer: tokenizer.kind === 'byte' ? 'byte' : 'hf', parameters };
}

// ---------------------------------------------------------------------------------------------
// import

/** Our weights from an HF state dict (prefixed or not), checked against `m`; returns the tensors it ignored. */
export function weightsFromHf(
  architecture: HfArchitecture,
  m: ModelConfig,
  state: Record<string, FloatTensor>,
  opts: { attentionBias?: boolean; where?: string } = {},
): { weights: Record<string, FloatTensor>; ignored: string[] } {
  const where = opts.where ?? 'model';
  const prefix = BASE_PREFIX[architecture];
  // canonical names: the base model's tensors carry the prefix, the head never does
  const byName = new Map<string, { key: string; t: FloatTensor }>();
  const ignored: string[] = [];
  const headName = HEAD_NAME[architecture];
  for (const [k, t] of Object.entries(state)) {
    const canonical = k === headName || k.startsWith(prefix) ? k : prefix + k;
    if (byName.has(canonical)) throw new HfError(`${where}: tensor ${k} appears twice (with and without the "${prefix}" prefix)`);
    byName.set(canonical, { key: k, t });
  }
  const specs = new Map(paramSpecs(m).map((s) => [s.name, s]));
  const weights: Record<string, FloatTensor> = {};
  const used = new Set<string>();
  const optionalBias = opts.attentionBias === false ? new Set(['attention.query_key_value.bias', 'attention.dense.bias']) : new Set<string>();
  for (const e of layout(architecture, m)) {
    const hit = byName.get(e.hf);
    const size = e.hfShape.reduce((a, b) => a * b, 1);
    if (!hit) {
      if ([...optionalBias].some((b) => e.hf.endsWith(b))) {
        weights[e.ours] = { shape: specs.get(e.ours)!.shape, data: new Float32Array(size) };
        continue;
      }
      const tiedHint = e.ours === LM_HEAD ? ' (config.json says tie_word_embeddings is false)' : '';
      throw new HfError(`${where}: no tensor ${e.hf}${tiedHint}`);
    }
    used.add(e.hf);
    if (hit.t.shape.join('x') !== e.hfShape.join('x')) throw new HfError(`${where}: tensor ${hit.key} has shape [${hit.t.shape}] but config.json gives [${e.hfShape}]`);
    weights[e.ours] = { shape: specs.get(e.ours)!.shape, data: e.fromHf(hit.t.data) };
  }
  const extra: string[] = [];
  for (const [canonical, { key }] of byName) {
    if (used.has(canonical)) continue;
    // a tied head may be stored anyway (a copy of the embedding); transformers ties it
    if (canonical === headName && m.tiedEmbeddings) ignored.push(key);
    else extra.push(key);
  }
  if (extra.length) throw new HfError(`${where}: tensors this ${architecture} model has no place for: ${extra.slice(0, 4).join(', ')}${extra.length > 4 ? `, … (${extra.length})` : ''}`);
  return { weights, ignored };
}

export interface HfImportOptions {
  /** A tokenizer.json to use instead of the directory's, or 'bytes' for the byte tokenizer. */
  tokenizer?: string;
  /** Training config of the new run (data, steps, optim, ...); its model keys must agree with config.json. */
  config?: ConfigPatch | Record<string, unknown>;
}

export interface HfImportResult {
  runDir: string;
  checkpointDir: string;
  architecture: HfArchitecture;
  model: ModelConfig;
  tokenizer: 'byte' | 'hf';
  parameters: number;
  /** Tensors of the source that hold no weights (mask buffers, a stored tied head). */
  ignored: string[];
  /** dtypes of the source weights, e.g. ['F16']. */
  dtypes: string[];
}

function resolveTokenizer(hfDir: string, choice: string | undefined): { tokenizer: Tokenizer; json?: string; path: string } {
  if (choice === 'bytes') return { tokenizer: tokenizerFromSpec({ kind: 'byte' }), path: '' };
  if (choice !== undefined) {
    const t = loadHfTokenizer(choice);
    return isByteTokenizerJson(t.json) ? { tokenizer: tokenizerFromSpec({ kind: 'byte' }), path: '' } : { tokenizer: t, json: t.json, path: choice };
  }
  const file = path.join(hfDir, 'tokenizer.json');
  if (fs.existsSync(file)) {
    const t = loadHfTokenizer(file);
    return isByteTokenizerJson(t.json) ? { tokenizer: tokenizerFromSpec({ kind: 'byte' }), path: '' } : { tokenizer: t, json: t.json, path: file };
  }
  const vocab = path.join(hfDir, 'vocab.json');
  const merges = path.join(hfDir, 'merges.txt');
  if (fs.existsSync(vocab) && fs.existsSync(merges)) {
    const t = new HfTokenizer(gpt2TokenizerJsonFromFiles(vocab, merges), file);
    return { tokenizer: t, json: t.json, path: file };
  }
  throw new HfError(`${hfDir} has no tokenizer.json (nor vocab.json + merges.txt): name one with the tokenizer option (--tokenizer FILE), or 'bytes' for the byte tokenizer`);
}

/**
 * Reads a transformers GPT-2 / GPT-NeoX directory and writes it as a patchflow run directory
 * `runDir` (its checkpoint/ at step 0; see the module comment). `runDir` must not hold a checkpoint.
 */
export function importHf(hfDir: string, runDir: string, opts: HfImportOptions = {}): HfImportResult {
  if (!fs.existsSync(hfDir) || !fs.statSync(hfDir).isDirectory()) throw new HfError(`no Hugging Face model directory at ${hfDir}`);
  const cfgPath = path.join(hfDir, 'config.json');
  let raw: Json;
  try {
    raw = JSON.parse(fs.readFileSync(cfgPath, 'utf8')) as Json;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HfError(code === 'ENOENT' ? `${hfDir} has no config.json` : `${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  const { architecture, model: fromHf, attentionBias } = modelConfigFromHf(raw, cfgPath);
  const tok = resolveTokenizer(hfDir, opts.tokenizer);
  if (tok.tokenizer.vocabSize > fromHf.vocabSize) {
    throw new HfError(`the tokenizer has ${tok.tokenizer.vocabSize} ids but the model's vocab_size is ${fromHf.vocabSize}`);
  }

  // the training config of the new run: the caller's patch, with the model from config.json
  const patch = (opts.config ?? {}) as Record<string, unknown>;
  if (patch.plugins && Object.keys(patch.plugins as object).length) throw new HfError('an imported run starts without plugins (patch-level or sparse training): set them in a new run, not at import');
  const userModel = (patch.model ?? {}) as Record<string, unknown>;
  for (const [k, v] of Object.entries(userModel)) {
    if (k in fromHf && (fromHf as unknown as Record<string, unknown>)[k] !== v) {
      throw new HfError(`the config sets model.${k} = ${JSON.stringify(v)} but ${cfgPath} gives ${JSON.stringify((fromHf as unknown as Record<string, unknown>)[k])}`);
    }
  }
  const config: TrainConfig = resolveConfig(patch, { model: fromHf, tokenizer: tok.path });
  const m = finalizeModelConfig(config.model, tok.tokenizer.vocabSize);

  const state: Record<string, FloatTensor> = {};
  const dtypes = new Set<string>();
  const ignored: string[] = [];
  for (const file of weightFiles(hfDir)) {
    const r = readSafetensorsAsFloat32(file, isBuffer);
    ignored.push(...r.skipped);
    for (const [k, t] of Object.entries(r.tensors)) {
      if (k in state) throw new HfError(`${file}: tensor ${k} is also in another shard`);
      state[k] = t;
      dtypes.add(t.dtype);
    }
  }
  const { weights, ignored: alsoIgnored } = weightsFromHf(architecture, m, state, { attentionBias, where: hfDir });
  ignored.push(...alsoIgnored);

  // step 0 of a new run: zero AdamW moments, the sampler a fresh run would start with
  const optimizer: Record<string, FloatTensor> = {};
  for (const s of paramSpecs(m)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    optimizer[`m.${s.name}`] = { shape: s.shape, data: new Float32Array(n) };
    optimizer[`v.${s.name}`] = { shape: s.shape, data: new Float32Array(n) };
  }
  const parameters = paramSpecs(m).reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  const tokenizerSpec: TokenizerSpec = tok.tokenizer.toJSON();
  const st: CheckpointState & { imported: unknown } = {
    format: CHECKPOINT_FORMAT,
    config: { ...config, model: m },
    step: 0,
    run: { step: 0, phaseIndex: 0, phaseStep: 0, flops: 0, tokens: 0, elapsed: 0 },
    // no streamLength: the stream is whatever corpus the run trains on (BatchSampler.restore checks it only when set)
    sampler: { rng: new Rng(config.seed + 1).state(), batches: 0, windows: 0, tokens: 0 } as unknown as SamplerState,
    optimizerT: 0,
    plugins: {},
    evals: [],
    tokenizer: tokenizerSpec,
    corpus: { name: '', tokens: 0 },
    parameters,
    imported: { format: 'hf', from: path.resolve(hfDir), architecture, modelClass: ARCH_CLASS[architecture], dtypes: [...dtypes] },
  };

  if (fs.existsSync(path.join(runDir, CHECKPOINT_DIR)) || fs.existsSync(path.join(runDir, CHECKPOINT_OLD_DIR))) {
    throw new CheckpointError(`${runDir} already holds a checkpoint; import into a new run directory`);
  }
  const lock = acquireRunLock(runDir, 'patchflow import');
  let checkpointDir: string;
  try {
    checkpointDir = saveCheckpoint(runDir, { weights, optimizer, state: st, tokenizerJson: tok.json });
  } finally {
    lock.release();
  }
  return {
    runDir,
    checkpointDir,
    architecture,
    model: m,
    tokenizer: tok.tokenizer.kind === 'byte' ? 'byte' : 'hf',
    parameters,
    ignored,
    dtypes: [...dtypes],
  };
}
