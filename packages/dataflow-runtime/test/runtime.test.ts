import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { forwardFlopsPerPosition, paramSpecs, productFlopsPerPosition } from '@patchflow/trainer';
import {
  ConfigError, type GptShape, type HardwareSpec, attentionRate, buildStepGraph, callOperands, lowerStep, eagerKbk, footprint, fuse, graphToJson, indexBytes, memoryProfile, opCost, pipeline, plan, resolveModel, simulate, validateHardware,
} from '../src/index.js';

const HW_DIR = new URL('../../backend-rdu-sim/hw/', import.meta.url);
const hw = (n: string): HardwareSpec => validateHardware(JSON.parse(fs.readFileSync(new URL(`${n}.json`, HW_DIR), 'utf8')));

// V=16, L=1, h=2, d=8, dFF=32, T=4, B=2: small enough to count by hand
const TINY: GptShape = { vocabSize: 16, nLayer: 1, nHead: 2, dModel: 8, dFF: 32, seqLen: 4, positions: 'learned', tiedEmbeddings: true };
const op = (g: ReturnType<typeof buildStepGraph>, id: string) => {
  const o = g.ops.find((x) => x.id === id);
  if (!o) throw new Error(`no op ${id}`);
  return o;
};

describe('step graph: FLOPs and bytes by hand', () => {
  const g = buildStepGraph(TINY, { batch: 2, precision: 'fp32' });
  const BT = 8, d = 8, T = 4, B = 2, h = 2, V = 16, dff = 32;

  it('parameters match the trainer model', () => {
    const n = paramSpecs(TINY).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
    expect(g.meta.parameters).toBe(n);
    expect(g.meta.keptParameters).toBe(n);
  });

  it('qkv linear: 2·BT·d·3d + bias FLOPs; reads x, W, b; writes y', () => {
    const o = op(g, 'L0.qkv');
    expect(o.matmulFlops).toBe(2 * BT * d * 3 * d);
    expect(o.flops).toBe(2 * BT * d * 3 * d + BT * 3 * d);
    expect(o.bytesRead).toBe(4 * (BT * d + d * 3 * d + 3 * d));
    expect(o.bytesWritten).toBe(4 * BT * 3 * d);
    expect(o.bytesByDtype.fp32).toEqual({ read: o.bytesRead, write: o.bytesWritten });
  });

  it('backward of mlp.fc: dX and dW each 2·BT·d·dFF, bias grad a row sum', () => {
    expect(op(g, 'L0.fc dX').flops).toBe(2 * BT * d * dff);
    expect(op(g, 'L0.fc dW').flops).toBe(2 * BT * d * dff);
    expect(op(g, 'L0.fc dW').bytesWritten).toBe(4 * d * dff);
    expect(op(g, 'L0.fc db').flops).toBe(BT * dff);
  });

  it('causal attention executes the unmasked half', () => {
    const c = (T + 1) / (2 * T);
    expect(op(g, 'L0.attention').flops).toBeCloseTo((4 * B * T * T * d + 5 * B * h * T * T) * c, 9);
    expect(op(g, 'L0.attention').bytesWritten).toBe(4 * BT * d + 4 * B * h * T);
    expect(op(g, 'L0.attention bwd').matmulFlops).toBeCloseTo(10 * B * T * T * d * c, 9);
  });

  it('layernorm, GELU, loss, head, embedding, optimizer', () => {
    expect(op(g, 'L0.ln1').flops).toBe(8 * BT * d);
    expect(op(g, 'L0.ln1').bytesRead).toBe(4 * (BT * d + 2 * d));
    expect(op(g, 'L0.ln1').bytesWritten).toBe(4 * (BT * d + 2 * BT));
    expect(op(g, 'L0.gelu').flops).toBe(8 * BT * dff);
    expect(op(g, 'lm head').flops).toBe(2 * BT * d * V);
    expect(op(g, 'cross-entropy').flops).toBe(4 * BT * V + BT);
    expect(op(g, 'embedding').bytesRead).toBe(4 * B * T + 4 * B * T * d); // ids + the gathered rows only
    const n = g.meta.parameters;
    expect(op(g, 'adamw').flops).toBe(14 * n);
    expect(op(g, 'adamw').bytesRead).toBe(16 * n + 4);
    expect(op(g, 'adamw').bytesWritten).toBe(12 * n);
  });

  it('bf16: a cast per matmul weight, 2-byte activations, fp32 master/optimizer', () => {
    const gb = buildStepGraph(TINY, { batch: 2, precision: 'bf16' });
    const cast = op(gb, 'cast blocks.0.attn.qkv.weight');
    expect(cast.bytesRead).toBe(4 * d * 3 * d);
    expect(cast.bytesWritten).toBe(2 * d * 3 * d);
    expect(op(gb, 'L0.qkv').bytesWritten).toBe(2 * BT * 3 * d);
    expect(op(gb, 'L0.qkv').bytesByDtype.bf16!.read).toBe(2 * (BT * d + d * 3 * d));
    expect(gb.ops.filter((o) => o.kind === 'cast').length).toBe(5); // 4 block matrices + tied embedding
  });

  it('unstructured sparsity: kept FLOPs and values, int32 index per kept value', () => {
    const gs = buildStepGraph(TINY, { batch: 2, precision: 'fp32', sparsity: 0.75, sparsityPattern: 'unstructured' });
    const o = op(gs, 'L0.qkv');
    expect(o.matmulFlops).toBe(0.25 * 2 * BT * d * 3 * d);
    const kept = 0.25 * d * 3 * d;
    expect(o.bytesByDtype.int32!.read).toBe(4 * kept + 4 * (d + 1));
    expect(o.bytesRead).toBe(4 * BT * d + 4 * kept + (4 * kept + 4 * (d + 1)) + 4 * 3 * d);
    expect(o.sparse).toEqual({ density: 0.25, pattern: 'unstructured' });
    // the head and attention stay dense
    expect(op(gs, 'lm head').flops).toBe(2 * BT * d * V);
    expect(gs.meta.keptParameters).toBe(g.meta.parameters - 0.75 * (3 * d * d + d * d + 2 * d * dff));
  });

  it('block and N:M index costs', () => {
    expect(indexBytes(8, 24, 0.25, { kind: 'block', block: 4 })).toBe(4 * 3 + 4 * 3);
    expect(indexBytes(8, 24, 0.5, { kind: 'nm', n: 2, m: 4 })).toBe((96 * 2) / 8);
    expect(() => buildStepGraph(TINY, { batch: 2, sparsity: 0.75, sparsityPattern: 'nm:2:4' })).toThrow(/does not match/);
  });

  it('patch-level training: K·T tokens in, T positions through the blocks, an averaging op', () => {
    const gp = buildStepGraph(TINY, { batch: 2, precision: 'fp32', patchSize: 4 });
    expect(op(gp, 'embedding').bytesRead).toBe(4 * B * 4 * T + 4 * B * 4 * T * d);
    expect(op(gp, 'patch-average').flops).toBe(B * 4 * T * d);
    expect(op(gp, 'L0.qkv').flops).toBe(op(g, 'L0.qkv').flops);
    expect(op(gp, 'cross-entropy').flops).toBe(4 * BT * V + 4 * BT);
    expect(gp.meta.tokensPerRow).toBe(16);
  });

  it('lifetimes: saved activations live into the backward pass', () => {
    const m = memoryProfile(g);
    const t = g.tensors.find((x) => x.id === 'L0.gelu')!;
    expect(g.ops[t.producer!]!.phase).toBe('forward');
    expect(g.ops[t.consumers.at(-1)!]!.phase).toBe('backward');
    expect(m.savedActivationBytes).toBeGreaterThan(t.bytes);
    expect(m.peakBytes).toBeGreaterThan(m.persistentBytes);
  });
});

