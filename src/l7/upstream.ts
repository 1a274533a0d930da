// Upstream connection pools for the HTTP/1.1 proxy: one keep-alive `http.Agent` per endpoint
// (and, through the tunnel, per source workload), so requests reuse connections instead of
// paying a connect (or a CONNECT stream) each.
//
// Why node:http's Agent and not undici: the request and response objects are the same ones the
// downstream `http.Server` gives us (the same parser, header handling and streams on both
// sides), it needs no dependency, and its `createConnection(options, callback)` may answer
// asynchronously with any Duplex — exactly what the tunnel gives: a CONNECT stream over the
// pooled HTTP/2 connection to the endpoint's node (src/datapath/tunnel.ts). undici's connector
// expects a net/tls socket, and its pools would duplicate what the tunnel already pools.
//
// A tunnelled pool is keyed by the source pod too: the tunnel connection presents the source
// workload's certificate and the CONNECT stream names the source pod's address, so a kept-alive
// connection must not carry another pod's request.
import http from 'node:http'
import net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import type { TunnelPool, TunnelTarget } from '../datapath/tunnel.ts'
import { isOpen, type BreakerOpen, type CircuitBreaker, type Release } from './breaker.ts'
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

export interface Upstream {
  readonly agent: http.Agent
  readonly path: UpstreamPath
}

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

/**
 * The request option that carries the destination's breaker to `createConnection` (the Agent
 * passes request options through), so each new connection takes a `connections` slot, given
 * back when it closes.
 */
export const BREAKER_OPTION = 'weftBreaker'

/** Takes a connection slot from the breaker in `options` (if any); the release, or the refusal. */
function connectionSlot(options: unknown): Release | BreakerRefusal {
  const breaker = (options as Record<string, unknown>)[BREAKER_OPTION] as CircuitBreaker | undefined
  if (!breaker) return () => {}
  const slot = breaker.tryAcquire('connections')
  return isOpen(slot) ? new BreakerRefusal(slot.open) : slot
}

/** The calling pod, as the downstream connection knows it. */
export interface UpstreamSource {
  readonly sourceIp: string
  /** Its SPIFFE ID (the certificate a tunnel presents), undefined when the pod is not a known workload. */
  readonly sourceIdentity: string | undefined
}

/** How requests from a source pod reach `endpoint`, and the key of their pool (shared with upstream-h2.ts). */
export interface UpstreamRoute {
  /** `ip:port` direct; `ip:port|node address|source ip` through the tunnel. */
  readonly key: string
  readonly path: UpstreamPath
  /** The endpoint's node address, through the tunnel. */
  readonly remoteAddress: string | undefined
}

export function upstreamRoute(endpoint: Endpoint, source: UpstreamSource, snapshot: MeshSnapshot, localNode: string): UpstreamRoute {
  const remoteNode = endpoint.node !== undefined && endpoint.node !== localNode ? snapshot.nodes.get(endpoint.node) : undefined
  return remoteNode
    ? { key: `${endpoint.ip}:${endpoint.port}|${remoteNode.address}|${source.sourceIp}`, path: 'tunnel', remoteAddress: remoteNode.address }
    : { key: `${endpoint.ip}:${endpoint.port}`, path: 'direct', remoteAddress: undefined }
}

/**
 * The tunnel stream for requests from `source` to `endpoint` on `peerAddress`, or why there can be
 * none: both ends need an identity (the source pod's certificate, the destination pod's to check).
 */
export function tunnelTarget(endpoint: Endpoint, source: UpstreamSource, peerAddress: string, peerPort: number): TunnelTarget | ConnectFailure {
  const destination = `${endpoint.ip}:${endpoint.port}`
  if (source.sourceIdentity === undefined) return new ConnectFailure(`cannot open a tunnel to ${destination} for ${source.sourceIp}: the source pod is not a known workload, so it has no identity`)
  const destinationIdentity = endpoint.workload?.identity
  if (destinationIdentity === undefined) return new ConnectFailure(`cannot open a tunnel to ${destination}: the endpoint is not a known pod, so its identity cannot be checked`)
  return { peerAddress, peerPort, destination, destinationIdentity, source: { ip: source.sourceIp, identity: source.sourceIdentity } }
}

export class UpstreamPools {
  private readonly options: UpstreamOptions
  private readonly agents = new Map<string, Upstream>()

