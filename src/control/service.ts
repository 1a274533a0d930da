// The control plane's NATS service: answers register/deregister requests (in a queue group, so
// replicas share them) by writing the workload registry into the config bucket.
import { PermissionViolationError, type Msg, type Subscription } from '@nats-io/transport-node'

import { BusError, type Bus } from '../bus/index.ts'
import type { ValidationContext } from '../config/resources/index.ts'
import type { Logger } from '../telemetry/log.ts'
import { deregisterWorkload, registerWorkload } from './registry.ts'
import { CONTROL_QUEUE, CONTROL_SUBJECTS, DEREGISTER_SUBJECT, REGISTER_SUBJECT, type RegistryReply } from './subjects.ts'

export type ControlService = {
  /** Requests answered so far. */
  readonly answered: number
  /** Unsubscribes (in-flight requests finish); the bus stays open. */
  stop(): Promise<void>
}

export type ServeControlOptions = {
  log: Logger
  validation?: ValidationContext
}

/**
 * Subscribes to the control subjects and answers them. Fails with a one-line BusError when the
 * server refuses the subscription (the user lacks `subscribe weft.control.>`).
 */
export async function serveControl(bus: Bus, options: ServeControlOptions): Promise<ControlService> {
  const { log } = options
  const nc = bus.connection
  let answered = 0
  let refused: PermissionViolationError | undefined
  const pending = new Set<Promise<void>>()

  const handlers: Record<string, (value: unknown) => Promise<RegistryReply>> = {
    [REGISTER_SUBJECT]: (value) => registerWorkload(bus, value, options.validation),
    [DEREGISTER_SUBJECT]: (value) => deregisterWorkload(bus, value),
  }

  const answer = async (message: Msg, handle: (value: unknown) => Promise<RegistryReply>): Promise<void> => {
    let reply: RegistryReply
    let value: unknown
    try {
      value = JSON.parse(message.string())
    } catch (error) {
      reply = { ok: false, error: `request body: not JSON (${(error as Error).message})` }
    }
    try {
      reply ??= await handle(value)
    } catch (error) {
      reply = { ok: false, error: error instanceof BusError ? error.message : `nats: ${(error as Error).message}` }
    }
    const action = message.subject === REGISTER_SUBJECT ? 'register' : 'deregister'
    if (reply.ok) log.info(`${action}ed ${reply.key}`, { action, key: reply.key, revision: reply.revision })
    else log.warn(`${action} refused`, { action, error: reply.error })
    answered++
    if (message.reply) message.respond(JSON.stringify(reply))
    else log.warn(`${action} request without a reply subject (use a NATS request, not a publish)`)
  }

  const subscriptions: Subscription[] = Object.entries(handlers).map(([subject, handle]) =>
    nc.subscribe(subject, {
      queue: CONTROL_QUEUE,
      callback: (error, message) => {
        if (error) {
          if (error instanceof PermissionViolationError) refused = error
          else log.error('subscription failed', { subject, error: error.message })
          return
        }
        const done = answer(message, handle).finally(() => pending.delete(done))
        pending.add(done)
      },
    }),
  )
  // The server refuses a subscription with -ERR before it answers the flush's PING.
  await nc.flush()
  if (refused) {
    for (const subscription of subscriptions) subscription.unsubscribe()
    throw new BusError(
      'permission',
      `nats: user ${bus.user ?? '(none)'} may not serve ${CONTROL_SUBJECTS} (permission denied on subscription to ${refused.subject}); the control plane's user needs subscribe ${CONTROL_SUBJECTS} and allow_responses`,
    )
  }
  log.info('serving the workload registry', { subjects: [REGISTER_SUBJECT, DEREGISTER_SUBJECT], queue: CONTROL_QUEUE })
  return {
    get answered() {
      return answered
    },
    stop: async () => {
      for (const subscription of subscriptions) subscription.unsubscribe()
      await Promise.allSettled([...pending])
    },
  }
}
