// `weft control`: the control-plane process. Logs one JSON object per line on stdout (like the
// node daemon); bad input is one line on stderr starting with `weft: ` and a non-zero exit.
// `weft control rotate-ca` asks a running one for a new root.
import { homedir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { parseArgsProblem } from '../cli/options.ts'
import { listenForStop } from '../cli/signals.ts'
import { BusError, connectBus, resolveBusOptions, type Bus } from '../bus/index.ts'
import { DEFAULT_VALIDATION_CONTEXT } from '../config/resources/index.ts'
import { CaError, CertificateAuthority, DEFAULT_LEAF_LIFETIME_MS, formatDuration, parseDuration, trustDomainProblem } from '../identity/index.ts'
import { createLogger } from '../telemetry/log.ts'
import { serveCa } from './ca-service.ts'
import { requestRotateRoot } from './client.ts'
import { serveControl } from './service.ts'
import type { KubernetesMirror } from '../k8s/mirror.ts'
import { checkCidr } from '../config/node-config.ts'
import { CA_ROTATE_SUBJECT, CONTROL_QUEUE, CSR_SUBJECTS, DEREGISTER_SUBJECT, REGISTER_SUBJECT } from './subjects.ts'

/** Where the self-generated root lives unless --ca-dir says otherwise. */
export function defaultCaDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'weft', 'ca')
}

export const CONTROL_HELP = `Usage: weft control [--nats URL] [--creds FILE | --user U --password P] [--context NAME]
                    [--trust-domain TD] [--ca-dir DIR] [--ca-cert FILE --ca-key FILE [--ca-chain FILE]]
                    [--cert-lifetime DURATION] [--root-overlap DURATION] [--kubernetes] [--vip-cidr CIDR]
       weft control rotate-ca [--nats URL] [--creds FILE] [--context NAME]

The control plane. It owns the workload registry: it answers NATS requests on
  ${REGISTER_SUBJECT}     a v1 Pod or weft.dev/v1alpha1 Node (JSON), validated, stored
                             in the weft-config bucket as pod.<ns>.<name> / node._.<name>
  ${DEREGISTER_SUBJECT}   the resource, or {"kind", "namespace", "name"}
with {"ok": true, "key", "revision"} or {"ok": false, "error"} (queue group ${CONTROL_QUEUE}, so
replicas share the work). The lab registers its nodes and pods through it.

It runs the CA that issues the workloads' SPIFFE certificates (X.509-SVIDs,
spiffe://<trust domain>/ns/<ns>/sa/<sa>):
  ${CSR_SUBJECTS}     a node's CSR {"csr": PEM}; only node N may publish on
                             weft.control.csr.N, and the CA signs only identities of pods
                             scheduled on N; the reply carries the chain and the trust bundle
  ${CA_ROTATE_SUBJECT}     a new root (self-generated CA): the bundle holds old and new for
                             the overlap, new certificates come from the new root
The trust bundle (the roots to trust) is published in the weft-trust bucket; nodes watch it.

Kubernetes (docs/kubernetes.md):
  --kubernetes             also mirror the Kubernetes API into the weft-config bucket: Nodes,
                           Pods of namespaces labelled weft.dev/mesh=enabled (annotation
                           weft.dev/enrolled: "false" opts a pod out), Services with a cluster
                           IP, EndpointSlices. The API server: KUBECONFIG, else ~/.kube/config,
                           else the pod's ServiceAccount. Needs list and watch on them.
  --vip-cidr CIDR          the cluster's Service range (kube-apiserver
                           --service-cluster-ip-range); Services outside it are not mirrored
                           (default 198.19.0.0/16, the lab's)

CA options:
  --trust-domain TD        the SPIFFE trust domain (default cluster.local)
  --ca-dir DIR             the self-generated root (root-key.pem 0600, root-cert.pem) and the
                           bundle state; made on first start, reused after (default
                           \$XDG_STATE_HOME/weft/ca, else ~/.local/state/weft/ca). A key file others
                           may read stops the start.
  --ca-cert FILE, --ca-key FILE, --ca-chain FILE
                           an operator-supplied CA instead (a root, or an intermediate with the
                           chain up to its root), like Istio's cacerts; the key must be EC P-256
                           and mode 0600
  --cert-lifetime D        workload certificate lifetime (default 24h; e.g. 1h, 90m, 10s)
  --root-overlap D         how long a replaced root stays trusted (default: the cert lifetime)

Where NATS is: --nats/--creds (or --user/--password), then WEFT_NATS_URL/WEFT_NATS_USER/
WEFT_NATS_PASSWORD, then the current context (weft lab up records one). --creds FILE is JSON
{"servers"?, "user", "pass"}; run it as the NATS user "control" (rotate-ca as "operator").
Logs JSON lines on stdout (WEFT_LOG_LEVEL=debug|info|warn|error). SIGTERM, SIGINT or SIGHUP stops it.`