describe('fusion and pipeline passes', () => {
  const g = buildStepGraph(resolveModel('gpt-124m'), { batch: 4, precision: 'bf16', sparsity: 0.5 });
  const T = new Map(g.tensors.map((t) => [t.id, t]));

  it('every multi-op kernel fits the budget; a smaller budget gives more kernels', () => {
    for (const budget of [64e6, 4e6, 1e6]) {
      const ks = fuse(g, { policy: 'rules', budgetBytes: budget, tileRows: 128 });
      for (const k of ks) if (k.ops.length > 1) expect(k.footprintBytes).toBeLessThanOrEqual(budget);
      expect(ks.flatMap((k) => k.ops)).toEqual(g.ops.map((o) => o.index));
    }
    const big = fuse(g, { policy: 'rules', budgetBytes: 64e6, tileRows: 128 }).length;
    const none = fuse(g, { policy: 'none', budgetBytes: 64e6, tileRows: 128 }).length;
    expect(big).toBeLessThan(none);
    expect(none).toBe(g.ops.length);
    const k = fuse(g, { policy: 'rules', budgetBytes: 64e6, tileRows: 128 }).find((x) => x.id.startsWith('L0.fc + '));
    expect(k?.id).toBe('L0.fc + L0.gelu'); // matmul + epilogue
  });

  it('sections respect on-chip capacity unless a lone kernel streams; bubble = (p-1)/(m+p-1)', () => {
    const ks = fuse(g, { policy: 'rules', budgetBytes: 50e6, tileRows: 128 });
    const secs = pipeline(g, ks, 50e6, 128);
    for (const s of secs) {
      if (s.streaming) expect(s.kernels.length).toBe(1);
      else expect(s.footprintBytes).toBeLessThanOrEqual(50e6);
      expect(s.bubble).toBeCloseTo(s.depth > 0 ? (s.depth - 1) / (s.microBatches + s.depth - 1) : 0, 12);
    }
    expect(secs.flatMap((s) => s.kernels)).toEqual(ks.map((k) => k.index));
    const stages = new Map<number, number>();
    const f = footprint(g, T, secs[0]!.kernels.flatMap((k) => ks[k]!.ops), (o) => stages.get(o) ?? o, secs[0]!.microBatches);
    expect(f).toBeGreaterThan(0);
  });
});

