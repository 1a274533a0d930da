// The HTTP/1.1 proxy: the outbound listener hands it a pod's connection to a service VIP (the
// port declares appProtocol http, or the first bytes were an HTTP/1.x request line), and it
// handles each request on it:
//
//   route (the VIP:port's route table) → split (the rule's weighted backends) → balance (the
//   backend's endpoints: EWMA unless a DestinationPolicy says otherwise) → forward over a
//   keep-alive pool (direct, or through the tunnel to the endpoint's node) → retry while the
//   policy and the destination's budget allow → answer, streaming the body.
//
// Requests are parsed by a `http.Server` that never listens: each accepted socket is given to it
// with `emit('connection')`, so Node's parser, keep-alive, chunked coding and 100-continue handle
// the client side. Everything per request reads the `L7Config` of the current snapshot, compiled
// once per snapshot (destinations.ts).
//
// Bodies stream. A request body is buffered only when it is small enough to be replayed by a
// retry (`maxReplayBytes`, by its Content-Length); a larger or chunked body streams to the first
// try and is never retried. When weft ends a request itself the answer carries `weft-error`
// (errors.ts): 503 no healthy endpoint, 504 timeouts, 404 no route, and so on.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { pipeline } from 'node:stream'
import { randomUUID } from 'node:crypto'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import type { Logger } from '../telemetry/log.ts'
import type { NodeMetrics } from '../telemetry/metrics.ts'
import { hashKeyOf, type EndpointState } from './balancers.ts'
import { type Destination, L7Configs } from './destinations.ts'
import { httpMeshError, WEFT_ERROR_HEADER, type MeshErrorCause } from './errors.ts'
import type { Clock, Random } from './random.ts'
import type { AttemptOutcome, RetryPolicy } from './retry.ts'
import { applyHeaderModifier } from './router.ts'
import { ConnectFailure, UpstreamPools } from './upstream.ts'
import type { TunnelPool } from '../datapath/tunnel.ts'

export interface Http1ProxyOptions {
  readonly node: string
  readonly inboundPort: number
  readonly connectTimeoutMs: number
  readonly snapshot: () => MeshSnapshot
  readonly tunnels: TunnelPool
  readonly metrics: NodeMetrics
  readonly log: Logger
  /** Request bodies up to this size (by Content-Length) are buffered so a retry can replay them. */
  readonly maxReplayBytes?: number | undefined
  /** A client connection with no request for this long is closed. */
  readonly keepAliveTimeoutMs?: number | undefined
  readonly random?: Random | undefined
  readonly now?: Clock | undefined
}

/** Who is calling and what they dialled, known from the accepted connection. */
export interface DownstreamContext {
  readonly sourceIp: string
  /** `namespace/name` of the calling pod, or `unknown`. */
  readonly sourceWorkload: string
  readonly vip: string
  readonly port: number
}

export const DEFAULT_MAX_REPLAY_BYTES = 64 * 1024
export const REQUEST_ID_HEADER = 'x-request-id'

/**
 * Hop-by-hop headers (RFC 9110 7.6.1), never forwarded, plus any named in Connection. `expect`
 * too: the downstream server has already answered 100-continue.
 */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization', 'expect'])

type OutgoingHeaders = Record<string, string | string[] | undefined>

/** How one try ended, with the response when there was one. */
type Attempt = { readonly outcome: AttemptOutcome; readonly response?: IncomingMessage | undefined }

export class Http1Proxy {
  readonly configs: L7Configs
  private readonly options: Http1ProxyOptions
  private readonly server: http.Server
  private readonly pools: UpstreamPools
  private readonly contexts = new WeakMap<Socket, DownstreamContext>()
  private readonly random: Random
  private readonly now: Clock
  private readonly maxReplayBytes: number

