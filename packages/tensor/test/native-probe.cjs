// Checks every function of a native addon binary against plain float64 references, in any Node
// (no dependencies, no tfjs): used by simd.test.ts under emulated CPUs (qemu-x86_64 -cpu Nehalem /
// Haswell) and for the linux-arm64 binary under qemu-aarch64, where vitest cannot run.
//
//   node test/native-probe.cjs path/to/patchflow_cpu.node
//
// Prints one JSON line: { info: addon.info(), errors: { kernel: worst |a - e| / (1 + |e|) }, ok }.
'use strict';
const addon = require(require('node:path').resolve(process.argv[2]));

let seed = 7;
const rand = (n, scale = 1) => {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    x[i] = ((seed / 4294967296) * 2 - 1) * scale;
  }
  return x;
};
const errors = {};
const check = (name, actual, expected) => {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.abs(actual[i] - expected[i]) / (1 + Math.abs(expected[i]));
    worst = Number.isNaN(e) ? Infinity : Math.max(worst, e);
  }
  errors[name] = Math.max(errors[name] ?? 0, worst);
};

// matmul: all four layouts, sizes across the micro-tile and K-blocking edges, bias + relu epilogue
for (const [m, n, k] of [[1, 1, 1], [7, 33, 19], [67, 45, 300]]) {
  for (const ta of [0, 1])
    for (const tb of [0, 1]) {
      const a = rand(m * k), b = rand(k * n), bias = rand(n), c = new Float32Array(m * n);
      addon.matmul(a, b, c, 1, 1, 1, m, n, k, ta, tb, bias, 1, 0);
      const ref = new Float64Array(m * n);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let s = bias[j];
          for (let p = 0; p < k; p++) s += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
          ref[i * n + j] = Math.max(s, 0);
        }
      check('matmul', c, ref);
    }
}

// GELU (tanh approximation) and its gradient
{
  const n = 1000, x = rand(n, 6), y = new Float32Array(n), dy = rand(n), dx = new Float32Array(n);
  addon.gelu(x, y, n);
  addon.geluGrad(x, dy, dx, n);
  const C = Math.sqrt(2 / Math.PI);
  check('gelu', y, Array.from(x, (v) => 0.5 * v * (1 + Math.tanh(C * (v + 0.044715 * v ** 3)))));
  check('geluGrad', dx, Array.from(x, (v, i) => {
    const t = Math.tanh(C * (v + 0.044715 * v ** 3));
    return dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * C * (1 + 3 * 0.044715 * v * v));
  }));
}

// LayerNorm and its gradient
{
  const rows = 9, c = 70, x = rand(rows * c, 2), g = rand(c), b = rand(c), dy = rand(rows * c);
  const y = new Float32Array(rows * c), mean = new Float32Array(rows), rstd = new Float32Array(rows);
  const dx = new Float32Array(rows * c), dg = new Float32Array(c), db = new Float32Array(c);
  addon.layerNorm(x, g, b, rows, c, 1e-5, y, mean, rstd);
  addon.layerNormGrad(dy, x, g, mean, rstd, rows, c, dx, dg, db);
  const ry = [], rdx = [], rdg = new Float64Array(c), rdb = new Float64Array(c);
  for (let r = 0; r < rows; r++) {
    const xr = Array.from(x.subarray(r * c, r * c + c));
    const mu = xr.reduce((s, v) => s + v, 0) / c;
    const rs = 1 / Math.sqrt(xr.reduce((s, v) => s + (v - mu) ** 2, 0) / c + 1e-5);
    const xh = xr.map((v) => (v - mu) * rs);
    const gd = xh.map((_, i) => dy[r * c + i] * g[i]);
    const m1 = gd.reduce((s, v) => s + v, 0) / c, m2 = gd.reduce((s, v, i) => s + v * xh[i], 0) / c;
    xh.forEach((v, i) => {
      ry.push(v * g[i] + b[i]);
      rdx.push(rs * (gd[i] - m1 - v * m2));
      rdg[i] += dy[r * c + i] * v;
      rdb[i] += dy[r * c + i];
    });
  }
  check('layerNorm', y, ry);
  check('layerNormGrad', dx, rdx);
  check('layerNormGrad', dg, rdg);
  check('layerNormGrad', db, rdb);
}

