import type { Logger } from 'pino';
import type { ClientTls } from '../testbed/client.js';
import type { FakeApiServer } from '../testbed/fake-apiserver.js';
import { FaultRelay } from '../testbed/fault-relay.js';
import { startStack, type Stack } from '../testbed/stack.js';

export const REPLICA_COUNT = 3;

export interface DemoClusterOptions {
  /** `balancer`: stallguard reaches the replicas through the balancer, as the direct clients do; `replicas`: directly. */
  stallguardUpstream: 'balancer' | 'replicas';
  /** Nodes to register, each with one pod bound to it. */
  nodeNames: readonly string[];
  logger: Logger;
}

/**
 * The cluster side of the demo, all on 127.0.0.1: three fake API-server replicas sharing one
 * store, a balancer (a fault relay sending every new connection to one replica) and an
 * in-process stallguard.
 */
export class DemoCluster {
  readonly stack: Stack;
  readonly balancer: FaultRelay;
  readonly #ownBalancer: boolean;
  #target = 0;

  private constructor(stack: Stack, balancer: FaultRelay, ownBalancer: boolean) {
    this.stack = stack;
    this.balancer = balancer;
    this.#ownBalancer = ownBalancer;
  }

  static async start(options: DemoClusterOptions): Promise<DemoCluster> {
    const stack = await startStack({
      replicas: REPLICA_COUNT,
      topology: options.stallguardUpstream === 'balancer' ? 'balancer' : 'direct',
      replicate: true,
      logger: options.logger,
    });

    try {
      let balancer = stack.relays[0];
      const ownBalancer = balancer === undefined;
      if (balancer === undefined) {
        balancer = new FaultRelay({ target: { host: '127.0.0.1', port: stack.servers[0]!.port } });
        await balancer.listen(0, '127.0.0.1');
      }

      const cluster = new DemoCluster(stack, balancer, ownBalancer);
      cluster.#register(options.nodeNames);
      return cluster;
    } catch (err) {
      await stack.close();
      throw err;
    }
  }

  get replicas(): readonly FakeApiServer[] {
    return this.stack.servers;
  }

  get balancerUrl(): string {
    return `https://127.0.0.1:${this.balancer.port}`;
  }

  get stallguardUrl(): string {
    return this.stack.url;
  }

  /** TLS for a kubelet-like client: the cluster CA and the node's client certificate. */
  get clientTls(): ClientTls {
    return this.stack.clientTls;
  }

  /** The replica the balancer sends new connections to, counted from 1. */
  get balancerTarget(): number {
    return this.#target + 1;
  }

  /**
   * Causes the incident: the balancer moves to the next replica and silences every connection it
   * had, with no FIN and no RST, while new connections pass. Returns how many it stranded.
   */
  failover(): number {
    const stranded = this.balancer.counters.open;
    this.#target = (this.#target + 1) % REPLICA_COUNT;
    this.balancer.failover({ host: '127.0.0.1', port: this.stack.servers[this.#target]!.port });
    return stranded;
  }

  /** Changes an annotation of the node's pod, which every watch on that node's pods receives; returns the new resourceVersion. */
  touchPod(nodeName: string, sequence: number): number {
    const pod = this.replicas[0]!.putObject('pods', podFor(nodeName, { 'demo.stallguard.dev/sequence': String(sequence) }));
    return Number(pod.metadata.resourceVersion);
  }

  async close(): Promise<void> {
    if (this.#ownBalancer) await this.balancer.close();
    await this.stack.close();
  }

  #register(nodeNames: readonly string[]): void {
    const origin = this.replicas[0]!;
    for (const nodeName of nodeNames) {
      origin.putObject('nodes', {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: nodeName, labels: { 'kubernetes.io/hostname': nodeName, 'kubernetes.io/os': 'linux' } },
        spec: {},
        status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' }] },
      });
      origin.putObject('pods', podFor(nodeName, {}));
    }
  }
}

function podFor(nodeName: string, annotations: Record<string, string>) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `web-${nodeName}`, namespace: 'default', annotations },
    spec: { nodeName, containers: [{ name: 'web', image: 'registry.k8s.io/pause:3.10' }] },
    status: { phase: 'Running' },
  };
}
