// Workload identities: SPIFFE IDs, the CA weft control runs, the node's certificates. See README.md.
export { CaError, CertificateAuthority, DEFAULT_LEAF_LIFETIME_MS, ROOT_LIFETIME_MS, type Authorize, type CertificateAuthorityOptions, type PluginCaFiles } from './ca.ts'
export { formatDuration, parseDuration } from './duration.ts'
export {
  NodeIdentities,
  type IdentityChange,
  type IdentityReport,
  type IdentityState,
  type NodeIdentitiesOptions,
  type NodeIdentitiesReport,
  type TrustBundleReport,
} from './node-identities.ts'
export { bundlePem, parseTrustBundle, type CsrReply, type CsrRequest, type RotateReply, type TrustBundle, type TrustRoot } from './protocol.ts'
export {
  checkSpiffeServer,
  formatSpiffeId,
  inTrustDomain,
  isTrustDomain,
  parseSpiffeId,
  parseSpiffeUri,
  peerIdentity,
  svidIdentity,
  trustDomainProblem,
  type WorkloadId,
} from './spiffe.ts'
export { createCsr, fingerprint, generateP256KeyPair, summarize, type CertificateSummary } from './x509.ts'