  constructor(options: Http1ProxyOptions) {
    this.options = options
    this.random = options.random ?? Math.random
    this.now = options.now ?? (() => performance.now())
    this.maxReplayBytes = options.maxReplayBytes ?? DEFAULT_MAX_REPLAY_BYTES
    this.pools = new UpstreamPools({ node: options.node, inboundPort: options.inboundPort, connectTimeoutMs: options.connectTimeoutMs, tunnels: options.tunnels })
    this.configs = new L7Configs({ random: this.random, now: this.now }, (config) => this.pools.prune(config.snapshot))
    this.server = http.createServer({
      keepAliveTimeout: options.keepAliveTimeoutMs ?? 60_000,
      // Timeouts are the routes' to set; a slow upload or a long poll is not ours to cut.
      requestTimeout: 0,
      noDelay: true,
    }, (req, res) => {
      this.onRequest(req, res).catch((err: unknown) => {
        options.log.error('http1: unexpected failure handling a request', { error: err })
        if (!res.headersSent) this.answer(res, { status: 500, headers: { [WEFT_ERROR_HEADER]: 'internal proxy error' } })
        else res.destroy()
      })
    })
    // A malformed request gets a 400 on its own connection; the daemon and the others carry on.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) { socket.destroy(); return }
      socket.end(`HTTP/1.1 400 Bad Request\r\n${WEFT_ERROR_HEADER}: malformed request (${err.code ?? 'parse error'})\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
    })
    // Upgrade (WebSocket) is not proxied at L7 yet: say so rather than drop the connection.
    this.server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.end(`HTTP/1.1 501 Not Implemented\r\n${WEFT_ERROR_HEADER}: protocol upgrade is not supported by weft's HTTP/1.1 proxy yet\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
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

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = this.now()
    const context = this.contexts.get(req.socket)
    if (!context) throw new Error('a request on a connection the proxy was not given')
    const config = this.configs.get(this.options.snapshot())
    const dialled = config.destinationAt(context.vip, context.port)
    const labels = {
      reporter: 'source',
      source_workload: context.sourceWorkload,
      destination_service: dialled?.name ?? `${context.vip}:${context.port}`,
      destination_workload: 'unknown',
      protocol: 'http',
    }
    res.once('close', () => {
      const code = String(res.headersSent ? res.statusCode : 0)
      this.options.metrics.requests.inc({ ...labels, response_code: code })
      this.options.metrics.requestDuration.observe({ ...labels, response_code: code }, (this.now() - started) / 1000)
    })
    if (!dialled) {
      this.fail(req, res, { kind: 'no-healthy-endpoint', destination: `${context.vip}:${context.port}` })
      return
    }

    // Route and split.
    let routed: Destination | undefined = dialled
    let retry: RetryPolicy = config.defaultRetry
    let requestTimeoutMs: number | undefined
    const headers = forwardedHeaders(req.headers, context.sourceIp)
    const table = config.tables.get(`${context.vip}:${context.port}`)
    if (table && !table.empty) {
      const rule = table.match({ method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers })
      if (!rule) { this.fail(req, res, { kind: 'no-route', destination: dialled.name, path: req.url ?? '/' }); return }
      const state = config.ruleState(rule)
      const backend = state.split.pick(this.random)
      if (!backend) { this.fail(req, res, { kind: 'no-backend', destination: dialled.name, route: rule.route }); return }
      if (rule.requestHeaderModifier) applyHeaderModifier(rule.requestHeaderModifier, headers)
      if (backend.requestHeaderModifier) applyHeaderModifier(backend.requestHeaderModifier, headers)
      routed = config.destinationOf(backend)
      if (!routed) { this.fail(req, res, { kind: 'no-healthy-endpoint', destination: `${backend.service}:${backend.port}` }); return }
      labels.destination_service = routed.name
      retry = state.retry
      requestTimeoutMs = rule.timeouts.requestMs
    }

    const destination: Destination = routed
    // The body: buffered when a retry could replay it, streamed otherwise.
    const body = await this.replayableBody(req)
    if (body === 'aborted') return
    const hashKey = destination.hashOn ? hashKeyOf(destination.hashOn, req.headers, context.sourceIp) : undefined

    // The overall request timeout: ends whatever try is in flight.
    let timedOut = false
    let current: http.ClientRequest | undefined
    const requestTimer = requestTimeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true
      current?.destroy()
      if (!res.headersSent) this.fail(req, res, { kind: 'timeout', destination: destination.name, timeout: 'request', ms: requestTimeoutMs })
      else res.destroy()
    }, requestTimeoutMs)
    let clientGone = false
    res.once('close', () => { clientGone = true; clearTimeout(requestTimer); current?.destroy() })

