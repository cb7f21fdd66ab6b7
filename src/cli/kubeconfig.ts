import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { parseHostPort } from '../config/address.js';
import { loadConfig } from '../config/load.js';
import { CONFIG_KEY_BY_PATH } from '../config/schema.js';
import { ConfigError, describeError, errorCode } from '../errors.js';
import { formatConfigError } from './run.js';

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

/** The cluster, user and context name in the written kubeconfig. */
const KUBECONFIG_NAME = 'stallguard';

export interface KubeconfigOptions {
  out: string;
  clientCert: string | undefined;
  clientKey: string | undefined;
  tokenFile: string | undefined;
  certificateAuthority: string | undefined;
  configFile: string | undefined;
}

export interface KubeconfigDependencies {
  env: NodeJS.ProcessEnv;
  write(text: string): void;
  writeError(text: string): void;
}

/** The settings of the configuration that the kubeconfig depends on. */
interface ListenerSettings {
  address: string;
  /** listen.tls.cert: empty when stallguard serves with its generated local CA. */
  servingCert: string;
  stateDir: string;
  /** Origin of the settings (a file or the defaults), for error messages. */
  source: string;
}

class KubeconfigUsageError extends Error {}
class KubeconfigInputError extends Error {}

/**
 * Runs `stallguard kubeconfig`: writes a kubeconfig (mode 0600) that points a local client at
 * stallguard's TLS listener and trusts the CA that signed the listener's certificate. It names the
 * client's credentials by path, so that a rotated certificate or token is read from the same file.
 * Returns 0 when the file was written, 1 when an input is missing or invalid, 2 on a usage error.
 */
export function runKubeconfigCommand(argv: string[], deps: KubeconfigDependencies): number {
  try {
    const options = parseKubeconfigArgs(argv);
    const settings = readListenerSettings(options.configFile, deps.env);
    const document = buildKubeconfig(options, settings);
    writePrivateFile(options.out, `${yaml.dump(document, { lineWidth: -1, noRefs: true })}`);

    const credentials = options.tokenFile !== undefined ? `token file ${path.resolve(options.tokenFile)}` : `client certificate ${path.resolve(options.clientCert!)}`;
    deps.write(`wrote ${path.resolve(options.out)}: server ${document.clusters[0]!.cluster.server}, ${credentials}\n`);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof KubeconfigUsageError) {
      deps.writeError(`${err.message}\n`);
      return EXIT_USAGE;
    }
    if (err instanceof ConfigError) {
      deps.writeError(formatConfigError(err));
      return EXIT_FAILED;
    }
    if (err instanceof KubeconfigInputError) {
      deps.writeError(`${err.message}\n`);
      return EXIT_FAILED;
    }
    throw err;
  }
}

/** Parses the kubeconfig flags; `--flag value` and `--flag=value` are both accepted. */
export function parseKubeconfigArgs(argv: string[]): KubeconfigOptions {
  const values = new Map<string, string>();
  const known = ['--out', '--client-cert', '--client-key', '--token-file', '--certificate-authority', '--config'];

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const equals = arg.indexOf('=');
    const name = arg.startsWith('--') && equals > 0 ? arg.slice(0, equals) : arg;
    if (!known.includes(name)) {
      throw new KubeconfigUsageError(`unknown option ${JSON.stringify(arg)} for kubeconfig; it takes ${known.map((flag) => `${flag} FILE`).join(', ')}`);
    }

    let value = arg.startsWith('--') && equals > 0 ? arg.slice(equals + 1) : undefined;
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new KubeconfigUsageError(`${name} needs a file path; write ${name} FILE`);
      value = next;
      i++;
    }
    if (value === '') throw new KubeconfigUsageError(`${name} is empty; write ${name} FILE`);
    values.set(name, value);
  }

  const options: KubeconfigOptions = {
    out: values.get('--out') ?? '',
    clientCert: values.get('--client-cert'),
    clientKey: values.get('--client-key'),
    tokenFile: values.get('--token-file'),
    certificateAuthority: values.get('--certificate-authority'),
    configFile: values.get('--config'),
  };

  if (options.out === '') throw new KubeconfigUsageError('--out FILE is missing; name the kubeconfig file to write');
  const certificate = options.clientCert !== undefined || options.clientKey !== undefined;
  if (certificate && options.tokenFile !== undefined) {
    throw new KubeconfigUsageError('give either --client-cert and --client-key or --token-file, not both: stallguard sends a token request without the client certificate');
  }
  if (certificate && (options.clientCert === undefined || options.clientKey === undefined)) {
    throw new KubeconfigUsageError('--client-cert and --client-key go together; give both');
  }
  if (!certificate && options.tokenFile === undefined) {
    throw new KubeconfigUsageError('no client credentials given; add --client-cert FILE --client-key FILE, or --token-file FILE');
  }
  return options;
}

function readListenerSettings(configFile: string | undefined, env: NodeJS.ProcessEnv): ListenerSettings {
  if (configFile !== undefined) {
    const { config } = loadConfig({ argv: ['--config', configFile], env });
    return { address: config.listen.address, servingCert: config.listen.tls.cert, stateDir: config.stateDir, source: configFile };
  }

  const defaultOf = (key: string) => String(CONFIG_KEY_BY_PATH.get(key)!.default);
  return {
    address: defaultOf('listen.address'),
    servingCert: defaultOf('listen.tls.cert'),
    stateDir: defaultOf('stateDir'),
    source: 'the default configuration (no --config given)',
  };
}

