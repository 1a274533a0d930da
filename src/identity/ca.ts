// The certificate authority `weft control` runs: it holds the signing key, checks CSRs and signs
// X.509-SVIDs, keeps the trust bundle (the roots nodes trust) and rotates a self-generated root
// with an overlap. It knows nothing of NATS: src/control/ca-service.ts serves it.
//
// Key material, one of:
// - self-generated (the default): a P-256 root made on first start, kept in <dir>/root-key.pem
//   (0600) and <dir>/root-cert.pem, reused across restarts, replaced by rotate();
// - plug-in (operator-supplied, like Istio's cacerts): a CA certificate and key, a root or an
//   intermediate with the chain up to its root. Rotated by restarting with new files.
// Either way <dir>/trust-bundle.json remembers the bundle, so roots being retired keep their
// overlap across restarts, and a plug-in root that changed stays trusted for the overlap.
import { X509Certificate as NodeCertificate, createPublicKey, type webcrypto } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import type { CsrReply, RotateReply, TrustBundle, TrustRoot } from './protocol.ts'
import { parseTrustBundle, trustRootOf } from './protocol.ts'
import { parseSpiffeId, svidIdentity, trustDomainProblem } from './spiffe.ts'
import { certificatePem, fingerprint, generateP256KeyPair, importP256PrivateKey, isSelfSigned, issuedBy, parseCertificatesPem, privateKeyPem, randomSerial, SIGNING, x509, type KeyPair } from './x509.ts'
import { formatDuration } from './duration.ts'

export const DEFAULT_LEAF_LIFETIME_MS = 24 * 3_600_000
/** A self-generated root lives ten years (as Istio's); rotation replaces it sooner. */
export const ROOT_LIFETIME_MS = 10 * 365 * 86_400_000

export class CaError extends Error {
  override name = 'CaError'
}

export type PluginCaFiles = {
  /** The CA certificate that signs leaves (a root, or an intermediate). */
  cert: string
  key: string
  /** Certificates from the CA certificate's issuer up to the root (may start with the CA certificate itself). */
  chain?: string
}

export type CertificateAuthorityOptions = {
  trustDomain: string
  /** Where the self-generated root and the bundle state live (created 0700). */
  dir: string
  /** Operator-supplied CA instead of a self-generated root. */
  plugin?: PluginCaFiles
  /** Leaf lifetime (default 24 h). */
  leafLifetimeMs?: number
  /** How long a replaced root stays in the bundle (default: the leaf lifetime). */
  rootOverlapMs?: number
  now?: () => number
}

/** Who may have which identity: undefined when `identity` may be signed, else the reason not. */
export type Authorize = (identity: string) => string | undefined

type SigningMaterial = {
  certificate: x509.X509Certificate
  keys: KeyPair
  /** Intermediates sent with each leaf: the signing certificate (when not the root) and above. */
  intermediates: x509.X509Certificate[]
  root: x509.X509Certificate
}

const KEY_FILE = 'root-key.pem'
const CERT_FILE = 'root-cert.pem'
const BUNDLE_FILE = 'trust-bundle.json'

/** Refuses a private key file that others may read: a CA key readable by others is no CA key. */
function checkKeyFile(file: string): void {
  const mode = statSync(file).mode & 0o777
  if ((mode & 0o077) !== 0) {
    throw new CaError(`CA key ${file} is readable by group or others (mode ${mode.toString(8).padStart(4, '0')}): run chmod 600 ${file}${file.endsWith(KEY_FILE) ? ', or remove it and root-cert.pem to start a new root' : ''}`)
  }
}

function writeAtomically(file: string, text: string, mode: number): void {
  const temporary = `${file}.tmp-${process.pid}`
  writeFileSync(temporary, text, { mode })
  chmodSync(temporary, mode)
  renameSync(temporary, file)
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (error) {
    throw new CaError(`${what} ${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`)
  }
}

function isCa(certificate: x509.X509Certificate): boolean {
  const constraints = certificate.getExtension(x509.BasicConstraintsExtension)
  return constraints?.ca === true
}

