/**
 * A fake kube-apiserver for tests, the demo and the benchmark. It is honest where stallguard's
 * behaviour depends on it: HTTP/2 over TLS with ALPN (and HTTP/1.1 fallback), client-certificate
 * and bearer-token authentication per request, Kubernetes Status bodies, resourceVersion
 * semantics, watch framing and GOAWAY. Fault verbs let a test break it at run time.
 *
 * Safety: it listens on loopback unless the caller passes another host, which only tests that
 * created their own network namespace do.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import http2, {
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { pino, type Logger } from 'pino';
import { ApiHandler, parseResourcePath } from './fake-apiserver/api-handler.js';
import { authenticate, buildForbiddenStatus } from './fake-apiserver/auth.js';
import { RequestFaults } from './fake-apiserver/faults.js';
import { handleTestbedRequest } from './fake-apiserver/hooks.js';
import { buildStatus, sendJson, sendStatus, sendText, type AuthenticatedUser, type RequestContext } from './fake-apiserver/http.js';
import {
  VERSION_INFO,
  apiGroupDocument,
  apiGroupList,
  apiResourceList,
  coreApiVersions,
} from './fake-apiserver/resources.js';
import { buildKubernetesServiceObjects, KUBERNETES_SERVICE_LABEL, type ApiServerAddress } from './fake-apiserver/kubernetes-service.js';
import { ObjectStore, type KubeObject, type WriteCounts } from './fake-apiserver/store.js';
import { openApiGroupVersion, openApiRoot } from './fake-apiserver/openapi.js';
import { acceptEchoUpgrade, isUpgradePath, rejectUpgrade } from './fake-apiserver/upgrade.js';
import { WatchHub } from './fake-apiserver/watch.js';

export type { KubeObject, WriteCounts } from './fake-apiserver/store.js';
export type { ApiServerAddress } from './fake-apiserver/kubernetes-service.js';
export { patternBytes, patternSha256 } from './fake-apiserver/hooks.js';

export interface FakeApiServerOptions {
  /** PEM serving certificate (chain) and key. */
  cert: string;
  key: string;
  /** PEM CA bundle that client certificates must chain to. */
  clientCa: string;
  /** Bearer token → user. Tokens are compared exactly and never logged. */
  tokens?: Record<string, { name: string; groups?: string[] }>;
  /** SETTINGS_MAX_CONCURRENT_STREAMS for new sessions; kube-apiserver's default is 100. */
  maxConcurrentStreams?: number;
  logger?: Logger;
}

/** One request as the fake saw it. The bearer token itself is never recorded. */
export interface RecordedRequest {
  method: string;
  /** Path with query string. */
  path: string;
  /** '1.1' or '2.0'. */
  httpVersion: string;
  /** Per connection: the HTTP/2 session or the HTTP/1.1 TLS connection. */
  sessionId: number;
  /** HTTP/2 stream id; undefined for HTTP/1.1. */
  streamId?: number;
  /** Authenticated user name; undefined when authentication failed. */
  user?: string;
  groups: string[];
  clientCertificate: boolean;
  bearerToken: boolean;
  upgrade: boolean;
  time: Date;
  /** Response status once headers were sent; undefined while pending or for a hung request. */
  status?: number;
}

export interface GoawayOptions {
  /** Highest stream id the server claims to have processed; defaults to the last one it received. */
  lastStreamId?: number;
  /** HTTP/2 error code; NO_ERROR (0) unless given. */
  code?: number;
}

interface SessionEntry {
  id: number;
  session: ServerHttp2Session;
  streams: Set<ServerHttp2Stream>;
  lastStreamId: number;
}

const HEALTH_PATHS = new Set(['/healthz', '/livez', '/readyz']);
const DEFAULT_MAX_CONCURRENT_STREAMS = 100;

export class FakeApiServer {
  /** Objects, resourceVersions and write counts; changes made here reach open watches. */
  readonly store = new ObjectStore();

  private readonly server: Http2SecureServer;
  private readonly logger: Logger;
  private readonly tokens: Map<string, AuthenticatedUser>;
  private readonly watches: WatchHub;
  private readonly api: ApiHandler;
  private readonly faults = new RequestFaults();
  private readonly sockets = new Set<Socket>();
  private readonly sessions = new Map<ServerHttp2Session, SessionEntry>();
  private readonly http1SessionIds = new WeakMap<TLSSocket, number>();
  private readonly hungResponses = new Set<ServerResponse>();
  private readonly recorded: RecordedRequest[] = [];
  private nextSessionId = 1;
  private boundPort = 0;
  private boundHost = '127.0.0.1';

