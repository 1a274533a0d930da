// One HTTP/1.1 try to an endpoint, whichever frontend read the request: the HTTP/1.1 frontend
// (http1.ts) for every request, the HTTP/2 frontend (http2.ts) for a request whose destination
// port declares appProtocol http (a client that spoke h2c to an `http` port: the upstream protocol
// follows the port's declaration). The connection comes from the pools of upstream.ts, direct or
// through the tunnel; this file owns what is said on it and how a failure is read.
//
// The lean engine: the request head is written as one buffer (with the body, when it is buffered,
// in the same write), the response is framed by llhttp (h1-parser.ts) on the raw connection, and
// its body reaches the frontend through a `BodySink` — no ClientRequest, IncomingMessage or
// stream per request. A `Readable` of the body is made only when a frontend asks for one
// (`response.body`, the HTTP/2 frontend).
import type { IncomingHttpHeaders } from 'node:http'
import { Readable, type Duplex } from 'node:stream'
import type { Endpoint } from '../config/resources/index.ts'
import { isOpen, type BreakerOpen } from './breaker.ts'
import type { Destination } from './destinations.ts'
import { ERROR_PAUSED, H1Parser, type H1Head } from './h1-parser.ts'
import type { Attempt, OutgoingHeaders, Try, UpstreamResponse } from './pipeline.ts'
import { BreakerRefusal, type PooledConnection, type UpstreamPath, type UpstreamPools, type UpstreamSource } from './upstream.ts'

/** Where a response body goes as it arrives. `data` returns false to ask for a pause (resume with `response.resume()`). */
export interface BodySink {
  data(chunk: Buffer): boolean
  /** The body is complete; `trailers` (name, value…) from a chunked body. */
  end(trailers: readonly string[]): void
  /** The body was cut short (the endpoint reset or closed mid-body, or the try was cancelled). */
  abort(): void
}

/** A response from an HTTP/1.1 endpoint: an ordinary one, or the 101 of an upgrade with the switched connection. */
export interface Http1Response extends UpstreamResponse {
  readonly statusText: string
  /** Lowercase names (as node:http presents them). */
  readonly headers: IncomingHttpHeaders
  /** Whether the message declares its own end (Content-Length or chunked), rather than ending at close. */
  readonly framed: boolean
  readonly upgraded?: { readonly socket: Duplex; readonly head: Buffer } | undefined
  /** Sends the body (what came already, then the rest as it comes) to `sink`; once. */
  pipeTo(sink: BodySink): void
  /** After `data` returned false: more may come. */
  resume(): void
  /** The body as a stream (made on first use; then `pipeTo` is taken). */
  readonly body: Readable
  /** Trailers, once the body has ended; lowercase names. */
  readonly trailers: IncomingHttpHeaders
}

/** What one HTTP/1.1 try sends: headers without pseudo-headers (`host` among them), the target as the path. */
export interface Http1TryRequest {
  readonly method: string
  readonly target: string
  readonly headers: OutgoingHeaders
  /** The buffered body, a stream of it (replay.ts), or undefined for none. */
  readonly body: Buffer | Readable | undefined
}

/**
 * Sends one try over the pool for `source` → `endpoint`. A try waiting for its connection holds a
 * `pendingRequests` slot of the destination's breaker, a new connection a `connections` slot; a
 * refusal is an Attempt with `refused` (nothing was sent). Never rejects.
 */
export function sendHttp1(pools: UpstreamPools, source: UpstreamSource, endpoint: Endpoint, destination: Destination, request: Http1TryRequest, onPath: (path: UpstreamPath) => void): Try {
  const pending = destination.breaker.tryAcquire('pendingRequests')
  if (isOpen(pending)) return { result: Promise.resolve({ outcome: { kind: 'connect-failure' }, refused: breakerOpen(pending.open) }), cancel: () => {} }
  const pool = pools.pool(endpoint, source, destination.snapshot, destination.idleTimeoutMs)
  onPath(pool.path)
  let exchange: UpstreamExchange | undefined
  let cancelled = false
  const start = (connection: PooledConnection): Promise<Attempt> => {
    pending()
    if (cancelled) { connection.release(); return Promise.resolve({ outcome: { kind: 'reset' } }) }
    exchange = new UpstreamExchange(connection, request)
    return exchange.result
  }
  const failed = (err: unknown): Attempt => {
    pending()
    if (err instanceof BreakerRefusal) return { outcome: { kind: 'connect-failure' }, refused: breakerOpen(err.open) }
    return { outcome: { kind: 'connect-failure' } }
  }
  let result: Promise<Attempt>
  try {
    const acquired = pool.acquire(destination.breaker)
    result = acquired instanceof Promise ? acquired.then(start, failed) : start(acquired)
  } catch (err) {
    result = Promise.resolve(failed(err))
  }
  return { result, cancel: () => { cancelled = true; exchange?.cancel() } }
}

