// The image, built offline (scripts/build-image.sh: an mmdebstrap base from Debian's archive,
// podman import, podman build --runtime runc), and the DaemonSet's own pod template run from it
// with rootful podman: the weft-node container as daemonset/weft-node.yaml declares it (host
// network, only the capabilities it adds, read-only root, no privilege escalation, the runtime's
// default seccomp, the bpffs and host cgroup mounts, its env and args) with the few values a
// cluster would supply (the node's name and IP, the NATS password) and the test's own places
// (a kubepods cgroup under weft-test-p<pid>-..., free ports, the lab range to intercept). The
// containerised daemon must find a kubelet-style pod's cgroup, enrol it and proxy its connection,
// and answer /readyz. Images, the container, cgroups and pins are removed, also on failure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { createInterface } from 'node:readline'
import t, { type Test } from 'tap'
import { parseAllDocuments } from 'yaml'

import { findCgroup2Mount } from '../src/bpf/index.ts'
import { connectBus, freePort, startNatsServer } from '../src/bus/index.ts'
import { podCgroupPath } from '../src/k8s/kubelet-cgroups.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { cgroupFixture, ensureLabUnreachableRoute, repoRoot, requirePrivileged, runId, runInCgroup, skipOrFail, tcpClientScript } from './helpers/privileged.ts'

const podman = ['podman', '--runtime', 'runc'] // crun refuses this machine's hybrid cgroup layout
const ulimits = ['--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=20000:20000'] // at or below the sandbox's
const uid = '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d'
const containerId = 'f3c9a0d1e2b34c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d'

/* eslint-disable @typescript-eslint/no-explicit-any */
const daemonSet = parseAllDocuments(readFileSync(join(repoRoot, 'daemonset', 'weft-node.yaml'), 'utf8')).map((d) => d.toJS() as any).find((o) => o.kind === 'DaemonSet')
const template = daemonSet.spec.template.spec
const container = template.containers[0]
/* eslint-enable @typescript-eslint/no-explicit-any */

function podmanSync(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(podman[0]!, [...podman.slice(1), ...args], { encoding: 'utf8', timeout: 120_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** `promise`, or a failure naming `what` after `ms` (a guard against hanging, not a timing check). */
function within<T>(promise: Promise<T>, what: string, ms = 120_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const guard = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no "${what}" within ${ms / 1000} s`)), ms) })
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer))
}

/** Resolves with the first JSON log line of the container whose msg is `msg`. */
function logLine(logs: ChildProcess, msg: string): Promise<Record<string, unknown>> {
  const found = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: logs.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>
        if (entry.msg === msg) resolve(entry)
      } catch {
        // not a log line
      }
    })
    logs.once('exit', () => reject(new Error(`the container's log ended before "${msg}"`)))
  })
  found.catch(() => {}) // awaited later, or not at all when an earlier step failed
  return found
}

/**
 * `podman run` flags for the DaemonSet's container. `values` fills the env the cluster would
 * (fieldRef, secretKeyRef); `hostPaths` maps a volume's hostPath to this machine's; `overrides`
 * replaces flags of the daemon's args (--flag=value) and adds missing ones.
 */
function renderPodmanRun(name: string, image: string, values: Record<string, string>, hostPaths: Record<string, string>, overrides: Record<string, string>): string[] {
  const security = container.securityContext
  const flags = ['run', '--detach', '--name', name, ...ulimits]
  if (template.hostNetwork) flags.push('--network', 'host')
  flags.push('--cap-drop', 'ALL', ...security.capabilities.add.flatMap((cap: string) => ['--cap-add', cap]))
  if (security.readOnlyRootFilesystem) flags.push('--read-only')
  if (security.allowPrivilegeEscalation === false) flags.push('--security-opt', 'no-new-privileges')
  if (security.privileged) flags.push('--privileged')
  if (security.appArmorProfile?.type === 'Unconfined') flags.push('--security-opt', 'apparmor=unconfined')
  if (security.seccompProfile?.type !== 'RuntimeDefault') throw new Error('the DaemonSet no longer asks for the runtime\'s default seccomp profile')
  const volumes = new Map((template.volumes as Array<{ name: string; hostPath: { path: string } }>).map((v) => [v.name, v.hostPath.path]))
  for (const mount of container.volumeMounts as Array<{ name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }>) {
    const hostPath = volumes.get(mount.name)!
    const options = [mount.readOnly ? 'ro' : 'rw', ...(mount.mountPropagation === 'HostToContainer' ? ['rslave'] : [])]
    flags.push('--volume', `${hostPaths[hostPath] ?? hostPath}:${mount.mountPath}:${options.join(',')}`)
  }
  const env = new Map<string, string>()
  for (const e of container.env as Array<{ name: string; value?: string }>) {
    const value = e.value ?? values[e.name]
    if (value === undefined) throw new Error(`no value for ${e.name}`)
    env.set(e.name, value)
    flags.push('--env', `${e.name}=${value}`)
  }
  const args = (container.args as string[]).map((arg) => arg.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env.get(v) ?? ''))
  const rendered = args.map((arg) => {
    const [flag] = arg.split('=')
    return flag !== undefined && overrides[flag] !== undefined ? `${flag}=${overrides[flag]}` : arg
  })
  for (const [flag, value] of Object.entries(overrides)) if (!rendered.some((a) => a.startsWith(`${flag}=`))) rendered.push(`${flag}=${value}`)
  return [...flags, image, ...container.command, ...rendered]
}

