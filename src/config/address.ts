import { BlockList, isIP } from 'node:net';

/** A listen address split into its parts; `host` has no brackets, even for IPv6. */
export interface HostPort {
  host: string;
  port: number;
}

export class AddressSyntaxError extends Error {
  override readonly name = 'AddressSyntaxError';
}

// A DNS name: labels of letters, digits and hyphens, separated by dots.
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parses "host:port", where host is an IPv4 address, a bracketed IPv6 address ("[::1]:7446") or a
 * DNS name, and port is 0-65535 (0 lets the OS choose). Throws AddressSyntaxError with a message
 * that completes the sentence `"<text>" ...`.
 */
export function parseHostPort(text: string): HostPort {
  const match = /^(\[[^\]]*\]|[^:[\]]*):(\d{1,5})$/.exec(text);
  if (match === null) {
    throw new AddressSyntaxError('is not a host:port address; write it as e.g. "127.0.0.1:7446" or "[::1]:7446"');
  }

  const bracketed = match[1].startsWith('[');
  const host = bracketed ? match[1].slice(1, -1) : match[1];
  const port = Number(match[2]);

  if (bracketed ? isIP(host) !== 6 : isIP(host) !== 4 && !HOSTNAME.test(host)) {
    throw new AddressSyntaxError(
      'has an invalid host; use an IPv4 address, a DNS name or an IPv6 address in brackets, e.g. "[::1]:7446"',
    );
  }
  if (port > 65535) {
    throw new AddressSyntaxError('has a port above 65535; use a port from 0 to 65535');
  }
  return { host, port };
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/**
 * Returns whether `host` names this machine only: an address in 127.0.0.0/8, ::1 in any spelling,
 * an IPv4-mapped loopback address (::ffff:127.0.0.1) or "localhost".
 */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') {
    return true;
  }

  const family = isIP(host);
  if (family === 0) {
    return false;
  }
  return LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

/** Returns whether `text` is a syntactically valid DNS name (letters, digits, hyphens and dots). */
export function isHostname(text: string): boolean {
  return HOSTNAME.test(text);
}
