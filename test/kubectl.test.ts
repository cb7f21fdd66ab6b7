import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeApiServer } from '../src/testbed/fake-apiserver.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import { startStack, type Stack } from '../src/testbed/stack.js';
import { describeResult, KubectlProcess, runKubectl, writeKubeconfig, type KubectlTarget } from './helpers/kubectl.js';
import { waitFor } from './helpers/wait.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// `npm test` builds dist/ first; a bare `npx vitest run` uses whatever was built last.
const CLI_MAIN = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');

describe('kubectl through stallguard', () => {
  let stack: Stack;
  let dir: string;
  let target: KubectlTarget;

  beforeAll(async () => {
    stack = await startStack();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-kubectl-'));
    target = writeKubeconfig(dir, 'stallguard', {
      server: stack.url,
      caPath: stack.pki.ca.certPath,
      clientCertPath: stack.pki.node.certPath,
      clientKeyPath: stack.pki.node.keyPath,
    });
  });

  afterAll(async () => {
    await stack?.close();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('get nodes lists the seeded node', async () => {
    const args = ['get', 'nodes'];

    const result = await runKubectl(target, args);

    expect(result.code, describeResult(args, result)).toBe(0);
    expect(result.stdout).toMatch(/^NAME\s+STATUS/m);
    expect(result.stdout).toMatch(/^n1\s+Ready\b/m);
    expect(stack.servers[0]!.requests.some((r) => r.path.startsWith('/api/v1/nodes'))).toBe(true);
  });

  it('get --raw /version returns the server version', async () => {
    const args = ['get', '--raw', '/version'];

    const result = await runKubectl(target, args);

    expect(result.code, describeResult(args, result)).toBe(0);
    const version = JSON.parse(result.stdout) as { major: string; minor: string; gitVersion: string };
    expect(version.major).toBe('1');
    expect(version.gitVersion).toMatch(/^v1\./);
  });

  it('create -f creates a ConfigMap exactly once', async () => {
    const server = stack.servers[0]!;
    const file = path.join(dir, 'configmap.yaml');
    fs.writeFileSync(file, ['apiVersion: v1', 'kind: ConfigMap', 'metadata:', '  name: kubectl-created', 'data:', '  greeting: hello', ''].join('\n'));
    const args = ['create', '-f', file];

    const result = await runKubectl(target, args);

    expect(result.code, describeResult(args, result)).toBe(0);
    expect(result.stdout.trim()).toBe('configmap/kubectl-created created');
    expect(server.writeCounts('configmaps', 'default', 'kubectl-created').creates).toBe(1);
    const posts = server.requests.filter((r) => r.method === 'POST' && r.path.startsWith('/api/v1/namespaces/default/configmaps'));
    expect(posts.length).toBe(1);
    expect(server.getObject('configmaps', 'default', 'kubectl-created')?.data).toEqual({ greeting: 'hello' });
  });

  it('get pods --watch receives an ADDED event', async () => {
    const server = stack.servers[0]!;
    const watch = new KubectlProcess(target, ['get', 'pods', '--watch', '--output=name']);

    try {
      await waitFor(() => server.requests.some((r) => isPodWatch(r.path)), 15_000, 'kubectl to open its pod watch');
      server.putObject('pods', podObject('watched-1'));

      const line = await watch.waitForLine((l) => l === 'pod/watched-1', 5000, 'the watch event for pod watched-1');
      expect(line).toBe('pod/watched-1');
      expect(watch.result, 'kubectl get --watch must still be running').toBeUndefined();
    } finally {
      await watch.stop();
    }
  });
});

describe('kubectl through the stallguard CLI', () => {
  let dir: string;
  let pki: TestPki;
  let server: FakeApiServer;
  let cli: CliProcess | undefined;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-kubectl-cli-'));
    pki = await createTestPki(path.join(dir, 'pki'));
    server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
    await server.listen(0, '127.0.0.1');
  });

  afterAll(async () => {
    await cli?.stop();
    await server?.close();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('run --config serves kubectl and exits 0 on SIGTERM', async () => {
    expect(fs.existsSync(CLI_MAIN), `${CLI_MAIN} is missing; run "npm run build" first`).toBe(true);
    const port = await findFreePort();
    const configPath = path.join(dir, 'stallguard.yaml');
    fs.writeFileSync(configPath, cliConfigYaml(pki, port, server.url, path.join(dir, 'state')));

    cli = new CliProcess(['run', '--config', configPath]);
    await cli.waitUntilListening(port, 15_000);

    const target = writeKubeconfig(dir, 'cli', {
      server: `https://127.0.0.1:${port}`,
      caPath: pki.ca.certPath,
      clientCertPath: pki.node.certPath,
      clientKeyPath: pki.node.keyPath,
    });
    const args = ['get', 'nodes'];
    const result = await runKubectl(target, args);

    expect(result.code, describeResult(args, result)).toBe(0);
    expect(result.stdout).toMatch(/^n1\s+Ready\b/m);
    expect(server.requests.some((r) => r.path.startsWith('/api/v1/nodes') && r.status === 200)).toBe(true);

    const exit = await cli.terminate(15_000);
    expect(exit.code, cli.describe()).toBe(0);
  });
});

function isPodWatch(requestPath: string): boolean {
  const url = new URL(requestPath, 'https://fake.invalid');
  return url.pathname === '/api/v1/namespaces/default/pods' && url.searchParams.get('watch') === 'true';
}

function podObject(name: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default' },
    spec: { containers: [{ name: 'main', image: 'registry.invalid/app:1' }] },
  };
}

/** Builds a stallguard configuration file for the CLI, with every address on loopback and TLS from the test PKI. */
function cliConfigYaml(pki: TestPki, port: number, upstream: string, stateDir: string): string {
  // JSON strings are valid YAML double-quoted scalars, so paths need no further quoting.
  const q = (value: string) => JSON.stringify(value);
  return [
    'listen:',
    `  address: ${q(`127.0.0.1:${port}`)}`,
    '  tls:',
    `    cert: ${q(pki.server.certPath)}`,
    `    key: ${q(pki.server.keyPath)}`,
    `    clientCA: ${q(pki.ca.certPath)}`,
    'upstream:',
    `  endpoints: [${q(upstream)}]`,
    '  tls:',
    `    ca: ${q(pki.ca.certPath)}`,
    `    cert: ${q(pki.node.certPath)}`,
    `    key: ${q(pki.node.keyPath)}`,
    'metrics:',
    `  address: ${q('127.0.0.1:0')}`,
    'log:',
    '  level: info',
    `stateDir: ${q(stateDir)}`,
    '',
  ].join('\n');
}

/**
 * Returns a port that was free a moment ago. The CLI needs a fixed listen port because the test
 * must know it before the CLI starts. Another process could take the port in between, and the
 * CLI then reports a failed start.
 */
function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

/** `node dist/cli/main.js ...` as a child process, with its output kept for failure messages. */
class CliProcess {
  private readonly child: ChildProcess;
  private output = '';
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(private readonly args: string[]) {
    this.child = spawn(process.execPath, [CLI_MAIN, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.output += chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.output += chunk));
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  /** Polls the listen port with TCP connects, and fails early when the CLI exits first. */
  async waitUntilListening(port: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.exit !== undefined) throw new Error(`stallguard exited before listening\n${this.describe()}`);
      if (await canConnect(port)) return;
      if (Date.now() >= deadline) throw new Error(`stallguard did not listen on 127.0.0.1:${port} within ${timeoutMs}ms\n${this.describe()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Sends SIGTERM and waits for the exit, sending SIGKILL after `timeoutMs`. */
  async terminate(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.exit !== undefined) return this.exit;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  async stop(): Promise<void> {
    if (this.exit !== undefined) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  describe(): string {
    const state = this.exit === undefined ? 'running' : `exited with code ${this.exit.code} signal ${this.exit.signal}`;
    return `stallguard ${this.args.join(' ')} ${state}; output:\n${this.output}`;
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
