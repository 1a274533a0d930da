// The open-loop load generator, run inside the client pod (so its connections are the ones the
// mesh intercepts). It sends at a fixed rate over a few keep-alive connections and measures each
// request from its *intended* send time (the schedule), not from when it was actually written:
// a slow response delays the requests queued behind it on its connection, and that delay is
// counted (no coordinated omission, the wrk2 method). Service time (from the actual write) is
// recorded too. Sends go out within tens of microseconds of the schedule: the generator sleeps on
// a timer only until ~2 ms before a send and spins the event loop from there (see tick).
// Prints one JSON line (LoadResult) with the histograms encoded.
//
// Usage: node bench/loadgen.ts '<LoadSpec as JSON>'
import net, { type Socket } from 'node:net'
import hdr from 'hdr-histogram-js'

export interface LoadSpec {
  /** `http`: GET path on a keep-alive HTTP/1.1 connection; `echo`: write payloadBytes, read them back. */
  mode: 'http' | 'echo'
  host: string
  port: number
  path: string
  /** Requests per second, over all connections together. */
  rate: number
  connections: number
  /** Measured part of the run. */
  durationMs: number
  /** Sent at the same rate before the measured part; not recorded. */
  warmupMs: number
  payloadBytes: number
  /** After the last send, how long in-flight and queued requests may take before they count as timeouts. */
  drainMs: number
}

export interface LoadResult {
  /** Requests scheduled in the measured part. */
  scheduled: number
  /** Completed with a good answer (HTTP 2xx, or the full echo). */
  ok: number
  /** HTTP answers outside 2xx. */
  badStatus: number
  /** Requests lost to a connection error (reset, refused, closed mid-answer). */
  connectionErrors: number
  /** Still unanswered (queued or in flight) when the drain time ran out. */
  timeouts: number
  /** Measured from the intended send time, microseconds, hdr compressed base64. */
  latency: string
  /** Measured from the actual write, microseconds, hdr compressed base64. */
  serviceTime: string
  /** How late the generator's own timer fired, at its worst (microseconds). */
  maxTimerLagUs: number
  /** Wall-clock length of the measured part. */
  elapsedMs: number
}

export const HISTOGRAM_OPTIONS = { lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 } as const

/** Within this of the next send the generator spins instead of sleeping on a timer. */
const SPIN_NS = 2_000_000n

/** Connections lost are reopened, but not forever. */
const MAX_RECONNECTS_PER_CONNECTION = 50

interface Pending { intendedNs: bigint; sentNs: bigint; measured: boolean }

const nowNs = (): bigint => process.hrtime.bigint()

class Connection {
  socket: Socket | undefined
  readonly queue: Pending[] = []
  inFlight: Pending | undefined
  reconnects = 0
  buffer: Buffer = Buffer.alloc(0)
  expectedBytes = -1
  status = 0
  dead = false
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const latency = hdr.build(HISTOGRAM_OPTIONS)
  const serviceTime = hdr.build(HISTOGRAM_OPTIONS)
  const counts = { scheduled: 0, ok: 0, badStatus: 0, connectionErrors: 0, timeouts: 0 }
  const request = spec.mode === 'http'
    ? Buffer.from(`GET ${spec.path} HTTP/1.1\r\nHost: ${spec.host}\r\nUser-Agent: weft-bench\r\n\r\n`)
    : Buffer.alloc(spec.payloadBytes, 0x61)

  const connections = Array.from({ length: spec.connections }, () => new Connection())
  let done: () => void = () => {}
  const finished = new Promise<void>((resolve) => (done = resolve))
  let sendingOver = false

  const outstanding = (): number => connections.reduce((n, c) => n + c.queue.length + (c.inFlight ? 1 : 0), 0)
  const checkDone = (): void => { if (sendingOver && outstanding() === 0) done() }

  const complete = (c: Connection, good: boolean, badStatus: boolean): void => {
    const p = c.inFlight
    c.inFlight = undefined
    if (p?.measured) {
      const t = nowNs()
      if (good) {
        counts.ok++
        latency.recordValue(Math.max(1, Number((t - p.intendedNs) / 1000n)))
        serviceTime.recordValue(Math.max(1, Number((t - p.sentNs) / 1000n)))
      } else if (badStatus) counts.badStatus++
      else counts.connectionErrors++
    }
    pump(c)
    checkDone()
  }