type ControlValues = {
  nats?: string; creds?: string; user?: string; password?: string; context?: string; help?: boolean
  'trust-domain'?: string; 'ca-dir'?: string; 'ca-cert'?: string; 'ca-key'?: string; 'ca-chain'?: string
  'cert-lifetime'?: string; 'root-overlap'?: string
  kubernetes?: boolean; 'vip-cidr'?: string
}

const CONNECTION = {
  nats: { type: 'string' },
  creds: { type: 'string' },
  user: { type: 'string' },
  password: { type: 'string' },
  context: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

/** The CA as the flags describe it, or a one-line problem. */
function caOptions(values: ControlValues): { ok: true; trustDomain: string; dir: string; plugin?: { cert: string; key: string; chain?: string }; leafLifetimeMs: number; rootOverlapMs: number } | { ok: false; error: string } {
  const trustDomain = values['trust-domain'] ?? DEFAULT_VALIDATION_CONTEXT.trustDomain
  const problem = trustDomainProblem(trustDomain)
  if (problem) return { ok: false, error: `--trust-domain: ${problem}` }
  const lifetime = values['cert-lifetime'] === undefined ? DEFAULT_LEAF_LIFETIME_MS : parseDuration(values['cert-lifetime'])
  if (lifetime === undefined) return { ok: false, error: `--cert-lifetime ${values['cert-lifetime']}: expected a duration like 24h, 90m or 10s` }
  const overlap = values['root-overlap'] === undefined ? lifetime : parseDuration(values['root-overlap'])
  if (overlap === undefined) return { ok: false, error: `--root-overlap ${values['root-overlap']}: expected a duration like 24h, 90m or 10s` }
  const cert = values['ca-cert']
  const key = values['ca-key']
  if ((cert === undefined) !== (key === undefined)) return { ok: false, error: `${cert === undefined ? '--ca-key' : '--ca-cert'} needs ${cert === undefined ? '--ca-cert' : '--ca-key'} too (an operator-supplied CA is a certificate and its key)` }
  if (values['ca-chain'] !== undefined && cert === undefined) return { ok: false, error: '--ca-chain goes with --ca-cert and --ca-key' }
  return {
    ok: true,
    trustDomain,
    dir: values['ca-dir'] ?? defaultCaDir(),
    ...(cert !== undefined && key !== undefined ? { plugin: { cert, key, ...(values['ca-chain'] !== undefined ? { chain: values['ca-chain'] } : {}) } } : {}),
    leafLifetimeMs: lifetime,
    rootOverlapMs: overlap,
  }
}

export async function runControlCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'rotate-ca') return await rotateCa(argv.slice(1))
  let values: ControlValues
  try {
    values = parseArgs({
      args: argv,
      options: {
        ...CONNECTION,
        'trust-domain': { type: 'string' },
        'ca-dir': { type: 'string' },
        'ca-cert': { type: 'string' },
        'ca-key': { type: 'string' },
        'ca-chain': { type: 'string' },
        'cert-lifetime': { type: 'string' },
        'root-overlap': { type: 'string' },
        kubernetes: { type: 'boolean' },
        'vip-cidr': { type: 'string' },
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
  const caFlags = caOptions(values)
  if (!caFlags.ok) {
    process.stderr.write(`weft: control: ${caFlags.error} (see weft control --help)\n`)
    return 2
  }
  const log = createLogger({ component: 'control' })
  // The CA first: a key others may read, or a broken chain, stops the start before NATS.
  let ca: CertificateAuthority
  try {
    ca = await CertificateAuthority.open(caFlags)
  } catch (error) {
    process.stderr.write(`weft: control: ${error instanceof CaError ? error.message : `CA: ${oneLine(error)}`}\n`)
    return 1
  }
  if (caFlags.rootOverlapMs < caFlags.leafLifetimeMs) {
    log.warn('--root-overlap is shorter than --cert-lifetime: after a rotation, certificates of the old root may outlive its trust', { rootOverlap: formatDuration(caFlags.rootOverlapMs), certLifetime: formatDuration(caFlags.leafLifetimeMs) })
  }
  let vipCidr = DEFAULT_VALIDATION_CONTEXT.vipCidr
  let mirror: KubernetesMirror | undefined
  try {
    if (values['vip-cidr'] !== undefined) vipCidr = checkCidr(values['vip-cidr'], 'vip-cidr')
    // Imported only when asked: the Kubernetes client takes seconds to load.
    if (values.kubernetes) mirror = new (await import('../k8s/mirror.ts')).KubernetesMirror({ log, validation: { ...DEFAULT_VALIDATION_CONTEXT, trustDomain: ca.trustDomain, vipCidr } })
  } catch (error) {
    const kubeConfig = error instanceof Error && error.name === 'KubeConfigError'
    process.stderr.write(`weft: control: ${kubeConfig ? (error as Error).message : oneLine(error)}\n`)
    return kubeConfig ? 1 : 2
  }
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
    const validation = { ...DEFAULT_VALIDATION_CONTEXT, trustDomain: ca.trustDomain, vipCidr }
    const service = await serveControl(bus, { log, validation })
    const caService = await serveCa(bus, { ca, log, validation }).catch(async (error: unknown) => {
      await service.stop()
      throw error
    })
    void watchConnection(bus, log)
    // Lists every kind, then writes and follows; failures are logged and retried inside.
    void mirror?.start(bus).catch((error: unknown) => log.error('cannot mirror the Kubernetes API', { error: oneLine(error) }))
    // Later signals are logged and do not cut the stop short (see src/cli/signals.ts).
    const signal = await listenForStop((again) => log.info('already stopping', { signal: again })).first
    log.info('stopping', { signal, answered: service.answered, signed: caService.signed, refused: caService.refused })
    await mirror?.stop()
    await caService.stop()
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

/** `weft control rotate-ca`: asks the running control plane for a new root, prints what happened. */
async function rotateCa(argv: string[]): Promise<number> {
  let values: ControlValues
  try {
    values = parseArgs({ args: argv, options: CONNECTION, strict: true, allowPositionals: false }).values
  } catch (error) {
    process.stderr.write(`weft: control rotate-ca: ${parseArgsProblem(error)} (see weft control --help)\n`)
    return 2
  }
  if (values.help) {
    process.stdout.write(`${CONTROL_HELP}\n`)
    return 0
  }
  let bus: Bus
  try {
    bus = await connectBus({ ...resolveBusOptions(values), name: 'weft control rotate-ca' })
  } catch (error) {
    process.stderr.write(`weft: control rotate-ca: ${oneLine(error)}\n`)
    return 1
  }
  try {
    const reply = await requestRotateRoot(bus)
    if (!reply.ok) {
      process.stderr.write(`weft: control rotate-ca: ${reply.error}\n`)
      return 1
    }
    const retiring = reply.retiring.map((root) => `${root.fingerprint} until ${root.retiresAt}`).join(', ')
    process.stdout.write(`new root ${reply.signing} signs from now on (trust bundle version ${reply.version}); still trusted while retiring: ${retiring || 'none'}\n`)
    return 0
  } catch (error) {
    process.stderr.write(`weft: control rotate-ca: ${oneLine(error)}\n`)
    return 1
  } finally {
    await bus.close()
  }
}
