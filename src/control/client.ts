// Asking the control plane to register or deregister workloads (what the lab does at `up`).
import { RequestError, TimeoutError } from '@nats-io/transport-node'

import { BusError, type Bus } from '../bus/index.ts'
import type { RotateReply } from '../identity/index.ts'
import { CA_ROTATE_SUBJECT, DEREGISTER_SUBJECT, REGISTER_SUBJECT, type RegistryReply } from './subjects.ts'

export type ControlRequestOptions = {
  /** How long one request waits for its reply (default 5000 ms). */
  timeoutMs?: number
  /**
   * While nobody serves the subject (weft control still starting), retry this long before
   * failing (default 0: fail at once).
   */
  waitForControlMs?: number
}

async function request<Reply = RegistryReply>(bus: Bus, subject: string, resource: unknown, options: ControlRequestOptions): Promise<Reply> {
  const deadline = Date.now() + (options.waitForControlMs ?? 0)
  const body = typeof resource === 'string' ? resource : JSON.stringify(resource)
  for (;;) {
    try {
      const reply = await bus.connection.request(subject, body, { timeout: options.timeoutMs ?? 5000 })
      return reply.json<Reply>()
    } catch (error) {
      const noResponders = error instanceof RequestError && error.isNoResponders()
      if (noResponders && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        continue
      }
      if (noResponders) throw new BusError('other', `nats: nobody serves ${subject} on ${bus.connection.getServer()}: is weft control running?`, { cause: error })
      if (error instanceof TimeoutError) {
        throw new BusError('other', `nats: no reply on ${subject} within ${options.timeoutMs ?? 5000} ms (is weft control allowed to answer? see its log)`, { cause: error })
      }
      throw new BusError('other', `nats: request on ${subject}: ${(error as Error).message}`, { cause: error })
    }
  }
}

/** Registers a Pod or Node through weft control; the reply says the key and revision, or why not. */
export function requestRegister(bus: Bus, resource: unknown, options: ControlRequestOptions = {}): Promise<RegistryReply> {
  return request(bus, REGISTER_SUBJECT, resource, options)
}

/** Deregisters a Pod or Node (the resource or {kind, namespace?, name}) through weft control. */
export function requestDeregister(bus: Bus, target: unknown, options: ControlRequestOptions = {}): Promise<RegistryReply> {
  return request(bus, DEREGISTER_SUBJECT, target, options)
}

/**
 * Asks the CA for a new root: the bundle gets old and new, new certificates come from the new
 * root, the old root leaves after the overlap. A plug-in CA refuses (its operator rotates it).
 */
export function requestRotateRoot(bus: Bus, options: ControlRequestOptions = {}): Promise<RotateReply> {
  return request<RotateReply>(bus, CA_ROTATE_SUBJECT, {}, { timeoutMs: 15_000, ...options })
}
