/**
 * The compiled kernels against @patchflow/tensor's own composite definitions on the tfjs cpu backend,
 * with tensors laid out the way packages/trainer's model.ts lays them out (qkv split and heads
 * reshaped, GELU MLP, label-smoothed loss, AdamW step): guards against a misread contract, which
 * tests against hand-written references cannot catch. Gradients come from tfjs autodiff.
 */
import { describe, it, beforeAll } from 'vitest';
import { tf, useBackend, causalAttentionComposite, layerNormComposite, geluComposite, crossEntropyComposite, adamwUpdateComposite } from '@patchflow/tensor';
import { attentionForward, attentionBackward, layerNormForward, layerNormBackward, matmul, crossEntropy, adamw, adamwUniform, decayBits, createBuffer, uploadUniform } from '../src/compiled/index.js';
import { compiledGpu, randn, randInt, expectClose, upload, readF32 } from './compiled-helpers.js';

const gpu = await compiledGpu();

describe.skipIf(!gpu)('compiled kernels vs @patchflow/tensor composites (tfjs cpu)', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('attention on model.ts-style heads: out and d(qkv)', async () => {
    const { device, runner } = gpu!;
    const [B, T, H, HD] = [2, 9, 2, 64]; // hd 64: lavapipe compiles hd 32 kernels slowly (tested in compiled-attention)
    const D = H * HD;
    const qkvData = randn(B * T * 3 * D, 101);
    const doutData = randn(B * T * D, 102);
    const qkvT = tf.tensor2d(qkvData, [B * T, 3 * D]);
    const doutT = tf.tensor2d(doutData, [B * T, D]);
    // model.ts: split, heads [B,T,H,hd] -> [B,H,T,hd], attention, merge back
    const f = (qkv: tf.Tensor) => {
      const heads = (m: tf.Tensor) => tf.transpose(tf.reshape(m, [B, T, H, HD]), [0, 2, 1, 3]) as tf.Tensor4D;
      const [q, k, v] = tf.split(qkv, 3, 1);
      const att = causalAttentionComposite(heads(q!), heads(k!), heads(v!), 1 / Math.sqrt(HD));
      return tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [B * T, D]);
    };
    const wantOut = await f(qkvT).data();
    const wantGrad = await tf.grad((x: tf.Tensor) => tf.sum(tf.mul(f(x), doutT)))(qkvT).data();
    const p = { batch: B, t: T, heads: H, headDim: HD };
    const bw = attentionBackward(p);
    const bufs = {
      qkv: upload(device, qkvData),
      out: createBuffer(device, B * T * D * 4),
      lse: createBuffer(device, B * H * T * 4),
      dout: upload(device, doutData),
      delta: createBuffer(device, B * H * T * 4),
      dqkv: upload(device, new Float32Array(B * T * 3 * D).fill(NaN)),
    };
    await runner.run([attentionForward(p), bufs], [bw.delta, bufs], [bw.dkdv, bufs], [bw.dq, bufs]);
    // both sides f32 (tfjs cpu): tolerances as the float64 tests
    expectClose(await readF32(device, bufs.out, B * T * D), wantOut, 'out', 2e-5, 1e-4);
    expectClose(await readF32(device, bufs.dqkv, B * T * 3 * D), wantGrad, 'dqkv', 1e-4, 1e-3);
  });

  it('LayerNorm (eps 1e-5) forward and its gradients', async () => {
    const { device, runner } = gpu!;
    const [R, C] = [13, 48];
    const x = randn(R * C, 111, 2);
    const g = randn(C, 112);
    const b = randn(C, 113);
    const dy = randn(R * C, 114);
    const [xT, gT, bT, dyT] = [tf.tensor2d(x, [R, C]), tf.tensor1d(g), tf.tensor1d(b), tf.tensor2d(dy, [R, C])];
    const want = await layerNormComposite(xT, gT, bT).data();
    const grads = tf.grads((xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(layerNormComposite(xx, gg, bb), dyT)))([xT, gT, bT]);
    const [wdx, wdg, wdb] = await Promise.all(grads.map((t) => t.data()));
    const bw = layerNormBackward({ rows: R, cols: C });
    const bufs = {
      x: upload(device, x),
      gamma: upload(device, g),
      beta: upload(device, b),
      y: createBuffer(device, R * C * 4),
      mean: createBuffer(device, R * 4),
      rstd: createBuffer(device, R * 4),
      dy: upload(device, dy),
      dx: createBuffer(device, R * C * 4),
      partial: createBuffer(device, bw.scratchFloats * 4),
      dgamma: createBuffer(device, C * 4),
      dbeta: createBuffer(device, C * 4),
    };
    await runner.run([layerNormForward({ rows: R, cols: C }), bufs], [bw.dx, bufs], [bw.partial, bufs], [bw.reduce, bufs]);
    expectClose(await readF32(device, bufs.y, R * C), want, 'y', 1e-4, 1e-4);
    expectClose(await readF32(device, bufs.dx, R * C), wdx!, 'dx', 1e-4, 1e-3);
    expectClose(await readF32(device, bufs.dgamma, C), wdg!, 'dgamma', 1e-4, 1e-4);
    expectClose(await readF32(device, bufs.dbeta, C), wdb!, 'dbeta', 1e-4, 1e-4);
  });

  it('MLP fc: gelu(x·W + b) as tfjs fused matmul + ops.ts gelu', async () => {
    const { device, runner } = gpu!;
    const [M, K, N] = [21, 16, 40];
    const x = randn(M * K, 121);
    const w = randn(K * N, 122, 0.5);
    const b = randn(N, 123);
    const want = await geluComposite(tf.add(tf.matMul(tf.tensor2d(x, [M, K]), tf.tensor2d(w, [K, N])), tf.tensor1d(b))).data();
    const bufs = { A: upload(device, x), B: upload(device, w), bias: upload(device, b), C: createBuffer(device, M * N * 4), pre: createBuffer(device, M * N * 4) };
    await runner.run([matmul({ m: M, n: N, k: K, bias: true, gelu: 'both' }), bufs]);
    expectClose(await readF32(device, bufs.C, M * N), want, 'gelu(xW+b)', 1e-5, 1e-4);
  });

  it('label-smoothed patch loss (examples.ts formula over ops.ts crossEntropy) and its gradient', async () => {
    const { device, runner } = gpu!;
    const [R, V, K, eps] = [6, 37, 2, 0.1];
    const logits = randn(R * V, 131, 2);
    const labels = randInt(R * K, 132, V);
    const labelsT = tf.tensor2d(labels, [R, K], 'int32');
    // plugins/examples.ts labelSmoothing().loss
    const loss = (lg: tf.Tensor) => {
      const l2 = lg as tf.Tensor2D;
      const hard = tf.mean(crossEntropyComposite(l2, labelsT));
      const uniform = tf.mean(tf.sub(tf.logSumExp(l2, 1), tf.mean(l2, 1)));
      return tf.add(tf.mul(hard, 1 - eps), tf.mul(uniform, eps)) as tf.Scalar;
    };
    const lT = tf.tensor2d(logits, [R, V]);
    const wantLoss = (await loss(lT).data())[0]!;
    const wantGrad = await tf.grad(loss)(lT).data();
    const bufs = { logits: upload(device, logits), labels: upload(device, labels), loss: createBuffer(device, R * 4) };
    await runner.run([crossEntropy({ rows: R, vocab: V, k: K, smoothing: eps }), bufs]);
    const perRow = await readF32(device, bufs.loss, R);
    expectClose([perRow.reduce((a, v) => a + v, 0) / R], [wantLoss], 'loss', 1e-5, 1e-5);
    expectClose(await readF32(device, bufs.logits, R * V), wantGrad, 'dlogits', 1e-6, 1e-4);
  });

  it('AdamW step as adamwUpdateComposite (optim.ts arguments)', async () => {
    const { device, runner } = gpu!;
    const n = 200;
    const o = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const [lr, t, clipScale] = [1e-3, 3, 0.5];
    const w = randn(n, 141);
    const g = randn(n, 142);
    const m = randn(n, 143, 0.1);
    const v = randn(n, 144, 0.1).map(Math.abs);
    const bc1 = 1 - Math.pow(o.beta1, t);
    const bc2 = 1 - Math.pow(o.beta2, t);
    const [w1, m1, v1] = adamwUpdateComposite(tf.tensor1d(w), tf.tensor1d(g), tf.tensor1d(m), tf.tensor1d(v), tf.scalar(clipScale), {
      beta1: o.beta1,
      beta2: o.beta2,
      eps: o.eps,
      decay: 1 - lr * o.weightDecay,
      stepSize: lr / bc1,
      bc2,
    });
    const bufs = {
      w: upload(device, w),
      g: upload(device, g),
      m: upload(device, m),
      v: upload(device, v),
      decay: upload(device, decayBits(n, [[0, n]])),
      clip: upload(device, Float32Array.from([0, clipScale, 0, 0])),
      step: uploadUniform(device, adamwUniform(o, lr, t)),
    };
    await runner.run([adamw({ ...o, n }), bufs]);
    expectClose(await readF32(device, bufs.w, n), await w1.data(), 'w', 1e-6, 1e-5);
    expectClose(await readF32(device, bufs.m, n), await m1.data(), 'm', 1e-7, 1e-5);
    expectClose(await readF32(device, bufs.v, n), await v1.data(), 'v', 1e-7, 1e-5);
  });
});
