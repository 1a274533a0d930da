// The node-to-node tunnel (the HBONE idea): one pooled HTTP/2 connection per peer node, one
// CONNECT stream per proxied TCP connection. The stream names the destination pod in
// `:authority` (ip:port) and the source workload in `weft-source-workload`.
// Plaintext for now; mTLS with SPIFFE identities replaces the transport later.
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import type { Logger } from '../telemetry/log.ts'

export const SOURCE_WORKLOAD_HEADER = 'weft-source-workload'
export const ERROR_HEADER = 'weft-error'

/** Larger windows than HTTP/2's 64 KiB default, so a single stream is not starved on bulk transfers. */
export const TUNNEL_STREAM_WINDOW = 1 << 20
export const TUNNEL_SESSION_WINDOW = 16 << 20
export const tunnelSettings: http2.Settings = { initialWindowSize: TUNNEL_STREAM_WINDOW, enablePush: false }

export class TunnelError extends Error {
  readonly reason: string
  constructor(reason: string, message: string) {
    super(message)
    this.reason = reason
  }
}

export interface TunnelTarget { peerAddress: string; peerPort: number; destination: string; sourceWorkload: string }

export class TunnelPool {
  private readonly sessions = new Map<string, ClientHttp2Session>()
  private readonly log: Logger
  private readonly connectTimeoutMs: number

  constructor(log: Logger, connectTimeoutMs: number) {
    this.log = log
    this.connectTimeoutMs = connectTimeoutMs
  }

  private session(peer: string): ClientHttp2Session {
    const existing = this.sessions.get(peer)
    if (existing && !existing.closed && !existing.destroyed) return existing
    const session = http2.connect(`http://${peer}`, { settings: tunnelSettings })
    session.on('connect', () => {
      session.setLocalWindowSize(TUNNEL_SESSION_WINDOW)
      this.log.debug('tunnel connected', { peer })
    })
    const forget = (): void => { if (this.sessions.get(peer) === session) this.sessions.delete(peer) }
    session.on('error', (err) => { this.log.warn('tunnel session error', { peer, error: err }); forget() })
    session.on('goaway', forget)
    session.on('close', forget)
    this.sessions.set(peer, session)
    return session
  }

  /** Opens a CONNECT stream; resolves once the far node has connected to the destination. */
  open(target: TunnelTarget): Promise<ClientHttp2Stream> {
    const peer = `${target.peerAddress}:${target.peerPort}`
    return new Promise((resolve, reject) => {
      let stream: ClientHttp2Stream
      try {
        stream = this.session(peer).request({
          ':method': 'CONNECT',
          ':authority': target.destination,
          [SOURCE_WORKLOAD_HEADER]: target.sourceWorkload,
        }, { endStream: false })
      } catch (err) {
        reject(new TunnelError('tunnel_unavailable', `tunnel to ${peer}: ${(err as Error).message}`))
        return
      }
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL)
        reject(new TunnelError('connect_timeout', `tunnel to ${peer}: no answer for ${target.destination} within ${this.connectTimeoutMs} ms`))
      }, this.connectTimeoutMs)
      const failed = (err: Error): void => {
        clearTimeout(timer)
        reject(new TunnelError('tunnel_unavailable', `tunnel to ${peer}: ${err.message}`))
      }
      stream.once('error', failed)
      stream.once('response', (headers) => {
        clearTimeout(timer)
        stream.off('error', failed)
        const status = Number(headers[':status'])
        if (status === 200) { resolve(stream); return }
        stream.close(http2.constants.NGHTTP2_CANCEL)
        const why = headers[ERROR_HEADER]
        reject(new TunnelError('upstream_refused', `tunnel to ${peer}: ${target.destination} answered ${status}${why ? ` (${String(why)})` : ''}`))
      })
    })
  }

  /** Peers with an open tunnel connection (one per peer, however many streams). */
  get peers(): string[] { return [...this.sessions.keys()] }

  /** Closes every tunnel at once; callers drain their connections first. */
  close(): void {
    for (const session of this.sessions.values()) session.destroy()
    this.sessions.clear()
  }
}
