import { defineConfig } from 'vitest/config';

// Real servers and clients share two cores: few workers, generous timeouts, no timing asserts.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
    reporters: ['default'],
  },
});
