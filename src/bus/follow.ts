// How a node follows the configuration at cluster scale: a plain core-NATS subscription on the
// config stream's RePublish subject (weft.config.<key>) carries every change, and the KV is read
// only to catch up — at start, after a reconnect, when a gap shows, and on a periodic revision
// check. No JetStream consumer per node lives beyond a catch-up: at 2,000 nodes a consumer each
// cost the server ~130-160 ms of CPU per change (the configuration-scale issue), a subscription
// costs it one more delivery.
//
// Exactness. The RePublish source is the bucket's whole subject space, so every message the
// stream stores — put, delete or purge marker — is republished with its stream sequence in
// `Nats-Sequence`, and sequences arrive consecutively (one publisher, the server). A change whose
// sequence is not `applied + 1` means changes were missed (a slow consumer, a reconnect): the
// follower fetches the missing sequences by direct get, or reloads the bucket's current state
// when there are many, or when one of them is gone from the stream (superseded, purged: its key is
// unknown, so only a reload is exact). (nats-server 2.9.10 sets `Nats-Last-Sequence` to the
// previous sequence *of the same key*, not of the stream — checked on this server — so it cannot
// tell a gap; the stream sequence can.) A missed last change has no successor to reveal it: the
// periodic check compares the stream's last sequence with the applied one.
import { DeliverPolicy, type ConsumerMessages, type JetStreamClient } from '@nats-io/jetstream'
import type { KV } from '@nats-io/kv'
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node'

import { BusError } from './errors.ts'
import { CONFIG_BUCKET, CONFIG_CHANGES, kvSubject, streamOf } from './subjects.ts'
import type { ConfigEvent, ConfigWatch } from './bus.ts'

/** Why the follower read the KV. */
export type CatchUpReason = 'start' | 'gap' | 'reconnect' | 'check'

/**
 * What one catch-up did: `current` (nothing was missed), `fetched` (the missing sequences, by
 * direct get), `reloaded` (the whole current state, through a short-lived ordered consumer).
 */
export type CatchUp = { reason: CatchUpReason; how: 'current' | 'fetched' | 'reloaded'; from: number; to: number }

export type FollowConfigOptions = {
  /** Called once the current state is delivered (also after each reload), with its revision. */
  initialDone?: (revision: number) => void
  /** Called before a reload that follows an earlier load: the changes delivered next are its difference. */
  onResync?: () => void
  /** Trouble while catching up (it keeps retrying with backoff). */
  onError?: (error: BusError) => void
  /** Every catch-up, for the log and the tests. */
  onCatchUp?: (catchUp: CatchUp) => void
  /** How often to compare the stream's last sequence with the applied one (default 15 s, ±20%). */
  revisionCheckMs?: number
}

/** More missing changes than this are reloaded rather than fetched one by one. */
export const GAP_FETCH_LIMIT = 256
/** Direct gets in flight at once while fetching a gap. */
const FETCH_PARALLEL = 32
export const REVISION_CHECK_MS = 15_000

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const KEY_PREFIX = kvSubject(CONFIG_BUCKET, '')

/** A change as the subscription (or a direct get) carries it. */
type Change = ConfigEvent

/** Reads one republished (or directly fetched) message; undefined when it is not a stream message. */
function changeOf(msg: Msg): Change | undefined {
  const headers = msg.headers
  const revision = Number(headers?.get('Nats-Sequence'))
  const subject = headers?.get('Nats-Subject') ?? ''
  if (!Number.isInteger(revision) || revision < 1 || !subject.startsWith(KEY_PREFIX)) return undefined
  const operation = headers?.get('KV-Operation')
  const deleted = operation === 'DEL' || operation === 'PURGE'
  return { key: subject.slice(KEY_PREFIX.length), value: deleted ? null : msg.string(), revision }
}

export class ConfigFollower implements ConfigWatch {
  readonly #nc: NatsConnection
  readonly #kv: KV
  readonly #js: JetStreamClient
  readonly #onEvent: (event: ConfigEvent) => void
  readonly #options: FollowConfigOptions
  readonly #translate: (error: unknown) => BusError
  readonly #timeoutMs: number
  /** Keys delivered and not deleted, with their revision: what a reload is compared against. */
  readonly #known = new Map<string, number>()
  /** Live changes not yet delivered (waiting for a catch-up, or behind a gap). */
  #queue: Change[] = []
  #subscription: Subscription | undefined
  #catchingUp: Promise<void> | undefined
  /** A catch-up asked for while one runs; runs after it. */
  #again: CatchUpReason | undefined
  #checkTimer: NodeJS.Timeout | undefined
  /** The stream's creation time at the last load: a bucket deleted and re-created starts over. */
  #streamCreated: string | undefined
  #loaded = false
  #stopped = false
  /** Every change up to this revision has been delivered. */
  revision = 0

