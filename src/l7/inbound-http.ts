// The destination side's HTTP/1.1 layer: the inbound listener hands it a connection whose
// destination pod has AuthorizationPolicies with HTTP attributes (methods, paths, hosts), so each
// request must be seen before it reaches the pod. The connection is a tunnel CONNECT stream (a
// pod on another node) or an accepted socket; each request on it is authorized (`decide`), and an
// allowed one is forwarded to the pod over one upstream connection per downstream connection,
// opened when the first allowed request needs it and reused, in order, by the ones after it.
// A denied request gets weft's 403 and the connection carries on (keep-alive).
//
// Same technique as the outbound frontend (http1.ts): a `http.Server` that never listens is given
// each connection with `emit('connection')`, so Node's parser does keep-alive, chunked coding,
// trailers and 100-continue; the 400/431 answer to a malformed request and the hop-by-hop header
// handling are http1.ts's. Bodies stream both ways with backpressure (`pipe`).
//
// Upgrade: only WebSocket. An allowed WebSocket upgrade is forwarded; on the pod's 101 the two
// connections are joined byte for byte (splice.ts), as http1.ts does. Other upgrades (h2c in
// particular) are served as plain HTTP/1.1 requests with the Upgrade header dropped: a switch to
// another protocol would carry requests this layer never sees.
//
// Paths are authorized as the pod will read them: the request target's path with percent-encoded
// unreserved characters decoded and dot segments removed (RFC 3986 6.2.2), without its query;
// the normalized path (plus the query) is what is forwarded, so `/public/../admin` is decided and
// served as `/admin`.
//
// Not here: HTTP/2 and gRPC (the inbound listener applies L4 rules to them), retries beyond one
// resend of a bodyless idempotent request on a kept-alive upstream connection the pod had closed.
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import net from 'node:net'
import type { Duplex } from 'node:stream'
import { abort, splice } from '../datapath/splice.ts'
import type { AuthorizationDecision, HttpAttributes } from '../policy/authorization.ts'
import type { Logger } from '../telemetry/log.ts'
import { NO_GRPC_STATUS, type NodeMetrics, type RequestLabels } from '../telemetry/metrics.ts'
import { httpMeshError, WEFT_ERROR_HEADER } from './errors.ts'
import { forwardedHeaders } from './http1.ts'
import { responseHeaders } from './client-h1.ts'
import type { OutgoingHeaders } from './pipeline.ts'

export type { AuthorizationDecision, HttpAttributes }

export interface InboundHttpOptions {
  /** Decides one request (a closure over authorize() with the source peer and destination fixed). */
  decide(http: HttpAttributes): AuthorizationDecision
  /** Opens the connection to the destination pod (direct TCP from this node). */
  connectUpstream(): Promise<Duplex>
  /** The client's address: `x-forwarded-for` when the request has none. */
  readonly sourceIp: string
  readonly metrics: NodeMetrics
  /** The request metrics' labels (reporter="destination"); destination_service may be `none`. */
  readonly labels: { readonly source_workload: string; readonly destination_workload: string; readonly destination_service: string }
  readonly log: Logger
  /** Called for each denied request (the lead's authorization counter). */
  onDenied?(decision: AuthorizationDecision, http: HttpAttributes): void
}

export interface InboundHttpSummary {
  /** Requests read on the connection (allowed, denied and refused as unreadable). */
  readonly requests: number
  readonly denied: number
}

export interface InboundHttpHandle {
  /** Resets the downstream connection and closes the upstream one (draining, shutdown). */
  abort(): void
  /** Settles when the downstream connection has closed and the upstream one with it. */
  readonly done: Promise<InboundHttpSummary>
}

/**
 * Serves the HTTP/1.1 requests arriving on `downstream` (a tunnel CONNECT stream or an accepted,
 * possibly paused, socket; its first request may already be buffered in it) until it closes.
 */
export function serveInboundHttp(downstream: Duplex, options: InboundHttpOptions): InboundHttpHandle {
  const connection = new InboundConnection(downstream, options)
  connections.set(downstream, connection)
  // Node's HTTP server calls socket methods an HTTP/2 stream lacks, and writes its heads as
  // latin1 strings that Http2Stream's batched write garbles (see asSocketLike).
  const socketLike = downstream instanceof net.Socket ? downstream : asSocketLike(downstream)
  server().emit('connection', socketLike)
  downstream.resume()
  return { abort: () => connection.abort(), done: connection.done }
}

