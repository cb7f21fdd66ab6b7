import net from 'node:net';

/** One ready API-server address read from the `kubernetes` Service. */
export interface ServiceAddress {
  ip: string;
  port: number;
}

/** The addresses one object contributes, and why parts of it were skipped. */
export interface ReadAddresses {
  addresses: ServiceAddress[];
  problems: string[];
}

const PORT_NAME = 'https';

/**
 * Reads the ready addresses of a discovery.k8s.io/v1 EndpointSlice. The port is the one named
 * `https` (the name kube-apiserver gives it), or the only port when there is one. An endpoint
 * whose `conditions.ready` is false is skipped; an unset one counts as ready, as the API
 * documents for consumers of EndpointSlices. FQDN slices are skipped.
 */
export function readEndpointSlice(object: unknown): ReadAddresses {
  const slice = asRecord(object);
  const problems: string[] = [];
  const name = describeName(slice);

  const addressType = slice.addressType;
  if (addressType !== 'IPv4' && addressType !== 'IPv6') {
    return { addresses: [], problems: [`EndpointSlice ${name} has addressType ${JSON.stringify(addressType)}; only IPv4 and IPv6 are used`] };
  }

  const endpoints = asArray(slice.endpoints);
  const port = choosePort(asArray(slice.ports));
  if (port === undefined) {
    if (endpoints.length > 0) problems.push(`EndpointSlice ${name} has no port named "${PORT_NAME}" and not exactly one port`);
    return { addresses: [], problems };
  }

  const addresses: ServiceAddress[] = [];
  for (const entry of endpoints) {
    const endpoint = asRecord(entry);
    if (asRecord(endpoint.conditions).ready === false) continue;
    for (const ip of asArray(endpoint.addresses)) {
      if (typeof ip === 'string' && net.isIP(ip) !== 0) addresses.push({ ip, port });
      else problems.push(`EndpointSlice ${name} lists an invalid address ${JSON.stringify(ip)}`);
    }
  }
  return { addresses, problems };
}

/** Reads the ready addresses (`subsets[].addresses`, not `notReadyAddresses`) of a v1 Endpoints object. */
export function readEndpoints(object: unknown): ReadAddresses {
  const endpoints = asRecord(object);
  const problems: string[] = [];
  const name = describeName(endpoints);
  const addresses: ServiceAddress[] = [];

  for (const entry of asArray(endpoints.subsets)) {
    const subset = asRecord(entry);
    const ready = asArray(subset.addresses);
    const port = choosePort(asArray(subset.ports));
    if (port === undefined) {
      if (ready.length > 0) problems.push(`Endpoints ${name} has a subset with no port named "${PORT_NAME}" and not exactly one port`);
      continue;
    }
    for (const address of ready) {
      const ip = asRecord(address).ip;
      if (typeof ip === 'string' && net.isIP(ip) !== 0) addresses.push({ ip, port });
      else problems.push(`Endpoints ${name} lists an invalid address ${JSON.stringify(ip)}`);
    }
  }
  return { addresses, problems };
}

function choosePort(ports: unknown[]): number | undefined {
  const valid = ports.map(asRecord).filter((port) => Number.isInteger(port.port) && (port.port as number) > 0 && (port.port as number) < 65536);
  const named = valid.find((port) => port.name === PORT_NAME);
  if (named !== undefined) return named.port as number;
  return valid.length === 1 ? (valid[0]!.port as number) : undefined;
}

function describeName(object: Record<string, unknown>): string {
  const metadata = asRecord(object.metadata);
  return `${String(metadata.namespace ?? '')}/${String(metadata.name ?? '')}`;
}

function asRecord(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