function breakerOpen(open: BreakerOpen['open']): NonNullable<Attempt['refused']> {
  return { kind: 'breaker-open', destination: open.destination, limit: open.limit, max: open.max }
}

/** Methods whose repetition has the effect of one request (RFC 9110 9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
/** Methods that carry no body by convention: no `content-length: 0` is added for them. */
const BODYLESS_METHODS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT'])
const CRLF = '\r\n'
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1')

/** The response parser of each kept-alive upstream connection, reused by its next exchange. */
const PARSERS = new WeakMap<Duplex, H1Parser>()

/** One request and its response on a pooled connection. */
class UpstreamExchange {
  readonly result: Promise<Attempt>
  private readonly connection: PooledConnection
  private readonly request: Http1TryRequest
  private readonly parser: H1Parser
  private resolve!: (attempt: Attempt) => void
  private settled = false
  private response: LeanResponse | undefined
  private requestSent = false
  private responseDone = false
  private finished = false
  private received = false
  private readonly onData = (chunk: Buffer): void => this.data(chunk)
  private readonly onEnd = (): void => this.closed(undefined)
  private readonly onError = (err: NodeJS.ErrnoException): void => this.closed(err)

  constructor(connection: PooledConnection, request: Http1TryRequest) {
    this.connection = connection
    this.request = request
    this.result = new Promise((resolve) => { this.resolve = resolve })
    const events = {
      onHead: (head: H1Head) => this.head(head),
      onBody: (chunk: Buffer) => this.response?.push(chunk),
      onComplete: (trailers: readonly string[]) => this.complete(trailers),
    }
    const stream = connection.stream
    // A kept-alive connection keeps its parser (paused at the end of the last response).
    const kept = connection.reused ? PARSERS.get(stream) : undefined
    if (kept) { kept.setEvents(events); kept.resume(); this.parser = kept }
    else this.parser = new H1Parser('response', events)
    stream.on('data', this.onData)
    stream.on('end', this.onEnd)
    stream.on('close', this.onEnd)
    stream.on('error', this.onError)
    this.write()
  }

  cancel(): void {
    if (this.finished) return
    this.settle({ outcome: { kind: 'reset' } })
    this.response?.abort()
    this.end(false)
  }

