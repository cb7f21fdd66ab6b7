import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../src/testbed/stack.js';
import { describeResult, KubectlProcess, runKubectl, writeKubeconfig, type KubectlTarget } from './helpers/kubectl.js';
import { counterValue } from './helpers/metrics.js';
import { sleep, waitFor } from './helpers/wait.js';

// How long a watch straight at the relay is observed after the failover. client-go's own HTTP/2
// health check (defaults in k8s.io/apimachinery pkg/util/net/http.go: a PING after 30 s without
// reads, then 15 s for the ACK) cannot fire within it, so kubectl alone stays stuck. stallguard's
// pingInterval + pingTimeout (2 s with the defaults) fits well inside.
const STRANDED_WINDOW_MS = 8000;

let stack: Stack | undefined;
let dir: string | undefined;
const watches: KubectlProcess[] = [];

afterEach(async () => {
  await Promise.all(watches.splice(0).map((watch) => watch.stop()));
  await stack?.close();
  stack = undefined;
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** Starts a balancer stack and writes kubeconfigs for stallguard's listener and for the relay itself. */
async function startBalancer(): Promise<{ stack: Stack; viaStallguard: KubectlTarget; direct: KubectlTarget }> {
  stack = await startStack({ topology: 'balancer' });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-kubectl-failover-'));
  const credentials = {
    caPath: stack.pki.ca.certPath,
    clientCertPath: stack.pki.node.certPath,
    clientKeyPath: stack.pki.node.keyPath,
  };
  const viaStallguard = writeKubeconfig(dir, 'stallguard', { server: stack.url, ...credentials });
  const direct = writeKubeconfig(dir, 'relay', { server: `https://127.0.0.1:${stack.relays[0]!.port}`, ...credentials });
  return { stack, viaStallguard, direct };
}

function startWatch(target: KubectlTarget): KubectlProcess {
  const watch = new KubectlProcess(target, ['get', 'pods', '--watch', '--output=name']);
  watches.push(watch);
  return watch;
}

function putPod(stack: Stack, name: string): void {
  stack.servers[0]!.putObject('pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default' },
    spec: { containers: [{ name: 'main', image: 'registry.invalid/app:1' }] },
  });
}

function podWatchCount(stack: Stack): number {
  return stack.servers[0]!.requests.filter((r) => {
    const url = new URL(r.path, 'https://fake.invalid');
    return url.pathname === '/api/v1/namespaces/default/pods' && url.searchParams.get('watch') === 'true';
  }).length;
}

describe('kubectl across a balancer failover', () => {
  it('get --raw started right after the switch succeeds through stallguard', async () => {
    const { stack, viaStallguard } = await startBalancer();
    const args = ['get', '--raw', '/api/v1/nodes/n1', '--request-timeout=10s'];
    const warm = await runKubectl(viaStallguard, args);
    expect(warm.code, describeResult(args, warm)).toBe(0);
    // Older than writeFreshness, so stallguard checks the session with a PING before it reuses it.
    await sleep(400);

    stack.relays[0]!.failover();
    const result = await runKubectl(viaStallguard, args, 20_000);

    console.log(`kubectl get --raw through stallguard, started right after the failover: exit ${result.code} after ${result.durationMs} ms`);
    expect(result.code, describeResult(args, result)).toBe(0);
    expect(JSON.parse(result.stdout).metadata.name).toBe('n1');
    expect(result.durationMs).toBeLessThan(10_000);
    expect(await counterValue(stack.stallguard.metrics, 'sessionsEvicted', { reason: 'ping_timeout' })).toBeGreaterThanOrEqual(1);
  });

  it('a watch straight at the relay hangs while the stallguard watch ends', async () => {
    const { stack, viaStallguard, direct } = await startBalancer();
    const guarded = startWatch(viaStallguard);
    const stranded = startWatch(direct);
    await waitFor(() => podWatchCount(stack) >= 2, 15_000, 'both kubectl watches to reach the API server');
    putPod(stack, 'before-failover');
    await guarded.waitForLine((line) => line === 'pod/before-failover', 5000, 'the first event through stallguard');
    await stranded.waitForLine((line) => line === 'pod/before-failover', 5000, 'the first event straight from the relay');

    stack.relays[0]!.failover();
    const failoverAt = Date.now();
    putPod(stack, 'after-failover');

    // stallguard evicts the stalled session and ends the watch with a clean end of stream, which
    // kubectl get --watch treats as done.
    const guardedExit = await Promise.race([guarded.exited, sleep(STRANDED_WINDOW_MS).then(() => undefined)]);
    const guardedEndMs = Date.now() - failoverAt;
    expect(guardedExit, `the watch through stallguard must end within ${STRANDED_WINDOW_MS} ms\n${guarded.describe()}`).toBeDefined();
    expect(guardedExit!.code, guarded.describe()).toBe(0);

    // The re-run lists the pod the stranded watch missed, then receives a new event.
    const rewatch = startWatch(viaStallguard);
    await rewatch.waitForLine((line) => line === 'pod/after-failover', 15_000, 'the missed pod in the re-run list');
    await waitFor(() => podWatchCount(stack) >= 3, 15_000, 'the re-run to open its watch');
    putPod(stack, 'after-rewatch');
    await rewatch.waitForLine((line) => line === 'pod/after-rewatch', 5000, 'a new event on the re-run');

    await sleep(Math.max(0, failoverAt + STRANDED_WINDOW_MS - Date.now()));
    const strandedSilentMs = Date.now() - failoverAt;
    console.log(
      `kubectl watch across a failover: through stallguard ended after ${guardedEndMs} ms; ` +
        `straight at the relay still running and silent after ${strandedSilentMs} ms`,
    );
    expect(stranded.result, `the watch straight at the relay must not exit\n${stranded.describe()}`).toBeUndefined();
    expect(stranded.lines).toEqual(['pod/before-failover']);
  });
});