describe('execution models', () => {
  it('KBK time >= DF time for the same graph and hardware', () => {
    for (const name of ['sn10', 'sn30', 'a100', 'h100']) {
      for (const [model, S] of [['gpt-124m', 0], ['gpt-355m', 0.75], ['patchflow-default', 0.5]] as const) {
        const h = hw(name);
        const g = buildStepGraph(resolveModel(model), { batch: 4, precision: 'bf16', sparsity: S, seqLen: 512 > resolveModel(model).seqLen ? undefined : 512 });
        const kbk = simulate(g, h, { mode: 'kbk' });
        const df = simulate(g, h, { mode: 'dataflow' });
        expect(kbk.stepSeconds, `${name} ${model} S=${S}`).toBeGreaterThanOrEqual(df.stepSeconds);
      }
    }
  });

  it('a model that fits on chip moves no activations off chip in DF mode (but does in KBK)', () => {
    const g = buildStepGraph(TINY, { batch: 2, precision: 'bf16' });
    const df = simulate(g, hw('sn30'), { mode: 'dataflow' });
    expect(df.sections).toBe(1);
    expect(df.offChipBytesByRole.activation ?? 0).toBe(0);
    expect(df.offChipBytes).toBeGreaterThan(0); // weights in, updated weights and moments out
    const kbk = simulate(g, hw('sn30'), { mode: 'kbk' });
    expect(kbk.offChipBytesByRole.activation).toBeGreaterThan(0);
  });

  it('names a bound per kernel group, and sparsity helps DF more than KBK on an RDU', () => {
    const m = resolveModel('gpt-1.3b');
    const t = (S: number, mode: 'kbk' | 'dataflow') => simulate(buildStepGraph(m, { batch: 8, sparsity: S }), hw('sn30'), { mode }).stepSeconds;
    const kbkGain = t(0, 'kbk') / t(0.875, 'kbk');
    const dfGain = t(0, 'dataflow') / t(0.875, 'dataflow');
    expect(dfGain).toBeGreaterThan(kbkGain);
    const r = simulate(buildStepGraph(m, { batch: 8 }), hw('h100'), { mode: 'kbk' });
    for (const gr of r.groups) expect(['compute', 'on-chip bandwidth', 'off-chip bandwidth']).toContain(gr.bound);
    expect(r.groups.find((x) => x.group === 'matmul forward')!.bound).toBe('compute');
    expect(r.groups.find((x) => x.group === 'elementwise')!.bound).toBe('off-chip bandwidth');
  });

  it('gradient accumulation repeats forward/backward, not the optimizer', () => {
    const m = resolveModel('gpt-124m');
    const one = simulate(buildStepGraph(m, { batch: 4 }), hw('h100'), { mode: 'kbk' });
    const four = simulate(buildStepGraph(m, { batch: 4, gradAccum: 4 }), hw('h100'), { mode: 'kbk' });
    const opt = one.phases.optimizer!;
    expect(four.stepSeconds).toBeCloseTo(4 * (one.stepSeconds - opt) + opt, 6);
  });

  it('graph JSON carries the schema, ops, kernels and schedule', () => {
    const g = buildStepGraph(TINY, { batch: 2 });
    const p = plan(g, hw('sn30'), { mode: 'dataflow' });
    const j = JSON.parse(JSON.stringify(graphToJson(g, p.kernels, p.sections, 'gpipe-per-section')));
    expect(j.schema).toBe('patchflow.dataflow-graph/1');
    expect(j.ops.length).toBe(g.ops.length);
    expect(j.schedule.sections[0].kernels.length).toBe(p.kernels.length);
  });
});

