// Access logs and request metrics: the writer puts one JSON line per logged request where it is
// told (a file, stdout, nowhere), sampling decides which requests, bad flags are refused with the
// allowed values, and the L7 metrics appear in the Prometheus text with their declared labels.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { ConfigError, DEFAULTS, nodeHelp, parseNodeArgs } from '../src/config/node-config.ts'
import { openAccessLog, type AccessLogEntry } from '../src/telemetry/access-log.ts'
import { NO_GRPC_STATUS, NodeMetrics, type RequestLabels } from '../src/telemetry/metrics.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { until } from './helpers/wait.ts'

const NODE = process.execPath
const ROOT = fileURLToPath(new URL('..', import.meta.url))

function entry(i: number, extra: Partial<AccessLogEntry> = {}): AccessLogEntry {
  return {
    start: '2026-11-25T20:00:00.000Z', durationMs: 1.5, protocol: 'http', method: 'GET', authority: 'reviews.shop:8080',
    path: `/items/${i}?q="x"`, status: 200, requestBytes: 0, responseBytes: 1024, sourceIp: '198.18.1.2',
    sourceWorkload: 'default/client', destinationService: 'shop/reviews', destinationWorkload: 'shop/reviews-v1',
    endpoint: '198.18.2.2:8080', retries: 0, requestId: `req-${i}`, ...extra,
  }
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'weft-access-log-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function lines(file: string): Record<string, unknown>[] {
  const text = readFileSync(file, 'utf8')
  return text === '' ? [] : text.trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
}

/** A random source that returns these values in turn. */
function sequence(values: number[]): () => number {
  let i = 0
  return () => values[i++ % values.length]!
}

t.test('a file gets one JSON line per written entry, with the entry\'s fields, type and node', async (t) => {
  const file = join(tempDir(t), 'access.log')
  const log = openAccessLog({ destination: file, sampleRate: 1, node: 'node1' })
  t.teardown(() => log.close())
  const grpc = entry(2, { protocol: 'grpc', grpcStatus: 14, status: 200, weftError: 'no healthy endpoint', upstreamPath: 'tunnel', retries: 2 })
  log.write(entry(1))
  log.write(grpc)
  await log.close()
  const written = lines(file)
  t.equal(written.length, 2)
  t.same(written[0], { type: 'access', node: 'node1', ...entry(1) }, 'every field of the entry, nothing else but type and node')
  t.same(written[1], { type: 'access', node: 'node1', ...grpc })
  t.equal(Object.keys(written[0]!)[0], 'type', 'type comes first, so lines are told apart at a glance')
  t.notOk('grpcStatus' in written[0]!, 'unset optional fields are left out')
})

t.test('the file is appended to, and close() writes out everything still buffered', async (t) => {
  const file = join(tempDir(t), 'access.log')
  writeFileSync(file, '{"type":"access","earlier":true}\n')
  const log = openAccessLog({ destination: file, sampleRate: 1 })
  t.teardown(() => log.close())
  // Written in one go, without giving the background writes a turn: only close() can flush them.
  for (let i = 0; i < 5000; i++) log.write(entry(i))
  await log.close()
  const written = lines(file)
  t.equal(written.length, 5001)
  t.same(written[0], { type: 'access', earlier: true })
  t.equal(written[5000]!.requestId, 'req-4999')
  t.notOk(log.sampled(), 'a closed log samples nothing')
  log.write(entry(9999))
  t.equal(lines(file).length, 5001, 'writes after close are dropped, not thrown')
})

