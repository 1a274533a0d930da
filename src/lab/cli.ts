// `weft lab ...`: up, down, exec, ls. Progress goes to stderr, results to stdout; bad input is
// one line on stderr starting with `weft: ` and a non-zero exit.
import { readFileSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { parseArgsProblem } from '../cli/options.ts'
import { listenForStop, type StopSignal } from '../cli/signals.ts'
import { renderTable } from '../cli/table.ts'
import { controlPids, labContextIsCurrent, natsPids } from './control-plane.ts'
import { daemonPids } from './daemons.ts'
import { LabError } from './errors.ts'
import { labDown, labDownAll, labUp, listLabs, openLab, randomRunId, type Lab } from './lab.ts'
import { checkRunId, findRunIds } from './down.ts'
import { exitStatus } from './processes.ts'
import { parseTopology, topologyFromShorthand, type Topology } from './topology.ts'

const HELP: Record<string, string> = {
  lab: `Usage: weft lab <command> [options]

Simulated Kubernetes nodes and pods on this machine: network namespaces joined by veths and
bridges, a cgroup per pod, a weft node daemon per node, and the control plane: NATS with
JetStream on 198.18.0.254:4222 and weft control, which registers the nodes and pods. Addresses
are in 198.18.0.0/15 only. One lab may be up at a time. Needs root.

Commands:
  up     build a lab (and start its node daemons)       weft lab up --help
  down   remove a lab, or all of them                   weft lab down --help
  exec   run a command in a pod or a node               weft lab exec --help
  ls     show a lab's nodes and pods                    weft lab ls --help`,
  up: `Usage: weft lab up [-f FILE | --nodes N --pods M] [--run-id ID] [--no-daemons]

Builds a lab: starts NATS (nats://198.18.0.254:4222, credentials in /run/weft/labs/<run>/creds/)
and weft control, registers every node and pod through it, records the context lab-<run> as
current (so weft apply|get|delete|status need no flags), and starts one weft node daemon per node
(logs in /run/weft/labs/<run>/<node>.log, control.log, nats/nats-server.log). Ctrl-C (SIGINT,
SIGTERM, SIGHUP) while it builds: the build finishes, then the lab is removed (exit 128+signal).

  -f, --file FILE   topology in YAML or JSON:
                      nodes: [node1, node2]
                      pods:
                        - {name: client, node: node1}
                        - {name: echo-a, node: node2, labels: {app: echo}}
                        - {name: outsider, node: node1, enrolled: false}
  --nodes N         instead of a file: nodes node1..nodeN ...
  --pods M          ... each with M pods <node>-pod<j> (default 1)
  --run-id ID       1-8 of a-z, 0-9 (default: random); every name in the lab carries it
  --no-daemons      build the network and cgroups only`,
  down: `Usage: weft lab down [--run-id ID | --all]

Removes a lab: its processes (daemons, NATS, weft control), BPF pins, network namespaces, host
link and routes, cgroups, state and its context. Works after a crash too, and does nothing if the lab is gone already. Without --run-id,
removes the one lab that is up.

  --run-id ID   the lab to remove
  --all         remove every lab found on this machine`,
  exec: `Usage: weft lab exec [--run-id ID] <pod-or-node> -- COMMAND [ARGS...]

Runs COMMAND in a pod (its network namespace and cgroup, so the mesh sees it as that pod) or in
a node's network namespace. stdin/stdout/stderr and the exit code are passed through.

  --run-id ID   the lab (default: the one lab that is up)`,
  ls: `Usage: weft lab ls [--run-id ID] [-o json]

Shows a lab's NATS URL and context, and its nodes (name, underlay address, proxy ip, pod range,
namespace, daemon pid) and pods (name, node, ip, enrolled, labels).

  --run-id ID   the lab (default: the one lab that is up)
  -o json       machine-readable output`,
}

const progress = (line: string): void => {
  process.stderr.write(`${line}\n`)
}

export async function runLabCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'up':
        return await up(rest)
      case 'down':
        return down(rest)
      case 'exec':
        return await exec(rest)
      case 'ls':
        return ls(rest)
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(`${HELP['lab']}\n`)
        return command === undefined ? 2 : 0
      default:
        throw new LabError(`lab: unknown command "${command}" (commands: up, down, exec, ls; see weft lab --help)`)
    }
  } catch (error) {
    process.stderr.write(`weft: ${oneLine(error, command)}\n`)
    return 1
  }
}

