/**
 * A minimal OpenAPI v3 endpoint. kubectl 1.32 `create` and `apply` validate manifests by default:
 * they read /openapi/v3 and the group-version document to learn whether the server supports the
 * `fieldValidation` query parameter, and fail ("failed to download openapi") when both /openapi/v3
 * and /openapi/v2 are missing. The documents here declare only the operations and that parameter,
 * with no schemas, so kubectl leaves validation to the server (which the fake does not do).
 */
import { apiVersionOf, RESOURCE_TYPES, type ResourceType } from './resources.js';

// kubectl caches each group-version document by this hash; the documents never change at run time.
const DOCUMENT_HASH = 'stallguard-testbed-1';

const QUERY_PARAMETERS = ['fieldValidation', 'fieldManager', 'dryRun'].map((name) => ({
  name,
  in: 'query',
  schema: { type: 'string', uniqueItems: true },
}));

/** Returns the body of GET /openapi/v3, with one entry per group-version. */
export function openApiRoot(): object {
  const paths: Record<string, { serverRelativeURL: string }> = {};
  for (const prefix of groupVersionPrefixes()) {
    paths[prefix] = { serverRelativeURL: `/openapi/v3/${prefix}?hash=${DOCUMENT_HASH}` };
  }
  return { paths };
}

/** Returns the body of GET /openapi/v3/{api/v1 | apis/group/version}, or undefined for an unknown group-version. */
export function openApiGroupVersion(prefix: string): object | undefined {
  const types = RESOURCE_TYPES.filter((type) => urlPrefixOf(type) === prefix);
  if (types.length === 0) {
    return undefined;
  }

  const paths: Record<string, object> = {};
  for (const type of types) {
    const collection = type.namespaced ? `/${prefix}/namespaces/{namespace}/${type.name}` : `/${prefix}/${type.name}`;
    const gvk = { group: type.group, version: type.version, kind: type.kind };
    paths[collection] = {
      get: operation('list', gvk),
      post: operation('post', gvk),
    };
    paths[`${collection}/{name}`] = {
      get: operation('get', gvk),
      put: operation('put', gvk),
      patch: operation('patch', gvk),
      delete: operation('delete', gvk),
    };
  }

  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.32.4' },
    paths,
    components: { schemas: {} },
  };
}

function operation(action: string, gvk: { group: string; version: string; kind: string }): object {
  return {
    'x-kubernetes-action': action,
    'x-kubernetes-group-version-kind': gvk,
    parameters: QUERY_PARAMETERS,
    responses: { '200': { description: 'OK' } },
  };
}

function urlPrefixOf(type: ResourceType): string {
  return type.group === '' ? `api/${type.version}` : `apis/${apiVersionOf(type)}`;
}

function groupVersionPrefixes(): string[] {
  return [...new Set(RESOURCE_TYPES.map((type) => urlPrefixOf(type)))];
}
