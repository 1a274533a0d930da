// The daemon finds a kubelet-made pod's cgroup from the pod's UID and QoS class, for the systemd
// and the cgroupfs driver, with the container runtimes' scopes below it, and enrols it: a process
// in a container's cgroup is redirected by the real BPF programs attached at the kubepods root.
// The layouts are real cgroup directories made under the cgroup v2 root (weft-test-p<pid>-...),
// removed in teardown also when a test fails.
import { createServer } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'

import { NodeInterception, cgroupIdOf } from '../src/bpf/index.ts'
import { PodCgroups, findPodCgroup, kubeletDriverOf, podCgroupPath, type CgroupDriver, type QosClass } from '../src/k8s/kubelet-cgroups.ts'
import { cgroupFixture, ensureLabUnreachableRoute, requirePrivileged, runInCgroup, tcpClientScript, type CgroupFixture } from './helpers/privileged.ts'

const uids = {
  Guaranteed: '0f5a2b1c-3d4e-4f50-8a9b-0c1d2e3f4a5b',
  Burstable: '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d',
  BestEffort: '3c4d5e6f-7a8b-4c9d-0e1f-2a3b4c5d6e7f',
} as const satisfies Record<QosClass, string>
const containerId = 'f3c9a0d1e2b34c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d'

t.test('where each driver puts each QoS class (the UID as systemd escapes it)', async (t) => {
  t.equal(podCgroupPath('systemd', uids.Guaranteed, 'Guaranteed'), 'kubepods-pod0f5a2b1c_3d4e_4f50_8a9b_0c1d2e3f4a5b.slice')
  t.equal(podCgroupPath('systemd', uids.Burstable, 'Burstable'), 'kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_4a7b_8c9d_0e1f2a3b4c5d.slice')
  t.equal(podCgroupPath('systemd', uids.BestEffort, 'BestEffort'), 'kubepods-besteffort.slice/kubepods-besteffort-pod3c4d5e6f_7a8b_4c9d_0e1f_2a3b4c5d6e7f.slice')
  t.equal(podCgroupPath('cgroupfs', uids.Guaranteed, 'Guaranteed'), 'pod0f5a2b1c-3d4e-4f50-8a9b-0c1d2e3f4a5b')
  t.equal(podCgroupPath('cgroupfs', uids.Burstable, 'Burstable'), 'burstable/pod1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d')
  t.equal(podCgroupPath('cgroupfs', uids.BestEffort, 'BestEffort'), 'besteffort/pod3c4d5e6f-7a8b-4c9d-0e1f-2a3b4c5d6e7f')
  t.throws(() => podCgroupPath('cgroupfs', '../../etc', 'Guaranteed'), /is not a UID/)
  t.equal(kubeletDriverOf('/host/sys/fs/cgroup/kubepods.slice'), 'systemd')
  t.equal(kubeletDriverOf('/sys/fs/cgroup/kubepods/'), 'cgroupfs')
  t.equal(kubeletDriverOf('/sys/fs/cgroup/unified/weft-lab/node1'), undefined, 'a lab root: pods name their cgroup themselves')
})

/** The runtimes' container cgroups below a pod, per driver. */
const containerScopes: Record<CgroupDriver, Array<[runtime: string, dir: string]>> = {
  systemd: [['containerd', `cri-containerd-${containerId}.scope`], ['CRI-O', `crio-${containerId}.scope`], ['docker', `docker-${containerId}.scope`]],
  cgroupfs: [['containerd', containerId], ['CRI-O', `crio-${containerId}`], ['docker', containerId]],
}

/** Makes the kubelet's layout for one pod under `podRoot` (relative to the fixture's node dir); returns the container's cgroup. */
function makePod(fixture: CgroupFixture, podRoot: string, driver: CgroupDriver, qos: QosClass, uid: string, scope: string): { pod: string; container: string } {
  let path = podRoot
  for (const part of podCgroupPath(driver, uid, qos).split('/')) {
    path = `${path}/${part}`
    try {
      fixture.pod(path)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error // a QoS slice two pods share
    }
  }
  return { pod: join(fixture.node, path), container: fixture.pod(`${path}/${scope}`) }
}

async function connectFrom(t: Test, cgroup: string): Promise<{ remoteAddress?: string; error?: string }> {
  const result = await runInCgroup(t, cgroup, tcpClientScript, ['198.18.7.7', '80'])
  return JSON.parse(result.stdout.trim().split('\n')[0] ?? '{}') as { remoteAddress?: string; error?: string }
}

