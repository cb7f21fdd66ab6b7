import type { KubeletEvent } from '../testbed/kubelet-client.js';
import type { DemoClient } from './clients.js';
import { NoticeLog, seconds, type Notice } from './notices.js';

export interface TimelineSetup {
  clients: readonly DemoClient[];
  startedAt: number;
  durationMs: number;
  /** When the incident happens, in ms after startedAt. */
  incidentAtMs: number;
  graceMs: number;
  /** Lines printed first: what runs and with which timers. */
  header: readonly string[];
}

export interface TimelineOutput {
  write(text: string): void;
  /** Terminal width in columns; undefined when not a terminal. */
  columns: number | undefined;
  isTTY: boolean;
  color: boolean;
}

/** The live view of a demo run: fed with client events and pod changes, it draws as they happen. */
export interface Timeline {
  onClientEvent(event: KubeletEvent): void;
  onPodChange(nodeName: string, resourceVersion: number, at: number): void;
  onIncident(at: number, text: string): void;
  /** Stops redrawing and leaves the final state on screen; later calls do nothing. */
  close(): void;
}

export function createTimeline(setup: TimelineSetup, output: TimelineOutput): Timeline {
  return output.isTTY ? new TerminalTimeline(setup, output) : new PlainTimeline(setup, output);
}

const TICK_MS = 250;
/** A client whose watch has not delivered a pod change this long after it was made is waiting. */
const STALE_AFTER_MS = 1000;

/** One line per notable event, for logs and pipes. */
class PlainTimeline implements Timeline {
  readonly #output: TimelineOutput;
  readonly #startedAt: number;
  readonly #notices: NoticeLog;
  readonly #timer: NodeJS.Timeout;
  #closed = false;

  constructor(setup: TimelineSetup, output: TimelineOutput) {
    this.#output = output;
    this.#startedAt = setup.startedAt;
    this.#notices = new NoticeLog(setup.clients, setup.graceMs, setup.startedAt, (notice) => this.#print(notice));
    output.write(`${setup.header.join('\n')}\n\n`);
    this.#timer = setInterval(() => this.#notices.check(Date.now()), TICK_MS);
  }

  onClientEvent(event: KubeletEvent): void {
    this.#notices.onEvent(event);
  }

  onPodChange(): void {
    // Pod changes are counted in the summary; a line each would drown the log.
  }

  onIncident(at: number, text: string): void {
    this.#notices.announce(at, text, 'bad');
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#output.write('\n');
  }

  #print(notice: Notice): void {
    const time = seconds(notice.at - this.#startedAt).padStart(7);
    const source = (notice.source ?? 'cluster').padEnd(16);
    this.#output.write(`${time}  ${source}  ${notice.text}\n`);
  }
}

type Cell = 'ok' | 'waiting' | 'failed' | 'none';

interface ClientRow {
  client: DemoClient;
  cells: Cell[];
  failedSinceTick: boolean;
  observedPodVersion: number;
}

const LABEL_WIDTH = 17;
const NOTICE_LINES = 6;
const MAX_WIDTH = 120;

/**
 * A compact view that redraws in place. Each client gets one row with one mark per time cell:
 * ✓ requests and watch events arrive, · a pod change is overdue, ✗ a request failed. Above the
 * rows sit the incident marker and a time axis, below them the last few notable events.
 */
class TerminalTimeline implements Timeline {
  readonly #setup: TimelineSetup;
  readonly #output: TimelineOutput;
  readonly #rows: ClientRow[];
  readonly #changes = new Map<string, Array<{ resourceVersion: number; at: number }>>();
  readonly #notices: NoticeLog;
  readonly #recent: Notice[] = [];
  readonly #cellMs: number;
  readonly #cellCount: number;
  readonly #timer: NodeJS.Timeout;
  #drawnLines = 0;
  #closed = false;

  constructor(setup: TimelineSetup, output: TimelineOutput) {
    this.#setup = setup;
    this.#output = output;
    this.#rows = setup.clients.map((client) => ({ client, cells: [], failedSinceTick: false, observedPodVersion: 0 }));
    this.#notices = new NoticeLog(setup.clients, setup.graceMs, setup.startedAt, (notice) => {
      this.#recent.push(notice);
      if (this.#recent.length > NOTICE_LINES) this.#recent.shift();
    });

    const width = Math.max(10, Math.min(output.columns ?? 80, MAX_WIDTH) - LABEL_WIDTH - 1);
    this.#cellMs = Math.max(1, Math.ceil(setup.durationMs / 1000 / width)) * 1000;
    this.#cellCount = Math.ceil(setup.durationMs / this.#cellMs);