    destination.budget.recordRequest()
    const snapshot = config.snapshot
    for (let retries = 0; ; retries++) {
      const picked = destination.balancer.pick(hashKey)
      if (!picked) { clearTimeout(requestTimer); this.fail(req, res, { kind: 'no-healthy-endpoint', destination: destination.name }); return }
      labels.destination_workload = picked.endpoint.workload ? `${picked.endpoint.workload.namespace}/${picked.endpoint.workload.name}` : 'unknown'
      const attempt = await this.attempt(picked, snapshot, context, req, headers, body, retry.perTryTimeoutMs, (request) => { current = request })
      if (timedOut || clientGone) { attempt.response?.destroy(); return }
      const { outcome, response } = attempt
      const canReplay = body !== undefined
      if (canReplay && retry.shouldRetry(outcome, retries)) {
        if (destination.budget.tryRetry()) {
          response?.resume() // discard the failed response; its connection goes back to the pool
          const wait = retry.backoffMs(retries, this.random)
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
          if (timedOut || clientGone) return
          continue
        }
        if (!response) {
          clearTimeout(requestTimer)
          this.fail(req, res, { kind: 'retry-budget-exhausted', destination: destination.name })
          return
        }
      }
      if (response) { this.relay(response, res, () => clearTimeout(requestTimer)); return }
      clearTimeout(requestTimer)
      const endpoint = picked.id
      switch (outcome.kind) {
        case 'timeout': this.fail(req, res, { kind: 'timeout', destination: destination.name, timeout: 'backendRequest', ms: retry.perTryTimeoutMs ?? 0 }); return
        case 'connect-failure': this.fail(req, res, { kind: 'upstream-connect-failure', destination: destination.name, endpoint }); return
        default: this.fail(req, res, { kind: 'upstream-reset', destination: destination.name, endpoint }); return
      }
    }
  }

  /**
   * The whole request body when it can be replayed (none, or a Content-Length within the bound),
   * `undefined` when it must stream to one try, 'aborted' when the client went away meanwhile.
   */
  private replayableBody(req: IncomingMessage): Promise<Buffer | undefined | 'aborted'> {
    const length = req.headers['content-length']
    const chunked = req.headers['transfer-encoding'] !== undefined
    if (!chunked && (length === undefined || length === '0')) {
      req.resume() // nothing to read; lets 'end' fire
      return Promise.resolve(Buffer.alloc(0))
    }
    if (chunked || Number(length) > this.maxReplayBytes) return Promise.resolve(undefined)
    return new Promise((resolve) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.once('end', () => resolve(Buffer.concat(chunks)))
      req.once('close', () => { if (!req.complete) resolve('aborted') })
    })
  }

  /** One try against one endpoint; resolves with the response head, or how it failed. */
  private attempt(picked: EndpointState<Endpoint>, snapshot: MeshSnapshot, context: DownstreamContext, req: IncomingMessage, headers: OutgoingHeaders, body: Buffer | undefined, perTryTimeoutMs: number | undefined, onRequest: (request: http.ClientRequest) => void): Promise<Attempt> {
    const endpoint = picked.endpoint
    const upstream = this.pools.for(endpoint, context.sourceWorkload, snapshot)
    const begun = this.now()
    picked.start()
    return new Promise((resolve) => {
      let settled = false
      const settle = (attempt: Attempt): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        picked.finish(this.now(), this.now() - begun)
        resolve(attempt)
      }
      const request = http.request({
        agent: upstream.agent, host: endpoint.ip, port: endpoint.port,
        method: req.method, path: req.url, headers: headers as http.OutgoingHttpHeaders, setHost: false,
      })
      onRequest(request)
      const timer = perTryTimeoutMs === undefined ? undefined : setTimeout(() => {
        settle({ outcome: { kind: 'timeout' } })
        request.destroy()
      }, perTryTimeoutMs)
      request.once('response', (response) => settle({ outcome: { kind: 'response', status: response.statusCode ?? 502 }, response }))
      request.on('error', (err: NodeJS.ErrnoException) => {
        // A kept-alive connection the server had just closed: the request never reached it.
        const neverArrived = err instanceof ConnectFailure || CONNECT_ERRORS.has(err.code ?? '') || (request.reusedSocket && err.code === 'ECONNRESET')
        settle({ outcome: { kind: neverArrived ? 'connect-failure' : 'reset' } })
      })
      if (body !== undefined) request.end(body)
      // pipe, not pipeline: a failed try must not destroy the client's connection, which still
      // gets weft's answer.
      else req.pipe(request)
    })
  }

  /** Sends the upstream response to the client, streaming its body. */
  private relay(response: IncomingMessage, res: ServerResponse, done: () => void): void {
    const headers: OutgoingHeaders = {}
    const named = connectionNamed(response.headers.connection)
    for (const [name, value] of Object.entries(response.headers)) {
      if (!HOP_BY_HOP.has(name) && !named.has(name)) headers[name] = value
    }
    res.writeHead(response.statusCode ?? 502, response.statusMessage, headers as http.OutgoingHttpHeaders)
    pipeline(response, res, () => done())
  }

  /** weft's own answer (errors.ts). */
  private fail(req: IncomingMessage, res: ServerResponse, cause: MeshErrorCause): void {
    const answer = httpMeshError(cause)
    this.options.log.debug('http1: answered by the mesh', { status: answer.status, error: answer.headers[WEFT_ERROR_HEADER], path: req.url })
    this.answer(res, answer)
  }

  private answer(res: ServerResponse, answer: { status: number; headers: Readonly<Record<string, string>> }): void {
    if (res.headersSent || res.destroyed) return
    res.writeHead(answer.status, { ...answer.headers, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(`${answer.headers[WEFT_ERROR_HEADER] ?? ''}\n`) })
    res.end(`${answer.headers[WEFT_ERROR_HEADER] ?? ''}\n`)
  }
}

