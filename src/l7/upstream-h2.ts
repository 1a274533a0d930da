// Upstream HTTP/2 sessions for the L7 proxy (h2c with prior knowledge, and gRPC over it): the
// HTTP/2 counterpart of upstream.ts. One `ClientHttp2Session` carries many requests at once, so
// the pool is a short list of sessions per key, not a list of connections:
//   - direct: key `ip:port` — a TCP connection to a pod on this node;
//   - tunnel: key `ip:port|node address|source workload` — the session runs inside one CONNECT
//     stream of the node-to-node tunnel (src/datapath/tunnel.ts); like upstream.ts, keyed by
//     source workload because the CONNECT stream names the source and a shared session would
//     carry another workload's requests under that name.
// A session is used while it has room under the peer's SETTINGS_MAX_CONCURRENT_STREAMS; when every
// session of a key is full, another one is opened (up to MAX_SESSIONS_PER_KEY; past that the
// least busy one takes the stream and nghttp2 queues it until a slot frees). A session that gets
// GOAWAY, errors or closes leaves the pool at once (its streams in flight finish or fail on their
// own); the next request makes a new one. A session without streams for idleTimeoutMs is closed.
//
// A session counts as made only once the peer's first SETTINGS frame arrived (within
// connectTimeoutMs): until then nothing of the request has been sent, so a failure is a
// `ConnectFailure` — safe to retry elsewhere — and the concurrency limit is known. When the
// connection was made but the peer answered the preface with something else than HTTP/2 frames
// (nghttp2's protocol error: an HTTP/1.1 server's 400), or closed or reset it, the failure says
// the endpoint does not speak HTTP/2 (`notHttp2`), so the client is told that rather than
// "cannot connect".
//
// Over a tunnel stream, the session's socket is the CONNECT stream wrapped by Node in a
// JSStreamSocket, which writes Buffers only: the string-chunk garbling of Http2Stream's batched
// `_writev` seen with the HTTP/1 client (asSocketLike in upstream.ts) does not arise. Tested with
// 5 MB each way (test/l7-upstream-h2.test.ts).
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import net from 'node:net'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import type { NotHttp2Answer } from './errors.ts'
import type { Route } from '../datapath/route.ts'
import { ConnectFailure, RouteCache, type UpstreamOptions, type UpstreamPath, type UpstreamSource } from './upstream.ts'

/**
 * Session errors before the peer's first SETTINGS, on a made connection, that say it does not
 * speak HTTP/2: nghttp2's protocol error (its first bytes were not a SETTINGS frame), a reset.
 */
const NOT_HTTP2_ERRORS: Readonly<Record<string, NotHttp2Answer>> = { ERR_HTTP2_ERROR: 'answered', ECONNRESET: 'reset' }

/** Sessions per key before new streams queue on the least busy one instead. */
export const MAX_SESSIONS_PER_KEY = 16

/** Windows larger than HTTP/2's 64 KiB default, so one stream is not starved on bulk bodies. */
const STREAM_WINDOW = 1 << 20
const SESSION_WINDOW = 16 << 20
const sessionSettings: http2.Settings = { enablePush: false, initialWindowSize: STREAM_WINDOW }

export interface H2Upstream {
  readonly stream: ClientHttp2Stream
  readonly path: UpstreamPath
}

export interface H2RequestOptions {
  /** End the request with its headers (no body); default false. */
  readonly endStream?: boolean | undefined
  /** The idle timeout of a session opened for this request (a DestinationPolicy's connectionPool.idleTimeout); default the pools' own. */
  readonly idleTimeoutMs?: number | undefined
}

/** One session of the pool, as `sessions()` reports it (for tests and the admin endpoint). */
export interface H2SessionInfo {
  readonly key: string
  readonly path: UpstreamPath
  readonly activeStreams: number
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS (Infinity when it sets none). */
  readonly maxConcurrentStreams: number
}

interface PooledSession {
  readonly key: string
  readonly path: UpstreamPath
  /** Undefined until the tunnel stream is open (tunnel path). */
  session: ClientHttp2Session | undefined
  /** Settles when the first SETTINGS arrived (resolves) or the session could not be made (rejects). */
  readonly ready: Promise<void>
  isReady: boolean
  /** Rejects `ready` with a ConnectFailure if it has not settled; no-op once ready. */
  abandon: (message: string, notHttp2?: NotHttp2Answer) => void
  /** GOAWAY, error or close: takes no new streams. */
  gone: boolean
  activeStreams: number
  idleTimer: NodeJS.Timeout | undefined
  /** Closed after this long without streams (0: never). */
  readonly idleTimeoutMs: number
}


export class H2UpstreamPools {
  private readonly options: UpstreamOptions
  private readonly pools = new Map<string, PooledSession[]>()
  private closed = false
  private readonly routes: RouteCache

