/**
 * HTTP/1.1 Upgrade for exec, attach and portforward: kubectl and kubelet-facing tools switch the
 * connection to SPDY/3.1 or WebSocket. The fake responds with 101 and the requested protocol, then
 * echoes every byte. That is enough to prove that a proxy carries an upgraded connection both ways.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

// RFC 6455 section 1.3: the accept key is SHA-1 over the client key and this fixed GUID.
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const UPGRADE_PATH = /^\/api\/v1\/namespaces\/[^/]+\/pods\/[^/]+\/(exec|attach|portforward)$/;

export function isUpgradePath(pathname: string): boolean {
  return UPGRADE_PATH.test(pathname);
}

/** Writes a complete HTTP/1.1 error response on a socket that never reached the HTTP response API. */
export function rejectUpgrade(socket: Duplex, statusCode: number, statusText: string, body: object): void {
  const payload = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${statusCode} ${statusText}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\nConnection: close\r\n\r\n${payload}`,
  );
}

/** Sends 101 Switching Protocols with the client's Upgrade token, then echoes every byte. */
export function acceptEchoUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const protocol = String(req.headers.upgrade);
  const lines = ['HTTP/1.1 101 Switching Protocols', 'Connection: Upgrade', `Upgrade: ${protocol}`];

  if (protocol.toLowerCase() === 'websocket') {
    const key = String(req.headers['sec-websocket-key'] ?? '');
    lines.push(`Sec-WebSocket-Accept: ${createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64')}`);
    const subprotocol = String(req.headers['sec-websocket-protocol'] ?? '').split(',')[0].trim();
    if (subprotocol !== '') {
      lines.push(`Sec-WebSocket-Protocol: ${subprotocol}`);
    }
  }
  const streamProtocol = req.headers['x-stream-protocol-version'];
  if (typeof streamProtocol === 'string' && streamProtocol !== '') {
    lines.push(`X-Stream-Protocol-Version: ${streamProtocol.split(',')[0].trim()}`);
  }

  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  if (head.length > 0) {
    socket.write(head);
  }
  socket.pipe(socket);
}
