// A request body that streams to a try as it arrives and keeps a copy, up to a bound, so a retry
// can send it again (Envoy's retry buffer). Nothing waits for the body to end: a gRPC stream or a
// long upload goes upstream at once, and a bidirectional call never deadlocks on its own body.
// Once the body outgrows the bound the copy is dropped and the request can no longer be retried.
//
// One try reads at a time: `open()` gives a fresh stream holding everything received so far,
// followed by what still arrives; the previous try's stream is cut off. Backpressure follows the
// current try: the client is paused while that try's stream is full.
import { PassThrough, type Readable } from 'node:stream'

export class ReplayableBody {
  /** Bytes received from the client so far. */
  received = 0
  private readonly source: Readable
  private readonly maxBytes: number
  private chunks: Buffer[] = []
  private kept = 0
  private overflowed = false
  private ended = false
  private failed = false
  private reader: PassThrough | undefined
  private opened = 0
  private discarding = false

  constructor(source: Readable, maxBytes: number) {
    this.source = source
    this.maxBytes = maxBytes
  }

  // Reading starts with the first try: until then the client's bytes wait in its stream.
  private start(): void {
    const source = this.source
    source.on('data', (chunk: Buffer) => {
      this.received += chunk.length
      if (!this.overflowed) {
        this.kept += chunk.length
        if (this.kept > this.maxBytes) { this.overflowed = true; this.chunks = []; this.kept = 0 } else this.chunks.push(chunk)
      }
      const reader = this.reader
      if (reader && !reader.write(chunk)) {
        source.pause()
        reader.once('drain', () => { if (this.reader === reader) source.resume() })
      }
    })
    source.once('end', () => { this.ended = true; this.reader?.end() })
    source.once('close', () => {
      if (this.ended) return
      this.failed = true
      this.reader?.destroy()
    })
  }

  /** Whether another try can be given the whole body (the copy is complete so far). */
  get replayable(): boolean {
    return !this.overflowed && !this.failed
  }

  /**
   * The exchange has its answer: no try reads any more. What the client still sends is read and
   * dropped, so it is never left paused behind a try that stopped reading.
   */
  discardRest(): void {
    if (this.discarding) return
    this.discarding = true
    this.chunks = []
    this.overflowed = true
    const reader = this.reader
    this.reader = undefined
    if (reader) { reader.unpipe(); reader.destroy() }
    if (this.opened === 0) { this.opened++; this.start() }
    this.source.resume()
  }

  /** The body for the next try; undefined when it cannot be replayed (after the first try). */
  open(): Readable | undefined {
    if (this.discarding) return undefined
    if (this.opened > 0 && !this.replayable) return undefined
    if (this.opened++ === 0) this.start()
    const previous = this.reader
    const reader = new PassThrough()
    for (const chunk of this.chunks) reader.write(chunk)
    if (this.ended) reader.end()
    this.reader = reader
    if (previous) { previous.unpipe(); previous.destroy() }
    if (this.source.isPaused()) this.source.resume()
    return reader
  }
}
