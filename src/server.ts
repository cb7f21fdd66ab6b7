import fs from 'node:fs';
import type http from 'node:http';
import type http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from './config/types.js';
import { EndpointDiscovery, type DiscoveryTuning } from './discovery/endpoint-discovery.js';
import { admitRequest, type Admission, type AdmissionPolicy } from './downstream/admission.js';
import { IdentityHeaderNames, type IdentityHeaders } from './downstream/identity-headers.js';
import { createPlaintextListener } from './downstream/plaintext-listener.js';
import { createTlsListener, type RequestHandlers } from './downstream/tls-listener.js';
import { ConfigError, describeError, NoReadyEndpointError } from './errors.js';
import { redactConfig } from './config/redact.js';
import { describeCertificateFiles, type CertificateSource, type LoadedCertificate } from './metrics/certificates.js';
import { dialFailureEvictionReason } from './metrics/labels.js';
import { Metrics } from './metrics/metrics.js';
import { createMetricsServer } from './metrics/server.js';
import { buildStateDocument, describeNotReady } from './metrics/state.js';
import { ForwardedRequest, type ForwardContext } from './proxy/forward.js';
import { rejectUpgrade, relayUpgrade, TunnelRegistry } from './proxy/upgrade.js';
import { sendStatus } from './proxy/respond.js';
import { WatchRegistry } from './proxy/watch-registry.js';
import { ensureLocalServingMaterial, type LocalServingMaterial } from './tls/local-ca.js';
import { UpstreamTlsReloader } from './tls/reloader.js';
import { ServingCertificateRenewer } from './tls/serving-renewal.js';
import { UpstreamPool } from './upstream/pool.js';
import { VERSION } from './version.js';

/** A running stallguard: its listeners, pool and metrics server. */
export interface RunningStallguard {
  /** Addresses actually bound, as host:port (useful when a configured port was 0). */
  addresses: { listen: string; plaintext?: string; metrics: string };
  pool: UpstreamPool;
  metrics: Metrics;
  /** The upstream TLS material in use, reloaded when its files change. */
  tlsReloader: UpstreamTlsReloader;
  /**
   * Shuts down in order: stop accepting, end watch streams cleanly, let in-flight requests finish
   * up to shutdown.drainTimeout, then close every session and connection.
   */
  close(): Promise<void>;
}

/** Timer settings that tests shorten; production uses the defaults. */
export interface StartOptions {
  /** Time between two checks of the upstream TLS files; 5 s unless given. */
  tlsPollIntervalMs?: number;
  /** Time between two renewal checks of the generated serving certificate; one day unless given. */
  servingRenewalIntervalMs?: number;
  /** Endpoint discovery internals: the DNS lookup function, debounce and retry timings. */
  discovery?: Partial<DiscoveryTuning>;
}

