// The HTTP/2 upstream pools on loopback: real h2c servers on 127.0.0.x, and for the tunnel path a
// real InboundListener (the far node's :15008) with a TunnelPool, as two nodes would use them.
import t, { type Test } from 'tap'
import http from 'node:http'
import http2, { type ClientHttp2Stream, type Http2Server, type ServerHttp2Session } from 'node:http2'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { once } from 'node:events'

import { buildSnapshot, type Endpoint, type MeshSnapshot } from '../src/config/resources/index.ts'
import { InboundListener } from '../src/datapath/inbound.ts'
import { testCredentials } from './helpers/svid.ts'
import { TunnelPool } from '../src/datapath/tunnel.ts'
import { H2UpstreamPools } from '../src/l7/upstream-h2.ts'
import { ConnectFailure } from '../src/l7/upstream.ts'
import { startGrpcServer, type EchoReply } from './fixtures/grpc.ts'
import { createLogger } from '../src/telemetry/log.ts'
import { NodeMetrics } from '../src/telemetry/metrics.ts'

const log = createLogger({ test: 'upstream-h2' }, 'error')
const MiB = 1 << 20

/** Deterministic, incompressible bytes: `total` of them in 64 KiB xorshift blocks. */
function* pseudoRandom(total: number, seed: number): Generator<Buffer> {
  let x = seed | 1
  for (let sent = 0; sent < total;) {
    const block = Buffer.alloc(Math.min(65536, total - sent))
    for (let i = 0; i + 4 <= block.length; i += 4) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5
      block.writeInt32LE(x | 0, i)
    }
    sent += block.length
    yield block
  }
}
function sha256Of(total: number, seed: number): string {
  const hash = createHash('sha256')
  for (const block of pseudoRandom(total, seed)) hash.update(block)
  return hash.digest('hex')
}
/** Writes the pseudo-random bytes with backpressure, then ends. */
async function pump(stream: NodeJS.WritableStream, total: number, seed: number): Promise<void> {
  for (const block of pseudoRandom(total, seed)) {
    if (!stream.write(block)) await once(stream, 'drain')
  }
  stream.end()
}

interface H2Server {
  port: number
  server: Http2Server
  /** Every session the server accepted, in order. */
  sessions: ServerHttp2Session[]
  /** Streams `/hold` is holding until `release()`. */
  held: number
  maxHeld: number
  release: () => void
}

/**
 * An h2c server: `/exchange/N` answers N pseudo-random bytes (seed 2) while it reads the request
 * body, then trailers with the body's size and sha256; `/hold` answers once `release()` is called;
 * `/grpc` answers a gRPC-style response whose status is in trailers; anything else 200 `ok`.
 */
async function h2server(t: Test, host: string, settings: http2.Settings = {}): Promise<H2Server> {
  const server = http2.createServer({ settings })
  const state: H2Server = { port: 0, server, sessions: [], held: 0, maxHeld: 0, release: () => {} }
  const waiting: Array<() => void> = []
  let released = false
  // Answers the held streams, and from then on every `/hold` at once.
  state.release = () => { released = true; for (const go of waiting.splice(0)) go() }
  server.on('session', (session) => { state.sessions.push(session); session.on('error', () => {}) })
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {})
    const path = String(headers[':path'])
    const exchange = /^\/exchange\/(\d+)$/.exec(path)
    if (exchange) {
      const hash = createHash('sha256')
      let bytes = 0
      stream.on('data', (chunk: Buffer) => { bytes += chunk.length; hash.update(chunk) })
      const received = once(stream, 'end')
      stream.respond({ ':status': 200 }, { waitForTrailers: true })
      stream.on('wantTrailers', () => {
        void received.then(() => stream.sendTrailers({ 'x-received-bytes': String(bytes), 'x-received-sha256': hash.digest('hex') }))
      })
      void pump(stream, Number(exchange[1]), 2)
      return
    }
    if (path === '/hold') {
      state.held++
      state.maxHeld = Math.max(state.maxHeld, state.held)
      const answer = (): void => { state.held--; stream.respond({ ':status': 200 }); stream.end('released') }
      if (released) answer()
      else waiting.push(answer)
      return
    }
    if (path === '/grpc') {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '5', 'grpc-message': 'not found here' }))
      stream.end(Buffer.from([0, 0, 0, 0, 0]))
      stream.resume()
      return
    }
    stream.respond({ ':status': 200 })
    stream.end('ok')
    stream.resume()
  })
  server.listen(0, host)
  await once(server, 'listening')
  state.port = (server.address() as net.AddressInfo).port
  t.teardown(() => {
    state.release()
    for (const session of state.sessions) session.destroy()
    server.close()
  })
  return state
}

