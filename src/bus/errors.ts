// One clear line for each way talking to NATS goes wrong: what happened, to what, what to do.
import { AuthorizationError, PermissionViolationError } from '@nats-io/transport-node'

export type BusErrorKind = 'unreachable' | 'tls' | 'auth' | 'permission' | 'missing-bucket' | 'not-configured' | 'invalid' | 'other'

export class BusError extends Error {
  override name = 'BusError'
  readonly kind: BusErrorKind
  constructor(kind: BusErrorKind, message: string, options?: ErrorOptions) {
    super(message, options)
    this.kind = kind
  }
}

function messageChain(error: unknown): string {
  const parts: string[] = []
  let current: unknown = error
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    parts.push(`${current.message} ${(current as { code?: unknown }).code ?? ''}`)
    current = current.cause
  }
  if (parts.length === 0) parts.push(String(error))
  return parts.join(' | ')
}

/** The failure to connect, as one line naming the servers (and the lab, the usual source). */
export function connectError(servers: string, user: string | undefined, error: unknown): BusError {
  const text = messageChain(error)
  if (error instanceof AuthorizationError || /authorization violation|authentication/i.test(text)) {
    return new BusError('auth', `authorization violation for user ${user ?? '(none)'}: check --creds / WEFT_NATS_* or the current context`, { cause: error })
  }
  const tlsFailure = /(ERR_TLS_\w+|UNABLE_TO_\w+|CERT_\w+|SELF_SIGNED_\w+|DEPTH_ZERO_SELF_SIGNED_CERT|ERR_SSL_\w+)/.exec(text)
  if (tlsFailure) {
    const reason = text.split(' | ')[0]!.replace(/; if the root CA.*$/, '').trim()
    return new BusError('tls', `TLS to NATS at ${servers} failed: ${reason}; check the CA and client certificate (tls in --creds or the context)`, { cause: error })
  }
  const reason = /ECONNREFUSED|connection refused/i.test(text)
    ? 'connection refused'
    : /timeout|timed out|ETIMEDOUT/i.test(text)
      ? 'timed out'
      : /EHOSTUNREACH|ENETUNREACH|unreachable/i.test(text)
        ? 'no route to host'
        : /ENOTFOUND|EAI_AGAIN/i.test(text)
          ? 'unknown host'
          : text.split(' | ')[0]!.trim()
  return new BusError('unreachable', `cannot reach NATS at ${servers}: ${reason}; is the lab up? (weft lab ls)`, { cause: error })
}

/** The message for a denied publish (what a node sees writing configuration). */
export function permissionError(user: string | undefined, subject: string, cause?: unknown): BusError {
  const what = subject.startsWith('$KV.weft-config.')
    ? 'may not write configuration'
    : subject.startsWith('$KV.weft-status.') || subject.startsWith('weft.status.')
      ? 'may not write this status'
      : subject.startsWith('$KV.weft-trust.')
        ? 'may not write the trust bundle (only the control plane\'s CA does)'
        : `may not publish to ${subject}`
  return new BusError('permission', `nats: user ${user ?? '(none)'} ${what} (permission denied on ${subject})`, { cause })
}

/** The subject a server-side permission violation names, if error is one. */
export function violatedPublishSubject(error: unknown): string | undefined {
  let current: unknown = error
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    if (current instanceof PermissionViolationError) return current.operation === 'publish' ? current.subject : undefined
    // Errors from the JetStream layer may carry the server's text rather than the class.
    const match = /Permissions Violation for Publish to "([^"]+)"/i.exec(current.message)
    if (match) return match[1]
    current = current.cause
  }
  return undefined
}

export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
