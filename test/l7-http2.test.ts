// The HTTP/2 and gRPC frontend, and HTTP/1.1 upgrades, on loopback without a lab: a listener
// hands accepted connections to the proxies as the outbound listener does, with a snapshot whose
// endpoints are servers on 127.0.0.x. The lab tests (mesh-l7-protocols) show the same through
// the kernel's redirection; these check the protocol details: trailers, gRPC statuses, streaming
// calls, weft's own gRPC errors, protocol errors on one connection, WebSocket echo.
import t, { type Test } from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { once } from 'node:events'

import { buildSnapshot, type MeshSnapshot } from '../src/config/resources/index.ts'
import { TunnelPool } from '../src/datapath/tunnel.ts'
import { Http1Proxy } from '../src/l7/http1.ts'
import { Http2Proxy } from '../src/l7/http2.ts'
import { Pipeline } from '../src/l7/pipeline.ts'
import { createLogger } from '../src/telemetry/log.ts'
import { NodeMetrics } from '../src/telemetry/metrics.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { grpcClient, startGrpcServer } from './fixtures/grpc.ts'
import { checkWebSocketEcho, startWebSocketServer } from './fixtures/websocket.ts'

const VIP = '198.19.0.10'

function snapshotWith(appProtocol: string, ports: readonly number[], extra: Record<string, unknown> = {}, targetPort = ports[0]): MeshSnapshot {
  const resources = new Map<string, unknown>([
    ['node._.node1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '198.18.0.2', proxyIp: '198.18.0.2', podCIDR: '198.18.1.0/24' } }],
    ['service.default.web', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: VIP, selector: { app: 'web' }, ports: [{ name: 'main', port: 80, targetPort, appProtocol }] } }],
    ...ports.map((port, i): [string, unknown] => [`pod.default.server${i}`, { apiVersion: 'v1', kind: 'Pod', metadata: { name: `server${i}`, namespace: 'default', labels: { app: 'web' } }, spec: { nodeName: 'node1' }, status: { podIP: `127.0.0.${2 + i}` } }]),
    ...Object.entries(extra),
  ])
  return buildSnapshot(resources)
}

/** A listener that gives each connection to the HTTP/2 (or HTTP/1) proxy as dialled to `VIP`:80. */
async function proxyFor(t: Test, snapshot: MeshSnapshot, frontend: 'http1' | 'http2' = 'http2', sessionIdleTimeoutMs?: number): Promise<{ port: number; metrics: NodeMetrics }> {
  const log = createLogger({}, 'error')
  const metrics = new NodeMetrics('node1', () => undefined)
  const tunnels = new TunnelPool(log, 1000, { secureContext: () => undefined })
  const pipeline = new Pipeline({ node: 'node1', snapshot: () => snapshot, metrics, log })
  const upstream = { node: 'node1', inboundPort: 15008, connectTimeoutMs: 1000, tunnels }
  const proxy = frontend === 'http2'
    ? new Http2Proxy({ ...upstream, pipeline, log, sessionIdleTimeoutMs })
    : new Http1Proxy({ ...upstream, pipeline, snapshot: () => snapshot, metrics, log })
  const listener = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
    proxy.handle(socket, { sourceIp: '127.0.0.9', sourceWorkload: 'default/client', sourceIdentity: 'spiffe://cluster.local/ns/default/sa/client', vip: VIP, port: 80 })
  })
  listener.listen(0, '127.0.0.1')
  await once(listener, 'listening')
  t.teardown(() => { listener.close(); proxy.close(); tunnels.close() })
  return { port: (listener.address() as net.AddressInfo).port, metrics }
}

