// The names on the bus, declared once: buckets, their KV subjects and stream names, the status
// subject, and the inbox prefix each identity uses (so a node's replies stay its own).

/** Desired state: key `<kind>.<namespace>.<name>`, value the resource's JSON. */
export const CONFIG_BUCKET = 'weft-config'
/** Latest status per node: key the node name, value that node's status JSON. */
export const STATUS_BUCKET = 'weft-status'
/** The trust bundle (the roots workloads trust): written by the control plane's CA, read by nodes. */
export const TRUST_BUCKET = 'weft-trust'
/** The one key of the trust bucket. */
export const TRUST_BUNDLE_KEY = 'bundle'

/**
 * A node asks the CA to sign a CSR here. Only that node may publish on it (permissions.ts), so
 * the subject tells the CA who asks.
 */
export function csrSubject(node: string): string {
  return `weft.control.csr.${node}`
}
/** What the CA subscribes to: every node's CSR subject. */
export const CSR_SUBJECTS = 'weft.control.csr.*'
/** An operator asks the CA for a new root (rotation with overlap). */
export const CA_ROTATE_SUBJECT = 'weft.control.ca.rotate'

/** The JetStream stream behind a KV bucket. */
export function streamOf(bucket: string): string {
  return `KV_${bucket}`
}

/** The subject a KV put/delete of `key` is published on (a bare PUB here is a put). */
export function kvSubject(bucket: string, key: string): string {
  return `$KV.${bucket}.${key}`
}

/**
 * The config stream republishes every put and delete here (RePublish on the `weft-config`
 * stream; only nats-server publishes on it): `weft.config.<key>`, headers `Nats-Sequence` (the
 * revision) and `KV-Operation` for deletes. Nodes follow it with a plain subscription.
 */
export function configChangeSubject(key: string): string {
  return `weft.config.${key}`
}
/** What a node subscribes to: every config change. */
export const CONFIG_CHANGES = configChangeSubject('>')

/** Every status is also published here, for whoever wants it live rather than from the bucket. */
export function statusSubject(node: string): string {
  return `weft.status.${node}`
}

/**
 * Each identity gets its own reply inbox prefix, and may subscribe only there: a node cannot
 * read replies meant for another client. Clients must connect with this `inboxPrefix`
 * (connectBus does).
 */
export function inboxPrefixFor(user: string): string {
  return `_INBOX_${user}`
}

/** Node names become subject tokens and user names: keep them to this. */
export const NODE_NAME = /^[A-Za-z0-9_-]+$/
