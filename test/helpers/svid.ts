// X.509-SVIDs for loopback tests of the mTLS tunnel, made with the real openssl: a P-256 root and
// one leaf per SPIFFE ID (one URI SAN, serverAuth+clientAuth, CA:false), as weft's CA issues them.
// Lab tests get theirs from weft control instead.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls, { type SecureContext } from 'node:tls'
import type { TunnelCredentials } from '../../src/datapath/tunnel.ts'

export interface TestSvid { readonly key: string; readonly cert: string }

export interface TestCredentials extends TunnelCredentials {
  readonly caPem: string
  /** The key and certificate of `identity` (made on first use). */
  svid(identity: string): TestSvid
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
}

/**
 * A test CA (or, given `ca`, an existing one: a lab's root, to mint what a rogue holder of its key
 * could); `secureContext(identity)` issues that identity's SVID on first use.
 */
export function testCredentials(ca?: { readonly certPem: string; readonly keyPem: string }): TestCredentials {
  const dir = mkdtempSync(join(tmpdir(), 'weft-svid-'))
  try {
    if (!ca) {
      openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key'])
      openssl(dir, ['req', '-x509', '-new', '-key', 'ca.key', '-subj', '/O=weft test CA', '-days', '2', '-out', 'ca.pem'])
    }
    const caPem = ca?.certPem ?? readFileSync(join(dir, 'ca.pem'), 'utf8')
    const caKey = ca?.keyPem ?? readFileSync(join(dir, 'ca.key'), 'utf8')
    const svids = new Map<string, TestSvid>()
    const contexts = new Map<string, SecureContext>()
    let serial = Math.floor(Math.random() * 1e9)
    const svid = (identity: string): TestSvid => {
      const existing = svids.get(identity)
      if (existing) return existing
      const work = mkdtempSync(join(tmpdir(), 'weft-svid-'))
      try {
        writeFileSync(join(work, 'ca.pem'), caPem)
        writeFileSync(join(work, 'ca.key'), caKey, { mode: 0o600 })
        openssl(work, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'leaf.key'])
        openssl(work, ['req', '-new', '-key', 'leaf.key', '-subj', '/', '-out', 'leaf.csr'])
        writeFileSync(join(work, 'leaf.ext'), `subjectAltName=URI:${identity}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:false\n`)
        openssl(work, ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(++serial), '-days', '1', '-extfile', 'leaf.ext', '-out', 'leaf.pem'])
        const made = { key: readFileSync(join(work, 'leaf.key'), 'utf8'), cert: readFileSync(join(work, 'leaf.pem'), 'utf8') }
        svids.set(identity, made)
        return made
      } finally {
        rmSync(work, { recursive: true, force: true })
      }
    }
    return {
      caPem,
      svid,
      secureContext(identity: string): SecureContext {
        let context = contexts.get(identity)
        if (!context) {
          const { key, cert } = svid(identity)
          context = tls.createSecureContext({ key, cert, ca: caPem, minVersion: 'TLSv1.3' })
          contexts.set(identity, context)
        }
        return context
      },
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
