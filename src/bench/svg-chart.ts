/**
 * A small SVG line chart for benchmark pages: panels side by side, each with its own x range and a
 * shared y scale, lines as polylines, plain text labels. It has no dependency and no script, so
 * the file renders the same on GitHub and in a browser.
 */

export interface ChartSeries {
  name: string;
  color: string;
  /** [x, y] points in data units, in ascending x. */
  points: Array<[number, number]>;
}

export interface ChartPanel {
  title: string;
  series: ChartSeries[];
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  panels: ChartPanel[];
}

const PANEL_WIDTH = 440;
const PANEL_HEIGHT = 280;
const MARGIN = { left: 70, right: 20, top: 60, bottom: 70 };
const GAP = 40;

export function renderLineChart(chart: LineChart): string {
  const width = MARGIN.left + chart.panels.length * PANEL_WIDTH + (chart.panels.length - 1) * GAP + MARGIN.right;
  const height = MARGIN.top + PANEL_HEIGHT + MARGIN.bottom;
  const yMax = niceCeiling(Math.max(1, ...chart.panels.flatMap((panel) => panel.series.flatMap((series) => series.points.map(([, y]) => y)))));

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(chart.title)}</text>`,
    `<text x="16" y="${MARGIN.top + PANEL_HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 16 ${MARGIN.top + PANEL_HEIGHT / 2})">${escapeXml(chart.yLabel)}</text>`,
  ];

  chart.panels.forEach((panel, index) => {
    const left = MARGIN.left + index * (PANEL_WIDTH + GAP);
    parts.push(renderPanel(panel, left, yMax, chart.xLabel));
  });

  const series = chart.panels[0]?.series ?? [];
  series.forEach((entry, index) => {
    const x = MARGIN.left + index * 220;
    const y = height - 16;
    parts.push(`<line x1="${x}" y1="${y - 4}" x2="${x + 24}" y2="${y - 4}" stroke="${entry.color}" stroke-width="2"/>`);
    parts.push(`<text x="${x + 30}" y="${y}">${escapeXml(entry.name)}</text>`);
  });

  parts.push('</svg>', '');
  return parts.join('\n');
}

function renderPanel(panel: ChartPanel, left: number, yMax: number, xLabel: string): string {
  const top = MARGIN.top;
  const xMax = niceCeiling(Math.max(1, ...panel.series.flatMap((series) => series.points.map(([x]) => x))));
  const px = (x: number) => left + (x / xMax) * PANEL_WIDTH;
  const py = (y: number) => top + PANEL_HEIGHT - (y / yMax) * PANEL_HEIGHT;
  const parts: string[] = [
    `<text x="${left + PANEL_WIDTH / 2}" y="${top - 12}" text-anchor="middle" font-size="13">${escapeXml(panel.title)}</text>`,
    `<rect x="${left}" y="${top}" width="${PANEL_WIDTH}" height="${PANEL_HEIGHT}" fill="none" stroke="#888"/>`,
  ];

  for (const tick of ticks(yMax)) {
    parts.push(`<line x1="${left}" y1="${fixed(py(tick))}" x2="${left + PANEL_WIDTH}" y2="${fixed(py(tick))}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${left - 6}" y="${fixed(py(tick) + 4)}" text-anchor="end">${formatTick(tick)}</text>`);
  }
  for (const tick of ticks(xMax)) {
    parts.push(`<line x1="${fixed(px(tick))}" y1="${top + PANEL_HEIGHT}" x2="${fixed(px(tick))}" y2="${top + PANEL_HEIGHT + 5}" stroke="#888"/>`);
    parts.push(`<text x="${fixed(px(tick))}" y="${top + PANEL_HEIGHT + 18}" text-anchor="middle">${formatTick(tick)}</text>`);
  }
  parts.push(`<text x="${left + PANEL_WIDTH / 2}" y="${top + PANEL_HEIGHT + 38}" text-anchor="middle">${escapeXml(xLabel)}</text>`);

  for (const series of panel.series) {
    const points = series.points.map(([x, y]) => `${fixed(px(x))},${fixed(py(y))}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${series.color}" stroke-width="1.5" points="${points}"/>`);
  }
  return parts.join('\n');
}

/** Rounds up to 1, 2 or 5 times a power of ten, so that axis ticks fall on round numbers. */
export function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  const mantissa = value / power;
  const step = mantissa <= 1 ? 1 : mantissa <= 2 ? 2 : mantissa <= 5 ? 5 : 10;
  return step * power;
}

function ticks(max: number): number[] {
  const step = max / 5;
  return Array.from({ length: 6 }, (_, index) => index * step);
}

function formatTick(value: number): string {
  if (value >= 1000) return `${Math.round(value / 100) / 10}k`;
  return String(Math.round(value * 10) / 10);
}

function fixed(value: number): string {
  return value.toFixed(1);
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
