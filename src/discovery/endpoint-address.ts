import net from 'node:net';
import { parseEndpoint, type Endpoint } from '../upstream/endpoint.js';

/** Returns `https://host:port`, with an IPv6 host in brackets: the form Endpoint.id takes. */
export function originOf(host: string, port: number): string {
  return `https://${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** True when the endpoint's host is a name that DNS has to resolve, not an IP address. */
export function hasHostName(endpoint: Endpoint): boolean {
  return net.isIP(endpoint.host) === 0;
}

/**
 * Returns the endpoint for one address of a named endpoint: it dials `address`, while its TLS
 * server name and `:authority` stay those of the name, so the certificate is still checked
 * against the name the operator configured. Its id is the address's origin.
 */
export function endpointAtAddress(named: Endpoint, address: string): Endpoint {
  return { ...named, id: originOf(address, named.port), connectHost: address };
}

/** Returns the endpoint for a discovered IP address; upstream.tls.serverName applies as for a configured one. */
export function endpointForIp(ip: string, port: number, serverNameOverride: string): Endpoint {
  return parseEndpoint(originOf(ip, port), serverNameOverride);
}

/** True when both lists hold the same endpoint ids, in any order. */
export function sameEndpointIds(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  if (a.length !== b.length) return false;
  const ids = new Set(a.map((endpoint) => endpoint.id));
  return b.every((endpoint) => ids.has(endpoint.id));
}
