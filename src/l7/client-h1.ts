// One HTTP/1.1 try to an endpoint, whichever frontend read the request: the HTTP/1.1 frontend
// (http1.ts) for every request, the HTTP/2 frontend (http2.ts) for a request whose destination
// port declares appProtocol http (a client that spoke h2c to an `http` port: the upstream protocol
// follows the port's declaration). The connection comes from the keep-alive pools of upstream.ts,
// direct or through the tunnel; this file owns what is said on it and how a failure is read.
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex, Readable } from 'node:stream'
import type { Endpoint } from '../config/resources/index.ts'
import { isOpen, type BreakerOpen } from './breaker.ts'
import type { Destination } from './destinations.ts'
import type { Attempt, OutgoingHeaders, Try, UpstreamResponse } from './pipeline.ts'
import { BREAKER_OPTION, BreakerRefusal, ConnectFailure, type UpstreamPath, type UpstreamPools, type UpstreamSource } from './upstream.ts'

/** A response from an HTTP/1.1 endpoint: an ordinary one, or the 101 of an upgrade with the switched connection. */
export interface Http1Response extends UpstreamResponse {
  readonly message: IncomingMessage
  readonly upgraded?: { readonly socket: Duplex; readonly head: Buffer } | undefined
}

/** What one HTTP/1.1 try sends: headers without pseudo-headers (`host` among them), the target as the path. */
export interface Http1TryRequest {
  readonly method: string
  readonly target: string
  readonly headers: OutgoingHeaders
  /** The buffered body, a stream of it (replay.ts), or undefined for none. */
  readonly body: Buffer | Readable | undefined
}

/**
 * Sends one try over the pool for `source` → `endpoint`. A try waiting for its connection holds a
 * `pendingRequests` slot of the destination's breaker, a new connection a `connections` slot; a
 * refusal is an Attempt with `refused` (nothing was sent). Never rejects.
 */
export function sendHttp1(pools: UpstreamPools, source: UpstreamSource, endpoint: Endpoint, destination: Destination, request: Http1TryRequest, onPath: (path: UpstreamPath) => void): Try {
  const pending = destination.breaker.tryAcquire('pendingRequests')
  if (isOpen(pending)) return { result: Promise.resolve({ outcome: { kind: 'connect-failure' }, refused: breakerOpen(pending.open) }), cancel: () => {} }
  const upstream = pools.for(endpoint, source, destination.snapshot, destination.idleTimeoutMs)
  onPath(upstream.path)
  const outgoing = http.request({
    agent: upstream.agent, host: endpoint.ip, port: endpoint.port,
    method: request.method, path: request.target, headers: request.headers as http.OutgoingHttpHeaders, setHost: false,
    [BREAKER_OPTION]: destination.breaker,
  } as http.RequestOptions)
  outgoing.once('socket', (socket: Socket) => { if (socket.connecting) socket.once('connect', pending); else pending() })
  outgoing.once('close', pending)
  const result = new Promise<Attempt>((resolve) => {
    let settled = false
    const settle = (attempt: Attempt): void => {
      if (settled) { attempt.response?.discard(); return }
      settled = true
      resolve(attempt)
    }
    outgoing.once('response', (message) => settle({ outcome: { kind: 'response', status: message.statusCode ?? 502 }, response: http1Response(message) }))
    outgoing.once('upgrade', (message: IncomingMessage, socket: Duplex, head: Buffer) => {
      settle({ outcome: { kind: 'response', status: message.statusCode ?? 101 }, response: { ...http1Response(message), upgraded: { socket, head } } as Http1Response })
    })
    outgoing.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof BreakerRefusal) { settle({ outcome: { kind: 'connect-failure' }, refused: breakerOpen(err.open) }); return }
      // A kept-alive connection reset as the request went out is usually the endpoint closing
      // it idle (the request never arrived), but may be one that died processing it: only an
      // idempotent request is counted as never sent, so a POST is not sent twice.
      const neverArrived = err instanceof ConnectFailure || CONNECT_ERRORS.has(err.code ?? '') ||
        (outgoing.reusedSocket && err.code === 'ECONNRESET' && IDEMPOTENT.has(request.method))
      settle({ outcome: { kind: neverArrived ? 'connect-failure' : 'reset' } })
    })
    outgoing.once('close', () => settle({ outcome: { kind: 'reset' } }))
  })
  const body = request.body
  if (body === undefined) outgoing.end()
  else if (Buffer.isBuffer(body)) outgoing.end(body)
  else {
    // pipe, not pipeline: a failed try must not destroy the client's connection or stream, which
    // still gets weft's answer.
    body.pipe(outgoing)
  }
  return { result, cancel: () => outgoing.destroy() }
}

function breakerOpen(open: BreakerOpen['open']): NonNullable<Attempt['refused']> {
  return { kind: 'breaker-open', destination: open.destination, limit: open.limit, max: open.max }
}

function http1Response(message: IncomingMessage): Http1Response {
  const grpc = message.headers['grpc-status']
  return {
    status: message.statusCode ?? 502,
    grpcStatus: typeof grpc === 'string' ? Number(grpc) : undefined,
    body: message,
    message,
    // A try still sending its body cannot hand its connection back: end it.
    discard: () => { message.resume(); finishUpstream(message) },
  }
}

/** Whether an upstream response came from an HTTP/1.1 try (this file) rather than an HTTP/2 stream. */
export function isHttp1Response(response: UpstreamResponse): response is Http1Response {
  return 'message' in response
}

/**
 * The response is over (or thrown away) while the request to it may still be sending its body
 * (the endpoint answered early): that connection is mid-request and cannot be reused, so it goes.
 */
export function finishUpstream(message: IncomingMessage): void {
  const request = (message as IncomingMessage & { req?: http.ClientRequest }).req
  if (request && !request.writableFinished) request.destroy()
}

/** Methods whose repetition has the effect of one request (RFC 9110 9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

/** Error codes that mean no connection was made: the request never left. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'CONNECT_TIMEOUT', 'EADDRNOTAVAIL'])

/**
 * Hop-by-hop headers (RFC 9110 7.6.1), never forwarded, plus any named in Connection. `expect`
 * too: the downstream server has already answered 100-continue.
 */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization', 'expect'])

export function connectionNamed(connection: string | string[] | undefined): Set<string> {
  if (connection === undefined) return new Set()
  const text = Array.isArray(connection) ? connection.join(',') : connection
  return new Set(text.split(',').map((name) => name.trim().toLowerCase()).filter((name) => name !== ''))
}

/** A response's headers minus hop-by-hop ones (an upgrade's `upgrade` header stays: the client needs it). */
export function responseHeaders(incoming: IncomingHttpHeaders, upgrade: boolean): OutgoingHeaders {
  const headers: OutgoingHeaders = {}
  const named = connectionNamed(incoming.connection)
  for (const [name, value] of Object.entries(incoming)) {
    if (upgrade && name === 'upgrade') { headers[name] = value; continue }
    if (!HOP_BY_HOP.has(name) && !named.has(name)) headers[name] = value
  }
  return headers
}
