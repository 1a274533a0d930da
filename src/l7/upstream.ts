// Upstream connection pools for the HTTP/1.1 engine: per endpoint (and, through the tunnel, per
// source workload) a LIFO list of idle keep-alive connections — raw `net` sockets, or CONNECT
// streams over the pooled HTTP/2 tunnel to the endpoint's node (src/datapath/tunnel.ts) — so
// requests reuse connections instead of paying a connect (or a CONNECT stream) each. What is
// said on a connection is client-h1.ts's; this file only makes, lends and takes back
// connections. LIFO: the most recently used connection is the one least likely to have been
// closed by the endpoint's idle timeout, and the others age out.
//
// A tunnelled pool is keyed by the source pod too: the tunnel connection presents the source
// workload's certificate and the CONNECT stream names the source pod's address, so a kept-alive
// connection must not carry another pod's request.
import net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import type { TunnelPool } from '../datapath/tunnel.ts'
import { routeTo, type Route } from '../datapath/route.ts'
import { isOpen, type BreakerOpen, type CircuitBreaker } from './breaker.ts'
import type { NotHttp2Answer } from './errors.ts'

export interface UpstreamOptions {
  /** This node's name: endpoints elsewhere are reached through the tunnel. */
  readonly node: string
  readonly inboundPort: number
  readonly connectTimeoutMs: number
  readonly tunnels: TunnelPool
  /** Idle keep-alive connections are closed after this long. */
  readonly idleTimeoutMs?: number | undefined
}

export type UpstreamPath = 'direct' | 'tunnel'

/**
 * An error raised before the request left: the connection (or tunnel stream, or HTTP/2 session)
 * could not be made. `notHttp2`: the connection was made, but the endpoint showed it does not
 * speak HTTP/2 (upstream-h2.ts).
 */
export class ConnectFailure extends Error {
  readonly code = 'WEFT_CONNECT_FAILURE'
  readonly notHttp2: NotHttp2Answer | undefined

  constructor(message: string, notHttp2?: NotHttp2Answer) {
    super(message)
    this.notHttp2 = notHttp2
  }
}

/** A new connection refused because the destination's breaker is at `maxConnections`: nothing was sent. */
export class BreakerRefusal extends Error {
  readonly code = 'WEFT_BREAKER_OPEN'
  readonly open: BreakerOpen['open']

  constructor(open: BreakerOpen['open']) {
    super(`circuit breaker open for ${open.destination}: ${open.limit} at its limit of ${open.max}`)
    this.open = open
  }
}

/** The calling pod, as the downstream connection knows it. */
export interface UpstreamSource {
  readonly sourceIp: string
  /** Its SPIFFE ID (the certificate a tunnel presents), undefined when the pod is not a known workload. */
  readonly sourceIdentity: string | undefined
}

/** How requests from `source` reach `endpoint` (src/datapath/route.ts: the one decision L4 and L7 share). */
export function endpointRoute(endpoint: Endpoint, source: UpstreamSource, snapshot: MeshSnapshot, localNode: string, inboundPort: number): Route {
  return routeTo({ ip: endpoint.ip, port: endpoint.port, node: endpoint.node, identity: endpoint.workload?.identity }, { ip: source.sourceIp, identity: source.sourceIdentity }, snapshot, localNode, inboundPort)
}

/**
 * A value decided once per (snapshot, endpoint, source pod) and then looked up per request. The
 * snapshot is part of the key because a new snapshot may keep an unchanged endpoint object while
 * a node's address or the source address's identity changed.
 */
export class EndpointMemo<V> {
  private readonly bySnapshot = new WeakMap<MeshSnapshot, WeakMap<Endpoint, Map<string, V>>>()

  /** The value for this key, made by `make` when there is none or `stale(value)` says so. */
  get(snapshot: MeshSnapshot, endpoint: Endpoint, source: UpstreamSource, make: () => V, stale?: (value: V) => boolean): V {
    let byEndpoint = this.bySnapshot.get(snapshot)
    if (byEndpoint === undefined) { byEndpoint = new WeakMap(); this.bySnapshot.set(snapshot, byEndpoint) }
    let bySource = byEndpoint.get(endpoint)
    if (bySource === undefined) { bySource = new Map(); byEndpoint.set(endpoint, bySource) }
    const key = `${source.sourceIp}|${source.sourceIdentity ?? ''}`
    let value = bySource.get(key)
    if (value === undefined || stale?.(value) === true) { value = make(); bySource.set(key, value) }
    return value
  }
}

