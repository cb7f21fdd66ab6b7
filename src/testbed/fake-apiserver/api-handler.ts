/**
 * The REST verbs of the fake API server: get, list, watch, create, update (PUT), patch and delete
 * for the resource types in resources.ts, with kube-apiserver's URL layout and Status bodies.
 */
import { randomBytes } from 'node:crypto';
import { BodyTooLargeError, buildStatus, readBody, sendJson, sendStatus, type RequestContext } from './http.js';
import { apiVersionOf, findResourceType, type ResourceType } from './resources.js';
import { parseObjectFilter, SelectorSyntaxError, matchesFilter, type ObjectFilter } from './selectors.js';
import type { KubeObject, ObjectStore, WriteResult } from './store.js';
import { renderTable, wantsTable } from './table.js';
import type { WatchHub } from './watch.js';

/** One parsed resource URL. */
export interface ResourceRoute {
  type: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
  /** True for the legacy /api/v1/watch/... form. */
  legacyWatch: boolean;
}

/**
 * Parses /api/v1/..., /apis/{group}/{version}/... and their legacy /watch/ forms; returns
 * undefined for paths that are not resource paths (discovery, health, unknown types).
 */
export function parseResourcePath(pathname: string): ResourceRoute | undefined {
  const segments = pathname.split('/').filter((segment) => segment !== '').map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (segments[0] === 'api' && segments.length >= 3) {
    group = '';
    version = segments[1];
    rest = segments.slice(2);
  } else if (segments[0] === 'apis' && segments.length >= 4) {
    group = segments[1];
    version = segments[2];
    rest = segments.slice(3);
  } else {
    return undefined;
  }

  const legacyWatch = rest[0] === 'watch';
  if (legacyWatch) {
    rest = rest.slice(1);
  }

  // namespaces/{ns}/{resource}/... addresses a namespaced resource, unless it is the namespace object itself.
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }

  const type = findResourceType(group, version, rest[0]);
  if (!type || rest.length > 3) {
    return undefined;
  }
  if (namespace !== undefined && !type.namespaced) {
    return undefined;
  }
  return { type, namespace, name: rest[1], subresource: rest[2], legacyWatch };
}

export class ApiHandler {
  constructor(
    private readonly store: ObjectStore,
    private readonly watches: WatchHub,
  ) {}

