// The HTTP/1.1 proxy on loopback, without a lab: a listener hands accepted connections to
// Http1Proxy as the outbound listener does, with a snapshot whose endpoints are servers on
// 127.0.0.x. Checks what a lab test would only see indirectly: hop-by-hop headers, streamed
// bodies both ways, no matching route, malformed input on one connection, unreachable endpoints.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { once } from 'node:events'

import { buildSnapshot, type MeshSnapshot } from '../src/config/resources/index.ts'
import { TunnelPool } from '../src/datapath/tunnel.ts'
import { Http1Proxy } from '../src/l7/http1.ts'
import { createLogger } from '../src/telemetry/log.ts'
import { NodeMetrics } from '../src/telemetry/metrics.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'

const VIP = '198.19.0.10'

interface Seen { url: string; method: string; headers: http.IncomingHttpHeaders; bytes: number; sha256: string }

/** A server that answers `/download/N` with N bytes, and anything else with what it received. */
async function backend(t: Test, host: string, port = 0): Promise<number> {
  const server = http.createServer((req, res) => {
    const download = /^\/download\/(\d+)$/.exec(req.url ?? '')
    if (download) {
      const total = Number(download[1])
      res.writeHead(200, { connection: 'x-hop', 'x-hop': 'secret', 'keep-alive': 'timeout=5' })
      const chunk = Buffer.alloc(64 * 1024, 7)
      let sent = 0
      const pump = (): void => {
        while (sent < total) {
          const piece = chunk.subarray(0, Math.min(chunk.length, total - sent))
          sent += piece.length
          if (!res.write(piece)) { res.once('drain', pump); return }
        }
        res.end()
      }
      pump()
      return
    }
    if (req.url === '/trailers') {
      res.writeHead(200, { trailer: 'x-checksum' })
      res.write('part one,')
      res.write('part two')
      res.addTrailers({ 'x-checksum': 'abc123' })
      res.end()
      return
    }
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
    req.on('end', () => {
      const seen: Seen = { url: req.url ?? '', method: req.method ?? '', headers: req.headers, bytes, sha256: hash.digest('hex') }
      res.end(JSON.stringify(seen))
    })
  })
  server.listen(port, host)
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return (server.address() as net.AddressInfo).port
}

function snapshotWith(port: number, extra: Record<string, unknown> = {}): MeshSnapshot {
  const resources = new Map<string, unknown>([
    ['node._.node1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '198.18.0.2', proxyIp: '198.18.0.2', podCIDR: '198.18.1.0/24' } }],
    ['pod.default.server', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'server', namespace: 'default', labels: { app: 'web' } }, spec: { nodeName: 'node1' }, status: { podIP: '127.0.0.2' } }],
    ['pod.default.gone', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'gone', namespace: 'default', labels: { app: 'gone' } }, spec: { nodeName: 'node1' }, status: { podIP: '127.0.0.3' } }],
    ['service.default.web', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: VIP, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: port, appProtocol: 'http' }] } }],
    ['service.default.gone', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'gone', namespace: 'default' }, spec: { clusterIP: '198.19.0.11', selector: { app: 'gone' }, ports: [{ name: 'http', port: 80, targetPort: port, appProtocol: 'http' }] } }],
    ...Object.entries(extra),
  ])
  return buildSnapshot(resources)
}

/** A listener that gives each connection to the proxy as dialled to `vip`:80. */
async function proxyFor(t: Test, snapshot: MeshSnapshot, vip = VIP, headTimeoutMs?: number): Promise<{ port: number; metrics: NodeMetrics }> {
  const log = createLogger({}, 'error')
  const metrics = new NodeMetrics('node1', () => undefined)
  const tunnels = new TunnelPool(log, 1000, { secureContext: () => undefined })
  const proxy = new Http1Proxy({ node: 'node1', inboundPort: 15008, connectTimeoutMs: 1000, snapshot: () => snapshot, tunnels, metrics, log, headTimeoutMs })
  const listener = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
    proxy.handle(socket, { sourceIp: '127.0.0.9', sourceWorkload: 'default/client', sourceIdentity: 'spiffe://cluster.local/ns/default/sa/client', vip, port: 80 })
  })
  listener.listen(0, '127.0.0.1')
  await once(listener, 'listening')
  t.teardown(() => { listener.close(); proxy.close(); tunnels.close() })
  return { port: (listener.address() as net.AddressInfo).port, metrics }
}

function request(port: number, options: http.RequestOptions, body?: (req: http.ClientRequest) => void): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, agent: false, ...options }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    if (body) body(req)
    else req.end()
  })
}