t.test('sampling: 0 logs nothing, 1 everything, 0.5 what the random source picks', async (t) => {
  const dir = tempDir(t)
  const run = async (sampleRate: number, random?: () => number): Promise<{ sampled: boolean[]; lines: number }> => {
    const file = join(dir, `access-${sampleRate}.log`)
    writeFileSync(file, '')
    const log = openAccessLog({ destination: file, sampleRate, ...(random ? { random } : {}) })
    t.teardown(() => log.close())
    const sampled: boolean[] = []
    for (let i = 0; i < 8; i++) {
      const yes = log.sampled()
      sampled.push(yes)
      if (yes) log.write(entry(i))
    }
    await log.close()
    return { sampled, lines: lines(file).length }
  }
  t.same(await run(0), { sampled: Array(8).fill(false), lines: 0 })
  t.same(await run(1), { sampled: Array(8).fill(true), lines: 8 })
  // A draw below the rate logs the request.
  const half = await run(0.5, sequence([0.1, 0.9, 0.49, 0.5, 0.0, 0.75, 0.3, 0.99]))
  t.same(half, { sampled: [true, false, true, false, true, false, true, false], lines: 4 })
  t.throws(() => openAccessLog({ destination: 'off', sampleRate: 1.5 }), /expected 0 to 1, got 1.5/)
})

t.test('off writes nothing; a file that cannot be opened is a clear error', async (t) => {
  const off = openAccessLog({ destination: 'off', sampleRate: 1 })
  t.notOk(off.sampled())
  await off.close()
  const missing = join(tempDir(t), 'no-such-dir', 'access.log')
  t.throws(() => openAccessLog({ destination: missing, sampleRate: 1 }), { name: 'AccessLogError' })
  t.throws(() => openAccessLog({ destination: missing, sampleRate: 1 }), { message: `${missing}: cannot open it for appending (ENOENT); check that the directory exists and is writable, or use --access-log stdout or off` })
})

t.test('a write that fails stops access logging and says so once; close still returns', async (t) => {
  // /dev/full answers every write with ENOSPC, as a full disk does.
  const errors: Error[] = []
  const log = openAccessLog({ destination: '/dev/full', sampleRate: 1, onError: (err) => errors.push(err) })
  t.teardown(() => log.close())
  t.ok(log.sampled())
  log.write(entry(1))
  await until('the failed write to be reported', () => errors.length > 0, { timeoutMs: 5_000, intervalMs: 5 })
  t.notOk(log.sampled(), 'no more requests are sampled')
  // Written anyway (a caller that sampled before the failure): close writes out whatever is
  // buffered, so a second report, if there were one, would have come by the time it returns.
  log.write(entry(2))
  log.write(entry(3))
  await log.close(1000)
  t.same(errors.map((e) => (e as NodeJS.ErrnoException).code), ['ENOSPC'], 'one report, after everything was written out')
})

t.test('stdout: access lines and the daemon\'s own log lines share it, every line whole JSON, told apart by type', async (t) => {
  // A child process writes both kinds through the real code to a pipe, as a container runtime reads a node's log.
  const dir = tempDir(t)
  const script = join(dir, 'writer.ts')
  writeFileSync(script, `
import { openAccessLog } from ${JSON.stringify(join(ROOT, 'src/telemetry/access-log.ts'))}
import { createLogger } from ${JSON.stringify(join(ROOT, 'src/telemetry/log.ts'))}
const log = createLogger({ node: 'node1' })
const access = openAccessLog({ destination: 'stdout', sampleRate: 1, node: 'node1' })
const entry = ${JSON.stringify(entry(0))}
for (let i = 0; i < 4000; i++) {
  access.write({ ...entry, requestId: 'req-' + i })
  if (i % 10 === 0) log.info('daemon line', { i })
  if (i % 100 === 0) await new Promise((resolve) => setImmediate(resolve))
}
await access.close()
`)
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(NODE, [script], { maxBuffer: 64 * 1024 * 1024 }, (err, out) => (err ? reject(err) : resolve(out)))
  })
  const parsed = stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
  const access = parsed.filter((l) => l.type === 'access')
  const daemon = parsed.filter((l) => l.type === undefined && l.msg === 'daemon line' && l.level === 'info')
  t.equal(access.length, 4000)
  t.equal(daemon.length, 400)
  t.equal(parsed.length, 4400, 'no other lines')
  t.same(access.map((l) => l.requestId), Array.from({ length: 4000 }, (_, i) => `req-${i}`), 'access lines in order')
})

