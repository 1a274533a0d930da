// The HTTP/1.1 frontend: the outbound listener hands it a pod's connection to a service VIP (the
// port declares appProtocol http and the client did not open with the HTTP/2 preface, or the
// first bytes were an HTTP/1.x request line); it reads each request on it into an `Exchange` for
// the pipeline (pipeline.ts), which routes, balances and retries it, and carries out the
// pipeline's tries (client-h1.ts) over keep-alive pools (upstream.ts).
//
// The lean engine: the connection is read raw and framed by llhttp (h1-parser.ts) — no
// http.Server, IncomingMessage or ServerResponse per request. One request at a time per
// connection: pipelined requests wait, unparsed, until the answer before them is written, so
// answers go out in order. A request body is a stream only when there is one; a response head,
// and the body bytes that came with it, leave in one write (cork/uncork). Keep-alive, chunked
// coding both ways with trailers, 100-continue (answered here, `Expect` not forwarded),
// HTTP/1.0 clients (a close-delimited body), limits on the head (h1-parser.ts: 16 KiB, 100
// headers → 431), an idle timeout between requests and a head timeout (408). A malformed
// request gets 400 on its own connection, which closes.
//
// Upgrade (WebSocket and any other protocol switch): the request goes through the pipeline like
// any other (route, balance, breaker, tries); when the endpoint answers 101 the two connections
// are joined and bytes flow both ways untouched until either side closes. A refusal (any other
// status) is relayed as a normal response and the connection closed.
import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import { randomUUID } from 'node:crypto'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import { abort, splice } from '../datapath/splice.ts'
import type { TunnelPool } from '../datapath/tunnel.ts'
import type { AccessLog } from '../telemetry/access-log.ts'
import type { Logger } from '../telemetry/log.ts'
import type { NodeMetrics } from '../telemetry/metrics.ts'
import type { Destination } from './destinations.ts'
import { httpMeshError, WEFT_ERROR_HEADER, type MeshErrorCause } from './errors.ts'
import { ERROR_PAUSED, H1Parser, type H1Head, type H1ParseError } from './h1-parser.ts'
import { asksForTrailers, Pipeline, type DownstreamContext, type Exchange, type ExchangeStats, type OutgoingHeaders, type ProxyRequest, type Try, type UpstreamResponse } from './pipeline.ts'
import type { Clock, Random } from './random.ts'
import { applyHeaderModifier, type HeaderModifier } from './router.ts'
import { connectionNamed, HOP_BY_HOP, responseHeaders, sendHttp1, type Http1Response } from './client-h1.ts'
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
  /** A client connection with no request (or an unfinished head) for this long is closed. */
  readonly keepAliveTimeoutMs?: number | undefined
  /** A request head still incomplete this long after its first bytes is answered 408 (default HEAD_TIMEOUT_MS). */
  readonly headTimeoutMs?: number | undefined
  /** Idle upstream connections are closed after this long. */
  readonly upstreamIdleTimeoutMs?: number | undefined
  /** The HTTP/1.1 upstream pools to share with the HTTP/2 frontend (its tries to `http` ports); made here when absent. */
  readonly pools?: UpstreamPools | undefined
  readonly random?: Random | undefined
  readonly now?: Clock | undefined
}

export const REQUEST_ID_HEADER = 'x-request-id'
const CRLF = '\r\n'
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1')
const LAST_CHUNK = '0\r\n'
/** A request head that takes longer than this to arrive is answered 408 (as Node's headersTimeout; a client trickling a head must not hold a connection for ever). */
export const HEAD_TIMEOUT_MS = 60_000

/** What every connection of the frontend shares. */
interface FrontendShared {
  readonly pipeline: Pipeline
  readonly pools: UpstreamPools
  readonly log: Logger
  readonly keepAliveTimeoutMs: number
  readonly headTimeoutMs: number
}

export class Http1Proxy {
  readonly pipeline: Pipeline
  private readonly shared: FrontendShared

