// The HTTP/1.1 frontend: the outbound listener hands it a pod's connection to a service VIP (the
// port declares appProtocol http and the client did not open with the HTTP/2 preface, or the
// first bytes were an HTTP/1.x request line); it reads
// each request on it into an `Exchange` for the pipeline (pipeline.ts), which routes, balances
// and retries it, and carries out the pipeline's tries (client-h1.ts) over keep-alive pools
// (upstream.ts).
//
// Requests are parsed by a `http.Server` that never listens: each accepted socket is given to it
// with `emit('connection')`, so Node's parser, keep-alive, chunked coding and 100-continue handle
// the client side. Bodies stream; trailers are relayed after the body.
//
// Upgrade (WebSocket and any other protocol switch): the request goes through the pipeline like
// any other (route, balance, breaker, tries); when the endpoint answers 101 the two connections
// are joined and bytes flow both ways untouched until either side closes. A refusal (any other
// status) is relayed as a normal response and the connection closed.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex, Readable } from 'node:stream'
import { randomUUID } from 'node:crypto'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import { abort, splice } from '../datapath/splice.ts'
import type { TunnelPool } from '../datapath/tunnel.ts'
import type { AccessLog } from '../telemetry/access-log.ts'
import type { Logger } from '../telemetry/log.ts'
import type { NodeMetrics } from '../telemetry/metrics.ts'
import type { Destination } from './destinations.ts'
import { httpMeshError, WEFT_ERROR_HEADER, type MeshErrorCause } from './errors.ts'
import { asksForTrailers, Pipeline, type DownstreamContext, type Exchange, type ExchangeStats, type OutgoingHeaders, type ProxyRequest, type Try, type UpstreamResponse } from './pipeline.ts'
import type { Clock, Random } from './random.ts'
import { applyHeaderModifier, type HeaderModifier } from './router.ts'
import { connectionNamed, finishUpstream, HOP_BY_HOP, responseHeaders, sendHttp1, type Http1Response } from './client-h1.ts'
import { UpstreamPools, type UpstreamPath } from './upstream.ts'

export type { DownstreamContext } from './pipeline.ts'
export { DEFAULT_MAX_REPLAY_BYTES } from './pipeline.ts'

export interface Http1ProxyOptions {
  readonly node: string
  readonly inboundPort: number
  readonly connectTimeoutMs: number
  readonly snapshot: () => MeshSnapshot
  readonly tunnels: TunnelPool
  readonly metrics: NodeMetrics
  readonly log: Logger
  readonly accessLog?: AccessLog | undefined
  /** The pipeline to share with the other frontends; one is made when absent. */
  readonly pipeline?: Pipeline | undefined
  /** Request bodies up to this size (by Content-Length) are buffered so a retry can replay them. */
  readonly maxReplayBytes?: number | undefined
  /** A client connection with no request for this long is closed. */
  readonly keepAliveTimeoutMs?: number | undefined
  /** Idle upstream connections are closed after this long. */
  readonly upstreamIdleTimeoutMs?: number | undefined
  /** The HTTP/1.1 upstream pools to share with the HTTP/2 frontend (its tries to `http` ports); made here when absent. */
  readonly pools?: UpstreamPools | undefined
  readonly random?: Random | undefined
  readonly now?: Clock | undefined
}

export const REQUEST_ID_HEADER = 'x-request-id'

export class Http1Proxy {
  readonly pipeline: Pipeline
  private readonly options: Http1ProxyOptions
  private readonly server: http.Server
  private readonly pools: UpstreamPools
  private readonly contexts = new WeakMap<Socket, DownstreamContext>()

  constructor(options: Http1ProxyOptions) {
    this.options = options
    this.pipeline = options.pipeline ?? new Pipeline(options)
    this.pools = options.pools ?? new UpstreamPools({ node: options.node, inboundPort: options.inboundPort, connectTimeoutMs: options.connectTimeoutMs, tunnels: options.tunnels, idleTimeoutMs: options.upstreamIdleTimeoutMs })
    this.pipeline.onSnapshot((snapshot) => this.pools.prune(snapshot))
    this.server = http.createServer({
      keepAliveTimeout: options.keepAliveTimeoutMs ?? 60_000,
      // Timeouts are the routes' to set; a slow upload or a long poll is not ours to cut.
      requestTimeout: 0,
      noDelay: true,
    }, (req, res) => {
      const context = this.contexts.get(req.socket)
      if (!context) { res.destroy(); return }
      void this.pipeline.handle(new Http1Exchange(req, { res }, context, this.pools, options.log))
    })
    this.server.on('clientError', answerClientError)
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      const context = this.contexts.get(socket)
      if (!context) { socket.destroy(); return }
      void this.pipeline.handle(new Http1Exchange(req, { socket, head }, context, this.pools, options.log))
    })
  }

  /** Takes over an accepted (paused) connection; its first request may already be buffered in it. */
  handle(socket: Socket, context: DownstreamContext): void {
    this.contexts.set(socket, context)
    this.server.emit('connection', socket)
    socket.resume()
  }

  /** Closes the upstream pools (the downstream connections are the listener's to drain). */
  close(): void {
    this.pools.close()
  }
}

