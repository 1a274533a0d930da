// What the mirror must write to make the bucket hold what the cluster says: pure, so it is
// tested alone. Only resources the mirror wrote (annotation weft.dev/source: kubernetes) are
// ever deleted; an operator's own resources under other keys are left alone.
import type { Resource } from '../config/resources/index.ts'
import { isMirrored } from './translate.ts'

export interface MirrorPlan {
  /** Keys to put, with their new value: new, or different from what is stored. */
  puts: Array<[key: string, resource: Resource]>
  /** Keys the mirror wrote earlier that the cluster no longer has. */
  deletes: string[]
}

/** JSON with object keys sorted, so equal resources compare equal whatever their key order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_, v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : v))
}

/** `stored`: the bucket's content (key → value as stored); `desired`: translateCluster's resources. */
export function planMirror(stored: ReadonlyMap<string, unknown>, desired: ReadonlyMap<string, Resource>): MirrorPlan {
  const puts: MirrorPlan['puts'] = []
  for (const [key, resource] of desired) {
    if (!stored.has(key) || canonicalJson(stored.get(key)) !== canonicalJson(resource)) puts.push([key, resource])
  }
  const deletes = [...stored].filter(([key, value]) => !desired.has(key) && isMirrored(value)).map(([key]) => key)
  return { puts: puts.sort(([a], [b]) => a.localeCompare(b)), deletes: deletes.sort() }
}
