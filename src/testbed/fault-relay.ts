/**
 * A TCP relay between a client and a target that misbehaves on command, the way a load balancer
 * in front of the API servers does. It blackholes connections (open, silent, no FIN, no RST) and
 * strands them during a failover. It also delays, resets, closes and refuses them. TLS passes
 * through untouched because the relay never looks at the bytes.
 *
 * Modes act on two sets: connections open at the time of the call and connections accepted
 * later. Each verb's comment names which of the two it changes.
 */
import net, { type Server, type Socket } from 'node:net';
import { pino, type Logger } from 'pino';

export interface RelayTarget {
  host: string;
  port: number;
}

export type BlackholeDirection = 'both' | 'to-target' | 'to-client';

export type NewConnectionMode = 'pass' | 'blackhole' | 'tarpit';

/** What a middlebox does to a flow idle past its timer: drop it silently, or reset it on the next packet. */
export type IdleAction = 'silent' | 'rst';

export interface FaultRelayOptions {
  target: RelayTarget;
  /** Targets outside loopback are rejected unless set; tests that create a network namespace set it. */
  allowNonLoopbackTarget?: boolean;
  logger?: Logger;
}

/** One relayed connection as `connections` reports it. */
export interface RelayConnectionInfo {
  id: number;
  target: RelayTarget | null;
  toTarget: 'forward' | 'drop';
  toClient: 'forward' | 'drop';
  /** True once a failover left this connection silent for good. */
  stranded: boolean;
  bytesToTarget: number;
  bytesToClient: number;
  openedAt: Date;
}

export interface RelayCounters {
  accepted: number;
  open: number;
  /** Bytes written to targets and to clients; dropped bytes are not counted here. */
  bytesToTarget: number;
  bytesToClient: number;
  bytesDropped: number;
}

interface QueuedChunk {
  dueAt: number;
  chunk: Buffer;
}

/** Forwards one direction of a connection, honouring drop and delay. */
class Direction {
  mode: 'forward' | 'drop' = 'forward';
  delayMs = 0;
  forwardedBytes = 0;
  droppedBytes = 0;
  private readonly queue: QueuedChunk[] = [];
  private timer: NodeJS.Timeout | undefined;
  private waitingForDrain = false;

  constructor(
    private readonly source: Socket,
    private readonly sink: Socket | null,
  ) {}

  accept(chunk: Buffer): void {
    if (this.mode === 'drop' || this.sink === null) {
      this.droppedBytes += chunk.length;
      return;
    }
    if (this.delayMs > 0 || this.queue.length > 0) {
      this.queue.push({ dueAt: Date.now() + this.delayMs, chunk });
      this.schedule();
      return;
    }
    this.write(chunk);
  }

  /** Drops queued bytes and resumes reading, as a blackhole reads and discards everything. */
  drop(): void {
    this.mode = 'drop';
    for (const queued of this.queue.splice(0)) {
      this.droppedBytes += queued.chunk.length;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.source.resume();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }

  private write(chunk: Buffer): void {
    const sink = this.sink!;
    if (sink.destroyed || sink.writableEnded) {
      this.droppedBytes += chunk.length;
      return;
    }
    this.forwardedBytes += chunk.length;
    if (!sink.write(chunk) && !this.waitingForDrain) {
      this.waitingForDrain = true;
      this.source.pause();
      sink.once('drain', () => {
        this.waitingForDrain = false;
        this.source.resume();
      });
    }
  }

  private schedule(): void {
    if (this.timer !== undefined || this.queue.length === 0) {
      return;
    }
    const waitMs = Math.max(0, this.queue[0].dueAt - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = Date.now();
      while (this.queue.length > 0 && this.queue[0].dueAt <= now) {
        const next = this.queue.shift()!;
        if (this.mode === 'forward') {
          this.write(next.chunk);
        } else {
          this.droppedBytes += next.chunk.length;
        }
      }
      this.schedule();
    }, waitMs);
  }
}

class RelayConnection {
  readonly openedAt = new Date();
  readonly toTarget: Direction;
  readonly toClient: Direction;
  stranded = false;
  /** Last time a byte crossed the relay in either direction, for the idle timer. */
  lastActivityAt = Date.now();
  /** Set once the idle timer expired: `rst` resets both sides on the next byte. */
  idleExpired: IdleAction | undefined;
  private closedSides = 0;

