// The L4 fast path on loopback with the real kernel (no lab): fastSplice joins a client's
// connection and an upstream connection in a sockhash with the stream verdict; bytes arrive intact
// both ways, half-close and resets behave as splice.ts's, the bytes are counted, and the kernel
// (not user space) moved them. Each test installs its own interception pins and removes them.
import t, { type Test } from 'tap'
import net, { type Socket } from 'node:net'
import { once } from 'node:events'
import { tcpServer } from './helpers/net.ts'
import { createHash } from 'node:crypto'

import { NodeInterception } from '../src/bpf/index.ts'
import { fastSplice, type FastSpliceResult } from '../src/datapath/fast-splice.ts'
import { connectDirect } from '../src/datapath/outbound.ts'
import { cgroupFixture, requirePrivileged } from './helpers/privileged.ts'

function install(t: Test): NodeInterception {
  const fixture = cgroupFixture(t) // its teardown unpins and removes the cgroups, also on failure
  const interception = NodeInterception.open({
    pinDir: fixture.pinDir, cgroupRoot: fixture.node,
    proxyIp: '127.0.0.1', proxyPort: 15001, interceptCidrs: ['198.18.0.0/15'], bypassCidrs: [], excludedPorts: [],
  })
  t.teardown(() => interception.close())
  return interception
}


/** A proxy like outbound.ts's same-node path: accept (paused), connect upstream, fastSplice. */
async function proxy(t: Test, interception: NodeInterception, upstreamPort: number, idleTimeoutMs = 0): Promise<{ port: number; done: Promise<FastSpliceResult>; abort: () => void }> {
  let resolveDone: (r: FastSpliceResult) => void = () => {}
  const done = new Promise<FastSpliceResult>((r) => { resolveDone = r })
  let abortIt = (): void => {}
  const sockets = new Set<Socket>()
  const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    sockets.add(client)
    client.on('error', () => {})
    void connectDirect('127.0.0.1', upstreamPort, 2000).then((upstream) => {
      sockets.add(upstream)
      const handle = fastSplice(client, upstream, { idleTimeoutMs, kernel: interception, onDone: resolveDone })
      abortIt = () => handle.abort()
    })
  })
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  t.teardown(() => { srv.close(); for (const s of sockets) s.destroy() })
  return { port: (srv.address() as net.AddressInfo).port, done, abort: () => abortIt() }
}

function pattern(size: number, seed: number): Buffer {
  const buffer = Buffer.alloc(size)
  let x = seed | 1
  for (let i = 0; i + 4 <= size; i += 4) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; buffer.writeInt32LE(x | 0, i) }
  return buffer
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

function collect(socket: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.on('end', () => resolve(Buffer.concat(chunks)))
    socket.on('error', reject)
  })
}