/** n1 is this node (127.0.0.1); n2 (the tunnel's far side) listens on 127.0.0.5. web-local and the clients run on n1, web-remote on n2. */
function snapshotWith(localPort: number, remotePort: number, services: { local?: boolean; remote?: boolean } = { local: true, remote: true }): MeshSnapshot {
  const resources = new Map<string, unknown>([
    ['node._.n1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'n1' }, spec: { address: '127.0.0.1', proxyIp: '127.0.0.1', podCIDR: '127.0.0.0/8' } }],
    ['node._.n2', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'n2' }, spec: { address: '127.0.0.5', proxyIp: '127.0.0.5', podCIDR: '127.0.0.0/8' } }],
    ['pod.default.client', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: 'default' }, spec: { nodeName: 'n1', serviceAccountName: 'client' }, status: { podIP: CLIENT.sourceIp } }],
    ['pod.default.other', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'other', namespace: 'default' }, spec: { nodeName: 'n1', serviceAccountName: 'other' }, status: { podIP: OTHER.sourceIp } }],
    ['pod.default.web-local', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-local', namespace: 'default', labels: { app: 'local' } }, spec: { nodeName: 'n1' }, status: { podIP: '127.0.0.2' } }],
    ['pod.default.web-remote', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-remote', namespace: 'default', labels: { app: 'remote' } }, spec: { nodeName: 'n2' }, status: { podIP: '127.0.0.3' } }],
  ])
  if (services.local) resources.set('service.default.local', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'local', namespace: 'default' }, spec: { clusterIP: '198.19.0.10', selector: { app: 'local' }, ports: [{ name: 'h2c', port: 80, targetPort: localPort, appProtocol: 'kubernetes.io/h2c' }] } })
  if (services.remote) resources.set('service.default.remote', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'remote', namespace: 'default' }, spec: { clusterIP: '198.19.0.11', selector: { app: 'remote' }, ports: [{ name: 'h2c', port: 80, targetPort: remotePort, appProtocol: 'kubernetes.io/h2c' }] } })
  const snapshot = buildSnapshot(resources)
  if (snapshot.rejected.length > 0) throw new Error(`test snapshot rejected: ${JSON.stringify(snapshot.rejected)}`)
  return snapshot
}

function endpointOf(snapshot: MeshSnapshot, vip: string): Endpoint {
  const endpoint = snapshot.services.get(`${vip}:80`)?.endpoints[0]
  if (!endpoint) throw new Error(`no endpoint for ${vip}:80 in the test snapshot`)
  return endpoint
}

interface Response { status: number; headers: http2.IncomingHttpHeaders; body: Buffer; trailers: http2.IncomingHttpHeaders }
function readResponse(stream: ClientHttp2Stream): Promise<Response> {
  return new Promise((resolve, reject) => {
    let status = 0
    let responseHeaders: http2.IncomingHttpHeaders = {}
    let trailers: http2.IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    stream.on('response', (headers) => { status = Number(headers[':status']); responseHeaders = headers })
    stream.on('trailers', (headers) => { trailers = headers })
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.on('end', () => resolve({ status, headers: responseHeaders, body: Buffer.concat(chunks), trailers }))
    stream.on('error', reject)
  })
}

