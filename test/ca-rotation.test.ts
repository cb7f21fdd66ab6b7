import fs from 'node:fs';
import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { startStack, type Stack } from '../src/testbed/stack.js';
import { createCa, issueCertificate } from '../src/tls/x509.js';
import { sleep, waitFor } from './helpers/wait.js';

// The API servers' serving certificate moves to a new CA. stallguard must pick up a CA bundle
// that gains the new CA before the switch, and recover without a restart when the bundle is
// fixed only after it.
let stack: Stack | undefined;
let session: http2.ClientHttp2Session | undefined;

afterEach(async () => {
  session?.close();
  session = undefined;
  await stack?.close();
  stack = undefined;
});

async function newServingCertificate() {
  const ca = await createCa('rotated-ca');
  const serving = await issueCertificate(ca, { commonName: 'kube-apiserver' }, { usage: 'server', ipAddresses: ['127.0.0.1', '::1'], dnsNames: ['localhost'] });
  return { ca, serving };
}

describe('API server CA rotation', () => {
  it('fails no request when the bundle gains the new CA first', async () => {
    stack = await startStack({ topology: 'direct', tlsPollIntervalMs: 200 });
    session = await connectH2(stack.url, stack.clientTls);
    const { ca, serving } = await newServingCertificate();

    fs.writeFileSync(stack.config.upstream.tls.ca, `${stack.pki.ca.certPem.trimEnd()}\n${ca.certPem}`);
    await sleep(1000);
    stack.servers[0]!.swapServingCertificate(serving.certPem, serving.keyPem);
    stack.servers[0]!.goaway();

    for (let i = 0; i < 20; i++) {
      expect((await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 })).status).toBe(200);
      await sleep(50);
    }
  });

  it('fails fast, then recovers without a restart once the bundle is fixed', async () => {
    stack = await startStack({ topology: 'direct', tlsPollIntervalMs: 200 });
    session = await connectH2(stack.url, stack.clientTls);
    const { ca, serving } = await newServingCertificate();

    stack.servers[0]!.swapServingCertificate(serving.certPem, serving.keyPem);
    stack.servers[0]!.goaway();
    await sleep(300);
    const started = Date.now();
    const failed = await h2Request(session, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 });
    const elapsed = Date.now() - started;

    expect(failed.status).toBe(503);
    expect(elapsed).toBeLessThan(stack.config.upstream.connectTimeoutMs + 500);
    expect((await fetch(`http://${stack.stallguard.addresses.metrics}/readyz`)).status).toBe(503);

    fs.writeFileSync(stack.config.upstream.tls.ca, `${stack.pki.ca.certPem.trimEnd()}\n${ca.certPem}`);
    await waitFor(async () => (await h2Request(session!, { path: '/api/v1/nodes/n1', timeoutMs: 10_000 })).status === 200, 10_000, 'recovery after the bundle fix');
  });
});
