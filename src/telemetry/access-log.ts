// JSON access logs: one line per request the L7 proxy handled (HTTP/1.1, HTTP/2, gRPC), sampled.
// The request path builds an `AccessLogEntry` only when `sampled()` says this request is logged,
// so an unsampled request costs one random draw.
//
// (Skeleton: the writer lands with the telemetry work; the entry shape is what the pipeline fills.)

/** What one access log line says about one request. */
export interface AccessLogEntry {
  /** When the request head arrived (ISO 8601). */
  readonly start: string
  readonly durationMs: number
  readonly protocol: 'http' | 'http2' | 'grpc'
  readonly method: string
  readonly authority: string
  readonly path: string
  /** The status the client got; 0 when it got no response. */
  readonly status: number
  /** gRPC: the grpc-status the client got, when there was one. */
  readonly grpcStatus?: number | undefined
  readonly requestBytes: number
  readonly responseBytes: number
  readonly sourceIp: string
  /** `namespace/name` or `unknown`. */
  readonly sourceWorkload: string
  /** `namespace/name` of the service, or the dialled `VIP:port` when it is unknown. */
  readonly destinationService: string
  readonly destinationWorkload: string
  /** The endpoint of the last try (`ip:port`), when one was picked. */
  readonly endpoint?: string | undefined
  /** Tries beyond the first. */
  readonly retries: number
  readonly requestId?: string | undefined
  /** W3C trace context of the request, when it carried one. */
  readonly traceparent?: string | undefined
  /** weft's own answer (the `weft-error` header), when the mesh answered. */
  readonly weftError?: string | undefined
  /** How the last try reached its endpoint. */
  readonly upstreamPath?: 'direct' | 'tunnel' | undefined
}

export interface AccessLog {
  /** Whether to log the request about to be handled (one draw against the sample rate). */
  sampled(): boolean
  write(entry: AccessLogEntry): void
}

/** Logs nothing. */
export const NO_ACCESS_LOG: AccessLog = Object.freeze({ sampled: () => false, write: () => {} })
