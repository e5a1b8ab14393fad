import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // tests train small models; on a loaded 2-core machine a case can take tens of seconds
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
