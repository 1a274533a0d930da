// The mesh's own error responses: the status, and a weft-error header (or grpc-status and
// grpc-message) naming the cause and the destination.
import t from 'tap'

import { encodeGrpcMessage, GRPC_STATUS, grpcMeshError, grpcStatusForHttp, httpMeshError } from '../src/l7/errors.ts'

t.test('HTTP: 503 for capacity, naming the cause and the destination', async (t) => {
  t.same(httpMeshError({ kind: 'no-healthy-endpoint', destination: 'default/reviews' }),
    { status: 503, headers: { 'weft-error': 'no healthy endpoint for default/reviews' } })
  t.same(httpMeshError({ kind: 'breaker-open', destination: 'default/reviews', limit: 'maxRequests', max: 100 }),
    { status: 503, headers: { 'weft-error': 'circuit breaker open for default/reviews: maxRequests at its limit of 100' } })
  t.same(httpMeshError({ kind: 'retry-budget-exhausted', destination: 'shop/ratings' }),
    { status: 503, headers: { 'weft-error': 'retry budget exhausted for shop/ratings' } })
})

t.test('HTTP: 504 for timeouts, 404 when no route matches, 500 for a rule with no backend, the configured status for an abort', async (t) => {
  t.same(httpMeshError({ kind: 'timeout', destination: 'default/reviews', timeout: 'backendRequest', ms: 2000 }),
    { status: 504, headers: { 'weft-error': 'backendRequest timeout of 2000ms for default/reviews' } })
  t.equal(httpMeshError({ kind: 'timeout', destination: 'default/reviews', timeout: 'request', ms: 10000 }).status, 504)
  t.same(httpMeshError({ kind: 'no-route', destination: 'default/reviews', path: '/admin' }),
    { status: 404, headers: { 'weft-error': 'no route of default/reviews matches /admin' } })
  t.equal(httpMeshError({ kind: 'no-backend', destination: 'default/reviews', route: 'default/reviews' }).status, 500)
  t.same(httpMeshError({ kind: 'fault-abort', destination: 'default/reviews', status: 418 }),
    { status: 418, headers: { 'weft-error': 'fault injected for default/reviews: abort with 418' } })
})

t.test('HTTP: an endpoint that cannot be reached is 503, one that resets before responding 502', async (t) => {
  t.same(httpMeshError({ kind: 'upstream-connect-failure', destination: 'default/reviews', endpoint: '198.18.1.10:9080' }),
    { status: 503, headers: { 'weft-error': 'cannot connect to endpoint 198.18.1.10:9080 of default/reviews' } })
  t.same(httpMeshError({ kind: 'upstream-reset', destination: 'default/reviews', endpoint: '198.18.1.10:9080' }),
    { status: 502, headers: { 'weft-error': 'endpoint 198.18.1.10:9080 of default/reviews reset the connection before responding' } })
  t.equal(grpcMeshError({ kind: 'upstream-reset', destination: 'a/b', endpoint: '1.2.3.4:5' }).headers['grpc-status'], String(GRPC_STATUS.UNAVAILABLE))
})

t.test('HTTP: an endpoint that does not speak HTTP/2 is 502, saying how it showed it and what to declare', async (t) => {
  t.same(httpMeshError({ kind: 'upstream-not-http2', destination: 'default/web', endpoint: '198.18.2.2:8080', answer: 'answered' }),
    { status: 502, headers: { 'weft-error': 'endpoint 198.18.2.2:8080 of default/web does not speak HTTP/2: it answered the HTTP/2 connection preface with bytes that are not HTTP/2 (as an HTTP/1.1 server does); if it speaks HTTP/1.1, declare appProtocol http on the service port' } })
  t.match(httpMeshError({ kind: 'upstream-not-http2', destination: 'default/web', endpoint: '198.18.2.2:8080', answer: 'closed' }).headers['weft-error'], /does not speak HTTP\/2: it closed the connection on the HTTP\/2 connection preface;/)
  t.match(httpMeshError({ kind: 'upstream-not-http2', destination: 'default/web', endpoint: '198.18.2.2:8080', answer: 'reset' }).headers['weft-error'], /does not speak HTTP\/2: it reset the connection on the HTTP\/2 connection preface;/)
  t.equal(grpcMeshError({ kind: 'upstream-not-http2', destination: 'a/b', endpoint: '1.2.3.4:5', answer: 'answered' }).headers['grpc-status'], String(GRPC_STATUS.UNAVAILABLE))
})

t.test('gRPC: trailers-only answers with UNAVAILABLE or DEADLINE_EXCEEDED and the message', async (t) => {
  t.same(grpcMeshError({ kind: 'no-healthy-endpoint', destination: 'default/ratings' }), {
    status: 200,
    headers: {
      'content-type': 'application/grpc',
      'grpc-status': '14',
      'grpc-message': 'no healthy endpoint for default/ratings',
      'weft-error': 'no healthy endpoint for default/ratings',
    },
  })
  t.equal(grpcMeshError({ kind: 'breaker-open', destination: 'a/b', limit: 'maxPendingRequests', max: 1 }).headers['grpc-status'], String(GRPC_STATUS.UNAVAILABLE))
  t.equal(grpcMeshError({ kind: 'retry-budget-exhausted', destination: 'a/b' }).headers['grpc-status'], String(GRPC_STATUS.UNAVAILABLE))
  t.equal(grpcMeshError({ kind: 'timeout', destination: 'a/b', timeout: 'request', ms: 5 }).headers['grpc-status'], String(GRPC_STATUS.DEADLINE_EXCEEDED))
  t.equal(grpcMeshError({ kind: 'no-route', destination: 'a/b', path: '/x.Y/Z' }).headers['grpc-status'], String(GRPC_STATUS.UNIMPLEMENTED))
  t.equal(grpcMeshError({ kind: 'fault-abort', destination: 'a/b', status: 503 }).headers['grpc-status'], String(GRPC_STATUS.UNAVAILABLE))
  t.equal(grpcMeshError({ kind: 'fault-abort', destination: 'a/b', status: 504 }).headers['grpc-status'], String(GRPC_STATUS.UNAVAILABLE), 'an injected 504 is a gateway answer, not a deadline')
  t.equal(grpcMeshError({ kind: 'fault-abort', destination: 'a/b', status: 503, grpcStatus: GRPC_STATUS.RESOURCE_EXHAUSTED }).headers['grpc-status'], String(GRPC_STATUS.RESOURCE_EXHAUSTED), 'an abort\'s own grpcStatus wins')
})

t.test('gRPC: HTTP statuses map per grpc/doc/http-grpc-status-mapping.md; messages are percent-encoded', async (t) => {
  t.same([400, 401, 403, 404, 429, 502, 503, 504, 500, 418].map(grpcStatusForHttp), [13, 16, 7, 12, 14, 14, 14, 14, 2, 2])
  t.equal(encodeGrpcMessage('50% of é'), '50%25 of %C3%A9')
  t.equal(encodeGrpcMessage('plain text: ok'), 'plain text: ok')
})
