/** Reads which numbered writes (lease renewals, status updates) a fake API server applied. */
import type { ObjectStore } from '../testbed/fake-apiserver/store.js';

/**
 * Returns, per object name, the sequence numbers found in `annotation` of every MODIFIED change of
 * `resource` after `revision`, in the order applied. A number that appears twice was applied twice.
 */
export function appliedWriteNumbers(store: ObjectStore, revision: number, resource: string, annotation: string): Map<string, number[]> {
  const applied = new Map<string, number[]>();
  for (const change of store.changesSince(revision)) {
    if (change.resource !== resource || change.type !== 'MODIFIED') continue;

    const annotations = change.object.metadata.annotations as Record<string, string> | undefined;
    const number = Number(annotations?.[annotation]);
    if (annotations?.[annotation] === undefined || !Number.isInteger(number)) continue;

    const list = applied.get(change.object.metadata.name) ?? [];
    list.push(number);
    applied.set(change.object.metadata.name, list);
  }
  return applied;
}