async function connectFrom(t: Test, cgroup: string): Promise<{ remoteAddress?: string; error?: string }> {
  const result = await runInCgroup(t, cgroup, tcpClientScript, ['198.18.7.7', '80'])
  return JSON.parse(result.stdout.trim().split('\n')[0] ?? '{}') as { remoteAddress?: string; error?: string }
}

t.test('the image builds offline, and the DaemonSet\'s pod template runs from it: finds, enrols and proxies a kubelet-style pod', async (t) => {
  if (!requirePrivileged(t)) return
  const tools = ['podman', 'runc', 'mmdebstrap'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
  if (tools.length > 0) return skipOrFail(t, `needs ${tools.join(', ')} (Debian: apt-get install podman runc mmdebstrap; scripts/setup.sh installs them)`)
  ensureLabUnreachableRoute()
  const run = `weft-test-p${process.pid}-${runId()}`
  const base = `localhost/${run}-base:bookworm`
  const image = `localhost/${run}:test`
  t.teardown(() => {
    podmanSync(['rm', '--force', '--time', '0', run])
    podmanSync(['rmi', '--force', image, base])
  })

  // 1. Build: base from Debian's archive, then the image.
  const build = spawn('bash', [join(repoRoot, 'scripts', 'build-image.sh'), '--tag', image, '--base', base, '--rebuild-base'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let buildOutput = ''
  build.stdout.on('data', (chunk) => (buildOutput += chunk))
  build.stderr.on('data', (chunk) => (buildOutput += chunk))
  const built = await within(new Promise<number | null>((resolve) => build.once('exit', resolve)), 'image built', 480_000)
  t.equal(built, 0, `scripts/build-image.sh: ${buildOutput.slice(-2000)}`)
  const size = /(\d+) MiB\n?$/.exec(buildOutput.trim())
  t.ok(size && Number(size[1]) < 450, `the image weighs ${size?.[1]} MiB (base ~170, Node ~120, node_modules ~45)`)
  if (built !== 0) return

  // 2. The cluster's side: NATS with the node's Pod (UID, QoS class, no cgroup), a kubepods root.
  const fixture = cgroupFixture(t)
  fixture.pod('kubepods.slice')
  const podRoot = join(fixture.node, 'kubepods.slice')
  const cgroup2 = findCgroup2Mount()!
  const dir = mkdtempSync(join(tmpdir(), 'weft-test-image-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const nats = await startNatsServer({ dir, nodes: ['k8snode'] })
  t.teardown(() => nats.stop())
  const operator = await connectBus(nats.credentials.operator)
  t.teardown(() => operator.close())
  await operator.putResource('node._.k8snode', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'k8snode' }, spec: { address: '127.0.0.1', proxyIp: '127.0.0.1', podCIDR: '198.18.1.0/24' } })
  await operator.putResource('pod.shop.web', {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'shop', uid },
    spec: { nodeName: 'k8snode', serviceAccountName: 'web' }, status: { podIP: '198.18.1.10', qosClass: 'Burstable' },
  })

  // 3. The pod template, run.
  const node = nats.credentials.node('k8snode')
  const [outbound, inbound, admin] = [await freePort(), await freePort(), await freePort()]
  const cgroupMount = (container.volumeMounts as Array<{ name: string; mountPath: string }>).find((m) => m.name === 'cgroup')!.mountPath
  const argv = renderPodmanRun(run, image, { NODE_NAME: 'k8snode', HOST_IP: '127.0.0.1', WEFT_NATS_PASSWORD: node.pass },
    // This host is hybrid: its cgroup v2 tree is not at /sys/fs/cgroup (docs/kubernetes.md: patch the hostPath).
    { '/sys/fs/cgroup': cgroup2 },
    {
      '--cgroup-root': join(cgroupMount, relative(cgroup2, podRoot)),
      '--pin-dir': fixture.pinDir, // under /sys/fs/bpf, mounted at the same path
      '--nats': nats.url,
      '--intercept-cidr': '198.18.0.0/15',
      '--outbound-port': String(outbound), '--inbound-port': String(inbound), '--admin-port': String(admin),
    })
  t.equal(node.user, 'node-k8snode', 'the lab\'s per-node user (the DaemonSet\'s shared "node" user is a cluster\'s)')
  const started = podmanSync([...argv.slice(0, argv.indexOf(image)), '--env', `WEFT_NATS_USER=${node.user}`, ...argv.slice(argv.indexOf(image))])
  t.equal(started.status, 0, `podman run: ${started.stderr}`)
  if (started.status !== 0) return
  const logs = spawn(podman[0]!, [...podman.slice(1), 'logs', '--follow', run], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { logs.kill() })
  const kubeletWay = logLine(logs, 'finding pods\' cgroups the kubelet way')
  const serving = logLine(logs, 'serving')
  const found = logLine(logs, 'found a pod\'s cgroup')
  try {
    t.match(await within(kubeletWay, 'finding pods\' cgroups the kubelet way'), { driver: 'systemd' })
    await within(serving, 'serving')
    const ready = await fetch(`http://127.0.0.1:${admin}/readyz`)
    t.equal(ready.status, 200, `/readyz: ${await ready.text()}`)

    // The kubelet makes the pod's cgroup and its container's.
    let path = 'kubepods.slice'
    for (const part of podCgroupPath('systemd', uid, 'Burstable').split('/')) fixture.pod((path = `${path}/${part}`))
    const containerCgroup = fixture.pod(`${path}/cri-containerd-${containerId}.scope`)
    t.match(await within(found, 'found a pod\'s cgroup'), { workload: 'pod.shop.web' })
    // The kernel's count of redirected connects, from the containerised daemon's /metrics (what the
    // client itself sees depends on how fast the proxy gives up on 198.18.7.7).
    const redirected = async () => sumSamples(parsePrometheusText(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()), 'weft_bpf_connects_total', { decision: 'redirected' })
    t.equal(await redirected(), 0)
    const client = await connectFrom(t, containerCgroup)
    t.equal(await redirected(), 1, `the pod's connection was redirected to the containerised proxy (client: ${JSON.stringify(client)})`)
    t.not(client.error, 'EHOSTUNREACH', 'it did not go its own way')
  } finally {
    const stopped = podmanSync(['stop', '--time', '15', run])
    t.equal(stopped.status, 0, `podman stop: ${stopped.stderr}`)
    const exit = podmanSync(['inspect', '--format', '{{.State.ExitCode}}', run])
    t.equal(exit.stdout.trim(), '0', 'the daemon drained and exited 0 on SIGTERM')
  }
})
