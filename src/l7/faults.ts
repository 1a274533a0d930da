// Fault injection: for each request, whether to delay it (a fixed time) and whether to abort it
// with a status instead of sending it on, each with its own percentage and its own draw (so a
// request may be both delayed and aborted, as in Envoy's fault filter).
//
// Gateway API has no fault field. The configuration shape here is weft's; which resource
// carries it (a DestinationPolicy field or an ExtensionRef filter) is decided when the pipeline
// is wired, and the schema gains it then.
import type { Random } from './random.ts'

export interface FaultConfig {
  /** Hold the request this long before sending it on, for `percent` of requests (0-100, fractions allowed). */
  readonly delay?: { readonly fixedDelayMs: number; readonly percent: number }
  /** Answer with `status` instead of sending the request, for `percent` of requests. */
  readonly abort?: { readonly status: number; readonly percent: number }
}

export interface FaultDecision {
  /** 0 when the request is not delayed. */
  readonly delayMs: number
  /** The status to answer with, or undefined to send the request on. */
  readonly abortStatus: number | undefined
}

const NO_FAULT: FaultDecision = Object.freeze({ delayMs: 0, abortStatus: undefined })

export class FaultInjector {
  private readonly delayMs: number
  private readonly delayFraction: number
  private readonly abortStatus: number | undefined
  private readonly abortFraction: number

  constructor(config: FaultConfig) {
    this.delayMs = config.delay?.fixedDelayMs ?? 0
    this.delayFraction = checkedFraction('delay.percent', config.delay?.percent ?? 0)
    if (config.abort && (!Number.isInteger(config.abort.status) || config.abort.status < 200 || config.abort.status > 599)) {
      throw new RangeError(`fault abort.status: expected an HTTP status from 200 to 599, got ${config.abort.status}`)
    }
    if (this.delayMs < 0 || !Number.isFinite(this.delayMs)) throw new RangeError(`fault delay.fixedDelayMs: expected a duration ≥ 0, got ${this.delayMs}`)
    this.abortStatus = config.abort?.status
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
    return { delayMs: delayed ? this.delayMs : 0, abortStatus: aborted ? this.abortStatus : undefined }
  }
}

function checkedFraction(field: string, percent: number): number {
  if (!Number.isFinite(percent) || percent < 0 || percent > 100) throw new RangeError(`fault ${field}: expected a percentage from 0 to 100, got ${percent}`)
  return percent / 100
}