/** A port on `host` where nothing listens (it was free a moment ago). */
async function freePort(host: string): Promise<number> {
  const probe = net.createServer()
  probe.listen(0, host)
  await once(probe, 'listening')
  const port = (probe.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  return port
}

/** The calling pods (on n1), as a downstream connection knows them. */
const CLIENT = { sourceIp: '127.0.0.9', sourceIdentity: 'spiffe://cluster.local/ns/default/sa/client' }
const OTHER = { sourceIp: '127.0.0.8', sourceIdentity: 'spiffe://cluster.local/ns/default/sa/other' }
const credentials = testCredentials()

interface Setup { pools: H2UpstreamPools; tunnels: TunnelPool; inboundPort: number }
/** The pools of node n1, and n2's inbound tunnel listener on 127.0.0.1 (snapshot given per test). */
async function setup(t: Test, snapshot: () => MeshSnapshot, options: { idleTimeoutMs?: number; connectTimeoutMs?: number } = {}): Promise<Setup> {
  const metrics = new NodeMetrics('n2', () => undefined)
  const inbound = new InboundListener({ node: 'n2', listenIp: '127.0.0.5', port: 0, idleTimeoutMs: 0, connectTimeoutMs: 2000, snapshot, metrics, log, credentials, trustDomain: 'cluster.local' })
  await inbound.listen()
  const inboundPort = inbound.address().port
  const tunnels = new TunnelPool(log, 2000, credentials)
  const pools = new H2UpstreamPools({ node: 'n1', inboundPort, connectTimeoutMs: options.connectTimeoutMs ?? 2000, tunnels, idleTimeoutMs: options.idleTimeoutMs })
  t.teardown(async () => { pools.close(); tunnels.close(); await inbound.stop() })
  return { pools, tunnels, inboundPort }
}

/** Polls `condition` every 10 ms; fails the test after 5 s. */
async function until(condition: () => boolean): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited > 5000) throw new Error(`condition not met after 5 s: ${condition.toString()}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const get = (path: string): http2.OutgoingHttpHeaders => ({ ':method': 'GET', ':path': path, ':authority': 'web' })

t.test('direct: requests share one session per endpoint', async (t) => {
  const local = await h2server(t, '127.0.0.2')
  const snapshot = snapshotWith(local.port, 1)
  const { pools } = await setup(t, () => snapshot)
  const endpoint = endpointOf(snapshot, '198.19.0.10')
  for (let i = 0; i < 3; i++) {
    const { stream, path } = await pools.request(endpoint, CLIENT, snapshot, get('/'), { endStream: true })
    t.equal(path, 'direct')
    const response = await readResponse(stream)
    t.same([response.status, response.body.toString()], [200, 'ok'])
  }
  await Promise.all([1, 2, 3].map(async () => readResponse((await pools.request(endpoint, CLIENT, snapshot, get('/'), { endStream: true })).stream)))
  t.equal(local.sessions.length, 1, 'the server saw one HTTP/2 connection for six requests')
  t.same(pools.sessions().map((s) => s.key), [`127.0.0.2:${local.port}`])
})

t.test('direct: streams beyond the peer\'s SETTINGS_MAX_CONCURRENT_STREAMS go to another session', async (t) => {
  const local = await h2server(t, '127.0.0.2', { maxConcurrentStreams: 2 })
  const snapshot = snapshotWith(local.port, 1)
  const { pools } = await setup(t, () => snapshot)
  const endpoint = endpointOf(snapshot, '198.19.0.10')
  const responses = Array.from({ length: 5 }, async () => readResponse((await pools.request(endpoint, CLIENT, snapshot, get('/hold'), { endStream: true })).stream))
  // The server holds every stream; with one session, nghttp2 would queue the 3rd to 5th and they
  // would never reach the server. Release once all five are held (or give up after a while, to fail).
  let gaveUp = false
  const giveUp = setTimeout(() => { gaveUp = true }, 5000)
  t.teardown(() => clearTimeout(giveUp))
  while (local.held < 5 && !gaveUp) await new Promise((resolve) => setTimeout(resolve, 20))
  local.release()
  const done = await Promise.all(responses)
  t.same(done.map((r) => r.body.toString()), Array(5).fill('released'), 'all five completed')
  t.equal(local.maxHeld, 5, 'all five were in flight at once')
  t.equal(local.sessions.length, 3, 'in three sessions of at most two streams')
  t.same(pools.sessions().map((s) => s.maxConcurrentStreams), [2, 2, 2], 'the pool read the peer\'s limit')
})

t.test('direct: after GOAWAY or a closed connection the next request gets a new session', async (t) => {
  const local = await h2server(t, '127.0.0.2')
  const snapshot = snapshotWith(local.port, 1)
  const { pools } = await setup(t, () => snapshot)
  const endpoint = endpointOf(snapshot, '198.19.0.10')
  const ask = async (): Promise<string> => (await readResponse((await pools.request(endpoint, CLIENT, snapshot, get('/'), { endStream: true })).stream)).body.toString()
  t.equal(await ask(), 'ok')
  // The server's side closing is not yet the client's knowing it: a request in that window is
  // refused (REFUSED_STREAM — not processed, retryable; the caller's concern). Wait until the pool
  // has seen the GOAWAY or the close.
  local.sessions[0]!.close() // GOAWAY, then the connection closes
  await until(() => pools.sessions().length === 0)
  t.equal(await ask(), 'ok', 'a request after GOAWAY succeeds')
  t.equal(local.sessions.length, 2, 'on a new connection')
  local.sessions[1]!.destroy() // no GOAWAY: the socket just closes
  await until(() => pools.sessions().length === 0)
  t.equal(await ask(), 'ok', 'a request after a dropped connection succeeds')
  t.equal(local.sessions.length, 3)
  t.equal(pools.sessions().length, 1, 'dead sessions left the pool')
})

t.test('direct: an endpoint that refuses, or never speaks HTTP/2, is a ConnectFailure', async (t) => {
  const closedPort = await freePort('127.0.0.2')
  const snapshot = snapshotWith(closedPort, 1)
  const { pools } = await setup(t, () => snapshot, { connectTimeoutMs: 500 })
  const refused = await pools.request(endpointOf(snapshot, '198.19.0.10'), CLIENT, snapshot, get('/'), { endStream: true }).then(() => undefined, (e: unknown) => e)
  t.ok(refused instanceof ConnectFailure, 'a ConnectFailure')
  t.match((refused as Error).message, /127\.0\.0\.2:\d+: connect ECONNREFUSED/)

  // A TCP server that accepts and says nothing: no SETTINGS ever comes.
  const sockets = new Set<net.Socket>()
  const silent = net.createServer((socket) => { sockets.add(socket); socket.on('error', () => {}) })
  silent.listen(0, '127.0.0.2')
  await once(silent, 'listening')
  t.teardown(() => { for (const s of sockets) s.destroy(); silent.close() })
  const silentSnapshot = snapshotWith((silent.address() as net.AddressInfo).port, 1)
  const mute = await pools.request(endpointOf(silentSnapshot, '198.19.0.10'), CLIENT, silentSnapshot, get('/'), { endStream: true }).then(() => undefined, (e: unknown) => e)
  t.ok(mute instanceof ConnectFailure, 'a ConnectFailure')
  t.match((mute as Error).message, /no session within 500 ms/)
  t.same(pools.sessions(), [], 'failed sessions are not pooled')
})

/** A server on `host` that speaks HTTP/1.1 only (node:http answers the HTTP/2 preface with a 400), or closes on the first bytes. */
async function notHttp2Server(t: Test, host: string, kind: 'http1' | 'closes'): Promise<number> {
  const server = kind === 'http1'
    ? http.createServer((_req, res) => res.end('HTTP/1.1 only'))
    : net.createServer((socket) => { socket.on('error', () => {}); socket.once('data', () => socket.end()) })
  server.listen(0, host)
  await once(server, 'listening')
  t.teardown(() => { if (server instanceof http.Server) server.closeAllConnections(); server.close() })
  return (server.address() as net.AddressInfo).port
}

t.test('an endpoint that answers the preface in HTTP/1.1, or closes on it, is a ConnectFailure saying it does not speak HTTP/2', async (t) => {
  const http1Port = await notHttp2Server(t, '127.0.0.2', 'http1')
  const closesPort = await notHttp2Server(t, '127.0.0.3', 'closes')
  const request = async (snapshot: MeshSnapshot, vip: string, pools: H2UpstreamPools): Promise<ConnectFailure> => {
    const failure = await pools.request(endpointOf(snapshot, vip), CLIENT, snapshot, get('/'), { endStream: true }).then(() => undefined, (e: unknown) => e)
    if (!(failure instanceof ConnectFailure)) throw new Error(`expected a ConnectFailure, got ${String(failure)}`)
    return failure
  }
  const direct = snapshotWith(http1Port, closesPort)
  const { pools } = await setup(t, () => direct)
  t.equal((await request(direct, '198.19.0.10', pools)).notHttp2, 'answered', 'direct, HTTP/1.1: it answered with something else')
  // web-remote (127.0.0.3) is on n2: through the tunnel, the far node has connected before the preface goes.
  t.equal((await request(direct, '198.19.0.11', pools)).notHttp2, 'closed', 'tunnel, closes: it closed the connection on the preface')
  const closedDirect = await notHttp2Server(t, '127.0.0.2', 'closes')
  const http1Remote = await notHttp2Server(t, '127.0.0.3', 'http1')
  const other = snapshotWith(closedDirect, http1Remote)
  t.equal((await request(other, '198.19.0.10', pools)).notHttp2, 'closed', 'direct, closes')
  t.equal((await request(other, '198.19.0.11', pools)).notHttp2, 'answered', 'tunnel, HTTP/1.1')
  const refusedPort = await freePort('127.0.0.2')
  const refusedSnapshot = snapshotWith(refusedPort, 1)
  t.equal((await request(refusedSnapshot, '198.19.0.10', pools)).notHttp2, undefined, 'a refused connection is no sign of the protocol')
  t.same(pools.sessions(), [], 'failed sessions are not pooled')
})

t.test('headers HTTP/2 forbids are the caller\'s error, not a connect failure, and the session stays', async (t) => {
  const local = await h2server(t, '127.0.0.2')
  const snapshot = snapshotWith(local.port, 1)
  const { pools } = await setup(t, () => snapshot)
  const endpoint = endpointOf(snapshot, '198.19.0.10')
  await readResponse((await pools.request(endpoint, CLIENT, snapshot, get('/'), { endStream: true })).stream)
  const err = await pools.request(endpoint, CLIENT, snapshot, { ...get('/'), connection: 'keep-alive' }, { endStream: true }).then(() => undefined, (e: unknown) => e as NodeJS.ErrnoException)
  t.equal(err?.code, 'ERR_HTTP2_INVALID_CONNECTION_HEADERS')
  t.notOk(err instanceof ConnectFailure, 'not a ConnectFailure: retrying elsewhere would not help')
  // The first stream counts until its 'close', a moment after its 'end'; the refused one never counts.
  await until(() => pools.sessions().length === 1 && pools.sessions()[0]!.activeStreams === 0)
  t.pass('the session stays, with nothing counted against it')
  t.equal((await readResponse((await pools.request(endpoint, CLIENT, snapshot, get('/'), { endStream: true })).stream)).body.toString(), 'ok')
  t.equal(local.sessions.length, 1, 'on the same connection')
})

t.test('trailers (gRPC status) reach the client stream', async (t) => {
  const local = await h2server(t, '127.0.0.2')
  const snapshot = snapshotWith(local.port, 1)
  const { pools } = await setup(t, () => snapshot)
  const { stream } = await pools.request(endpointOf(snapshot, '198.19.0.10'), CLIENT, snapshot, { ':method': 'POST', ':path': '/grpc', 'content-type': 'application/grpc', te: 'trailers' })
  stream.end(Buffer.from([0, 0, 0, 0, 0]))
  const response = await readResponse(stream)
  t.equal(response.status, 200)
  t.equal(response.trailers['grpc-status'], '5')
  t.equal(response.trailers['grpc-message'], 'not found here')
})

t.test('tunnel: h2 through a CONNECT stream to the far node, 5 MB each way', async (t) => {
  const remote = await h2server(t, '127.0.0.3')
  const snapshot = snapshotWith(1, remote.port)
  const { pools, tunnels, inboundPort } = await setup(t, () => snapshot)
  const endpoint = endpointOf(snapshot, '198.19.0.11')
  const size = 5_000_000
  const exchanges = [0, 1].map(async (i) => {
    const { stream, path } = await pools.request(endpoint, CLIENT, snapshot, { ':method': 'POST', ':path': `/exchange/${size}` })
    t.equal(path, 'tunnel')
    const [response] = await Promise.all([readResponse(stream), pump(stream, size, 10 + i)])
    return { response, seed: 10 + i }
  })
  for (const { response, seed } of await Promise.all(exchanges)) {
    t.equal(response.status, 200)
    t.equal(response.body.length, size, 'the whole response body arrived')
    t.equal(createHash('sha256').update(response.body).digest('hex'), sha256Of(size, 2), 'the response body is intact')
    t.same([response.trailers['x-received-bytes'], response.trailers['x-received-sha256']], [String(size), sha256Of(size, seed)], 'the server received the request body intact')
  }
  t.equal(remote.sessions.length, 1, 'both requests shared one HTTP/2 session')
  t.same(pools.sessions().map((s) => [s.key, s.path]), [[`127.0.0.3:${remote.port}|127.0.0.5|${CLIENT.sourceIp}`, 'tunnel']])
  t.same(tunnels.connections, [`${CLIENT.sourceIdentity}|spiffe://cluster.local/ns/default/sa/default|127.0.0.5:${inboundPort}`], 'inside the one mutual-TLS tunnel connection to n2 for this (source, destination) pair')

  // Another source pod gets its own session (its own tunnel connection presents its identity).
  const other = await pools.request(endpoint, OTHER, snapshot, get('/'), { endStream: true })
  t.equal((await readResponse(other.stream)).body.toString(), 'ok')
  t.equal(remote.sessions.length, 2, 'a second session for another source pod')
})

