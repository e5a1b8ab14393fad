import { describe, it, expect } from 'vitest';
import { benchMatmul, autotune, type TileConfig } from '../src/compiled/index.js';
import { compiledGpu } from './compiled-helpers.js';

const gpu = await compiledGpu();

describe.skipIf(!gpu)('compiled matmul benchmark (lavapipe: tiny shapes, only that it runs)', () => {
  it('times valid configs, skips ones over the device limits, autotune picks a timed one', async () => {
    const { device } = gpu!;
    const ok: TileConfig = { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 };
    const tooMuchShared: TileConfig = { bm: 256, bn: 256, bk: 16, tm: 16, tn: 16 };
    const invalid: TileConfig = { bm: 32, bn: 32, bk: 6, tm: 4, tn: 4 };
    const shapes = [{ m: 64, n: 48, k: 40 }, { m: 33, n: 20, k: 17, transB: true }];
    const rows = await benchMatmul(device, { shapes, configs: [ok, tooMuchShared, invalid], reps: 3, warmup: 1 });
    expect(rows).toHaveLength(6);
    for (const r of rows.filter((x) => x.tile === ok)) {
      expect(r.skipped).toBeUndefined();
      expect(r.ms).toBeGreaterThan(0);
      expect(r.tflops).toBeGreaterThan(0);
      // the helpers' device has timestamp queries wherever the adapter offers them (lavapipe does)
      if (device.features.has('timestamp-query')) expect(r.method).toBe('timestamp');
    }
    for (const r of rows.filter((x) => x.tile !== ok)) expect(r.skipped).toBeTruthy();
    const best = await autotune(device, { shapes: [shapes[0]!], configs: [tooMuchShared, ok], reps: 2 });
    expect(best[0]!.tile).toBe(ok);
  });
});
