/**
 * One pre-LN transformer block (model.ts) chained from the compiled kernels, forward and backward,
 * against tfjs autodiff of the same block built from @patchflow/tensor's composites (tfjs cpu):
 *   a = LN1(x); qkv = a·Wqkv + bqkv; att = attention(qkv); h = x + att·Wo + bo
 *   m = LN2(h); g = gelu(m·Wfc + bfc); out = h + g·Wp + bp;   L = Σ out ⊙ dOut
 * It checks the composition the executor will do: layouts of the backward products (dX = dY·Wᵀ as
 * NT, dW = Xᵀ·dY as TN), bias gradients by colSum, the gelu-backward epilogue, LayerNorm backward
 * accumulating into the residual gradient, attention reading and writing the fused qkv layout.
 * A second test chains the model's ends: patch embedding (K tokens averaged) + learned positions,
 * final LayerNorm, the tied LM head and the K-label cross-entropy, with the head's weight gradient and
 * the embedding's scatter-add accumulating into one dE.
 */
import { describe, it, beforeAll } from 'vitest';
import { tf, useBackend, causalAttentionComposite, layerNormComposite, geluComposite, crossEntropyComposite } from '@patchflow/tensor';
import {
  matmul,
  colSum,
  layerNormForward,
  layerNormBackward,
  attentionForward,
  attentionBackward,
  copy,
  embeddingForward,
  embeddingBackward,
  embeddingCsr,
  positionBackward,
  crossEntropy,
  lossSum,
  type KernelSpec,
} from '../src/compiled/index.js';
import { compiledGpu, randn, randInt, expectClose, upload, readF32 } from './compiled-helpers.js';

const gpu = await compiledGpu();

