// The destination side's HTTP/1.1 layer (src/l7/inbound-http.ts) on loopback, without a lab: a
// real HTTP server plays the pod; serveInboundHttp is fed (a) sockets accepted by a local
// net.Server and (b) CONNECT streams of a local HTTP/2 server, which clients reach through a
// bridge that opens one CONNECT stream per TCP connection and splices them, as the source node's
// proxy does with the tunnel. The decision is a callback denying /admin (the policy module is
// tested on its own); clients are Node's http, curl and ws.
import t, { type Test } from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { promisify } from 'node:util'
import type { Duplex } from 'node:stream'
import { WebSocket } from 'ws'

import { splice } from '../src/datapath/splice.ts'
import { requestTarget, serveInboundHttp, type AuthorizationDecision, type HttpAttributes, type InboundHttpOptions } from '../src/l7/inbound-http.ts'
import { asSocketLike } from '../src/l7/inbound-http.ts'
import { createLogger } from '../src/telemetry/log.ts'
import { NodeMetrics } from '../src/telemetry/metrics.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { checkWebSocketEcho, startWebSocketServer } from './fixtures/websocket.ts'

const run = promisify(execFile)
const LABELS = { source_workload: 'default/client', destination_workload: 'default/server', destination_service: 'default/web' }

interface Seen { method: string; url: string; headers: http.IncomingHttpHeaders; trailers: Record<string, string>; bytes: number; sha256: string }

/** The pod: `/die` cuts its response short; `/trailers` answers chunked with a trailer; anything else says what it received. */
async function pod(t: Test): Promise<{ port: number; connections: () => number }> {
  let connections = 0
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (chunk: Buffer) => { bytes += chunk.length; hash.update(chunk) })
    req.on('end', () => {
      if (req.url === '/die') {
        res.writeHead(200, { 'content-length': 100_000 })
        res.write(Buffer.alloc(1000, 1), () => res.socket?.destroy())
        return
      }
      if (req.url === '/trailers') {
        res.writeHead(200, { trailer: 'x-checksum' })
        res.write('part one;')
        res.write('part two')
        res.addTrailers({ 'x-checksum': 'abc123' })
        res.end()
        return
      }
      const seen: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, trailers: req.trailers as Record<string, string>, bytes, sha256: hash.digest('hex') }
      res.writeHead(200, { 'content-type': 'application/json', connection: 'keep-alive, x-pod-hop', 'x-pod-hop': 'secret' })
      res.end(JSON.stringify(seen))
    })
  })
  server.on('connection', () => { connections++ })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections }
}

/** Denies /admin and anything under it; allows the rest. */
function denyAdmin(attributes: HttpAttributes): AuthorizationDecision {
  return attributes.path === '/admin' || attributes.path.startsWith('/admin/')
    ? { allowed: false, policy: 'default/no-admin', action: 'DENY', reason: 'denied by DENY policy default/no-admin' }
    : { allowed: true, policy: undefined, action: 'NONE', reason: 'no policy applies' }
}

interface Inbound {
  /** Where clients connect: the accepting listener (tcp) or the bridge into the tunnel (h2). */
  readonly port: number
  readonly metrics: NodeMetrics
  /** Downstream connections handed to serveInboundHttp. */
  readonly served: () => number
  /** Upstream connections opened to the pod. */
  readonly upstreams: () => number
  readonly decided: HttpAttributes[]
  readonly denied: HttpAttributes[]
}

type Transport = 'tcp' | 'h2'

