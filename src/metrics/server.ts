import http from 'node:http';
import type { Logger } from 'pino';
import { describeError } from '../errors.js';
import type { Metrics } from './metrics.js';

export interface HealthSource {
  /** Returns undefined when ready, or the reason it is not, in plain text. */
  notReadyReason(): string | undefined;
  /** The JSON document served at /state. */
  state(): unknown;
}

/**
 * Serves /metrics, /healthz, /readyz and /state. Bound to loopback by default; nothing here is
 * secret, so the chart may bind it to the node's address for Prometheus.
 */
export function createMetricsServer(metrics: Metrics, health: HealthSource, log: Logger): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];

    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }

    switch (path) {
      case '/metrics':
        metrics.registry.metrics().then(
          (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
          (err: unknown) => fail(res, log, 'metrics collection failed', err),
        );
        return;
      case '/healthz':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      case '/readyz': {
        const reason = health.notReadyReason();
        if (reason === undefined) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        else res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${reason}\n`);
        return;
      }
      case '/state':
        Promise.resolve()
          .then(() => health.state())
          .then(
            (state) => res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(state, null, 2)}\n`),
            (err: unknown) => fail(res, log, 'state collection failed', err),
          );
        return;
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz or /state\n');
    }
  });
}

function fail(res: http.ServerResponse, log: Logger, what: string, err: unknown): void {
  log.error({ err: describeError(err) }, what);
  res.writeHead(500, { 'content-type': 'text/plain' }).end(`${what}\n`);
}