describe('PyTorch eager graph (GraphOptions.eager)', () => {
  const BT = 8, d = 8, V = 16, dff = 32, B = 2, T = 4;
  const gb = buildStepGraph(TINY, { batch: 2, precision: 'bf16', eager: true });
  const gf = buildStepGraph(TINY, { batch: 2, precision: 'fp32', eager: true });

  it('autocast: LayerNorm output cast to bf16, fp32 residual add, bias and gradient casts', () => {
    const c = op(gb, 'cast L0.ln1.bf16');
    expect([c.bytesRead, c.bytesWritten, c.flops]).toEqual([4 * BT * d, 2 * BT * d, BT * d]);
    expect(op(gb, 'L0.ln1').bytesWritten).toBe(4 * BT * d + 4 * 2 * BT); // fp32 output + stats
    const r = op(gb, 'L0.residual1'); // fp32 stream + bf16 proj output -> fp32
    expect([r.bytesRead, r.bytesWritten]).toEqual([4 * BT * d + 2 * BT * d, 4 * BT * d]);
    const bc = op(gb, 'cast Bc:blocks.0.attn.qkv.bias');
    expect([bc.bytesRead, bc.bytesWritten]).toEqual([4 * 3 * d, 2 * 3 * d]);
    expect(op(gb, 'L0.qkv').reads.map((a) => a.tensor)).toEqual(['L0.ln1.bf16', 'Wc:blocks.0.attn.qkv.weight', 'Bc:blocks.0.attn.qkv.bias']);
    expect(op(gb, 'L0.fc dW').bytesWritten).toBe(2 * d * dff); // dW comes out of the matmul in bf16 ...
    const gc = op(gb, 'cast G:blocks.0.mlp.fc.weight'); // ... and is cast to the fp32 master's dtype
    expect([gc.bytesRead, gc.bytesWritten]).toEqual([2 * d * dff, 4 * d * dff]);
    const rc = op(gb, 'cast L0.d.mlp.proj'); // the residual's fp32 gradient cast for the bf16 branch
    expect([rc.bytesRead, rc.bytesWritten]).toEqual([4 * BT * d, 2 * BT * d]);
    // per layer 4 weight + 4 bias + 2 LN-output casts forward, 4 dW + 4 db + 2 LN-grad + 2 residual-grad casts backward;
    // once: tied-embedding weight, ln_f output, logits.float() and their three backward casts (= the 270 cast/copy kernels profiled for GPT 124M)
    expect(gb.ops.filter((o) => o.kind === 'cast').length).toBe(22 * 1 + 6);
    expect(buildStepGraph(resolveModel('gpt-124m'), { batch: 1, seqLen: 64, precision: 'bf16', eager: true }).ops.filter((o) => o.kind === 'cast').length).toBe(22 * 12 + 6);
    expect(gf.ops.filter((o) => o.kind === 'cast').length).toBe(0); // fp32: no autocast
  });

  it('cross-entropy as log_softmax (three passes over its input) + nll_loss, fp32', () => {
    const ls = op(gf, 'log-softmax');
    expect([ls.bytesRead, ls.bytesWritten]).toEqual([3 * 4 * BT * V, 4 * BT * V]);
    const lb = op(gf, 'log-softmax bwd');
    expect([lb.bytesRead, lb.bytesWritten]).toEqual([2 * 4 * BT * V + 4 * BT * V, 4 * BT * V]);
    expect(op(gf, 'nll-loss bwd').bytesWritten).toBe(4 * BT * V); // zero fill of the [BT, V] gradient
    const lf = op(gb, 'cast logits.fp32'); // autocast: logits.float()
    expect([lf.bytesRead, lf.bytesWritten]).toEqual([2 * BT * V, 4 * BT * V]);
  });

  it('log_softmax kernel on the H100: its bytes at the copy bandwidth plus the kernel overhead', () => {
    const g = buildStepGraph(resolveModel('gpt-124m'), { batch: 1, seqLen: 1024, precision: 'fp32', eager: true });
    const u = simulate(g, hw('h100'), { mode: 'kbk' }).units.find((x) => x.id === 'log-softmax')!;
    // 3 reads + 1 write of 1024 x 50,304 fp32 at 3.35 TB/s x 0.885 (= the measured 2,966 GB/s copy), + 4 us
    expect(u.seconds).toBeCloseTo((16 * 1024 * 50304) / (3.35e12 * 0.885) + 4e-6, 9);
    expect(u.bound).toBe('off-chip bandwidth');
  });

  it('attention helpers per SDPA path, the split backward cat, LayerNorm backward as two kernels', () => {
    // fp32: memory-efficient kernel, delta = rowsum(dO * O) by two ATen kernels
    expect(op(gf, 'L0.attention bwd delta mul').bytesRead).toBe(2 * 4 * BT * d);
    expect(op(gf, 'L0.attention bwd delta sum').bytesWritten).toBe(4 * B * 2 * T);
    expect(gf.ops.some((o) => o.id === 'L0.attention bwd convert dq')).toBe(false);
    // bf16: flash kernel, one delta kernel, dq accumulated in fp32 then converted
    const cv = op(gb, 'L0.attention bwd convert dq');
    expect([cv.bytesRead, cv.bytesWritten]).toEqual([4 * BT * d, 2 * BT * d]);
    expect(gb.ops.some((o) => o.id === 'L0.attention bwd delta mul')).toBe(false);
    const cat = op(gf, 'L0.qkv split bwd');
    expect([cat.bytesRead, cat.bytesWritten]).toEqual([3 * 4 * BT * d, 4 * BT * 3 * d]);
    const dx = op(gf, 'L0.ln1 bwd dX'), dw = op(gf, 'L0.ln1 bwd dW');
    expect(dx.bytesRead).toBe(4 * (BT * d + BT * d + 2 * BT + d)); // dy, x, stats, gamma
    expect(dw.bytesRead).toBe(4 * (BT * d + BT * d + 2 * BT)); // dy, x, stats again
    expect(dw.bytesWritten).toBe(4 * 2 * d);
  });

  it('embedding backward fills a zero [V, d] gradient; tied embeddings add the head gradient', () => {
    expect(op(gf, 'embedding bwd').bytesWritten).toBe(4 * V * d + 4 * BT * d);
    const acc = op(gf, 'tied gradient accumulate');
    expect([acc.bytesRead, acc.bytesWritten]).toEqual([2 * 4 * V * d, 4 * V * d]);
  });

  it('the fused graph is unchanged without eager; KBK on a GPU is eager, DF and RDUs are not', () => {
    const g = buildStepGraph(TINY, { batch: 2, precision: 'bf16' });
    expect(g.meta.eager).toBe(false);
    expect(g.ops.some((o) => o.id === 'log-softmax' || o.id.includes('bwd dX') && o.kind === 'layernorm')).toBe(false);
    expect(eagerKbk(hw('h100'), 'kbk')).toBe(true);
    expect(eagerKbk(hw('h100'), 'dataflow')).toBe(false);
    expect(eagerKbk(hw('sn30'), 'kbk')).toBe(false);
  });
});

