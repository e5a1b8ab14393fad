/**
 * Lowering the op graph of a training step (graph.ts, fused and fp32) to an executable schedule for
 * fixed shapes: the kernel calls in order, with the fusions a GPU executor wants, and a memory plan.
 *
 * Fusions (each a peephole over consecutive ops, read from the ops' semantics):
 * - embedding + patch averaging + learned positions -> one `embed` call;
 * - a forward projection + GELU -> a matmul whose epilogue writes both the pre-activation and GELU;
 * - a forward projection + the residual add -> a matmul with a residual epilogue;
 * - rotary + attention -> attention with rotary applied as q and k are read (and its backward maps
 *   the gradients back, so the rotated q, k never exist);
 * - cross-entropy + its gradient -> one call that writes per-row losses and overwrites the logits
 *   with their gradient (no probability tensor is stored);
 * - a dX product + the GELU backward -> a matmul with the GELU-derivative epilogue;
 * - LayerNorm backward + the residual gradient add -> LayerNorm backward accumulating into the
 *   residual gradient in place;
 * - patch-average backward + embedding backward -> one scatter (1/K per use).
 *
 * Memory: weights, gradients and AdamW moments live in four flat buffers, one range per parameter at
 * 64-float (256-byte) aligned offsets; inputs (token ids, labels) in per-micro-batch buffers; every
 * activation in one arena, where a region is reused once the tensor that held it is dead (lifetimes
 * from first write to last read in call order; first-fit by offset). In-place fusions make two graph
 * tensors share one region (an alias). With gradient accumulation the body runs once per micro-batch
 * (grads zeroed first, every gradient write accumulates); the optimizer runs once.
 */
import type { OpSemantics, OpSpec, StepGraph, TensorSpec } from './types.js';

/** Where a tensor lives. */
export type Place =
  | { space: 'param' | 'grad' | 'm' | 'v'; param: string }
  | { space: 'arena'; offset: number; bytes: number }
  | { space: 'ids' | 'labels' }
  | { space: 'loss'; micro: true }
  | { space: 'norm' }
  | { space: 'mask'; param: string };

/** An operand: a graph tensor id (its place is in Schedule.places). */
export type T = string;

export type Call =
  | { op: 'embed'; rows: number; t: number; k: number; d: number; vocab: number; ids: T; table: T; pos?: T; out: T }
  | { op: 'layernorm'; rows: number; cols: number; x: T; gain: T; bias: T; out: T; stats: T }
  | {
      op: 'matmul';
      m: number;
      n: number;
      k: number;
      transA: boolean;
      transB: boolean;
      a: T;
      b: T;
      out: T;
      bias?: T;
      /** GELU epilogue: out = gelu(v), pre = v. */
      gelu?: { pre: T };
      /** out = residual + v. */
      residual?: T;
      /** v ⊙= gelu'(F). */
      geluBackward?: T;
      /** out += v (gradient accumulation). */
      accumulate: boolean;
      /** The weight parameter of a projection (forward, dX) or whose gradient this is (dW). */
      param?: string;
      /** Block-sparse: the weight's b×b block mask (forward, dX, dW over kept blocks only). */
      blockSparse?: { block: number; mask: T; part: 'forward' | 'dx' | 'dw' };
      label: string;
    }
  | { op: 'add'; n: number; a: T; b: T; out: T }
  | { op: 'gelu'; n: number; x: T; out: T }
  | { op: 'gelu-grad'; n: number; dy: T; x: T; out: T }
  | { op: 'attention'; batch: number; t: number; heads: number; headDim: number; rotary: boolean; qkv: T; out: T; lse: T }
  | { op: 'attention-grad'; batch: number; t: number; heads: number; headDim: number; rotary: boolean; qkv: T; out: T; lse: T; dout: T; dqkv: T }
  | { op: 'xent'; rows: number; vocab: number; k: number; smoothing: number; gradScale: number; logits: T; labels: T; rowLoss: T; loss: T; lossScale: number }
  | { op: 'colsum'; m: number; n: number; x: T; out: T; accumulate: boolean }
  | { op: 'layernorm-grad'; rows: number; cols: number; dy: T; x: T; stats: T; gain: T; dx: T; dgain: T; dbias: T; accumulate: boolean; accumulateParams: boolean }
  | { op: 'positions-grad'; rows: number; t: number; d: number; dy: T; out: T; accumulate: boolean }
  | { op: 'embed-grad'; rows: number; t: number; k: number; d: number; vocab: number; dy: T; out: T; accumulate: boolean }
  | { op: 'mask-grad'; param: string; grad: T; mask: T; n: number }
  | { op: 'zero-grads' }
  | { op: 'grad-norm'; clip: number }
  | { op: 'adamw'; masked: string[] };

