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
// A tunnelled pool is keyed by source workload too: the CONNECT stream names the source
// (`weft-source-workload`) and a kept-alive connection must not carry another workload's request.
import http from 'node:http'
import net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import type { TunnelPool } from '../datapath/tunnel.ts'

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

/** An error raised before the request left: the connection (or tunnel stream) could not be made. */
export class ConnectFailure extends Error {
  readonly code = 'WEFT_CONNECT_FAILURE'
}

export class UpstreamPools {
  private readonly options: UpstreamOptions
  private readonly agents = new Map<string, Upstream>()

  constructor(options: UpstreamOptions) {
    this.options = options
  }

  /** The pool for requests from `sourceWorkload` to `endpoint`. */
  for(endpoint: Endpoint, sourceWorkload: string, snapshot: MeshSnapshot): Upstream {
    const remoteNode = endpoint.node !== undefined && endpoint.node !== this.options.node ? snapshot.nodes.get(endpoint.node) : undefined
    const key = remoteNode ? `${endpoint.ip}:${endpoint.port}|${remoteNode.address}|${sourceWorkload}` : `${endpoint.ip}:${endpoint.port}`
    const existing = this.agents.get(key)
    if (existing) return existing
    const idle = this.options.idleTimeoutMs ?? 30_000
    let upstream: Upstream
    if (remoteNode) {
      const tunnels = this.options.tunnels
      const target = { peerAddress: remoteNode.address, peerPort: this.options.inboundPort, destination: `${endpoint.ip}:${endpoint.port}`, sourceWorkload }
      const agent = new http.Agent({ keepAlive: true, timeout: idle, scheduling: 'lifo' })
      // Asynchronous createConnection: return nothing and answer through the callback.
      agent.createConnection = ((_options: unknown, callback: (err: Error | null, stream?: Duplex) => void) => {
        tunnels.open(target).then(
          (stream) => callback(null, asSocketLike(stream)),
          (err: unknown) => callback(new ConnectFailure((err as Error).message)),
        )
        return undefined
      }) as unknown as http.Agent['createConnection']
      upstream = { agent, path: 'tunnel' }
    } else {
      const agent = new http.Agent({ keepAlive: true, timeout: idle, scheduling: 'lifo' })
      const connectTimeoutMs = this.options.connectTimeoutMs
      // The Agent's own connect has no deadline: an endpoint that never answers the SYN would
      // hold the request until the per-try timeout, or forever without one.
      agent.createConnection = ((options: net.NetConnectOpts) => {
        const socket = net.connect({ ...options, noDelay: true })
        const timer = setTimeout(() => socket.destroy(new ConnectFailure(`connect to ${endpoint.ip}:${endpoint.port} timed out after ${connectTimeoutMs} ms`)), connectTimeoutMs)
        socket.once('connect', () => clearTimeout(timer))
        socket.once('close', () => clearTimeout(timer))
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
function asSocketLike(stream: Duplex): Duplex {
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
