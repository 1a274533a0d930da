// Outlier detection: which endpoints to take out of balancing for a while because they keep
// failing. Consecutive 5xx (or consecutive gateway errors: 502, 503, 504 and tries that got no
// response) eject an endpoint for `baseEjectionTime × n`, n counting its recent ejections, up to
// a cap; it returns by itself when the time is up. At most `maxEjectionPercent` of the
// endpoints are out at once, so detection can never empty a service on its own.
//
// The detector only decides; the pipeline mirrors the answer into the balancers' EndpointState
// (`ejected`) and counts ejections for metrics: `record()` returns each ejection, and `expire()`
// returns each return, exactly once, whichever call noticed that the time was up (`record`,
// `isEjected`, `ejected` and `expire` all bring endpoints back; an endpoint ejected again before
// its return was reported is not reported as returned). Time is the injected clock: no timers.
import { durationMs } from '../config/resources/index.ts'
import type { Clock } from './random.ts'

export interface OutlierConfig {
  /** Consecutive 5xx (and tries with no response) that eject; 0 turns this off. Envoy: 5. */
  readonly consecutive5xx: number
  /** Consecutive 502/503/504 (and tries with no response) that eject; 0 turns this off (the default). */
  readonly consecutiveGatewayErrors: number
  /** An endpoint's ejection count drops by one for each interval it stays in. Envoy: 10s. */
  readonly intervalMs: number
  readonly baseEjectionTimeMs: number
  readonly maxEjectionTimeMs: number
  readonly maxEjectionPercent: number
}

export const DEFAULT_OUTLIER: OutlierConfig = Object.freeze({
  consecutive5xx: 5,
  consecutiveGatewayErrors: 0,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 10,
})

/** A DestinationPolicy's `outlierDetection`, durations in ms, unset fields at their defaults. */
export function outlierConfigFromPolicy(spec: { consecutive5xx?: number | undefined; consecutiveGatewayErrors?: number | undefined; interval?: string | undefined; baseEjectionTime?: string | undefined; maxEjectionPercent?: number | undefined }): OutlierConfig {
  return {
    consecutive5xx: spec.consecutive5xx ?? DEFAULT_OUTLIER.consecutive5xx,
    consecutiveGatewayErrors: spec.consecutiveGatewayErrors ?? DEFAULT_OUTLIER.consecutiveGatewayErrors,
    intervalMs: spec.interval === undefined ? DEFAULT_OUTLIER.intervalMs : durationMs(spec.interval),
    baseEjectionTimeMs: spec.baseEjectionTime === undefined ? DEFAULT_OUTLIER.baseEjectionTimeMs : durationMs(spec.baseEjectionTime),
    maxEjectionTimeMs: DEFAULT_OUTLIER.maxEjectionTimeMs,
    maxEjectionPercent: spec.maxEjectionPercent ?? DEFAULT_OUTLIER.maxEjectionPercent,
  }
}

/** How a request to an endpoint ended, as outlier detection sees it. */
export type OutlierOutcome =
  | { readonly kind: 'response'; readonly status: number }
  | { readonly kind: 'reset' }
  | { readonly kind: 'connect-failure' }
  | { readonly kind: 'timeout' }

export interface Ejection {
  readonly id: string
  /** The clock reading at which it returns. */
  readonly untilMs: number
  /** This endpoint's ejection count, the multiplier of the base time. */
  readonly times: number
  /** What tripped it. */
  readonly reason: 'consecutive5xx' | 'consecutiveGatewayErrors'
}

interface EndpointRecord {
  consecutive5xx: number
  consecutiveGatewayErrors: number
  ejectedUntil: number | undefined
  times: number
  /** When it last came back (or was added): the ejection count decays from here. */
  returnedAt: number
}

export class OutlierDetector {
  private readonly config: OutlierConfig
  private readonly now: Clock
  private readonly records = new Map<string, EndpointRecord>()
  private ejectedCount = 0
  /** Ids brought back and not yet returned by `expire()`, in the order they came back. */
  private readonly returnedUnreported = new Set<string>()

  constructor(config: OutlierConfig, now: Clock, endpointIds: readonly string[] = []) {
    this.config = config
    this.now = now
    this.setEndpoints(endpointIds)
  }

