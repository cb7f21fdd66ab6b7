/**
 * The resource types the fake API server serves, and the discovery documents built from them.
 * Discovery is the legacy (unaggregated) form: kubectl 1.32 requests the aggregated
 * apidiscovery.k8s.io/v2 form first and falls back to these when the response is plain JSON.
 */

export interface ResourceType {
  /** Plural resource name as it appears in URLs. */
  name: string;
  singularName: string;
  kind: string;
  /** Empty for the core group. */
  group: string;
  version: string;
  namespaced: boolean;
  shortNames?: string[];
  /** Subresources served, such as status or exec. */
  subresources: string[];
}

export const RESOURCE_TYPES: readonly ResourceType[] = [
  { name: 'nodes', singularName: 'node', kind: 'Node', group: '', version: 'v1', namespaced: false, shortNames: ['no'], subresources: ['status'] },
  { name: 'namespaces', singularName: 'namespace', kind: 'Namespace', group: '', version: 'v1', namespaced: false, shortNames: ['ns'], subresources: ['status'] },
  {
    name: 'pods',
    singularName: 'pod',
    kind: 'Pod',
    group: '',
    version: 'v1',
    namespaced: true,
    shortNames: ['po'],
    subresources: ['status', 'exec', 'attach', 'portforward', 'log'],
  },
  { name: 'configmaps', singularName: 'configmap', kind: 'ConfigMap', group: '', version: 'v1', namespaced: true, shortNames: ['cm'], subresources: [] },
  { name: 'leases', singularName: 'lease', kind: 'Lease', group: 'coordination.k8s.io', version: 'v1', namespaced: true, subresources: [] },
  { name: 'endpoints', singularName: 'endpoints', kind: 'Endpoints', group: '', version: 'v1', namespaced: true, shortNames: ['ep'], subresources: [] },
  { name: 'endpointslices', singularName: 'endpointslice', kind: 'EndpointSlice', group: 'discovery.k8s.io', version: 'v1', namespaced: true, subresources: [] },
];

/** The version the fake reports on /version, shaped like kube-apiserver's. */
export const VERSION_INFO = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.4',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2025-01-01T00:00:00Z',
  goVersion: 'go1.23.8',
  compiler: 'gc',
  platform: 'linux/amd64',
};

const VERBS_BY_SUBRESOURCE: Record<string, string[]> = {
  status: ['get', 'patch', 'update'],
  exec: ['create', 'get'],
  attach: ['create', 'get'],
  portforward: ['create', 'get'],
  log: ['get'],
};

export function findResourceType(group: string, version: string, name: string): ResourceType | undefined {
  return RESOURCE_TYPES.find((type) => type.group === group && type.version === version && type.name === name);
}

export function apiVersionOf(type: ResourceType): string {
  return type.group === '' ? type.version : `${type.group}/${type.version}`;
}

/** Returns the body of GET /api. */
export function coreApiVersions(serverAddress: string): object {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

/** Returns the body of GET /apis, which lists every non-core group. */
export function apiGroupList(): object {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: groupNames().map((group) => apiGroup(group)) };
}

/** Returns the body of GET /apis/{group}, or undefined for an unknown group. */
export function apiGroupDocument(group: string): object | undefined {
  if (!groupNames().includes(group)) {
    return undefined;
  }
  return { ...apiGroup(group), kind: 'APIGroup', apiVersion: 'v1' };
}

/** Returns the APIResourceList for /api/v1 (group '') or /apis/{group}/{version}, or undefined for an unknown group-version. */
export function apiResourceList(group: string, version: string): object | undefined {
  const types = RESOURCE_TYPES.filter((type) => type.group === group && type.version === version);
  if (types.length === 0) {
    return undefined;
  }

  const resources: object[] = [];
  for (const type of types) {
    resources.push({
      name: type.name,
      singularName: type.singularName,
      namespaced: type.namespaced,
      kind: type.kind,
      verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
      ...(type.shortNames ? { shortNames: type.shortNames } : {}),
    });
    for (const subresource of type.subresources) {
      resources.push({
        name: `${type.name}/${subresource}`,
        singularName: '',
        namespaced: type.namespaced,
        kind: subresource === 'status' ? type.kind : subresourceKind(subresource),
        verbs: VERBS_BY_SUBRESOURCE[subresource] ?? ['get'],
      });
    }
  }

  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group === '' ? version : `${group}/${version}`, resources };
}

function subresourceKind(subresource: string): string {
  switch (subresource) {
    case 'exec':
      return 'PodExecOptions';
    case 'attach':
      return 'PodAttachOptions';
    case 'portforward':
      return 'PodPortForwardOptions';
    default:
      return 'Pod';
  }
}

function groupNames(): string[] {
  return [...new Set(RESOURCE_TYPES.filter((type) => type.group !== '').map((type) => type.group))];
}

function apiGroup(group: string): object {
  const versions = [...new Set(RESOURCE_TYPES.filter((type) => type.group === group).map((type) => type.version))].map((version) => ({
    groupVersion: `${group}/${version}`,
    version,
  }));
  return { name: group, versions, preferredVersion: versions[0] };
}
