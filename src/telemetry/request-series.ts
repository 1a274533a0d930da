// The per-request metrics' storage: one record per label set holding everything the request
// counter, the duration histogram and the two byte counters need, so counting a request is one
// map lookup and a few additions — prom-client's own Counter and Histogram hash and validate the
// labels on every call, four times per request (measured in docs/benchmarks.md). The metrics
// are read out in prom-client's shape at scrape time, so they sit in the node's Registry and
// print like any other metric. The names, help and labels are declared in metrics.ts.
import type { MetricValue, MetricValueWithName, Registry } from 'prom-client'

interface Series<L> {
  readonly labels: L
  requests: number
  durationSum: number
  /** Observations per bucket (not cumulative); the last one is +Inf. */
  readonly buckets: Float64Array
  requestBytes: number
  responseBytes: number
}

export interface SeriesMetricSpec { name: string; help: string }

export class RequestSeries<N extends string, L extends Readonly<Record<N, string>>> {
  private readonly series = new Map<string, Series<L>>()
  private readonly labelNames: readonly N[]
  private readonly bounds: readonly number[]

  constructor(labelNames: readonly N[], bounds: readonly number[]) {
    this.labelNames = labelNames
    this.bounds = bounds
  }

  record(labels: L, durationS: number, requestBytes: number, responseBytes: number): void {
    let key = ''
    for (const name of this.labelNames) key += labels[name] + '\u0000'
    let s = this.series.get(key)
    if (s === undefined) {
      // The label object is kept for the scrape: copy it, the caller may reuse its own.
      const copy = {} as Record<N, string>
      for (const name of this.labelNames) copy[name] = labels[name]
      s = { labels: copy as L, requests: 0, durationSum: 0, buckets: new Float64Array(this.bounds.length + 1), requestBytes: 0, responseBytes: 0 }
      this.series.set(key, s)
    }
    if (!(durationS >= 0)) durationS = 0 // a clock step back or NaN must not poison the sum
    s.requests++
    s.durationSum += durationS
    let b = 0
    while (b < this.bounds.length && durationS > this.bounds[b]!) b++
    s.buckets[b]!++
    s.requestBytes += requestBytes
    s.responseBytes += responseBytes
  }

  get size(): number { return this.series.size }

  /** A counter of one of the series' fields, registered in `registry`. */
  counter(registry: Registry, spec: SeriesMetricSpec, field: 'requests' | 'requestBytes' | 'responseBytes'): void {
    this.register(registry, spec, 'counter', () => {
      const values: MetricValue<string>[] = []
      for (const s of this.series.values()) values.push({ labels: { ...s.labels }, value: s[field] })
      return values
    })
  }

  /** The duration histogram (`_bucket` with `le`, `_sum`, `_count`), registered in `registry`. */
  histogram(registry: Registry, spec: SeriesMetricSpec): void {
    this.register(registry, spec, 'histogram', () => {
      const values: MetricValueWithName<string>[] = []
      for (const s of this.series.values()) {
        let cumulative = 0
        for (let b = 0; b < s.buckets.length; b++) {
          cumulative += s.buckets[b]!
          values.push({ metricName: `${spec.name}_bucket`, labels: { ...s.labels, le: b < this.bounds.length ? this.bounds[b]! : '+Inf' }, value: cumulative })
        }
        values.push({ metricName: `${spec.name}_sum`, labels: { ...s.labels }, value: s.durationSum })
        values.push({ metricName: `${spec.name}_count`, labels: { ...s.labels }, value: s.requests })
      }
      return values
    })
  }

  private register(registry: Registry, spec: SeriesMetricSpec, type: 'counter' | 'histogram', values: () => MetricValue<string>[]): void {
    const metric = {
      name: spec.name, help: spec.help, type, aggregator: 'sum',
      get: async () => ({ name: spec.name, help: spec.help, type, aggregator: 'sum', values: values() }),
      reset: () => this.series.clear(),
    }
    // The Registry reads a metric through name and get() (reset() on clear); it types its argument
    // as its own Metric class, whose internals this does not have.
    registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0])
  }
}
