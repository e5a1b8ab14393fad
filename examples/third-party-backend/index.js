// A third-party patchflow backend, "js-cpu": everything a backend package needs, and nothing of
// patchflow's internals. Importing this module registers it (registerBackend); then
// `useBackend('js-cpu')`, `train({ config: { backend: 'js-cpu', ... } })`, or the CLI with
// PATCHFLOW_BACKEND_MODULES=@patchflow/example-js-backend `patchflow train --backend js-cpu`.
//
// A new tfjs backend starts with zero kernels (tfjs dispatches every op to the current backend's
// kernel of that name), so this one registers the tfjs backend "js-cpu" as a copy of stock
// tfjs-cpu: its memory management (MathBackendCPU) and all of its kernels. Then `kernels()` adds one
// of patchflow's fused-op contracts, PfGelu and its gradient PfGeluGrad (see KERNELS in
// @patchflow/tensor), in plain JavaScript; the model's GELU then runs on them instead of the
// composite of stock ops.
import { tf, registerBackend, KERNELS } from '@patchflow/tensor';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

export const TFJS_NAME = 'js-cpu';
/** Calls of this backend's kernels, by kernel name (shows that the model's ops reach them). */
export const kernelCalls = new Map();
const counted = (name, f) => (args) => {
  kernelCalls.set(name, (kernelCalls.get(name) ?? 0) + 1);
  return f(args);
};
const C = Math.sqrt(2 / Math.PI);

/** GELU, tanh approximation: y = x/2 · (1 + tanh(c (x + 0.044715 x³))). */
function geluForward({ inputs, backend }) {
  const { x } = inputs;
  const xs = backend.data.get(x.dataId).values;
  const y = new Float32Array(xs.length);
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i];
    y[i] = 0.5 * v * (1 + Math.tanh(C * (v + 0.044715 * v * v * v)));
  }
  return backend.makeTensorInfo(x.shape, 'float32', y);
}

/** dx = dy · (½(1 + t) + ½ x (1 − t²) c (1 + 3·0.044715 x²)), t = tanh(c (x + 0.044715 x³)). */
function geluBackward({ inputs, backend }) {
  const { x, dy } = inputs;
  const xs = backend.data.get(x.dataId).values;
  const g = backend.data.get(dy.dataId).values;
  const dx = new Float32Array(xs.length);
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i];
    const t = Math.tanh(C * (v + 0.044715 * v * v * v));
    dx[i] = g[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * C * (1 + 3 * 0.044715 * v * v));
  }
  return backend.makeTensorInfo(x.shape, 'float32', dx);
}

export const jsCpuBackend = {
  name: 'js-cpu',
  description: 'example third-party backend: tfjs-cpu kernels plus a plain-JavaScript fused GELU',
  tfjsName: TFJS_NAME,
  async checkAvailability() {
    return { ok: true }; // a real backend says here, in words a user can act on, why it cannot run
  },
  async setup() {
    if (tf.findBackendFactory(TFJS_NAME)) return;
    tf.registerBackend(TFJS_NAME, () => new MathBackendCPU(), 0);
    for (const k of tf.getKernelsForBackend('cpu')) tf.registerKernel({ ...k, backendName: TFJS_NAME });
  },
  capabilities() {
    return { device: 'cpu', maxRank: 6, fusedOps: [KERNELS.gelu], notes: ['plain JavaScript; an example, not a fast backend'] };
  },
  kernels() {
    return [
      { kernelName: KERNELS.gelu, kernelFunc: counted(KERNELS.gelu, geluForward) },
      { kernelName: KERNELS.geluGrad, kernelFunc: counted(KERNELS.geluGrad, geluBackward) },
    ];
  },
};

registerBackend(jsCpuBackend);