/** An h2c server on `host` that echoes the request body's digest, and sends a trailer. */
async function h2Backend(t: Test, host: string): Promise<number> {
  const server = http2.createServer()
  server.on('stream', (stream, headers) => {
    const path = String(headers[':path'])
    const download = /^\/download\/(\d+)$/.exec(path)
    if (download) {
      stream.respond({ ':status': 200 }, { waitForTrailers: true })
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'done' }))
      const total = Number(download[1])
      const chunk = Buffer.alloc(64 * 1024, 5)
      let sent = 0
      const pump = (): void => {
        while (sent < total) {
          const piece = chunk.subarray(0, Math.min(chunk.length, total - sent))
          sent += piece.length
          if (!stream.write(piece)) { stream.once('drain', pump); return }
        }
        stream.end()
      }
      pump()
      return
    }
    const hash = createHash('sha256')
    let bytes = 0
    stream.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true })
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-bytes': String(bytes) }))
      stream.end(JSON.stringify({ bytes, sha256: hash.digest('hex'), headers, server: host }))
    })
  })
  server.listen(0, host)
  await once(server, 'listening')
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on('session', (s) => { sessions.add(s); s.on('close', () => sessions.delete(s)) })
  t.teardown(() => { for (const s of sessions) s.destroy(); server.close() })
  return (server.address() as net.AddressInfo).port
}

interface H2Reply { status: number; headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }

function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined })
    let head: http2.IncomingHttpHeaders = {}
    let trailers: http2.IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => { head = h })
    stream.on('trailers', (h) => { trailers = h })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => resolve({ status: Number(head[':status']), headers: head, trailers, body: Buffer.concat(chunks) }))
    stream.on('error', reject)
    if (body !== undefined) stream.end(body)
  })
}

