/** Loopback ports and readiness checks for the child processes, which need a port number up front. */
import net from 'node:net';
import { sleep } from './abort.js';

/**
 * Returns a TCP port on 127.0.0.1 that was free a moment ago: the kernel picks it for a listener
 * that is closed at once.
 * NOTE: another process can take the port before the caller binds it. The caller's start then
 * fails with EADDRINUSE, and its error message names the port.
 */
export async function reserveLoopbackPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once a TCP connection to 127.0.0.1:port succeeds; rejects after `timeoutMs` or when `givenUp()` is true. */
export async function waitForListener(port: number, timeoutMs: number, givenUp: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await canConnect(port)) return;
    if (givenUp()) throw new Error(`the process exited before it listened on 127.0.0.1:${port}`);
    if (Date.now() >= deadline) throw new Error(`nothing listened on 127.0.0.1:${port} within ${timeoutMs}ms`);
    await sleep(50);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
