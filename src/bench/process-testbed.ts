/**
 * The servers of the footprint and scale scenarios: fake API-server replicas that share their
 * state, stallguard as a child process (`stallguard run --config FILE`, defaults) and HAProxy,
 * each with the replicas as its endpoints. Both proxies run as processes of their own, so /proc
 * shows each one's memory and CPU time, apart from the clients and servers in the runner.
 */
import path from 'node:path';
import { FakeApiServer } from '../testbed/fake-apiserver.js';
import { createTestPki, type TestPki } from '../testbed/pki.js';
import { ReplicatedStores } from '../testbed/replicated-store.js';
import type { ClientTls } from './clients/types.js';
import { joinPem } from './failover-testbed.js';
import { startHaproxy, type RunningHaproxy } from './haproxy.js';
import { LEASE_NAMESPACE, nodeObject } from './kubelet-loop.js';
import type { ProcessSupervisor } from './processes.js';
import { startStallguardProcess, type RunningStallguardProcess } from './stallguard-process.js';

export type ProxyPath = 'stallguard' | 'haproxy';
export const PROXY_PATHS: readonly ProxyPath[] = ['stallguard', 'haproxy'];

export interface ProcessTestbedOptions {
  dir: string;
  replicas: number;
  haproxyBinary: string;
  /**
   * HAProxy's `timeout server`. It also ends a watch that carried no event for that long, so
   * scenarios that hold idle watches set it above their duration.
   */
  haproxyTimeoutServerMs: number;
  /** Names of the Lease and Node objects to create. */
  objectNames: string[];
  supervisor: ProcessSupervisor;
}

export class ProcessTestbed {
  private constructor(
    readonly pki: TestPki,
    readonly servers: FakeApiServer[],
    readonly replication: ReplicatedStores,
    readonly stallguard: RunningStallguardProcess,
    readonly haproxy: RunningHaproxy,
  ) {}

  /** Starts everything, closing what already started when a later step fails. */
  static async start(options: ProcessTestbedOptions): Promise<ProcessTestbed> {
    const pki = await createTestPki(path.join(options.dir, 'pki'));
    const servers: FakeApiServer[] = [];
    let replication: ReplicatedStores | undefined;
    let stallguard: RunningStallguardProcess | undefined;

    try {
      for (let i = 0; i < options.replicas; i++) {
        const server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
        servers.push(server);
        await server.listen(0, '127.0.0.1');
      }
      replication = new ReplicatedStores(servers.map((server) => server.store));
      for (const name of options.objectNames) {
        servers[0]!.putObject('leases', {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace: LEASE_NAMESPACE },
          spec: { holderIdentity: name, leaseDurationSeconds: 40 },
        });
        servers[0]!.putObject('nodes', nodeObject(name));
      }

      const ports = servers.map((server) => server.port);
      stallguard = await startStallguardProcess(options.supervisor, {
        dir: options.dir,
        certPath: pki.server.certPath,
        keyPath: pki.server.keyPath,
        caPath: pki.ca.certPath,
        endpoints: ports.map((port) => `https://127.0.0.1:${port}`),
        upstreamClient: { certPath: pki.node.certPath, keyPath: pki.node.keyPath },
      });
      const haproxy = await startHaproxy(options.supervisor, {
        binary: options.haproxyBinary,
        dir: options.dir,
        frontendPem: joinPem(pki.server.certPem, pki.server.keyPem),
        backend: { ports, caPath: pki.ca.certPath, clientPemPath: pki.nodeCombinedPath },
        timeoutServerMs: options.haproxyTimeoutServerMs,
      });
      return new ProcessTestbed(pki, servers, replication, stallguard, haproxy);
    } catch (err) {
      await stallguard?.stop();
      replication?.stop();
      await Promise.all(servers.map((server) => server.close()));
      throw err;
    }
  }

  url(path: ProxyPath): string {
    return `https://127.0.0.1:${path === 'stallguard' ? this.stallguard.port : this.haproxy.port}`;
  }

  /** TLS of a kubelet-like client: the node certificate for stallguard; HAProxy presents it upstream itself. */
  clientTls(path: ProxyPath): ClientTls {
    const ca = this.pki.ca.certPem;
    return path === 'stallguard' ? { ca, cert: this.pki.node.certPem, key: this.pki.node.keyPem } : { ca };
  }

  /** Returns the process id of a proxy, for reading /proc. */
  pid(path: ProxyPath): number {
    const pid = path === 'stallguard' ? this.stallguard.process.pid : this.haproxy.process.pid;
    if (pid === undefined) throw new Error(`${path} has no process id`);
    return pid;
  }

  /** Watches open at all replicas together. */
  openWatches(): number {
    return this.servers.reduce((sum, server) => sum + server.openWatchCount, 0);
  }

  async close(): Promise<void> {
    await this.haproxy.stop();
    await this.stallguard.stop();
    this.replication.stop();
    await Promise.all(this.servers.map((server) => server.close()));
  }
}
