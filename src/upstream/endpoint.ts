import net from 'node:net';

/**
 * One API-server address that stallguard may open sessions to: a replica, or a load balancer.
 * `id` is the normalised origin of the address dialled and is what logs and metrics call the
 * endpoint; for an address resolved from a host name it is the IP's origin, so each replica
 * behind one name is an endpoint of its own.
 */
export interface Endpoint {
  id: string;
  host: string;
  /** IP address to connect to instead of `host`; set when `host` is a name resolved by discovery. */
  connectHost?: string;
  port: number;
  /**
   * Name sent as SNI and checked against the server certificate. Undefined for an IP endpoint
   * without upstream.tls.serverName: no SNI is sent and the certificate's IP SANs must match.
   */
  serverName: string | undefined;
  /** Value for the `:authority` of upstream requests, so a client's Host never reaches the server. */
  authority: string;
}

export function parseEndpoint(raw: string, serverNameOverride: string): Endpoint {
  const url = new URL(raw);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = url.port === '' ? 443 : Number(url.port);
  const isIp = net.isIP(host) !== 0;

  let serverName: string | undefined;
  if (serverNameOverride !== '') serverName = serverNameOverride;
  else if (!isIp) serverName = host;

  const hostForAuthority = net.isIPv6(host) ? `[${host}]` : host;
  return {
    id: `https://${hostForAuthority}:${port}`,
    host,
    port,
    serverName,
    authority: serverName !== undefined ? `${serverName}:${port}` : `${hostForAuthority}:${port}`,
  };
}
