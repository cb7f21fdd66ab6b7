import crypto from 'node:crypto';
import http2 from 'node:http2';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectH2, h1Request, h2Request } from '../src/testbed/client.js';
import { startStack, type Stack } from '../src/testbed/stack.js';

describe('proxy core', () => {
  let stack: Stack;
  let session: http2.ClientHttp2Session;

  beforeAll(async () => {
    stack = await startStack({ tokens: { 'token-abc': { name: 'kube-proxy', groups: ['system:nodes'] } } });
    session = await connectH2(stack.url, stack.clientTls);
  });

  afterAll(async () => {
    session?.close();
    await stack?.close();
  });

  it('forwards an HTTP/2 GET as the node identity', async () => {
    const response = await h2Request(session, { path: '/api/v1/nodes/n1' });

    expect(response.status).toBe(200);
    expect(JSON.parse(response.body.toString()).metadata.name).toBe('n1');
    const seen = stack.servers[0]!.requests.at(-1)!;
    expect(seen.path).toBe('/api/v1/nodes/n1');
    expect(seen.user).toBe('system:node:n1');
    expect(seen.clientCertificate).toBe(true);
    expect(seen.httpVersion).toBe('2.0');
  });

  it('forwards an HTTP/1.1 GET', async () => {
    const response = await h1Request(stack.url, stack.clientTls, { path: '/api/v1/nodes/n1' });

    expect(response.status).toBe(200);
    expect(JSON.parse(response.body.toString()).kind).toBe('Node');
  });

  it('streams 6 MiB request and response bodies both ways over HTTP/2', async () => {
    const body = crypto.randomBytes(6 * 1024 * 1024);

    const response = await h2Request(session, { method: 'POST', path: '/testbed/echo', body, headers: { 'content-type': 'application/octet-stream' } });

    expect(response.status).toBe(200);
    expect(response.body.length).toBe(body.length);
    expect(sha256(response.body)).toBe(sha256(body));
  });

  it('streams 6 MiB bodies over HTTP/1.1 chunked', async () => {
    const body = crypto.randomBytes(6 * 1024 * 1024);

    const response = await h1Request(stack.url, stack.clientTls, {
      method: 'POST',
      path: '/testbed/echo',
      body,
      headers: { 'transfer-encoding': 'chunked' },
    });

    expect(response.status).toBe(200);
    expect(sha256(response.body)).toBe(sha256(body));
  });

  it('streams an 8 MiB response that matches its digest', async () => {
    const size = 8 * 1024 * 1024;

    const response = await h2Request(session, { path: `/testbed/bytes?n=${size}` });

    expect(response.body.length).toBe(size);
    const digest = response.headers['x-sha256'] ?? response.trailers['x-sha256'];
    expect(sha256(response.body)).toBe(digest);
  });

  it('passes request trailers up and response trailers down', async () => {
    const response = await new Promise<{ trailers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const stream = session.request({ ':method': 'POST', ':path': '/testbed/echo', te: 'trailers' }, { waitForTrailers: true });
      let body = '';
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-request-checksum': 'abc123' }));
      stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
      stream.on('trailers', (trailers) => resolve({ trailers, body }));
      stream.on('error', reject);
      stream.end('hello');
    });

    expect(response.body).toBe('hello');
    expect(response.trailers['x-request-checksum']).toBe('abc123');
    expect(response.trailers['x-echo-bytes']).toBe('5');
  });

  it('serves 400 concurrent streams on one connection', async () => {
    // HEADERS and DATA often arrive in one read; the body must never overtake the headers.
    const responses = await Promise.all(
      Array.from({ length: 400 }, () => h2Request(session, { path: '/testbed/bytes?n=12000' })),
    );

    expect(responses.map((response) => response.status)).toEqual(Array(400).fill(200));
    expect(responses.every((response) => response.body.length === 12000)).toBe(true);
  });

  it('never lets the client authority pick the upstream', async () => {
    const response = await h2Request(session, { path: '/api/v1/nodes/n1', headers: { ':authority': '192.0.2.1:6443' } });

    expect(response.status).toBe(200);
    expect(stack.servers[0]!.requests.at(-1)!.path).toBe('/api/v1/nodes/n1');
  });

  it('drops hop-by-hop headers and keeps the others', async () => {
    const response = await h1Request(stack.url, stack.clientTls, {
      path: '/testbed/whoami',
      headers: { connection: 'keep-alive, x-per-hop', 'x-per-hop': 'drop me', 'keep-alive': 'timeout=5', 'proxy-connection': 'keep-alive', 'x-end-to-end': 'keep me', te: 'trailers' },
    });

    const seen = JSON.parse(response.body.toString()).headers as Record<string, string[]>;
    expect(seen['x-end-to-end']).toEqual(['keep me']);
    expect(seen['te']).toEqual(['trailers']);
    expect(seen['x-per-hop']).toBeUndefined();
    expect(seen['keep-alive']).toBeUndefined();
    expect(seen['proxy-connection']).toBeUndefined();
    expect(seen['connection']).toBeUndefined();
  });

  it('answers 400 to an absolute-form request target', async () => {
    const before = stack.servers[0]!.requests.length;
    const port = Number(new URL(stack.url).port);

    const raw = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...stack.clientTls, ALPNProtocols: ['http/1.1'] });
      let received = '';
      socket.on('secureConnect', () => socket.write('GET https://192.0.2.1:6443/api/v1/nodes HTTP/1.1\r\nHost: 192.0.2.1:6443\r\nConnection: close\r\n\r\n'));
      socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
      socket.on('end', () => resolve(received));
      socket.on('error', reject);
    });

    expect(raw).toMatch(/^HTTP\/1\.1 400/);
    expect(raw).toContain('"reason":"BadRequest"');
    expect(stack.servers[0]!.requests.length).toBe(before);
  });

  it('answers 401 Status to a client with neither certificate nor token', async () => {
    const before = stack.servers[0]!.requests.length;
    const anonymous = await connectH2(stack.url, { ca: stack.clientTls.ca });

    const response = await h2Request(anonymous, { path: '/api/v1/nodes/n1' });
    anonymous.close();

    expect(response.status).toBe(401);
    const status = JSON.parse(response.body.toString());
    expect(status.kind).toBe('Status');
    expect(status.reason).toBe('Unauthorized');
    expect(stack.servers[0]!.requests.length).toBe(before);
  });

  it('sends a bearer-token request upstream without the client certificate', async () => {
    const response = await h2Request(session, { path: '/api/v1/nodes/n1', headers: { authorization: 'Bearer token-abc' } });

    expect(response.status).toBe(200);
    const seen = stack.servers[0]!.requests.at(-1)!;
    expect(seen.bearerToken).toBe(true);
    expect(seen.clientCertificate).toBe(false);
    expect(seen.user).toBe('kube-proxy');
  });

  it('rejects a client certificate from another CA', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port: Number(new URL(stack.url).port),
        ca: stack.clientTls.ca,
        cert: stack.pki.foreignClient.certPem,
        key: stack.pki.foreignClient.keyPem,
        ALPNProtocols: ['h2'],
      });
      socket.on('error', (err) => resolve(`error: ${err.message}`));
      socket.on('close', () => resolve('closed'));
    });

    expect(outcome).toMatch(/closed|error/);
  });

  it('relays an HTTP/1.1 Upgrade round trip', async () => {
    const port = Number(new URL(stack.url).port);
    const echoed = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...stack.clientTls, ALPNProtocols: ['http/1.1'] });
      let received = '';
      socket.on('secureConnect', () => {
        socket.write(
          'POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: localhost\r\n' +
            'Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n',
        );
      });
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString('latin1');
        if (received.includes('\r\n\r\n') && !received.includes('ping-through-tunnel')) socket.write('ping-through-tunnel');
        if (received.includes('ping-through-tunnel')) {
          socket.destroy();
          resolve(received);
        }
      });
      socket.on('error', reject);
    });

    expect(echoed).toMatch(/^HTTP\/1\.1 101/);
    expect(echoed).toContain('ping-through-tunnel');
  });

  it('delivers watch events as they happen', async () => {
    const events: string[] = [];
    const stream = session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/configmaps?watch=true' });
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => events.push(...chunk.split('\n').filter((line) => line !== '')));
    await new Promise((resolve) => stream.once('response', resolve));

    stack.servers[0]!.putObject('configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'live-1', namespace: 'default' } });
    await waitUntil(() => events.some((line) => line.includes('live-1')), 3000);
    stream.close();

    expect(JSON.parse(events.find((line) => line.includes('live-1'))!).type).toBe('ADDED');
  });
});

