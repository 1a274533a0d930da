// The typed client weft uses for NATS: the config and status buckets, a watch that survives
// NATS restarts, and errors translated to one line each (errors.ts).
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { checkServerIdentity, type PeerCertificate } from 'node:tls'

import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream'
import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv'
import { connect, headers, type NatsConnection, type QueuedIterator, type Subscription } from '@nats-io/transport-node'

import { BusError, connectError, describeError, permissionError, violatedPublishSubject } from './errors.ts'
import type { TlsFiles } from './server.ts'
import { ConfigFollower, type FollowConfigOptions } from './follow.ts'
import { CONFIG_BUCKET, CONFIG_CHANGES, STATUS_BUCKET, TRUST_BUCKET, TRUST_BUNDLE_KEY, inboxPrefixFor, kvSubject, statusSubject, streamOf } from './subjects.ts'

export type BusOptions = {
  /** One URL or several (`nats://host:4222`, `tls://host:4222`). */
  servers: string | string[]
  user?: string
  pass?: string
  token?: string
  /** Files: a CA to verify the server, a client cert and key for mutual TLS. */
  tls?: TlsFiles
  /** Connection name shown by the server (`weft-node node1`, `weft apply`). */
  name?: string
  /** How long the first connect may take before failing (default 3000 ms). */
  connectTimeoutMs?: number
  /** How long one request (a put, a get) waits for the server (default 5000 ms). */
  requestTimeoutMs?: number
  /**
   * Keep trying until a server answers instead of failing the first connect (a daemon that
   * starts while NATS is down). Bad credentials still fail at once.
   */
  waitForServer?: boolean
}

/** One change to a resource. `value` is the JSON text as stored, null once deleted. */
export type ConfigEvent = { key: string; value: string | null; revision: number }

export type StoredResource = { key: string; value: string; revision: number }

export type NodeStatusEntry = { node: string; status: unknown; revision: number; updated: Date }

export type WatchConfigOptions = {
  /**
   * Called once all current values have been delivered (also after each resync), with the
   * config revision they add up to.
   */
  initialDone?: (revision: number) => void
  /**
   * Called when the watch was lost (NATS restarted, the connection came back) and is
   * starting over: every current value follows, deletes for keys that vanished meanwhile, then
   * initialDone. A consumer that keeps a map of keys stays right without handling this.
   */
  onResync?: () => void
  /** Trouble while re-creating the watch (it keeps retrying). */
  onError?: (error: BusError) => void
  /** Only keys under this prefix (`service`, `service.default`). */
  prefix?: string
}

export type ConfigWatch = {
  /** The highest revision delivered so far. */
  readonly revision: number
  stop(): Promise<void>
}

export type Bus = {
  readonly connection: NatsConnection
  readonly user: string | undefined
  /** Creates (operator, control) or opens (nodes) both buckets. */
  configBucket(): Promise<void>
  /** Puts a resource (an object is JSON-encoded); returns the config revision it got. */
  putResource(key: string, json: unknown): Promise<number>
  getResource(key: string): Promise<StoredResource | null>
  /** Deletes a resource (a delete marker); returns the config revision of the delete. */
  deleteResource(key: string): Promise<number>
  /** Current resources, optionally under a key prefix (`service`, `service.default`). */
  listResources(prefix?: string): Promise<StoredResource[]>
  /** The config revision: the last sequence of the weft-config stream. */
  configRevision(): Promise<number>
  /**
   * Follows the configuration with a consumer of its own (the control plane, tools). Nodes use
   * followConfig, which costs the server no consumer per node.
   */
  watchConfig(onEvent: (event: ConfigEvent) => void, options?: WatchConfigOptions): Promise<ConfigWatch>
  /**
   * The node's way: every current value, `initialDone(revision)`, then each change in revision
   * order from the stream's RePublish subject (weft.config.>); the KV is read only to catch up
   * (start, reconnect, a gap in the revisions, a periodic check). See follow.ts.
   */
  followConfig(onEvent: (event: ConfigEvent) => void, options?: FollowConfigOptions): Promise<ConfigWatch>
  /** Publishes on weft.status.<node> and puts into weft-status under the node's name. */
  publishStatus(node: string, status: unknown): Promise<number>
  /**
   * Publishes on weft.status.<node> only (a core publish, no JetStream write): what a node sends
   * on every applied change, storing into weft-status at a slower pace (src/config/agent.ts).
   */
  publishLiveStatus(node: string, status: unknown): void
  /** Every node's latest status. */
  readStatuses(): Promise<NodeStatusEntry[]>
  /** Live statuses from weft.status.> (as they are published, not from the bucket). */
  subscribeStatuses(onStatus: (node: string, status: unknown) => void): { stop(): void }
  /** Creates (operator, control) or opens (nodes) the weft-trust bucket. */
  trustBucket(): Promise<void>
  /** Puts the trust bundle (the CA's; nodes may not); returns its revision in the bucket. */
  putTrustBundle(json: unknown): Promise<number>
  /** The trust bundle as stored, or null before the CA published one. */
  getTrustBundle(): Promise<{ value: string; revision: number } | null>
  /**
   * Follows the trust bundle: the current value (if any), then every change; after a reconnect
   * it is read again. `value` is null when deleted.
   */
  watchTrustBundle(onValue: (value: string | null, revision: number) => void, options?: { onError?: (error: BusError) => void }): Promise<ConfigWatch>
  close(): Promise<void>
}

