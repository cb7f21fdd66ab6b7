/** The machine a result was measured on, recorded in every result file. */
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
  };
}