function samePublicKey(certificate: x509.X509Certificate, publicKeyDer: ArrayBuffer): boolean {
  const fromCert = createPublicKey({ key: Buffer.from(certificate.publicKey.rawData), format: 'der', type: 'spki' })
  const fromKey = createPublicKey({ key: Buffer.from(publicKeyDer), format: 'der', type: 'spki' })
  return fromCert.export({ format: 'der', type: 'spki' }).equals(fromKey.export({ format: 'der', type: 'spki' }))
}

async function newRoot(trustDomain: string, now: number): Promise<{ certificate: x509.X509Certificate; keys: KeyPair }> {
  const keys = await generateP256KeyPair()
  const notBefore = new Date(Math.floor(now / 1000) * 1000)
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `O=weft, CN=weft root CA ${trustDomain} ${notBefore.toISOString().replace(/\.000Z$/, 'Z')}`,
    notBefore,
    notAfter: new Date(notBefore.getTime() + ROOT_LIFETIME_MS),
    keys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      // SPIFFE: a CA certificate may carry the trust domain's own ID.
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }]),
    ],
  })
  return { certificate, keys }
}

export class CertificateAuthority {
  readonly trustDomain: string
  readonly mode: 'self-signed' | 'plug-in'
  readonly leafLifetimeMs: number
  readonly rootOverlapMs: number
  readonly dir: string
  #signing: SigningMaterial
  #bundle: TrustBundle
  readonly #now: () => number

  private constructor(options: CertificateAuthorityOptions, signing: SigningMaterial, bundle: TrustBundle) {
    this.trustDomain = options.trustDomain
    this.mode = options.plugin ? 'plug-in' : 'self-signed'
    this.leafLifetimeMs = options.leafLifetimeMs ?? DEFAULT_LEAF_LIFETIME_MS
    this.rootOverlapMs = options.rootOverlapMs ?? this.leafLifetimeMs
    this.dir = options.dir
    this.#signing = signing
    this.#bundle = bundle
    this.#now = options.now ?? Date.now
  }

  /**
   * Loads (or, the first time, makes) the CA. Throws a CaError saying what to fix: a key file
   * others may read, a key that does not match its certificate, a chain that does not lead to a
   * root, a bad trust domain.
   */
  static async open(options: CertificateAuthorityOptions): Promise<CertificateAuthority> {
    const problem = trustDomainProblem(options.trustDomain)
    if (problem) throw new CaError(problem)
    const now = (options.now ?? Date.now)()
    mkdirSync(options.dir, { recursive: true, mode: 0o700 })
    const signing = options.plugin ? await loadPlugin(options.plugin) : await loadOrCreateRoot(options.dir, options.trustDomain, now)
    const overlap = options.rootOverlapMs ?? options.leafLifetimeMs ?? DEFAULT_LEAF_LIFETIME_MS
    const bundle = restoreBundle(options.dir, options.trustDomain, signing.root, overlap, now)
    const ca = new CertificateAuthority(options, signing, bundle)
    ca.#saveBundle()
    return ca
  }