describe('GPU cost effects', () => {
  it('measured attention rate: fp32 takes the memory-efficient kernel rate at the nearest head dim', () => {
    const h = hw('h100');
    // no shape terms: the table rate itself
    const flat: HardwareSpec = { ...h, compute: { ...h.compute, units: undefined, tile: undefined, kOverhead: undefined } };
    const m64: GptShape = { vocabSize: 16, nLayer: 1, nHead: 2, dModel: 128, dFF: 512, seqLen: 256, positions: 'learned', tiedEmbeddings: true };
    const g = buildStepGraph(m64, { batch: 2, precision: 'fp32' });
    const fwd = op(g, 'L0.attention'), bwd = op(g, 'L0.attention bwd');
    expect(opCost(fwd, flat, 'fp32').computeSeconds).toBeCloseTo(fwd.matmulFlops / 32.7e12, 15);
    expect(opCost(bwd, flat, 'fp32').computeSeconds).toBeCloseTo(bwd.matmulFlops / 32.9e12, 15);
    expect(opCost(fwd, flat, 'tf32').computeSeconds).toBeCloseTo(fwd.matmulFlops / 32.7e12, 15); // the TF32 flag does not change the kernel
    expect(opCost(fwd, flat, 'bf16').computeSeconds).toBeCloseTo(fwd.matmulFlops / 399e12, 15);
    // head dim 96 is nearer 128 than 64 by ratio
    const g96 = buildStepGraph({ ...m64, dModel: 192 }, { batch: 2, precision: 'bf16' });
    expect(attentionRate(op(g96, 'L0.attention'), flat, 'bf16')).toBe(535);
    // no table (the A100 file): attention at the GEMM rate, as before
    expect(attentionRate(fwd, hw('a100'), 'fp32')).toBeUndefined();
  });

  it('attention shape scaling on the H100: T 1024, head dim 64, 96 batch x heads', () => {
    const g = buildStepGraph(resolveModel('gpt-124m'), { batch: 8, seqLen: 1024, precision: 'fp32' });
    const o = op(g, 'L0.attention');
    // tiles 8 x 1 x 96 = 768, x ceil(1024/64) = 16 K-iterations -> 12,288 work units over 132 SMs: 12,288 / (94 x 132);
    // K-loop 1024/(1024+128) against the measurement's 2048/(2048+128)
    const scale = (12288 / (94 * 132)) * (1024 / 1152) / (2048 / 2176);
    expect(opCost(o, hw('h100'), 'fp32').computeSeconds).toBeCloseTo(o.matmulFlops / (32.7e12 * scale), 12);
  });

  it('GEMM wave quantization counts K-iterations (stream-K / split-K) when kTile is set', () => {
    const h = hw('h100');
    const g = buildStepGraph(resolveModel('gpt-124m'), { batch: 8, seqLen: 1024, precision: 'tf32' });
    const o = op(g, 'L0.proj dW'); // 768 x 768 output, K = 8192
    expect(o.gemm).toEqual({ m: 768, n: 768, k: 8192, batch: 1 });
    const kl = 8192 / (8192 + 128);
    // 36 tiles x 128 K-iterations = 4,608 units -> 35 waves of 132; reference 8192^3: 4,096 x 128 = 524,288 -> 3,972 waves
    const eff = 0.811 * ((4608 / (35 * 132)) * kl) / ((524288 / (3972 * 132)) * kl);
    expect(opCost(o, h, 'tf32').computeSeconds).toBeCloseTo(o.matmulFlops / (494.7e12 * eff), 12);
    // whole-tile quantization (no kTile): 36 tiles on 132 SMs, reference 4,096 tiles in 32 waves
    const classic: HardwareSpec = { ...h, compute: { ...h.compute, kTile: undefined } };
    const effC = 0.811 * ((36 / 132) * kl) / ((4096 / (32 * 132)) * kl);
    expect(opCost(o, classic, 'tf32').computeSeconds).toBeCloseTo(o.matmulFlops / (494.7e12 * effC), 12);
  });
});

