// The report: its versioned JSON shape (one source of truth for the harness, the Markdown, the
// plot and the test), the Markdown table and the SVG plot (written by hand, no dependencies).
import type { BenchOptions } from './harness.ts'

/** Bump when a field changes meaning or is removed; adding fields keeps the version. */
export const SCHEMA_VERSION = 1

export type ConfigurationId = 'direct' | 'weft-l4' | 'weft-l7' | 'sidecar' | 'nginx' | 'haproxy'
export type PathId = 'same-node' | 'cross-node'
export type WorkloadId = 'http' | 'echo'

export interface Percentiles { p50: number; p90: number; p99: number; p999: number; max: number; mean: number }

export interface ConfigurationInfo {
  id: ConfigurationId
  title: string
  /** false: reported, not measured (see reason). */
  available: boolean
  reason?: string
  /** What the hop is, what it measures and what it does not. */
  description: string
}

export interface OpenLoopResult {
  slices: number
  /** Requests scheduled in the measured parts (the fixed rate times the time). */
  scheduled: number
  ok: number
  errors: { badStatus: number; connectionErrors: number; timeouts: number; total: number }
  /** Latency from the intended send time (no coordinated omission), microseconds. */
  latencyUs: Percentiles
  /** From the actual write to the full answer, microseconds. */
  serviceTimeUs: Percentiles
  /** This configuration's latency minus direct's on the same path and workload; null for direct. */
  addedOverDirectUs: Omit<Percentiles, 'max' | 'mean'> | null
  /** Worst lateness of the generator's own timer over the slices (microseconds). */
  maxTimerLagUs: number
}

export interface ClosedLoopResult {
  tool: string
  connections: number
  seconds: number
  requests: number
  errors: number
  requestsPerSecond: number
}

export interface ProxyCost {
  /** Which processes were counted (e.g. `weft node1`, `nginx master+worker`). */
  processes: string[]
  /** CPU seconds (user + system, all counted processes) per 1,000 requests in the open-loop slices. */
  cpuSecondsPer1000Requests: number
  /** Largest total RSS of the counted processes, sampled after each open-loop slice. */
  rssBytes: number
}

export interface ScenarioResult {
  configuration: ConfigurationId
  path: PathId
  workload: WorkloadId
  status: 'measured' | 'not-available' | 'not-applicable' | 'failed'
  reason?: string
  /** Set when any request failed: the numbers stand, with this warning next to them. */
  flagged: boolean
  openLoop: OpenLoopResult | null
  closedLoop: ClosedLoopResult | null
  proxy: ProxyCost | null
  /** weft L7 rows only: that the requests took the L7 path, and how much was logged. */
  l7?: L7PathCheck
}

/** What the client node's L7 proxy saw of a weft L7 row's requests, over all its slices. */
export interface L7PathCheck {
  /** Open loop (warm-up included) and closed loop (wrk's completed requests). */
  requestsSent: number
  /** Growth of weft_requests_total for the row's Service on the client's node. */
  requestsCounted: number
  /** Access log lines (`"type":"access"`) the client's node wrote for the Service in the run. */
  accessLogLines: number
}

export interface DensityPoint { pods: number; processes: number; rssBytes: number; requests: number; errors: number }

export interface DensityResult {
  status: 'measured' | 'failed' | 'skipped'
  reason?: string
  method: string
  /** weft: one node proxy for all pods; sidecar: one weft proxy per pod (RSS summed). */
  weft: DensityPoint[]
  sidecar: DensityPoint[]
}

export interface BenchReport {
  schemaVersion: typeof SCHEMA_VERSION
  tool: 'weft-bench'
  startedAt: string
  finishedAt: string
  durationSeconds: number
  machine: { hostname: string; kernel: string; cpus: number; cpuModel: string; memoryBytes: number; node: string; tools: Record<string, string>; loadAverageAtStart: number[]; loadAverageAtEnd: number[] }
  /** The run's options as given (see BenchOptions), plus the CPU pinning it used. */
  options: Omit<BenchOptions, 'onProgress' | 'labWaitSeconds' | 'runIds'> & {
    cpuPinning: { loadGenerator: string; everythingElse: string } | null
  }
  configurations: ConfigurationInfo[]
  results: ScenarioResult[]
  density: DensityResult
  /** Every warning in one list: errors seen, configurations not measured, failed steps. */
  flags: string[]
}

