// HTTP/1.1 through the node proxy, end to end in a two-node lab: real curl and Node http clients
// in a pod, HTTP servers in pods, Services and HTTPRoutes applied over NATS. A connection to a
// VIP whose port declares appProtocol http (or whose first bytes are an HTTP/1.x request line) is
// handled per request: routed, split, balanced, retried, timed out, and counted; `weft top` and
// `weft proxy-config` show that traffic and what the node applied.
import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { AppliedConfigView } from '../src/config/applied-config.ts'
import type { Lab, TopologyInput } from '../src/lab/index.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { curl, requireLab, startIn, startLab, waitForNodes } from './helpers/lab.ts'

const node = process.execPath

const topology: TopologyInput = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'client', node: 'node1' },
    { name: 'web-a', node: 'node1', labels: { app: 'web', version: 'v1' } },
    { name: 'web-b', node: 'node2', labels: { app: 'web', version: 'v2' } },
    { name: 'other', node: 'node2', labels: { app: 'other' } },
    { name: 'flaky', node: 'node1', labels: { app: 'flaky' } },
    { name: 'slow', node: 'node2', labels: { app: 'slow' } },
    { name: 'fast', node: 'node1', labels: { app: 'lb' } },
    { name: 'laggy', node: 'node1', labels: { app: 'lb' } },
    { name: 'bad', node: 'node1', labels: { app: 'eject' } },
    { name: 'good', node: 'node2', labels: { app: 'eject' } },
    { name: 'gate', node: 'node2', labels: { app: 'gate' } },
    { name: 'faulty', node: 'node1', labels: { app: 'faulty' } },
    { name: 'failing', node: 'node2', labels: { app: 'failing' } },
    { name: 'quarter', node: 'node1', labels: { app: 'quarter' } },
  ],
}

/**
 * An HTTP server on :8080 that answers with who it is and what it was sent. Modes: `ok`;
 * `flaky` answers 503 to every other request (the first included); `quarter` answers 503 to every
 * fourth; `slow MS` waits before answering; `fail` answers 503 (or the status given as third
 * argument) to every request.
 */
const serverScript = `
const http = require('node:http')
const [name, mode, delay] = process.argv.slice(1)
let n = 0
http.createServer((req, res) => {
  const seq = ++n
  req.resume()
  req.on('end', () => {
    if (mode === 'flaky' && seq % 2 === 1) { res.writeHead(503); res.end('flaky\\n'); return }
    if (mode === 'quarter' && seq % 4 === 0) { res.writeHead(503); res.end('quarter\\n'); return }
    if (mode === 'fail') { res.writeHead(Number(delay ?? 503)); res.end('failing\\n'); return }
    const reply = () => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ server: name, seq, path: req.url, requestId: req.headers['x-request-id'] ?? null, forwardedFor: req.headers['x-forwarded-for'] ?? null }) + '\\n')
    }
    if (mode === 'slow') setTimeout(reply, Number(delay)); else reply()
  })
}).listen(8080, () => console.log('listening'))
`

/**
 * Node's http client: N keep-alive requests to a URL, `parallel` at a time (default 4), prints
 * {"<server>": count, "status <code>": count, "slower <ms>": count of requests that took at least
 * the given ms, "weft-error <text>": count}.
 */
const clientScript = `
const http = require('node:http')
const [url, count, parallel = '4', slowerMs = '0'] = process.argv.slice(1)
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(parallel) })
const counts = {}
const add = (key) => { counts[key] = (counts[key] ?? 0) + 1 }
const one = () => new Promise((resolve) => {
  const started = Date.now()
  http.get(url, { agent, timeout: 10000 }, (res) => {
    let body = ''
    res.on('data', (c) => (body += c))
    res.on('end', () => {
      add(res.statusCode === 200 ? JSON.parse(body).server : 'status ' + res.statusCode)
      if (res.headers['weft-error']) add('weft-error ' + res.headers['weft-error'])
      if (Number(slowerMs) > 0 && Date.now() - started >= Number(slowerMs)) add('slower ' + slowerMs)
      resolve()
    })
  }).on('error', (e) => { add('error ' + e.code); resolve() })
})
;(async () => {
  const width = Number(parallel)
  for (let i = 0; i < Number(count); i += width) await Promise.all(Array.from({ length: Math.min(width, Number(count) - i) }, one))
  console.log(JSON.stringify(counts))
  process.exit(0)
})()
`

