/// <reference types="@webgpu/types" />
/**
 * Matmul micro-benchmark and autotuner. Each (shape, tile config) is compiled, warmed up, then timed
 * over `reps` back-to-back dispatches in one compute pass: with timestamp queries (pass begin/end) when
 * the device was created with 'timestamp-query', else by wall clock from submit to
 * onSubmittedWorkDone. A config the device cannot run (too many invocations, too much workgroup
 * memory, a compile or validation error) is reported as skipped, never thrown.
 *
 * For timings close to the hardware, create the device with the 'timestamp-query' feature and Dawn's
 * unsafe mode without robustness (bounds clamping) or workgroup zero-init, which every compiled kernel
 * is written to tolerate, and without timestamp quantization:
 *   create(['enable-dawn-features=allow_unsafe_apis,disable_robustness,disable_workgroup_init',
 *           'disable-dawn-features=timestamp_quantization'])
 * Where timestamps are quantized (browsers: 100 µs), keep reps · kernel time well above that.
 */
import { matmul, checkTile, tileSharedBytes, tileThreads, TILE_CANDIDATES, type MatmulDtype, type TileConfig } from './matmul.js';
import { KernelRunner, settle } from './runner.js';

export interface BenchShape {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  batch?: number;
  dtype?: MatmulDtype;
}

export interface BenchRow {
  shape: BenchShape;
  tile: TileConfig;
  label: string;
  /** Milliseconds per dispatch (NaN when skipped). */
  ms: number;
  tflops: number;
  method: 'timestamp' | 'wallclock';
  /** Why the config was not timed. */
  skipped?: string;
}

export interface BenchOptions {
  shapes: BenchShape[];
  /** Tile configs to time (default TILE_CANDIDATES). */
  configs?: TileConfig[];
  /** Timed dispatches per config (default 20). */
  reps?: number;
  /** Untimed dispatches first (default 3). */
  warmup?: number;
  /** Progress lines (e.g. console.error). */
  log?: (line: string) => void;
}