t.test('hop-by-hop headers are dropped both ways; x-request-id and x-forwarded-for are added', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port))
  const reply = await request(proxy.port, { path: '/', headers: { connection: 'keep-alive, x-secret', 'x-secret': '1', 'keep-alive': 'timeout=5', 'proxy-authorization': 'x', 'x-kept': 'yes' } })
  t.equal(reply.status, 200)
  const seen = JSON.parse(reply.body.toString()) as Seen
  t.equal(seen.headers['x-kept'], 'yes')
  t.notOk(seen.headers['x-secret'], 'a header named in Connection is not forwarded')
  t.notOk(seen.headers['keep-alive'])
  t.notOk(seen.headers['proxy-authorization'])
  t.match(seen.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.9')
  const download = await request(proxy.port, { path: '/download/10' })
  t.notOk(download.headers['x-hop'], 'nor a response header named in the upstream Connection')
  t.notOk(download.headers['keep-alive'] === 'timeout=5', 'the upstream keep-alive parameters stay upstream')
})

t.test('bodies stream both ways: 32 MiB up (chunked) and down', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port))
  const total = 32 * 1024 * 1024
  const hash = createHash('sha256')
  const up = await request(proxy.port, { method: 'POST', path: '/upload' }, (req) => {
    const chunk = Buffer.alloc(256 * 1024, 3)
    let sent = 0
    const pump = (): void => {
      while (sent < total) {
        sent += chunk.length
        hash.update(chunk)
        if (!req.write(chunk)) { req.once('drain', pump); return }
      }
      req.end()
    }
    pump()
  })
  const seen = JSON.parse(up.body.toString()) as Seen
  t.equal(seen.bytes, total, 'the upload arrived whole')
  t.equal(seen.sha256, hash.digest('hex'), 'and unchanged')
  const down = await request(proxy.port, { path: `/download/${total}` })
  t.equal(down.body.length, total, 'the download too')
})

t.test('routes attached but none matches: 404 naming the path', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const route = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'default' }, spec: { parentRefs: [{ kind: 'Service', name: 'web' }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/api' } }], backendRefs: [{ name: 'web', port: 80 }] }] } }
  const proxy = await proxyFor(t, snapshotWith(port, { 'httproute.default.web': route }))
  t.equal((await request(proxy.port, { path: '/api/x' })).status, 200)
  const miss = await request(proxy.port, { path: '/admin' })
  t.equal(miss.status, 404)
  t.equal(miss.headers['weft-error'], 'no route of default/web matches /admin')
})

t.test('an endpoint nobody listens on: 503 naming it, once the connect-failure retries are spent', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port), '198.19.0.11')
  const reply = await request(proxy.port, { path: '/' })
  t.equal(reply.status, 503)
  t.equal(reply.headers['weft-error'], `cannot connect to endpoint 127.0.0.3:${port} of default/gone`)
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_requests_total', { reporter: 'source', source_workload: 'default/client', destination_service: 'default/gone', destination_workload: 'default/gone', response_code: '503', protocol: 'http' }), 1, 'counted once, with its labels')
})

t.test('a malformed request gets a 400 on its own connection; the next connection is served', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port))
  const socket = net.connect(proxy.port, '127.0.0.1')
  socket.end('GET / HTTP/1.1\r\nbad header line\r\n\r\n')
  let raw = ''
  socket.on('data', (c: Buffer) => (raw += c.toString()))
  await once(socket, 'close')
  t.match(raw, /^HTTP\/1\.1 400 /)
  t.match(raw, /weft-error: malformed request/)
  t.equal((await request(proxy.port, { path: '/' })).status, 200)
})

/** Writes `bytes` on a new connection and reads everything until the proxy closes it. */
async function rawExchange(port: number, bytes: string | Buffer): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  let raw = ''
  socket.on('data', (c: Buffer) => (raw += c.toString('latin1')))
  socket.on('error', () => {})
  socket.write(bytes)
  await once(socket, 'close')
  return raw
}

t.test('pipelined requests are answered in order, bodies included; the last one\'s Connection: close ends the connection', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port))
  const raw = await rawExchange(proxy.port,
    'GET /first HTTP/1.1\r\nHost: web\r\n\r\n' +
    'POST /second HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello' +
    'POST /third HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' +
    'GET /fourth HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n')
  const answers = raw.split(/(?=HTTP\/1\.1 )/)
  t.equal(answers.length, 4, `four answers (${JSON.stringify(raw.slice(0, 200))})`)
  const seen = answers.map((answer) => JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4).replace(/^[0-9a-f]+\r\n/, '').replace(/\r\n0\r\n\r\n$/, '')) as Seen)
  t.same(seen.map((x) => x.url), ['/first', '/second', '/third', '/fourth'], 'in the order they were sent')
  t.same(seen.map((x) => x.bytes), [0, 5, 3, 0], 'each with its own body')
  t.match(answers[3], /connection: close/i, 'the last answer says the connection closes')
})