describe.skipIf(!gpu)('compiled kernels chained into a transformer block', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('forward output and every gradient match tfjs autodiff of the composite block', async () => {
    const { device, runner } = gpu!;
    const [B, T, H, HD, F] = [2, 9, 1, 64, 96];
    const D = H * HD;
    const R = B * T;
    let seed = 200;
    const init: Record<string, [number[], Float32Array]> = {
      x: [[R, D], randn(R * D, seed++)],
      ln1g: [[D], randn(D, seed++, 0.2).map((v) => 1 + v)],
      ln1b: [[D], randn(D, seed++, 0.1)],
      wqkv: [[D, 3 * D], randn(D * 3 * D, seed++, 0.15)],
      bqkv: [[3 * D], randn(3 * D, seed++, 0.1)],
      wo: [[D, D], randn(D * D, seed++, 0.1)],
      bo: [[D], randn(D, seed++, 0.1)],
      ln2g: [[D], randn(D, seed++, 0.2).map((v) => 1 + v)],
      ln2b: [[D], randn(D, seed++, 0.1)],
      wfc: [[D, F], randn(D * F, seed++, 0.15)],
      bfc: [[F], randn(F, seed++, 0.1)],
      wp: [[F, D], randn(F * D, seed++, 0.1)],
      bp: [[D], randn(D, seed++, 0.1)],
    };
    const dOut = randn(R * D, seed++);

    // reference: the block as model.ts writes it, differentiated by tfjs
    const names = Object.keys(init);
    const ts = names.map((n) => tf.tensor(init[n]![1], init[n]![0]));
    const block = (...p: tf.Tensor[]) => {
      const v = Object.fromEntries(names.map((n, i) => [n, p[i]!]));
      const heads = (m: tf.Tensor) => tf.transpose(tf.reshape(m, [B, T, H, HD]), [0, 2, 1, 3]) as tf.Tensor4D;
      const lin = (x: tf.Tensor, w: string, b: string) => tf.add(tf.matMul(x as tf.Tensor2D, v[w] as tf.Tensor2D), v[b]!);
      const a = layerNormComposite(v.x!, v.ln1g!, v.ln1b!);
      const [q, k, vv] = tf.split(lin(a, 'wqkv', 'bqkv'), 3, 1);
      const att = tf.reshape(tf.transpose(causalAttentionComposite(heads(q!), heads(k!), heads(vv!), 1 / Math.sqrt(HD)), [0, 2, 1, 3]), [R, D]);
      const h = tf.add(v.x!, lin(att, 'wo', 'bo'));
      const g = geluComposite(lin(layerNormComposite(h, v.ln2g!, v.ln2b!), 'wfc', 'bfc'));
      return tf.add(h, lin(g, 'wp', 'bp'));
    };
    const wantOut = await block(...ts).data();
    const dOutT = tf.tensor2d(dOut, [R, D]);
    const grads = tf.grads((...p: tf.Tensor[]) => tf.sum(tf.mul(block(...p), dOutT)))(ts);
    const want = Object.fromEntries(await Promise.all(names.map(async (n, i) => [n, await grads[i]!.data()] as const)));

    // the compiled block
    const buf: Record<string, GPUBuffer> = {};
    for (const n of names) buf[n] = upload(device, init[n]![1]);
    const zeros = (...ns: [string, number][]) => ns.forEach(([n, size]) => (buf[n] = upload(device, new Float32Array(size))));
    zeros(['a', R * D], ['mean1', R], ['rstd1', R], ['qkv', R * 3 * D], ['att', R * D], ['lse', H * R], ['h', R * D]);
    zeros(['m', R * D], ['mean2', R], ['rstd2', R], ['pre', R * F], ['g', R * F], ['out', R * D]);
    buf.dOut = upload(device, dOut);
    zeros(['dh', R * D], ['dpre', R * F], ['dm', R * D], ['datt', R * D], ['delta', H * R], ['dqkv', R * 3 * D], ['da', R * D], ['dx', R * D]);
    for (const n of names.filter((n) => n !== 'x')) zeros(['d' + n, init[n]![1].length]);
    const ln = layerNormForward({ rows: R, cols: D });
    const lnb = layerNormBackward({ rows: R, cols: D, accumulate: true });
    zeros(['partial', Math.max(lnb.scratchFloats, colSum({ m: R, n: 3 * D }).scratchFloats)]);
    const attP = { batch: B, t: T, heads: H, headDim: HD };
    const attB = attentionBackward(attP);
    const steps: [KernelSpec, GPUBuffer[]][] = [];
    const step = (spec: KernelSpec, ...bs: string[]) => steps.push([spec, bs.map((n) => buf[n]!)]);
    const bias = (dy: string, n: number, db: string) => {
      const cs = colSum({ m: R, n });
      step(cs.partial, dy, 'partial');
      step(cs.reduce, 'partial', db);
    };
    // forward
    step(ln, 'x', 'ln1g', 'ln1b', 'a', 'mean1', 'rstd1');
    step(matmul({ m: R, n: 3 * D, k: D, bias: true }), 'a', 'wqkv', 'bqkv', 'qkv');
    step(attentionForward(attP), 'qkv', 'att', 'lse');
    step(matmul({ m: R, n: D, k: D, bias: true, residual: true }), 'att', 'wo', 'bo', 'x', 'h');
    step(ln, 'h', 'ln2g', 'ln2b', 'm', 'mean2', 'rstd2');
    step(matmul({ m: R, n: F, k: D, bias: true, gelu: 'both' }), 'm', 'wfc', 'bfc', 'g', 'pre');
    step(matmul({ m: R, n: D, k: F, bias: true, residual: true }), 'g', 'wp', 'bp', 'h', 'out');
    // backward: MLP projection (dh starts as dOut: the residual path)
    step(copy({ n: R * D }), 'dOut', 'dh');
    step(matmul({ m: F, n: D, k: R, transA: true }), 'g', 'dOut', 'dwp');
    bias('dOut', D, 'dbp');
    step(matmul({ m: R, n: F, k: D, transB: true, geluBackward: true }), 'dOut', 'wp', 'pre', 'dpre');
    step(matmul({ m: D, n: F, k: R, transA: true }), 'm', 'dpre', 'dwfc');
    bias('dpre', F, 'dbfc');
    step(matmul({ m: R, n: D, k: F, transB: true }), 'dpre', 'wfc', 'dm');
    step(lnb.dx, 'dm', 'h', 'ln2g', 'mean2', 'rstd2', 'dh');
    step(lnb.partial, 'dm', 'h', 'mean2', 'rstd2', 'partial');
    step(lnb.reduce, 'partial', 'dln2g', 'dln2b');
    // attention projection and attention
    step(matmul({ m: D, n: D, k: R, transA: true }), 'att', 'dh', 'dwo');
    bias('dh', D, 'dbo');
    step(matmul({ m: R, n: D, k: D, transB: true }), 'dh', 'wo', 'datt');
    step(attB.delta, 'att', 'datt', 'delta');
    step(attB.dkdv, 'qkv', 'datt', 'lse', 'delta', 'dqkv');
    step(attB.dq, 'qkv', 'datt', 'lse', 'delta', 'dqkv');
    step(matmul({ m: D, n: 3 * D, k: R, transA: true }), 'a', 'dqkv', 'dwqkv');
    bias('dqkv', 3 * D, 'dbqkv');
    step(matmul({ m: R, n: D, k: 3 * D, transB: true }), 'dqkv', 'wqkv', 'da');
    // dx = dh (the residual path) + LN1 backward
    step(copy({ n: R * D }), 'dh', 'dx');
    step(lnb.dx, 'da', 'x', 'ln1g', 'mean1', 'rstd1', 'dx');
    step(lnb.partial, 'da', 'x', 'mean1', 'rstd1', 'partial');
    step(lnb.reduce, 'partial', 'dln1g', 'dln1b');
    await runner.run(...steps);

    // f32 on both sides through a dozen kernels: relative 1e-3 with a small absolute floor
    expectClose(await readF32(device, buf.out!, R * D), wantOut, 'out', 1e-4, 1e-3);
    for (const n of names) {
      const got = await readF32(device, buf[n === 'x' ? 'dx' : 'd' + n]!, init[n]![1].length);
      expectClose(got, want[n]!, `d${n}`, 2e-4, 2e-3);
    }
  });

  it('patch embedding + learned positions, final LN, tied LM head and K-label cross-entropy: loss and gradients', async () => {
    const { device, runner } = gpu!;
    const [B, T, K, D, V] = [2, 5, 2, 32, 40];
    const R = B * T;
    const ids = randInt(R * K, 301, V);
    const labels = randInt(R * K, 302, V);
    const E = randn(V * D, 303, 0.5);
    const pos = randn(T * D, 304, 0.5);
    const g = randn(D, 305, 0.2).map((v) => 1 + v);
    const b = randn(D, 306, 0.1);

    // reference: patch-training's averagePatches of gathered embeddings, positions, ln_f, tied head, mean CE
    const names = ['E', 'pos', 'g', 'b'];
    const ts = [tf.tensor2d(E, [V, D]), tf.tensor2d(pos, [T, D]), tf.tensor1d(g), tf.tensor1d(b)];
    const labelsT = tf.tensor2d(labels, [R, K], 'int32');
    const idsT = tf.tensor1d(ids, 'int32');
    const lossOf = (Et: tf.Tensor, pt: tf.Tensor, gt: tf.Tensor, bt: tf.Tensor) => {
      const emb = tf.mean(tf.reshape(tf.gather(Et, idsT), [B, T, K, D]), 2);
      const x = tf.reshape(tf.add(emb, pt), [R, D]);
      const logits = tf.matMul(layerNormComposite(x, gt, bt), Et, false, true) as tf.Tensor2D;
      return tf.mean(crossEntropyComposite(logits, labelsT)) as tf.Scalar;
    };
    const wantLoss = (await lossOf(ts[0]!, ts[1]!, ts[2]!, ts[3]!).data())[0]!;
    const grads = tf.grads((a: tf.Tensor, p: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => lossOf(a, p, gg, bb))(ts);
    const want = await Promise.all(grads.map((t) => t.data()));

    const buf: Record<string, GPUBuffer> = { ids: upload(device, ids), labels: upload(device, labels), E: upload(device, E), pos: upload(device, pos), g: upload(device, g), b: upload(device, b) };
    const zeros = (...ns: [string, number][]) => ns.forEach(([n, size]) => (buf[n] = upload(device, new Float32Array(size))));
    zeros(['x', R * D], ['f', R * D], ['mean', R], ['rstd', R], ['logits', R * V], ['loss', R], ['total', 4]);
    zeros(['dE', V * D], ['df', R * D], ['dx', R * D], ['dpos', T * D], ['dg', D], ['db', D]);
    const csr = embeddingCsr(ids, V);
    buf.offsets = upload(device, csr.offsets);
    buf.positions = upload(device, csr.positions);
    const lnb = layerNormBackward({ rows: R, cols: D });
    zeros(['partial', lnb.scratchFloats]);
    const steps: [KernelSpec, GPUBuffer[]][] = [];
    const step = (spec: KernelSpec, ...bs: string[]) => steps.push([spec, bs.map((n) => buf[n]!)]);
    step(embeddingForward({ rows: B, t: T, d: D, vocab: V, k: K, positions: true }), 'ids', 'E', 'pos', 'x');
    step(layerNormForward({ rows: R, cols: D }), 'x', 'g', 'b', 'f', 'mean', 'rstd');
    // tied head: logits = f·Eᵀ (E stored [V, d]: transB)
    step(matmul({ m: R, n: V, k: D, transB: true }), 'f', 'E', 'logits');
    // loss rows and dlogits (mean over rows: gradScale 1/R) in place
    step(crossEntropy({ rows: R, vocab: V, k: K }), 'logits', 'labels', 'loss');
    step(lossSum({ rows: R, scale: 1 / R }), 'loss', 'total');
    // head's weight gradient dE = dlogitsᵀ·f (TN), then df = dlogits·E (NN)
    step(matmul({ m: V, n: D, k: R, transA: true }), 'logits', 'f', 'dE');
    step(matmul({ m: R, n: D, k: V }), 'logits', 'E', 'df');
    step(lnb.dx, 'df', 'x', 'g', 'mean', 'rstd', 'dx');
    step(lnb.partial, 'df', 'x', 'mean', 'rstd', 'partial');
    step(lnb.reduce, 'partial', 'dg', 'db');
    // embedding backward accumulates onto the head's gradient (tied weights)
    step(embeddingBackward({ rows: B, t: T, d: D, vocab: V, k: K, accumulate: true }), 'offsets', 'positions', 'dx', 'dE');
    step(positionBackward({ rows: B, t: T, d: D }), 'dx', 'dpos');
    await runner.run(...steps);

    expectClose(await readF32(device, buf.total!, 1), [wantLoss], 'loss', 1e-5, 1e-5);
    for (const [i, n] of [[0, 'dE'], [1, 'dpos'], [2, 'dg'], [3, 'db']] as const) {
      expectClose(await readF32(device, buf[n]!, want[i]!.length), want[i]!, `${n} (${names[i]})`, 1e-5, 2e-3);
    }
  });
});