  private readonly clientCa: string;

  constructor(options: FakeApiServerOptions) {
    this.clientCa = options.clientCa;
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.tokens = new Map(
      Object.entries(options.tokens ?? {}).map(([token, user]) => [token, { name: user.name, groups: user.groups ?? [] }]),
    );
    this.watches = new WatchHub(this.store, this.logger);
    this.api = new ApiHandler(this.store, this.watches);
    seedObjects(this.store);

    this.server = http2.createSecureServer({
      cert: options.cert,
      key: options.key,
      ca: options.clientCa,
      requestCert: true,
      rejectUnauthorized: false,
      allowHTTP1: true,
      settings: { maxConcurrentStreams: options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS },
    });
    this.attachServerListeners();
  }

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    const host = this.boundHost.includes(':') ? `[${this.boundHost}]` : this.boundHost;
    return `https://${host}:${this.boundPort}`;
  }

  /** Requests seen so far, oldest first. */
  get requests(): readonly RecordedRequest[] {
    return this.recorded;
  }

  /** Number of open HTTP/2 sessions. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  get openWatchCount(): number {
    return this.watches.openWatches;
  }

  clearRequests(): void {
    this.recorded.length = 0;
  }

  async listen(port = 0, host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    const address = this.server.address();
    this.boundPort = typeof address === 'object' && address !== null ? address.port : port;
    this.boundHost = host;
    // Like a kube-apiserver replica that starts, publish this replica's own address for the
    // `kubernetes` Service. Replicas with separate stores each list only themselves; a test that
    // replicates stores sets the full list with setApiServerAddresses().
    if (isIP(host) !== 0) {
      this.setApiServerAddresses([{ ip: host, port: this.boundPort }]);
    }
    this.logger.info({ endpoint: this.url }, 'fake API server listening');
    return this.boundPort;
  }

  /** Stops listening and destroys every session, socket and pending request at once. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.watches.endAll();
    this.destroyAllSessions();
    for (const socket of this.sockets) {
      socket.destroy();
    }
    for (const res of this.hungResponses) {
      res.destroy();
    }
    this.hungResponses.clear();
    if (this.server.listening) {
      await closed;
    }
    this.logger.info({ endpoint: this.url }, 'fake API server closed');
  }

  // ---- objects ----

  getObject(resource: string, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.store.get(resource, namespace, name);
  }

  /** Creates or replaces an object, which sends ADDED or MODIFIED to matching watches. */
  putObject(resource: string, object: KubeObject): KubeObject {
    return this.store.put(resource, object);
  }

  /** Deletes an object, which sends DELETED to matching watches; false when it did not exist. */
  deleteObject(resource: string, namespace: string | undefined, name: string): boolean {
    return this.store.delete(resource, namespace, name).ok;
  }

  /**
   * Replaces the addresses published in the `kubernetes` Service's EndpointSlices and Endpoints
   * object (default namespace), as the API servers' endpoint reconciler does. New slices are
   * written before stale ones are deleted, so a watcher never sees an empty list in between.
   */
  setApiServerAddresses(addresses: readonly ApiServerAddress[]): void {
    const { slices, endpoints } = buildKubernetesServiceObjects(addresses);
    for (const slice of slices) {
      this.store.put('endpointslices', slice);
    }
    this.store.put('endpoints', endpoints);

    const wanted = new Set(slices.map((slice) => slice.metadata.name));
    for (const existing of this.store.list('endpointslices', 'default')) {
      if (existing.metadata.labels?.[KUBERNETES_SERVICE_LABEL] === 'kubernetes' && !wanted.has(existing.metadata.name)) {
        this.store.delete('endpointslices', 'default', existing.metadata.name);
      }
    }
  }

  writeCounts(resource: string, namespace: string | undefined, name: string): WriteCounts {
    return this.store.writeCounts(resource, namespace, name);
  }

  /** Sends a BOOKMARK to every watch that set allowWatchBookmarks; returns how many received one. */
  bookmark(): number {
    return this.watches.bookmark();
  }

  // ---- faults ----

  /**
   * Sends GOAWAY on every open session. Streams above lastStreamId are reset with REFUSED_STREAM,
   * as the peer already treats them as unprocessed. With NO_ERROR the session then closes once
   * its remaining streams finish. With an error code it is destroyed at once.
   */
  /** Serves new handshakes with another certificate, as after a serving-certificate or CA rotation. */
  swapServingCertificate(cert: string, key: string): void {
    this.server.setSecureContext({ cert, key, ca: this.clientCa });
  }

  goaway(options: GoawayOptions = {}): void {
    for (const entry of this.sessions.values()) {
      this.sendGoaway(entry, options);
    }
  }

  /** While on, every new HTTP/2 stream is reset with RST_STREAM REFUSED_STREAM, and every HTTP/1.1 request's connection is destroyed. */
  refuseStreams(on: boolean): void {
    this.faults.refuseStreams = on;
  }

  /** Leaves requests whose path starts with the prefix without any response; null turns it off. */
  hang(pathPrefix: string | null): void {
    this.faults.setHang(pathPrefix);
  }

  /** Delays response headers by `ms` for paths with the prefix; 0 turns it off. */
  delayHeaders(ms: number, pathPrefix = '/'): void {
    this.faults.setHeaderDelay(ms, pathPrefix);
  }

  /** Rejects this fraction (0..1) of non-health requests with 429 and Retry-After; 0 turns it off. */
  status429(fraction: number, retryAfterSeconds = 1): void {
    this.faults.setTooManyRequests(fraction, retryAfterSeconds);
  }

  /**
   * Answers 403 Forbidden, with kube-apiserver's RBAC message, to requests whose path starts with
   * the prefix: from `user` only when given, from every user otherwise. Rules add up; null removes
   * them all.
   */
  forbid(pathPrefix: string | null, user?: string): void {
    if (pathPrefix === null) {
      this.faults.clearForbidden();
      return;
    }
    this.faults.addForbidden(pathPrefix, user);
  }

  /**
   * Answers 404 NotFound to requests whose path starts with the prefix, as a server that does not
   * serve that API group does. Prefixes add up; null removes them all.
   */
  notFound(pathPrefix: string | null): void {
    this.faults.setNotFound(pathPrefix);
  }

  /** Makes /readyz return 500 while false. */
  setReady(ready: boolean): void {
    this.faults.ready = ready;
  }

  /** Sends new SETTINGS to every open session and uses the value for new ones. */
  setMaxConcurrentStreams(maxConcurrentStreams: number): void {
    this.server.updateSettings({ maxConcurrentStreams });
    for (const entry of this.sessions.values()) {
      if (!entry.session.destroyed && !entry.session.closed) {
        entry.session.settings({ maxConcurrentStreams });
      }
    }
  }

  /** While on, every HTTP/2 response is followed by GOAWAY (last stream id = that stream) and a graceful close. */
  goawayAfterEachResponse(on: boolean): void {
    this.faults.goawayAfterEachResponse = on;
  }

  /** Destroys every HTTP/2 session and HTTP/1.1 connection without GOAWAY handshakes. */
  destroyAllSessions(): void {
    for (const entry of [...this.sessions.values()]) {
      entry.session.destroy();
    }
    for (const socket of this.sockets) {
      if ((socket as TLSSocket).alpnProtocol !== 'h2') {
        socket.destroy();
      }
    }
  }

  // ---- connection handling ----

  private attachServerListeners(): void {
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('error', (err) => this.logger.debug({ err: err.message }, 'fake API server socket error'));
      socket.on('close', () => this.sockets.delete(socket));
    });
    this.server.on('secureConnection', (socket: TLSSocket) => {
      socket.on('error', (err) => this.logger.debug({ err: err.message }, 'fake API server TLS socket error'));
      if (socket.alpnProtocol !== 'h2') {
        this.http1SessionIds.set(socket, this.nextSessionId++);
      }
    });
    this.server.on('tlsClientError', (err) => this.logger.debug({ err: err.message }, 'fake API server TLS handshake failed'));
    this.server.on('sessionError', (err) => this.logger.debug({ err: err.message }, 'fake API server session error'));
    this.server.on('session', (session: ServerHttp2Session) => this.trackSession(session));
    this.server.on('request', (req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse | ServerResponse) => {
      this.dispatch(req as IncomingMessage, res as ServerResponse).catch((err: unknown) => {
        this.logger.error({ err: err instanceof Error ? err.message : String(err), path: req.url }, 'fake API server handler failed');
        if (!res.headersSent && !res.destroyed) {
          sendStatus(res as ServerResponse, buildStatus(500, 'InternalError', 'Internal error occurred: testbed handler failed'));
        } else {
          res.destroy();
        }
      });
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket, head));
  }

  private trackSession(session: ServerHttp2Session): void {
    const entry: SessionEntry = { id: this.nextSessionId++, session, streams: new Set(), lastStreamId: 0 };
    this.sessions.set(session, entry);
    session.on('error', (err) => this.logger.debug({ sessionId: entry.id, err: err.message }, 'fake API server session error'));
    session.on('close', () => {
      this.sessions.delete(session);
      this.logger.debug({ sessionId: entry.id }, 'fake API server session closed');
    });
    session.on('stream', (stream: ServerHttp2Stream) => {
      entry.streams.add(stream);
      entry.lastStreamId = Math.max(entry.lastStreamId, stream.id ?? 0);
      stream.on('error', (err) => this.logger.debug({ sessionId: entry.id, streamId: stream.id, err: err.message }, 'fake API server stream error'));
      stream.on('close', () => entry.streams.delete(stream));
    });
    this.logger.debug({ sessionId: entry.id }, 'fake API server session opened');
  }

  private sendGoaway(entry: SessionEntry, options: GoawayOptions): void {
    const { session } = entry;
    if (session.destroyed || session.closed) {
      return;
    }

    const code = options.code ?? http2.constants.NGHTTP2_NO_ERROR;
    const lastStreamId = options.lastStreamId ?? entry.lastStreamId;
    session.goaway(code, lastStreamId);
    this.logger.debug({ sessionId: entry.id, lastStreamId, code }, 'fake API server sent GOAWAY');

    for (const stream of entry.streams) {
      if ((stream.id ?? 0) > lastStreamId) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      }
    }
    if (code !== http2.constants.NGHTTP2_NO_ERROR) {
      // Give the GOAWAY frame a moment to be written before the socket goes away. Passing the code
      // keeps the final GOAWAY that destroy() sends consistent with the first.
      setImmediate(() => session.destroy(undefined, code));
      return;
    }
    // close() lets the remaining streams finish and then ends the session. It sends one more
    // GOAWAY, and nghttp2 keeps its last stream id at or below the one already sent (the test
    // 'sends GOAWAY with the given last stream id' checks this with Node 20).
    session.close();
  }

  // ---- requests ----

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const stream = (req as unknown as Http2ServerRequest).stream as ServerHttp2Stream | undefined;
    const socket = (stream ? stream.session?.socket : req.socket) as TLSSocket;
    const url = new URL(req.url ?? '/', 'https://fake-apiserver.invalid');
    const auth = authenticate(req, socket, this.tokens);

    // stream.session is already detached when 'finish' fires, so the session is looked up now.
    const sessionEntry = stream ? this.sessions.get(stream.session as ServerHttp2Session) : undefined;
    const record: RecordedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      httpVersion: req.httpVersion,
      sessionId: sessionEntry?.id ?? this.http1SessionIds.get(req.socket as TLSSocket) ?? 0,
      streamId: stream?.id,
      user: auth.user?.name,
      groups: auth.user?.groups ?? [],
      clientCertificate: auth.clientCertificate,
      bearerToken: auth.bearerToken,
      upgrade: false,
      time: new Date(),
    };
    this.recorded.push(record);
    res.once('finish', () => {
      record.status = res.statusCode;
      this.logger.debug(
        { sessionId: record.sessionId, streamId: record.streamId, method: record.method, path: url.pathname, user: record.user, status: record.status },
        'fake API server sent response',
      );
      if (this.faults.goawayAfterEachResponse && sessionEntry && stream) {
        this.sendGoaway(sessionEntry, { lastStreamId: stream.id });
      }
    });

    if (this.faults.refuseStreams) {
      if (stream) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      } else {
        req.socket.destroy();
      }
      return;
    }
    if (this.faults.shouldHang(url.pathname)) {
      this.hungResponses.add(res);
      res.once('close', () => this.hungResponses.delete(res));
      return;
    }
    const delayMs = this.faults.headerDelayFor(url.pathname);
    if (delayMs > 0 && !(await waitUnlessClosed(res, delayMs))) {
      return;
    }

    if (HEALTH_PATHS.has(url.pathname)) {
      this.serveHealth(url.pathname, res);
      return;
    }
    const retryAfter = this.faults.takeTooManyRequests();
    if (retryAfter !== undefined) {
      sendStatus(res, buildStatus(429, 'TooManyRequests', 'Too many requests, please try again later.', { retryAfterSeconds: retryAfter }), {
        'retry-after': String(retryAfter),
      });
      return;
    }
    if (!auth.user) {
      sendStatus(res, buildStatus(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    // Authorization comes before routing in kube-apiserver, so 403 wins over 404.
    if (this.faults.isForbidden(url.pathname, auth.user.name)) {
      sendStatus(res, buildForbiddenStatus(record.method, url, auth.user.name));
      return;
    }
    if (this.faults.isNotFound(url.pathname)) {
      sendStatus(res, buildStatus(404, 'NotFound', 'the server could not find the requested resource'));
      return;
    }

    const context: RequestContext = {
      req,
      res,
      method: record.method,
      url,
      httpVersion: req.httpVersion,
      sessionId: record.sessionId,
      stream,
      user: auth.user,
    };
    await this.route(context);
  }

  private async route(context: RequestContext): Promise<void> {
    const { url, res } = context;
    if (url.pathname.startsWith('/testbed/') && (await handleTestbedRequest(context))) {
      return;
    }
    if (context.method === 'GET' && this.serveDiscovery(url.pathname, res)) {
      return;
    }
    const route = parseResourcePath(url.pathname);
    if (route) {
      await this.api.handle(context, route);
      return;
    }
    sendStatus(res, buildStatus(404, 'NotFound', 'the server could not find the requested resource'));
  }

  private serveHealth(pathname: string, res: ServerResponse): void {
    if (pathname === '/readyz' && !this.faults.ready) {
      sendText(res, 500, '[-]shutdown failed: reason withheld\nreadyz check failed\n');
      return;
    }
    sendText(res, 200, 'ok');
  }

  private serveDiscovery(pathname: string, res: ServerResponse): boolean {
    const path = pathname.replace(/\/+$/, '') || '/';
    let body: object | undefined;
    if (path === '/version') {
      body = VERSION_INFO;
    } else if (path === '/api') {
      body = coreApiVersions(`${this.boundHost}:${this.boundPort}`);
    } else if (path === '/apis') {
      body = apiGroupList();
    } else if (path === '/api/v1') {
      body = apiResourceList('', 'v1');
    } else if (path === '/openapi/v3') {
      body = openApiRoot();
    } else if (path.startsWith('/openapi/v3/')) {
      body = openApiGroupVersion(path.slice('/openapi/v3/'.length));
      if (body === undefined) {
        sendStatus(res, buildStatus(404, 'NotFound', 'the server could not find the requested resource'));
        return true;
      }
    } else {
      const match = /^\/apis\/([^/]+)(?:\/([^/]+))?$/.exec(path);
      if (match) {
        body = match[2] === undefined ? apiGroupDocument(match[1]) : apiResourceList(match[1], match[2]);
        if (body === undefined) {
          sendStatus(res, buildStatus(404, 'NotFound', 'the server could not find the requested resource'));
          return true;
        }
      }
    }
    if (body === undefined) {
      return false;
    }
    sendJson(res, 200, body);
    return true;
  }

  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const tlsSocket = socket as TLSSocket;
    const auth = authenticate(req, tlsSocket, this.tokens);
    const url = new URL(req.url ?? '/', 'https://fake-apiserver.invalid');
    this.recorded.push({
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      httpVersion: req.httpVersion,
      sessionId: this.http1SessionIds.get(tlsSocket) ?? 0,
      user: auth.user?.name,
      groups: auth.user?.groups ?? [],
      clientCertificate: auth.clientCertificate,
      bearerToken: auth.bearerToken,
      upgrade: true,
      time: new Date(),
    });
    const record = this.recorded[this.recorded.length - 1];

    if (!auth.user) {
      record.status = 401;
      rejectUpgrade(socket, 401, 'Unauthorized', buildStatus(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (!isUpgradePath(url.pathname)) {
      record.status = 400;
      rejectUpgrade(socket, 400, 'Bad Request', buildStatus(400, 'BadRequest', `upgrade is not supported on ${url.pathname}`));
      return;
    }
    record.status = 101;
    acceptEchoUpgrade(req, socket, head);
  }
}

function waitUnlessClosed(res: ServerResponse, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      res.off('close', onClose);
      resolve(true);
    }, ms);
    const onClose = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    res.once('close', onClose);
  });
}

function seedObjects(store: ObjectStore): void {
  for (const name of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
    store.put('namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name, labels: { 'kubernetes.io/metadata.name': name } },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    });
  }
  store.put('nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'n1', labels: { 'kubernetes.io/hostname': 'n1', 'kubernetes.io/os': 'linux' } },
    spec: {},
    status: {
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' }],
      nodeInfo: { kubeletVersion: 'v1.32.4', osImage: 'testbed', containerRuntimeVersion: 'testbed://1.0', kernelVersion: '', operatingSystem: 'linux', architecture: 'amd64' },
      addresses: [{ type: 'InternalIP', address: '127.0.0.1' }, { type: 'Hostname', address: 'n1' }],
    },
  });
}
