// Protocol detection: a declared appProtocol decides; otherwise the first bytes do (HTTP/1.x
// request line, HTTP/2 preface, TLS ClientHello with its SNI), and anything else, or silence for
// the bounded wait, is opaque. Sniffed bytes are put back for whoever reads the socket next.
import t, { type Test } from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { once } from 'node:events'

import { classify, declaredProtocol, HTTP2_PREFACE, sniff } from '../src/l7/detect.ts'

t.test('a declared appProtocol decides, without reading a byte', async (t) => {
  t.equal(declaredProtocol('http'), 'http1')
  t.equal(declaredProtocol('kubernetes.io/http'), 'http1')
  t.equal(declaredProtocol('h2c'), 'http2')
  t.equal(declaredProtocol('kubernetes.io/h2c'), 'http2')
  t.equal(declaredProtocol('grpc'), 'grpc')
  t.equal(declaredProtocol('tcp'), 'opaque')
  t.equal(declaredProtocol('mysql'), 'opaque')
  t.equal(declaredProtocol(undefined), undefined, 'none declared: sniff')
})

t.test('first bytes classify', async (t) => {
  const b = (s: string): Buffer => Buffer.from(s, 'latin1')
  t.same(classify(b('GET /api?x=1 HTTP/1.1\r\n')), { protocol: 'http1' })
  t.same(classify(b('POST / HTTP/1.0\r\nHost: x\r\n')), { protocol: 'http1' })
  t.equal(classify(b('GET /api HT')), 'undecided', 'a request line in pieces waits for the rest')
  t.same(classify(b('GET /api HT'), true), { protocol: 'opaque' }, 'unless no more will come')
  t.same(classify(b('GET / HTTP/2.0\r\n')), { protocol: 'opaque' }, 'HTTP/2 has no request line')
  t.same(classify(b('hello there\r\n')), { protocol: 'opaque' })
  t.same(classify(Buffer.from([0x00, 0x01, 0x02])), { protocol: 'opaque' }, 'binary: at once')
  t.same(classify(HTTP2_PREFACE), { protocol: 'http2' })
  t.equal(classify(HTTP2_PREFACE.subarray(0, 10)), 'undecided')
  t.same(classify(Buffer.alloc(0), true), { protocol: 'opaque' }, 'silence is opaque')
})

t.test('a TLS ClientHello is TLS, with its SNI', async (t) => {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const hello = new Promise<Buffer>((resolve) => server.once('connection', (socket) => {
    socket.once('data', (chunk: Buffer) => { resolve(chunk); socket.destroy() })
  }))
  const client = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, servername: 'reviews.shop.svc.cluster.local' })
  client.on('error', () => {})
  const bytes = await hello
  client.destroy()
  t.same(classify(bytes), { protocol: 'tls', sni: 'reviews.shop.svc.cluster.local' })
})

async function sniffPair(t: Test, send: (client: net.Socket) => void): Promise<{ result: Awaited<ReturnType<typeof sniff>>; rest: Promise<string> }> {
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const accepted = once(server, 'connection') as Promise<[net.Socket]>
  const client = net.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, allowHalfOpen: true })
  t.teardown(() => client.destroy())
  await once(client, 'connect')
  send(client)
  const [socket] = await accepted
  t.teardown(() => socket.destroy())
  const result = await sniff(socket, { timeoutMs: 100 })
  const rest = new Promise<string>((resolve) => {
    let text = result.unread?.toString('latin1') ?? ''
    if (socket.readableEnded) { resolve(text); return } // the half-close came while sniffing
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')))
    socket.on('end', () => resolve(text))
    socket.resume()
  })
  return { result, rest }
}

t.test('sniff puts the bytes back: the next reader sees the stream from its first byte', async (t) => {
  const { result, rest } = await sniffPair(t, (client) => { client.write('GET / HT'); setTimeout(() => client.end('TP/1.1\r\nHost: a\r\n\r\n'), 20) })
  t.equal(result.protocol, 'http1')
  t.equal(result.timedOut, false)
  t.equal(await rest, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n')
})

t.test('a client that half-closes after a few bytes: opaque, and the bytes are handed back', async (t) => {
  const { result, rest } = await sniffPair(t, (client) => client.end('GE'))
  t.equal(result.protocol, 'opaque')
  t.equal(await rest, 'GE')
})

t.test('a silent client (server speaks first) is opaque after the bounded wait', async (t) => {
  const { result } = await sniffPair(t, () => {})
  t.equal(result.protocol, 'opaque')
  t.equal(result.timedOut, true)
})
