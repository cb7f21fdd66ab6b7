/**
 * Reads a V8 CPU profile (the .cpuprofile JSON that `node --cpu-prof` writes) and sums self time
 * per function and per area of code. Self time is taken from the sample timeline: each sample's
 * node gets the time delta that follows it, which is what DevTools shows as "Self Time".
 */

/** The parts of the .cpuprofile format read here. */
export interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber?: number };
    children?: number[];
  }>;
  startTime: number;
  endTime: number;
  samples: number[];
  /** µs since the previous sample; the first is relative to startTime. */
  timeDeltas: number[];
}

export interface SelfTimeEntry {
  /** Function name, or "(anonymous)"; V8's pseudo-nodes keep their names, e.g. "(garbage collector)". */
  name: string;
  /** Script URL and 1-based line, or "" for native and pseudo-nodes. */
  location: string;
  area: string;
  selfMs: number;
  /** Share of the profile's whole duration, idle time included, in percent. */
  percent: number;
}

export interface CpuProfileSummary {
  durationMs: number;
  samples: number;
  /** Time not spent idle: the profile's duration minus "(idle)". */
  busyMs: number;
  topFunctions: SelfTimeEntry[];
  /** Self time per area, largest first; `percent` is of the whole duration. */
  areas: Array<{ area: string; selfMs: number; percent: number }>;
}

/**
 * Areas of code, tested in order against the script URL. node's own modules are split by what they
 * do, because "node:internal" alone would hide whether HTTP/2, TLS or streams cost the time.
 */
const AREAS: Array<[string, RegExp]> = [
  ['node http2', /^node:internal\/http2\//],
  ['node tls and crypto', /^node:(internal\/)?(tls|_tls|crypto|internal\/tls|internal\/crypto)/],
  ['node streams', /^node:(internal\/)?(streams?|_stream)/],
  ['node net and timers', /^node:(internal\/)?(net|timers)/],
  ['node events and async hooks', /^node:(internal\/)?(events|internal\/async_hooks|internal\/process\/task_queues)/],
  ['node module loading', /^node:internal\/(modules|deps\/cjs-module-lexer)\//],
  ['node other', /^node:/],
  ['pino (logging)', /\/node_modules\/(pino|thread-stream|sonic-boom|fast-redact)\//],
  ['prom-client (metrics)', /\/node_modules\/prom-client\//],
  ['other npm packages', /\/node_modules\//],
  ['stallguard proxy', /\/dist\/(proxy|downstream)\//],
  ['stallguard upstream', /\/dist\/upstream\//],
  ['stallguard metrics', /\/dist\/metrics\//],
  ['stallguard other', /\/dist\//],
];

export function summarizeCpuProfile(profile: CpuProfile, top = 20): CpuProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();

  // Sample i lasts until sample i+1, so it owns timeDeltas[i+1]; the last one owns what is left to endTime.
  let elapsedUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    elapsedUs += profile.timeDeltas[i] ?? 0;
    const next = i + 1 < profile.samples.length ? (profile.timeDeltas[i + 1] ?? 0) : Math.max(0, profile.endTime - profile.startTime - elapsedUs);
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, next));
  }

  const durationUs = profile.endTime - profile.startTime;
  const percentOf = (us: number) => Math.round((us / durationUs) * 10_000) / 100;
  const functions = new Map<string, { name: string; location: string; area: string; us: number }>();
  const areas = new Map<string, number>();

  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;

    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName === '' ? '(anonymous)' : functionName;
    const location = url === '' ? '' : `${shortenUrl(url)}:${lineNumber + 1}`;
    const area = areaOf(name, url);
    const key = `${name}\u0000${location}`;
    const entry = functions.get(key) ?? { name, location, area, us: 0 };
    entry.us += us;
    functions.set(key, entry);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }

  const idleUs = areas.get('idle') ?? 0;
  return {
    durationMs: Math.round(durationUs / 1000),
    samples: profile.samples.length,
    busyMs: Math.round((durationUs - idleUs) / 1000),
    topFunctions: [...functions.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((entry) => ({ name: entry.name, location: entry.location, area: entry.area, selfMs: Math.round(entry.us / 100) / 10, percent: percentOf(entry.us) })),
    areas: [...areas.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, selfMs: Math.round(us / 100) / 10, percent: percentOf(us) })),
  };
}

/** Returns the area of a function: V8's pseudo-nodes by name, everything else by script URL. */
export function areaOf(name: string, url: string): string {
  if (url === '') {
    if (name === '(idle)') return 'idle';
    if (name === '(garbage collector)') return 'garbage collector';
    if (name === '(program)') return 'native (program)';
    return 'native';
  }
  return AREAS.find(([, pattern]) => pattern.test(url))?.[0] ?? 'other';
}

/** Keeps the part of a file URL from dist/ or node_modules/ on, so that results do not show the checkout path. */
function shortenUrl(url: string): string {
  const marker = ['/node_modules/', '/dist/'].map((part) => url.lastIndexOf(part)).find((index) => index >= 0);
  return marker === undefined ? url : url.slice(marker + 1);
}