describe('bad input names the field', () => {
  it('hardware', () => {
    const h = JSON.parse(fs.readFileSync(new URL('sn30.json', HW_DIR), 'utf8'));
    delete h.offChip.bandwidthBytesPerSecond;
    expect(() => validateHardware(h)).toThrow(/offChip\.bandwidthBytesPerSecond/);
    const h2 = JSON.parse(fs.readFileSync(new URL('h100.json', HW_DIR), 'utf8'));
    h2.compute.matmulEfficiency.bf16 = 1.5;
    expect(() => validateHardware(h2)).toThrow(/compute\.matmulEfficiency\.bf16 must be <= 1/);
    expect(() => validateHardware(h2)).toThrow(ConfigError);
    const h3 = JSON.parse(fs.readFileSync(new URL('h100.json', HW_DIR), 'utf8'));
    h3.compute.attention.tflops.bf16['64'] = [399];
    expect(() => validateHardware(h3)).toThrow(/compute\.attention\.tflops\.bf16\.64 must be \[forward, backward\]/);
    h3.compute.attention.tflops.bf16 = { wide: [1, 2] };
    expect(() => validateHardware(h3)).toThrow(/compute\.attention\.tflops\.bf16\.wide: the key must be a head dimension/);
  });
  it('model', () => {
    expect(() => resolveModel({ nLayer: 0, nHead: 2, dModel: 8, vocabSize: 16 })).toThrow(/model\.nLayer/);
    expect(() => resolveModel({ nLayer: 1, nHead: 3, dModel: 8, vocabSize: 16 })).toThrow(/model\.nHead/);
    expect(() => resolveModel({ nLayer: 1, nHead: 2, dModel: 8, vocabSize: 16, depth: 3 })).toThrow(/model\.depth: unknown key/);
    expect(() => resolveModel('gpt-99b')).toThrow(/unknown model preset/);
    expect(() => buildStepGraph(TINY, { batch: 0 })).toThrow(/batch must be an integer >= 1/);
  });
});

