// A TCP relay between one NATS client and a real nats-server that can lose messages on the wire:
// while `drop` says so, it removes whole MSG/HMSG frames from the server-to-client stream (the
// protocol stays intact, the client just never sees them), as a slow-consumer cut or a lossy
// path would. Everything else passes unchanged. Loopback only.
import { createServer, connect, type Server, type Socket } from 'node:net'

export type NatsRelay = {
  url: string
  /** Decides per message (by subject) whether it is lost; default: nothing is. */
  drop: (subject: string) => boolean
  /** Messages removed so far. */
  readonly dropped: number
  close(): Promise<void>
}

const CRLF = Buffer.from('\r\n')

/** Splits the server's byte stream into protocol frames and forwards those `keep` accepts. */
function frameFilter(keep: (subject: string) => boolean, onDrop: () => void, forward: (chunk: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0)
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    let offset = 0
    for (;;) {
      const lineEnd = pending.indexOf(CRLF, offset)
      if (lineEnd < 0) break
      const line = pending.subarray(offset, lineEnd).toString('latin1')
      let frameEnd = lineEnd + 2
      let subject: string | undefined
      if (line.startsWith('MSG ') || line.startsWith('HMSG ')) {
        // MSG <subject> <sid> [reply] <size> / HMSG <subject> <sid> [reply] <hdr size> <total size>
        const fields = line.split(' ')
        subject = fields[1]
        frameEnd += Number(fields.at(-1)) + 2
        if (frameEnd > pending.length) break
      }
      if (subject === undefined || keep(subject)) forward(pending.subarray(offset, frameEnd))
      else onDrop()
      offset = frameEnd
    }
    pending = pending.subarray(offset)
  }
}

export async function startNatsRelay(serverUrl: string): Promise<NatsRelay> {
  const target = new URL(serverUrl)
  const sockets = new Set<Socket>()
  let dropped = 0
  const relay: NatsRelay = {
    url: '',
    drop: () => false,
    get dropped() { return dropped },
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  const server: Server = createServer((client) => {
    const upstream = connect({ host: target.hostname, port: Number(target.port) })
    sockets.add(client)
    sockets.add(upstream)
    const filter = frameFilter((subject) => !relay.drop(subject), () => dropped++, (frame) => client.write(frame))
    upstream.on('data', filter)
    client.pipe(upstream)
    const end = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('close', end).on('error', end)
    upstream.on('close', end).on('error', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address !== 'object') throw new Error('relay: no address')
  relay.url = `nats://127.0.0.1:${address.port}`
  return relay
}
