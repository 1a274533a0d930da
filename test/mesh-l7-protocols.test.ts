// The L7 protocols end to end in a two-node lab, with real clients in pods: curl over HTTP/1.1
// and HTTP/2 with prior knowledge (also to an `http` port whose server speaks HTTP/1.1 only, and
// to a misdeclared h2c port), Node's http client with keep-alive, gRPC (@grpc/grpc-js:
// unary, server-returned statuses, bidirectional streaming, GRPCRoute), WebSocket through an
// HTTP/1.1 Upgrade, 100 MB each way with the proxies' memory sampled, malformed input that must
// cost only its own connection, and the per-protocol request counts on /metrics. The client is
// on node1; servers are on both nodes, so both the direct and the tunnel path carry traffic.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Lab, TopologyInput } from '../src/lab/index.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { curl, requireLab, startIn, startLab, waitForNodes, tcpServerScript } from './helpers/lab.ts'

const node = process.execPath
const grpcFixture = fileURLToPath(new URL('./fixtures/grpc.ts', import.meta.url))
const websocketFixture = fileURLToPath(new URL('./fixtures/websocket.ts', import.meta.url))

const topology: TopologyInput = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'client', node: 'node1' },
    { name: 'h2-a', node: 'node1', labels: { app: 'h2' } },
    { name: 'h2-b', node: 'node2', labels: { app: 'h2-remote' } },
    { name: 'grpc-a', node: 'node1', labels: { app: 'grpc-a' } },
    { name: 'grpc-b', node: 'node2', labels: { app: 'grpc-b' } },
    { name: 'grpc-c', node: 'node1', labels: { app: 'grpc-c' } },
    { name: 'ws-b', node: 'node2', labels: { app: 'ws' } },
    { name: 'bulk-b', node: 'node2', labels: { app: 'bulk' } },
    { name: 'tcp-b', node: 'node2', labels: { app: 'tcp' } },
  ],
}

/**
 * One handler on two ports: HTTP/2 cleartext (prior knowledge) on :8080 and HTTP/1.1 on :8081. It
 * answers with who it is, the HTTP version it was spoken to in, and the headers the mesh adds,
 * and sets `x-served-by` on the response.
 */
const serverScript = `
const http = require('node:http')
const http2 = require('node:http2')
const name = process.argv[1]
let seq = 0
const handler = (req, res) => {
  let bytes = 0
  req.on('data', (c) => (bytes += c.length))
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': name })
    res.end(JSON.stringify({ server: name, seq: ++seq, httpVersion: req.httpVersion, method: req.method, path: req.url, bytes,
      requestId: req.headers['x-request-id'] ?? null, forwardedFor: req.headers['x-forwarded-for'] ?? null }) + '\\n')
  })
}
let bound = 0
const up = () => { if (++bound === 2) console.log('listening') }
http2.createServer(handler).listen(8080, up)
http.createServer(handler).listen(8081, up)
`

/**
 * The bulk server (HTTP/1.1, :8080): a PUT or POST body is hashed and answered {bytes, sha256};
 * GET /bytes/N streams N random bytes (chunked) and sends their sha256 as the trailer x-sha256.
 */
const bulkServerScript = `
const http = require('node:http')
const crypto = require('node:crypto')
http.createServer((req, res) => {
  if (req.method === 'PUT' || req.method === 'POST') {
    const hash = crypto.createHash('sha256')
    let bytes = 0
    req.on('data', (c) => { hash.update(c); bytes += c.length })
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ bytes, sha256: hash.digest('hex') }) + '\\n')
    })
    return
  }
  req.resume()
  const match = /^\\/bytes\\/(\\d+)$/.exec(req.url)
  if (!match) { res.writeHead(404); res.end(); return }
  let left = Number(match[1])
  const hash = crypto.createHash('sha256')
  res.writeHead(200, { 'content-type': 'application/octet-stream', trailer: 'x-sha256' })
  const write = () => {
    while (left > 0) {
      const chunk = crypto.randomBytes(Math.min(left, 65536))
      left -= chunk.length
      hash.update(chunk)
      if (!res.write(chunk)) { res.once('drain', write); return }
    }
    res.addTrailers({ 'x-sha256': hash.digest('hex') })
    res.end()
  }
  write()
}).listen(8080, () => console.log('listening'))
`