describe('the graph is built from the model description (trainer spec.ts)', () => {
  const configs: GptShape[] = [
    TINY,
    { vocabSize: 300, nLayer: 3, nHead: 4, dModel: 64, dFF: 192, seqLen: 32, positions: 'rotary', tiedEmbeddings: false },
    { vocabSize: 512, nLayer: 2, nHead: 2, dModel: 32, dFF: 128, seqLen: 16, positions: 'learned', tiedEmbeddings: false },
    resolveModel('patchflow-default'),
  ];
  for (const model of configs) {
    const label = `${model.nLayer}L d${model.dModel} V${model.vocabSize} ${model.positions} ${model.tiedEmbeddings ? 'tied' : 'untied'}`;
    for (const patchSize of [1, 4]) {
      const B = 2;
      const g = buildStepGraph(model, { batch: B, precision: 'fp32', patchSize });
      const BT = B * model.seqLen;
      const specs = paramSpecs(model);

      it(`${label}, K=${patchSize}: one weight, gradient and two moments per parameter, with its shape`, () => {
        const weights = g.tensors.filter((t) => t.role === 'weight' && t.producer === null);
        expect(weights.map((t) => t.id)).toEqual(specs.map((s) => `W:${s.name}`));
        for (const s of specs) {
          for (const prefix of ['W', 'G', 'M', 'V']) {
            const t = g.tensors.find((x) => x.id === `${prefix}:${s.name}`);
            expect(t?.shape, `${prefix}:${s.name}`).toEqual(s.shape);
          }
        }
      });

      it(`${label}, K=${patchSize}: every product's forward, dX and dW cost the spec's 2·in·out per position`, () => {
        for (const s of specs) {
          const perPos = productFlopsPerPosition(s, model);
          const mm = g.ops.filter((o) => o.sem?.fn === 'matmul' && o.sem.param === s.name);
          if (!perPos) {
            expect(mm, s.name).toEqual([]);
            continue;
          }
          expect(mm.map((o) => o.phase), s.name).toEqual(['forward', 'backward', 'backward']);
          for (const o of mm) expect(o.matmulFlops, `${o.id}`).toBe(BT * perPos);
        }
        // and the forward products plus attention add up to the trainer's FLOPs per position
        const fwd = g.ops.filter((o) => o.phase === 'forward').reduce((a, o) => a + o.matmulFlops, 0);
        const causalFull = g.ops.filter((o) => o.kind === 'attention' && o.phase === 'forward').reduce((a, o) => a + o.matmulFlops / ((model.seqLen + 1) / (2 * model.seqLen)), 0);
        const proj = fwd - g.ops.filter((o) => o.kind === 'attention' && o.phase === 'forward').reduce((a, o) => a + o.matmulFlops, 0);
        expect(proj + causalFull).toBeCloseTo(BT * forwardFlopsPerPosition(model), 6);
      });

      it(`${label}, K=${patchSize}: every op's semantics name only tensors it reads or writes`, () => {
        for (const o of g.ops) {
          expect(o.sem, o.id).toBeDefined();
          const touched = new Set([...o.reads, ...o.writes].map((a) => a.tensor));
          const ids = Object.entries(o.sem!).flatMap(([k, v]) => (k === 'fn' || k === 'param' ? [] : typeof v === 'string' ? [v] : Array.isArray(v) ? v.flatMap((x) => (typeof x === 'string' ? [x] : [x.w, x.g, x.m, x.v])) : []));
          for (const id of ids) expect(touched.has(id), `${o.id}: ${id}`).toBe(true);
        }
      });
    }
  }
});

