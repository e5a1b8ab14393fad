import { describe, it, expect } from 'vitest';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { tf, registerBackend, useBackend, listBackends, getBackendPlugin, prepareBackend, currentBackendName, BackendError, type BackendPlugin } from '../src/index.js';

describe('backend registry', () => {
  it('lists the built-in backends', () => {
    const names = listBackends().map((b) => b.name);
    expect(names).toContain('cpu');
    expect(names).toContain('tfjs-cpu');
  });

  it('refuses an unknown backend, naming the known ones', async () => {
    await expect(useBackend('nope')).rejects.toThrow(BackendError);
    await expect(useBackend('nope')).rejects.toThrow(/unknown backend "nope" \(known: .*cpu/);
  });

  it('refuses an unavailable backend with its own reason and never calls setup', async () => {
    let setups = 0;
    registerBackend({
      name: 'test-missing',
      description: 'never available',
      tfjsName: 'test-missing',
      checkAvailability: async () => ({ ok: false, reason: 'no such device: plug it in' }),
      setup: async () => void setups++,
      capabilities: () => ({ device: 'gpu', maxRank: 4, fusedOps: [] }),
    });
    await expect(useBackend('test-missing')).rejects.toThrow('backend "test-missing" is not available: no such device: plug it in');
    expect(setups).toBe(0);
  });

  it('lets a third party register a backend with its own kernels, without touching patchflow code', async () => {
    // a "backend" that is tfjs's cpu backend under another name, with Neg replaced by a kernel
    // that returns x + 100: if our registry installs kernels, tf.neg shows it.
    const plugin: BackendPlugin = {
      name: 'third-party',
      description: 'test',
      tfjsName: 'third-party-tfjs',
      checkAvailability: async () => ({ ok: true }),
      setup: async () => {
        tf.registerBackend('third-party-tfjs', () => new MathBackendCPU());
        for (const k of tf.getKernelsForBackend('cpu')) tf.registerKernel({ ...k, backendName: 'third-party-tfjs' });
      },
      capabilities: () => ({ device: 'cpu', maxRank: 6, fusedOps: [] }),
      kernels: () => [
        {
          kernelName: 'Neg',
          kernelFunc: ({ inputs, backend }) => {
            const b = backend as MathBackendCPU;
            const x = inputs.x as tf.TensorInfo;
            const vals = b.data.get(x.dataId).values as Float32Array;
            return b.makeTensorInfo(x.shape, 'float32', vals.map((v) => v + 100));
          },
        },
      ],
    };
    registerBackend(plugin);
    expect(getBackendPlugin('third-party')).toBe(plugin);
    await useBackend('third-party');
    expect(currentBackendName()).toBe('third-party');
    expect(Array.from(tf.neg(tf.tensor1d([1, 2])).dataSync())).toEqual([101, 102]);
    await prepareBackend('third-party'); // idempotent
    await useBackend('cpu');
    expect(Array.from(tf.neg(tf.tensor1d([1, 2])).dataSync())).toEqual([-1, -2]);
  });

  it('rejects a malformed backend name', () => {
    expect(() => registerBackend({ ...getBackendPlugin('cpu'), name: 'Bad Name' })).toThrow(BackendError);
  });
});
