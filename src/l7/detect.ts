// Protocol detection: which protocol an intercepted connection to a service speaks, so the proxy
// knows whether it can handle it at L7 or must move its bytes opaquely.
//
// 1. The service port's declared protocol (`appProtocol`) decides when it is set: `http` /
//    `kubernetes.io/http` is HTTP (1.1, or HTTP/2 with prior knowledge: below), `h2c` /
//    `kubernetes.io/h2c` HTTP/2 with prior knowledge, `grpc` gRPC; anything else (`tcp`, `mysql`,
//    ...) is opaque. A declaration is trusted: no bytes are read first, except on an `http` port,
//    where the first bytes say which HTTP version the client speaks (`classifyHttpVersion`, as
//    Envoy's automatic codec): the HTTP/2 preface is HTTP/2, anything else HTTP/1.1 — decided on
//    the first byte that differs from the preface, so an HTTP/1.1 request waits for nothing.
// 2. Otherwise the first bytes the client sends are sniffed: an HTTP/1.x request line, the
//    HTTP/2 connection preface, a TLS ClientHello (its SNI recorded); anything else is opaque.
//    A client that sends nothing for `timeoutMs` is taken to be talking to a server-speaks-first
//    protocol (SMTP, MySQL, ...) and is opaque too: the wait is the price of not declaring one.
//
// The bytes read while sniffing are put back into the socket (`unshift`), so whoever handles the
// connection next reads it from its first byte.
import type { Socket } from 'node:net'

export type Protocol = 'http1' | 'http2' | 'grpc' | 'tls' | 'opaque'

/** How a declared appProtocol is handled; undefined when none is declared (sniff). */
export function declaredProtocol(appProtocol: string | undefined): Protocol | undefined {
  if (appProtocol === undefined || appProtocol === '') return undefined
  switch (appProtocol.toLowerCase()) {
    case 'http': case 'http1': case 'kubernetes.io/http': return 'http1'
    case 'h2c': case 'http2': case 'kubernetes.io/h2c': return 'http2'
    case 'grpc': return 'grpc'
    default: return 'opaque'
  }
}

export const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

/**
 * The HTTP version of a client on a port declared `http`: `http2` once the bytes are the whole
 * HTTP/2 preface, `http1` as soon as they differ from it (or end short of it); 'undecided' while
 * they are a beginning of it. ("PRI" is reserved by RFC 9113 3.4 for the preface: no HTTP/1.1
 * request starts so.)
 */
export function classifyHttpVersion(bytes: Buffer, ended = false): Classification {
  const length = Math.min(bytes.length, HTTP2_PREFACE.length)
  if (!bytes.subarray(0, length).equals(HTTP2_PREFACE.subarray(0, length))) return { protocol: 'http1' }
  if (bytes.length >= HTTP2_PREFACE.length) return { protocol: 'http2' }
  return ended ? { protocol: 'http1' } : 'undecided'
}

/** The longest request line sniffing waits for before calling the stream opaque. */
export const MAX_SNIFF_BYTES = 8192

export type Classification = { readonly protocol: Protocol; readonly sni?: string | undefined } | 'undecided'

// RFC 9110 method = token; the request line is `method SP request-target SP HTTP/1.x CRLF`.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/1\.[01]\r?$/

/**
 * Classifies the first bytes of a stream. 'undecided' while they could still become one of the
 * protocols and more may come; `ended` says no more will (the client half-closed or the wait is
 * over), so the answer is final.
 */
export function classify(bytes: Buffer, ended = false): Classification {
  if (bytes.length === 0) return ended ? { protocol: 'opaque' } : 'undecided'
  // HTTP/2 preface (checked before HTTP/1: "PRI" is also a valid method token).
  const prefaceLength = Math.min(bytes.length, HTTP2_PREFACE.length)
  if (bytes.subarray(0, prefaceLength).equals(HTTP2_PREFACE.subarray(0, prefaceLength))) {
    if (bytes.length >= HTTP2_PREFACE.length) return { protocol: 'http2' }
    return ended ? { protocol: 'opaque' } : 'undecided'
  }
  // TLS: a handshake record (22) of TLS 1.0-1.3 (version 3.1-3.4; ClientHellos say 3.1 or 3.3).
  if (bytes[0] === 0x16) {
    if (bytes.length < 3) return ended ? { protocol: 'opaque' } : 'undecided'
    if (bytes[1] !== 0x03 || (bytes[2] ?? 9) > 0x04) return { protocol: 'opaque' }
    if (bytes.length < 6) return ended ? { protocol: 'tls' } : 'undecided'
    if (bytes[5] !== 0x01) return { protocol: 'opaque' } // not a ClientHello
    const recordLength = bytes.readUInt16BE(3)
    if (bytes.length < 5 + recordLength && !ended && bytes.length < MAX_SNIFF_BYTES) return 'undecided'
    return { protocol: 'tls', sni: serverName(bytes.subarray(5, 5 + recordLength)) }
  }
  // HTTP/1.x: the whole request line.
  const lineEnd = bytes.indexOf(0x0a)
  if (lineEnd === -1) {
    const partial = bytes.toString('latin1')
    const space = partial.indexOf(' ')
    const method = space === -1 ? partial : partial.slice(0, space)
    if (!TOKEN.test(method) || bytes.length >= MAX_SNIFF_BYTES || ended) return { protocol: 'opaque' }
    return 'undecided'
  }
  return REQUEST_LINE.test(bytes.subarray(0, lineEnd).toString('latin1')) ? { protocol: 'http1' } : { protocol: 'opaque' }
}

