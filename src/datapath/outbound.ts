// The outbound listener (:15001). The BPF connect4 program sends every enrolled pod's TCP
// connect here; for each accepted connection we look up where the pod meant to go (the
// original destination, keyed by the pod's address and port) and forward the bytes:
// to a pod on this node (or any address we do not know) directly, to a pod on another node
// through the HTTP/2 tunnel to that node's inbound listener. A destination that is a service
// VIP:port is first resolved to one of the service's ready endpoints.
//
// A destination pod on this node is authorized here, exactly as a tunnel stream from another node
// is at that node's inbound listener (admission.ts): refused, spliced, or — when a rule needs HTTP
// attributes — served request by request. With the L4 fast path (on unless `--no-l4-fast-path`), a spliced
// connection to a pod of this node is joined in the kernel instead (fast-splice.ts).
//
// Connections to a service VIP that speak HTTP are handed to the L7 proxy instead, which routes,
// balances and retries each request (src/l7/pipeline.ts): HTTP/1.x to src/l7/http1.ts, HTTP/2
// with prior knowledge and gRPC to src/l7/http2.ts — when the service port declares appProtocol
// http, h2c or grpc, or, with no appProtocol, when the first bytes are an HTTP/1.x request line or
// the HTTP/2 preface (src/l7/detect.ts). On an `http` port the first bytes still say which: the
// HTTP/2 preface goes to http2.ts (whose tries to that port speak HTTP/1.1), anything else to
// http1.ts. Everything else — other declared protocols, TLS, unknown bytes, server-speaks-first,
// and connections to pod IPs — moves bytes as below.
import net, { type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { serviceAddress, type MeshSnapshot } from '../config/resources/index.ts'
import { RoundRobinBalancer } from './balancer.ts'
import type { Logger } from '../telemetry/log.ts'
import type { L7ConnectionProtocol, NodeMetrics, Path } from '../telemetry/metrics.ts'
import type { AccessLog } from '../telemetry/access-log.ts'
import { ConnectionTracker, type Recheck } from './connections.ts'
import { routeTo } from './route.ts'
import { abort, splice, type SpliceHandle, type SpliceOutcome } from './splice.ts'
import { fastSplice, type KernelSplicer } from './fast-splice.ts'
import { TunnelError, type TunnelPool } from './tunnel.ts'
import { admitConnection, stillAllowed, type AdmissionRequest, type RequestAuthorizer } from './admission.ts'
import { serveInboundHttp } from '../l7/inbound-http.ts'
import { classifyHttpVersion, declaredProtocol, DEFAULT_SNIFF_TIMEOUT_MS, sniff, type Protocol } from '../l7/detect.ts'
import { Http1Proxy } from '../l7/http1.ts'
import { Http2Proxy } from '../l7/http2.ts'
import { Pipeline } from '../l7/pipeline.ts'
import { UpstreamPools } from '../l7/upstream.ts'

export interface OriginalDestinationSource {
  takeOriginalDestination(peerIp: string, peerPort: number): { ip: string; port: number } | undefined
}

export interface OutboundOptions {
  node: string
  listenIp: string
  port: number
  inboundPort: number
  idleTimeoutMs: number
  connectTimeoutMs: number
  snapshot: () => MeshSnapshot
  originalDestinations: OriginalDestinationSource
  tunnels: TunnelPool
  metrics: NodeMetrics
  log: Logger
  /** How long a connection to a service without appProtocol may stay silent before it is opaque. */
  sniffTimeoutMs?: number
  /** Where the L7 proxy writes access log lines (default: nowhere). */
  accessLog?: AccessLog
  /** The L4 fast path (on unless `--no-l4-fast-path`): same-node opaque TCP is joined in the kernel. Absent: off. */
  fastPath?: KernelSplicer
}

export class OutboundListener {
  readonly connections = new ConnectionTracker()
  private readonly server: net.Server
  private readonly options: OutboundOptions
  private readonly balancer = new RoundRobinBalancer()
  private readonly http1: Http1Proxy
  private readonly http2: Http2Proxy
  /** The L7 request path both frontends share; its `describe()` is the admin endpoint's view. */
  readonly pipeline: Pipeline

  constructor(options: OutboundOptions) {
    this.options = options
    // One pipeline for both frontends: a destination's balancer, breaker and budget see all its requests.
    this.pipeline = new Pipeline({ node: options.node, snapshot: options.snapshot, metrics: options.metrics, log: options.log, accessLog: options.accessLog })
    const pipeline = this.pipeline
    const upstream = { node: options.node, inboundPort: options.inboundPort, connectTimeoutMs: options.connectTimeoutMs, tunnels: options.tunnels }
    // HTTP/1.1 connections to endpoints, shared: the HTTP/2 frontend's tries to `http` ports use them too.
    const pools = new UpstreamPools(upstream)
    this.http1 = new Http1Proxy({ ...upstream, pipeline, pools, snapshot: options.snapshot, metrics: options.metrics, log: options.log })
    this.http2 = new Http2Proxy({ ...upstream, pipeline, http1Pools: pools, log: options.log })
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => {
      this.accept(socket).catch((err: unknown) => {
        options.log.error('outbound: unexpected failure', { error: err })
        abort(socket)
      })
    })
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host: this.options.listenIp, port: this.options.port, backlog: 4096 }, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
  }

  /** Stops accepting; connections in flight continue. */
  stop(): Promise<void> { return new Promise((resolve) => this.server.close(() => resolve())) }

  /** Closes the L7 proxy's upstream pools (after draining). */
  close(): void { this.http1.close(); this.http2.close() }

  private async accept(socket: Socket): Promise<void> {
    const { metrics, log, snapshot: current } = this.options
    socket.on('error', () => {}) // reported through splice once joined; before that we abort anyway
    const peerIp = socket.remoteAddress ?? ''
    const peerPort = socket.remotePort ?? 0
    const original = this.options.originalDestinations.takeOriginalDestination(peerIp, peerPort)
    if (!original) {
      // Not redirected by our programs (someone dialled :15001 directly) or the entry was lost.
      metrics.connectionErrors.inc({ direction: 'outbound', reason: 'no_original_destination' })
      log.warn('outbound: no original destination for connection, resetting', { peer: `${peerIp}:${peerPort}` })
      abort(socket)
      return
    }
    const snapshot = current()
    const source = snapshot.workloadsByIp.get(peerIp)
    const sourceLabel = source ? `${source.namespace}/${source.name}` : 'unknown'
    const service = snapshot.services.get(serviceAddress(original.ip, original.port))
    // A service VIP that speaks HTTP: the L7 proxy takes the connection.
    let unread: Buffer | undefined
    let protocol: Protocol | undefined
    let sni: string | undefined
    if (service) {
      const declared = declaredProtocol(service.port.appProtocol)
      protocol = declared
      // Undeclared: sniff what it is. Declared http: which HTTP version (HTTP/2 prior knowledge or 1.1).
      if (declared === undefined || declared === 'http1') {
        const classifier = declared === 'http1' ? classifyHttpVersion : undefined
        const sniffed = await sniff(socket, { timeoutMs: this.options.sniffTimeoutMs ?? DEFAULT_SNIFF_TIMEOUT_MS, classifier })
        protocol = sniffed.protocol
        sni = sniffed.sni
        unread = sniffed.unread
        if (socket.destroyed) return
      }
      if ((protocol === 'http1' || protocol === 'http2' || protocol === 'grpc') && !unread) {
        this.handOffL7(protocol === 'http1' ? 'http' : 'http2', socket, { sourceIp: peerIp, sourceWorkload: sourceLabel, sourceIdentity: source?.identity, vip: original.ip, port: original.port })
        return
      }
    }
    // A service VIP: choose one of its ready endpoints.
    let destinationIp = original.ip
    let destinationPort = original.port
    if (service) {
      const endpoint = this.balancer.pick(service)
      if (!endpoint) {
        metrics.connectionErrors.inc({ direction: 'outbound', reason: 'no_endpoints' })
        log.warn('outbound: service has no ready endpoint, resetting the client', { service: `${service.service.metadata.namespace}/${service.service.metadata.name}`, vip: `${original.ip}:${original.port}`, source_workload: sourceLabel })
        abort(socket)
        return
      }
      destinationIp = endpoint.ip
      destinationPort = endpoint.port
    }
    const target = snapshot.workloadsByIp.get(destinationIp)
    const labels = {
      source_workload: sourceLabel,
      destination_workload: target ? `${target.namespace}/${target.name}` : 'unknown',
      destination_service: service ? `${service.service.metadata.namespace}/${service.service.metadata.name}` : 'none',
    }
    const destination = `${destinationIp}:${destinationPort}`
    const route = routeTo({ ip: destinationIp, port: destinationPort, node: target?.node, identity: target?.identity }, { ip: peerIp, identity: source?.identity }, snapshot, this.options.node, this.options.inboundPort)
    const path: Path = route.path

    // A pod of this node: its AuthorizationPolicies decide here.
    let perRequest: RequestAuthorizer | undefined
    let recheck: Recheck | undefined
    if (target && target.node === this.options.node) {
      const request: AdmissionRequest = {
        destination: target, port: destinationPort, sourceLabel,
        source: { principal: source?.identity, namespace: source?.namespace, ip: peerIp },
      }
      const admission = admitConnection(snapshot, request, metrics, log)
      if (!admission.allowed) {
        metrics.connectionErrors.inc({ direction: 'outbound', reason: 'denied' })
        abort(socket)
        return
      }
      perRequest = admission.perRequest
      // Decided for the whole connection: a later policy that denies it closes it.
      if (!perRequest) recheck = stillAllowed(request, metrics, log)
    }

    let upstream: Duplex
    try {
      if (route.path === 'tunnel') {
        // Both ends need an identity: the source's certificate, the destination's to check.
        if (!route.tunnel) throw new TunnelError('no_identity', route.unknownIdentity ?? `${peerIp}: no identity`)
        upstream = await this.options.tunnels.open(route.tunnel)
      } else {
        upstream = await connectDirect(destinationIp, destinationPort, this.options.connectTimeoutMs)
      }
    } catch (err) {
      const reason = err instanceof TunnelError ? err.reason : ((err as NodeJS.ErrnoException).code ?? 'connect_failed').toLowerCase()
      metrics.connectionErrors.inc({ direction: 'outbound', reason })
      log.warn('outbound: cannot reach destination, resetting the client', { ...labels, destination, path, error: err })
      abort(socket)
      return
    }
    if (socket.destroyed) { abort(upstream); return }
    if (unread) upstream.write(unread) // sniffed before the client half-closed: they go first

    const accessLog = this.options.accessLog
    const logged = accessLog?.sampled() ?? false
    const startedAt = Date.now()
    const connLabels = { direction: 'outbound', path, ...labels } as const
    metrics.connectionsOpened.inc(connLabels)
    metrics.connectionsActive.inc({ direction: 'outbound' })
    if (perRequest) {
      // HTTP rules apply to this pod: each request is authorized (src/l7/inbound-http.ts).
      const connected = upstream
      const served = serveInboundHttp(socket, {
        decide: perRequest, connectUpstream: () => Promise.resolve(connected), sourceIp: peerIp, metrics, log, labels,
      })
      this.connections.add(served)
      void served.done.then(() => {
        this.connections.remove(served)
        metrics.connectionsActive.dec({ direction: 'outbound' })
        metrics.connectionsClosed.inc({ ...connLabels, outcome: 'closed' })
      })
      socket.resume()
      return
    }
    const sent = metrics.bytes.labels({ direction: 'outbound', ...labels, flow: 'sent' })
    const received = metrics.bytes.labels({ direction: 'outbound', ...labels, flow: 'received' })
    const closed = (handle: SpliceHandle, result: { outcome: SpliceOutcome; bytesSent: number; bytesReceived: number }): void => {
      this.connections.remove(handle)
      metrics.connectionsActive.dec({ direction: 'outbound' })
      metrics.connectionsClosed.inc({ ...connLabels, outcome: result.outcome })
      log.debug('outbound: connection closed', { ...labels, destination, path, ...result })
      if (logged) {
        accessLog?.write({
          start: new Date(startedAt).toISOString(), durationMs: Date.now() - startedAt,
          protocol: protocol === 'tls' ? 'tls' : 'tcp', sni, sourceIp: peerIp, sourceWorkload: labels.source_workload,
          destination, destinationService: labels.destination_service, destinationWorkload: labels.destination_workload,
          upstreamPath: path, bytesSent: result.bytesSent, bytesReceived: result.bytesReceived, outcome: result.outcome,
        })
      }
    }
    const fastPath = this.options.fastPath
    if (fastPath && target?.node === this.options.node && upstream instanceof net.Socket) {
      // A pod of this node, accepted and authorized: the kernel moves the bytes (fast-splice.ts);
      // they are counted when the connection ends.
      const handle = fastSplice(socket, upstream, {
        idleTimeoutMs: this.options.idleTimeoutMs,
        kernel: fastPath,
        onDone: (result) => {
          sent.inc(result.bytesSent)
          received.inc(result.bytesReceived)
          metrics.fastPathConnections.inc({ result: result.joined ? 'kernel' : 'user_space' })
          metrics.fastPathBytes.inc({ flow: 'sent' }, result.kernelBytesSent)
          metrics.fastPathBytes.inc({ flow: 'received' }, result.kernelBytesReceived)
          closed(handle, result)
        },
      })
      this.connections.add(handle, recheck)
      return
    }
    const handle = splice(socket, upstream, {
      idleTimeoutMs: this.options.idleTimeoutMs,
      onBytes: (flow, n) => (flow === 'sent' ? sent : received).inc(n),
      onDone: (result) => closed(handle, result),
    })
    this.connections.add(handle, recheck)
    socket.resume()
  }

  private handOffL7(protocol: L7ConnectionProtocol, socket: Socket, context: Parameters<Http1Proxy['handle']>[1]): void {
    // Tracked like a spliced connection, so draining waits for it (and aborts it at the deadline).
    const handle = { abort: () => abort(socket) }
    this.connections.add(handle)
    const closed = this.options.metrics.l7ConnectionOpened(protocol)
    socket.once('close', () => {
      this.connections.remove(handle)
      closed()
    })
    if (protocol === 'http') this.http1.handle(socket, context)
    else this.http2.handle(socket, context)
  }
}

/** Connects from this node's network namespace; the proxy's own sockets are never redirected. */
export function connectDirect(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const upstream = net.connect({ host, port, allowHalfOpen: true, noDelay: true })
    const timer = setTimeout(() => {
      upstream.destroy()
      reject(Object.assign(new Error(`connect to ${host}:${port} timed out after ${timeoutMs} ms`), { code: 'CONNECT_TIMEOUT' }))
    }, timeoutMs)
    upstream.once('connect', () => { clearTimeout(timer); upstream.removeAllListeners('error'); resolve(upstream) })
    upstream.once('error', (err) => { clearTimeout(timer); reject(err) })
  })
}
