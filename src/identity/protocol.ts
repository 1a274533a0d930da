// What the CA and the nodes say to each other over NATS: the CSR request and reply, the rotate
// request, and the trust bundle (in the weft-trust bucket and in every signing reply). JSON.
import { fingerprint, parseCertificatesPem, x509 } from './x509.ts'

/** One root in the trust bundle. */
export type TrustRoot = {
  /** The root certificate, PEM. */
  pem: string
  /** SHA-256 of its DER (as openssl -fingerprint -sha256). */
  fingerprint: string
  subject: string
  notAfter: string
  /** Set while the root is being retired: it leaves the bundle at this time. */
  retiresAt?: string
}

/**
 * The roots to trust. `version` grows with every change, so a node keeps the newest of what the
 * bucket and the signing replies bring. `signing` is the root that signs new certificates: a node
 * whose certificate chains to another root renews.
 */
export type TrustBundle = {
  trustDomain: string
  version: number
  signing: string
  roots: TrustRoot[]
  updatedAt: string
}

/** Request on `weft.control.csr.<node>`: one PKCS#10 CSR (PEM) for one identity. */
export type CsrRequest = { csr: string }

export type CsrReply =
  | {
    ok: true
    identity: string
    /** Leaf first, then intermediates up to (not including) the root; PEM each. */
    chain: string[]
    /** Fingerprint of the root the chain ends at. */
    root: string
    /** The leaf's serial (hex) and expiry, for logs. */
    serial: string
    notAfter: string
    bundle: TrustBundle
  }
  | { ok: false; error: string }

/** Reply on `weft.control.ca.rotate`. */
export type RotateReply = { ok: true; signing: string; retiring: Array<{ fingerprint: string; retiresAt: string }>; version: number } | { ok: false; error: string }

/** A trust bundle from JSON, checked: each root parses and its fingerprint is what it says. */
export function parseTrustBundle(text: string): TrustBundle {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new Error(`trust bundle: not JSON (${(error as Error).message})`)
  }
  const bundle = value as Partial<TrustBundle>
  if (typeof bundle !== 'object' || bundle === null || typeof bundle.version !== 'number' || typeof bundle.signing !== 'string' || !Array.isArray(bundle.roots) || typeof bundle.trustDomain !== 'string') {
    throw new Error('trust bundle: expected {trustDomain, version, signing, roots: [...], updatedAt}')
  }
  for (const [index, root] of bundle.roots.entries()) {
    if (typeof root?.pem !== 'string') throw new Error(`trust bundle: roots[${index}]: no pem`)
    const [certificate] = parseCertificatesPem(root.pem, `trust bundle: roots[${index}]`)
    if (fingerprint(certificate!) !== root.fingerprint) throw new Error(`trust bundle: roots[${index}]: fingerprint ${root.fingerprint} does not match the certificate`)
  }
  if (!bundle.roots.some((root) => root.fingerprint === bundle.signing)) throw new Error(`trust bundle: the signing root ${bundle.signing} is not among its roots`)
  return bundle as TrustBundle
}

export function trustRootOf(certificate: x509.X509Certificate, retiresAt?: Date): TrustRoot {
  return {
    pem: `${certificate.toString('pem')}\n`,
    fingerprint: fingerprint(certificate),
    subject: certificate.subject,
    notAfter: certificate.notAfter.toISOString(),
    ...(retiresAt ? { retiresAt: retiresAt.toISOString() } : {}),
  }
}

/** The bundle's roots as one PEM text (what node:tls takes as `ca`, what `openssl verify -CAfile` reads). */
export function bundlePem(bundle: TrustBundle): string {
  return bundle.roots.map((root) => root.pem.trimEnd() + '\n').join('')
}
