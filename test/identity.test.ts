import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IdentityHeaderNames } from '../src/downstream/identity-headers.js';
import { isLoopback } from '../src/downstream/plaintext-listener.js';
import { relayUpgrade, TunnelRegistry } from '../src/proxy/upgrade.js';
import { connectH2, h1Request, h2Request, type ClientResponse, type ClientTls } from '../src/testbed/client.js';
import { loadUpstreamTlsMaterial } from '../src/tls/upstream-material.js';
import { parseEndpoint } from '../src/upstream/endpoint.js';
import { issueClient, PINO_WARN, startHarness, type Harness, type Whoami } from './helpers/harness.js';

const WHOAMI = '/testbed/whoami';
const SPOOFED = {
  'x-remote-user': 'system:admin',
  'x-remote-group': 'system:masters',
  'x-remote-extra-scopes': 'everything',
};

/** Sends one HTTP/2 request on a new connection and closes it; connection errors become `error`. */
async function requestOnce(url: string, clientTls: ClientTls, path: string, headers: Record<string, string> = {}): Promise<ClientResponse> {
  const session = await connectH2(url, clientTls);
  try {
    return await h2Request(session, { path, headers, timeoutMs: 5000 });
  } finally {
    session.close();
  }
}

function whoami(response: ClientResponse): Whoami {
  expect(response.status, response.body.toString()).toBe(200);
  return JSON.parse(response.body.toString()) as Whoami;
}

function statusOf(response: ClientResponse): { kind: string; reason: string; code: number; message: string } {
  return JSON.parse(response.body.toString());
}

function nodeTls(harness: Harness): ClientTls {
  return { ca: harness.pki.ca.certPem, cert: harness.pki.node.certPem, key: harness.pki.node.keyPem };
}

function adminTls(harness: Harness): ClientTls {
  return { ca: harness.pki.ca.certPem, cert: harness.pki.admin.certPem, key: harness.pki.admin.keyPem };
}

/** Sends an HTTP/1.1 Upgrade request over TLS and returns the response head. */
function upgradeOnce(harness: Harness, clientTls: ClientTls): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: Number(new URL(harness.url).port), ...clientTls, ALPNProtocols: ['http/1.1'] });
    let received = '';
    socket.on('secureConnect', () => {
      socket.write('POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n');
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n\r\n')) {
        socket.destroy();
        resolve(received);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
  });
}

