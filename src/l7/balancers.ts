// Load balancing: which endpoint of a backend gets the next request. Every balancer reads the
// same per-endpoint state (`EndpointState`: requests in flight, a peak-EWMA latency estimate,
// whether outlier detection has ejected it), which the pipeline updates as requests start and
// finish. A balancer is built when the endpoint list changes (a snapshot), never per request.
//
// - RoundRobin: in turn, skipping ejected endpoints.
// - LeastRequest: power of two choices (P2C) on requests in flight.
// - EWMA (the default, as in linkerd): P2C on peak-EWMA cost = latency estimate × (in flight + 1).
// - ConsistentHash: a hash ring with virtual nodes; a key keeps its endpoint while the set
//   changes around it (only keys of an added or removed endpoint move).
import type { Clock, Random } from './random.ts'

export interface EwmaOptions {
  /** Decay time constant of the latency estimate (linkerd: 10s). */
  readonly decayMs: number
  /** The estimate an endpoint starts with, before any response (linkerd: 30ms). */
  readonly defaultRttMs: number
}

export const DEFAULT_EWMA: EwmaOptions = Object.freeze({ decayMs: 10_000, defaultRttMs: 30 })

/**
 * What the balancers know about one endpoint. Writers: the pipeline (`start`/`finish` around
 * each request, `ejected` from outlier detection). Readers: the balancers.
 */
export class EndpointState<T = unknown> {
  /** A stable identity, e.g. `198.18.1.10:9080`: what consistent hashing places on its ring. */
  readonly id: string
  readonly endpoint: T
  inFlight = 0
  ejected = false
  private rttEstimateMs: number
  private stampMs: number
  private readonly ewma: EwmaOptions

  constructor(id: string, endpoint: T, now: number, ewma: EwmaOptions = DEFAULT_EWMA) {
    this.id = id
    this.endpoint = endpoint
    this.ewma = ewma
    this.rttEstimateMs = ewma.defaultRttMs
    this.stampMs = now
  }

  /** A request to this endpoint begins. */
  start(): void {
    this.inFlight++
  }

  /**
   * A request finishes after `rttMs`. Peak EWMA (finagle, linkerd): a slower sample replaces the
   * estimate at once, so a slowing endpoint is avoided immediately; a faster one is averaged in
   * with a weight that grows with the time since the last update.
   */
  finish(now: number, rttMs: number): void {
    if (this.inFlight > 0) this.inFlight--
    // The weight comes from the time since the last update, read before anything moves the stamp.
    const estimate = this.rttEstimateMs
    const elapsed = Math.max(0, now - this.stampMs)
    if (rttMs > estimate) {
      this.rttEstimateMs = rttMs
    } else {
      const weight = Math.exp(-elapsed / this.ewma.decayMs)
      this.rttEstimateMs = estimate * weight + rttMs * (1 - weight)
    }
    this.stampMs = now
  }

  /**
   * The latency estimate at `now`. It decays toward 0 while no response comes, so an endpoint
   * that was slow once is tried again after a while instead of being starved forever.
   */
  latencyMs(now: number): number {
    return this.decayed(now)
  }

  /** Peak-EWMA cost: estimated latency scaled by the requests already waiting on it. */
  cost(now: number): number {
    return this.decayed(now) * (this.inFlight + 1)
  }

  private decayed(now: number): number {
    const elapsed = now - this.stampMs
    if (elapsed > 0) {
      this.rttEstimateMs *= Math.exp(-elapsed / this.ewma.decayMs)
      this.stampMs = now
    }
    return this.rttEstimateMs
  }
}

export interface Balancer<T> {
  /** The endpoint for this request, or undefined when every endpoint is ejected (or there are none). */
  pick(hashKey?: string): EndpointState<T> | undefined
}

export class RoundRobinBalancer<T> implements Balancer<T> {
  private readonly endpoints: readonly EndpointState<T>[]
  private cursor = 0

  constructor(endpoints: readonly EndpointState<T>[]) {
    this.endpoints = endpoints
  }

  pick(): EndpointState<T> | undefined {
    const count = this.endpoints.length
    for (let tried = 0; tried < count; tried++) {
      const state = this.endpoints[this.cursor % count]
      this.cursor = (this.cursor + 1) % count
      if (state && !state.ejected) return state
    }
    return undefined
  }
}

/**
 * Power of two choices: draw two distinct healthy endpoints at random and take the one with the
 * lower load. Nearly as good as scanning all of them, and it never herds every node's requests
 * onto the one endpoint that looked best a moment ago.
 */
class P2CBalancer<T> implements Balancer<T> {
  private readonly endpoints: readonly EndpointState<T>[]
  private readonly random: Random
  private readonly load: (state: EndpointState<T>) => number

  constructor(endpoints: readonly EndpointState<T>[], random: Random, load: (state: EndpointState<T>) => number) {
    this.endpoints = endpoints
    this.random = random
    this.load = load
  }

  pick(): EndpointState<T> | undefined {
    let candidates = this.endpoints
    if (candidates.some((state) => state.ejected)) candidates = candidates.filter((state) => !state.ejected)
    const count = candidates.length
    if (count <= 1) return candidates[0]
    const first = Math.floor(this.random() * count)
    let second = Math.floor(this.random() * (count - 1))
    if (second >= first) second++
    const a = candidates[first]!
    const b = candidates[second]!
    return this.load(b) < this.load(a) ? b : a
  }
}

