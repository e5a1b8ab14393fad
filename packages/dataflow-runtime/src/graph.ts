/**
 * The op graph of one training step of @patchflow/trainer's GPT, built from its model description
 * (trainer spec.ts: every parameter with its role, read block by block): embedding (+ patch averaging
 * at K > 1) and positions, nLayer pre-LN blocks [LN -> qkv -> causal attention -> proj -> residual ->
 * LN -> fc -> GELU -> proj -> residual], final LN, LM head (tied or untied), cross-entropy with K labels
 * per position; the backward pass in reverse; gradient-norm clipping and AdamW.
 *
 * Per-element FLOP constants of the non-matmul ops (stated, not measured): LayerNorm 8 forward / 16
 * backward, GELU 8 / 16, residual add 1, bias gradient 1 (a row sum), softmax inside attention 5 / 4
 * per score, cross-entropy 4 / 3 per logit (+1 per label), cast 1, AdamW 14 and clipping 2 per
 * parameter, patch averaging 1 per input embedding value (both directions).
 *
 * Precision: fp32 and tf32 keep every tensor in 4 bytes; bf16 is mixed precision as under autocast:
 * fp32 master weights, gradients and AdamW moments, a per-step bf16 copy of each matmul weight (a
 * cast op), and 2-byte activations.
 *
 * `eager: true` builds the ops PyTorch eager mode actually launches for the same step (one op = one CUDA
 * kernel), as listed by torch.profiler for tools/device/pytorch_gpt_step.py on the device H100
 * (torch 2.11; the kernel list, not the kernel times, was used). Beyond the fused graph above it adds:
 *  - LayerNorm backward as two kernels (grad-input, then gamma/beta), each reading dy and x;
 *  - the backward of `qkv.split` + head view/transpose: a cat of dq, dk, dv into [B·T, 3d];
 *  - attention helpers per SDPA path: bf16 runs the flash kernel (cuDNN on sm90), whose backward
 *    needs delta = rowsum(dO·O) (one kernel) and accumulates dq in fp32 then converts it (one kernel);
 *    fp32/tf32 inputs cannot use flash kernels, SDPA runs the memory-efficient (CUTLASS) kernel, whose
 *    backward computes delta with two ATen kernels (a multiply writing [B·T, d] and a row sum);
 *  - cross-entropy as log_softmax + nll_loss in fp32: log_softmax over rows of V = 50,304 fp32
 *    (201 KB, more than a block's shared memory) makes three passes over its input (max, sum of exp,
 *    write), its backward reads the incoming gradient twice (row sum, then write) and the output once;
 *    nll_loss's backward fills a zero [B·T, V] gradient and scatters into it;
 *  - the embedding backward fills a zero [V, d] gradient before scattering rows; with tied embeddings
 *    the head's and the embedding's gradients are then added (AccumulateGrad);
 *  - under bf16 autocast (autocast op lists: linear and SDPA run in bf16, layer_norm, log_softmax and
 *    embedding in fp32, add promotes): the residual stream, embeddings and LayerNorm inputs/outputs are
 *    fp32; each LayerNorm output is cast to bf16 before its matmul (and the gradient cast back), each
 *    bias is cast like its weight, the residual add's gradient is cast to bf16 for the bf16 branch,
 *    weight and bias gradients come out of the matmul/row-sum in bf16 and are cast to the fp32
 *    master's dtype, and `logits.float()` copies the [B·T, V] logits to fp32 (its gradient is cast back).
 */
import { blockSpecs, headMatrix, isProjection, paramSpecs, type ParamSpec } from '@patchflow/trainer';
import type { GptShape } from './model.js';
import { ConfigError, parameterCount } from './model.js';
import { DTYPE_BYTES, type Access, type DType, type OpKind, type OpSemantics, type OpSpec, type Phase, type Precision, type StepGraph, type TensorRole, type TensorSpec } from './types.js';
import { densityOf, indexBytes, parsePattern, patternName, type SparsityPattern } from './sparsity.js';

export interface GraphOptions {
  /** Sequences per step (per chip). */
  batch: number;
  /** Positions T the transformer sees; default model.seqLen. */
  seqLen?: number;
  /** Patch-level training: K tokens averaged per position (1 = token level). */
  patchSize?: number;
  precision?: Precision;
  /** Micro-batches of `batch` sequences per optimizer step (forward + backward repeat, the optimizer runs once). */
  gradAccum?: number;
  /** Weight sparsity S of the attention and MLP projection matrices. */
  sparsity?: number;
  /** unstructured (default) | block:B | nm:N:M | dense */
  sparsityPattern?: string;
  /** The ops PyTorch eager launches (extra casts, copies, fills, helper kernels; see the file comment). Default false. */
  eager?: boolean;
}

type Ref = string | [string, number];

class Builder {
  tensors = new Map<string, TensorSpec>();
  ops: OpSpec[] = [];

  t(id: string, shape: number[], dtype: DType, role: TensorRole, perRow: boolean, bytes?: number): string {
    if (this.tensors.has(id)) throw new Error(`tensor ${id} defined twice`);
    const n = shape.reduce((a, b) => a * b, 1);
    this.tensors.set(id, { id, shape, dtype, bytes: bytes ?? n * DTYPE_BYTES[dtype], role, perRow, producer: null, consumers: [] });
    return id;
  }

