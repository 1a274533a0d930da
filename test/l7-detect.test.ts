// Protocol detection: a declared appProtocol decides; otherwise the first bytes do (HTTP/1.x
// request line, HTTP/2 preface, TLS ClientHello with its SNI), and anything else, or silence for
// the bounded wait, is opaque. Sniffed bytes are put back for whoever reads the socket next.
import t, { type Test } from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { once } from 'node:events'

import { classify, classifyHttpVersion, declaredProtocol, HTTP2_PREFACE, sniff } from '../src/l7/detect.ts'

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

t.test('on an `http` port the first bytes say the HTTP version: the HTTP/2 preface, or HTTP/1.1 at the first byte that differs', async (t) => {
  t.same(classifyHttpVersion(HTTP2_PREFACE), { protocol: 'http2' })
  t.same(classifyHttpVersion(Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 0, 4, 0])])), { protocol: 'http2' }, 'the SETTINGS frame after it changes nothing')
  t.equal(classifyHttpVersion(HTTP2_PREFACE.subarray(0, 10)), 'undecided', 'part of the preface waits for the rest')
  t.same(classifyHttpVersion(HTTP2_PREFACE.subarray(0, 10), true), { protocol: 'http1' }, 'unless no more will come')
  t.same(classifyHttpVersion(Buffer.from('G')), { protocol: 'http1' }, 'one byte of an HTTP/1.1 request is enough')
  t.same(classifyHttpVersion(Buffer.from('PROPFIND / HTTP/1.1\r\n')), { protocol: 'http1' }, 'a method that starts like the preface')
  t.same(classifyHttpVersion(Buffer.alloc(0), true), { protocol: 'http1' }, 'a silent client is the HTTP/1.1 server\'s to time out')
})

t.test('sniff with classifyHttpVersion: the preface is HTTP/2 and put back', async (t) => {
  const { result, rest } = await sniffPair(t, (client) => { client.write(HTTP2_PREFACE.subarray(0, 5)); setTimeout(() => client.end(HTTP2_PREFACE.subarray(5)), 20) }, classifyHttpVersion)
  t.equal(result.protocol, 'http2')
  t.equal(await rest, HTTP2_PREFACE.toString('latin1'))
})

async function sniffPair(t: Test, send: (client: net.Socket) => void, classifier?: typeof classify): Promise<{ result: Awaited<ReturnType<typeof sniff>>; rest: Promise<string> }> {
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
  const result = await sniff(socket, { timeoutMs: 100, classifier })
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