t.test('tunnel: gRPC calls to a real grpc-js server (the test fixture)', async (t) => {
  const grpcServer = await startGrpcServer({ host: '127.0.0.3', port: 0, name: 'grpc-remote' })
  t.teardown(() => grpcServer.close())
  const snapshot = snapshotWith(1, grpcServer.port)
  const { pools } = await setup(t, () => snapshot)
  const endpoint = endpointOf(snapshot, '198.19.0.11')
  /** One unary Echo call, framed by hand: 1 byte "compressed" flag, 4 bytes length, the JSON message. */
  const call = async (request: object): Promise<{ status: string | undefined; message: string | undefined; reply: EchoReply | undefined }> => {
    const { stream } = await pools.request(endpoint, CLIENT, snapshot, { ':method': 'POST', ':path': '/weft.test.Echo/Echo', 'content-type': 'application/grpc', te: 'trailers' })
    const json = Buffer.from(JSON.stringify(request))
    const frame = Buffer.alloc(5 + json.length)
    frame.writeUInt32BE(json.length, 1)
    json.copy(frame, 5)
    stream.end(frame)
    const response = await readResponse(stream)
    // A failed call may be "trailers-only": the status in the response headers.
    const status = response.trailers['grpc-status'] ?? response.headers['grpc-status']
    const message = response.trailers['grpc-message'] ?? response.headers['grpc-message'] // percent-encoded
    const reply = response.body.length > 5 ? JSON.parse(response.body.subarray(5, 5 + response.body.readUInt32BE(1)).toString()) as EchoReply : undefined
    return { status: status === undefined ? undefined : String(status), message: message === undefined ? undefined : decodeURIComponent(String(message)), reply }
  }
  const ok = await call({ message: 'through the tunnel' })
  t.equal(ok.status, '0', 'grpc-status 0')
  t.same([ok.reply?.message, ok.reply?.server], ['through the tunnel', 'grpc-remote'])
  const failed = await call({ message: 'fail', status: 9 })
  t.same([failed.status, failed.message, failed.reply], ['9', 'requested status 9', undefined], 'the requested status, from trailers')
})

