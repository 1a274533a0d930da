// The proxy's byte path on loopback, without the kernel part: splice (half-close, resets, idle
// timeout, backpressure) and the HTTP/2 CONNECT tunnel between two nodes' listeners.
import t, { type Test } from 'tap'
import net, { type Socket } from 'node:net'
import { once } from 'node:events'
import { tcpServer } from './helpers/net.ts'
import { until } from './helpers/wait.ts'
import { splice, type SpliceResult } from '../src/datapath/splice.ts'
import { connectDirect } from '../src/datapath/outbound.ts'
import { InboundListener } from '../src/datapath/inbound.ts'
import { TunnelError, TunnelPool } from '../src/datapath/tunnel.ts'
import { testCredentials } from './helpers/svid.ts'
import { buildSnapshot } from '../src/config/resources/index.ts'
import { NodeMetrics } from '../src/telemetry/metrics.ts'
import { createLogger } from '../src/telemetry/log.ts'

const log = createLogger({ test: 'datapath' }, 'error')


interface Spliced { client: Socket; upstream: Socket }

/** A minimal proxy: accepts, connects to `upstreamPort`, splices; reports each splice result and the proxy's two sockets of each. */
async function proxy(t: Test, upstreamPort: number, idleTimeoutMs = 0): Promise<{ port: number; results: SpliceResult[]; done: Promise<SpliceResult>; spliced: Spliced[] }> {
  const results: SpliceResult[] = []
  const spliced: Spliced[] = []
  let resolveDone: (r: SpliceResult) => void = () => {}
  const done = new Promise<SpliceResult>((r) => { resolveDone = r })
  const port = await tcpServer(t, (client) => {
    client.pause()
    void connectDirect('127.0.0.1', upstreamPort, 2000).then((upstream) => {
      spliced.push({ client, upstream })
      splice(client, upstream, { idleTimeoutMs, onDone: (r) => { results.push(r); resolveDone(r) } })
    })
  })
  return { port, results, done, spliced }
}

function collect(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = ''
    socket.on('data', (d: Buffer) => { data += d.toString() })
    socket.on('end', () => resolve(data))
    socket.on('error', reject)
  })
}

t.test('splice', async (t) => {
  t.test('half-close: the client ends its half, the reply still comes back', async (t) => {
    const upstream = await tcpServer(t, (s) => {
      let got = ''
      s.on('data', (d: Buffer) => { got += d.toString() })
      s.on('end', () => s.end(`got ${got}`)) // answers only after the client's FIN arrived
    })
    const p = await proxy(t, upstream)
    const client = net.connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true })
    client.end('hello')
    t.equal(await collect(client), 'got hello')
    const result = await p.done
    t.equal(result.outcome, 'closed')
    t.same([result.bytesSent, result.bytesReceived], [5, 9], 'bytes counted both ways')
  })

  t.test('a reset from the upstream reaches the client as a reset', async (t) => {
    const upstream = await tcpServer(t, (s) => { s.once('data', () => s.resetAndDestroy()) })
    const p = await proxy(t, upstream)
    const client = net.connect({ port: p.port, host: '127.0.0.1' })
    client.write('x')
    const [err] = await once(client, 'error') as [NodeJS.ErrnoException]
    t.equal(err.code, 'ECONNRESET')
    t.equal((await p.done).outcome, 'reset')
  })

  t.test('a reset from the client reaches the upstream as a reset', async (t) => {
    let upstreamError: Promise<NodeJS.ErrnoException> | undefined
    const upstream = await tcpServer(t, (s) => { upstreamError = once(s, 'error').then(([e]) => e as NodeJS.ErrnoException) ; s.write('ready') })
    const p = await proxy(t, upstream)
    const client = net.connect({ port: p.port, host: '127.0.0.1' })
    await once(client, 'data')
    client.resetAndDestroy()
    t.equal((await upstreamError!).code, 'ECONNRESET')
    t.equal((await p.done).outcome, 'reset')
  })

  t.test('an idle connection is closed after the idle timeout', async (t) => {
    const upstream = await tcpServer(t, () => {})
    const p = await proxy(t, upstream, 150)
    const client = net.connect({ port: p.port, host: '127.0.0.1' })
    client.on('error', () => {})
    t.equal((await p.done).outcome, 'idle_timeout')
  })

  t.test('backpressure: a reader that stops holds the sender, the proxy buffers little, nothing is lost', async (t) => {
    const total = 64 * 1024 * 1024
    let resumeUpstream = (): void => {}
    const upstream = await tcpServer(t, (s) => {
      let n = 0
      s.pause() // reads nothing until told: the proxy must stop reading from the client
      resumeUpstream = () => s.resume()
      s.on('data', (d: Buffer) => { n += d.length })
      s.on('end', () => s.end(String(n)))
    })
    const p = await proxy(t, upstream)
    const client = net.connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true })
    const reply = collect(client)
    const chunk = Buffer.alloc(1 << 20, 7)
    let sent = 0
    const pump = (): void => {
      while (sent < total) { sent += chunk.length; if (!client.write(chunk)) { client.once('drain', pump); return } }
      client.end()
    }
    pump()

    // Wait until the proxy has stopped reading from the client: the same count five polls running.
    const pair = await until('the proxy to splice the connection', () => p.spliced[0])
    let last = -1
    let steady = 0
    await until('the proxy to stop reading from the client while the upstream reads nothing', () => {
      const read = pair.client.bytesRead
      steady = read === last ? steady + 1 : 0
      last = read
      return steady >= 5
    }, { timeoutMs: 20_000 })
    // Both hops' kernel buffers (send and receive, autotuned to a few MiB each) hold what the
    // proxy read; a proxy that buffers everything would have read all 64 MiB.
    t.ok(pair.client.bytesRead < total / 2, `the proxy read ${(pair.client.bytesRead / 1048576).toFixed(1)} MiB of ${total / 1048576} MiB and then stopped`)
    t.ok(pair.upstream.writableLength <= 1024 * 1024, `and holds at most 1 MiB of it in user space (holds ${pair.upstream.writableLength} bytes)`)
    t.ok(sent < total || client.writableLength > 0, 'the client\'s writes are held back too')

    resumeUpstream()
    t.equal(await reply, String(total), 'the upstream received every byte')
  })
})

