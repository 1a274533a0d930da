// Tracks the connections a listener forwards, so a draining daemon knows when they are done, and
// so a new configuration can close those its AuthorizationPolicies no longer allow (`revoke`).
import type { MeshSnapshot } from '../config/resources/index.ts'
import type { SpliceHandle } from './splice.ts'

/** Whether an open connection is still allowed under `snapshot` (admission.ts's `stillAllowed`). */
export type Recheck = (snapshot: MeshSnapshot) => boolean

export class ConnectionTracker {
  private readonly open = new Map<SpliceHandle, Recheck | undefined>()
  private waiters: Array<() => void> = []

  /** `recheck`: how to tell, when the configuration changes, that the connection must close. */
  add(handle: SpliceHandle, recheck?: Recheck): void { this.open.set(handle, recheck) }

  remove(handle: SpliceHandle): void {
    this.open.delete(handle)
    if (this.open.size === 0) { for (const w of this.waiters) w(); this.waiters = [] }
  }

  get size(): number { return this.open.size }

  /** Aborts (resets) every connection `snapshot` no longer allows; how many. */
  revoke(snapshot: MeshSnapshot): number {
    let revoked = 0
    for (const [handle, recheck] of [...this.open]) {
      if (recheck === undefined || recheck(snapshot)) continue
      handle.abort()
      revoked++
    }
    return revoked
  }

  /** Resolves when every connection has ended, or aborts the rest after `deadlineMs`. */
  async drain(deadlineMs: number): Promise<{ abortedAtDeadline: number }> {
    if (this.open.size === 0) return { abortedAtDeadline: 0 }
    const ended = new Promise<void>((resolve) => this.waiters.push(resolve))
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'deadline'>((resolve) => { timer = setTimeout(() => resolve('deadline'), deadlineMs) })
    const result = await Promise.race([ended, deadline])
    clearTimeout(timer)
    if (result !== 'deadline') return { abortedAtDeadline: 0 }
    const remaining = [...this.open.keys()]
    for (const handle of remaining) handle.abort()
    return { abortedAtDeadline: remaining.length }
  }
}