/** One parameter's range in the flat buffers (elements). */
export interface FlatEntry {
  name: string;
  offset: number;
  size: number;
  shape: number[];
  decay: boolean;
}

export interface LowerOptions {
  /** Gradient-clipping threshold (optim.gradClip; 0 = none). */
  gradClip: number;
  /** Label smoothing ε of the loss (the label-smoothing plugin). */
  labelSmoothing?: number;
  /**
   * Pruned weights: per parameter, 'block' (products on the block-sparse kernels, which need the
   * graph's block pattern) or 'dense' (dense products; gradient masked before the norm, AdamW keeps
   * pruned entries at zero).
   */
  masked?: Record<string, 'block' | 'dense'>;
}

export interface Schedule {
  /** The graph this was lowered from (its meta: shapes, batch, patch size, gradient accumulation). */
  meta: StepGraph['meta'];
  /** Calls before the micro-batches (zeroing gradients when they accumulate). */
  prologue: Call[];
  /** One micro-batch's forward and backward; runs gradAccum times. */
  body: Call[];
  /** Gradient masks, norm and AdamW: once per step. */
  epilogue: Call[];
  places: Record<T, Place>;
  /** Arena bytes (activations). */
  arenaBytes: number;
  flat: FlatEntry[];
  /** Elements of each flat buffer (params, grads, m, v all alike). */
  flatSize: number;
  /** Calls per fused group, for reports: which graph ops each call runs. */
  fusedOps: string[][];
}

const ALIGN = 64;

/** The parameter a W:/G:/M:/V: tensor id names, if any. */
function paramOf(id: string): { space: 'param' | 'grad' | 'm' | 'v'; name: string } | undefined {
  const m = /^([WGMV]):(.+?)'?$/.exec(id);
  if (!m) return undefined;
  return { space: ({ W: 'param', G: 'grad', M: 'm', V: 'v' } as const)[m[1] as 'W' | 'G' | 'M' | 'V'], name: m[2]! };
}