  op(id: string, kind: OpKind, phase: Phase, layer: number | null, reads: Ref[], writes: Ref[], flops: number, matmulFlops = 0, extra: Partial<OpSpec> = {}): OpSpec {
    const index = this.ops.length;
    const acc = (r: Ref): Access => {
      const [tid, bytes] = typeof r === 'string' ? [r, undefined] : r;
      const t = this.tensors.get(tid);
      if (!t) throw new Error(`op ${id}: unknown tensor ${tid}`);
      return { tensor: tid, bytes: bytes ?? t.bytes };
    };
    const rs = reads.map(acc);
    const ws = writes.map(acc);
    const byD: OpSpec['bytesByDtype'] = {};
    for (const a of rs) {
      const dt = this.tensors.get(a.tensor)!.dtype;
      (byD[dt] ??= { read: 0, write: 0 }).read += a.bytes;
      const t = this.tensors.get(a.tensor)!;
      if (t.consumers.at(-1) !== index) t.consumers.push(index);
    }
    for (const a of ws) {
      const t = this.tensors.get(a.tensor)!;
      (byD[t.dtype] ??= { read: 0, write: 0 }).write += a.bytes;
      if (t.producer !== null) throw new Error(`tensor ${a.tensor} written twice`);
      t.producer = index;
    }
    const o: OpSpec = {
      index, id, kind, phase, layer, reads: rs, writes: ws, flops, matmulFlops,
      bytesRead: rs.reduce((s, a) => s + a.bytes, 0), bytesWritten: ws.reduce((s, a) => s + a.bytes, 0),
      bytesByDtype: byD, tiled: extra.tiled ?? true, ...extra,
    };
    this.ops.push(o);
    return o;
  }
}

