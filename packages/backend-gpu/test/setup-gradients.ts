/**
 * Test-only stopgap: @patchflow/tensor 0.1.0 registers no tfjs gradients (tfjs-core's CommonJS node
 * bundle has none; they live in its ESM-only `dist/register_all_gradients`, which plain Node cannot
 * load because its imports have no file extensions), so tf.grads fails with "gradient function not
 * found for Multiply". Until @patchflow/tensor registers them itself, load that module through
 * Vite (see vitest.config.ts: server.deps.inline). It registers into tfjs's global gradient
 * registry, which every copy of tfjs-core shares. A no-op once gradients are registered.
 */
import { tf } from '@patchflow/tensor';

if (!tf.getGradient('Multiply')) {
  await import('@tensorflow/tfjs-core/dist/register_all_gradients');
}
