/**
 * A burst of requests sent all at once over a few HTTP/2 sessions, as many clients of one node
 * starting at the same moment would. Each request's outcome and latency is recorded.
 */
import http2 from 'node:http2';
import { h2Request } from '../testbed/client.js';
import type { ClientTls } from './clients/types.js';
import { percentile } from './stats.js';

export interface BurstOptions {
  url: string;
  tls: ClientTls;
  path: string;
  requests: number;
  /** Sessions the requests are spread over, round robin. */
  sessions: number;
  timeoutMs: number;
}

export interface BurstResult {
  requests: number;
  /** Responses with status 200. */
  answered: number;
  /** Failures by cause: an error code, or "status 503" and the like. */
  failureCauses: Record<string, number>;
  /** From the first request sent to the last one ended. */
  durationMs: number;
  latencyMs: { p50: number | undefined; p99: number | undefined; max: number | undefined };
}

export async function sendBurst(options: BurstOptions): Promise<BurstResult> {
  const sessions = await Promise.all(Array.from({ length: options.sessions }, () => connect(options.url, options.tls, options.timeoutMs)));
  const latencies: number[] = [];
  const failureCauses: Record<string, number> = {};
  let answered = 0;
  const started = performance.now();

  try {
    await Promise.all(
      Array.from({ length: options.requests }, async (_, index) => {
        const sentAt = performance.now();
        let cause: string | undefined;
        try {
          const response = await h2Request(sessions[index % sessions.length]!, { path: options.path, timeoutMs: options.timeoutMs });
          if (response.status === 200) answered++;
          else cause = `status ${response.status}`;
        } catch (err) {
          cause = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        }
        latencies.push(performance.now() - sentAt);
        if (cause !== undefined) failureCauses[cause] = (failureCauses[cause] ?? 0) + 1;
      }),
    );
  } finally {
    for (const session of sessions) session.destroy();
  }

  const round = (value: number | undefined) => (value === undefined ? undefined : Math.round(value * 10) / 10);
  return {
    requests: options.requests,
    answered,
    failureCauses,
    durationMs: Math.round(performance.now() - started),
    latencyMs: { p50: round(percentile(latencies, 50)), p99: round(percentile(latencies, 99)), max: round(latencies.length === 0 ? undefined : Math.max(...latencies)) },
  };
}

function connect(url: string, tls: ClientTls, timeoutMs: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { ca: tls.ca, cert: tls.cert, key: tls.key });
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`connecting to ${url} timed out after ${timeoutMs}ms`));
    }, timeoutMs);
    session.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    session.once('connect', () => {
      clearTimeout(timer);
      session.on('error', () => undefined);
      resolve(session);
    });
  });
}