/** serveInboundHttp behind `transport`, forwarding to 127.0.0.1:`podPort`. */
async function inbound(t: Test, transport: Transport, podPort: number): Promise<Inbound> {
  const metrics = new NodeMetrics('node1', () => undefined)
  const decided: HttpAttributes[] = []
  const denied: HttpAttributes[] = []
  let served = 0
  let upstreams = 0
  const options: InboundHttpOptions = {
    decide: (attributes) => { decided.push(attributes); return denyAdmin(attributes) },
    connectUpstream: () => new Promise<Duplex>((resolve, reject) => {
      upstreams++
      const socket = net.connect({ host: '127.0.0.1', port: podPort })
      socket.once('connect', () => { socket.off('error', reject); resolve(socket) })
      socket.once('error', reject)
    }),
    sourceIp: '127.0.0.9',
    metrics,
    labels: LABELS,
    log: createLogger({}, 'error'),
    onDenied: (_decision, attributes) => { denied.push(attributes) },
  }
  const serve = (downstream: Duplex): void => { served++; serveInboundHttp(downstream, options) }
  const result = { metrics, served: () => served, upstreams: () => upstreams, decided, denied }
  if (transport === 'tcp') {
    const listener = net.createServer({ pauseOnConnect: true }, serve)
    listener.listen(0, '127.0.0.1')
    await once(listener, 'listening')
    t.teardown(() => listener.close())
    return { ...result, port: (listener.address() as net.AddressInfo).port }
  }
  // The destination node's tunnel listener: each CONNECT stream is accepted and served.
  const tunnelServer = http2.createServer()
  const sessions = new Set<http2.ServerHttp2Session>()
  tunnelServer.on('session', (session) => { sessions.add(session); session.on('close', () => sessions.delete(session)) })
  tunnelServer.on('stream', (stream, headers) => {
    if (headers[':method'] !== 'CONNECT') { stream.respond({ ':status': 405 }, { endStream: true }); return }
    stream.respond({ ':status': 200 })
    serve(stream)
  })
  tunnelServer.listen(0, '127.0.0.1')
  await once(tunnelServer, 'listening')
  const session = http2.connect(`http://127.0.0.1:${(tunnelServer.address() as net.AddressInfo).port}`)
  session.on('error', () => {})
  // The source node's side: one CONNECT stream per client connection, spliced to it.
  const bridge = net.createServer({ allowHalfOpen: true }, (socket) => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${podPort}` })
    stream.once('response', (headers) => {
      if (headers[':status'] !== 200) { socket.destroy(); return }
      splice(socket, stream, { idleTimeoutMs: 0, onDone: () => {} })
    })
    stream.on('error', () => socket.destroy())
  })
  bridge.listen(0, '127.0.0.1')
  await once(bridge, 'listening')
  t.teardown(() => {
    bridge.close()
    session.destroy()
    for (const s of sessions) s.destroy()
    tunnelServer.close()
  })
  return { ...result, port: (bridge.address() as net.AddressInfo).port }
}

interface Reply { status: number; headers: http.IncomingHttpHeaders; trailers: http.IncomingHttpHeaders; body: Buffer }

function request(port: number, options: http.RequestOptions, body?: (req: http.ClientRequest) => void): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, agent: false, ...options }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, trailers: res.trailers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    if (body) body(req)
    else req.end()
  })
}

const seen = (reply: Reply): Seen => JSON.parse(reply.body.toString()) as Seen

for (const transport of ['tcp', 'h2'] as const) {
  t.test(`${transport}: allowed GET and a 1 MB POST reach the pod intact; hop-by-hop headers stay on their hop`, async (t) => {
    const target = await pod(t)
    const proxy = await inbound(t, transport, target.port)
    const get = await request(proxy.port, { path: '/hello?x=1', headers: { connection: 'keep-alive, x-secret', 'x-secret': '1', 'x-kept': 'yes' } })
    t.equal(get.status, 200)
    const getSeen = seen(get)
    t.equal(getSeen.url, '/hello?x=1', 'the query goes with the path')
    t.equal(getSeen.headers['x-kept'], 'yes')
    t.notOk(getSeen.headers['x-secret'], 'a header named in Connection is not forwarded')
    t.equal(getSeen.headers['x-forwarded-for'], '127.0.0.9')
    t.notOk(get.headers['x-pod-hop'], 'nor a response header the pod named in Connection')
    t.same(proxy.decided[0], { method: 'GET', path: '/hello', host: `127.0.0.1:${proxy.port}` }, 'decided on method, path without query, host')

    const body = randomBytes(1 << 20)
    const post = await request(proxy.port, { method: 'POST', path: '/upload', headers: { 'content-length': body.length } }, (req) => req.end(body))
    t.equal(post.status, 200)
    const postSeen = seen(post)
    t.equal(postSeen.bytes, body.length)
    t.equal(postSeen.sha256, createHash('sha256').update(body).digest('hex'), 'the body arrives byte for byte')
  })

  t.test(`${transport}: keep-alive: denied requests get 403 with weft-error and the connection carries on over one upstream connection`, async (t) => {
    const target = await pod(t)
    const proxy = await inbound(t, transport, target.port)
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    t.teardown(() => agent.destroy())
    const sequence = ['/a', '/admin', '/b', '/admin/users', '/c', '/admin']
    const replies: Reply[] = []
    for (const [i, path] of sequence.entries()) {
      // Every other request carries a body: a denied one must be skipped cleanly for the next.
      const payload = Buffer.alloc(10_000 * i, 'x')
      replies.push(await request(proxy.port, { agent, method: 'POST', path, headers: { 'content-length': payload.length } }, (req) => req.end(payload)))
    }
    t.same(replies.map((reply) => reply.status), [200, 403, 200, 403, 200, 403])
    for (const reply of replies.filter((r) => r.status === 403)) {
      t.equal(reply.headers['weft-error'], 'default/web: denied by DENY policy default/no-admin', 'weft-error names the policy')
      t.match(reply.body.toString(), /denied by DENY policy default\/no-admin\n$/, 'the body is a short text line')
      t.not(reply.headers.connection, 'close', 'kept alive')
    }
    t.same(replies.filter((r) => r.status === 200).map((reply) => seen(reply).bytes), [0, 20_000, 40_000])
    t.equal(proxy.served(), 1, 'all six on one downstream connection')
    t.equal(target.connections(), 1, 'the allowed ones over one upstream connection')
    t.equal(proxy.upstreams(), 1)
    t.same(proxy.denied.map((d) => d.path), ['/admin', '/admin/users', '/admin'], 'onDenied called for each denial')
  })

  t.test(`${transport}: chunked bodies both ways with trailers`, async (t) => {
    const target = await pod(t)
    const proxy = await inbound(t, transport, target.port)
    const up = await request(proxy.port, { method: 'POST', path: '/chunks', headers: { trailer: 'x-sum', te: 'trailers' } }, (req) => {
      req.write('first,')
      req.write('second')
      req.addTrailers({ 'x-sum': '42' })
      req.end()
    })
    const upSeen = seen(up)
    t.equal(upSeen.headers['transfer-encoding'], 'chunked')
    t.equal(upSeen.bytes, 'first,second'.length)
    t.same(upSeen.trailers, { 'x-sum': '42' }, 'the request trailer reaches the pod')
    const down = await request(proxy.port, { path: '/trailers', headers: { te: 'trailers' } })
    t.equal(down.body.toString(), 'part one;part two')
    t.equal(down.headers['transfer-encoding'], 'chunked')
    t.same(down.trailers, { 'x-checksum': 'abc123' }, 'the response trailer reaches the client')
  })

  t.test(`${transport}: 100-continue: answered when allowed, never when denied`, async (t) => {
    const target = await pod(t)
    const proxy = await inbound(t, transport, target.port)
    const expect = (path: string): Promise<{ reply: Reply; continued: boolean }> => new Promise((resolve, reject) => {
      let continued = false
      const body = Buffer.alloc(50_000, 'y')
      const req = http.request({ host: '127.0.0.1', port: proxy.port, agent: false, method: 'PUT', path, headers: { expect: '100-continue', 'content-length': body.length } }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ continued, reply: { status: res.statusCode ?? 0, headers: res.headers, trailers: res.trailers, body: Buffer.concat(chunks) } }))
      })
      req.on('continue', () => { continued = true; req.end(body) })
      req.on('error', reject)
    })
    const allowed = await expect('/upload')
    t.ok(allowed.continued)
    t.equal(allowed.reply.status, 200)
    t.equal(seen(allowed.reply).bytes, 50_000)
    t.notOk(seen(allowed.reply).headers.expect, 'the expectation was met here, not passed on')
    const denied = await expect('/admin')
    t.notOk(denied.continued, 'no 100 for a denied request: its body is never sent')
    t.equal(denied.reply.status, 403)
    t.equal(denied.reply.headers.connection, 'close', 'the unread body cannot be skipped: the connection closes')
    // curl waits for the 100 before sending (it would give up after a second and send anyway).
    const { stdout } = await run('curl', ['-sS', '-H', 'Expect: 100-continue', '--expect100-timeout', '30', '--data-binary', 'c'.repeat(2000), '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${proxy.port}/curl`].map(String), { encoding: 'utf8' })
    t.equal(stdout, '200', 'curl with Expect: 100-continue')
  })

  t.test(`${transport}: a WebSocket upgrade is authorized, then joined byte for byte`, async (t) => {
    const echo = await startWebSocketServer({ host: '127.0.0.1', port: 0, name: 'pod' })
    t.teardown(() => echo.close())
    const proxy = await inbound(t, transport, echo.port)
    const check = await checkWebSocketEcho(`ws://127.0.0.1:${proxy.port}/chat`, { messages: 3, binaryBytes: 1 << 20 })
    t.same({ ok: check.ok, echoed: check.echoed, mismatches: check.mismatches, server: check.server, path: check.path }, { ok: true, echoed: 4, mismatches: 0, server: 'pod', path: '/chat' })
    const refused = await new Promise<{ status: number; error: string | undefined }>((resolve) => {
      const socket = new WebSocket(`ws://127.0.0.1:${proxy.port}/admin/ws`)
      socket.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, error: res.headers['weft-error'] as string | undefined }))
      socket.on('error', () => {})
    })
    t.same(refused, { status: 403, error: 'default/web: denied by DENY policy default/no-admin' }, 'a denied upgrade never reaches the pod')
    const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
    t.equal(sumSamples(samples, 'weft_requests_total', { reporter: 'destination', response_code: '403' }), 1)
  })

  t.test(`${transport}: a malformed request gets 400 and the pod is never contacted`, async (t) => {
    const target = await pod(t)
    const proxy = await inbound(t, transport, target.port)
    const socket = net.connect({ host: '127.0.0.1', port: proxy.port })
    socket.end('GET / HTTP/1.1\r\nHost: web\r\nthis is not a header\r\n\r\n')
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    await once(socket, 'close')
    const answer = Buffer.concat(chunks).toString()
    t.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/)
    t.match(answer, /weft-error: malformed request \(HPE_/)
    const oversized = await request(proxy.port, { path: '/', headers: { 'x-big': 'z'.repeat(20_000) } }).catch((err: Error) => err)
    t.equal((oversized as Reply).status, 431, 'oversized headers: 431')
    t.equal(proxy.upstreams(), 0, 'no upstream connection was opened')
    t.equal(target.connections(), 0)
    t.equal(proxy.decided.length, 0, 'nothing to decide on')
  })

  t.test(`${transport}: an unreachable pod is a 502 with weft-error; a pod closing mid-response closes the client's connection`, async (t) => {
    const closed = net.createServer()
    closed.listen(0, '127.0.0.1')
    await once(closed, 'listening')
    const deadPort = (closed.address() as net.AddressInfo).port
    closed.close()
    await once(closed, 'close')
    const unreachable = await inbound(t, transport, deadPort)
    const reply = await request(unreachable.port, { path: '/x' })
    t.equal(reply.status, 502)
    t.match(reply.headers['weft-error'], /^cannot reach default\/web: connect ECONNREFUSED/)

    const target = await pod(t)
    const proxy = await inbound(t, transport, target.port)
    const cut = await new Promise<{ status: number; complete: boolean; bytes: number }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: proxy.port, agent: false, path: '/die' }, (res) => {
        let bytes = 0
        res.on('data', (c: Buffer) => { bytes += c.length })
        res.on('error', () => {})
        res.on('close', () => resolve({ status: res.statusCode ?? 0, complete: res.complete, bytes }))
      })
      // Through the bridge the cut can arrive as a reset that overtakes the bytes before it.
      req.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ECONNRESET') resolve({ status: 0, complete: false, bytes: 0 }); else reject(err) })
      req.end()
    })
    t.equal(cut.complete, false, 'the client sees its response end early, not a hang')
    if (transport === 'tcp') t.same(cut, { status: 200, complete: false, bytes: 1000 }, 'what the pod sent before it closed arrives')
  })

  t.test(`${transport}: every request is counted with reporter="destination", by status`, async (t) => {
    const target = await pod(t)
    const proxy = await inbound(t, transport, target.port)
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    t.teardown(() => agent.destroy())
    for (const path of ['/one', '/admin', '/two', '/three', '/admin/x']) await request(proxy.port, { agent, path })
    await request(proxy.port, { agent, method: 'POST', path: '/body', headers: { 'content-length': 5 } }, (req) => req.end('hello'))
    const samples = parsePrometheusText(await proxy.metrics.registry.metrics())
    const labels = { reporter: 'destination', ...LABELS, grpc_status: 'none', protocol: 'http' }
    t.equal(sumSamples(samples, 'weft_requests_total', { ...labels, response_code: '200' }), 4)
    t.equal(sumSamples(samples, 'weft_requests_total', { ...labels, response_code: '403' }), 2)
    t.equal(sumSamples(samples, 'weft_request_duration_seconds_count', { ...labels, response_code: '200' }), 4)
    t.equal(sumSamples(samples, 'weft_request_bytes_total', { ...labels, response_code: '200' }), 5, 'request body bytes')
    t.ok(sumSamples(samples, 'weft_response_bytes_total', { ...labels, response_code: '403' }) > 0, 'the 403 bodies are counted')
    t.equal(sumSamples(samples, 'weft_requests_total', { reporter: 'source' }), 0, 'nothing as the source')
  })
}