describe('identity in static mode', () => {
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness();
  });

  afterAll(async () => {
    await harness?.close();
  });

  it('sends the node certificate client as the node', async () => {
    const seen = whoami(await requestOnce(harness.url, nodeTls(harness), WHOAMI));

    expect(seen.user.name).toBe('system:node:n1');
    expect(seen.clientCertificate?.subject.CN).toBe('system:node:n1');
  });

  it('rejects another subject with 403', async () => {
    const before = harness.server.requests.length;

    const response = await requestOnce(harness.url, adminTls(harness), '/api/v1/nodes/n1');

    expect(response.status).toBe(403);
    const status = statusOf(response);
    expect(status.kind).toBe('Status');
    expect(status.reason).toBe('Forbidden');
    expect(status.message).toContain('CN=kubernetes-admin, O=system:masters');
    expect(status.message).toContain('CN=system:node:n1, O=system:nodes');
    expect(harness.server.requests.length).toBe(before);
  });

  it('rejects another subject over HTTP/1.1 and Upgrade', async () => {
    const before = harness.server.requests.length;

    const response = await h1Request(harness.url, adminTls(harness), { path: '/api/v1/nodes/n1' });
    const upgrade = await upgradeOnce(harness, adminTls(harness));

    expect(response.status).toBe(403);
    expect(upgrade).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(harness.server.requests.length).toBe(before);
  });

  it('rejects a certificate from another CA and logs why', async () => {
    const before = harness.server.requests.length;
    const foreign = { ca: harness.pki.ca.certPem, cert: harness.pki.foreignClient.certPem, key: harness.pki.foreignClient.keyPem };

    const outcome = await requestOnce(harness.url, foreign, '/api/v1/nodes/n1').then(
      (response) => `status ${response.status}`,
      (err: Error) => `error ${err.message}`,
    );

    expect(outcome).toMatch(/^error /);
    expect(harness.server.requests.length).toBe(before);
    const logged = harness.logs.withMessage('client certificate rejected');
    expect(logged).toHaveLength(1);
    expect(logged[0]!.level).toBe(PINO_WARN);
    expect(logged[0]!.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(String(logged[0]!.reason)).toMatch(/^UNABLE_TO_(VERIFY_LEAF_SIGNATURE|GET_ISSUER_CERT)/);
    expect(harness.logs.text()).not.toContain('BEGIN');
  });

  it('answers 401 when neither certificate nor token is sent', async () => {
    const before = harness.server.requests.length;

    const response = await requestOnce(harness.url, { ca: harness.pki.ca.certPem }, '/api/v1/nodes/n1');

    expect(response.status).toBe(401);
    expect(statusOf(response).reason).toBe('Unauthorized');
    expect(harness.server.requests.length).toBe(before);
  });

  it('sends a bearer token without a client certificate', async () => {
    const withoutCertificate = whoami(await requestOnce(harness.url, { ca: harness.pki.ca.certPem }, WHOAMI, { authorization: 'Bearer token-abc' }));
    const recordedWithout = harness.server.requests.at(-1)!;
    const withCertificate = whoami(await requestOnce(harness.url, adminTls(harness), WHOAMI, { authorization: 'Bearer token-abc' }));
    const recordedWith = harness.server.requests.at(-1)!;

    for (const [seen, recorded] of [
      [withoutCertificate, recordedWithout],
      [withCertificate, recordedWith],
    ] as const) {
      expect(seen.user.name).toBe('kube-proxy');
      expect(seen.clientCertificate).toBeNull();
      expect(seen.headers.authorization).toEqual(['[sent]']);
      expect(recorded.bearerToken).toBe(true);
      expect(recorded.clientCertificate).toBe(false);
    }
  });

  it('removes client-sent identity headers', async () => {
    const asNode = whoami(await requestOnce(harness.url, nodeTls(harness), WHOAMI, SPOOFED));
    const asToken = whoami(await requestOnce(harness.url, { ca: harness.pki.ca.certPem }, WHOAMI, { ...SPOOFED, authorization: 'Bearer token-abc' }));

    for (const seen of [asNode, asToken]) {
      expect(seen.headers['x-remote-user']).toBeUndefined();
      expect(seen.headers['x-remote-group']).toBeUndefined();
      expect(seen.headers['x-remote-extra-scopes']).toBeUndefined();
    }
    expect(asNode.user.name).toBe('system:node:n1');
  });

  it('does not warn about allowAnonymous when it is off', () => {
    expect(harness.logs.lines().some((line) => String(line.msg).includes('allowAnonymous'))).toBe(false);
  });
});

describe('identity in static mode without upstream.tls.cert', () => {
  let harness: Harness | undefined;

  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  it('rejects certificate clients with 403 and forwards tokens', async () => {
    harness = await startHarness({
      adjust: (config) => {
        config.upstream.tls.cert = '';
        config.upstream.tls.key = '';
      },
    });

    const byCertificate = await requestOnce(harness.url, nodeTls(harness), WHOAMI);
    const byToken = whoami(await requestOnce(harness.url, { ca: harness.pki.ca.certPem }, WHOAMI, { authorization: 'Bearer token-abc' }));

    expect(byCertificate.status).toBe(403);
    expect(statusOf(byCertificate).message).toContain('upstream.tls.cert is not set');
    expect(byToken.user.name).toBe('kube-proxy');
  });
});

