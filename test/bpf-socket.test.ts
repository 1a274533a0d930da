// The socket option helpers on real sockets: cookies, marks, transparent, reuseport,
// SO_ORIGINAL_DST, and the shape of their errors.
import { connect, createServer, type Socket } from 'node:net'
import t from 'tap'

import { BpfError, originalDstOf, setIpTransparent, setReusePort, setSocketMark, socketCookie, socketFd } from '../src/bpf/index.ts'
import { requirePrivileged } from './helpers/privileged.ts'

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

  t.doesNotThrow(() => setSocketMark(clientFd, 0x77))
  t.doesNotThrow(() => setIpTransparent(serverFd, true))
  t.doesNotThrow(() => setReusePort(serverFd, true))

  // Not NAT'ed: conntrack has no original destination for it (ENOPROTOOPT without conntrack).
  const error = t.throws(() => originalDstOf(clientFd)) as BpfError
  t.type(error, BpfError)
  t.match(error.code, /^(ENOENT|ENOPROTOOPT)$/)
  t.type(error.errno, 'number')
  t.match(error.message, /getOriginalDst: getsockopt SO_ORIGINAL_DST on fd \d+/)
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