/** Lowers a fused fp32 step graph (buildStepGraph with precision 'fp32', eager false) to a Schedule. */
export function lowerStep(g: StepGraph, opts: LowerOptions): Schedule {
  if (g.meta.eager) throw new Error('lowerStep: the eager graph is a cost model of PyTorch, not a program; lower the fused graph');
  if (g.meta.precision !== 'fp32') throw new Error(`lowerStep: only fp32 graphs are lowered (got ${g.meta.precision})`);
  const ops = g.ops;
  for (const o of ops) if (!o.sem) throw new Error(`lowerStep: op ${o.id} has no semantics`);
  const T = new Map(g.tensors.map((t) => [t.id, t]));
  const { model, batch: B, positions: Tn, patchSize: K, gradAccum } = g.meta;
  const BT = B * Tn;
  const d = model.dModel;
  const accumulate = gradAccum > 1;
  const masked = opts.masked ?? {};
  const blockOf = /^block:(\d+)$/.exec(g.meta.sparsityPattern);
  for (const [p, how] of Object.entries(masked)) {
    if (how === 'block' && !blockOf) throw new Error(`lowerStep: ${p} is on the block-sparse kernels but the graph's pattern is ${g.meta.sparsityPattern}`);
  }

  // flat buffers: every parameter in the model description's order, 64-float aligned
  const flat: FlatEntry[] = [];
  let flatSize = 0;
  for (const t of g.tensors) {
    const p = paramOf(t.id);
    if (!p || p.space !== 'param' || t.id.endsWith("'")) continue;
    const size = t.shape.reduce((a, b) => a * b, 1);
    const decay = !!(ops.find((o) => o.sem!.fn === 'adamw')!.sem as Extract<OpSemantics, { fn: 'adamw' }>).params.find((x) => x.name === p.name)?.decay;
    flat.push({ name: p.name, offset: flatSize, size, shape: t.shape, decay });
    flatSize += Math.ceil(size / ALIGN) * ALIGN;
  }

  const alias = new Map<T, T>(); // graph tensor -> the tensor whose storage it shares
  const body: Call[] = [];
  const fusedOps: string[][] = [];
  const emit = (c: Call, ...from: OpSpec[]) => {
    body.push(c);
    fusedOps.push(from.map((o) => o.id));
  };
  const sem = (i: number) => ops[i]?.sem;
  // the tied head's gradient goes straight into the embedding's gradient, which the embedding's
  // backward then accumulates into
  const headGrad = 'G:tok_emb.weight.head';
  if (T.has(headGrad)) alias.set(headGrad, 'G:tok_emb.weight');
  const rotatedQkv = new Map<T, T>(); // rotated qkv (never stored) -> its unrotated source
  let epilogueStart = ops.length;

  const size = (id: T) => T.get(id)!.shape.reduce((a, b) => a * b, 1);
  /** Ops folded into an earlier call (a GELU backward fused into the dX product before the dW and db ops). */
  const consumed = new Set<number>();
  /** m, n, k of op(A)·op(B) from the operands' stored shapes. */
  const mnk = (s: Extract<OpSemantics, { fn: 'matmul' }>) => {
    const a = T.get(s.a)!.shape;
    const b = T.get(s.b)!.shape;
    const [ar, ac] = [a[0]!, a.slice(1).reduce((x, y) => x * y, 1)];
    const [br, bc] = [b[0]!, b.slice(1).reduce((x, y) => x * y, 1)];
    return { m: s.transA ? ac : ar, k: s.transA ? ar : ac, n: s.transB ? br : bc };
  };
  for (let i = 0; i < ops.length; i++) {
    if (consumed.has(i)) continue;
    const o = ops[i]!;
    const s = o.sem!;
    const next = sem(i + 1);
    switch (s.fn) {
      case 'embed': {
        let out = s.out;
        const used = [o];
        let k = 1;
        let pos: T | undefined;
        if (next?.fn === 'patch-mean' && next.x === out) {
          k = next.k;
          out = next.out;
          used.push(ops[++i]!);
        }
        const n2 = sem(i + 1);
        if (n2?.fn === 'add-positions' && n2.x === out) {
          pos = n2.pos;
          out = n2.out;
          used.push(ops[++i]!);
        }
        emit({ op: 'embed', rows: B, t: Tn, k, d, vocab: model.vocabSize, ids: s.ids, table: s.table, ...(pos ? { pos } : {}), out }, ...used);
        break;
      }
      case 'patch-mean':
      case 'add-positions':
        throw new Error(`lowerStep: ${o.id} outside the embedding chain`);
      case 'layernorm':
        emit({ op: 'layernorm', rows: BT, cols: d, x: s.x, gain: s.gain, bias: s.bias, out: s.out, stats: s.stats }, o);
        break;
      case 'matmul': {
        const base = { ...mnk(s), transA: s.transA, transB: s.transB, a: s.a, b: s.b, ...(s.param ? { param: s.param } : {}), label: o.id };
        const how = s.param ? masked[s.param] : undefined;
        const block = how === 'block' ? { block: Number(blockOf![1]), mask: `I:${s.param}` } : undefined;
        if (o.phase === 'forward') {
          const bias = s.bias ? { bias: s.bias } : {};
          const bs = block ? { blockSparse: { ...block, part: 'forward' as const } } : {};
          if (!block && next?.fn === 'gelu' && next.x === s.out) {
            emit({ op: 'matmul', ...base, ...bias, out: next.out, gelu: { pre: s.out }, accumulate: false }, o, ops[++i]!);
          } else if (!block && next?.fn === 'add' && (next.b === s.out || next.a === s.out)) {
            emit({ op: 'matmul', ...base, ...bias, out: next.out, residual: next.b === s.out ? next.a : next.b, accumulate: false }, o, ops[++i]!);
          } else {
            emit({ op: 'matmul', ...base, ...bias, ...bs, out: s.out, accumulate: false }, o);
          }
        } else if (!paramOf(s.out) && !s.out.startsWith('G:')) {
          // dX = dY · Wᵀ (or the head's dX)
          const bs = block ? { blockSparse: { ...block, part: 'dx' as const } } : {};
          // the GELU backward reading this dX may come after the dW and db products (which read dY,
          // not dX): fold it in here if nothing in between reads dX
          let j = i + 1;
          while (j < ops.length && !(ops[j]!.sem!.fn === 'gelu-grad' && (ops[j]!.sem as { dy: T }).dy === s.out) && !ops[j]!.reads.some((r) => r.tensor === s.out)) j++;
          const gg = ops[j]?.sem;
          if (!block && gg?.fn === 'gelu-grad' && gg.dy === s.out) {
            consumed.add(j);
            emit({ op: 'matmul', ...base, out: gg.out, geluBackward: gg.x, accumulate: false }, o, ops[j]!);
          } else {
            emit({ op: 'matmul', ...base, ...bs, out: s.out, accumulate: false }, o);
          }
        } else {
          // dW: a gradient; with a tied head it is the embedding's gradient, which the embedding's backward adds to
          const bs = block ? { blockSparse: { ...block, part: 'dw' as const } } : {};
          emit({ op: 'matmul', ...base, ...bs, out: s.out, accumulate }, o);
        }
        break;
      }
      // elementwise ops left standing where their producer cannot take them as an epilogue (the block-sparse kernels)
      case 'gelu':
        emit({ op: 'gelu', n: size(s.out), x: s.x, out: s.out }, o);
        break;
      case 'gelu-grad':
        emit({ op: 'gelu-grad', n: size(s.out), dy: s.dy, x: s.x, out: s.out }, o);
        break;
      case 'add':
        emit({ op: 'add', n: size(s.out), a: s.a, b: s.b, out: s.out }, o);
        break;
      case 'rotary': {
        if (s.inverse) throw new Error(`lowerStep: ${o.id}: the rotary backward must follow the attention backward`);
        if (next?.fn !== 'attention' || next.qkv !== s.out) throw new Error(`lowerStep: ${o.id} is not followed by its attention`);
        rotatedQkv.set(s.out, s.x);
        const at = ops[++i]!;
        emit({ op: 'attention', batch: B, t: Tn, heads: model.nHead, headDim: d / model.nHead, rotary: true, qkv: s.x, out: next.out, lse: next.lse }, o, at);
        break;
      }
      case 'attention':
        emit({ op: 'attention', batch: B, t: Tn, heads: model.nHead, headDim: d / model.nHead, rotary: false, qkv: s.qkv, out: s.out, lse: s.lse }, o);
        break;
      case 'attention-grad': {
        const unrotated = rotatedQkv.get(s.qkv);
        const rot = next?.fn === 'rotary' && next.inverse && next.x === s.dqkv ? next : undefined;
        if (!!unrotated !== !!rot) throw new Error(`lowerStep: ${o.id}: rotary forward and backward do not pair up`);
        const used = [o];
        if (rot) used.push(ops[++i]!);
        emit({ op: 'attention-grad', batch: B, t: Tn, heads: model.nHead, headDim: d / model.nHead, rotary: !!rot, qkv: unrotated ?? s.qkv, out: s.out, lse: s.lse, dout: s.dout, dqkv: rot ? rot.out : s.dqkv }, ...used);
        break;
      }
      case 'xent': {
        if (next?.fn !== 'xent-grad' || next.logits !== s.logits) throw new Error(`lowerStep: ${o.id} is not followed by its gradient`);
        alias.set(next.out, s.logits); // the gradient overwrites the logits in place
        emit(
          {
            op: 'xent', rows: BT, vocab: model.vocabSize, k: K, smoothing: opts.labelSmoothing ?? 0, gradScale: 1 / (BT * gradAccum),
            logits: s.logits, labels: s.labels, rowLoss: s.lse, loss: s.loss, lossScale: 1 / BT,
          },
          o,
          ops[++i]!,
        );
        break;
      }
      case 'xent-grad':
        throw new Error(`lowerStep: ${o.id} without its loss`);
      case 'colsum':
        emit({ op: 'colsum', m: BT, n: T.get(s.x)!.shape[1]!, x: s.x, out: s.out, accumulate }, o);
        break;
      case 'layernorm-grad': {
        if (next?.fn === 'add' && (next.b === s.dx || next.a === s.dx)) {
          // the residual stream's gradient is in the add's other operand: LayerNorm backward adds into it
          const residual = next.b === s.dx ? next.a : next.b;
          alias.set(next.out, residual);
          emit({ op: 'layernorm-grad', rows: BT, cols: d, dy: s.dy, x: s.x, stats: s.stats, gain: s.gain, dx: residual, dgain: s.dgain, dbias: s.dbias, accumulate: true, accumulateParams: accumulate }, o, ops[++i]!);
        } else {
          emit({ op: 'layernorm-grad', rows: BT, cols: d, dy: s.dy, x: s.x, stats: s.stats, gain: s.gain, dx: s.dx, dgain: s.dgain, dbias: s.dbias, accumulate: false, accumulateParams: accumulate }, o);
        }
        break;
      }
      case 'positions-grad':
        emit({ op: 'positions-grad', rows: B, t: Tn, d, dy: s.dy, out: s.out, accumulate }, o);
        break;
      case 'patch-mean-grad': {
        if (next?.fn !== 'embed-grad' || next.dy !== s.out) throw new Error(`lowerStep: ${o.id} is not followed by the embedding backward`);
        emit({ op: 'embed-grad', rows: B, t: Tn, k: s.k, d, vocab: model.vocabSize, dy: s.dy, out: next.out, accumulate: accumulate || !!next.add }, o, ops[++i]!);
        break;
      }
      case 'embed-grad':
        emit({ op: 'embed-grad', rows: B, t: Tn, k: 1, d, vocab: model.vocabSize, dy: s.dy, out: s.out, accumulate: accumulate || !!s.add }, o);
        break;
      case 'grad-norm':
        epilogueStart = i;
        i = ops.length;
        break;
      case 'adamw':
      case 'cast':
        throw new Error(`lowerStep: unexpected ${s.fn} op ${o.id}`);
    }
  }
  const maskedNames = Object.keys(masked);
  const epilogue: Call[] = [];
  for (const name of maskedNames) {
    if (masked[name] !== 'dense') continue;
    const e = flat.find((f) => f.name === name)!;
    epilogue.push({ op: 'mask-grad', param: name, grad: `G:${name}`, mask: `I:${name}`, n: e.size });
  }
  const normOp = ops[epilogueStart];
  if (!normOp || normOp.sem!.fn !== 'grad-norm' || ops[epilogueStart + 1]?.sem?.fn !== 'adamw') throw new Error('lowerStep: the graph does not end with the gradient norm and AdamW');
  epilogue.push({ op: 'grad-norm', clip: opts.gradClip }, { op: 'adamw', masked: maskedNames });
  const prologue: Call[] = accumulate ? [{ op: 'zero-grads' }] : [];

  const places = planMemory(g, body, alias, T);
  let arenaBytes = 0;
  for (const p of Object.values(places)) if (p.space === 'arena') arenaBytes = Math.max(arenaBytes, p.offset + p.bytes);
  for (const name of maskedNames) places[`I:${name}`] = { space: 'mask', param: name };
  return { meta: g.meta, prologue, body, epilogue, places, arenaBytes, flat, flatSize, fusedOps };
}

