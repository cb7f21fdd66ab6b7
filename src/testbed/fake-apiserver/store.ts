/**
 * In-memory object storage with one resourceVersion counter for all objects, as etcd's revision
 * is for kube-apiserver. Every change is kept in a bounded history, so a watch that starts at
 * resourceVersion N receives exactly the changes after N. Every write is counted, so tests can
 * assert that a retried create reached the server exactly once.
 */
import { randomUUID } from 'node:crypto';

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  generateName?: string;
  labels?: Record<string, string>;
  [field: string]: unknown;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface StoredChange {
  resourceVersion: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  resource: string;
  object: KubeObject;
}

/** How many times one object was written through the store. */
export interface WriteCounts {
  creates: number;
  updates: number;
  deletes: number;
}

export type ChangeListener = (change: StoredChange) => void;

/** Outcome of a conditional write, so that handlers can map it to the right Status. */
export type WriteResult =
  | { ok: true; object: KubeObject }
  | { ok: false; reason: 'AlreadyExists' | 'NotFound' | 'Conflict' };

// Enough history for every watch a test or benchmark resumes; older starting points receive
// 410 Gone, as they do from a compacted etcd.
const HISTORY_LIMIT = 10_000;

export class ObjectStore {
  private readonly objects = new Map<string, KubeObject>();
  private readonly counts = new Map<string, WriteCounts>();
  private readonly history: StoredChange[] = [];
  private readonly listeners = new Set<ChangeListener>();
  private revision = 1;

  /** The current resourceVersion, as lists report it in metadata.resourceVersion. */
  get resourceVersion(): number {
    return this.revision;
  }

  /** The oldest resourceVersion a watch can start after without receiving 410 Gone. */
  get oldestWatchableVersion(): number {
    return this.history.length === HISTORY_LIMIT ? this.history[0].resourceVersion - 1 : 0;
  }

  get(resource: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const object = this.objects.get(objectKey(resource, namespace, name));
    return object ? structuredClone(object) : undefined;
  }

  /** Returns the objects of one resource, in one namespace or in all when namespace is undefined. */
  list(resource: string, namespace?: string): KubeObject[] {
    const items: KubeObject[] = [];
    for (const [key, object] of this.objects) {
      if (key.startsWith(`${resource}/`) && (namespace === undefined || object.metadata.namespace === namespace)) {
        items.push(structuredClone(object));
      }
    }
    return items.sort((a, b) => objectSortKey(a).localeCompare(objectSortKey(b)));
  }

  create(resource: string, object: KubeObject): WriteResult {
    const key = objectKey(resource, object.metadata.namespace, object.metadata.name);
    if (this.objects.has(key)) {
      return { ok: false, reason: 'AlreadyExists' };
    }

    const stored = structuredClone(object);
    stored.metadata.uid = randomUUID();
    stored.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    this.countWrite(key, 'creates');
    return { ok: true, object: this.commit(resource, key, stored, 'ADDED') };
  }

  /**
   * Replaces an existing object. When `object.metadata.resourceVersion` is set it must equal the
   * stored one (optimistic concurrency, as for kubelet's Lease renewals), otherwise the update is
   * unconditional.
   */
  update(resource: string, object: KubeObject): WriteResult {
    const key = objectKey(resource, object.metadata.namespace, object.metadata.name);
    const current = this.objects.get(key);
    if (!current) {
      return { ok: false, reason: 'NotFound' };
    }
    const expectedVersion = object.metadata.resourceVersion;
    if (expectedVersion !== undefined && expectedVersion !== '' && expectedVersion !== current.metadata.resourceVersion) {
      return { ok: false, reason: 'Conflict' };
    }

    const stored = structuredClone(object);
    stored.metadata.uid = current.metadata.uid;
    stored.metadata.creationTimestamp = current.metadata.creationTimestamp;
    this.countWrite(key, 'updates');
    return { ok: true, object: this.commit(resource, key, stored, 'MODIFIED') };
  }

  /** Creates the object or replaces it unconditionally; the hook for tests and the demo. */
  put(resource: string, object: KubeObject): KubeObject {
    const existing = this.objects.get(objectKey(resource, object.metadata.namespace, object.metadata.name));
    const copy = structuredClone(object);
    delete copy.metadata.resourceVersion;
    const result = existing ? this.update(resource, copy) : this.create(resource, copy);
    if (!result.ok) {
      throw new Error(`store put of ${resource} ${object.metadata.name} failed: ${result.reason}`);
    }
    return result.object;
  }

  delete(resource: string, namespace: string | undefined, name: string): WriteResult {
    const key = objectKey(resource, namespace, name);
    const current = this.objects.get(key);
    if (!current) {
      return { ok: false, reason: 'NotFound' };
    }

    this.objects.delete(key);
    this.countWrite(key, 'deletes');
    this.revision += 1;
    current.metadata.resourceVersion = String(this.revision);
    this.record({ resourceVersion: this.revision, type: 'DELETED', resource, object: structuredClone(current) });
    return { ok: true, object: structuredClone(current) };
  }

  writeCounts(resource: string, namespace: string | undefined, name: string): WriteCounts {
    return { ...(this.counts.get(objectKey(resource, namespace, name)) ?? { creates: 0, updates: 0, deletes: 0 }) };
  }

  /** Returns the recorded changes after `resourceVersion`, oldest first. */
  changesSince(resourceVersion: number): StoredChange[] {
    return this.history.filter((change) => change.resourceVersion > resourceVersion).map((change) => structuredClone(change));
  }

  subscribe(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private commit(resource: string, key: string, object: KubeObject, type: 'ADDED' | 'MODIFIED'): KubeObject {
    this.revision += 1;
    object.metadata.resourceVersion = String(this.revision);
    this.objects.set(key, object);
    this.record({ resourceVersion: this.revision, type, resource, object: structuredClone(object) });
    return structuredClone(object);
  }

  private record(change: StoredChange): void {
    this.history.push(change);
    if (this.history.length > HISTORY_LIMIT) {
      this.history.shift();
    }
    for (const listener of this.listeners) {
      listener(structuredClone(change));
    }
  }

  private countWrite(key: string, kind: keyof WriteCounts): void {
    const counts = this.counts.get(key) ?? { creates: 0, updates: 0, deletes: 0 };
    counts[kind] += 1;
    this.counts.set(key, counts);
  }
}

function objectKey(resource: string, namespace: string | undefined, name: string): string {
  return `${resource}/${namespace ?? ''}/${name}`;
}

function objectSortKey(object: KubeObject): string {
  return `${object.metadata.namespace ?? ''}/${object.metadata.name}`;
}
