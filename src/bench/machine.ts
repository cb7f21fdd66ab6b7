/** The machine a result was measured on, recorded in every result file. */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { VERSION } from '../version.js';
import { toolVersion } from './tools.js';

export interface MachineDescription {
  cpuModel: string;
  /** Logical CPUs the OS reports. */
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  stallguard: string;
  haproxy: string | undefined;
  h2load: string | undefined;
  nginx: string | undefined;
  /** The commit the run was built from, and whether the work tree had uncommitted changes. */
  git: { commit: string; dirty: boolean } | undefined;
}

export function describeMachine(): MachineDescription {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    stallguard: VERSION,
    haproxy: toolVersion('haproxy'),
    h2load: toolVersion('h2load'),
    nginx: toolVersion('nginx'),
    git: describeCommit(),
  };
}

/** Reads the commit of the working directory's repository; undefined outside a git work tree. */
function describeCommit(): MachineDescription['git'] {
  const commit = spawnSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', timeout: 5000 });
  if (commit.status !== 0) return undefined;

  const status = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', timeout: 5000 });
  return { commit: commit.stdout.trim(), dirty: status.status !== 0 || status.stdout.trim() !== '' };
}