describe('identity in front-proxy mode', () => {
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({
      config: { upstream: { identity: 'front-proxy' } },
      adjust: (config, _pki, frontProxy) => {
        config.upstream.tls.cert = frontProxy.certPath;
        config.upstream.tls.key = frontProxy.keyPath;
      },
    });
  });

  afterAll(async () => {
    await harness?.close();
  });

  it('asserts the client certificate identity in headers', async () => {
    const admin = whoami(await requestOnce(harness.url, adminTls(harness), WHOAMI));
    const node = whoami(await requestOnce(harness.url, nodeTls(harness), WHOAMI));

    expect(admin.clientCertificate?.subject.CN).toBe('front-proxy-client');
    expect(admin.headers['x-remote-user']).toEqual(['kubernetes-admin']);
    expect(admin.headers['x-remote-group']).toEqual(['system:masters']);
    expect(node.headers['x-remote-user']).toEqual(['system:node:n1']);
    expect(node.headers['x-remote-group']).toEqual(['system:nodes']);
  });

  it('sends one group header per O attribute', async () => {
    const multi = await issueClient(harness.dir, harness.pki.ca, 'multi-group', { commonName: 'alice', organizations: ['team-a', 'team-b'] });

    const seen = whoami(await requestOnce(harness.url, { ca: harness.pki.ca.certPem, cert: multi.certPem, key: multi.keyPem }, WHOAMI));

    expect(seen.headers['x-remote-user']).toEqual(['alice']);
    expect(seen.headers['x-remote-group']).toEqual(['team-a', 'team-b']);
  });

  it('asserts the identity over HTTP/1.1', async () => {
    const seen = whoami(await h1Request(harness.url, adminTls(harness), { path: WHOAMI }));

    expect(seen.headers['x-remote-user']).toEqual(['kubernetes-admin']);
    expect(seen.headers['x-remote-group']).toEqual(['system:masters']);
  });

  it('replaces spoofed identity headers', async () => {
    const seen = whoami(await requestOnce(harness.url, nodeTls(harness), WHOAMI, SPOOFED));

    expect(seen.headers['x-remote-user']).toEqual(['system:node:n1']);
    expect(seen.headers['x-remote-group']).toEqual(['system:nodes']);
    expect(seen.headers['x-remote-extra-scopes']).toBeUndefined();
  });

  it('sends token requests without identity headers or certificate', async () => {
    const seen = whoami(await requestOnce(harness.url, adminTls(harness), WHOAMI, { ...SPOOFED, authorization: 'Bearer token-abc' }));

    expect(seen.user.name).toBe('kube-proxy');
    expect(seen.clientCertificate).toBeNull();
    expect(seen.headers['x-remote-user']).toBeUndefined();
    expect(seen.headers['x-remote-group']).toBeUndefined();
  });

  it('answers 401 when neither certificate nor token is sent', async () => {
    const before = harness.server.requests.length;

    const response = await requestOnce(harness.url, { ca: harness.pki.ca.certPem }, WHOAMI);

    expect(response.status).toBe(401);
    expect(harness.server.requests.length).toBe(before);
  });
});

describe('front-proxy header names and anonymous requests', () => {
  let harness: Harness | undefined;

  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  it('uses the configured header names', async () => {
    harness = await startHarness({
      config: {
        upstream: { identity: 'front-proxy', frontProxy: { usernameHeader: 'X-Auth-User', groupHeader: 'X-Auth-Group', extraHeaderPrefix: 'X-Auth-Extra-' } },
      },
      adjust: (config, _pki, frontProxy) => {
        config.upstream.tls.cert = frontProxy.certPath;
        config.upstream.tls.key = frontProxy.keyPath;
      },
    });

    const seen = whoami(await requestOnce(harness.url, adminTls(harness), WHOAMI, { 'x-auth-user': 'mallory', 'x-auth-extra-scopes': 'all' }));

    expect(seen.headers['x-auth-user']).toEqual(['kubernetes-admin']);
    expect(seen.headers['x-auth-group']).toEqual(['system:masters']);
    expect(seen.headers['x-auth-extra-scopes']).toBeUndefined();
    expect(seen.headers['x-remote-user']).toBeUndefined();
  });

  it('sends anonymous requests without a certificate', async () => {
    harness = await startHarness({
      config: { listen: { allowAnonymous: true }, upstream: { identity: 'front-proxy' } },
      adjust: (config, _pki, frontProxy) => {
        config.upstream.tls.cert = frontProxy.certPath;
        config.upstream.tls.key = frontProxy.keyPath;
      },
    });

    const response = await requestOnce(harness.url, { ca: harness.pki.ca.certPem }, '/api/v1/nodes/n1', SPOOFED);

    // The fake API server, like kube-apiserver without anonymous auth, answers 401 to no identity.
    expect(response.status).toBe(401);
    const recorded = harness.server.requests.at(-1)!;
    expect(recorded.clientCertificate).toBe(false);
    expect(recorded.bearerToken).toBe(false);
    expect(recorded.user).toBeUndefined();
  });
});

