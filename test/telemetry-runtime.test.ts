// The node daemon's own stalls as metrics (src/telemetry/metrics.ts, sampleRuntime): how late the
// event loop runs a timer, and every garbage collection V8 reports with its main-thread time. Real
// timers and real collections; a busy loop stands in for a stall.
import t from 'tap'
import { PerformanceObserver } from 'node:perf_hooks'
import { setTimeout as sleep, setImmediate as nextTurn } from 'node:timers/promises'

import { NodeMetrics } from '../src/telemetry/metrics.ts'
import { parsePrometheusText, sumSamples, type Sample } from '../src/telemetry/prometheus-text.ts'

async function scrape(metrics: NodeMetrics): Promise<Sample[]> {
  return parsePrometheusText(await metrics.registry.metrics())
}

t.test('a stall of the event loop is recorded as a delay sample of about its length', async (t) => {
  const metrics = new NodeMetrics('node1', () => undefined)
  t.teardown(metrics.sampleRuntime())
  await sleep(50) // a few ticks of an idle loop
  const blockedUntil = performance.now() + 150
  while (performance.now() < blockedUntil) { /* the stall */ }
  await sleep(30)
  const samples = await scrape(metrics)
  const count = sumSamples(samples, 'weft_event_loop_delay_seconds_count', {})
  const atMost100ms = sumSamples(samples, 'weft_event_loop_delay_seconds_bucket', { le: '0.1' })
  t.ok(count >= 3, `one sample per tick (${count})`)
  // The timer due during the stall ran at least 150 ms after the tick before it: 140 ms or more late.
  t.ok(count - atMost100ms >= 1, 'the stall is a sample above 100 ms')
  t.ok(sumSamples(samples, 'weft_event_loop_delay_seconds_bucket', { le: '0.005' }) >= 1, 'an idle tick reads (almost) no delay: the 10 ms between ticks is not counted as delay')
  t.equal(sumSamples(samples, 'weft_event_loop_delay_seconds_bucket', { le: '+Inf' }), count)
})

t.test('every garbage collection is counted by kind, however the observer batches them', async (t) => {
  const metrics = new NodeMetrics('node1', () => undefined)
  const stop = metrics.sampleRuntime()
  let reported = 0
  const observer = new PerformanceObserver((list) => { reported += list.getEntries().length })
  observer.observe({ entryTypes: ['gc'] })
  let kept: object[] = []
  for (let round = 0; round < 40; round++) {
    for (let i = 0; i < 100_000; i++) kept.push({ i, text: `item ${i}` })
    kept = []
    await nextTurn()
  }
  await sleep(50) // the last entries delivered to both observers
  stop()
  observer.disconnect()
  const samples = await scrape(metrics)
  const counted = sumSamples(samples, 'weft_gc_duration_seconds_count', {})
  t.ok(reported >= 5, `the allocations caused collections (${reported})`)
  t.equal(counted, reported, 'each collection V8 reported is counted once')
  t.ok(sumSamples(samples, 'weft_gc_duration_seconds_count', { kind: 'minor' }) > 0, 'scavenges are kind minor')
  t.ok(sumSamples(samples, 'weft_gc_duration_seconds_sum', {}) > 0, 'with the time they took')
})

t.test("prom-client's event-loop and GC metrics are replaced; its other process metrics stay", async (t) => {
  const metrics = new NodeMetrics('node1', () => undefined)
  t.teardown(metrics.sampleRuntime())
  const names = new Set((await scrape(metrics)).map((sample) => sample.name))
  t.notOk([...names].some((name) => name.startsWith('weft_process_nodejs_eventloop_lag')), 'no nodejs_eventloop_lag_* gauges')
  t.notOk([...names].some((name) => name.startsWith('weft_process_nodejs_gc_duration_seconds')), 'no nodejs_gc_duration_seconds')
  t.ok(names.has('weft_process_process_cpu_user_seconds_total'))
  t.ok(names.has('weft_process_nodejs_heap_size_used_bytes'))
  t.ok(names.has('weft_event_loop_delay_seconds_count'))
})
