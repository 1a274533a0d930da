// A lab laid out the kubelet's way (`kubeletCgroups: systemd | cgroupfs`): each node's daemon is
// attached at a kubepods root, the pods' cgroups sit where the kubelet puts them (by QoS class,
// a container cgroup below each), and the Pods on NATS carry a UID and a QoS class but no
// weft.dev/cgroup, as weft control --kubernetes writes them. The daemons find and enrol them:
// traffic goes through the mesh on the same node and across nodes; an unenrolled pod's does not.
import { fileURLToPath } from 'node:url'
import t from 'tap'

import type { Lab } from '../src/lab/index.ts'
import { podCgroupPath, type CgroupDriver } from '../src/k8s/kubelet-cgroups.ts'
import { requireLab, startIn, startLab } from './helpers/lab.ts'

const netprobe = fileURLToPath(new URL('./fixtures/netprobe.ts', import.meta.url))
const node = process.execPath

async function peerOf(lab: Lab, pod: string, ip: string, port: number): Promise<string | undefined> {
  const result = await lab.run(pod, [node, netprobe, 'connect', ip, String(port)])
  const reply = JSON.parse(result.stdout.trim().split('\n').pop() ?? '{}') as { reply?: { peer: string } }
  return reply.reply?.peer.replace(/^::ffff:/, '').split(':')[0]
}

for (const driver of ['systemd', 'cgroupfs'] as CgroupDriver[]) {
  t.test(`a lab with the kubelet's ${driver} cgroup layout: pods found from UID and QoS class, meshed`, async (t) => {
    if (!requireLab(t)) return
    const lab = await startLab(t, {
      nodes: ['node1', 'node2'],
      kubeletCgroups: driver,
      pods: [
        { name: 'client', node: 'node1', qosClass: 'Burstable' },
        { name: 'echo-a', node: 'node1', qosClass: 'Guaranteed' },
        { name: 'echo-b', node: 'node2' },
        { name: 'outsider', node: 'node1', enrolled: false },
      ],
    }, { startDaemons: true })
    const pod = (name: string) => lab.pods.find((p) => p.name === name)!
    const proxyIp = (name: string) => lab.nodes.find((n) => n.name === name)!.proxyIp

    t.match(lab.nodes[0]!.cgroupRoot, driver === 'systemd' ? /\/kubepods\.slice$/ : /\/kubepods$/)
    for (const name of ['client', 'echo-a', 'echo-b']) {
      const p = pod(name)
      t.ok(p.cgroup.startsWith(`${lab.nodes.find((n) => n.name === p.node)!.cgroupRoot}/${podCgroupPath(driver, p.uid, p.qosClass)}/`), `${name} (${p.qosClass}) runs in a container cgroup below the kubelet's pod cgroup`)
    }

    await startIn(t, lab, 'echo-a', [node, netprobe, 'serve', '8080'], /listening/)
    await startIn(t, lab, 'echo-b', [node, netprobe, 'serve', '8080'], /listening/)
    t.equal(await peerOf(lab, 'client', pod('echo-a').ip, 8080), proxyIp('node1'), 'same node: echo-a sees node1\'s proxy')
    t.not(await peerOf(lab, 'client', pod('echo-b').ip, 8080), pod('client').ip, 'across nodes: echo-b does not see the client pod (the tunnel)')
    t.equal(await peerOf(lab, 'outsider', pod('echo-a').ip, 8080), pod('outsider').ip, 'an unenrolled pod is left alone')
  })
}
