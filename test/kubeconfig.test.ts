import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKubeconfigCommand } from '../src/cli/kubeconfig.js';
import type { Config } from '../src/config/types.js';
import { startStallguard, type RunningStallguard } from '../src/server.js';
import { FakeApiServer } from '../src/testbed/fake-apiserver.js';
import { createTestPki, type TestPki } from '../src/testbed/pki.js';
import { buildConfig } from '../src/testbed/stack.js';
import { describeResult, runKubectl } from './helpers/kubectl.js';

interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runCommand(argv: string[]): CommandResult {
  let stdout = '';
  let stderr = '';
  const code = runKubeconfigCommand(argv, { env: {}, write: (text) => (stdout += text), writeError: (text) => (stderr += text) });
  return { code, stdout, stderr };
}

interface WrittenKubeconfig {
  clusters: Array<{ cluster: { server: string; 'certificate-authority': string } }>;
  users: Array<{ user: Record<string, string> }>;
  'current-context': string;
}

function readKubeconfig(file: string): WrittenKubeconfig {
  return yaml.load(fs.readFileSync(file, 'utf8')) as WrittenKubeconfig;
}

/** Writes a stallguard configuration file as an operator would, with the paths of the test PKI. */
function writeConfigFile(dir: string, name: string, pki: TestPki, upstream: string, listen: { address: string; cert?: string; key?: string; allowRemote?: boolean }, stateDir: string): string {
  const q = (value: string) => JSON.stringify(value);
  const file = path.join(dir, name);
  fs.writeFileSync(
    file,
    [
      'listen:',
      `  address: ${q(listen.address)}`,
      `  allowRemote: ${listen.allowRemote ?? false}`,
      '  tls:',
      `    cert: ${q(listen.cert ?? '')}`,
      `    key: ${q(listen.key ?? '')}`,
      `    clientCA: ${q(pki.ca.certPath)}`,
      'upstream:',
      `  endpoints: [${q(upstream)}]`,
      '  tls:',
      `    ca: ${q(pki.ca.certPath)}`,
      `    cert: ${q(pki.node.certPath)}`,
      `    key: ${q(pki.node.keyPath)}`,
      'metrics:',
      `  address: ${q('127.0.0.1:0')}`,
      `stateDir: ${q(stateDir)}`,
      '',
    ].join('\n'),
  );
  return file;
}