function connect(t: Test, port: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`)
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  return session
}

t.test('h2c: requests multiplex on one connection, bodies stream both ways with trailers, headers forwarded', async (t) => {
  const port = await h2Backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith('kubernetes.io/h2c', [port]))
  const session = connect(t, proxy.port)
  const upload = Buffer.alloc(3 * 1024 * 1024, 9)
  const [posted, downloaded] = await Promise.all([
    h2Request(session, { ':method': 'POST', ':path': '/upload', 'x-kept': 'yes' }, upload),
    h2Request(session, { ':path': '/download/5000000' }),
  ])
  t.equal(posted.status, 200)
  const seen = JSON.parse(posted.body.toString()) as { bytes: number; sha256: string; headers: Record<string, string> }
  t.equal(seen.bytes, upload.length, 'the whole upload arrived')
  t.equal(seen.sha256, createHash('sha256').update(upload).digest('hex'))
  t.equal(seen.headers['x-kept'], 'yes')
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.9')
  t.match(seen.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  t.equal(posted.trailers['x-bytes'], String(upload.length), 'the upstream trailer reached the client')
  t.equal(downloaded.body.length, 5_000_000)
  t.equal(downloaded.trailers['x-checksum'], 'done')
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'http2', response_code: '200', destination_service: 'default/web' }), 2)
})

t.test('h2c: an unreachable endpoint gets a 503 naming it; the connection carries on', async (t) => {
  const closed = net.createServer()
  closed.listen(0, '127.0.0.2')
  await once(closed, 'listening')
  const port = (closed.address() as net.AddressInfo).port
  closed.close()
  const proxy = await proxyFor(t, snapshotWith('kubernetes.io/h2c', [port]))
  const session = connect(t, proxy.port)
  const reply = await h2Request(session, { ':path': '/' })
  t.equal(reply.status, 503)
  t.equal(reply.headers['weft-error'], `cannot connect to endpoint 127.0.0.2:${port} of default/web`)
  const again = await h2Request(session, { ':path': '/' })
  t.equal(again.status, 503, 'the same session serves the next request')
})

/**
 * An HTTP/1.1-only server on `host` (node:http answers the HTTP/2 preface with a 400): `/upload`
 * answers the digest of the body and the head it got, `/trailers` a chunked body with a trailer and
 * hop-by-hop headers, `/empty` a 204.
 */
async function http1OnlyBackend(t: Test, host: string): Promise<number> {
  const server = http.createServer((req, res) => {
    if (req.url === '/trailers') {
      res.writeHead(200, { trailer: 'x-digest', connection: 'keep-alive, x-hop', 'keep-alive': 'timeout=5', 'x-hop': 'dropped', 'x-end-to-end': 'kept' })
      res.write('part one;')
      res.addTrailers({ 'x-digest': 'abc123' })
      res.end('part two')
      return
    }
    if (req.url === '/empty') { res.writeHead(204).end(); req.resume(); return }
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ bytes, sha256: hash.digest('hex'), method: req.method, url: req.url, httpVersion: req.httpVersion, headers: req.headers }))
    })
  })
  server.listen(0, host)
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return (server.address() as net.AddressInfo).port
}

t.test('h2c to an `http` port: the requests go to the HTTP/1.1-only endpoint in HTTP/1.1 and come back as HTTP/2', async (t) => {
  const port = await http1OnlyBackend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith('http', [port]))
  const session = connect(t, proxy.port)
  const upload = Buffer.alloc(3 * 1024 * 1024, 7) // past the 64 KiB replay bound: streamed, chunked upstream
  const [posted, small, withTrailers, empty] = await Promise.all([
    h2Request(session, { ':method': 'POST', ':path': '/upload?big=1', ':authority': 'web.default', 'x-kept': 'yes' }, upload),
    h2Request(session, { ':method': 'PUT', ':path': '/upload', ':authority': 'web.default', 'content-length': '5' }, Buffer.from('hello')),
    h2Request(session, { ':path': '/trailers', te: 'trailers' }),
    h2Request(session, { ':path': '/empty' }),
  ])
  t.equal(posted.status, 200)
  const seen = JSON.parse(posted.body.toString()) as { bytes: number; sha256: string; method: string; url: string; httpVersion: string; headers: Record<string, string> }
  t.equal(seen.httpVersion, '1.1', 'the endpoint was spoken to in HTTP/1.1')
  t.equal(seen.method, 'POST')
  t.equal(seen.url, '/upload?big=1')
  t.equal(seen.bytes, upload.length, 'the whole streamed upload arrived')
  t.equal(seen.sha256, createHash('sha256').update(upload).digest('hex'))
  t.equal(seen.headers.host, 'web.default', ':authority became host')
  t.equal(seen.headers['x-kept'], 'yes')
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.9')
  t.notOk(Object.keys(seen.headers).some((name) => name.startsWith(':')), 'no pseudo-header reached the endpoint')
  const buffered = JSON.parse(small.body.toString()) as { bytes: number; method: string; headers: Record<string, string> }
  t.equal(buffered.method, 'PUT')
  t.equal(buffered.bytes, 5)
  t.equal(buffered.headers['content-length'], '5')
  t.equal(withTrailers.status, 200)
  t.equal(withTrailers.body.toString(), 'part one;part two')
  t.equal(withTrailers.trailers['x-digest'], 'abc123', 'the chunked trailer came back as an HTTP/2 trailer')
  t.equal(withTrailers.headers['x-end-to-end'], 'kept')
  t.equal(withTrailers.headers['x-hop'], undefined, 'a header named in Connection is dropped')
  t.equal(withTrailers.headers['keep-alive'], undefined)
  t.equal(empty.status, 204)
  t.equal(empty.body.length, 0)
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'http2', destination_service: 'default/web' }), 4, 'counted as the client spoke: http2')
})

t.test('h2c to an HTTP/1.1-only endpoint on an h2c port: 502 saying it does not speak HTTP/2; gRPC gets the same as UNAVAILABLE', async (t) => {
  const port = await http1OnlyBackend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith('h2c', [port]))
  const session = connect(t, proxy.port)
  const reply = await h2Request(session, { ':path': '/' })
  t.equal(reply.status, 502)
  t.equal(reply.headers['weft-error'], `endpoint 127.0.0.2:${port} of default/web does not speak HTTP/2: it answered the HTTP/2 connection preface with bytes that are not HTTP/2 (as an HTTP/1.1 server does); if it speaks HTTP/1.1, declare appProtocol http on the service port`)
  const call = await h2Request(session, { ':method': 'POST', ':path': '/pkg.Echo/Say', 'content-type': 'application/grpc', te: 'trailers' }, Buffer.alloc(5))
  t.equal(call.status, 200)
  t.equal(call.headers['grpc-status'], '14', 'UNAVAILABLE')
  t.match(String(call.headers['grpc-message']), /^endpoint 127\.0\.0\.2:\d+ of default\/web does not speak HTTP\/2: it answered the HTTP\/2 connection preface/)

  const closes = net.createServer((socket) => { socket.on('error', () => {}); socket.once('data', () => socket.end()) })
  closes.listen(0, '127.0.0.2')
  await once(closes, 'listening')
  t.teardown(() => closes.close())
  const closesPort = (closes.address() as net.AddressInfo).port
  const other = await proxyFor(t, snapshotWith('h2c', [closesPort]))
  const closed = await h2Request(connect(t, other.port), { ':path': '/' })
  t.equal(closed.status, 502)
  t.match(String(closed.headers['weft-error']), /^endpoint 127\.0\.0\.2:\d+ of default\/web does not speak HTTP\/2: it closed the connection on the HTTP\/2 connection preface/)
})

t.test('gRPC: unary calls, statuses from the server, bidirectional streaming', async (t) => {
  const server = await startGrpcServer({ host: '127.0.0.2', port: 0, name: 'a' })
  t.teardown(() => server.close())
  const proxy = await proxyFor(t, snapshotWith('grpc', [server.port]))
  const client = grpcClient(`127.0.0.1:${proxy.port}`)
  t.teardown(() => client.close())
  const reply = await client.echo('hello')
  t.equal(reply.message, 'hello')
  t.equal(reply.server, 'a')
  t.equal(reply.metadata['x-forwarded-for'], '127.0.0.9', 'the server saw weft\'s headers')
  const failure = await client.echo('fail', { status: 7 }).then(() => undefined, (err: { code: number; details: string }) => err)
  t.equal(failure?.code, 7, 'the server\'s grpc-status reaches the client')
  const replies = await client.chat(['one', 'two', 'three'])
  t.same(replies.map((r) => [r.seq, r.message]), [[1, 'one'], [2, 'two'], [3, 'three']])
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'grpc', destination_service: 'default/web' }), 3)
})

t.test('gRPC: no healthy endpoint is UNAVAILABLE with a message naming the service', async (t) => {
  // No pods: the service has no endpoint.
  const proxy = await proxyFor(t, snapshotWith('grpc', [], {}, 50051))
  const client = grpcClient(`127.0.0.1:${proxy.port}`)
  t.teardown(() => client.close())
  const failure = await client.echo('x').then(() => undefined, (err: { code: number; details: string }) => err)
  t.equal(failure?.code, 14)
  t.match(failure?.details, /no healthy endpoint for default\/web/)
})

t.test('HTTP/2 protocol errors end that connection alone', async (t) => {
  const port = await h2Backend(t, '127.0.0.2')
  const proxy = await proxyFor(t, snapshotWith('kubernetes.io/h2c', [port]))
  // The preface, then garbage where a frame belongs.
  const raw = net.connect(proxy.port, '127.0.0.1')
  raw.on('error', () => {})
  raw.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), Buffer.from([0, 0, 4, 0xff, 0xff, 0, 0, 0, 9, 1, 2, 3, 4]), Buffer.alloc(64, 0xee)]))
  const received: Buffer[] = []
  raw.on('data', (c: Buffer) => received.push(c))
  await once(raw, 'close')
  const bytes = Buffer.concat(received)
  // Somewhere in what came back: a GOAWAY frame (type 7).
  let goaway = false
  for (let i = 0; i + 9 <= bytes.length;) {
    const length = bytes.readUIntBE(i, 3)
    if (bytes[i + 3] === 7) goaway = true
    i += 9 + length
  }
  t.ok(goaway, 'the broken connection got a GOAWAY')
  const session = connect(t, proxy.port)
  const reply = await h2Request(session, { ':path': '/' })
  t.equal(reply.status, 200, 'a new connection is served')
})

t.test('HTTP/1.1 upgrade: a WebSocket echo through the proxy', async (t) => {
  const server = await startWebSocketServer({ host: '127.0.0.2', port: 0, name: 'ws-a' })
  t.teardown(() => server.close())
  const proxy = await proxyFor(t, snapshotWith('http', [server.port]), 'http1')
  const check = await checkWebSocketEcho(`ws://127.0.0.1:${proxy.port}/chat`, { messages: 20, binaryBytes: 1 << 20 })
  t.equal(check.error, undefined)
  t.ok(check.ok, 'every message echoed')
  t.equal(check.echoed, check.sent)
  t.equal(check.mismatches, 0)
  t.equal(check.server, 'ws-a')
  t.equal(check.path, '/chat')
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'http', response_code: '101' }), 1)
})

