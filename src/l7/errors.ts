// The mesh's own answers: when weft, not the backend, ends a request, the client gets a response
// that says so and names the cause and the destination. Over HTTP that is a status with a
// `weft-error` header; over gRPC a trailers-only response (HTTP 200) whose grpc-status and
// grpc-message carry the same cause, because gRPC clients read the status, not the HTTP code.

/** The header naming the cause on every response weft makes itself. */
export const WEFT_ERROR_HEADER = 'weft-error'

/** gRPC status codes weft answers with (grpc/doc/statuscodes.md). */
export const GRPC_STATUS = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const

/**
 * How an endpoint showed, when an HTTP/2 session to it was being made, that it does not speak
 * HTTP/2: it answered the connection preface with bytes that are not HTTP/2 (an HTTP/1.1 server
 * answers 400), or closed or reset the connection on it.
 */
export type NotHttp2Answer = 'answered' | 'closed' | 'reset'

/** Why weft ended a request; `destination` is the service as `namespace/name`. */
export type MeshErrorCause =
  | { readonly kind: 'no-route'; readonly destination: string; readonly path: string }
  | { readonly kind: 'no-backend'; readonly destination: string; readonly route: string }
  | { readonly kind: 'no-healthy-endpoint'; readonly destination: string }
  | { readonly kind: 'breaker-open'; readonly destination: string; /** The policy field: maxRequests, ... */ readonly limit: string; readonly max: number }
  | { readonly kind: 'retry-budget-exhausted'; readonly destination: string }
  | { readonly kind: 'timeout'; readonly destination: string; readonly timeout: 'request' | 'backendRequest'; readonly ms: number }
  /** An injected abort: `status` over HTTP; over gRPC `grpcStatus` (default: grpcStatusForHttp(status)). */
  | { readonly kind: 'fault-abort'; readonly destination: string; readonly status: number; readonly grpcStatus?: number | undefined }
  /** The last try could not connect to `endpoint` (refused, unreachable, connect timeout, tunnel refused). */
  | { readonly kind: 'upstream-connect-failure'; readonly destination: string; readonly endpoint: string }
  /** The last try's HTTP/2 session could not be made: `endpoint` does not speak HTTP/2 (nothing was sent). */
  | { readonly kind: 'upstream-not-http2'; readonly destination: string; readonly endpoint: string; readonly answer: NotHttp2Answer }
  /** The last try's connection was reset (or closed) by `endpoint` before a response came. */
  | { readonly kind: 'upstream-reset'; readonly destination: string; readonly endpoint: string }
  /** An AuthorizationPolicy at the destination refused the request; `reason` names the policy. */
  | { readonly kind: 'denied'; readonly destination: string; readonly reason: string }

export interface MeshErrorResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
}

/** The sentence that goes into `weft-error` and grpc-message. */
export function meshErrorMessage(cause: MeshErrorCause): string {
  switch (cause.kind) {
    case 'no-route': return `no route of ${cause.destination} matches ${cause.path}`
    case 'no-backend': return `route ${cause.route} for ${cause.destination} has no backend with a weight above 0`
    case 'no-healthy-endpoint': return `no healthy endpoint for ${cause.destination}`
    case 'breaker-open': return `circuit breaker open for ${cause.destination}: ${cause.limit} at its limit of ${cause.max}`
    case 'retry-budget-exhausted': return `retry budget exhausted for ${cause.destination}`
    case 'timeout': return `${cause.timeout} timeout of ${cause.ms}ms for ${cause.destination}`
    case 'fault-abort': return `fault injected for ${cause.destination}: abort with ${cause.status}`
    case 'upstream-connect-failure': return `cannot connect to endpoint ${cause.endpoint} of ${cause.destination}`
    case 'upstream-not-http2': return `endpoint ${cause.endpoint} of ${cause.destination} does not speak HTTP/2: it ${NOT_HTTP2_ANSWERS[cause.answer]}; if it speaks HTTP/1.1, declare appProtocol http on the service port`
    case 'upstream-reset': return `endpoint ${cause.endpoint} of ${cause.destination} reset the connection before responding`
    case 'denied': return `${cause.destination}: ${cause.reason}`
  }
}

