import type { ObjectStore, StoredChange } from './fake-apiserver/store.js';

/**
 * Makes fake API-server replicas share their state, as kube-apiserver replicas share etcd: every
 * change committed to one store is applied to the others at once, in the same order. The stores
 * must start at one resourceVersion, as each FakeApiServer seeds the same objects (apart from the
 * `kubernetes` Service's endpoints, where each lists only itself). Their resourceVersions then
 * stay equal, so a client that moves to another replica can resume a watch, or update a lease,
 * with the resourceVersion it got from the first.
 *
 * NOTE: uid and creationTimestamp are assigned by each store and differ between replicas.
 */
export class ReplicatedStores {
  readonly #stores: readonly ObjectStore[];
  readonly #unsubscribe: Array<() => void>;
  #applying = false;

  constructor(stores: readonly ObjectStore[]) {
    const versions = new Set(stores.map((store) => store.resourceVersion));
    if (versions.size > 1) {
      throw new Error(`cannot replicate stores at different resourceVersions (${[...versions].join(', ')}): start them from the same objects`);
    }

    this.#stores = stores;
    this.#unsubscribe = stores.map((store) => store.subscribe((change) => this.#replicate(store, change)));
  }

  stop(): void {
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    this.#unsubscribe.length = 0;
  }

  #replicate(origin: ObjectStore, change: StoredChange): void {
    // Applying a change commits it to the other stores, whose listeners call back here.
    if (this.#applying) return;
    this.#applying = true;
    try {
      for (const store of this.#stores) {
        if (store === origin) continue;
        applyChange(store, change);
        if (store.resourceVersion !== change.resourceVersion) {
          throw new Error(`replica store diverged: at resourceVersion ${store.resourceVersion} after applying ${change.resourceVersion}`);
        }
      }
    } finally {
      this.#applying = false;
    }
  }
}

function applyChange(store: ObjectStore, change: StoredChange): void {
  const { metadata } = change.object;
  if (change.type === 'DELETED') {
    store.delete(change.resource, metadata.namespace, metadata.name);
    return;
  }
  store.put(change.resource, change.object);
}