t.test('HTTP/1.1 trailers are relayed after a chunked body', async (t) => {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { trailer: 'x-digest' })
    res.write('part one;')
    res.addTrailers({ 'x-digest': 'abc123' })
    res.end('part two')
  })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const proxy = await proxyFor(t, snapshotWith('http', [(server.address() as net.AddressInfo).port]), 'http1')
  const reply = await new Promise<{ body: string; trailers: NodeJS.Dict<string> }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: proxy.port, path: '/', agent: false, headers: { te: 'trailers' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ body, trailers: res.trailers }))
    }).on('error', reject)
  })
  t.equal(reply.body, 'part one;part two')
  t.equal(reply.trailers['x-digest'], 'abc123')
})

t.test('breaker maxConnections: a try that needs a connection beyond the limit is refused 503; kept-alive ones serve on', async (t) => {
  let release: (() => void) | undefined
  const server = http.createServer((req, res) => {
    req.resume()
    if (req.url === '/hold') { release = () => res.end('held'); return }
    res.end('ok')
  })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const policy = { apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'web', namespace: 'default' }, spec: { targetRef: { kind: 'Service', name: 'web' }, circuitBreaker: { maxConnections: 1 } } }
  const proxy = await proxyFor(t, snapshotWith('http', [(server.address() as net.AddressInfo).port], { 'destinationpolicy.default.web': policy }), 'http1')
  const get = (path: string): Promise<{ status: number; error: string | undefined; body: string }> => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: proxy.port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, error: res.headers['weft-error'] as string | undefined, body }))
    }).on('error', reject)
  })
  const held = get('/hold')
  while (!release) await new Promise((resolve) => setTimeout(resolve, 10))
  const refused = await get('/second')
  t.equal(refused.status, 503, 'the one upstream connection is busy: no second one')
  t.equal(refused.error, 'circuit breaker open for default/web: maxConnections at its limit of 1')
  release()
  t.equal((await held).body, 'held')
  const reused = await get('/third')
  t.equal(reused.status, 200, 'the kept-alive connection serves the next request')
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_circuit_breaker_trips_total', { destination_service: 'default/web', limit: 'maxConnections' }), 1)
})

