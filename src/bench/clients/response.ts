import { h2Request } from '../../testbed/client.js';
import type http2 from 'node:http2';
import type { ClientRequest, ClientResponse } from './types.js';

/**
 * Sends one request with the testbed's h2Request and rejects with code ERR_NO_RESPONSE when the
 * stream ended without response headers. h2Request resolves with status 0 in that case, which
 * happens when the session is destroyed while the request waits.
 */
export async function sendOnSession(session: http2.ClientHttp2Session, request: ClientRequest): Promise<ClientResponse> {
  const response = await h2Request(session, request);
  if (response.status === 0) {
    throw Object.assign(new Error(`the stream of ${request.method ?? 'GET'} ${request.path} ended without a response`), { code: 'ERR_NO_RESPONSE' });
  }
  return response;
}