export async function startStallguard(config: Config, logger: Logger, options: StartOptions = {}): Promise<RunningStallguard> {
  const log = logger;
  const startedAt = new Date();
  const metrics = new Metrics(VERSION);
  const watches = new WatchRegistry();
  const tunnels = new TunnelRegistry();
  const tlsReloader = new UpstreamTlsReloader({
    tls: config.upstream.tls,
    log: log.child({ component: 'tls' }),
    pollIntervalMs: options.tlsPollIntervalMs,
    onMaterial: (material) => {
      pool.setTlsMaterial(material);
      onUpstreamTlsReloaded();
    },
    onReload: (outcome) => metrics.tlsReloads.inc({ outcome: outcome === 'success' ? 'success' : 'failure' }),
  });
  const upstreamTls = tlsReloader.current();
  const discovery = await EndpointDiscovery.prepare(config, log.child({ component: 'discovery' }), options.discovery);
  const endpoints = discovery.initialEndpoints;
  metrics.declareEndpoints(endpoints.map((endpoint) => endpoint.id));
  metrics.setConfiguredTimeouts({
    pingIntervalMs: config.health.pingIntervalMs,
    pingTimeoutMs: config.health.pingTimeoutMs,
    connectTimeoutMs: config.upstream.connectTimeoutMs,
  });

  if (config.upstream.tls.insecureSkipVerify) {
    log.warn('upstream.tls.insecureSkipVerify is set: API-server certificates are not verified');
  }
  if (config.upstream.tls.cert === '') {
    log.warn('upstream.tls.cert is not set: clients that present a certificate get 403, and only bearer-token requests are forwarded; point upstream.tls.cert and upstream.tls.key at the node client certificate');
  }
  if (config.listen.allowAnonymous) {
    log.warn('listen.allowAnonymous is set: requests without a client certificate or a bearer token are admitted');
  }
  log.info({ identity: config.upstream.identity }, 'upstream identity mode');

  const admission: AdmissionPolicy = {
    allowAnonymous: config.listen.allowAnonymous,
    mode: config.upstream.identity,
    upstreamSubject: () => tlsReloader.clientSubject(),
    headers: new IdentityHeaderNames(config.upstream.frontProxy),
  };
  const rejectReason = (rejection: Extract<Admission, { admitted: false }>) => (rejection.status === 401 ? 'unauthenticated' : 'forbidden');

  const warmIdentity = upstreamTls.cert !== undefined ? 'client-cert' : 'anonymous';
  const pool = new UpstreamPool({
    endpoints,
    fallbackEndpoints: discovery.fallbackEndpoints,
    tls: upstreamTls,
    connectTimeoutMs: config.upstream.connectTimeoutMs,
    backoff: config.upstream.reconnectBackoff,
    health: config.health,
    maxSessionsPerEndpoint: config.upstream.maxSessionsPerEndpoint,
    warmEndpoints: config.upstream.warmEndpoints,
    warmIdentity,
    log: log.child({ component: 'pool' }),
    hooks: {
      onSessionState: (session, _from, to, reason) => {
        if (to === 'closed') metrics.sessionsEvicted.inc({ endpoint: session.endpoint.id, reason });
        if (reason === 'goaway' && to === 'draining') metrics.goaways.inc({ endpoint: session.endpoint.id });
        // A tunnel has no PING of its own: when a session to its endpoint stalls, it is dead too.
        if (to === 'closed' && reason === 'ping_timeout') tunnels.closeEndpoint(session.endpoint.id);
      },
      onPing: (session, outcome, rttMs) => {
        metrics.pings.inc({ endpoint: session.endpoint.id, outcome });
        if (outcome === 'ack') metrics.pingRtt.observe({ endpoint: session.endpoint.id }, rttMs / 1000);
      },
      onDialFailure: (endpoint, err) => {
        metrics.dialFailures.inc({ endpoint: endpoint.id, code: err.code });
        const reason = dialFailureEvictionReason(err.code);
        if (reason !== undefined) metrics.sessionsEvicted.inc({ endpoint: endpoint.id, reason });
      },
      onEndpointState: (endpoint, _from, to) => {
        // Endpoints may be added at run time; their counters start at 0 like the configured ones.
        metrics.declareEndpoints([endpoint.id]);
        metrics.endpointTransitions.inc({ endpoint: endpoint.id, to });
      },
    },
  });
  metrics.observeEndpoints(() => pool.snapshot());

  const inflight = { count: 0 };
  const forwardContext: ForwardContext = {
    pool,
    settings: {
      maxAttempts: config.retry.maxAttempts,
      budgetMs: config.retry.budgetMs,
      maxBodyBytes: config.retry.maxBodyBytes,
      writeFreshnessMs: config.health.writeFreshnessMs,
    },
    metrics,
    watches,
    log: log.child({ component: 'proxy' }),
  };

  const handlers: RequestHandlers = {
    onRequest(req, res, socket) {
      // Only origin-form targets ("/api/..."): an absolute URI or CONNECT is a forward-proxy
      // request, which this proxy never serves, whatever host it names.
      if (req.method === 'CONNECT' || !(req.url ?? '').startsWith('/')) {
        metrics.rejected.inc({ reason: 'bad_request' });
        sendStatus(res, 400, 'BadRequest', `the request target ${JSON.stringify((req.url ?? '').slice(0, 200))} is not a path; stallguard forwards requests for paths such as /api/v1/nodes to its configured API servers only`);
        return;
      }

      const admitted = admitRequest(req.headers, socket, admission);
      if (!admitted.admitted) {
        metrics.rejected.inc({ reason: rejectReason(admitted) });
        sendStatus(res, admitted.status, admitted.reason, admitted.message);
        return;
      }

      inflight.count++;
      new ForwardedRequest(forwardContext, req, res, admitted.identity, admitted.identityHeaders).run().finally(() => {
        inflight.count--;
      });
    },

    onUpgrade(req, socket, head) {
      socket.on('error', () => socket.destroy());
      const admitted = admitRequest(req.headers, socket as TLSSocket, admission);
      if (!admitted.admitted) {
        metrics.rejected.inc({ reason: rejectReason(admitted) });
        rejectUpgrade(socket, admitted.status, admitted.message);
        return;
      }

      openTunnel(req, socket, head, admitted.identity, admitted.identityHeaders);
    },
  };

  // Upgrades get their own HTTP/1.1 connection, sent to an endpoint that has a healthy session.
  const openTunnel = (req: http.IncomingMessage, socket: Duplex, head: Buffer, identity: 'client-cert' | 'anonymous', identityHeaders: IdentityHeaders) => {
    pool
      .acquire({ identity, exclude: new Set(), deadline: Date.now() + config.upstream.connectTimeoutMs })
      .then((session) => {
        relayUpgrade(req, socket, head, {
          endpoint: session.endpoint,
          identity,
          identityHeaders,
          tls: tlsReloader.current(),
          connectTimeoutMs: config.upstream.connectTimeoutMs,
          log,
          tunnels,
        });
      })
      .catch((err: unknown) => {
        if (err instanceof NoReadyEndpointError) metrics.rejected.inc({ reason: 'no_endpoint' });
        const message = err instanceof NoReadyEndpointError ? err.message : `upgrade failed: ${describeError(err)}`;
        rejectUpgrade(socket, 503, message);
      });
  };

  const listenTls = await localServingMaterial(config, log);
  const clientCaPath = config.listen.tls.clientCA !== '' ? config.listen.tls.clientCA : config.upstream.tls.ca;
  // With no listen.tls.clientCA, local clients are verified against upstream.tls.ca as it is now,
  // reloads included. A listen.tls.clientCA of its own is read at start only.
  const clientCaFollowsUpstream = config.listen.tls.clientCA === '' && config.upstream.tls.ca !== '';
  let initialClientCa: Buffer | undefined;
  if (clientCaFollowsUpstream) initialClientCa = upstreamTls.ca;
  else if (clientCaPath !== '') initialClientCa = fs.readFileSync(clientCaPath);
  const listenerContext = { cert: listenTls.cert, key: listenTls.key, clientCa: initialClientCa };

  let certificates: LoadedCertificate[] = [];
  const publishCertificates = () => {
    const listenSources: CertificateSource[] = [
      { role: 'listen-serving', path: listenTls.certPath, pem: listenerContext.cert },
      { role: 'listen-client-ca', path: clientCaPath, pem: listenerContext.clientCa },
    ];
    certificates = [...tlsReloader.certificates(), ...describeCertificateFiles(listenSources, log)];
    for (const certificate of certificates) metrics.setCertificateExpiry(certificate.role, certificate.notAfter);
  };
  publishCertificates();

  const tlsServer = createTlsListener({
    cert: listenerContext.cert,
    key: listenerContext.key,
    clientCA: listenerContext.clientCa,
    log: log.child({ component: 'listener' }),
    metrics,
    handlers,
  });
  const connections = trackConnections(tlsServer);

  // Existing connections keep the context they were accepted with; new handshakes use the new one.
  const applyListenerContext = () => {
    try {
      tlsServer.setSecureContext({ cert: listenerContext.cert, key: listenerContext.key, ca: listenerContext.clientCa });
    } catch (err) {
      log.error({ err: describeError(err) }, 'listener TLS context update failed; the previous one stays in use');
    }
  };
  const onUpstreamTlsReloaded = () => {
    if (clientCaFollowsUpstream) {
      listenerContext.clientCa = tlsReloader.current().ca;
      applyListenerContext();
    }
    publishCertificates();
  };
  const servingRenewer =
    listenTls.generated === undefined
      ? undefined
      : new ServingCertificateRenewer({
          stateDir: config.stateDir,
          initial: listenTls.generated,
          log: log.child({ component: 'listener' }),
          intervalMs: options.servingRenewalIntervalMs,
          onRenewed: (material) => {
            listenerContext.cert = Buffer.from(material.certPem);
            listenerContext.key = Buffer.from(material.keyPem);
            applyListenerContext();
            publishCertificates();
          },
        });

  const plaintextServer = config.listen.plaintext !== '' ? createPlaintextListener(handlers, log.child({ component: 'plaintext' }), metrics) : undefined;
  const plaintextConnections = plaintextServer !== undefined ? trackConnections(plaintextServer) : undefined;

  const metricsServer = createMetricsServer(
    metrics,
    {
      notReadyReason: () => describeNotReady(pool.snapshot()),
      state: async () =>
        buildStateDocument({
          version: VERSION,
          startedAt,
          endpoints: pool.snapshot(),
          watchesByEndpoint: watches.countByEndpoint(),
          certificates,
          activeRequests: inflight.count,
          activeWatches: watches.size,
          tunnels: tunnels.size,
          totals: await metrics.totals(),
          config: redactConfig(config),
        }),
    },
    log,
  );

  pool.start();
  discovery.start(pool, warmIdentity);

  const listenAddress = await listen(tlsServer, config.listen.address, 'listen.address');
  const plaintextAddress = plaintextServer !== undefined ? await listen(plaintextServer, config.listen.plaintext, 'listen.plaintext') : undefined;
  const metricsAddress = await listen(metricsServer, config.metrics.address, 'metrics.address');
  log.info({ listen: listenAddress, plaintext: plaintextAddress, metrics: metricsAddress, endpoints: endpoints.map((e) => e.id) }, 'listening');
  tlsReloader.start();
  servingRenewer?.start();

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      log.info({ activeRequests: inflight.count, activeWatches: watches.size }, 'shutting down');
      tlsReloader.stop();
      servingRenewer?.stop();
      discovery.stop();
      tlsServer.close();
      plaintextServer?.close();

      watches.endAll();
      await waitUntil(() => inflight.count === 0, config.shutdown.drainTimeoutMs);
      if (inflight.count > 0) log.warn({ activeRequests: inflight.count }, 'drain timeout reached; closing remaining requests');

      tunnels.closeAll();
      pool.close();
      connections.destroyAll();
      plaintextConnections?.destroyAll();
      await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
      metricsServer.closeAllConnections();
      log.info('stopped');
    })();
    return closing;
  };

  return {
    addresses: { listen: listenAddress, plaintext: plaintextAddress, metrics: metricsAddress },
    pool,
    metrics,
    tlsReloader,
    close,
  };
}

