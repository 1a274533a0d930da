// What telemetry costs per request, in isolation: a microbenchmark of what the L7 pipeline does
// for each finished request — nothing, the per-request metrics (NodeMetrics.recordRequest:
// counter, histogram, request and response bytes), and those plus an access log line at sample
// rate 1 and 0.01 to /dev/null (through the access log's own batching writer, as the daemon writes),
// and, for comparison, the same metrics kept by prom-client's Counter and Histogram.
// Label values cycle through a realistic mesh: 20 source workloads, 10 services with 3 workloads
// each, a few response codes, HTTP and gRPC — a few thousand series, as a busy node has.
// Prints ns/request (wall and process CPU, which includes the background writes) per scenario.
//   .weft/bin/node bench/telemetry-cost.ts [--requests 200000] [--rounds 5]
import { parseArgs } from 'node:util'
import { Counter, Histogram, Registry } from 'prom-client'
import { openAccessLog, type AccessLogEntry, type AccessLogWriter } from '../src/telemetry/access-log.ts'
import { NO_GRPC_STATUS, NodeMetrics, type RequestLabels, type RequestProtocol } from '../src/telemetry/metrics.ts'

const { values } = parseArgs({ options: { requests: { type: 'string', default: '200000' }, rounds: { type: 'string', default: '5' } } })
const N = Number(values.requests)
const ROUNDS = Number(values.rounds)
/**
 * Requests between yields to the event loop, so the log's background writes run as they would:
 * a busy proxy finishes a handful of requests per turn of the loop (each is its own I/O event).
 */
const YIELD_EVERY = 16

// The request mix: index i picks its labels from these, as the pipeline would get them.
const sources = Array.from({ length: 20 }, (_, i) => `default/client-${i}`)
const services = Array.from({ length: 10 }, (_, i) => `shop/svc-${i}`)
const workloads = services.map((s) => [0, 1, 2].map((w) => `${s}-v${w}`))
const outcomes: { code: string; grpc: string; protocol: RequestProtocol }[] = [
  ...Array<{ code: string; grpc: string; protocol: RequestProtocol }>(16).fill({ code: '200', grpc: NO_GRPC_STATUS, protocol: 'http' }),
  { code: '404', grpc: NO_GRPC_STATUS, protocol: 'http' }, { code: '503', grpc: NO_GRPC_STATUS, protocol: 'http' },
  { code: '200', grpc: '0', protocol: 'grpc' }, { code: '200', grpc: '0', protocol: 'grpc' },
  { code: '200', grpc: '14', protocol: 'grpc' }, { code: '200', grpc: '0', protocol: 'http2' },
]

function labelsOf(i: number): RequestLabels {
  const service = i % services.length
  const outcome = outcomes[(i >>> 3) % outcomes.length]!
  return {
    reporter: 'source', source_workload: sources[(i >>> 5) % sources.length]!, destination_service: services[service]!,
    destination_workload: workloads[service]![(i >>> 2) % 3]!, response_code: outcome.code, grpc_status: outcome.grpc, protocol: outcome.protocol,
  }
}

function entryOf(labels: RequestLabels, i: number, startMs: number): AccessLogEntry {
  return {
    start: new Date(startMs).toISOString(), durationMs: 1.25, protocol: labels.protocol, method: 'GET',
    authority: `${labels.destination_service.split('/')[1]}.shop:8080`, path: `/api/items/${i % 977}?page=2`,
    status: Number(labels.response_code), grpcStatus: labels.grpc_status === NO_GRPC_STATUS ? undefined : Number(labels.grpc_status),
    requestBytes: 0, responseBytes: 1024, sourceIp: `198.18.1.${(i % 200) + 2}`, sourceWorkload: labels.source_workload,
    destinationService: labels.destination_service, destinationWorkload: labels.destination_workload,
    endpoint: `198.18.2.${(i % 3) + 2}:8080`, retries: 0, requestId: `3f1c2a9e-8d4b-4c4e-9a51-${String(i).padStart(12, '0')}`,
    upstreamPath: 'direct',
  }
}

/**
 * The same four metrics kept by prom-client's own Counter and Histogram (what request-series.ts
 * replaces), for comparison.
 */
