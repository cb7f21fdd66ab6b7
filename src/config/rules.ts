import { accessSync, constants, statSync } from 'node:fs';
import { describeError, errorCode } from '../errors.js';
import { isLoopbackHost, parseHostPort } from './address.js';
import { parseDuration } from './duration.js';
import { normalizeEndpoint, type FileConfig } from './schema.js';

/** A rule violation: the key to report, its value, and a message that completes `<key>: <value> ...`. */
export interface RuleViolation {
  key: string;
  value: unknown;
  message: string;
}

/**
 * Checks the rules that span several keys, or that need the file system. Every key the rules read
 * must already have passed its own check: a rule that involves a key listed in `invalidKeys` is
 * skipped, because the message for that key already gives the fix.
 */
export function checkRules(file: FileConfig, invalidKeys: ReadonlySet<string>): RuleViolation[] {
  const valid = (...keys: string[]): boolean => keys.every((key) => !invalidKeys.has(key));
  const violations: RuleViolation[] = [];

  if (valid('listen.address', 'listen.allowRemote')) {
    violations.push(...checkListenAddress(file));
  }
  if (valid('listen.plaintext', 'listen.address', 'metrics.address')) {
    violations.push(...checkSeparateAddresses(file));
  }
  if (valid('upstream.reconnectBackoff.base', 'upstream.reconnectBackoff.max')) {
    violations.push(...checkBackoff(file));
  }
  if (valid('health.pingTimeout', 'retry.budget')) {
    violations.push(...checkPingTimeoutWithinBudget(file));
  }
  if (valid('health.ejectionTime', 'health.maxEjectionTime')) {
    violations.push(...checkEjectionTimes(file));
  }
  if (valid('upstream.endpoints', 'upstream.fallback')) {
    violations.push(...checkUpstreamAddresses(file));
  }

  if (valid('upstream.identity', 'upstream.tls.cert')) {
    violations.push(...checkFrontProxyCertificate(file));
  }
  if (valid('upstream.frontProxy.usernameHeader', 'upstream.frontProxy.groupHeader', 'upstream.frontProxy.extraHeaderPrefix')) {
    violations.push(...checkIdentityHeaders(file));
  }

  violations.push(...checkPair('listen.tls', file.listen.tls.cert, file.listen.tls.key, invalidKeys));
  violations.push(...checkPair('upstream.tls', file.upstream.tls.cert, file.upstream.tls.key, invalidKeys));

  const files: Array<[string, string]> = [
    ['listen.tls.cert', file.listen.tls.cert],
    ['listen.tls.key', file.listen.tls.key],
    ['listen.tls.clientCA', file.listen.tls.clientCA],
    ['upstream.tls.ca', file.upstream.tls.ca],
    ['upstream.tls.cert', file.upstream.tls.cert],
    ['upstream.tls.key', file.upstream.tls.key],
  ];
  for (const [key, path] of files) {
    if (valid(key) && path !== '') {
      violations.push(...checkReadableFile(key, path));
    }
  }
  return violations;
}

function checkListenAddress(file: FileConfig): RuleViolation[] {
  const { host } = parseHostPort(file.listen.address);
  if (file.listen.allowRemote || isLoopbackHost(host)) {
    return [];
  }
  return [
    {
      key: 'listen.address',
      value: file.listen.address,
      message:
        'is not a loopback address; bind 127.0.0.1 or [::1], or set listen.allowRemote: true to accept connections from other hosts',
    },
  ];
}

function checkSeparateAddresses(file: FileConfig): RuleViolation[] {
  const violations: RuleViolation[] = [];

  if (file.listen.plaintext !== '') {
    const plaintext = parseHostPort(file.listen.plaintext);
    if (!isLoopbackHost(plaintext.host)) {
      violations.push({
        key: 'listen.plaintext',
        value: file.listen.plaintext,
        message:
          'is not a loopback address; the plaintext listener carries no TLS, so it binds loopback only whatever listen.allowRemote says; ' +
          'use e.g. "127.0.0.1:7447", or "" to disable it',
      });
    }
  }

  const bound: Array<[string, string]> = [
    ['listen.address', file.listen.address],
    ['listen.plaintext', file.listen.plaintext],
    ['metrics.address', file.metrics.address],
  ];
  for (let later = 1; later < bound.length; later += 1) {
    for (let earlier = 0; earlier < later; earlier += 1) {
      const [laterKey, laterAddress] = bound[later];
      const [earlierKey, earlierAddress] = bound[earlier];
      // With port 0 the OS picks a free port, so two such addresses never collide.
      if (laterAddress !== '' && laterAddress === earlierAddress && parseHostPort(laterAddress).port !== 0) {
        violations.push({
          key: laterKey,
          value: laterAddress,
          message: `is also ${earlierKey}; give each listener its own port`,
        });
      }
    }
  }
  return violations;
}

function checkBackoff(file: FileConfig): RuleViolation[] {
  const { base, max } = file.upstream.reconnectBackoff;
  if (parseDuration(max) >= parseDuration(base)) {
    return [];
  }
  return [
    {
      key: 'upstream.reconnectBackoff.max',
      value: max,
      message: `is shorter than upstream.reconnectBackoff.base ("${base}"); raise max to at least "${base}" or lower base`,
    },
  ];
}

function checkEjectionTimes(file: FileConfig): RuleViolation[] {
  const { ejectionTime, maxEjectionTime } = file.health;
  if (parseDuration(maxEjectionTime) >= parseDuration(ejectionTime)) {
    return [];
  }
  return [
    {
      key: 'health.maxEjectionTime',
      value: maxEjectionTime,
      message: `is shorter than health.ejectionTime ("${ejectionTime}"); raise maxEjectionTime to at least "${ejectionTime}" or lower ejectionTime`,
    },
  ];
}

