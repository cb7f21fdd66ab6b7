/**
 * The servers of the failover scenario, started once per run and shared by every path. One fake
 * API server sits behind one fault relay, which plays the load balancer. stallguard (in-process)
 * and HAProxy (child process) both send to the API server through that relay. So a
 * `relay.failover()` silences the open connections of every path at the same moment, HAProxy's
 * and stallguard's included, while new connections, health checks among them, pass.
 */
import path from 'node:path';
import pino from 'pino';
import { startStallguard, type RunningStallguard } from '../server.js';
import { FakeApiServer } from '../testbed/fake-apiserver.js';
import { FaultRelay } from '../testbed/fault-relay.js';
import { createTestPki, type TestPki } from '../testbed/pki.js';
import { buildConfig } from '../testbed/stack.js';
import { startHaproxy, type HaproxyOptions, type RunningHaproxy } from './haproxy.js';
import { LEASE_NAMESPACE } from './kubelet-loop.js';
import type { ProcessSupervisor } from './processes.js';

export interface FailoverTestbedOptions {
  dir: string;
  haproxyBinary: string;
  haproxyTimeoutServerMs: number;
  /** Names of the Lease objects to create, one per path. */
  leaseNames: string[];
  supervisor: ProcessSupervisor;
}

export class FailoverTestbed {
  #haproxy: RunningHaproxy;

  private constructor(
    readonly pki: TestPki,
    readonly server: FakeApiServer,
    readonly relay: FaultRelay,
    readonly stallguard: RunningStallguard,
    haproxy: RunningHaproxy,
    private readonly haproxyOptions: HaproxyOptions,
    private readonly supervisor: ProcessSupervisor,
  ) {
    this.#haproxy = haproxy;
  }

  get haproxy(): RunningHaproxy {
    return this.#haproxy;
  }

  /** https URL of the relay, which the direct paths use as the balancer address. */
  get balancerUrl(): string {
    return `https://127.0.0.1:${this.relay.port}`;
  }

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

  /**
   * Starts everything, closing what already started when a later step fails. The Leases are
   * created through the store, so that the first counted write is the first renewal.
   */
  static async start(options: FailoverTestbedOptions): Promise<FailoverTestbed> {
    const pki = await createTestPki(path.join(options.dir, 'pki'));
    const server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
    let relay: FaultRelay | undefined;
    let stallguard: RunningStallguard | undefined;

    try {
      await server.listen(0, '127.0.0.1');
      relay = new FaultRelay({ target: { host: '127.0.0.1', port: server.port } });
      await relay.listen(0, '127.0.0.1');
      for (const name of options.leaseNames) {
        server.putObject('leases', {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace: LEASE_NAMESPACE },
          spec: { holderIdentity: 'n1', leaseDurationSeconds: 40 },
        });
      }

      const config = buildConfig(options.dir, pki, [`https://127.0.0.1:${relay.port}`], {});
      stallguard = await startStallguard(config, pino({ level: 'silent' }));

      const haproxyOptions: HaproxyOptions = {
        binary: options.haproxyBinary,
        dir: options.dir,
        frontendPem: joinPem(pki.server.certPem, pki.server.keyPem),
        backend: { ports: [relay.port], caPath: pki.ca.certPath, clientPemPath: pki.nodeCombinedPath },
        timeoutServerMs: options.haproxyTimeoutServerMs,
      };
      const haproxy = await startHaproxy(options.supervisor, haproxyOptions);
      return new FailoverTestbed(pki, server, relay, stallguard, haproxy, haproxyOptions, options.supervisor);
    } catch (err) {
      await stallguard?.close();
      await relay?.close();
      await server.close();
      throw err;
    }
  }

  /** Sessions stallguard evicted because a PING went unanswered, since it started. */
  async stallguardPingEvictions(): Promise<number> {
    const data = await this.stallguard.metrics.sessionsEvicted.get();
    return data.values.filter((entry) => entry.labels.reason === 'ping_timeout').reduce((sum, entry) => sum + entry.value, 0);
  }

  /** Replaces HAProxy with a new process on a new port, for a repetition that found it still stuck. */
  async restartHaproxy(): Promise<void> {
    await this.#haproxy.stop();
    this.#haproxy = await startHaproxy(this.supervisor, this.haproxyOptions);
  }

  async close(): Promise<void> {
    await this.#haproxy.stop();
    await this.stallguard.close();
    await this.relay.close();
    await this.server.close();
  }
}

/** Concatenates PEM blocks, each on its own lines, as HAProxy and nginx read them. */
export function joinPem(...blocks: string[]): string {
  return blocks.map((block) => (block.endsWith('\n') ? block : `${block}\n`)).join('');
}
