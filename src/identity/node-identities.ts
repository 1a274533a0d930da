// The node's identities: one X.509-SVID per workload identity running on this node, asked of the
// CA (weft control) over NATS, renewed at half-life, and the trust bundle followed from the
// weft-trust bucket. Private keys are made here and never leave this process's memory: not
// written to disk, not sent anywhere (the CA sees a CSR, i.e. the public key).
//
// Per identity: ask at once when wanted; renew at half of the lifetime (minus up to a tenth, so
// nodes do not all ask at the same moment); on failure retry with bounded exponential backoff,
// serving the current certificate until it expires; drop it when no longer wanted. When a new
// bundle names another signing root, renew soon (within a jittered window) so leaves move to the
// new root while the old one is still trusted everywhere.
import { createSecureContext, type SecureContext } from 'node:tls'

import { PermissionViolationError, RequestError, TimeoutError } from '@nats-io/transport-node'

import { connectBus, csrSubject, type Bus, type BusOptions, type ConfigWatch } from '../bus/index.ts'
import type { Logger } from '../telemetry/log.ts'
import { bundlePem, parseTrustBundle, type CsrReply, type TrustBundle } from './protocol.ts'
import { inTrustDomain, svidIdentity, trustDomainProblem } from './spiffe.ts'
import { createCsr, generateP256KeyPair, issuedBy, parseCertificatesPem, privateKeyPem, summarize, type CertificateSummary, x509 } from './x509.ts'

export type NodeIdentitiesOptions = {
  node: string
  /** Where NATS is (this class connects, waiting for the server), or a connected Bus to share. */
  bus: BusOptions | Bus
  trustDomain: string
  log: Logger
  /** Renew when this fraction of the lifetime has passed (default 0.5). */
  renewFraction?: number
  /** Renew up to this fraction of the lifetime earlier, at random (default 0.1). */
  renewJitter?: number
  /** After the signing root changes, renew within this window, at random (default 10 s). */
  rotationWindowMs?: number
  /** Retry backoff after a failure: starts here, doubles, stops growing at retryMaxMs. */
  retryMinMs?: number
  retryMaxMs?: number
  /** How long one CSR waits for the CA (default 5 s). */
  requestTimeoutMs?: number
  /** In [0, 1): injected for tests; default Math.random. */
  random?: () => number
}

export type IdentityState = 'issuing' | 'valid' | 'renewing' | 'retrying' | 'expired'

export type IdentityChange =
  | { reason: 'issued' | 'renewed' | 'expired' | 'dropped'; identity: string }
  | { reason: 'bundle'; version: number }

/** One identity as /debug/certs shows it. */
export type IdentityReport = {
  identity: string
  state: IdentityState
  serial: string | null
  notBefore: string | null
  notAfter: string | null
  /** The next attempt: the renewal, or the retry after a failure. */
  nextRenewal: string | null
  /** Fingerprint of the root the certificate chains to. */
  root: string | null
  chain: CertificateSummary[]
  failures: number
  lastError: string | null
}

export type TrustBundleReport = {
  version: number
  updatedAt: string
  signing: string
  roots: Array<{ subject: string; fingerprint: string; notAfter: string; retiresAt: string | null; signing: boolean }>
}

export type NodeIdentitiesReport = {
  node: string
  trustDomain: string
  nats: 'connecting' | 'connected'
  identities: IdentityReport[]
  trustBundle: TrustBundleReport | null
}

type Held = {
  keyPem: string
  chain: x509.X509Certificate[]
  chainPem: string
  root: string
  notBefore: number
  notAfter: number
}

type Entry = {
  identity: string
  current: Held | undefined
  hadCertificate: boolean
  inFlight: boolean
  failures: number
  lastError: string | undefined
  nextAttemptAt: number | undefined
  attemptTimer: NodeJS.Timeout | undefined
  expiryTimer: NodeJS.Timeout | undefined
  context: SecureContext | undefined
}

/** Node.js timers overflow past ~24.8 days. */
const MAX_TIMER_MS = 2 ** 31 - 1

