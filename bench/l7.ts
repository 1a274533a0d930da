// The weft L7 row: the same lab and servers as weft L4, but the client dials a Service VIP whose
// port declares `appProtocol: http`, so the node proxy terminates HTTP/1.1 (keep-alive to the
// client) and runs each request through the L7 pipeline (src/l7: route, EWMA pick, retry policy,
// metrics, access log), forwarding over pooled keep-alive connections (same node) or through the
// HTTP/2 CONNECT tunnel to the other node's proxy (cross node; that proxy splices to the pod).
//
// The Services are configuration like any other: published on the lab's NATS as operator, and
// the row waits until both node daemons report that revision applied with neither rejected.
// The row is only L7 if the requests took the L7 path, so each slice reads the client node's
// weft_requests_total for the Service before and after and the harness fails the row when it did
// not grow by the requests that were answered. At the end of the run the harness counts the
// access log lines the daemon wrote for each Service (to its log: stdout is the default
// destination), so the report says how much logging the measured numbers include.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs'
import { DEFAULTS } from '../src/config/node-config.ts'
import { resourceKey } from '../src/config/resources/index.ts'
import { ADMIN_PORT, type Lab } from '../src/lab/index.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { HTTP_PORT } from './servers.ts'
import { getText, waitForStatuses } from './node-status.ts'
import type { PathId } from './report.ts'

const STATUS_TIMEOUT_MS = 15_000

/** The port every L7 Service listens on (the VIP's port the client dials). */
export const L7_SERVICE_PORT = 80

/** Per path: the Service the weft L7 row dials, its VIP (inside the lab's 198.19.0.0/16 VIP range)
 *  and the server pod it selects (by the `app` label the topology gives srv1 and srv2). */
export const L7_SERVICES: Record<PathId, { name: string; vip: string; pod: string }> = {
  'same-node': { name: 'bench-l7-srv1', vip: '198.19.0.81', pod: 'srv1' },
  'cross-node': { name: 'bench-l7-srv2', vip: '198.19.0.82', pod: 'srv2' },
}

/** The label that the L7 Services select their server pod by. */
export const l7PodLabels = (pod: string): Record<string, string> => ({ app: `bench-${pod}` })

export function l7ServiceResources(namespace: string): Array<{ key: string; resource: Record<string, unknown> }> {
  return Object.values(L7_SERVICES).map(({ name, vip, pod }) => ({
    key: resourceKey({ kind: 'Service', namespace, name }),
    resource: {
      apiVersion: 'v1', kind: 'Service', metadata: { name, namespace },
      spec: { clusterIP: vip, selector: l7PodLabels(pod), ports: [{ name: 'http', port: L7_SERVICE_PORT, targetPort: HTTP_PORT, appProtocol: 'http' }] },
    },
  }))
}

/** Publishes the L7 Services and waits until every node daemon has applied them (none rejected). */
export async function applyL7Services(lab: Lab, namespace: string): Promise<void> {
  const resources = l7ServiceResources(namespace)
  const bus = await lab.connect('operator')
  let revision = 0
  try {
    for (const { key, resource } of resources) revision = await bus.putResource(key, resource)
  } finally {
    await bus.close()
  }
  const keys = resources.map((r) => r.key)
  await waitForStatuses(lab, 'the weft L7 row\'s Services were not applied', (statuses) => {
    const problems: string[] = []
    for (const node of lab.nodes) {
      const status = statuses.get(node.name)
      if (!status) { problems.push(`${node.name}: no status yet`); continue }
      const rejected = status.rejected.filter((r) => keys.includes(r.key))
      if (rejected.length > 0) throw new Error(`node ${node.name} rejected the weft L7 row's Services: ${rejected.map((r) => `${r.key}: ${r.reason}`).join('; ')}`)
      if (status.revision < revision) problems.push(`${node.name}: at revision ${status.revision}, waiting for ${revision}`)
    }
    return problems
  }, STATUS_TIMEOUT_MS)
}

/** weft_requests_total for one destination service on a node's admin /metrics. */
export async function l7RequestsCounted(address: string, destinationService: string): Promise<number> {
  const text = await getText(address, ADMIN_PORT, '/metrics')
  return sumSamples(parsePrometheusText(text), 'weft_requests_total', { destination_service: destinationService })
}