/** Reads the listener's certificate and key; `generated` is set when they come from the local CA in stateDir. */
async function localServingMaterial(
  config: Config,
  log: Logger,
): Promise<{ cert: Buffer; key: Buffer; certPath: string; generated?: LocalServingMaterial }> {
  if (config.listen.tls.cert !== '') {
    return { cert: fs.readFileSync(config.listen.tls.cert), key: fs.readFileSync(config.listen.tls.key), certPath: config.listen.tls.cert };
  }
  const material = await ensureLocalServingMaterial(config.stateDir);
  log.info({ ca: material.caPath, cert: material.certPath, generated: material.generated }, 'local serving certificate ready');
  return { cert: Buffer.from(material.certPem), key: Buffer.from(material.keyPem), certPath: material.certPath, generated: material };
}

/** Binds a server to host:port (IPv6 hosts in brackets) and returns the bound address. */
function listen(server: net.Server | http.Server | http2.Http2SecureServer, address: string, key: string): Promise<string> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE' || err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES') {
        let problem = 'is not an address of this host';
        if (err.code === 'EADDRINUSE') problem = 'is already in use';
        if (err.code === 'EACCES') problem = 'may not be bound by this user';
        reject(new ConfigError([`${key}: "${address}" ${problem} (${err.code}); stop the process that uses it or choose another address for ${key}`]));
        return;
      }
      reject(err);
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const bound = server.address() as net.AddressInfo;
      resolve(net.isIPv6(bound.address) ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`);
    });
  });
}

export function splitHostPort(address: string): { host: string; port: number } {
  const match = /^\[?([^\]]*?)\]?:(\d+)$/.exec(address);
  if (match === null) throw new Error(`invalid address ${JSON.stringify(address)}: expected host:port`);
  return { host: match[1]!, port: Number(match[2]) };
}

function trackConnections(server: net.Server | http2.Http2SecureServer) {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return {
    destroyAll: () => {
      for (const socket of sockets) socket.destroy();
    },
  };
}

function waitUntil(condition: () => boolean, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const deadline = Date.now() + timeoutMs;
    const check = () => {
      if (condition() || Date.now() >= deadline) resolve();
      else setTimeout(check, 50);
    };
    check();
  });
}