t.test('curl: several requests on one connection, some denied', async (t) => {
  const target = await pod(t)
  const proxy = await inbound(t, 'h2', target.port)
  const base = `http://127.0.0.1:${proxy.port}`
  const { stdout } = await run('curl', ['-sS', '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\\n', `${base}/a`, `${base}/admin`, `${base}/b`], { encoding: 'utf8' })
  t.equal(stdout, '200 1\n403 0\n200 0\n', 'one connection (only the first connects), the denied one in the middle')
  t.equal(proxy.served(), 1)
})

t.test('an HTTP/2 CONNECT stream used directly as the connection of an HTTP/1.1 client', async (t) => {
  const target = await pod(t)
  const metrics = new NodeMetrics('node1', () => undefined)
  const tunnelServer = http2.createServer()
  const handles: ReturnType<typeof serveInboundHttp>[] = []
  tunnelServer.on('stream', (stream) => {
    stream.respond({ ':status': 200 })
    handles.push(serveInboundHttp(stream, {
      decide: denyAdmin,
      connectUpstream: async () => { const socket = net.connect({ host: '127.0.0.1', port: target.port }); await once(socket, 'connect'); return socket },
      sourceIp: '127.0.0.9', metrics, labels: LABELS, log: createLogger({}, 'error'),
    }))
  })
  tunnelServer.listen(0, '127.0.0.1')
  await once(tunnelServer, 'listening')
  const session = http2.connect(`http://127.0.0.1:${(tunnelServer.address() as net.AddressInfo).port}`)
  t.teardown(() => { session.destroy(); tunnelServer.close() })
  const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${target.port}` })
  const [headers] = await once(stream, 'response') as [http2.IncomingHttpHeaders]
  t.equal(headers[':status'], 200)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  agent.createConnection = (() => asSocketLike(stream)) as unknown as http.Agent['createConnection']
  t.teardown(() => agent.destroy())
  const first = await request(0, { agent, path: '/first', headers: { host: 'web' } })
  const denied = await request(0, { agent, path: '/admin', headers: { host: 'web' } })
  const body = randomBytes(300_000)
  const second = await request(0, { agent, method: 'POST', path: '/second', headers: { host: 'web', 'content-length': body.length } }, (req) => req.end(body))
  t.same([first.status, denied.status, second.status], [200, 403, 200])
  t.equal(seen(second).sha256, createHash('sha256').update(body).digest('hex'))
  t.equal(handles.length, 1, 'one stream served all three')
  // Draining: abort() ends the stream and done settles with what it served.
  handles[0]!.abort()
  t.same(await handles[0]!.done, { requests: 3, denied: 1 })
})

t.test('requestTarget: the path policies see is the path the pod gets', async (t) => {
  t.same(requestTarget('/a/b?x=1', 'Web:80'), { path: '/a/b', forward: '/a/b?x=1', host: 'web:80' })
  t.same(requestTarget('/public/../admin', 'web'), { path: '/admin', forward: '/admin', host: 'web' }, 'dot segments removed')
  t.same(requestTarget('/public/%2e%2E/admin?q', 'web'), { path: '/admin', forward: '/admin?q', host: 'web' }, 'encoded dots are dots')
  t.same(requestTarget('/a/./b/', 'web'), { path: '/a/b/', forward: '/a/b/', host: 'web' })
  t.same(requestTarget('/%7euser/%2f%41', 'web'), { path: '/~user/%2FA', forward: '/~user/%2FA', host: 'web' }, 'unreserved decoded, an encoded slash stays encoded')
  t.same(requestTarget('/../../etc', 'web'), { path: '/etc', forward: '/etc', host: 'web' }, 'never above the root')
  t.same(requestTarget('http://Other.Example:8080/x/../y?z', 'web'), { path: '/y', forward: '/y?z', host: 'other.example:8080' }, 'absolute form: its authority is the host')
  t.same(requestTarget('*', 'web'), { path: '*', forward: '*', host: 'web' })
  t.match(requestTarget('example.com:443', 'web'), /is not a path/)
})