/** Config bucket settings: a few revisions of history per key, file storage. */
const CONFIG_HISTORY = 5
/** Every stored config change is republished on weft.config.<key> (src covers the whole bucket). */
const CONFIG_REPUBLISH = { src: kvSubject(CONFIG_BUCKET, '>'), dest: CONFIG_CHANGES }
/** The trust bucket keeps a few bundles back, to see what a rotation changed. */
const TRUST_HISTORY = 5

function keyFilter(prefix: string | undefined): string {
  if (prefix === undefined || prefix === '' || prefix === '>') return '>'
  return prefix.endsWith('>') ? prefix : `${prefix}.>`
}

type ClientTls = { ca?: string; cert?: string; key?: string; checkServerIdentity?: (name: string, cert: PeerCertificate) => Error | undefined }

function readTls(tls: TlsFiles | undefined, servers: string[]): ClientTls | undefined {
  if (!tls) return undefined
  const read = (file: string | undefined): string | undefined => (file === undefined ? undefined : readFileSync(file, 'utf8'))
  const files: ClientTls = { ca: read(tls.ca), cert: read(tls.cert), key: read(tls.key) }
  // The client sends no server name for an IP address, and Node then checks the certificate
  // against "localhost". The lab's NATS is an IP: check against that IP (a SAN IP entry).
  const hosts = servers.map((server) => new URL(server.includes('://') ? server : `nats://${server}`).hostname.replace(/^\[|\]$/g, ''))
  if (hosts.length === 1 && isIP(hosts[0]!) !== 0) {
    const ip = hosts[0]!
    files.checkServerIdentity = (_name, cert) => checkServerIdentity(ip, cert)
  }
  return files
}

