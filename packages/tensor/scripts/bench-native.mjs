#!/usr/bin/env node
// Kernel microbenchmark of native addon binaries, side by side in one process: the default model's
// shapes (d 256, 4 heads, T 128, batch 16: 2048 token rows, vocab 256). For every kernel it calls each
// binary in turn, `--reps` times, and reports the best time of each (the best of many interleaved runs
// is what survives a shared, noisy machine), and each binary's time relative to the first.
//
//   node scripts/bench-native.mjs [--reps 30] [--threads N] [--simd avx512|avx2|scalar] A.node [B.node ...]
//   node scripts/bench-native.mjs prebuilds/linux-x64/patchflow_cpu.node /tmp/old/patchflow_cpu.node
//
// --simd sets PATCHFLOW_SIMD before the binaries load (binaries without runtime dispatch ignore it).
import { createRequire } from 'node:module';
import path from 'node:path';

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  argv.splice(i, 2);
  return v;
};
const reps = Number(opt('--reps', '30'));
const threads = opt('--threads', undefined);
const simd = opt('--simd', undefined);
if (simd) process.env.PATCHFLOW_SIMD = simd;
if (!argv.length) {
  console.error('usage: bench-native.mjs [--reps N] [--threads N] [--simd LEVEL] A.node [B.node ...]');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const bins = argv.map((f) => {
  const a = require(path.resolve(f));
  if (threads) a.setThreads(Number(threads));
  return { file: f, a, info: a.info() };
});

let seed = 1;
const rnd = (n, scale = 1) => {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    x[i] = ((seed / 2 ** 32) * 2 - 1) * scale;
  }
  return x;
};
const f32 = (n) => new Float32Array(n);

const R = 2048, D = 256, FF = 1024, V = 256, BH = 64, T = 128, HD = 64;
const x = rnd(R * D), w = rnd(D * FF, 0.05), wq = rnd(D * 3 * D, 0.05), h = rnd(R * FF), w2 = rnd(FF * D, 0.05);
const gamma = rnd(D), beta = rnd(D);
const q = rnd(BH * T * HD), k = rnd(BH * T * HD), v = rnd(BH * T * HD);
const logits = rnd(R * V, 3);
const labels = Int32Array.from({ length: R }, (_, i) => (i * 7919) % V);
const P = 1 << 20;
const pw = rnd(P), pg = rnd(P), pm = rnd(P, 0.1), pv = rnd(P, 0.01).map(Math.abs);
const mask = Int32Array.from({ length: (D / 32) * (FF / 32) }, (_, i) => ((i * 2654435761) >>> 7) & 1);

