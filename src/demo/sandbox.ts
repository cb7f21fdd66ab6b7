#!/usr/bin/env node
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeApiServer } from '../testbed/fake-apiserver.js';
import { createTestPki } from '../testbed/pki.js';

/**
 * `npm run sandbox`: a fake API server on loopback and the real `stallguard run` in front of it,
 * with a kubeconfig for kubectl, so a new user can try stallguard without a cluster. Everything
 * lives in ./sandbox/ and ends on Ctrl-C.
 */
const LISTEN = hostPort(process.env.SANDBOX_LISTEN ?? '7446');
const METRICS = hostPort(process.env.SANDBOX_METRICS ?? '9464');

/** Accepts a port or host:port; a bare port listens on 127.0.0.1. */
function hostPort(value: string): string {
  return /^\d+$/.test(value) ? `127.0.0.1:${value}` : value;
}

async function main(): Promise<void> {
  const dir = path.resolve('sandbox');
  fs.mkdirSync(dir, { recursive: true });
  const pki = await createTestPki(path.join(dir, 'pki'));

  const apiserver = new FakeApiServer({ cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem });
  await apiserver.listen(0, '127.0.0.1');

  const configPath = path.join(dir, 'stallguard.yaml');
  fs.writeFileSync(
    configPath,
    [
      'mode: http2',
      'listen:',
      `  address: ${LISTEN}`,
      'upstream:',
      `  endpoints: ["${apiserver.url}"]`,
      '  tls:',
      `    ca: ${pki.ca.certPath}`,
      `    cert: ${pki.nodeCombinedPath}`,
      `    key: ${pki.nodeCombinedPath}`,
      'metrics:',
      `  address: ${METRICS}`,
      `stateDir: ${path.join(dir, 'state')}`,
      '',
    ].join('\n'),
  );

  const kubeconfigPath = path.join(dir, 'kubeconfig');
  fs.writeFileSync(kubeconfigPath, kubeconfig(`https://${LISTEN}`, path.join(dir, 'state', 'tls', 'ca.crt'), pki.node.certPath, pki.node.keyPath));

  const cli = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  const child = spawn(process.execPath, [cli, 'run', '--config', configPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const logPath = path.join(dir, 'stallguard.log');
  child.stdout.pipe(fs.createWriteStream(logPath));

  const stop = async (code: number) => {
    child.kill('SIGTERM');
    await apiserver.close();
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  child.on('exit', (code) => {
    console.error(`stallguard exited with code ${code}; its log is ${logPath}`);
    void apiserver.close().then(() => process.exit(code ?? 1));
  });

  await waitForPort(LISTEN, child);

  console.log(`fake API server:  ${apiserver.url}`);
  console.log(`stallguard:       https://${LISTEN} (config ${configPath}, log ${logPath})`);
  console.log(`metrics:          http://${METRICS}/metrics  /readyz  /state`);
  console.log('');
  console.log('Try:');
  console.log(`  kubectl --kubeconfig ${kubeconfigPath} get nodes`);
  console.log(`  kubectl --kubeconfig ${kubeconfigPath} run demo --image=busybox   # creates a pod the watch below shows`);
  console.log(`  kubectl --kubeconfig ${kubeconfigPath} get pods --watch`);
  console.log(`  curl -s http://${METRICS}/state`);
  console.log('Ctrl-C stops everything.');
}

/** Resolves once stallguard accepts connections; rejects when it exits first or after 15 s. */
async function waitForPort(address: string, child: ReturnType<typeof spawn>): Promise<void> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, ''), Number(address.slice(address.lastIndexOf(':') + 1))];
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`stallguard exited with code ${child.exitCode} before it listened on ${address}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`stallguard did not listen on ${address} within 15 s`);
}

function kubeconfig(server: string, caPath: string, certPath: string, keyPath: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: sandbox',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority: ${caPath}`,
    'users:',
    '- name: admin',
    '  user:',
    `    client-certificate: ${certPath}`,
    `    client-key: ${keyPath}`,
    'contexts:',
    '- name: sandbox',
    '  context: { cluster: sandbox, user: admin }',
    'current-context: sandbox',
    '',
  ].join('\n');
}

main().catch((err: unknown) => {
  console.error(`sandbox failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
