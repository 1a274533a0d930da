// JSON access logs: one line per request the L7 proxy handled (HTTP/1.1, HTTP/2, gRPC), sampled.
// The request path builds an `AccessLogEntry` only when `sampled()` says this request is logged,
// so an unsampled request costs one random draw.
//
// Lines are serialized here (JSON.stringify of the flat entry behind a fixed prefix — pino's
// logger cost a request more than the rest of its telemetry) and written in batches by an
// asynchronous writer of our own (BatchWriter): `write()` appends to a batch and returns; batches
// go out in the background, so a slow disk or reader does not stall requests (one that falls 8 MiB
// behind loses the newer lines instead of the daemon's memory). Each line is one JSON object starting with `"type":"access"` (and the node),
// which is how they are told apart from the daemon's own log lines when both go to stdout
// (those carry `level` and `msg`, see log.ts): `jq 'select(.type == "access")'`.
import { close, fstatSync, openSync, write } from 'node:fs'

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

/** What one access log line says about one opaque (L4) connection the proxy forwarded. */
export interface ConnectionLogEntry {
  /** When the connection was accepted (ISO 8601). */
  readonly start: string
  readonly durationMs: number
  /** `tls` when the first bytes were a TLS ClientHello (passed through, not terminated). */
  readonly protocol: 'tcp' | 'tls'
  /** The server name the TLS client asked for, when it sent one. */
  readonly sni?: string | undefined
  readonly sourceIp: string
  readonly sourceWorkload: string
  /** The endpoint the bytes went to (`ip:port`). */
  readonly destination: string
  /** `namespace/name` when the pod dialled a service VIP, `none` otherwise. */
  readonly destinationService: string
  readonly destinationWorkload: string
  readonly upstreamPath: 'direct' | 'tunnel'
  readonly bytesSent: number
  readonly bytesReceived: number
  /** How it ended: closed, reset, idle_timeout, aborted. */
  readonly outcome: string
}

export interface AccessLog {
  /** Whether to log the request (or connection) about to be handled (one draw against the sample rate). */
  sampled(): boolean
  write(entry: AccessLogEntry | ConnectionLogEntry): void
}

/** Logs nothing. */
export const NO_ACCESS_LOG: AccessLog = Object.freeze({ sampled: () => false, write: () => {} })

/** An access log the daemon opened, and must close when it stops. */
export interface AccessLogWriter extends AccessLog {
  /** `stdout`, `off`, or the file path. */
  readonly destination: string
  readonly sampleRate: number
  /**
   * Writes out what is still buffered and stops logging (later `sampled()` calls say no).
   * Gives up after `timeoutMs`, dropping the rest (a reader that stopped reading stdout must not
   * hold a shutdown).
   */
  close(timeoutMs?: number): Promise<void>
}

export interface AccessLogOptions {
  /** `stdout`, `off`, or a file path (opened for appending, created if missing). */
  destination: string
  /** The fraction of requests logged: 0 logs nothing, 1 every request. */
  sampleRate: number
  /** Added to every line (`"node"`), as the daemon's own lines carry it. */
  node?: string
  /** Uniform in [0, 1); `Math.random` unless a test injects a sequence. */
  random?: () => number
  /** A write failed (disk full, file removed...): logging stops, this is told once. */
  onError?: (err: Error) => void
}

/** The access log cannot be opened. `name` lets the CLI print it as a user error. */
export class AccessLogError extends Error {
  override name = 'AccessLogError'
}

/**
 * How many bytes of whole lines go out in one write. Writes are where the cost is (a system call
 * on a thread of the pool, then a turn of the event loop), so lines are batched. When stdout is a
 * pipe or socket it is shared with the daemon's own log lines (written by another path): there
 * writes stay within Linux's PIPE_BUF, which a pipe writes atomically, so the two never
 * interleave mid-line (a line longer than that aside).
 */
const MAX_WRITE_BYTES = 64 * 1024
const PIPE_BUF = 4096
/** Lines wait at most this long for a batch to fill. */
const FLUSH_INTERVAL_MS = 1000
/** A reader (or disk) this far behind: newer lines are dropped rather than held in memory. */
const MAX_BACKLOG_BYTES = 8 * 1024 * 1024
const DEFAULT_CLOSE_TIMEOUT_MS = 2_000