t.test('fast splice', async (t) => {
  if (!requirePrivileged(t)) return

  t.test('a large transfer both ways arrives intact; the kernel moved it and the proxy counted it', async (t) => {
    const interception = install(t)
    const size = 50 * 1024 * 1024
    const request = pattern(size, 7)
    const reply = pattern(size, 11)
    // The upstream answers after the client's FIN, so both directions carry 50 MB in turn.
    const upstreamPort = await tcpServer(t, (s) => {
      const hash = createHash('sha256')
      let got = 0
      s.on('data', (d: Buffer) => { got += d.length; hash.update(d) })
      s.on('end', () => { s.write(`${got} ${hash.digest('hex')}\n`); s.end(reply) })
    })
    const { port, done } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    await once(client, 'connect')
    const received = collect(client)
    client.end(request)
    const answer = await received
    const newline = answer.indexOf(10)
    t.equal(answer.subarray(0, newline).toString(), `${size} ${sha(request)}`, 'the upstream got every byte the client sent (sha256)')
    t.equal(sha(answer.subarray(newline + 1)), sha(reply), 'and the client every byte of the reply (sha256)')
    const result = await done
    t.equal(result.joined, true, 'the sockets were joined in the kernel')
    t.equal(result.outcome, 'closed')
    t.equal(result.bytesSent, size, 'bytes sent counted')
    t.equal(result.bytesReceived, newline + 1 + size, 'bytes received counted')
    // What the client sent before the join (it writes at once) went through user space; the rest,
    // and the whole reply, through the kernel.
    t.equal(result.kernelBytesReceived, newline + 1 + size, 'the kernel moved the whole reply')
    t.ok(result.kernelBytesSent > size / 2, `and most of the request (${result.kernelBytesSent} of ${size} bytes)`)
  })

  t.test('bytes the client sent before the join go first, and a reply waiting for them comes back', async (t) => {
    const interception = install(t)
    const upstreamPort = await tcpServer(t, (s) => {
      let got = ''
      s.on('data', (d: Buffer) => { got += d.toString(); if (got.endsWith('\n')) s.write(`echo ${got}`) })
      s.on('end', () => s.end())
    })
    const { port, done } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    client.write('early bytes\n') // before the proxy accepted, connected upstream and joined
    const first = await once(client, 'data') as [Buffer]
    t.equal(first[0].toString(), 'echo early bytes\n', 'answered: the early bytes reached the upstream (no stall)')
    const rest = collect(client)
    client.write('more\n')
    client.end()
    t.equal((await rest).toString(), 'echo early bytes\nmore\n', 'later bytes follow in order')
    const result = await done
    t.equal(result.joined, true)
    t.equal(result.bytesSent, 'early bytes\nmore\n'.length)
  })

  t.test('half-close: the client ends its half, the reply still comes back', async (t) => {
    const interception = install(t)
    const upstreamPort = await tcpServer(t, (s) => {
      let got = ''
      s.on('data', (d: Buffer) => { got += d.toString(); s.write('ack ') })
      s.on('end', () => { s.write('got '); setTimeout(() => s.end(got), 50) }) // replies after the client's FIN
    })
    const { port, done } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    await once(client, 'connect')
    const reply = collect(client)
    client.write('hello')
    await once(client, 'data') // joined and flowing; the FIN below is forwarded by the fast path
    client.end()
    t.equal((await reply).toString(), 'ack got hello', 'the upstream saw EOF after every byte, and its reply arrived after it')
    t.match(await done, { outcome: 'closed', joined: true, bytesSent: 5, bytesReceived: 'ack got hello'.length, kernelBytesReceived: 'ack got hello'.length })
  })

  t.test('a reset by the upstream resets the client', async (t) => {
    const interception = install(t)
    const upstreamPort = await tcpServer(t, (s) => { s.once('data', () => s.resetAndDestroy()) })
    const { port, done } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    await once(client, 'connect')
    const error = once(client, 'error')
    client.write('trigger')
    const [err] = await error as [NodeJS.ErrnoException]
    t.equal(err.code, 'ECONNRESET', 'the client sees a reset')
    t.match(await done, { outcome: 'reset', joined: true })
  })

  t.test('a reset by the client resets the upstream', async (t) => {
    const interception = install(t)
    let upstreamError: Promise<unknown[]> | undefined
    const upstreamSeen = new Promise<void>((resolve) => {
      void tcpServer(t, (s) => { upstreamError = once(s, 'error'); s.once('data', () => resolve()) }).then((p) => upstreamPortReady(p))
    })
    let upstreamPortReady: (p: number) => void = () => {}
    const upstreamPort = await new Promise<number>((r) => { upstreamPortReady = r })
    const { port, done } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    await once(client, 'connect')
    client.write('x')
    await upstreamSeen
    client.resetAndDestroy()
    const [err] = await upstreamError! as [NodeJS.ErrnoException]
    t.equal(err.code, 'ECONNRESET', 'the upstream sees a reset')
    t.match(await done, { outcome: 'reset', joined: true })
  })

  t.test('idle timeout: bytes moving in the kernel keep a connection open; once quiet it is closed', async (t) => {
    const interception = install(t)
    const upstreamPort = await tcpServer(t, (s) => { s.on('data', () => {}) })
    const { port, done } = await proxy(t, interception, upstreamPort, 400)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    client.on('error', () => {})
    await once(client, 'connect')
    let writing = true
    let closedWhileWriting = false
    void done.then(() => { closedWhileWriting = writing })
    // 30 writes 50 ms apart (1.5 s, well past the 400 ms idle timeout), then silence.
    for (let i = 0; i < 30; i++) {
      client.write('tick')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    writing = false
    t.equal(closedWhileWriting, false, 'the proxy kept it open while bytes moved in the kernel')
    const result = await done
    t.match(result, { outcome: 'idle_timeout', joined: true, bytesSent: 120 }, 'closed once quiet, every byte counted')
  })

  t.test('an upstream that reads nothing for a second while the client floods: joined or kept in user space (the join waits at most 200 ms for its writes), every byte arrives in order', async (t) => {
    const interception = install(t)
    const size = 24 * 1024 * 1024
    const payload = pattern(size, 11)
    let received: Promise<Buffer> | undefined
    const upstreamPort = await tcpServer(t, (s) => {
      // Not a byte read for a second: the proxy's writes toward it cannot reach the kernel in time to join.
      s.pause()
      received = collect(s)
      setTimeout(() => s.resume(), 1000)
      s.on('end', () => s.end('done'))
    })
    const { port, done } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    client.end(payload)
    const reply = collect(client)
    const result = await done
    t.equal(result.bytesSent, size, `it counted every byte (joined: ${result.joined})`)
    if (!result.joined) t.equal(result.kernelBytesSent, 0, 'kept in user space: none went through the kernel path')
    else t.ok(result.kernelBytesSent > 0 && result.kernelBytesSent <= size, 'joined: the kernel moved the rest')
    const got = await received!
    t.equal(got.length, size, 'the upstream got every byte')
    t.equal(sha(got), sha(payload), 'unchanged and in order')
    t.equal((await reply).toString(), 'done', 'and its answer came back')
  })

  t.test('a client reset while the upstream reads nothing (the join waiting for its writes, or joined with full queues) resets the upstream, and the proxy is done with both', async (t) => {
    const interception = install(t)
    let upstreamEnded: Promise<string> | undefined
    let upstreamSocket: net.Socket | undefined
    const upstreamPort = await tcpServer(t, (s) => {
      upstreamSocket = s
      s.pause() // nothing read: the join is left waiting for its writes
      upstreamEnded = new Promise((resolve) => {
        s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
        s.on('close', () => resolve('closed'))
      })
    })
    const { port, done } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1' })
    client.on('error', () => {})
    client.write(pattern(24 * 1024 * 1024, 5))
    await new Promise((resolve) => setTimeout(resolve, 60))
    client.resetAndDestroy()
    const result = await done
    t.equal(result.outcome, 'reset', `the splice ended as a reset (joined: ${result.joined})`)
    upstreamSocket?.resume() // a paused socket notices the reset only once it reads again
    t.equal(await upstreamEnded, 'ECONNRESET', 'the upstream saw the reset')
  })

  t.test('abort (a drain deadline) resets both sides of a joined connection', async (t) => {
    const interception = install(t)
    let upstreamClosed: Promise<unknown> | undefined
    const upstreamPort = await tcpServer(t, (s) => { upstreamClosed = new Promise((resolve) => s.on('close', resolve)); s.on('data', () => s.write('pong')) })
    const { port, done, abort } = await proxy(t, interception, upstreamPort)
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    await once(client, 'connect')
    client.write('ping')
    await once(client, 'data') // joined and flowing
    const error = once(client, 'error')
    abort()
    const [err] = await error as [NodeJS.ErrnoException]
    t.equal(err.code, 'ECONNRESET', 'the client is reset')
    await upstreamClosed // reset too (an error then close); it would never close if the proxy kept it
    t.match(await done, { outcome: 'aborted', joined: true, bytesSent: 4, bytesReceived: 4 })
  })
})
