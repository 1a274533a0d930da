// Who may do what on the bus, as nats-server subject permissions. Worked out against
// nats-server 2.9 with the @nats-io v3 clients (test/bus-nats.test.ts is the proof); the
// reasoning for each subject is next to it. See README.md "Credentials model".
import { CONFIG_BUCKET, CONFIG_CHANGES, STATUS_BUCKET, TRUST_BUCKET, csrSubject, inboxPrefixFor, kvSubject, statusSubject, streamOf } from './subjects.ts'

export type SubjectPermissions = {
  publish: { allow: string[] }
  subscribe: { allow: string[] }
  /** Lets the user answer requests (publish to the requester's reply subject, once). */
  allowResponses?: boolean
}

/** Read-only access to a KV bucket: open it, get keys, watch it, list keys. */
function kvReadSubjects(bucket: string): string[] {
  const stream = streamOf(bucket)
  return [
    // kvm.open() asks for stream info (and the account info on first use).
    `$JS.API.STREAM.INFO.${stream}`,
    // watch/keys/history create ephemeral push consumers: 2.9 uses the old form
    // `CONSUMER.CREATE.<stream>`, newer servers `CONSUMER.CREATE.<stream>.<name>.<filter>`.
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    // The client asks for its consumer's info (initial pending count) and deletes the old one
    // when an ordered consumer is reset.
    `$JS.API.CONSUMER.INFO.${stream}.>`,
    `$JS.API.CONSUMER.DELETE.${stream}.>`,
    // kv.get(): direct get (the bucket is created with allow_direct) or the message API.
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    // Flow-control replies of push consumers go back to the server on these.
    `$JS.FC.${stream}.>`,
  ]
}

/** The operator: everything, including creating and deleting buckets. */
export function operatorPermissions(): undefined {
  return undefined
}

/**
 * The control plane writes configuration (it owns the workload registry) and reads statuses;
 * its CA writes the trust bundle and answers CSRs (weft.control.csr.<node>, under
 * weft.control.>); it may not delete buckets or touch other streams.
 */
export function controlPermissions(user: string): SubjectPermissions {
  return {
    publish: {
      allow: [
        '$JS.API.INFO',
        ...kvReadSubjects(CONFIG_BUCKET),
        ...kvReadSubjects(STATUS_BUCKET),
        ...kvReadSubjects(TRUST_BUCKET),
        // Creating the buckets on first use (a create of an existing identical stream is a no-op).
        `$JS.API.STREAM.CREATE.${streamOf(CONFIG_BUCKET)}`,
        `$JS.API.STREAM.CREATE.${streamOf(STATUS_BUCKET)}`,
        `$JS.API.STREAM.CREATE.${streamOf(TRUST_BUCKET)}`,
        // Adding the RePublish to a config bucket made before weft republished (bus.ts).
        `$JS.API.STREAM.UPDATE.${streamOf(CONFIG_BUCKET)}`,
        `${kvSubject(CONFIG_BUCKET, '>')}`,
        // The CA publishes the trust bundle.
        `${kvSubject(TRUST_BUCKET, '>')}`,
      ],
    },
    // weft.control.>: the control plane serves the workload registry (register/deregister).
    subscribe: { allow: [`${inboxPrefixFor(user)}.>`, 'weft.status.>', 'weft.control.>'] },
    allowResponses: true,
  }
}

/**
 * A node reads configuration and writes only its own status: the KV put on
 * `$KV.weft-status.<node>` and the live `weft.status.<node>`. It reads the trust bundle and asks
 * the CA on its own CSR subject only: the CA signs for the asking node's pods, and knows the
 * node from the subject.
 */
export function nodePermissions(node: string, user = `node-${node}`): SubjectPermissions {
  return {
    publish: {
      allow: [
        '$JS.API.INFO',
        ...kvReadSubjects(CONFIG_BUCKET),
        // Opening the status bucket to put into it.
        `$JS.API.STREAM.INFO.${streamOf(STATUS_BUCKET)}`,
        kvSubject(STATUS_BUCKET, node),
        statusSubject(node),
        ...kvReadSubjects(TRUST_BUCKET),
        csrSubject(node),
      ],
    },
    // weft.config.>: every config change, republished by the server (nodes follow it, follow.ts).
    subscribe: { allow: [`${inboxPrefixFor(user)}.>`, CONFIG_CHANGES] },
  }
}