  constructor(nc: NatsConnection, js: JetStreamClient, kv: KV, onEvent: (event: ConfigEvent) => void, options: FollowConfigOptions, translate: (error: unknown) => BusError, timeoutMs: number) {
    this.#nc = nc
    this.#kv = kv
    this.#js = js
    this.#onEvent = onEvent
    this.#options = options
    this.#translate = translate
    this.#timeoutMs = timeoutMs
  }

  /** Subscribes, then loads the current state; the first load's error goes to the caller. */
  async start(): Promise<void> {
    this.#subscription = this.#nc.subscribe(CONFIG_CHANGES, { callback: (error, msg) => { if (!error) this.#receive(msg) } })
    try {
      // The server has the subscription before the load reads the stream: no change falls between.
      await this.#nc.flush()
      this.#catchingUp = this.#catchUpOnce('start').finally(() => (this.#catchingUp = undefined))
      await this.#catchingUp
    } catch (error) {
      this.#subscription.unsubscribe()
      throw this.#translate(error)
    }
    this.#drain()
    this.#scheduleCheck()
  }

  /** A reconnect: the server may have restarted, changes may have been published meanwhile. */
  reconnected(): void {
    this.#catchUp('reconnect')
  }

  /** Stops at once: a catch-up in flight (a reload of a big bucket can take a while) delivers nothing more. */
  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#checkTimer)
    this.#subscription?.unsubscribe()
  }

  #scheduleCheck(): void {
    if (this.#stopped) return
    const every = this.#options.revisionCheckMs ?? REVISION_CHECK_MS
    // Jittered so that thousands of nodes started together do not ask together.
    this.#checkTimer = setTimeout(() => {
      this.#catchUp('check')
      this.#scheduleCheck()
    }, every * (0.8 + 0.4 * Math.random()))
    this.#checkTimer.unref()
  }

  #receive(msg: Msg): void {
    const change = changeOf(msg)
    if (change === undefined) return
    this.#queue.push(change)
    this.#drain()
  }

  /** Delivers queued changes in order while they follow on from the applied revision. */
  #drain(): void {
    if (this.#catchingUp !== undefined || this.#stopped) return
    let next = 0
    while (next < this.#queue.length) {
      const change = this.#queue[next]!
      if (change.revision <= this.revision) {
        next++ // already part of a load or a fetch
      } else if (change.revision === this.revision + 1) {
        next++
        this.#deliver(change)
      } else {
        break
      }
    }
    this.#queue = next === this.#queue.length ? [] : this.#queue.slice(next)
    if (this.#queue.length > 0) this.#catchUp('gap')
  }

  #catchUp(reason: CatchUpReason): void {
    if (this.#stopped) return
    if (this.#catchingUp !== undefined) {
      this.#again ??= reason
      return
    }
    this.#catchingUp = (async () => {
      for (let attempt = 0; !this.#stopped; attempt++) {
        try {
          await this.#catchUpOnce(reason)
          return
        } catch (error) {
          this.#options.onError?.(this.#translate(error))
          await sleep(Math.min(2000, 100 * 2 ** attempt))
        }
      }
    })().finally(() => {
      this.#catchingUp = undefined
      const again = this.#again
      this.#again = undefined
      if (again !== undefined) this.#catchUp(again)
      else this.#drain()
    })
  }

  async #catchUpOnce(reason: CatchUpReason): Promise<void> {
    const from = this.revision
    const status = await this.#kv.status()
    const info = status.streamInfo
    const last = info.state.last_seq
    const restarted = this.#streamCreated !== undefined && info.created !== this.#streamCreated
    // A bucket deleted and re-created: what was queued came from the old stream, or is in the reload.
    if (restarted) this.#queue.splice(0, this.#queue.length)
    // Fetch up to the first change already queued (the rest will be delivered from the queue).
    const upTo = Math.min(last, (this.#queue.find((c) => c.revision > this.revision)?.revision ?? Infinity) - 1)
    let how: CatchUp['how']
    if (!this.#loaded || restarted || last < this.revision) {
      await this.#reload(info.created)
      how = 'reloaded'
    } else if (upTo <= this.revision) {
      how = 'current'
      // A queued change beyond the stream's last sequence when it was read: the ones between were
      // published after the read and lost. The next catch-up (the queue still shows the gap) reads again.
      if (this.#queue.length > 0) await sleep(20)
    } else if (upTo - this.revision <= GAP_FETCH_LIMIT && info.config.allow_direct === true && await this.#fetch(this.revision + 1, upTo)) {
      how = 'fetched'
    } else {
      await this.#reload(info.created)
      how = 'reloaded'
    }
    this.#options.onCatchUp?.({ reason, how, from, to: this.revision })
  }

  /**
   * Delivers sequences first..last by direct get, in order. False (nothing delivered) when one
   * of them is gone from the stream: which key it changed is then unknown, so only a reload is exact.
   */
  async #fetch(first: number, last: number): Promise<boolean> {
    const fetched: Change[] = []
    for (let start = first; start <= last; start += FETCH_PARALLEL) {
      const batch = Array.from({ length: Math.min(FETCH_PARALLEL, last - start + 1) }, (_, i) => this.#directGet(start + i))
      for (const change of await Promise.all(batch)) {
        if (change === undefined) return false
        fetched.push(change)
      }
    }
    for (const change of fetched) this.#deliver(change)
    return true
  }

  async #directGet(seq: number): Promise<Change | undefined> {
    const reply = await this.#nc.request(`$JS.API.DIRECT.GET.${streamOf(CONFIG_BUCKET)}`, JSON.stringify({ seq }), { timeout: this.#timeoutMs })
    if (reply.headers?.code === 404) return undefined
    if (reply.headers?.hasError) throw new BusError('other', `nats: direct get of revision ${seq}: ${reply.headers.code} ${reply.headers.description}`)
    return changeOf(reply)
  }

  /**
   * Reads every current value through a short-lived ordered consumer (last message per key,
   * ended at the message with nothing pending after it; deleted as soon as it is read, so no
   * consumer lingers per node), then delivers the difference from what is known: changed and new
   * keys, a delete for each key that vanished.
   */
  async #reload(created: string): Promise<void> {
    const status = await this.#kv.status()
    let revision = status.streamInfo.state.last_seq
    const current = new Map<string, Change>()
    if (status.streamInfo.state.messages > 0) {
      const consumer = await this.#js.consumers.getPushConsumer(streamOf(CONFIG_BUCKET), { deliver_policy: DeliverPolicy.LastPerSubject, filter_subjects: kvSubject(CONFIG_BUCKET, '>') })
      let timer: NodeJS.Timeout | undefined
      let messages: ConsumerMessages | undefined
      try {
        await new Promise<void>((resolve, reject) => {
          // Long enough for a big bucket; a consumer cut by a NATS restart would otherwise hang here.
          timer = setTimeout(() => reject(new BusError('other', `nats: reading the ${CONFIG_BUCKET} bucket took longer than ${this.#timeoutMs * 6} ms; retrying`)), this.#timeoutMs * 6)
          consumer.consume({
            callback: (msg) => {
              revision = Math.max(revision, msg.seq)
              const operation = msg.headers?.get('KV-Operation')
              const key = msg.subject.slice(KEY_PREFIX.length)
              if (operation === 'DEL' || operation === 'PURGE') current.delete(key)
              else current.set(key, { key, value: msg.string(), revision: msg.seq })
              if (msg.info.pending === 0) resolve()
            },
          }).then((started) => {
            messages = started
            void started.closed().then(() => reject(new BusError('other', `nats: the consumer reading the ${CONFIG_BUCKET} bucket ended early; retrying`)))
          }, reject)
        })
      } finally {
        clearTimeout(timer)
        messages?.stop()
        await consumer.delete().catch(() => {})
      }
    }
    if (this.#loaded) this.#options.onResync?.()
    for (const [key, change] of current) {
      if (this.#known.get(key) !== change.revision) this.#deliver(change)
    }
    for (const key of [...this.#known.keys()]) {
      if (!current.has(key)) this.#deliver({ key, value: null, revision })
    }
    // A re-created bucket may be behind what was applied from the old one.
    this.revision = revision
    this.#streamCreated = created
    this.#loaded = true
    this.#options.initialDone?.(revision)
  }

  #deliver(change: Change): void {
    if (this.#stopped) return
    if (change.value === null) this.#known.delete(change.key)
    else this.#known.set(change.key, change.revision)
    this.revision = Math.max(this.revision, change.revision)
    this.#onEvent(change)
  }
}