t.test('gRPC: a trailers-only UNAVAILABLE is retried by default; other statuses are not', async (t) => {
  // A raw HTTP/2 server speaking just enough gRPC: odd calls get UNAVAILABLE, even ones an empty OK reply.
  let calls = 0
  const server = http2.createServer()
  server.on('stream', (stream, headers) => {
    stream.resume()
    stream.on('end', () => {
      calls++
      if (headers[':path'] === '/weft.test.Echo/Denied') {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '7', 'grpc-message': 'no' }, { endStream: true })
        return
      }
      if (calls % 2 === 1) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'try again' }, { endStream: true })
        return
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      stream.end(Buffer.from([0, 0, 0, 0, 0]))
    })
  })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const proxy = await proxyFor(t, snapshotWith('grpc', [(server.address() as net.AddressInfo).port]))
  const session = connect(t, proxy.port)
  const call = (method: string): Promise<H2Reply> => h2Request(session, { ':method': 'POST', ':path': `/weft.test.Echo/${method}`, 'content-type': 'application/grpc', te: 'trailers' }, Buffer.from([0, 0, 0, 0, 0]))
  for (let i = 0; i < 3; i++) {
    const reply = await call('Echo')
    t.equal(reply.trailers['grpc-status'], '0', `call ${i} succeeded on its retry`)
  }
  t.equal(calls, 6, 'each call took two tries')
  const denied = await call('Denied')
  t.equal(denied.headers['grpc-status'], '7', 'PERMISSION_DENIED reaches the client as it was')
  t.equal(calls, 7, 'and was not retried')
  const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
  t.equal(sumSamples(samples, 'weft_retries_total', { destination_service: 'default/web', reason: 'retriable-grpc-status' }), 3)
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'grpc', grpc_status: '0' }), 3)
  t.equal(sumSamples(samples, 'weft_requests_total', { protocol: 'grpc', grpc_status: '7' }), 1)
})

