// The event loop's delay as a Prometheus histogram, from Node's native sampler
// (perf_hooks.monitorEventLoopDelay: a libuv timer due every `resolutionMs`, no JavaScript per
// tick; a JavaScript interval timer measured here costs half as much again as the native one).
//
// The native sampler records the whole interval between its ticks, so an idle loop reads the
// resolution itself (10 ms): the delay is that interval minus the resolution. Its HDR histogram is
// never reset (a reset also drops the tick after it: a stall right after a scrape would be lost);
// at scrape time the cumulative bucket counts are read from it by searching its percentiles
// (about 30 lookups of a few microseconds per bucket). The name, help and buckets are declared in
// metrics.ts.
import { monitorEventLoopDelay, type ELDHistogram } from 'node:perf_hooks'
import type { MetricValueWithName, Registry } from 'prom-client'

export interface DelayHistogramSpec { readonly name: string; readonly help: string; readonly buckets: readonly number[]; readonly resolutionMs: number }

export class EventLoopDelayHistogram {
  private readonly spec: DelayHistogramSpec
  private monitor: ELDHistogram | undefined

  constructor(registry: Registry, spec: DelayHistogramSpec) {
    this.spec = spec
    const { name, help } = spec
    const metric = {
      name, help, type: 'histogram', aggregator: 'sum',
      get: async () => ({ name, help, type: 'histogram', aggregator: 'sum', values: this.values() }),
      reset: () => {},
    }
    // As in request-series.ts: the Registry reads a metric through name and get().
    registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0])
  }

  /** Starts the native sampler; returns the stop. Nothing is exported before. */
  start(): () => void {
    const monitor = monitorEventLoopDelay({ resolution: this.spec.resolutionMs })
    monitor.enable()
    this.monitor = monitor
    return () => monitor.disable()
  }

  private values(): MetricValueWithName<string>[] {
    const monitor = this.monitor
    if (!monitor) return []
    const { name, buckets, resolutionMs } = this.spec
    const count = monitor.count
    const resolutionNs = resolutionMs * 1e6
    const values: MetricValueWithName<string>[] = []
    for (const bound of buckets) values.push({ metricName: `${name}_bucket`, labels: { le: bound }, value: countAtMost(monitor, count, bound * 1e9 + resolutionNs) })
    values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: count })
    values.push({ metricName: `${name}_sum`, labels: {}, value: count === 0 ? 0 : Math.max(0, monitor.mean - resolutionNs) * count / 1e9 })
    values.push({ metricName: `${name}_count`, labels: {}, value: count })
    return values
  }
}

/** How many of the histogram's `count` samples are at most `valueNs`: a binary search of its percentiles. */
function countAtMost(histogram: ELDHistogram, count: number, valueNs: number): number {
  if (count === 0 || histogram.min > valueNs) return 0
  if (histogram.max <= valueNs) return count
  let low = 0
  let high = 100
  for (let step = 0; step < 30; step++) {
    const middle = (low + high) / 2
    if (histogram.percentile(middle) <= valueNs) low = middle
    else high = middle
  }
  return Math.round((low / 100) * count)
}