export function openAccessLog(options: AccessLogOptions): AccessLogWriter {
  const { destination, sampleRate } = options
  if (!(sampleRate >= 0 && sampleRate <= 1)) throw new RangeError(`access log sample rate: expected 0 to 1, got ${sampleRate}`)
  if (destination === 'off' || sampleRate === 0) {
    return { destination, sampleRate, sampled: () => false, write: () => {}, close: async () => {} }
  }
  let fd: number
  let maxWrite = MAX_WRITE_BYTES
  if (destination === 'stdout') {
    fd = process.stdout.fd
    const stat = fstatSync(fd)
    if (stat.isFIFO() || stat.isSocket()) maxWrite = PIPE_BUF
  } else {
    try {
      fd = openSync(destination, 'a')
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      throw new AccessLogError(`${destination}: cannot open it for appending (${e.code ?? e.message}); check that the directory exists and is writable, or use --access-log stdout or off`)
    }
  }
  // The line's first field is its type (these lines are records, not log messages with a level),
  // then the node; the entry carries its own `start`. Fields that are undefined are left out.
  const prefix = `{"type":"access",${options.node === undefined ? '' : `"node":${JSON.stringify(options.node)},`}`
  const writer = new BatchWriter(fd, maxWrite, destination !== 'stdout', (err) => {
    if (!open) return
    open = false
    options.onError?.(err)
  })
  let open = true
  const random = options.random ?? Math.random
  const sampled = sampleRate >= 1 ? () => open : () => open && random() < sampleRate
  let closing: Promise<void> | undefined
  return {
    destination, sampleRate, sampled,
    write(entry) {
      if (!open) return
      const fields = JSON.stringify(entry)
      writer.append(fields.length > 2 ? `${prefix}${fields.slice(1)}\n` : `${prefix.slice(0, -1)}}\n`)
    },
    close(timeoutMs = DEFAULT_CLOSE_TIMEOUT_MS) {
      closing ??= new Promise<void>((resolve) => {
        open = false
        // A reader that stopped reading stdout: give up on the rest rather than hold the exit.
        const timer = setTimeout(() => { writer.abandon(); resolve() }, timeoutMs)
        writer.end().then(() => { clearTimeout(timer); resolve() }, () => { clearTimeout(timer); resolve() })
      })
      return closing
    },
  }
}

/**
 * Lines gathered into batches of whole lines (up to `maxWrite` bytes) written with one
 * asynchronous `fs.write` at a time: when a batch is full, or a second after its first line.
 * (pino's sonic-boom cost ~8 µs a line here, concatenating strings; this costs a fraction of one.)
 */
class BatchWriter {
  private readonly fd: number
  private readonly maxWrite: number
  private readonly ownsFd: boolean
  private readonly onError: (err: Error) => void
  /** A pipe: batches must stay within PIPE_BUF bytes, so lines are measured in bytes, not characters. */
  private readonly measureBytes: boolean
  private lines: string[] = []
  private size = 0
  /** Batches waiting for the write in flight. */
  private readonly queue: Buffer[] = []
  private queued = 0
  private writing = false
  private failed = false
  private timer: NodeJS.Timeout | undefined
  private drained: (() => void) | undefined

  constructor(fd: number, maxWrite: number, ownsFd: boolean, onError: (err: Error) => void) {
    this.fd = fd
    this.maxWrite = maxWrite
    this.ownsFd = ownsFd
    this.onError = onError
    this.measureBytes = maxWrite <= PIPE_BUF
  }

  append(line: string): void {
    if (this.failed) return
    const length = this.measureBytes ? Buffer.byteLength(line) : line.length
    if (this.size + length > this.maxWrite && this.size > 0) this.seal()
    this.lines.push(line)
    this.size += length
    if (this.size >= this.maxWrite) this.seal()
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => { this.timer = undefined; this.seal() }, FLUSH_INTERVAL_MS)
      this.timer.unref()
    }
  }

  /** The gathered lines become a batch to write. */
  private seal(): void {
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
    if (this.size === 0) return
    const batch = Buffer.from(this.lines.join(''), 'utf8')
    this.lines = []
    this.size = 0
    if (this.queued + batch.length > MAX_BACKLOG_BYTES) return
    this.queue.push(batch)
    this.queued += batch.length
    this.next()
  }

  private next(): void {
    if (this.writing || this.failed) return
    const batch = this.queue.shift()
    if (batch === undefined) { this.drained?.(); return }
    this.writing = true
    this.writeAll(batch, 0)
  }

  private writeAll(batch: Buffer, offset: number): void {
    write(this.fd, batch, offset, batch.length - offset, null, (err, written) => {
      // A non-blocking stdout (a pipe the reader has not emptied yet): try again shortly.
      if (err?.code === 'EAGAIN' && !this.failed) { setTimeout(() => this.writeAll(batch, offset), 5); return }
      if (err) {
        this.failed = true
        this.writing = false
        this.queue.length = 0
        this.onError(err)
        this.drained?.()
        return
      }
      if (offset + written < batch.length) { this.writeAll(batch, offset + written); return }
      this.queued -= batch.length
      this.writing = false
      this.next()
    })
  }

  /** Writes out everything gathered, then closes the file (stdout stays open). */
  end(): Promise<void> {
    this.seal()
    return new Promise<void>((resolve) => {
      const finish = (): void => {
        this.drained = undefined
        if (this.ownsFd) close(this.fd, () => resolve())
        else resolve()
      }
      if (!this.writing && this.queue.length === 0) { finish(); return }
      this.drained = finish
    })
  }

  /** Drops whatever is still to write. */
  abandon(): void {
    this.failed = true
    this.queue.length = 0
    this.lines = []
    this.size = 0
    if (this.timer !== undefined) clearTimeout(this.timer)
  }
}
