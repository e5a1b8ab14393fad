import { describe, it } from 'vitest';
import { attentionForward, attentionBackward, rotary, rotaryTable, createBuffer, type AttentionParams } from '../src/compiled/index.js';
import { compiledGpu, randn, expectClose, upload, readF32, guarded, readGuarded } from './compiled-helpers.js';

const gpu = await compiledGpu();

/**
 * float64 causal attention on qkv [B·T, 3d] (model.ts's split and head layout): out [B·T, d], lse
 * [B·H·T], and, given dout, the gradient dqkv [B·T, 3d] by plain backpropagation through softmax.
 */
function attnRef(qkv: ArrayLike<number>, p: AttentionParams, dout?: ArrayLike<number>) {
  const { batch: B, t: T, heads: H, headDim: HD } = p;
  const D = H * HD;
  const sc = p.scale ?? 1 / Math.sqrt(HD);
  const out = new Float64Array(B * T * D);
  const lse = new Float64Array(B * H * T);
  const dqkv = new Float64Array(B * T * 3 * D);
  const at = (b: number, t: number, part: number, h: number, d: number) => (b * T + t) * 3 * D + part * D + h * HD + d;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        const s = new Float64Array(i + 1);
        let m = -Infinity;
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < HD; d++) dot += qkv[at(b, i, 0, h, d)]! * qkv[at(b, j, 1, h, d)]!;
          s[j] = dot * sc;
          m = Math.max(m, s[j]!);
        }
        let z = 0;
        for (let j = 0; j <= i; j++) z += Math.exp(s[j]! - m);
        lse[(b * H + h) * T + i] = m + Math.log(z);
        const P = Array.from(s, (v) => Math.exp(v - m) / z);
        for (let d = 0; d < HD; d++) {
          let o = 0;
          for (let j = 0; j <= i; j++) o += P[j]! * qkv[at(b, j, 2, h, d)]!;
          out[(b * T + i) * D + h * HD + d] = o;
        }
        if (dout) {
          const go = (d: number) => dout[(b * T + i) * D + h * HD + d]!;
          const dP = P.map((_, j) => {
            let v = 0;
            for (let d = 0; d < HD; d++) v += go(d) * qkv[at(b, j, 2, h, d)]!;
            return v;
          });
          const dot = P.reduce((a, pj, j) => a + pj * dP[j]!, 0);
          for (let j = 0; j <= i; j++) {
            const dS = P[j]! * (dP[j]! - dot);
            for (let d = 0; d < HD; d++) {
              dqkv[at(b, i, 0, h, d)] += sc * dS * qkv[at(b, j, 1, h, d)]!;
              dqkv[at(b, j, 1, h, d)] += sc * dS * qkv[at(b, i, 0, h, d)]!;
              dqkv[at(b, j, 2, h, d)] += P[j]! * go(d);
            }
          }
        }
      }
    }
  }
  return { out, lse, dqkv };
}

/**
 * float64 rotary on qkv [B·T, 3d] written the way model.ts does it, x·cos + rotate_half(x)·sin on q
 * and k, v copied; sign −1 gives the transposed rotation (the backward).
 */
function rot(x: ArrayLike<number>, sign: number, B: number, T: number, H: number, HD: number): Float64Array<ArrayBuffer> {
  const D = H * HD;
  const half = HD / 2;
  const out = new Float64Array(x.length);
  for (let row = 0; row < B * T; row++) {
    const t = row % T;
    for (let c = 0; c < 3 * D; c++) {
      const part = Math.floor(c / D);
      const hc = c % HD;
      const i = hc % half;
      const ang = t / Math.pow(10000, (2 * i) / HD);
      const xi = x[row * 3 * D + c]!;
      if (part === 2) out[row * 3 * D + c] = xi;
      else {
        const other = hc < half ? -x[row * 3 * D + c + half]! : x[row * 3 * D + c - half]!;
        out[row * 3 * D + c] = xi * Math.cos(ang) + other * sign * Math.sin(ang);
      }
    }
  }
  return out;
}

