// The L7 request path, the same for every protocol: a frontend (http1.ts for HTTP/1.1, http2.ts
// for HTTP/2 and gRPC) parses a request into an `Exchange` and hands it here; this file decides
// everything about it, one small step per decision, each reading the ready-made objects of the
// current snapshot (destinations.ts):
//
//   route (the VIP:port's route table) → split (the rule's weighted backends) → faults (delay,
//   abort) → circuit breaker (requests in flight) → pick (balancer, locality, outlier ejections)
//   → authorize (an endpoint on this node: its AuthorizationPolicies, with the request's method,
//   path and host; an endpoint elsewhere is authorized by its own node, src/datapath/inbound.ts)
//   → try (the frontend's transport: a pooled connection, direct or through the tunnel) →
//   outlier record → retry while the policy, the budget and the breaker allow → relay.
//
// The frontend owns the wire: how a request is read, how a try is sent upstream, how a response
// or weft's own error is written back (an HTTP status with `weft-error`, or a gRPC status).
// This file owns the decisions and the telemetry of each request.
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { Endpoint, MeshSnapshot } from '../config/resources/index.ts'
import type { AccessLog } from '../telemetry/access-log.ts'
import type { Logger } from '../telemetry/log.ts'
import { NO_GRPC_STATUS, type NodeMetrics, type RequestLabels, type RetryReason } from '../telemetry/metrics.ts'
import { authorize } from '../policy/authorization.ts'
import { hashKeyOf, type EndpointState } from './balancers.ts'
import { isOpen, type Release } from './breaker.ts'
import { type Destination, type DestinationView, L7Configs } from './destinations.ts'
import type { MeshErrorCause, NotHttp2Answer } from './errors.ts'
import type { Clock, Random } from './random.ts'
import type { AttemptOutcome, RetryPolicy } from './retry.ts'
import { applyHeaderModifier, redirectLocation, rewritePath, type HeaderModifier } from './router.ts'
import { ReplayableBody } from './replay.ts'
import type { UpstreamPath } from './upstream.ts'

export type L7Protocol = 'http' | 'http2' | 'grpc'
export type OutgoingHeaders = Record<string, string | string[] | undefined>

/** Who is calling and what they dialled, known from the accepted connection. */
export interface DownstreamContext {
  readonly sourceIp: string
  /** `namespace/name` of the calling pod, or `unknown`. */
  readonly sourceWorkload: string
  /** The calling pod's SPIFFE ID, or undefined when it is not a known workload. */
  readonly sourceIdentity: string | undefined
  readonly vip: string
  readonly port: number
}

/** A request as the pipeline reads it, whatever the protocol. Header names are lowercase. */
export interface ProxyRequest {
  readonly protocol: L7Protocol
  readonly method: string
  /** Path and query. */
  readonly path: string
  readonly authority: string
  /** As received: what routes match and consistent hashing reads. */
  readonly headers: IncomingHttpHeaders
  /** The headers to send upstream: hop-by-hop ones removed, x-request-id and x-forwarded-for added. Route filters modify them. */
  readonly forward: OutgoingHeaders
  /** The body, or undefined when the head says there is none. */
  readonly body: Readable | undefined
  /** The declared Content-Length, when there is one. */
  readonly contentLength: number | undefined
}

/** An upstream response head, its body still to read. */
export interface UpstreamResponse {
  readonly status: number
  /** grpc-status in the head (a trailers-only gRPC response), if any. */
  readonly grpcStatus: number | undefined
  readonly body: Readable
  /** Throws the response away (a retried try); its connection goes back to the pool when it can. */
  discard(): void
}

/** How one try ended, with the response when there was one. */
export interface Attempt {
  readonly outcome: AttemptOutcome
  readonly response?: UpstreamResponse | undefined
  /** The try was refused before anything was sent (a breaker limit on connections or pending requests): answer with this, do not retry. */
  readonly refused?: Extract<MeshErrorCause, { kind: 'breaker-open' }> | undefined
  /** A connect failure because the endpoint does not speak HTTP/2 (how it showed it), for the error the client gets. */
  readonly notHttp2?: NotHttp2Answer | undefined
}