  constructor(options: UpstreamOptions) {
    this.options = options
    this.routes = new RouteCache(options.node, options.inboundPort)
  }

  /**
   * Opens a stream for a request from `source` (a pod) to `endpoint` on a pooled session (made
   * when needed). Rejects with `ConnectFailure` when no session could be made: nothing was sent.
   * Once resolved, the caller owns the stream (attach an 'error' listener; a REFUSED_STREAM reset
   * also means the peer did not process the request).
   */
  async request(endpoint: Endpoint, source: UpstreamSource, snapshot: MeshSnapshot, headers: http2.OutgoingHttpHeaders, options: H2RequestOptions = {}): Promise<H2Upstream> {
    const route = this.routes.of(endpoint, source, snapshot)
    // Two tries: a session can turn unusable between being picked and `request()` (a GOAWAY
    // processed in between makes `request()` throw); that request never left either.
    let lastError: Error | undefined
    for (let attempt = 0; attempt < 2; attempt++) {
      const pooled = await this.acquire(route, endpoint, source, options.idleTimeoutMs)
      const session = pooled.session!
      let stream: ClientHttp2Stream
      try {
        stream = session.request(headers, { endStream: options.endStream ?? false })
      } catch (err) {
        this.release(pooled)
        // Bad headers are the caller's problem and the session is fine: not a connect failure.
        if (!session.closed && !session.destroyed) throw err
        lastError = err as Error
        this.forget(pooled)
        continue
      }
      this.track(pooled, stream)
      return { stream, path: route.path }
    }
    throw new ConnectFailure(`HTTP/2 to ${endpoint.ip}:${endpoint.port}: ${lastError?.message ?? 'no usable session'}`)
  }

  /** Every pooled session (being made ones included). */
  sessions(): H2SessionInfo[] {
    const infos: H2SessionInfo[] = []
    for (const list of this.pools.values()) {
      for (const pooled of list) infos.push({ key: pooled.key, path: pooled.path, activeStreams: pooled.activeStreams, maxConcurrentStreams: limitOf(pooled) })
    }
    return infos
  }

  /** Closes the sessions of endpoints that are gone from `snapshot` (called when a snapshot applies). */
  prune(snapshot: MeshSnapshot): void {
    const live = new Set<string>()
    for (const target of snapshot.services.values()) for (const endpoint of target.endpoints) live.add(`${endpoint.ip}:${endpoint.port}`)
    for (const [key, list] of this.pools) {
      if (live.has(key.split('|')[0]!)) continue
      this.pools.delete(key)
      for (const pooled of list) destroy(pooled)
    }
  }

  close(): void {
    this.closed = true
    for (const list of this.pools.values()) for (const pooled of list) destroy(pooled)
    this.pools.clear()
  }

  // The same keying as UpstreamPools.for in upstream.ts.
  /**
   * A ready session of `route` with room for one more stream, that stream already counted: the
   * count must go up before anyone else looks (the caller's `request()` runs a microtask later).
   */
  private async acquire(route: Route, endpoint: Endpoint, source: UpstreamSource, idleTimeoutMs: number | undefined): Promise<PooledSession> {
    for (;;) {
      if (this.closed) throw new ConnectFailure(`HTTP/2 upstream pools are closed; not connecting to ${endpoint.ip}:${endpoint.port}`)
      const list = this.pools.get(route.key) ?? []
      let making: PooledSession | undefined
      for (const pooled of list) {
        if (pooled.gone) continue
        if (!pooled.isReady) { making ??= pooled; continue }
        if (pooled.activeStreams < limitOf(pooled)) return reserve(pooled)
      }
      if (making) {
        // Wait for the session being made rather than making one each; its failure is ours too
        // (same endpoint, same moment).
        await making.ready
        continue
      }
      const usable = list.filter((pooled) => !pooled.gone)
      if (usable.length >= MAX_SESSIONS_PER_KEY) {
        return reserve(usable.reduce((a, b) => (b.activeStreams < a.activeStreams ? b : a)))
      }
      const pooled = this.open(route, endpoint, idleTimeoutMs)
      await pooled.ready
      // The one who made it takes a stream on it even if waiters filled it meanwhile: nghttp2
      // queues the stream until a slot frees, and no loop of new sessions can start.
      if (!pooled.gone) return reserve(pooled)
    }
  }

