// The destination side's one decision about a connection to a pod of this node: may this source
// reach this pod and port (the AuthorizationPolicies' L4 view), and must each HTTP request be
// decided too (some applicable rule names methods, paths or hosts)? The same for a tunnel stream
// from another node (inbound.ts, source identity from its certificate) and for a connection from
// a pod on this node (outbound.ts, source identity from the snapshot): same-node traffic is
// authorized exactly like cross-node traffic.
import type { MeshSnapshot, Workload } from '../config/resources/index.ts'
import { authorize, needsHttpAttributes, type AuthorizationDecision, type AuthorizationPeer, type HttpAttributes } from '../policy/authorization.ts'
import type { Logger } from '../telemetry/log.ts'
import type { NodeMetrics } from '../telemetry/metrics.ts'

export interface AdmissionRequest {
  readonly destination: Workload
  /** The destination pod's port. */
  readonly port: number
  readonly source: AuthorizationPeer
  /** `namespace/name` of the source pod (or `unknown`), for metrics and logs. */
  readonly sourceLabel: string
}

/** Decides one HTTP request on an admitted connection. */
export type RequestAuthorizer = (http: HttpAttributes) => AuthorizationDecision

export type Admission =
  | { readonly allowed: true; /** Set when each HTTP request must be authorized. */ readonly perRequest: RequestAuthorizer | undefined }
  | { readonly allowed: false; readonly decision: AuthorizationDecision }

export function admitConnection(snapshot: MeshSnapshot, request: AdmissionRequest, metrics: NodeMetrics, log: Logger): Admission {
  const { destination, port, source } = request
  const destinationLabel = `${destination.namespace}/${destination.name}`
  // With rules on methods, paths or hosts the connection itself decides nothing: without the
  // request an ALLOW rule cannot match and a DENY rule would match more than it says. Each
  // request is decided instead (a connection that never sends one is never let through).
  if (needsHttpAttributes(snapshot, destination, port)) {
    return {
      allowed: true,
      perRequest: (http) => {
        const verdict = authorize(snapshot, { destination, port, source, http })
        if (!verdict.allowed) {
          metrics.authorizationDenied.inc({ source_workload: request.sourceLabel, destination_workload: destinationLabel, policy: verdict.policy ?? 'none', layer: 'request' })
          log.info('authorization denied a request', { source_workload: request.sourceLabel, source_principal: source.principal, destination_workload: destinationLabel, method: http.method, path: http.path, reason: verdict.reason })
        }
        return verdict
      },
    }
  }
  const decision = authorize(snapshot, { destination, port, source })
  if (!decision.allowed) {
    metrics.authorizationDenied.inc({ source_workload: request.sourceLabel, destination_workload: destinationLabel, policy: decision.policy ?? 'none', layer: 'connection' })
    log.info('authorization denied a connection', { source_workload: request.sourceLabel, source_principal: source.principal, source_ip: source.ip, destination_workload: destinationLabel, port, reason: decision.reason })
    return { allowed: false, decision }
  }
  return { allowed: true, perRequest: undefined }
}

/**
 * For a connection admitted at L4: a check that it is still allowed under a later snapshot — the
 * same decision, made again (a pod gone from the snapshot keeps its connection until it closes;
 * policies with HTTP rules now applying cannot be decided for a connection and so deny it, and the
 * client's next connection is decided request by request). A revocation is counted as a denial at
 * layer `revoked` and logged.
 */
export function stillAllowed(request: AdmissionRequest, metrics: NodeMetrics, log: Logger): (snapshot: MeshSnapshot) => boolean {
  return (snapshot) => {
    const destination = snapshot.workloadsByIp.get(request.destination.ip)
    if (destination === undefined || destination.key !== request.destination.key) return true
    const decision = authorize(snapshot, { destination, port: request.port, source: request.source })
    if (decision.allowed) return true
    const destinationLabel = `${destination.namespace}/${destination.name}`
    metrics.authorizationDenied.inc({ source_workload: request.sourceLabel, destination_workload: destinationLabel, policy: decision.policy ?? 'none', layer: 'revoked' })
    log.info('authorization revoked an open connection', { source_workload: request.sourceLabel, source_principal: request.source.principal, source_ip: request.source.ip, destination_workload: destinationLabel, port: request.port, reason: decision.reason })
    return false
  }
}
