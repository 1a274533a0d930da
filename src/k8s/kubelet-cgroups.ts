// Where the kubelet puts a pod's cgroup, from its UID and QoS class, for both cgroup drivers:
//
//   systemd (kubepods.slice)                                cgroupfs (kubepods)
//   kubepods-pod<uid_>.slice                  Guaranteed    pod<uid>
//   kubepods-burstable.slice/                 Burstable     burstable/pod<uid>
//     kubepods-burstable-pod<uid_>.slice
//   kubepods-besteffort.slice/                BestEffort    besteffort/pod<uid>
//     kubepods-besteffort-pod<uid_>.slice
//
// (<uid_> is the UID with "-" turned into "_": systemd reads "-" in a unit name as nesting.)
// Below the pod's cgroup the runtime makes one per container: cri-containerd-<id>.scope
// (containerd), crio-<id>.scope and crio-conmon-<id>.scope (CRI-O), docker-<id>.scope (docker),
// or a bare <id> directory with cgroupfs. The daemon enrols the pod's cgroup: the programs check a
// socket's cgroup ancestry, so every container below it is covered.
//
// The kubelet makes the cgroup when it starts the pod's sandbox, which can be after the Pod
// reached NATS: PodCgroups polls for the ones it has not found yet and says when one appears.
import { existsSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'

export type CgroupDriver = 'systemd' | 'cgroupfs'
export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort'
export const QOS_CLASSES: readonly QosClass[] = ['Guaranteed', 'Burstable', 'BestEffort']

/** The cgroup driver whose pod root is `cgroupRoot` (kubepods.slice, kubepods), or undefined for any other root (the lab's). */
export function kubeletDriverOf(cgroupRoot: string): CgroupDriver | undefined {
  const name = basename(cgroupRoot.replace(/\/+$/, ''))
  return name === 'kubepods.slice' ? 'systemd' : name === 'kubepods' ? 'cgroupfs' : undefined
}

const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** The pod's cgroup, relative to the kubelet's pod root. Throws on a UID that is not one (it becomes a path). */
export function podCgroupPath(driver: CgroupDriver, uid: string, qos: QosClass): string {
  if (!UID.test(uid)) throw new Error(`pod UID ${JSON.stringify(uid)} is not a UID (8-4-4-4-12 hex digits)`)
  if (driver === 'systemd') {
    const unit = uid.replaceAll('-', '_')
    if (qos === 'Guaranteed') return `kubepods-pod${unit}.slice`
    const tier = qos.toLowerCase()
    return `kubepods-${tier}.slice/kubepods-${tier}-pod${unit}.slice`
  }
  return qos === 'Guaranteed' ? `pod${uid}` : `${qos.toLowerCase()}/pod${uid}`
}

/**
 * The pod's cgroup directory under `podRoot` if it exists: first where its QoS class says, then
 * (the class unknown, or the pod's cgroup made under another one) where the other classes would
 * put it.
 */
export function findPodCgroup(podRoot: string, driver: CgroupDriver, uid: string, qos: QosClass | undefined): string | undefined {
  if (!UID.test(uid)) return undefined // no kubelet names a cgroup after it
  const order = qos ? [qos, ...QOS_CLASSES.filter((q) => q !== qos)] : QOS_CLASSES
  for (const candidate of order) {
    const dir = join(podRoot, podCgroupPath(driver, uid, candidate))
    if (existsSync(dir) && statSync(dir).isDirectory()) return dir
  }
  return undefined
}

export interface WantedPod {
  /** The pod's resource key (pod.<ns>.<name>), how the caller names it. */
  key: string
  uid: string
  qos: QosClass | undefined
}

/**
 * The cgroups of this node's pods, found from UID and QoS class. `want()` gives the current pods;
 * those not found yet are looked for again every `retryMs` until they appear (then
 * `onFound(key, dir)`) or are no longer wanted.
 */
export class PodCgroups {
  readonly #podRoot: string
  readonly #driver: CgroupDriver
  readonly #retryMs: number
  readonly #onFound: (key: string, dir: string) => void
  #found = new Map<string, string>()
  #missing = new Map<string, WantedPod>()
  #timer: NodeJS.Timeout | undefined

  constructor(options: { podRoot: string; driver: CgroupDriver; onFound: (key: string, dir: string) => void; retryMs?: number }) {
    this.#podRoot = options.podRoot
    this.#driver = options.driver
    this.#onFound = options.onFound
    this.#retryMs = options.retryMs ?? 500
  }

  /** Replaces the wanted pods; returns the cgroup directories found so far, by key. */
  want(pods: readonly WantedPod[]): ReadonlyMap<string, string> {
    const found = new Map<string, string>()
    const missing = new Map<string, WantedPod>()
    for (const pod of pods) {
      // A pod's UID and cgroup do not change while it lives: what was found stays found.
      const dir = this.#found.get(pod.key) ?? findPodCgroup(this.#podRoot, this.#driver, pod.uid, pod.qos)
      if (dir !== undefined && existsSync(dir)) found.set(pod.key, dir)
      else missing.set(pod.key, pod)
    }
    this.#found = found
    this.#missing = missing
    this.#schedule()
    return found
  }

  /** Pods wanted whose cgroup is not there (yet). */
  missing(): string[] {
    return [...this.#missing.keys()]
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#missing.clear()
  }

  #schedule(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#missing.size === 0) return
    // Not unref'd: a pod waiting for its cgroup is work to do. stop() ends it.
    this.#timer = setTimeout(() => this.#retry(), this.#retryMs)
  }

  #retry(): void {
    for (const [key, pod] of this.#missing) {
      const dir = findPodCgroup(this.#podRoot, this.#driver, pod.uid, pod.qos)
      if (dir === undefined) continue
      this.#missing.delete(key)
      this.#found.set(key, dir)
      this.#onFound(key, dir)
    }
    this.#schedule()
  }
}