t.test('node flags: --access-log and --access-log-sample, defaults declared once, clear errors', async (t) => {
  const base = ['--name', 'node1', '--config-only']
  const config = (...flags: string[]) => {
    const parsed = parseNodeArgs([...base, ...flags])
    if (parsed.help) throw new Error('unexpected help')
    return parsed.config
  }
  t.equal(config().accessLog, DEFAULTS.accessLog)
  t.equal(config().accessLogSample, DEFAULTS.accessLogSample)
  t.equal(DEFAULTS.accessLog, 'stdout')
  t.equal(DEFAULTS.accessLogSample, 1)
  t.equal(config('--access-log', 'off').accessLog, 'off')
  t.equal(config('--access-log', '/var/log/weft/access.log').accessLog, '/var/log/weft/access.log')
  t.equal(config('--access-log', 'access.log').accessLog, join(process.cwd(), 'access.log'), 'a relative path is made absolute')
  t.equal(config('--access-log-sample', '0.01').accessLogSample, 0.01)
  t.equal(config('--access-log-sample', '0').accessLogSample, 0)

  const rangeError = (value: string) => `--access-log-sample: "${value}" is not a sample rate; give a number from 0 (log nothing) to 1 (log every request), e.g. 0.01 for 1 in 100`
  for (const bad of ['2', '-0.1', 'half', '', '1%', 'NaN']) {
    // --flag=value: parseArgs reads a separate "-0.1" as an option.
    t.throws(() => config(`--access-log-sample=${bad}`), new ConfigError(rangeError(bad)), `--access-log-sample ${JSON.stringify(bad)}`)
  }
  t.throws(() => config('--access-log', ''), new ConfigError('--access-log: "" is not stdout, off or a file path'))
  t.throws(() => config('--access-log', '/var/log/'), new ConfigError('--access-log: "/var/log/" is not stdout, off or a file path'))
  t.throws(() => config('--access-log'), { message: /argument missing \(see weft node --help\)/ }, 'the flag needs a value')

  const help = nodeHelp()
  t.match(help, /--access-log DEST +L7 access log: stdout, off, or a file PATH .*\(default stdout\)/)
  t.match(help, /--access-log-sample RATE +fraction of L7 requests logged, 0 to 1 \(default 1\)/)
})

