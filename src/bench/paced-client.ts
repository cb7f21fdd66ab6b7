import http2 from 'node:http2';
import type { H2loadResult } from './h2load.js';
import { percentile } from './stats.js';

export interface PacedLoadOptions {
  url: string;
  headers: Record<string, string>;
  /** Requests started per second, at even intervals, whether earlier ones answered or not. */
  ratePerSecond: number;
  requests: number;
  signal?: AbortSignal;
}

/**
 * Sends GET requests at a fixed rate on one HTTP/2 connection and times each, as a kubelet sends
 * its few requests per second: the added latency at a moderate rate, not at saturation. h2load
 * 1.52 (Debian 12) paces connections but not requests, hence this client. The result has
 * h2load's shape so the scenario treats both alike.
 */
export async function runPacedLoad(options: PacedLoadOptions): Promise<H2loadResult> {
  // The benchmark's own servers on 127.0.0.1 present throwaway certificates; verifying them would
  // measure nothing more, and the same client goes to every path.
  const session = http2.connect(options.url, { rejectUnauthorized: false });
  session.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });

  const target = new URL(options.url);
  const latencies: number[] = [];
  const status = { '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 };
  let failed = 0;
  const started = performance.now();
  const intervalMs = 1000 / options.ratePerSecond;
  const pending: Promise<void>[] = [];

  for (let index = 0; index < options.requests; index++) {
    if (options.signal?.aborted) break;
    const due = started + index * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));

    pending.push(
      new Promise<void>((resolve) => {
        const sentAt = performance.now();
        const stream = session.request({ ':method': 'GET', ':path': `${target.pathname}${target.search}`, ...options.headers });
        let code = 0;
        stream.on('response', (headers) => (code = Number(headers[':status'])));
        stream.resume();
        stream.on('error', () => {});
        stream.on('close', () => {
          if (code >= 200 && code < 600 && stream.rstCode === http2.constants.NGHTTP2_NO_ERROR) {
            latencies.push(performance.now() - sentAt);
            status[`${Math.floor(code / 100)}xx` as keyof typeof status] += 1;
          } else {
            failed += 1;
          }
          resolve();
        });
      }),
    );
  }

  await Promise.all(pending);
  session.close();
  const durationS = (performance.now() - started) / 1000;
  const succeeded = latencies.length;
  return {
    counts: { total: options.requests, started: pending.length, done: pending.length, succeeded, failed, errored: 0, timeout: 0 },
    status,
    durationS,
    requestsPerSecond: succeeded / durationS,
    latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.length > 0 ? Math.max(...latencies) : undefined },
  };
}
