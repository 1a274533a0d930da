// The CA's NATS service inside `weft control`: answers CSRs on weft.control.csr.<node> (signing
// only identities of pods scheduled on the asking node), publishes the trust bundle in the
// weft-trust bucket, rotates the root on weft.control.ca.rotate and retires old roots when their
// overlap ends. The CA key never leaves this process.
import { PermissionViolationError, type Msg, type Subscription } from '@nats-io/transport-node'

import { BusError, CA_ROTATE_SUBJECT, CSR_SUBJECTS, csrSubject, type Bus, type ConfigWatch } from '../bus/index.ts'
import { buildSnapshot, DEFAULT_VALIDATION_CONTEXT, type MeshSnapshot, type ValidationContext } from '../config/resources/index.ts'
import { formatDuration, type CertificateAuthority, type CsrReply, type RotateReply, type TrustBundle } from '../identity/index.ts'
import type { Logger } from '../telemetry/log.ts'
import { CONTROL_QUEUE } from './subjects.ts'

export type CaService = {
  /** CSRs signed and refused so far. */
  readonly signed: number
  readonly refused: number
  /** Unsubscribes, stops the pod watch and the retirement timer; the bus stays open. */
  stop(): Promise<void>
}

export type ServeCaOptions = {
  ca: CertificateAuthority
  log: Logger
  /** How pods are validated (the same check nodes make); its trust domain must be the CA's. */
  validation?: ValidationContext
}

/** Node.js timers overflow past ~24.8 days: wake up at least daily and look again. */
const MAX_TIMER_MS = 86_400_000
const NODE_NAME = /^[A-Za-z0-9_-]+$/

/** The pods of the workload registry, from a watch of `pod.*` keys in weft-config. */
class PodView {
  readonly #stored = new Map<string, unknown>()
  readonly #validation: ValidationContext
  #snapshot: MeshSnapshot | undefined
  #watch: ConfigWatch | undefined

  constructor(validation: ValidationContext) {
    this.#validation = validation
  }

  async start(bus: Bus, log: Logger): Promise<void> {
    let ready!: () => void
    const loaded = new Promise<void>((resolve) => (ready = resolve))
    this.#watch = await bus.watchConfig((event) => {
      if (event.value === null) this.#stored.delete(event.key)
      else this.#stored.set(event.key, parseOrKeep(event.value))
      this.#snapshot = undefined
    }, {
      prefix: 'pod',
      initialDone: () => ready(),
      onError: (error) => log.warn('watching the pods in weft-config', { error: error.message }),
    })
    await loaded
  }

  /** Replaces the view with the bucket's pods as they are now (the watch may lag a fresh pod). */
  async reload(bus: Bus): Promise<void> {
    const fresh = await bus.listResources('pod')
    this.#stored.clear()
    for (const { key, value } of fresh) this.#stored.set(key, parseOrKeep(value))
    this.#snapshot = undefined
  }

  identitiesOn(node: string): Array<{ pod: string; identity: string }> {
    this.#snapshot ??= buildSnapshot(this.#stored, this.#validation)
    return (this.#snapshot.podsByNode.get(node) ?? []).map((w) => ({ pod: `${w.namespace}/${w.name}`, identity: w.identity }))
  }

  async stop(): Promise<void> {
    await this.#watch?.stop()
  }
}

function parseOrKeep(value: string): unknown {
  try {
    return JSON.parse(value)
  } catch {
    return value
  }
}

function sameRoots(a: TrustBundle, b: TrustBundle): boolean {
  return a.signing === b.signing && JSON.stringify(a.roots) === JSON.stringify(b.roots)
}

/**
 * Starts the CA service: publishes the bundle (if the bucket's differs), loads the pods, then
 * subscribes. Fails with a one-line BusError when the user may not serve the subjects.
 */