describe('proxy core without a reachable API server', () => {
  it('answers 503 Status with Retry-After naming the endpoint, within connectTimeout', async () => {
    const stack = await startStack();
    await stack.relays[0]!.refuse();
    stack.servers[0]!.destroyAllSessions();
    const session = await connectH2(stack.url, stack.clientTls);

    const started = Date.now();
    let response = await h2Request(session, { path: '/api/v1/nodes/n1' });
    // The first request may still find the warm session before it notices the reset.
    if (response.status === 200) response = await h2Request(session, { path: '/api/v1/nodes/n1' });
    const elapsed = Date.now() - started;
    session.close();
    await stack.close();

    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toMatch(/^\d+$/);
    const status = JSON.parse(response.body.toString());
    expect(status).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'ServiceUnavailable', code: 503 });
    expect(status.message).toContain(stack.config.upstream.endpoints[0]!.replace('https://', ''));
    expect(elapsed).toBeLessThan(stack.config.upstream.connectTimeoutMs + 1000);
  });
});

describe('proxy core shutdown', () => {
  it('lets an in-flight request finish and ends a watch cleanly', async () => {
    const stack = await startStack();
    const session = await connectH2(stack.url, stack.clientTls);

    const watch = session.request({ ':method': 'GET', ':path': '/api/v1/namespaces/default/pods?watch=1' });
    watch.resume();
    const watchEnded = new Promise<string>((resolve) => watch.on('close', () => resolve(`closed rst=${watch.rstCode}`)));
    await new Promise((resolve) => watch.once('response', resolve));
    const slow = h2Request(session, { path: '/testbed/slow?ms=600' });
    await waitUntil(() => stack.servers[0]!.requests.some((r) => r.path.startsWith('/testbed/slow')), 3000);

    const closing = stack.stallguard.close();

    expect(await watchEnded).toBe('closed rst=0');
    expect((await slow).status).toBe(200);
    await closing;
    await expect(connectH2(stack.url, stack.clientTls)).rejects.toThrow();
    session.close();
    await stack.close();
  });
});

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