  constructor(options: Http1ProxyOptions) {
    this.pipeline = options.pipeline ?? new Pipeline(options)
    const pools = options.pools ?? new UpstreamPools({ node: options.node, inboundPort: options.inboundPort, connectTimeoutMs: options.connectTimeoutMs, tunnels: options.tunnels, idleTimeoutMs: options.upstreamIdleTimeoutMs })
    this.pipeline.onSnapshot((snapshot) => pools.prune(snapshot))
    this.shared = { pipeline: this.pipeline, pools, log: options.log, keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? 60_000, headTimeoutMs: options.headTimeoutMs ?? HEAD_TIMEOUT_MS }
  }

  /** Takes over an accepted (paused) connection; its first request may already be buffered in it. */
  handle(socket: Socket, context: DownstreamContext): void {
    new DownstreamConnection(socket, context, this.shared)
  }

  /** Closes the upstream pools (the downstream connections are the listener's to drain). */
  close(): void {
    this.shared.pools.close()
  }
}

/** A request body as it arrives: pushed by the parser, paused (the socket stops reading) when its reader is slow. */
class RequestBody extends Readable {
  private readonly socket: Socket

  constructor(socket: Socket) {
    super()
    this.socket = socket
  }

  override _read(): void {
    this.socket.resume()
  }
}

/** One client connection: its parser and the exchange in progress. */
class DownstreamConnection {
  readonly socket: Socket
  private readonly context: DownstreamContext
  private readonly shared: FrontendShared
  private readonly parser: H1Parser
  private current: Http1Exchange | undefined
  /** Bytes after a message that waits for the answer before it. */
  private stash: Buffer | undefined
  private waiting = false
  private clientEnded = false
  private closed = false
  /** Answered with a refusal (417, 405) and closing: nothing more is parsed. */
  private refused = false
  /** Armed while a request head is arriving in pieces. */
  private headTimer: NodeJS.Timeout | undefined

  constructor(socket: Socket, context: DownstreamContext, shared: FrontendShared) {
    this.socket = socket
    this.context = context
    this.shared = shared
    this.parser = new H1Parser('request', {
      onHead: (head) => this.head(head),
      onBody: (chunk) => this.body(chunk),
      onComplete: (trailers) => this.complete(trailers),
    })
    socket.setTimeout(shared.keepAliveTimeoutMs)
    socket.on('timeout', () => { if (!this.current) socket.destroy() })
    socket.on('data', (chunk: Buffer) => this.data(chunk))
    socket.on('end', () => this.ended())
    socket.on('error', () => {})
    socket.once('close', () => {
      this.closed = true
      clearTimeout(this.headTimer)
      this.parser.close()
      this.current?.clientGone()
    })
    socket.resume()
  }

  private data(chunk: Buffer): void {
    if (this.waiting) {
      this.stash = this.stash ? Buffer.concat([this.stash, chunk]) : chunk
      this.socket.pause()
      return
    }
    const result = this.parser.execute(chunk)
    switch (result.kind) {
      case 'ok':
        // Part of a head (or nothing but the end of a message): the rest has headTimeoutMs to come.
        if (!this.current && this.headTimer === undefined && !this.closed && !this.refused) {
          this.headTimer = setTimeout(() => this.refuse('408 Request Timeout', `request head not complete within ${this.shared.headTimeoutMs} ms`), this.shared.headTimeoutMs)
        }
        return
      case 'paused':
        this.waiting = true
        if (result.rest.length > 0) { this.stash = result.rest; this.socket.pause() }
        return
      case 'upgrade': this.upgrade(result.rest); return
      case 'error': this.malformed(result.error)
    }
  }

  private head(head: H1Head): number {
    const socket = this.socket
    if (this.headTimer !== undefined) { clearTimeout(this.headTimer); this.headTimer = undefined }
    const expect = head.headers.expect
    if (expect !== undefined) {
      if (typeof expect === 'string' && expect.toLowerCase() === '100-continue') socket.write(CONTINUE)
      else { this.refuse('417 Expectation Failed', `unsupported expectation: ${String(expect)}`); return -1 }
    }
    if (head.method === 'CONNECT') { this.refuse('405 Method Not Allowed', 'CONNECT is not proxied to a service'); return -1 }
    socket.setTimeout(0)
    const headers = head.headers as IncomingHttpHeaders
    const length = headers['content-length']
    const chunked = headers['transfer-encoding'] !== undefined
    const hasBody = !head.upgrade && (chunked || (length !== undefined && length !== '0'))
    this.current = new Http1Exchange(this, head, hasBody ? new RequestBody(socket) : undefined, this.context, this.shared.pools, this.shared.log)
    // An upgrade waits for the parser's PAUSED_UPGRADE (its bytes after the head belong to the new protocol).
    if (!head.upgrade) void this.shared.pipeline.handle(this.current)
    return 0
  }