function promClientMetrics(): (labels: RequestLabels, durationS: number, requestBytes: number, responseBytes: number) => void {
  const registry = new Registry()
  const labelNames = ['reporter', 'source_workload', 'destination_service', 'destination_workload', 'response_code', 'grpc_status', 'protocol']
  const requests = new Counter({ name: 'requests_total', help: '-', labelNames, registers: [registry] })
  const duration = new Histogram({ name: 'request_duration_seconds', help: '-', labelNames, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry] })
  const requestBytes = new Counter({ name: 'request_bytes_total', help: '-', labelNames, registers: [registry] })
  const responseBytes = new Counter({ name: 'response_bytes_total', help: '-', labelNames, registers: [registry] })
  return (labels, durationS, req, res) => {
    requests.inc(labels)
    duration.observe(labels, durationS)
    requestBytes.inc(labels, req)
    responseBytes.inc(labels, res)
  }
}

interface Scenario { name: string; metrics: 'none' | 'weft' | 'prom-client'; sampleRate: number | undefined }
const scenarios: Scenario[] = [
  { name: 'nothing (labels built, nothing recorded)', metrics: 'none', sampleRate: undefined },
  { name: 'metrics (recordRequest)', metrics: 'weft', sampleRate: undefined },
  { name: 'metrics + access log, sample 1, /dev/null', metrics: 'weft', sampleRate: 1 },
  { name: 'metrics + access log, sample 0.01, /dev/null', metrics: 'weft', sampleRate: 0.01 },
  { name: '(comparison) the same metrics as prom-client Counter/Histogram', metrics: 'prom-client', sampleRate: undefined },
]

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** One round of one scenario: N requests, then the log written out. Returns ns per request. */
async function round(scenario: Scenario): Promise<{ wallNs: number; cpuNs: number; series: number }> {
  const metrics = new NodeMetrics('bench', () => undefined)
  const viaPromClient = promClientMetrics()
  const accessLog: AccessLogWriter | undefined = scenario.sampleRate === undefined
    ? undefined : openAccessLog({ destination: '/dev/null', sampleRate: scenario.sampleRate, node: 'bench' })
  let sink = 0
  const cpuStart = process.cpuUsage()
  const start = process.hrtime.bigint()
  const nowMs = Date.now()
  for (let i = 0; i < N; i++) {
    const labels = labelsOf(i)
    if (scenario.metrics === 'weft') metrics.recordRequest(labels, { durationS: 0.00125, requestBytes: 0, responseBytes: 1024 })
    else if (scenario.metrics === 'prom-client') viaPromClient(labels, 0.00125, 0, 1024)
    else sink += labels.response_code.length
    if (accessLog?.sampled()) accessLog.write(entryOf(labels, i, nowMs))
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldToLoop()
  }
  await accessLog?.close(60_000)
  const wallNs = Number(process.hrtime.bigint() - start)
  const cpu = process.cpuUsage(cpuStart)
  const series = scenario.metrics === 'weft' ? metrics.requestSeriesCount : 0
  if (sink < 0) console.log(sink) // keeps the baseline's work from being optimised away
  return { wallNs: wallNs / N, cpuNs: ((cpu.user + cpu.system) * 1000) / N, series }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

console.error(`telemetry cost: ${N} requests per round, ${ROUNDS} rounds (after one warm-up round) per scenario; Node ${process.version}`)
const results: { name: string; wallNs: number; cpuNs: number; series: number }[] = []
for (const scenario of scenarios) {
  await round(scenario) // warm-up: JIT, series created
  const rounds = []
  for (let r = 0; r < ROUNDS; r++) rounds.push(await round(scenario))
  results.push({ name: scenario.name, wallNs: median(rounds.map((x) => x.wallNs)), cpuNs: median(rounds.map((x) => x.cpuNs)), series: rounds[0]!.series })
}

const base = results[0]!
const metricsOnly = results[1]!
console.log(`| scenario | ns/request (wall) | ns/request (CPU) | over nothing (wall) | × metrics only (wall) | request series |`)
console.log(`| --- | ---: | ---: | ---: | ---: | ---: |`)
for (const r of results) {
  console.log(`| ${r.name} | ${r.wallNs.toFixed(0)} | ${r.cpuNs.toFixed(0)} | +${(r.wallNs - base.wallNs).toFixed(0)} | ${(r.wallNs / metricsOnly.wallNs).toFixed(2)} | ${r.series} |`)
}