describe('listen.allowAnonymous', () => {
  let harness: Harness | undefined;

  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  it('admits a request without credentials as the node and warns at start', async () => {
    harness = await startHarness({ config: { listen: { allowAnonymous: true } } });

    const seen = whoami(await requestOnce(harness.url, { ca: harness.pki.ca.certPem }, WHOAMI));

    expect(seen.user.name).toBe('system:node:n1');
    const warnings = harness.logs.lines().filter((line) => String(line.msg).includes('listen.allowAnonymous is set'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe(PINO_WARN);
  });
});

describe('plaintext listener', () => {
  let harness: Harness | undefined;
  let session: http2.ClientHttp2Session | undefined;

  afterEach(async () => {
    session?.close();
    session = undefined;
    await harness?.close();
    harness = undefined;
  });

  async function plaintextH2(): Promise<http2.ClientHttp2Session> {
    const opened = http2.connect(`http://${harness!.stallguard.addresses.plaintext}`);
    opened.on('error', () => {});
    await new Promise((resolve, reject) => {
      opened.once('connect', resolve);
      opened.once('error', reject);
    });
    return opened;
  }

  function plaintextH1(headers: Record<string, string>): Promise<number> {
    return new Promise((resolve, reject) => {
      const [host, port] = harness!.stallguard.addresses.plaintext!.split(':');
      const req = http.request({ host, port: Number(port), path: '/api/v1/nodes/n1', headers, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('admits only bearer-token requests', async () => {
    harness = await startHarness({ config: { listen: { plaintext: '127.0.0.1:0' } } });
    session = await plaintextH2();
    const before = harness.server.requests.length;

    const anonymous = await h2Request(session, { path: '/api/v1/nodes/n1' });
    const anonymousH1 = await plaintextH1({});
    expect(harness.server.requests.length).toBe(before);
    const withToken = whoami(await h2Request(session, { path: WHOAMI, headers: { authorization: 'Bearer token-abc' } }));
    const withTokenH1 = await plaintextH1({ authorization: 'Bearer token-abc' });

    expect(anonymous.status).toBe(401);
    expect(anonymousH1).toBe(401);
    expect(withToken.user.name).toBe('kube-proxy');
    expect(withToken.clientCertificate).toBeNull();
    expect(withTokenH1).toBe(200);
  });

  it('admits anonymous requests with allowAnonymous', async () => {
    harness = await startHarness({ config: { listen: { plaintext: '127.0.0.1:0', allowAnonymous: true } } });
    session = await plaintextH2();

    const seen = whoami(await h2Request(session, { path: WHOAMI }));

    expect(seen.user.name).toBe('system:node:n1');
  });

  it.each([
    ['127.0.0.1', true],
    ['127.8.9.10', true],
    ['::1', true],
    ['::ffff:127.0.0.1', true],
    ['10.0.0.1', false],
    ['::ffff:10.0.0.1', false],
    ['fe80::1', false],
    [undefined, false],
  ])('treats %s as loopback: %s', (address, expected) => {
    expect(isLoopback(address)).toBe(expected);
  });
});

describe('upstream TLS verification', () => {
  let harness: Harness | undefined;

  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  it('warns at every start when insecureSkipVerify is set', async () => {
    harness = await startHarness({ config: { upstream: { tls: { insecureSkipVerify: true } } } });

    const seen = whoami(await requestOnce(harness.url, nodeTls(harness), WHOAMI));

    expect(seen.user.name).toBe('system:node:n1');
    const warnings = harness.logs.lines().filter((line) => String(line.msg).includes('insecureSkipVerify is set'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe(PINO_WARN);
  });

  it('rejects an API server that upstream.tls.ca did not sign', async () => {
    harness = await startHarness({ adjust: (config, pki) => (config.upstream.tls.ca = pki.otherCa.certPath) });

    const response = await requestOnce(harness.url, { ca: harness.pki.ca.certPem, cert: harness.pki.node.certPem, key: harness.pki.node.keyPem }, '/api/v1/nodes/n1');

    expect(response.status).toBe(503);
    expect(statusOf(response).message).toMatch(/TLS handshake .* failed/);
    expect(harness.server.requests).toHaveLength(0);
  });

  it('checks upstream.tls.serverName against the API server certificate', async () => {
    harness = await startHarness({ config: { upstream: { tls: { serverName: 'kubernetes.default' } } } });
    const matching = whoami(await requestOnce(harness.url, nodeTls(harness), WHOAMI));
    await harness.close();

    harness = await startHarness({ config: { upstream: { tls: { serverName: 'not-the-apiserver.example' } } } });
    const mismatched = await requestOnce(harness.url, nodeTls(harness), '/api/v1/nodes/n1');

    expect(matching.user.name).toBe('system:node:n1');
    expect(mismatched.status).toBe(503);
    expect(statusOf(mismatched).message).toContain('not-the-apiserver.example');
  });
});

describe('upgrade tunnel identity headers', () => {
  it('replaces spoofed headers with the asserted identity', async () => {
    const harness = await startHarness();
    const received: string[] = [];
    const upstream = tls.createServer({ cert: harness.pki.server.certPem, key: harness.pki.server.keyPem }, (socket) => {
      let head = '';
      socket.on('data', (chunk: Buffer) => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        received.push(head);
        socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n');
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const names = new IdentityHeaderNames(harness.config.upstream.frontProxy);

    const local = http.createServer();
    local.on('upgrade', (req, socket, head) => {
      relayUpgrade(req, socket, head, {
        endpoint: parseEndpoint(`https://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`, ''),
        identity: 'client-cert',
        identityHeaders: names.asserting({ name: 'alice', groups: ['team-a', 'team-b'] }),
        tls: loadUpstreamTlsMaterial(harness.config.upstream.tls),
        connectTimeoutMs: 2000,
        log: pino({ level: 'silent' }),
        tunnels: new TunnelRegistry(),
      });
    });
    await new Promise<void>((resolve) => local.listen(0, '127.0.0.1', resolve));

    try {
      const response = await new Promise<string>((resolve, reject) => {
        const socket = net.connect((local.address() as net.AddressInfo).port, '127.0.0.1');
        let text = '';
        socket.on('connect', () =>
          socket.write(
            'POST /api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n' +
              'X-Remote-User: mallory\r\nx-remote-group: system:masters\r\nX-Remote-Extra-Scopes: all\r\n\r\n',
          ),
        );
        socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
        socket.on('close', () => resolve(text));
        socket.on('error', reject);
      });

      expect(response).toMatch(/^HTTP\/1\.1 101/);
      expect(received).toHaveLength(1);
      const lines = received[0]!.split('\r\n').map((line) => line.toLowerCase());
      expect(lines).toContain('x-remote-user: alice');
      expect(lines.filter((line) => line.startsWith('x-remote-group:'))).toEqual(['x-remote-group: team-a', 'x-remote-group: team-b']);
      expect(received[0]).not.toContain('mallory');
      expect(received[0]!.toLowerCase()).not.toContain('x-remote-extra-scopes');
    } finally {
      local.close();
      upstream.close();
      await harness.close();
    }
  });
});
