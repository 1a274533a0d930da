// Building blocks shared by the kinds: names, labels, metadata, addresses, durations, and the
// wording of errors. Every schema states its expectation as "expected <what>, got <value>" so a
// message reads the same whichever kind it comes from.
import { z } from 'zod'

import { isIPv4, parseIpv4Cidr } from './net.ts'

/** A value as it should appear in an error: strings quoted, objects abbreviated. */
export function show(value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null'
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : 'a list'
  if (typeof value === 'object') return 'an object'
  const text = JSON.stringify(value)
  return text.length > 60 ? `${text.slice(0, 57)}..."` : text
}

/** A zod error option: `expected <what>, got <the input>`. */
export function expected(what: string): { error: (issue: { input?: unknown }) => string } {
  return { error: (issue) => issue.input === undefined ? `missing: expected ${what}` : `expected ${what}, got ${show(issue.input)}` }
}

// Kubernetes' name rules (apimachinery validation): a DNS-1123 label for namespaces, a DNS-1123
// subdomain for object names. Both fit NATS KV keys, which allow letters, digits, - _ . = only.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

export const dnsLabel = z.string(expected('a DNS-1123 label (lowercase letters, digits and "-", at most 63)'))
  .max(63, expected('a DNS-1123 label (lowercase letters, digits and "-", at most 63)'))
  .regex(DNS1123_LABEL, expected('a DNS-1123 label (lowercase letters, digits and "-", at most 63)'))

export const objectName = z.string(expected('a name (lowercase letters, digits, "-" and ".", at most 253)'))
  .max(253, expected('a name (lowercase letters, digits, "-" and ".", at most 253)'))
  .regex(DNS1123_SUBDOMAIN, expected('a name (lowercase letters, digits, "-" and ".", at most 253)'))

// Label keys: optional DNS prefix and "/", then a name; values: empty or a name (apimachinery).
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/

/** Like `expected`, for containers: only a wrong type gets this message; problems inside keep their own. */
function expectedType(what: string): { error: (issue: { code?: string; input?: unknown }) => string | undefined } {
  return { error: (issue) => issue.code === 'invalid_type' ? (issue.input === undefined ? `missing: expected ${what}` : `expected ${what}, got ${show(issue.input)}`) : undefined }
}

export const labelMap = z.record(
  z.string().regex(LABEL_KEY, expected('a label key like "app" or "example.com/tier"')),
  z.string(expected('a label value (a string: quote numbers and booleans)'))
    .regex(LABEL_VALUE, expected('a label value (at most 63 letters, digits, "-", "_", ".")')),
  expectedType('a map of labels'),
)

export const annotationMap = z.record(
  z.string().regex(LABEL_KEY, expected('an annotation key like "example.com/note"')),
  z.string(expected('an annotation value (a string: quote numbers and booleans)')),
  expectedType('a map of annotations'),
)

// Fields the Kubernetes API server adds: accepted so `kubectl get -o yaml` output applies, ignored.
const serverFields = {
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  generation: z.number().optional(),
  creationTimestamp: z.union([z.string(), z.null()]).optional(),
  managedFields: z.array(z.unknown()).optional(),
}

export const namespacedMetadata = z.strictObject({
  name: objectName,
  namespace: dnsLabel.default('default'),
  labels: labelMap.optional(),
  annotations: annotationMap.optional(),
  ...serverFields,
}, expected('an object with name, namespace, labels, annotations'))

export const clusterMetadata = z.strictObject({
  name: objectName,
  labels: labelMap.optional(),
  annotations: annotationMap.optional(),
  ...serverFields,
}, expected('an object with name, labels, annotations'))

export const ipv4 = z.string(expected('an IPv4 address')).refine(isIPv4, expected('an IPv4 address'))
export const ipv4Cidr = z.string(expected('an IPv4 CIDR like 198.18.1.0/24'))
  .refine((text) => parseIpv4Cidr(text) !== undefined, expected('an IPv4 CIDR like 198.18.1.0/24'))

export const portNumber = z.int(expected('a number from 1 to 65535'))
  .min(1, expected('a number from 1 to 65535'))
  .max(65535, expected('a number from 1 to 65535'))

/** A non-negative whole number (counts, limits). */
export const count = z.int(expected('a whole number ≥ 0')).min(0, expected('a whole number ≥ 0'))
export const percent = z.int(expected('a whole number from 0 to 100'))
  .min(0, expected('a whole number from 0 to 100')).max(100, expected('a whole number from 0 to 100'))

// Gateway API's Duration (GEP-2257): 1 to 4 parts of up to 5 digits with h, m, s or ms: "30s", "1m30s", "500ms".
const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/
export const duration = z.string(expected('a duration like "30s", "1m30s" or "500ms"'))
  .regex(DURATION, expected('a duration like "30s", "1m30s" or "500ms"'))

const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 }

/** Milliseconds in a duration that passed `duration`'s check. */
export function durationMs(text: string): number {
  let total = 0
  for (const match of text.matchAll(/([0-9]+)(ms|h|m|s)/g)) total += Number(match[1]) * (UNIT_MS[match[2] ?? ''] ?? 0)
  return total
}

/** A reference to a Service in the same namespace, as Gateway API policies write it. */
export const serviceTargetRef = z.strictObject({
  group: z.literal('', expected('"" (the core group: the target is a Service)')).optional(),
  kind: z.literal('Service', expected('"Service"')),
  name: objectName,
}, expected('an object {group: "", kind: Service, name}'))

export type Metadata = z.infer<typeof namespacedMetadata>