  constructor(options: UpstreamOptions) {
    this.options = options
  }

  /**
   * The pool for requests from `source` to `endpoint`; `idleTimeoutMs` (a DestinationPolicy's
   * connectionPool.idleTimeout) applies when the pool is made here.
   */
  for(endpoint: Endpoint, source: UpstreamSource, snapshot: MeshSnapshot, idleTimeoutMs?: number): Upstream {
    const { key, remoteAddress } = upstreamRoute(endpoint, source, snapshot, this.options.node)
    const existing = this.agents.get(key)
    if (existing) return existing
    const idle = idleTimeoutMs ?? this.options.idleTimeoutMs ?? 30_000
    let upstream: Upstream
    if (remoteAddress !== undefined) {
      const tunnels = this.options.tunnels
      const target = tunnelTarget(endpoint, source, remoteAddress, this.options.inboundPort)
      const agent = new http.Agent({ keepAlive: true, timeout: idle, scheduling: 'lifo' })
      // Asynchronous createConnection: return nothing and answer through the callback.
      agent.createConnection = ((options: unknown, callback: (err: Error | null, stream?: Duplex) => void) => {
        if (target instanceof ConnectFailure) { process.nextTick(callback, target); return undefined }
        const slot = connectionSlot(options)
        if (slot instanceof BreakerRefusal) { process.nextTick(callback, slot); return undefined }
        tunnels.open(target).then(
          (stream) => { stream.once('close', slot); callback(null, asSocketLike(stream)) },
          (err: unknown) => { slot(); callback(new ConnectFailure((err as Error).message)) },
        )
        return undefined
      }) as unknown as http.Agent['createConnection']
      upstream = { agent, path: 'tunnel' }
    } else {
      const agent = new http.Agent({ keepAlive: true, timeout: idle, scheduling: 'lifo' })
      const connectTimeoutMs = this.options.connectTimeoutMs
      // The Agent's own connect has no deadline: an endpoint that never answers the SYN would
      // hold the request until the per-try timeout, or forever without one.
      agent.createConnection = ((options: net.NetConnectOpts, callback: (err: Error | null, stream?: Duplex) => void) => {
        const slot = connectionSlot(options)
        if (slot instanceof BreakerRefusal) { process.nextTick(callback, slot); return undefined }
        const socket = net.connect({ ...options, noDelay: true })
        const timer = setTimeout(() => socket.destroy(new ConnectFailure(`connect to ${endpoint.ip}:${endpoint.port} timed out after ${connectTimeoutMs} ms`)), connectTimeoutMs)
        socket.once('connect', () => clearTimeout(timer))
        socket.once('close', () => { clearTimeout(timer); slot() })
        return socket
      }) as unknown as http.Agent['createConnection']
      upstream = { agent, path: 'direct' }
    }
    this.agents.set(key, upstream)
    return upstream
  }

  /** Closes the pools of endpoints that are gone from `snapshot` (called when a snapshot applies). */
  prune(snapshot: MeshSnapshot): void {
    const live = new Set<string>()
    for (const target of snapshot.services.values()) for (const endpoint of target.endpoints) live.add(`${endpoint.ip}:${endpoint.port}`)
    for (const [key, upstream] of this.agents) {
      if (!live.has(key.split('|')[0]!)) {
        upstream.agent.destroy()
        this.agents.delete(key)
      }
    }
  }

  close(): void {
    for (const upstream of this.agents.values()) upstream.agent.destroy()
    this.agents.clear()
  }
}

/**
 * The Agent treats what createConnection returns as a net.Socket and calls a few socket-only
 * methods on it (keep-alive, ref/unref, noDelay); an HTTP/2 stream has none of them. The
 * tunnel's session already keeps itself alive, so they are no-ops.
 */
export function asSocketLike(stream: Duplex): Duplex {
  const socketLike = stream as Duplex & Record<string, unknown>
  // The HTTP client corks and writes its head as a latin1 string; Http2Stream's batched write
  // (_writev) garbles string chunks (the pod's server saw a corrupt request line: 400). Without
  // it, each chunk goes through _write, which honours the encoding.
  socketLike._writev = undefined
  for (const method of ['setKeepAlive', 'setNoDelay', 'ref', 'unref']) {
    if (typeof socketLike[method] !== 'function') socketLike[method] = () => stream
  }
  return stream
}