t.test('a chunked response keeps its trailers through the engine; 100-continue is answered by the proxy', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port))
  const trailers = await new Promise<{ body: string; trailers: http.IncomingHttpHeaders }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: proxy.port, path: '/trailers', agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('end', () => resolve({ body, trailers: res.trailers }))
    }).on('error', reject)
  })
  t.equal(trailers.body, 'part one,part two')
  t.same(trailers.trailers, { 'x-checksum': 'abc123' }, 'the trailer arrived after the body')
  let continued = false
  const upload = await request(proxy.port, { method: 'PUT', path: '/upload', headers: { expect: '100-continue', 'content-length': '4' } }, (req) => {
    req.on('continue', () => { continued = true; req.end('data') })
  })
  t.ok(continued, 'the client was told to go on')
  const seen = JSON.parse(upload.body.toString()) as Seen
  t.equal(seen.bytes, 4, 'and its body arrived')
  t.notOk(seen.headers.expect, 'the expectation is not forwarded')
})

t.test('smuggling-shaped and oversized requests are refused before anything is forwarded', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port))
  const cases: Array<[string, string, number]> = [
    ['Content-Length with Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
    ['two different Content-Lengths', 'POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd', 400],
    ['an obs-fold header', 'GET / HTTP/1.1\r\nHost: web\r\nX-Folded: a\r\n b\r\n\r\n', 400],
    ['101 headers', `GET / HTTP/1.1\r\nHost: web\r\n${Array.from({ length: 100 }, (_, i) => `X-H${i}: ${i}\r\n`).join('')}\r\n`, 431],
  ]
  for (const [label, bytes, status] of cases) {
    const raw = await rawExchange(proxy.port, bytes)
    t.match(raw, new RegExp(`^HTTP/1\\.1 ${status} `), `${label}: ${status}`)
    t.match(raw, /weft-error: malformed request \(HPE_/, `${label}: naming the parse error`)
  }
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_requests_total', {}), 0, 'none of them reached the pipeline')
})

t.test('an HTTP/1.0 client gets its body whole and the connection closed; an early answer leaves the connection usable', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const route = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'default' }, spec: { parentRefs: [{ kind: 'Service', name: 'web' }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/api' } }], backendRefs: [{ name: 'web', port: 80 }] }] } }
  const proxy = await proxyFor(t, snapshotWith(port, { 'httproute.default.web': route }))
  const old = await rawExchange(proxy.port, 'GET /api/old HTTP/1.0\r\nHost: web\r\n\r\n')
  t.match(old, /^HTTP\/1\.1 200 /)
  t.notMatch(old, /transfer-encoding: chunked/i, 'no chunked coding for an HTTP/1.0 client')
  const body = JSON.parse(old.slice(old.indexOf('\r\n\r\n') + 4)) as Seen
  t.equal(body.url, '/api/old', 'the body is whole')
  // A 404 from the mesh while the client is still sending a body: the rest is read and dropped,
  // and the next request on the same connection is served.
  const raw = await rawExchange(proxy.port,
    `POST /nowhere HTTP/1.1\r\nHost: web\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(100000)}` +
    'GET /api/after HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n')
  const answers = raw.split(/(?=HTTP\/1\.1 )/)
  t.match(answers[0], /^HTTP\/1\.1 404 /, 'the first request: 404')
  t.match(answers[1] ?? '', /^HTTP\/1\.1 200 [\s\S]*"\/api\/after"/, 'the next one on the same connection: served')
})

t.test('a request head trickling in is cut with 408 once the head timeout passes; a whole one is served', async (t) => {
  const port = await backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith(port), VIP, 300)
  const socket = net.connect(proxy.port, '127.0.0.1')
  let raw = ''
  socket.on('data', (c: Buffer) => (raw += c.toString('latin1')))
  socket.on('error', () => {})
  socket.write('GET / HTTP/1.1\r\nHost: web\r\n')
  // Another header line every 100 ms: each resets an idle timer, none completes the head.
  const trickle = setInterval(() => { if (!socket.destroyed) socket.write('X-Slow: 1\r\n') }, 100)
  await once(socket, 'close')
  clearInterval(trickle)
  t.match(raw, /^HTTP\/1\.1 408 /, 'answered 408')
  t.match(raw, /weft-error: request head not complete within 300 ms/)
  t.equal((await request(proxy.port, { path: '/' })).status, 200, 'a whole head on a new connection is served')
})