const us = (v: number): string => (v >= 10_000 ? `${(v / 1000).toFixed(1)} ms` : v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${Math.round(v)} µs`)
const signedUs = (v: number): string => (v < 0 ? `−${us(-v)}` : `+${us(v)}`)
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

/**
 * Each measured configuration next to haproxy on the same path and workload, as ratios (the way
 * weft's cost goals are stated): closed-loop throughput, proxy CPU per 1,000 requests, open-loop
 * p50 and p99, and the added p50 and p99 where haproxy's own is above zero (a ratio to a negative
 * or zero figure means nothing). Empty when haproxy was not measured for this workload.
 */
function ratiosToHaproxy(report: BenchReport, workload: string, titles: Map<ConfigurationId, string>): string[] {
  const rows = report.results.filter((x) => x.workload === workload && x.status === 'measured' && x.openLoop)
  const base = new Map(rows.filter((x) => x.configuration === 'haproxy').map((x) => [x.path, x]))
  if (base.size === 0) return []
  const ratio = (value: number | undefined, of: number | undefined): string => (value === undefined || of === undefined || !(of > 0) || value < 0 ? '—' : `${(value / of).toFixed(2)}×`)
  const lines = ['Ratios to haproxy on the same path (throughput: higher is better; the rest: lower is better):', '',
    '| configuration | path | max req/s | CPU s / 1k req | p50 | p99 | added p50 | added p99 |', '| --- | --- | --: | --: | --: | --: | --: | --: |']
  for (const r of rows) {
    const h = base.get(r.path)
    if (!h || r.configuration === 'haproxy' || r.configuration === 'direct') continue
    lines.push(`| ${titles.get(r.configuration) ?? r.configuration} | ${r.path} | ${ratio(r.closedLoop?.requestsPerSecond, h.closedLoop?.requestsPerSecond)} | ${ratio(r.proxy?.cpuSecondsPer1000Requests, h.proxy?.cpuSecondsPer1000Requests)} | ${ratio(r.openLoop!.latencyUs.p50, h.openLoop!.latencyUs.p50)} | ${ratio(r.openLoop!.latencyUs.p99, h.openLoop!.latencyUs.p99)} | ${ratio(r.openLoop!.addedOverDirectUs?.p50, h.openLoop!.addedOverDirectUs?.p50)} | ${ratio(r.openLoop!.addedOverDirectUs?.p99, h.openLoop!.addedOverDirectUs?.p99)} |`)
  }
  lines.push('')
  return lines
}

export function renderMarkdown(report: BenchReport): string {
  const titles = new Map(report.configurations.map((c) => [c.id, c.title]))
  const o = report.options
  const lines: string[] = []
  lines.push(`# weft benchmark (${report.options.profile}, ${report.startedAt})`, '')
  lines.push(`Machine: ${report.machine.cpus} × ${report.machine.cpuModel}, ${mib(report.machine.memoryBytes)} RAM, Linux ${report.machine.kernel}, Node ${report.machine.node}; load average ${report.machine.loadAverageAtStart.map((v) => v.toFixed(2)).join(' ')} at the start, ${report.machine.loadAverageAtEnd.map((v) => v.toFixed(2)).join(' ')} at the end (other work on the machine shows here).`)
  lines.push(`Open loop: ${o.rate} requests/s over ${o.connections} connections, ${o.rounds} interleaved round(s) of ${o.sliceSeconds} s per configuration (after ${o.warmupSeconds} s warm-up); latency from the intended send time. Closed loop: ${o.closedLoopConnections} connections, ${o.rounds} × ${o.closedLoopSeconds} s, wrk.`)
  lines.push(o.cpuPinning ? `CPU pinning: load generator on CPU ${o.cpuPinning.loadGenerator}, proxies and servers on CPU ${o.cpuPinning.everythingElse}.` : 'CPU pinning: none (one CPU).')
  lines.push(o.nodeFlags && o.nodeFlags.length > 0 ? `Node daemons: \`weft node\` with ${o.nodeFlags.join(' ')} added to the lab's flags (not the defaults).` : 'Node daemons: `weft node` with the lab\'s flags and the daemon\'s defaults.', '')
  for (const workload of o.workloads) {
    lines.push(`## ${workload === 'http' ? 'HTTP GET, 1 KB response' : 'TCP echo, 1 KB'}`, '')
    lines.push('| configuration | path | p50 | p90 | p99 | p99.9 | added p50 | added p99 | service p50 | service p99 | max req/s | proxy CPU s / 1k req | proxy RSS | requests | errors |')
    lines.push('| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |')
    for (const r of report.results.filter((x) => x.workload === workload)) {
      const name = titles.get(r.configuration) ?? r.configuration
      if (r.status !== 'measured' || !r.openLoop) {
        lines.push(`| ${name} | ${r.path} | ${r.status}: ${r.reason ?? ''} | | | | | | | | | | | | |`)
        continue
      }
      const l = r.openLoop.latencyUs
      const added = r.openLoop.addedOverDirectUs
      const errors = r.openLoop.errors.total + (r.closedLoop?.errors ?? 0)
      lines.push([
        '', `${name}${r.flagged ? ' ⚠' : ''}`, r.path, us(l.p50), us(l.p90), us(l.p99), us(l.p999),
        added ? signedUs(added.p50) : '—', added ? signedUs(added.p99) : '—',
        us(r.openLoop.serviceTimeUs.p50), us(r.openLoop.serviceTimeUs.p99),
        r.closedLoop ? Math.round(r.closedLoop.requestsPerSecond).toLocaleString('en-US') : '—',
        r.proxy ? r.proxy.cpuSecondsPer1000Requests.toFixed(3) : '—',
        r.proxy ? mib(r.proxy.rssBytes) : '—',
        String(r.openLoop.scheduled + (r.closedLoop?.requests ?? 0)), errors > 0 ? `**${errors}**` : '0', '',
      ].join(' | ').trim())
    }
    lines.push('')
    lines.push(...ratiosToHaproxy(report, workload, titles))
    const checked = report.results.filter((x) => x.workload === workload && x.l7)
    if (checked.length > 0) {
      const n = (v: number): string => v.toLocaleString('en-US')
      lines.push(`L7 path check (${titles.get('weft-l7') ?? 'weft-l7'}): ${checked.map((x) => `${x.path}: ${n(x.l7!.requestsSent)} requests sent, ${n(x.l7!.requestsCounted)} counted by the client node's L7 proxy (weft_requests_total), ${n(x.l7!.accessLogLines)} access log lines`).join('; ')}.`, '')
    }
  }
  lines.push('## Density: total proxy memory (RSS) on one node', '')
  const d = report.density
  if (d.status !== 'measured') lines.push(`${d.status}: ${d.reason ?? ''}`, '')
  if (d.weft.length > 0 || d.sidecar.length > 0) {
    lines.push('| pods | weft: one node proxy | sidecar: a weft proxy per pod | ratio |', '| --: | --: | --: | --: |')
    for (const pods of o.densityPods) {
      const w = d.weft.find((p) => p.pods === pods)
      const s = d.sidecar.find((p) => p.pods === pods)
      const ratio = w && s && w.rssBytes > 0 ? `${(s.rssBytes / w.rssBytes).toFixed(1)}×` : '—'
      const cell = (p: DensityPoint | undefined): string => (p ? `${mib(p.rssBytes)} (${p.processes} process${p.processes === 1 ? '' : 'es'}${p.errors ? `, **${p.errors} errors**` : ''})` : 'not measured')
      lines.push(`| ${pods} | ${cell(w)} | ${cell(s)} | ${ratio} |`)
    }
    lines.push('', d.method, '')
  }
  if (report.flags.length > 0) lines.push('## Flags', '', ...report.flags.map((f) => `- ${f}`), '')
  lines.push('## Configurations', '', ...report.configurations.map((c) => `- **${c.title}**${c.available ? '' : ` (not measured: ${c.reason})`}: ${c.description}`), '')
  return lines.join('\n')
}

/** Grouped bars, log scale: for each measured scenario, p50 / p90 / p99 / p99.9. */
export function renderSvg(report: BenchReport): string {
  const measured = report.results.filter((r) => r.status === 'measured' && r.openLoop)
  const titles = new Map(report.configurations.map((c) => [c.id, c.title]))
  const keys = ['p50', 'p90', 'p99', 'p999'] as const
  const colors = ['#4e79a7', '#59a14f', '#f28e2b', '#e15759']
  const rowHeight = 52
  const left = 260
  const width = 980
  const plotWidth = width - left - 40
  const top = 70
  const height = top + measured.length * rowHeight + 50
  const values = measured.flatMap((r) => keys.map((k) => r.openLoop!.latencyUs[k]))
  const minV = Math.max(1, Math.min(...values, 1e9))
  const maxV = Math.max(...values, 10)
  const lo = Math.floor(Math.log10(minV))
  const hi = Math.ceil(Math.log10(maxV))
  const x = (v: number): number => left + ((Math.log10(Math.max(v, 1)) - lo) / Math.max(1, hi - lo)) * plotWidth
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`)
  out.push(`<text x="${left}" y="24" font-size="15" font-weight="bold">Latency percentiles per configuration (open loop, ${report.options.rate} req/s, log scale)</text>`)
  keys.forEach((k, i) => {
    out.push(`<rect x="${left + i * 90}" y="38" width="12" height="12" fill="${colors[i]}"/><text x="${left + i * 90 + 16}" y="48">${k === 'p999' ? 'p99.9' : k}</text>`)
  })
  for (let e = lo; e <= hi; e++) {
    const gx = x(10 ** e)
    const label = e >= 6 ? `${10 ** (e - 6)} s` : e >= 3 ? `${10 ** (e - 3)} ms` : `${10 ** e} µs`
    out.push(`<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${height - 40}" stroke="#ddd"/><text x="${gx}" y="${height - 24}" text-anchor="middle">${label}</text>`)
  }
  measured.forEach((r, i) => {
    const y = top + i * rowHeight
    const label = `${titles.get(r.configuration) ?? r.configuration}, ${r.path}, ${r.workload}${r.flagged ? ' ⚠' : ''}`
    out.push(`<text x="${left - 8}" y="${y + 26}" text-anchor="end">${esc(label)}</text>`)
    keys.forEach((k, j) => {
      const v = r.openLoop!.latencyUs[k]
      out.push(`<rect x="${left}" y="${y + j * 11}" width="${Math.max(1, x(v) - left).toFixed(1)}" height="10" fill="${colors[j]}"><title>${esc(label)} ${k}: ${us(v)}</title></rect>`)
      out.push(`<text x="${(x(v) + 4).toFixed(1)}" y="${y + j * 11 + 9}" font-size="9" fill="#333">${us(v)}</text>`)
    })
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}