/** The tensor ids a call reads and writes (for lifetimes). */
export function callOperands(c: Call): { reads: T[]; writes: T[] } {
  switch (c.op) {
    case 'embed':
      return { reads: [c.ids, c.table, ...(c.pos ? [c.pos] : [])], writes: [c.out] };
    case 'layernorm':
      return { reads: [c.x, c.gain, c.bias], writes: [c.out, c.stats] };
    case 'matmul':
      return {
        reads: [c.a, c.b, ...(c.bias ? [c.bias] : []), ...(c.residual ? [c.residual] : []), ...(c.geluBackward ? [c.geluBackward] : []), ...(c.blockSparse ? [c.blockSparse.mask] : []), ...(c.accumulate ? [c.out] : [])],
        writes: [c.out, ...(c.gelu ? [c.gelu.pre] : [])],
      };
    case 'add':
      return { reads: [c.a, c.b], writes: [c.out] };
    case 'gelu':
      return { reads: [c.x], writes: [c.out] };
    case 'gelu-grad':
      return { reads: [c.dy, c.x], writes: [c.out] };
    case 'attention':
      return { reads: [c.qkv], writes: [c.out, c.lse] };
    case 'attention-grad':
      return { reads: [c.qkv, c.out, c.lse, c.dout], writes: [c.dqkv] };
    case 'xent':
      return { reads: [c.logits, c.labels], writes: [c.logits, c.rowLoss, c.loss] };
    case 'colsum':
      return { reads: [c.x, ...(c.accumulate ? [c.out] : [])], writes: [c.out] };
    case 'layernorm-grad':
      return { reads: [c.dy, c.x, c.stats, c.gain, ...(c.accumulate ? [c.dx] : [])], writes: [c.dx, c.dgain, c.dbias] };
    case 'positions-grad':
    case 'embed-grad':
      return { reads: [c.dy, ...(c.accumulate ? [c.out] : [])], writes: [c.out] };
    case 'mask-grad':
      return { reads: [c.grad, c.mask], writes: [c.grad] };
    default:
      return { reads: [], writes: [] };
  }
}