/**
 * An `http.Server`'s 'clientError' handler (shared with inbound-http.ts): a malformed request gets
 * a 400 (431 for oversized headers) on its own connection; the daemon and the others carry on.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // A response already under way on this connection cannot be followed by a 400: close it.
  const responding = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage?.headersSent === true
  if (err.code === 'ECONNRESET' || !socket.writable || responding) { socket.destroy(); return }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request'
  socket.end(`HTTP/1.1 ${status}\r\n${WEFT_ERROR_HEADER}: malformed request (${err.code ?? 'parse error'})\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
}

/** Where the answer goes: a response object, or (an Upgrade request) the raw client socket. */
type Downstream = { readonly res: ServerResponse } | { readonly socket: Socket; readonly head: Buffer }

/** One HTTP/1.1 request as the pipeline sees it. */
class Http1Exchange implements Exchange {
  readonly request: ProxyRequest
  readonly context: DownstreamContext
  readonly stats: ExchangeStats = { status: 0, grpcStatus: undefined, requestBytes: 0, responseBytes: 0, weftError: undefined }
  private readonly req: IncomingMessage
  private readonly downstream: Downstream
  private readonly pools: UpstreamPools
  private readonly log: Logger
  private readonly closeListeners: (() => void)[] = []
  private ended = false
  private rawAnswered = false

  constructor(req: IncomingMessage, downstream: Downstream, context: DownstreamContext, pools: UpstreamPools, log: Logger) {
    this.req = req
    this.downstream = downstream
    this.context = context
    this.pools = pools
    this.log = log
    const upgrade = 'socket' in downstream
    const length = req.headers['content-length']
    const bodyless = !upgrade && req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0')
    if (bodyless) req.resume() // nothing to read; lets 'end' fire
    this.request = {
      protocol: 'http',
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      authority: req.headers.host ?? '',
      headers: req.headers,
      forward: forwardedHeaders(req.headers, context.sourceIp, upgrade),
      // An upgrade's bytes after the head belong to the new protocol, not to a body.
      body: bodyless || upgrade ? undefined : req,
      contentLength: length === undefined || req.headers['transfer-encoding'] !== undefined ? undefined : Number(length),
    }
    const over = (): void => {
      if (this.ended) return
      this.ended = true
      for (const listener of this.closeListeners) listener()
    }
    if ('res' in downstream) downstream.res.once('close', over)
    else downstream.socket.once('close', over)
  }

  get answered(): boolean {
    return 'res' in this.downstream ? this.downstream.res.headersSent : this.rawAnswered
  }

  onClose(listener: () => void): void {
    if (this.ended) listener()
    else this.closeListeners.push(listener)
  }

  send(endpoint: Endpoint, destination: Destination, headers: OutgoingHeaders, target: string, body: Buffer | Readable | undefined, onPath: (path: UpstreamPath) => void): Try {
    return sendHttp1(this.pools, this.context, endpoint, destination, { method: this.request.method, target, headers, body }, onPath)
  }

  relay(response: UpstreamResponse, done: () => void, modifiers: readonly HeaderModifier[]): void {
    const { message, upgraded } = response as Http1Response
    const status = message.statusCode ?? 502
    this.stats.status = status
    const headers = responseHeaders(message.headers, upgraded !== undefined)
    for (const modifier of modifiers) applyHeaderModifier(modifier, headers)
    if ('socket' in this.downstream) { this.relayRaw(message, upgraded, headers, done); return }
    const res = this.downstream.res
    // Cut between its head and now: nothing more will come (its 'close' has been and gone).
    if (message.destroyed && !message.complete) { res.destroy(); done(); return }
    res.writeHead(status, message.statusMessage, headers as http.OutgoingHttpHeaders)
    message.on('data', (chunk: Buffer) => { this.stats.responseBytes += chunk.length })
    message.pipe(res, { end: false })
    message.once('end', () => {
      if (message.rawTrailers.length > 0) res.addTrailers(message.rawTrailers.reduce<[string, string][]>((pairs, item, i, all) => (i % 2 === 0 ? [...pairs, [item, all[i + 1] ?? '']] : pairs), []))
      res.end()
      finishUpstream(message)
      done()
    })
    message.once('error', () => { res.destroy(); done() })
    message.once('close', () => { if (!message.complete) { res.destroy(); done() } })
  }

