/**
 * The one description of patchflow's GPT: every parameter with its shape, role, layer,
 * initialisation and weight-decay rule, and the matmul FLOPs each projection costs.
 *
 * Everything that needs to know the model's structure reads it from here rather than from
 * parameter names: the tfjs model (model.ts), the optimizer's decay groups, the sparsity plugin
 * (which matrices to mask), `GPT.setMatMul` (which weights have products to override), the dataflow
 * runtime's op graph (`buildStepGraph` walks these specs block by block) and the compiled GPU step.
 *
 * Architecture: token embedding (+ learned positions, or rotary inside attention), nLayer pre-LN
 * blocks [ln1 -> attention (qkv projection, causal attention, output projection) -> residual ->
 * ln2 -> MLP (fc, GELU, proj) -> residual], final LayerNorm, LM head (the token embedding
 * transposed when tied, else its own [d, V] matrix). Projection weights are stored [in, out]: y = x·W + b.
 */
import type { ModelConfig } from './config.js';

/**
 * What a parameter is for. The four projection roles and `head` are the matrices with products
 * (x·W); `embedding` is a lookup table (and the head's matrix, transposed, when tied).
 */
export type ParamRole =
  | 'embedding'
  | 'positions'
  | 'norm.gain'
  | 'norm.bias'
  | 'attn.qkv'
  | 'attn.out'
  | 'mlp.in'
  | 'mlp.out'
  | 'bias'
  | 'head';

/** The roles of the projection matrices inside a block, in the order a block applies them. */
export const PROJECTION_ROLES = ['attn.qkv', 'attn.out', 'mlp.in', 'mlp.out'] as const;
export type ProjectionRole = (typeof PROJECTION_ROLES)[number];

/** Which LayerNorm a norm parameter belongs to. */
export type NormSite = 'ln1' | 'ln2' | 'ln_f';

export interface ParamSpec {
  name: string;
  shape: number[];
  role: ParamRole;
  /** Transformer block index; null for parameters outside the blocks. */
  layer: number | null;
  /** For `bias`: the projection weight it is added to; for norm parameters: the LayerNorm. */
  of?: string;
  init: 'normal' | 'residual' | 'zeros' | 'ones';
  /** Weight decay applies to matrices only (not biases, LayerNorm or positions). */
  decay: boolean;
}

export function isProjection(role: ParamRole): role is ProjectionRole {
  return (PROJECTION_ROLES as readonly string[]).includes(role);
}

/** Whether `s` is a matrix that a product multiplies by (a projection, or the untied head). */
export function hasProduct(s: ParamSpec): boolean {
  return isProjection(s.role) || s.role === 'head';
}

/** Names of a block's parameters (the layout `paramSpecs` produces). */
export function blockParamNames(layer: number) {
  const p = `blocks.${layer}.`;
  return {
    ln1: { gain: p + 'ln1.weight', bias: p + 'ln1.bias' },
    qkv: { weight: p + 'attn.qkv.weight', bias: p + 'attn.qkv.bias' },
    out: { weight: p + 'attn.proj.weight', bias: p + 'attn.proj.bias' },
    ln2: { gain: p + 'ln2.weight', bias: p + 'ln2.bias' },
    fc: { weight: p + 'mlp.fc.weight', bias: p + 'mlp.fc.bias' },
    proj: { weight: p + 'mlp.proj.weight', bias: p + 'mlp.proj.bias' },
  };
}

export const TOKEN_EMBEDDING = 'tok_emb.weight';
export const POSITION_EMBEDDING = 'pos_emb.weight';
export const FINAL_NORM = { gain: 'ln_f.weight', bias: 'ln_f.bias' };
export const LM_HEAD = 'lm_head.weight';

