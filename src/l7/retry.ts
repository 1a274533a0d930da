// Retries: whether a failed try is tried again, how long to wait first, and whether the
// destination can afford it. Three parts, each a ready object built once per snapshot:
// - `RetryPolicy`: which outcomes are retriable, how many retries, the per-try timeout, and
//   exponential backoff with full jitter (a delay drawn uniformly in [0, min(max, base·2^n)]).
// - `retryConfigFromRoute`: the policy an HTTPRoute rule asks for (`retry`, and `timeouts.
//   backendRequest` as the per-try timeout).
// - `RetryBudget`: retries stay within a ratio of recent requests plus a small floor per second
//   (linkerd, finagle), so a failing backend sees at most that much extra load, never a storm.
import type { Clock, Random } from './random.ts'

/** How one try ended. */
export type AttemptOutcome =
  | { readonly kind: 'response'; readonly status: number; readonly grpcStatus?: number | undefined }
  /** The connection or stream was reset after the request went out. */
  | { readonly kind: 'reset' }
  /** No connection to the endpoint could be made (the request never left). */
  | { readonly kind: 'connect-failure' }
  /** The per-try timeout fired. */
  | { readonly kind: 'timeout' }

/**
 * - `5xx`: any 5xx response, and any try that got no response (reset, connect failure, per-try timeout).
 * - `gateway-error`: 502, 503, 504, and any try that got no response.
 * - `reset`, `connect-failure`: only those.
 * Envoy's meanings, so operators find what they expect.
 */
export type RetryCondition = '5xx' | 'gateway-error' | 'reset' | 'connect-failure'

export interface RetryConfig {
  /** Retries after the first try; 0 turns retries off. */
  readonly maxRetries: number
  readonly perTryTimeoutMs?: number | undefined
  readonly retryOn: readonly RetryCondition[]
  /** HTTP statuses retried on top of `retryOn` (Gateway API `codes`). */
  readonly statusCodes?: readonly number[] | undefined
  /** gRPC status codes retried (e.g. 14 UNAVAILABLE), read from grpc-status. */
  readonly grpcStatusCodes?: readonly number[] | undefined
  readonly backoff?: { readonly baseMs: number; readonly maxMs: number } | undefined
}

/** Envoy's defaults: 25ms base, ten times that at most. */
export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 25, maxMs: 250 })

export class RetryPolicy {
  readonly maxRetries: number
  readonly perTryTimeoutMs: number | undefined
  private readonly any5xx: boolean
  private readonly gatewayErrors: boolean
  private readonly resets: boolean
  private readonly connectFailures: boolean
  private readonly statusCodes: ReadonlySet<number>
  private readonly grpcStatusCodes: ReadonlySet<number>
  private readonly baseMs: number
  private readonly maxMs: number

  constructor(config: RetryConfig) {
    if (!Number.isInteger(config.maxRetries) || config.maxRetries < 0) throw new RangeError(`retry maxRetries: expected a whole number ≥ 0, got ${config.maxRetries}`)
    const backoff = config.backoff ?? DEFAULT_BACKOFF
    if (!(backoff.baseMs >= 0 && backoff.maxMs >= backoff.baseMs)) throw new RangeError(`retry backoff: expected 0 ≤ baseMs ≤ maxMs, got baseMs ${backoff.baseMs}, maxMs ${backoff.maxMs}`)
    this.maxRetries = config.maxRetries
    this.perTryTimeoutMs = config.perTryTimeoutMs
    this.any5xx = config.retryOn.includes('5xx')
    this.gatewayErrors = config.retryOn.includes('gateway-error')
    this.resets = config.retryOn.includes('reset')
    this.connectFailures = config.retryOn.includes('connect-failure')
    this.statusCodes = new Set(config.statusCodes ?? [])
    this.grpcStatusCodes = new Set(config.grpcStatusCodes ?? [])
    this.baseMs = backoff.baseMs
    this.maxMs = backoff.maxMs
  }

  /** Whether this outcome is one the policy retries (regardless of how many retries are left). */
  retriable(outcome: AttemptOutcome): boolean {
    switch (outcome.kind) {
      case 'reset': return this.resets || this.any5xx || this.gatewayErrors
      case 'connect-failure': return this.connectFailures || this.any5xx || this.gatewayErrors
      case 'timeout': return this.any5xx || this.gatewayErrors
      case 'response': {
        const status = outcome.status
        if (this.statusCodes.has(status)) return true
        if (this.any5xx && status >= 500 && status <= 599) return true
        if (this.gatewayErrors && (status === 502 || status === 503 || status === 504)) return true
        return outcome.grpcStatus !== undefined && this.grpcStatusCodes.has(outcome.grpcStatus)
      }
    }
  }