const RUN_ID_OPTION = { 'run-id': { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const

function parse<T extends NonNullable<ParseArgsConfig['options']>>(command: string, args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true })
  } catch (error) {
    throw new LabError(`lab ${command}: ${parseArgsProblem(error)} (see weft lab ${command} --help)`)
  }
}

function help(command: string): number {
  process.stdout.write(`${HELP[command]}\n`)
  return 0
}

async function up(args: string[]): Promise<number> {
  const { values } = parse('up', args, {
    ...RUN_ID_OPTION,
    file: { type: 'string', short: 'f' },
    nodes: { type: 'string' },
    pods: { type: 'string' },
    'no-daemons': { type: 'boolean' },
  })
  if (values.help) return help('up')
  let topology: Topology
  if (values.file !== undefined) {
    if (values.nodes !== undefined || values.pods !== undefined) throw new LabError('lab up: give either -f FILE or --nodes/--pods, not both')
    let text: string
    try {
      text = readFileSync(values.file, 'utf8')
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      throw new LabError(`lab up: cannot read topology file ${values.file}: ${code === 'ENOENT' ? 'no such file' : (code ?? (error as Error).message)}`)
    }
    topology = parseTopology(text, values.file)
  } else if (values.nodes !== undefined) {
    topology = topologyFromShorthand(wholeNumber('--nodes', values.nodes), wholeNumber('--pods', values.pods ?? '1'))
  } else {
    throw new LabError('lab up: say what to build: -f FILE or --nodes N --pods M (see weft lab up --help)')
  }
  const runId = values['run-id'] ?? randomRunId()
  checkRunId(runId)
  // A Ctrl-C while the lab is built would leave half a lab: the build goes on, then the lab is
  // removed. Further signals do not interrupt that (see src/cli/signals.ts).
  const signals = listenForStop()
  let interrupted: StopSignal | undefined
  void signals.first.then((signal) => {
    interrupted = signal
    progress(`lab ${runId}: ${signal}: removing the lab once it is built ...`)
  })
  const lab = await labUp(topology, { runId, startDaemons: !values['no-daemons'], onProgress: progress })
  if (interrupted) {
    labDown(runId, progress)
    progress(`lab ${runId} removed (interrupted by ${interrupted})`)
    return exitStatus(null, interrupted)
  }
  signals.dispose()
  printLab(lab)
  process.stderr.write(
    [
      `lab ${lab.runId} is up. The context ${lab.contextName} is current, so these reach its NATS with no flags:`,
      '  weft apply -f examples/mesh.yaml     publish services (mesh.yaml goes with examples/lab.yaml)',
      '  weft status                          what each node applied',
      '  weft get pods -A                     the registered pods',
      `Run things in it with weft lab exec <pod> -- CMD; remove it with weft lab down --run-id ${lab.runId}`,
    ].join('\n') + '\n',
  )
  return 0
}

function down(args: string[]): number {
  const { values } = parse('down', args, { ...RUN_ID_OPTION, all: { type: 'boolean' } })
  if (values.help) return help('down')
  if (values.all) {
    if (values['run-id'] !== undefined) throw new LabError('lab down: give either --run-id or --all, not both')
    const signals = listenForStop()
    const removed = labDownAll(progress)
    signals.dispose()
    progress(removed.length ? `removed lab(s): ${removed.join(', ')}` : 'no lab to remove')
    return 0
  }
  let runId = values['run-id']
  if (runId === undefined) {
    const runs = findRunIds()
    if (runs.length === 0) {
      progress('no lab to remove')
      return 0
    }
    runId = onlyRun(runs)
  }
  checkRunId(runId)
  // Listening, so that a Ctrl-C cannot end this process in the middle of the removal.
  const signals = listenForStop()
  labDown(runId, progress)
  signals.dispose()
  progress(`lab ${runId} removed`)
  return 0
}

async function exec(args: string[]): Promise<number> {
  const separator = args.indexOf('--')
  const before = separator === -1 ? args : args.slice(0, separator)
  const command = separator === -1 ? [] : args.slice(separator + 1)
  const { values, positionals } = parse('exec', before, RUN_ID_OPTION, true)
  if (values.help) return help('exec')
  if (positionals.length === 0) throw new LabError('lab exec: name a pod or node, e.g. weft lab exec client -- curl http://198.18.2.2:8080')
  if (positionals.length > 1 || separator === -1) {
    throw new LabError(`lab exec: put the command after --, e.g. weft lab exec ${positionals[0]} -- ${positionals.slice(1).join(' ') || 'sh'}`)
  }
  if (command.length === 0) throw new LabError(`lab exec: no command after -- (e.g. weft lab exec ${positionals[0]} -- sh)`)
  const lab = resolveLab(values['run-id'])
  const child = lab.exec(positionals[0] ?? '', command, { stdio: 'inherit' })
  // Ctrl-C reaches the child through the terminal; pass on the signals that are sent to us alone.
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal)
  const ignore = (): void => {}
  process.on('SIGINT', ignore).on('SIGTERM', forward).on('SIGHUP', forward)
  try {
    return await new Promise<number>((resolve, reject) => {
      child.on('error', (error) => reject(new LabError(`lab exec: cannot run ${command[0]}: ${error.message}`)))
      child.on('exit', (code, signal) => resolve(exitStatus(code, signal)))
    })
  } finally {
    process.off('SIGINT', ignore).off('SIGTERM', forward).off('SIGHUP', forward)
  }
}

