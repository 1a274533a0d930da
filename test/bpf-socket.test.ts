// The socket option helpers on real sockets: cookies, marks, transparent, reuseport (each read
// back from the kernel), SO_ORIGINAL_DST, and the shape of their errors.
import { spawnSync } from 'node:child_process'
import { connect, createServer, type Socket } from 'node:net'
import t from 'tap'

import { BpfError, originalDstOf, setIpTransparent, setReusePort, setSocketMark, socketCookie, socketFd } from '../src/bpf/index.ts'
import { requirePrivileged } from './helpers/privileged.ts'

/** The line(s) `ss` prints, with extended info and inet socket options, for TCP sockets matching filter. */
function ss(filter: string[]): string {
  const r = spawnSync('ss', ['-tnHe', '--inet-sockopt', ...filter], { encoding: 'utf8' })
  if (r.status !== 0 || !r.stdout.trim()) throw new Error(`ss ${filter.join(' ')}: no socket (status ${r.status}, ${r.stderr.trim()})`)
  return r.stdout
}

/** Listens on 127.0.0.1:port with SO_REUSEPORT (then closes): 'listening' or the error code. */
function secondListener(port: number): Promise<string> {
  const server = createServer()
  return new Promise((resolve) => {
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    server.listen({ port, host: '127.0.0.1', reusePort: true }, () => server.close(() => resolve('listening')))
  })
}

t.test('socket options on a connected pair', async (t) => {
  if (!requirePrivileged(t, ['root', 'addon'])) return
  const accepted: Socket[] = []
  const server = createServer((socket) => accepted.push(socket))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  const client = connect(address.port, '127.0.0.1')
  t.teardown(() => client.destroy())
  await new Promise<void>((resolve) => client.once('connect', resolve))

  const serverFd = socketFd(server)
  const clientFd = socketFd(client)
  if (serverFd === undefined || clientFd === undefined) throw new Error('no fds on the sockets')
  const cookie = socketCookie(clientFd)
  t.type(cookie, 'bigint')
  t.ok(cookie > 0n)
  t.equal(socketCookie(clientFd), cookie, 'stable for the socket')
  t.not(socketCookie(serverFd), cookie, 'unique per socket')

  // Read back through the kernel's socket diagnostics (ss: fwmark, inet-sockopt), and by what
  // SO_REUSEPORT allows: a second listener on the same port.
  const clientSocket = (): string => ss(['state', 'established', 'src', `127.0.0.1:${client.localPort}`])
  const listeningSocket = (): string => ss(['state', 'listening', 'src', `127.0.0.1:${address.port}`])
  t.notMatch(clientSocket(), /fwmark:/, 'the client socket has no mark at first')
  setSocketMark(clientFd, 0x77)
  t.match(clientSocket(), /fwmark:0x77\b/, 'setSocketMark: the kernel reports the mark')
  t.notMatch(listeningSocket(), /inet-sockopt: \([^)]*\btransparent\b/, 'the listener is not transparent at first')
  setIpTransparent(serverFd, true)
  t.match(listeningSocket(), /inet-sockopt: \([^)]*\btransparent\b/, 'setIpTransparent(true): the kernel reports IP_TRANSPARENT')
  setIpTransparent(serverFd, false)
  t.notMatch(listeningSocket(), /inet-sockopt: \([^)]*\btransparent\b/, 'setIpTransparent(false) clears it')
  setIpTransparent(serverFd, true)
  t.equal(await secondListener(address.port), 'EADDRINUSE', 'without SO_REUSEPORT on the first listener, a second one on its port is refused')
  setReusePort(serverFd, true)
  t.equal(await secondListener(address.port), 'listening', 'setReusePort: a second SO_REUSEPORT listener shares the port')

  // Not NAT'ed. Without connection tracking there is no original destination (ENOENT, or
  // ENOPROTOOPT without conntrack at all); once netfilter tracks connections (podman, iptables
  // loaded it), it is the destination itself, as nothing rewrote it.
  let original: { ip: string; port: number } | BpfError
  try {
    original = originalDstOf(clientFd)
  } catch (error) {
    original = error as BpfError
  }
  if (original instanceof Error) {
    t.type(original, BpfError)
    t.match(original.code, /^(ENOENT|ENOPROTOOPT)$/)
    t.type(original.errno, 'number')
    t.match(original.message, /getOriginalDst: getsockopt SO_ORIGINAL_DST on fd \d+/)
  } else {
    t.same(original, { ip: '127.0.0.1', port: address.port }, 'conntrack tracks the connection: its original destination is the one connected to')
  }
  t.end()
})

t.test('a bad fd is an EBADF BpfError naming the call', (t) => {
  if (!requirePrivileged(t, ['addon'])) return
  const error = t.throws(() => socketCookie(987654)) as BpfError
  t.type(error, BpfError)
  t.equal(error.code, 'EBADF')
  t.match(error.message, /getSocketCookie: getsockopt SO_COOKIE on fd 987654/)
  t.end()
})
