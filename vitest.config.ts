import { defineConfig } from 'vitest/config';

// Tests start real servers, relays and child processes on loopback, so they run one file at a
// time: two cores cannot absorb parallel files without skewing the timing bounds they assert.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
  },
});
