// Tracks the connections a listener forwards, so a draining daemon knows when they are done.
import type { SpliceHandle } from './splice.ts'

export class ConnectionTracker {
  private readonly open = new Set<SpliceHandle>()
  private waiters: Array<() => void> = []

  add(handle: SpliceHandle): void { this.open.add(handle) }

  remove(handle: SpliceHandle): void {
    this.open.delete(handle)
    if (this.open.size === 0) { for (const w of this.waiters) w(); this.waiters = [] }
  }

  get size(): number { return this.open.size }

  /** Resolves when every connection has ended, or aborts the rest after `deadlineMs`. */
  async drain(deadlineMs: number): Promise<{ abortedAtDeadline: number }> {
    if (this.open.size === 0) return { abortedAtDeadline: 0 }
    const ended = new Promise<void>((resolve) => this.waiters.push(resolve))
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'deadline'>((resolve) => { timer = setTimeout(() => resolve('deadline'), deadlineMs) })
    const result = await Promise.race([ended, deadline])
    clearTimeout(timer)
    if (result !== 'deadline') return { abortedAtDeadline: 0 }
    const remaining = [...this.open]
    for (const handle of remaining) handle.abort()
    return { abortedAtDeadline: remaining.length }
  }
}
