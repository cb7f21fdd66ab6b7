import type http2 from 'node:http2';
import { expect } from 'vitest';
import { h2Request, type ClientResponse } from '../../src/testbed/client.js';

/** What a kubelet-like load saw: every request's outcome, and the longest gap between lease renewals. */
export interface LoadReport {
  gets: { ok: number; failed: string[] };
  leaseRenewals: { ok: number; failed: string[]; longestGapMs: number };
}

/**
 * Runs a kubelet-like load on one HTTP/2 session until stopped: a node GET every 100 ms and a lease
 * renewal (GET, then PUT with its resourceVersion) every 250 ms, each with kubelet's 10 s timeout.
 */
export function startKubeletLoad(session: http2.ClientHttp2Session, node = 'n1') {
  const report: LoadReport = { gets: { ok: 0, failed: [] }, leaseRenewals: { ok: 0, failed: [], longestGapMs: 0 } };
  let running = true;
  let lastRenewal = Date.now();

  const getLoop = (async () => {
    while (running) {
      const outcome = await attempt(() => h2Request(session, { path: `/api/v1/nodes/${node}?timeout=10s`, timeoutMs: 10_000 }));
      if (outcome === 200) report.gets.ok++;
      else report.gets.failed.push(outcome);
      await delay(100);
    }
  })();

  const leaseLoop = (async () => {
    const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${node}`;
    while (running) {
      const failure = await renewLease(session, path);
      if (failure === undefined) {
        const now = Date.now();
        report.leaseRenewals.longestGapMs = Math.max(report.leaseRenewals.longestGapMs, now - lastRenewal);
        lastRenewal = now;
        report.leaseRenewals.ok++;
      } else {
        report.leaseRenewals.failed.push(failure);
      }
      await delay(250);
    }
  })();

  return {
    report,
    async stop(): Promise<LoadReport> {
      running = false;
      await Promise.all([getLoop, leaseLoop]);
      report.leaseRenewals.longestGapMs = Math.max(report.leaseRenewals.longestGapMs, Date.now() - lastRenewal);
      return report;
    },
  };
}

async function renewLease(session: http2.ClientHttp2Session, path: string): Promise<string | undefined> {
  let current: ClientResponse;
  try {
    current = await h2Request(session, { path, timeoutMs: 10_000 });
  } catch (err) {
    return `GET lease: ${(err as Error).message}`;
  }
  if (current.status === 404) {
    const created = await attempt(() =>
      h2Request(session, {
        method: 'POST',
        path: path.slice(0, path.lastIndexOf('/')),
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: path.split('/').at(-1) }, spec: { holderIdentity: 'n1' } }),
        timeoutMs: 10_000,
      }),
    );
    return created === 201 || created === 409 ? undefined : `POST lease: ${created}`;
  }
  if (current.status !== 200) return `GET lease: ${current.status}`;

  const lease = JSON.parse(current.body.toString());
  lease.spec = { ...(lease.spec ?? {}), renewTime: new Date().toISOString().replace('Z', '000Z') };
  const outcome = await attempt(() =>
    h2Request(session, { method: 'PUT', path, headers: { 'content-type': 'application/json' }, body: JSON.stringify(lease), timeoutMs: 10_000 }),
  );
  return outcome === 200 ? undefined : `PUT lease: ${outcome}`;
}

async function attempt(send: () => Promise<ClientResponse>): Promise<number | string> {
  try {
    const response = await send();
    return response.status === 200 || response.status === 201 ? response.status : `${response.status} ${response.body.toString().slice(0, 600)}`;
  } catch (err) {
    return (err as Error).message;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A lease PUT that was on the wire when its replica went dark may have been applied, so it fails
 * with a Status that says so: the one failure a fault may cause, never a silent loss.
 */
export function expectOnlyUnknownOutcomeWrites(failures: string[]): void {
  expect(failures.length).toBeLessThanOrEqual(1);
  for (const failure of failures) expect(failure).toMatch(/^PUT lease: 50[24] .*may or may not have been applied/);
}
