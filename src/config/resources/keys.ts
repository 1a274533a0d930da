// Resource keys: `<kind>.<namespace>.<name>`, kind lowercased, as the KV bucket stores them.
// Cluster-scoped kinds (Node) use "_" for the namespace: no namespace can be "_" (namespaces are
// DNS labels), so a key always has three parts and reads back unambiguously. Names may contain
// dots (DNS subdomains); the kind and namespace never do, so the name is everything after the
// second dot.
import { kindInfo, KINDS, type Kind, type Resource } from './kinds.ts'

export const CLUSTER_SCOPE = '_'

export interface ResourceKeyParts { kind: Kind; namespace: string | undefined; name: string }

/** The NATS KV key of a resource (or of its kind, namespace and name). */
export function resourceKey(resource: Resource | ResourceKeyParts): string {
  const namespace = 'metadata' in resource ? ('namespace' in resource.metadata ? resource.metadata.namespace : undefined) : resource.namespace
  const name = 'metadata' in resource ? resource.metadata.name : resource.name
  const info = KINDS[resource.kind]
  return `${info.kind.toLowerCase()}.${info.namespaced ? namespace ?? 'default' : CLUSTER_SCOPE}.${name}`
}

export class ResourceKeyError extends Error {}

// NATS KV: letters, digits, - _ / = and ".", no empty tokens. Names here are DNS subdomains.
const KEY_PATTERN = /^([a-z]+)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?|_)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$/

/** The kind, namespace (undefined for cluster-scoped kinds) and name in a key; throws ResourceKeyError. */
export function parseResourceKey(key: string): ResourceKeyParts {
  const match = KEY_PATTERN.exec(key)
  if (!match) throw new ResourceKeyError(`"${key}" is not a resource key: expected <kind>.<namespace>.<name>, like service.default.reviews or node._.node1`)
  const [, kindSegment = '', namespace = '', , name = ''] = match
  const info = kindInfo(kindSegment)
  if (!info || info.kind.toLowerCase() !== kindSegment) {
    throw new ResourceKeyError(`"${key}": unknown kind "${kindSegment}" (known: ${Object.keys(KINDS).map((k) => k.toLowerCase()).join(', ')})`)
  }
  if (info.namespaced && namespace === CLUSTER_SCOPE) throw new ResourceKeyError(`"${key}": ${info.kind} is namespaced; "${CLUSTER_SCOPE}" is only for cluster-scoped kinds`)
  if (!info.namespaced && namespace !== CLUSTER_SCOPE) throw new ResourceKeyError(`"${key}": ${info.kind} is cluster-scoped; its key is ${kindSegment}.${CLUSTER_SCOPE}.${name}`)
  return { kind: info.kind as Kind, namespace: info.namespaced ? namespace : undefined, name }
}

/** `default/reviews`, or `node1` for a cluster-scoped resource, as messages name resources. */
export function displayName(resource: Resource | ResourceKeyParts): string {
  const namespace = 'metadata' in resource ? ('namespace' in resource.metadata ? resource.metadata.namespace : undefined) : resource.namespace
  const name = 'metadata' in resource ? resource.metadata.name : resource.name
  return namespace === undefined ? name : `${namespace}/${name}`
}
