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

interface Seen { headers: http.IncomingHttpHeaders; bytes: number; sha256: string }

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
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
    req.on('end', () => {
      const seen: Seen = { headers: req.headers, bytes, sha256: hash.digest('hex') }
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
async function proxyFor(t: Test, snapshot: MeshSnapshot, vip = VIP): Promise<{ port: number; metrics: NodeMetrics }> {
  const log = createLogger({}, 'error')
  const metrics = new NodeMetrics('node1', () => undefined)
  const tunnels = new TunnelPool(log, 1000, { secureContext: () => undefined })
  const proxy = new Http1Proxy({ node: 'node1', inboundPort: 15008, connectTimeoutMs: 1000, snapshot: () => snapshot, tunnels, metrics, log })
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