  async handle(context: RequestContext, route: ResourceRoute): Promise<void> {
    const { method, url, res } = context;
    const { type, name, subresource } = route;

    if (subresource !== undefined && !type.subresources.includes(subresource)) {
      sendStatus(res, buildStatus(404, 'NotFound', 'the server could not find the requested resource'));
      return;
    }
    if (subresource !== undefined && subresource !== 'status') {
      // exec, attach and portforward are served on HTTP/1.1 Upgrade before this handler runs,
      // and the testbed has no container logs to serve.
      sendStatus(res, buildStatus(400, 'BadRequest', `${type.name}/${subresource} requires an upgraded connection`));
      return;
    }

    let filter: ObjectFilter;
    try {
      filter = parseObjectFilter(url.searchParams);
    } catch (err) {
      if (err instanceof SelectorSyntaxError) {
        sendStatus(res, buildStatus(400, 'BadRequest', err.message));
        return;
      }
      throw err;
    }

    const isWatch = route.legacyWatch || url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    if (method === 'GET' && isWatch) {
      this.watch(context, route, filter);
      return;
    }
    if (method === 'GET' && name === undefined) {
      this.list(context, route, filter);
      return;
    }

    try {
      switch (method) {
        case 'GET':
          this.get(context, route);
          return;
        case 'POST':
          await this.create(context, route);
          return;
        case 'PUT':
          await this.update(context, route);
          return;
        case 'PATCH':
          await this.patch(context, route);
          return;
        case 'DELETE':
          this.remove(context, route);
          return;
        default:
          sendStatus(res, buildStatus(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`));
      }
    } catch (err) {
      if (err instanceof BodyTooLargeError) {
        sendStatus(res, buildStatus(413, 'RequestEntityTooLarge', err.message));
        return;
      }
      if (err instanceof InvalidBodyError) {
        sendStatus(res, buildStatus(400, 'BadRequest', err.message));
        return;
      }
      throw err;
    }
  }

  private get(context: RequestContext, route: ResourceRoute): void {
    const object = this.store.get(route.type.name, route.namespace, route.name!);
    if (!object) {
      sendStatus(context.res, notFound(route));
      return;
    }
    if (wantsTable(context.req.headers.accept)) {
      sendJson(context.res, 200, renderTable(route.type, [object], object.metadata.resourceVersion ?? ''));
      return;
    }
    sendJson(context.res, 200, object);
  }

  private list(context: RequestContext, route: ResourceRoute, filter: ObjectFilter): void {
    const items = this.store.list(route.type.name, route.namespace).filter((object) => matchesFilter(object, filter));
    const resourceVersion = String(this.store.resourceVersion);
    if (wantsTable(context.req.headers.accept)) {
      sendJson(context.res, 200, renderTable(route.type, items, resourceVersion));
      return;
    }
    sendJson(context.res, 200, {
      kind: `${route.type.kind}List`,
      apiVersion: apiVersionOf(route.type),
      metadata: { resourceVersion },
      items,
    });
  }

  private watch(context: RequestContext, route: ResourceRoute, filter: ObjectFilter): void {
    const query = context.url.searchParams;
    const timeout = query.get('timeoutSeconds');
    if (route.name !== undefined) {
      filter.fields.push({ key: 'metadata.name', operator: 'equals', value: route.name });
    }
    const type = route.type;
    this.watches.start({
      res: context.res,
      render: wantsTable(context.req.headers.accept)
        ? (object) => renderTable(type, [object], object.metadata.resourceVersion ?? '', false)
        : undefined,
      resource: route.type.name,
      kind: route.type.kind,
      apiVersion: apiVersionOf(route.type),
      namespace: route.namespace,
      filter,
      resourceVersion: query.get('resourceVersion') ?? '',
      allowBookmarks: query.get('allowWatchBookmarks') === 'true',
      timeoutSeconds: timeout !== null && Number(timeout) > 0 ? Number(timeout) : undefined,
      sessionId: context.sessionId,
    });
  }

  private async create(context: RequestContext, route: ResourceRoute): Promise<void> {
    if (route.name !== undefined) {
      sendStatus(context.res, buildStatus(405, 'MethodNotAllowed', 'POST is not allowed on a named resource'));
      return;
    }
    const object = await readObject(context, route);
    if (!object.metadata.name && object.metadata.generateName) {
      object.metadata.name = `${object.metadata.generateName}${randomBytes(3).toString('hex').slice(0, 5)}`;
    }
    if (!object.metadata.name) {
      sendStatus(context.res, buildStatus(422, 'Invalid', `${route.type.kind} "" is invalid: metadata.name: Required value: name or generateName is required`));
      return;
    }
    if (route.namespace !== undefined && !this.store.get('namespaces', undefined, route.namespace)) {
      sendStatus(context.res, buildStatus(404, 'NotFound', `namespaces "${route.namespace}" not found`, { name: route.namespace, kind: 'namespaces' }));
      return;
    }

    const result = this.store.create(route.type.name, object);
    this.sendWriteResult(context, route, object.metadata.name, result, 201);
  }

  private async update(context: RequestContext, route: ResourceRoute): Promise<void> {
    if (route.name === undefined) {
      sendStatus(context.res, buildStatus(405, 'MethodNotAllowed', 'PUT requires a resource name'));
      return;
    }
    const object = await readObject(context, route);
    if (object.metadata.name !== route.name) {
      sendStatus(context.res, buildStatus(400, 'BadRequest', `the name of the object (${object.metadata.name}) does not match the name on the URL (${route.name})`));
      return;
    }
    this.sendWriteResult(context, route, route.name, this.store.update(route.type.name, object), 200);
  }

  private async patch(context: RequestContext, route: ResourceRoute): Promise<void> {
    if (route.name === undefined) {
      sendStatus(context.res, buildStatus(405, 'MethodNotAllowed', 'PATCH requires a resource name'));
      return;
    }
    const contentType = (context.req.headers['content-type'] ?? '').split(';')[0].trim();
    if (contentType !== 'application/merge-patch+json' && contentType !== 'application/strategic-merge-patch+json') {
      sendStatus(context.res, buildStatus(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json`));
      return;
    }

    const patch = parseJson(await readBody(context.req));
    const current = this.store.get(route.type.name, route.namespace, route.name);
    if (!current) {
      sendStatus(context.res, notFound(route));
      return;
    }

    // Strategic merge patch is applied as a JSON merge patch (RFC 7386): lists are replaced, not merged.
    const patched = applyMergePatch(current, patch) as KubeObject;
    patched.metadata = { ...patched.metadata, name: current.metadata.name, namespace: current.metadata.namespace };
    const patchVersion = (patch as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
    patched.metadata.resourceVersion = patchVersion ?? current.metadata.resourceVersion;
    this.sendWriteResult(context, route, route.name, this.store.update(route.type.name, patched), 200);
  }

  private remove(context: RequestContext, route: ResourceRoute): void {
    if (route.name === undefined) {
      sendStatus(context.res, buildStatus(405, 'MethodNotAllowed', 'DELETE of a collection is not supported by the testbed'));
      return;
    }
    this.sendWriteResult(context, route, route.name, this.store.delete(route.type.name, route.namespace, route.name), 200);
  }

  private sendWriteResult(context: RequestContext, route: ResourceRoute, name: string, result: WriteResult, successCode: number): void {
    if (result.ok) {
      sendJson(context.res, successCode, result.object);
      return;
    }
    const details = { name, group: route.type.group || undefined, kind: route.type.name };
    const qualified = route.type.group === '' ? route.type.name : `${route.type.name}.${route.type.group}`;
    switch (result.reason) {
      case 'AlreadyExists':
        sendStatus(context.res, buildStatus(409, 'AlreadyExists', `${qualified} "${name}" already exists`, details));
        return;
      case 'NotFound':
        sendStatus(context.res, notFound({ ...route, name }));
        return;
      case 'Conflict':
        sendStatus(
          context.res,
          buildStatus(409, 'Conflict', `Operation cannot be fulfilled on ${qualified} "${name}": the object has been modified; please apply your changes to the latest version and try again`, details),
        );
        return;
    }
  }
}

class InvalidBodyError extends Error {}

async function readObject(context: RequestContext, route: ResourceRoute): Promise<KubeObject> {
  const body = parseJson(await readBody(context.req));
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidBodyError('the request body must be a JSON object');
  }
  const object = body as KubeObject;
  if (typeof object.metadata !== 'object' || object.metadata === null) {
    object.metadata = { name: '' };
  }
  if (object.kind !== undefined && object.kind !== route.type.kind) {
    throw new InvalidBodyError(`the body kind ${JSON.stringify(object.kind)} does not match the resource ${route.type.name} (kind ${route.type.kind})`);
  }
  if (route.namespace !== undefined && object.metadata.namespace !== undefined && object.metadata.namespace !== route.namespace) {
    throw new InvalidBodyError(`the namespace of the provided object does not match the namespace sent on the request`);
  }

  object.kind = route.type.kind;
  object.apiVersion = apiVersionOf(route.type);
  if (route.namespace !== undefined) {
    object.metadata.namespace = route.namespace;
  }
  return object;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new InvalidBodyError(`the request body is not valid JSON: ${(err as Error).message}`);
  }
}

function notFound(route: ResourceRoute): ReturnType<typeof buildStatus> {
  const qualified = route.type.group === '' ? route.type.name : `${route.type.name}.${route.type.group}`;
  return buildStatus(404, 'NotFound', `${qualified} "${route.name}" not found`, {
    name: route.name,
    group: route.type.group || undefined,
    kind: route.type.name,
  });
}

/** Applies an RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces. */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
    return structuredClone(patch);
  }
  const result: Record<string, unknown> =
    typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    if (value === null) {
      delete result[key];
    } else {
      result[key] = applyMergePatch(result[key], value);
    }
  }
  return result;
}