async function checkAttention(p: AttentionParams, seed: number) {
  const { device, runner } = gpu!;
  const { batch: B, t: T, heads: H, headDim: HD } = p;
  const D = H * HD;
  const qkv = randn(B * T * 3 * D, seed);
  const dout = randn(B * T * D, seed + 1);
  const fwd = attentionForward(p);
  const bwd = attentionBackward(p);
  const table = guarded(device, rotaryTable(T, HD));
  // sub-ranges between NaN guards (guarded); dk/dv and dq are written by two kernels, so dqkv starts
  // NaN-filled and an element neither writes shows up
  const bufs = {
    qkv: guarded(device, qkv),
    out: guarded(device, B * T * D),
    lse: guarded(device, B * H * T),
    dout: guarded(device, dout),
    delta: guarded(device, B * H * T),
    dqkv: guarded(device, new Float32Array(B * T * 3 * D).fill(NaN)),
  };
  await runner.run([fwd, { ...bufs, table }], [bwd.delta, bufs], [bwd.dkdv, { ...bufs, table }], [bwd.dq, { ...bufs, table }]);
  // fused rotary: attention of the rotated qkv, its gradient mapped back through the transposed rotation
  const want = p.rotary ? attnRef(rot(qkv, 1, B, T, H, HD), p, dout) : attnRef(qkv, p, dout);
  if (p.rotary) want.dqkv = rot(want.dqkv, -1, B, T, H, HD);
  // f32 dot products of hd ≤ 128 unit normals and softmax sums over ≤ T terms: ~1e-5 relative
  expectClose(await readGuarded(device, bufs.out, B * T * D), want.out, 'out', 2e-5, 1e-4);
  expectClose(await readGuarded(device, bufs.lse, B * H * T), want.lse, 'lse', 2e-5, 1e-5);
  expectClose(await readGuarded(device, bufs.dqkv, B * T * 3 * D), want.dqkv, 'dqkv', 1e-4, 1e-3);
  await readGuarded(device, bufs.delta, B * H * T);
}

describe.skipIf(!gpu)('compiled causal attention (float64 reference)', () => {
  it('hd 32: B 2, T 70 (two query blocks, partial key tiles), H 3', async () => {
    await checkAttention({ batch: 2, t: 70, heads: 3, headDim: 32 }, 1);
  });
  it('hd 64: B 1, T 37, H 2', async () => {
    await checkAttention({ batch: 1, t: 37, heads: 2, headDim: 64 }, 2);
  });
  it('hd 128: B 1, T 19, H 2, custom scale', async () => {
    await checkAttention({ batch: 1, t: 19, heads: 2, headDim: 128, scale: 0.05 }, 3);
  });

  it('hd 64 at T 1024 (16 query blocks, 64 key tiles)', async () => {
    await checkAttention({ batch: 1, t: 1024, heads: 1, headDim: 64 }, 5);
  });

  it('fused rotary (hd 64: B 2, T 37, H 2): forward and backward through the rotation', async () => {
    await checkAttention({ batch: 2, t: 37, heads: 2, headDim: 64, rotary: true }, 4);
  });

  it('the float64 backward reference agrees with finite differences (tiny case)', () => {
    const p = { batch: 1, t: 4, heads: 2, headDim: 4 };
    const qkv = Float64Array.from(randn(4 * 24, 9));
    const dout = randn(4 * 8, 10);
    const L = (x: Float64Array) => attnRef(x, p).out.reduce((s, v, i) => s + v * dout[i]!, 0);
    const fdg = Array.from(qkv, (_, i) => {
      const x0 = qkv[i]!;
      qkv[i] = x0 + 1e-6;
      const a = L(qkv);
      qkv[i] = x0 - 1e-6;
      const b = L(qkv);
      qkv[i] = x0;
      return (a - b) / 2e-6;
    });
    expectClose(attnRef(qkv, p, dout).dqkv, fdg, 'reference dqkv vs FD', 1e-7, 1e-6);
  });
});

describe.skipIf(!gpu)('compiled rotary', () => {
  it('forward rotates q and k as model.ts (rotate-half), copies v; backward is its transpose', async () => {
    const { device, runner } = gpu!;
    const [B, T, H, HD] = [2, 7, 3, 8];
    const D = H * HD;
    const half = HD / 2;
    const src = randn(B * T * 3 * D, 31);
    const g = randn(B * T * 3 * D, 32);
    const table = rotaryTable(T, HD);
    const f = rotary({ batch: B, t: T, heads: H, headDim: HD });
    const bw = rotary({ batch: B, t: T, heads: H, headDim: HD, backward: true });
    const bufs = { src: upload(device, src), table: upload(device, table), dst: createBuffer(device, src.length * 4) };
    await runner.run([f, bufs]);
    // float64 reference, written the way model.ts does it: x·cos + rotate_half(x)·sin
    const want = new Float64Array(src.length);
    want.set(rot(src, 1, B, T, H, HD));
    expectClose(await readF32(device, bufs.dst, src.length), want, 'rotary forward', 1e-5, 1e-5);
    // backward: <g, R x> = <Rᵀ g, x>, and Rᵀ is the rotation by −θ
    const bufs2 = { src: upload(device, g), table: bufs.table, dst: createBuffer(device, g.length * 4) };
    await runner.run([bw, bufs2]);
    expectClose(await readF32(device, bufs2.dst, g.length), rot(g, -1, B, T, H, HD), 'rotary backward', 1e-5, 1e-5);
  });
});