/**
 * Places every tensor: parameters, gradients and moments in their flat buffers, inputs and scalars in
 * their own buffers, activations in the arena (regions reused after their tensor's last read).
 */
function planMemory(g: StepGraph, body: Call[], alias: Map<T, T>, T: Map<string, TensorSpec>): Record<T, Place> {
  const places: Record<T, Place> = {};
  const root = (id: T): T => {
    let x = id;
    while (alias.has(x)) x = alias.get(x)!;
    return x;
  };
  // lifetimes of arena tensors (by root), in call indices
  const first = new Map<T, number>();
  const last = new Map<T, number>();
  body.forEach((c, i) => {
    const { reads, writes } = callOperands(c);
    for (const id of [...writes, ...reads]) {
      const r = root(id);
      if (!first.has(r)) first.set(r, i);
      last.set(r, i);
    }
  });
  const fixed = (id: T): Place | undefined => {
    const p = paramOf(id);
    if (p) return { space: p.space, param: p.name };
    if (id === 'ids') return { space: 'ids' };
    if (id === 'labels') return { space: 'labels' };
    if (id === 'loss') return { space: 'loss', micro: true };
    if (id === 'grad-norm') return { space: 'norm' };
    if (id.startsWith('I:')) return { space: 'mask', param: id.slice(2) };
    return undefined;
  };
  // first-fit allocation in call order; freed regions return to the free list after their last read
  interface Region { offset: number; bytes: number }
  const live: { id: T; region: Region; end: number }[] = [];
  const free: Region[] = [];
  let top = 0;
  const byStart = [...first.keys()].filter((id) => !fixed(id)).sort((a, b) => first.get(a)! - first.get(b)! || a.localeCompare(b));
  const rootPlace = new Map<T, Place>();
  let k = 0;
  for (let i = 0; i < body.length; i++) {
    // release what died before call i
    for (let j = live.length - 1; j >= 0; j--) {
      if (live[j]!.end < i) {
        free.push(live[j]!.region);
        live.splice(j, 1);
      }
    }
    free.sort((a, b) => a.offset - b.offset);
    // coalesce neighbours
    for (let j = free.length - 2; j >= 0; j--) {
      if (free[j]!.offset + free[j]!.bytes === free[j + 1]!.offset) {
        free[j]!.bytes += free[j + 1]!.bytes;
        free.splice(j + 1, 1);
      }
    }
    while (k < byStart.length && first.get(byStart[k]!) === i) {
      const id = byStart[k++]!;
      const t = T.get(id);
      if (!t) throw new Error(`planMemory: unknown tensor ${id}`);
      // LayerNorm statistics [rows, 2] are bound as two 256-byte aligned halves (mean, then rstd)
      const bytes = id.endsWith('.stats') ? 2 * Math.ceil((t.shape[0]! * 4) / 256) * 256 : Math.ceil(t.bytes / 256) * 256;
      let region: Region;
      const fit = free.findIndex((f) => f.bytes >= bytes);
      if (fit >= 0) {
        const f = free[fit]!;
        region = { offset: f.offset, bytes };
        if (f.bytes === bytes) free.splice(fit, 1);
        else free[fit] = { offset: f.offset + bytes, bytes: f.bytes - bytes };
      } else {
        region = { offset: top, bytes };
        top += bytes;
      }
      live.push({ id, region, end: last.get(id)! });
      rootPlace.set(id, { space: 'arena', offset: region.offset, bytes: id.endsWith('.stats') ? bytes : t.bytes });
    }
  }
  for (const t of g.tensors) {
    const r = root(t.id);
    const p = fixed(r) ?? rootPlace.get(r);
    if (p) places[t.id] = p;
  }
  return places;
}

