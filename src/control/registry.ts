// The workload registry: which pods and nodes exist. The control plane owns it and writes it to the
// config bucket (`pod.<ns>.<name>`, `node._.<name>`); every node reads it from there. Other kinds
// (services, routes, policies) are an operator's: `weft apply`, or any NATS client.
import type { Bus } from '../bus/index.ts'
import {
  DEFAULT_VALIDATION_CONTEXT,
  displayName,
  resourceKey,
  validateResource,
  type Resource,
  type ValidationContext,
} from '../config/resources/index.ts'
import type { RegistryReply } from './subjects.ts'

/** The kinds the registry holds. */
export const REGISTRY_KINDS: readonly string[] = ['Pod', 'Node']

export type Registration = { ok: true; key: string; resource: Resource } | { ok: false; error: string }

function describe(value: unknown): string {
  if (typeof value !== 'object' || value === null) return 'request'
  const { kind, metadata } = value as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } }
  const name = typeof metadata?.name === 'string' ? metadata.name : undefined
  const namespace = typeof metadata?.namespace === 'string' ? metadata.namespace : kind === 'Node' ? undefined : 'default'
  if (typeof kind !== 'string') return 'request'
  return name === undefined ? kind : `${kind} ${namespace === undefined ? name : `${namespace}/${name}`}`
}

/** Validates a resource for the registry: a valid Pod or Node, or the reason it is not. */
export function checkRegistration(value: unknown, ctx: ValidationContext = DEFAULT_VALIDATION_CONTEXT): Registration {
  const result = validateResource(value, ctx)
  if (!result.ok) return { ok: false, error: `${describe(value)}: ${result.errors.map((error) => error.toString()).join('; ')}` }
  const { resource } = result
  if (!REGISTRY_KINDS.includes(resource.kind)) {
    return {
      ok: false,
      error: `${describe(value)}: kind: the control plane registers ${REGISTRY_KINDS.join(' and ')} only, got ${resource.kind}; publish it with weft apply`,
    }
  }
  return { ok: true, key: resourceKey(resource), resource }
}

/** Registers one resource: validates it and puts it, as given, under its key. */
export async function registerWorkload(bus: Bus, value: unknown, ctx?: ValidationContext): Promise<RegistryReply> {
  const checked = checkRegistration(value, ctx)
  if (!checked.ok) return checked
  const revision = await bus.putResource(checked.key, value)
  return { ok: true, key: checked.key, revision }
}

/** Registers several resources; one reply each, in order. A bad one is refused alone. */
export async function registerWorkloads(bus: Bus, resources: readonly unknown[], ctx?: ValidationContext): Promise<RegistryReply[]> {
  const replies: RegistryReply[] = []
  for (const resource of resources) replies.push(await registerWorkload(bus, resource, ctx))
  return replies
}

/**
 * The key a deregistration names: from a whole resource or from `{kind, namespace?, name}`
 * (namespace defaults to "default" for a Pod; a Node has none).
 */
export function deregistrationKey(value: unknown): { ok: true; key: string; name: string } | { ok: false; error: string } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: 'request: expected a Pod or Node, or {"kind", "namespace", "name"}' }
  }
  const body = value as { kind?: unknown; name?: unknown; namespace?: unknown; metadata?: { name?: unknown; namespace?: unknown } }
  const kind = body.kind
  if (kind !== 'Pod' && kind !== 'Node') {
    return { ok: false, error: `kind: the control plane registers ${REGISTRY_KINDS.join(' and ')} only, got ${JSON.stringify(kind ?? null)}` }
  }
  const name = body.metadata?.name ?? body.name
  const namespace = body.metadata?.namespace ?? body.namespace
  if (typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name)) {
    return { ok: false, error: `${kind}: name: expected a DNS-1123 name, got ${JSON.stringify(name ?? null)}` }
  }
  if (namespace !== undefined && (typeof namespace !== 'string' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace))) {
    return { ok: false, error: `${kind} ${name}: namespace: expected a DNS-1123 label, got ${JSON.stringify(namespace)}` }
  }
  const key = resourceKey({ kind, namespace: kind === 'Pod' ? (namespace ?? 'default') : undefined, name })
  return { ok: true, key, name: displayName({ kind, namespace: kind === 'Pod' ? (namespace ?? 'default') : undefined, name }) }
}

/** Removes a registered pod or node; refuses one that is not registered. */
export async function deregisterWorkload(bus: Bus, value: unknown): Promise<RegistryReply> {
  const target = deregistrationKey(value)
  if (!target.ok) return target
  if ((await bus.getResource(target.key)) === null) {
    return { ok: false, error: `${(value as { kind: string }).kind} ${target.name} is not registered (no key ${target.key})` }
  }
  const revision = await bus.deleteResource(target.key)
  return { ok: true, key: target.key, revision }
}