describe('stallguard kubeconfig', () => {
  let dir: string;
  let pki: TestPki;
  let server: FakeApiServer;
  let stallguard: RunningStallguard;
  let config: Config;
  let configFile: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stallguard-kubeconfig-'));
    pki = await createTestPki(path.join(dir, 'pki'));
    server = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem, tokens: { 'token-abc': { name: 'kube-proxy' } } });
    await server.listen(0, '127.0.0.1');

    // The listener serves with the local CA that stallguard generates into stateDir.
    config = buildConfig(dir, pki, [server.url], {});
    config.listen.tls.cert = '';
    config.listen.tls.key = '';
    stallguard = await startStallguard(config, pino({ level: 'silent' }));

    // The port is known once stallguard has bound it, so the file for the command names it.
    configFile = writeConfigFile(dir, 'stallguard.yaml', pki, server.url, { address: stallguard.addresses.listen }, config.stateDir);
  });

  afterAll(async () => {
    await stallguard?.close();
    await server?.close();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes a 0600 kubeconfig with the local CA and the certificate paths', () => {
    const out = path.join(dir, 'node.kubeconfig');

    const result = runCommand(['--out', out, '--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath, '--config', configFile]);

    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`wrote ${out}`);
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    const written = readKubeconfig(out);
    expect(written.clusters[0]!.cluster).toEqual({ server: `https://${stallguard.addresses.listen}`, 'certificate-authority': path.join(config.stateDir, 'tls', 'ca.crt') });
    expect(written.users[0]!.user).toEqual({ 'client-certificate': pki.node.certPath, 'client-key': pki.node.keyPath });
    expect(written['current-context']).toBe('stallguard');
    expect(fs.readFileSync(out, 'utf8')).not.toContain('BEGIN');
  });

  it('serves kubectl with a client-certificate kubeconfig', async () => {
    const out = path.join(dir, 'kubectl-cert.kubeconfig');
    const home = fs.mkdtempSync(path.join(dir, 'home-'));
    expect(runCommand(['--out', out, '--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath, '--config', configFile]).code).toBe(0);

    const args = ['get', 'nodes'];
    const result = await runKubectl({ kubeconfig: out, home }, args);

    expect(result.code, describeResult(args, result)).toBe(0);
    expect(result.stdout).toMatch(/^n1\s+Ready\b/m);
    expect(server.requests.some((request) => request.path.startsWith('/api/v1/nodes') && request.user === 'system:node:n1')).toBe(true);
  });

  it('serves kubectl with a token-file kubeconfig', async () => {
    const out = path.join(dir, 'kubectl-token.kubeconfig');
    const tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, 'token-abc\n', { mode: 0o600 });
    const home = fs.mkdtempSync(path.join(dir, 'home-'));
    const written = runCommand(['--out', out, '--token-file', tokenFile, '--config', configFile]);
    expect(written.code, written.stderr).toBe(0);
    expect(readKubeconfig(out).users[0]!.user).toEqual({ tokenFile });
    expect(fs.readFileSync(out, 'utf8')).not.toContain('token-abc');

    const args = ['get', 'nodes'];
    const result = await runKubectl({ kubeconfig: out, home }, args);

    expect(result.code, describeResult(args, result)).toBe(0);
    const seen = server.requests.filter((request) => request.path.startsWith('/api/v1/nodes')).at(-1)!;
    expect(seen.user).toBe('kube-proxy');
    expect(seen.clientCertificate).toBe(false);
  });

  it('accepts kubelet\'s combined certificate and key file', () => {
    const out = path.join(dir, 'combined.kubeconfig');

    const result = runCommand(['--out', out, '--client-cert', pki.nodeCombinedPath, '--client-key', pki.nodeCombinedPath, '--config', configFile]);

    expect(result.code, result.stderr).toBe(0);
    expect(readKubeconfig(out).users[0]!.user).toEqual({ 'client-certificate': pki.nodeCombinedPath, 'client-key': pki.nodeCombinedPath });
  });

  it('replaces an existing file and keeps it 0600', () => {
    const out = path.join(dir, 'existing.kubeconfig');
    fs.writeFileSync(out, 'old contents', { mode: 0o644 });

    const result = runCommand(['--out', out, '--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath, '--config', configFile]);

    expect(result.code, result.stderr).toBe(0);
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(out, 'utf8')).toContain('client-certificate');
  });

  it.each([
    [[], '--out FILE is missing'],
    [['--out', 'x'], 'no client credentials given'],
    [['--out', 'x', '--client-cert', 'a'], '--client-cert and --client-key go together'],
    [['--out', 'x', '--client-cert', 'a', '--client-key', 'b', '--token-file', 'c'], 'not both'],
    [['--out', 'x', '--token-file'], '--token-file needs a file path'],
    [['--out', 'x', '--server', 'https://example.invalid'], 'unknown option "--server"'],
  ])('exits 2 on usage error %j', (argv, message) => {
    const result = runCommand(argv);

    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
  });

  it('names a missing credential file', () => {
    const missing = path.join(dir, 'no-such.crt');

    const result = runCommand(['--out', path.join(dir, 'unused'), '--client-cert', missing, '--client-key', pki.node.keyPath, '--config', configFile]);

    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`--client-cert ${missing} does not exist; check the path\n`);
    expect(fs.existsSync(path.join(dir, 'unused'))).toBe(false);
  });

  it('rejects a certificate and key that do not belong together', () => {
    const result = runCommand(['--out', path.join(dir, 'unused'), '--client-cert', pki.node.certPath, '--client-key', pki.admin.keyPath, '--config', configFile]);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`--client-key ${pki.admin.keyPath} does not belong to the certificate in ${pki.node.certPath}`);
  });

  it('rejects a file that is not a certificate', () => {
    const result = runCommand(['--out', path.join(dir, 'unused'), '--client-cert', pki.node.keyPath, '--client-key', pki.node.keyPath, '--config', configFile]);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain('is not a PEM certificate');
  });

  it('requires --certificate-authority with an own serving certificate', () => {
    const ownCert = writeConfigFile(dir, 'own-cert.yaml', pki, server.url, { address: '127.0.0.1:7446', cert: pki.server.certPath, key: pki.server.keyPath }, config.stateDir);
    const out = path.join(dir, 'own-cert.kubeconfig');
    const credentials = ['--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath];

    const without = runCommand(['--out', out, ...credentials, '--config', ownCert]);
    const withCa = runCommand(['--out', out, ...credentials, '--config', ownCert, '--certificate-authority', pki.ca.certPath]);

    expect(without.code).toBe(2);
    expect(without.stderr).toContain('add --certificate-authority FILE');
    expect(withCa.code, withCa.stderr).toBe(0);
    expect(readKubeconfig(out).clusters[0]!.cluster).toEqual({ server: 'https://127.0.0.1:7446', 'certificate-authority': pki.ca.certPath });
  });

  it('reaches a wildcard listen address on loopback', () => {
    const wildcard = writeConfigFile(dir, 'wildcard.yaml', pki, server.url, { address: '0.0.0.0:7446', allowRemote: true }, config.stateDir);
    const out = path.join(dir, 'wildcard.kubeconfig');

    const result = runCommand(['--out', out, '--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath, '--config', wildcard]);

    expect(result.code, result.stderr).toBe(0);
    expect(readKubeconfig(out).clusters[0]!.cluster.server).toBe('https://127.0.0.1:7446');
  });

  it('rejects a listen address with port 0', () => {
    const portZero = writeConfigFile(dir, 'port-zero.yaml', pki, server.url, { address: '127.0.0.1:0' }, config.stateDir);

    const result = runCommand(['--out', path.join(dir, 'unused'), '--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath, '--config', portZero]);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain('port 0 is chosen by the system at every start');
  });

  it('asks for a first start when the local CA does not exist', () => {
    const freshState = path.join(dir, 'fresh-state');
    const fresh = writeConfigFile(dir, 'fresh.yaml', pki, server.url, { address: '127.0.0.1:7446' }, freshState);

    const result = runCommand(['--out', path.join(dir, 'unused'), '--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath, '--config', fresh]);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`the local CA ${path.join(freshState, 'tls', 'ca.crt')} does not exist yet`);
  });

  it('reports an invalid configuration file', () => {
    const broken = path.join(dir, 'broken.yaml');
    fs.writeFileSync(broken, 'listen:\n  address: nowhere\n');

    const result = runCommand(['--out', path.join(dir, 'unused'), '--token-file', pki.node.certPath, '--config', broken]);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain('invalid configuration');
    expect(result.stderr).toContain('listen.address');
  });

  it('reports an output directory that does not exist', () => {
    const out = path.join(dir, 'missing-dir', 'kubeconfig');

    const result = runCommand(['--out', out, '--client-cert', pki.node.certPath, '--client-key', pki.node.keyPath, '--config', configFile]);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot write ${out}`);
  });
});