for (const driver of ['systemd', 'cgroupfs'] as const) {
  t.test(`${driver}: each QoS class's pod is found from its UID and enrolled; its container (${containerScopes[driver].map(([r]) => r).join(', ')}) is redirected, another pod's is not`, async (t) => {
    if (!requirePrivileged(t)) return
    ensureLabUnreachableRoute()
    const fixture = cgroupFixture(t)
    const root = driver === 'systemd' ? 'kubepods.slice' : 'kubepods'
    fixture.pod(root)
    const podRoot = join(fixture.node, root)
    t.equal(kubeletDriverOf(podRoot), driver)
    const classes: QosClass[] = ['Guaranteed', 'Burstable', 'BestEffort']
    const pods = classes.map((qos, i) => ({ qos, ...makePod(fixture, root, driver, qos, uids[qos], containerScopes[driver][i]![1]) }))
    // A pod that is not the mesh's, beside them.
    const outsider = makePod(fixture, root, driver, 'Burstable', '9d8c7b6a-5f4e-4d3c-8b2a-190807060504', containerScopes[driver][0]![1])

    for (const pod of pods) {
      t.equal(findPodCgroup(podRoot, driver, uids[pod.qos], pod.qos), pod.pod, `${pod.qos}: found where its class says`)
      t.equal(findPodCgroup(podRoot, driver, uids[pod.qos], undefined), pod.pod, `${pod.qos}: found without the class too`)
    }
    t.equal(findPodCgroup(podRoot, driver, '00000000-0000-4000-8000-000000000000', 'Burstable'), undefined, 'a pod whose cgroup is not there')

    const proxy = createServer((socket) => socket.end())
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>((resolve) => proxy.close(() => resolve())))
    const proxyPort = (proxy.address() as { port: number }).port
    const interception = NodeInterception.open({ pinDir: fixture.pinDir, cgroupRoot: podRoot, proxyIp: '127.0.0.1', proxyPort, interceptCidrs: ['198.18.0.0/15'], bypassCidrs: [], excludedPorts: [] })
    t.teardown(() => interception.close())
    interception.setEnrolledCgroups(pods.map((pod) => cgroupIdOf(findPodCgroup(podRoot, driver, uids[pod.qos], pod.qos)!)))

    for (const pod of pods) {
      const client = await connectFrom(t, pod.container)
      t.same(client, { ...client, remoteAddress: '198.18.7.7' }, `${pod.qos}: a process in the container's cgroup reached the proxy (and sees the original peer)`)
      t.notOk(client.error)
    }
    t.equal(interception.counters().redirected, 3n)
    const outside = await connectFrom(t, outsider.container)
    t.ok(outside.error, `the unenrolled pod's connection went its own way (here: ${outside.error})`)
    t.equal(interception.counters().redirected, 3n)
  })
}

t.test('a pod whose cgroup appears after the Pod is found when it appears, then enrolled', async (t) => {
  if (!requirePrivileged(t, ['root', 'cgroup2'])) return
  const fixture = cgroupFixture(t)
  fixture.pod('kubepods.slice')
  const podRoot = join(fixture.node, 'kubepods.slice')
  const found: Array<[string, string]> = []
  let announce: () => void = () => {}
  const appeared = new Promise<void>((resolve) => { announce = resolve })
  const cgroups = new PodCgroups({ podRoot, driver: 'systemd', retryMs: 20, onFound: (key, dir) => { found.push([key, dir]); announce() } })
  t.teardown(() => cgroups.stop())

  const wanted = [{ key: 'pod.shop.web', uid: uids.Burstable, qos: 'Burstable' as const }]
  t.same([...cgroups.want(wanted)], [], 'not there yet')
  t.same(cgroups.missing(), ['pod.shop.web'])
  const { pod } = makePod(fixture, 'kubepods.slice', 'systemd', 'Burstable', uids.Burstable, containerScopes.systemd[0]![1])
  await appeared
  t.same(found, [['pod.shop.web', pod]])
  t.same([...cgroups.want(wanted)], [['pod.shop.web', pod]], 'and stays found')
  t.same(cgroups.missing(), [])
  t.same([...cgroups.want([])], [], 'a pod no longer wanted is forgotten')
})