  /** The current trust bundle (a copy). */
  get bundle(): TrustBundle {
    return structuredClone(this.#bundle)
  }

  /** The certificate that signs leaves, and the root the chain ends at. */
  get signingCertificate(): x509.X509Certificate {
    return this.#signing.certificate
  }

  get rootCertificate(): x509.X509Certificate {
    return this.#signing.root
  }

  /**
   * Raises the bundle's version above `version` (the one already published, say in the bucket,
   * by an earlier run whose state dir is gone), so nodes take the next one as newer.
   */
  bumpVersionAbove(version: number): void {
    if (this.#bundle.version > version) return
    this.#bundle.version = version + 1
    this.#bundle.updatedAt = new Date(this.#now()).toISOString()
    this.#saveBundle()
  }

  /**
   * Checks a CSR and signs it when `authorize` accepts its identity. Refusals say why: the CSR
   * does not parse or its signature is bad, its key is not P-256, its SAN is not exactly one
   * workload SPIFFE ID of this trust domain, or the identity is not the asker's to have.
   */
  async sign(csrPem: string, authorize: Authorize): Promise<CsrReply> {
    // The material at the start is used throughout: a rotation meanwhile does not mix roots.
    const signing = this.#signing
    let csr: x509.Pkcs10CertificateRequest
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem)
    } catch (error) {
      return { ok: false, error: `CSR: does not parse as PKCS#10 PEM (${(error as Error).message})` }
    }
    const algorithm = csr.publicKey.algorithm as Partial<webcrypto.EcKeyAlgorithm>
    if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') {
      return { ok: false, error: `CSR: key must be EC P-256, got ${algorithm.name ?? 'unknown'}${algorithm.namedCurve ? ` ${algorithm.namedCurve}` : ''}` }
    }
    let verified = false
    try {
      verified = await csr.verify()
    } catch {
      verified = false
    }
    if (!verified) return { ok: false, error: 'CSR: signature does not verify with its own public key' }
    const san = svidIdentity(csr)
    if (!san.ok) return { ok: false, error: `CSR: ${san.reason}` }
    const id = parseSpiffeId(san.identity)!
    if (id.trustDomain !== this.trustDomain) {
      return { ok: false, error: `CSR: ${san.identity} is in trust domain ${id.trustDomain}; this CA signs for ${this.trustDomain} only` }
    }
    const refusal = authorize(san.identity)
    if (refusal !== undefined) return { ok: false, error: refusal }
    const leaf = await this.#issue(signing, san.identity, csr.publicKey)
    return {
      ok: true,
      identity: san.identity,
      chain: [leaf, ...signing.intermediates].map(certificatePem),
      root: fingerprint(signing.root),
      serial: leaf.serialNumber,
      notAfter: leaf.notAfter.toISOString(),
      bundle: this.bundle,
    }
  }

  async #issue(signing: SigningMaterial, identity: string, publicKey: x509.PublicKey): Promise<x509.X509Certificate> {
    const { certificate: issuer, keys } = signing
    const notBefore = new Date(Math.floor(this.#now() / 1000) * 1000)
    // A leaf never outlives its issuer.
    const notAfter = new Date(Math.min(notBefore.getTime() + this.leafLifetimeMs, issuer.notAfter.getTime()))
    const issuerKeyId = issuer.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId
    return await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      // An X.509-SVID identifies by its URI SAN; the subject stays empty (so the SAN is critical).
      subject: '',
      issuer: issuer.subjectName,
      notBefore,
      notAfter,
      publicKey,
      signingKey: keys.privateKey,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }], true),
        await x509.SubjectKeyIdentifierExtension.create(publicKey),
        issuerKeyId !== undefined ? new x509.AuthorityKeyIdentifierExtension(issuerKeyId) : await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
      ],
    })
  }

  /**
   * A new self-generated root: the bundle gets it next to the old one (which retires after the
   * overlap), and leaves are signed by the new one from now on. A plug-in CA is rotated by its
   * operator (new files, restart), so this refuses.
   */
  async rotate(): Promise<RotateReply> {
    if (this.mode === 'plug-in') {
      return { ok: false, error: `the CA is operator-supplied (--ca-cert): rotate it by restarting weft control with the new --ca-cert/--ca-key; the old root stays trusted for ${formatDuration(this.rootOverlapMs)}` }
    }
    const now = this.#now()
    const previous = this.#signing.root
    const { certificate, keys } = await newRoot(this.trustDomain, now)
    writeAtomically(join(this.dir, KEY_FILE), await privateKeyPem(keys.privateKey), 0o600)
    writeAtomically(join(this.dir, CERT_FILE), certificatePem(certificate), 0o644)
    this.#signing = { certificate, keys, intermediates: [], root: certificate }
    const retiresAt = new Date(now + this.rootOverlapMs)
    const kept = this.#bundle.roots
      .filter((root) => root.fingerprint !== fingerprint(previous))
      .filter((root) => root.retiresAt !== undefined && Date.parse(root.retiresAt) > now)
    this.#bundle = {
      trustDomain: this.trustDomain,
      version: this.#bundle.version + 1,
      signing: fingerprint(certificate),
      roots: [trustRootOf(certificate), trustRootOf(previous, retiresAt), ...kept],
      updatedAt: new Date(now).toISOString(),
    }
    this.#saveBundle()
    return {
      ok: true,
      signing: this.#bundle.signing,
      retiring: this.#bundle.roots.filter((root) => root.retiresAt !== undefined).map((root) => ({ fingerprint: root.fingerprint, retiresAt: root.retiresAt! })),
      version: this.#bundle.version,
    }
  }

  /** When the next retiring root leaves the bundle, if any is retiring. */
  nextRetirement(): number | undefined {
    const times = this.#bundle.roots.flatMap((root) => (root.retiresAt === undefined ? [] : [Date.parse(root.retiresAt)]))
    return times.length === 0 ? undefined : Math.min(...times)
  }

  /** Drops roots whose overlap has ended; true when the bundle changed (publish it). */
  retireDue(): boolean {
    const now = this.#now()
    const roots = this.#bundle.roots.filter((root) => root.retiresAt === undefined || Date.parse(root.retiresAt) > now)
    if (roots.length === this.#bundle.roots.length) return false
    this.#bundle = { ...this.#bundle, version: this.#bundle.version + 1, roots, updatedAt: new Date(now).toISOString() }
    this.#saveBundle()
    return true
  }

  #saveBundle(): void {
    writeAtomically(join(this.dir, BUNDLE_FILE), `${JSON.stringify(this.#bundle, null, 2)}\n`, 0o644)
  }
}