/** Error codes that mean no connection was made: the request never left. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'CONNECT_TIMEOUT', 'EADDRNOTAVAIL'])

function connectionNamed(connection: string | string[] | undefined): Set<string> {
  if (connection === undefined) return new Set()
  const text = Array.isArray(connection) ? connection.join(',') : connection
  return new Set(text.split(',').map((name) => name.trim().toLowerCase()).filter((name) => name !== ''))
}

/**
 * The headers to send upstream: the client's, minus hop-by-hop ones, plus `x-request-id` and
 * `x-forwarded-for` when the client did not send them.
 */
export function forwardedHeaders(incoming: IncomingHttpHeaders, sourceIp: string): OutgoingHeaders {
  const named = connectionNamed(incoming.connection)
  const headers: OutgoingHeaders = {}
  for (const [name, value] of Object.entries(incoming)) {
    if (HOP_BY_HOP.has(name) || named.has(name)) continue
    headers[name] = value
  }
  // "TE: trailers" is the one TE value a proxy passes on (gRPC needs it).
  if (typeof incoming.te === 'string' && incoming.te.toLowerCase().split(',').some((v) => v.trim() === 'trailers')) headers.te = 'trailers'
  headers[REQUEST_ID_HEADER] ??= randomUUID()
  headers['x-forwarded-for'] ??= sourceIp
  return headers
}