  private body(chunk: Buffer): void {
    const body = this.current?.body
    if (body && !body.push(chunk)) this.socket.pause()
  }

  private complete(_trailers: readonly string[]): number {
    const exchange = this.current
    if (!exchange) return 0
    exchange.requestComplete()
    // An upgrade: llhttp goes on to PAUSED_UPGRADE.
    if (exchange.isUpgrade) return 0
    // Wait, unparsed, for the answer before going on to a pipelined request.
    return exchange.finished ? this.next() : ERROR_PAUSED
  }

  private upgrade(rest: Buffer): void {
    const exchange = this.current
    if (!exchange) { this.socket.destroy(); return }
    this.socket.removeAllListeners('data')
    this.socket.removeAllListeners('timeout')
    this.socket.pause()
    exchange.upgradeWith(rest)
    void this.shared.pipeline.handle(exchange)
  }

  /** The exchange's answer is written. */
  exchangeDone(exchange: Http1Exchange): void {
    if (exchange !== this.current || this.closed) return
    // Whatever of its body the pipeline did not read is read and dropped, so the next request can be parsed.
    exchange.body?.resume()
    if (!exchange.keepAlive) { this.socket.end(); return }
    if (!exchange.isRequestComplete) return // its end (complete()) moves on
    this.current = undefined
    if (this.waiting) {
      this.waiting = false
      this.parser.resume()
      const stash = this.stash
      this.stash = undefined
      this.socket.setTimeout(this.shared.keepAliveTimeoutMs)
      if (stash) this.data(stash)
      if (!this.waiting && !this.closed) this.socket.resume()
    }
    if (this.clientEnded && !this.current) this.socket.end()
  }

  /** From complete(), the exchange already answered: the next request may follow at once. */
  private next(): number {
    const exchange = this.current!
    if (!exchange.keepAlive) return ERROR_PAUSED
    this.current = undefined
    this.socket.setTimeout(this.shared.keepAliveTimeoutMs)
    return 0
  }

  private ended(): void {
    this.clientEnded = true
    const error = this.parser.finish()
    const exchange = this.current
    if (error && !exchange) { this.malformed(error); return }
    // The client stopped in the middle of a request body: that request cannot be completed.
    if (error && exchange && !exchange.isRequestComplete) { exchange.body?.destroy(); this.socket.destroy(); return }
    if (!exchange) this.socket.end()
  }

  private malformed(error: H1ParseError): void {
    if (this.refused) return
    const exchange = this.current
    // An answer already under way on this connection cannot be followed by a 400: close it.
    if (exchange?.answered === true) { exchange.body?.destroy(); this.socket.destroy(); return }
    // A request whose body turned out malformed: the 400 is its answer.
    exchange?.preempt(error.tooLarge ? 431 : 400)
    this.refuse(error.tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request', `malformed request (${error.code})`)
  }

  private refuse(status: string, reason: string): void {
    this.refused = true
    if (!this.socket.writable) { this.socket.destroy(); return }
    this.socket.end(`HTTP/1.1 ${status}${CRLF}${WEFT_ERROR_HEADER}: ${reason}${CRLF}connection: close${CRLF}content-length: 0${CRLF}${CRLF}`)
  }
}

/** One HTTP/1.1 request as the pipeline sees it. */
class Http1Exchange implements Exchange {
  readonly request: ProxyRequest
  readonly context: DownstreamContext
  readonly stats: ExchangeStats = { status: 0, grpcStatus: undefined, requestBytes: 0, responseBytes: 0, weftError: undefined }
  readonly body: RequestBody | undefined
  /** Whether the connection stays open after this exchange. */
  keepAlive: boolean
  finished = false
  isRequestComplete = false
  readonly isUpgrade: boolean
  private readonly connection: DownstreamConnection
  private readonly socket: Socket
  private readonly head: H1Head
  private readonly pools: UpstreamPools
  private readonly log: Logger
  private readonly closeListeners: (() => void)[] = []
  /** An upgrade request: the bytes after its head (the new protocol's). */
  private upgradeHead: Buffer | undefined
  private headSent = false
  private closedListenersRan = false

