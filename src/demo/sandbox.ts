#!/usr/bin/env node
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeApiServer } from '../testbed/fake-apiserver.js';
import { createTestPki } from '../testbed/pki.js';

/**
 * `npm run sandbox`: a fake API server on loopback and the real `stallguard run` in front of it,
 * with a kubeconfig for kubectl, so a new user can try stallguard without a cluster. Everything
 * lives in ./sandbox/ and ends on Ctrl-C.
 */
const LISTEN = process.env.SANDBOX_LISTEN ?? '127.0.0.1:7446';
const METRICS = process.env.SANDBOX_METRICS ?? '127.0.0.1:9464';

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

  console.log(`fake API server:  ${apiserver.url}`);
  console.log(`stallguard:       https://${LISTEN} (config ${configPath}, log ${logPath})`);
  console.log(`metrics:          http://${METRICS}/metrics  /readyz  /state`);
  console.log('');
  console.log('Try:');
  console.log(`  kubectl --kubeconfig ${kubeconfigPath} get nodes`);
  console.log(`  kubectl --kubeconfig ${kubeconfigPath} get pods --watch`);
  console.log(`  curl -s http://${METRICS}/state`);
  console.log('Ctrl-C stops everything.');
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
