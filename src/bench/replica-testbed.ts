/**
 * The servers of the replica-blackhole scenario: three fake API-server replicas that share their
 * state as replicas share etcd, each behind its own fault relay. stallguard (in-process, defaults)
 * lists the three relays as its endpoints, and HAProxy lists them as three backend servers, so a
 * blackhole on one relay hits both proxies at the same moment.
 */
import path from 'node:path';
import pino from 'pino';
import { startStallguard, type RunningStallguard } from '../server.js';
import { FakeApiServer } from '../testbed/fake-apiserver.js';
import { FaultRelay } from '../testbed/fault-relay.js';
import { createTestPki, type TestPki } from '../testbed/pki.js';
import { ReplicatedStores } from '../testbed/replicated-store.js';
import { buildConfig } from '../testbed/stack.js';
import { sleep } from './abort.js';
import { joinPem } from './failover-testbed.js';
import { startHaproxy, waitForServersUp, type RunningHaproxy } from './haproxy.js';
import { LEASE_NAMESPACE, nodeObject } from './kubelet-loop.js';
import type { ProcessSupervisor } from './processes.js';

export interface ReplicaTestbedOptions {
  dir: string;
  replicas: number;
  haproxyBinary: string;
  haproxyTimeoutServerMs: number;
  /** Names of the Lease and Node objects to create, one per path. */
  objectNames: string[];
  supervisor: ProcessSupervisor;
}

export class ReplicaTestbed {
  private constructor(
    readonly pki: TestPki,
    readonly servers: FakeApiServer[],
    readonly replication: ReplicatedStores,
    readonly relays: FaultRelay[],
    readonly stallguard: RunningStallguard,
    readonly haproxy: RunningHaproxy,
  ) {}

  get stallguardUrl(): string {
    return `https://${this.stallguard.addresses.listen}`;
  }

  get haproxyUrl(): string {
    return `https://127.0.0.1:${this.haproxy.port}`;
  }

  /** TLS options of a client that presents kubelet's node certificate. */
  get nodeTls(): { ca: string; cert: string; key: string } {
    return { ca: this.pki.ca.certPem, cert: this.pki.node.certPem, key: this.pki.node.keyPem };
  }

  /** Starts everything, closing what already started when a later step fails. */
  static async start(options: ReplicaTestbedOptions): Promise<ReplicaTestbed> {
    const pki = await createTestPki(path.join(options.dir, 'pki'));
    const servers: FakeApiServer[] = [];
    const relays: FaultRelay[] = [];
    let replication: ReplicatedStores | undefined;
    let stallguard: RunningStallguard | undefined;

    try {
      for (let i = 0; i < options.replicas; i++) {
        const server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
        servers.push(server);
        await server.listen(0, '127.0.0.1');
        const relay = new FaultRelay({ target: { host: '127.0.0.1', port: server.port } });
        relays.push(relay);
        await relay.listen(0, '127.0.0.1');
      }
      replication = new ReplicatedStores(servers.map((server) => server.store));

      // Created on one replica, the objects reach the others through the replication.
      for (const name of options.objectNames) {
        servers[0]!.putObject('leases', {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace: LEASE_NAMESPACE },
          spec: { holderIdentity: name, leaseDurationSeconds: 40 },
        });
        servers[0]!.putObject('nodes', nodeObject(name));
      }

      const endpoints = relays.map((relay) => `https://127.0.0.1:${relay.port}`);
      stallguard = await startStallguard(buildConfig(options.dir, pki, endpoints, {}), pino({ level: 'silent' }));
      const haproxy = await startHaproxy(options.supervisor, {
        binary: options.haproxyBinary,
        dir: options.dir,
        frontendPem: joinPem(pki.server.certPem, pki.server.keyPem),
        backend: { ports: relays.map((relay) => relay.port), caPath: pki.ca.certPath, clientPemPath: pki.nodeCombinedPath },
        timeoutServerMs: options.haproxyTimeoutServerMs,
      });
      return new ReplicaTestbed(pki, servers, replication, relays, stallguard, haproxy);
    } catch (err) {
      await stallguard?.close();
      replication?.stop();
      await Promise.all(relays.map((relay) => relay.close()));
      await Promise.all(servers.map((server) => server.close()));
      throw err;
    }
  }

  /** Indexes of the replicas that stallguard holds a ready session to now. */
  replicasInUseByStallguard(): number[] {
    const snapshot = this.stallguard.pool.snapshot();
    return this.relays
      .map((relay, index) => ({ index, entry: snapshot.find((candidate) => candidate.endpoint === `https://127.0.0.1:${relay.port}`) }))
      .filter(({ entry }) => entry !== undefined && entry.state === 'ready' && entry.sessions.some((session) => session.state === 'ready'))
      .map(({ index }) => index);
  }

  /** Endpoint states of stallguard's pool, by replica index. */
  stallguardEndpointStates(): string[] {
    const snapshot = this.stallguard.pool.snapshot();
    return this.relays.map((relay) => snapshot.find((entry) => entry.endpoint === `https://127.0.0.1:${relay.port}`)?.state ?? 'missing');
  }

  /**
   * Resolves once both proxies are back to normal after an incident: every HAProxy server is UP,
   * no endpoint of stallguard is ejected, and stallguard holds ready sessions to `warmReplicas`
   * replicas. Throws after `timeoutMs`.
   */
  async waitUntilRecovered(warmReplicas: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await waitForServersUp((server) => this.haproxy.serverStat(server), this.haproxy.serverNames, timeoutMs);

    for (;;) {
      const states = this.stallguardEndpointStates();
      if (!states.includes('ejected') && this.replicasInUseByStallguard().length >= warmReplicas) return;
      if (Date.now() >= deadline) throw new Error(`stallguard did not recover within ${timeoutMs}ms: endpoint states ${states.join(', ')}`);
      await sleep(200, signal);
    }
  }

  async close(): Promise<void> {
    await this.haproxy.stop();
    await this.stallguard.close();
    this.replication.stop();
    await Promise.all(this.relays.map((relay) => relay.close()));
    await Promise.all(this.servers.map((server) => server.close()));
  }
}
