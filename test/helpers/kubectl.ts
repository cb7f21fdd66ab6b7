/**
 * Runs the real kubectl against servers a test started on loopback. Every run gets a minimal
 * environment (PATH, HOME, KUBECONFIG) so that kubectl reads only the test's kubeconfig, writes
 * its discovery cache under the test's temporary HOME and never uses a proxy from the caller.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The kubectl binary the tests use: Debian's, or the version dispatcher installed at that path. */
export const KUBECTL = '/usr/bin/kubectl';

export interface KubeconfigOptions {
  /** URL (https://host:port) of the server kubectl connects to, a loopback address in these tests. */
  server: string;
  caPath: string;
  clientCertPath: string;
  clientKeyPath: string;
  namespace?: string;
}

/** A kubeconfig file plus the HOME kubectl may write into. */
export interface KubectlTarget {
  kubeconfig: string;
  home: string;
}

export interface KubectlResult {
  /** Exit code, or null when a signal ended kubectl. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Writes a kubeconfig with one cluster, one client-certificate user and one context into `dir`. */
export function writeKubeconfig(dir: string, name: string, options: KubeconfigOptions): KubectlTarget {
  const home = path.join(dir, `${name}-home`);
  fs.mkdirSync(home, { recursive: true });

  // JSON is valid YAML, and it needs no quoting rules for paths.
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: { server: options.server, 'certificate-authority': options.caPath } }],
    users: [{ name, user: { 'client-certificate': options.clientCertPath, 'client-key': options.clientKeyPath } }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: options.namespace ?? 'default' } }],
    'current-context': name,
  };
  const kubeconfig = path.join(dir, `${name}.kubeconfig`);
  fs.writeFileSync(kubeconfig, JSON.stringify(config, null, 2), { mode: 0o600 });
  return { kubeconfig, home };
}

function kubectlEnv(target: KubectlTarget): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: target.home, KUBECONFIG: target.kubeconfig };
}

/** Runs kubectl to completion, and kills its process group with SIGKILL after `timeoutMs`. */
export function runKubectl(target: KubectlTarget, args: string[], timeoutMs = 30_000): Promise<KubectlResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(KUBECTL, args, { env: kubectlEnv(target), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));

    const timer = setTimeout(() => killGroup(child), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${KUBECTL} ${args.join(' ')}: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, durationMs: Date.now() - started });
    });
  });
}

/** Formats a result for an assertion message, so that a failure shows what kubectl printed. */
export function describeResult(args: string[], result: KubectlResult): string {
  return `kubectl ${args.join(' ')} exited with code ${result.code} signal ${result.signal} after ${result.durationMs}ms\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/**
 * A long-running kubectl, such as `get --watch`, whose output lines are collected as they come.
 * stop() kills its whole process group, so no kubectl outlives the test.
 */
export class KubectlProcess {
  readonly lines: string[] = [];
  /** Exit result, resolved when kubectl exits. */
  readonly exited: Promise<KubectlResult>;
  private readonly child: ChildProcess;
  private readonly startedAt = Date.now();
  private stdout = '';
  private stderr = '';
  private partialLine = '';
  private exitResult: KubectlResult | undefined;

  constructor(
    target: KubectlTarget,
    readonly args: string[],
  ) {
    this.child = spawn(KUBECTL, args, { env: kubectlEnv(target), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => this.collect(chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));

    this.exited = new Promise((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        this.exitResult ??= { code, signal, stdout: this.stdout, stderr: this.stderr, durationMs: Date.now() - this.startedAt };
        resolve(this.exitResult);
      };
      this.child.once('error', (err) => {
        this.stderr += `cannot run ${KUBECTL}: ${err.message}\n`;
        finish(null, null);
      });
      this.child.once('close', finish);
    });
  }

  /** The exit result once kubectl has exited; undefined while it runs. */
  get result(): KubectlResult | undefined {
    return this.exitResult;
  }

  /** Waits until an output line satisfies `predicate`, and rejects with the output so far on timeout or exit. */
  async waitForLine(predicate: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.lines.find(predicate);
      if (line !== undefined) return line;
      if (this.exitResult !== undefined) {
        throw new Error(`kubectl ${this.args.join(' ')} exited before ${what}\n${this.describe()}`);
      }
      if (Date.now() >= deadline) {
        throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}\n${this.describe()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Kills the process group and waits for the exit. */
  async stop(): Promise<KubectlResult> {
    if (this.exitResult === undefined) killGroup(this.child);
    return this.exited;
  }

  describe(): string {
    const exit = this.exitResult === undefined ? 'still running' : `exited with code ${this.exitResult.code} signal ${this.exitResult.signal}`;
    return `kubectl ${this.args.join(' ')} ${exit}\nstdout: ${this.stdout}\nstderr: ${this.stderr}`;
  }

  private collect(chunk: string): void {
    this.stdout += chunk;
    const parts = (this.partialLine + chunk).split('\n');
    this.partialLine = parts.pop() ?? '';
    this.lines.push(...parts.filter((line) => line !== ''));
  }
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    // detached: true made kubectl a process-group leader, so a negative pid reaches any child it forked.
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}
