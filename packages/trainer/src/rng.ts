/**
 * A small seeded PRNG with a serialisable state: xoshiro128** (Blackman & Vigna) whose four 32-bit
 * state words are filled by splitmix32 from a 32-bit seed. Pure 32-bit integer arithmetic
 * (Math.imul, >>>), so the stream is identical on every platform and Node version.
 */

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** One splitmix32 step: returns [output, nextState]. */
function splitmix32(state: number): [number, number] {
  const s = (state + 0x9e3779b9) >>> 0;
  let z = s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  z = (z ^ (z >>> 16)) >>> 0;
  return [z, s];
}

const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** `seed`: any integer; it is taken modulo 2^32 (negative seeds wrap). */
  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new RangeError(`Rng seed must be an integer, got ${seed}`);
    let sm = ((seed % TWO_POW_32) + TWO_POW_32) % TWO_POW_32;
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [out, next] = splitmix32(sm);
      words.push(out);
      sm = next;
    }
    // xoshiro must not start from the all-zero state.
    if (!words.some((w) => w !== 0)) words[0] = 1;
    [this.s0, this.s1, this.s2, this.s3] = words as [number, number, number, number];
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits (two draws). */
  next(): number {
    const a = this.nextU32() >>> 5; // 27 bits
    const b = this.nextU32() >>> 6; // 26 bits
    return (a * 67108864 + b) / TWO_POW_53;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling). n: integer in [1, 2^53]. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_53) throw new RangeError(`Rng.int needs an integer n in [1, 2^53], got ${n}`);
    if (n <= TWO_POW_32) {
      // Largest multiple of n that fits in 2^32; reject draws at or above it.
      const limit = TWO_POW_32 - (TWO_POW_32 % n);
      for (;;) {
        const x = this.nextU32();
        if (x < limit) return x % n;
      }
    }
    const limit = TWO_POW_53 - (TWO_POW_53 % n);
    for (;;) {
      const x = this.next() * TWO_POW_53;
      if (x < limit) return x % n;
    }
  }

  /** Standard normal N(0, 1) by Box-Muller (uses two uniforms per call; no cached spare, so state() is complete). */
  normal(): number {
    const u1 = 1 - this.next(); // (0, 1]
    const u2 = this.next();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** The four 32-bit state words; `Rng.fromState(r.state())` continues the exact same stream. */
  state(): number[] {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  static fromState(s: readonly number[]): Rng {
    if (!Array.isArray(s) || s.length !== 4 || !s.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32)) {
      throw new RangeError(`Rng.fromState needs 4 unsigned 32-bit integers, got ${JSON.stringify(s)}`);
    }
    if (s.every((w) => w === 0)) throw new RangeError('Rng.fromState: the all-zero state is invalid for xoshiro128**');
    const r = new Rng(0);
    [r.s0, r.s1, r.s2, r.s3] = s as [number, number, number, number];
    return r;
  }
}

/** Fills `arr` with N(mean, std^2) samples (Box-Muller, both values of each pair used). */
export function fillNormal(arr: Float32Array, std: number, rng: Rng, mean = 0): Float32Array {
  const n = arr.length;
  let i = 0;
  while (i < n) {
    const u1 = 1 - rng.next();
    const u2 = rng.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    arr[i++] = mean + std * r * Math.cos(2 * Math.PI * u2);
    if (i < n) arr[i++] = mean + std * r * Math.sin(2 * Math.PI * u2);
  }
  return arr;
}