// softmax and cross-entropy (K = 2 labels per row, one out of range) with its gradient
{
  const N = 5, V = 37, K = 2, x = rand(N * V, 4), labels = Int32Array.from({ length: N * K }, (_, i) => (i === 3 ? V + 1 : (i * 7) % V));
  const sm = new Float32Array(N * V), loss = new Float32Array(N), lse = new Float32Array(N), dy = rand(N), dl = new Float32Array(N * V);
  addon.softmax(x, sm, N, V);
  addon.crossEntropy(x, labels, N, V, K, loss, lse);
  addon.crossEntropyGrad(x, labels, lse, dy, N, V, K, dl);
  const rsm = [], rloss = [], rdl = [];
  for (let r = 0; r < N; r++) {
    const row = Array.from(x.subarray(r * V, r * V + V));
    const mx = Math.max(...row);
    const l = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
    const p = row.map((v) => Math.exp(v - l));
    rsm.push(...p);
    let acc = 0, valid = 0;
    const grad = p.map(() => 0);
    for (let k = 0; k < K; k++) {
      const y = labels[r * K + k];
      if (y >= 0 && y < V) {
        acc += l - row[y];
        valid++;
        grad[y] -= dy[r] / K;
      }
    }
    rloss.push(acc / K);
    rdl.push(...grad.map((gv, i) => gv + (dy[r] * valid * p[i]) / K));
  }
  check('softmax', sm, rsm);
  check('crossEntropy', loss, rloss);
  check('crossEntropyGrad', dl, rdl);
}

// causal attention (T spans two row blocks of 64) and its gradient
{
  const BH = 2, T = 70, D = 8, scale = 1 / Math.sqrt(D), n = BH * T * D;
  const q = rand(n), k = rand(n), v = rand(n), dout = rand(n);
  const out = new Float32Array(n), lse = new Float32Array(BH * T), dq = new Float32Array(n), dk = new Float32Array(n), dv = new Float32Array(n);
  addon.attention(q, k, v, BH, T, D, scale, out, lse);
  addon.attentionGrad(q, k, v, out, lse, dout, BH, T, D, scale, dq, dk, dv);
  const ro = new Float64Array(n), rq = new Float64Array(n), rk = new Float64Array(n), rv = new Float64Array(n);
  for (let h = 0; h < BH; h++) {
    const o = h * T * D;
    const P = [];
    for (let i = 0; i < T; i++) {
      const s = [];
      for (let j = 0; j <= i; j++) {
        let d = 0;
        for (let c = 0; c < D; c++) d += q[o + i * D + c] * k[o + j * D + c];
        s.push(d * scale);
      }
      const mx = Math.max(...s), z = s.reduce((a, b) => a + Math.exp(b - mx), 0);
      P.push(s.map((x) => Math.exp(x - mx) / z));
      for (let j = 0; j <= i; j++) for (let c = 0; c < D; c++) ro[o + i * D + c] += P[i][j] * v[o + j * D + c];
    }
    for (let i = 0; i < T; i++) {
      const dP = P[i].map((_, j) => {
        let d = 0;
        for (let c = 0; c < D; c++) d += dout[o + i * D + c] * v[o + j * D + c];
        return d;
      });
      const dot = dP.reduce((a, b, j) => a + b * P[i][j], 0);
      for (let j = 0; j <= i; j++) {
        const dS = P[i][j] * (dP[j] - dot) * scale;
        for (let c = 0; c < D; c++) {
          rq[o + i * D + c] += dS * k[o + j * D + c];
          rk[o + j * D + c] += dS * q[o + i * D + c];
          rv[o + j * D + c] += P[i][j] * dout[o + i * D + c];
        }
      }
    }
  }
  check('attention', out, ro);
  check('attentionGrad', dq, rq);
  check('attentionGrad', dk, rk);
  check('attentionGrad', dv, rv);
}

// AdamW
{
  const n = 100, w = rand(n), g = rand(n), m = rand(n, 0.1), v = rand(n, 0.01).map(Math.abs);
  const wo = new Float32Array(n), mo = new Float32Array(n), vo = new Float32Array(n);
  const [scale, b1, b2, eps, decay, step, bc2] = [0.5, 0.9, 0.999, 1e-8, 0.99, 1e-2, 0.3];
  addon.adamw(w, g, m, v, n, scale, b1, b2, eps, decay, step, bc2, wo, mo, vo);
  const rm = [], rv = [], rw = [];
  for (let i = 0; i < n; i++) {
    const gi = g[i] * scale, mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi;
    rm.push(mi);
    rv.push(vi);
    rw.push(w[i] * decay - (step * mi) / (Math.sqrt(vi / bc2) + eps));
  }
  check('adamw', mo, rm);
  check('adamw', vo, rv);
  check('adamw', wo, rw);
}

