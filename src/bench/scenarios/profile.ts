/**
 * Scenario `profile`: where stallguard spends its CPU time on the request path. It starts nginx and
 * stallguard (a child process with `node --cpu-prof`), sends the latency scenario's multiplexed
 * load through stallguard with h2load, stops stallguard with SIGTERM so that V8 writes the profile
 * on exit, and sums the self time per function and per area of code. The .cpuprofile file is kept
 * in <out>/tmp/, which git ignores, for a look in Chrome DevTools.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { summarizeCpuProfile, type CpuProfile, type CpuProfileSummary } from '../cpu-profile.js';
import { createTestPki } from '../../testbed/pki.js';
import { runH2load, type H2loadResult } from '../h2load.js';
import { buildNodeObject } from '../kube-objects.js';
import { startNginx } from '../nginx.js';
import type { Scenario, ScenarioContext, ScenarioReport } from '../scenario.js';
import { startStallguardProcess } from '../stallguard-process.js';
import { requireTools } from '../tools.js';

export interface ProfileParameters {
  /** h2load runs through stallguard while it is profiled, in order. */
  loads: Array<{ name: string; requests: number; clients: number; streams: number }>;
  nodeImages: number;
  /** Functions listed in the summary. */
  topFunctions: number;
}

export const FULL_PROFILE_PARAMETERS: ProfileParameters = {
  loads: [{ name: 'multiplexed', requests: 40_000, clients: 1, streams: 32 }],
  nodeImages: 40,
  topFunctions: 25,
};

export const QUICK_PROFILE_PARAMETERS: ProfileParameters = {
  loads: [{ name: 'multiplexed', requests: 300, clients: 1, streams: 8 }],
  nodeImages: 40,
  topFunctions: 10,
};

const NODE_PATH = '/api/v1/nodes/n1';
const REQUEST_HEADERS = { authorization: 'Bearer stallguard-bench-token' };

export const profileScenario: Scenario = {
  name: 'profile',
  description: 'CPU profile (node --cpu-prof) of stallguard under h2load: self time per function and per area',
  tools: ['h2load', 'nginx'],

  async run(context: ScenarioContext): Promise<ScenarioReport> {
    const tools = requireTools(['h2load', 'nginx'], 'profile');
    const parameters = context.quick ? QUICK_PROFILE_PARAMETERS : FULL_PROFILE_PARAMETERS;
    const pki = await createTestPki(path.join(context.dir, 'pki'));
    const profileDir = path.join(context.dir, 'cpu-profile');

    const nginx = await startNginx(context.supervisor, {
      binary: tools.nginx,
      dir: context.dir,
      certPath: pki.server.certPath,
      keyPath: pki.server.keyPath,
      documents: { [NODE_PATH]: JSON.stringify(buildNodeObject('n1', parameters.nodeImages)) },
    });
    const stallguard = await startStallguardProcess(context.supervisor, {
      dir: context.dir,
      certPath: pki.server.certPath,
      keyPath: pki.server.keyPath,
      caPath: pki.ca.certPath,
      endpoints: [`https://127.0.0.1:${nginx.port}`],
      nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
    });

    const runs: Array<H2loadResult & { load: string }> = [];
    try {
      for (const load of parameters.loads) {
        const result = await runH2load(
          context.supervisor,
          {
            binary: tools.h2load,
            url: `https://127.0.0.1:${stallguard.port}${NODE_PATH}`,
            requests: load.requests,
            clients: load.clients,
            streams: load.streams,
            headers: REQUEST_HEADERS,
            logFile: path.join(context.dir, `h2load-${load.name}.log`),
            name: `h2load-${load.name}`,
          },
          context.signal,
        );
        runs.push({ load: load.name, ...result });
      }
    } finally {
      // V8 writes the profile when the process exits normally, which stallguard does after SIGTERM.
      await stallguard.stop();
      await nginx.stop();
    }

    const exit = stallguard.process.record;
    const profileFile = readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile'));
    if (profileFile === undefined) throw new Error(`stallguard (exit code ${exit.exitCode}, signal ${exit.signal}) wrote no .cpuprofile into ${profileDir}`);

    const profilePath = path.join(profileDir, profileFile);
    const summary: CpuProfileSummary = summarizeCpuProfile(JSON.parse(readFileSync(profilePath, 'utf8')) as CpuProfile, parameters.topFunctions);
    const keptProfile = keepProfile(profilePath, context.outDir);
    context.log.info({ file: keptProfile, busyMs: summary.busyMs }, 'CPU profile written');

    return {
      parameters: { ...parameters, stallguard: 'child process, built CLI, default configuration, node --cpu-prof' },
      profileFile: keptProfile,
      runs,
      summary,
      invariants: {
        everyRequestSucceeded: runs.every((run) => run.counts.succeeded === run.counts.total && run.status['2xx'] === run.counts.total),
        stallguardExitedCleanly: exit.exitCode === 0,
        profileHasSamples: summary.samples > 0,
      },
    };
  },

  format(report: ScenarioReport): string {
    const summary = report.summary as CpuProfileSummary;
    const lines = [`profile: ${String(report.profileFile)}`, `duration ${summary.durationMs} ms, busy ${summary.busyMs} ms, ${summary.samples} samples`, 'self time by area:'];
    for (const area of summary.areas) lines.push(`  ${area.area.padEnd(30)}${area.selfMs.toFixed(1).padStart(10)} ms ${area.percent.toFixed(1).padStart(6)} %`);
    lines.push('top functions by self time:');
    for (const entry of summary.topFunctions) lines.push(`  ${entry.selfMs.toFixed(1).padStart(8)} ms ${entry.percent.toFixed(1).padStart(5)} %  ${entry.name} ${entry.location}`);
    return lines.join('\n');
  },
};

/** Copies the profile to <outDir>/tmp/ (ignored by git) and returns the copy's path. */
function keepProfile(profilePath: string, outDir: string): string {
  const dir = path.join(outDir, 'tmp');
  mkdirSync(dir, { recursive: true });
  const kept = path.join(dir, `stallguard-${new Date().toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/:/g, '')}.cpuprofile`);
  copyFileSync(profilePath, kept);
  return kept;
}
