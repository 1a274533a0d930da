// validateResource: one resource, from a file or from NATS (where any client may publish), checked
// against its kind's schema and then against the node's context (the VIP range). Every problem is
// a FieldError naming the field path, in the wording "expected <what>, got <value>".
import { z } from 'zod'

import { show } from './common.ts'
import { KINDS, isKind, knownKindsList, type KindInfo, type Resource } from './kinds.ts'
import { cidrContains, parseIpv4Cidr } from './net.ts'

export interface ValidationContext {
  /** Service VIPs must lie in this range (the BPF programs intercept it). */
  vipCidr: string
  /** SPIFFE trust domain of workload identities. */
  trustDomain: string
}

export const DEFAULT_VALIDATION_CONTEXT: ValidationContext = Object.freeze({ vipCidr: '198.19.0.0/16', trustDomain: 'cluster.local' })

export type PathSegment = string | number

export class FieldError {
  readonly path: string
  readonly segments: readonly PathSegment[]
  readonly message: string
  constructor(segments: readonly PathSegment[], message: string) {
    this.segments = segments
    this.path = formatPath(segments)
    this.message = message
  }
  toString(): string { return this.path === '' ? this.message : `${this.path}: ${this.message}` }
}

export type ValidationResult = { ok: true; resource: Resource } | { ok: false; errors: FieldError[] }

/** `spec.ports[0].port`; keys that are not plain identifiers are quoted: `metadata.annotations["weft.dev/cgroup"]`. */
export function formatPath(segments: readonly PathSegment[]): string {
  let text = ''
  for (const segment of segments) {
    if (typeof segment === 'number') text += `[${segment}]`
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(segment)) text += text === '' ? segment : `.${segment}`
    else text += `[${JSON.stringify(segment)}]`
  }
  return text
}

export function validateResource(value: unknown, ctx: ValidationContext = DEFAULT_VALIDATION_CONTEXT): ValidationResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, errors: [new FieldError([], `expected a resource (an object with apiVersion, kind, metadata), got ${show(value)}`)] }
  }
  const { apiVersion, kind } = value as { apiVersion?: unknown; kind?: unknown }
  if (kind === undefined || kind === null) {
    return { ok: false, errors: [new FieldError(['kind'], `missing: expected one of the known kinds: ${knownKindsList()}`)] }
  }
  if (!isKind(kind)) {
    const got = kind === undefined ? 'no kind' : `${show(kind)}`
    return { ok: false, errors: [new FieldError(['kind'], `unknown kind ${got}${apiVersion === undefined ? '' : ` (apiVersion ${show(apiVersion)})`}; known kinds: ${knownKindsList()}`)] }
  }
  const info: KindInfo = KINDS[kind]
  if (apiVersion !== info.apiVersion) {
    return { ok: false, errors: [new FieldError(['apiVersion'], `expected "${info.apiVersion}" for kind ${kind}, got ${show(apiVersion)}`)] }
  }
  const parsed = info.schema.safeParse(value, { reportInput: true, error: genericMessage })
  if (!parsed.success) return { ok: false, errors: parsed.error.issues.flatMap((issue) => fieldErrors(issue, info)) }
  const resource = parsed.data as Resource
  const errors = contextErrors(resource, ctx)
  return errors.length > 0 ? { ok: false, errors } : { ok: true, resource }
}

/** Rules that depend on where the resource is applied rather than on the resource alone. */
function contextErrors(resource: Resource, ctx: ValidationContext): FieldError[] {
  const errors: FieldError[] = []
  if (resource.kind === 'Service') {
    const range = parseIpv4Cidr(ctx.vipCidr)
    if (!range) throw new Error(`ValidationContext.vipCidr "${ctx.vipCidr}" is not an IPv4 CIDR`)
    const ip = resource.spec.clusterIP
    if (!cidrContains(range, ip)) errors.push(new FieldError(['spec', 'clusterIP'], `expected an address in the service VIP range ${ctx.vipCidr}, got "${ip}"`))
  }
  return errors
}

// --- zod issues as weft's messages ------------------------------------------------------------