/** Downloads a URL with Node's http client; prints {status, bytes, sha256, trailer} (trailer: x-sha256). */
const downloadScript = `
const http = require('node:http')
const crypto = require('node:crypto')
http.get(process.argv[1], (res) => {
  const hash = crypto.createHash('sha256')
  let bytes = 0
  res.on('data', (c) => { hash.update(c); bytes += c.length })
  res.on('end', () => {
    console.log(JSON.stringify({ status: res.statusCode, bytes, sha256: hash.digest('hex'), trailer: res.trailers['x-sha256'] ?? null }))
  })
  res.on('error', (e) => console.log(JSON.stringify({ error: e.message, bytes })))
}).on('error', (e) => console.log(JSON.stringify({ error: e.message })))
`

/**
 * Node's http client, keep-alive, one socket: N requests one after the other; prints, for each,
 * {status, reusedSocket, server, httpVersion, requestId}.
 */
const keepAliveScript = `
const http = require('node:http')
const [url, count] = process.argv.slice(1)
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
const one = () => new Promise((resolve) => {
  const req = http.get(url, { agent, timeout: 10000 }, (res) => {
    let body = ''
    res.on('data', (c) => (body += c))
    res.on('end', () => {
      const seen = res.statusCode === 200 ? JSON.parse(body) : {}
      resolve({ status: res.statusCode, reusedSocket: req.reusedSocket, server: seen.server, httpVersion: seen.httpVersion, requestId: seen.requestId })
    })
  })
  req.on('error', (e) => resolve({ error: e.code }))
})
;(async () => {
  const results = []
  for (let i = 0; i < Number(count); i++) results.push(await one())
  console.log(JSON.stringify(results))
  process.exit(0)
})()
`

/**
 * Raw bytes on one TCP connection: connects to argv[1]:argv[2], writes the base64 bytes read from
 * stdin, and reads until the connection closes (or 5 s pass). Prints {how, error, firstLine,
 * weftError, frames, bytes}: how it ended (`close`, or `timeout`); for an HTTP/1.x answer its
 * status line and weft-error header; otherwise the types of the HTTP/2 frames that came back.
 */
const rawScript = `
const net = require('node:net')
const [host, port] = process.argv.slice(1)
let input = ''
process.stdin.setEncoding('utf8').on('data', (c) => (input += c)).on('end', () => {
  const socket = net.connect(Number(port), host)
  const received = []
  let error
  const finish = (how) => {
    const bytes = Buffer.concat(received)
    const text = bytes.toString('latin1')
    const http1 = text.startsWith('HTTP/1.')
    const frames = []
    if (!http1) for (let i = 0; i + 9 <= bytes.length; i += 9 + bytes.readUIntBE(i, 3)) frames.push(bytes[i + 3])
    const weftError = /\\r\\nweft-error: ([^\\r]*)/i.exec(text)
    console.log(JSON.stringify({ how, error, firstLine: http1 ? text.split('\\r\\n')[0] : null, weftError: weftError ? weftError[1] : null, frames, bytes: bytes.length }))
    process.exit(0)
  }
  const timer = setTimeout(() => finish('timeout'), 5000)
  socket.on('connect', () => socket.write(Buffer.from(input, 'base64')))
  socket.on('data', (c) => received.push(c))
  socket.on('error', (e) => (error = e.code))
  socket.on('close', () => { clearTimeout(timer); finish('close') })
})
`

interface Port { name: string; port: number; targetPort: number; appProtocol?: string }

const service = (name: string, vip: string, selector: Record<string, string>, ports: Port[]): [string, Record<string, unknown>] => [
  `service.default.${name}`,
  { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec: { clusterIP: vip, selector, ports } },
]
const h2c = (targetPort = 8080): Port => ({ name: 'http2', port: 80, targetPort, appProtocol: 'h2c' })
const http1 = (targetPort = 8081): Port => ({ name: 'http', port: 80, targetPort, appProtocol: 'http' })
const grpcPort: Port = { name: 'grpc', port: 80, targetPort: 9000, appProtocol: 'grpc' }

