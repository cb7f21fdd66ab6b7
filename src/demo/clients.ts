import type { GoHealthCheck } from '../testbed/kubelet-client.js';

/** The kubelet-like clients of one demo run. */
export type DemoClientName = 'kubelet' | 'client-go' | 'stallguard' | 'naive';

export interface DemoClient {
  name: DemoClientName;
  /** Name shown in the timeline and the summary. */
  label: string;
  nodeName: string;
  /** Target of its requests. */
  via: 'balancer' | 'stallguard';
  /** client-go's health check, or undefined for a client without PINGs. */
  healthCheck: GoHealthCheck | undefined;
  closeOnHeartbeatFailure: boolean;
}

/**
 * Returns the clients of a run. Two go straight to the balancer: `kubelet` as a stock kubelet
 * behaves (client-go's health check, plus closing every connection after two failed heartbeats in
 * a row), and `client-go` with the health check alone, as kube-proxy, CNI agents and controllers
 * talk to the API server. The third is a stock kubelet that goes through stallguard.
 */
export function demoClients(options: { naive: boolean; healthCheck: GoHealthCheck }): DemoClient[] {
  const clients: DemoClient[] = [
    { name: 'kubelet', label: 'kubelet', nodeName: 'node-kubelet', via: 'balancer', healthCheck: options.healthCheck, closeOnHeartbeatFailure: true },
    { name: 'client-go', label: 'client-go', nodeName: 'node-client-go', via: 'balancer', healthCheck: options.healthCheck, closeOnHeartbeatFailure: false },
    { name: 'stallguard', label: 'via stallguard', nodeName: 'node-stallguard', via: 'stallguard', healthCheck: options.healthCheck, closeOnHeartbeatFailure: true },
  ];
  if (options.naive) {
    clients.push({ name: 'naive', label: 'naive (no PING)', nodeName: 'node-naive', via: 'balancer', healthCheck: undefined, closeOnHeartbeatFailure: false });
  }
  return clients;
}