t.test('h2c: a stream silent for longer than the session idle timeout is not cut; an idle session is closed', async (t) => {
  const server = http2.createServer()
  server.on('stream', (stream) => { stream.resume(); setTimeout(() => { stream.respond({ ':status': 200 }); stream.end('late') }, 1200) })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const proxy = await proxyFor(t, snapshotWith('kubernetes.io/h2c', [(server.address() as net.AddressInfo).port]), 'http2', 400)
  const session = connect(t, proxy.port)
  const reply = await h2Request(session, { ':path': '/slow' })
  t.equal(reply.status, 200, 'answered after three idle timeouts\' worth of silence')
  t.equal(reply.body.toString(), 'late')
  await once(session, 'close')
  t.pass('with no stream open the session was closed')
})

t.test('h2c: an endpoint that answers before reading a large upload leaves the client\'s stream able to finish', async (t) => {
  const server = http2.createServer()
  // Answers at once and never reads the body.
  server.on('stream', (stream) => { stream.respond({ ':status': 413 }); stream.end('too large') })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const proxy = await proxyFor(t, snapshotWith('kubernetes.io/h2c', [(server.address() as net.AddressInfo).port]))
  const session = connect(t, proxy.port)
  const reply = await h2Request(session, { ':method': 'POST', ':path': '/upload' }, Buffer.alloc(8 * 1024 * 1024, 1))
  t.equal(reply.status, 413)
  t.equal(reply.body.toString(), 'too large')
  const again = await h2Request(session, { ':path': '/next' })
  t.equal(again.status, 413, 'the session serves the next request')
})

t.test('HTTPRoute ResponseHeaderModifier: set, add and remove on the response; unapplied filters are warned about', async (t) => {
  const server = http.createServer((req, res) => { req.resume(); res.writeHead(200, { 'x-internal': 'secret', 'x-version': 'v1' }); res.end('ok') })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const route = {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'default' },
    spec: {
      parentRefs: [{ kind: 'Service', name: 'web', port: 80 }],
      rules: [{
        filters: [
          { type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'X-Version', value: 'routed' }], add: [{ name: 'x-route', value: 'web' }], remove: ['x-internal'] } },
          { type: 'RequestMirror', requestMirror: { backendRef: { name: 'web', port: 80 } } },
        ],
        backendRefs: [{ name: 'web', port: 80 }],
      }],
    },
  }
  const snapshot = snapshotWith('http', [(server.address() as net.AddressInfo).port], { 'httproute.default.web': route })
  t.same(snapshot.warnings.filter((w) => w.key === 'httproute.default.web'), [{ key: 'httproute.default.web', message: 'route default/web: rule 0: filter RequestMirror is not applied by weft yet (applied: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite; on a backendRef RequestHeaderModifier, ResponseHeaderModifier); the rule routes without it' }])
  const proxy = await proxyFor(t, snapshot, 'http1')
  const reply = await new Promise<http.IncomingMessage>((resolve, reject) => http.get({ host: '127.0.0.1', port: proxy.port, path: '/', agent: false }, resolve).on('error', reject))
  reply.resume()
  t.equal(reply.statusCode, 200)
  t.equal(reply.headers['x-version'], 'routed', 'set replaces')
  t.equal(reply.headers['x-route'], 'web', 'add adds')
  t.equal(reply.headers['x-internal'], undefined, 'remove removes')
})