const VIP = {
  h2: '198.19.1.10',
  h2Sniffed: '198.19.1.11',
  h1: '198.19.1.12',
  h2Remote: '198.19.1.13',
  malformed: '198.19.1.14',
  h1Remote: '198.19.1.15',
  h2cOnHttp1: '198.19.1.16',
  grpcA: '198.19.1.20',
  grpcB: '198.19.1.21',
  grpcRouted: '198.19.1.22',
  grpcEcho: '198.19.1.23',
  grpcRest: '198.19.1.24',
  ws: '198.19.1.30',
  bulk: '198.19.1.40',
  tls: '198.19.1.50',
}

const resources: Array<[string, Record<string, unknown>]> = [
  service('h2', VIP.h2, { app: 'h2' }, [h2c()]),
  // No appProtocol: an HTTP/2 client's preface is what sends it to L7.
  service('h2-sniffed', VIP.h2Sniffed, { app: 'h2' }, [{ name: 'web', port: 80, targetPort: 8080 }]),
  service('h1', VIP.h1, { app: 'h2' }, [http1()]),
  service('h2-remote', VIP.h2Remote, { app: 'h2-remote' }, [h2c()]),
  service('malformed', VIP.malformed, { app: 'h2' }, [http1()]),
  service('h1-remote', VIP.h1Remote, { app: 'h2-remote' }, [http1()]),
  // Declared h2c, but the port behind it is the HTTP/1.1-only server: a misdeclared service.
  service('h2c-on-http1', VIP.h2cOnHttp1, { app: 'h2' }, [h2c(8081)]),
  service('grpc-a', VIP.grpcA, { app: 'grpc-a' }, [grpcPort]),
  service('grpc-b', VIP.grpcB, { app: 'grpc-b' }, [grpcPort]),
  // The GRPCRoute's parent and its two backends (their own services, so their counts are their own).
  service('grpc-routed', VIP.grpcRouted, { app: 'grpc-a' }, [grpcPort]),
  service('grpc-echo', VIP.grpcEcho, { app: 'grpc-a' }, [grpcPort]),
  service('grpc-rest', VIP.grpcRest, { app: 'grpc-c' }, [grpcPort]),
  service('ws', VIP.ws, { app: 'ws' }, [http1(8080)]),
  service('bulk', VIP.bulk, { app: 'bulk' }, [http1(8080)]),
  // No appProtocol and a TLS client: passed through opaque, its SNI recorded in the access log.
  service('tls', VIP.tls, { app: 'tcp' }, [{ name: 'tls', port: 443, targetPort: 9443 }]),
  ['grpcroute.default.grpc-routed', {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'grpc-routed', namespace: 'default' },
    spec: {
      parentRefs: [{ kind: 'Service', name: 'grpc-routed', port: 80 }],
      rules: [
        { matches: [{ method: { service: 'weft.test.Echo', method: 'Echo' } }], backendRefs: [{ name: 'grpc-echo', port: 80 }] },
        { backendRefs: [{ name: 'grpc-rest', port: 80 }] },
      ],
    },
  }],
]

interface Seen { server: string; httpVersion: string; method: string; path: string; bytes: number; requestId: string | null; forwardedFor: string | null }

/** A script in the client pod whose last stdout line is JSON. */
async function runJson<T>(lab: Lab, argv: string[], input?: string): Promise<T> {
  const r = await lab.run('client', argv, { timeoutMs: 120_000, ...(input !== undefined ? { input } : {}) })
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as T
  } catch {
    throw new Error(`${argv.slice(0, 3).join(' ')} exited ${r.code} printing ${JSON.stringify(r.stdout)} (stderr ${r.stderr})`)
  }
}

interface UnaryResult { count: number; ok: number; codes: Record<string, number>; servers: Record<string, number>; results: Array<{ code: number; server?: string; details?: string }> }
interface ChatResult { ok: boolean; sent: number; replies?: Array<{ seq: number; message: string; server: string }>; code?: number; details?: string }
interface RawResult { how: string; error?: string; firstLine: string | null; weftError: string | null; frames: number[]; bytes: number }

const unary = (lab: Lab, vip: string, ...args: string[]): Promise<UnaryResult> => runJson(lab, [node, grpcFixture, 'unary', '--target', `${vip}:80`, ...args])
const chat = (lab: Lab, vip: string, messages: number): Promise<ChatResult> => runJson(lab, [node, grpcFixture, 'chat', '--target', `${vip}:80`, '--messages', String(messages)])
const raw = (lab: Lab, vip: string, bytes: Buffer): Promise<RawResult> => runJson(lab, [node, '-e', rawScript, vip, '80'], bytes.toString('base64'))

