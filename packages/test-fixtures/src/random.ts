/** Seeded random data, so failing tests reproduce. */

/** Deterministic normal-ish floats (mulberry32 + Box-Muller) times `scale`. */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
  return out;
}

/** Deterministic integers in [0, max). */
export function randInt(n: number, seed: number, max: number): Int32Array {
  const f = randn(n, seed);
  return Int32Array.from(f, (x, i) => Math.abs(Math.floor(x * 7919 + i * 31)) % max);
}

/** Deterministic uniform values in [-scale, scale) (xorshift32). */
export function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** A [kb, nb] 0/1 block mask with round(density · kb · nb) kept blocks at positions ordered by `values` (seeded noise). */
export function blockMask(kb: number, nb: number, density: number, values: Float32Array): Int32Array {
  const n = kb * nb;
  const order = Array.from(values.subarray(0, n), (v, i) => [v, i] as const)
    .sort((a, b) => a[0] - b[0])
    .map(([, i]) => i);
  const mask = new Int32Array(n);
  for (const i of order.slice(0, Math.round(density * n))) mask[i] = 1;
  return mask;
}