export class LeastRequestBalancer<T> extends P2CBalancer<T> {
  constructor(endpoints: readonly EndpointState<T>[], random: Random) {
    super(endpoints, random, (state) => state.inFlight)
  }
}

export class EwmaBalancer<T> extends P2CBalancer<T> {
  constructor(endpoints: readonly EndpointState<T>[], random: Random, now: Clock) {
    super(endpoints, random, (state) => state.cost(now()))
  }
}

/**
 * A hash ring: each endpoint is placed at `virtualNodes` points (hashes of `id#i`), and a key
 * goes to the first point at or after its own hash. Adding an endpoint takes over only the arcs
 * in front of its points (about 1/n of the keys); the rest stay. An ejected endpoint's keys go
 * to the next healthy endpoint on the ring, and come back when it returns.
 */
export class ConsistentHashBalancer<T> implements Balancer<T> {
  private readonly endpoints: readonly EndpointState<T>[]
  private readonly ringHashes: Uint32Array
  private readonly ringOwners: Uint32Array
  private readonly fallback: RoundRobinBalancer<T>

  constructor(endpoints: readonly EndpointState<T>[], virtualNodes = 160) {
    this.endpoints = endpoints
    const points: { hash: number; owner: number }[] = []
    for (const [owner, state] of endpoints.entries()) {
      for (let i = 0; i < virtualNodes; i++) points.push({ hash: hash32(`${state.id}#${i}`), owner })
    }
    // Ties (astronomically rare) break by id so every node builds the same ring.
    points.sort((a, b) => a.hash - b.hash || ((endpoints[a.owner]?.id ?? '') < (endpoints[b.owner]?.id ?? '') ? -1 : 1))
    this.ringHashes = Uint32Array.from(points, (p) => p.hash)
    this.ringOwners = Uint32Array.from(points, (p) => p.owner)
    this.fallback = new RoundRobinBalancer(endpoints)
  }

  /** Without a key (the header or cookie is absent) the request goes round robin. */
  pick(hashKey?: string): EndpointState<T> | undefined {
    if (hashKey === undefined) return this.fallback.pick()
    const size = this.ringHashes.length
    if (size === 0) return undefined
    const hash = hash32(hashKey)
    let low = 0
    let high = size
    while (low < high) {
      const mid = (low + high) >>> 1
      if ((this.ringHashes[mid] ?? 0) < hash) low = mid + 1
      else high = mid
    }
    for (let step = 0; step < size; step++) {
      const state = this.endpoints[this.ringOwners[(low + step) % size] ?? 0]
      if (state && !state.ejected) return state
    }
    return undefined
  }
}

/** 32-bit FNV-1a over UTF-16 code units, finished with murmur3's fmix32 so similar keys spread. */
export function hash32(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  hash ^= hash >>> 16
  hash = Math.imul(hash, 0x85ebca6b)
  hash ^= hash >>> 13
  hash = Math.imul(hash, 0xc2b2ae35)
  hash ^= hash >>> 16
  return hash >>> 0
}

export type BalancerType = 'RoundRobin' | 'LeastRequest' | 'EWMA' | 'ConsistentHash'

/** The balancer a DestinationPolicy's `loadBalancer.type` names; EWMA when none is given. */
export function createBalancer<T>(type: BalancerType | undefined, endpoints: readonly EndpointState<T>[], deps: { random: Random; now: Clock }): Balancer<T> {
  switch (type ?? 'EWMA') {
    case 'RoundRobin': return new RoundRobinBalancer(endpoints)
    case 'LeastRequest': return new LeastRequestBalancer(endpoints, deps.random)
    case 'ConsistentHash': return new ConsistentHashBalancer(endpoints)
    case 'EWMA': return new EwmaBalancer(endpoints, deps.random, deps.now)
  }
}

/** What ConsistentHash hashes on (DestinationPolicy `loadBalancer.hashOn`): exactly one is set. */
export interface HashOn {
  readonly header?: string | undefined
  readonly cookie?: string | undefined
  readonly sourceIP?: true | undefined
}

/**
 * The request's hash key, or undefined when it has none (the header or cookie is absent).
 * `headers` in Node's form (lowercase names).
 */
export function hashKeyOf(hashOn: HashOn, headers: Readonly<Record<string, string | readonly string[] | undefined>>, sourceIp: string): string | undefined {
  if (hashOn.sourceIP) return sourceIp
  if (hashOn.header !== undefined) {
    const value = headers[hashOn.header.toLowerCase()]
    return value === undefined ? undefined : typeof value === 'string' ? value : value.join(',')
  }
  if (hashOn.cookie !== undefined) {
    const cookie = headers.cookie
    const text = cookie === undefined ? '' : typeof cookie === 'string' ? cookie : cookie.join('; ')
    for (const pair of text.split(';')) {
      const eq = pair.indexOf('=')
      if (eq !== -1 && pair.slice(0, eq).trim() === hashOn.cookie) return pair.slice(eq + 1).trim()
    }
  }
  return undefined
}