    output.write(`${setup.header.join('\n')}\n\n`);
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
  }

  onClientEvent(event: KubeletEvent): void {
    this.#notices.onEvent(event);
    const row = this.#rows.find((candidate) => candidate.client.name === event.client);
    if (row === undefined) return;

    if (event.type === 'request' && !event.ok) row.failedSinceTick = true;
    if (event.type === 'watch-event') row.observedPodVersion = Math.max(row.observedPodVersion, Number(event.resourceVersion));
    if (event.type === 'pods-listed') {
      for (const version of event.podVersions) row.observedPodVersion = Math.max(row.observedPodVersion, Number(version));
    }
  }

  onPodChange(nodeName: string, resourceVersion: number, at: number): void {
    const changes = this.#changes.get(nodeName) ?? [];
    changes.push({ resourceVersion, at });
    this.#changes.set(nodeName, changes);
  }

  onIncident(at: number, text: string): void {
    this.#notices.announce(at, text, 'bad');
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#tick();
    this.#output.write('\n');
  }

  #tick(): void {
    const now = Date.now();
    this.#notices.check(now);
    const index = Math.min(Math.floor((now - this.#setup.startedAt) / this.#cellMs), this.#cellCount - 1);

    for (const row of this.#rows) {
      const state: Cell = row.failedSinceTick ? 'failed' : this.#isWaiting(row, now) ? 'waiting' : 'ok';
      row.failedSinceTick = false;
      while (row.cells.length <= index) row.cells.push('none');
      row.cells[index] = worse(row.cells[index]!, state);
    }
    this.#draw(now);
  }

  /** True when a pod change for the client's node is older than STALE_AFTER_MS and not yet seen. */
  #isWaiting(row: ClientRow, now: number): boolean {
    const changes = this.#changes.get(row.client.nodeName) ?? [];
    for (let i = changes.length - 1; i >= 0; i--) {
      if (now - changes[i]!.at >= STALE_AFTER_MS) return changes[i]!.resourceVersion > row.observedPodVersion;
    }
    return false;
  }

  #draw(now: number): void {
    const lines = [
      `${'elapsed'.padEnd(LABEL_WIDTH)}${seconds(Math.min(now - this.#setup.startedAt, this.#setup.durationMs))} of ${seconds(this.#setup.durationMs)}`,
      this.#incidentRow(),
      this.#axis(),
      ...this.#rows.map((row) => `${row.client.label.padEnd(LABEL_WIDTH)}${row.cells.map((cell) => this.#mark(cell)).join('')}`),
      `${''.padEnd(LABEL_WIDTH)}${this.#paint('✓', 'green')} ok  ${this.#paint('·', 'yellow')} pod change overdue  ${this.#paint('✗', 'red')} request failed`,
      '',
      ...this.#recent.map((notice) => this.#noticeLine(notice)),
    ];

    let text = this.#drawnLines > 0 ? `\x1b[${this.#drawnLines}F` : '';
    for (const line of lines) text += `\x1b[2K${line}\n`;
    this.#output.write(text);
    this.#drawnLines = lines.length;
  }

  #incidentRow(): string {
    const cell = Math.min(Math.floor(this.#setup.incidentAtMs / this.#cellMs), this.#cellCount - 1);
    return `${'incident'.padEnd(LABEL_WIDTH)}${' '.repeat(cell)}▼`;
  }

  #axis(): string {
    const cellSeconds = this.#cellMs / 1000;
    const axis = Array.from({ length: this.#cellCount }, () => ' ');
    for (let cell = 0; cell < this.#cellCount; cell += 10) {
      const label = `${cell * cellSeconds}s`;
      for (let i = 0; i < label.length && cell + i < this.#cellCount; i++) axis[cell + i] = label[i]!;
    }
    return `${'time'.padEnd(LABEL_WIDTH)}${axis.join('')}`;
  }

  #mark(cell: Cell): string {
    switch (cell) {
      case 'ok':
        return this.#paint('✓', 'green');
      case 'waiting':
        return this.#paint('·', 'yellow');
      case 'failed':
        return this.#paint('✗', 'red');
      case 'none':
        return ' ';
    }
  }

  #noticeLine(notice: Notice): string {
    const time = seconds(notice.at - this.#setup.startedAt).padStart(7);
    const source = (notice.source ?? 'cluster').padEnd(16);
    let color: 'red' | 'green' | undefined;
    if (notice.severity === 'bad') color = 'red';
    if (notice.severity === 'good') color = 'green';
    const line = `${time}  ${source}  ${notice.text}`;
    const width = this.#output.columns ?? 80;
    const clipped = line.length > width - 1 ? `${line.slice(0, width - 2)}…` : line;
    return color !== undefined ? this.#paint(clipped, color) : clipped;
  }

  #paint(text: string, color: 'green' | 'yellow' | 'red'): string {
    if (!this.#output.color) return text;
    const code = { green: 32, yellow: 33, red: 31 }[color];
    return `\x1b[${code}m${text}\x1b[0m`;
  }
}

const CELL_RANK: Record<Cell, number> = { none: 0, ok: 1, waiting: 2, failed: 3 };

function worse(a: Cell, b: Cell): Cell {
  return CELL_RANK[a] >= CELL_RANK[b] ? a : b;
}
