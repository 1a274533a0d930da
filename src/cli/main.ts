// `weft` command line: dispatches to the node daemon, the lab and the demo.
// Errors meant for people are printed as one line, `weft: ...`, with a non-zero exit.
import { ConfigError, nodeHelp, parseNodeArgs } from '../config/node-config.ts'
import { PreflightError } from '../daemon/preflight.ts'

const usage = `usage: weft <command> [options]

commands:
  node          run the node daemon (eBPF interception + node proxy)           weft node --help
  lab           simulated nodes and pods on this machine                       weft lab --help
  control       the control plane (workload registry, CA) over NATS            weft control --help
  demo          a 2-node lab with HTTP servers and live traffic stats          weft demo --help
  apply         validate and publish resources to NATS                         weft apply --help
  get           show resources stored on NATS                                  weft get --help
  delete        delete resources from NATS                                     weft delete --help
  status        what every node applied: revision, lag, rejections             weft status --help
  identity      each node's workload certificates and trust bundle             weft identity --help
  proxy-config  what one node applied: services, endpoints, routes, policies   weft proxy-config --help
  top           requests/s, success rate, p50/p99 per service and workload     weft top --help
  help          show this help

Run as root: the daemon and the lab load BPF programs and create namespaces and cgroups.`

/**
 * Errors whose message is already written for the user: printed as one line, no stack. Matched
 * by name for the kinds whose modules this file only loads on demand (BpfError's loads the addon).
 */
const userErrorNames = new Set(['LabError', 'LabBusyError', 'BpfError', 'BusError'])
function isUserError(err: unknown): err is Error {
  return err instanceof ConfigError || err instanceof PreflightError || (err instanceof Error && userErrorNames.has(err.name))
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'node': {
      const parsed = parseNodeArgs(rest)
      if (parsed.help) { console.log(nodeHelp()); return 0 }
      const { runNode, uninstallNode } = await import('../daemon/index.ts')
      if (parsed.config.uninstall) {
        uninstallNode(parsed.config)
        console.error(`weft: removed the BPF programs, links and maps pinned in ${parsed.config.pinDir}`)
        return 0
      }
      await runNode(parsed.config)
      return 0
    }
    case 'lab': {
      const { runLabCommand } = await import('../lab/cli.ts')
      return runLabCommand(rest)
    }
    case 'control': {
      const { runControlCommand } = await import('../control/cli.ts')
      return runControlCommand(rest)
    }
    case 'demo': {
      const { runDemoCommand } = await import('../demo/index.ts')
      return runDemoCommand(rest)
    }
    case 'apply':
    case 'get':
    case 'delete':
    case 'status': {
      const { runConfigCommand } = await import('./config-commands.ts')
      return runConfigCommand(command, rest)
    }
    case 'identity': {
      const { runIdentityCommand } = await import('./identity-command.ts')
      return runIdentityCommand(rest)
    }
    case 'proxy-config': {
      const { runProxyConfigCommand } = await import('./proxy-config-command.ts')
      return runProxyConfigCommand(rest)
    }
    case 'top': {
      const { runTopCommand } = await import('./top-command.ts')
      return runTopCommand(rest)
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(usage)
      return command === undefined ? 2 : 0
    default:
      console.error(`weft: unknown command "${command}" (commands: node, control, lab, demo, apply, get, delete, status, identity, proxy-config, top; see weft --help)`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code },
  (err: unknown) => {
    if (isUserError(err)) {
      console.error(`weft: ${err.message.split('\n')[0]}`)
      if (err.name === 'BpfError' && err.message.includes('\n')) console.error(err.message.split('\n').slice(1).join('\n'))
    } else {
      console.error('weft: unexpected error:', err)
    }
    process.exitCode = 1
  },
)
