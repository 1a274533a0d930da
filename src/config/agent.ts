// The node's side of configuration: follows the weft-config bucket on NATS (its changes on a
// plain subscription, the KV read only to catch up: src/bus/follow.ts), keeps every resource as
// stored, and on each change builds a new immutable MeshSnapshot that the daemon swaps in. Each
// node validates every resource on its own: one bad resource is rejected alone (listed in the
// status) and the rest apply. With NATS down the last snapshot stays in force; on reconnect, or
// when a gap in the revisions shows that changes were missed, the node catches up to the exact
// current revision.
import { connectBus, type Bus, type BusOptions, type ConfigWatch } from '../bus/index.ts'
import { buildSnapshot, snapshotCounts, type MeshSnapshot, type ValidationContext } from './resources/index.ts'
import type { Logger } from '../telemetry/log.ts'

export type NatsState = 'connecting' | 'connected' | 'disconnected'

/**
 * After a change a node publishes its status on weft.status.<node> at once (a core publish) but
 * stores it in the weft-status bucket (a JetStream write) at most this often: at 1,000 nodes a
 * stored status per node per change cost nats-server ~200 ms of CPU per change on the
 * benchmark's 2 cores. The last status of a burst is always stored, so the bucket is exact at
 * most this long after the node applied it; `weft status --wait-revision` reads the live ones.
 */
export const STATUS_STORE_MIN_INTERVAL_MS = 5000

/** A snapshot build starts no sooner than this many times the last one took after it started. */
export const REBUILD_SPACING = 5

/** What a node publishes on weft.status.<node> and in the weft-status bucket. */
export interface NodeStatus {
  node: string
  revision: number
  appliedAt: string | undefined
  ready: boolean
  reason: string
  nats: NatsState
  rejected: Array<{ key: string; reason: string }>
  warnings: Array<{ key: string; message: string }>
  counts: ReturnType<typeof snapshotCounts> | undefined
  updatedAt: string
  /** How often the node reports (--status-interval): readers judge its silence against this. */
  statusIntervalMs: number
}

export interface ConfigAgentOptions {
  node: string
  bus: BusOptions
  /**
   * A connection to use instead of opening one from `bus` (which then only names the servers);
   * the agent does not close it. The many-node benchmark runs many agents on one connection.
   */
  sharedBus?: Bus
  /** How often to check that no change was missed (default REVISION_CHECK_MS, 15 s). */
  revisionCheckMs?: number
  validation: ValidationContext
  statusIntervalMs: number
  log: Logger
  /** Called with every new snapshot; must not throw (errors are logged). */
  onSnapshot: (snapshot: MeshSnapshot) => void
  /** The daemon's own readiness, reported in the status. */
  readiness: () => { ready: boolean; reason: string }
}

export class ConfigAgent {
  private readonly options: ConfigAgentOptions
  /** Every resource as stored, parsed; a value that is not JSON is kept as its parse error. */
  private readonly stored = new Map<string, unknown>()
  private readonly unparsable = new Map<string, string>()
  private bus: Bus | undefined
  private watch: ConfigWatch | undefined
  private statusTimer: NodeJS.Timeout | undefined
  private initialLoaded = false
  private pendingRevision = 0
  private rebuildQueued = false
  private rebuildTimer: NodeJS.Timeout | undefined
  private lastRebuildAt = -Infinity
  private stopped = false
  private appliedAt: string | undefined
  private lastStoredAt = 0
  private storeTimer: NodeJS.Timeout | undefined
  /** How long building and swapping in snapshots took: `weft node` logs it, the benchmark reads it. */
  private readonly applies = { count: 0, totalMs: 0, maxMs: 0, lastMs: 0 }
  snapshot: MeshSnapshot | undefined
  nats: NatsState = 'connecting'

  constructor(options: ConfigAgentOptions) {
    this.options = options
  }

  private get servers(): string {
    const s = this.options.bus.servers
    return Array.isArray(s) ? s.join(',') : s
  }

  /** Why the node has no configuration yet, for /readyz and the log. */
  waitingReason(): string {
    return this.nats === 'connected'
      ? 'waiting for configuration: loading the weft-config bucket'
      : `waiting for configuration: NATS at ${this.servers} is unreachable (retrying)`
  }

  /** Connects in the background (retrying while NATS is down) and starts the watch. */
  async start(): Promise<void> {
    const { log } = this.options
    log.info('connecting to NATS', { servers: this.servers, user: this.options.bus.user })
    const nag = (): void => {
      if (this.nats !== 'connected') log.warn('NATS unreachable; waiting for configuration (listeners stay closed until it arrives)', { servers: this.servers })
    }
    const firstNag = setTimeout(nag, 2_000)
    const nagging = setInterval(nag, 10_000)
    try {
      this.bus = this.options.sharedBus ?? await connectBus({ ...this.options.bus, name: `weft-node ${this.options.node}`, waitForServer: true })
    } finally {
      clearTimeout(firstNag)
      clearInterval(nagging)
    }
    if (this.stopped) { if (!this.options.sharedBus) await this.bus.close(); return }
    this.nats = 'connected'
    log.info('connected to NATS', { servers: this.servers })
    void this.followConnection(this.bus)
    this.watch = await this.bus.followConfig((event) => {
      this.stored.delete(event.key)
      this.unparsable.delete(event.key)
      if (event.value !== null) {
        // Any NATS client may publish: a value that is not JSON is rejected alone.
        try {
          this.stored.set(event.key, JSON.parse(event.value))
        } catch (err) {
          this.unparsable.set(event.key, `not valid JSON: ${(err as Error).message}`)
        }
      }
      this.pendingRevision = Math.max(this.pendingRevision, event.revision)
      if (this.initialLoaded) this.queueRebuild()
    }, {
      initialDone: (revision) => {
        this.pendingRevision = Math.max(this.pendingRevision, revision)
        this.initialLoaded = true
        this.queueRebuild()
      },
      onResync: () => log.info('configuration reloading: changes were missed (NATS interruption or a gap too large to fetch)'),
      onError: (error) => log.warn('configuration catch-up trouble; retrying', { error: error.message }),
      onCatchUp: ({ reason, how, from, to }) => {
        if (how !== 'current') log.info('configuration caught up', { reason, how, from, to })
      },
      ...(this.options.revisionCheckMs !== undefined ? { revisionCheckMs: this.options.revisionCheckMs } : {}),
    })
    this.statusTimer = setInterval(() => { void this.publishStatus() }, this.options.statusIntervalMs)
  }