export class NodeIdentities {
  readonly node: string
  readonly trustDomain: string
  readonly #options: NodeIdentitiesOptions
  readonly #log: Logger
  readonly #random: () => number
  readonly #entries = new Map<string, Entry>()
  readonly #listeners = new Set<(change: IdentityChange) => void>()
  #bus: Bus | undefined
  readonly #ownsBus: boolean
  #watch: ConfigWatch | undefined
  #bundle: TrustBundle | undefined
  #bundlePem = ''
  #started = false
  #stopped = false
  #watchRetry: NodeJS.Timeout | undefined
  #watchFailures = 0

  constructor(options: NodeIdentitiesOptions) {
    const problem = trustDomainProblem(options.trustDomain)
    if (problem) throw new Error(`node identities: ${problem}`)
    this.node = options.node
    this.trustDomain = options.trustDomain
    this.#options = options
    this.#log = options.log
    this.#random = options.random ?? Math.random
    this.#ownsBus = !('connection' in options.bus)
    if (!this.#ownsBus) this.#bus = options.bus as Bus
  }

  /**
   * Connects (in the background, waiting for NATS when it is down), follows the trust bundle
   * and asks for every wanted identity. Resolves at once; nothing here waits for the CA.
   */
  start(): void {
    if (this.#started) return
    this.#started = true
    if (this.#bus) {
      this.#followBundle()
    } else {
      void connectBus({ ...(this.#options.bus as BusOptions), name: `weft-node ${this.node} identities`, waitForServer: true }).then(
        (bus) => {
          if (this.#stopped) return void bus.close()
          this.#bus = bus
          this.#followBundle()
          // Identities that failed for want of a connection ask now rather than after their backoff.
          for (const entry of this.#entries.values()) if (!entry.current) this.#schedule(entry, 0, true)
        },
        (error: unknown) => this.#log.error('identities: cannot connect to NATS; no certificates will be issued', { error: (error as Error).message }),
      )
    }
    for (const entry of this.#entries.values()) this.#schedule(entry, 0)
  }

  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#watchRetry)
    for (const entry of this.#entries.values()) this.#clearTimers(entry)
    await this.#watch?.stop()
    if (this.#ownsBus) await this.#bus?.close()
  }

  /** The identities this node needs (its pods' identities, from each snapshot). */
  setWanted(identities: Iterable<string>): void {
    const wanted = new Set<string>()
    for (const identity of identities) {
      if (inTrustDomain(identity, this.trustDomain)) wanted.add(identity)
      else if (!this.#entries.has(identity)) this.#log.warn('identities: not a workload SPIFFE ID of this trust domain; no certificate for it', { identity, trustDomain: this.trustDomain })
    }
    for (const [identity, entry] of this.#entries) {
      if (wanted.has(identity)) continue
      this.#clearTimers(entry)
      this.#entries.delete(identity)
      this.#log.info('identities: dropped (no pod on this node runs as it any more)', { identity })
      this.#emit({ reason: 'dropped', identity })
    }
    for (const identity of wanted) {
      if (this.#entries.has(identity)) continue
      const entry: Entry = { identity, current: undefined, hadCertificate: false, inFlight: false, failures: 0, lastError: undefined, nextAttemptAt: undefined, attemptTimer: undefined, expiryTimer: undefined, context: undefined }
      this.#entries.set(identity, entry)
      if (this.#started && !this.#stopped) this.#schedule(entry, 0)
    }
  }

  /**
   * Key, chain and the trust bundle (as `ca`) for TLS as `identity`; undefined while it has no
   * valid certificate. Cached until the certificate or the bundle changes.
   */
  secureContext(identity: string): SecureContext | undefined {
    const entry = this.#entries.get(identity)
    const held = entry?.current
    if (!entry || !held || held.notAfter <= Date.now()) return undefined
    entry.context ??= createSecureContext({ key: held.keyPem, cert: held.chainPem, ca: this.#bundlePem, minVersion: 'TLSv1.3' })
    return entry.context
  }

  /** The roots to trust, PEM ('' before the first bundle). */
  trustBundlePem(): string {
    return this.#bundlePem
  }

  get trustBundle(): TrustBundle | undefined {
    return this.#bundle === undefined ? undefined : structuredClone(this.#bundle)
  }

  /** Called on every change: a certificate issued, renewed, expired or dropped, a new bundle. Returns an unsubscribe. */
  onChange(listener: (change: IdentityChange) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** What /debug/certs shows. */
  describe(): NodeIdentitiesReport {
    const bundle = this.#bundle
    return {
      node: this.node,
      trustDomain: this.trustDomain,
      nats: this.#bus ? 'connected' : 'connecting',
      identities: [...this.#entries.values()].sort((a, b) => a.identity.localeCompare(b.identity)).map((entry) => this.#report(entry)),
      trustBundle: bundle === undefined ? null : {
        version: bundle.version,
        updatedAt: bundle.updatedAt,
        signing: bundle.signing,
        roots: bundle.roots.map((root) => ({ subject: root.subject, fingerprint: root.fingerprint, notAfter: root.notAfter, retiresAt: root.retiresAt ?? null, signing: root.fingerprint === bundle.signing })),
      },
    }
  }

  #report(entry: Entry): IdentityReport {
    const held = entry.current
    const leaf = held?.chain[0]
    return {
      identity: entry.identity,
      state: this.#state(entry),
      serial: leaf?.serialNumber ?? null,
      notBefore: held ? new Date(held.notBefore).toISOString() : null,
      notAfter: held ? new Date(held.notAfter).toISOString() : null,
      nextRenewal: entry.nextAttemptAt === undefined ? null : new Date(entry.nextAttemptAt).toISOString(),
      root: held?.root ?? null,
      chain: held ? held.chain.map(summarize) : [],
      failures: entry.failures,
      lastError: entry.lastError ?? null,
    }
  }

  #state(entry: Entry): IdentityState {
    if (!entry.current) return entry.hadCertificate ? 'expired' : entry.failures > 0 && !entry.inFlight ? 'retrying' : 'issuing'
    if (entry.inFlight) return 'renewing'
    return entry.failures > 0 ? 'retrying' : 'valid'
  }

  #emit(change: IdentityChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change)
      } catch (error) {
        this.#log.error('identities: a change listener threw', { error: (error as Error).message })
      }
    }
  }

  #clearTimers(entry: Entry): void {
    clearTimeout(entry.attemptTimer)
    clearTimeout(entry.expiryTimer)
    entry.attemptTimer = undefined
    entry.expiryTimer = undefined
    entry.nextAttemptAt = undefined
  }

  /** The next attempt in `delayMs` (replacing any later one; an earlier one stays). */
  #schedule(entry: Entry, delayMs: number, onlyIfEarlier = false): void {
    if (this.#stopped) return
    const at = Date.now() + Math.max(0, delayMs)
    if (onlyIfEarlier && entry.nextAttemptAt !== undefined && entry.nextAttemptAt <= at) return
    clearTimeout(entry.attemptTimer)
    entry.nextAttemptAt = at
    entry.attemptTimer = setTimeout(() => {
      entry.attemptTimer = undefined
      void this.#attempt(entry)
    }, Math.min(MAX_TIMER_MS, Math.max(0, delayMs)))
    entry.attemptTimer.unref()
  }

  #retryDelay(failures: number): number {
    const min = this.#options.retryMinMs ?? 500
    const max = this.#options.retryMaxMs ?? 30_000
    const base = Math.min(max, min * 2 ** Math.max(0, failures - 1))
    // Full jitter in the upper half: spread the nodes out, never wait less than half the step.
    return Math.round(base / 2 + (this.#random() * base) / 2)
  }

  #renewDelay(held: Held): number {
    const lifetime = held.notAfter - held.notBefore
    const fraction = this.#options.renewFraction ?? 0.5
    const jitter = (this.#options.renewJitter ?? 0.1) * this.#random()
    return held.notBefore + lifetime * Math.max(0, fraction - jitter) - Date.now()
  }

  async #attempt(entry: Entry): Promise<void> {
    if (this.#stopped || entry.inFlight || this.#entries.get(entry.identity) !== entry) return
    entry.inFlight = true
    entry.nextAttemptAt = undefined
    const renewal = entry.current !== undefined
    try {
      const held = await this.#requestCertificate(entry.identity)
      if (this.#stopped || this.#entries.get(entry.identity) !== entry) return
      entry.current = held
      entry.hadCertificate = true
      entry.context = undefined
      entry.failures = 0
      entry.lastError = undefined
      clearTimeout(entry.expiryTimer)
      entry.expiryTimer = setTimeout(() => this.#expire(entry, held), Math.min(MAX_TIMER_MS, Math.max(0, held.notAfter - Date.now())))
      entry.expiryTimer.unref()
      this.#log.info(renewal ? 'identities: renewed' : 'identities: issued', { identity: entry.identity, serial: held.chain[0]!.serialNumber, notAfter: new Date(held.notAfter).toISOString(), root: held.root })
      this.#schedule(entry, this.#renewDelay(held))
      // A bundle that arrived while we asked may already name another signing root.
      if (this.#bundle && this.#bundle.signing !== held.root) this.#schedule(entry, this.#random() * (this.#options.rotationWindowMs ?? 10_000), true)
      this.#emit({ reason: renewal ? 'renewed' : 'issued', identity: entry.identity })
    } catch (error) {
      if (this.#stopped || this.#entries.get(entry.identity) !== entry) return
      entry.failures++
      entry.lastError = (error as Error).message
      const delay = this.#retryDelay(entry.failures)
      const level = entry.failures === 1 || entry.failures % 10 === 0 ? 'warn' : 'debug'
      this.#log[level](renewal ? 'identities: renewal failed; keeping the current certificate and retrying' : 'identities: cannot get a certificate yet; retrying', {
        identity: entry.identity, error: entry.lastError, failures: entry.failures, retryInMs: delay,
        ...(entry.current ? { expiresAt: new Date(entry.current.notAfter).toISOString() } : {}),
      })
      this.#schedule(entry, delay)
    } finally {
      entry.inFlight = false
    }
  }

  #expire(entry: Entry, held: Held): void {
    if (entry.current !== held) return
    entry.current = undefined
    entry.context = undefined
    this.#log.warn('identities: certificate expired before it could be renewed; connections as this identity fail until the CA answers', { identity: entry.identity, lastError: entry.lastError })
    this.#emit({ reason: 'expired', identity: entry.identity })
  }

  /** A fresh key, a CSR, the CA's answer, checked: the chain is for our key, our identity, and links up. */
  async #requestCertificate(identity: string): Promise<Held> {
    const bus = this.#bus
    if (!bus) throw new Error('NATS is not connected yet')
    const keys = await generateP256KeyPair()
    const csr = await createCsr(identity, keys)
    const subject = csrSubject(this.node)
    const timeout = this.#options.requestTimeoutMs ?? 5000
    let reply: CsrReply
    try {
      const message = await bus.connection.request(subject, JSON.stringify({ csr }), { timeout })
      reply = message.json<CsrReply>()
    } catch (error) {
      if (error instanceof RequestError && error.isNoResponders()) throw new Error(`nobody serves ${subject}: is weft control running?`)
      if (error instanceof TimeoutError) throw new Error(`no answer on ${subject} within ${timeout} ms (weft control busy or NATS unreachable)`)
      if (error instanceof PermissionViolationError || (error as Error).cause instanceof PermissionViolationError) {
        throw new Error(`nats: user ${bus.user ?? '(none)'} may not publish to ${subject}: the node's NATS user must be node-${this.node}`)
      }
      throw new Error(`request on ${subject}: ${(error as Error).message}`)
    }
    if (!reply.ok) throw new Error(`the CA refused: ${reply.error}`)
    const chain = parseCertificatesPem(reply.chain.join(''), 'the CA\'s reply')
    const leaf = chain[0]!
    const san = svidIdentity(leaf)
    if (!san.ok || san.identity !== identity) throw new Error(`the CA's certificate is for ${san.ok ? san.identity : san.reason}, not ${identity}`)
    const ourKey = Buffer.from(await globalThis.crypto.subtle.exportKey('spki', keys.publicKey))
    if (!Buffer.from(leaf.publicKey.rawData).equals(ourKey)) throw new Error('the CA\'s certificate is not for the key we sent')
    for (let i = 0; i + 1 < chain.length; i++) {
      if (!issuedBy(chain[i]!, chain[i + 1]!)) throw new Error(`the CA's chain does not link: ${chain[i]!.subject || '(leaf)'} is not signed by ${chain[i + 1]!.subject}`)
    }
    this.#offerBundle(reply.bundle, 'signing reply')
    const anchor = this.#bundle?.roots.find((root) => root.fingerprint === reply.root)
    if (!anchor) throw new Error(`the CA's chain ends at root ${reply.root}, which the trust bundle does not hold`)
    const [rootCertificate] = parseCertificatesPem(anchor.pem, 'trust bundle root')
    if (!issuedBy(chain.at(-1)!, rootCertificate!)) throw new Error(`the CA's chain is not signed by root ${reply.root}`)
    return {
      keyPem: await privateKeyPem(keys.privateKey),
      chain,
      chainPem: reply.chain.map((pem) => pem.trimEnd() + '\n').join(''),
      root: reply.root,
      notBefore: leaf.notBefore.getTime(),
      notAfter: leaf.notAfter.getTime(),
    }
  }

  #followBundle(): void {
    const bus = this.#bus
    if (!bus || this.#stopped) return
    bus.watchTrustBundle((value) => {
      if (value === null) return
      try {
        this.#offerBundle(parseTrustBundle(value), 'weft-trust bucket')
      } catch (error) {
        this.#log.error('identities: the trust bundle in the weft-trust bucket is unusable; keeping the current one', { error: (error as Error).message })
      }
    }, { onError: (error) => this.#log.warn('identities: following the trust bundle', { error: error.message }) }).then(
      (watch) => {
        if (this.#stopped) void watch.stop()
        else this.#watch = watch
      },
      (error: unknown) => {
        // Said once, then quietly retried: the signing replies carry the bundle meanwhile.
        this.#log[this.#watchFailures++ === 0 ? 'warn' : 'debug']('identities: cannot follow the trust bundle yet; retrying every 2 s', { error: (error as Error).message })
        this.#watchRetry = setTimeout(() => this.#followBundle(), 2000)
        this.#watchRetry.unref()
      },
    )
  }

  /** Takes `bundle` when it is newer than ours; renews certificates of a root no longer signing. */
  #offerBundle(bundle: TrustBundle, source: string): void {
    if (bundle.trustDomain !== this.trustDomain) {
      this.#log.error('identities: a trust bundle for another trust domain; ignored', { source, trustDomain: bundle.trustDomain, ours: this.trustDomain })
      return
    }
    if (this.#bundle && bundle.version <= this.#bundle.version) return
    this.#bundle = bundle
    this.#bundlePem = bundlePem(bundle)
    for (const entry of this.#entries.values()) entry.context = undefined
    this.#log.info('identities: new trust bundle', { source, version: bundle.version, signing: bundle.signing, roots: bundle.roots.map((root) => root.fingerprint) })
    // Certificates of a root that no longer signs move to the new one soon, spread over the
    // window; those of a root that left the bundle (peers no longer trust them) at once.
    const window = this.#options.rotationWindowMs ?? 10_000
    for (const entry of this.#entries.values()) {
      const held = entry.current
      if (!held || held.root === bundle.signing) continue
      const stillTrusted = bundle.roots.some((root) => root.fingerprint === held.root)
      this.#schedule(entry, stillTrusted ? this.#random() * window : 0, true)
    }
    this.#emit({ reason: 'bundle', version: bundle.version })
  }
}

