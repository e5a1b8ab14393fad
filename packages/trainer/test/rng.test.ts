import { describe, it, expect } from 'vitest';
import { Rng, fillNormal } from '../src/rng.js';

describe('Rng', () => {
  it('matches the xoshiro128** reference outputs from state [1, 2, 3, 4]', () => {
    // Reference sequence of the C implementation by Blackman & Vigna.
    const r = Rng.fromState([1, 2, 3, 4]);
    expect(Array.from({ length: 6 }, () => r.nextU32())).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  });

  it('seeds with splitmix32 as computed by an independent (Python) implementation', () => {
    const r = new Rng(42);
    expect(r.state()).toEqual([939911724, 3948730756, 321366731, 3317318717]);
    expect(Array.from({ length: 5 }, () => r.nextU32())).toEqual([2837322924, 544945897, 479756282, 3500138142, 339756180]);
    expect(r.state()).toEqual([1824647166, 603999424, 1022928101, 1623123832]);
    expect(new Rng(-1).state()).toEqual([920564995, 4230986166, 697614773, 1778835764]);
    expect(new Rng(42).next()).toBe(0.6606157208001621);
  });

  it('is deterministic and different seeds give different streams', () => {
    const a = new Rng(7);
    const b = new Rng(7);
    const c = new Rng(8);
    const xa = Array.from({ length: 100 }, () => a.next());
    expect(Array.from({ length: 100 }, () => b.next())).toEqual(xa);
    expect(Array.from({ length: 100 }, () => c.next())).not.toEqual(xa);
    for (const x of xa) expect(x >= 0 && x < 1).toBe(true);
  });

  it('state() / fromState continue the same stream, and the state is plain JSON', () => {
    const a = new Rng(123);
    for (let i = 0; i < 37; i++) a.normal();
    const saved = JSON.parse(JSON.stringify(a.state())) as number[];
    const want = Array.from({ length: 20 }, () => [a.nextU32(), a.int(1000), a.normal(), a.next()]);
    const b = Rng.fromState(saved);
    expect(Array.from({ length: 20 }, () => [b.nextU32(), b.int(1000), b.normal(), b.next()])).toEqual(want);
  });

  it('rejects bad seeds and states', () => {
    expect(() => new Rng(1.5)).toThrow(/integer/);
    expect(() => new Rng(NaN)).toThrow(/integer/);
    expect(() => Rng.fromState([1, 2, 3])).toThrow(/4 unsigned/);
    expect(() => Rng.fromState([0, 0, 0, 0])).toThrow(/all-zero/);
    expect(() => Rng.fromState([1, 2, 3, 2 ** 32])).toThrow(/4 unsigned/);
    expect(() => new Rng(1).int(0)).toThrow(/integer n/);
  });

  it('int(n) is uniform (chi-square) and in range', () => {
    const r = new Rng(5);
    const n = 10;
    const draws = 100_000;
    const counts = new Array<number>(n).fill(0);
    for (let i = 0; i < draws; i++) {
      const k = r.int(n);
      if (!(Number.isInteger(k) && k >= 0 && k < n)) throw new Error(`int(${n}) gave ${k}`);
      counts[k]!++;
    }
    const e = draws / n;
    const chi2 = counts.reduce((a, c) => a + ((c - e) * (c - e)) / e, 0);
    expect(chi2).toBeLessThan(27.9); // p = 0.001 for 9 degrees of freedom
    expect(r.int(1)).toBe(0);
    const big = r.int(2 ** 40);
    expect(big >= 0 && big < 2 ** 40 && Number.isInteger(big)).toBe(true);
  });

  it('normal() and fillNormal have the right moments', () => {
    const r = new Rng(9);
    const n = 200_000;
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const x = r.normal();
      s += x;
      s2 += x * x;
    }
    expect(Math.abs(s / n)).toBeLessThan(0.01);
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.015);

    const arr = fillNormal(new Float32Array(100_001), 0.02, new Rng(3));
    let m = 0;
    let v = 0;
    for (const x of arr) m += x;
    m /= arr.length;
    for (const x of arr) v += (x - m) ** 2;
    const std = Math.sqrt(v / arr.length);
    expect(Math.abs(m)).toBeLessThan(0.0003);
    expect(Math.abs(std - 0.02)).toBeLessThan(0.0004);
    // Deterministic, odd length handled, shifted mean.
    expect(fillNormal(new Float32Array(5), 1, new Rng(3))).toEqual(fillNormal(new Float32Array(5), 1, new Rng(3)));
    const shifted = fillNormal(new Float32Array(1000), 0.001, new Rng(1), 5);
    expect(Math.abs(shifted.reduce((a, b) => a + b, 0) / 1000 - 5)).toBeLessThan(0.001);
  });
});