const MiB = 1 << 20
const BULK_BYTES = 100 * 1000 * 1000
const RSS_BOUND = 300 * MiB

t.test('HTTP/1.1, HTTP/2, gRPC and WebSocket through the node proxy in a two-node lab', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, topology, { startDaemons: true })
  const operator = await lab.connect('operator')
  t.teardown(() => operator.close())
  await startIn(t, lab, 'h2-a', [node, '-e', serverScript, 'h2-a'], /listening/)
  await startIn(t, lab, 'h2-b', [node, '-e', serverScript, 'h2-b'], /listening/)
  await startIn(t, lab, 'grpc-a', [node, grpcFixture, 'server', '--host', '0.0.0.0', '--port', '9000', '--name', 'grpc-a'], /listening/, 15_000)
  await startIn(t, lab, 'grpc-b', [node, grpcFixture, 'server', '--host', '0.0.0.0', '--port', '9000', '--name', 'grpc-b'], /listening/, 15_000)
  await startIn(t, lab, 'grpc-c', [node, grpcFixture, 'server', '--host', '0.0.0.0', '--port', '9000', '--name', 'grpc-c'], /listening/, 15_000)
  await startIn(t, lab, 'ws-b', [node, websocketFixture, 'server', '--host', '0.0.0.0', '--port', '8080', '--name', 'ws-b'], /listening/, 15_000)
  await startIn(t, lab, 'bulk-b', [node, '-e', bulkServerScript], /listening/)
  await startIn(t, lab, 'tcp-b', [node, '-e', tcpServerScript, '9443'], /listening/)
  let revision = 0
  for (const [key, value] of resources) revision = await operator.putResource(key, value)
  await waitForNodes(operator, revision)
  const clientIp = lab.pods.find((p) => p.name === 'client')!.ip
  const node1 = lab.nodes.find((n) => n.name === 'node1')!
  const daemonPids = new Map(lab.nodes.map((n) => [n.name, lab.daemonPid(n.name)]))

  // Every request this file sends to a service counted below, so the counts can be exact.
  const sent = { h2: 0, h2Sniffed: 0, grpcAOk: 0, grpcAStatus5: 0, grpcB: 0, grpcEcho: 0, grpcRest: 0 }

  t.test('curl over HTTP/1.1 and HTTP/2 with prior knowledge; the server sees x-request-id and x-forwarded-for', async (t) => {
    const h1 = await curl(lab, `http://${VIP.h1}/one`)
    t.equal(h1.status, 200, `HTTP/1.1 status (body ${h1.body})`)
    t.equal(h1.headers['x-served-by'], 'h2-a', 'a response header arrives')
    const seen1 = JSON.parse(h1.body) as Seen
    t.match(seen1, { server: 'h2-a', httpVersion: '1.1', path: '/one', forwardedFor: clientIp })
    t.match(seen1.requestId, /^[0-9a-f-]{36}$/, 'a request id was added')

    const h2 = await curl(lab, `http://${VIP.h2}/two?x=1`, '--http2-prior-knowledge', '-H', 'x-request-id: mine-h2')
    sent.h2++
    t.equal(h2.status, 200, `HTTP/2 status (body ${h2.body})`)
    t.equal(h2.headers['x-served-by'], 'h2-a', 'a response header arrives over HTTP/2')
    const seen2 = JSON.parse(h2.body) as Seen
    t.match(seen2, { server: 'h2-a', httpVersion: '2.0', method: 'GET', path: '/two?x=1', forwardedFor: clientIp })
    t.equal(seen2.requestId, 'mine-h2', 'a request id the client sent is kept')

    const post = await curl(lab, `http://${VIP.h2}/post`, '--http2-prior-knowledge', '--data-binary', 'x'.repeat(5000))
    sent.h2++
    t.equal(post.status, 200)
    t.match(JSON.parse(post.body), { method: 'POST', bytes: 5000, requestId: /^[0-9a-f-]{36}$/ }, 'a request body arrives whole over HTTP/2; a request id was added')

    const remote = await curl(lab, `http://${VIP.h2Remote}/far`, '--http2-prior-knowledge')
    t.equal(remote.status, 200)
    t.match(JSON.parse(remote.body), { server: 'h2-b', httpVersion: '2.0', path: '/far', forwardedFor: clientIp, requestId: /^[0-9a-f-]{36}$/ },
      'an HTTP/2 endpoint on the other node is reached through the tunnel')

    const sniffed = await curl(lab, `http://${VIP.h2Sniffed}/sniffed`, '--http2-prior-knowledge')
    sent.h2Sniffed++
    t.equal(sniffed.status, 200)
    t.match(JSON.parse(sniffed.body), { server: 'h2-a', httpVersion: '2.0', path: '/sniffed', requestId: /^[0-9a-f-]{36}$/ },
      'a service without appProtocol: the HTTP/2 preface is sniffed and the request goes through L7 (x-request-id added)')
  })

  t.test('curl --http2-prior-knowledge to an `http` port: served HTTP/2, the HTTP/1.1-only server spoken to in HTTP/1.1; a misdeclared h2c port says its endpoint does not speak HTTP/2', async (t) => {
    const local = await curl(lab, `http://${VIP.h1}/h2c-to-http`, '--http2-prior-knowledge', '--data-binary', 'y'.repeat(3000))
    t.equal(local.status, 200, `status (body ${local.body})`)
    t.equal(local.headers['x-served-by'], 'h2-a')
    t.match(JSON.parse(local.body), { server: 'h2-a', httpVersion: '1.1', method: 'POST', path: '/h2c-to-http', bytes: 3000, forwardedFor: clientIp, requestId: /^[0-9a-f-]{36}$/ },
      'the HTTP/1.1 server on this node got the request in HTTP/1.1, body whole')
    const remote = await curl(lab, `http://${VIP.h1Remote}/h2c-far`, '--http2-prior-knowledge')
    t.equal(remote.status, 200, `status (body ${remote.body})`)
    t.match(JSON.parse(remote.body), { server: 'h2-b', httpVersion: '1.1', path: '/h2c-far', forwardedFor: clientIp },
      'and the one on the other node, through the tunnel')
    const plain = await curl(lab, `http://${VIP.h1}/still-http1`)
    t.match(JSON.parse(plain.body), { server: 'h2-a', httpVersion: '1.1', path: '/still-http1' }, 'an HTTP/1.1 client on the same port is served as before')

    const wrong = await curl(lab, `http://${VIP.h2cOnHttp1}/wrong`, '--http2-prior-knowledge')
    t.equal(wrong.status, 502)
    t.match(wrong.headers['weft-error'], /^endpoint 198\.18\.\d+\.\d+:8081 of default\/h2c-on-http1 does not speak HTTP\/2: it answered the HTTP\/2 connection preface with bytes that are not HTTP\/2/)
  })

  t.test("Node's http client: several requests on one kept-alive connection", async (t) => {
    const results = await runJson<Array<{ status: number; reusedSocket: boolean; server: string; httpVersion: string; requestId: string; error?: string }>>(
      lab, [node, '-e', keepAliveScript, `http://${VIP.h1}/keepalive`, '5'])
    t.equal(results.length, 5)
    t.same(results.map((r) => r.status), [200, 200, 200, 200, 200], `every request answered (${JSON.stringify(results)})`)
    t.same(results.map((r) => r.reusedSocket), [false, true, true, true, true], 'one connection: the proxy kept it open between requests')
    t.ok(results.every((r) => r.server === 'h2-a' && r.httpVersion === '1.1'), 'all answered by h2-a over HTTP/1.1')
    t.equal(new Set(results.map((r) => r.requestId)).size, 5, 'each request got its own request id')
  })

  t.test('gRPC unary Echo to a server on this node and to one through the tunnel', async (t) => {
    const local = await unary(lab, VIP.grpcA, '--count', '3')
    sent.grpcAOk += 3
    t.same({ ok: local.ok, servers: local.servers }, { ok: 3, servers: { 'grpc-a': 3 } }, `three calls answered by grpc-a (${JSON.stringify(local)})`)
    // Ten, not two: enough for the bug below to show nearly every run while it is there.
    const remote = await unary(lab, VIP.grpcB, '--count', '10')
    sent.grpcB += 10
    t.same({ ok: remote.ok, servers: remote.servers }, { ok: 10, servers: { 'grpc-b': 10 } }, `ten calls answered by grpc-b on node2 (${JSON.stringify(remote.codes)})`)
  })

  t.test('a status the server returns reaches the client', async (t) => {
    const failed = await unary(lab, VIP.grpcA, '--status', '5')
    sent.grpcAStatus5++
    t.same(failed.results, [{ code: 5, details: 'requested status 5' }], 'NOT_FOUND and its details, from the server through the proxy')
  })

  t.test('bidirectional Chat: 50 messages echoed in order, on this node and through the tunnel', async (t) => {
    const local = await chat(lab, VIP.grpcA, 50)
    sent.grpcAOk++
    t.equal(local.ok, true, `every message echoed, in order (${JSON.stringify({ ...local, replies: local.replies?.length })})`)
    t.same(local.replies?.map((r) => r.seq), Array.from({ length: 50 }, (_, i) => i + 1), 'fifty replies, in order')
    t.same(local.replies?.map((r) => r.message), Array.from({ length: 50 }, (_, i) => `message ${i + 1}`), 'each echoing its message')
    t.ok(local.replies?.every((r) => r.server === 'grpc-a'), 'all by grpc-a')

    const remote = await chat(lab, VIP.grpcB, 50)
    sent.grpcB++
    t.equal(remote.ok, true, `through the tunnel too (${JSON.stringify({ ...remote, replies: remote.replies?.length })})`)
    t.same(remote.replies?.map((r) => r.seq), Array.from({ length: 50 }, (_, i) => i + 1), 'fifty replies, in order')
    t.ok(remote.replies?.every((r) => r.server === 'grpc-b'), 'all by grpc-b')
  })

  t.test('a GRPCRoute sends weft.test.Echo/Echo to one backend and everything else to another', async (t) => {
    const routedUnary = await unary(lab, VIP.grpcRouted, '--count', '4')
    sent.grpcEcho += 4
    t.same({ ok: routedUnary.ok, servers: routedUnary.servers }, { ok: 4, servers: { 'grpc-a': 4 } }, `Echo matches the method rule: grpc-echo (grpc-a), not grpc-c (${JSON.stringify(routedUnary)})`)
    const routedChat = await chat(lab, VIP.grpcRouted, 5)
    sent.grpcRest++
    t.equal(routedChat.ok, true, `Chat works (${JSON.stringify(routedChat)})`)
    t.same([...new Set(routedChat.replies?.map((r) => r.server))], ['grpc-c'], 'Chat falls to the catch-all rule: grpc-rest (grpc-c)')
  })

  t.test('WebSocket through an appProtocol http service, to a server on the other node', async (t) => {
    const check = await runJson<{ ok: boolean; sent: number; echoed: number; mismatches: number; binaryBytes: number; server?: string; path?: string; error?: string }>(
      lab, [node, websocketFixture, 'client', '--url', `ws://${VIP.ws}/chat`, '--messages', '20', '--binary', String(MiB)])
    t.equal(check.error, undefined, 'no error')
    t.equal(check.ok, true, 'every message echoed as sent')
    t.same({ sent: check.sent, echoed: check.echoed, mismatches: check.mismatches, binaryBytes: check.binaryBytes }, { sent: 21, echoed: 21, mismatches: 0, binaryBytes: MiB },
      '20 text messages and one 1 MiB binary message')
    t.equal(check.server, 'ws-b', 'the upgrade was answered by ws-b on node2')
    t.equal(check.path, '/chat')
  })

  t.test('100 MB up and 100 MB down through the proxy, across nodes, with the proxies\' memory bounded', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-l7-bulk-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'upload.bin')
    const fileHash = createHash('sha256')
    const out = createWriteStream(file)
    for (let written = 0; written < BULK_BYTES;) {
      const chunk = randomBytes(Math.min(MiB, BULK_BYTES - written))
      fileHash.update(chunk)
      written += chunk.length
      if (!out.write(chunk)) await once(out, 'drain')
    }
    out.end()
    await once(out, 'close')
    const uploadSha = fileHash.digest('hex')

    const pids = [...daemonPids.values()].filter((p): p is number => p !== undefined)
    t.equal(pids.length, 2, 'both daemons are running')
    const rss = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
    const baseline = Math.max(...pids.map(rss))
    let peak = 0
    const sampler = setInterval(() => { for (const pid of pids) { try { peak = Math.max(peak, rss(pid)) } catch { /* daemon gone */ } } }, 50)
    t.teardown(() => clearInterval(sampler))

    const startedUp = Date.now()
    const upload = await lab.run('client', ['curl', '-s', '--max-time', '120', '-T', file, `http://${VIP.bulk}/upload`], { timeoutMs: 130_000 })
    const uploadMs = Date.now() - startedUp
    t.equal(upload.code, 0, `curl -T exit code (stderr ${upload.stderr})`)
    const received = JSON.parse(upload.stdout) as { bytes: number; sha256: string }
    t.equal(received.bytes, BULK_BYTES, 'the server received every byte of the upload')
    t.equal(received.sha256, uploadSha, 'and the same bytes (sha256)')

    const startedDown = Date.now()
    const download = await runJson<{ status: number; bytes: number; sha256: string; trailer: string | null; error?: string }>(lab, [node, '-e', downloadScript, `http://${VIP.bulk}/bytes/${BULK_BYTES}`])
    const downloadMs = Date.now() - startedDown
    clearInterval(sampler)
    t.equal(download.error, undefined, 'no error')
    t.equal(download.status, 200)
    t.equal(download.bytes, BULK_BYTES, 'the client received every byte of the download')
    t.equal(download.sha256, download.trailer, 'and the bytes the server hashed (its x-sha256 trailer, relayed by the proxy)')

    t.comment(`upload ${uploadMs} ms, download ${downloadMs} ms; proxy RSS ${(baseline / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB`)
    t.ok(peak > 0 && peak < RSS_BOUND, `peak proxy RSS ${(peak / MiB).toFixed(0)} MiB stays under ${RSS_BOUND / MiB} MiB while 100 MB go each way`)
  })

  t.test('malformed input costs only its own connection', async (t) => {
    const request = (head: string): Buffer => Buffer.from(head, 'latin1')
    const cases: Array<[label: string, bytes: string, status: number]> = [
      ['a space in a header name', 'GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n', 400],
      ['a NUL in a header value', 'GET / HTTP/1.1\r\nHost: x\r\nX-Test: a\0b\r\n\r\n', 400],
      ['a 100 KiB header', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100 * 1024)}\r\n\r\n`, 431],
      ['an invalid chunk size', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
    ]
    for (const [label, bytes, status] of cases) {
      const answer = await raw(lab, VIP.malformed, Buffer.from(bytes, 'latin1'))
      t.match(answer, { how: 'close', firstLine: new RegExp(`^HTTP/1\\.1 ${status} `), weftError: /^malformed request \(HPE_/ },
        `${label}: ${status} naming the parse error, then the connection is closed (${JSON.stringify(answer)})`)
    }

    // The preface and an empty SETTINGS frame, then bytes that read as a frame header far over
    // the 16 KiB maximum frame size: a connection error (FRAME_SIZE_ERROR), so GOAWAY.
    const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
    const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])
    const garbage = Buffer.from('this is not an HTTP/2 frame at all, not even close', 'latin1')
    for (const [label, vip] of [['h2c service', VIP.h2], ['sniffed service', VIP.h2Sniffed]] as const) {
      const broken = await raw(lab, vip, Buffer.concat([preface, settings, garbage]))
      t.equal(broken.how, 'close', `${label}: the proxy closed the connection (${JSON.stringify(broken)})`)
      t.ok(broken.frames.includes(7), `${label}: after a GOAWAY frame (frames ${JSON.stringify(broken.frames)})`)
    }

    const after = await curl(lab, `http://${VIP.malformed}/after`)
    t.equal(after.status, 200, 'a normal HTTP/1.1 request on a new connection is served')
    const afterH2 = await curl(lab, `http://${VIP.h2}/after`, '--http2-prior-knowledge')
    sent.h2++
    t.equal(afterH2.status, 200, 'and an HTTP/2 one')
    for (const n of lab.nodes) {
      const pid = daemonPids.get(n.name)
      t.ok(pid !== undefined && existsSync(`/proc/${pid}`), `${n.name}'s daemon (pid ${pid}) is still running`)
      t.equal(lab.daemonPid(n.name), pid, `${n.name}'s daemon was not restarted`)
      t.equal((await fetch(`http://${n.address}:15020/readyz`)).status, 200, `${n.name} /readyz answers 200`)
    }
  })

  t.test('TLS to a service without appProtocol passes through opaque; the access log records its SNI', async (t) => {
    // A TLS client whose ClientHello the proxy sniffs; the server is plain TCP (it answers the
    // client's address and closes), so the handshake fails: the proxy only passes bytes.
    const script = "const tls = require('node:tls'); const s = tls.connect({ host: process.argv[1], port: 443, servername: 'shop.example.test', rejectUnauthorized: false }); s.on('error', (e) => { console.log('handshake ' + (e.code || e.message)); process.exit(0) }); s.on('secureConnect', () => { console.log('secure?'); process.exit(1) })"
    const r = await lab.run('client', [node, '-e', script, VIP.tls])
    t.match(r.stdout, /^handshake /, `the client's handshake failed against a plain TCP server, as it must (${r.stdout.trim()} ${r.stderr.trim()})`)
    // The connection's line is written when it closes: poll the daemon's log for it.
    let line: Record<string, unknown> | undefined
    for (const deadline = Date.now() + 10_000; !line && Date.now() < deadline;) {
      line = readFileSync(node1.logFile, 'utf8').split('\n').filter((l) => l.includes('"sni"')).map((l) => JSON.parse(l) as Record<string, unknown>).find((entry) => entry.sni === 'shop.example.test')
      if (!line) await new Promise((resolve) => setTimeout(resolve, 200))
    }
    t.match(line, { type: 'access', protocol: 'tls', sni: 'shop.example.test', destinationService: 'default/tls', destinationWorkload: 'default/tcp-b', upstreamPath: 'tunnel', sourceWorkload: 'default/client' }, 'one access line for the connection, with the server name the client asked for')
    t.ok(Number(line?.bytesSent) > 0, 'the ClientHello went through')
  })

  t.test('weft_requests_total counts HTTP/2 and gRPC requests by protocol, service and status', async (t) => {
    const samples = parsePrometheusText(await (await fetch(`http://${node1.address}:15020/metrics`)).text())
    const count = (labels: Record<string, string>): number => sumSamples(samples, 'weft_requests_total', { reporter: 'source', source_workload: 'default/client', ...labels })
    t.equal(count({ protocol: 'http2', destination_service: 'default/h2', destination_workload: 'default/h2-a', response_code: '200' }), sent.h2, `${sent.h2} HTTP/2 requests to default/h2`)
    t.equal(count({ protocol: 'http2', destination_service: 'default/h2' }), sent.h2, 'and nothing else for it (the broken connection made no request)')
    t.equal(count({ protocol: 'http2', destination_service: 'default/h2-sniffed', response_code: '200' }), sent.h2Sniffed, 'the sniffed HTTP/2 request')
    t.equal(count({ protocol: 'http2', destination_service: 'default/h2-remote', destination_workload: 'default/h2-b' }), 1, 'the one through the tunnel')
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-a', destination_workload: 'default/grpc-a', grpc_status: '0' }), sent.grpcAOk, `${sent.grpcAOk} OK calls to grpc-a (unary, and a Chat stream as one)`)
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-a', grpc_status: '5' }), sent.grpcAStatus5, 'the NOT_FOUND call, by its grpc_status')
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-a' }), sent.grpcAOk + sent.grpcAStatus5, 'nothing else to grpc-a')
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-b', destination_workload: 'default/grpc-b' }), sent.grpcB, 'unary and Chat calls to grpc-b (a stream is one request)')
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-b', grpc_status: '0' }), sent.grpcB, 'all of them OK')
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-echo', destination_workload: 'default/grpc-a', grpc_status: '0' }), sent.grpcEcho, 'the GRPCRoute\'s Echo calls, by the backend it chose')
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-rest', destination_workload: 'default/grpc-c', grpc_status: '0' }), sent.grpcRest, 'the GRPCRoute\'s Chat call, by its catch-all backend')
    t.equal(count({ protocol: 'grpc', destination_service: 'default/grpc-routed' }), 0, 'none counted under the route\'s parent')
    t.equal(count({ protocol: 'http2', destination_service: 'default/grpc-a' }), 0, 'gRPC is not counted as plain HTTP/2')
    // The daemon samples its own stalls (weft node calls sampleRuntime at start).
    t.ok(sumSamples(samples, 'weft_event_loop_delay_seconds_count', {}) > 0, 'the node reports its event-loop delay')
    t.ok(samples.some((sample) => sample.name === 'weft_gc_duration_seconds_count'), 'and its garbage collections')
  })
})
