// Fault injection: for each request, whether to delay it (a fixed time) and whether to abort it
// with a status instead of sending it on, each with its own percentage and its own draw (so a
// request may be both delayed and aborted, as in Envoy's fault filter).
//
// Gateway API has no fault field: the configuration is weft's own, DestinationPolicy
// `spec.faults` (src/config/resources/weft.ts), turned into a FaultConfig by
// `faultConfigFromPolicy`. An abort answers HTTP requests with its HTTP status and gRPC requests
// with its gRPC status (by default gRPC's mapping of the HTTP status, see errors.ts).
import { durationMs, type DestinationFaults } from '../config/resources/index.ts'
import { grpcStatusForHttp } from './errors.ts'
import type { Random } from './random.ts'

export interface FaultConfig {
  /** Hold the request this long before sending it on, for `percent` of requests (0-100, fractions allowed). */
  readonly delay?: { readonly fixedDelayMs: number; readonly percent: number } | undefined
  /**
   * Answer with `status` instead of sending the request, for `percent` of requests; a gRPC
   * request gets `grpcStatus` (0-16; default `grpcStatusForHttp(status)`).
   */
  readonly abort?: { readonly status: number; readonly grpcStatus?: number | undefined; readonly percent: number } | undefined
}

export interface FaultDecision {
  /** 0 when the request is not delayed. */
  readonly delayMs: number
  /** The HTTP status to answer with, or undefined to send the request on. */
  readonly abortStatus: number | undefined
  /** The grpc-status to answer a gRPC request with; set exactly when `abortStatus` is. */
  readonly abortGrpcStatus: number | undefined
}

const NO_FAULT: FaultDecision = Object.freeze({ delayMs: 0, abortStatus: undefined, abortGrpcStatus: undefined })

/**
 * A DestinationPolicy's `spec.faults` as the injector's config: durations in ms, an absent fault
 * stays absent, and no `faults` at all gives undefined.
 */
export function faultConfigFromPolicy(faults: DestinationFaults): FaultConfig
export function faultConfigFromPolicy(faults: DestinationFaults | undefined): FaultConfig | undefined
export function faultConfigFromPolicy(faults: DestinationFaults | undefined): FaultConfig | undefined {
  if (faults === undefined) return undefined
  return {
    delay: faults.delay && { fixedDelayMs: durationMs(faults.delay.fixedDelay), percent: faults.delay.percent },
    abort: faults.abort && { status: faults.abort.httpStatus, grpcStatus: faults.abort.grpcStatus, percent: faults.abort.percent },
  }
}

export class FaultInjector {
  private readonly delayMs: number
  private readonly delayFraction: number
  private readonly abortStatus: number | undefined
  private readonly abortGrpcStatus: number | undefined
  private readonly abortFraction: number

  constructor(config: FaultConfig) {
    this.delayMs = config.delay?.fixedDelayMs ?? 0
    this.delayFraction = checkedFraction('delay.percent', config.delay?.percent ?? 0)
    if (config.abort && (!Number.isInteger(config.abort.status) || config.abort.status < 200 || config.abort.status > 599)) {
      throw new RangeError(`fault abort.status: expected an HTTP status from 200 to 599, got ${config.abort.status}`)
    }
    const grpcStatus = config.abort?.grpcStatus
    if (grpcStatus !== undefined && (!Number.isInteger(grpcStatus) || grpcStatus < 0 || grpcStatus > 16)) {
      throw new RangeError(`fault abort.grpcStatus: expected a gRPC status code from 0 to 16, got ${grpcStatus}`)
    }
    if (this.delayMs < 0 || !Number.isFinite(this.delayMs)) throw new RangeError(`fault delay.fixedDelayMs: expected a duration ≥ 0, got ${this.delayMs}`)
    this.abortStatus = config.abort?.status
    this.abortGrpcStatus = config.abort && (grpcStatus ?? grpcStatusForHttp(config.abort.status))
    this.abortFraction = checkedFraction('abort.percent', config.abort?.percent ?? 0)
  }

  /** True when this injector can never do anything (the pipeline can then leave it out). */
  get inert(): boolean {
    return (this.delayFraction === 0 || this.delayMs === 0) && this.abortFraction === 0
  }

  decide(random: Random): FaultDecision {
    if (this.inert) return NO_FAULT
    // Draw for each fault only when it is configured, so a test's sequence of draws is easy to follow.
    const delayed = this.delayFraction > 0 && this.delayMs > 0 && random() < this.delayFraction
    const aborted = this.abortFraction > 0 && random() < this.abortFraction
    if (!delayed && !aborted) return NO_FAULT
    return {
      delayMs: delayed ? this.delayMs : 0,
      abortStatus: aborted ? this.abortStatus : undefined,
      abortGrpcStatus: aborted ? this.abortGrpcStatus : undefined,
    }
  }
}

function checkedFraction(field: string, percent: number): number {
  if (!Number.isFinite(percent) || percent < 0 || percent > 100) throw new RangeError(`fault ${field}: expected a percentage from 0 to 100, got ${percent}`)
  return percent / 100
}