function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(`${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}


/** A parameter in the graph: master weight, gradient, AdamW moments, and (bf16, sparse) its compute copy and index. */
interface Param {
  spec: ParamSpec;
  name: string;
  rows: number;
  cols: number;
  masked: boolean;
  kept: number;
  w: string;
  idx?: string;
  wcId?: string;
  g: string;
  m: string;
  v: string;
}

/** Activations of a block's forward pass that its backward pass reads. */
interface SavedBlock {
  h: string;
  a1: string;
  s1: string;
  qkv: string;
  att: string;
  lse: string;
  h1: string;
  m: string;
  s2: string;
  f: string;
  g: string;
}

/** The builders of one step's graph: shapes, precision, sparsity, and per-part methods that add ops. */
class StepBuilder {
  readonly b = new Builder();
  readonly params = new Map<string, Param>();
  readonly specs: ParamSpec[];
  readonly B: number;
  readonly T: number;
  readonly K: number;
  readonly BT: number;
  readonly Tin: number;
  readonly d: number;
  readonly dff: number;
  readonly V: number;
  readonly h: number;
  readonly hd: number;
  readonly L: number;
  readonly act: DType;
  /** Eager bf16 autocast: residual stream, embeddings and LayerNorm in fp32, casts around each bf16 matmul. */
  readonly autocast: boolean;
  /** dtype of the residual stream. */
  readonly rs: DType;
  readonly causal: number;

  constructor(
    readonly model: GptShape,
    readonly prec: Precision,
    readonly eager: boolean,
    readonly pattern: SparsityPattern,
    readonly rho: number,
    batch: number,
    seq: number,
    patchSize: number,
  ) {
    this.specs = paramSpecs(model);
    this.B = batch;
    this.T = seq;
    this.K = patchSize;
    this.BT = batch * seq;
    this.Tin = patchSize * seq;
    this.d = model.dModel;
    this.dff = model.dFF;
    this.V = model.vocabSize;
    this.h = model.nHead;
    this.hd = model.dModel / model.nHead;
    this.L = model.nLayer;
    this.act = prec === 'bf16' ? 'bf16' : prec;
    this.autocast = eager && prec === 'bf16';
    this.rs = this.autocast ? 'fp32' : this.act;
    this.causal = (seq + 1) / (2 * seq);
  }

  get sparse(): boolean {
    return this.rho < 1;
  }

  p(name: string): Param {
    const x = this.params.get(name);
    if (!x) throw new Error(`graph: no parameter ${name}`);
    return x;
  }

  /** Master weight, gradient and moments of a parameter (kept values only when masked); projections are the masked matrices. */
  addParam(spec: ParamSpec): Param {
    const b = this.b;
    const { name, shape } = spec;
    const masked = isProjection(spec.role);
    const rows = shape[0]!, cols = shape[1] ?? 1;
    const n = rows * cols;
    const dens = masked ? this.rho : 1;
    const kept = Math.round(n * dens);
    const p: Param = {
      spec, name, rows, cols, masked: masked && this.sparse, kept,
      w: b.t(`W:${name}`, shape, 'fp32', 'weight', false, kept * 4),
      g: b.t(`G:${name}`, shape, 'fp32', 'gradient', false, kept * 4),
      m: b.t(`M:${name}`, shape, 'fp32', 'optimizer-state', false, kept * 4),
      v: b.t(`V:${name}`, shape, 'fp32', 'optimizer-state', false, kept * 4),
    };
    if (masked && this.sparse) {
      const ib = indexBytes(rows, cols, this.rho, this.pattern);
      p.idx = b.t(`I:${name}`, shape, this.pattern.kind === 'nm' ? 'uint8' : 'int32', 'sparse-index', false, ib);
    }
    const isMatmulWeight = masked || (spec.role === 'embedding' && this.model.tiedEmbeddings) || spec.role === 'head';
    if (this.prec === 'bf16' && isMatmulWeight) p.wcId = b.t(`Wc:${name}`, shape, 'bf16', 'weight-compute', false, kept * 2);
    this.params.set(name, p);
    return p;
  }

  A(id: string, cols: number, dtype: DType = this.act): string {
    return this.b.t(id, [this.BT, cols], dtype, 'activation', true);
  }

  /** The weight a matmul reads: the bf16 copy (cast once per step, before first use) or the master, and its index. */
  mmWeight(p: Param, layer: number): Ref[] {
    const refs: Ref[] = [];
    if (p.wcId) {
      const t = this.b.tensors.get(p.wcId)!;
      if (t.producer === null) this.b.op(`cast ${p.name}`, 'cast', 'forward', layer, [p.w], [p.wcId], p.kept, 0, { tiled: false, ...this.sem({ fn: 'cast', x: p.w, out: p.wcId }) });
      refs.push(p.wcId);
    } else refs.push(p.w);
    if (p.idx) refs.push(p.idx);
    return refs;
  }

  sparseOf(p: Param): Partial<OpSpec> {
    return p.masked ? { sparse: { density: this.rho, pattern: patternName(this.pattern) } } : {};
  }

  /** Semantics go on ops of the fused graph only. */
  sem(s: OpSemantics): Partial<OpSpec> {
    return this.eager ? {} : { sem: s };
  }

  /** Eager autocast: a cast op of one tensor to `dtype` (1 FLOP per element); otherwise the tensor itself. */
  castTo(x: string, dtype: DType, id: string, phase: Phase, layer: number | null, tiled = true): string {
    const t = this.b.tensors.get(x)!;
    if (!this.autocast || t.dtype === dtype) return x;
    const y = this.b.t(id, t.shape, dtype, t.role === 'weight' ? 'weight-compute' : t.role, t.perRow, (t.bytes / DTYPE_BYTES[t.dtype]) * DTYPE_BYTES[dtype]);
    this.b.op(`cast ${id}`, 'cast', phase, layer, [x], [y], t.bytes / DTYPE_BYTES[t.dtype], 0, { tiled });
    return y;
  }

  /** The bias a matmul reads: eager autocast casts it to bf16 like the weight (once per step). */
  mmBias(bias: Param, layer: number): string {
    return this.castTo(bias.w, 'bf16', `Bc:${bias.name}`, 'forward', layer, false);
  }

  /** A parameter gradient produced in bf16 under eager autocast and cast to the fp32 master's dtype (or written directly). */
  gradOut(gId: string, elements: number, layer: number, write: (g: string) => void): void {
    if (!this.autocast) return write(gId);
    const t = this.b.tensors.get(gId)!;
    const gc = this.b.t(`${gId}.bf16`, t.shape, 'bf16', 'gradient', false, t.bytes / 2);
    write(gc);
    this.b.op(`cast ${gId}`, 'cast', 'backward', layer, [gc], [gId], elements, 0, { tiled: false });
  }

  /** Y[BT,n] = X[BT,k]·W[k,n] + bias. */
  linear(name: string, layer: number, x: string, p: Param, bias: Param, y: string): void {
    const { BT } = this;
    const mm = 2 * BT * p.rows * p.cols * (p.masked ? this.rho : 1);
    const w = this.mmWeight(p, layer);
    const bw = this.mmBias(bias, layer);
    this.b.op(name, 'matmul', 'forward', layer, [x, ...w, bw], [y], mm + BT * p.cols, mm, {
      gemm: { m: BT, n: p.cols, k: p.rows, batch: 1 }, ...this.sparseOf(p),
      ...this.sem({ fn: 'matmul', a: x, b: refId(w[0]!), transA: false, transB: false, bias: bw, out: y, param: p.name }),
    });
  }

  /** dX = dY·Wᵀ, dW = Xᵀ·dY (kept positions only), db = Σ dY. */
  linearBwd(name: string, layer: number, x: string, p: Param, bias: Param, dy: string, dx: string | null): void {
    const { BT, b } = this;
    const mm = 2 * BT * p.rows * p.cols * (p.masked ? this.rho : 1);
    if (dx) {
      const w = this.mmWeight(p, layer);
      b.op(`${name} dX`, 'matmul', 'backward', layer, [dy, ...w], [dx], mm, mm, {
        gemm: { m: BT, n: p.rows, k: p.cols, batch: 1 }, ...this.sparseOf(p),
        ...this.sem({ fn: 'matmul', a: dy, b: refId(w[0]!), transA: false, transB: true, out: dx, param: p.name }),
      });
    }
    this.gradOut(p.g, p.kept, layer, (g) =>
      b.op(`${name} dW`, 'matmul', 'backward', layer, [x, dy, ...(p.idx ? [p.idx] : [])], [g], mm, mm, {
        gemm: { m: p.rows, n: p.cols, k: BT, batch: 1 }, ...this.sparseOf(p),
        ...this.sem({ fn: 'matmul', a: x, b: dy, transA: true, transB: false, out: g, param: p.name }),
      }),
    );
    this.gradOut(bias.g, bias.kept, layer, (g) => b.op(`${name} db`, 'reduce', 'backward', layer, [dy], [g], BT * p.cols, 0, this.sem({ fn: 'colsum', x: dy, out: g })));
  }

  ln(name: string, layer: number, x: string, w: Param, bb: Param, y: string, stats: string): void {
    this.b.op(name, 'layernorm', 'forward', layer, [x, w.w, bb.w], [y, stats], 8 * this.BT * this.d, 0, this.sem({ fn: 'layernorm', x, gain: w.w, bias: bb.w, out: y, stats }));
  }

  /** LayerNorm backward: one fused op, or eager's two kernels (grad-input 12 FLOPs/element; gamma/beta 4), each reading dy and x. */
  lnBwd(name: string, layer: number, dy: string, x: string, stats: string, w: Param, bb: Param, dx: string): void {
    const { b, BT, d } = this;
    if (!this.eager) {
      b.op(`${name} bwd`, 'layernorm', 'backward', layer, [dy, x, stats, w.w], [dx, w.g, bb.g], 16 * BT * d, 0, this.sem({ fn: 'layernorm-grad', dy, x, stats, gain: w.w, dx, dgain: w.g, dbias: bb.g }));
      return;
    }
    b.op(`${name} bwd dX`, 'layernorm', 'backward', layer, [dy, x, stats, w.w], [dx], 12 * BT * d);
    b.op(`${name} bwd dW`, 'layernorm', 'backward', layer, [dy, x, stats], [w.g, bb.g], 4 * BT * d);
  }

  // ---- forward ----

  /** Token embedding (+ patch averaging at K > 1, + learned positions): the residual stream's first value. */
  embedForward(ids: string): string {
    const { b, B, T, Tin, d, K, BT, rs } = this;
    const tok = this.p(this.specs.find((s) => s.role === 'embedding')!.name);
    const posSpec = this.specs.find((s) => s.role === 'positions');
    const emb = b.t('emb', [B, Tin, d], rs, 'activation', true);
    b.op('embedding', 'embedding', 'forward', -1, [ids, [tok.w, B * Tin * d * 4]], [emb], 0, 0, this.sem({ fn: 'embed', table: tok.w, ids, out: emb }));
    let x = emb;
    if (K > 1) {
      x = b.t('patch_emb', [B, T, d], rs, 'activation', true);
      b.op('patch-average', 'patch-average', 'forward', -1, [emb], [x], B * Tin * d, 0, this.sem({ fn: 'patch-mean', k: K, x: emb, out: x }));
    }
    if (!posSpec) return x;
    const pos = this.p(posSpec.name);
    const h0 = this.A('h0', d, rs);
    b.op('add positions', 'elementwise', 'forward', -1, [x, [pos.w, T * d * 4]], [h0], BT * d, 0, this.sem({ fn: 'add-positions', x, pos: pos.w, out: h0 }));
    return h0;
  }

  /** One pre-LN block: LN -> qkv -> (rotary) -> causal attention -> proj -> residual -> LN -> fc -> GELU -> proj -> residual. */
  blockForward(i: number, hcur: string): { out: string; saved: SavedBlock } {
    const { b, B, T, BT, d, dff, h, hd, rs, causal } = this;
    const P = this.blockParams(i);
    const n = (s: string) => `L${i}.${s}`;
    const a1 = this.A(n('ln1'), d, rs), s1 = b.t(n('ln1.stats'), [BT, 2], 'fp32', 'activation', true);
    this.ln(n('ln1'), i, hcur, P.ln1.gain, P.ln1.bias, a1, s1);
    const a1c = this.castTo(a1, 'bf16', n('ln1.bf16'), 'forward', i);
    let qkv = this.A(n('qkv'), 3 * d);
    this.linear(n('qkv'), i, a1c, P.qkv.weight, P.qkv.bias, qkv);
    if (this.model.positions === 'rotary') {
      const r = this.A(n('qkv.rope'), 3 * d);
      b.op(n('rotary'), 'elementwise', 'forward', i, [qkv], [r], 6 * BT * d, 0, this.sem({ fn: 'rotary', x: qkv, out: r, inverse: false }));
      qkv = r;
    }
    const att = this.A(n('attn'), d), lse = b.t(n('attn.lse'), [B, h, T], 'fp32', 'activation', true);
    b.op(n('attention'), 'attention', 'forward', i, [qkv], [att, lse], (4 * B * T * T * d + 5 * B * h * T * T) * causal, 4 * B * T * T * d * causal, {
      gemm: { m: T, n: hd, k: T, batch: B * h }, ...this.sem({ fn: 'attention', qkv, out: att, lse }),
    });
    const p1 = this.A(n('proj'), d);
    this.linear(n('proj'), i, att, P.out.weight, P.out.bias, p1);
    const h1 = this.A(n('h1'), d, rs);
    b.op(n('residual1'), 'elementwise', 'forward', i, [hcur, p1], [h1], BT * d, 0, this.sem({ fn: 'add', a: hcur, b: p1, out: h1 }));
    const m = this.A(n('ln2'), d, rs), s2 = b.t(n('ln2.stats'), [BT, 2], 'fp32', 'activation', true);
    this.ln(n('ln2'), i, h1, P.ln2.gain, P.ln2.bias, m, s2);
    const mc = this.castTo(m, 'bf16', n('ln2.bf16'), 'forward', i);
    const f = this.A(n('fc'), dff);
    this.linear(n('fc'), i, mc, P.fc.weight, P.fc.bias, f);
    const g = this.A(n('gelu'), dff);
    b.op(n('gelu'), 'elementwise', 'forward', i, [f], [g], 8 * BT * dff, 0, this.sem({ fn: 'gelu', x: f, out: g }));
    const p2 = this.A(n('mlp.proj'), d);
    this.linear(n('mlp.proj'), i, g, P.proj.weight, P.proj.bias, p2);
    const h2 = this.A(n('h2'), d, rs);
    b.op(n('residual2'), 'elementwise', 'forward', i, [h1, p2], [h2], BT * d, 0, this.sem({ fn: 'add', a: h1, b: p2, out: h2 }));
    return { out: h2, saved: { h: hcur, a1: a1c, s1, qkv, att, lse, h1, m: mc, s2, f, g } };
  }

  /** The graph's parameters of block i, by role (from the model description). */
  blockParams(i: number) {
    const s = blockSpecs(this.specs, i);
    const pair = <K extends string>(x: Record<K, ParamSpec>) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, this.p((v as ParamSpec).name)])) as Record<K, Param>;
    return { ln1: pair(s.ln1), qkv: pair(s.qkv), out: pair(s.out), ln2: pair(s.ln2), fc: pair(s.fc), proj: pair(s.proj) };
  }

  // ---- backward ----

  /** Backward of one block, from the gradient of its output; returns the gradient of its input. */
  blockBackward(i: number, S: SavedBlock, dh: string): string {
    const { b, B, T, BT, d, dff, h, hd, rs, causal, autocast, eager, act } = this;
    const P = this.blockParams(i);
    const n = (s: string) => `L${i}.${s}`;
    // autocast: the fp32 residual add passes its gradient to the bf16 branch through a cast
    const dp2 = this.castTo(dh, 'bf16', n('d.mlp.proj'), 'backward', i);
    const dg = this.A(n('d.gelu'), dff);
    this.linearBwd(n('mlp.proj'), i, S.g, P.proj.weight, P.proj.bias, dp2, dg);
    const df = this.A(n('d.fc'), dff);
    b.op(n('gelu bwd'), 'elementwise', 'backward', i, [dg, S.f], [df], 16 * BT * dff, 0, this.sem({ fn: 'gelu-grad', dy: dg, x: S.f, out: df }));
    const dmC = this.A(autocast ? n('d.ln2.bf16') : n('d.ln2'), d);
    this.linearBwd(n('fc'), i, S.m, P.fc.weight, P.fc.bias, df, dmC);
    const dm = this.castTo(dmC, 'fp32', n('d.ln2'), 'backward', i);
    const dh1a = this.A(n('d.h1.ln2'), d, rs);
    this.lnBwd(n('ln2'), i, dm, S.h1, S.s2, P.ln2.gain, P.ln2.bias, dh1a);
    const dh1 = this.A(n('d.h1'), d, rs);
    b.op(n('residual1 bwd'), 'elementwise', 'backward', i, [dh, dh1a], [dh1], BT * d, 0, this.sem({ fn: 'add', a: dh, b: dh1a, out: dh1 }));
    const dp1 = this.castTo(dh1, 'bf16', n('d.proj'), 'backward', i);
    const datt = this.A(n('d.attn'), d);
    this.linearBwd(n('proj'), i, S.att, P.out.weight, P.out.bias, dp1, datt);
    let dqkv = this.A(n('d.qkv'), 3 * d);
    const attBwdFlops = (10 * B * T * T * d + 4 * B * h * T * T) * causal, attBwdMm = 10 * B * T * T * d * causal;
    const attGemm = { gemm: { m: T, n: hd, k: T, batch: B * h } };
    if (!eager) {
      b.op(n('attention bwd'), 'attention', 'backward', i, [S.qkv, S.att, S.lse, datt], [dqkv], attBwdFlops, attBwdMm, {
        ...attGemm, ...this.sem({ fn: 'attention-grad', qkv: S.qkv, out: S.att, lse: S.lse, dout: datt, dqkv }),
      });
    } else {
      const delta = b.t(n('attn.delta'), [B, h, T], 'fp32', 'activation', true);
      const dq = this.A(n('d.q'), d), dk = this.A(n('d.k'), d), dv = this.A(n('d.v'), d);
      if (act === 'bf16') {
        // flash path (cuDNN on sm90): delta = rowsum(dO·O); dq accumulated in fp32, then converted
        b.op(n('attention bwd delta'), 'attention', 'backward', i, [datt, S.att], [delta], 2 * BT * d);
        const dqAcc = this.A(n('d.q.fp32'), d, 'fp32');
        b.op(n('attention bwd'), 'attention', 'backward', i, [S.qkv, S.att, S.lse, datt, delta], [dqAcc, dk, dv], attBwdFlops, attBwdMm, attGemm);
        b.op(n('attention bwd convert dq'), 'attention', 'backward', i, [dqAcc], [dq], BT * d);
      } else {
        // memory-efficient path (fp32 inputs): delta by two ATen kernels, (dO * O) then a row sum
        const prod = this.A(n('attn.dO*O'), d);
        b.op(n('attention bwd delta mul'), 'attention', 'backward', i, [datt, S.att], [prod], BT * d);
        b.op(n('attention bwd delta sum'), 'attention', 'backward', i, [prod], [delta], BT * d);
        b.op(n('attention bwd'), 'attention', 'backward', i, [S.qkv, S.att, S.lse, datt, delta], [dq, dk, dv], attBwdFlops, attBwdMm, attGemm);
      }
      // backward of qkv.split(d) + the head view/transpose: one cat of dq, dk, dv into [BT, 3d]
      b.op(n('qkv split bwd'), 'elementwise', 'backward', i, [dq, dk, dv], [dqkv], 0);
    }
    if (this.model.positions === 'rotary') {
      const r = this.A(n('d.qkv.rope'), 3 * d);
      b.op(n('rotary bwd'), 'elementwise', 'backward', i, [dqkv], [r], 6 * BT * d, 0, this.sem({ fn: 'rotary', x: dqkv, out: r, inverse: true }));
      dqkv = r;
    }
    const da1C = this.A(autocast ? n('d.ln1.bf16') : n('d.ln1'), d);
    this.linearBwd(n('qkv'), i, S.a1, P.qkv.weight, P.qkv.bias, dqkv, da1C);
    const da1 = this.castTo(da1C, 'fp32', n('d.ln1'), 'backward', i);
    const dha = this.A(n('d.h.ln1'), d, rs);
    this.lnBwd(n('ln1'), i, da1, S.h, S.s1, P.ln1.gain, P.ln1.bias, dha);
    const dhn = this.A(n('d.h'), d, rs);
    b.op(n('residual0 bwd'), 'elementwise', 'backward', i, [dh1, dha], [dhn], BT * d, 0, this.sem({ fn: 'add', a: dh1, b: dha, out: dhn }));
    return dhn;
  }
}

/** A tensor id of a Ref. */
function refId(r: Ref): string {
  return typeof r === 'string' ? r : r[0];
}

export function buildStepGraph(model: GptShape, opts: GraphOptions): StepGraph {
  const B = checkInt('batch', opts.batch, 1);
  const T = checkInt('seq', opts.seqLen ?? model.seqLen, 1);
  const K = checkInt('patchSize', opts.patchSize ?? 1, 1);
  const accum = checkInt('gradAccum', opts.gradAccum ?? 1, 1);
  if (T > model.seqLen && model.positions === 'learned') throw new ConfigError(`seq ${T} exceeds model.seqLen ${model.seqLen} (learned positions)`);
  const prec: Precision = opts.precision ?? 'bf16';
  if (!['fp32', 'tf32', 'bf16'].includes(prec)) throw new ConfigError(`precision must be fp32, tf32 or bf16, got ${JSON.stringify(prec)}`);
  const pattern: SparsityPattern = (opts.sparsity ?? 0) === 0 && !opts.sparsityPattern?.startsWith('nm:') ? { kind: 'dense' } : parsePattern(opts.sparsityPattern);
  const rho = densityOf(opts.sparsity, pattern);
  const eager = opts.eager ?? false;
  const sb = new StepBuilder(model, prec, eager, pattern, rho, B, T, K);
  const b = sb.b;
  const { BT, d, V, L, rs, autocast } = sb;

  // ---- parameters: master weight, optional compute copy, gradient, moments (the model description's order) ----
  for (const spec of sb.specs) sb.addParam(spec);
  const tok = sb.p(sb.specs.find((s) => s.role === 'embedding')!.name);
  const posSpec = sb.specs.find((s) => s.role === 'positions');
  const lnf = { gain: sb.p('ln_f.weight'), bias: sb.p('ln_f.bias') };
  const head = headMatrix(sb.specs);
  const untiedHead = head.transposed ? undefined : sb.p(head.spec.name);

  // ---- forward ----
  const ids = b.t('ids', [B, sb.Tin], 'int32', 'input', true);
  const labels = b.t('labels', [BT, K], 'int32', 'input', true);
  let hcur = sb.embedForward(ids);
  const saved: SavedBlock[] = [];
  for (let i = 0; i < L; i++) {
    const r = sb.blockForward(i, hcur);
    saved.push(r.saved);
    hcur = r.out;
  }
  const fOut = sb.A('ln_f', d, rs), sf = b.t('ln_f.stats', [BT, 2], 'fp32', 'activation', true);
  sb.ln('ln_f', L, hcur, lnf.gain, lnf.bias, fOut, sf);
  const fOutC = sb.castTo(fOut, 'bf16', 'ln_f.bf16', 'forward', L);
  const logits = sb.A('logits', V);
  const hp = untiedHead ?? tok;
  const headMm = 2 * BT * d * V;
  const headW = sb.mmWeight(hp, L);
  b.op('lm head', 'matmul', 'forward', L, [fOutC, ...headW], [logits], headMm, headMm, {
    gemm: { m: BT, n: V, k: d, batch: 1 }, ...sb.sem({ fn: 'matmul', a: fOutC, b: refId(headW[0]!), transA: false, transB: head.transposed, out: logits, param: hp.name }),
  });
  const loss = b.t('loss', [1], 'fp32', 'scalar', false);
  let lseLoss = '', logp = '';
  if (!eager) {
    lseLoss = b.t('loss.lse', [BT], 'fp32', 'activation', true);
    b.op('cross-entropy', 'loss', 'forward', L, [logits, labels], [loss, lseLoss], 4 * BT * V + K * BT, 0, sb.sem({ fn: 'xent', logits, labels, loss, lse: lseLoss }));
  } else {
    // F.cross_entropy(logits.float()) in eager: (cast to fp32 under autocast), log_softmax with three passes over its input, nll_loss gathering K·BT values
    const l32 = sb.castTo(logits, 'fp32', 'logits.fp32', 'forward', L);
    logp = sb.A('logp', V, 'fp32');
    b.op('log-softmax', 'loss', 'forward', L, [[l32, 3 * b.tensors.get(l32)!.bytes]], [logp], 4 * BT * V);
    b.op('nll-loss', 'loss', 'forward', L, [[logp, K * BT * 4], labels], [loss], K * BT);
  }

  // ---- backward ----
  let dlogits: string;
  if (!eager) {
    dlogits = sb.A('d.logits', V);
    b.op('cross-entropy bwd', 'loss', 'backward', L, [logits, lseLoss, labels], [dlogits], 3 * BT * V + K * BT, 0, sb.sem({ fn: 'xent-grad', logits, lse: lseLoss, labels, out: dlogits }));
  } else {
    const dlogp = sb.A('d.logp', V, 'fp32');
    // nll_loss backward: fills a zero [BT, V] fp32 gradient and scatters -1/N at the labels (two kernels, one op here)
    b.op('nll-loss bwd', 'loss', 'backward', L, [labels], [dlogp], K * BT);
    const dl32 = sb.A(autocast ? 'd.logits.fp32' : 'd.logits', V, autocast ? 'fp32' : sb.act);
    // log_softmax backward: row sum of the incoming gradient, then a pass reading it again with the output
    b.op('log-softmax bwd', 'loss', 'backward', L, [[dlogp, 2 * b.tensors.get(dlogp)!.bytes], logp], [dl32], 3 * BT * V);
    dlogits = sb.castTo(dl32, 'bf16', 'd.logits', 'backward', L);
  }
  const dfOutC = sb.A(autocast ? 'd.ln_f.bf16' : 'd.ln_f', d);
  const headG = untiedHead ? untiedHead.g : b.t('G:tok_emb.weight.head', [V, d], 'fp32', 'gradient', false);
  const headWb = sb.mmWeight(hp, L);
  b.op('lm head dX', 'matmul', 'backward', L, [dlogits, ...headWb], [dfOutC], headMm, headMm, {
    gemm: { m: BT, n: d, k: V, batch: 1 }, ...sb.sem({ fn: 'matmul', a: dlogits, b: refId(headWb[0]!), transA: false, transB: !head.transposed, out: dfOutC, param: hp.name }),
  });
  // dW of the head: [d, V] = fᵀ·dlogits (untied), or the tied embedding's [V, d] = dlogitsᵀ·f
  sb.gradOut(headG, V * d, L, (gId) =>
    b.op('lm head dW', 'matmul', 'backward', L, [dlogits, fOutC], [gId], headMm, headMm, {
      gemm: { m: V, n: d, k: BT, batch: 1 },
      ...sb.sem(head.transposed ? { fn: 'matmul', a: dlogits, b: fOutC, transA: true, transB: false, out: gId, param: hp.name } : { fn: 'matmul', a: fOutC, b: dlogits, transA: true, transB: false, out: gId, param: hp.name }),
    }),
  );
  const dfOut = sb.castTo(dfOutC, 'fp32', 'd.ln_f', 'backward', L);
  let dh = sb.A('d.h_out', d, rs);
  sb.lnBwd('ln_f', L, dfOut, hcur, sf, lnf.gain, lnf.bias, dh);
  for (let i = L - 1; i >= 0; i--) dh = sb.blockBackward(i, saved[i]!, dh);
  if (posSpec) {
    const pos = sb.p(posSpec.name);
    b.op('positions bwd', 'reduce', 'backward', -1, [dh], [[pos.g, T * d * 4]], BT * d, 0, sb.sem({ fn: 'positions-grad', dy: dh, out: pos.g }));
  }
  let demb = dh;
  if (K > 1) {
    demb = b.t('d.emb', [B, sb.Tin, d], rs, 'activation', true);
    b.op('patch-average bwd', 'patch-average', 'backward', -1, [dh], [demb], B * sb.Tin * d, 0, sb.sem({ fn: 'patch-mean-grad', k: K, dy: dh, out: demb }));
  }
  const rows = B * sb.Tin * d * 4;
  if (!eager) {
    b.op('embedding bwd', 'embedding', 'backward', -1, [demb, ids, ...(untiedHead ? [] : [[headG, rows] as Ref])], [[tok.g, untiedHead ? V * d * 4 + rows : rows]], B * sb.Tin * d, 0, {
      sem: { fn: 'embed-grad', ids, dy: demb, out: tok.g, ...(untiedHead ? {} : { add: headG }) },
    });
  } else {
    // embedding_dense_backward: a zero [V, d] fp32 gradient, then the gathered rows scattered into it; tied: AccumulateGrad adds the head's gradient
    const gEmb = untiedHead ? tok.g : b.t('G:tok_emb.weight.emb', [V, d], 'fp32', 'gradient', false);
    b.op('embedding bwd', 'embedding', 'backward', -1, [demb, ids], [[gEmb, V * d * 4 + rows]], B * sb.Tin * d);
    if (!untiedHead) b.op('tied gradient accumulate', 'elementwise', 'backward', -1, [headG, gEmb], [tok.g], V * d, 0, { tiled: false });
  }

  // ---- optimizer: global-norm clipping, AdamW ----
  const all = [...sb.params.values()];
  const norm = b.t('grad-norm', [1], 'fp32', 'scalar', false);
  const keptTotal = all.reduce((s, p) => s + p.kept, 0);
  b.op('clip grad-norm', 'reduce', 'optimizer', null, all.map((p) => p.g), [norm], 2 * keptTotal, 0, { tiled: false, ...sb.sem({ fn: 'grad-norm', grads: all.map((p) => p.g), out: norm }) });
  // AdamW updates W, M, V in place: modelled as reads of the old values and writes of new versions.
  const newT = (p: Param, k: 'w' | 'm' | 'v') => {
    const old = b.tensors.get(p[k])!;
    return b.t(`${p[k]}'`, old.shape, old.dtype, old.role, false, old.bytes);
  };
  const upd = all.flatMap((p) => [newT(p, 'w'), newT(p, 'm'), newT(p, 'v')]);
  b.op('adamw', 'optimizer', 'optimizer', null, [...all.flatMap((p) => [p.w, p.g, p.m, p.v]), norm], upd, 14 * keptTotal, 0, {
    tiled: false,
    ...sb.sem({ fn: 'adamw', params: all.map((p) => ({ name: p.name, w: p.w, g: p.g, m: p.m, v: p.v, decay: p.spec.decay, masked: p.masked })), norm }),
  });

  const ops = b.ops;
  const executedFlops = ops.reduce((s, o) => s + o.flops * (o.phase === 'optimizer' ? 1 : accum), 0);
  const nParams = parameterCount(model);
  const matmulParams = L * (3 * d * d + d * d + 2 * d * sb.dff) + d * V;
  const modelFlops = accum * 3 * BT * (2 * matmulParams + L * 4 * T * d);
  return {
    meta: {
      model, batch: B, gradAccum: accum, positions: T, tokensPerRow: sb.Tin, patchSize: K, precision: prec, eager, sparsity: 1 - rho, sparsityPattern: patternName(pattern),
      parameters: nParams, keptParameters: keptTotal, modelFlops, executedFlops,
    },
    tensors: [...b.tensors.values()],
    ops,
  };
}