export async function serveCa(bus: Bus, options: ServeCaOptions): Promise<CaService> {
  const { ca, log } = options
  const validation = { ...(options.validation ?? DEFAULT_VALIDATION_CONTEXT), trustDomain: ca.trustDomain }
  const nc = bus.connection
  let signed = 0
  let refusedCount = 0
  let stopped = false
  let retireTimer: NodeJS.Timeout | undefined
  const pending = new Set<Promise<void>>()

  // Publishing the bundle retries until NATS takes it; the latest bundle wins.
  let publishing: Promise<void> = Promise.resolve()
  const publish = (why: string): Promise<void> => {
    publishing = publishing.then(async () => {
      for (let attempt = 0; !stopped; attempt++) {
        const bundle = ca.bundle
        try {
          const revision = await bus.putTrustBundle(bundle)
          log.info('published the trust bundle', { why, version: bundle.version, revision, signing: bundle.signing, roots: bundle.roots.map((root) => ({ fingerprint: root.fingerprint, retiresAt: root.retiresAt })) })
          return
        } catch (error) {
          if (attempt === 0 || attempt % 10 === 0) log.warn('cannot publish the trust bundle; retrying', { error: (error as Error).message })
          await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 200 * 2 ** attempt)))
        }
      }
    })
    return publishing
  }

  const scheduleRetirement = (): void => {
    clearTimeout(retireTimer)
    const at = ca.nextRetirement()
    if (at === undefined || stopped) return
    retireTimer = setTimeout(() => {
      if (ca.retireDue()) {
        log.info('a retired root left the trust bundle', { version: ca.bundle.version })
        void publish('root overlap ended')
      }
      scheduleRetirement()
    }, Math.max(0, Math.min(MAX_TIMER_MS, at - Date.now() + 10)))
    retireTimer.unref()
  }

  // The bundle in the bucket: keep it if it is ours, else publish ours above its version.
  await bus.trustBucket()
  const stored = await bus.getTrustBundle()
  let published: TrustBundle | undefined
  if (stored) {
    try {
      published = JSON.parse(stored.value) as TrustBundle
    } catch {
      published = undefined
    }
  }
  if (published && typeof published.version === 'number') {
    if (!sameRoots(published, ca.bundle) || published.version > ca.bundle.version) ca.bumpVersionAbove(published.version)
  }
  if (!published || !sameRoots(published, ca.bundle) || published.version !== ca.bundle.version) await publish('start')
  if (ca.retireDue()) await publish('root overlap ended')
  scheduleRetirement()

  const pods = new PodView(validation)
  await pods.start(bus, log)

  // A rotation holds CSR answers until the new bundle is in the bucket: a leaf of the new root
  // goes out only once every node can learn to trust it.
  let rotation: Promise<unknown> = Promise.resolve()

  const authorizeFor = (node: string) => (identity: string): string | undefined => {
    const onNode = pods.identitiesOn(node)
    if (onNode.some((entry) => entry.identity === identity)) return undefined
    const known = onNode.length === 0 ? 'it has no pods' : `its pods run as ${[...new Set(onNode.map((entry) => entry.identity))].slice(0, 5).join(', ')}${onNode.length > 5 ? ', ...' : ''}`
    return `${identity}: no pod on node ${node} runs as this identity (${known}); the CA signs only identities of pods scheduled on the asking node`
  }

  const decideCsr = async (node: string, text: string): Promise<CsrReply> => {
    if (!NODE_NAME.test(node)) return { ok: false, error: `subject ${csrSubject(node)}: not a node's CSR subject (weft.control.csr.<node>)` }
    let body: { csr?: unknown }
    try {
      body = JSON.parse(text) as { csr?: unknown }
    } catch (error) {
      return { ok: false, error: `request body: not JSON (${(error as Error).message}); send {"csr": "<PKCS#10 PEM>"}` }
    }
    if (typeof body !== 'object' || body === null || typeof body.csr !== 'string') return { ok: false, error: 'request body: expected {"csr": "<PKCS#10 PEM>"}' }
    await rotation
    try {
      const authorize = authorizeFor(node)
      const reply = await ca.sign(body.csr, authorize)
      // Not on this node by the watch: the pod may be newer than the watch. Look again.
      if (reply.ok || !reply.error.includes('no pod on node')) return reply
      await pods.reload(bus)
      return await ca.sign(body.csr, authorize)
    } catch (error) {
      return { ok: false, error: error instanceof BusError ? error.message : `CA: ${(error as Error).message}` }
    }
  }

  const answerCsr = async (message: Msg): Promise<void> => {
    const node = message.subject.slice(csrSubject('').length)
    const reply = await decideCsr(node, message.string())
    if (reply.ok) {
      signed++
      log.info('signed', { node, identity: reply.identity, serial: reply.serial, notAfter: reply.notAfter, root: reply.root })
    } else {
      refusedCount++
      log.warn('CSR refused', { node, error: reply.error })
    }
    if (message.reply) message.respond(JSON.stringify(reply))
  }

  const answerRotate = async (message: Msg): Promise<void> => {
    const result = (async (): Promise<RotateReply> => {
      await rotation
      const rotated = await ca.rotate()
      if (rotated.ok) {
        log.info('rotated the root', { signing: rotated.signing, retiring: rotated.retiring, overlap: formatDuration(ca.rootOverlapMs) })
        await publish('root rotated')
        scheduleRetirement()
      } else {
        log.warn('rotation refused', { error: rotated.error })
      }
      return rotated
    })().catch((error: unknown): RotateReply => ({ ok: false, error: `CA: ${(error as Error).message}` }))
    rotation = result
    const reply = await result
    if (message.reply) message.respond(JSON.stringify(reply))
  }

  let refused: PermissionViolationError | undefined
  const subscribe = (subject: string, handle: (message: Msg) => Promise<void>): Subscription =>
    nc.subscribe(subject, {
      queue: CONTROL_QUEUE,
      callback: (error, message) => {
        if (error) {
          if (error instanceof PermissionViolationError) refused = error
          else log.error('subscription failed', { subject, error: error.message })
          return
        }
        const done = handle(message).finally(() => pending.delete(done))
        pending.add(done)
      },
    })
  const subscriptions = [subscribe(CSR_SUBJECTS, answerCsr), subscribe(CA_ROTATE_SUBJECT, answerRotate)]
  await nc.flush()
  if (refused) {
    for (const subscription of subscriptions) subscription.unsubscribe()
    await pods.stop()
    clearTimeout(retireTimer)
    throw new BusError('permission', `nats: user ${bus.user ?? '(none)'} may not serve the CA (permission denied on subscription to ${refused.subject}); the control plane's user needs subscribe weft.control.> and allow_responses`)
  }
  const bundle = ca.bundle
  log.info('serving the CA', {
    subjects: [CSR_SUBJECTS, CA_ROTATE_SUBJECT],
    mode: ca.mode,
    trustDomain: ca.trustDomain,
    certLifetime: formatDuration(ca.leafLifetimeMs),
    rootOverlap: formatDuration(ca.rootOverlapMs),
    signing: bundle.signing,
    bundleVersion: bundle.version,
  })
  return {
    get signed() {
      return signed
    },
    get refused() {
      return refusedCount
    },
    stop: async () => {
      stopped = true
      clearTimeout(retireTimer)
      for (const subscription of subscriptions) subscription.unsubscribe()
      await Promise.allSettled([...pending])
      await pods.stop()
    },
  }
}
