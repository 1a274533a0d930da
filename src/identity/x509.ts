// X.509 primitives for identities, over WebCrypto: P-256 keys, PEM, CSRs, certificate summaries.
// Node's crypto reads certificates but cannot issue them; @peculiar/x509 builds and signs them
// (it needs reflect-metadata loaded first, and a WebCrypto provider: Node's own).
import 'reflect-metadata'

import { X509Certificate as NodeCertificate, createPrivateKey, webcrypto } from 'node:crypto'


import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(globalThis.crypto)

export { x509 }

// WebCrypto's types live in node:crypto's webcrypto namespace (this project has no DOM lib).
export type KeyPair = webcrypto.CryptoKeyPair
export type PrivateKey = webcrypto.CryptoKey

/** The only key type weft issues to or accepts from workloads (SPIFFE recommends it). */
export const P256: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }
/** Signatures: ECDSA with SHA-256 (what a P-256 key pairs with). */
export const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' }

/**
 * A fresh P-256 key pair. `extractable` only so the private key can be handed to node:tls as PEM
 * in this process's memory (a SecureContext takes PEM or DER, not a CryptoKey).
 */
export async function generateP256KeyPair(): Promise<KeyPair> {
  return await webcrypto.subtle.generateKey(P256, true, ['sign', 'verify'])
}

/** PKCS#8 PEM of a private CryptoKey (for node:tls, or the CA's key file). */
export async function privateKeyPem(key: PrivateKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key)
  return x509.PemConverter.encode(der, 'PRIVATE KEY')
}

/**
 * A P-256 key pair from a PEM private key (PKCS#8 or SEC1 `EC PRIVATE KEY`); the public key is
 * derived from it. Throws with `what` named when the key is not P-256.
 */
export async function importP256PrivateKey(pem: string, what: string): Promise<KeyPair> {
  let keyObject
  try {
    keyObject = createPrivateKey(pem)
  } catch (error) {
    throw new Error(`${what}: not a PEM private key (${(error as Error).message})`)
  }
  const curve = keyObject.asymmetricKeyDetails?.namedCurve
  if (keyObject.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    throw new Error(`${what}: expected an EC P-256 key, got ${keyObject.asymmetricKeyType ?? 'unknown'}${curve ? ` ${curve}` : ''}`)
  }
  const pkcs8 = keyObject.export({ format: 'der', type: 'pkcs8' })
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, P256, true, ['sign'])
  const jwk = keyObject.export({ format: 'jwk' })
  const publicKey = await webcrypto.subtle.importKey('jwk', { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, P256, true, ['verify'])
  return { privateKey, publicKey }
}

/** Every certificate in a PEM text, in order. */
export function parseCertificatesPem(pem: string, what: string): x509.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) throw new Error(`${what}: no PEM certificate found`)
  return blocks.map((block, index) => {
    try {
      return new x509.X509Certificate(block)
    } catch (error) {
      throw new Error(`${what}: certificate ${index + 1} does not parse (${(error as Error).message})`)
    }
  })
}

export function certificatePem(certificate: x509.X509Certificate): string {
  return `${certificate.toString('pem')}\n`
}

/** SHA-256 of the DER, colon-separated upper-case hex (as `openssl x509 -fingerprint -sha256`). */
export function fingerprint(certificate: x509.X509Certificate): string {
  return new NodeCertificate(Buffer.from(certificate.rawData)).fingerprint256
}

/** A random positive 128-bit serial, hex (RFC 5280: unique per CA, at most 20 octets). */
export function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16))
  bytes[0] = (bytes[0]! & 0x7f) | 0x01 // positive, and no leading zero octet to trim
  return Buffer.from(bytes).toString('hex')
}

export function isSelfSigned(certificate: x509.X509Certificate): boolean {
  const node = new NodeCertificate(Buffer.from(certificate.rawData))
  return node.checkIssued(node) && node.verify(node.publicKey)
}

/** Does `issuer` sign `certificate` (name and signature)? */
export function issuedBy(certificate: x509.X509Certificate, issuer: x509.X509Certificate): boolean {
  const child = new NodeCertificate(Buffer.from(certificate.rawData))
  const parent = new NodeCertificate(Buffer.from(issuer.rawData))
  return child.checkIssued(parent) && child.verify(parent.publicKey)
}

/** The URI SANs of a certificate or CSR (SubjectAlternativeName extension), with the other names' count. */
export function subjectAltNames(source: x509.X509Certificate | x509.Pkcs10CertificateRequest): { uris: string[]; others: string[] } {
  const uris: string[] = []
  const others: string[] = []
  for (const extension of source.extensions) {
    if (!(extension instanceof x509.SubjectAlternativeNameExtension)) continue
    for (const name of extension.names.items) {
      if (name.type === 'url') uris.push(name.value)
      else others.push(`${name.type}:${name.value}`)
    }
  }
  return { uris, others }
}

/** A certificate, as the admin endpoints and the CLI show it. */
export type CertificateSummary = {
  subject: string
  issuer: string
  serial: string
  notBefore: string
  notAfter: string
  fingerprint: string
}

export function summarize(certificate: x509.X509Certificate): CertificateSummary {
  return {
    subject: certificate.subject,
    issuer: certificate.issuer,
    serial: certificate.serialNumber,
    notBefore: certificate.notBefore.toISOString(),
    notAfter: certificate.notAfter.toISOString(),
    fingerprint: fingerprint(certificate),
  }
}

/** A PKCS#10 CSR for one SPIFFE ID: exactly one URI SAN, signed by the key pair (P-256). */
export async function createCsr(spiffeId: string, keys: KeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: SIGNING,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true)],
  })
  return csr.toString('pem')
}
