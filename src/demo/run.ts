import type { Logger } from 'pino';
import { ClientRecord, clientGoHealthCheck, KubeletClient, kubeletTimings } from '../testbed/kubelet-client.js';
import { sleep } from '../testbed/kubelet/sleep.js';
import { VERSION } from '../version.js';
import { incidentAtMs, type DemoOptions } from './args.js';
import { demoClients, type DemoClient } from './clients.js';
import { DemoCluster } from './cluster.js';
import { seconds } from './notices.js';
import { summarize, type DemoSummary } from './summary.js';
import { createTimeline, type Timeline, type TimelineOutput } from './timeline.js';

export interface DemoRunContext {
  output: TimelineOutput;
  /** Aborts the run early (Ctrl-C); the run still ends everything it started. */
  signal: AbortSignal;
  /** stallguard's logger, writing to logFile. */
  logger: Logger;
  logFile: string;
}

/** A pod on every client's node changes this often at scale 1, so each watch has events to miss. */
const POD_CHANGE_INTERVAL_MS = 2000;
/** Pod changes stop this long before the end, so the last ones have time to arrive. */
const SETTLE_MS = 1000;

/**
 * Runs one demo: starts the cluster and the clients, fails the balancer over after the steady
 * phase, and stops everything after the configured duration. Returns the summary, or undefined
 * when the signal aborted the run. Every server, client and timer it started is ended before it
 * returns or throws.
 */
export async function runDemo(options: DemoOptions, context: DemoRunContext): Promise<DemoSummary | undefined> {
  const kubelet = kubeletTimings(options.scale);
  const clientGo = clientGoHealthCheck(options.scale);
  const clients = demoClients({ naive: options.naive, healthCheck: clientGo });
  const stallguardUpstream = options.replicas ? 'replicas' : 'balancer';

  const cluster = await DemoCluster.start({ stallguardUpstream, nodeNames: clients.map((client) => client.nodeName), logger: context.logger });
  const stallguardHealth = cluster.stack.config.health;
  const records = new Map(clients.map((client) => [client.name, new ClientRecord(client.name)] as const));
  const podChanges = new Map<string, Array<{ resourceVersion: number; at: number }>>(clients.map((client) => [client.nodeName, []]));
  const timers: NodeJS.Timeout[] = [];
  const kubelets: KubeletClient[] = [];

  const startedAt = Date.now();
  const incidentAt = startedAt + incidentAtMs(options.scale);
  let timeline: Timeline | undefined;

  try {
    const view = createTimeline(
      {
        clients,
        startedAt,
        durationMs: options.durationMs,
        incidentAtMs: incidentAt - startedAt,
        graceMs: options.gracePeriodMs,
        header: describeRun(options, clients, cluster, { kubeletRenewMs: kubelet.leaseRenewIntervalMs, timeoutMs: kubelet.heartbeatTimeoutMs }),
      },
      context.output,
    );
    timeline = view;

    for (const client of clients) {
      const record = records.get(client.name)!;
      kubelets.push(
        new KubeletClient({
          name: client.name,
          nodeName: client.nodeName,
          url: client.via === 'stallguard' ? cluster.stallguardUrl : cluster.balancerUrl,
          tls: cluster.clientTls,
          timings: kubelet,
          healthCheck: client.healthCheck,
          closeOnRepeatedHeartbeatFailure: client.closeOnHeartbeatFailure,
          onEvent: (event) => {
            record.add(event);
            view.onClientEvent(event);
          },
        }),
      );
    }
    for (const client of kubelets) client.start();

    let sequence = 0;
    timers.push(
      setInterval(() => {
        if (Date.now() > startedAt + options.durationMs - SETTLE_MS) return;
        sequence += 1;
        for (const client of clients) {
          const resourceVersion = cluster.touchPod(client.nodeName, sequence);
          const at = Date.now();
          podChanges.get(client.nodeName)!.push({ resourceVersion, at });
          view.onPodChange(client.nodeName, resourceVersion, at);
        }
      }, POD_CHANGE_INTERVAL_MS * options.scale),
    );
    timers.push(
      setTimeout(() => {
        const from = cluster.balancerTarget;
        const stranded = cluster.failover();
        view.onIncident(
          Date.now(),
          `INCIDENT: the balancer fails over from replica ${from} to replica ${cluster.balancerTarget} and silently drops its ${stranded} open connection(s): no FIN, no RST`,
        );
      }, incidentAt - Date.now()),
    );

    await sleep(startedAt + options.durationMs - Date.now(), context.signal);
    const endedAt = Date.now();
    for (const timer of timers) clearTimeout(timer);
    await Promise.all(kubelets.map((client) => client.stop()));
    view.close();
    if (context.signal.aborted) return undefined;

    const evictions = await cluster.stack.stallguard.metrics.sessionsEvicted.get();
    return summarize({
      version: VERSION,
      scale: options.scale,
      durationMs: options.durationMs,
      gracePeriodMs: options.gracePeriodMs,
      stallguardUpstream,
      timers: { kubelet, clientGo, stallguard: { pingIntervalMs: stallguardHealth.pingIntervalMs, pingTimeoutMs: stallguardHealth.pingTimeoutMs } },
      clients,
      records,
      podChanges,
      startedAt,
      endedAt,
      incidentAt,
      stallguard: {
        sessionsEvictedAfterPingTimeout: evictions.values.filter((value) => value.labels.reason === 'ping_timeout').reduce((sum, value) => sum + value.value, 0),
        sessionsEvicted: evictions.values.reduce((sum, value) => sum + value.value, 0),
        logFile: context.logFile,
      },
    });
  } finally {
    for (const timer of timers) clearTimeout(timer);
    await Promise.allSettled(kubelets.map((client) => client.stop()));
    timeline?.close();
    await cluster.close();
  }
}

