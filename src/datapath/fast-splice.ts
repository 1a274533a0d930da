// The L4 fast path: joins a pod's TCP connection and the proxy's TCP connection to the destination
// pod in the kernel (a sockhash and an sk_skb stream verdict, bpf/splice.h), so payload bytes no
// longer cross user space. Used by outbound.ts for same-node opaque TCP once the connection is
// accepted and authorized, unless `weft node --no-l4-fast-path`. What the proxy
// still does itself, as splice.ts does:
//  - sees the end of each direction: it keeps reading both sockets, and reads only EOF (FIN) or
//    an error (RST) there, since the verdict takes every payload skb;
//  - half-close: on EOF from one side it ends the other side's sending half — but only once every
//    byte the kernel forwarded that way is in the other socket's send queue (the verdict queues
//    skbs to the peer and a kernel worker sends them; a FIN sent earlier would overtake them and
//    the bytes after it would be lost). The send queue's progress is TCP_INFO's bytes_acked plus
//    SIOCOUTQ, compared with the verdict's byte count for that socket (splice_bytes);
//  - resets: an error on one side resets the other;
//  - counts the bytes: what it moved itself before joining plus what the kernel forwarded;
//  - idle timeout: the sockets look idle to user space, so at the timeout the kernel's counts
//    decide whether bytes moved meanwhile;
//  - abort (drain deadline, shutdown): resets both.
//
// Joining safely. Bytes the proxy already read (the sniffer's, Node's buffer) must reach the
// other socket before anything the kernel forwards, and the verdict takes whole skbs (tcp_read_skb),
// so an skb half-read by user space would be sent again in full. So, with both sockets' reading
// stopped: take Node's buffered bytes and drain each receive queue until it is empty
// (MSG_DONTWAIT), write them to the other socket, wait until those writes are in the kernel, and
// join. Nothing is read in between, so the queues then hold only whole skbs that arrived after
// the drain; they would wait for the next skb to reach the verdict — possibly never (a client
// waiting for a reply) — so after joining, SO_RCVLOWAT is set, which runs the data-ready callback
// and hands them over. When a side already ended, the bytes keep coming faster than the drain
// empties the queues (JOIN_ATTEMPTS rounds of DRAIN_LIMIT), or the written bytes do not reach the
// kernel within WRITE_WAIT_MS, the connection stays on the user-space splice (`joined: false`).
import type { Socket } from 'node:net'
import { abort, splice, type SpliceHandle, type SpliceOptions, type SpliceOutcome } from './splice.ts'
import { drainReceiveQueue, kickReceiveQueue, socketFd, tcpCounters } from '../bpf/index.ts'

/** The kernel half: NodeInterception's fast-path calls. */
export interface KernelSplicer {
  joinSockets(fdA: number, fdB: number): [bigint, bigint]
  splicedBytes(cookie: bigint): bigint
  releaseSockets(cookies: bigint[]): void
}

export interface FastSpliceResult {
  outcome: SpliceOutcome
  /** All bytes each way (user space and kernel), as splice.ts counts them. */
  bytesSent: number
  bytesReceived: number
  /** Of those, the bytes the kernel forwarded (0 on the user-space path). */
  kernelBytesSent: number
  kernelBytesReceived: number
  /** true when the sockets were joined in the kernel; false when it stayed in user space. */
  joined: boolean
}

export interface FastSpliceOptions extends Omit<SpliceOptions, 'onDone' | 'onBytes'> {
  kernel: KernelSplicer
  onDone: (result: FastSpliceResult) => void
}

/** How many bytes one drain takes at most before the written bytes must reach the kernel. */
const DRAIN_LIMIT = 1024 * 1024
/**
 * How long to wait for written bytes to reach the kernel while neither socket is read. Bounded:
 * a peer that only reads once its own writes get through (an echo) would otherwise wait for us
 * while we wait for it; past this the connection stays on the user-space splice, which reads.
 */
const WRITE_WAIT_MS = 200
/** How many drain-and-write rounds to try before staying in user space (a peer sending faster than that). */
const JOIN_ATTEMPTS = 8
/** Longest pause between two checks of a send queue before a FIN is forwarded. */
const FIN_POLL_MAX_MS = 50

interface NodeHandle { readStop(): number; readStart(): number; reading: boolean }
const handleOf = (socket: Socket): NodeHandle | null | undefined => (socket as unknown as { _handle?: NodeHandle | null })._handle

function stopReading(socket: Socket): void {
  socket.pause()
  // pause() alone leaves libuv reading into Node's buffer; the handle stops it (Node's own
  // _read starts it again on resume, as it sees reading === false).
  const handle = handleOf(socket)
  if (handle && handle.reading) { handle.reading = false; handle.readStop() }
}

/**
 * Undoes stopReading. Starts the handle itself: a read() while it was stopped left the stream
 * waiting for a push that only a running handle makes, so resume() alone would not start it.
 */
