/**
 * The balancer-failover case at kernel level: the API server runs in a network namespace of the
 * test's own, and iptables inside that namespace drops every packet of stallguard's established
 * connection (no FIN, no RST), while new connections pass. Root only. Under CI=true a machine
 * that cannot run it fails the test, elsewhere the test is skipped with the reason.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { startStallguard, type RunningStallguard } from '../src/server.js';
import { connectH2, h2Request } from '../src/testbed/client.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import { buildConfig } from '../src/testbed/stack.js';
import { counterValue } from './helpers/metrics.js';
import { isPermissionError, missingNetnsPrerequisite, NetnsLab } from './helpers/netns.js';
import { sleep } from './helpers/wait.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The server runs in a child process inside the namespace, which cannot load TypeScript, so it
// uses the build that `npm test` makes first.
const BUILT_FAKE_APISERVER = path.join(REPO_ROOT, 'dist', 'testbed', 'fake-apiserver.js');
// Kubelet's own request timeout: the request after the drop must succeed before it.
const CLIENT_TIMEOUT_MS = 10_000;

describe('stall detection across a network namespace', () => {
  let environmentProblem: string | undefined;
  let setupError: unknown;
  let dir: string | undefined;
  let lab: NetnsLab | undefined;
  let server: NamespacedApiServer | undefined;
  let stallguard: RunningStallguard | undefined;
  let client: http2.ClientHttp2Session | undefined;
  let pki: TestPki;

  beforeAll(async () => {
    environmentProblem = await missingNetnsPrerequisite();
    if (environmentProblem !== undefined) return;

    try {
      if (!fs.existsSync(BUILT_FAKE_APISERVER)) throw new Error(`${BUILT_FAKE_APISERVER} is missing; run "npm run build" first`);
      lab = await NetnsLab.create();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-netns-'));
      pki = await createTestPki(path.join(dir, 'pki'), { extraServerIps: [lab.nsAddress] });
      server = await NamespacedApiServer.start(lab, pki);
    } catch (err) {
      if (isPermissionError(err)) environmentProblem = `the kernel refused to set up a network namespace: ${(err as Error).message}`;
      else setupError = err;
    }
  });

  afterAll(async () => {
    // Each step runs even when an earlier one failed, so the namespace never outlives the test.
    const failures: unknown[] = [];
    const attempt = async (step: () => Promise<void> | void) => {
      try {
        await step();
      } catch (err) {
        failures.push(err);
      }
    };
    await attempt(() => client?.close());
    await attempt(() => stallguard?.close());
    await attempt(() => server?.stop());
    await attempt(() => lab?.cleanup());
    await attempt(() => {
      if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
    });
    if (failures.length > 0) throw new AggregateError(failures, 'network namespace cleanup failed');
  });

  function requireEnvironment(ctx: TestContext): void {
    if (environmentProblem !== undefined) {
      if (process.env.CI === 'true') throw new Error(`CI must run the network namespace test, but ${environmentProblem}`);
      console.warn(`skipping the network namespace test: ${environmentProblem}`);
      ctx.skip(environmentProblem);
    }
    if (setupError !== undefined) throw setupError;
  }

  it('evicts a session whose flow the kernel drops', async (ctx) => {
    requireEnvironment(ctx);
    const endpoint = `https://${lab!.nsAddress}:${server!.port}`;
    const config = buildConfig(dir!, pki, [endpoint], {});
    stallguard = await startStallguard(config, pino({ level: 'silent' }));
    client = await connectH2(`https://${stallguard.addresses.listen}`, { ca: pki.ca.certPem, cert: pki.node.certPem, key: pki.node.keyPem });

    const first = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: CLIENT_TIMEOUT_MS });
    expect(first.status).toBe(200);
    const oldPeerPorts = await lab!.establishedPeerPorts(server!.port);
    expect(oldPeerPorts.length, 'stallguard holds a session to the namespaced server').toBeGreaterThan(0);
    // Older than writeFreshness, so stallguard checks the session with a PING before it reuses it.
    await sleep(400);

    await lab!.dropFlows(server!.port, oldPeerPorts);
    const started = Date.now();
    const response = await h2Request(client, { path: '/api/v1/nodes/n1', timeoutMs: CLIENT_TIMEOUT_MS });
    const elapsed = Date.now() - started;

    const bound = config.health.pingIntervalMs + config.health.pingTimeoutMs + config.upstream.connectTimeoutMs + 1000;
    console.log(`request after the kernel dropped the flow: status ${response.status} after ${elapsed} ms (bound ${bound} ms)`);
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body.toString()).metadata.name).toBe('n1');
    expect(elapsed).toBeLessThan(bound);
    expect(elapsed).toBeLessThan(CLIENT_TIMEOUT_MS);
    expect(await counterValue(stallguard.metrics, 'sessionsEvicted', { reason: 'ping_timeout' })).toBeGreaterThanOrEqual(1);

    // The stall was the kernel's doing: the rules dropped packets, and the reply came on a new flow.
    expect(await lab!.droppedPackets('INPUT')).toBeGreaterThan(0);
    const newPeerPorts = await lab!.establishedPeerPorts(server!.port);
    expect(newPeerPorts.some((port) => !oldPeerPorts.includes(port))).toBe(true);
  });
});

/**
 * The fake API server as a child process inside the namespace, listening on the namespace's
 * address only. It exits when its stdin closes, so it also ends when the test process dies.
 */
class NamespacedApiServer {
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.once('exit', () => (this.exited = true));
  }

  static async start(lab: NetnsLab, pki: TestPki): Promise<NamespacedApiServer> {
    const script = `
      import fs from 'node:fs';
      import { FakeApiServer } from ${JSON.stringify(pathToFileURL(BUILT_FAKE_APISERVER).href)};
      const [certPath, keyPath, caPath, host] = process.argv.slice(1);
      const server = new FakeApiServer({
        cert: fs.readFileSync(certPath, 'utf8'),
        key: fs.readFileSync(keyPath, 'utf8'),
        clientCa: fs.readFileSync(caPath, 'utf8'),
      });
      const port = await server.listen(0, host);
      process.stdout.write(JSON.stringify({ port }) + '\\n');
      process.stdin.on('end', () => server.close().then(() => process.exit(0)));
      process.stdin.resume();
    `;
    const child = lab.spawn(process.execPath, ['--input-type=module', '--eval', script, pki.server.certPath, pki.server.keyPath, pki.ca.certPath, lab.nsAddress]);
    child.stdin!.on('error', () => undefined);

    let output = '';
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the namespaced API server did not start within 15 s; output: ${output}`)), 15_000);
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
        const match = /\{"port":(\d+)\}/.exec(output);
        if (match !== null) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the namespaced API server exited with code ${code} signal ${signal} before listening; output: ${output}`));
      });
    }).catch(async (err: unknown) => {
      killGroup(child);
      throw err;
    });
    return new NamespacedApiServer(child, port);
  }

  /** Closes stdin so that the server shuts down, and kills it after 3 s if it has not. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end();
    const timer = setTimeout(() => killGroup(this.child), 3000);
    await exited;
    clearTimeout(timer);
  }
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}
