// HTTP/1.1 through the node proxy, end to end in a two-node lab: real curl and Node http clients
// in a pod, HTTP servers in pods, Services and HTTPRoutes applied over NATS. A connection to a
// VIP whose port declares appProtocol http (or whose first bytes are an HTTP/1.x request line) is
// handled per request: routed, split, balanced, retried, timed out, and counted.
import t from 'tap'
import type { Bus } from '../src/bus/index.ts'
import type { Lab, TopologyInput } from '../src/lab/index.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { requireLab, startIn, startLab } from './helpers/lab.ts'

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
  ],
}

/**
 * An HTTP server on :8080 that answers with who it is and what it was sent. Modes: `ok`;
 * `flaky` answers 503 to every other request (the first included); `slow MS` waits before answering.
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
    const reply = () => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ server: name, seq, path: req.url, requestId: req.headers['x-request-id'] ?? null, forwardedFor: req.headers['x-forwarded-for'] ?? null }) + '\\n')
    }
    if (mode === 'slow') setTimeout(reply, Number(delay)); else reply()
  })
}).listen(8080, () => console.log('listening'))
`

/** Node's http client: N keep-alive requests to a URL, prints {"<server>": count, "status <code>": count}. */
const clientScript = `
const http = require('node:http')
const [url, count] = process.argv.slice(1)
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
const counts = {}
const one = () => new Promise((resolve) => {
  http.get(url, { agent, timeout: 5000 }, (res) => {
    let body = ''
    res.on('data', (c) => (body += c))
    res.on('end', () => {
      const key = res.statusCode === 200 ? JSON.parse(body).server : 'status ' + res.statusCode
      counts[key] = (counts[key] ?? 0) + 1
      resolve()
    })
  }).on('error', (e) => { counts['error ' + e.code] = (counts['error ' + e.code] ?? 0) + 1; resolve() })
})
;(async () => {
  for (let i = 0; i < Number(count); i += 4) await Promise.all([one(), one(), one(), one()])
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

const resources: Array<[string, Record<string, unknown>]> = [
  ['service.default.web', service('web', '198.19.0.20', { app: 'web' }, 'http')],
  ['service.default.web-v1', service('web-v1', '198.19.0.21', { app: 'web', version: 'v1' }, 'http')],
  ['service.default.web-v2', service('web-v2', '198.19.0.22', { app: 'web', version: 'v2' }, 'http')],
  ['service.default.other', service('other', '198.19.0.23', { app: 'other' }, 'kubernetes.io/http')],
  ['service.default.flaky', service('flaky', '198.19.0.24', { app: 'flaky' }, 'http')],
  ['service.default.slow', service('slow', '198.19.0.25', { app: 'slow' }, 'http')],
  ['service.default.empty', service('empty', '198.19.0.26', { app: 'nobody' }, 'http')],
  ['service.default.plain', service('plain', '198.19.0.27', { app: 'web', version: 'v1' })],
  ['httproute.default.web', route('web', 'web', [
    { matches: [{ path: { type: 'PathPrefix', value: '/other' } }], backendRefs: [{ name: 'other', port: 80 }] },
    { backendRefs: [{ name: 'web-v1', port: 80, weight: 90 }, { name: 'web-v2', port: 80, weight: 10 }] },
  ])],
  ['httproute.default.flaky', route('flaky', 'flaky', [{ backendRefs: [{ name: 'flaky', port: 80 }], retry: { attempts: 2, backoff: '10ms' } }])],
  ['httproute.default.slow', route('slow', 'slow', [{ backendRefs: [{ name: 'slow', port: 80 }], timeouts: { backendRequest: '300ms' } }])],
]

async function waitForNodes(bus: Bus, revision: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const all = await bus.readStatuses().catch(() => [])
    const revisions = new Map(all.map((s) => [s.node, (s.status as { revision: number }).revision]))
    if (['node1', 'node2'].every((n) => (revisions.get(n) ?? 0) >= revision)) return
    if (Date.now() > deadline) throw new Error(`nodes did not reach revision ${revision}: ${JSON.stringify([...revisions])}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

interface CurlReply { status: number; headers: Record<string, string>; body: string }

/** curl in the client pod; -i so the status and headers come back too. */
async function curl(lab: Lab, url: string, ...args: string[]): Promise<CurlReply> {
  const r = await lab.run('client', ['curl', '-s', '-i', '--max-time', '10', ...args, url])
  if (r.code !== 0) throw new Error(`curl ${url} exited ${r.code}: ${r.stderr}`)
  const [head = '', ...rest] = r.stdout.split('\r\n\r\n')
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') }
}

t.test('HTTP/1.1 through the node proxy in a two-node lab', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, topology, { startDaemons: true })
  const operator = await lab.connect('operator')
  t.teardown(() => operator.close())
  for (const name of ['web-a', 'web-b', 'other']) await startIn(t, lab, name, [node, '-e', serverScript, name, 'ok'], /listening/)
  await startIn(t, lab, 'flaky', [node, '-e', serverScript, 'flaky', 'flaky'], /listening/)
  await startIn(t, lab, 'slow', [node, '-e', serverScript, 'slow', 'slow', '3000'], /listening/)
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

  t.test('an HTTPRoute 90/10 split over 300 requests stays within statistical bounds', async (t) => {
    const r = await lab.run('client', [node, '-e', clientScript, 'http://198.19.0.20/split', '300'])
    const counts = JSON.parse(r.stdout.trim()) as Record<string, number>
    // Binomial(300, 0.1): mean 30, sd ≈ 5.2; 8..60 is more than four sd either way.
    const canary = counts['web-b'] ?? 0
    t.equal((counts['web-a'] ?? 0) + canary, 300, `every request answered by web-a or web-b (${r.stdout.trim()})`)
    t.ok(canary >= 8 && canary <= 60, `web-b got ${canary} of 300 (expected about 30)`)
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

  t.test('weft_requests_total carries the labelled counts', async (t) => {
    const node1 = lab.nodes.find((n) => n.name === 'node1')!
    const samples = parsePrometheusText(await (await fetch(`http://${node1.address}:15020/metrics`)).text())
    const base = { reporter: 'source', source_workload: 'default/client', protocol: 'http' }
    const split = sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/web-v1', destination_workload: 'default/web-a', response_code: '200' }) +
      sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/web-v2', destination_workload: 'default/web-b', response_code: '200' })
    t.ok(split >= 300, `the split's 300 requests (and the first test's) are counted by destination (${split})`)
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/flaky', response_code: '200' }), 6, 'six retried requests count once each, as 200')
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/slow', response_code: '504' }), 1, 'the timeout as 504')
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/empty', destination_workload: 'unknown', response_code: '503' }), 1, 'no endpoint as 503 to workload unknown')
    t.equal(sumSamples(samples, 'weft_requests_total', { ...base, destination_service: 'default/other', destination_workload: 'default/other', response_code: '200' }), 1, 'the path match')
    t.ok(sumSamples(samples, 'weft_request_duration_seconds_count', { ...base, destination_service: 'default/flaky' }) === 6, 'durations are observed per request')
  })
})
