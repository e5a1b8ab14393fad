/**
 * On the device's GPU through WebGPU (Dawn): dense vs block-sparse matmul kernels (forward + both
 * backward products) at 0–93.75% sparsity for the default model's matrix shapes and a GPT-2-small
 * sized model's, and training steps of a 12-layer d=768 GPT dense vs block-sparse.
 *   npx esbuild tools/device/sparsity_gpu.ts --bundle --platform=node --format=esm --target=node20 \
 *     --external:webgpu --outfile=.device-build/sparsity_gpu.mjs \
 *     --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
 *   ../shared/device/pack.sh .device-build/sparsity_gpu.mjs node_modules/webgpu
 *   device: source .device/setup.sh && export VK_DRIVER_FILES=<an ICD json with library_path libEGL_nvidia.so.0> &&
 *     cd .device/app && node .device-build/sparsity_gpu.mjs > $OUT/sparsity_gpu.json
 *   (2026-11-23: the GLX-based NVIDIA ICD that setup.sh names failed vkCreateInstance on the device; the EGL one worked)
 */
import { create, globals } from 'webgpu';
import { tf, useBackend } from '@patchflow/tensor';
import '@patchflow/backend-gpu';
import { gpuInfo } from '@patchflow/backend-gpu';
import { train, resolveConfig, type TrainEvent } from '@patchflow/trainer';
import { sparseTraining, maskFromScores, parsePattern, blockMaskOf } from '@patchflow/sparsity';

Object.assign(globalThis, globals);
(globalThis as { navigator?: unknown }).navigator = { gpu: create([]) };

const log = (s: string) => process.stderr.write(s + '\n');

/** Milliseconds per call of f, timed over `reps` calls queued back to back, one readback at the end. */
async function gpuTime(f: () => tf.Tensor[], reps: number): Promise<number> {
  for (let i = 0; i < 2; i++) {
    const w = f();
    await w[0]!.data();
    w.forEach((t) => t.dispose());
  }
  const t0 = performance.now();
  let last: tf.Tensor[] = [];
  for (let i = 0; i < reps; i++) {
    last.forEach((t) => t.dispose());
    last = f();
  }
  await Promise.all(last.map((t) => t.data()));
  const ms = (performance.now() - t0) / reps;
  last.forEach((t) => t.dispose());
  return ms;
}

async function kernels(shapes: [string, number, number, number][], b: number) {
  const rows: Record<string, unknown>[] = [];
  for (const [name, m, k, n] of shapes) {
    const x = tf.randomNormal([m, k]);
    const w = tf.randomNormal([k, n]);
    const dy = tf.randomNormal([m, n]);
    const dense = await gpuTime(() => [tf.matMul(x, w), tf.matMul(dy, w, false, true), tf.matMul(x, dy, true, false)], 20);
    for (const s of [0, 0.5, 0.75, 0.875, 0.9375]) {
      const scores = Float32Array.from({ length: k * n }, (_, i) => ((i * 2654435761) >>> 0) / 4294967296);
      const mask = maskFromScores(scores, [k, n], parsePattern(`block:${b}`), 1 - s);
      const bm = tf.tensor2d(blockMaskOf(mask, [k, n], b), [k / b, n / b], 'int32');
      const run = (kn: string, inputs: tf.NamedTensorMap) => {
        const r = tf.engine().runKernel(kn, inputs, { blockSize: b });
        return Array.isArray(r) ? (r as tf.Tensor[]) : [r as tf.Tensor];
      };
      const sparse = await gpuTime(() => [...run('PfBlockSparseMatMul', { x, w, blockMask: bm }), ...run('PfBlockSparseMatMulGrad', { x, w, blockMask: bm, dy })], 20);
      rows.push({ shape: name, m, k, n, blockSize: b, sparsity: s, denseMs: dense, sparseMs: sparse, ratio: sparse / dense });
      log(`${name} [${m},${k}]x[${k},${n}] s=${s}: dense ${dense.toFixed(3)} ms, block-sparse ${sparse.toFixed(3)} ms, ratio ${(sparse / dense).toFixed(3)}`);
      bm.dispose();
    }
    [x, w, dy].forEach((t) => t.dispose());
  }
  return rows;
}

async function steps(label: string, model: Record<string, unknown>, batchSize: number, sparsity?: number) {
  const text = Array.from({ length: 6000 }, (_, i) => `line ${i}: the whale swam ${i % 7} miles east and ${(i * 3) % 11} west.\n`).join('');
  const n = 8;
  const times: number[] = [];
  let last = performance.now();
  const ev: TrainEvent[] = [];
  const r = await train({
    config: resolveConfig({ model, batchSize, steps: n, evalEvery: 0, checkpointEvery: 0, evalBatches: 1, backend: 'webgpu' }),
    corpus: { name: 'synthetic', text },
    plugins: sparsity ? [sparseTraining({ sparsity, pattern: 'block:32' })] : [],
    onEvent: (e) => {
      ev.push(e);
      if (e.type === 'step') {
        const now = performance.now();
        times.push(now - last);
        last = now;
      }
    },
  });
  r.model.dispose();
  const steady = times.slice(3); // first steps compile pipelines
  const ms = steady.reduce((a, b) => a + b, 0) / steady.length;
  const tokens = batchSize * (model.seqLen as number);
  log(`${label}: ${ms.toFixed(1)} ms/step, ${(tokens / (ms / 1000)).toFixed(0)} tokens/s`);
  return { label, msPerStep: ms, tokensPerSecond: tokens / (ms / 1000), losses: ev.flatMap((e) => (e.type === 'step' ? [e.loss] : [])) };
}

await useBackend('webgpu');
tf.env().set('WEBGPU_CPU_FORWARD', false);
const info = await gpuInfo();
log(JSON.stringify(info).slice(0, 300));
const small: [string, number, number, number][] = [
  ['default attn.qkv', 2048, 256, 768],
  ['default mlp.fc', 2048, 256, 1024],
  ['default mlp.proj', 2048, 1024, 256],
];
const gpt2: [string, number, number, number][] = [
  ['d768 attn.qkv', 8192, 768, 2304],
  ['d768 attn.proj', 8192, 768, 768],
  ['d768 mlp.fc', 8192, 768, 3072],
  ['d768 mlp.proj', 8192, 3072, 768],
];
// SMOKE=1: tiny shapes, to check the bundle on a software adapter before spending device time
const smoke = process.env.SMOKE === '1';
const kernelRows = smoke ? await kernels([['smoke', 64, 64, 64]], 32) : [...(await kernels(small, 32)), ...(await kernels(gpt2, 32))];
const model = smoke ? { nLayer: 1, nHead: 2, dModel: 64, seqLen: 32 } : { nLayer: 12, nHead: 12, dModel: 768, seqLen: 256 };
const trainRows = [await steps('12x768 dense', model, 8), await steps('12x768 block:32 75%', model, 8, 0.75), await steps('12x768 block:32 87.5%', model, 8, 0.875)];
process.stdout.write(JSON.stringify({ gpu: info, kernels: kernelRows, training: trainRows, date: new Date().toISOString() }, null, 2) + '\n');
