/// <reference types="@webgpu/types" />
/**
 * f16 matmul benchmark (f16 × f16 → f32, as `matmul.f16Tflops4096` of `patchflow bench gpu`): the
 * subgroup-matrix kernel over sg tile candidates where the device has
 * chromium-experimental-subgroup-matrix, else the shader-f16 fallback kernel over a few fp32 tiles.
 * Each config is compiled under a time limit (a driver that hangs compiling a large shader costs one
 * config, not the run), warmed up, then timed as bench.ts does.
 */
import { benchMatmul, filled, timePass, type BenchShape } from './bench.js';
import { matmulSubgroup, sgTileSharedBytes, subgroupMatrixSyntax, SG_TILE_CANDIDATES, type SgTile } from './matmul-sgmat.js';
import type { TileConfig } from './matmul.js';
import { KernelRunner, settle } from './runner.js';

export interface F16BenchRow {
  shape: BenchShape;
  kernel: 'subgroup-matrix' | 'shader-f16';
  tile: SgTile | TileConfig;
  label: string;
  ms: number;
  tflops: number;
  skipped?: string;
}

export interface F16BenchOptions {
  shapes: BenchShape[];
  /** Invocations per subgroup of the device's subgroup matrices; absent: the shader-f16 fallback kernels. */
  subgroupSize?: number;
  sgTiles?: SgTile[];
  reps?: number;
  warmup?: number;
  /** Give up compiling one config after this long (default 60 s). */
  compileTimeoutMs?: number;
  log?: (line: string) => void;
}

const FALLBACK_TILES: TileConfig[] = [
  { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4 },
];

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000} s`)), ms);
    (t as { unref?: () => void }).unref?.();
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e: unknown) => (clearTimeout(t), reject(e)),
    );
  });
}

/** Times the f16 kernels at every shape (A and B f16); rows in shapes × configs order. */
export async function benchF16Matmul(device: GPUDevice, opts: F16BenchOptions): Promise<F16BenchRow[]> {
  const log = opts.log ?? (() => {});
  if (opts.subgroupSize === undefined) {
    const rows = await benchMatmul(device, { shapes: opts.shapes.map((s) => ({ ...s, dtype: 'f16' as const })), configs: FALLBACK_TILES, ...(opts.reps ? { reps: opts.reps } : {}), ...(opts.warmup ? { warmup: opts.warmup } : {}), log });
    return rows.map((r) => ({ shape: r.shape, kernel: 'shader-f16', tile: r.tile, label: r.label, ms: r.ms, tflops: r.tflops, ...(r.skipped ? { skipped: r.skipped } : {}) }));
  }
  const reps = opts.reps ?? 20;
  const warmup = opts.warmup ?? 3;
  const useTimestamps = device.features.has('timestamp-query');
  const runner = new KernelRunner(device);
  const lim = device.limits;
  const rows: F16BenchRow[] = [];
  const legacy = (await subgroupMatrixSyntax(device)) === 'legacy';
  for (const shape of opts.shapes) {
    const batch = shape.batch ?? 1;
    const A = filled(device, Math.ceil((shape.m * shape.k * batch) / 2), 1);
    const B = filled(device, Math.ceil((shape.k * shape.n * batch) / 2), 2);
    const C = device.createBuffer({ size: Math.max(16, shape.m * shape.n * batch * 4), usage: GPUBufferUsage.STORAGE });
    for (const tile of opts.sgTiles ?? SG_TILE_CANDIDATES) {
      const row: F16BenchRow = { shape, kernel: 'subgroup-matrix', tile, label: '', ms: NaN, tflops: NaN };
      rows.push(row);
      let scoped = false;
      try {
        const threads = tile.wm * tile.wn * opts.subgroupSize;
        if (threads > lim.maxComputeInvocationsPerWorkgroup) throw new Error(`${threads} invocations > ${lim.maxComputeInvocationsPerWorkgroup}`);
        if (sgTileSharedBytes(tile) > lim.maxComputeWorkgroupStorageSize) throw new Error(`${sgTileSharedBytes(tile)} B of workgroup memory > ${lim.maxComputeWorkgroupStorageSize}`);
        const spec = matmulSubgroup({ ...shape, dtype: 'f16', sgTile: tile, subgroupSize: opts.subgroupSize, ...(legacy ? { legacyMajorness: true } : {}) });
        row.label = spec.label;
        device.pushErrorScope('validation');
        scoped = true;
        await timeout(runner.pipelineAsync(spec), opts.compileTimeoutMs ?? 60_000, `compiling ${spec.label}`);
        const group = runner.bind(spec, [A, B, C]);
        const record = (n: number) => (pass: GPUComputePassEncoder) => {
          for (let i = 0; i < n; i++) runner.encode(pass, spec, group);
        };
        await timePass(device, record(warmup), false);
        const t = await timePass(device, record(reps), useTimestamps);
        scoped = false;
        const err = await settle(device.popErrorScope());
        if (err) throw new Error(err.message);
        row.ms = t.ms / reps;
        row.tflops = spec.flops! / (row.ms * 1e-3) / 1e12;
        log(`${spec.label}: ${row.ms.toFixed(3)} ms, ${row.tflops.toPrecision(3)} TFLOP/s`);
      } catch (e) {
        if (scoped) device.popErrorScope().catch(() => {});
        row.skipped = e instanceof Error ? e.message.split('\n')[0]! : String(e);
        log(`skipped ${JSON.stringify(tile)} at ${shape.m}x${shape.n}x${shape.k}: ${row.skipped}`);
      }
    }
    [A, B, C].forEach((b) => b.destroy());
  }
  return rows;
}

/** The fastest f16 config per shape. */
export async function autotuneF16(device: GPUDevice, opts: F16BenchOptions): Promise<{ shape: BenchShape; best?: F16BenchRow; tflops: number; rows: F16BenchRow[] }[]> {
  const rows = await benchF16Matmul(device, opts);
  return opts.shapes.map((shape) => {
    const mine = rows.filter((r) => r.shape === shape || (r.shape.m === shape.m && r.shape.n === shape.n && r.shape.k === shape.k && !!r.shape.transA === !!shape.transA && !!r.shape.transB === !!shape.transB));
    const best = mine.filter((r) => !r.skipped).sort((a, b) => b.tflops - a.tflops)[0];
    return { shape, ...(best ? { best } : {}), tflops: best?.tflops ?? NaN, rows: mine };
  });
}