function encode(json: unknown): string {
  return typeof json === 'string' ? json : JSON.stringify(json)
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Connects to NATS. Fails within connectTimeoutMs with a one-line BusError when no server
 * answers or the credentials are refused; once connected it reconnects forever.
 */
export async function connectBus(options: BusOptions): Promise<Bus> {
  const serverList = Array.isArray(options.servers) ? options.servers : options.servers.split(',').map((s) => s.trim())
  const shown = serverList.join(',')
  const tls = readTls(options.tls, serverList)
  let nc: NatsConnection
  try {
    nc = await connect({
      servers: serverList,
      ...(options.user !== undefined ? { user: options.user, pass: options.pass } : {}),
      ...(options.token !== undefined ? { token: options.token } : {}),
      ...(tls ? { tls } : {}),
      name: options.name ?? 'weft',
      inboxPrefix: inboxPrefixFor(options.user ?? 'anonymous'),
      timeout: options.connectTimeoutMs ?? 3000,
      maxReconnectAttempts: -1,
      waitOnFirstConnect: options.waitForServer === true,
      reconnectTimeWait: 500,
      pingInterval: 10_000,
    })
  } catch (error) {
    throw connectError(shown, options.user, error)
  }
  return new NatsBus(nc, options.user, options.requestTimeoutMs ?? 5000)
}

type ViolationListener = (subject: string, error: unknown) => void

class NatsBus implements Bus {
  readonly connection: NatsConnection
  readonly user: string | undefined
  readonly #js: JetStreamClient
  readonly #kvm: Kvm
  readonly #violationListeners = new Set<ViolationListener>()
  readonly #reconnectListeners = new Set<() => void>()
  #config: KV | undefined
  #status: KV | undefined
  #trust: KV | undefined
  #opening: Promise<void> | undefined
  #openingTrust: Promise<void> | undefined
  readonly #timeout: number

  constructor(nc: NatsConnection, user: string | undefined, timeout: number) {
    this.#timeout = timeout
    this.connection = nc
    this.user = user
    this.#js = jetstream(nc, { timeout })
    this.#kvm = new Kvm(this.#js)
    void this.#watchConnection()
  }

  async #watchConnection(): Promise<void> {
    for await (const status of this.connection.status()) {
      if (status.type === 'error') {
        const subject = violatedPublishSubject(status.error)
        if (subject !== undefined) for (const listener of this.#violationListeners) listener(subject, status.error)
      } else if (status.type === 'reconnect') {
        for (const listener of this.#reconnectListeners) listener()
      }
    }
  }

  /**
   * Runs op, but fails it at once with the permission message when the server refuses a
   * publish to a subject `denied` accepts (otherwise a denied JetStream publish would only time out).
   */
  async #guard<T>(denied: (subject: string) => boolean, op: () => Promise<T>): Promise<T> {
    let listener: ViolationListener | undefined
    const violation = new Promise<never>((_, reject) => {
      listener = (subject, error) => {
        if (denied(subject)) reject(permissionError(this.user, subject, error))
      }
      this.#violationListeners.add(listener)
    })
    try {
      return await Promise.race([op(), violation])
    } catch (error) {
      throw this.#translate(error)
    } finally {
      if (listener) this.#violationListeners.delete(listener)
    }
  }

  #translate(error: unknown): BusError {
    if (error instanceof BusError) return error
    const subject = violatedPublishSubject(error)
    if (subject !== undefined) return permissionError(this.user, subject, error)
    const text = describeError(error)
    if (/stream not found/i.test(text)) {
      return new BusError('missing-bucket', `nats: the ${CONFIG_BUCKET}/${STATUS_BUCKET} buckets do not exist yet: an operator or the control plane creates them (weft lab up, weft control)`, { cause: error })
    }
    if (/jetstream not enabled|no responders/i.test(text)) {
      return new BusError('other', `nats: JetStream is not available on ${this.connection.getServer()} (${text}); the server may still be starting, or runs without jetstream`, { cause: error })
    }
    return new BusError('other', `nats: ${text}`, { cause: error })
  }

  async configBucket(): Promise<void> {
    if (this.#config && this.#status) return
    this.#opening ??= this.#openBuckets().finally(() => (this.#opening = undefined))
    await this.#opening
  }

  get #mayCreate(): boolean {
    return this.user === undefined || this.user === 'operator' || this.user === 'control'
  }

  async trustBucket(): Promise<void> {
    if (this.#trust) return
    this.#openingTrust ??= (async () => {
      try {
        this.#trust = await this.#guard(
          (subject) => subject.startsWith('$JS.API.'),
          async () => (this.#mayCreate ? await this.#kvm.create(TRUST_BUCKET, { history: TRUST_HISTORY }) : await this.#kvm.open(TRUST_BUCKET)),
        )
      } catch (error) {
        if (error instanceof BusError && error.kind === 'missing-bucket') {
          throw new BusError('missing-bucket', `nats: the ${TRUST_BUCKET} bucket does not exist yet: the control plane creates it (weft control), or an operator (weft lab up)`, { cause: error })
        }
        throw error
      }
    })().finally(() => (this.#openingTrust = undefined))
    await this.#openingTrust
  }

  async putTrustBundle(json: unknown): Promise<number> {
    await this.trustBucket()
    const subject = kvSubject(TRUST_BUCKET, TRUST_BUNDLE_KEY)
    return await this.#guard((s) => s === subject, () => this.#trust!.put(TRUST_BUNDLE_KEY, encode(json)))
  }

  async getTrustBundle(): Promise<{ value: string; revision: number } | null> {
    await this.trustBucket()
    const entry = await this.#guard((s) => s.startsWith('$JS.'), () => this.#trust!.get(TRUST_BUNDLE_KEY))
    if (entry === null || entry.operation !== 'PUT') return null
    return { value: entry.string(), revision: entry.revision }
  }

  async watchTrustBundle(onValue: (value: string | null, revision: number) => void, options: { onError?: (error: BusError) => void } = {}): Promise<ConfigWatch> {
    await this.trustBucket()
    const watch = new ResilientWatch(this.#trust!, TRUST_BUNDLE_KEY, (event) => onValue(event.value, event.revision), options, (error) => this.#translate(error))
    const onReconnect = (): void => watch.restart()
    this.#reconnectListeners.add(onReconnect)
    await watch.start()
    return {
      get revision() {
        return watch.revision
      },
      stop: async () => {
        this.#reconnectListeners.delete(onReconnect)
        await watch.stop()
      },
    }
  }

  async #openBuckets(): Promise<void> {
    const mayCreate = this.#mayCreate
    const open = async (bucket: string, history: number): Promise<KV> => {
      return await this.#guard(
        (subject) => subject.startsWith('$JS.API.'),
        async () => (mayCreate ? await this.#kvm.create(bucket, { history, ...(bucket === CONFIG_BUCKET ? { republish: CONFIG_REPUBLISH } : {}) }) : await this.#kvm.open(bucket)),
      )
    }
    this.#config = await open(CONFIG_BUCKET, CONFIG_HISTORY)
    if (mayCreate) await this.#ensureRepublish(this.#config)
    this.#status = await open(STATUS_BUCKET, 1)
  }

  /**
   * Nodes follow changes on the config stream's RePublish subject. A bucket created before weft
   * republished (kvm.create leaves an existing stream as it is) gets it added here where the
   * server allows it; nats-server 2.9 refuses ("stream configuration update can not change
   * RePublish"), and nodes then follow that bucket with a consumer each (followConfig).
   */
  async #ensureRepublish(kv: KV): Promise<void> {
    if (await this.#republishes(kv)) return
    const manager = await jetstreamManager(this.connection, { timeout: this.#timeout })
    await manager.streams.update(streamOf(CONFIG_BUCKET), { republish: CONFIG_REPUBLISH }).catch(() => {})
  }

  async #republishes(kv: KV): Promise<boolean> {
    const { config } = (await this.#guard((s) => s.startsWith('$JS.API.'), () => kv.status())).streamInfo
    return config.republish?.src === CONFIG_REPUBLISH.src && config.republish.dest === CONFIG_REPUBLISH.dest
  }

  async #configKv(): Promise<KV> {
    await this.configBucket()
    return this.#config!
  }

  async #statusKv(): Promise<KV> {
    await this.configBucket()
    return this.#status!
  }

  async putResource(key: string, json: unknown): Promise<number> {
    const kv = await this.#configKv()
    const subject = kvSubject(CONFIG_BUCKET, key)
    return await this.#guard((s) => s === subject, () => kv.put(key, encode(json)))
  }

  async getResource(key: string): Promise<StoredResource | null> {
    const kv = await this.#configKv()
    const entry = await this.#guard((s) => s.startsWith('$JS.'), () => kv.get(key))
    if (entry === null || entry.operation !== 'PUT') return null
    return { key, value: entry.string(), revision: entry.revision }
  }

  async deleteResource(key: string): Promise<number> {
    await this.configBucket()
    const subject = kvSubject(CONFIG_BUCKET, key)
    // A KV delete is a message with the KV-Operation header; published directly for its ack,
    // whose sequence is the revision of the delete.
    const marker = headers()
    marker.set('KV-Operation', 'DEL')
    const ack = await this.#guard((s) => s === subject, () => this.#js.publish(subject, undefined, { headers: marker }))
    return ack.seq
  }

  /**
   * A bucket's keys, within the request timeout: the listing runs on an ordered consumer, and
   * one cut by a NATS restart could otherwise wait forever. A listing that times out is tried
   * once more on a fresh consumer: nats.js's keys() can miss its "no more pending" marker when a
   * key is written while the consumer starts, and then waits for an idle heartbeat instead.
   */
  async #keys(kv: KV, filter: string | undefined, what: string): Promise<string[]> {
    try {
      return await this.#keysOnce(kv, filter, what)
    } catch (err) {
      if (!(err instanceof BusError) || !err.message.includes('took longer')) throw err
      return await this.#keysOnce(kv, filter, what)
    }
  }

  async #keysOnce(kv: KV, filter: string | undefined, what: string): Promise<string[]> {
    const iterator = await kv.keys(filter)
    const keys: string[] = []
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        iterator.stop()
        reject(new BusError('other', `nats: listing the keys of ${what} took longer than ${this.#timeout} ms; try again`))
      }, this.#timeout)
    })
    try {
      await Promise.race([(async () => { for await (const key of iterator) keys.push(key) })(), deadline])
      return keys
    } finally {
      clearTimeout(timer)
    }
  }

  async listResources(prefix?: string): Promise<StoredResource[]> {
    const kv = await this.#configKv()
    return await this.#guard((s) => s.startsWith('$JS.'), async () => {
      const keys = await this.#keys(kv, keyFilter(prefix), 'the weft-config bucket')
      const entries = await Promise.all(keys.sort().map((key) => kv.get(key)))
      return entries
        .filter((entry) => entry !== null && entry.operation === 'PUT')
        .map((entry) => ({ key: entry!.key, value: entry!.string(), revision: entry!.revision }))
    })
  }

  async configRevision(): Promise<number> {
    const kv = await this.#configKv()
    const status = await this.#guard((s) => s.startsWith('$JS.'), () => kv.status())
    return status.streamInfo.state.last_seq
  }

  async watchConfig(onEvent: (event: ConfigEvent) => void, options: WatchConfigOptions = {}): Promise<ConfigWatch> {
    const kv = await this.#configKv()
    const watch = new ResilientWatch(kv, keyFilter(options.prefix), onEvent, options, (error) => this.#translate(error))
    const onReconnect = (): void => watch.restart()
    this.#reconnectListeners.add(onReconnect)
    await watch.start()
    return {
      get revision() {
        return watch.revision
      },
      stop: async () => {
        this.#reconnectListeners.delete(onReconnect)
        await watch.stop()
      },
    }
  }

  async followConfig(onEvent: (event: ConfigEvent) => void, options: FollowConfigOptions = {}): Promise<ConfigWatch> {
    const kv = await this.#configKv()
    if (!await this.#republishes(kv)) {
      options.onError?.(new BusError('other', `nats: the ${CONFIG_BUCKET} bucket does not republish its changes on ${CONFIG_CHANGES} (it was created before weft did, and this nats-server cannot add that to an existing stream): following it with a consumer of this node's own, which costs the server per node; re-create the bucket to follow it at scale (docs/configuration.md, "Following changes")`))
      return await this.watchConfig(onEvent, options)
    }
    const follower = new ConfigFollower(this.connection, this.#js, kv, onEvent, options, (error) => this.#translate(error), this.#timeout)
    await this.#guard((s) => s.startsWith('$JS.'), () => follower.start())
    const onReconnect = (): void => follower.reconnected()
    this.#reconnectListeners.add(onReconnect)
    return {
      get revision() {
        return follower.revision
      },
      stop: async () => {
        this.#reconnectListeners.delete(onReconnect)
        await follower.stop()
      },
    }
  }

  async publishStatus(node: string, status: unknown): Promise<number> {
    const kv = await this.#statusKv()
    const text = JSON.stringify(status)
    const subject = kvSubject(STATUS_BUCKET, node)
    const live = statusSubject(node)
    return await this.#guard(
      (s) => s === subject || s === live,
      async () => {
        this.connection.publish(live, text)
        return await kv.put(node, text)
      },
    )
  }

  publishLiveStatus(node: string, status: unknown): void {
    // A refused subject shows up as an asynchronous permission error on the connection, like any publish.
    this.connection.publish(statusSubject(node), JSON.stringify(status))
  }

  async readStatuses(): Promise<NodeStatusEntry[]> {
    const kv = await this.#statusKv()
    return await this.#guard((s) => s.startsWith('$JS.'), async () => {
      const nodes = await this.#keys(kv, undefined, 'the weft-status bucket')
      const entries = await Promise.all(nodes.sort().map((node) => kv.get(node)))
      const statuses: NodeStatusEntry[] = []
      for (const entry of entries) {
        if (entry === null || entry.operation !== 'PUT') continue
        let status: unknown
        try {
          status = entry.json()
        } catch {
          status = { unparsable: entry.string() }
        }
        statuses.push({ node: entry.key, status, revision: entry.revision, updated: entry.created })
      }
      return statuses
    })
  }

  subscribeStatuses(onStatus: (node: string, status: unknown) => void): { stop(): void } {
    const subscription: Subscription = this.connection.subscribe(statusSubject('*'), {
      callback: (error, message) => {
        if (error) return
        const node = message.subject.slice(statusSubject('').length)
        try {
          onStatus(node, message.json())
        } catch {
          onStatus(node, { unparsable: message.string() })
        }
      },
    })
    return { stop: () => subscription.unsubscribe() }
  }

  async close(): Promise<void> {
    if (this.connection.isClosed()) return
    await this.connection.drain().catch(() => this.connection.close())
  }
}

