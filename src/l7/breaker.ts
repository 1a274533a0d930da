// Circuit breaking: caps on what one destination may have outstanding at once (Envoy's
// thresholds), so a slow backend costs a bounded number of connections and queued requests
// instead of all of them. The pipeline asks before opening a connection, queueing a request,
// sending one, or retrying one; a "no" becomes a 503 naming the limit (errors.ts).
//
// Counters only, no timers: a limit frees up the moment something is released.

/** What is counted, with the DestinationPolicy field that limits it. */
export const BREAKER_LIMITS = {
  connections: 'maxConnections',
  pendingRequests: 'maxPendingRequests',
  requests: 'maxRequests',
  retries: 'maxRetries',
} as const
export type BreakerKind = keyof typeof BREAKER_LIMITS

/** DestinationPolicy `circuitBreaker`; unset fields take Envoy's defaults. */
export interface BreakerLimits {
  readonly maxConnections?: number | undefined
  readonly maxPendingRequests?: number | undefined
  readonly maxRequests?: number | undefined
  /** Retries in flight at once (not per request). */
  readonly maxRetries?: number | undefined
}

export const DEFAULT_BREAKER_LIMITS = Object.freeze({ maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 })

/** Gives back what `tryAcquire` took; calling it again does nothing. */
export type Release = () => void

export interface BreakerOpen {
  readonly open: {
    readonly destination: string
    readonly kind: BreakerKind
    /** The policy field, e.g. `maxRequests`. */
    readonly limit: string
    readonly max: number
  }
}

export class CircuitBreaker {
  /** `namespace/name` of the destination, for the reason. */
  readonly destination: string
  private readonly max: Record<BreakerKind, number>
  private readonly inUse: Record<BreakerKind, number> = { connections: 0, pendingRequests: 0, requests: 0, retries: 0 }
  private readonly trips: Record<BreakerKind, number> = { connections: 0, pendingRequests: 0, requests: 0, retries: 0 }

  constructor(destination: string, limits: BreakerLimits = {}) {
    this.destination = destination
    this.max = {
      connections: limits.maxConnections ?? DEFAULT_BREAKER_LIMITS.maxConnections,
      pendingRequests: limits.maxPendingRequests ?? DEFAULT_BREAKER_LIMITS.maxPendingRequests,
      requests: limits.maxRequests ?? DEFAULT_BREAKER_LIMITS.maxRequests,
      retries: limits.maxRetries ?? DEFAULT_BREAKER_LIMITS.maxRetries,
    }
  }

  /** Takes one of `kind`, or says which limit is reached. */
  tryAcquire(kind: BreakerKind): Release | BreakerOpen {
    const max = this.max[kind]
    if (this.inUse[kind] >= max) {
      this.trips[kind]++
      return { open: { destination: this.destination, kind, limit: BREAKER_LIMITS[kind], max } }
    }
    this.inUse[kind]++
    let released = false
    return () => {
      if (released) return
      released = true
      this.inUse[kind]--
    }
  }

  /** The limit of `kind`. */
  limit(kind: BreakerKind): number {
    return this.max[kind]
  }

  /** How many of `kind` are held now. */
  current(kind: BreakerKind): number {
    return this.inUse[kind]
  }

  /** How many times `kind` refused (for the breaker-trips metric). */
  tripped(kind: BreakerKind): number {
    return this.trips[kind]
  }
}

export function isOpen(result: Release | BreakerOpen): result is BreakerOpen {
  return typeof result !== 'function'
}