function checkUpstreamAddresses(file: FileConfig): RuleViolation[] {
  const { endpoints, fallback } = file.upstream;
  if (endpoints.length === 0 && fallback.length === 0) {
    return [
      {
        key: 'upstream.endpoints',
        value: endpoints,
        message:
          'is empty; list at least one https:// URL of an API server or its load balancer, e.g. "https://10.0.0.10:6443", ' +
          'under upstream.endpoints in the file, in STALLGUARD_UPSTREAM_ENDPOINTS or with --upstream-endpoints ' +
          '(or list the load balancer under upstream.fallback and let upstream.discovery find the replicas)',
      },
    ];
  }

  const primary = new Set(endpoints.map(normalizeEndpoint));
  return fallback
    .filter((entry) => primary.has(normalizeEndpoint(entry)))
    .map((entry) => ({
      key: 'upstream.fallback',
      value: entry,
      message: 'is also listed in upstream.endpoints; a fallback address serves only while no endpoint is ready, so list it in one of the two',
    }));
}

function checkPingTimeoutWithinBudget(file: FileConfig): RuleViolation[] {
  if (parseDuration(file.health.pingTimeout) < parseDuration(file.retry.budget)) {
    return [];
  }
  return [
    {
      key: 'health.pingTimeout',
      value: file.health.pingTimeout,
      message:
        `is not below retry.budget ("${file.retry.budget}"), so a request on a stalled session would run out of budget ` +
        'before the session is evicted and the request retried; lower health.pingTimeout or raise retry.budget',
    },
  ];
}

function checkFrontProxyCertificate(file: FileConfig): RuleViolation[] {
  if (file.upstream.identity !== 'front-proxy' || file.upstream.tls.cert !== '') {
    return [];
  }
  return [
    {
      key: 'upstream.tls.cert',
      value: file.upstream.tls.cert,
      message:
        'is empty but upstream.identity is "front-proxy"; set upstream.tls.cert and upstream.tls.key to a client certificate ' +
        "signed by the CA in kube-apiserver's --requestheader-client-ca-file, or use upstream.identity: static",
    },
  ];
}

/**
 * Headers that requests need for themselves. stallguard removes the identity headers from every
 * request, so an identity header named like one of these would break every request.
 */
const RESERVED_HEADERS = [
  'accept',
  'accept-encoding',
  'authorization',
  'connection',
  'content-encoding',
  'content-length',
  'content-type',
  'cookie',
  'host',
  'te',
  'transfer-encoding',
  'upgrade',
  'user-agent',
];

function checkIdentityHeaders(file: FileConfig): RuleViolation[] {
  const { usernameHeader, groupHeader, extraHeaderPrefix } = file.upstream.frontProxy;
  const violations: RuleViolation[] = [];

  const names: Array<[string, string]> = [
    ['upstream.frontProxy.usernameHeader', usernameHeader],
    ['upstream.frontProxy.groupHeader', groupHeader],
  ];
  for (const [key, name] of names) {
    if (RESERVED_HEADERS.includes(name.toLowerCase())) {
      violations.push({ key, value: name, message: 'is a header that requests need for themselves; use a name of its own, e.g. "X-Remote-User"' });
    } else if (name.toLowerCase().startsWith(extraHeaderPrefix.toLowerCase())) {
      violations.push({ key, value: name, message: `starts with upstream.frontProxy.extraHeaderPrefix ("${extraHeaderPrefix}"); give the two different names` });
    }
  }

  if (usernameHeader.toLowerCase() === groupHeader.toLowerCase()) {
    violations.push({
      key: 'upstream.frontProxy.groupHeader',
      value: groupHeader,
      message: 'is also upstream.frontProxy.usernameHeader; give each its own name, e.g. "X-Remote-Group"',
    });
  }

  const shadowed = RESERVED_HEADERS.find((name) => name.startsWith(extraHeaderPrefix.toLowerCase()));
  if (shadowed !== undefined) {
    violations.push({
      key: 'upstream.frontProxy.extraHeaderPrefix',
      value: extraHeaderPrefix,
      message: `would also match the "${shadowed}" header, which stallguard would then remove from every request; use a longer prefix, e.g. "X-Remote-Extra-"`,
    });
  }
  return violations;
}

function checkPair(section: string, cert: string, key: string, invalidKeys: ReadonlySet<string>): RuleViolation[] {
  if (invalidKeys.has(`${section}.cert`) || invalidKeys.has(`${section}.key`)) {
    return [];
  }
  if (cert !== '' && key === '') {
    return [{ key: `${section}.key`, value: key, message: `is empty but ${section}.cert is set; set both or neither` }];
  }
  if (cert === '' && key !== '') {
    return [{ key: `${section}.cert`, value: cert, message: `is empty but ${section}.key is set; set both or neither` }];
  }
  return [];
}

function checkReadableFile(key: string, path: string): RuleViolation[] {
  try {
    if (!statSync(path).isFile()) {
      return [{ key, value: path, message: 'is not a regular file; give the path of the PEM file itself' }];
    }
    accessSync(path, constants.R_OK);
    return [];
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT') {
      return [{ key, value: path, message: 'names a file that does not exist; check the path' }];
    }
    if (code === 'EACCES' || code === 'EPERM') {
      return [{ key, value: path, message: 'names a file that stallguard cannot read (permission denied); fix its owner or mode' }];
    }
    return [{ key, value: path, message: `names a file that cannot be read (${describeError(err)}); check the path` }];
  }
}
