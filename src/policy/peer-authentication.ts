// PeerAuthentication: whether a pod accepts only mutual-TLS (mesh-identified) peers. Istio's
// resolution: the pod's own policy (a selector in its namespace matching its labels) beats its
// namespace's (no selector), which beats the mesh's (no selector, in ROOT_NAMESPACE); UNSET (or no
// mtls) inherits from the next level; with nothing set the mode is PERMISSIVE.
//
// Istio picks the oldest policy when two apply at one level; the bucket keeps no creation time,
// so weft picks the first by name (the snapshot holds policies in key order) and warns about the
// others. Runs once per snapshot.
import type { ResourceWarning, Workload } from '../config/resources/snapshot.ts'
import { ROOT_NAMESPACE, type MtlsMode, type PeerAuthentication } from '../config/resources/security.ts'

export type EffectiveMtlsMode = Exclude<MtlsMode, 'UNSET'>

export interface MtlsResolution {
  /** Workload.key of each workload whose effective mode is STRICT. */
  readonly strictWorkloads: ReadonlySet<string>
  /** Effective mode and the policy (`ns/name`) it came from (undefined: the PERMISSIVE default), by Workload.key. */
  readonly modes: ReadonlyMap<string, { readonly mode: EffectiveMtlsMode; readonly policy: string | undefined }>
  readonly warnings: readonly ResourceWarning[]
}

const hasSelector = (policy: PeerAuthentication): boolean => Object.keys(policy.spec.selector?.matchLabels ?? {}).length > 0
const nameOf = (policy: PeerAuthentication): string => `${policy.metadata.namespace}/${policy.metadata.name}`
const keyOf = (policy: PeerAuthentication): string => `peerauthentication.${policy.metadata.namespace}.${policy.metadata.name}`
const modeOf = (policy: PeerAuthentication | undefined): MtlsMode => policy?.spec.mtls?.mode ?? 'UNSET'

/** `policies` in key order (namespace, then name), as MeshSnapshot holds them. */
export function resolveMtlsModes(policies: readonly PeerAuthentication[], workloads: Iterable<Workload>): MtlsResolution {
  const warnings: ResourceWarning[] = []
  const namespaceWide = new Map<string, PeerAuthentication>()
  const selecting = new Map<string, PeerAuthentication[]>()
  for (const policy of policies) {
    const namespace = policy.metadata.namespace
    if (hasSelector(policy)) {
      const list = selecting.get(namespace) ?? []
      list.push(policy)
      selecting.set(namespace, list)
      continue
    }
    const first = namespaceWide.get(namespace)
    if (first) {
      const scope = namespace === ROOT_NAMESPACE ? 'the mesh (root namespace)' : `namespace ${namespace}`
      warnings.push({ key: keyOf(policy), message: `peer authentication ${nameOf(policy)}: ${scope} already has peer authentication ${nameOf(first)} without a selector; this one does not apply (the first by name wins)` })
    } else {
      namespaceWide.set(namespace, policy)
    }
  }

  const strictWorkloads = new Set<string>()
  const modes = new Map<string, { mode: EffectiveMtlsMode; policy: string | undefined }>()
  const shadowed = new Map<PeerAuthentication, { winner: PeerAuthentication; pods: string[] }>()
  for (const workload of workloads) {
    const matching = (selecting.get(workload.namespace) ?? []).filter((policy) =>
      Object.entries(policy.spec.selector?.matchLabels ?? {}).every(([key, value]) => workload.labels[key] === value))
    const [own] = matching
    for (const other of matching.slice(1)) {
      if (!own) break
      const entry = shadowed.get(other) ?? { winner: own, pods: [] }
      entry.pods.push(`${workload.namespace}/${workload.name}`)
      shadowed.set(other, entry)
    }
    let mode: EffectiveMtlsMode = 'PERMISSIVE'
    let from: string | undefined
    for (const policy of [own, namespaceWide.get(workload.namespace), namespaceWide.get(ROOT_NAMESPACE)]) {
      const level = modeOf(policy)
      if (policy && level !== 'UNSET') { mode = level; from = nameOf(policy); break }
    }
    modes.set(workload.key, { mode, policy: from })
    if (mode === 'STRICT') strictWorkloads.add(workload.key)
  }
  for (const [policy, { winner, pods }] of shadowed) {
    const shown = pods.slice(0, 3).join(', ') + (pods.length > 3 ? ` and ${pods.length - 3} more` : '')
    warnings.push({ key: keyOf(policy), message: `peer authentication ${nameOf(policy)}: does not apply to pod${pods.length > 1 ? 's' : ''} ${shown}: ${nameOf(winner)} also selects ${pods.length > 1 ? 'them' : 'it'} and comes first by name` })
  }
  return { strictWorkloads, modes, warnings }
}
