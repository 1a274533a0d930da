// Builds the lab's namespaces, veths, bridges, addresses, routes and cgroups from a plan.
// Veths are created directly inside lab namespaces (`ip -n A link add ... peer ... netns B`), so
// the only interface on the host is wh-<run> and host interface names never clash.
import { mkdirSync } from 'node:fs'
import { HOST_UNDERLAY_IP, LAB_CIDR, type LabPlan } from './plan.ts'
import { inNetns, ip, runCommand } from './sys.ts'
import { LabError } from './errors.ts'

/** Installed on the host and left there: a stray packet to a lab address dies here instead of
 *  following the host's default route (the lab's more specific routes win while it is up). */
export function ensureHostUnreachableRoute(): void {
  ip(['route', 'replace', 'unreachable', LAB_CIDR])
}

/** The host's routes into the lab, one per node pod range; `down` removes them. */
export function hostRoutes(plan: LabPlan): string[] {
  return plan.nodes.map((node) => `${node.podCidr} via ${node.address} dev ${plan.hostLink}`)
}

export function buildNetwork(plan: LabPlan, progress: (line: string) => void): void {
  const ul = plan.underlayNetns
  const inNs = (netns: string, args: string[]): string => ip(['-n', netns, ...args])

  progress(`lab ${plan.runId}: underlay ${ul} (198.18.0.0/24), host link ${plan.hostLink} ${HOST_UNDERLAY_IP}`)
  addNetns(ul)
  inNs(ul, ['link', 'add', 'br0', 'type', 'bridge'])
  inNs(ul, ['link', 'set', 'br0', 'up'])
  ip(['link', 'add', plan.hostLink, 'type', 'veth', 'peer', 'name', 'host', 'netns', ul])
  inNs(ul, ['link', 'set', 'host', 'master', 'br0', 'up'])
  ip(['addr', 'add', `${HOST_UNDERLAY_IP}/24`, 'dev', plan.hostLink])
  ip(['link', 'set', plan.hostLink, 'up'])
  // NATS and weft control live in the underlay netns, on the bridge: every node and the host reach them on-link.
  inNs(ul, ['addr', 'add', `${plan.nats.address}/24`, 'dev', 'br0'])
  mkdirSync(plan.nats.cgroup, { recursive: true })
  mkdirSync(plan.control.cgroup, { recursive: true })

  for (const node of plan.nodes) {
    progress(`lab ${plan.runId}: node ${node.name} in ${node.netns}: underlay ${node.address}, proxy ip ${node.proxyIp}, pods ${node.podCidr}`)
    addNetns(node.netns)
    sysctl(node.netns, 'net.ipv4.ip_forward', '1')
    inNs(ul, ['link', 'add', node.underlayPort, 'type', 'veth', 'peer', 'name', 'underlay', 'netns', node.netns])
    inNs(ul, ['link', 'set', node.underlayPort, 'master', 'br0', 'up'])
    inNs(node.netns, ['addr', 'add', `${node.address}/24`, 'dev', 'underlay'])
    inNs(node.netns, ['link', 'set', 'underlay', 'up'])
    inNs(node.netns, ['link', 'add', 'pods', 'type', 'bridge'])
    inNs(node.netns, ['addr', 'add', `${node.proxyIp}/24`, 'dev', 'pods'])
    inNs(node.netns, ['link', 'set', 'pods', 'up'])
    for (const other of plan.nodes) {
      if (other !== node) inNs(node.netns, ['route', 'add', other.podCidr, 'via', other.address])
    }
    mkdirSync(node.cgroupRoot, { recursive: true })
    mkdirSync(node.daemonCgroup, { recursive: true })
  }

  // Pods are the many: one `ip netns add` and one batch per pod, one batch per node for the veths.
  for (const pod of plan.pods) {
    const node = plan.nodes.find((n) => n.name === pod.node)
    if (!node) throw new LabError(`pod ${pod.name}: unknown node ${pod.node}`)
    progress(`lab ${plan.runId}: pod ${pod.name} on ${node.name}: ${pod.ip}${pod.enrolled ? '' : ' (not enrolled)'}`)
    ip(['netns', 'add', pod.netns])
    mkdirSync(pod.cgroup, { recursive: true })
  }
  for (const node of plan.nodes) {
    const pods = plan.pods.filter((pod) => pod.node === node.name)
    ipBatch(
      node.netns,
      pods.flatMap((pod) => [
        `link add ${pod.nodePort} type veth peer name eth0 netns ${pod.netns}`,
        `link set ${pod.nodePort} master pods up`,
      ]),
    )
    for (const pod of pods) {
      ipBatch(pod.netns, [
        'link set lo up',
        `addr add ${pod.ip}/24 dev eth0`,
        'link set eth0 up',
        // The only route out of a pod: lab addresses (pods, nodes, service VIPs) via its node.
        `route add ${LAB_CIDR} via ${node.proxyIp}`,
      ])
    }
  }

  for (const route of hostRoutes(plan)) ip(['route', 'replace', ...route.split(' ')])
}

/** Several ip commands in one netns with one process (`ip -n NS -batch -`); stops at the first failure. */
function ipBatch(netns: string, commands: string[]): void {
  if (commands.length === 0) return
  const result = runCommand('ip', ['-n', netns, '-batch', '-'], `${commands.join('\n')}\n`)
  if (result.code !== 0) {
    throw new LabError(`ip -n ${netns} -batch failed: ${result.stderr.trim().replace(/\s*\n\s*/g, '; ')} (commands: ${commands.join('; ')})`)
  }
}

function addNetns(netns: string): void {
  ip(['netns', 'add', netns])
  ip(['-n', netns, 'link', 'set', 'lo', 'up'])
}

function sysctl(netns: string, key: string, value: string): void {
  const [command, ...args] = inNetns(netns, ['sysctl', '-qw', `${key}=${value}`])
  const result = runCommand(command as string, args)
  if (result.code !== 0) throw new LabError(`sysctl ${key}=${value} in ${netns} failed: ${result.stderr.trim()}`)
}