/** Every parameter of the model, in a fixed order (checkpoints and the optimizer follow it). */
export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const d = c.dModel;
  const specs: ParamSpec[] = [{ name: TOKEN_EMBEDDING, shape: [c.vocabSize, d], role: 'embedding', layer: null, init: 'normal', decay: true }];
  if (c.positions === 'learned') specs.push({ name: POSITION_EMBEDDING, shape: [c.seqLen, d], role: 'positions', layer: null, init: 'normal', decay: false });
  const norm = (name: string, site: NormSite, layer: number | null, gain: boolean): ParamSpec => ({
    name,
    shape: [d],
    role: gain ? 'norm.gain' : 'norm.bias',
    layer,
    of: site,
    init: gain ? 'ones' : 'zeros',
    decay: false,
  });
  const proj = (name: string, role: ProjectionRole, layer: number, shape: [number, number]): ParamSpec => ({
    name,
    shape,
    role,
    layer,
    // output projections feed the residual stream: GPT-2's 1/sqrt(2·nLayer) scaling
    init: role === 'attn.out' || role === 'mlp.out' ? 'residual' : 'normal',
    decay: true,
  });
  const bias = (name: string, of: string, layer: number, n: number): ParamSpec => ({ name, shape: [n], role: 'bias', layer, of, init: 'zeros', decay: false });
  for (let i = 0; i < c.nLayer; i++) {
    const n = blockParamNames(i);
    specs.push(
      norm(n.ln1.gain, 'ln1', i, true),
      norm(n.ln1.bias, 'ln1', i, false),
      proj(n.qkv.weight, 'attn.qkv', i, [d, 3 * d]),
      bias(n.qkv.bias, n.qkv.weight, i, 3 * d),
      proj(n.out.weight, 'attn.out', i, [d, d]),
      bias(n.out.bias, n.out.weight, i, d),
      norm(n.ln2.gain, 'ln2', i, true),
      norm(n.ln2.bias, 'ln2', i, false),
      proj(n.fc.weight, 'mlp.in', i, [d, c.dFF]),
      bias(n.fc.bias, n.fc.weight, i, c.dFF),
      proj(n.proj.weight, 'mlp.out', i, [c.dFF, d]),
      bias(n.proj.bias, n.proj.weight, i, d),
    );
  }
  specs.push(norm(FINAL_NORM.gain, 'ln_f', null, true), norm(FINAL_NORM.bias, 'ln_f', null, false));
  if (!c.tiedEmbeddings) specs.push({ name: LM_HEAD, shape: [d, c.vocabSize], role: 'head', layer: null, init: 'normal', decay: true });
  return specs;
}

/** The parameters of block `layer`, by what they are for. */
export function blockSpecs(specs: readonly ParamSpec[], layer: number) {
  const find = (name: string) => {
    const s = specs.find((x) => x.name === name);
    if (!s) throw new Error(`model description: block ${layer} has no parameter ${name}`);
    return s;
  };
  const n = blockParamNames(layer);
  return {
    ln1: { gain: find(n.ln1.gain), bias: find(n.ln1.bias) },
    qkv: { weight: find(n.qkv.weight), bias: find(n.qkv.bias) },
    out: { weight: find(n.out.weight), bias: find(n.out.bias) },
    ln2: { gain: find(n.ln2.gain), bias: find(n.ln2.bias) },
    fc: { weight: find(n.fc.weight), bias: find(n.fc.bias) },
    proj: { weight: find(n.proj.weight), bias: find(n.proj.bias) },
  };
}

/** The matrix the LM head multiplies by: the untied head [d, V], or the token embedding [V, d] used transposed. */
export function headMatrix(specs: readonly ParamSpec[]): { spec: ParamSpec; transposed: boolean } {
  const head = specs.find((s) => s.role === 'head');
  if (head) return { spec: head, transposed: false };
  return { spec: specs.find((s) => s.role === 'embedding')!, transposed: true };
}

/** Forward matmul FLOPs per position of a matrix's product (2 per multiply-add); 0 for matrices without one. */
export function productFlopsPerPosition(s: ParamSpec, c: ModelConfig): number {
  if (hasProduct(s)) return 2 * s.shape[0]! * s.shape[1]!;
  if (s.role === 'embedding' && c.tiedEmbeddings) return 2 * s.shape[0]! * s.shape[1]!;
  return 0;
}

/** Forward FLOPs per position, matmuls only (the usual convention): projections, head, and QKᵀ and AV over `seqLen` keys. */
export function forwardFlopsPerPosition(c: ModelConfig, seqLen = c.seqLen): number {
  const attention = c.nLayer * 2 * 2 * seqLen * c.dModel;
  return paramSpecs(c).reduce((s, p) => s + productFlopsPerPosition(p, c), 0) + attention;
}