/**
 * What node1's runtime did over the run, from its /metrics histograms: the event-loop delay
 * (weft_event_loop_delay_seconds: the p99 and the largest bucket reached) and the garbage
 * collections by kind (count, total and longest pause): where a tail latency comes from.
 */
export async function runtimeSummary(address: string): Promise<string> {
  const samples = parsePrometheusText(await getText(address, ADMIN_PORT, '/metrics'))
  const ms = (seconds: number): string => (seconds * 1000 >= 10 ? `${(seconds * 1000).toFixed(0)} ms` : `${Number((seconds * 1000).toPrecision(2))} ms`)
  /** Cumulative buckets of one histogram series: [upper bound, count]. */
  const buckets = (name: string, match: Record<string, string>): Array<[number, number]> => samples
    .filter((x) => x.name === `${name}_bucket` && Object.entries(match).every(([k, v]) => x.labels[k] === v))
    .map((x): [number, number] => [x.labels.le === '+Inf' ? Infinity : Number(x.labels.le), x.value])
    .sort((a, b) => a[0] - b[0])
  const quantile = (cumulative: Array<[number, number]>, q: number): number => {
    const total = cumulative.at(-1)?.[1] ?? 0
    return cumulative.find(([, count]) => count >= q * total)?.[0] ?? NaN
  }
  const largest = (cumulative: Array<[number, number]>): number => {
    const total = cumulative.at(-1)?.[1] ?? 0
    return cumulative.find(([, count]) => count === total)?.[0] ?? NaN
  }
  const loop = buckets('weft_event_loop_delay_seconds', {})
  const parts = [`event-loop delay p99 ≤ ${ms(quantile(loop, 0.99))}, longest ≤ ${ms(largest(loop))} (${(loop.at(-1)?.[1] ?? 0).toLocaleString('en-US')} samples)`]
  for (const kind of ['minor', 'major', 'incremental']) {
    const gc = buckets('weft_gc_duration_seconds', { kind })
    const count = gc.at(-1)?.[1] ?? 0
    if (count === 0) continue
    const total = sumSamples(samples, 'weft_gc_duration_seconds_sum', { kind })
    parts.push(`${kind} GC ${count.toLocaleString('en-US')}× (${ms(total)} in all, longest ≤ ${ms(largest(gc))})`)
  }
  return parts.join('; ')
}

/** The daemon's access log setting: its command line's --access-log / --access-log-sample, else
 *  the defaults (src/config/node-config.ts). */
export function accessLogSetting(pid: number | undefined): { destination: string; sampleRate: number; fromDefaults: boolean } {
  let argv: string[] = []
  try { if (pid) argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0') } catch { /* gone: say the defaults */ }
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag)
    if (i >= 0) return argv[i + 1]
    return argv.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1)
  }
  const destination = value('--access-log')
  const sample = value('--access-log-sample')
  return {
    destination: destination ?? DEFAULTS.accessLog,
    sampleRate: sample === undefined ? DEFAULTS.accessLogSample : Number(sample),
    fromDefaults: destination === undefined && sample === undefined,
  }
}

/** Access log lines (`"type":"access"`) in a log file, by their destinationService. Read in
 *  chunks: a default-profile run logs some 100,000 requests. */
export function accessLogLinesByService(file: string): Map<string, number> {
  const counts = new Map<string, number>()
  let fd: number
  try { fd = openSync(file, 'r') } catch { return counts }
  try {
    const buffer = Buffer.alloc(1 << 20)
    let carry = ''
    const count = (line: string): void => {
      if (!line.includes('"type":"access"')) return
      const service = /"destinationService":"([^"]*)"/.exec(line)?.[1] ?? 'unknown'
      counts.set(service, (counts.get(service) ?? 0) + 1)
    }
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null)
      if (n <= 0) break
      const lines = (carry + buffer.toString('utf8', 0, n)).split('\n')
      carry = lines.pop() ?? ''
      for (const line of lines) count(line)
    }
    count(carry)
    return counts
  } finally {
    closeSync(fd)
  }
}