export function filled(device: GPUDevice, floats: number, seed: number): GPUBuffer {
  const buf = device.createBuffer({ size: Math.max(16, Math.ceil((floats * 4) / 16) * 16), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const chunk = 1 << 20;
  const data = new Float32Array(Math.min(chunk, floats));
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 4294967296 - 0.5;
  }
  for (let off = 0; off < floats; off += chunk) {
    const n = Math.min(chunk, floats - off);
    device.queue.writeBuffer(buf, off * 4, data.buffer, 0, n * 4);
  }
  return buf;
}

export async function timePass(device: GPUDevice, record: (pass: GPUComputePassEncoder) => void, useTimestamps: boolean): Promise<{ ms: number; method: BenchRow['method'] }> {
  if (useTimestamps) {
    const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
    const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    record(pass);
    pass.end();
    enc.resolveQuerySet(qs, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
    device.queue.submit([enc.finish()]);
    await settle(read.mapAsync(GPUMapMode.READ));
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    [qs, resolve, read].forEach((x) => x.destroy());
    const ns = Number(t[1]! - t[0]!);
    if (ns > 0) return { ms: ns / 1e6, method: 'timestamp' };
    // a zero or negative interval (quantized or unsupported timestamps): fall back to the wall clock
  }
  await settle(device.queue.onSubmittedWorkDone());
  const t0 = performance.now();
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  record(pass);
  pass.end();
  device.queue.submit([enc.finish()]);
  await settle(device.queue.onSubmittedWorkDone());
  return { ms: performance.now() - t0, method: 'wallclock' };
}

/** Times every config at every shape; rows in shapes × configs order. */
export async function benchMatmul(device: GPUDevice, opts: BenchOptions): Promise<BenchRow[]> {
  const configs = opts.configs ?? TILE_CANDIDATES;
  const reps = opts.reps ?? 20;
  const warmup = opts.warmup ?? 3;
  const log = opts.log ?? (() => {});
  const useTimestamps = device.features.has('timestamp-query');
  const runner = new KernelRunner(device);
  const lim = device.limits;
  const rows: BenchRow[] = [];
  for (const shape of opts.shapes) {
    const batch = shape.batch ?? 1;
    const bytesOf = (floats: number) => floats * (shape.dtype === 'f16' ? 2 : 4);
    const sizes = [bytesOf(shape.m * shape.k * batch), bytesOf(shape.k * shape.n * batch), shape.m * shape.n * batch * 4];
    const tooBig = sizes.find((s) => s > lim.maxStorageBufferBindingSize || s > lim.maxBufferSize);
    const skipAll = (why: string) => configs.forEach((tile) => rows.push({ shape, tile, label: '', ms: NaN, tflops: NaN, method: useTimestamps ? 'timestamp' : 'wallclock', skipped: why }));
    if (tooBig) {
      skipAll(`a buffer of ${tooBig} bytes exceeds the device's limits`);
      continue;
    }
    // f16 data is random bits reinterpreted: fine for timing (values in f16 range come from halves of f32s)
    const A = filled(device, Math.ceil(sizes[0]! / 4), 1);
    const B = filled(device, Math.ceil(sizes[1]! / 4), 2);
    const C = device.createBuffer({ size: Math.max(16, sizes[2]!), usage: GPUBufferUsage.STORAGE });
    for (const tile of configs) {
      const row: BenchRow = { shape, tile, label: '', ms: NaN, tflops: NaN, method: useTimestamps ? 'timestamp' : 'wallclock' };
      rows.push(row);
      try {
        checkTile(tile);
        if (tileThreads(tile) > lim.maxComputeInvocationsPerWorkgroup) throw new Error(`${tileThreads(tile)} invocations > ${lim.maxComputeInvocationsPerWorkgroup}`);
        if (tileSharedBytes(tile) > lim.maxComputeWorkgroupStorageSize) throw new Error(`${tileSharedBytes(tile)} B of workgroup memory > ${lim.maxComputeWorkgroupStorageSize}`);
        const spec = matmul({ ...shape, tile });
        row.label = spec.label;
        await runner.pipelineAsync(spec);
        device.pushErrorScope('validation');
        const group = runner.bind(spec, [A, B, C]);
        const record = (n: number) => (pass: GPUComputePassEncoder) => {
          for (let i = 0; i < n; i++) runner.encode(pass, spec, group);
        };
        await timePass(device, record(warmup), false);
        const t = await timePass(device, record(reps), useTimestamps);
        const err = await settle(device.popErrorScope());
        if (err) throw new Error(err.message);
        row.ms = t.ms / reps;
        row.method = t.method;
        row.tflops = spec.flops! / (row.ms * 1e-3) / 1e12;
        log(`${spec.label}: ${row.ms.toFixed(3)} ms, ${row.tflops.toPrecision(3)} TFLOP/s (${t.method})`);
      } catch (e) {
        row.skipped = e instanceof Error ? e.message.split('\n')[0]! : String(e);
        log(`skipped ${JSON.stringify(tile)} at ${shape.m}x${shape.n}x${shape.k}: ${row.skipped}`);
      }
    }
    [A, B, C].forEach((b) => b.destroy());
  }
  return rows;
}

/** The fastest timed config per shape (undefined tile where every config was skipped). */
export async function autotune(device: GPUDevice, opts: BenchOptions): Promise<{ shape: BenchShape; tile?: TileConfig; tflops: number; rows: BenchRow[] }[]> {
  const rows = await benchMatmul(device, opts);
  return opts.shapes.map((shape) => {
    const mine = rows.filter((r) => r.shape === shape);
    const best = mine.filter((r) => !r.skipped).sort((a, b) => b.tflops - a.tflops)[0];
    return { shape, ...(best ? { tile: best.tile } : {}), tflops: best?.tflops ?? NaN, rows: mine };
  });
}