/** One try in flight. */
export interface Try {
  readonly result: Promise<Attempt>
  /** Ends the try (a timeout or the client leaving); `result` settles if it had not. */
  cancel(): void
}

/** What the client got, filled in by the frontend as it answers; read for metrics and the access log. */
export interface ExchangeStats {
  /** The status sent to the client; 0 until (and unless) one is sent. */
  status: number
  grpcStatus: number | undefined
  requestBytes: number
  responseBytes: number
  /** The cause, when weft answered itself. */
  weftError: string | undefined
}

/** One request, as a frontend hands it over. */
export interface Exchange {
  readonly request: ProxyRequest
  readonly context: DownstreamContext
  readonly stats: ExchangeStats
  /** Whether a response head has gone to the client. */
  readonly answered: boolean
  /** Sends one try to `endpoint` (body: the buffered body, or a stream of it from replay.ts; undefined: none). */
  send(endpoint: Endpoint, destination: Destination, headers: OutgoingHeaders, target: string, body: Buffer | Readable | undefined, onPath: (path: UpstreamPath) => void): Try
  /** A redirect (a route's RequestRedirect): `status` with `location`, instead of the request going on. */
  redirect(status: number, location: string): void
  /**
   * Relays an upstream response to the client (head, streamed body, trailers); `done` when it is
   * over. `modifiers` (the route's ResponseHeaderModifiers, in order) apply to the head.
   */
  relay(response: UpstreamResponse, done: () => void, modifiers: readonly HeaderModifier[]): void
  /** weft's own answer: a status naming the cause (no-op when a head already went out: then the stream is reset). */
  fail(cause: MeshErrorCause): void
  /** A 500 (or gRPC INTERNAL) for a failure of weft itself. */
  internalError(): void
  /** Resets the client's request (after the head went out, nothing else can be said). */
  reset(): void
  /** Called once when the exchange is over, answered or not. */
  onClose(listener: () => void): void
}

export interface PipelineOptions {
  readonly node: string
  readonly snapshot: () => MeshSnapshot
  readonly metrics: NodeMetrics
  readonly log: Logger
  readonly accessLog?: AccessLog | undefined
  /** Request bodies up to this size (by Content-Length) are buffered so a retry can replay them. */
  readonly maxReplayBytes?: number | undefined
  readonly random?: Random | undefined
  readonly now?: Clock | undefined
}

export const DEFAULT_MAX_REPLAY_BYTES = 64 * 1024
const NO_MODIFIERS: readonly HeaderModifier[] = Object.freeze([])

export class Pipeline {
  readonly configs: L7Configs
  private readonly options: PipelineOptions
  private readonly random: Random
  private readonly now: Clock
  private readonly maxReplayBytes: number
  private readonly onConfig: ((snapshot: MeshSnapshot) => void)[] = []
  private readonly metrics: NodeMetrics

  constructor(options: PipelineOptions) {
    this.options = options
    this.random = options.random ?? Math.random
    this.now = options.now ?? (() => performance.now())
    this.maxReplayBytes = options.maxReplayBytes ?? DEFAULT_MAX_REPLAY_BYTES
    this.metrics = options.metrics
    this.configs = new L7Configs({ random: this.random, now: this.now, node: options.node }, (config) => {
      for (const listener of this.onConfig) listener(config.snapshot)
    })
  }

  /** Called with each new snapshot the pipeline compiles (the transports prune their pools). */
  onSnapshot(listener: (snapshot: MeshSnapshot) => void): void {
    this.onConfig.push(listener)
  }

  /** The destinations of the current snapshot with their live state (the admin endpoint's /debug/destinations). */
  describe(): DestinationView[] {
    return this.configs.get(this.options.snapshot()).describe(this.now())
  }

