/**
 * Field and label selectors as kubectl and kubelet send them: comma-separated requirements with
 * `=`, `==` or `!=`, and for labels also bare keys (exists) and `!key` (does not exist).
 * Set-based label syntax (`in`, `notin`) is not supported and is rejected as invalid.
 */
import type { KubeObject } from './store.js';

export interface Requirement {
  key: string;
  operator: 'equals' | 'notEquals' | 'exists' | 'notExists';
  value: string;
}

export class SelectorSyntaxError extends Error {}

export interface ObjectFilter {
  fields: Requirement[];
  labels: Requirement[];
}

export function parseObjectFilter(query: URLSearchParams): ObjectFilter {
  return {
    fields: parseSelector(query.get('fieldSelector') ?? '', false),
    labels: parseSelector(query.get('labelSelector') ?? '', true),
  };
}

export function matchesFilter(object: KubeObject, filter: ObjectFilter): boolean {
  const fieldsMatch = filter.fields.every((requirement) => matchesRequirement(readField(object, requirement.key), requirement));
  const labels = object.metadata.labels ?? {};
  const labelsMatch = filter.labels.every((requirement) => matchesRequirement(labels[requirement.key], requirement));
  return fieldsMatch && labelsMatch;
}

function parseSelector(selector: string, allowExistence: boolean): Requirement[] {
  const requirements: Requirement[] = [];
  for (const part of selector.split(',').map((text) => text.trim()).filter((text) => text !== '')) {
    const match = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(part);
    if (match) {
      requirements.push({ key: match[1], operator: match[2] === '!=' ? 'notEquals' : 'equals', value: match[3] });
    } else if (allowExistence && /^![^=!\s]+$/.test(part)) {
      requirements.push({ key: part.slice(1), operator: 'notExists', value: '' });
    } else if (allowExistence && /^[^=!\s]+$/.test(part)) {
      requirements.push({ key: part, operator: 'exists', value: '' });
    } else {
      throw new SelectorSyntaxError(`invalid selector requirement ${JSON.stringify(part)}`);
    }
  }
  return requirements;
}

function matchesRequirement(actual: string | undefined, requirement: Requirement): boolean {
  switch (requirement.operator) {
    case 'equals':
      return (actual ?? '') === requirement.value;
    case 'notEquals':
      return (actual ?? '') !== requirement.value;
    case 'exists':
      return actual !== undefined;
    case 'notExists':
      return actual === undefined;
  }
}

// Field selectors name a dotted path such as metadata.name or spec.nodeName.
function readField(object: KubeObject, path: string): string | undefined {
  let current: unknown = object;
  for (const segment of path.split('.')) {
    if (typeof current !== 'object' || current === null) {
      return undefined;
    }
    current = (current as Record<string, unknown>)[segment];
  }
  return current === undefined || current === null ? undefined : String(current);
}
