/**
 * The objects through which kube-apiserver publishes its own replicas: the `kubernetes` Service's
 * EndpointSlices (discovery.k8s.io/v1) and its legacy Endpoints object, both in `default`. Each
 * real replica writes its own address there when it starts; the fake does the same on listen().
 */
import { isIPv6 } from 'node:net';
import type { KubeObject } from './store.js';

/** One API-server address as published for the `kubernetes` Service. */
export interface ApiServerAddress {
  ip: string;
  port: number;
  /** Published as not ready (conditions.ready false, notReadyAddresses) when false. */
  ready?: boolean;
}

export const KUBERNETES_SERVICE_LABEL = 'kubernetes.io/service-name';

/**
 * Builds the EndpointSlices and the Endpoints object for the given addresses. Real replicas share
 * one port and so one slice named `kubernetes`. Testbed replicas often share 127.0.0.1 and differ
 * by port. A slice has one port list and one address type for all of its endpoints, so they get
 * one slice per port and address family (named `kubernetes-<port>`).
 */
export function buildKubernetesServiceObjects(addresses: readonly ApiServerAddress[]): { slices: KubeObject[]; endpoints: KubeObject } {
  const byPort = new Map<number, ApiServerAddress[]>();
  for (const address of addresses) {
    byPort.set(address.port, [...(byPort.get(address.port) ?? []), address]);
  }
  const groups = [...byPort.entries()];

  // A slice has one address family, so each port gets one slice per family.
  const sliceGroups: Array<{ suffix: string; port: number; members: ApiServerAddress[] }> = [];
  for (const [port, members] of groups) {
    const ipv4 = members.filter((member) => !isIPv6(member.ip));
    const ipv6 = members.filter((member) => isIPv6(member.ip));
    if (ipv4.length > 0) sliceGroups.push({ suffix: `-${port}`, port, members: ipv4 });
    if (ipv6.length > 0) sliceGroups.push({ suffix: `-${port}-ipv6`, port, members: ipv6 });
  }
  const slices =
    sliceGroups.length === 0
      ? [endpointSlice('kubernetes', [], undefined)]
      : sliceGroups.map((group) => endpointSlice(sliceGroups.length === 1 ? 'kubernetes' : `kubernetes${group.suffix}`, group.members, group.port));

  const endpoints: KubeObject = {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: { name: 'kubernetes', namespace: 'default' },
    subsets: groups.map(([port, members]) => ({
      addresses: members.filter((member) => member.ready !== false).map((member) => ({ ip: member.ip })),
      notReadyAddresses: members.filter((member) => member.ready === false).map((member) => ({ ip: member.ip })),
      ports: [{ name: 'https', port, protocol: 'TCP' }],
    })),
  };
  return { slices, endpoints };
}

function endpointSlice(name: string, members: readonly ApiServerAddress[], port: number | undefined): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'default', labels: { [KUBERNETES_SERVICE_LABEL]: 'kubernetes' } },
    addressType: members.some((member) => isIPv6(member.ip)) ? 'IPv6' : 'IPv4',
    endpoints: members.map((member) => ({
      addresses: [member.ip],
      conditions: { ready: member.ready !== false, serving: member.ready !== false, terminating: false },
    })),
    ports: port === undefined ? [] : [{ name: 'https', port, protocol: 'TCP' }],
  };
}