  /** Handles one request to the end; never rejects (an unexpected failure is logged and answered 500 or reset). */
  async handle(exchange: Exchange): Promise<void> {
    try {
      await this.run(exchange)
    } catch (err) {
      this.options.log.error('l7: unexpected failure handling a request', { error: err, path: exchange.request.path })
      if (!exchange.answered) exchange.internalError()
      else exchange.reset()
    }
  }

  private async run(exchange: Exchange): Promise<void> {
    const { request, context } = exchange
    const started = this.now()
    const startedAt = Date.now()
    const config = this.configs.get(this.options.snapshot())
    const dialled = config.destinationAt(context.vip, context.port)
    const logged = this.options.accessLog?.sampled() ?? false
    const trace = {
      destinationService: dialled?.name ?? `${context.vip}:${context.port}`,
      destinationWorkload: 'unknown',
      endpoint: undefined as string | undefined,
      retries: 0,
      upstreamPath: undefined as UpstreamPath | undefined,
      replay: undefined as ReplayableBody | undefined,
    }
    let gone = false
    exchange.onClose(() => { gone = true; this.record(exchange, trace, started, startedAt, logged) })
    if (!dialled) { exchange.fail({ kind: 'no-healthy-endpoint', destination: `${context.vip}:${context.port}` }); return }

    // Route and split.
    let destination: Destination | undefined = dialled
    let retry: RetryPolicy = config.defaultRetry
    let requestTimeoutMs: number | undefined
    let responseModifiers: readonly HeaderModifier[] = NO_MODIFIERS
    let upstreamTarget = request.path
    const headers = request.forward
    const table = config.tables.get(`${context.vip}:${context.port}`)
    if (table && !table.empty) {
      const routed = table.route({ method: request.method, path: request.path, headers: request.headers })
      if (!routed) { exchange.fail({ kind: 'no-route', destination: dialled.name, path: request.path }); return }
      const rule = routed.rule
      if (rule.requestRedirect) {
        exchange.redirect(rule.requestRedirect.statusCode, redirectLocation(rule.requestRedirect, { scheme: 'http', authority: request.authority, port: context.port, target: request.path }, routed.prefix))
        return
      }
      if (rule.urlRewrite) {
        const rewrite = rule.urlRewrite
        if (rewrite.hostname !== undefined) headers[request.protocol === 'http' ? 'host' : ':authority'] = rewrite.hostname
        if (rewrite.path) upstreamTarget = rewritePath(request.path, rewrite.path, routed.prefix)
      }
      const state = config.ruleState(rule)
      const backend = state.split.pick(this.random)
      if (!backend) { exchange.fail({ kind: 'no-backend', destination: dialled.name, route: rule.route }); return }
      if (rule.requestHeaderModifier) applyHeaderModifier(rule.requestHeaderModifier, headers)
      if (backend.requestHeaderModifier) applyHeaderModifier(backend.requestHeaderModifier, headers)
      responseModifiers = [rule.responseHeaderModifier, backend.responseHeaderModifier].filter((modifier) => modifier !== undefined)
      destination = config.destinationOf(backend)
      if (!destination) { exchange.fail({ kind: 'no-healthy-endpoint', destination: `${backend.service}:${backend.port}` }); return }
      trace.destinationService = destination.name
      retry = state.retry
      requestTimeoutMs = rule.timeouts.requestMs
    }
    const target: Destination = destination

    // Faults: a delay first, then perhaps an abort instead of the request.
    if (target.faults) {
      const fault = target.faults.decide(this.random)
      if (fault.delayMs > 0) {
        await new Promise((resolve) => setTimeout(resolve, fault.delayMs))
        if (gone) return
      }
      if (fault.abortStatus !== undefined) {
        exchange.fail({ kind: 'fault-abort', destination: target.name, status: fault.abortStatus, grpcStatus: fault.abortGrpcStatus })
        return
      }
    }

    // The overall request timeout (the whole exchange, body included) ends whatever is in flight.
    let over = false
    let current: Try | undefined
    const requestTimer = requestTimeoutMs === undefined ? undefined : setTimeout(() => {
      over = true
      current?.cancel()
      trace.replay?.discardRest()
      if (!exchange.answered) exchange.fail({ kind: 'timeout', destination: target.name, timeout: 'request', ms: requestTimeoutMs })
      else exchange.reset()
    }, requestTimeoutMs)
    exchange.onClose(() => { over = true; clearTimeout(requestTimer); current?.cancel(); trace.replay?.discardRest() })

    // The body: read whole when its declared length is small (a retry resends the buffer), else
    // streamed to the try as it arrives with a bounded copy for a retry (replay.ts). Read before
    // the breaker is asked, so a client slow to send its body holds no slot.
    const body = await this.bufferedBody(request)
    if (body === 'aborted' || over) return
    const replay = body === undefined && request.body ? new ReplayableBody(request.body, this.maxReplayBytes) : undefined
    trace.replay = replay
    exchange.stats.requestBytes = body?.length ?? 0
    const hashKey = target.hashOn ? hashKeyOf(target.hashOn, request.headers, context.sourceIp) : undefined

    // The breaker: requests in flight to this destination.
    const admitted = target.breaker.tryAcquire('requests')
    if (isOpen(admitted)) {
      clearTimeout(requestTimer)
      this.metrics.circuitBreakerTrips.inc({ destination_service: target.name, limit: admitted.open.limit })
      exchange.fail({ kind: 'breaker-open', destination: target.name, limit: admitted.open.limit, max: admitted.open.max })
      return
    }
    exchange.onClose(admitted)
    // Once the exchange has its answer, whatever the client still sends is read and dropped (a
    // try that stopped reading must not leave the client paused for ever).
    const concluded = (): void => { clearTimeout(requestTimer); replay?.discardRest() }

    target.budget.recordRequest()
    let retryHeld: Release | undefined
    const releaseRetry = (): void => { retryHeld?.(); retryHeld = undefined }
    exchange.onClose(releaseRetry)
    // The first try's body; a retry's is opened when the retry is decided, so what the client
    // sends during the backoff is kept for it.
    let tryBody: Buffer | Readable | undefined = body ?? replay?.open()
    for (let retries = 0; ; retries++) {
      const picked = target.pick(hashKey)
      if (!picked) { concluded(); exchange.fail({ kind: 'no-healthy-endpoint', destination: target.name }); return }
      trace.endpoint = picked.id
      trace.retries = retries
      trace.destinationWorkload = picked.endpoint.workload ? `${picked.endpoint.workload.namespace}/${picked.endpoint.workload.name}` : 'unknown'
      const denial = this.authorizeHere(picked.endpoint, target.snapshot, context, request, trace.destinationWorkload)
      if (denial !== undefined) { concluded(); exchange.fail({ kind: 'denied', destination: target.name, reason: denial }); return }
      const attempt = await this.attempt(exchange, target, picked, headers, upstreamTarget, tryBody, retry.perTryTimeoutMs, (started) => { current = started }, (path) => { trace.upstreamPath = path })
      releaseRetry()
      if (over) { attempt.response?.discard(); return }
      if (attempt.refused) {
        concluded()
        this.metrics.circuitBreakerTrips.inc({ destination_service: target.name, limit: attempt.refused.limit })
        exchange.fail(attempt.refused)
        return
      }
      const { outcome, response } = attempt
      const ejection = target.recordOutcome(picked, outcome)
      if (ejection) {
        this.metrics.outlierEjections.inc({ destination_service: target.name, endpoint: ejection.id, reason: ejection.reason })
        this.options.log.info('l7: endpoint ejected by outlier detection', { destination: target.name, endpoint: ejection.id, reason: ejection.reason, ejections: ejection.times })
      }
      if ((body !== undefined || replay?.replayable === true) && retry.shouldRetry(outcome, retries)) {
        const allowed = this.mayRetry(target)
        // The body may have outgrown its copy since the check: then there is nothing to resend.
        const nextBody = typeof allowed === 'function' ? body ?? replay?.open() : undefined
        if (typeof allowed === 'function' && nextBody === undefined) allowed()
        if (typeof allowed === 'function' && nextBody !== undefined) {
          retryHeld = allowed
          tryBody = nextBody
          this.metrics.retries.inc({ destination_service: target.name, reason: retryReason(outcome) })
          response?.discard()
          const wait = retry.backoffMs(retries, this.random)
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
          if (over) return
          continue
        }
        if (!response && typeof allowed !== 'function') {
          concluded()
          exchange.fail(allowed)
          return
        }
      }
      if (response) { exchange.relay(response, concluded, responseModifiers); return }
      concluded()
      switch (outcome.kind) {
        case 'timeout': exchange.fail({ kind: 'timeout', destination: target.name, timeout: 'backendRequest', ms: retry.perTryTimeoutMs ?? 0 }); return
        case 'connect-failure':
          exchange.fail(attempt.notHttp2 === undefined
            ? { kind: 'upstream-connect-failure', destination: target.name, endpoint: picked.id }
            : { kind: 'upstream-not-http2', destination: target.name, endpoint: picked.id, answer: attempt.notHttp2 })
          return
        default: exchange.fail({ kind: 'upstream-reset', destination: target.name, endpoint: picked.id }); return
      }
    }
  }