/** Only WebSocket upgrades switch protocols; anything else is served as a plain request. */
function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade
  return upgrade !== undefined && upgrade.split(',').some((token) => token.trim().toLowerCase() === 'websocket')
}

const connections = new WeakMap<Duplex, InboundConnection>()
let shared: http.Server | undefined

/** The one parser-server for every inbound connection (it holds no per-connection state). */
function server(): http.Server {
  if (shared) return shared
  shared = http.createServer({
    // No keep-alive timeout of our own: the source's proxy owns the connection's idleness, and a
    // close here would reset a connection its pod still believes is open.
    keepAliveTimeout: 0,
    requestTimeout: 0,
    noDelay: true,
    shouldUpgradeCallback: isWebSocketUpgrade,
  }, (req, res) => dispatch(req, res, false))
  // An expectation is answered only once the request is allowed: a denied upload is never sent.
  shared.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => dispatch(req, res, true))
  shared.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const connection = connections.get(socket)
    // A request that could not be parsed counts as one; a connection reset or aborted does not.
    if (connection && err.code?.startsWith('HPE_') === true) connection.countUnreadable()
    answerClientError(err, socket)
  })
  shared.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const connection = connections.get(socket)
    if (connection) connection.upgrade(req, head)
    else socket.destroy()
  })
  return shared
}

function dispatch(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
  const connection = connections.get(req.socket)
  if (connection) connection.request(req, res, expectsContinue)
  else res.destroy()
}

/** A request's target as authorized and forwarded. */
export interface RequestTarget {
  /** The normalized path, without query: what policies match. */
  readonly path: string
  /** The origin-form target sent to the pod: the normalized path and the query as received. */
  readonly forward: string
  /** Lowercase; from an absolute-form target, else the Host header. */
  readonly host: string
}

/**
 * The path policies see and the target the pod gets, from a request line's target and Host
 * header; a string (why) when the target is neither origin-form, absolute-form nor `*`.
 */
export function requestTarget(target: string, hostHeader: string | undefined): RequestTarget | string {
  let host = (hostHeader ?? '').toLowerCase()
  if (target === '*') return { path: '*', forward: '*', host }
  let rest = target
  const absolute = /^https?:\/\/([^/?#]*)/i.exec(target)
  if (absolute) {
    host = absolute[1]!.toLowerCase()
    rest = target.slice(absolute[0].length)
    if (!rest.startsWith('/')) rest = `/${rest}`
  } else if (!target.startsWith('/')) {
    return `request target "${target.slice(0, 100)}" is not a path`
  }
  const fragment = rest.indexOf('#')
  if (fragment >= 0) rest = rest.slice(0, fragment)
  const question = rest.indexOf('?')
  const rawPath = question >= 0 ? rest.slice(0, question) : rest
  const query = question >= 0 ? rest.slice(question) : ''
  const path = removeDotSegments(decodeUnreserved(rawPath))
  return { path, forward: path + query, host }
}

/** %XX of an unreserved character (ALPHA DIGIT - . _ ~) decoded, other escapes uppercased (RFC 3986 6.2.2.1-2). */
function decodeUnreserved(path: string): string {
  if (!path.includes('%')) return path
  return path.replace(/%([0-9a-fA-F]{2})/g, (escape: string, hex: string) => {
    const char = String.fromCharCode(parseInt(hex, 16))
    return /[A-Za-z0-9\-._~]/.test(char) ? char : escape.toUpperCase()
  })
}

/** RFC 3986 5.2.4, on an absolute path. */
function removeDotSegments(path: string): string {
  if (!path.includes('.')) return path
  const output: string[] = []
  const segments = path.split('/').slice(1) // the path starts with '/'
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!
    const last = i === segments.length - 1
    if (segment === '.') { if (last) output.push('') }
    else if (segment === '..') { output.pop(); if (last) output.push('') }
    else output.push(segment)
  }
  return `/${output.join('/')}`
}

/** Header values come from policies and errors: keep them to what a header may carry. */
function headerSafe(text: string): string {
  return text.replace(/[^\t\x20-\x7e]/g, '?')
}

function trailerPairs(raw: readonly string[]): [string, string][] {
  const pairs: [string, string][] = []
  for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i]!, raw[i + 1]!])
  return pairs
}