/** endpointRoute, decided once per (snapshot, endpoint, source pod). */
export class RouteCache {
  private readonly routes = new EndpointMemo<Route>()
  private readonly localNode: string
  private readonly inboundPort: number

  constructor(localNode: string, inboundPort: number) {
    this.localNode = localNode
    this.inboundPort = inboundPort
  }

  of(endpoint: Endpoint, source: UpstreamSource, snapshot: MeshSnapshot): Route {
    return this.routes.get(snapshot, endpoint, source, () => endpointRoute(endpoint, source, snapshot, this.localNode, this.inboundPort))
  }
}

/** A connection lent by a pool: give it back with `release()` when its exchange is over and it may carry another, else `destroy()` it. */
export interface PooledConnection {
  readonly stream: Duplex
  readonly path: UpstreamPath
  /** Whether it carried an exchange before (a reset on it may be the endpoint closing it idle). */
  readonly reused: boolean
  release(): void
  destroy(): void
}

interface IdleConnection {
  readonly stream: Duplex
  readonly timer: NodeJS.Timeout
  readonly onIdleEnd: () => void
}

export class Pool {
  readonly key: string
  readonly path: UpstreamPath
  readonly idle: IdleConnection[] = []
  readonly open = new Set<Duplex>()
  closed = false
  private readonly connect: (breaker: CircuitBreaker) => Promise<Duplex>
  private readonly idleTimeoutMs: number

  constructor(key: string, path: UpstreamPath, idleTimeoutMs: number, connect: (breaker: CircuitBreaker) => Promise<Duplex>) {
    this.key = key
    this.path = path
    this.idleTimeoutMs = idleTimeoutMs
    this.connect = connect
  }

  /** An idle connection (the newest), else a new one (a breaker `connections` slot for its life). */
  acquire(breaker: CircuitBreaker): PooledConnection | Promise<PooledConnection> {
    for (let idle = this.idle.pop(); idle !== undefined; idle = this.idle.pop()) {
      clearTimeout(idle.timer)
      idle.stream.off('close', idle.onIdleEnd)
      idle.stream.off('end', idle.onIdleEnd)
      idle.stream.off('data', idle.onIdleEnd)
      if (!idle.stream.destroyed && idle.stream.readable && idle.stream.writable) return this.lend(idle.stream, true)
    }
    return this.connect(breaker).then((stream) => {
      this.open.add(stream)
      stream.once('close', () => this.open.delete(stream))
      return this.lend(stream, false)
    })
  }

  private lend(stream: Duplex, reused: boolean): PooledConnection {
    let returned = false
    return {
      stream, path: this.path, reused,
      release: () => {
        if (returned) return
        returned = true
        if (this.closed || stream.destroyed) { stream.destroy(); return }
        // Idle: anything the endpoint says now (a close, stray bytes) ends the connection.
        const onIdleEnd = (): void => { this.drop(stream); stream.destroy() }
        const timer = setTimeout(onIdleEnd, this.idleTimeoutMs)
        timer.unref()
        stream.once('close', onIdleEnd)
        stream.once('end', onIdleEnd)
        stream.once('data', onIdleEnd)
        this.idle.push({ stream, timer, onIdleEnd })
      },
      destroy: () => { returned = true; stream.destroy() },
    }
  }

  private drop(stream: Duplex): void {
    const at = this.idle.findIndex((idle) => idle.stream === stream)
    if (at >= 0) { clearTimeout(this.idle[at]!.timer); this.idle.splice(at, 1) }
  }

  close(): void {
    this.closed = true
    for (const idle of this.idle) clearTimeout(idle.timer)
    this.idle.length = 0
    for (const stream of this.open) stream.destroy()
  }
}

export class UpstreamPools {
  private readonly options: UpstreamOptions
  private readonly pools = new Map<string, Pool>()
  private readonly poolOf = new EndpointMemo<Pool>()

