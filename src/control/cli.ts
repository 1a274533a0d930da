// `weft control`: the control-plane process. Logs one JSON object per line on stdout (like the
// node daemon); bad input is one line on stderr starting with `weft: ` and a non-zero exit.
import { parseArgs } from 'node:util'

import { parseArgsProblem } from '../cli/options.ts'
import { BusError, connectBus, resolveBusOptions, type Bus } from '../bus/index.ts'
import { createLogger } from '../telemetry/log.ts'
import { serveControl } from './service.ts'
import { CONTROL_QUEUE, DEREGISTER_SUBJECT, REGISTER_SUBJECT } from './subjects.ts'

export const CONTROL_HELP = `Usage: weft control [--nats URL] [--creds FILE | --user U --password P] [--context NAME]

The control plane. Today it owns the workload registry: it answers NATS requests on
  ${REGISTER_SUBJECT}     a v1 Pod or weft.dev/v1alpha1 Node (JSON), validated, stored
                             in the weft-config bucket as pod.<ns>.<name> / node._.<name>
  ${DEREGISTER_SUBJECT}   the resource, or {"kind", "namespace", "name"}
with {"ok": true, "key", "revision"} or {"ok": false, "error"} (queue group ${CONTROL_QUEUE}, so
replicas share the work). The lab registers its nodes and pods through it.
Later it will also mirror the Kubernetes API (pods and nodes of a cluster) and run the CA that
issues the workloads' SPIFFE certificates.

Where NATS is: --nats/--creds (or --user/--password), then WEFT_NATS_URL/WEFT_NATS_USER/
WEFT_NATS_PASSWORD, then the current context (weft lab up records one). --creds FILE is JSON
{"servers"?, "user", "pass"}; run it as the NATS user "control".
Logs JSON lines on stdout (WEFT_LOG_LEVEL=debug|info|warn|error). SIGTERM or SIGINT stops it.`

export async function runControlCommand(argv: string[]): Promise<number> {
  let values: { nats?: string; creds?: string; user?: string; password?: string; context?: string; help?: boolean }
  try {
    values = parseArgs({
      args: argv,
      options: {
        nats: { type: 'string' },
        creds: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        context: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values
  } catch (error) {
    process.stderr.write(`weft: control: ${parseArgsProblem(error)} (see weft control --help)\n`)
    return 2
  }
  if (values.help) {
    process.stdout.write(`${CONTROL_HELP}\n`)
    return 0
  }
  const log = createLogger({ component: 'control' })
  let bus: Bus
  try {
    const options = resolveBusOptions(values)
    log.info('connecting to NATS', { servers: options.servers, user: options.user })
    bus = await connectBus({ ...options, name: 'weft-control', waitForServer: true })
  } catch (error) {
    process.stderr.write(`weft: control: ${oneLine(error)}\n`)
    return 1
  }
  try {
    const service = await serveControl(bus, { log })
    void watchConnection(bus, log)
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'))
      process.once('SIGINT', () => resolve('SIGINT'))
    })
    log.info('stopping', { signal, answered: service.answered })
    await service.stop()
    await bus.close()
    log.info('stopped')
    return 0
  } catch (error) {
    log.error('control plane failed', { error: oneLine(error) })
    process.stderr.write(`weft: control: ${oneLine(error)}\n`)
    await bus.close().catch(() => {})
    return 1
  }
}

/** NATS going away and coming back, in the log (the client reconnects and resubscribes by itself). */
async function watchConnection(bus: Bus, log: ReturnType<typeof createLogger>): Promise<void> {
  for await (const status of bus.connection.status()) {
    if (status.type === 'disconnect') log.warn('NATS disconnected; reconnecting', { server: status.server })
    else if (status.type === 'reconnect') log.info('NATS reconnected', { server: status.server })
    else if (status.type === 'error') log.warn('NATS error', { error: status.error.message })
  }
}

function oneLine(error: unknown): string {
  const message = error instanceof BusError || error instanceof Error ? error.message : String(error)
  return message.replace(/\s*\n\s*/g, ' ').trim()
}
