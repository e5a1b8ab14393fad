// What the example promises, checked (CI runs this from the workspace and from packed tarballs):
// 1. its fused GELU and gradient agree with the composite of stock ops and with finite differences;
// 2. the model's GELU runs on its kernels (kernelCalls), and a few training steps on it give the same
//    losses as the same run on stock tfjs-cpu.
import { tf, useBackend, gelu, geluComposite, hasFusedKernel, KERNELS } from '@patchflow/tensor';
import { resolveConfig, train } from '@patchflow/trainer';
import { kernelCalls } from './index.js';

const fail = (msg) => {
  console.error(`check failed: ${msg}`);
  process.exit(1);
};

await useBackend('js-cpu');
if (!hasFusedKernel(KERNELS.gelu)) fail('PfGelu is not registered on js-cpu');
const xs = Float32Array.from({ length: 257 }, (_, i) => -6 + (12 * i) / 256);
const x = tf.tensor1d(xs);
const fused = await gelu(x).data();
const composite = await geluComposite(x).data();
let err = 0;
for (let i = 0; i < xs.length; i++) err = Math.max(err, Math.abs(fused[i] - composite[i]));
if (err > 1e-5) fail(`GELU differs from the composite by ${err}`);
const grad = await tf.grad((t) => tf.sum(gelu(t)))(x).data();
const f = (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
let gerr = 0;
for (let i = 0; i < xs.length; i++) {
  const h = 1e-3;
  gerr = Math.max(gerr, Math.abs(grad[i] - (f(xs[i] + h) - f(xs[i] - h)) / (2 * h)));
}
if (gerr > 1e-4) fail(`GELU gradient differs from finite differences by ${gerr}`);

const text = Array.from({ length: 300 }, (_, i) => `line ${i}: the whale swam ${i % 7} miles.\n`).join('');
const run = async (backend) => {
  const config = resolveConfig({ model: { nLayer: 1, nHead: 2, dModel: 32, seqLen: 16 }, batchSize: 4, steps: 4, evalEvery: 0, checkpointEvery: 0, backend });
  const r = await train({ config, corpus: { name: 'whale', text } });
  r.model.dispose();
  return r.losses.map((h) => h.loss);
};
const before = kernelCalls.get(KERNELS.gelu) ?? 0;
const ours = await run('js-cpu');
const calls = (kernelCalls.get(KERNELS.gelu) ?? 0) - before;
if (calls === 0 || !kernelCalls.get(KERNELS.geluGrad)) fail('training never called the js-cpu GELU kernels');
const stock = await run('tfjs-cpu');
const diff = Math.max(...ours.map((l, i) => Math.abs(l - stock[i])));
if (!(diff < 1e-4)) fail(`losses on js-cpu ${ours.map((l) => l.toFixed(5))} differ from tfjs-cpu ${stock.map((l) => l.toFixed(5))}`);
console.log(`js-cpu: GELU max |Δ| ${err.toExponential(1)} vs composite, gradient ${gerr.toExponential(1)} vs finite differences; ${calls} GELU kernel calls in ${ours.length} steps; losses ${ours.map((l) => l.toFixed(4)).join(' ')} = tfjs-cpu's (max |Δ| ${diff.toExponential(1)})`);