  constructor(options: UpstreamOptions) {
    this.options = options
  }

  /**
   * The pool for requests from `source` to `endpoint` (its `path` says direct or tunnel),
   * remembered per (snapshot, endpoint, source pod), so a request finds it without deciding the
   * route again. `pool.acquire(breaker)` lends a connection: an idle one, or
   * a new one holding a `connections` slot of `breaker` until it closes (a refusal is a
   * BreakerRefusal, a failed connect a ConnectFailure). `idleTimeoutMs` (a DestinationPolicy's
   * connectionPool.idleTimeout) applies when the pool is made here.
   */
  pool(endpoint: Endpoint, source: UpstreamSource, snapshot: MeshSnapshot, idleTimeoutMs?: number): Pool {
    return this.poolOf.get(snapshot, endpoint, source, () => this.poolFor(endpoint, source, snapshot, idleTimeoutMs), (pool) => pool.closed)
  }

  private poolFor(endpoint: Endpoint, source: UpstreamSource, snapshot: MeshSnapshot, idleTimeoutMs?: number): Pool {
    const route = endpointRoute(endpoint, source, snapshot, this.options.node, this.options.inboundPort)
    const { key, path } = route
    const existing = this.pools.get(key)
    if (existing) return existing
    const idle = idleTimeoutMs ?? this.options.idleTimeoutMs ?? 30_000
    let pool: Pool
    if (route.path === 'tunnel') {
      const tunnels = this.options.tunnels
      const target = route.tunnel
      const unknownIdentity = route.unknownIdentity
      pool = new Pool(key, path, idle, async (breaker) => {
        if (target === undefined) throw new ConnectFailure(unknownIdentity ?? 'no tunnel')
        const slot = connectionSlot(breaker)
        if (slot instanceof BreakerRefusal) throw slot
        try {
          const stream = await tunnels.open(target)
          stream.once('close', slot)
          return stream
        } catch (err) {
          slot()
          throw new ConnectFailure((err as Error).message)
        }
      })
    } else {
      const connectTimeoutMs = this.options.connectTimeoutMs
      pool = new Pool(key, path, idle, (breaker) => new Promise<Duplex>((resolve, reject) => {
        const slot = connectionSlot(breaker)
        if (slot instanceof BreakerRefusal) { reject(slot); return }
        const socket = net.connect({ host: endpoint.ip, port: endpoint.port, noDelay: true })
        // An endpoint that never answers the SYN must not hold the request until the per-try timeout, or forever without one.
        const timer = setTimeout(() => socket.destroy(new ConnectFailure(`connect to ${endpoint.ip}:${endpoint.port} timed out after ${connectTimeoutMs} ms`)), connectTimeoutMs)
        const failed = (err: NodeJS.ErrnoException): void => {
          reject(err instanceof ConnectFailure ? err : new ConnectFailure(`cannot connect to ${endpoint.ip}:${endpoint.port}: ${err.code ?? err.message}`))
        }
        socket.once('error', failed)
        socket.once('connect', () => { clearTimeout(timer); socket.off('error', failed); resolve(socket) })
        socket.once('close', () => { clearTimeout(timer); slot() })
      }))
    }
    this.pools.set(key, pool)
    return pool
  }

  /** Closes the pools of endpoints that are gone from `snapshot` (called when a snapshot applies). */
  prune(snapshot: MeshSnapshot): void {
    const live = new Set<string>()
    for (const target of snapshot.services.values()) for (const endpoint of target.endpoints) live.add(`${endpoint.ip}:${endpoint.port}`)
    for (const [key, pool] of this.pools) {
      if (!live.has(key.split('|')[0]!)) {
        pool.close()
        this.pools.delete(key)
      }
    }
  }

  close(): void {
    for (const pool of this.pools.values()) pool.close()
    this.pools.clear()
  }
}

/** Takes a `connections` slot from the destination's breaker: the release, or the refusal. */
function connectionSlot(breaker: CircuitBreaker): (() => void) | BreakerRefusal {
  const slot = breaker.tryAcquire('connections')
  return isOpen(slot) ? new BreakerRefusal(slot.open) : slot
}
