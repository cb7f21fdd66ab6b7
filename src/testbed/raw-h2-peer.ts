import tls from 'node:tls';

/**
 * A minimal HTTP/2 server written frame by frame, for the faults that node:http2's server will
 * not produce: a PING that is never acknowledged on an otherwise live connection, and a
 * SETTINGS_MAX_CONCURRENT_STREAMS chosen per connection. It answers every request with a small
 * 200 response and understands nothing else of HPACK (it never decodes request headers).
 */
export interface RawPeerOptions {
  cert: string;
  key: string;
  /** `ack` answers PINGs as RFC 9113 requires; `ignore` never does. */
  pingMode: 'ack' | 'ignore';
  /** Sent in the first SETTINGS frame when given. */
  maxConcurrentStreams?: number;
  /** `respond` answers each request at once; `hang` never answers. */
  requests?: 'respond' | 'hang';
  /** Resets this many first requests with RST_STREAM REFUSED_STREAM before serving any. */
  refuseFirst?: number;
}

const FRAME_DATA = 0x0;
const FRAME_HEADERS = 0x1;
const FRAME_RST_STREAM = 0x3;
const REFUSED_STREAM = 0x7;
const FRAME_SETTINGS = 0x4;
const FRAME_PING = 0x6;
const FLAG_ACK = 0x1;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const PREFACE_LENGTH = 24;

export class RawH2Peer {
  readonly #server: tls.Server;
  readonly #sockets = new Set<tls.TLSSocket>();
  #options: RawPeerOptions;
  pingsReceived = 0;
  requestsReceived = 0;
  /** RST_STREAM frames received, with their error codes. */
  readonly resets: number[] = [];
  connections = 0;

  constructor(options: RawPeerOptions) {
    this.#options = options;
    this.#server = tls.createServer({ cert: options.cert, key: options.key, ALPNProtocols: ['h2'] }, (socket) => this.#serve(socket));
  }

  get port(): number {
    const address = this.#server.address();
    return typeof address === 'object' && address !== null ? address.port : 0;
  }

  set pingMode(mode: RawPeerOptions['pingMode']) {
    this.#options = { ...this.#options, pingMode: mode };
  }

  listen(): Promise<number> {
    return new Promise((resolve) => this.#server.listen(0, '127.0.0.1', () => resolve(this.port)));
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #serve(socket: tls.TLSSocket): void {
    this.connections++;
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => socket.destroy());

    const settings: Array<[number, number]> = [];
    if (this.#options.maxConcurrentStreams !== undefined) settings.push([SETTINGS_MAX_CONCURRENT_STREAMS, this.#options.maxConcurrentStreams]);
    socket.write(frame(FRAME_SETTINGS, 0, 0, settingsPayload(settings)));

    let buffer = Buffer.alloc(0);
    let prefaceSeen = false;
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!prefaceSeen) {
        if (buffer.length < PREFACE_LENGTH) return;
        buffer = buffer.subarray(PREFACE_LENGTH);
        prefaceSeen = true;
      }

      while (buffer.length >= 9) {
        const length = buffer.readUIntBE(0, 3);
        if (buffer.length < 9 + length) return;
        const type = buffer[3]!;
        const flags = buffer[4]!;
        const streamId = buffer.readUInt32BE(5) & 0x7fffffff;
        const payload = buffer.subarray(9, 9 + length);
        buffer = buffer.subarray(9 + length);
        this.#onFrame(socket, type, flags, streamId, payload);
      }
    });
  }

  #onFrame(socket: tls.TLSSocket, type: number, flags: number, streamId: number, payload: Buffer): void {
    if (type === FRAME_SETTINGS && (flags & FLAG_ACK) === 0) {
      socket.write(frame(FRAME_SETTINGS, FLAG_ACK, 0, Buffer.alloc(0)));
      return;
    }

    if (type === FRAME_PING && (flags & FLAG_ACK) === 0) {
      this.pingsReceived++;
      if (this.#options.pingMode === 'ack') socket.write(frame(FRAME_PING, FLAG_ACK, 0, payload));
      return;
    }

    if (type === FRAME_RST_STREAM && payload.length === 4) {
      this.resets.push(payload.readUInt32BE(0));
      return;
    }

    if (type === FRAME_HEADERS) {
      this.requestsReceived++;
      if (this.requestsReceived <= (this.#options.refuseFirst ?? 0)) {
        const code = Buffer.alloc(4);
        code.writeUInt32BE(REFUSED_STREAM);
        socket.write(frame(FRAME_RST_STREAM, 0, streamId, code));
        return;
      }
      if ((this.#options.requests ?? 'respond') === 'hang') return;
      // HEADERS and DATA in one write, so they arrive in one TLS record: the receiver must not let
      // the body overtake the headers.
      const body = Buffer.from('{"kind":"Status","status":"Success"}');
      socket.write(Buffer.concat([frame(FRAME_HEADERS, FLAG_END_HEADERS, streamId, responseHeaderBlock()), frame(FRAME_DATA, FLAG_END_STREAM, streamId, body)]));
    }
  }
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

function settingsPayload(settings: Array<[number, number]>): Buffer {
  const payload = Buffer.alloc(6 * settings.length);
  settings.forEach(([id, value], index) => {
    payload.writeUInt16BE(id, index * 6);
    payload.writeUInt32BE(value, index * 6 + 2);
  });
  return payload;
}

/** `:status: 200` (static table index 8) and a literal content-type, without Huffman coding. */
function responseHeaderBlock(): Buffer {
  const name = Buffer.from('content-type');
  const value = Buffer.from('application/json');
  return Buffer.concat([Buffer.from([0x88, 0x00, name.length]), name, Buffer.from([value.length]), value]);
}