async function loadOrCreateRoot(dir: string, trustDomain: string, now: number): Promise<SigningMaterial> {
  const keyFile = join(dir, KEY_FILE)
  const certFile = join(dir, CERT_FILE)
  if (!existsSync(keyFile)) {
    if (existsSync(certFile)) throw new CaError(`CA dir ${dir}: ${CERT_FILE} is there but ${KEY_FILE} is not; restore the key, or remove ${certFile} to start a new root`)
    const { certificate, keys } = await newRoot(trustDomain, now)
    writeAtomically(keyFile, await privateKeyPem(keys.privateKey), 0o600)
    writeAtomically(certFile, certificatePem(certificate), 0o644)
    return { certificate, keys, intermediates: [], root: certificate }
  }
  checkKeyFile(keyFile)
  const keys = await importP256PrivateKey(readText(keyFile, 'CA key'), `CA key ${keyFile}`).catch((error: Error) => {
    throw new CaError(error.message)
  })
  const [certificate] = wrap(() => parseCertificatesPem(readText(certFile, 'CA certificate'), `CA certificate ${certFile}`))
  await checkKeyMatches(certificate!, keys, keyFile, certFile)
  const root = certificate!
  const rootTrustDomain = rootSpiffeTrustDomain(root)
  if (rootTrustDomain !== undefined && rootTrustDomain !== trustDomain) {
    throw new CaError(`CA dir ${dir}: the root was made for trust domain ${rootTrustDomain}, not ${trustDomain}; use another --ca-dir (or the old --trust-domain)`)
  }
  return { certificate: root, keys, intermediates: [], root }
}

function rootSpiffeTrustDomain(root: x509.X509Certificate): string | undefined {
  for (const extension of root.extensions) {
    if (!(extension instanceof x509.SubjectAlternativeNameExtension)) continue
    for (const name of extension.names.items) {
      if (name.type === 'url' && name.value.startsWith('spiffe://')) return name.value.slice('spiffe://'.length).split('/')[0]
    }
  }
  return undefined
}

function wrap<T>(read: () => T): T {
  try {
    return read()
  } catch (error) {
    throw error instanceof CaError ? error : new CaError((error as Error).message)
  }
}