  const onData = (c: Connection, chunk: Buffer): void => {
    c.buffer = c.buffer.length === 0 ? chunk : Buffer.concat([c.buffer, chunk])
    for (;;) {
      if (!c.inFlight) { c.buffer = Buffer.alloc(0); return }
      if (spec.mode === 'echo') {
        if (c.buffer.length < spec.payloadBytes) return
        c.buffer = c.buffer.subarray(spec.payloadBytes)
        complete(c, true, false)
        continue
      }
      if (c.expectedBytes < 0) {
        const end = c.buffer.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = c.buffer.subarray(0, end).toString('latin1')
        c.status = Number(head.slice(9, 12))
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)
        c.expectedBytes = end + 4 + (length ? Number(length[1]) : 0)
      }
      if (c.buffer.length < c.expectedBytes) return
      c.buffer = c.buffer.subarray(c.expectedBytes)
      c.expectedBytes = -1
      const good = c.status >= 200 && c.status < 300
      complete(c, good, !good)
    }
  }

  const open = (c: Connection): void => {
    c.buffer = Buffer.alloc(0)
    c.expectedBytes = -1
    const socket = net.connect({ host: spec.host, port: spec.port, noDelay: true })
    c.socket = socket
    socket.on('data', (chunk: Buffer) => onData(c, chunk))
    const lost = (): void => {
      if (c.socket !== socket) return
      c.socket = undefined
      const lostRequest = c.inFlight
      c.inFlight = undefined
      if (lostRequest?.measured) counts.connectionErrors++
      if (c.reconnects++ >= MAX_RECONNECTS_PER_CONNECTION) {
        c.dead = true
        // Everything still queued on a dead connection is lost: counted, never dropped.
        for (const p of c.queue.splice(0)) if (p.measured) counts.connectionErrors++
        checkDone()
        return
      }
      if (!sendingOver || c.queue.length > 0) setTimeout(() => open(c), 10)
      checkDone()
    }
    socket.on('error', () => {})
    socket.on('close', lost)
    socket.on('connect', () => pump(c))
  }

  const pump = (c: Connection): void => {
    if (c.inFlight || c.queue.length === 0) return
    if (!c.socket || c.socket.connecting) { if (!c.socket && !c.dead) open(c); return }
    const p = c.queue.shift() as Pending
    p.sentNs = nowNs()
    c.inFlight = p
    c.socket.write(request)
  }

  for (const c of connections) open(c)
  await new Promise((resolve) => setTimeout(resolve, 100)) // let the connections open

  const intervalNs = BigInt(Math.round(1e9 / spec.rate))
  const startNs = nowNs()
  const measureFromNs = startNs + BigInt(spec.warmupMs) * 1_000_000n
  const endNs = measureFromNs + BigInt(spec.durationMs) * 1_000_000n
  let next = startNs
  let index = 0
  let maxTimerLagUs = 0
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const t = nowNs()
      if (t > next) maxTimerLagUs = Math.max(maxTimerLagUs, Number((t - next) / 1000n))
      while (next <= t && next < endNs) {
        const measured = next >= measureFromNs
        if (measured) counts.scheduled++
        const c = connections[index++ % connections.length] as Connection
        if (c.dead) { if (measured) counts.connectionErrors++ } else {
          c.queue.push({ intendedNs: next, sentNs: 0n, measured })
          pump(c)
        }
        next += intervalNs
      }
      if (next >= endNs) { resolve(); return }
      // Sleep on a timer only while the next send is far off; close to it, spin the event loop
      // (setImmediate: I/O is polled between turns, so answers are read as they arrive). Node's
      // timers have millisecond granularity and fire late; spinning sends within tens of µs of
      // the schedule, at the cost of the generator's own core (it is pinned to one).
      const waitNs = next - nowNs()
      if (waitNs > SPIN_NS) setTimeout(tick, Number((waitNs - SPIN_NS) / 1_000_000n))
      else setImmediate(tick)
    }
    tick()
  })
  const elapsedMs = Number((nowNs() - measureFromNs) / 1_000_000n)
  sendingOver = true
  checkDone()
  const timer = setTimeout(done, spec.drainMs)
  await finished
  clearTimeout(timer)
  for (const c of connections) {
    for (const p of c.queue) if (p.measured) counts.timeouts++
    if (c.inFlight?.measured) counts.timeouts++
    c.queue.length = 0
    c.inFlight = undefined
    c.socket?.destroy()
  }
  return {
    ...counts,
    latency: hdr.encodeIntoCompressedBase64(latency),
    serviceTime: hdr.encodeIntoCompressedBase64(serviceTime),
    maxTimerLagUs,
    elapsedMs,
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const spec = JSON.parse(process.argv[2] ?? '') as LoadSpec
  const result = await runLoad(spec)
  process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(0)
}