/** Methods whose repetition has the effect of one request (RFC 9110 9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

/** One downstream connection: its upstream connection, counters and end. */
class InboundConnection {
  readonly done: Promise<InboundHttpSummary>
  private readonly downstream: Duplex
  private readonly options: InboundHttpOptions
  /** At most one upstream connection, made on first use; requests wait for it in order. */
  private readonly agent: http.Agent
  /** The name weft's errors give the destination. */
  private readonly destinationName: string
  private requests = 0
  private denied = 0

  constructor(downstream: Duplex, options: InboundHttpOptions) {
    this.downstream = downstream
    this.options = options
    const { destination_service: service, destination_workload: workload } = options.labels
    this.destinationName = service !== 'none' && service !== '' ? service : workload
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 })
    // Asynchronous createConnection: return nothing and answer through the callback.
    this.agent.createConnection = ((_options: unknown, callback: (err: Error | null, stream?: Duplex) => void) => {
      options.connectUpstream().then(
        (upstream) => {
          if (downstream.destroyed) { upstream.destroy(); callback(new Error('the downstream connection closed while connecting')); return }
          callback(null, upstream instanceof net.Socket ? upstream : asSocketLike(upstream))
        },
        (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
      )
      return undefined
    }) as unknown as http.Agent['createConnection']
    this.done = new Promise((resolve) => {
      downstream.once('close', () => {
        this.agent.destroy()
        resolve({ requests: this.requests, denied: this.denied })
      })
    })
  }

  abort(): void {
    abort(this.downstream)
    this.agent.destroy()
  }

  countUnreadable(): void {
    this.requests++
  }

  /** One request from the 'request' (or, expecting 100-continue, 'checkContinue') event. */
  request(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    this.requests++
    const started = performance.now()
    const stats = { requestBytes: 0, responseBytes: 0 }
    res.once('close', () => this.record(res.headersSent ? res.statusCode : 0, started, stats))
    const target = requestTarget(req.url ?? '/', req.headers.host)
    if (typeof target === 'string') { stats.responseBytes = this.answer(res, 400, `malformed request: ${target}`, true); return }
    const attributes: HttpAttributes = { method: req.method ?? 'GET', path: target.path, host: target.host }
    const decision = this.decide(attributes)
    if (decision === undefined) { stats.responseBytes = this.answer(res, 500, 'internal proxy error: the authorization decision failed', expectsContinue); return }
    if (!decision.allowed) {
      const denial = httpMeshError({ kind: 'denied', destination: this.destinationName, reason: decision.reason })
      // Without the 100 the client may never send the body Node would skip to reach the next request.
      stats.responseBytes = this.answer(res, denial.status, denial.headers[WEFT_ERROR_HEADER] ?? decision.reason, expectsContinue)
      return
    }
    if (expectsContinue) res.writeContinue()
    this.forward(req, res, target, stats, false)
  }

  /** A WebSocket upgrade request; the server has let go of the connection. */
  upgrade(req: IncomingMessage, head: Buffer): void {
    this.requests++
    const started = performance.now()
    const client = this.downstream
    const target = requestTarget(req.url ?? '/', req.headers.host)
    const refuse = (status: number, message: string): void => {
      const text = `${message}\n`
      client.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${WEFT_ERROR_HEADER}: ${headerSafe(message)}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`)
      this.record(status, started, { requestBytes: 0, responseBytes: Buffer.byteLength(text) })
    }
    if (typeof target === 'string') { refuse(400, `malformed request: ${target}`); return }
    const attributes: HttpAttributes = { method: req.method ?? 'GET', path: target.path, host: target.host }
    const decision = this.decide(attributes)
    if (decision === undefined) { refuse(500, 'internal proxy error: the authorization decision failed'); return }
    if (!decision.allowed) {
      const denial = httpMeshError({ kind: 'denied', destination: this.destinationName, reason: decision.reason })
      refuse(denial.status, denial.headers[WEFT_ERROR_HEADER] ?? decision.reason)
      return
    }
    const upstreamRequest = http.request({ agent: this.agent, method: attributes.method, path: target.forward, headers: forwardedHeaders(req.headers, this.options.sourceIp, true) as http.OutgoingHttpHeaders, setHost: false })
    upstreamRequest.end()
    let responded = false
    upstreamRequest.once('upgrade', (message: IncomingMessage, server: Duplex, serverHead: Buffer) => {
      responded = true
      const stats = { requestBytes: 0, responseBytes: 0 }
      client.write(`HTTP/1.1 101 ${message.statusMessage ?? 'Switching Protocols'}\r\n${headLines(responseHeaders(message.headers, true))}connection: upgrade\r\n\r\n`)
      if (serverHead.length > 0) client.write(serverHead)
      if (head.length > 0) server.write(head)
      splice(client, server, {
        idleTimeoutMs: 0, // the source's proxy owns the connection's idleness
        onBytes: (flow, n) => { if (flow === 'sent') stats.requestBytes += n; else stats.responseBytes += n },
        onDone: () => this.record(101, started, stats),
      })
    })
    upstreamRequest.once('response', (message: IncomingMessage) => {
      // Refused by the pod: relay its answer and close (the client asked to switch; no keep-alive).
      responded = true
      const stats = { requestBytes: 0, responseBytes: 0 }
      const status = message.statusCode ?? 502
      client.write(`HTTP/1.1 ${status} ${message.statusMessage ?? ''}\r\n${headLines(responseHeaders(message.headers, false))}connection: close\r\ntransfer-encoding: chunked\r\n\r\n`)
      message.on('data', (chunk: Buffer) => { stats.responseBytes += chunk.length; client.write(`${chunk.length.toString(16)}\r\n`); client.write(chunk); client.write('\r\n') })
      message.once('end', () => { client.end('0\r\n\r\n'); this.record(status, started, stats) })
      message.once('close', () => { if (!message.complete) { abort(client); this.record(status, started, stats) } })
    })
    upstreamRequest.once('error', (err: Error) => {
      if (responded) { abort(client); return }
      this.options.log.debug('inbound http: upgrade could not reach the pod', { destination: this.destinationName, error: err.message })
      refuse(502, `cannot reach ${this.destinationName}: ${err.message}`)
    })
  }

  /** The decision, or undefined when deciding threw (the request is refused, never let through). */
  private decide(attributes: HttpAttributes): AuthorizationDecision | undefined {
    let decision: AuthorizationDecision
    try {
      decision = this.options.decide(attributes)
    } catch (err) {
      this.options.log.error('inbound http: authorization decision failed; request refused', { destination: this.destinationName, method: attributes.method, path: attributes.path, error: err })
      return undefined
    }
    if (!decision.allowed) {
      this.denied++
      this.options.log.debug('inbound http: request denied', { destination: this.destinationName, method: attributes.method, path: attributes.path, reason: decision.reason })
      this.options.onDenied?.(decision, attributes)
    }
    return decision
  }

  /** Forwards an allowed request to the pod and relays its response. */
  private forward(req: IncomingMessage, res: ServerResponse, target: RequestTarget, stats: { requestBytes: number; responseBytes: number }, resent: boolean): void {
    const method = req.method ?? 'GET'
    const length = req.headers['content-length']
    const chunked = req.headers['transfer-encoding'] !== undefined
    const bodyless = !chunked && (length === undefined || length === '0')
    const headers: OutgoingHeaders = forwardedHeaders(req.headers, this.options.sourceIp)
    // A body without a length goes chunked whatever the method (Node chunks only some by
    // default, and would send a GET's body unframed), and so can carry the client's trailers.
    if (chunked) headers['transfer-encoding'] = 'chunked'
    const upstreamRequest = http.request({ agent: this.agent, method, path: target.forward, headers: headers as http.OutgoingHttpHeaders, setHost: false })
    let answered = false
    upstreamRequest.once('response', (message: IncomingMessage) => {
      answered = true
      if (res.destroyed) { message.resume(); upstreamRequest.destroy(); return }
      res.writeHead(message.statusCode ?? 502, message.statusMessage, responseHeaders(message.headers, false) as http.OutgoingHttpHeaders)
      message.on('data', (chunk: Buffer) => { stats.responseBytes += chunk.length })
      message.pipe(res, { end: false })
      message.once('end', () => {
        if (message.rawTrailers.length > 0) res.addTrailers(trailerPairs(message.rawTrailers))
        res.end()
        finishUpstream(message)
      })
      // The pod closed mid-response: the client cannot be told in-band; it sees the connection close.
      message.once('close', () => { if (!message.complete) res.destroy() })
    })
    upstreamRequest.once('error', (err: NodeJS.ErrnoException) => {
      if (answered || res.headersSent) { res.destroy(); return }
      // A kept-alive connection the pod had closed: a bodyless idempotent request is sent once more.
      if (!resent && bodyless && upstreamRequest.reusedSocket && err.code === 'ECONNRESET' && IDEMPOTENT.has(method)) {
        this.forward(req, res, target, stats, true)
        return
      }
      this.options.log.debug('inbound http: request could not reach the pod', { destination: this.destinationName, error: err.message })
      stats.responseBytes = this.answer(res, 502, `cannot reach ${this.destinationName}: ${err.message}`, false)
    })
    // The client left before its response was complete: stop the request to the pod too.
    res.once('close', () => { if (!res.writableFinished) upstreamRequest.destroy() })
    if (resent || bodyless) {
      if (!resent) req.resume() // nothing to read; lets 'end' fire
      upstreamRequest.end()
      return
    }
    req.on('data', (chunk: Buffer) => { stats.requestBytes += chunk.length })
    req.pipe(upstreamRequest, { end: false })
    req.once('end', () => {
      if (chunked && req.rawTrailers.length > 0) upstreamRequest.addTrailers(trailerPairs(req.rawTrailers))
      upstreamRequest.end()
    })
  }

  /** weft's own answer: `status` with `weft-error: message` and the message as the body; its body bytes. */
  private answer(res: ServerResponse, status: number, message: string, close: boolean): number {
    const text = `${message}\n`
    if (res.headersSent || res.destroyed) return 0
    const headers: http.OutgoingHttpHeaders = { [WEFT_ERROR_HEADER]: headerSafe(message), 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) }
    if (close) headers.connection = 'close'
    res.writeHead(status, headers)
    res.end(text)
    return Buffer.byteLength(text)
  }

  private record(status: number, started: number, stats: { requestBytes: number; responseBytes: number }): void {
    const labels: RequestLabels = {
      reporter: 'destination',
      source_workload: this.options.labels.source_workload,
      destination_service: this.options.labels.destination_service,
      destination_workload: this.options.labels.destination_workload,
      response_code: String(status),
      grpc_status: NO_GRPC_STATUS,
      protocol: 'http',
    }
    this.options.metrics.recordRequest(labels, { durationS: (performance.now() - started) / 1000, requestBytes: stats.requestBytes, responseBytes: stats.responseBytes })
  }
}

function headLines(headers: OutgoingHeaders): string {
  let lines = ''
  for (const [name, value] of Object.entries(headers)) {
    for (const item of Array.isArray(value) ? value : [value]) if (item !== undefined) lines += `${name}: ${item}\r\n`
  }
  return lines
}

/**
 * The shared server's 'clientError' handler: a malformed request gets a 400 (431 for oversized
 * headers) on its own connection; the daemon and the others carry on.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // A response already under way on this connection cannot be followed by a 400: close it.
  const responding = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage?.headersSent === true
  if (err.code === 'ECONNRESET' || !socket.writable || responding) { socket.destroy(); return }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request'
  socket.end(`HTTP/1.1 ${status}\r\n${WEFT_ERROR_HEADER}: malformed request (${err.code ?? 'parse error'})\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
}

/**
 * The response is over (or thrown away) while the request to it may still be sending its body
 * (the endpoint answered early): that connection is mid-request and cannot be reused, so it goes.
 */
function finishUpstream(message: IncomingMessage): void {
  const request = (message as IncomingMessage & { req?: http.ClientRequest }).req
  if (request && !request.writableFinished) request.destroy()
}

/**
 * node:http treats the Duplex it is given as a net.Socket and calls a few socket-only methods on
 * it (keep-alive, ref/unref, noDelay); an HTTP/2 stream has none of them. The tunnel's session
 * already keeps itself alive, so they are no-ops.
 */
export function asSocketLike(stream: Duplex): Duplex {
  const socketLike = stream as Duplex & Record<string, unknown>
  // node:http corks and writes its heads as latin1 strings; Http2Stream's batched write
  // (_writev) garbles string chunks (the pod's server saw a corrupt request line: 400). Without
  // it, each chunk goes through _write, which honours the encoding.
  socketLike._writev = undefined
  for (const method of ['setKeepAlive', 'setNoDelay', 'ref', 'unref']) {
    if (typeof socketLike[method] !== 'function') socketLike[method] = () => stream
  }
  return stream
}
