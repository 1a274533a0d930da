// A strict offline check of Kubernetes manifests. kubernetes-models validates each object against
// the API's OpenAPI schema (types, required fields, formats) but lets unknown fields through, as
// the API server's lenient decoding would; so every field is also looked up in
// @kubernetes/client-node's generated models (one class per schema, with its attribute map), and
// a field no model declares is an error: `spec.template.spec.hostNetwrk: unknown field (did you
// mean "hostNetwork"?)`.
import * as k8s from '@kubernetes/client-node'
import * as apps from 'kubernetes-models/apps/v1'
import * as core from 'kubernetes-models/v1'
import * as discovery from 'kubernetes-models/discovery.k8s.io/v1'
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1'

type Validating = new (data: never) => { validate(): void }
type AttributeMap = ReadonlyArray<{ baseName: string; type: string }>
type ModelClass = { getAttributeTypeMap(): AttributeMap }

// The groups the manifests use; another group is an error naming it (add it here).
const MODELS: Record<string, Record<string, unknown>> = {
  v1: core,
  'apps/v1': apps,
  'discovery.k8s.io/v1': discovery,
  'rbac.authorization.k8s.io/v1': rbac,
}

// Leaves: their values are checked by kubernetes-models' schema validation.
const LEAF_TYPES = new Set(['string', 'number', 'boolean', 'Date', 'any', 'object', 'IntOrString'])

/** Every problem with one manifest object, as `<path>: <problem>`; empty when it is valid. */
export function checkManifest(object: unknown): string[] {
  if (typeof object !== 'object' || object === null || Array.isArray(object)) return ['expected an object with apiVersion and kind']
  const { apiVersion, kind } = object as { apiVersion?: unknown; kind?: unknown }
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return ['expected an object with apiVersion and kind']
  const group = MODELS[apiVersion]
  const Model = group?.[kind] as Validating | undefined
  if (!Model) return [`apiVersion/kind: ${apiVersion} ${kind} is not a kind this check knows (known groups: ${Object.keys(MODELS).join(', ')})`]
  const problems: string[] = []
  try {
    new Model(object as never).validate()
  } catch (error) {
    const errors = (error as { errors?: Array<{ instancePath: string; message?: string }> }).errors
    if (!errors) throw error
    for (const e of errors) problems.push(`${e.instancePath.slice(1).replaceAll('/', '.') || '(top)'}: ${e.message ?? 'invalid'}`)
  }
  const version = apiVersion.split('/').pop() ?? ''
  walk(object, `${version[0]?.toUpperCase()}${version.slice(1)}${kind}`, '', problems)
  return problems
}

function modelOf(type: string): ModelClass {
  const model = (k8s as unknown as Record<string, ModelClass | undefined>)[type]
  if (!model || typeof model.getAttributeTypeMap !== 'function') throw new Error(`k8s-schema: no model ${type} in @kubernetes/client-node`)
  return model
}

function walk(value: unknown, type: string, path: string, problems: string[]): void {
  if (value === null || value === undefined || LEAF_TYPES.has(type)) return
  const array = /^Array<(.+)>$/.exec(type)
  if (array) {
    if (Array.isArray(value)) value.forEach((item, i) => walk(item, array[1]!, `${path}[${i}]`, problems))
    return
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type)
  if (map) {
    if (typeof value === 'object') for (const [key, item] of Object.entries(value)) walk(item, map[1]!, `${path}.${key}`, problems)
    return
  }
  if (typeof value !== 'object' || Array.isArray(value)) return // a type error: the schema validation reports it
  const attributes = modelOf(type).getAttributeTypeMap()
  const known = new Map(attributes.map((a) => [a.baseName, a.type]))
  for (const [key, item] of Object.entries(value)) {
    const field = path === '' ? key : `${path}.${key}`
    const fieldType = known.get(key)
    if (fieldType === undefined) {
      const near = closest(key, [...known.keys()])
      problems.push(`${field}: unknown field${near ? ` (did you mean "${near}"?)` : ` (known: ${[...known.keys()].join(', ')})`}`)
      continue
    }
    walk(item, fieldType, field, problems)
  }
}

/** The known name within edit distance 2 of a misspelt one (case-insensitive), if any. */
function closest(name: string, known: string[]): string | undefined {
  let best: { name: string; distance: number } | undefined
  for (const candidate of known) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase())
    if (distance <= 2 && (!best || distance < best.distance)) best = { name: candidate, distance }
  }
  return best?.name
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]!
}