  /**
   * The endpoint set changed (a snapshot): endpoints that stay keep their history. Endpoints that
   * go are forgotten, and so is a return of theirs that `expire()` had not reported yet.
   */
  setEndpoints(ids: readonly string[]): void {
    const keep = new Set(ids)
    for (const id of [...this.records.keys()]) {
      if (keep.has(id)) continue
      this.records.delete(id)
      this.returnedUnreported.delete(id)
    }
    const now = this.now()
    for (const id of ids) if (!this.records.has(id)) this.records.set(id, { consecutive5xx: 0, consecutiveGatewayErrors: 0, ejectedUntil: undefined, times: 0, returnedAt: now })
    this.recount()
  }

  /** Records how a request to `id` ended; returns the ejection it caused, if any. */
  record(id: string, outcome: OutlierOutcome): Ejection | undefined {
    const record = this.records.get(id)
    if (!record || this.isEjected(id)) return undefined
    const noResponse = outcome.kind !== 'response'
    const status = outcome.kind === 'response' ? outcome.status : 0
    const is5xx = noResponse || (status >= 500 && status <= 599)
    const isGatewayError = noResponse || status === 502 || status === 503 || status === 504
    record.consecutive5xx = is5xx ? record.consecutive5xx + 1 : 0
    record.consecutiveGatewayErrors = isGatewayError ? record.consecutiveGatewayErrors + 1 : 0
    const c = this.config
    const reason = c.consecutiveGatewayErrors > 0 && record.consecutiveGatewayErrors >= c.consecutiveGatewayErrors
      ? 'consecutiveGatewayErrors'
      : c.consecutive5xx > 0 && record.consecutive5xx >= c.consecutive5xx ? 'consecutive5xx' : undefined
    if (reason === undefined || !this.mayEject()) return undefined
    const now = this.now()
    const decayed = Math.max(0, record.times - Math.floor((now - record.returnedAt) / Math.max(1, c.intervalMs)))
    record.times = decayed + 1
    record.ejectedUntil = now + Math.min(c.maxEjectionTimeMs, c.baseEjectionTimeMs * record.times)
    record.consecutive5xx = 0
    record.consecutiveGatewayErrors = 0
    this.ejectedCount++
    // Back and out again before expire() reported the return: the caller's mirror still says
    // "ejected", which is right again, so the return is not reported.
    this.returnedUnreported.delete(id)
    return { id, untilMs: record.ejectedUntil, times: record.times, reason }
  }

  /**
   * Whether `id` is out now; an endpoint whose time is up is back from this call on (and the next
   * `expire()` reports it).
   */
  isEjected(id: string): boolean {
    const record = this.records.get(id)
    if (!record || record.ejectedUntil === undefined) return false
    if (this.now() < record.ejectedUntil) return true
    this.bringBack(id, record)
    return false
  }

  /**
   * Brings back every endpoint whose time is up and returns the ids of every endpoint that came
   * back since the last call, whichever call brought it back: for the pipeline to mirror.
   */
  expire(): string[] {
    this.bringBackDue()
    const returned = [...this.returnedUnreported]
    this.returnedUnreported.clear()
    return returned
  }

  /** The ids out now. Endpoints whose time is up come back (and the next `expire()` reports them). */
  ejected(): string[] {
    this.bringBackDue()
    return [...this.records].filter(([, record]) => record.ejectedUntil !== undefined).map(([id]) => id)
  }

  // At most maxEjectionPercent of the endpoints may be out; but with two or more endpoints and
  // a percentage above 0, one may always go (as Envoy), or small services could never eject.
  private mayEject(): boolean {
    this.bringBackDue()
    const total = this.records.size
    const pct = this.config.maxEjectionPercent
    if (pct <= 0 || total === 0) return false
    const allowed = Math.max(Math.floor(total * pct / 100), total > 1 ? 1 : 0)
    return this.ejectedCount < allowed
  }

  private bringBackDue(): void {
    if (this.ejectedCount === 0) return
    const now = this.now()
    for (const [id, record] of this.records) {
      if (record.ejectedUntil !== undefined && now >= record.ejectedUntil) this.bringBack(id, record)
    }
  }

  private bringBack(id: string, record: EndpointRecord): void {
    record.returnedAt = record.ejectedUntil ?? this.now()
    record.ejectedUntil = undefined
    this.ejectedCount--
    this.returnedUnreported.add(id)
  }

  private recount(): void {
    let count = 0
    for (const record of this.records.values()) if (record.ejectedUntil !== undefined) count++
    this.ejectedCount = count
  }
}
