/**
 * On the device's GPU through WebGPU (Dawn): autotunes the compiled-step matmul (packages/backend-gpu
 * src/compiled) over its tile candidates at 4096³ and at a GPT-2-small training step's shapes
 * (B·T = 8192 rows, d = 768, all three products of each projection), f32 and f16 inputs, and prints
 * one JSON document (every row, plus the best config per shape).
 *   npx esbuild tools/device/compiled_matmul.ts --bundle --platform=node --format=esm --target=node20 \
 *     --external:webgpu --outfile=.device-build/compiled_matmul.mjs
 *   ../shared/device/pack.sh .device-build/compiled_matmul.mjs node_modules/webgpu
 *   device: source .device/setup.sh && export VK_DRIVER_FILES=<an ICD json with library_path libEGL_nvidia.so.0> &&
 *     cd .device/app && node .device-build/compiled_matmul.mjs > $OUT/compiled_matmul.json
 *   (SMOKE=1 node .device-build/compiled_matmul.mjs: tiny shapes, to try it here on lavapipe first)
 * Flags: the device runs without robustness and workgroup zero-init (the kernels never access memory
 * outside their bindings nor read workgroup memory they did not write) and with unquantized timestamps; the adapter's maximum compute limits are requested so configs above
 * WebGPU's defaults (bk 16 at 128×128, 512+ invocations) can be timed.
 */
import { create, globals } from 'webgpu';
import { autotune, TILE_CANDIDATES, type BenchShape } from '../../packages/backend-gpu/src/compiled/index.js';

Object.assign(globalThis, globals);
const gpu = create(['enable-dawn-features=allow_unsafe_apis,disable_robustness,disable_workgroup_init', 'disable-dawn-features=timestamp_quantization']);
const log = (s: string) => process.stderr.write(s + '\n');

const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter) throw new Error('no WebGPU adapter');
const l = adapter.limits;
const features = (['timestamp-query', 'shader-f16'] as const).filter((f) => adapter.features.has(f));
const device = await adapter.requestDevice({
  requiredFeatures: features,
  requiredLimits: {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
  },
});
log(`adapter: ${JSON.stringify({ vendor: adapter.info.vendor, architecture: adapter.info.architecture, description: adapter.info.description, features })}`);

const R = 8192;
const d = 768;
const gptShapes: BenchShape[] = [
  // forward x·W (NN), dX = dY·Wᵀ (NT), dW = Xᵀ·dY (TN) for qkv, fc, mlp proj
  { m: R, n: 3 * d, k: d },
  { m: R, n: d, k: 3 * d, transB: true },
  { m: d, n: 3 * d, k: R, transA: true },
  { m: R, n: 4 * d, k: d },
  { m: R, n: d, k: 4 * d, transB: true },
  { m: 4 * d, n: d, k: R, transA: true },
  { m: R, n: d, k: 4 * d },
  // the split-K partial products of the d×d and d×4d weight gradients (matmulSplitK's first kernel)
  { m: d, n: d, k: R / 8, transA: true, batch: 8 },
  { m: 4 * d, n: d, k: R / 4, transA: true, batch: 4 },
];
const shapes: BenchShape[] = [{ m: 4096, n: 4096, k: 4096 }, ...gptShapes];
if (features.includes('shader-f16')) shapes.push({ m: 4096, n: 4096, k: 4096, dtype: 'f16' }, { m: R, n: 4 * d, k: d, dtype: 'f16' });
// SMOKE=1: two tiny shapes, to check the script end to end on a CPU adapter (lavapipe)
if (process.env.SMOKE) shapes.splice(0, shapes.length, { m: 96, n: 80, k: 32 }, { m: 64, n: 64, k: 48, transA: true, dtype: features.includes('shader-f16') ? 'f16' : 'f32' });

const t0 = performance.now();
const best = await autotune(device, { shapes, configs: TILE_CANDIDATES, reps: 20, warmup: 3, log });
log(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
process.stdout.write(
  JSON.stringify(
    {
      adapter: { vendor: adapter.info.vendor, architecture: adapter.info.architecture, description: adapter.info.description },
      best: best.map((b) => ({ shape: b.shape, tile: b.tile, tflops: b.tflops })),
      rows: best.flatMap((b) => b.rows),
    },
    null,
    1,
  ) + '\n',
);
process.exit(0);
