import http from 'node:http';
import type { Logger } from 'pino';
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
          (err: Error) => {
            log.error({ err: err.message }, 'metrics collection failed');
            res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
          },
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
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(health.state(), null, 2)}\n`);
        return;
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz or /state\n');
    }
  });
}
