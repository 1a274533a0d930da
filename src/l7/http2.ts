// The HTTP/2 frontend (cleartext, prior knowledge) — and so gRPC, which is HTTP/2 with
// `content-type: application/grpc`. The outbound listener hands it a pod's connection to a
// service VIP whose port declares h2c/grpc, or whose first bytes were the HTTP/2 preface; an
// `http2.Server` that never listens runs the session (`emit('connection')`), and each stream
// becomes an `Exchange` for the pipeline (pipeline.ts). Tries go upstream as streams on pooled
// HTTP/2 sessions (upstream-h2.ts), direct or through the tunnel — or, when the destination port
// declares appProtocol http (a client that spoke h2c to an `http` port, as Envoy's automatic codec
// accepts), as HTTP/1.1 requests (client-h1.ts): the upstream protocol follows the declaration.
// Their responses are relayed as HTTP/2: hop-by-hop headers dropped, chunked trailers sent as
// HTTP/2 trailers.
//
// Responses stream both ways with their trailers (gRPC's grpc-status lives there). A response
// that ends with its headers (gRPC's trailers-only errors) is relayed the same way. weft's own
// errors: for gRPC a trailers-only response whose grpc-status and grpc-message name the cause
// (gRPC clients read those, not the HTTP status); otherwise a status with `weft-error`.
//
// A protocol error on a connection (a bad preface, a malformed frame, a flow-control violation)
// ends that session with GOAWAY (Node's HTTP/2 implementation); other connections carry on.
import http2, { type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream, type ClientHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { randomUUID } from 'node:crypto'
import type { Endpoint } from '../config/resources/index.ts'
import type { Logger } from '../telemetry/log.ts'
import type { Destination } from './destinations.ts'
import { grpcMeshError, GRPC_STATUS, httpMeshError, WEFT_ERROR_HEADER, type MeshErrorCause } from './errors.ts'
import { asksForTrailers, type Attempt, type DownstreamContext, type Exchange, type ExchangeStats, type L7Protocol, type OutgoingHeaders, type Pipeline, type ProxyRequest, type Try, type UpstreamResponse } from './pipeline.ts'
import { applyHeaderModifier, type HeaderModifier } from './router.ts'
import { isHttp1Response, responseHeaders as http1ResponseHeaders, sendHttp1, type Http1Response } from './client-h1.ts'
import { ConnectFailure, UpstreamPools, type UpstreamOptions, type UpstreamPath } from './upstream.ts'
import { H2UpstreamPools } from './upstream-h2.ts'

const { HTTP2_HEADER_STATUS, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = http2.constants

export interface Http2ProxyOptions extends UpstreamOptions {
  readonly pipeline: Pipeline
  readonly log: Logger
  /** A client session with no stream open for this long is closed (streams in progress are never cut). Default 60 s. */
  readonly sessionIdleTimeoutMs?: number | undefined
  /** The HTTP/1.1 pools for tries to `http` ports, shared with the HTTP/1.1 frontend; made here when absent. */
  readonly http1Pools?: UpstreamPools | undefined
}

/** Connection-specific headers HTTP/2 forbids (RFC 9113 8.2.2), never forwarded; `te` is handled apart. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'host', 'http2-settings'])

/** Larger than the 64 KiB default, so one stream's bulk body is not starved. */
const STREAM_WINDOW = 1 << 20
/** Streams one client connection may have open at once (Node's default is 2^32-1; Go's and many proxies' is 100-250). */
const MAX_CONCURRENT_STREAMS = 250

export class Http2Proxy {
  readonly pipeline: Pipeline
  private readonly options: Http2ProxyOptions
  private readonly server: http2.Http2Server
  private readonly pools: H2UpstreamPools
  private readonly http1Pools: UpstreamPools
  private readonly contexts = new WeakMap<ServerHttp2Session, DownstreamContext>()
  /** The context of the connection being handed over: 'session' fires synchronously inside emit('connection'). */
  private handingOver: DownstreamContext | undefined

  constructor(options: Http2ProxyOptions) {
    this.options = options
    this.pipeline = options.pipeline
    this.pools = new H2UpstreamPools(options)
    this.http1Pools = options.http1Pools ?? new UpstreamPools(options)
    this.pipeline.onSnapshot((snapshot) => { this.pools.prune(snapshot); this.http1Pools.prune(snapshot) })
    this.server = http2.createServer({ settings: { enablePush: false, initialWindowSize: STREAM_WINDOW, maxConcurrentStreams: MAX_CONCURRENT_STREAMS } })
    const idleMs = options.sessionIdleTimeoutMs ?? 60_000
    this.server.on('session', (session) => {
      if (this.handingOver) this.contexts.set(session, this.handingOver)
      // A protocol error ends this session alone (GOAWAY); nothing else to do.
      session.on('error', (err) => options.log.debug('http2: client session error', { error: err }))
      // Idle means no stream open: a long gRPC stream or a long poll is never cut for silence
      // (the server's own setTimeout would destroy the session whatever its streams).
      let open = 0
      let idle: NodeJS.Timeout | undefined
      const arm = (): void => { if (idleMs > 0) { idle = setTimeout(() => session.close(), idleMs); idle.unref() } }
      session.on('stream', (stream: ServerHttp2Stream) => {
        open++
        clearTimeout(idle)
        stream.once('close', () => { if (--open === 0 && !session.closed) arm() })
      })
      session.once('close', () => clearTimeout(idle))
      arm()
    })
    this.server.on('stream', (stream, headers, flags) => {
      const context = this.contexts.get(stream.session as ServerHttp2Session)
      if (!context) { stream.close(NGHTTP2_INTERNAL_ERROR); return }
      stream.on('error', () => {}) // a reset by the client; the exchange sees 'close'
      void this.pipeline.handle(new Http2Exchange(stream, headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0, context, this.pools, this.http1Pools, options.log))
    })
  }

  /** Takes over an accepted (paused) connection whose preface may already be buffered in it. */
  handle(socket: Socket, context: DownstreamContext): void {
    this.handingOver = context
    try {
      this.server.emit('connection', socket)
    } finally {
      this.handingOver = undefined
    }
    socket.resume()
  }

  close(): void {
    this.pools.close()
    this.http1Pools.close()
  }
}

interface Http2Response extends UpstreamResponse {
  readonly stream: ClientHttp2Stream
  readonly headers: IncomingHttpHeaders
  /** The response ended with its headers (trailers-only). */
  readonly endedWithHeaders: boolean
  /**
   * The trailers once they arrived. Listened for from the start: through a tunnel the session
   * reads from a JS stream, and headers and trailers arriving in one read are emitted in one
   * batch, before a listener added when the response is relayed would exist.
   */
  trailers: IncomingHttpHeaders | undefined
}

class Http2Exchange implements Exchange {
  readonly request: ProxyRequest
  readonly context: DownstreamContext
  readonly stats: ExchangeStats = { status: 0, grpcStatus: undefined, requestBytes: 0, responseBytes: 0, weftError: undefined }
  private readonly stream: ServerHttp2Stream
  private readonly pools: H2UpstreamPools
  private readonly http1Pools: UpstreamPools
  private readonly log: Logger
  private readonly closeListeners: (() => void)[] = []
  private ended = false

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, endStream: boolean, context: DownstreamContext, pools: H2UpstreamPools, http1Pools: UpstreamPools, log: Logger) {
    this.stream = stream
    this.context = context
    this.pools = pools
    this.http1Pools = http1Pools
    this.log = log
    const contentType = headers['content-type']
    const protocol: L7Protocol = typeof contentType === 'string' && contentType.startsWith('application/grpc') ? 'grpc' : 'http2'
    const length = headers['content-length']
    if (endStream) stream.resume()
    this.request = {
      protocol,
      method: String(headers[':method'] ?? 'GET'),
      path: String(headers[':path'] ?? '/'),
      authority: String(headers[':authority'] ?? headers.host ?? ''),
      headers,
      forward: forwardedHeaders(headers, context.sourceIp),
      body: endStream ? undefined : stream,
      contentLength: endStream ? 0 : length === undefined ? undefined : Number(length),
    }
    stream.once('close', () => {
      if (this.ended) return
      this.ended = true
      for (const listener of this.closeListeners) listener()
    })
  }

  get answered(): boolean {
    return this.stream.headersSent
  }

  onClose(listener: () => void): void {
    if (this.ended) listener()
    else this.closeListeners.push(listener)
  }

  send(endpoint: Endpoint, destination: Destination, headers: OutgoingHeaders, target: string, body: Buffer | Readable | undefined, onPath: (path: UpstreamPath) => void): Try {
    if (destination.upstreamProtocol === 'http1') {
      return sendHttp1(this.http1Pools, this.context, endpoint, destination, { method: this.request.method, target, headers: http1RequestHeaders(headers), body }, onPath)
    }
    headers[':path'] = target
    let upstream: ClientHttp2Stream | undefined
    let cancelled = false
    const endStream = body === undefined || (Buffer.isBuffer(body) && body.length === 0)
    const result = this.pools.request(endpoint, this.context, destination.snapshot, headers as http2.OutgoingHttpHeaders, { endStream, idleTimeoutMs: destination.idleTimeoutMs }).then(
      (opened) => {
        upstream = opened.stream
        onPath(opened.path)
        if (cancelled) { upstream.close(NGHTTP2_CANCEL); return { outcome: { kind: 'reset' } } as Attempt }
        return this.exchangeOn(opened.stream, body, endStream)
      },
      (err: unknown): Attempt => err instanceof ConnectFailure ? { outcome: { kind: 'connect-failure' }, notHttp2: err.notHttp2 } : { outcome: { kind: 'reset' } },
    )
    return { result, cancel: () => { cancelled = true; upstream?.close(NGHTTP2_CANCEL) } }
  }

  /** Sends the body on an open upstream stream and waits for the response head. */
  private exchangeOn(upstream: ClientHttp2Stream, body: Buffer | Readable | undefined, endStream: boolean): Promise<Attempt> {
    return new Promise((resolve) => {
      let settled = false
      const settle = (attempt: Attempt): void => {
        if (settled) { attempt.response?.discard(); return }
        settled = true
        resolve(attempt)
      }
      upstream.once('response', (headers, flags) => {
        const status = Number(headers[HTTP2_HEADER_STATUS] ?? 502)
        const grpc = headers['grpc-status']
        const response: Http2Response = {
          status, grpcStatus: grpc === undefined ? undefined : Number(grpc), body: upstream, stream: upstream, headers,
          endedWithHeaders: (flags & NGHTTP2_FLAG_END_STREAM) !== 0,
          discard: () => { upstream.close(NGHTTP2_CANCEL) },
          trailers: undefined,
        }
        upstream.once('trailers', (trailers: IncomingHttpHeaders) => { response.trailers = trailers })
        settle({ outcome: { kind: 'response', status, grpcStatus: response.grpcStatus }, response })
      })
      upstream.on('error', () => {})
      // REFUSED_STREAM: the peer did not process the request (RFC 9113 8.7): as good as never sent.
      upstream.once('close', () => settle({ outcome: { kind: upstream.rstCode === NGHTTP2_REFUSED_STREAM ? 'connect-failure' : 'reset' } }))
      if (endStream) return
      if (Buffer.isBuffer(body)) { upstream.end(body); return }
      body?.pipe(upstream)
    })
  }

  relay(response: UpstreamResponse, done: () => void, modifiers: readonly HeaderModifier[]): void {
    if (isHttp1Response(response)) { this.relayHttp1(response, done, modifiers); return }
    const relayed = response as Http2Response
    const { stream: upstream, headers: upstreamHeaders, endedWithHeaders } = relayed
    const downstream = this.stream
    if (downstream.destroyed) { upstream.close(NGHTTP2_CANCEL); done(); return }
    // Reset between its head and now: nothing more will come (its 'close' has been and gone).
    if (upstream.destroyed && !upstream.readableEnded && !endedWithHeaders) { this.reset(); done(); return }
    this.stats.status = response.status
    this.stats.grpcStatus = response.grpcStatus
    const headers = responseHeaders(upstreamHeaders)
    for (const modifier of modifiers) applyHeaderModifier(modifier, headers as Record<string, string | string[] | undefined>)
    // A modifier may name a header HTTP/2 forbids (respond() would throw): those never go out.
    if (modifiers.length > 0) for (const name of CONNECTION_SPECIFIC) delete headers[name]
    if (endedWithHeaders) {
      downstream.respond(headers, { endStream: true })
      done()
      return
    }
    downstream.once('wantTrailers', () => {
      // The upstream stream has ended here (it was piped whole), so its trailers, if any, are in.
      const out: http2.OutgoingHttpHeaders = {}
      for (const [name, value] of Object.entries(relayed.trailers ?? {})) if (!name.startsWith(':')) out[name] = value
      const grpc = relayed.trailers?.['grpc-status']
      if (grpc !== undefined) this.stats.grpcStatus = Number(grpc)
      downstream.sendTrailers(out)
    })
    downstream.respond(headers, { waitForTrailers: true })
    upstream.on('data', (chunk: Buffer) => { this.stats.responseBytes += chunk.length })
    upstream.pipe(downstream)
    upstream.once('end', () => {
      // The endpoint answered in full while the request may still be sending: stop sending it.
      if (!upstream.writableFinished && !upstream.destroyed) upstream.close(NGHTTP2_CANCEL)
    })
    upstream.once('close', () => {
      // Reset before its end: reset the client's stream too (its response is incomplete).
      if (!upstream.readableEnded && !downstream.destroyed) downstream.close(NGHTTP2_INTERNAL_ERROR)
      done()
    })
    downstream.once('close', () => { if (!upstream.destroyed) upstream.close(NGHTTP2_CANCEL) })
  }

  /** An HTTP/1.1 endpoint's response, relayed as HTTP/2 (its chunked trailers as HTTP/2 trailers). */
  private relayHttp1(response: Http1Response, done: () => void, modifiers: readonly HeaderModifier[]): void {
    const downstream = this.stream
    let over = false
    const finish = (): void => { if (!over) { over = true; done() } }
    if (downstream.destroyed) { response.discard(); finish(); return }
    this.stats.status = response.status
    this.stats.grpcStatus = response.grpcStatus
    const headers = responseHeaders(http1ResponseHeaders(response.headers, false) as IncomingHttpHeaders)
    for (const modifier of modifiers) applyHeaderModifier(modifier, headers as Record<string, string | string[] | undefined>)
    if (modifiers.length > 0) for (const name of CONNECTION_SPECIFIC) delete headers[name]
    headers[HTTP2_HEADER_STATUS] = response.status
    if (this.request.method === 'HEAD' || response.status === 204 || response.status === 304) {
      downstream.respond(headers, { endStream: true })
      response.discard()
      finish()
      return
    }
    let trailers: readonly string[] = []
    downstream.once('wantTrailers', () => {
      const out: http2.OutgoingHttpHeaders = {}
      for (let i = 0; i < trailers.length; i += 2) {
        const name = trailers[i]!.toLowerCase()
        if (CONNECTION_SPECIFIC.has(name)) continue
        out[name] = trailers[i + 1]!
        if (name === 'grpc-status') this.stats.grpcStatus = Number(trailers[i + 1])
      }
      downstream.sendTrailers(out)
    })
    downstream.respond(headers, { waitForTrailers: true })
    let complete = false
    response.pipeTo({
      data: (chunk) => {
        this.stats.responseBytes += chunk.length
        const ok = downstream.write(chunk)
        if (!ok) downstream.once('drain', () => response.resume())
        return ok
      },
      end: (received) => { complete = true; trailers = received; downstream.end(); finish() },
      // Cut before its end: reset the client's stream too (its response is incomplete).
      abort: () => { this.reset(); finish() },
    })
    downstream.once('close', () => { if (!complete) response.discard() })
  }


  fail(cause: MeshErrorCause): void {
    if (this.request.protocol === 'grpc') {
      const answer = grpcMeshError(cause)
      this.answerGrpc(answer.headers)
      return
    }
    const answer = httpMeshError(cause)
    this.log.debug('http2: answered by the mesh', { status: answer.status, error: answer.headers[WEFT_ERROR_HEADER], path: this.request.path })
    this.answer(answer.status, answer.headers)
  }

  redirect(status: number, location: string): void {
    this.answer(status, { location })
  }

  internalError(): void {
    if (this.request.protocol === 'grpc') this.answerGrpc({ 'content-type': 'application/grpc', 'grpc-status': String(GRPC_STATUS.INTERNAL), 'grpc-message': 'internal proxy error', [WEFT_ERROR_HEADER]: 'internal proxy error' })
    else this.answer(500, { [WEFT_ERROR_HEADER]: 'internal proxy error' })
  }

  reset(): void {
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR)
  }

  /** A trailers-only gRPC response (HTTP 200, grpc-status in the only HEADERS frame). */
  private answerGrpc(headers: Readonly<Record<string, string>>): void {
    if (this.answered || this.stream.destroyed) return
    this.stats.status = 200
    this.stats.grpcStatus = Number(headers['grpc-status'])
    this.stats.weftError = headers[WEFT_ERROR_HEADER]
    this.stream.respond({ [HTTP2_HEADER_STATUS]: 200, ...headers }, { endStream: true })
  }

  private answer(status: number, headers: Readonly<Record<string, string>>): void {
    if (this.answered || this.stream.destroyed) return
    const text = `${headers[WEFT_ERROR_HEADER] ?? ''}\n`
    this.stats.status = status
    this.stats.weftError = headers[WEFT_ERROR_HEADER]
    this.stats.responseBytes = Buffer.byteLength(text)
    this.stream.respond({ [HTTP2_HEADER_STATUS]: status, ...headers, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) })
    this.stream.end(text)
  }
}