// Used for every issue whose schema gave no message of its own.
function genericMessage(issue: z.core.$ZodRawIssue): string | undefined {
  const got = show(issue.input)
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined ? `missing: expected ${typeName(issue.expected)}` : `expected ${typeName(issue.expected)}, got ${got}`
    case 'invalid_value':
      return issue.values.length === 1 ? `expected ${show(issue.values[0])}, got ${got}` : `expected one of ${issue.values.map(show).join(', ')}, got ${got}`
    case 'invalid_union': {
      const discriminated = issue as { discriminator?: string; options?: unknown[] }
      if (discriminated.discriminator && discriminated.options) {
        const input = issue.input as Record<string, unknown> | undefined
        return `expected one of ${discriminated.options.map(show).join(', ')}, got ${show(input?.[discriminated.discriminator])}`
      }
      return `got ${got}, which matches none of the allowed forms`
    }
    case 'invalid_key': {
      // A record's key failed its schema: that schema's message, about the key.
      const inner = (issue as { issues?: { message?: string }[] }).issues?.[0]?.message
      return inner ?? `bad key ${got}`
    }
    case 'too_small':
      return issue.origin === 'array' ? `expected at least ${issue.minimum} item(s)` : issue.origin === 'string' ? `expected at least ${issue.minimum} character(s)` : `expected a number ≥ ${issue.minimum}, got ${got}`
    case 'too_big':
      return issue.origin === 'array' ? `expected at most ${issue.maximum} item(s)` : issue.origin === 'string' ? `expected at most ${issue.maximum} character(s)` : `expected a number ≤ ${issue.maximum}, got ${got}`
    default:
      return undefined
  }
}

function typeName(type: string): string {
  switch (type) {
    case 'object': return 'an object'
    case 'array': return 'a list'
    case 'int': return 'a whole number'
    case 'boolean': return 'true or false'
    default: return `a ${type}`
  }
}

function fieldErrors(issue: z.core.$ZodIssue, info: KindInfo): FieldError[] {
  const path = issue.path.filter((p): p is PathSegment => typeof p !== 'symbol')
  if (issue.code === 'unrecognized_keys') {
    const allowed = allowedKeys(info.schema, path, issue.input)
    return issue.keys.map((key) => new FieldError([...path, key],
      !info.namespaced && key === 'namespace' && formatPath(path) === 'metadata'
        ? `${info.kind} is cluster-scoped: remove metadata.namespace`
        : unknownFieldMessage(key, allowed)))
  }
  return [new FieldError(path, issue.message)]
}

function unknownFieldMessage(key: string, allowed: string[] | undefined): string {
  if (!allowed) return 'unknown field'
  const close = allowed.find((candidate) => candidate.toLowerCase() === key.toLowerCase()) ?? allowed.find((candidate) => editDistance(candidate, key) <= 2)
  return close ? `unknown field (did you mean "${close}"?)` : `unknown field (allowed: ${allowed.join(', ')})`
}

/** The keys the schema allows at `path`, walking objects, arrays, records, optionals and unions. */
function allowedKeys(schema: z.ZodType, path: readonly PathSegment[], input: unknown): string[] | undefined {
  let current: z.core.$ZodType | undefined = schema
  for (const segment of [...path, undefined]) {
    current = unwrap(current, segment === undefined ? input : undefined)
    if (!current) return undefined
    if (segment === undefined) break
    const def = current._zod.def
    if (def.type === 'object') current = (def as z.core.$ZodObjectDef).shape[segment]
    else if (def.type === 'array') current = (def as z.core.$ZodArrayDef).element
    else if (def.type === 'record') current = (def as z.core.$ZodRecordDef).valueType
    else return undefined
  }
  if (current?._zod.def.type !== 'object') return undefined
  return Object.keys((current._zod.def as z.core.$ZodObjectDef).shape)
}

function unwrap(schema: z.core.$ZodType | undefined, input: unknown): z.core.$ZodType | undefined {
  let current = schema
  for (let depth = 0; current && depth < 10; depth++) {
    const def = current._zod.def as z.core.$ZodTypeDef & { innerType?: z.core.$ZodType; in?: z.core.$ZodType; options?: z.core.$ZodType[] }
    if (def.innerType) current = def.innerType
    else if (def.type === 'pipe' && def.in) current = def.in
    else if (def.type === 'union' && def.options) current = bestOption(def.options, input)
    else return current
  }
  return current
}

// For an object inside a union (a filter, say), the option that knows most of the input's keys.
function bestOption(options: z.core.$ZodType[], input: unknown): z.core.$ZodType | undefined {
  const keys = typeof input === 'object' && input !== null ? Object.keys(input) : []
  let best: z.core.$ZodType | undefined
  let bestScore = -1
  for (const option of options) {
    const def = option._zod.def
    if (def.type !== 'object') continue
    const shape = (def as z.core.$ZodObjectDef).shape
    const score = keys.filter((k) => k in shape).length
    if (score > bestScore) { best = option; bestScore = score }
  }
  return best
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0] ?? 0
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const saved = row[j] ?? 0
      row[j] = Math.min((row[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = saved
    }
  }
  return row[b.length] ?? 0
}
