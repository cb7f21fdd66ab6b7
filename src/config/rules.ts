import { accessSync, constants, statSync } from 'node:fs';
import { describeError, errorCode } from '../errors.js';
import { isLoopbackHost, parseHostPort } from './address.js';
import { parseDuration } from './duration.js';
import type { FileConfig } from './schema.js';

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
