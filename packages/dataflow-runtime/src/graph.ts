/**
 * The op graph of one training step of @patchflow/trainer's GPT (model.ts): embedding (+ patch averaging
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
import type { GptShape } from './model.js';
import { ConfigError, parameterCount } from './model.js';
import { DTYPE_BYTES, type Access, type DType, type OpKind, type OpSpec, type Phase, type Precision, type StepGraph, type TensorRole, type TensorSpec } from './types.js';
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
  const sparse = rho < 1;

  const d = model.dModel, dff = model.dFF, V = model.vocabSize, h = model.nHead, hd = d / h, L = model.nLayer;
  const BT = B * T, Tin = K * T;
  const act: DType = prec === 'bf16' ? 'bf16' : prec;
  const wc: DType = prec === 'bf16' ? 'bf16' : prec;
  const b = new Builder();
  const causal = (T + 1) / (2 * T);
  const eager = opts.eager ?? false;
  /** Eager bf16 autocast: residual stream, embeddings and LayerNorm in fp32, casts around each bf16 matmul. */
  const autocast = eager && prec === 'bf16';
  const rs: DType = autocast ? 'fp32' : act;

  // ---- parameters: master weight, optional compute copy, gradient, moments ----
  interface Param { name: string; rows: number; cols: number; masked: boolean; kept: number; w: string; idx?: string; wcId?: string; g: string; m: string; v: string }
  const params = new Map<string, Param>();
  const addParam = (name: string, shape: number[], masked: boolean) => {
    const rows = shape[0]!, cols = shape[1] ?? 1;
    const n = rows * cols;
    const dens = masked ? rho : 1;
    const kept = Math.round(n * dens);
    const p: Param = {
      name, rows, cols, masked: masked && sparse, kept,
      w: b.t(`W:${name}`, shape, 'fp32', 'weight', false, kept * 4),
      g: b.t(`G:${name}`, shape, 'fp32', 'gradient', false, kept * 4),
      m: b.t(`M:${name}`, shape, 'fp32', 'optimizer-state', false, kept * 4),
      v: b.t(`V:${name}`, shape, 'fp32', 'optimizer-state', false, kept * 4),
    };
    if (masked && sparse) {
      const ib = indexBytes(rows, cols, rho, pattern);
      p.idx = b.t(`I:${name}`, shape, pattern.kind === 'nm' ? 'uint8' : 'int32', 'sparse-index', false, ib);
    }
    const isMatmulWeight = masked || (name === 'tok_emb.weight' && model.tiedEmbeddings) || name === 'lm_head.weight';
    if (prec === 'bf16' && isMatmulWeight) p.wcId = b.t(`Wc:${name}`, shape, 'bf16', 'weight-compute', false, kept * 2);
    params.set(name, p);
    return p;
  };
  const tok = addParam('tok_emb.weight', [V, d], false);
  const pos = model.positions === 'learned' ? addParam('pos_emb.weight', [model.seqLen, d], false) : undefined;
  const blocks = [] as Record<string, Param>[];
  for (let i = 0; i < L; i++) {
    const p = `blocks.${i}.`;
    blocks.push({
      ln1w: addParam(p + 'ln1.weight', [d], false), ln1b: addParam(p + 'ln1.bias', [d], false),
      qkv: addParam(p + 'attn.qkv.weight', [d, 3 * d], true), qkvb: addParam(p + 'attn.qkv.bias', [3 * d], false),
      proj: addParam(p + 'attn.proj.weight', [d, d], true), projb: addParam(p + 'attn.proj.bias', [d], false),
      ln2w: addParam(p + 'ln2.weight', [d], false), ln2b: addParam(p + 'ln2.bias', [d], false),
      fc: addParam(p + 'mlp.fc.weight', [d, dff], true), fcb: addParam(p + 'mlp.fc.bias', [dff], false),
      pr2: addParam(p + 'mlp.proj.weight', [dff, d], true), pr2b: addParam(p + 'mlp.proj.bias', [d], false),
    });
  }
  const lnfw = addParam('ln_f.weight', [d], false), lnfb = addParam('ln_f.bias', [d], false);
  const head = model.tiedEmbeddings ? undefined : addParam('lm_head.weight', [d, V], false);

  const A = (id: string, cols: number, dtype: DType = act) => b.t(id, [BT, cols], dtype, 'activation', true);
  /** The weight a matmul reads: the bf16 copy (cast once per step, before first use) or the master. */
  const mmWeight = (p: Param, layer: number): Ref[] => {
    const refs: Ref[] = [];
    if (p.wcId) {
      const t = b.tensors.get(p.wcId)!;
      if (t.producer === null) b.op(`cast ${p.name}`, 'cast', 'forward', layer, [p.w], [p.wcId], p.kept, 0, { tiled: false });
      refs.push(p.wcId);
    } else refs.push(p.w);
    if (p.idx) refs.push(p.idx);
    return refs;
  };
  const sparseOf = (p: Param) => (p.masked ? { sparse: { density: rho, pattern: patternName(pattern) } } : {});
  /** Eager autocast: a cast op of one tensor to `dtype` (1 FLOP per element); otherwise the tensor itself. */
  const castTo = (x: string, dtype: DType, id: string, phase: Phase, layer: number | null, tiled = true): string => {
    const t = b.tensors.get(x)!;
    if (!autocast || t.dtype === dtype) return x;
    const y = b.t(id, t.shape, dtype, t.role === 'weight' ? 'weight-compute' : t.role, t.perRow, (t.bytes / DTYPE_BYTES[t.dtype]) * DTYPE_BYTES[dtype]);
    b.op(`cast ${id}`, 'cast', phase, layer, [x], [y], t.bytes / DTYPE_BYTES[t.dtype], 0, { tiled });
    return y;
  };
  /** The bias a matmul reads: eager autocast casts it to bf16 like the weight (once per step). */
  const mmBias = (bias: Param, layer: number): string => castTo(bias.w, 'bf16', `Bc:${bias.name}`, 'forward', layer, false);
  /** A parameter gradient produced in bf16 under eager autocast and cast to the fp32 master's dtype (or written directly). */
  const gradOut = (gId: string, elements: number, layer: number, write: (g: string) => void) => {
    if (!autocast) return write(gId);
    const t = b.tensors.get(gId)!;
    const gc = b.t(`${gId}.bf16`, t.shape, 'bf16', 'gradient', false, t.bytes / 2);
    write(gc);
    b.op(`cast ${gId}`, 'cast', 'backward', layer, [gc], [gId], elements, 0, { tiled: false });
  };

  /** Y[BT,n] = X[BT,k]·W[k,n] + bias. */
  const linear = (name: string, layer: number, x: string, p: Param, bias: Param, y: string) => {
    const mm = 2 * BT * p.rows * p.cols * (p.masked ? rho : 1);
    const w = mmWeight(p, layer);
    const bw = mmBias(bias, layer);
    b.op(name, 'matmul', 'forward', layer, [x, ...w, bw], [y], mm + BT * p.cols, mm, { gemm: { m: BT, n: p.cols, k: p.rows, batch: 1 }, ...sparseOf(p) });
  };
  /** dX = dY·Wᵀ, dW = Xᵀ·dY (kept positions only), db = Σ dY. */
  const linearBwd = (name: string, layer: number, x: string, p: Param, bias: Param, dy: string, dx: string | null) => {
    const mm = 2 * BT * p.rows * p.cols * (p.masked ? rho : 1);
    if (dx) b.op(`${name} dX`, 'matmul', 'backward', layer, [dy, ...mmWeight(p, layer)], [dx], mm, mm, { gemm: { m: BT, n: p.rows, k: p.cols, batch: 1 }, ...sparseOf(p) });
    gradOut(p.g, p.kept, layer, (g) => b.op(`${name} dW`, 'matmul', 'backward', layer, [x, dy, ...(p.idx ? [p.idx] : [])], [g], mm, mm, { gemm: { m: p.rows, n: p.cols, k: BT, batch: 1 }, ...sparseOf(p) }));
    gradOut(bias.g, bias.kept, layer, (g) => b.op(`${name} db`, 'reduce', 'backward', layer, [dy], [g], BT * p.cols));
  };
  const ln = (name: string, layer: number, x: string, w: Param, bb: Param, y: string, stats: string) =>
    b.op(name, 'layernorm', 'forward', layer, [x, w.w, bb.w], [y, stats], 8 * BT * d);
  /** LayerNorm backward: one fused op, or eager's two kernels (grad-input 12 FLOPs/element; gamma/beta 4), each reading dy and x. */
  const lnBwd = (name: string, layer: number, dy: string, x: string, stats: string, w: Param, bb: Param, dx: string) => {
    if (!eager) return b.op(`${name} bwd`, 'layernorm', 'backward', layer, [dy, x, stats, w.w], [dx, w.g, bb.g], 16 * BT * d);
    b.op(`${name} bwd dX`, 'layernorm', 'backward', layer, [dy, x, stats, w.w], [dx], 12 * BT * d);
    return b.op(`${name} bwd dW`, 'layernorm', 'backward', layer, [dy, x, stats], [w.g, bb.g], 4 * BT * d);
  };

  // ---- forward ----
  const ids = b.t('ids', [B, Tin], 'int32', 'input', true);
  const labels = b.t('labels', [BT, K], 'int32', 'input', true);
  const emb = b.t('emb', [B, Tin, d], rs, 'activation', true);
  b.op('embedding', 'embedding', 'forward', -1, [ids, [tok.w, B * Tin * d * 4]], [emb], 0);
  let x = emb;
  if (K > 1) {
    x = b.t('patch_emb', [B, T, d], rs, 'activation', true);
    b.op('patch-average', 'patch-average', 'forward', -1, [emb], [x], B * Tin * d);
  }
  let hcur = x;
  if (pos) {
    hcur = A('h0', d, rs);
    b.op('add positions', 'elementwise', 'forward', -1, [x, [pos.w, T * d * 4]], [hcur], BT * d);
  }
  const saved: { h: string; a1: string; s1: string; qkv: string; att: string; lse: string; h1: string; m: string; s2: string; f: string; g: string }[] = [];
  for (let i = 0; i < L; i++) {
    const P = blocks[i]!;
    const n = (s: string) => `L${i}.${s}`;
    const a1 = A(n('ln1'), d, rs), s1 = b.t(n('ln1.stats'), [BT, 2], 'fp32', 'activation', true);
    ln(n('ln1'), i, hcur, P.ln1w!, P.ln1b!, a1, s1);
    const a1c = castTo(a1, 'bf16', n('ln1.bf16'), 'forward', i);
    let qkv = A(n('qkv'), 3 * d);
    linear(n('qkv'), i, a1c, P.qkv!, P.qkvb!, qkv);
    if (model.positions === 'rotary') {
      const r = A(n('qkv.rope'), 3 * d);
      b.op(n('rotary'), 'elementwise', 'forward', i, [qkv], [r], 6 * BT * d);
      qkv = r;
    }
    const att = A(n('attn'), d), lse = b.t(n('attn.lse'), [B, h, T], 'fp32', 'activation', true);
    b.op(n('attention'), 'attention', 'forward', i, [qkv], [att, lse], (4 * B * T * T * d + 5 * B * h * T * T) * causal, 4 * B * T * T * d * causal, { gemm: { m: T, n: hd, k: T, batch: B * h } });
    const p1 = A(n('proj'), d);
    linear(n('proj'), i, att, P.proj!, P.projb!, p1);
    const h1 = A(n('h1'), d, rs);
    b.op(n('residual1'), 'elementwise', 'forward', i, [hcur, p1], [h1], BT * d);
    const m = A(n('ln2'), d, rs), s2 = b.t(n('ln2.stats'), [BT, 2], 'fp32', 'activation', true);
    ln(n('ln2'), i, h1, P.ln2w!, P.ln2b!, m, s2);
    const mc = castTo(m, 'bf16', n('ln2.bf16'), 'forward', i);
    const f = A(n('fc'), dff);
    linear(n('fc'), i, mc, P.fc!, P.fcb!, f);
    const g = A(n('gelu'), dff);
    b.op(n('gelu'), 'elementwise', 'forward', i, [f], [g], 8 * BT * dff);
    const p2 = A(n('mlp.proj'), d);
    linear(n('mlp.proj'), i, g, P.pr2!, P.pr2b!, p2);
    const h2 = A(n('h2'), d, rs);
    b.op(n('residual2'), 'elementwise', 'forward', i, [h1, p2], [h2], BT * d);
    saved.push({ h: hcur, a1: a1c, s1, qkv, att, lse, h1, m: mc, s2, f, g });
    hcur = h2;
  }
  const fOut = A('ln_f', d, rs), sf = b.t('ln_f.stats', [BT, 2], 'fp32', 'activation', true);
  ln('ln_f', L, hcur, lnfw, lnfb, fOut, sf);
  const fOutC = castTo(fOut, 'bf16', 'ln_f.bf16', 'forward', L);
  const logits = A('logits', V);
  const hp = head ?? tok;
  const headMm = 2 * BT * d * V;
  b.op('lm head', 'matmul', 'forward', L, [fOutC, ...mmWeight(hp, L)], [logits], headMm, headMm, { gemm: { m: BT, n: V, k: d, batch: 1 } });
  const loss = b.t('loss', [1], 'fp32', 'scalar', false);
  let lseLoss = '', logp = '';
  if (!eager) {
    lseLoss = b.t('loss.lse', [BT], 'fp32', 'activation', true);
    b.op('cross-entropy', 'loss', 'forward', L, [logits, labels], [loss, lseLoss], 4 * BT * V + K * BT);
  } else {
    // F.cross_entropy(logits.float()) in eager: (cast to fp32 under autocast), log_softmax with three passes over its input, nll_loss gathering K·BT values
    const l32 = castTo(logits, 'fp32', 'logits.fp32', 'forward', L);
    logp = A('logp', V, 'fp32');
    b.op('log-softmax', 'loss', 'forward', L, [[l32, 3 * b.tensors.get(l32)!.bytes]], [logp], 4 * BT * V);
    b.op('nll-loss', 'loss', 'forward', L, [[logp, K * BT * 4], labels], [loss], K * BT);
  }

  // ---- backward ----
  let dlogits: string;
  if (!eager) {
    dlogits = A('d.logits', V);
    b.op('cross-entropy bwd', 'loss', 'backward', L, [logits, lseLoss, labels], [dlogits], 3 * BT * V + K * BT);
  } else {
    const dlogp = A('d.logp', V, 'fp32');
    // nll_loss backward: fills a zero [BT, V] fp32 gradient and scatters -1/N at the labels (two kernels, one op here)
    b.op('nll-loss bwd', 'loss', 'backward', L, [labels], [dlogp], K * BT);
    const dl32 = A(autocast ? 'd.logits.fp32' : 'd.logits', V, autocast ? 'fp32' : act);
    // log_softmax backward: row sum of the incoming gradient, then a pass reading it again with the output
    b.op('log-softmax bwd', 'loss', 'backward', L, [[dlogp, 2 * b.tensors.get(dlogp)!.bytes], logp], [dl32], 3 * BT * V);
    dlogits = castTo(dl32, 'bf16', 'd.logits', 'backward', L);
  }
  const dfOutC = A(autocast ? 'd.ln_f.bf16' : 'd.ln_f', d);
  const headG = head ? head.g : b.t('G:tok_emb.weight.head', [V, d], 'fp32', 'gradient', false);
  b.op('lm head dX', 'matmul', 'backward', L, [dlogits, ...mmWeight(hp, L)], [dfOutC], headMm, headMm, { gemm: { m: BT, n: d, k: V, batch: 1 } });
  gradOut(headG, V * d, L, (gId) => b.op('lm head dW', 'matmul', 'backward', L, [dlogits, fOutC], [gId], headMm, headMm, { gemm: { m: V, n: d, k: BT, batch: 1 } }));
  const dfOut = castTo(dfOutC, 'fp32', 'd.ln_f', 'backward', L);
  let dh = A('d.h_out', d, rs);
  lnBwd('ln_f', L, dfOut, hcur, sf, lnfw, lnfb, dh);
  for (let i = L - 1; i >= 0; i--) {
    const P = blocks[i]!, S = saved[i]!;
    const n = (s: string) => `L${i}.${s}`;
    // autocast: the fp32 residual add passes its gradient to the bf16 branch through a cast
    const dp2 = castTo(dh, 'bf16', n('d.mlp.proj'), 'backward', i);
    const dg = A(n('d.gelu'), dff);
    linearBwd(n('mlp.proj'), i, S.g, P.pr2!, P.pr2b!, dp2, dg);
    const df = A(n('d.fc'), dff);
    b.op(n('gelu bwd'), 'elementwise', 'backward', i, [dg, S.f], [df], 16 * BT * dff);
    const dmC = A(autocast ? n('d.ln2.bf16') : n('d.ln2'), d);
    linearBwd(n('fc'), i, S.m, P.fc!, P.fcb!, df, dmC);
    const dm = castTo(dmC, 'fp32', n('d.ln2'), 'backward', i);
    const dh1a = A(n('d.h1.ln2'), d, rs);
    lnBwd(n('ln2'), i, dm, S.h1, S.s2, P.ln2w!, P.ln2b!, dh1a);
    const dh1 = A(n('d.h1'), d, rs);
    b.op(n('residual1 bwd'), 'elementwise', 'backward', i, [dh, dh1a], [dh1], BT * d);
    const dp1 = castTo(dh1, 'bf16', n('d.proj'), 'backward', i);
    const datt = A(n('d.attn'), d);
    linearBwd(n('proj'), i, S.att, P.proj!, P.projb!, dp1, datt);
    let dqkv = A(n('d.qkv'), 3 * d);
    const attBwdFlops = (10 * B * T * T * d + 4 * B * h * T * T) * causal, attBwdMm = 10 * B * T * T * d * causal;
    const attGemm = { gemm: { m: T, n: hd, k: T, batch: B * h } };
    if (!eager) {
      b.op(n('attention bwd'), 'attention', 'backward', i, [S.qkv, S.att, S.lse, datt], [dqkv], attBwdFlops, attBwdMm, attGemm);
    } else {
      const delta = b.t(n('attn.delta'), [B, h, T], 'fp32', 'activation', true);
      const dq = A(n('d.q'), d), dk = A(n('d.k'), d), dv = A(n('d.v'), d);
      if (act === 'bf16') {
        // flash path (cuDNN on sm90): delta = rowsum(dO·O); dq accumulated in fp32, then converted
        b.op(n('attention bwd delta'), 'attention', 'backward', i, [datt, S.att], [delta], 2 * BT * d);
        const dqAcc = A(n('d.q.fp32'), d, 'fp32');
        b.op(n('attention bwd'), 'attention', 'backward', i, [S.qkv, S.att, S.lse, datt, delta], [dqAcc, dk, dv], attBwdFlops, attBwdMm, attGemm);
        b.op(n('attention bwd convert dq'), 'attention', 'backward', i, [dqAcc], [dq], BT * d);
      } else {
        // memory-efficient path (fp32 inputs): delta by two ATen kernels, (dO * O) then a row sum
        const prod = A(n('attn.dO*O'), d);
        b.op(n('attention bwd delta mul'), 'attention', 'backward', i, [datt, S.att], [prod], BT * d);
        b.op(n('attention bwd delta sum'), 'attention', 'backward', i, [prod], [delta], BT * d);
        b.op(n('attention bwd'), 'attention', 'backward', i, [S.qkv, S.att, S.lse, datt, delta], [dq, dk, dv], attBwdFlops, attBwdMm, attGemm);
      }
      // backward of qkv.split(d) + the head view/transpose: one cat of dq, dk, dv into [BT, 3d]
      b.op(n('qkv split bwd'), 'elementwise', 'backward', i, [dq, dk, dv], [dqkv], 0);
    }
    if (model.positions === 'rotary') {
      const r = A(n('d.qkv.rope'), 3 * d);
      b.op(n('rotary bwd'), 'elementwise', 'backward', i, [dqkv], [r], 6 * BT * d);
      dqkv = r;
    }
    const da1C = A(autocast ? n('d.ln1.bf16') : n('d.ln1'), d);
    linearBwd(n('qkv'), i, S.a1, P.qkv!, P.qkvb!, dqkv, da1C);
    const da1 = castTo(da1C, 'fp32', n('d.ln1'), 'backward', i);
    const dha = A(n('d.h.ln1'), d, rs);
    lnBwd(n('ln1'), i, da1, S.h, S.s1, P.ln1w!, P.ln1b!, dha);
    const dhn = A(n('d.h'), d, rs);
    b.op(n('residual0 bwd'), 'elementwise', 'backward', i, [dh1, dha], [dhn], BT * d);
    dh = dhn;
  }
  if (pos) b.op('positions bwd', 'reduce', 'backward', -1, [dh], [[pos.g, T * d * 4]], BT * d);
  let demb = dh;
  if (K > 1) {
    demb = b.t('d.emb', [B, Tin, d], rs, 'activation', true);
    b.op('patch-average bwd', 'patch-average', 'backward', -1, [dh], [demb], B * Tin * d);
  }
  const rows = B * Tin * d * 4;
  if (!eager) {
    b.op('embedding bwd', 'embedding', 'backward', -1, [demb, ids, ...(head ? [] : [[headG, rows] as Ref])], [[tok.g, head ? V * d * 4 + rows : rows]], B * Tin * d);
  } else {
    // embedding_dense_backward: a zero [V, d] fp32 gradient, then the gathered rows scattered into it; tied: AccumulateGrad adds the head's gradient
    const gEmb = head ? tok.g : b.t('G:tok_emb.weight.emb', [V, d], 'fp32', 'gradient', false);
    b.op('embedding bwd', 'embedding', 'backward', -1, [demb, ids], [[gEmb, V * d * 4 + rows]], B * Tin * d);
    if (!head) b.op('tied gradient accumulate', 'elementwise', 'backward', -1, [headG, gEmb], [tok.g], V * d, 0, { tiled: false });
  }

  // ---- optimizer: global-norm clipping, AdamW ----
  const all = [...params.values()];
  const norm = b.t('grad-norm', [1], 'fp32', 'scalar', false);
  const keptTotal = all.reduce((s, p) => s + p.kept, 0);
  b.op('clip grad-norm', 'reduce', 'optimizer', null, all.map((p) => p.g), [norm], 2 * keptTotal, 0, { tiled: false });
  // AdamW updates W, M, V in place: modelled as reads of the old values and writes of new versions.
  const newT = (p: Param, k: 'w' | 'm' | 'v') => {
    const old = b.tensors.get(p[k])!;
    return b.t(`${p[k]}'`, old.shape, old.dtype, old.role, false, old.bytes);
  };
  const upd = all.flatMap((p) => [newT(p, 'w'), newT(p, 'm'), newT(p, 'v')]);
  b.op('adamw', 'optimizer', 'optimizer', null, [...all.flatMap((p) => [p.w, p.g, p.m, p.v]), norm], upd, 14 * keptTotal, 0, { tiled: false });

  const ops = b.ops;
  const executedFlops = ops.reduce((s, o) => s + o.flops * (o.phase === 'optimizer' ? 1 : accum), 0);
  const nParams = parameterCount(model);
  const matmulParams = L * (3 * d * d + d * d + 2 * d * dff) + d * V;
  const modelFlops = accum * 3 * BT * (2 * matmulParams + L * 4 * T * d);
  return {
    meta: {
      model, batch: B, gradAccum: accum, positions: T, tokensPerRow: Tin, patchSize: K, precision: prec, eager, sparsity: 1 - rho, sparsityPattern: patternName(pattern),
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