function describeRun(
  options: DemoOptions,
  clients: readonly DemoClient[],
  cluster: DemoCluster,
  kubelet: { kubeletRenewMs: number; timeoutMs: number },
): string[] {
  const stallguard = cluster.stack.config.health;
  const upstream = options.replicas ? 'to the 3 replicas directly' : 'to the balancer';
  const lines = [
    'stallguard demo: a load balancer fails over and silently drops every connection it carried',
    `  cluster     3 fake API-server replicas sharing one store, behind a balancer at ${hostPort(cluster.balancerUrl)}`,
    `  stallguard  at ${hostPort(cluster.stallguardUrl)}, ${upstream}; PING after ${seconds(stallguard.pingIntervalMs)} idle, evict ${seconds(stallguard.pingTimeoutMs)} later`,
    `  clients     kubelet-like, each on ONE HTTP/2 connection: every ${seconds(kubelet.kubeletRenewMs)} a lease PUT and a`,
    `              node status PATCH (${seconds(kubelet.timeoutMs)} timeout), and a pod watch`,
  ];
  for (const client of clients) lines.push(`    ${client.label.padEnd(16)}${describeClient(client)}`);
  lines.push(`  incident    at ${seconds(incidentAtMs(options.scale))} of ${seconds(options.durationMs)}; NotReady after ${seconds(options.gracePeriodMs)} without a lease renewal`);
  if (options.scale !== 1) {
    lines.push(`  scale       ${options.scale}: kubelet's and client-go's timers are multiplied by ${options.scale}; stallguard's are not`);
  }
  return lines;
}

function describeClient(client: DemoClient): string {
  const target = client.via === 'stallguard' ? '→ stallguard' : '→ balancer';
  if (client.healthCheck === undefined) return `${target}; never sends a PING, so it never notices a dead connection`;

  const check = `PING after ${seconds(client.healthCheck.readIdleTimeoutMs)} idle, close ${seconds(client.healthCheck.pingTimeoutMs)} later`;
  const workaround = client.closeOnHeartbeatFailure ? '; closes after two failed heartbeats' : '';
  return `${target}; client-go: ${check}${workaround}`;
}

function hostPort(url: string): string {
  return url.replace(/^https:\/\//, '');
}