t.test('tunnel: a destination that refuses is a ConnectFailure', async (t) => {
  const closedPort = await freePort('127.0.0.3')
  const snapshot = snapshotWith(1, closedPort)
  const { pools } = await setup(t, () => snapshot)
  const err = await pools.request(endpointOf(snapshot, '198.19.0.11'), CLIENT, snapshot, get('/'), { endStream: true }).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof ConnectFailure, 'a ConnectFailure')
  t.match((err as Error).message, /answered 502 \(connect to 127\.0\.0\.3:\d+: connect ECONNREFUSED/)
})

t.test('prune closes the sessions of endpoints gone from the snapshot; idle sessions close', async (t) => {
  const local = await h2server(t, '127.0.0.2')
  const remote = await h2server(t, '127.0.0.3')
  const snapshot = snapshotWith(local.port, remote.port)
  const { pools } = await setup(t, () => snapshot)
  for (const vip of ['198.19.0.10', '198.19.0.11']) {
    await readResponse((await pools.request(endpointOf(snapshot, vip), CLIENT, snapshot, get('/'), { endStream: true })).stream)
  }
  t.equal(pools.sessions().length, 2)
  const remoteClosed = once(remote.sessions[0]!, 'close')
  pools.prune(snapshotWith(local.port, remote.port, { local: true }))
  await remoteClosed
  t.same(pools.sessions().map((s) => s.path), ['direct'], 'the remote endpoint\'s session is gone, the local one stays')
  t.equal(local.sessions[0]!.closed, false, 'the local session is still open')

  // Idle: a pool with a short idle timeout closes a session once its last stream is done.
  const short = new H2UpstreamPools({ node: 'n1', inboundPort: 1, connectTimeoutMs: 2000, tunnels: new TunnelPool(log, 2000, credentials), idleTimeoutMs: 100 })
  t.teardown(() => short.close())
  await readResponse((await short.request(endpointOf(snapshot, '198.19.0.10'), CLIENT, snapshot, get('/'), { endStream: true })).stream)
  const idleSession = local.sessions[1]!
  await once(idleSession, 'close')
  t.same(short.sessions(), [], 'the idle session left the pool')
})