  private async followConnection(bus: Bus): Promise<void> {
    for await (const status of bus.connection.status()) {
      if (status.type === 'disconnect' && this.nats !== 'disconnected') {
        this.nats = 'disconnected'
        this.options.log.warn('lost NATS; keeping the last configuration', { revision: this.snapshot?.revision })
      } else if (status.type === 'reconnect') {
        this.nats = 'connected'
        this.options.log.info('reconnected to NATS; resyncing configuration')
        void this.publishStatus()
      }
    }
  }

  /**
   * Many changes in one burst make few snapshots: the changes received together make one, and
   * while changes keep coming (an apply of a whole file) a build starts no sooner than
   * REBUILD_SPACING times the last one took after that one started, so rebuilds walking a big mesh
   * take at most a fifth of the node's CPU. In a small mesh (builds well under a millisecond) that is
   * no wait at all; a change after a quiet moment is applied at once.
   */
  private queueRebuild(): void {
    if (this.rebuildQueued) return
    this.rebuildQueued = true
    const run = (): void => {
      this.rebuildTimer = undefined
      this.rebuildQueued = false
      if (!this.stopped) this.rebuild()
    }
    const wait = this.lastRebuildAt + REBUILD_SPACING * this.applies.lastMs - performance.now()
    if (wait <= 0) setImmediate(run)
    else this.rebuildTimer = setTimeout(run, wait)
  }

  private rebuild(): void {
    const { log } = this.options
    const started = performance.now()
    this.lastRebuildAt = started
    // The snapshot in force lets the build reuse what the change did not touch (snapshot.ts).
    const built = buildSnapshot(new Map(this.stored), this.options.validation, this.pendingRevision, this.snapshot)
    const snapshot: MeshSnapshot = this.unparsable.size === 0 ? built
      : { ...built, rejected: [...built.rejected, ...[...this.unparsable].map(([key, reason]) => ({ key, reason }))] }
    const previous = this.snapshot
    this.snapshot = snapshot
    this.appliedAt = new Date().toISOString()
    for (const r of snapshot.rejected) {
      if (!previous?.rejected.some((p) => p.key === r.key && p.reason === r.reason)) log.warn('resource rejected', { key: r.key, reason: r.reason })
    }
    try {
      this.options.onSnapshot(snapshot)
    } catch (err) {
      log.error('applying the configuration failed; keeping what is in force', { revision: snapshot.revision, error: err })
    }
    const applyMs = performance.now() - started
    this.applies.count++
    this.applies.totalMs += applyMs
    this.applies.maxMs = Math.max(this.applies.maxMs, applyMs)
    this.applies.lastMs = applyMs
    log.info('configuration applied', { revision: snapshot.revision, applyMs: Math.round(applyMs * 1000) / 1000, ...snapshotCounts(snapshot) })
    this.reportApplied()
  }

  /** Snapshots built so far and the time they took (build, validation and onSnapshot), in ms. */
  applyStats(): { count: number; totalMs: number; maxMs: number; lastMs: number } {
    return { ...this.applies }
  }

  status(): NodeStatus {
    const own = this.options.readiness()
    const s = this.snapshot
    return {
      node: this.options.node,
      revision: s?.revision ?? 0,
      appliedAt: this.appliedAt,
      ready: own.ready,
      reason: own.reason,
      nats: this.nats,
      rejected: s ? s.rejected.map((r) => ({ key: r.key, reason: r.reason })) : [],
      warnings: s ? s.warnings.map((w) => ({ key: w.key, message: w.message })) : [],
      counts: s ? snapshotCounts(s) : undefined,
      updatedAt: new Date().toISOString(),
      statusIntervalMs: this.options.statusIntervalMs,
    }
  }

  /** The status after a change: live at once, stored at most every STATUS_STORE_MIN_INTERVAL_MS. */
  private reportApplied(): void {
    if (!this.bus || this.nats !== 'connected') return
    const wait = this.lastStoredAt + STATUS_STORE_MIN_INTERVAL_MS - Date.now()
    if (wait <= 0) {
      void this.publishStatus()
      return
    }
    this.bus.publishLiveStatus(this.options.node, this.status())
    this.storeTimer ??= setTimeout(() => {
      this.storeTimer = undefined
      void this.publishStatus()
    }, wait)
  }

  /** Publishes the status on weft.status.<node> and stores it in the weft-status bucket. */
  async publishStatus(): Promise<void> {
    if (!this.bus || this.nats !== 'connected') return
    this.lastStoredAt = Date.now()
    try {
      await this.bus.publishStatus(this.options.node, this.status())
    } catch (err) {
      this.options.log.warn('cannot publish status', { error: (err as Error).message })
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.statusTimer)
    clearTimeout(this.storeTimer)
    clearTimeout(this.rebuildTimer)
    await this.watch?.stop().catch(() => {})
    if (!this.options.sharedBus) await this.bus?.close().catch(() => {})
  }
}