function ls(args: string[]): number {
  const { values } = parse('ls', args, { ...RUN_ID_OPTION, output: { type: 'string', short: 'o' } })
  if (values.help) return help('ls')
  if (values.output !== undefined && values.output !== 'json') throw new LabError(`lab ls: unknown output format "${values.output}" (known: json)`)
  const lab = resolveLab(values['run-id'])
  if (values.output === 'json') {
    process.stdout.write(`${JSON.stringify(lsDocument(lab), null, 2)}\n`)
  } else {
    printLab(lab)
  }
  return 0
}

function lsDocument(lab: Lab): unknown {
  return {
    runId: lab.runId,
    nats: { url: lab.natsUrl, pid: natsPids(lab.plan)[0] ?? null, context: lab.contextName, current: labContextIsCurrent(lab.plan) },
    control: { pid: controlPids(lab.plan)[0] ?? null, log: lab.plan.control.logFile },
    nodes: lab.nodes.map((n) => ({
      name: n.name,
      address: n.address,
      proxyIp: n.proxyIp,
      podCidr: n.podCidr,
      namespace: n.netns,
      daemonPid: daemonPids(n)[0] ?? null,
    })),
    pods: lab.pods.map((p) => ({ name: p.name, node: p.node, ip: p.ip, labels: p.labels, enrolled: p.enrolled, namespace: p.netns })),
  }
}

function printLab(lab: Lab): void {
  const current = labContextIsCurrent(lab.plan) ? 'current' : 'not current'
  const lines = [
    `lab ${lab.runId}: ${lab.nodes.length} node(s), ${lab.pods.length} pod(s); state in ${lab.stateDir}`,
    `NATS ${lab.natsUrl} (pid ${natsPids(lab.plan)[0] ?? '-'}), context ${lab.contextName} (${current}); weft control pid ${controlPids(lab.plan)[0] ?? '-'}`,
    '',
  ]
  lines.push(
    renderTable(
      ['NODE', 'ADDRESS', 'PROXY IP', 'POD RANGE', 'NAMESPACE', 'DAEMON'],
      lab.nodes.map((n) => [n.name, n.address, n.proxyIp, n.podCidr, n.netns, String(daemonPids(n)[0] ?? '-')]),
    ),
    '',
    renderTable(
      ['POD', 'NODE', 'IP', 'ENROLLED', 'LABELS'],
      lab.pods.map((p) => [
        p.name,
        p.node,
        p.ip,
        p.enrolled ? 'yes' : 'no',
        Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-',
      ]),
    ),
  )
  process.stdout.write(`${lines.join('\n')}\n`)
}

function resolveLab(runId: string | undefined): Lab {
  if (runId !== undefined) {
    checkRunId(runId)
    if (!findRunIds().includes(runId)) throw new LabError(`no lab ${runId} (${describeRuns(findRunIds())})`)
    return openLab(runId)
  }
  const runs = findRunIds()
  if (runs.length === 0) throw new LabError('no lab is up; start one with weft lab up -f FILE or weft lab up --nodes 2 --pods 2')
  return openLab(onlyRun(runs))
}

function onlyRun(runs: string[]): string {
  if (runs.length > 1) throw new LabError(`${runs.length} labs found (${runs.join(', ')}); choose one with --run-id`)
  return runs[0] as string
}

function describeRuns(runs: string[]): string {
  return runs.length ? `labs: ${runs.join(', ')}` : 'no lab is up'
}

function wholeNumber(option: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new LabError(`lab up: ${option} must be a whole number (got "${text}")`)
  return Number(text)
}

function oneLine(error: unknown, command: string | undefined): string {
  const message = error instanceof Error ? error.message : String(error)
  const line = message.replace(/\s*\n\s*/g, ' ').trim()
  return error instanceof LabError ? line : `lab ${command ?? ''}: ${line}`
}