  constructor(connection: DownstreamConnection, head: H1Head, body: RequestBody | undefined, context: DownstreamContext, pools: UpstreamPools, log: Logger) {
    this.connection = connection
    this.socket = connection.socket
    this.head = head
    this.body = body
    this.context = context
    this.pools = pools
    this.log = log
    this.keepAlive = head.keepAlive && !head.upgrade
    this.isUpgrade = head.upgrade
    const headers = head.headers as IncomingHttpHeaders
    const length = headers['content-length']
    this.request = {
      protocol: 'http',
      method: head.method,
      path: head.url,
      authority: headers.host ?? '',
      headers,
      forward: forwardedHeaders(headers, context.sourceIp, head.upgrade),
      body,
      contentLength: length === undefined || headers['transfer-encoding'] !== undefined ? undefined : Number(length),
    }
  }

  get answered(): boolean {
    return this.headSent
  }

  onClose(listener: () => void): void {
    if (this.closedListenersRan) listener()
    else this.closeListeners.push(listener)
  }

  /** @internal the request's last byte was read. */
  requestComplete(): void {
    this.isRequestComplete = true
    this.body?.push(null)
  }

  /** @internal an upgrade request: its head is complete, what followed belongs to the new protocol. */
  upgradeWith(rest: Buffer): void {
    this.upgradeHead = rest
    this.isRequestComplete = true
  }

  /** @internal the connection answers for it (its body was malformed): whatever the pipeline does next goes nowhere. */
  preempt(status: number): void {
    this.headSent = true
    this.keepAlive = false
    this.stats.status = status
    if (this.body && !this.body.readableEnded) this.body.destroy()
    this.over()
  }

  /** @internal the client's connection closed. */
  clientGone(): void {
    if (this.body && !this.body.readableEnded) this.body.destroy()
    this.over()
  }

  private over(): void {
    this.finished = true
    if (this.closedListenersRan) return
    this.closedListenersRan = true
    for (const listener of this.closeListeners) listener()
  }

  /** The answer is written whole: the exchange is over, the connection may go on. */
  private done(): void {
    if (this.finished) return
    this.over()
    this.connection.exchangeDone(this)
  }

  send(endpoint: Endpoint, destination: Destination, headers: OutgoingHeaders, target: string, body: Buffer | Readable | undefined, onPath: (path: UpstreamPath) => void): Try {
    return sendHttp1(this.pools, this.context, endpoint, destination, { method: this.request.method, target, headers, body }, onPath)
  }