/** The response headers for the client: the upstream's, minus connection-specific ones. */
function responseHeaders(incoming: IncomingHttpHeaders): http2.OutgoingHttpHeaders {
  const headers: http2.OutgoingHttpHeaders = {}
  for (const [name, value] of Object.entries(incoming)) {
    if (CONNECTION_SPECIFIC.has(name)) continue
    headers[name] = value
  }
  return headers
}

/**
 * An HTTP/2 request's forwarded headers for an HTTP/1.1 try: pseudo-headers dropped (the method
 * and target travel apart), `:authority` as `host`.
 */
function http1RequestHeaders(forward: OutgoingHeaders): OutgoingHeaders {
  const headers: OutgoingHeaders = {}
  for (const [name, value] of Object.entries(forward)) if (!name.startsWith(':')) headers[name] = value
  const authority = forward[':authority']
  if (authority !== undefined) headers.host = authority
  return headers
}

/**
 * The request headers to send upstream: pseudo-headers and the client's headers minus
 * connection-specific ones, `te: trailers` kept (gRPC needs it), `x-request-id` and
 * `x-forwarded-for` added when absent.
 */
export function forwardedHeaders(incoming: IncomingHttpHeaders, sourceIp: string): OutgoingHeaders {
  const headers: OutgoingHeaders = {}
  for (const [name, value] of Object.entries(incoming)) {
    if (CONNECTION_SPECIFIC.has(name)) continue
    headers[name] = value as string | string[] | undefined
  }
  if (asksForTrailers(incoming.te)) headers.te = 'trailers'
  if (headers[':authority'] === undefined && typeof incoming.host === 'string') headers[':authority'] = incoming.host
  headers['x-request-id'] ??= randomUUID()
  headers['x-forwarded-for'] ??= sourceIp
  return headers
}
