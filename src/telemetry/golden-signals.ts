// Golden signals (requests/s, success rate, p50/p99 latency) from two scrapes of the nodes'
// /metrics: the difference of weft_requests_total and of weft_request_duration_seconds' buckets
// between them, grouped by destination service or destination workload. What `weft top` shows.
// Only reporter="source" series count: a request the destination's node also serves request by
// request (inbound authorization) would otherwise count twice.
import type { Sample } from './prometheus-text.ts'

/** One scrape of one node: its samples, tagged with the node they came from. */
export interface NodeScrape { readonly node: string; readonly samples: readonly Sample[] }

export interface GoldenSignals {
  /** `namespace/name` of the service or workload (`unknown`: no endpoint answered). */
  readonly name: string
  readonly requests: number
  readonly requestsPerSecond: number
  /** Share of requests that got a response that is not 5xx (and, for gRPC, grpc-status OK); null with no requests. */
  readonly successRate: number | null
  /** Seconds, interpolated within the histogram's buckets as Prometheus' histogram_quantile does; null with no requests. */
  readonly p50: number | null
  readonly p99: number | null
}

export interface GoldenSignalsReport {
  readonly intervalSeconds: number
  readonly services: readonly GoldenSignals[]
  readonly workloads: readonly GoldenSignals[]
}

const REQUESTS = 'weft_requests_total'
const BUCKETS = 'weft_request_duration_seconds_bucket'

/** A request succeeded: it got a status (0: none) below 500 and, when gRPC, grpc-status 0. */
function succeeded(labels: Readonly<Record<string, string>>): boolean {
  const code = Number(labels.response_code)
  const grpc = labels.grpc_status
  return code > 0 && code < 500 && (grpc === undefined || grpc === 'none' || grpc === '0')
}

function seriesKey(node: string, sample: Sample): string {
  return `${node}\u0000${sample.name}\u0000${Object.entries(sample.labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join('\u0000')}`
}

/** Each series' increase from `before` to `after`; a counter that went down (a restarted daemon) counts from zero. */
function increases(before: readonly NodeScrape[], after: readonly NodeScrape[]): { labels: Readonly<Record<string, string>>; name: string; increase: number }[] {
  const previous = new Map<string, number>()
  for (const scrape of before) {
    for (const sample of scrape.samples) if (sample.name === REQUESTS || sample.name === BUCKETS) previous.set(seriesKey(scrape.node, sample), sample.value)
  }
  const result: { labels: Readonly<Record<string, string>>; name: string; increase: number }[] = []
  for (const scrape of after) {
    for (const sample of scrape.samples) {
      if ((sample.name !== REQUESTS && sample.name !== BUCKETS) || sample.labels.reporter !== 'source') continue
      const was = previous.get(seriesKey(scrape.node, sample)) ?? 0
      const increase = sample.value >= was ? sample.value - was : sample.value
      // Empty buckets stay: each bucket's bound is the next one's lower bound for the quantile.
      if (increase > 0 || sample.name === BUCKETS) result.push({ labels: sample.labels, name: sample.name, increase })
    }
  }
  return result
}

/** histogram_quantile over cumulative buckets (`le` → count), linear within the bucket. */
export function histogramQuantile(q: number, buckets: ReadonlyMap<number, number>): number | null {
  const sorted = [...buckets].sort(([a], [b]) => a - b)
  const total = sorted.at(-1)?.[1] ?? 0
  if (total <= 0) return null
  const rank = q * total
  let lowerBound = 0
  let lowerCount = 0
  for (const [le, count] of sorted) {
    if (count >= rank) {
      // The +Inf bucket has no upper bound: the answer is the highest finite bound, as Prometheus does.
      if (le === Infinity) return lowerBound
      return lowerBound + (le - lowerBound) * ((rank - lowerCount) / Math.max(count - lowerCount, Number.MIN_VALUE))
    }
    lowerBound = le
    lowerCount = count
  }
  return lowerBound
}

function group(changes: ReturnType<typeof increases>, label: 'destination_service' | 'destination_workload', seconds: number): GoldenSignals[] {
  const groups = new Map<string, { requests: number; ok: number; buckets: Map<number, number> }>()
  const entry = (name: string): { requests: number; ok: number; buckets: Map<number, number> } => {
    let found = groups.get(name)
    if (!found) groups.set(name, (found = { requests: 0, ok: 0, buckets: new Map() }))
    return found
  }
  for (const change of changes) {
    const name = change.labels[label] ?? 'unknown'
    const into = entry(name)
    if (change.name === REQUESTS) {
      into.requests += change.increase
      if (succeeded(change.labels)) into.ok += change.increase
    } else {
      const le = change.labels.le === '+Inf' ? Infinity : Number(change.labels.le)
      into.buckets.set(le, (into.buckets.get(le) ?? 0) + change.increase)
    }
  }
  return [...groups].filter(([, g]) => g.requests > 0).sort(([a], [b]) => a.localeCompare(b)).map(([name, g]) => ({
    name,
    requests: g.requests,
    requestsPerSecond: g.requests / seconds,
    successRate: g.ok / g.requests,
    p50: histogramQuantile(0.5, g.buckets),
    p99: histogramQuantile(0.99, g.buckets),
  }))
}

/** The golden signals of what happened between two scrapes `seconds` apart. */
export function goldenSignals(before: readonly NodeScrape[], after: readonly NodeScrape[], seconds: number): GoldenSignalsReport {
  const changes = increases(before, after)
  return { intervalSeconds: seconds, services: group(changes, 'destination_service', seconds), workloads: group(changes, 'destination_workload', seconds) }
}