// each case: name, flops (0: report ms only), fn(addon) running one call into preallocated outputs
const cases = [];
const mm = (name, m, n, kk, ta, tb, A, B) => {
  const C = f32(m * n);
  cases.push([`matmul ${name} ${m}x${n}x${kk}`, 2 * m * n * kk, (a) => a.matmul(A, B, C, 1, 1, 1, m, n, kk, ta, tb, null, 0, 0)]);
};
mm('qkv A·B', R, 3 * D, D, 0, 0, x, wq);
mm('fc A·B', R, FF, D, 0, 0, x, w);
mm('proj A·B', R, D, FF, 0, 0, h, w2);
mm('fc dX A·Bᵀ', R, D, FF, 0, 1, h, w);
mm('fc dW Aᵀ·B', D, FF, R, 1, 0, x, h);
{
  const out = f32(BH * T * HD), lse = f32(BH * T), dq = f32(BH * T * HD), dk = f32(BH * T * HD), dv = f32(BH * T * HD);
  cases.push([`attention fwd BH${BH} T${T} D${HD}`, 0, (a) => a.attention(q, k, v, BH, T, HD, 0.125, out, lse)]);
  cases.push([`attention bwd BH${BH} T${T} D${HD}`, 0, (a) => {
    a.attention(q, k, v, BH, T, HD, 0.125, out, lse);
    a.attentionGrad(q, k, v, out, lse, q, BH, T, HD, 0.125, dq, dk, dv);
  }]);
}
{
  const y = f32(R * D), mean = f32(R), rstd = f32(R), dx = f32(R * D), dg = f32(D), db = f32(D);
  cases.push([`layerNorm fwd ${R}x${D}`, 0, (a) => a.layerNorm(x, gamma, beta, R, D, 1e-5, y, mean, rstd)]);
  cases.push([`layerNorm bwd ${R}x${D}`, 0, (a) => a.layerNormGrad(x, x, gamma, mean, rstd, R, D, dx, dg, db)]);
}
{
  const y = f32(R * FF), dx = f32(R * FF);
  cases.push([`gelu fwd ${R}x${FF}`, 0, (a) => a.gelu(h, y, R * FF)]);
  cases.push([`gelu bwd ${R}x${FF}`, 0, (a) => a.geluGrad(h, h, dx, R * FF)]);
}
{
  const loss = f32(R), lse = f32(R), dy = f32(R).fill(1 / R), dl = f32(R * V), sm = f32(R * V);
  cases.push([`crossEntropy fwd+bwd ${R}x${V}`, 0, (a) => {
    a.crossEntropy(logits, labels, R, V, 1, loss, lse);
    a.crossEntropyGrad(logits, labels, lse, dy, R, V, 1, dl);
  }]);
  cases.push([`softmax ${R}x${V}`, 0, (a) => a.softmax(logits, sm, R, V)]);
}
{
  const wo = f32(P), mo = f32(P), vo = f32(P);
  cases.push([`adamw ${P}`, 0, (a) => a.adamw(pw, pg, pm, pv, P, 1, 0.9, 0.999, 1e-8, 0.999, 1e-3, 0.5, wo, mo, vo)]);
}
{
  const y = f32(R * FF), dxs = f32(R * D), dws = f32(D * FF);
  cases.push([`blockSparse fwd ${R}x${D}x${FF} b32 50%`, 0, (a) => a.blockSparseMatMul(x, w, mask, y, R, D, FF, 32)]);
  cases.push([`blockSparse bwd ${R}x${D}x${FF} b32 50%`, 0, (a) => a.blockSparseMatMulGrad(x, w, mask, h, dxs, dws, R, D, FF, 32)]);
}
{
  const out = f32(R * D), tr = f32(R * FF);
  cases.push([`sum rows ${R}x${D}`, 0, (a) => a.sum(x, 1, R, D, out.subarray(0, D))]);
  cases.push([`transpose [16,128,4,64]->[16,4,128,64]`, 0, (a) => a.transpose(x.subarray(0, 16 * 128 * 4 * 64), tr.subarray(0, 16 * 128 * 4 * 64), [16, 128, 4, 64], [0, 2, 1, 3])]);
  cases.push([`binary add bias ${R}x${FF}`, 0, (a) => a.binary(0, 0, h, R * FF, w.subarray(0, FF), FF, tr)]);
}

console.log(`binaries (reps ${reps}, best of each):`);
bins.forEach((b, i) => console.log(`  [${i}] ${b.file}: simd ${b.info.simd}, threads ${b.info.threads}`));
const rows = [];
for (const [name, flops, fn] of cases) {
  const best = bins.map(() => Infinity);
  for (const b of bins) fn(b.a); // warm-up
  for (let r = 0; r < reps; r++)
    bins.forEach((b, i) => {
      const t0 = performance.now();
      fn(b.a);
      best[i] = Math.min(best[i], performance.now() - t0);
    });
  rows.push([name, ...best.map((ms, i) => `${ms.toFixed(3)} ms${flops ? ` ${(flops / ms / 1e6).toFixed(0)} GF/s` : ''}${i ? ` (${(ms / best[0]).toFixed(2)}x)` : ''}`)]);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c])).join('  '));