t.test('tunnel: HTTP/2 CONNECT over mutual TLS between two nodes\' listeners', async (t) => {
  // n1 (the client side) connects from 127.0.0.1; n2 listens on 127.0.0.5 and runs the pod "web".
  const pod = (name: string, node: string, ip: string) => [`pod.default.${name}`, { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default' }, spec: { nodeName: node, serviceAccountName: name }, status: { podIP: ip } }] as const
  const snapshot = buildSnapshot(new Map<string, unknown>([
    ['node._.n1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'n1' }, spec: { address: '127.0.0.1', proxyIp: '127.0.0.1', podCIDR: '127.0.0.0/8' } }],
    ['node._.n2', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'n2' }, spec: { address: '127.0.0.5', proxyIp: '127.0.0.5', podCIDR: '127.0.0.0/8' } }],
    pod('client', 'n1', '127.0.0.9'),
    pod('web', 'n2', '127.0.0.1'),
  ]), undefined, 1)
  t.same(snapshot.rejected, [], 'the test configuration is valid')
  const credentials = testCredentials()
  const metrics = new NodeMetrics('n2', () => undefined)
  const inbound = new InboundListener({ node: 'n2', listenIp: '127.0.0.5', port: 0, idleTimeoutMs: 0, connectTimeoutMs: 2000, snapshot: () => snapshot, metrics, log, credentials, trustDomain: 'cluster.local' })
  await inbound.listen()
  const inboundPort = inbound.address().port
  const pool = new TunnelPool(log, 2000, credentials)
  t.teardown(async () => { pool.close(); await inbound.stop() })
  const echoPort = await tcpServer(t, (s) => {
    let got = ''
    s.on('data', (d: Buffer) => { got += d.toString() })
    s.on('end', () => s.end(`echo ${got}`))
  })
  const client = 'spiffe://cluster.local/ns/default/sa/client'
  const web = 'spiffe://cluster.local/ns/default/sa/web'
  const target = (destination: string, destinationIdentity = web) => ({ peerAddress: '127.0.0.5', peerPort: inboundPort, destination, destinationIdentity, source: { ip: '127.0.0.9', identity: client } })

  t.test('a stream reaches a local workload, half-close included', async (t) => {
    const stream = await pool.open(target(`127.0.0.1:${echoPort}`))
    stream.end('over the tunnel')
    let reply = ''
    stream.on('data', (d: Buffer) => { reply += d.toString() })
    await once(stream, 'end')
    t.equal(reply, 'echo over the tunnel')
    const text = await metrics.registry.metrics()
    t.match(text, /weft_connections_opened_total\{direction="inbound",path="direct",source_workload="default\/client",destination_workload="default\/web",destination_service="none",node="n2"\} 1/, 'the inbound side counted it with the source workload its certificate proved')
  })

  t.test('many streams share one tunnel connection per (source identity, destination identity, peer)', async (t) => {
    const streams = await Promise.all([1, 2, 3].map(() => pool.open(target(`127.0.0.1:${echoPort}`))))
    t.same(pool.connections, [`${client}|${web}|127.0.0.5:${inboundPort}`])
    for (const s of streams) s.close()
  })

  t.test('a server that cannot prove the destination identity is not trusted', async (t) => {
    // n2 runs no pod with this identity, so it has no certificate to serve for it.
    const err = await pool.open(target(`127.0.0.1:${echoPort}`, 'spiffe://cluster.local/ns/default/sa/elsewhere')).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof TunnelError, 'a TunnelError')
    t.match((err as Error).message, /tunnel to 127\.0\.0\.5:\d+/)
  })

  t.test('a destination that is not a workload on that node is refused', async (t) => {
    const err = await pool.open(target(`127.0.0.2:${echoPort}`)).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof TunnelError, 'a TunnelError')
    t.match((err as Error).message, /answered 403 \(127\.0\.0\.2 is not a workload on node n2\)/)
  })

  t.test('a destination that refuses the connection is reported as such', async (t) => {
    // A port that was just free: nothing listens there.
    const probe = net.createServer()
    probe.listen(0, '127.0.0.1'); await once(probe, 'listening')
    const freePort = (probe.address() as net.AddressInfo).port
    probe.close()
    const err = await pool.open(target(`127.0.0.1:${freePort}`)).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof TunnelError, 'a TunnelError')
    t.match((err as Error).message, /answered 502 \(connect to 127\.0\.0\.1:\d+: connect ECONNREFUSED/)
  })

  t.test('a reset by the destination resets the stream', async (t) => {
    const resetting = await tcpServer(t, (s) => { s.once('data', () => s.resetAndDestroy()) })
    const stream = await pool.open(target(`127.0.0.1:${resetting}`))
    let ended = false
    stream.on('end', () => { ended = true })
    stream.on('data', () => {})
    stream.write('x')
    const [err] = await once(stream, 'error') as [Error & { code?: string }]
    t.equal(err.code, 'ERR_HTTP2_STREAM_ERROR', `RST_STREAM (${err.message})`)
    t.equal(ended, false, 'not preceded by END_STREAM: the far side\'s client must see a reset, not a close')
  })
})