  /** A retry may go: a breaker slot for it (released when the retry ends) and a budget token; or the cause that stops it. */
  private mayRetry(target: Destination): Release | MeshErrorCause {
    const slot = target.breaker.tryAcquire('retries')
    if (isOpen(slot)) {
      this.metrics.circuitBreakerTrips.inc({ destination_service: target.name, limit: slot.open.limit })
      return { kind: 'breaker-open', destination: target.name, limit: slot.open.limit, max: slot.open.max }
    }
    if (!target.budget.tryRetry()) {
      slot()
      this.metrics.retryBudgetExhausted.inc({ destination_service: target.name })
      return { kind: 'retry-budget-exhausted', destination: target.name }
    }
    return slot
  }

  /**
   * The whole request body when its declared length is within the replay bound (or there is
   * none), `undefined` when it is to stream, 'aborted' when the client went away meanwhile.
   */
  private bufferedBody(request: ProxyRequest): Promise<Buffer | undefined | 'aborted'> {
    const body = request.body
    if (body === undefined) return Promise.resolve(Buffer.alloc(0))
    const length = request.contentLength
    if (length === 0) { body.resume(); return Promise.resolve(Buffer.alloc(0)) }
    if (length === undefined || length > this.maxReplayBytes) return Promise.resolve(undefined)
    return new Promise((resolve) => {
      const chunks: Buffer[] = []
      body.on('data', (chunk: Buffer) => chunks.push(chunk))
      body.once('end', () => resolve(Buffer.concat(chunks)))
      body.once('close', () => { if (!body.readableEnded) resolve('aborted') })
      body.once('error', () => resolve('aborted'))
    })
  }