  private open(route: Route, endpoint: Endpoint, idleTimeoutMs: number | undefined): PooledSession {
    const authority = `${endpoint.ip}:${endpoint.port}`
    const connectTimeoutMs = this.options.connectTimeoutMs
    let settled = false
    let settle: { resolve: () => void; reject: (err: Error) => void } = { resolve: () => {}, reject: () => {} }
    const ready = new Promise<void>((resolve, reject) => { settle = { resolve, reject } })
    ready.catch(() => {}) // waiters observe it; an unobserved rejection must not crash the process
    const pooled: PooledSession = {
      key: route.key, path: route.path, session: undefined, ready, isReady: false, gone: false, activeStreams: 0, idleTimer: undefined,
      idleTimeoutMs: idleTimeoutMs ?? this.options.idleTimeoutMs ?? 30_000,
      abandon: (message, notHttp2) => {
        if (settled) return
        settled = true
        clearTimeout(deadline)
        this.forget(pooled)
        pooled.session?.destroy()
        settle.reject(new ConnectFailure(message, notHttp2))
      },
    }
    const list = this.pools.get(route.key)
    if (list) list.push(pooled)
    else this.pools.set(route.key, [pooled])
    const fail = pooled.abandon
    // One deadline for the whole making: TCP connect (or tunnel stream) and the peer's SETTINGS.
    const deadline = setTimeout(() => fail(`HTTP/2 to ${authority}${route.path === 'tunnel' ? ` through ${route.peerAddress}` : ''}: no session within ${connectTimeoutMs} ms`), connectTimeoutMs)

    // Whether the connection to the endpoint is made (the tunnel stream: once open, the endpoint's node has connected to it).
    let connected = route.path === 'tunnel'
    const attach = (session: ClientHttp2Session): void => {
      pooled.session = session
      if (pooled.gone) { session.destroy(); return } // closed or pruned while the tunnel stream opened
      session.on('connect', () => session.setLocalWindowSize(SESSION_WINDOW))
      session.once('remoteSettings', () => {
        if (settled) return
        settled = true
        clearTimeout(deadline)
        pooled.isReady = true
        settle.resolve()
      })
      session.on('error', (err: NodeJS.ErrnoException) => { fail(`HTTP/2 to ${authority}: ${err.message}`, connected ? NOT_HTTP2_ERRORS[err.code ?? ''] : undefined); this.forget(pooled) })
      session.on('goaway', () => { fail(`HTTP/2 to ${authority}: GOAWAY before the session was ready`); this.forget(pooled) })
      session.on('close', () => { fail(`HTTP/2 to ${authority}: the session closed before it was ready`, connected ? 'closed' : undefined); this.forget(pooled) })
    }

    if (route.path === 'direct') {
      attach(http2.connect(`http://${authority}`, {
        settings: sessionSettings,
        createConnection: () => net.connect({ host: endpoint.ip, port: endpoint.port, noDelay: true }).once('connect', () => { connected = true }),
      }))
    } else {
      const target = route.tunnel
      if (target === undefined) { process.nextTick(fail, route.unknownIdentity ?? 'no tunnel'); return pooled }
      this.options.tunnels.open(target).then(
        (tunnelStream) => {
          if (pooled.gone) { tunnelStream.close(http2.constants.NGHTTP2_CANCEL); return }
          attach(http2.connect(`http://${authority}`, { settings: sessionSettings, createConnection: () => tunnelStream }))
        },
        (err: unknown) => fail((err as Error).message),
      )
    }
    return pooled
  }

  /** Counts the stream out when it closes (it was counted in by `reserve`). */
  private track(pooled: PooledSession, stream: ClientHttp2Stream): void {
    stream.once('close', () => this.release(pooled))
  }

  /** One stream less; a session left without streams is closed after idleTimeoutMs. */
  private release(pooled: PooledSession): void {
    pooled.activeStreams--
    if (pooled.activeStreams > 0 || pooled.gone) return
    const idleTimeoutMs = pooled.idleTimeoutMs
    if (idleTimeoutMs <= 0) return // as for http.Agent's timeout: 0 keeps sessions open
    pooled.idleTimer = setTimeout(() => {
      if (pooled.activeStreams > 0) return
      this.forget(pooled)
      pooled.session?.close()
    }, idleTimeoutMs)
    pooled.idleTimer.unref()
  }

  /** Takes a session out of the pool (it finishes what it carries on its own). */
  private forget(pooled: PooledSession): void {
    pooled.gone = true
    if (pooled.idleTimer) { clearTimeout(pooled.idleTimer); pooled.idleTimer = undefined }
    const list = this.pools.get(pooled.key)
    if (!list) return
    const index = list.indexOf(pooled)
    if (index >= 0) list.splice(index, 1)
    if (list.length === 0) this.pools.delete(pooled.key)
  }
}

function reserve(pooled: PooledSession): PooledSession {
  pooled.activeStreams++
  if (pooled.idleTimer) { clearTimeout(pooled.idleTimer); pooled.idleTimer = undefined }
  return pooled
}

function limitOf(pooled: PooledSession): number {
  return pooled.session?.remoteSettings.maxConcurrentStreams ?? Infinity
}

function destroy(pooled: PooledSession): void {
  pooled.abandon(`HTTP/2 session to ${pooled.key} closed by the pool before it was ready`)
  pooled.gone = true
  if (pooled.idleTimer) clearTimeout(pooled.idleTimer)
  pooled.session?.destroy()
}
