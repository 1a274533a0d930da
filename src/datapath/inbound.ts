// The inbound tunnel listener (:15008): HTTP/2 over mutual TLS 1.3. Another node's proxy opens
// CONNECT streams here, one per proxied connection; we connect to the named pod — only pods that
// run on this node — and join the stream to that socket.
//
// Who is calling is proven, never claimed:
//  - the handshake: the client asks (by SNI, tunnel.ts `sniFor`) for the certificate of the
//    destination workload, and must present a certificate chaining to the trust bundle;
//  - the session: the client's SPIFFE ID must be in our trust domain, and the connecting address
//    must be a mesh node that hosts a pod with that identity (a node cannot speak for identities
//    it does not run);
//  - each stream: the destination pod must be on this node and have the identity whose
//    certificate we served; the source pod named in `weft-source-address` must have the client's
//    identity and live on the connecting node;
//  - then the destination's AuthorizationPolicies decide (admission.ts): refused with 403, or
//    allowed — spliced byte for byte, or, when a rule needs HTTP attributes, served request by
//    request (src/l7/inbound-http.ts).
import http2, { type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import type { TLSSocket } from 'node:tls'
import type { MeshSnapshot, Workload } from '../config/resources/index.ts'
import { peerIdentity } from '../identity/spiffe.ts'
import { serveInboundHttp } from '../l7/inbound-http.ts'
import type { Logger } from '../telemetry/log.ts'
import type { NodeMetrics } from '../telemetry/metrics.ts'
import { admitConnection, stillAllowed, type AdmissionRequest } from './admission.ts'
import { ConnectionTracker } from './connections.ts'
import { connectDirect } from './outbound.ts'
import { splice } from './splice.ts'
import { ERROR_HEADER, SOURCE_ADDRESS_HEADER, TUNNEL_ALPN, TUNNEL_SESSION_WINDOW, secureContextWithin, sniFor, tunnelSettings, type TunnelCredentials } from './tunnel.ts'

export interface InboundOptions {
  node: string
  listenIp: string
  port: number
  idleTimeoutMs: number
  connectTimeoutMs: number
  snapshot: () => MeshSnapshot
  metrics: NodeMetrics
  log: Logger
  /** The certificates of this node's workloads (the server side of each handshake). */
  credentials: TunnelCredentials
  /** Clients must hold an identity of this trust domain. */
  trustDomain: string
}

/** What the handshake proved about a tunnel connection. */
interface PeerSession {
  /** The client's SPIFFE ID (the source workload). */
  readonly identity: string
  /** The mesh node it connected from. */
  readonly node: string
  /** The identity whose certificate this side presented (the destination workload). */
  readonly served: string
}

export class InboundListener {
  readonly connections = new ConnectionTracker()
  private readonly server: Http2SecureServer
  private readonly options: InboundOptions
  private readonly sessions = new Map<ServerHttp2Session, PeerSession | undefined>()
  /** SNI name -> identity of this node's workloads, per snapshot. */
  private readonly identitiesBySni = new WeakMap<MeshSnapshot, Map<string, string>>()

  constructor(options: InboundOptions) {
    this.options = options
    this.server = http2.createSecureServer({
      settings: tunnelSettings,
      ALPNProtocols: [TUNNEL_ALPN],
      minVersion: 'TLSv1.3',
      requestCert: true,
      rejectUnauthorized: true,
      // The certificate to present is the destination workload's, named by the SNI.
      SNICallback: (servername, callback) => {
        const identity = this.localIdentityBySni(servername)
        if (identity === undefined) {
          this.refuseTls('unknown_server_name', `server name ${servername} names no workload of node ${options.node}`)
          callback(new Error(`no workload for ${servername}`), undefined)
          return
        }
        // A pod that just started: its certificate may be on its way from the CA.
        void secureContextWithin(options.credentials, identity, options.connectTimeoutMs).then((context) => {
          if (context) { callback(null, context); return }
          this.refuseTls('no_certificate', `no certificate to serve for ${identity} on node ${options.node} (is weft control, the CA, reachable?)`)
          callback(new Error(`no certificate for ${identity}`), undefined)
        })
      },
    })
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      this.refuseTls(tlsFailureReason(err), err.message)
    })
    this.server.on('session', (session) => {
      const peer = this.authenticate(session)
      if (!peer) { session.destroy(); return }
      this.sessions.set(session, peer)
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
    for (const session of this.sessions.keys()) session.close()
    return closed
  }

  private localIdentityBySni(servername: string): string | undefined {
    const snapshot = this.options.snapshot()
    let bySni = this.identitiesBySni.get(snapshot)
    if (!bySni) {
      bySni = new Map()
      for (const workload of snapshot.podsByNode.get(this.options.node) ?? []) bySni.set(sniFor(workload.identity), workload.identity)
      this.identitiesBySni.set(snapshot, bySni)
    }
    return bySni.get(servername)
  }

  private refuseTls(reason: string, detail: string): void {
    this.options.metrics.tunnelRefused.inc({ reason })
    this.options.log.warn('inbound: refused a tunnel connection', { reason, detail })
  }

  /** The session's proven peer, or undefined (refused and counted) when the handshake proved too little. */
  private authenticate(session: ServerHttp2Session): PeerSession | undefined {
    const socket = session.socket as TLSSocket
    const remote = socket.remoteAddress ?? ''
    const identity = peerIdentity(socket.getPeerCertificate())
    const served = this.localIdentityBySni(socket.servername || '')
    if (identity === undefined || served === undefined) {
      this.refuseTls('no_identity', `the client at ${remote} presented no certificate with exactly one SPIFFE ID`)
      return undefined
    }
    if (!identity.startsWith(`spiffe://${this.options.trustDomain}/`)) {
      this.refuseTls('other_trust_domain', `the client at ${remote} is ${identity}, outside the trust domain ${this.options.trustDomain}`)
      return undefined
    }
    const snapshot = this.options.snapshot()
    const node = [...snapshot.nodes.values()].find((n) => n.address === remote)
    if (!node) {
      this.refuseTls('not_a_node', `${remote} (${identity}) is not the address of a mesh node`)
      return undefined
    }
    if (!(snapshot.podsByNode.get(node.name) ?? []).some((w) => w.identity === identity)) {
      this.refuseTls('identity_not_on_node', `node ${node.name} (${remote}) presented ${identity}, but runs no pod with that identity`)
      return undefined
    }
    return { identity, node: node.name, served }
  }

  private refuse(stream: ServerHttp2Stream, status: number, reason: string, message: string): void {
    this.options.metrics.connectionErrors.inc({ direction: 'inbound', reason })
    this.options.log.warn('inbound: refused tunnel stream', { status, reason, detail: message })
    if (!stream.headersSent) stream.respond({ ':status': status, [ERROR_HEADER]: message }, { endStream: true })
  }

  private async accept(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    stream.on('error', () => {})
    const peer = this.sessions.get(stream.session as ServerHttp2Session)
    if (!peer) { stream.close(http2.constants.NGHTTP2_REFUSED_STREAM); return }
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
    const port = Number(portText)
    const snapshot = this.options.snapshot()
    const target = snapshot.workloadsByIp.get(ip)
    if (!target || target.node !== this.options.node) {
      this.refuse(stream, 403, 'not_local', `${ip} is not a workload on node ${this.options.node}`)
      return
    }
    if (target.identity !== peer.served) {
      this.refuse(stream, 403, 'wrong_identity', `${ip} is ${target.identity}, but the connection was opened for ${peer.served}`)
      return
    }
    const source = this.sourcePod(snapshot, headers, peer)
    if (typeof source === 'string') {
      this.refuse(stream, 403, 'bad_source', source)
      return
    }
    const sourceLabel = `${source.namespace}/${source.name}`
    const request: AdmissionRequest = {
      destination: target, port, sourceLabel,
      source: { principal: peer.identity, namespace: source.namespace, ip: source.ip },
    }
    const admission = admitConnection(snapshot, request, this.options.metrics, this.options.log)
    if (!admission.allowed) {
      this.refuse(stream, 403, 'denied', admission.decision.reason)
      return
    }

    let upstream
    try {
      upstream = await connectDirect(ip, port, this.options.connectTimeoutMs)
    } catch (err) {
      this.refuse(stream, 502, ((err as NodeJS.ErrnoException).code ?? 'connect_failed').toLowerCase(), `connect to ${authority}: ${(err as Error).message}`)
      return
    }
    if (stream.destroyed) { upstream.resetAndDestroy(); return }
    stream.respond({ ':status': 200 })

    const { metrics, log } = this.options
    const labels = { source_workload: sourceLabel, destination_workload: `${target.namespace}/${target.name}`, destination_service: 'none' }
    const connLabels = { direction: 'inbound', path: 'direct', ...labels } as const
    metrics.connectionsOpened.inc(connLabels)
    metrics.connectionsActive.inc({ direction: 'inbound' })
    const finished = (outcome: string): void => {
      metrics.connectionsActive.dec({ direction: 'inbound' })
      metrics.connectionsClosed.inc({ ...connLabels, outcome })
    }
    if (admission.perRequest) {
      // HTTP rules apply: the stream is served request by request.
      const connected = upstream
      const served = serveInboundHttp(stream, {
        decide: admission.perRequest, connectUpstream: () => Promise.resolve(connected),
        sourceIp: source.ip, metrics, log, labels,
      })
      this.connections.add(served)
      void served.done.then(() => { this.connections.remove(served); finished('closed') })
      return
    }
    const sent = metrics.bytes.labels({ direction: 'inbound', ...labels, flow: 'sent' })
    const received = metrics.bytes.labels({ direction: 'inbound', ...labels, flow: 'received' })
    const handle = splice(stream, upstream, {
      idleTimeoutMs: 0, // the source node's outbound side owns the idle timeout
      onBytes: (flow, n) => (flow === 'sent' ? sent : received).inc(n),
      onDone: (result) => {
        this.connections.remove(handle)
        finished(result.outcome)
      },
    })
    // Decided for the whole stream: a later policy that denies it closes it.
    this.connections.add(handle, stillAllowed(request, metrics, log))
  }

  /** The source pod named by the stream, when it has the client's identity and runs on the connecting node; else why not. */
  private sourcePod(snapshot: MeshSnapshot, headers: IncomingHttpHeaders, peer: PeerSession): Workload | string {
    const claimed = headers[SOURCE_ADDRESS_HEADER]
    if (typeof claimed !== 'string') return `the stream names no source pod (${SOURCE_ADDRESS_HEADER})`
    const pod = snapshot.workloadsByIp.get(claimed)
    if (!pod) return `source ${claimed} is not a known pod`
    if (pod.identity !== peer.identity) return `source ${claimed} is ${pod.identity}, not ${peer.identity} as the certificate says`
    if (pod.node !== peer.node) return `source ${claimed} runs on node ${pod.node}, not on ${peer.node} which connected`
    return pod
  }
}

/** A short reason for a failed handshake, for the metric label. */
function tlsFailureReason(err: NodeJS.ErrnoException): string {
  const code = err.code ?? ''
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_REQUIRED/i.test(code + err.message)) return 'no_client_certificate'
  if (/UNKNOWN_CA|CERTIFICATE_VERIFY_FAILED|unable to get local issuer/i.test(code + err.message)) return 'untrusted_certificate'
  if (/ECONNRESET|socket hang up/i.test(code + err.message)) return 'reset'
  return 'handshake_failed'
}