  /** One try, with the per-try timeout and the balancer's bookkeeping around it. */
  /**
   * Same-node traffic is authorized like cross-node traffic, here instead of at an inbound
   * listener: undefined when allowed (or when the endpoint is on another node, whose inbound side
   * decides), else the reason for the 403.
   */
  private authorizeHere(endpoint: Endpoint, snapshot: MeshSnapshot, context: DownstreamContext, request: ProxyRequest, destinationWorkload: string): string | undefined {
    const workload = endpoint.workload
    if (workload === undefined || workload.node !== this.options.node) return undefined
    const source = snapshot.workloadsByIp.get(context.sourceIp)
    const decision = authorize(snapshot, {
      destination: workload, port: endpoint.port,
      source: { principal: source?.identity, namespace: source?.namespace, ip: context.sourceIp },
      http: { method: request.method, path: request.path, host: request.authority },
    })
    if (decision.allowed) return undefined
    this.metrics.authorizationDenied.inc({ source_workload: context.sourceWorkload, destination_workload: destinationWorkload, policy: decision.policy ?? 'none', layer: 'request' })
    this.options.log.info('authorization denied a request', { source_workload: context.sourceWorkload, destination_workload: destinationWorkload, method: request.method, path: request.path, reason: decision.reason })
    return decision.reason
  }

