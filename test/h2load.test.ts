import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { startStack } from '../src/testbed/stack.js';

const run = promisify(execFile);
const H2LOAD = '/usr/bin/h2load';
const missing = fs.existsSync(H2LOAD) ? undefined : `${H2LOAD} is missing; install Debian's nghttp2-client`;

// h2load keeps many streams in flight on few connections, so HEADERS and DATA of a response often
// arrive in one read: the case in which a body could overtake its headers.
describe('many streams from h2load', () => {
  if (missing !== undefined && process.env.CI === 'true') {
    it('has h2load installed', () => {
      throw new Error(missing);
    });
    return;
  }

  it.skipIf(missing !== undefined)('serves 6,000 requests with 4 streams per connection', async () => {
    const stack = await startStack({ topology: 'direct', tokens: { 'load-token': { name: 'load' } } });
    try {
      const counts: string[] = [];
      for (let round = 0; round < 3; round++) {
        const { stdout } = await run(H2LOAD, ['-n', '2000', '-c', '2', '-m', '4', '-H', 'authorization: Bearer load-token', `${stack.url}/testbed/bytes?n=12000`]);
        counts.push(/requests: .*/.exec(stdout)?.[0] ?? stdout);
      }

      expect(counts).toEqual(Array(3).fill('requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout'));
    } finally {
      await stack.close();
    }
  }, 120_000);
});