  constructor(
    readonly id: number,
    readonly client: Socket,
    readonly targetSocket: Socket | null,
    readonly target: RelayTarget | null,
    private readonly onClosed: (connection: RelayConnection) => void,
  ) {
    this.toTarget = new Direction(client, targetSocket);
    this.toClient = new Direction(targetSocket ?? client, targetSocket ? client : null);
  }

  start(): void {
    const { client, targetSocket } = this;
    client.on('data', (chunk: Buffer) => {
      if (this.noteActivity()) this.toTarget.accept(chunk);
    });
    client.on('error', () => undefined);
    client.on('close', (hadError) => {
      if (this.toTarget.mode === 'forward' && targetSocket && !targetSocket.destroyed) {
        if (hadError) {
          targetSocket.resetAndDestroy();
        } else {
          targetSocket.end();
        }
      }
      this.sideClosed();
    });

    // A FIN travels on only while its direction forwards: a blackholed path never shows the peer a close.
    client.on('end', () => {
      if (this.toTarget.mode === 'forward' && targetSocket && !targetSocket.destroyed) {
        targetSocket.end();
      }
    });

    if (!targetSocket) {
      this.closedSides += 1;
      return;
    }
    targetSocket.on('data', (chunk: Buffer) => {
      if (this.noteActivity()) this.toClient.accept(chunk);
    });
    targetSocket.on('error', () => undefined);
    targetSocket.on('end', () => {
      if (this.toClient.mode === 'forward' && !client.destroyed) {
        client.end();
      }
    });
    targetSocket.on('close', (hadError) => {
      // A target that fails or resets takes the client down too, unless the client side is silenced.
      if (this.toClient.mode === 'forward' && !client.destroyed) {
        if (hadError) {
          client.resetAndDestroy();
        } else {
          client.end();
        }
      }
      this.sideClosed();
    });
  }

  /**
   * Records a byte crossing the relay. Returns false when the idle timer had expired with `rst`:
   * the connection is reset then, as an AWS NLB answers the first packet of a forgotten flow.
   */
  noteActivity(): boolean {
    if (this.idleExpired === 'rst') {
      this.reset();
      return false;
    }
    this.lastActivityAt = Date.now();
    return true;
  }

  /** Applies an expired idle timer: `silent` forgets the flow for good, `rst` arms a reset. */
  expireIdle(action: IdleAction): void {
    this.idleExpired = action;
    if (action === 'silent') {
      this.stranded = true;
      this.blackhole('both');
    }
  }

  blackhole(direction: BlackholeDirection): void {
    if (direction === 'both' || direction === 'to-target') {
      this.toTarget.drop();
    }
    if (direction === 'both' || direction === 'to-client') {
      this.toClient.drop();
    }
  }

  resume(): void {
    if (this.stranded) {
      return;
    }
    this.toTarget.mode = 'forward';
    this.toClient.mode = 'forward';
  }

  setDelay(ms: number): void {
    this.toTarget.delayMs = ms;
    this.toClient.delayMs = ms;
  }

  reset(): void {
    this.stop();
    if (!this.client.destroyed) {
      this.client.resetAndDestroy();
    }
    this.targetSocket?.destroy();
  }

  closeGracefully(): void {
    this.stop();
    this.client.end();
    this.targetSocket?.end();
  }

  halfClose(): void {
    this.toTarget.drop();
    this.toClient.drop();
    this.client.end();
  }

  destroy(): void {
    this.stop();
    this.client.destroy();
    this.targetSocket?.destroy();
  }

  info(): RelayConnectionInfo {
    return {
      id: this.id,
      target: this.target,
      toTarget: this.toTarget.mode,
      toClient: this.toClient.mode,
      stranded: this.stranded,
      bytesToTarget: this.toTarget.forwardedBytes,
      bytesToClient: this.toClient.forwardedBytes,
      openedAt: this.openedAt,
    };
  }

  private stop(): void {
    this.toTarget.stop();
    this.toClient.stop();
  }

  private sideClosed(): void {
    this.closedSides += 1;
    if (this.closedSides === 2) {
      this.stop();
      this.onClosed(this);
    }
  }
}