/** One line per call: what runs, fused from which graph ops, and where its output lives (for `patchflow graph --lowered`). */
export function describeSchedule(s: Schedule): string[] {
  const lines: string[] = [];
  const where = (id: T) => {
    const p = s.places[id];
    if (!p) return id;
    if (p.space === 'arena') return `${id}@arena+${p.offset}`;
    return `${id}@${p.space}`;
  };
  const out = (c: Call): string => {
    const { writes } = callOperands(c);
    return writes.map(where).join(', ');
  };
  s.prologue.forEach((c) => lines.push(`prologue  ${c.op}`));
  s.body.forEach((c, i) => {
    const shape =
      c.op === 'matmul'
        ? ` ${c.m}x${c.n}x${c.k}${c.transA ? ' Aᵀ' : ''}${c.transB ? ' Bᵀ' : ''}${c.bias ? ' +bias' : ''}${c.gelu ? ' +gelu' : ''}${c.residual ? ' +residual' : ''}${c.geluBackward ? " ⊙gelu'" : ''}${c.accumulate ? ' +=' : ''}${c.blockSparse ? ` block-sparse b=${c.blockSparse.block}` : ''}`
        : '';
    lines.push(`${String(i).padStart(4)}  ${c.op}${shape} <- [${s.fusedOps[i]!.join(' + ')}] -> ${out(c)}`);
  });
  s.epilogue.forEach((c) => lines.push(`epilogue  ${c.op}${c.op === 'grad-norm' ? ` clip ${c.clip}` : c.op === 'adamw' && c.masked.length ? ` masked ${c.masked.length}` : ''}`));
  return lines;
}