/** The server_name extension of a ClientHello handshake message (RFC 8446 4.1.2, RFC 6066 3). */
function serverName(handshake: Buffer): string | undefined {
  try {
    let at = 4 + 2 + 32 // handshake header, legacy_version, random
    at += 1 + handshake.readUInt8(at) // session id
    at += 2 + handshake.readUInt16BE(at) // cipher suites
    at += 1 + handshake.readUInt8(at) // compression methods
    const extensionsEnd = at + 2 + handshake.readUInt16BE(at)
    at += 2
    while (at + 4 <= extensionsEnd) {
      const type = handshake.readUInt16BE(at)
      const length = handshake.readUInt16BE(at + 2)
      at += 4
      if (type === 0) {
        // server_name_list: u16 length, then {u8 type (0 = host_name), u16 length, name}
        if (handshake.readUInt8(at + 2) !== 0) return undefined
        const nameLength = handshake.readUInt16BE(at + 3)
        return handshake.subarray(at + 5, at + 5 + nameLength).toString('latin1')
      }
      at += length
    }
  } catch {
    // A truncated or malformed hello: no SNI to record.
  }
  return undefined
}

export interface SniffOptions {
  /** How long to wait for the client's first bytes before the classifier's final answer is asked for. */
  readonly timeoutMs: number
  /** What the bytes are: `classify` (default) for an undeclared port, `classifyHttpVersion` for an `http` one. */
  readonly classifier?: ((bytes: Buffer, ended: boolean) => Classification) | undefined
}

export interface SniffResult {
  readonly protocol: Protocol
  readonly sni?: string | undefined
  /** Whether it was decided by the wait running out (the client sent nothing, or too little). */
  readonly timedOut: boolean
  /**
   * Bytes that could not be put back because the client had already half-closed (a stream that
   * has emitted 'end' refuses `unshift`): the caller sends them upstream first.
   */
  readonly unread: Buffer | undefined
}

/** The detection wait for server-speaks-first protocols (Istio's protocol sniffing used 100 ms). */
export const DEFAULT_SNIFF_TIMEOUT_MS = 100

/**
 * Reads the first bytes of a paused socket until they classify, the client half-closes, or
 * `timeoutMs` passes; puts them back (or returns them as `unread` after a half-close) and leaves
 * the socket paused, as it was.
 */
export function sniff(socket: Socket, options: SniffOptions): Promise<SniffResult> {
  const classifyBytes = options.classifier ?? classify
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let length = 0
    let settled = false
    const settle = (result: Classification, timedOut: boolean): void => {
      if (settled || result === 'undecided') return
      settled = true
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.off('close', onClose)
      socket.pause()
      let unread: Buffer | undefined
      if (length > 0) {
        if (socket.readableEnded) unread = Buffer.concat(chunks, length)
        else socket.unshift(Buffer.concat(chunks, length))
      }
      resolve({ protocol: result.protocol, sni: result.sni, timedOut, unread })
    }
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk)
      length += chunk.length
      settle(classifyBytes(Buffer.concat(chunks, length), false), false)
    }
    const onEnd = (): void => settle(classifyBytes(Buffer.concat(chunks, length), true), false)
    const onClose = (): void => settle({ protocol: 'opaque' }, false)
    const timer = setTimeout(() => settle(classifyBytes(Buffer.concat(chunks, length), true), true), options.timeoutMs)
    socket.on('data', onData)
    socket.once('end', onEnd)
    socket.once('close', onClose)
    socket.resume()
  })
}