const service = (name: string, vip: string, selector: Record<string, string>, appProtocol?: string): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' },
  spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort: 8080, ...(appProtocol ? { appProtocol } : {}) }] },
})

const route = (name: string, parent: string, rules: unknown[]): Record<string, unknown> => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: 'default' },
  spec: { parentRefs: [{ kind: 'Service', name: parent, port: 80 }], rules },
})

const policy = (name: string, spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name, namespace: 'default' },
  spec: { targetRef: { kind: 'Service', name }, ...spec },
})

const resources: Array<[string, Record<string, unknown>]> = [
  ['service.default.web', service('web', '198.19.0.20', { app: 'web' }, 'http')],
  ['service.default.web-v1', service('web-v1', '198.19.0.21', { app: 'web', version: 'v1' }, 'http')],
  ['service.default.web-v2', service('web-v2', '198.19.0.22', { app: 'web', version: 'v2' }, 'http')],
  ['service.default.other', service('other', '198.19.0.23', { app: 'other' }, 'kubernetes.io/http')],
  ['service.default.flaky', service('flaky', '198.19.0.24', { app: 'flaky' }, 'http')],
  ['service.default.slow', service('slow', '198.19.0.25', { app: 'slow' }, 'http')],
  ['service.default.empty', service('empty', '198.19.0.26', { app: 'nobody' }, 'http')],
  ['service.default.plain', service('plain', '198.19.0.27', { app: 'web', version: 'v1' })],
  ['service.default.lb', service('lb', '198.19.0.28', { app: 'lb' }, 'http')],
  ['service.default.eject', service('eject', '198.19.0.29', { app: 'eject' }, 'http')],
  ['service.default.gate', service('gate', '198.19.0.30', { app: 'gate' }, 'http')],
  ['service.default.faulty', service('faulty', '198.19.0.31', { app: 'faulty' }, 'http')],
  ['service.default.failing', service('failing', '198.19.0.32', { app: 'failing' }, 'http')],
  ['service.default.slow-total', service('slow-total', '198.19.0.33', { app: 'slow' }, 'http')],
  ['service.default.quarter', service('quarter', '198.19.0.34', { app: 'quarter' }, 'http')],
  ['authorizationpolicy.default.quarter-allow', {
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'quarter-allow', namespace: 'default' },
    spec: { selector: { matchLabels: { app: 'quarter' } }, action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['default'] } }] }] },
  }],
  ['destinationpolicy.default.eject', policy('eject', { loadBalancer: { type: 'RoundRobin' }, outlierDetection: { consecutive5xx: 3, baseEjectionTime: '2s', maxEjectionPercent: 50 } })],
  ['destinationpolicy.default.gate', policy('gate', { circuitBreaker: { maxRequests: 2 } })],
  ['destinationpolicy.default.faulty', policy('faulty', { faults: { delay: { fixedDelay: '400ms', percent: 50 }, abort: { httpStatus: 418, percent: 30 } } })],
  ['httproute.default.failing', route('failing', 'failing', [{ backendRefs: [{ name: 'failing', port: 80 }], retry: { attempts: 2, codes: [503], backoff: '1ms' } }])],
  ['httproute.default.slow-total', route('slow-total', 'slow-total', [{ backendRefs: [{ name: 'slow-total', port: 80 }], timeouts: { request: '500ms' } }])],
  ['httproute.default.web', route('web', 'web', [
    { matches: [{ path: { type: 'PathPrefix', value: '/other' } }], backendRefs: [{ name: 'other', port: 80 }] },
    { backendRefs: [{ name: 'web-v1', port: 80, weight: 90 }, { name: 'web-v2', port: 80, weight: 10 }] },
  ])],
  ['httproute.default.flaky', route('flaky', 'flaky', [{ backendRefs: [{ name: 'flaky', port: 80 }], retry: { attempts: 2, backoff: '10ms' } }])],
  ['httproute.default.slow', route('slow', 'slow', [{ backendRefs: [{ name: 'slow', port: 80 }], timeouts: { backendRequest: '300ms' } }])],
]

