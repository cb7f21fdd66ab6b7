import fs from 'node:fs';
import type http from 'node:http';
import type http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from './config/types.js';
import { admitRequest } from './downstream/admission.js';
import { createPlaintextListener } from './downstream/plaintext-listener.js';
import { createTlsListener, type RequestHandlers } from './downstream/tls-listener.js';
import { describeError, NoReadyEndpointError } from './errors.js';
import { Metrics } from './metrics/metrics.js';
import { createMetricsServer } from './metrics/server.js';
import { ForwardedRequest, type ForwardContext } from './proxy/forward.js';
import { rejectUpgrade, relayUpgrade, TunnelRegistry } from './proxy/upgrade.js';
import { sendStatus } from './proxy/respond.js';
import { WatchRegistry } from './proxy/watch-registry.js';
import { ensureLocalServingMaterial } from './tls/local-ca.js';
import { loadUpstreamTlsMaterial } from './tls/upstream-material.js';
import { parseEndpoint } from './upstream/endpoint.js';
import { UpstreamPool } from './upstream/pool.js';
import { VERSION } from './version.js';

/** A running stallguard: its listeners, pool and metrics server. */
export interface RunningStallguard {
  /** Addresses actually bound, as host:port (useful when a configured port was 0). */
  addresses: { listen: string; plaintext?: string; metrics: string };
  pool: UpstreamPool;
  metrics: Metrics;
  /**
   * Shuts down in order: stop accepting, end watch streams cleanly, let in-flight requests finish
   * up to shutdown.drainTimeout, then close every session and connection.
   */
  close(): Promise<void>;
}

export async function startStallguard(config: Config, logger: Logger): Promise<RunningStallguard> {
  const log = logger;
  const metrics = new Metrics(VERSION);
  const watches = new WatchRegistry();
  const tunnels = new TunnelRegistry();
  const upstreamTls = loadUpstreamTlsMaterial(config.upstream.tls);
  const endpoints = config.upstream.endpoints.map((raw) => parseEndpoint(raw, config.upstream.tls.serverName));

  if (config.upstream.tls.insecureSkipVerify) {
    log.warn('upstream.tls.insecureSkipVerify is set: API-server certificates are not verified');
  }

  const pool = new UpstreamPool({
    endpoints,
    tls: upstreamTls,
    connectTimeoutMs: config.upstream.connectTimeoutMs,
    backoff: config.upstream.reconnectBackoff,
    health: config.health,
    maxSessionsPerEndpoint: config.upstream.maxSessionsPerEndpoint,
    warmEndpoints: config.upstream.warmEndpoints,
    warmIdentity: upstreamTls.cert !== undefined ? 'client-cert' : 'anonymous',
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
      onDialFailure: (endpoint, err) => metrics.dialFailures.inc({ endpoint: endpoint.id, code: err.code }),
    },
  });

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
      const admission = admitRequest(req.headers, socket, config.listen.allowAnonymous);
      if (!admission.admitted) {
        metrics.rejected.inc({ reason: 'unauthenticated' });
        sendStatus(res, 401, 'Unauthorized', admission.message);
        return;
      }

      inflight.count++;
      new ForwardedRequest(forwardContext, req, res, admission.identity).run().finally(() => {
        inflight.count--;
      });
    },

    onUpgrade(req, socket, head) {
      socket.on('error', () => socket.destroy());
      const admission = admitRequest(req.headers, socket as TLSSocket, config.listen.allowAnonymous);
      if (!admission.admitted) {
        metrics.rejected.inc({ reason: 'unauthenticated' });
        rejectUpgrade(socket, 401, admission.message);
        return;
      }

      openTunnel(req, socket, head, admission.identity);
    },
  };

  // Upgrades get their own HTTP/1.1 connection, sent to an endpoint that holds a healthy session.
  const openTunnel = (req: http.IncomingMessage, socket: Duplex, head: Buffer, identity: 'client-cert' | 'anonymous') => {
    pool
      .acquire({ identity, exclude: new Set(), deadline: Date.now() + config.upstream.connectTimeoutMs })
      .then((session) => {
        relayUpgrade(req, socket, head, {
          endpoint: session.endpoint,
          identity,
          tls: upstreamTls,
          connectTimeoutMs: config.upstream.connectTimeoutMs,
          log,
          tunnels,
        });
      })
      .catch((err: unknown) => {
        const message = err instanceof NoReadyEndpointError ? err.message : `upgrade failed: ${describeError(err)}`;
        rejectUpgrade(socket, 503, message);
      });
  };

  const listenTls = await localServingMaterial(config, log);
  const clientCaPath = config.listen.tls.clientCA !== '' ? config.listen.tls.clientCA : config.upstream.tls.ca;
  const tlsServer = createTlsListener({
    cert: listenTls.cert,
    key: listenTls.key,
    clientCA: clientCaPath !== '' ? fs.readFileSync(clientCaPath) : undefined,
    log: log.child({ component: 'listener' }),
    metrics,
    handlers,
  });
  const connections = trackConnections(tlsServer);

  const plaintextServer = config.listen.plaintext !== '' ? createPlaintextListener(handlers, log.child({ component: 'plaintext' }), metrics) : undefined;
  const plaintextConnections = plaintextServer !== undefined ? trackConnections(plaintextServer) : undefined;

  const metricsServer = createMetricsServer(
    metrics,
    {
      notReadyReason: () => (pool.hasReadyEndpoint() ? undefined : `no API-server endpoint has a usable session (${endpoints.map((e) => e.id).join(', ')})`),
      state: () => ({
        version: VERSION,
        endpoints: pool.snapshot(),
        activeRequests: inflight.count,
        activeWatches: watches.size,
        tunnels: tunnels.size,
      }),
    },
    log,
  );

  pool.start();

  const listenAddress = await listen(tlsServer, config.listen.address);
  const plaintextAddress = plaintextServer !== undefined ? await listen(plaintextServer, config.listen.plaintext) : undefined;
  const metricsAddress = await listen(metricsServer, config.metrics.address);
  log.info({ listen: listenAddress, plaintext: plaintextAddress, metrics: metricsAddress, endpoints: endpoints.map((e) => e.id) }, 'listening');

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      log.info({ activeRequests: inflight.count, activeWatches: watches.size }, 'shutting down');
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
    close,
  };
}

async function localServingMaterial(config: Config, log: Logger): Promise<{ cert: Buffer; key: Buffer }> {
  if (config.listen.tls.cert !== '') {
    return { cert: fs.readFileSync(config.listen.tls.cert), key: fs.readFileSync(config.listen.tls.key) };
  }
  const material = await ensureLocalServingMaterial(config.stateDir);
  log.info({ ca: material.caPath, cert: material.certPath, generated: material.generated }, 'local serving certificate ready');
  return { cert: Buffer.from(material.certPem), key: Buffer.from(material.keyPem) };
}

/** Binds a server to host:port (IPv6 hosts in brackets) and returns the bound address. */
function listen(server: net.Server | http.Server | http2.Http2SecureServer, address: string): Promise<string> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
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
