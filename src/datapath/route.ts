// Where a connection or a request to a pod goes from this node: the one decision the L4 splice
// (outbound.ts) and the L7 transports (src/l7/upstream.ts, upstream-h2.ts) share, as ztunnel's
// outbound `Request`. A pod of another node known to the snapshot is reached through the tunnel
// to that node's inbound listener — presenting the source pod's identity and asking for the
// destination pod's, so both must be known workloads; anything else (a pod of this node, an
// address that is not a known pod of another node) is connected to directly.
import type { MeshSnapshot } from '../config/resources/index.ts'
import type { TunnelTarget } from './tunnel.ts'

/** The destination as the caller knows it: its address, and (when it is a known pod) its node and identity. */
export interface RouteDestination {
  readonly ip: string
  readonly port: number
  readonly node: string | undefined
  readonly identity: string | undefined
}

/** The calling pod: its address, and its SPIFFE ID when it is a known workload. */
export interface RouteSource {
  readonly ip: string
  readonly identity: string | undefined
}

export type Route =
  | { readonly path: 'direct'; /** What a pooled connection may be shared by: `ip:port`. */ readonly key: string }
  | {
    readonly path: 'tunnel'
    /** `ip:port|node address|source ip`: a tunnelled connection carries one source pod's traffic. */
    readonly key: string
    /** The destination node's address. */
    readonly peerAddress: string
    /** The tunnel stream to open, or why there can be none (`unknownIdentity`). */
    readonly tunnel: TunnelTarget | undefined
    readonly unknownIdentity: string | undefined
  }

export function routeTo(destination: RouteDestination, source: RouteSource, snapshot: MeshSnapshot, localNode: string, inboundPort: number): Route {
  const address = `${destination.ip}:${destination.port}`
  const remoteNode = destination.node !== undefined && destination.node !== localNode ? snapshot.nodes.get(destination.node) : undefined
  if (remoteNode === undefined) return { path: 'direct', key: address }
  const key = `${address}|${remoteNode.address}|${source.ip}`
  const base = { path: 'tunnel', key, peerAddress: remoteNode.address } as const
  if (source.identity === undefined) return { ...base, tunnel: undefined, unknownIdentity: `cannot open a tunnel to ${address} for ${source.ip}: the source pod is not a known workload, so it has no identity` }
  if (destination.identity === undefined) return { ...base, tunnel: undefined, unknownIdentity: `cannot open a tunnel to ${address}: the endpoint is not a known pod, so its identity cannot be checked` }
  return {
    ...base,
    tunnel: { peerAddress: remoteNode.address, peerPort: inboundPort, destination: address, destinationIdentity: destination.identity, source: { ip: source.ip, identity: source.identity } },
    unknownIdentity: undefined,
  }
}