export class FaultRelay {
  private readonly server: Server;
  private readonly logger: Logger;
  private readonly allowNonLoopbackTarget: boolean;
  private readonly open = new Map<number, RelayConnection>();
  private target: RelayTarget;
  private newConnectionMode: NewConnectionMode = 'pass';
  private newConnectionBlackhole: BlackholeDirection = 'both';
  private delayMs = 0;
  private nextId = 1;
  private accepted = 0;
  private closedBytesToTarget = 0;
  private closedBytesToClient = 0;
  private closedBytesDropped = 0;
  private boundPort = 0;
  private boundHost = '127.0.0.1';
  private refusing = false;
  private idleTimer: { timeoutMs: number; action: IdleAction; sweep: NodeJS.Timeout } | undefined;
  /** Connections whose idle timer expired, so tests can tell a drop from a connection that stayed busy. */
  idleExpirations = 0;

  constructor(options: FaultRelayOptions) {
    this.allowNonLoopbackTarget = options.allowNonLoopbackTarget ?? false;
    this.target = this.checkTarget(options.target);
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (client) => this.accept(client));
    this.server.on('error', (err) => this.logger.warn({ err: err.message }, 'fault relay server error'));
  }

  get port(): number {
    return this.boundPort;
  }

  get counters(): RelayCounters {
    const counters: RelayCounters = {
      accepted: this.accepted,
      open: this.open.size,
      bytesToTarget: this.closedBytesToTarget,
      bytesToClient: this.closedBytesToClient,
      bytesDropped: this.closedBytesDropped,
    };
    for (const connection of this.open.values()) {
      counters.bytesToTarget += connection.toTarget.forwardedBytes;
      counters.bytesToClient += connection.toClient.forwardedBytes;
      counters.bytesDropped += connection.toTarget.droppedBytes + connection.toClient.droppedBytes;
    }
    return counters;
  }

  /** A snapshot of the open connections, oldest first. */
  get connections(): RelayConnectionInfo[] {
    return [...this.open.values()].map((connection) => connection.info());
  }

  get currentTarget(): RelayTarget {
    return { ...this.target };
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
    this.refusing = false;
    this.logger.info({ port: this.boundPort, target: this.target }, 'fault relay listening');
    return this.boundPort;
  }

  /**
   * Forgets flows with no byte in either direction for `timeoutMs`, as load balancers, NAT and
   * conntrack do (Azure LB 4 min, AWS NLB 350 s, IPVS 900 s): `silent` blackholes the flow for
   * good, `rst` resets it on its next byte. Applies to open and new connections; null turns it off.
   */
  idle(timeoutMs: number | null, action: IdleAction = 'silent'): void {
    if (this.idleTimer !== undefined) clearInterval(this.idleTimer.sweep);
    this.idleTimer = undefined;
    if (timeoutMs === null) return;

    const sweep = setInterval(() => {
      const now = Date.now();
      for (const connection of this.open.values()) {
        if (connection.idleExpired === undefined && now - connection.lastActivityAt >= timeoutMs) {
          connection.expireIdle(action);
          this.idleExpirations += 1;
        }
      }
    }, Math.max(10, Math.min(100, timeoutMs / 10)));
    sweep.unref();
    this.idleTimer = { timeoutMs, action, sweep };
    this.logger.info({ mode: 'idle', timeoutMs, action }, 'fault relay mode changed');
  }

  /** Stops listening and destroys every relayed connection. */
  async close(): Promise<void> {
    this.idle(null);
    for (const connection of this.open.values()) {
      connection.destroy();
    }
    if (this.server.listening) {
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
    }
    this.logger.info({ port: this.boundPort }, 'fault relay closed');
  }

  // ---- modes ----

  /** Forwards on every connection, open and new, except those a failover stranded; listens again after refuse(). */
  async pass(): Promise<void> {
    this.newConnectionMode = 'pass';
    this.delayMs = 0;
    for (const connection of this.open.values()) {
      connection.resume();
      connection.setDelay(0);
    }
    if (this.refusing) {
      await this.listen(this.boundPort, this.boundHost);
    }
    this.logger.info({ mode: 'pass' }, 'fault relay mode changed');
  }

  /** Reads and drops bytes in `direction` on open and new connections; sockets stay open with no FIN and no RST. */
  blackhole(direction: BlackholeDirection = 'both'): void {
    this.newConnectionMode = 'blackhole';
    this.newConnectionBlackhole = direction;
    for (const connection of this.open.values()) {
      connection.blackhole(direction);
    }
    this.logger.info({ mode: 'blackhole', direction }, 'fault relay mode changed');
  }

  /**
   * Silences every open connection for good (blackhole both ways) and passes new connections,
   * to `newTarget` when given: a load balancer that moved to another backend and forgot the
   * flows it had.
   */
  failover(newTarget?: RelayTarget): void {
    if (newTarget) {
      this.target = this.checkTarget(newTarget);
    }
    for (const connection of this.open.values()) {
      connection.stranded = true;
      connection.blackhole('both');
    }
    this.newConnectionMode = 'pass';
    this.logger.info({ mode: 'failover', target: this.target, stranded: this.open.size }, 'fault relay mode changed');
  }

  /** Delays every forwarded chunk by `ms`, in order, on open and new connections; 0 turns it off. */
  delay(ms: number): void {
    if (!(ms >= 0)) {
      throw new RangeError(`relay delay must be a non-negative number of milliseconds, got ${ms}`);
    }
    this.delayMs = ms;
    for (const connection of this.open.values()) {
      connection.setDelay(ms);
    }
    this.logger.info({ mode: 'delay', delayMs: ms }, 'fault relay mode changed');
  }

  /** Sends RST to the client of every open connection and closes the target side; new connections are unaffected. */
  reset(): void {
    const count = this.open.size;
    for (const connection of this.open.values()) {
      connection.reset();
    }
    this.logger.info({ action: 'reset', connections: count }, 'fault relay reset connections');
  }

  /** Sends FIN both ways on every open connection; new connections are unaffected. */
  closeAll(): void {
    const count = this.open.size;
    for (const connection of this.open.values()) {
      connection.closeGracefully();
    }
    this.logger.info({ action: 'close', connections: count }, 'fault relay closed connections');
  }

  /** Sends FIN to the client of every open connection, then reads and drops whatever either side still sends. */
  halfClose(): void {
    for (const connection of this.open.values()) {
      connection.halfClose();
    }
    this.logger.info({ action: 'half-close', connections: this.open.size }, 'fault relay half-closed connections');
  }

  /** Accepts new connections but never connects them to the target; open connections are unaffected. */
  tarpit(): void {
    this.newConnectionMode = 'tarpit';
    this.logger.info({ mode: 'tarpit' }, 'fault relay mode changed');
  }

  /** Stops listening, so new connections are refused; open connections are unaffected. pass() listens again. */
  async refuse(): Promise<void> {
    if (!this.server.listening) {
      return;
    }
    this.refusing = true;
    // close() stops listening at once; its callback waits for every open connection to end,
    // which connections that are meant to stay open never do.
    this.server.close();
    this.logger.info({ mode: 'refuse' }, 'fault relay mode changed');
  }

  // ---- connections ----

  private accept(client: Socket): void {
    this.accepted += 1;
    const id = this.nextId++;
    client.setNoDelay(true);

    let targetSocket: Socket | null = null;
    if (this.newConnectionMode !== 'tarpit') {
      targetSocket = net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true });
      targetSocket.setNoDelay(true);
    }

    const connection = new RelayConnection(id, client, targetSocket, targetSocket ? { ...this.target } : null, (closed) => {
      this.closedBytesToTarget += closed.toTarget.forwardedBytes;
      this.closedBytesToClient += closed.toClient.forwardedBytes;
      this.closedBytesDropped += closed.toTarget.droppedBytes + closed.toClient.droppedBytes;
      this.open.delete(closed.id);
      this.logger.debug({ connectionId: closed.id }, 'fault relay connection closed');
    });
    this.open.set(id, connection);
    connection.setDelay(this.delayMs);
    if (this.newConnectionMode === 'blackhole') {
      connection.blackhole(this.newConnectionBlackhole);
    }
    if (this.newConnectionMode === 'tarpit') {
      connection.toTarget.drop();
    }
    connection.start();
    this.logger.debug({ connectionId: id, mode: this.newConnectionMode }, 'fault relay accepted connection');
  }

  private checkTarget(target: RelayTarget): RelayTarget {
    if (!this.allowNonLoopbackTarget && !isLoopback(target.host)) {
      throw new RangeError(`relay target ${target.host} is not a loopback address; set allowNonLoopbackTarget for a network-namespace test`);
    }
    return { ...target };
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
