// The real `weft node` on a Kubernetes-shaped node: its --cgroup-root is the kubelet's pod root
// (kubepods.slice or kubepods, made under the cgroup v2 root as weft-test-p<pid>-...), the Pod on
// NATS carries a UID and a QoS class and no weft.dev/cgroup (as weft control --kubernetes writes
// it), and the kubelet makes the pod's cgroup only after the daemon applied the Pod. The daemon
// finds the cgroup when it appears and enrols it: a process in the pod's container cgroup is then
// redirected to the daemon's proxy; one in another pod is not.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'

import { connectBus, freePort, startNatsServer } from '../src/bus/index.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { podCgroupPath, type CgroupDriver } from '../src/k8s/kubelet-cgroups.ts'
import { cgroupFixture, ensureLabUnreachableRoute, requirePrivileged, runInCgroup, tcpClientScript } from './helpers/privileged.ts'

const weft = fileURLToPath(new URL('../bin/weft.js', import.meta.url))
const uid = '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d'
const containerId = 'f3c9a0d1e2b34c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d'

/** Resolves with the first JSON log line of `child` whose msg is `msg`. */
function logLine(child: ChildProcess, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>
        if (entry.msg === msg) resolve(entry)
      } catch {
        // not a log line
      }
    })
    child.once('exit', (code) => reject(new Error(`weft node exited (${code}) before logging "${msg}"`)))
  })
}

/** `promise`, or a failure naming `what` after a generous minute (a guard against hanging, not a timing check). */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const guard = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no "${what}" within a minute`)), 60_000) })
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer))
}

async function connectFrom(t: Test, cgroup: string): Promise<{ remoteAddress?: string; error?: string }> {
  const result = await runInCgroup(t, cgroup, tcpClientScript, ['198.18.7.7', '80'])
  return JSON.parse(result.stdout.trim().split('\n')[0] ?? '{}') as { remoteAddress?: string; error?: string }
}

for (const [driver, root, scope] of [['systemd', 'kubepods.slice', `cri-containerd-${containerId}.scope`], ['cgroupfs', 'kubepods', containerId]] as Array<[CgroupDriver, string, string]>) {
  t.test(`${driver}: weft node finds a pod's cgroup from its UID and QoS class when the kubelet makes it, and enrols it`, async (t) => {
    if (!requirePrivileged(t)) return
    ensureLabUnreachableRoute()
    const fixture = cgroupFixture(t)
    fixture.pod(root)
    const podRoot = join(fixture.node, root)
    const dir = mkdtempSync(join(tmpdir(), 'weft-test-k8s-node-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const nats = await startNatsServer({ dir, nodes: ['k8snode'] })
    t.teardown(() => nats.stop())

    const operator = await connectBus(nats.credentials.operator)
    t.teardown(() => operator.close())
    await operator.putResource('node._.k8snode', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'k8snode' }, spec: { address: '127.0.0.1', proxyIp: '127.0.0.1', podCIDR: '198.18.1.0/24' } })
    await operator.putResource('pod.shop.web', {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'web', namespace: 'shop', uid, annotations: { 'weft.dev/source': 'kubernetes' } },
      spec: { nodeName: 'k8snode', serviceAccountName: 'web' },
      status: { podIP: '198.18.1.10', phase: 'Running', qosClass: 'Burstable' },
    })

    const node = nats.credentials.node('k8snode')
    const [outbound, inbound, admin] = [await freePort(), await freePort(), await freePort()]
    const daemon = spawn(process.execPath, [weft, 'node', '--name', 'k8snode', '--node-ip', '127.0.0.1', '--proxy-ip', '127.0.0.1',
      '--cgroup-root', podRoot, '--pin-dir', fixture.pinDir, '--outbound-port', String(outbound), '--inbound-port', String(inbound), '--admin-port', String(admin),
      '--nats', nats.url, '--intercept-cidr', '198.18.0.0/15', '--access-log', 'off', '--drain-timeout', '500'],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, WEFT_NATS_USER: node.user, WEFT_NATS_PASSWORD: node.pass, WEFT_LOG_LEVEL: 'info' } })
    const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()))
    try {
      const kubeletWay = logLine(daemon, 'finding pods\' cgroups the kubelet way')
      const serving = logLine(daemon, 'serving')
      const found = logLine(daemon, 'found a pod\'s cgroup')
      // Each rejects if the daemon exits first; a test that stopped before awaiting one must not crash on it.
      for (const pending of [kubeletWay, serving, found]) pending.catch(() => {})
      t.match(await within(kubeletWay, 'finding pods\' cgroups the kubelet way'), { driver, podRoot })
      await within(serving, 'serving') // the Pod is applied: the first snapshot opened the listeners

      // Now the kubelet makes the pod's cgroup and its container's below it; and another pod.
      let path = root
      for (const part of podCgroupPath(driver, uid, 'Burstable').split('/')) fixture.pod((path = `${path}/${part}`))
      const container = fixture.pod(`${path}/${scope}`)
      const other = `${root}/${driver === 'systemd' ? 'kubepods-besteffort.slice' : 'besteffort'}`
      fixture.pod(other)
      const outsider = fixture.pod(`${other}/${podCgroupPath(driver, '9d8c7b6a-5f4e-4d3c-8b2a-190807060504', 'BestEffort').split('/').pop()}`)

      t.match(await within(found, 'found a pod\'s cgroup'), { workload: 'pod.shop.web', cgroup: join(fixture.node, path) })
      // The kernel's own count of redirected connects (weft_bpf_connects_total, read from the BPF
      // counters at scrape time): what the client sees depends on how fast the proxy gives up on
      // 198.18.7.7 (connected then closed, or reset before its connect completed).
      const redirected = async () => sumSamples(parsePrometheusText(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()), 'weft_bpf_connects_total', { decision: 'redirected' })
      t.equal(await redirected(), 0)
      const client = await connectFrom(t, container)
      t.equal(await redirected(), 1, `the container's connection was redirected to the daemon's proxy (client: ${JSON.stringify(client)})`)
      t.not(client.error, 'EHOSTUNREACH', 'it did not go its own way')
      const stranger = await connectFrom(t, outsider)
      t.ok(stranger.error, `another pod's connection was not intercepted (${JSON.stringify(stranger)})`)
      t.equal(await redirected(), 1, 'and not redirected')
    } finally {
      daemon.kill('SIGTERM')
      await exited
    }
  })
}