  fail(cause: MeshErrorCause): void {
    const answer = httpMeshError(cause)
    this.log.debug('http1: answered by the mesh', { status: answer.status, error: answer.headers[WEFT_ERROR_HEADER], path: this.request.path })
    this.answer(answer.status, answer.headers)
  }

  internalError(): void {
    this.answer(500, { [WEFT_ERROR_HEADER]: 'internal proxy error' })
  }

  redirect(status: number, location: string): void {
    this.answer(status, { location })
  }

  reset(): void {
    if ('res' in this.downstream) this.downstream.res.destroy()
    else abort(this.downstream.socket)
  }

  private answer(status: number, headers: Readonly<Record<string, string>>): void {
    if (this.answered) return
    const text = `${headers[WEFT_ERROR_HEADER] ?? ''}\n`
    this.stats.status = status
    this.stats.weftError = headers[WEFT_ERROR_HEADER]
    this.stats.responseBytes = Buffer.byteLength(text)
    if ('socket' in this.downstream) {
      this.rawAnswered = true
      const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
      this.downstream.socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${lines}content-type: text/plain\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`)
      return
    }
    const res = this.downstream.res
    if (res.destroyed) return
    res.writeHead(status, { ...headers, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) })
    res.end(text)
  }

  /** An upgrade request's answer, on the raw socket: the 101 and the joined connections, or a refusal. */
  private relayRaw(message: IncomingMessage, upgraded: Http1Response['upgraded'], headers: OutgoingHeaders, done: () => void): void {
    const { socket: client, head: clientHead } = this.downstream as { socket: Socket; head: Buffer }
    this.rawAnswered = true
    const lines: string[] = []
    for (const [name, value] of Object.entries(headers)) {
      for (const item of Array.isArray(value) ? value : [value]) if (item !== undefined) lines.push(`${name}: ${item}\r\n`)
    }
    const status = message.statusCode ?? 502
    if (!upgraded) {
      // Refused: relay the answer and close (the client asked to switch; no keep-alive here).
      client.write(`HTTP/1.1 ${status} ${message.statusMessage ?? ''}\r\n${lines.join('')}connection: close\r\ntransfer-encoding: chunked\r\n\r\n`)
      message.on('data', (chunk: Buffer) => { this.stats.responseBytes += chunk.length; client.write(`${chunk.length.toString(16)}\r\n`); client.write(chunk); client.write('\r\n') })
      message.once('end', () => { client.end('0\r\n\r\n'); done() })
      message.once('error', () => { abort(client); done() })
      return
    }
    const { socket: server, head: serverHead } = upgraded
    client.write(`HTTP/1.1 101 ${message.statusMessage ?? 'Switching Protocols'}\r\n${lines.join('')}connection: upgrade\r\n\r\n`)
    if (serverHead.length > 0) client.write(serverHead)
    if (clientHead.length > 0) server.write(clientHead)
    splice(client, server, {
      idleTimeoutMs: 0,
      onBytes: (flow, n) => { if (flow === 'sent') this.stats.requestBytes += n; else this.stats.responseBytes += n },
      onDone: () => done(),
    })
    client.resume()
  }
}

/**
 * The headers to send upstream: the client's, minus hop-by-hop ones, plus `x-request-id` and
 * `x-forwarded-for` when the client did not send them. An upgrade keeps `upgrade` and
 * `connection: upgrade`, which ask the endpoint to switch.
 */
export function forwardedHeaders(incoming: IncomingHttpHeaders, sourceIp: string, upgrade = false): OutgoingHeaders {
  const named = connectionNamed(incoming.connection)
  const headers: OutgoingHeaders = {}
  for (const [name, value] of Object.entries(incoming)) {
    if (HOP_BY_HOP.has(name) || named.has(name)) continue
    headers[name] = value
  }
  // "TE: trailers" is the one TE value a proxy passes on (gRPC needs it).
  if (asksForTrailers(incoming.te)) headers.te = 'trailers'
  if (upgrade && incoming.upgrade !== undefined) {
    headers.upgrade = incoming.upgrade
    headers.connection = 'upgrade'
  }
  headers[REQUEST_ID_HEADER] ??= randomUUID()
  headers['x-forwarded-for'] ??= sourceIp
  return headers
}
