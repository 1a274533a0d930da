// The inbound tunnel listener (:15008). Another node's proxy opens CONNECT streams here, one per
// proxied connection; we connect to the named pod — only pods that run on this node — and join
// the stream to that socket. Inbound policy (identity, authorization) will be applied here.
import http2, { type Http2Server, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import type { MeshSnapshot } from '../config/resources/index.ts'
import type { Logger } from '../telemetry/log.ts'
import type { NodeMetrics } from '../telemetry/metrics.ts'
import { ConnectionTracker } from './connections.ts'
import { connectDirect } from './outbound.ts'
import { splice } from './splice.ts'
import { ERROR_HEADER, SOURCE_WORKLOAD_HEADER, TUNNEL_SESSION_WINDOW, tunnelSettings } from './tunnel.ts'

export interface InboundOptions {
  node: string
  listenIp: string
  port: number
  idleTimeoutMs: number
  connectTimeoutMs: number
  snapshot: () => MeshSnapshot
  metrics: NodeMetrics
  log: Logger
}

export class InboundListener {
  readonly connections = new ConnectionTracker()
  private readonly server: Http2Server
  private readonly options: InboundOptions
  private readonly sessions = new Set<ServerHttp2Session>()

  constructor(options: InboundOptions) {
    this.options = options
    this.server = http2.createServer({ settings: tunnelSettings })
    this.server.on('session', (session) => {
      this.sessions.add(session)
      session.on('close', () => this.sessions.delete(session))
      session.on('error', (err) => options.log.debug('inbound: session error', { error: err }))
      session.setLocalWindowSize(TUNNEL_SESSION_WINDOW)
    })
    this.server.on('stream', (stream, headers) => {
      this.accept(stream, headers).catch((err: unknown) => {
        options.log.error('inbound: unexpected failure', { error: err })
        if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
      })
    })
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host: this.options.listenIp, port: this.options.port }, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
  }

  address(): { address: string; port: number } {
    const a = this.server.address()
    if (a === null || typeof a === 'string') throw new Error('inbound listener is not listening')
    return { address: a.address, port: a.port }
  }

  /** Stops accepting tunnels and sends GOAWAY on open ones: streams in flight finish, new ones go elsewhere. */
  stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    for (const session of this.sessions) session.close()
    return closed
  }

  private refuse(stream: ServerHttp2Stream, status: number, reason: string, message: string): void {
    this.options.metrics.connectionErrors.inc({ direction: 'inbound', reason })
    this.options.log.warn('inbound: refused tunnel stream', { status, reason, detail: message })
    if (!stream.headersSent) stream.respond({ ':status': status, [ERROR_HEADER]: message }, { endStream: true })
  }

  private async accept(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    stream.on('error', () => {})
    if (headers[':method'] !== 'CONNECT') {
      this.refuse(stream, 405, 'not_connect', 'the weft tunnel only accepts CONNECT')
      return
    }
    const authority = headers[':authority'] ?? ''
    const match = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(authority)
    if (!match) {
      this.refuse(stream, 400, 'bad_authority', `CONNECT authority "${authority}" is not ip:port`)
      return
    }
    const [, ip, portText] = match as unknown as [string, string, string]
    const snapshot = this.options.snapshot()
    const target = snapshot.workloadsByIp.get(ip)
    if (!target || target.node !== this.options.node) {
      this.refuse(stream, 403, 'not_local', `${ip} is not a workload on node ${this.options.node}`)
      return
    }
    const sourceWorkload = String(headers[SOURCE_WORKLOAD_HEADER] ?? 'unknown')
    const labels = { source_workload: sourceWorkload, destination_workload: `${target.namespace}/${target.name}`, destination_service: 'none' }
    let upstream
    try {
      upstream = await connectDirect(ip, Number(portText), this.options.connectTimeoutMs)
    } catch (err) {
      this.refuse(stream, 502, ((err as NodeJS.ErrnoException).code ?? 'connect_failed').toLowerCase(), `connect to ${authority}: ${(err as Error).message}`)
      return
    }
    if (stream.destroyed) { upstream.resetAndDestroy(); return }
    stream.respond({ ':status': 200 })

    const { metrics } = this.options
    const connLabels = { direction: 'inbound', path: 'direct', ...labels } as const
    metrics.connectionsOpened.inc(connLabels)
    metrics.connectionsActive.inc({ direction: 'inbound' })
    const sent = metrics.bytes.labels({ direction: 'inbound', ...labels, flow: 'sent' })
    const received = metrics.bytes.labels({ direction: 'inbound', ...labels, flow: 'received' })
    const handle = splice(stream, upstream, {
      idleTimeoutMs: 0, // the source node's outbound side owns the idle timeout
      onBytes: (flow, n) => (flow === 'sent' ? sent : received).inc(n),
      onDone: (result) => {
        this.connections.remove(handle)
        metrics.connectionsActive.dec({ direction: 'inbound' })
        metrics.connectionsClosed.inc({ ...connLabels, outcome: result.outcome })
      },
    })
    this.connections.add(handle)
  }
}
