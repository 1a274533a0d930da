// The value matchers of Istio's policy language, compiled once per snapshot: string patterns with
// Istio's wildcard forms (`*`, `prefix*`, `*suffix`, exact) and IPv4 blocks. Matching is a set
// lookup and a short loop; nothing is allocated per call.
import { ipv4ToNumber, isIPv4, parseIpv4Cidr } from '../config/resources/net.ts'

/** A list of patterns such as `cluster.local/ns/shop/*` and `*-admin`, compiled. */
export interface PatternSet {
  /** `*` was one of the patterns: any value matches (but never a missing one). */
  readonly any: boolean
  readonly exact: ReadonlySet<string>
  readonly prefixes: readonly string[]
  readonly suffixes: readonly string[]
}

/** `normalize` is applied to each pattern (lowercase for hosts, no `spiffe://` for principals). */
export function compilePatterns(patterns: readonly string[], normalize: (pattern: string) => string = (p) => p): PatternSet {
  let any = false
  const exact = new Set<string>()
  const prefixes: string[] = []
  const suffixes: string[] = []
  for (const raw of patterns) {
    const pattern = normalize(raw)
    if (pattern === '*') any = true
    else if (pattern.endsWith('*')) prefixes.push(pattern.slice(0, -1))
    else if (pattern.startsWith('*')) suffixes.push(pattern.slice(1))
    else exact.add(pattern)
  }
  return { any, exact, prefixes, suffixes }
}

/** Whether `value` matches one of the patterns; a missing value (no peer identity) matches none, not even `*`. */
export function matchesPatterns(set: PatternSet, value: string | undefined): boolean {
  if (value === undefined) return false
  if (set.any || set.exact.has(value)) return true
  for (const prefix of set.prefixes) if (value.startsWith(prefix)) return true
  for (const suffix of set.suffixes) if (value.endsWith(suffix)) return true
  return false
}

const SPIFFE_SCHEME = 'spiffe://'

/** Istio writes principals without the scheme (`cluster.local/ns/shop/sa/web`); weft accepts both. */
export function principalWithoutScheme(principal: string): string {
  return principal.startsWith(SPIFFE_SCHEME) ? principal.slice(SPIFFE_SCHEME.length) : principal
}

/** IPv4 blocks as (network, mask) pairs; a single address is a /32. Plain arrays: the snapshot
 *  freezes everything in it, and a typed array with elements cannot be frozen. */
export interface IpBlocks { readonly networks: readonly number[]; readonly masks: readonly number[] }

export function compileIpBlocks(blocks: readonly string[]): IpBlocks {
  const networks: number[] = []
  const masks: number[] = []
  for (const block of blocks) {
    const cidr = isIPv4(block) ? parseIpv4Cidr(`${block}/32`) : parseIpv4Cidr(block)
    // The schema accepted only addresses and CIDRs; anything else would be a bug there.
    if (!cidr) throw new Error(`ip block "${block}" is not an IPv4 address or CIDR (the schema should have refused it)`)
    masks.push(cidr.prefix === 0 ? 0 : (0xffffffff << (32 - cidr.prefix)) >>> 0)
    networks.push(cidr.base)
  }
  return { networks, masks }
}

export function ipInBlocks(blocks: IpBlocks, ip: string): boolean {
  if (!isIPv4(ip)) return false
  const address = ipv4ToNumber(ip)
  for (let i = 0; i < blocks.networks.length; i++) {
    if (((address & (blocks.masks[i] ?? 0)) >>> 0) === blocks.networks[i]) return true
  }
  return false
}
