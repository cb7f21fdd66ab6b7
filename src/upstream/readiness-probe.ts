import http2 from 'node:http2';
import type { StallguardError } from '../errors.js';
import type { UpstreamSession } from './session.js';

export type ProbeResult = { ready: true } | { ready: false; detail: string };

/**
 * Sends one readiness probe (GET readyPath) on an existing session of the endpoint, so probing
 * costs no connection and keeps warm sessions in use: kube-apiserver closes sessions that carry no
 * stream for 90 s, PINGs notwithstanding. Resolves with the result; never rejects.
 */
export function probeReadiness(session: UpstreamSession, readyPath: string, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    let stream: http2.ClientHttp2Stream | undefined;

    const finish = (result: ProbeResult, cancel = true) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (cancel && stream !== undefined && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      resolve(result);
    };

    const tenant = {
      onSessionLost: (_reason: string, err: StallguardError) => finish({ ready: false, detail: `session lost: ${err.message}` }),
    };

    const timer = setTimeout(() => finish({ ready: false, detail: `no answer within ${timeoutMs}ms` }), timeoutMs);
    timer.unref();

    try {
      stream = session.openStream(
        tenant,
        {
          ':method': 'GET',
          ':path': readyPath,
          ':scheme': 'https',
          ':authority': session.endpoint.authority,
          accept: 'text/plain',
        },
        { endStream: true, waitForTrailers: false },
      );
    } catch (err) {
      finish({ ready: false, detail: `could not open a stream: ${(err as Error).message}` });
      return;
    }

    stream.on('error', () => finish({ ready: false, detail: 'stream error' }));
    stream.on('response', (headers) => {
      session.noteRead();
      const status = Number(headers[':status']);
      // The short body is read to its end, so a healthy probe ends its stream without a reset.
      stream!.resume();
      finish(status === 200 ? { ready: true } : { ready: false, detail: `${readyPath} answered ${status}` }, false);
    });
  });
}