async function checkKeyMatches(certificate: x509.X509Certificate, keys: KeyPair, keyFile: string, certFile: string): Promise<void> {
  const spki = await globalThis.crypto.subtle.exportKey('spki', keys.publicKey)
  if (!samePublicKey(certificate, spki)) throw new CaError(`CA key ${keyFile} does not belong to the certificate ${certFile} (their public keys differ)`)
}

async function loadPlugin(files: PluginCaFiles): Promise<SigningMaterial> {
  checkKeyFile(files.key)
  const keys = await importP256PrivateKey(readText(files.key, 'CA key'), `CA key ${files.key}`).catch((error: Error) => {
    throw new CaError(error.message)
  })
  const [certificate] = wrap(() => parseCertificatesPem(readText(files.cert, 'CA certificate'), `CA certificate ${files.cert}`))
  await checkKeyMatches(certificate!, keys, files.key, files.cert)
  if (!isCa(certificate!)) throw new CaError(`CA certificate ${files.cert} is not a CA certificate (basicConstraints CA:TRUE is missing)`)
  const chain = files.chain === undefined ? [] : wrap(() => parseCertificatesPem(readText(files.chain!, 'CA chain'), `CA chain ${files.chain}`))
  const path = [certificate!, ...chain.filter((c) => fingerprint(c) !== fingerprint(certificate!))]
  for (let i = 0; i + 1 < path.length; i++) {
    if (!issuedBy(path[i]!, path[i + 1]!)) {
      throw new CaError(`CA chain: ${path[i]!.subject} is not signed by the next certificate, ${path[i + 1]!.subject}; list the certificates from the CA certificate's issuer up to the root, in order`)
    }
  }
  const root = path.at(-1)!
  if (!isSelfSigned(root)) {
    throw new CaError(files.chain === undefined
      ? `CA certificate ${files.cert} is an intermediate (${root.subject}, issued by ${root.issuer}): pass --ca-chain with the certificates up to the root`
      : `CA chain ${files.chain} does not end with a root (a self-signed certificate); its last is ${root.subject}, issued by ${root.issuer}`)
  }
  for (const certificate of path) {
    if (new NodeCertificate(Buffer.from(certificate.rawData)).validToDate.getTime() < Date.now()) throw new CaError(`CA certificate ${certificate.subject} expired on ${certificate.notAfter.toISOString()}`)
  }
  return { certificate: certificate!, keys, intermediates: path.slice(0, -1), root }
}

/**
 * The bundle to start with: the current root, plus roots of the saved bundle that are still
 * within their overlap. A saved signing root that is no longer ours (a plug-in CA replaced by its
 * operator) starts retiring now.
 */
function restoreBundle(dir: string, trustDomain: string, root: x509.X509Certificate, overlapMs: number, now: number): TrustBundle {
  const current = trustRootOf(root)
  let saved: TrustBundle | undefined
  const file = join(dir, BUNDLE_FILE)
  if (existsSync(file)) {
    try {
      saved = parseTrustBundle(readFileSync(file, 'utf8'))
    } catch (error) {
      throw new CaError(`CA dir ${dir}: ${BUNDLE_FILE}: ${(error as Error).message}; remove it to start the bundle afresh`)
    }
    if (saved.trustDomain !== trustDomain) saved = undefined
  }
  const roots: TrustRoot[] = [current]
  for (const root of saved?.roots ?? []) {
    if (root.fingerprint === current.fingerprint) continue
    const retiresAt = root.retiresAt ?? new Date(now + overlapMs).toISOString()
    if (Date.parse(retiresAt) > now) roots.push({ ...root, retiresAt })
  }
  const bundle: TrustBundle = { trustDomain, version: saved?.version ?? 0, signing: current.fingerprint, roots, updatedAt: new Date(now).toISOString() }
  const changed = saved === undefined || JSON.stringify(saved.roots) !== JSON.stringify(roots) || saved.signing !== bundle.signing
  if (changed) bundle.version++
  else bundle.updatedAt = saved!.updatedAt
  return bundle
}

