/**
 * Server-side printing: the meta.k8s.io/v1 Table that kubectl requests with
 * `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Without it kubectl 1.32 prints only
 * NAME and AGE, so the fake renders the default columns of the types it serves.
 */
import type { ResourceType } from './resources.js';
import type { KubeObject } from './store.js';

interface Column {
  name: string;
  type: 'string' | 'integer' | 'date';
  format: string;
  description: string;
  cell: (object: KubeObject) => string | number;
}

const NAME_COLUMN: Column = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description: 'Name must be unique within a namespace.',
  cell: (object) => object.metadata.name,
};
const AGE_COLUMN: Column = {
  name: 'Age',
  type: 'string',
  format: '',
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
  cell: (object) => humanAge(object.metadata.creationTimestamp),
};

const COLUMNS_BY_RESOURCE: Record<string, Column[]> = {
  nodes: [
    NAME_COLUMN,
    { name: 'Status', type: 'string', format: '', description: 'The status of the node', cell: nodeStatus },
    { name: 'Roles', type: 'string', format: '', description: 'The roles of the node', cell: nodeRoles },
    AGE_COLUMN,
    { name: 'Version', type: 'string', format: '', description: 'Kubelet Version reported by the node.', cell: (object) => String(readPath(object, 'status.nodeInfo.kubeletVersion') ?? '') },
  ],
  pods: [
    NAME_COLUMN,
    { name: 'Ready', type: 'string', format: '', description: 'The aggregate readiness state of this pod for accepting traffic.', cell: podReady },
    { name: 'Status', type: 'string', format: '', description: 'The aggregate status of the containers in this pod.', cell: (object) => String(readPath(object, 'status.phase') ?? 'Pending') },
    { name: 'Restarts', type: 'string', format: '', description: 'The number of times the containers in this pod have been restarted.', cell: () => '0' },
    AGE_COLUMN,
  ],
  configmaps: [
    NAME_COLUMN,
    { name: 'Data', type: 'integer', format: '', description: 'Number of keys in the data and binaryData fields.', cell: configMapKeyCount },
    AGE_COLUMN,
  ],
  namespaces: [
    NAME_COLUMN,
    { name: 'Status', type: 'string', format: '', description: 'The status of the namespace', cell: (object) => String(readPath(object, 'status.phase') ?? 'Active') },
    AGE_COLUMN,
  ],
  leases: [
    NAME_COLUMN,
    { name: 'Holder', type: 'string', format: '', description: 'The holder of the lease.', cell: (object) => String(readPath(object, 'spec.holderIdentity') ?? '') },
    AGE_COLUMN,
  ],
};

/** Returns true when the Accept header requests a meta.k8s.io/v1 Table. */
export function wantsTable(accept: string | undefined): boolean {
  if (!accept) {
    return false;
  }
  return accept.split(',').some((mediaType) => {
    const parameters = mediaType.split(';').map((part) => part.trim());
    return parameters.includes('as=Table') && parameters.includes('g=meta.k8s.io') && parameters.includes('v=v1');
  });
}

/** Renders objects as a Table whose rows carry PartialObjectMetadata, kube-apiserver's default includeObject. */
export function renderTable(type: ResourceType, objects: KubeObject[], resourceVersion: string, includeColumns = true): object {
  const columns = COLUMNS_BY_RESOURCE[type.name] ?? [NAME_COLUMN, AGE_COLUMN];
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    columnDefinitions: includeColumns
      ? columns.map((column) => ({ name: column.name, type: column.type, format: column.format, description: column.description, priority: 0 }))
      : [],
    rows: objects.map((object) => ({
      cells: columns.map((column) => column.cell(object)),
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: object.metadata },
    })),
  };
}

function nodeStatus(object: KubeObject): string {
  const conditions = (readPath(object, 'status.conditions') ?? []) as Array<{ type?: string; status?: string }>;
  const ready = conditions.find((condition) => condition.type === 'Ready');
  if (!ready) {
    return 'Unknown';
  }
  return ready.status === 'True' ? 'Ready' : 'NotReady';
}

function nodeRoles(object: KubeObject): string {
  const prefix = 'node-role.kubernetes.io/';
  const roles = Object.keys(object.metadata.labels ?? {})
    .filter((label) => label.startsWith(prefix))
    .map((label) => label.slice(prefix.length));
  return roles.length > 0 ? roles.sort().join(',') : '<none>';
}

function podReady(object: KubeObject): string {
  const containers = (readPath(object, 'spec.containers') ?? []) as unknown[];
  const statuses = (readPath(object, 'status.containerStatuses') ?? []) as Array<{ ready?: boolean }>;
  return `${statuses.filter((status) => status.ready === true).length}/${containers.length}`;
}

function configMapKeyCount(object: KubeObject): number {
  const data = (object.data ?? {}) as Record<string, unknown>;
  const binaryData = (object.binaryData ?? {}) as Record<string, unknown>;
  return Object.keys(data).length + Object.keys(binaryData).length;
}

function readPath(object: KubeObject, path: string): unknown {
  let current: unknown = object;
  for (const segment of path.split('.')) {
    if (typeof current !== 'object' || current === null) {
      return undefined;
    }
    current = (current as Record<string, unknown>)[segment];
  }
  return current;
}

// The same units as Kubernetes' duration.HumanDuration for the short ranges tests produce.
function humanAge(creationTimestamp: string | undefined): string {
  if (!creationTimestamp) {
    return '<unknown>';
  }
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(creationTimestamp)) / 1000));
  if (seconds < 120) {
    return `${seconds}s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) {
    return `${minutes}m`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return `${hours}h`;
  }
  return `${Math.floor(hours / 24)}d`;
}