const NOT_HTTP2_ANSWERS: Readonly<Record<NotHttp2Answer, string>> = {
  answered: 'answered the HTTP/2 connection preface with bytes that are not HTTP/2 (as an HTTP/1.1 server does)',
  closed: 'closed the connection on the HTTP/2 connection preface',
  reset: 'reset the connection on the HTTP/2 connection preface',
}

/** The HTTP status for a cause: Gateway API's 404/500 for routing, 503 for capacity (and an endpoint that cannot be reached), 502 for a reset or an endpoint that does not speak the port's protocol, 504 for time, 403 for an authorization denial. */
export function meshErrorStatus(cause: MeshErrorCause): number {
  switch (cause.kind) {
    case 'no-route': return 404
    case 'no-backend': return 500
    case 'no-healthy-endpoint':
    case 'breaker-open':
    case 'retry-budget-exhausted':
    case 'upstream-connect-failure': return 503
    case 'upstream-reset':
    case 'upstream-not-http2': return 502
    case 'timeout': return 504
    case 'fault-abort': return cause.status
    case 'denied': return 403
  }
}

/** The plain HTTP answer: `{status: 503, headers: {'weft-error': 'no healthy endpoint for default/reviews'}}`. */
export function httpMeshError(cause: MeshErrorCause): MeshErrorResponse {
  return { status: meshErrorStatus(cause), headers: { [WEFT_ERROR_HEADER]: meshErrorMessage(cause) } }
}

/**
 * gRPC's mapping of an HTTP status to a status code (grpc/doc/http-grpc-status-mapping.md): what
 * a gRPC client makes of a response with that HTTP status and no grpc-status. Used for an
 * injected abort that names no grpcStatus. 504 is UNAVAILABLE there, not DEADLINE_EXCEEDED: a
 * gateway's 504 says nothing about the caller's deadline. (A timeout weft itself enforced is
 * DEADLINE_EXCEEDED: see meshErrorGrpcStatus.)
 */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400: return GRPC_STATUS.INTERNAL
    case 401: return GRPC_STATUS.UNAUTHENTICATED
    case 403: return GRPC_STATUS.PERMISSION_DENIED
    case 404: return GRPC_STATUS.UNIMPLEMENTED
    case 429: case 502: case 503: case 504: return GRPC_STATUS.UNAVAILABLE
    default: return GRPC_STATUS.UNKNOWN
  }
}

/** The gRPC status code for a cause: UNAVAILABLE for capacity (clients may retry), DEADLINE_EXCEEDED for time. */
export function meshErrorGrpcStatus(cause: MeshErrorCause): number {
  switch (cause.kind) {
    case 'no-route': return GRPC_STATUS.UNIMPLEMENTED
    case 'no-backend': return GRPC_STATUS.INTERNAL
    case 'timeout': return GRPC_STATUS.DEADLINE_EXCEEDED
    case 'fault-abort': return cause.grpcStatus ?? grpcStatusForHttp(cause.status)
    case 'denied': return GRPC_STATUS.PERMISSION_DENIED
    default: return GRPC_STATUS.UNAVAILABLE
  }
}

/**
 * grpc-message is percent-encoded (the gRPC HTTP/2 spec): bytes outside printable ASCII, and "%"
 * itself, become %XX of their UTF-8 bytes.
 */
export function encodeGrpcMessage(message: string): string {
  let out = ''
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/**
 * A trailers-only gRPC answer: HTTP 200 with content-type application/grpc and the status in the
 * headers, plus `weft-error` so tools that read HTTP see the same cause.
 */
export function grpcMeshError(cause: MeshErrorCause): MeshErrorResponse {
  const message = meshErrorMessage(cause)
  return {
    status: 200,
    headers: {
      'content-type': 'application/grpc',
      'grpc-status': String(meshErrorGrpcStatus(cause)),
      'grpc-message': encodeGrpcMessage(message),
      [WEFT_ERROR_HEADER]: message,
    },
  }
}
