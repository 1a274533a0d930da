// The node-to-node tunnel (HBONE-shaped): HTTP/2 over mutual TLS 1.3, one CONNECT stream per
// proxied TCP connection, `:authority` naming the destination pod (ip:port).
//
// Both ends prove a *workload* identity, not just "some node": the client presents the source
// workload's X.509-SVID and checks that the server holds the destination workload's; the server
// asks for the destination's certificate by SNI (a hash of the identity, see `sniFor`), checks the
// client's chain and trust domain, and that the connecting node hosts that identity (inbound.ts).
// So a tunnel connection carries one (source identity, destination identity) pair, and the pool
// keys connections by (source identity, destination identity, peer node), as ztunnel does.
// The source pod's address rides in `weft-source-address`; the far side accepts it only when that
// pod has the certificate's identity and lives on the connecting node.
import { createHash } from 'node:crypto'
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import tls, { type SecureContext } from 'node:tls'
import { checkSpiffeServer } from '../identity/spiffe.ts'
import type { Logger } from '../telemetry/log.ts'

export const SOURCE_ADDRESS_HEADER = 'weft-source-address'
export const ERROR_HEADER = 'weft-error'
/** The tunnel's application protocol: HTTP/2 (CONNECT streams) over TLS. */
export const TUNNEL_ALPN = 'h2'

/** Larger windows than HTTP/2's 64 KiB default, so a single stream is not starved on bulk transfers. */
export const TUNNEL_STREAM_WINDOW = 1 << 20
export const TUNNEL_SESSION_WINDOW = 16 << 20
export const tunnelSettings: http2.Settings = { initialWindowSize: TUNNEL_STREAM_WINDOW, enablePush: false }

/**
 * Where the tunnel's certificates come from (src/identity's NodeIdentities on a node): the TLS
 * context presenting `identity`'s SVID (key, chain, and the trust bundle as `ca`), or undefined
 * while this node holds no certificate for it.
 */
export interface TunnelCredentials {
  secureContext(identity: string): SecureContext | undefined
}

/**
 * The context for `identity`, waiting up to `timeoutMs` for a certificate a node has just asked
 * its CA for (a pod that just started); undefined when none came.
 */
export async function secureContextWithin(credentials: TunnelCredentials, identity: string, timeoutMs: number): Promise<SecureContext | undefined> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const context = credentials.secureContext(identity)
    if (context || Date.now() >= deadline) return context
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/**
 * The TLS server name a client asks for to get `identity`'s certificate: a DNS-safe hash, so the
 * ClientHello (sent in the clear) does not name the workload, and any trust domain or service
 * account name fits in one label.
 */
export function sniFor(identity: string): string {
  return `${createHash('sha256').update(identity).digest('hex').slice(0, 40)}.svid.weft`
}

export class TunnelError extends Error {
  readonly reason: string
  constructor(reason: string, message: string) {
    super(message)
    this.reason = reason
  }
}

export interface TunnelSource {
  /** The source pod's address (sent to the far side, checked there against the certificate). */
  readonly ip: string
  /** Its SPIFFE ID: the certificate this side presents. */
  readonly identity: string
}

export interface TunnelTarget {
  peerAddress: string
  peerPort: number
  /** The destination pod, `ip:port`. */
  destination: string
  /** The destination pod's SPIFFE ID: the server must prove it. */
  destinationIdentity: string
  source: TunnelSource
}

export class TunnelPool {
  private readonly sessions = new Map<string, ClientHttp2Session>()
  private readonly log: Logger
  private readonly connectTimeoutMs: number
  private readonly credentials: TunnelCredentials

  constructor(log: Logger, connectTimeoutMs: number, credentials: TunnelCredentials) {
    this.log = log
    this.connectTimeoutMs = connectTimeoutMs
    this.credentials = credentials
  }

  private async session(target: TunnelTarget): Promise<ClientHttp2Session> {
    const peer = `${target.peerAddress}:${target.peerPort}`
    const key = `${target.source.identity}|${target.destinationIdentity}|${peer}`
    const existing = this.sessions.get(key)
    if (existing && !existing.closed && !existing.destroyed) return existing
    const secureContext = await secureContextWithin(this.credentials, target.source.identity, this.connectTimeoutMs)
    const raced = this.sessions.get(key) // another open made it while this one waited
    if (raced && !raced.closed && !raced.destroyed) return raced
    if (!secureContext) {
      throw new TunnelError('no_certificate', `tunnel to ${peer}: this node holds no certificate for ${target.source.identity} yet (is weft control, the CA, reachable?)`)
    }
    const expected = target.destinationIdentity
    const session = http2.connect(`https://${peer}`, {
      settings: tunnelSettings,
      createConnection: () => tls.connect({
        host: target.peerAddress, port: target.peerPort, servername: sniFor(expected),
        secureContext, ALPNProtocols: [TUNNEL_ALPN], minVersion: 'TLSv1.3',
        // The chain is checked against the trust bundle first; then the server must be the destination workload.
        checkServerIdentity: checkSpiffeServer(expected),
      }),
    })
    session.on('connect', () => {
      session.setLocalWindowSize(TUNNEL_SESSION_WINDOW)
      this.log.debug('tunnel connected', { peer, source: target.source.identity, destination: expected })
    })
    const forget = (): void => { if (this.sessions.get(key) === session) this.sessions.delete(key) }
    session.on('error', (err) => { this.log.warn('tunnel session error', { peer, source: target.source.identity, destination: expected, error: err }); forget() })
    session.on('goaway', forget)
    session.on('close', forget)
    this.sessions.set(key, session)
    return session
  }

  /** Opens a CONNECT stream; resolves once the far node has connected to the destination. */
  async open(target: TunnelTarget): Promise<ClientHttp2Stream> {
    const peer = `${target.peerAddress}:${target.peerPort}`
    let session: ClientHttp2Session
    try {
      session = await this.session(target)
    } catch (err) {
      throw err instanceof TunnelError ? err : new TunnelError('tunnel_unavailable', `tunnel to ${peer}: ${(err as Error).message}`)
    }
    return await new Promise((resolve, reject) => {
      let stream: ClientHttp2Stream
      try {
        stream = session.request({
          ':method': 'CONNECT',
          ':authority': target.destination,
          [SOURCE_ADDRESS_HEADER]: target.source.ip,
        }, { endStream: false })
      } catch (err) {
        reject(err instanceof TunnelError ? err : new TunnelError('tunnel_unavailable', `tunnel to ${peer}: ${(err as Error).message}`))
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
        reject(new TunnelError(status === 403 ? 'denied' : 'upstream_refused', `tunnel to ${peer}: ${target.destination} answered ${status}${why ? ` (${String(why)})` : ''}`))
      })
    })
  }

  /** Open tunnel connections: one per (source identity, destination identity, peer), however many streams. */
  get connections(): string[] { return [...this.sessions.keys()] }

  /** Closes every tunnel at once; callers drain their connections first. */
  close(): void {
    for (const session of this.sessions.values()) session.destroy()
    this.sessions.clear()
  }
}