function startReading(socket: Socket): void {
  const handle = handleOf(socket)
  if (handle && !handle.reading && !socket.destroyed) { handle.reading = true; handle.readStart() }
  socket.resume()
}

/** Bytes a socket has put in its send queue so far: acknowledged plus still queued. */
function queuedSoFar(fd: number): number {
  const counters = tcpCounters(fd)
  return counters.bytesAcked + counters.unacked
}

export function fastSplice(downstream: Socket, upstream: Socket, options: FastSpliceOptions): SpliceHandle {
  let userSent = 0
  let userReceived = 0
  let delegate: SpliceHandle | undefined
  let abortedWhileJoining = false

  const stayInUserSpace = (): void => {
    if (delegate) return
    if (downstream.closed || upstream.closed) {
      // Torn down while joining (a reset, or abort during the wait): splice.ts would wait for a
      // 'close' that already happened, so finish here once the other side has closed too.
      delegate = { abort: () => {} }
      abort(downstream)
      abort(upstream)
      const report = (): void => options.onDone({
        outcome: abortedWhileJoining ? 'aborted' : 'reset', bytesSent: userSent, bytesReceived: userReceived,
        kernelBytesSent: 0, kernelBytesReceived: 0, joined: false,
      })
      const open = [downstream, upstream].find((s) => !s.closed)
      if (open) open.once('close', report)
      else report()
      return
    }
    startReading(downstream)
    startReading(upstream)
    let sentAfter = 0
    let receivedAfter = 0
    delegate = splice(downstream, upstream, {
      idleTimeoutMs: options.idleTimeoutMs,
      onBytes: (flow, n) => { if (flow === 'sent') sentAfter += n; else receivedAfter += n },
      onDone: (result) => options.onDone({
        outcome: result.outcome, bytesSent: userSent + sentAfter, bytesReceived: userReceived + receivedAfter,
        kernelBytesSent: 0, kernelBytesReceived: 0, joined: false,
      }),
    })
    if (abortedWhileJoining) delegate.abort()
  }

  const fdDown = socketFd(downstream)
  const fdUp = socketFd(upstream)
  if (fdDown === undefined || fdUp === undefined || downstream.destroyed || upstream.destroyed) {
    stayInUserSpace()
    return { abort: () => delegate?.abort() }
  }
  stopReading(downstream)
  stopReading(upstream)

  /**
   * One round: moves what Node buffered and the receive queues hold to the other side. 'drained':
   * both receive queues were read until empty, so what they hold now are whole skbs nobody read;
   * 'partial': a queue gave DRAIN_LIMIT bytes and may hold more (perhaps a half-read skb);
   * 'ended': a side ended or failed, stay in user space.
   */
  const moveWaiting = (): 'drained' | 'partial' | 'ended' => {
    let result: 'drained' | 'partial' = 'drained'
    for (const [from, to, fd] of [[downstream, upstream, fdDown], [upstream, downstream, fdUp]] as const) {
      const chunks: Buffer[] = []
      for (let chunk: Buffer | null; (chunk = from.read() as Buffer | null) !== null;) chunks.push(chunk)
      stopReading(from) // read() asks libuv to read again once Node's buffer is empty
      const queued = drainReceiveQueue(fd, DRAIN_LIMIT)
      if (queued.data.length > 0) chunks.push(queued.data)
      const bytes = chunks.reduce((sum, c) => sum + c.length, 0)
      if (bytes > 0) {
        for (const chunk of chunks) to.write(chunk)
        if (from === downstream) userSent += bytes; else userReceived += bytes
      }
      if (queued.eof || queued.error !== undefined || from.readableEnded) return 'ended'
      if (queued.data.length >= DRAIN_LIMIT) result = 'partial'
    }
    return result
  }

  /** true once Node has handed every byte written so far to the kernel; false after WRITE_WAIT_MS. */
  const writesInKernel = async (): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined
    const waited = await Promise.race([
      Promise.all([downstream, upstream].map((s) => s.writableLength > 0 && !s.destroyed
        ? new Promise<void>((resolve) => { s.once('drain', resolve); s.once('close', resolve) })
        : undefined)).then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), WRITE_WAIT_MS) }),
    ])
    clearTimeout(timer)
    return waited && downstream.writableLength === 0 && upstream.writableLength === 0
  }

  const join = async (): Promise<void> => {
    for (let attempt = 0; attempt < JOIN_ATTEMPTS; attempt++) {
      if (abortedWhileJoining || downstream.destroyed || upstream.destroyed) break
      const step = moveWaiting()
      if (step === 'ended') break
      // Nothing is read from here on (both handles stopped): the queues only gain whole skbs.
      if ((downstream.writableLength > 0 || upstream.writableLength > 0) && !(await writesInKernel())) break
      if (step === 'partial') continue
      if (abortedWhileJoining || downstream.destroyed || upstream.destroyed) break
      // Everything user space took is in the kernel: from here the verdict forwards, in order.
      let cookies: [bigint, bigint]
      try {
        cookies = options.kernel.joinSockets(fdDown, fdUp)
      } catch {
        break
      }
      runJoined(cookies)
      return
    }
    stayInUserSpace()
  }

  const runJoined = (cookies: [bigint, bigint]): void => {
    const [cookieDown, cookieUp] = cookies
    const fdOf = new Map<Socket, number>([[downstream, fdDown], [upstream, fdUp]])
    const cookieOf = new Map<Socket, bigint>([[downstream, cookieDown], [upstream, cookieUp]])
    // Where each socket's send queue stood at the join: the verdict's bytes come on top of it.
    const queuedAtJoin = new Map<Socket, number>([[downstream, queuedSoFar(fdDown)], [upstream, queuedSoFar(fdUp)]])
    /** Bytes user space wrote to a socket after the join (none expected: the verdict takes them all). */
    const lateWrites = new Map<Socket, number>([[downstream, 0], [upstream, 0]])
    let outcome: SpliceOutcome = 'closed'
    let finished = false
    let pending = 2
    const timers = new Set<NodeJS.Timeout>()

    const kernelBytes = (socket: Socket): number => Number(options.kernel.splicedBytes(cookieOf.get(socket)!))
    const finish = (): void => {
      if (finished) return
      finished = true
      for (const timer of timers) clearTimeout(timer)
      const kernelBytesSent = kernelBytes(downstream)
      const kernelBytesReceived = kernelBytes(upstream)
      options.kernel.releaseSockets(cookies)
      options.onDone({
        outcome, joined: true, kernelBytesSent, kernelBytesReceived,
        bytesSent: userSent + kernelBytesSent, bytesReceived: userReceived + kernelBytesReceived,
      })
    }
    const failBoth = (why: SpliceOutcome): void => {
      if (outcome === 'closed') outcome = why
      if (why === 'idle_timeout') { downstream.destroy(); upstream.destroy(); return }
      abort(downstream)
      abort(upstream)
    }
    /** Ends `to`'s sending half once everything forwarded to it from `from` is in its send queue. */
    const forwardFin = (from: Socket, to: Socket, waitMs = 1): void => {
      if (to.destroyed || to.writableEnded) return
      let queued: number
      try {
        queued = queuedSoFar(fdOf.get(to)!) - queuedAtJoin.get(to)!
      } catch {
        to.end() // the socket is going away; nothing left to order against
        return
      }
      if (queued >= kernelBytes(from) + lateWrites.get(to)!) { to.end(); return }
      const timer = setTimeout(() => { timers.delete(timer); forwardFin(from, to, Math.min(waitMs * 2, FIN_POLL_MAX_MS)) }, waitMs)
      timers.add(timer)
    }

    for (const [side, other] of [[downstream, upstream], [upstream, downstream]] as const) {
      side.on('data', (chunk: Buffer) => {
        // Not expected once joined; if the kernel ever passes bytes up, they still go on.
        if (side === downstream) userSent += chunk.length; else userReceived += chunk.length
        lateWrites.set(other, lateWrites.get(other)! + chunk.length)
        other.write(chunk)
      })
      side.on('end', () => forwardFin(side, other))
      side.on('error', () => failBoth('reset'))
      side.on('close', () => {
        const cleanly = side.readableEnded && side.writableFinished
        if (!cleanly && !other.destroyed) failBoth('reset')
        if (--pending === 0) finish()
      })
    }

    if (options.idleTimeoutMs > 0) {
      let lastSeen = -1
      const onTimeout = (): void => {
        const seen = kernelBytes(downstream) + kernelBytes(upstream) + userSent + userReceived
        // Bytes moved in the kernel meanwhile: not idle. (Node's timeout callback is a once listener.)
        if (seen !== lastSeen) { lastSeen = seen; downstream.setTimeout(options.idleTimeoutMs, onTimeout); return }
        failBoth('idle_timeout')
      }
      lastSeen = kernelBytes(downstream) + kernelBytes(upstream) + userSent + userReceived
      downstream.setTimeout(options.idleTimeoutMs, onTimeout)
    }

    handle.abort = (): void => failBoth('aborted')
    // Skbs that arrived between the drain and the join: hand them to the verdict now.
    kickReceiveQueue(fdDown)
    kickReceiveQueue(fdUp)
    startReading(downstream)
    startReading(upstream)
  }

  const handle: SpliceHandle = {
    abort: () => {
      if (delegate) delegate.abort()
      else { abortedWhileJoining = true; abort(downstream); abort(upstream) }
    },
  }
  join().catch(() => stayInUserSpace()) // e.g. an fd closed under us: the user-space splice copes
  return handle
}
