// Joins two byte streams — a pod's TCP connection and its upstream (a TCP socket or a tunnel
// stream) — in both directions, the way a TCP proxy must:
//  - backpressure: `pipe` pauses the reader while the writer is full, so memory stays bounded;
//  - half-close: when one side ends its sending half, the other side's writer is ended, and the
//    reply direction keeps flowing (both sockets are created with allowHalfOpen);
//  - resets: an error on one side aborts the other (a TCP RST, or RST_STREAM on a tunnel, never
//    preceded by END_STREAM, so the far side's client sees a reset and not a close);
//  - idle timeout: no bytes either way for `idleTimeoutMs` closes both.
import type { Duplex } from 'node:stream'
import { Socket } from 'node:net'
import { constants as h2, type Http2Stream } from 'node:http2'

/** node:http2 exports no stream class to test against; a stream has a session and an id. */
function isHttp2Stream(stream: Duplex): stream is Http2Stream {
  return 'session' in stream && 'rstCode' in stream
}

export type SpliceOutcome = 'closed' | 'reset' | 'idle_timeout' | 'aborted'

export interface SpliceResult { outcome: SpliceOutcome; bytesSent: number; bytesReceived: number }

export interface SpliceOptions {
  idleTimeoutMs: number
  /** Bytes from the downstream (source) side toward the upstream, and back. */
  onBytes?: (flow: 'sent' | 'received', n: number) => void
  onDone: (result: SpliceResult) => void
}

/** Aborts a stream the way its peer will understand as a reset. */
export function abort(stream: Duplex): void {
  if (stream.destroyed) return
  if (stream instanceof Socket) {
    // A socket whose sending half was already shut down cannot be reset (libuv refuses, and the
    // handle would never close): close it instead.
    if (stream.writableEnded || stream.connecting) stream.destroy()
    else stream.resetAndDestroy()
  }
  else if (isHttp2Stream(stream)) {
    // A FIN already passed on (END_STREAM queued): it goes first, then RST_STREAM(CONNECT_ERROR),
    // as TCP would show a FIN and then a reset. Otherwise RST_STREAM alone: close(code) would end
    // the writable side first, and the peer would read that END_STREAM — a FIN — milliseconds
    // before the RST, so its client would see a clean close, not a reset; destroy() sends only the
    // RST (code INTERNAL_ERROR).
    if (stream.writableEnded) { stream.close(h2.NGHTTP2_CONNECT_ERROR); return }
    if (stream.listenerCount('error') === 0) stream.on('error', () => {})
    stream.destroy(STREAM_RESET)
  }
  else stream.destroy()
}

const STREAM_RESET = new Error('the connection at the other end of the tunnel was reset')

export interface SpliceHandle { abort(): void }

export function splice(downstream: Duplex, upstream: Duplex, options: SpliceOptions): SpliceHandle {
  let bytesSent = 0
  let bytesReceived = 0
  let finished = false
  let outcome: SpliceOutcome = 'closed'
  let pending = 2 // both sides must close

  const finish = (): void => {
    if (finished) return
    finished = true
    options.onDone({ outcome, bytesSent, bytesReceived })
  }
  const failBoth = (why: SpliceOutcome): void => {
    if (outcome === 'closed') outcome = why
    if (why === 'idle_timeout') { downstream.destroy(); upstream.destroy(); return } // a quiet close, not a reset
    abort(downstream)
    abort(upstream)
  }

  downstream.on('data', (chunk: Buffer) => { bytesSent += chunk.length; options.onBytes?.('sent', chunk.length) })
  upstream.on('data', (chunk: Buffer) => { bytesReceived += chunk.length; options.onBytes?.('received', chunk.length) })
  downstream.pipe(upstream)
  upstream.pipe(downstream)

  for (const side of [downstream, upstream]) {
    side.on('error', () => failBoth('reset'))
    side.on('close', () => {
      // A side that closes before both directions finished was torn down: tear down the other.
      const other = side === downstream ? upstream : downstream
      const cleanly = side.readableEnded && side.writableFinished
      if (!cleanly && !other.destroyed) failBoth('reset')
      if (--pending === 0) finish()
    })
    // An HTTP/2 stream reset by the peer closes without an error event on some paths.
    if (isHttp2Stream(side)) {
      side.on('aborted', () => failBoth('reset'))
    }
  }

  if (options.idleTimeoutMs > 0 && downstream instanceof Socket) {
    downstream.setTimeout(options.idleTimeoutMs, () => failBoth('idle_timeout'))
  }

  return { abort: () => failBoth('aborted') }
}
