// Small loopback fixtures shared by the datapath tests.
import net, { type Socket } from 'node:net'
import { once } from 'node:events'
import type { Test } from 'tap'

/** A TCP server on 127.0.0.1 (half-open allowed) with a per-connection handler; closed, with its connections, in teardown. */
export async function tcpServer(t: Test, onConnection: (s: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>()
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    onConnection(s)
  })
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  t.teardown(() => { srv.close(); for (const s of sockets) s.destroy() })
  return (srv.address() as net.AddressInfo).port
}
