import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup-gradients.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Let Vite transform tfjs-core's ESM files (extensionless imports) for setup-gradients.ts; the
    // CommonJS bundle that @patchflow/tensor and tfjs-backend-webgpu load stays external.
    server: { deps: { inline: [/@tensorflow[\\/]tfjs-core[\\/]dist[\\/](?!tf-core)/] } },
    // lavapipe (Mesa's CPU Vulkan driver, used in CI) compiles every shader with LLVM and runs at a
    // few GFLOP/s: generous limits.
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