t.test('HTTPRoute RequestRedirect answers with a Location; URLRewrite sends the request on with another host and path', async (t) => {
  const seen: { host?: string | undefined; url?: string | undefined }[] = []
  const server = http.createServer((req, res) => { req.resume(); seen.push({ host: req.headers.host, url: req.url }); res.end('ok') })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const route = {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'default' },
    spec: {
      parentRefs: [{ kind: 'Service', name: 'web', port: 80 }],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' }, statusCode: 301 } }] },
        { matches: [{ path: { type: 'PathPrefix', value: '/secure' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', hostname: 'web.example.test' } }] },
        { matches: [{ path: { type: 'PathPrefix', value: '/api/' } }], filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'backend.internal', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } }], backendRefs: [{ name: 'web', port: 80 }] },
        { matches: [{ path: { type: 'Exact', value: '/home' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplaceFullPath', replaceFullPath: '/index.html' } } }], backendRefs: [{ name: 'web', port: 80 }] },
      ],
    },
  }
  const snapshot = snapshotWith('http', [(server.address() as net.AddressInfo).port], { 'httproute.default.web': route })
  t.same(snapshot.warnings.filter((w) => w.key === 'httproute.default.web'), [], 'nothing unapplied')
  const proxy = await proxyFor(t, snapshot, 'http1')
  const get = (path: string): Promise<http.IncomingMessage> => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: proxy.port, path, agent: false, headers: { host: 'web.default:8080' } }, (res) => { res.resume(); resolve(res) }).on('error', reject)
  })
  const moved = await get('/old/page?x=1')
  t.equal(moved.statusCode, 301)
  t.equal(moved.headers.location, 'http://web.default/new/page?x=1', 'the matched prefix replaced, host and query kept, the port the Service port (80: left out)')
  const secure = await get('/secure/login')
  t.equal(secure.statusCode, 302, 'the default status')
  t.equal(secure.headers.location, 'https://web.example.test/secure/login', 'a new scheme takes its well-known port, which is left out')
  t.equal(seen.length, 0, 'redirects never reach the backend')
  t.equal((await get('/api/items?limit=2')).statusCode, 200)
  t.equal((await get('/home')).statusCode, 200)
  t.same(seen, [{ host: 'backend.internal', url: '/v2/items?limit=2' }, { host: 'web.default:8080', url: '/index.html' }], 'rewritten host and path upstream')
})

t.test('h2c: a request timeout during a streamed upload answers 504 and reads the rest of the upload', async (t) => {
  const server = http2.createServer()
  server.on('stream', () => { /* never answers, never reads */ })
  server.listen(0, '127.0.0.2')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const route = {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'default' },
    spec: { parentRefs: [{ kind: 'Service', name: 'web', port: 80 }], rules: [{ backendRefs: [{ name: 'web', port: 80 }], timeouts: { request: '300ms' } }] },
  }
  const proxy = await proxyFor(t, snapshotWith('kubernetes.io/h2c', [(server.address() as net.AddressInfo).port], { 'httproute.default.web': route }))
  const session = connect(t, proxy.port)
  const stream = session.request({ ':method': 'POST', ':path': '/upload' })
  const chunk = Buffer.alloc(256 * 1024, 1)
  stream.write(chunk)
  const [head] = await once(stream, 'response') as [http2.IncomingHttpHeaders]
  t.equal(head[':status'], 504)
  t.equal(head['weft-error'], 'request timeout of 300ms for default/web')
  stream.resume()
  // 8 MiB more: far past every window; it only gets through if the proxy keeps reading.
  for (let i = 0; i < 32; i++) if (!stream.write(chunk)) await once(stream, 'drain')
  stream.end()
  await once(stream, 'close')
  t.pass('the upload was read to its end and the stream closed')
})