t.test('the L7 metrics appear in the Prometheus text with their declared labels', async (t) => {
  const metrics = new NodeMetrics('node1', () => undefined)
  const http: RequestLabels = {
    reporter: 'source', source_workload: 'default/client', destination_service: 'shop/reviews',
    destination_workload: 'shop/reviews-v1', response_code: '200', grpc_status: NO_GRPC_STATUS, protocol: 'http',
  }
  const grpc: RequestLabels = { ...http, destination_service: 'shop/ratings', destination_workload: 'shop/ratings-v1', grpc_status: '14', protocol: 'grpc' }
  metrics.recordRequest(http, { durationS: 0.004, requestBytes: 100, responseBytes: 1024 })
  metrics.recordRequest(http, { durationS: 0.2, requestBytes: 0, responseBytes: 2048 })
  metrics.recordRequest(grpc, { durationS: 0.03, requestBytes: 17, responseBytes: 0 })
  metrics.retries.inc({ destination_service: 'shop/ratings', reason: 'retriable-grpc-status' })
  metrics.retryBudgetExhausted.inc({ destination_service: 'shop/ratings' })
  metrics.outlierEjections.inc({ destination_service: 'shop/reviews', endpoint: '198.18.2.2:8080', reason: 'consecutive5xx' })
  metrics.circuitBreakerTrips.inc({ destination_service: 'shop/reviews', limit: 'maxPendingRequests' })
  const closeHttp = metrics.l7ConnectionOpened('http')
  metrics.l7ConnectionOpened('http2')
  metrics.l7ConnectionOpened('http')()
  closeHttp()
  closeHttp() // a second call changes nothing

  // Bucket bounds are inclusive (le); a duration that is not a number counts as 0.
  const edge: RequestLabels = { ...http, destination_service: 'shop/edge', response_code: '503' }
  metrics.recordRequest(edge, { durationS: 0.005, requestBytes: 0, responseBytes: 0 })
  metrics.recordRequest(edge, { durationS: Number.NaN, requestBytes: 0, responseBytes: 0 })
  metrics.recordRequest(edge, { durationS: 60, requestBytes: 0, responseBytes: 0 })

  const samples = parsePrometheusText(await metrics.registry.metrics())
  const edgeBucket = (le: string) => sumSamples(samples, 'weft_request_duration_seconds_bucket', { response_code: '503', le })
  t.same(['0.001', '0.0025', '0.005', '10', '+Inf'].map(edgeBucket), [1, 1, 2, 2, 3], 'cumulative buckets, le inclusive')
  t.equal(sumSamples(samples, 'weft_request_duration_seconds_sum', { response_code: '503' }), 60.005)
  t.equal(sumSamples(samples, 'weft_request_duration_seconds_count', { response_code: '503' }), 3)
  const only = (name: string) => samples.filter((s) => s.name === name)
  const requestLabelNames = ['destination_service', 'destination_workload', 'grpc_status', 'node', 'protocol', 'reporter', 'response_code', 'source_workload']
  for (const name of ['weft_requests_total', 'weft_request_bytes_total', 'weft_response_bytes_total', 'weft_request_duration_seconds_count']) {
    t.same(only(name).map((s) => Object.keys(s.labels).sort()), [requestLabelNames, requestLabelNames, requestLabelNames], `${name}: three series, the request labels`)
  }
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'http', grpc_status: 'none', response_code: '200', node: 'node1' }), 2)
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'grpc', grpc_status: '14' }), 1)
  t.equal(sumSamples(samples, 'weft_request_bytes_total', { destination_service: 'shop/reviews' }), 100)
  t.equal(sumSamples(samples, 'weft_response_bytes_total', { destination_service: 'shop/reviews' }), 3072)
  t.equal(sumSamples(samples, 'weft_request_bytes_total', { protocol: 'grpc' }), 17)
  t.equal(sumSamples(samples, 'weft_request_duration_seconds_bucket', { destination_service: 'shop/reviews', le: '0.005' }), 1)
  t.equal(sumSamples(samples, 'weft_request_duration_seconds_bucket', { destination_service: 'shop/reviews', le: '0.25' }), 2)
  t.equal(sumSamples(samples, 'weft_request_duration_seconds_sum', { protocol: 'grpc' }), 0.03)

  t.same(only('weft_retries_total').map((s) => s.labels), [{ destination_service: 'shop/ratings', reason: 'retriable-grpc-status', node: 'node1' }])
  t.same(only('weft_retry_budget_exhausted_total').map((s) => s.labels), [{ destination_service: 'shop/ratings', node: 'node1' }])
  t.same(only('weft_outlier_ejections_total').map((s) => s.labels), [{ destination_service: 'shop/reviews', endpoint: '198.18.2.2:8080', reason: 'consecutive5xx', node: 'node1' }])
  t.same(only('weft_circuit_breaker_trips_total').map((s) => [s.labels, s.value]), [[{ destination_service: 'shop/reviews', limit: 'maxPendingRequests', node: 'node1' }, 1]])
  t.same(only('weft_l7_connections_total').map((s) => [s.labels.protocol, s.value]), [['http', 2], ['http2', 1]])
  t.same(only('weft_l7_connections_active').map((s) => [s.labels.protocol, s.value]), [['http', 0], ['http2', 1]])
})
