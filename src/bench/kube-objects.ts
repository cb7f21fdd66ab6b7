/**
 * A Node object of realistic size for the latency scenario. A kubelet's own Node carries its
 * conditions, addresses, capacity, daemon endpoints, node info and the list of container images
 * on the node, and the image list makes most of its size.
 */

/** Builds a Node named `name` with `imageCount` images; deterministic, so every run serves the same bytes. */
export function buildNodeObject(name: string, imageCount: number): object {
  const images = Array.from({ length: imageCount }, (_, i) => {
    const digest = (i * 2654435761 >>> 0).toString(16).padStart(8, '0').repeat(8);
    const repository = `registry.example.internal/team-${i % 7}/service-${i}`;
    return { names: [`${repository}@sha256:${digest}`, `${repository}:v1.${i}.0`], sizeBytes: 10_000_000 + i * 1_234_567 };
  });

  const conditionTime = '2026-01-01T00:00:00Z';
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    lastHeartbeatTime: conditionTime,
    lastTransitionTime: conditionTime,
    reason,
    message,
  });

  return {
    kind: 'Node',
    apiVersion: 'v1',
    metadata: {
      name,
      uid: '6f1d3c2e-0000-4000-8000-000000000001',
      resourceVersion: '123456',
      creationTimestamp: conditionTime,
      labels: {
        'beta.kubernetes.io/arch': 'amd64',
        'beta.kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'node.kubernetes.io/instance-type': 'standard-4',
        'topology.kubernetes.io/region': 'region-1',
        'topology.kubernetes.io/zone': 'region-1a',
      },
      annotations: {
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
    },
    spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'], providerID: `testbed://${name}` },
    status: {
      capacity: { cpu: '4', 'ephemeral-storage': '101430960Ki', 'hugepages-2Mi': '0', memory: '16393524Ki', pods: '110' },
      allocatable: { cpu: '3920m', 'ephemeral-storage': '93478772582', 'hugepages-2Mi': '0', memory: '15242548Ki', pods: '110' },
      conditions: [
        condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
        condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
        condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
        condition('Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'),
      ],
      addresses: [
        { type: 'InternalIP', address: '127.0.0.1' },
        { type: 'Hostname', address: name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: '0123456789abcdef0123456789abcdef',
        systemUUID: '01234567-89ab-cdef-0123-456789abcdef',
        bootID: 'fedcba98-7654-3210-fedc-ba9876543210',
        kernelVersion: '6.1.0-testbed',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        containerRuntimeVersion: 'containerd://1.7.24',
        kubeletVersion: 'v1.32.4',
        kubeProxyVersion: 'v1.32.4',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
      images,
    },
  };
}