  private async attempt(exchange: Exchange, target: Destination, picked: EndpointState<Endpoint>, headers: OutgoingHeaders, upstreamTarget: string, body: Buffer | Readable | undefined, perTryTimeoutMs: number | undefined, onTry: (attempt: Try) => void, onPath: (path: UpstreamPath) => void): Promise<Attempt> {
    const begun = this.now()
    picked.start()
    const sent = exchange.send(picked.endpoint, target, headers, upstreamTarget, body, onPath)
    onTry(sent)
    let timer: NodeJS.Timeout | undefined
    const timeout = perTryTimeoutMs === undefined ? undefined : new Promise<Attempt>((resolve) => {
      timer = setTimeout(() => { sent.cancel(); resolve({ outcome: { kind: 'timeout' } }) }, perTryTimeoutMs)
    })
    try {
      return await (timeout ? Promise.race([sent.result, timeout]) : sent.result)
    } finally {
      clearTimeout(timer)
      picked.finish(this.now(), this.now() - begun)
    }
  }

  /** Metrics and the access log line of a finished exchange. */
  private record(exchange: Exchange, trace: { destinationService: string; destinationWorkload: string; endpoint: string | undefined; retries: number; upstreamPath: UpstreamPath | undefined; replay: ReplayableBody | undefined }, started: number, startedAt: number, logged: boolean): void {
    const { request, context, stats } = exchange
    if (trace.replay) stats.requestBytes = trace.replay.received
    const durationMs = this.now() - started
    const labels: RequestLabels = {
      reporter: 'source',
      source_workload: context.sourceWorkload,
      destination_service: trace.destinationService,
      destination_workload: trace.destinationWorkload,
      response_code: String(stats.status),
      grpc_status: grpcStatusLabel(stats.grpcStatus),
      protocol: request.protocol,
    }
    this.metrics.recordRequest(labels, { durationS: durationMs / 1000, requestBytes: stats.requestBytes, responseBytes: stats.responseBytes })
    if (!logged) return
    this.options.accessLog?.write({
      start: new Date(startedAt).toISOString(),
      durationMs: Math.round(durationMs * 1000) / 1000,
      protocol: request.protocol,
      method: request.method,
      authority: request.authority,
      path: request.path,
      status: stats.status,
      grpcStatus: stats.grpcStatus,
      requestBytes: stats.requestBytes,
      responseBytes: stats.responseBytes,
      sourceIp: context.sourceIp,
      sourceWorkload: context.sourceWorkload,
      destinationService: trace.destinationService,
      destinationWorkload: labels.destination_workload,
      endpoint: trace.endpoint,
      retries: trace.retries,
      requestId: header(request.forward['x-request-id']),
      traceparent: header(request.headers.traceparent),
      weftError: stats.weftError,
      upstreamPath: trace.upstreamPath,
    })
  }
}

/** Whether a TE header says `trailers`: the one TE value a proxy passes on (gRPC needs it). */
export function asksForTrailers(te: string | string[] | undefined): boolean {
  return typeof te === 'string' && te.toLowerCase().split(',').some((value) => value.trim() === 'trailers')
}

/** The grpc_status label: a status code 0-16, or `none`; anything else an upstream sent is `invalid` (no unbounded series). */
function grpcStatusLabel(status: number | undefined): string {
  if (status === undefined) return NO_GRPC_STATUS
  return Number.isInteger(status) && status >= 0 && status <= 16 ? String(status) : 'invalid'
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/** The label of a retry: what made the try fail. */
function retryReason(outcome: AttemptOutcome): RetryReason {
  switch (outcome.kind) {
    case 'response': return outcome.grpcStatus !== undefined && outcome.grpcStatus !== 0 && outcome.status < 500 ? 'retriable-grpc-status' : 'retriable-status'
    case 'timeout': return 'per-try-timeout'
    default: return outcome.kind
  }
}
