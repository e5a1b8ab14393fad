/** The cpu backend's self-description, fallback without the addon, and a whole GPT-like training step vs stock tfjs-cpu. */
import { describe, it, expect, vi } from 'vitest';
import { tf, on, rand, expectClose, maxAbs } from './helpers.js';
import { cpuBackend, nativeInfo, layerNorm, gelu, causalAttention, crossEntropy } from '../src/index.js';

describe('cpu backend', () => {
  it('reports native kernels, threads and SIMD level', async () => {
    await on('cpu', () => undefined);
    const info = nativeInfo();
    expect(info.loaded).toBe(true);
    expect(info.threads).toBeGreaterThanOrEqual(1);
    expect(['avx512', 'avx2', 'scalar']).toContain(info.simd);
    const caps = cpuBackend.capabilities();
    expect(caps.fusedOps).toHaveLength(5);
    expect(caps.notes?.join(' ')).toMatch(/native kernels loaded/);
    expect(caps.notes?.join(' ')).toMatch(/BatchMatMul/);
  });

  it('without the addon it says why and registers no kernels', async () => {
    const saved = process.env.PATCHFLOW_NATIVE;
    process.env.PATCHFLOW_NATIVE = '/nonexistent/patchflow_cpu.node';
    try {
      vi.resetModules();
      const native = await import('../src/cpu/native.js');
      const kernels = await import('../src/cpu/kernels.js');
      const info = native.nativeInfo();
      expect(info.loaded).toBe(false);
      expect(info.reason).toMatch(/failed to load.*using stock tfjs kernels/);
      expect(kernels.nativeKernels(native.nativeAddon())).toEqual([]);
      process.env.PATCHFLOW_NATIVE = 'off';
      vi.resetModules();
      const off = await import('../src/cpu/native.js');
      expect(off.nativeInfo()).toMatchObject({ loaded: false, threads: 1, simd: 'none' });
    } finally {
      if (saved === undefined) delete process.env.PATCHFLOW_NATIVE;
      else process.env.PATCHFLOW_NATIVE = saved;
      vi.resetModules();
    }
  });
});

describe('a small GPT training step: cpu (native) vs stock tfjs-cpu (composites, JS kernels)', { timeout: 60_000 }, () => {
  it('loss and every parameter gradient agree', async () => {
    const [B, T, d, H, V, L] = [2, 24, 32, 2, 50, 2];
    const hd = d / H;
    let seed = 100;
    const init = (shape: number[], scale: number, c?: number) => ({ shape, data: c === undefined ? rand(shape.reduce((a, b) => a * b, 1), seed++, scale) : new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(c) });
    const spec: Record<string, { shape: number[]; data: Float32Array }> = { tok: init([V, d], 0.5), pos: init([T, d], 0.1), lnfw: init([d], 0, 1), lnfb: init([d], 0.1) };
    for (let l = 0; l < L; l++)
      Object.assign(spec, {
        [`l1w${l}`]: init([d], 0.2), [`l1b${l}`]: init([d], 0.1), [`qkv${l}`]: init([d, 3 * d], 0.3), [`qkvb${l}`]: init([3 * d], 0.1),
        [`pw${l}`]: init([d, d], 0.2), [`pb${l}`]: init([d], 0.1), [`l2w${l}`]: init([d], 0.2), [`l2b${l}`]: init([d], 0.1),
        [`fw${l}`]: init([d, 4 * d], 0.2), [`fb${l}`]: init([4 * d], 0.1), [`f2w${l}`]: init([4 * d, d], 0.1), [`f2b${l}`]: init([d], 0.1),
      });
    const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 17 + 5) % V);
    const labels = Int32Array.from({ length: B * T * 2 }, (_, i) => (i * 29 + 1) % V);
    const step = () => {
      const P: Record<string, tf.Variable> = {};
      for (const [k, v] of Object.entries(spec)) P[k] = tf.variable(tf.tensor(v.data, v.shape), true, `${k}_${Math.random()}`);
      const idT = tf.tensor1d(ids, 'int32');
      const lbT = tf.tensor2d(labels, [B * T, 2], 'int32');
      const { value, grads } = tf.variableGrads(() => {
        let hs = tf.reshape(tf.add(tf.reshape(tf.gather(P.tok!, idT), [B, T, d]), P.pos!), [B * T, d]) as tf.Tensor2D;
        const lin = (x: tf.Tensor2D, w: string, b: string) => tf.fused.matMul({ a: x, b: P[w]! as tf.Tensor2D, bias: P[b]! });
        const heads = (m: tf.Tensor) => tf.transpose(tf.reshape(m, [B, T, H, hd]), [0, 2, 1, 3]) as tf.Tensor4D;
        for (let l = 0; l < L; l++) {
          const a = layerNorm(hs, P[`l1w${l}`]!, P[`l1b${l}`]!);
          const [q, k, v] = tf.split(lin(a, `qkv${l}`, `qkvb${l}`), 3, 1);
          const att = causalAttention(heads(q!), heads(k!), heads(v!));
          hs = tf.add(hs, lin(tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [B * T, d]), `pw${l}`, `pb${l}`));
          const m = layerNorm(hs, P[`l2w${l}`]!, P[`l2b${l}`]!);
          hs = tf.add(hs, lin(gelu(lin(m, `fw${l}`, `fb${l}`)) as tf.Tensor2D, `f2w${l}`, `f2b${l}`));
        }
        const logits = tf.matMul(layerNorm(hs, P.lnfw!, P.lnfb!), P.tok!, false, true) as tf.Tensor2D;
        return tf.mean(crossEntropy(logits, lbT)) as tf.Scalar;
      }, Object.values(P));
      const out = { loss: value.dataSync()[0]!, grads: Object.fromEntries(Object.entries(P).map(([k, v]) => [k, Float32Array.from(grads[v.name]!.dataSync())])) };
      tf.dispose([value, idT, lbT, ...Object.values(grads), ...Object.values(P)]);
      return out;
    };
    const ours = await on('cpu', step);
    const stock = await on('tfjs-cpu', step);
    expect(Math.abs(ours.loss - stock.loss)).toBeLessThan(1e-4 * Math.abs(stock.loss));
    for (const k of Object.keys(spec)) expectClose(ours.grads[k]!, stock.grads[k]!, 1e-3 * maxAbs(stock.grads[k]!) + 1e-7, 1e-2, `grad ${k}`);
  });
});