interface Kubeconfig {
  apiVersion: 'v1';
  kind: 'Config';
  clusters: Array<{ name: string; cluster: { server: string; 'certificate-authority': string } }>;
  users: Array<{ name: string; user: Record<string, string> }>;
  contexts: Array<{ name: string; context: { cluster: string; user: string } }>;
  'current-context': string;
}

function buildKubeconfig(options: KubeconfigOptions, settings: ListenerSettings): Kubeconfig {
  const server = serverUrl(settings);
  const certificateAuthority = resolveCertificateAuthority(options, settings);

  let user: Record<string, string>;
  if (options.tokenFile !== undefined) {
    requireReadableFile(options.tokenFile, '--token-file', 'token file');
    user = { tokenFile: path.resolve(options.tokenFile) };
  } else {
    checkClientPair(options.clientCert!, options.clientKey!);
    user = { 'client-certificate': path.resolve(options.clientCert!), 'client-key': path.resolve(options.clientKey!) };
  }

  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: KUBECONFIG_NAME, cluster: { server, 'certificate-authority': certificateAuthority } }],
    users: [{ name: KUBECONFIG_NAME, user }],
    contexts: [{ name: KUBECONFIG_NAME, context: { cluster: KUBECONFIG_NAME, user: KUBECONFIG_NAME } }],
    'current-context': KUBECONFIG_NAME,
  };
}

/** Returns the listener's URL; a wildcard bind address (0.0.0.0, ::) is reached on loopback. */
function serverUrl(settings: ListenerSettings): string {
  const { host, port } = parseHostPort(settings.address);
  if (port === 0) {
    throw new KubeconfigInputError(
      `listen.address in ${settings.source} is ${settings.address}: port 0 is chosen by the system at every start, so no kubeconfig can name it; set a fixed port`,
    );
  }

  let reachable = host;
  if (host === '0.0.0.0') reachable = '127.0.0.1';
  if (host === '::') reachable = '::1';
  const bracketed = reachable.includes(':') ? `[${reachable}]` : reachable;
  return `https://${bracketed}:${port}`;
}

function resolveCertificateAuthority(options: KubeconfigOptions, settings: ListenerSettings): string {
  if (options.certificateAuthority !== undefined) {
    requireReadableFile(options.certificateAuthority, '--certificate-authority', 'CA file');
    return path.resolve(options.certificateAuthority);
  }
  if (settings.servingCert !== '') {
    throw new KubeconfigUsageError(
      `listen.tls.cert in ${settings.source} names your own serving certificate, so stallguard does not know its CA; ` +
        'add --certificate-authority FILE with the CA that signed it',
    );
  }

  const localCa = path.resolve(settings.stateDir, 'tls', 'ca.crt');
  if (!fs.existsSync(localCa)) {
    throw new KubeconfigInputError(
      `the local CA ${localCa} does not exist yet; start stallguard once with stateDir ${settings.stateDir} so that it generates the CA, ` +
        'or pass --config with the file stallguard runs with',
    );
  }
  requireReadableFile(localCa, 'the local CA', 'CA file');
  return localCa;
}

function requireReadableFile(file: string, what: string, kind: string): void {
  try {
    if (!fs.statSync(file).isFile()) throw new KubeconfigInputError(`${what} ${file} is not a regular file; give the path of the ${kind} itself`);
    fs.accessSync(file, fs.constants.R_OK);
  } catch (err) {
    if (err instanceof KubeconfigInputError) throw err;
    if (errorCode(err) === 'ENOENT') throw new KubeconfigInputError(`${what} ${file} does not exist; check the path`);
    throw new KubeconfigInputError(`${what} ${file} cannot be read (${describeError(err)}); check its owner and mode`);
  }
}

// A kubeconfig that names a mismatched pair fails only later, inside the client's TLS handshake.
// Checking here reports the mistake while the paths are still in front of the user.
function checkClientPair(certFile: string, keyFile: string): void {
  requireReadableFile(certFile, '--client-cert', 'certificate file');
  requireReadableFile(keyFile, '--client-key', 'key file');

  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(fs.readFileSync(certFile));
  } catch (err) {
    throw new KubeconfigInputError(`--client-cert ${certFile} is not a PEM certificate (${describeError(err)})`);
  }

  let matches: boolean;
  try {
    matches = certificate.checkPrivateKey(createPrivateKey(fs.readFileSync(keyFile)));
  } catch (err) {
    throw new KubeconfigInputError(`--client-key ${keyFile} is not a PEM private key (${describeError(err)})`);
  }
  if (!matches) throw new KubeconfigInputError(`--client-key ${keyFile} does not belong to the certificate in ${certFile}; give the matching pair`);
}

// Written through a temporary file with mode 0600 and a rename, so that the file never exists with
// wider permissions or half-written.
function writePrivateFile(file: string, contents: string): void {
  const temporary = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.tmp-${process.pid}`);
  try {
    fs.writeFileSync(temporary, contents, { mode: 0o600 });
    fs.chmodSync(temporary, 0o600);
    fs.renameSync(temporary, file);
  } catch (err) {
    fs.rmSync(temporary, { force: true });
    throw new KubeconfigInputError(`cannot write ${file} (${describeError(err)}); check that its directory exists and is writable`);
  }
}