  /** Whether to try again after `retriesSoFar` retries ended with `outcome` (the budget is asked separately). */
  shouldRetry(outcome: AttemptOutcome, retriesSoFar: number): boolean {
    return retriesSoFar < this.maxRetries && this.retriable(outcome)
  }

  /** The wait before retry number `retry` (0 for the first retry): full jitter over [0, min(max, base·2^retry)). */
  backoffMs(retry: number, random: Random): number {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(retry, 30))
    return random() * ceiling
  }
}

/**
 * The retry policy of an HTTPRoute rule (router's `RouteRetry` and `backendRequestMs`). Gateway
 * API leaves the defaults to the implementation; weft's: 2 retries (Envoy's), on the listed codes
 * or else on gateway errors, always on resets and connect failures (the request did not reach an
 * application), with `backoff` as the base of the exponential backoff and ten times it as the cap.
 */
export function retryConfigFromRoute(retry: { readonly attempts: number | undefined; readonly codes: readonly number[] | undefined; readonly backoffMs: number | undefined }, backendRequestMs: number | undefined): RetryConfig {
  const baseMs = retry.backoffMs ?? DEFAULT_BACKOFF.baseMs
  return {
    maxRetries: retry.attempts ?? 2,
    perTryTimeoutMs: backendRequestMs,
    retryOn: retry.codes === undefined ? ['gateway-error', 'reset', 'connect-failure'] : ['reset', 'connect-failure'],
    statusCodes: retry.codes,
    backoff: { baseMs, maxMs: baseMs * 10 },
  }
}

export interface RetryBudgetConfig {
  /** Retries allowed per original request over the window (linkerd: 0.2, i.e. 20% extra load). */
  readonly ratio: number
  /** Retries allowed per second regardless of traffic, so a quiet service can still retry (linkerd: 10). */
  readonly minRetriesPerSecond: number
  /** How far back "recent" reaches (linkerd: 10s). */
  readonly windowMs: number
}

export const DEFAULT_RETRY_BUDGET: RetryBudgetConfig = Object.freeze({ ratio: 0.2, minRetriesPerSecond: 10, windowMs: 10_000 })

/**
 * A token bucket over a sliding window: each original request deposits `ratio` of a token, the
 * window holds a floor of `minRetriesPerSecond × window` tokens, and each retry withdraws one.
 * The window is a ring of `slots` counters, so old traffic leaves it one slot at a time.
 */
export class RetryBudget {
  private readonly config: RetryBudgetConfig
  private readonly now: Clock
  private readonly slotMs: number
  private readonly requests: Float64Array
  private readonly retries: Float64Array
  private currentSlot: number

  constructor(config: RetryBudgetConfig, now: Clock, slots = 10) {
    if (!(config.ratio >= 0) || !(config.minRetriesPerSecond >= 0) || !(config.windowMs > 0)) {
      throw new RangeError(`retry budget: expected ratio ≥ 0, minRetriesPerSecond ≥ 0, windowMs > 0, got ${JSON.stringify(config)}`)
    }
    this.config = config
    this.now = now
    this.slotMs = config.windowMs / slots
    this.requests = new Float64Array(slots)
    this.retries = new Float64Array(slots)
    this.currentSlot = Math.floor(now() / this.slotMs)
  }

  /** An original request (not a retry) was sent. */
  recordRequest(): void {
    this.requests[this.advance()]! += 1
  }

  /** Takes a token for one retry; false when the budget is spent (the caller answers with the last outcome, or 503). */
  tryRetry(): boolean {
    const slot = this.advance()
    if (this.available() < 1) return false
    this.retries[slot]! += 1
    return true
  }

  /** Retries the budget allows right now. */
  available(): number {
    this.advance()
    let requests = 0
    let retries = 0
    for (let i = 0; i < this.requests.length; i++) {
      requests += this.requests[i]!
      retries += this.retries[i]!
    }
    return Math.floor(requests * this.config.ratio + this.config.minRetriesPerSecond * this.config.windowMs / 1000 + 1e-9) - retries
  }

  // Moves the window to now, clearing the slots that fell out of it; returns the current slot's index.
  private advance(): number {
    const slots = this.requests.length
    const slot = Math.floor(this.now() / this.slotMs)
    if (slot > this.currentSlot) {
      const stale = Math.min(slot - this.currentSlot, slots)
      for (let i = 1; i <= stale; i++) {
        const index = (this.currentSlot + i) % slots
        this.requests[index] = 0
        this.retries[index] = 0
      }
      this.currentSlot = slot
    }
    return this.currentSlot % slots
  }
}
