// Picks the endpoint for a connection to a service VIP. Round robin over the ready endpoints of
// the snapshot in force: an endpoint removed from the configuration gets no new connection from
// the moment that snapshot is applied. (The L7 work brings P2C, EWMA and consistent hashing.)
import type { Endpoint, ServiceTarget } from '../config/resources/index.ts'

export class RoundRobinBalancer {
  // Keyed by the snapshot's own target object: a new snapshot starts a fresh rotation.
  private readonly cursor = new WeakMap<ServiceTarget, number>()

  pick(target: ServiceTarget): Endpoint | undefined {
    const endpoints = target.endpoints
    if (endpoints.length === 0) return undefined
    const i = this.cursor.get(target) ?? 0
    this.cursor.set(target, (i + 1) % endpoints.length)
    return endpoints[i % endpoints.length]
  }
}
