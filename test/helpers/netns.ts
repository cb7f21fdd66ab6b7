/**
 * A network namespace of the test's own, joined to the root namespace by a veth pair with a
 * private /30 (10.251.0.0/16). Traffic to its two addresses never leaves this machine: the veth
 * is a pipe between the two namespaces and nothing routes beyond it. Needs root, iproute2 and
 * iptables.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const COMMAND_TIMEOUT_MS = 10_000;

/** Returns why this machine cannot run a namespace test, or undefined when it can. */
export async function missingNetnsPrerequisite(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces need Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return 'creating a network namespace needs root';

  for (const [command, args, provider] of [
    ['ip', ['-V'], 'iproute2'],
    ['ss', ['-V'], 'iproute2'],
    ['iptables', ['-V'], 'iptables'],
  ] as const) {
    try {
      await run(command, [...args], { timeout: COMMAND_TIMEOUT_MS });
    } catch (err) {
      return `${command} is not usable (install the Debian package ${provider}): ${(err as Error).message}`;
    }
  }
  return undefined;
}

/** Returns true when a command failed because the kernel rejected the operation, as in an unprivileged container. */
export function isPermissionError(err: unknown): boolean {
  return err instanceof Error && /Operation not permitted|Permission denied/i.test(err.message);
}

export class NetnsLab {
  private constructor(
    /** Namespace name, unique per test process. */
    readonly name: string,
    /** veth end that stays in the root namespace, with hostAddress. */
    readonly hostVeth: string,
    /** veth end inside the namespace, with nsAddress. */
    readonly nsVeth: string,
    readonly hostAddress: string,
    readonly nsAddress: string,
  ) {}

  /**
   * Creates the namespace and the veth pair, named after the process id. A /30 that any local
   * interface or route already uses is skipped. Removes what it created when a step fails.
   */
  static async create(): Promise<NetnsLab> {
    const pid = process.pid;
    const [hostAddress, nsAddress] = await pickUnusedSubnet(pid);
    const lab = new NetnsLab(`sg-test-${pid}`, `sgt${pid}a`, `sgt${pid}b`, hostAddress, nsAddress);

    // Leftovers from a crashed run of a process with the same id would make `ip` fail with "exists".
    await lab.cleanup();
    try {
      await ip('netns', 'add', lab.name);
      await ip('link', 'add', lab.hostVeth, 'type', 'veth', 'peer', 'name', lab.nsVeth);
      await ip('link', 'set', lab.nsVeth, 'netns', lab.name);
      await ip('addr', 'add', `${hostAddress}/30`, 'dev', lab.hostVeth);
      await ip('link', 'set', lab.hostVeth, 'up');
      await lab.exec('ip', ['addr', 'add', `${nsAddress}/30`, 'dev', lab.nsVeth]);
      await lab.exec('ip', ['link', 'set', lab.nsVeth, 'up']);
      await lab.exec('ip', ['link', 'set', 'lo', 'up']);
    } catch (err) {
      // The caller never gets a lab that failed halfway, so it could not clean up after it.
      await lab.cleanup().catch(() => undefined);
      throw err;
    }
    return lab;
  }

  /** Runs a command inside the namespace and returns its stdout. */
  async exec(command: string, args: string[]): Promise<string> {
    const { stdout } = await run('ip', ['netns', 'exec', this.name, command, ...args], { timeout: COMMAND_TIMEOUT_MS });
    return stdout;
  }

  /** Starts a long-running process inside the namespace, as the leader of its own process group. */
  spawn(command: string, args: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, command, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  }

  /** Returns the peer ports of the established TCP connections to `localPort` inside the namespace. */
  async establishedPeerPorts(localPort: number): Promise<number[]> {
    const stdout = await this.exec('ss', ['-Htn', 'state', 'established', `( sport = :${localPort} )`]);
    const ports: number[] = [];
    for (const line of stdout.split('\n')) {
      // With a state filter ss prints: Recv-Q Send-Q Local-Address:Port Peer-Address:Port
      const peer = line.trim().split(/\s+/)[3];
      const match = peer === undefined ? null : /:(\d+)$/.exec(peer);
      if (match !== null) ports.push(Number(match[1]));
    }
    return ports;
  }

  /**
   * Drops, inside the namespace, every packet of the TCP flows between the server on
   * `serverPort` and the given peer ports, in both directions. Other flows, new connections
   * included, pass, because the rules match the peer's source port.
   */
  async dropFlows(serverPort: number, peerPorts: number[]): Promise<void> {
    for (const peerPort of peerPorts) {
      await this.exec('iptables', ['-w', '-I', 'INPUT', '-p', 'tcp', '-s', this.hostAddress, '--sport', String(peerPort), '-d', this.nsAddress, '--dport', String(serverPort), '-j', 'DROP']);
      await this.exec('iptables', ['-w', '-I', 'OUTPUT', '-p', 'tcp', '-s', this.nsAddress, '--sport', String(serverPort), '-d', this.hostAddress, '--dport', String(peerPort), '-j', 'DROP']);
    }
  }

  /** Returns how many packets the DROP rules in the namespace's `chain` have dropped so far. */
  async droppedPackets(chain: 'INPUT' | 'OUTPUT'): Promise<number> {
    const stdout = await this.exec('iptables', ['-w', '-L', chain, '-n', '-v', '-x']);
    let total = 0;
    for (const line of stdout.split('\n')) {
      const fields = line.trim().split(/\s+/);
      // Rule lines start with the packet and byte counters, then the target.
      if (fields[2] === 'DROP' && /^\d+$/.test(fields[0] ?? '')) total += Number(fields[0]);
    }
    return total;
  }

  /**
   * Deletes the veth pair and the namespace, and with it the namespace's iptables rules. Safe to
   * call more than once and after a partial create. Stop the processes started inside first,
   * because the namespace lives on without its name while one of them runs.
   */
  async cleanup(): Promise<void> {
    // Deleting one veth end deletes its peer at once; deleting the namespace alone frees the pair
    // only later, asynchronously.
    await ignoreMissing(ip('link', 'del', this.hostVeth));
    await ignoreMissing(ip('netns', 'del', this.name));
  }
}

async function ip(...args: string[]): Promise<string> {
  const { stdout } = await run('ip', args, { timeout: COMMAND_TIMEOUT_MS });
  return stdout;
}

async function ignoreMissing(pending: Promise<unknown>): Promise<void> {
  try {
    await pending;
  } catch (err) {
    if (!/Cannot find device|No such file or directory|does not exist/i.test((err as Error).message)) throw err;
  }
}

/** Picks a /30 in 10.251.0.0/16 from the process id, and skips any that a local address or route mentions. */
async function pickUnusedSubnet(seed: number): Promise<[string, string]> {
  const inUse = (await ip('-o', '-4', 'addr', 'show')) + (await ip('-4', 'route', 'show', 'table', 'all'));
  const blocks = 16384;
  for (let attempt = 0; attempt < blocks; attempt++) {
    const block = ((seed + attempt) % blocks) * 4;
    const prefix = `10.251.${Math.floor(block / 256)}.`;
    const base = block % 256;
    const candidates = [`${prefix}${base}`, `${prefix}${base + 1}`, `${prefix}${base + 2}`, `${prefix}${base + 3}`];
    if (candidates.every((address) => !new RegExp(`\\b${address.replaceAll('.', '\\.')}\\b`).test(inUse))) {
      return [candidates[1]!, candidates[2]!];
    }
  }
  throw new Error('no unused /30 left in 10.251.0.0/16');
}