  private write(): void {
    const { method, target, headers, body } = this.request
    let head = `${method} ${target} HTTP/1.1${CRLF}`
    let hasLength = false
    for (const name in headers) {
      const value = headers[name]
      if (value === undefined) continue
      if (name === 'content-length') hasLength = true
      if (typeof value === 'string') head += `${name}: ${value}${CRLF}`
      else for (const item of value) head += `${name}: ${item}${CRLF}`
    }
    const stream = this.connection.stream
    if (body === undefined || Buffer.isBuffer(body)) {
      const length = body?.length ?? 0
      if (!hasLength && (length > 0 || (body !== undefined && !BODYLESS_METHODS.has(method)))) head += `content-length: ${length}${CRLF}`
      head += CRLF
      const bytes = Buffer.from(head, 'latin1')
      stream.write(length > 0 ? Buffer.concat([bytes, body!]) : bytes)
      this.requestSent = true
      return
    }
    // A streamed body: as it comes, chunked unless the client declared its length.
    if (!hasLength) head += `transfer-encoding: chunked${CRLF}`
    head += CRLF
    stream.write(Buffer.from(head, 'latin1'))
    const chunked = !hasLength
    const onChunk = (chunk: Buffer): void => {
      if (this.finished) return
      const ok = chunked ? stream.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}${CRLF}`, 'latin1'), chunk, Buffer.from(CRLF, 'latin1')])) : stream.write(chunk)
      if (!ok) { body.pause(); stream.once('drain', () => body.resume()) }
    }
    body.on('data', onChunk)
    body.once('end', () => {
      if (this.finished) return
      if (chunked) stream.write(LAST_CHUNK)
      this.requestSent = true
      if (this.responseDone) this.end(true)
    })
    // The client went away mid-body (or a retry's copy was outgrown): this connection is mid-request.
    body.once('close', () => { if (!body.readableEnded && !this.finished) { body.off('data', onChunk); if (!this.responseDone) this.cancel(); else this.end(false) } })
  }

  private data(chunk: Buffer): void {
    this.received = true
    const result = this.parser.execute(chunk)
    switch (result.kind) {
      case 'ok': return
      case 'paused': return
      case 'upgrade': {
        // 101: the connection is the new protocol's now; it leaves the pool.
        this.detach()
        this.finished = true
        PARSERS.delete(this.connection.stream)
        this.parser.close()
        const response = this.response!
        response.upgraded = { socket: this.connection.stream, head: result.rest }
        this.settle({ outcome: { kind: 'response', status: response.status }, response })
        return
      }
      case 'error':
        this.response?.abort()
        this.settle({ outcome: { kind: 'reset' } })
        this.end(false)
    }
  }

  private head(head: H1Head): number {
    // 1xx other than 101: informational, the response follows.
    if (head.status >= 100 && head.status < 200 && head.status !== 101) return 0
    const response = new LeanResponse(head, this)
    this.response = response
    const noBody = this.request.method === 'HEAD' || head.status === 204 || head.status === 304
    if (head.status !== 101) this.settle({ outcome: { kind: 'response', status: head.status }, response })
    return noBody ? 1 : 0
  }

  private complete(trailers: readonly string[]): number {
    const response = this.response
    if (!response) return 0 // the end of a 1xx
    if (response.status === 101) return 0
    this.responseDone = true
    response.finish(trailers)
    // The endpoint may answer before the request's body is all sent: then the connection cannot be reused.
    // (A buffered body went out with the head; a streamed one still sending ends the exchange when it is done.)
    if (this.requestSent) this.end(this.shouldKeepAlive)
    return ERROR_PAUSED
  }

  private get shouldKeepAlive(): boolean {
    return this.response?.keepAlive === true
  }

  private closed(err: NodeJS.ErrnoException | undefined): void {
    if (this.finished) return
    // A body that ends at close ends here.
    if (this.response && !this.responseDone && !this.response.framed && err === undefined) {
      const error = this.parser.finish()
      if (error === undefined && this.responseDone) return
    }
    if (!this.response) {
      // A kept-alive connection reset (or closed) before any answer is usually the endpoint
      // closing it idle (the request never arrived), but may be one that died processing it:
      // only an idempotent request is counted as never sent, so a POST is not sent twice.
      const neverArrived = this.connection.reused && !this.received && IDEMPOTENT.has(this.request.method)
      this.settle({ outcome: { kind: neverArrived ? 'connect-failure' : 'reset' } })
    } else {
      this.response.abort()
    }
    this.end(false)
  }

  /** The exchange is over: the connection goes back to its pool (`reuse`) or is closed. */
  private end(reuse: boolean): void {
    if (this.finished) return
    this.finished = true
    this.detach()
    const stream = this.connection.stream
    if (reuse) {
      if (!PARSERS.has(stream)) stream.once('close', () => { PARSERS.get(stream)?.close(); PARSERS.delete(stream) })
      PARSERS.set(stream, this.parser)
      this.connection.release()
    } else {
      PARSERS.delete(stream)
      this.parser.close()
      this.connection.destroy()
    }
  }

  private detach(): void {
    const stream = this.connection.stream
    stream.off('data', this.onData)
    stream.off('end', this.onEnd)
    stream.off('close', this.onEnd)
    stream.off('error', this.onError)
    // Errors after the exchange (a destroyed idle connection) must not throw.
    if (stream.listenerCount('error') === 0) stream.on('error', () => {})
  }

  private settle(attempt: Attempt): void {
    if (this.settled) return
    this.settled = true
    this.resolve(attempt)
  }

  /** @internal The response's consumer is slow, or ready again. */
  pause(): void { this.connection.stream.pause() }
  resumeReading(): void { if (!this.finished) this.connection.stream.resume() }
  /** @internal The response was thrown away (a retried try) or its relay stopped: the connection cannot be reused mid-body. */
  discard(): void {
    if (this.finished && this.response?.upgraded) { this.connection.stream.destroy(); return }
    if (!this.responseDone) this.end(false)
  }
}

type BodyState = 'open' | 'ended' | 'aborted'

class LeanResponse implements Http1Response {
  readonly status: number
  readonly statusText: string
  readonly grpcStatus: number | undefined
  readonly headers: IncomingHttpHeaders
  readonly keepAlive: boolean
  readonly framed: boolean
  upgraded: { socket: Duplex; head: Buffer } | undefined
  trailers: IncomingHttpHeaders = {}
  private readonly exchange: UpstreamExchange
  private sink: BodySink | undefined
  private buffered: Buffer[] = []
  private state: BodyState = 'open'
  private rawTrailers: readonly string[] = []
  private stream: Readable | undefined

  constructor(head: H1Head, exchange: UpstreamExchange) {
    this.status = head.status
    this.statusText = head.statusText
    this.headers = head.headers as IncomingHttpHeaders
    const grpc = head.headers['grpc-status']
    this.grpcStatus = typeof grpc === 'string' ? Number(grpc) : undefined
    this.keepAlive = head.keepAlive
    this.framed = head.headers['content-length'] !== undefined || head.headers['transfer-encoding'] !== undefined
    this.exchange = exchange
  }

  push(chunk: Buffer): void {
    if (this.sink) { if (!this.sink.data(chunk)) this.exchange.pause() }
    else this.buffered.push(chunk)
  }

  finish(trailers: readonly string[]): void {
    if (this.state !== 'open') return
    this.state = 'ended'
    this.rawTrailers = trailers
    const map: IncomingHttpHeaders = {}
    for (let i = 0; i < trailers.length; i += 2) map[trailers[i]!.toLowerCase()] = trailers[i + 1]!
    this.trailers = map
    this.sink?.end(trailers)
  }

  abort(): void {
    if (this.state !== 'open') return
    this.state = 'aborted'
    this.sink?.abort()
  }

  pipeTo(sink: BodySink): void {
    if (this.sink) throw new Error('response body already taken')
    this.sink = sink
    const buffered = this.buffered
    this.buffered = []
    let paused = false
    for (const chunk of buffered) if (!sink.data(chunk)) paused = true
    if (paused) this.exchange.pause()
    if (this.state === 'ended') sink.end(this.rawTrailers)
    else if (this.state === 'aborted') sink.abort()
  }

  resume(): void {
    this.exchange.resumeReading()
  }

  discard(): void {
    this.buffered = []
    this.exchange.discard()
  }

  get body(): Readable {
    if (this.stream) return this.stream
    const stream = new Readable({ read: () => this.resume() })
    this.stream = stream
    this.pipeTo({
      data: (chunk) => stream.push(chunk),
      end: () => { stream.push(null) },
      abort: () => { stream.destroy(new Error('upstream response cut short')) },
    })
    return stream
  }

  /** Whether the body ended whole (false while it streams, or when it was cut). */
  get complete(): boolean {
    return this.state === 'ended'
  }

  get aborted(): boolean {
    return this.state === 'aborted'
  }
}

/** Whether an upstream response came from an HTTP/1.1 try (this file) rather than an HTTP/2 stream. */
export function isHttp1Response(response: UpstreamResponse): response is Http1Response {
  return response instanceof LeanResponse
}

/**
 * Hop-by-hop headers (RFC 9110 7.6.1), never forwarded, plus any named in Connection. `expect`
 * too: the frontend has already answered 100-continue.
 */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization', 'expect'])

const NO_NAMES: ReadonlySet<string> = new Set()

export function connectionNamed(connection: string | string[] | undefined): ReadonlySet<string> {
  if (connection === undefined) return NO_NAMES
  const text = Array.isArray(connection) ? connection.join(',') : connection
  return new Set(text.split(',').map((name) => name.trim().toLowerCase()).filter((name) => name !== ''))
}

/** A response's headers minus hop-by-hop ones (an upgrade's `upgrade` header stays: the client needs it). */
export function responseHeaders(incoming: IncomingHttpHeaders, upgrade: boolean): OutgoingHeaders {
  const headers: OutgoingHeaders = {}
  const named = incoming.connection === undefined ? undefined : connectionNamed(incoming.connection)
  for (const name in incoming) {
    if (upgrade && name === 'upgrade') { headers[name] = incoming[name]; continue }
    if (!HOP_BY_HOP.has(name) && !named?.has(name)) headers[name] = incoming[name]
  }
  return headers
}