  relay(response: UpstreamResponse, done: () => void, modifiers: readonly HeaderModifier[]): void {
    const relayed = response as Http1Response
    const upgrade = this.upgradeHead !== undefined
    const status = relayed.status
    this.stats.status = status
    const headers = responseHeaders(relayed.headers, upgrade && relayed.upgraded !== undefined)
    for (const modifier of modifiers) applyHeaderModifier(modifier, headers)
    const socket = this.socket
    if (socket.destroyed || this.headSent) { relayed.discard(); done(); return }
    if (upgrade) { this.relayUpgrade(relayed, headers, done); return }
    const noBody = this.request.method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200)
    const hasLength = headers['content-length'] !== undefined
    const http11 = this.head.versionMinor >= 1
    const chunked = !noBody && !hasLength && http11
    // An HTTP/1.0 client without a length: the body ends when the connection does.
    if (!noBody && !hasLength && !http11) this.keepAlive = false
    let head = `HTTP/1.1 ${status} ${relayed.statusText}${CRLF}${headLines(headers)}`
    if (chunked) head += `transfer-encoding: chunked${CRLF}`
    if (!this.keepAlive) head += `connection: close${CRLF}`
    else if (!http11) head += `connection: keep-alive${CRLF}`
    head += CRLF
    this.headSent = true
    socket.cork()
    socket.write(head, 'latin1')
    const finish = (): void => { socket.uncork(); this.done(); done() }
    if (noBody) { relayed.discard(); finish(); return }
    let corked = true
    relayed.pipeTo({
      data: (chunk) => {
        this.stats.responseBytes += chunk.length
        let ok: boolean
        if (chunked) {
          // One write for the three parts (uncork flushes them together).
          if (!corked) socket.cork()
          socket.write(`${chunk.length.toString(16)}${CRLF}`, 'latin1')
          socket.write(chunk)
          ok = socket.write(CRLF, 'latin1')
          if (!corked) socket.uncork()
        } else ok = socket.write(chunk)
        if (!ok) socket.once('drain', () => relayed.resume())
        return ok
      },
      end: (trailers) => {
        if (chunked) {
          let tail = LAST_CHUNK
          for (let i = 0; i < trailers.length; i += 2) tail += `${trailers[i]}: ${trailers[i + 1]}${CRLF}`
          socket.write(tail + CRLF, 'latin1')
        }
        if (corked) { corked = false; finish() } else { this.done(); done() }
      },
      abort: () => {
        if (corked) { corked = false; socket.uncork() }
        // Cut short: the client must see it was (a shorter body would read as whole).
        socket.destroy()
        this.over()
        done()
      },
    })
    if (corked) { corked = false; socket.uncork() }
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
    abort(this.socket)
  }

  private answer(status: number, headers: Readonly<Record<string, string>>): void {
    if (this.headSent || this.socket.destroyed) return
    const text = `${headers[WEFT_ERROR_HEADER] ?? ''}\n`
    this.stats.status = status
    this.stats.weftError = headers[WEFT_ERROR_HEADER]
    this.stats.responseBytes = Buffer.byteLength(text)
    this.headSent = true
    if (this.upgradeHead !== undefined) this.keepAlive = false
    let lines = ''
    for (const name in headers) lines += `${name}: ${headers[name]}${CRLF}`
    this.socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}${CRLF}${lines}content-type: text/plain${CRLF}content-length: ${Buffer.byteLength(text)}${CRLF}${this.keepAlive ? '' : `connection: close${CRLF}`}${CRLF}${text}`)
    this.done()
  }

  /** An upgrade request's answer: the 101 and the joined connections, or a refusal relayed whole and the connection closed. */
  private relayUpgrade(response: Http1Response, headers: OutgoingHeaders, done: () => void): void {
    const client = this.socket
    const clientHead = this.upgradeHead ?? Buffer.alloc(0)
    this.headSent = true
    this.keepAlive = false
    const upgraded = response.upgraded
    if (!upgraded) {
      client.write(`HTTP/1.1 ${response.status} ${response.statusText}${CRLF}${headLines(headers)}connection: close${CRLF}transfer-encoding: chunked${CRLF}${CRLF}`)
      response.pipeTo({
        data: (chunk) => { this.stats.responseBytes += chunk.length; client.write(`${chunk.length.toString(16)}${CRLF}`); client.write(chunk); return client.write(CRLF) },
        end: () => { client.end(`0${CRLF}${CRLF}`); this.over(); done() },
        abort: () => { abort(client); this.over(); done() },
      })
      return
    }
    const { socket: server, head: serverHead } = upgraded
    client.write(`HTTP/1.1 101 ${response.statusText || 'Switching Protocols'}${CRLF}${headLines(headers)}connection: upgrade${CRLF}${CRLF}`)
    if (serverHead.length > 0) client.write(serverHead)
    if (clientHead.length > 0) server.write(clientHead)
    splice(client, server as Socket, {
      idleTimeoutMs: 0,
      onBytes: (flow, n) => { if (flow === 'sent') this.stats.requestBytes += n; else this.stats.responseBytes += n },
      onDone: () => { this.over(); done() },
    })
    client.resume()
  }
}

function headLines(headers: OutgoingHeaders): string {
  let lines = ''
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    if (typeof value === 'string') lines += `${name}: ${value}${CRLF}`
    else for (const item of value) lines += `${name}: ${item}${CRLF}`
  }
  return lines
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