/** Requests to argv[1] one after another until killed; prints `started` after the first. */
const loopClientScript = `
const http = require('node:http')
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
let first = true
const one = () => http.get(process.argv[1], { agent }, (res) => {
  res.resume()
  res.on('end', () => { if (first) console.log('started'); first = false; one() })
}).on('error', () => setTimeout(one, 10))
one()
`

const weft = fileURLToPath(new URL('../bin/weft.js', import.meta.url))

/** `weft ARGS` in a child process, as a user runs it (the lab's context is current). */
function weftCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(node, [weft, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.on('close', (code) => resolve({ code: code ?? 128, stdout, stderr }))
  })
}

/** The Node client script in the client pod: `count` requests, `parallel` at a time; the counts it prints. */
async function load(lab: Lab, url: string, count: number, parallel: number, slowerMs = 0): Promise<Record<string, number>> {
  const r = await lab.run('client', [node, '-e', clientScript, url, String(count), String(parallel), String(slowerMs)])
  if (r.code !== 0) throw new Error(`client exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout.trim()) as Record<string, number>
}

t.test('HTTP/1.1 through the node proxy in a two-node lab', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, topology, { startDaemons: true })
  const operator = await lab.connect('operator')
  t.teardown(() => operator.close())
  for (const name of ['web-a', 'web-b', 'other']) await startIn(t, lab, name, [node, '-e', serverScript, name, 'ok'], /listening/)
  await startIn(t, lab, 'flaky', [node, '-e', serverScript, 'flaky', 'flaky'], /listening/)
  await startIn(t, lab, 'slow', [node, '-e', serverScript, 'slow', 'slow', '3000'], /listening/)
  for (const name of ['fast', 'good', 'faulty']) await startIn(t, lab, name, [node, '-e', serverScript, name, 'ok'], /listening/)
  await startIn(t, lab, 'laggy', [node, '-e', serverScript, 'laggy', 'slow', '60'], /listening/)
  await startIn(t, lab, 'gate', [node, '-e', serverScript, 'gate', 'slow', '1500'], /listening/)
  await startIn(t, lab, 'bad', [node, '-e', serverScript, 'bad', 'fail', '500'], /listening/)
  await startIn(t, lab, 'failing', [node, '-e', serverScript, 'failing', 'fail', '503'], /listening/)
  await startIn(t, lab, 'quarter', [node, '-e', serverScript, 'quarter', 'quarter'], /listening/)
  let revision = 0
  for (const [key, value] of resources) revision = await operator.putResource(key, value)
  await waitForNodes(operator, revision)
  const clientIp = lab.pods.find((p) => p.name === 'client')!.ip

  t.test('curl via the VIP gets the reply; the server sees x-request-id and x-forwarded-for', async (t) => {
    const reply = await curl(lab, 'http://198.19.0.21/hello')
    t.equal(reply.status, 200, `status (body ${reply.body})`)
    const seen = JSON.parse(reply.body) as { server: string; path: string; requestId: string | null; forwardedFor: string | null }
    t.equal(seen.server, 'web-a')
    t.equal(seen.path, '/hello')
    t.match(seen.requestId, /^[0-9a-f-]{36}$/, 'a request id was added')
    t.equal(seen.forwardedFor, clientIp, 'x-forwarded-for names the client pod')
    const own = JSON.parse((await curl(lab, 'http://198.19.0.21/', '-H', 'x-request-id: mine-123')).body) as { requestId: string }
    t.equal(own.requestId, 'mine-123', 'a request id the client sent is kept')
    const remote = JSON.parse((await curl(lab, 'http://198.19.0.22/')).body) as { server: string; requestId: string | null }
    t.equal(remote.server, 'web-b', 'an endpoint on the other node is reached through the tunnel')
    t.ok(remote.requestId, 'with a request id too')
  })

  t.test('a service without appProtocol is sniffed: an HTTP/1.1 request line goes through L7', async (t) => {
    const reply = await curl(lab, 'http://198.19.0.27/sniffed')
    t.equal(reply.status, 200)
    t.match(JSON.parse(reply.body), { server: 'web-a', path: '/sniffed', requestId: /^[0-9a-f-]{36}$/ })
  })

  t.test('an HTTPRoute 90/10 split over 1,000 requests stays within statistical bounds', async (t) => {
    const counts = await load(lab, 'http://198.19.0.20/split', 1000, 8)
    // Binomial(1000, 0.1): mean 100, sd ≈ 9.5; 55..145 is more than four sd either way.
    const canary = counts['web-b'] ?? 0
    t.equal((counts['web-a'] ?? 0) + canary, 1000, `every request answered by web-a or web-b (${JSON.stringify(counts)})`)
    t.ok(canary >= 55 && canary <= 145, `web-b got ${canary} of 1000 (expected about 100)`)
  })

  t.test('a path match routes to a different backend', async (t) => {
    const reply = await curl(lab, 'http://198.19.0.20/other/thing')
    t.equal(reply.status, 200)
    t.match(JSON.parse(reply.body), { server: 'other', path: '/other/thing' })
  })

  t.test('a backend failing every other request is retried to success', async (t) => {
    for (let i = 0; i < 6; i++) {
      const reply = await curl(lab, `http://198.19.0.24/try-${i}`)
      t.equal(reply.status, 200, `request ${i}: 200 (body ${reply.body.trim()})`)
    }
  })

  t.test('a backendRequest timeout gives 504 with weft-error', async (t) => {
    const reply = await curl(lab, 'http://198.19.0.25/')
    t.equal(reply.status, 504)
    t.equal(reply.headers['weft-error'], 'backendRequest timeout of 300ms for default/slow')
  })

  t.test('no endpoints: 503 with weft-error naming the service', async (t) => {
    const reply = await curl(lab, 'http://198.19.0.26/')
    t.equal(reply.status, 503)
    t.equal(reply.headers['weft-error'], 'no healthy endpoint for default/empty')
  })

  t.test('EWMA (the default balancer) sends most requests to the faster of two endpoints', async (t) => {
    const counts = await load(lab, 'http://198.19.0.28/', 200, 4)
    const fast = counts.fast ?? 0
    const laggy = counts.laggy ?? 0
    t.equal(fast + laggy, 200, `every request answered (${JSON.stringify(counts)})`)
    t.ok(fast > 2 * laggy, `the fast endpoint got ${fast}, the one 60 ms slower ${laggy}`)
  })

  t.test('a circuit breaker at maxRequests 2 lets two requests in and answers the rest 503 naming it', async (t) => {
    // Six at once to a backend that takes 1.5 s: two are in flight when the other four arrive.
    const counts = await load(lab, 'http://198.19.0.30/', 6, 6)
    t.equal(counts.gate, 2, `two admitted (${JSON.stringify(counts)})`)
    t.equal(counts['status 503'], 4, 'four refused')
    t.equal(counts['weft-error circuit breaker open for default/gate: maxRequests at its limit of 2'], 4, 'the refusal names the breaker and its limit')
  })

  t.test('outlier detection ejects an endpoint after 3 consecutive 5xx and brings it back after the ejection time', async (t) => {
    // Round robin over bad (always 500) and good: bad's third 500 ejects it.
    const first = await load(lab, 'http://198.19.0.29/', 30, 1)
    t.equal(first['status 500'], 3, `bad answered three times, then was ejected (${JSON.stringify(first)})`)
    t.equal(first.good, 27, 'good took everything else')
    const node1 = lab.nodes.find((n) => n.name === 'node1')!
    const view = await (await fetch(`http://${node1.address}:15020/debug/destinations`)).json() as Array<{ service: string; loadBalancer: string; outlierDetection: boolean; endpoints: Array<{ workload: string; ejected: boolean }> }>
    const eject = view.find((d) => d.service === 'default/eject')
    t.match(eject, { loadBalancer: 'RoundRobin', outlierDetection: true }, '/debug/destinations shows the policy in force')
    t.same(eject?.endpoints.map((e) => [e.workload, e.ejected]).sort(), [['default/bad', true], ['default/good', false]], 'and that bad is ejected')
    // The ejection lasts baseEjectionTime (2 s) for a first ejection; after it, bad is tried again.
    await new Promise((resolve) => setTimeout(resolve, 2500))
    const later = await load(lab, 'http://198.19.0.29/', 4, 1)
    t.ok((later['status 500'] ?? 0) >= 1, `bad is back in rotation after its ejection time (${JSON.stringify(later)})`)
  })

  t.test('faults: a 400 ms delay on about half the requests, a 418 abort on about 30%', async (t) => {
    const counts = await load(lab, 'http://198.19.0.31/', 300, 20, 400)
    const aborted = counts['status 418'] ?? 0
    const delayed = counts['slower 400'] ?? 0
    t.equal((counts.faulty ?? 0) + aborted, 300, `every request answered by the server or aborted (${JSON.stringify(counts)})`)
    // Binomial(300, 0.3): mean 90, sd ≈ 7.9; Binomial(300, 0.5): mean 150, sd ≈ 8.7; bounds over four sd.
    t.ok(aborted >= 55 && aborted <= 125, `${aborted} of 300 aborted with 418 (expected about 90)`)
    t.ok(delayed >= 110 && delayed <= 190, `${delayed} of 300 delayed by at least 400 ms (expected about 150)`)
    t.equal(counts['weft-error fault injected for default/faulty: abort with 418'], aborted, 'each abort says it was injected')
  })

  t.test('retries stop at the retry budget: a backend that always fails gets at most 20% extra plus the floor', async (t) => {
    const node1 = lab.nodes.find((n) => n.name === 'node1')!
    const before = parsePrometheusText(await (await fetch(`http://${node1.address}:15020/metrics`)).text())
    const counts = await load(lab, 'http://198.19.0.32/', 400, 8)
    t.equal(counts['status 503'], 400, `every request ends 503 (${JSON.stringify(counts)})`)
    const after = parsePrometheusText(await (await fetch(`http://${node1.address}:15020/metrics`)).text())
    const delta = (name: string): number => sumSamples(after, name, { destination_service: 'default/failing' }) - sumSamples(before, name, { destination_service: 'default/failing' })
    const retries = delta('weft_retries_total')
    // The route asks for 2 retries each (800); the budget allows 20% of 400 plus 10/s over its 10 s window.
    t.ok(retries > 0 && retries <= 0.2 * 400 + 100 + 1, `${retries} retries, within the budget of about ${0.2 * 400 + 100}`)
    t.ok(delta('weft_retry_budget_exhausted_total') > 0, 'retries refused by the budget are counted')
  })

  t.test('an overall request timeout gives 504 even while the try is still waiting', async (t) => {
    const reply = await curl(lab, 'http://198.19.0.33/')
    t.equal(reply.status, 504)
    t.equal(reply.headers['weft-error'], 'request timeout of 500ms for default/slow-total')
  })

  t.test('weft_requests_total carries the labelled counts', async (t) => {
    const node1 = lab.nodes.find((n) => n.name === 'node1')!
    const samples = parsePrometheusText(await (await fetch(`http://${node1.address}:15020/metrics`)).text())
    const base = { reporter: 'source', source_workload: 'default/client', protocol: 'http' }
    const split = sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/web-v1', destination_workload: 'default/web-a', response_code: '200' }) +
      sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/web-v2', destination_workload: 'default/web-b', response_code: '200' })
    t.ok(split >= 1000, `the split's 1000 requests (and the first test's) are counted by destination (${split})`)
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/flaky', response_code: '200' }), 6, 'six retried requests count once each, as 200')
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/slow', response_code: '504' }), 1, 'the timeout as 504')
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/empty', destination_workload: 'unknown', response_code: '503' }), 1, 'no endpoint as 503 to workload unknown')
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/other', destination_workload: 'default/other', response_code: '200' }), 1, 'the path match')
    t.ok(sumSamples(samples, 'weft_request_duration_seconds_count', { ...base, destination_service: 'default/flaky' }) === 6, 'durations are observed per request')
    t.equal(sumSamples(samples, 'weft_retries_total', { destination_service: 'default/flaky' }), 6, 'each of the six flaky requests was retried once (the backend fails every other request)')
    t.equal(sumSamples(samples, 'weft_outlier_ejections_total', { destination_service: 'default/eject', reason: 'consecutive5xx' }), 1, 'one ejection')
    t.equal(sumSamples(samples, 'weft_circuit_breaker_trips_total', { destination_service: 'default/gate', limit: 'maxRequests' }), 4, 'four breaker trips')
    t.ok(sumSamples(samples, 'weft_response_bytes_total', { ...base, destination_service: 'default/web-v1' }) > 0, 'response bytes are counted')
  })

  t.test('weft top -o json shows the requests to a VIP and its backend failing one in four', async (t) => {
    const traffic = await startIn(t, lab, 'client', [node, '-e', loopClientScript, 'http://198.19.0.34/'], /started/)
    const top = await weftCli(['top', '-o', 'json', '--interval', '2'])
    traffic.kill('SIGKILL')
    t.equal(top.code, 0, `weft top exits 0 (stderr: ${top.stderr})`)
    type Row = { name: string; requests: number; requestsPerSecond: number; successRate: number; p50: number; p99: number }
    const report = JSON.parse(top.stdout) as { nodes: string[]; intervalSeconds: number; services: Row[]; workloads: Row[] }
    t.same(report.nodes.sort(), ['node1', 'node2'], 'both nodes answered')
    for (const [rows, name] of [[report.services, 'default/quarter'], [report.workloads, 'default/quarter']] as const) {
      const row = rows.find((r) => r.name === name)
      if (!t.ok(row, `a row for ${name}`)) continue
      t.ok(row!.requests >= 8, `requests were counted (${row!.requests})`)
      t.equal(row!.requestsPerSecond, row!.requests / report.intervalSeconds)
      // One in four fails: k consecutive requests hold floor(k/4) or ceil(k/4) failures.
      t.ok(Math.abs(row!.successRate - 0.75) <= 1 / row!.requests, `success rate ${row!.successRate} is 75% within one request`)
      t.ok(row!.p50 > 0 && row!.p99 >= row!.p50, `p50 ${row!.p50} s, p99 ${row!.p99} s`)
    }
  })

  t.test('weft proxy-config shows what node1 applied for a service: endpoints and the policy in force', async (t) => {
    const quarterIp = lab.pods.find((p) => p.name === 'quarter')!.ip
    const json = await weftCli(['proxy-config', 'node1', 'default/quarter', '-o', 'json'])
    t.equal(json.code, 0, `exit 0 (stderr: ${json.stderr})`)
    const view = JSON.parse(json.stdout) as AppliedConfigView
    t.match(view, {
      node: 'node1', service: 'default/quarter',
      services: [{ service: 'default/quarter', vip: '198.19.0.34', ports: [{ port: 80, targetPort: 8080, appProtocol: 'http', address: '198.19.0.34:80', endpoints: [{ endpoint: `${quarterIp}:8080`, node: 'node1', workload: 'default/quarter', health: 'ready', inFlight: Number, latencyMs: Number }] }] }],
      workloads: [{ workload: 'default/quarter', ip: quarterIp, mtls: { mode: 'PERMISSIVE', policy: null }, authorization: { allow: ['default/quarter-allow'], deny: [] } }],
    })
    t.ok(view.revision >= revision, `the revision node1 applied (${view.revision})`)
    t.equal(view.services.length, 1, 'only the service asked for')
    t.equal(view.workloads.length, 1, 'only the node\'s pods behind it')

    const table = await weftCli(['proxy-config', 'node1', 'default/quarter'])
    t.equal(table.code, 0)
    t.match(table.stdout, new RegExp(`\\ndefault/quarter +198\\.19\\.0\\.34:80 +${quarterIp.replaceAll('.', '\\.')}:8080 +node1 +default/quarter +ready `), 'the endpoint row')
    t.match(table.stdout, /\ndefault\/quarter +198\.18\.1\.\d+ +yes +PERMISSIVE +default\/quarter-allow +-\n/, 'the pod row with its policy')

    const unknown = await weftCli(['proxy-config', 'node1', 'default/nope'])
    t.equal(unknown.code, 1)
    t.match(unknown.stderr, /^weft: proxy-config: node node1: http:\/\/198\.18\.0\.2:15020\/debug\/config\?service=default%2Fnope: HTTP 404: no service default\/nope in revision \d+ \(known: default\/eject, /)
  })
})
