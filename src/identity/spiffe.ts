// SPIFFE IDs as weft uses them: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
// and the identity a peer's certificate proves (an X.509-SVID: exactly one URI SAN, spiffe://).
// Rules from the SPIFFE ID spec: trust domain [a-z0-9._-], path segments [A-Za-z0-9._-], no
// empty, "." or ".." segment, no query, fragment, port or user info.
import type { PeerCertificate } from 'node:tls'

import { subjectAltNames, x509 } from './x509.ts'

export type WorkloadId = { trustDomain: string; namespace: string; serviceAccount: string }

const TRUST_DOMAIN = /^[a-z0-9._-]+$/
const SEGMENT = /^[A-Za-z0-9._-]+$/

/** Is this a valid trust domain name (`cluster.local`)? */
export function isTrustDomain(value: string): boolean {
  return value.length > 0 && value.length <= 255 && TRUST_DOMAIN.test(value)
}

/** Why `value` is not a trust domain, or undefined when it is one. */
export function trustDomainProblem(value: string): string | undefined {
  return isTrustDomain(value) ? undefined : `trust domain ${JSON.stringify(value)}: use lower-case letters, digits, ".", "-" and "_" only (e.g. cluster.local)`
}

export function formatSpiffeId(id: WorkloadId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`
}

/** Any valid SPIFFE ID: its trust domain and path segments, or undefined. */
export function parseSpiffeUri(uri: string): { trustDomain: string; segments: string[] } | undefined {
  if (!uri.startsWith('spiffe://') || uri.length > 2048) return undefined
  const rest = uri.slice('spiffe://'.length)
  const slash = rest.indexOf('/')
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash)
  if (!isTrustDomain(trustDomain)) return undefined
  if (slash === -1) return { trustDomain, segments: [] }
  const segments = rest.slice(slash + 1).split('/')
  for (const segment of segments) {
    if (!SEGMENT.test(segment) || segment === '.' || segment === '..') return undefined
  }
  return { trustDomain, segments }
}

/** A workload's SPIFFE ID (`/ns/<ns>/sa/<sa>`), or undefined for anything else. */
export function parseSpiffeId(uri: string): WorkloadId | undefined {
  const parsed = parseSpiffeUri(uri)
  if (!parsed || parsed.segments.length !== 4) return undefined
  const [ns, namespace, sa, serviceAccount] = parsed.segments as [string, string, string, string]
  if (ns !== 'ns' || sa !== 'sa') return undefined
  return { trustDomain: parsed.trustDomain, namespace, serviceAccount }
}

/** Is `uri` a workload SPIFFE ID in `trustDomain`? */
export function inTrustDomain(uri: string, trustDomain: string): boolean {
  return parseSpiffeId(uri)?.trustDomain === trustDomain
}

/** What an X.509-SVID's SAN says, or why it is not one. */
export function svidIdentity(source: x509.X509Certificate | x509.Pkcs10CertificateRequest): { ok: true; identity: string } | { ok: false; reason: string } {
  const { uris, others } = subjectAltNames(source)
  if (uris.length === 0) return { ok: false, reason: `no URI SAN (an X.509-SVID has exactly one, spiffe://...)${others.length > 0 ? `; it has ${others.join(', ')}` : ''}` }
  if (uris.length > 1) return { ok: false, reason: `${uris.length} URI SANs (${uris.join(', ')}); an X.509-SVID has exactly one` }
  const uri = uris[0]!
  if (!uri.startsWith('spiffe://')) return { ok: false, reason: `URI SAN ${uri} is not a SPIFFE ID (spiffe://...)` }
  if (parseSpiffeId(uri) === undefined) return { ok: false, reason: `URI SAN ${uri} is not a workload SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<service account>)` }
  return { ok: true, identity: uri }
}

/** Parsed peer certificates by SHA-256 fingerprint: a pooled peer presents the same one often. */
const peerCache = new Map<string, string | undefined>()
const PEER_CACHE_SIZE = 1024

/**
 * The workload identity a peer certificate proves: its only URI SAN when that is a workload
 * SPIFFE ID, else undefined (no URI SAN, several, or not spiffe://). Takes what node:tls gives
 * (`socket.getPeerCertificate()`, `getPeerX509Certificate()`), DER, or PEM. Checks only the
 * SAN: the chain is node:tls's job (rejectUnauthorized with the trust bundle as `ca`).
 */
export function peerIdentity(certificate: Pick<PeerCertificate, 'raw'> | { raw: Buffer } | Buffer | string | undefined | null): string | undefined {
  if (certificate === undefined || certificate === null) return undefined
  let raw: Buffer | string
  if (typeof certificate === 'string' || Buffer.isBuffer(certificate)) raw = certificate
  else if (Buffer.isBuffer(certificate.raw)) raw = certificate.raw
  else return undefined
  const key = typeof raw === 'string' ? raw : raw.toString('base64')
  if (peerCache.has(key)) return peerCache.get(key)
  let identity: string | undefined
  try {
    const parsed = svidIdentity(new x509.X509Certificate(raw))
    identity = parsed.ok ? parsed.identity : undefined
  } catch {
    identity = undefined
  }
  if (peerCache.size >= PEER_CACHE_SIZE) peerCache.delete(peerCache.keys().next().value!)
  peerCache.set(key, identity)
  return identity
}

/**
 * A `checkServerIdentity` for tls.connect: the server must prove `expected` (one SPIFFE ID, or
 * a predicate). Host names play no part: an X.509-SVID has no DNS name.
 */
export function checkSpiffeServer(expected: string | ((identity: string) => boolean)): (host: string, certificate: PeerCertificate) => Error | undefined {
  return (_host, certificate) => {
    const identity = peerIdentity(certificate)
    const accepted = identity !== undefined && (typeof expected === 'string' ? identity === expected : expected(identity))
    if (accepted) return undefined
    const wanted = typeof expected === 'string' ? expected : 'an accepted SPIFFE ID'
    const error = new Error(`peer certificate proves ${identity ?? 'no SPIFFE ID'}, expected ${wanted}`) as Error & { code?: string }
    error.code = 'ERR_TLS_CERT_ALTNAME_INVALID'
    return error
  }
}