describe('lowerStep: the executable schedule of a step', () => {
  const cases: [string, GptShape, Record<string, unknown>][] = [
    ['default model', resolveModel('patchflow-default'), { batch: 4 }],
    ['rotary, untied, patch K=4, accumulation 3', { vocabSize: 300, nLayer: 3, nHead: 4, dModel: 64, dFF: 192, seqLen: 32, positions: 'rotary', tiedEmbeddings: false }, { batch: 2, patchSize: 4, gradAccum: 3 }],
    ['block-sparse 75%', { vocabSize: 256, nLayer: 2, nHead: 2, dModel: 64, dFF: 256, seqLen: 16, positions: 'learned', tiedEmbeddings: true }, { batch: 2, sparsity: 0.75, sparsityPattern: 'block:16' }],
  ];
  for (const [label, model, opts] of cases) {
    const g = buildStepGraph(model, { precision: 'fp32', ...(opts as { batch: number }) });
    const sparse = g.meta.sparsity > 0;
    const masked = sparse ? Object.fromEntries(g.tensors.filter((t) => t.role === 'sparse-index').map((t) => [t.id.slice(2), 'block' as const])) : {};
    const s = lowerStep(g, { gradClip: 1, masked });

    it(`${label}: every graph op runs exactly once, in some call`, () => {
      const ran = [...s.fusedOps.flat(), 'clip grad-norm', 'adamw'].sort();
      expect(ran).toEqual(g.ops.map((o) => o.id).sort());
    });

    it(`${label}: the expected fusions, and no elementwise op left standing without a block-sparse producer`, () => {
      const fused = (op: string, part: string) => s.body.filter((c, i) => c.op === op && s.fusedOps[i]!.some((id) => id.endsWith(part))).length;
      const L = model.nLayer;
      if (!sparse) {
        expect(fused('matmul', '.gelu')).toBe(L);
        expect(fused('matmul', '.residual1') + fused('matmul', '.residual2')).toBe(2 * L);
        expect(fused('matmul', '.gelu bwd')).toBe(L);
        expect(s.body.filter((c) => c.op === 'add' || c.op === 'gelu' || c.op === 'gelu-grad')).toEqual([]);
      }
      expect(fused('layernorm-grad', 'residual1 bwd') + fused('layernorm-grad', 'residual0 bwd')).toBe(2 * L);
      expect(s.body.filter((c) => c.op === 'xent')).toHaveLength(1);
      expect(s.prologue.length).toBe(g.meta.gradAccum > 1 ? 1 : 0);
    });

    it(`${label}: every operand has a place, and arena tensors alive at the same time never overlap`, () => {
      const live: { id: string; from: number; to: number; off: number; end: number }[] = [];
      const seen = new Map<string, { from: number; to: number }>();
      s.body.forEach((c, i) => {
        const { reads, writes } = callOperands(c);
        for (const id of [...reads, ...writes]) {
          expect(s.places[id], `${c.op} operand ${id}`).toBeDefined();
          const p = s.places[id]!;
          if (p.space !== 'arena') continue;
          const key = `${p.offset}:${id}`;
          const e = seen.get(key) ?? { from: i, to: i };
          e.to = i;
          seen.set(key, e);
        }
      });
      for (const [key, e] of seen) {
        const id = key.slice(key.indexOf(':') + 1);
        const p = s.places[id] as { offset: number; bytes: number };
        live.push({ id, ...e, off: p.offset, end: p.offset + p.bytes });
      }
      for (const a of live) {
        for (const b of live) {
          if (a === b || a.off === b.off && a.end === b.end) continue; // the same region (an in-place alias)
          const timeOverlap = a.from <= b.to && b.from <= a.to;
          const spaceOverlap = a.off < b.end && b.off < a.end;
          expect(timeOverlap && spaceOverlap, `${a.id} [${a.off}, ${a.end}) steps ${a.from}-${a.to} vs ${b.id} [${b.off}, ${b.end}) steps ${b.from}-${b.to}`).toBe(false);
        }
      }
      // reuse: the arena is smaller than all activations side by side
      const total = g.tensors.filter((t) => t.role === 'activation').reduce((a, t) => a + t.bytes, 0);
      expect(s.arenaBytes).toBeLessThan(total);
    });
  }

  it('refuses the eager (PyTorch cost) graph and non-fp32 graphs', () => {
    expect(() => lowerStep(buildStepGraph(TINY, { batch: 1, precision: 'fp32', eager: true }), { gradClip: 1 })).toThrow(/eager graph/);
    expect(() => lowerStep(buildStepGraph(TINY, { batch: 1, precision: 'bf16' }), { gradClip: 1 })).toThrow(/only fp32/);
  });
});