// segment sum, transpose, sum, broadcast binary ops, strided row copies
{
  const S = 40, inner = 300, nseg = 6, x = rand(S * inner), ids = Int32Array.from({ length: S }, (_, i) => (i % 8) - 1);
  const out = new Float32Array(nseg * inner);
  addon.segmentSum(x, ids, S, inner, nseg, out);
  const ref = new Float64Array(nseg * inner);
  for (let i = 0; i < S; i++) if (ids[i] >= 0 && ids[i] < nseg) for (let j = 0; j < inner; j++) ref[ids[i] * inner + j] += x[i * inner + j];
  check('segmentSum', out, ref);

  const shape = [3, 4, 5, 6], perm = [2, 0, 3, 1], t = rand(360), to = new Float32Array(360), rt = [];
  addon.transpose(t, to, shape, perm);
  for (let a = 0; a < 5; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 6; c++) for (let d = 0; d < 4; d++) rt.push(t[((b * 4 + d) * 5 + a) * 6 + c]);
  check('transpose', to, rt);

  const so = new Float32Array(3 * 6);
  addon.sum(t, 3, 20, 6, so);
  const rs = new Float64Array(18);
  for (let o = 0; o < 3; o++) for (let r = 0; r < 20; r++) for (let c = 0; c < 6; c++) rs[o * 6 + c] += t[(o * 20 + r) * 6 + c];
  check('sum', so, rs);

  const big = rand(60), small = rand(6).map((v) => v + 2), bo = new Float32Array(60);
  ['+', '-', '*', '/'].forEach((op, code) => {
    for (const rev of [0, 1]) {
      addon.binary(code, rev, big, 60, small, 6, bo);
      const f = (a, b) => (op === '+' ? a + b : op === '-' ? a - b : op === '*' ? a * b : a / b);
      check('binary', bo, Array.from(big, (v, i) => (rev ? f(small[i % 6], v) : f(v, small[i % 6]))));
    }
  });

  const dst = new Float32Array(4 * 10);
  addon.copyRows(t, 5, 12, dst, 2, 10, 4, 7);
  const rd = new Float64Array(40);
  for (let r = 0; r < 4; r++) for (let c = 0; c < 7; c++) rd[2 + r * 10 + c] = t[5 + r * 12 + c];
  check('copyRows', dst, rd);
}

// block-sparse matmul and its gradient vs the dense product with the masked weight
{
  const M = 19, K = 64, N = 96, b = 16, KB = K / b, NB = N / b;
  const x = rand(M * K), w = rand(K * N), dy = rand(M * N), bias = rand(N);
  const mask = Int32Array.from({ length: KB * NB }, (_, i) => ((i * 5) % 3 === 0 ? 1 : 0));
  const wm = w.map((v, i) => (mask[Math.floor(Math.floor(i / N) / b) * NB + Math.floor((i % N) / b)] ? v : 0));
  const y = new Float32Array(M * N), dx = new Float32Array(M * K), dw = new Float32Array(K * N);
  addon.blockSparseMatMul(x, w, mask, y, M, K, N, b, bias);
  addon.blockSparseMatMulGrad(x, w, mask, dy, dx, dw, M, K, N, b);
  const ry = new Float64Array(M * N), rdx = new Float64Array(M * K), rdw = new Float64Array(K * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = bias[j];
      for (let p = 0; p < K; p++) s += x[i * K + p] * wm[p * N + j];
      ry[i * N + j] = s;
    }
  for (let i = 0; i < M; i++) for (let p = 0; p < K; p++) for (let j = 0; j < N; j++) rdx[i * K + p] += dy[i * N + j] * wm[p * N + j];
  for (let p = 0; p < K; p++)
    for (let j = 0; j < N; j++) {
      if (!mask[Math.floor(p / b) * NB + Math.floor(j / b)]) continue;
      for (let i = 0; i < M; i++) rdw[p * N + j] += x[i * K + p] * dy[i * N + j];
    }
  check('blockSparseMatMul', y, ry);
  check('blockSparseMatMulGrad', dx, rdx);
  check('blockSparseMatMulGrad', dw, rdw);
}

const ok = Object.values(errors).every((e) => e < 1e-4);
console.log(JSON.stringify({ arch: process.arch, info: addon.info(), errors, ok }));
process.exitCode = ok ? 0 : 1;