/**
 * A KV watch that starts over when it is lost. Each generation first collects the bucket's
 * current values (last value per key), then passes live changes through. A generation ends on
 * a reconnect (the server may have restarted and forgotten the consumer) or when the iterator
 * ends by itself; the next one resyncs from scratch.
 */
class ResilientWatch {
  readonly #kv: KV
  readonly #filter: string
  readonly #onEvent: (event: ConfigEvent) => void
  readonly #options: WatchConfigOptions
  readonly #translate: (error: unknown) => BusError
  /** Keys delivered and not deleted, with their revision: what a resync compares against. */
  readonly #known = new Map<string, number>()
  #iterator: QueuedIterator<KvWatchEntry> | undefined
  #generation = 0
  #synced = false
  #stopped = false
  revision = 0

  constructor(kv: KV, filter: string, onEvent: (event: ConfigEvent) => void, options: WatchConfigOptions, translate: (error: unknown) => BusError) {
    this.#kv = kv
    this.#filter = filter
    this.#onEvent = onEvent
    this.#options = options
    this.#translate = translate
  }

  /** The first generation; its errors go to the caller. */
  async start(): Promise<void> {
    await this.#begin(++this.#generation)
  }

  /** Drops the current generation and starts another, retrying until it works or stop(). */
  restart(): void {
    if (this.#stopped) return
    const generation = ++this.#generation
    this.#iterator?.stop()
    this.#iterator = undefined
    void (async () => {
      for (let attempt = 0; !this.#stopped && generation === this.#generation; attempt++) {
        try {
          await this.#begin(generation)
          return
        } catch (error) {
          this.#options.onError?.(this.#translate(error))
          await sleep(Math.min(2000, 100 * 2 ** attempt))
        }
      }
    })()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#generation++
    this.#iterator?.stop()
    this.#iterator = undefined
  }

  async #begin(generation: number): Promise<void> {
    const resync = this.#synced
    // Stream messages before the watch starts: 0 means there is nothing to replay, so the
    // initial state (empty) is complete at once; otherwise the replay ends with the entry that
    // has nothing pending after it (delta 0).
    const status = await this.#kv.status()
    const iterator = await this.#kv.watch({ key: this.#filter })
    if (generation !== this.#generation) {
      iterator.stop()
      return
    }
    this.#iterator = iterator
    const initial = new Map<string, KvWatchEntry>()
    let initialRevision = status.streamInfo.state.last_seq
    let replaying = true
    const finishReplay = (): void => {
      replaying = false
      if (resync) this.#options.onResync?.()
      for (const [key, entry] of initial) {
        this.#deliver({ key, value: entry.string(), revision: entry.revision })
      }
      for (const key of [...this.#known.keys()]) {
        if (!initial.has(key)) this.#deliver({ key, value: null, revision: initialRevision })
      }
      this.#synced = true
      this.revision = Math.max(this.revision, initialRevision)
      this.#options.initialDone?.(initialRevision)
    }
    if (status.streamInfo.state.messages === 0) finishReplay()
    void (async () => {
      try {
        for await (const entry of iterator) {
          if (generation !== this.#generation) break
          if (replaying) {
            initialRevision = Math.max(initialRevision, entry.revision)
            if (entry.operation === 'PUT') initial.set(entry.key, entry)
            else initial.delete(entry.key)
            if ((entry.delta ?? 0) === 0) finishReplay()
          } else {
            this.#deliver({ key: entry.key, value: entry.operation === 'PUT' ? entry.string() : null, revision: entry.revision })
          }
        }
      } catch (error) {
        if (generation === this.#generation) this.#options.onError?.(this.#translate(error))
      }
      // The iterator ended without stop(): the consumer is gone. Start over.
      if (generation === this.#generation && !this.#stopped) this.restart()
    })()
  }

  #deliver(event: ConfigEvent): void {
    if (event.value === null) this.#known.delete(event.key)
    else this.#known.set(event.key, event.revision)
    this.revision = Math.max(this.revision, event.revision)
    this.#onEvent(event)
  }
}