/** Bytes alive at the peak (lifetimes from producer to last consumer; tensors without a producer live all step). */
export function memoryProfile(g: StepGraph): { persistentBytes: number; peakBytes: number; peakOp: string; savedActivationBytes: number } {
  const freeAt = new Map<number, number>();
  let live = 0;
  let persistent = 0;
  const allocAt = new Map<number, number>();
  let saved = 0;
  const firstBwd = g.ops.find((o) => o.phase !== 'forward')?.index ?? g.ops.length;
  for (const t of g.tensors) {
    if (t.producer === null) {
      persistent += t.bytes;
      continue;
    }
    // in-place update results (W', M', V') replace their inputs: not extra memory
    if (t.id.endsWith("'")) continue;
    allocAt.set(t.producer, (allocAt.get(t.producer) ?? 0) + t.bytes);
    const last = t.consumers.length ? t.consumers[t.consumers.length - 1]! : t.producer;
    freeAt.set(last, (freeAt.get(last) ?? 0) + t.bytes);
    if (t.role === 'activation' && t.producer < firstBwd && last >= firstBwd) saved += t.bytes;
  }
  let peak = 0;
  let peakOp = '';
  for (const o of g.ops) {
    live += allocAt.get(o.index) ?? 0;
    if (live > peak) {
      peak = live;
      peakOp = o.id;
    }
    live -= freeAt.get(o.index) ?? 0;
  }
  return { persistentBytes: persistent, peakBytes: persistent + peak, peakOp, savedActivationBytes: saved };
}
